//! Attribution to containers and pods, with real cgroups: cgroups named as
//! kubelet (systemd driver, containerd) and Podman name theirs, made under
//! this host's cgroup2 mount, each running a workload that closes
//! connections first and binds a port its TIME_WAIT still holds. twmon
//! must label what each did with its cgroup path, container id and pod uid.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use monitor::sources::cgroups::parse_mountinfo;
use testkit::{Daemon, TestNetns, require_root, sample};

use crate::util::TWMON;

/// Connections the workload closes first, then a bind of the last one's
/// port (EADDRINUSE: its TIME_WAIT holds it).
const N: u64 = 7;

const WORKLOAD: &str = r#"
import socket, sys, threading
n = int(sys.argv[1])
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
def serve():
    for _ in range(n):
        conn, _ = server.accept()
        while conn.recv(64):
            pass
        conn.close()
t = threading.Thread(target=serve)
t.start()
for _ in range(n):
    c = socket.socket()
    c.bind(("127.0.0.1", 0))
    port = c.getsockname()[1]
    c.connect(server.getsockname())
    c.close()
t.join()
again = socket.socket()
try:
    again.bind(("127.0.0.1", port))
    sys.exit("bind of a port in TIME_WAIT succeeded")
except OSError as e:
    assert e.errno == 98, e
"#;

/// A cgroup made for the test, removed (with its parents) on drop.
struct Cgroup {
    /// Outermost first.
    made: Vec<PathBuf>,
    path: String,
}

impl Cgroup {
    fn new(root: &Path, path: &str) -> Cgroup {
        let mut made = Vec::new();
        let mut at = root.to_path_buf();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push(part);
            if !at.exists() {
                fs::create_dir(&at).unwrap_or_else(|e| panic!("mkdir {}: {e}", at.display()));
                made.push(at.clone());
            }
        }
        Cgroup {
            made,
            path: path.to_string(),
        }
    }

    fn dir(&self) -> &Path {
        self.made.last().expect("made")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Runs the workload in `cgroup`, inside `ns`. The shell joins the cgroup
/// before entering the namespace: `ip netns exec` mounts a sysfs of the
/// namespace's own, without the cgroup tree.
fn run_in(ns: &TestNetns, cgroup: &Cgroup) {
    let procs = cgroup.dir().join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec ip netns exec {} python3 -c '{}' {N}",
        procs.display(),
        ns.name,
        WORKLOAD.replace('\'', "\"")
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("running the workload");
    assert!(out.status.success(), "workload in {}: {out:?}", cgroup.path);
}

#[test]
#[ignore = "needs root and cgroup v2: run `cargo xtask test`"]
fn timewait_and_refused_binds_are_labelled_with_container_and_pod() {
    require_root();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = parse_mountinfo(&mountinfo).expect("a cgroup2 mount (hybrid or unified host)");
    let ns = TestNetns::new("cgroups");
    let daemon = Daemon::start(
        Path::new(TWMON),
        &["--netns", &ns.path(), "--snapshot-interval", "200ms"],
    );
    let pid = std::process::id();
    let pod = format!("4f1c2d3e-5a6b-4c7d-8e9f-{pid:012x}");
    let kube_id = format!("{:064x}", 0xc0ffee_u64 + u64::from(pid));
    let podman_id = format!("{:064x}", 0xbeef_u64 + u64::from(pid));
    let kube = Cgroup::new(
        &root,
        &format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{kube_id}.scope",
            pod.replace('-', "_")
        ),
    );
    let podman = Cgroup::new(&root, &format!("/machine.slice/libpod-{podman_id}.scope"));
    run_in(&ns, &kube);
    run_in(&ns, &podman);

    let labels = |c: &Cgroup, container: &str, pod: &str| {
        format!(
            r#"cgroup="{}",container_id="{container}",pod_uid="{pod}""#,
            c.path
        )
    };
    let kube_labels = labels(&kube, &kube_id, &pod);
    let podman_labels = labels(&podman, &podman_id, "");
    let text = daemon.wait_for("both cgroups labelled", |t| {
        sample(t, "twmon_timewait_sockets_by_cgroup", &kube_labels) == Some(N as f64)
            && sample(t, "twmon_timewait_sockets_by_cgroup", &podman_labels) == Some(N as f64)
    });
    // Labels come out sorted by name.
    let bind = format!(
        r#"cgroup="{}",container_id="{kube_id}",held_by="timewait",pod_uid="{pod}""#,
        kube.path
    );
    assert_eq!(
        sample(&text, "twmon_bind_eaddrinuse_by_cgroup_total", &bind),
        Some(1.0),
        "{text}"
    );
    the_api_and_snapshot_filter_by_pod_and_cgroup(&daemon, &pod, &podman_id);
}

/// `?pod=` and `?cgroup=` narrow `/api/v1/timewait` to one workload's
/// sockets, named; `twmon snapshot --pod` asks the same.
fn the_api_and_snapshot_filter_by_pod_and_cgroup(daemon: &Daemon, pod: &str, podman_id: &str) {
    let sockets = |body: &str| -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_str(body).expect("JSON");
        doc["sockets"].as_array().expect("sockets").clone()
    };
    let (status, _, body) = daemon.get(&format!("/api/v1/timewait?pod={pod}&limit=1000"));
    assert!(status.contains("200"), "{status} {body}");
    let by_pod = sockets(&body);
    assert_eq!(by_pod.len() as u64, N, "{body}");
    assert!(
        by_pod.iter().all(|s| s["cgroup"]["pod_uid"] == pod),
        "{body}"
    );
    let libpod = format!("/api/v1/timewait?cgroup=libpod-{podman_id}&limit=1000");
    let (_, _, body) = daemon.get(&libpod);
    let by_cgroup = sockets(&body);
    assert_eq!(by_cgroup.len() as u64, N, "{body}");
    assert!(
        by_cgroup
            .iter()
            .all(|s| s["cgroup"]["container_id"] == podman_id && s["closer"]["comm"] == "python3"),
        "{body}"
    );
    let (_, _, body) = daemon.get("/api/v1/timewait?pod=00000000-0000-0000-0000-000000000000");
    assert!(sockets(&body).is_empty(), "{body}");
    let (_, _, body) = daemon.get("/api/v1/summary");
    assert!(body.contains(pod) && body.contains(podman_id), "{body}");

    let url = format!("http://{}", daemon.addr);
    let out = Command::new(TWMON)
        .args([
            "snapshot", "--json", "--limit", "1000", "--url", &url, "--pod", pod,
        ])
        .output()
        .expect("twmon snapshot");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sockets(&String::from_utf8_lossy(&out.stdout)).len() as u64,
        N
    );
}
