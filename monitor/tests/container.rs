//! The container image, run with Podman the way the DaemonSet runs it: the
//! flags, capabilities, mounts and host namespaces are read from
//! deploy/kubernetes/daemonset.yaml itself, so the two cannot drift. The
//! image is built by `cargo xtask image` (which `cargo xtask test` runs
//! first and names in TWMON_IMAGE).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
};

use serde_norway::Value;
use testkit::{Daemon, client_closes_first, require_root};

fn daemonset() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let text = fs::read_to_string(&path).expect("daemonset.yaml");
    serde_norway::from_str(&text).expect("daemonset.yaml parses")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// `podman run` arguments equivalent to the DaemonSet's pod spec, and the
/// container's arguments with its listen address replaced by `listen`.
pub fn podman_args(ds: &Value, listen: &str) -> (Vec<String>, Vec<String>) {
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut args = Vec::new();
    if pod["hostNetwork"].as_bool() == Some(true) {
        args.push("--network=host".to_string());
    }
    if pod["hostPID"].as_bool() == Some(true) {
        args.push("--pid=host".to_string());
    }
    if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
        args.push("--read-only".to_string());
    }
    if let (Some(u), Some(g)) = (sc["runAsUser"].as_u64(), sc["runAsGroup"].as_u64()) {
        args.push(format!("--user={u}:{g}"));
    }
    for cap in strings(&sc["capabilities"]["drop"]) {
        args.push(format!("--cap-drop={cap}"));
    }
    for cap in strings(&sc["capabilities"]["add"]) {
        args.push(format!("--cap-add={cap}"));
    }
    if sc["appArmorProfile"]["type"] == "Unconfined" {
        args.push("--security-opt=apparmor=unconfined".to_string());
    }
    let volumes = pod["volumes"].as_sequence().cloned().unwrap_or_default();
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let host = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .and_then(|v| v["hostPath"]["path"].as_str())
            .expect("every mount is a hostPath volume");
        let ro = if m["readOnly"].as_bool() == Some(true) {
            ":ro"
        } else {
            ""
        };
        let path = m["mountPath"].as_str().expect("mountPath");
        args.push(format!("--volume={host}:{path}{ro}"));
    }
    let mut run = strings(&c["args"]);
    if let Some(i) = run.iter().position(|a| a == "--listen") {
        run[i + 1] = listen.to_string();
    }
    (args, run)
}

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "2", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs root, Podman and the image: run `cargo xtask test`"]
fn the_image_runs_as_the_daemonset_runs_it() {
    require_root();
    let image = std::env::var("TWMON_IMAGE").expect(
        "TWMON_IMAGE names the image to test: run `cargo xtask image` (or `cargo xtask test`)",
    );
    let ds = daemonset();
    let (pod_args, run_args) = podman_args(&ds, "127.0.0.1:0");
    let name = format!("twmon-test-{}", std::process::id());
    let _container = Container(name.clone());
    let mut cmd = Command::new("podman");
    // crun refuses this host's hybrid cgroups, and the sandbox cannot raise
    // Podman's default rlimits (../shared/KERNEL-NOTES.md): neither is part
    // of what the DaemonSet asks for.
    cmd.args(["--runtime", "runc", "run", "--rm", "--name", &name])
        .args([
            "--ulimit",
            "nofile=1024:4096",
            "--ulimit",
            "nproc=1000:1000",
        ])
        .args(["--env", "RUST_LOG=info"])
        .args(&pod_args)
        .arg(&image)
        .args(&run_args);
    let daemon = Daemon::start_cmd(cmd);

    // It dropped every capability but the two it keeps for namespace
    // discovery and dumps (CAP_SYS_ADMIN 21, CAP_SYS_PTRACE 19).
    let pid = podman_pid(&name);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"));
    assert_eq!(cap_eff, Some((1 << 21) | (1 << 19)), "{status}");

    // It sees the host's own timewait sockets: a batch toward a port of
    // this test's, listed as ss lists them.
    let server = client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 20);
    let port = server.port();
    let want = ss_timewait_to(port);
    assert!(want > 0, "ss shows no timewait socket toward port {port}");
    let path = format!("/api/v1/timewait?port={port}&limit=1000");
    let text = daemon.wait_for("the batch in the table", |_| {
        let (_, _, body) = daemon.get(&path);
        body.matches("\"remote_port\"").count() as u64 == want
    });
    assert!(text.contains("twmon_timewait_sockets"), "{text}");
}

fn podman_pid(name: &str) -> u32 {
    let out = Command::new("podman")
        .args(["inspect", "--format", "{{.State.Pid}}", name])
        .output()
        .expect("podman inspect");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("podman inspect: {out:?}"))
}

/// Timewait sockets of this namespace whose remote port is `port`.
fn ss_timewait_to(port: u16) -> u64 {
    let out = Command::new("ss")
        .args(["-Htan", "state", "time-wait"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).lines().count() as u64
}

#[test]
fn the_podman_arguments_follow_the_daemonset() {
    let (args, run) = podman_args(&daemonset(), "127.0.0.1:1");
    for want in [
        "--network=host",
        "--pid=host",
        "--read-only",
        "--cap-drop=ALL",
        "--cap-add=BPF",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
    }
    assert!(
        args.iter()
            .any(|a| a.starts_with("--volume=/sys/kernel/btf:")),
        "{args:?}"
    );
    assert_eq!(run[0], "run");
    assert!(
        run.windows(2).any(|w| w == ["--listen", "127.0.0.1:1"]),
        "{run:?}"
    );
}
