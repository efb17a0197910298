//! Faults twmon must survive: killed outright under churn (nothing left in
//! the kernel, a restart catches up), a ring buffer that overflows (losses
//! counted, snapshots repair the table), hooks that cannot attach (a
//! clear refusal when forced, a degraded mode the metrics report), and a
//! watched namespace named by a container's process, or whose name is
//! deleted while processes live on in it.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};
use testkit::{Daemon, TestNetns, client_closes_first, require_root, sample};

use crate::util::TWMON;

fn start(args: &[&str]) -> Daemon {
    Daemon::start(Path::new(TWMON), args)
}

/// The BPF programs, maps and links process `pid` holds, as "prog 12",
/// "map 7", "link 3", from its fds' fdinfo.
fn bpf_objects(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return found;
    };
    for fd in fds.flatten() {
        let text = fs::read_to_string(fd.path()).unwrap_or_default();
        for (key, kind) in [
            ("prog_id:", "prog"),
            ("map_id:", "map"),
            ("link_id:", "link"),
        ] {
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix(key)) {
                found.push(format!("{kind} {}", id.trim()));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether the kernel still has the object, according to bpftool.
fn still_loaded(object: &str) -> bool {
    let (kind, id) = object.split_once(' ').expect("kind id");
    Command::new("bpftool")
        .args([kind, "show", "id", id])
        .output()
        .map(|o| o.status.success())
        .expect("running bpftool (cargo xtask setup installs it)")
}

/// The namespace's IPv4 population as twmon's table lists it.
fn listed(daemon: &Daemon) -> f64 {
    sample(
        &daemon.metrics(),
        "twmon_timewait_sockets",
        r#"family="ipv4",substate="TIME_WAIT""#,
    )
    .unwrap_or(-1.0)
}

/// Waits until twmon's population equals `ss`'s, which holds still once
/// the churn stopped (TIME_WAIT lasts a minute).
fn matches_ss(daemon: &Daemon, ns: &TestNetns) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ss, _) = ns.ss_timewait();
        let got = listed(daemon);
        if got == ss as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "twmon lists {got}, ss {ss}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Connections closed client-first in `ns` until `stop`.
fn churn(ns: &TestNetns, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let path = ns.path();
    thread::spawn(move || {
        testkit::run_in_netns(Path::new(&path), move || {
            while !stop.load(Ordering::Relaxed) {
                client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 50);
            }
        });
    })
}

