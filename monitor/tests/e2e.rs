//! End to end on this machine's kernel: the real daemon, real probes, real
//! connections in a private network namespace, checked against `ss`.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::util::TWMON;
use monitor_common::recent::GEN_WORDS;
use testkit::{Daemon, TestNetns, client_closes_first, require_root, sample, transitions};

fn start(args: &[&str]) -> Daemon {
    Daemon::start(Path::new(TWMON), args)
}

/// The daemon's effective capability set, from /proc.
fn effective_caps(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .expect("reading the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapEff line")
}

const TW_V4: &str = r#"family="ipv4",substate="TIME_WAIT""#;
const TW_V6: &str = r#"family="ipv6",substate="TIME_WAIT""#;

/// Connections per address family.
const N: u64 = 100;
const SNAPSHOT_MS: u64 = 200;

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn timewait_population_and_transitions_match_the_kernel() {
    require_root();
    let ns = TestNetns::new("e2e");
    // The default tcp_tw_reuse=2 lets a loopback connect() take over a
    // TIME_WAIT four-tuple once its timestamp is a second old; off here so
    // the population depends on the workload alone. Reuse gets its own tests.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let interval = format!("{SNAPSHOT_MS}ms");
    let daemon = start(&["--netns", &ns.path(), "--snapshot-interval", &interval]);

    // Only CAP_SYS_ADMIN (for the namespace dumps) and CAP_SYS_PTRACE (to
    // find the namespace through a process, should its file go) are left.
    assert_eq!(
        effective_caps(&daemon),
        (1 << 21) | (1 << 19),
        "CapEff after attach"
    );

    // Nothing has happened in the namespace yet, whatever the host does.
    let before = daemon.metrics();
    assert_eq!(sample(&before, "twmon_timewait_sockets", TW_V4), Some(0.0));
    assert_eq!(
        sample(&before, "twmon_events_total", ""),
        Some(0.0),
        "{before}"
    );

    ns.run_inside(|| {
        client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), N);
        client_closes_first(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), N);
    });

    // The kernel counts every transition itself and sends a record only for
    // what the table needs: per connection, the client's close reaching
    // CLOSE (the timewait socket's birth, with who closed joined in). A new
    // connection is sent only when its four-tuple closed lately (none here:
    // every connection has a port of its own), but the kernel's filter of
    // those may answer yes by mistake (odds of about 1 in 10^9 each here).
    // Each record is either received or counted lost by the kernel.
    let expected_events = (2 * N) as f64;
    let leeway = 2.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let settled = |text: &str| {
        let events = sample(text, "twmon_events_total", "").unwrap_or(0.0);
        let lost = sample(text, "twmon_events_lost_total", "").unwrap_or(0.0);
        events + lost >= expected_events
    };
    let mut text = daemon.metrics();
    while !settled(&text) {
        assert!(
            Instant::now() < deadline,
            "events did not arrive; sockets now {}:\n{text}",
            ns.ss_states()
        );
        thread::sleep(Duration::from_millis(50));
        text = daemon.metrics();
    }
    // The server's FIN reaches the last clients asynchronously (softirq):
    // wait until only TIME_WAIT sockets are left, then for a snapshot taken
    // after that. TIME_WAIT lasts 60 s, so the population holds still while
    // twmon and ss are compared.
    while ns.ss_states()
        != format!(
            "{{\"TIME-WAIT\": {}}}",
            ns.ss_timewait().0 + ns.ss_timewait().1
        )
    {
        assert!(
            Instant::now() < deadline,
            "sockets did not settle: {}",
            ns.ss_states()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(3 * SNAPSHOT_MS));
    let text = daemon.metrics();
    let (ss_v4, ss_v6) = ns.ss_timewait();
    let netstat = ns.netstat();

    assert_eq!(
        sample(&text, "twmon_timewait_sockets", TW_V4),
        Some(ss_v4 as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, "twmon_timewait_sockets", TW_V6),
        Some(ss_v6 as f64),
        "{text}"
    );
    // Births derived from transitions and confirmed by snapshots: every
    // socket ss lists, plus any an RST killed after its confirmation. A
    // birth counts under the substate it was confirmed in, and one first
    // dumped as an orphaned FIN_WAIT2 (the peer's FIN still in flight)
    // turns TIME_WAIT later (seen in CI: 94 + 1 for 95), so both add up.
    let entered = |family: &str| -> f64 {
        ["TIME_WAIT", "FIN_WAIT2"]
            .iter()
            .filter_map(|s| {
                let labels = format!(r#"family="{family}",substate="{s}""#);
                sample(&text, "twmon_timewait_entered_total", &labels)
            })
            .sum()
    };
    assert!(
        entered("ipv4") >= ss_v4 as f64 && entered("ipv4") <= N as f64,
        "{text}"
    );
    assert!(
        entered("ipv6") >= ss_v6 as f64 && entered("ipv6") <= N as f64,
        "{text}"
    );
    // Every one was closed by this test's thread (a new thread starts with
    // its creator's comm, which libtest sets to the test's name).
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("own comm");
    assert_eq!(
        sample(
            &text,
            "twmon_timewait_sockets_by_process",
            &format!(r#"comm="{}""#, comm.trim())
        ),
        Some((ss_v4 + ss_v6) as f64),
        "{text}"
    );
    // Every connection left a TIME_WAIT socket, except those an RST killed
    // early (on loopback a late segment can hit the closed server's
    // listener, whose RST assassinates the TIME_WAIT socket; rfc1337=0).
    let rsts = netstat.get("Tcp.OutRsts").copied().unwrap_or(0);
    assert!(
        ss_v4 + ss_v6 + rsts >= 2 * N && ss_v4 <= N && ss_v6 <= N,
        "ss: ({ss_v4}, {ss_v6}), {netstat:?}"
    );
    assert_eq!(
        netstat.get("TcpExt.TW").copied(),
        Some(2 * N),
        "{netstat:?}"
    );

    // Exact accounting: every record the kernel produced was received or
    // counted lost, and every transition counted, but for runs the kernel
    // skipped (an interrupt nesting into a running program), which count as
    // lost. Rare, but real.
    let events = sample(&text, "twmon_events_total", "").unwrap_or(0.0);
    let lost = sample(&text, "twmon_events_lost_total", "").unwrap_or(0.0);
    assert!(
        events + lost >= expected_events && events + lost <= expected_events + leeway,
        "{events} records and {lost} lost, {expected_events} expected:\n{text}"
    );
    let n = (2 * N) as f64;
    let exact = |from: &str, to: &str| {
        let got = transitions(&text, from, to);
        assert!(
            got <= n && got + lost >= n,
            "{from}->{to}: {got} counted, {lost} lost, {n} expected:\n{text}"
        );
        if lost == 0.0 {
            assert_eq!(got, n, "{from}->{to}:\n{text}");
        }
    };
    // The closing side of each connection...
    exact("ESTABLISHED", "FIN_WAIT1");
    exact("FIN_WAIT1", "FIN_WAIT2");
    exact("FIN_WAIT2", "CLOSE");
    // ...and the server side...
    exact("ESTABLISHED", "CLOSE_WAIT");
    exact("LAST_ACK", "CLOSE");
    exact("CLOSE", "SYN_SENT");
    // ...and nothing from outside the namespace: exactly our two listeners,
    // although this test's own scrapes run in the host namespace.
    assert_eq!(transitions(&text, "CLOSE", "LISTEN"), 2.0, "{text}");
    filter_holds_each_close(&text, 2 * N);
    eprintln!("events {events}, lost {lost}, ss TIME_WAIT ({ss_v4}, {ss_v6}), {netstat:?}");

    let (status, elapsed) = daemon.terminate();
    eprintln!("twmon exited with {status} {elapsed:?} after SIGTERM");
    assert!(status.success(), "twmon exited with {status} after SIGTERM");
}

/// The kernel's filter of recent closes holds two bits for each of the
/// namespace's `closes` active closes (the kernel's `TcpExt.TW`, checked
/// above), in the current generation only, and its false-match chance is
/// what those bits make: `closes` words of two bits each, 2 ordered pairs
/// apiece, out of `GEN_WORDS` x 64 x 63 choices. Two closes may share a
/// word (odds of a few percent here) or a bit, hence the slack.
fn filter_holds_each_close(text: &str, closes: u64) {
    let fill = |generation: &str| {
        sample(
            text,
            "twmon_collision_filter_fill_ratio",
            &format!(r#"generation="{generation}""#),
        )
        .unwrap_or_else(|| panic!("no {generation} filter fill:\n{text}"))
    };
    let words = f64::from(GEN_WORDS);
    let bits = (fill("current") * words * 64.0).round() as u64;
    assert!(
        (2 * closes - 4..=2 * closes).contains(&bits),
        "{bits} bits set for {closes} closes:\n{text}"
    );
    assert_eq!(fill("previous"), 0.0, "{text}");
    let false_match =
        sample(text, "twmon_collision_filter_false_match_ratio", "").expect("false match ratio");
    let pairs = (false_match * words * 64.0 * 63.0).round() as u64;
    assert!(
        (bits..=bits + 40).contains(&pairs),
        "{pairs} bit pairs set for {bits} bits:\n{text}"
    );
    eprintln!("filter: {bits} bits and {pairs} bit pairs set for {closes} closes");
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn serves_landing_page_and_health() {
    require_root();
    let daemon = start(&["--snapshot-interval", "200ms"]);
    // Watching every namespace keeps CAP_SYS_PTRACE to find them too.
    assert_eq!(
        effective_caps(&daemon),
        (1 << 21) | (1 << 19),
        "CapEff after attach"
    );
    // Dumps keep working with what is left: the population is exported
    // again after a few snapshot rounds without errors.
    thread::sleep(Duration::from_millis(700));
    let (status, _, body) = daemon.get("/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, headers, body) = daemon.get("/");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.to_ascii_lowercase().contains("text/html"),
        "{headers}"
    );
    assert!(body.contains("/metrics"), "{body}");
    let (status, _, _) = daemon.get("/nope");
    assert!(status.contains("404"), "{status}");
    let text = daemon.metrics();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let labels = format!(
        r#"kernel="{}",version="{}""#,
        kernel.trim(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        sample(&text, "twmon_build_info", &labels),
        Some(1.0),
        "{text}"
    );
    let took = sample(&text, "twmon_scrape_duration_seconds", "").expect("scrape duration");
    assert!(took > 0.0 && took < 1.0, "{took}");
    let (status, _) = daemon.terminate();
    assert!(status.success());
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn without_privileges_it_names_the_missing_capability() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(TWMON)
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got: {stderr}"
    );
    assert!(
        stderr.starts_with("twmon: error: missing capability CAP_BPF"),
        "{stderr}"
    );
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn mounts_tracefs_when_missing() {
    require_root();
    // A private mount namespace without tracefs; the host keeps its mounts.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         if [ -d /sys/kernel/tracing/events ]; then echo 'tracefs still mounted' >&2; exit 3; fi; \
         exec \"$0\" run --listen 127.0.0.1:0",
        );
    cmd.arg(TWMON);
    let daemon = Daemon::start_cmd(cmd);
    let text = daemon.metrics();
    assert!(text.contains("twmon_events_total"), "{text}");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn bad_arguments_get_a_clear_error() {
    require_root();
    let out = Command::new(TWMON)
        .args(["run", "--netns", "twmon-no-such-namespace"])
        .output()
        .expect("running twmon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/run/netns/twmon-no-such-namespace"),
        "{stderr}"
    );
    assert!(stderr.contains("ip netns list"), "{stderr}");

    // A port already taken fails before anything is loaded.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(TWMON)
        .args(["run", "--listen", &addr])
        .output()
        .expect("running twmon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn without_btf_it_degrades_or_refuses_netns() {
    require_root();
    // All namespaces: runs, says what it cannot do, still counts.
    let daemon = start(&["--btf", "/nonexistent/vmlinux"]);
    let text = daemon.metrics();
    assert!(text.contains("twmon_events_total"), "{text}");
    let (status, _) = daemon.terminate();
    assert!(status.success());

    // One namespace: impossible without the socket's namespace; one line.
    let ns = TestNetns::new("nobtf");
    let out = Command::new(TWMON)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--btf",
            "/nonexistent/vmlinux",
        ])
        .args(["--netns", &ns.path()])
        .output()
        .expect("running twmon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("twmon: error: --netns needs"), "{stderr}");
    assert!(last.contains("/nonexistent/vmlinux"), "{stderr}");
    assert!(last.contains("CONFIG_DEBUG_INFO_BTF"), "{stderr}");
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn counts_eaddrnotavail_when_ports_run_out() {
    require_root();
    let ns = TestNetns::new("ports");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let daemon = start(&["--netns", &ns.path()]);
    let before = daemon.metrics();
    assert_eq!(
        sample(
            &before,
            "twmon_probe_attached",
            r#"hook="connect_eaddrnotavail",method="tracepoint""#
        ),
        Some(1.0),
        "{before}"
    );
    let (made, failed) =
        ns.run_inside(|| testkit::exhaust_ports(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 3));
    // The kernel decides how many of the two ports connect() may use.
    assert!(made >= 1 && failed == 3, "made {made}, failed {failed}");
    let count = |t: &str| sample(t, "twmon_connect_eaddrnotavail_total", "");
    let text = daemon.wait_for("every failure counted", |t| count(t) >= Some(failed as f64));
    assert_eq!(count(&text), Some(failed as f64), "{text}");
    // Connects from outside the namespace are not counted: the test's own
    // scrapes succeed, and nothing else failed.
    let (status, _) = daemon.terminate();
    assert!(status.success());
}