#[test]
#[ignore = "needs root and bpftool: run `cargo xtask test`"]
fn killed_under_churn_it_leaves_nothing_behind_and_a_restart_catches_up() {
    require_root();
    let ns = TestNetns::new("sigkill");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let args = ["--netns", &ns.path(), "--snapshot-interval", "200ms"];
    let mut first = start(&args);
    let objects = bpf_objects(first.child.id());
    assert!(
        objects.iter().any(|o| o.starts_with("prog"))
            && objects.iter().any(|o| o.starts_with("link")),
        "{objects:?}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let worker = churn(&ns, stop.clone());
    thread::sleep(Duration::from_millis(500));
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    // Programs, maps and links go with the last fd: the kernel frees them
    // once the killed process's files are closed (maps after an RCU grace).
    let deadline = Instant::now() + Duration::from_secs(10);
    while objects.iter().any(|o| still_loaded(o)) {
        let left: Vec<&String> = objects.iter().filter(|o| still_loaded(o)).collect();
        assert!(Instant::now() < deadline, "still in the kernel: {left:?}");
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("churn");
    // A new daemon's first snapshot brings in everything already in
    // TIME_WAIT, born while nobody watched.
    let second = start(&args);
    matches_ss(&second, &ns);
    let (status, _) = second.terminate();
    assert!(status.success());
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn an_overflowing_ring_counts_its_losses_and_snapshots_repair_the_table() {
    require_root();
    let ns = TestNetns::new("overflow");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    // The smallest ring, and a reader stopped while the kernel fills it.
    let daemon = start(&[
        "--netns",
        &ns.path(),
        "--snapshot-interval",
        "200ms",
        "--ring-buffer-bytes",
        "4096",
    ]);
    let pid = Pid::from_raw(daemon.child.id() as i32);
    signal::kill(pid, signal::Signal::SIGSTOP).expect("SIGSTOP");
    const N: u64 = 300;
    ns.run_inside(|| {
        client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), N);
    });
    signal::kill(pid, signal::Signal::SIGCONT).expect("SIGCONT");
    matches_ss(&daemon, &ns);
    let text = daemon.metrics();
    let full: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("twmon_kernel_errors_total{") && l.contains(r#"reason="ringbuf_full""#)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    let events = sample(&text, "twmon_events_total", "").unwrap_or(0.0);
    let lost = sample(&text, "twmon_events_lost_total", "").unwrap_or(0.0);
    // 4 KiB holds about forty records; the rest of the N closes were lost,
    // and counted: every record is received or counted lost.
    assert!(full > 0.0, "{text}");
    assert!(events + lost >= N as f64 && events < N as f64, "{text}");
    // The sockets whose records were lost are in the table all the same
    // (matches_ss above): the snapshots adopted them. And the kernel side
    // said, once, that it began losing records (aya-log).
    let said = std::iter::from_fn(|| daemon.log.try_recv().ok())
        .any(|l| l.contains("began losing records"));
    assert!(said, "no kernel log line about the full ring");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_hook_that_cannot_attach_is_refused_when_forced_and_reported_otherwise() {
    require_root();
    let check = Command::new(TWMON)
        .args(["check", "--probes", "auto"])
        .output()
        .expect("twmon check");
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    if !report.contains("refused") {
        eprintln!("every hook attaches with fentry here: nothing to force\n{report}");
        return;
    }
    // This host refuses fentry (and kprobes): forcing it is one clear
    // error that names the hook and why, and exit status 1.
    let out = Command::new(TWMON)
        .args(["run", "--listen", "127.0.0.1:0", "--probes", "fentry"])
        .output()
        .expect("running twmon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("twmon: error:") && last.contains("fentry"),
        "{stderr}"
    );
    // In auto mode it runs degraded and says so in the metrics.
    let daemon = start(&[]);
    let text = daemon.metrics();
    assert!(
        text.contains(r#"twmon_probe_attached{hook="timewait_birth",method="derived"} 0"#)
            || text.contains(r#"twmon_probe_attached{hook="timewait_birth",method="fentry"} 1"#)
            || text.contains(r#"twmon_probe_attached{hook="timewait_birth",method="kprobe"} 1"#),
        "{text}"
    );
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn btf_without_a_field_it_reads_degrades_only_what_needs_it() {
    require_root();
    // This kernel's BTF with one member renamed: `sock.sk_protocol`, which
    // the BTF-typed state-change programs read. Strings are unique and the
    // length unchanged, so the rest of the file stays valid.
    let mut btf = fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let (from, to) = (b"\0sk_protocol\0", b"\0sk_protocoX\0");
    let at: Vec<usize> = btf
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "sk_protocol is named once in BTF's strings");
    btf[at[0]..at[0] + to.len()].copy_from_slice(to);
    let trimmed = Removed(std::env::temp_dir().join(format!("twmon-btf-{}", std::process::id())));
    fs::write(&trimmed.0, &btf).expect("writing the trimmed BTF");
    let path = trimmed.0.to_string_lossy().into_owned();

    let check = Command::new(TWMON)
        .args(["check", "--btf", &path])
        .output()
        .expect("twmon check");
    let report = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{report}{stderr}");
    assert!(stderr.contains("sock.sk_protocol not in BTF"), "{stderr}");
    let line = report
        .lines()
        .find(|l| l.starts_with("inet_sock_set_state"))
        .unwrap_or_default();
    assert!(
        line.contains("tracepoint (refused: tp_btf: socket fields"),
        "{report}"
    );

    // The daemon runs on the classic tracepoint, says so, and still counts.
    let ns = TestNetns::new("trimbtf");
    let daemon = start(&["--btf", &path, "--netns", &ns.path()]);
    ns.run_inside(|| client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 5));
    let text = daemon.wait_for("5 closes counted", |t| {
        testkit::transitions(t, "FIN_WAIT2", "TIME_WAIT")
            + testkit::transitions(t, "FIN_WAIT2", "CLOSE")
            >= 5.0
    });
    assert_eq!(
        sample(
            &text,
            "twmon_probe_attached",
            r#"hook="inet_sock_set_state",method="tracepoint""#
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_watched_namespace_whose_name_is_deleted_is_still_dumped() {
    require_root();
    let ns = TestNetns::new("unnamed");
    let (_holder, held) = hold(&ns);
    let daemon = start(&["--netns", &ns.path(), "--snapshot-interval", "200ms"]);
    let deleted = Command::new("ip")
        .args(["netns", "del", &ns.name])
        .status()
        .expect("running ip netns del");
    assert!(deleted.success());
    shown_once_dumped(&daemon, &held, 12345);
    let log: Vec<String> = daemon.log.try_iter().collect();
    assert!(!log.iter().any(|l| l.contains("is gone")), "{log:#?}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_namespace_named_by_a_container_process_is_dumped() {
    require_root();
    // A namespace no name under /run/netns holds, only a root process with
    // every capability, as a container's: twmon reads its /proc/PID/ns/net
    // only with CAP_SYS_PTRACE.
    let mut unshare = Command::new("unshare");
    unshare.args(["--net", "setpriv", "--pdeathsig", "KILL", "sleep", "600"]);
    let own = inode("/proc/self/ns/net");
    let (_holder, held) = spawn_holder(unshare, "its own namespace", |ino| Some(ino) != own);
    let daemon = start(&["--netns", &held, "--snapshot-interval", "200ms"]);
    shown_once_dumped(&daemon, &held, 23456);
}

/// A process holding `ns` as a container's would (root, every
/// capability), killed when dropped, and its namespace file once it is
/// inside.
fn hold(ns: &TestNetns) -> (Killed, String) {
    // `ip netns exec` enters the namespace, then becomes setpriv, then
    // sleep, which dies with the test at the latest.
    let mut exec = Command::new("ip");
    exec.args(["netns", "exec", &ns.name])
        .args(["setpriv", "--pdeathsig", "KILL", "sleep", "600"]);
    let target = inode(&ns.path());
    spawn_holder(exec, "the namespace", |ino| Some(ino) == target)
}

/// Spawns `command`, a process that enters a network namespace and
/// sleeps, and waits until the namespace it is in has an inode `entered`
/// accepts (`what` names it for the timeout's message). The holder is
/// killed when dropped.
fn spawn_holder(
    mut command: Command,
    what: &str,
    entered: impl Fn(u64) -> bool,
) -> (Killed, String) {
    let holder = Killed(command.spawn().expect("running the holder"));
    let held = format!("/proc/{}/ns/net", holder.0.id());
    testkit::wait_until(&format!("the holder entered {what}"), || {
        inode(&held).is_some_and(&entered)
    });
    (holder, held)
}

/// The inode of a namespace file, `None` while it cannot be read.
fn inode(path: &str) -> Option<u64> {
    fs::metadata(path).map(|m| m.ino()).ok()
}

/// Sets tcp_max_tw_buckets in the namespace `held` names and waits for
/// twmon to show it: only a dump reads a namespace's sysctls.
fn shown_once_dumped(daemon: &Daemon, held: &str, value: u32) {
    let set = Command::new("nsenter")
        .arg(format!("--net={held}"))
        .args(["sysctl", "-q", "-w"])
        .arg(format!("net.ipv4.tcp_max_tw_buckets={value}"))
        .status()
        .expect("running nsenter");
    assert!(set.success());
    daemon.wait_for("a dump of the namespace", |text| {
        sample(text, "twmon_tcp_max_tw_buckets", "") == Some(f64::from(value))
    });
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file removed when dropped, whether the test passed or not.
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
