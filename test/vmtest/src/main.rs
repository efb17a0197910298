//! Scenarios that run inside the QEMU guest booted by `cargo xtask vm-test`
//! (PID 1 is a busybox script; this binary is static, built for musl).
//!
//! Each scenario runs the real daemon against the guest's real kernel and
//! checks exact numbers against the kernel's own view (/proc/net/tcp*,
//! /proc/net/netstat). Output is one line per scenario,
//! `vmtest: PASS|FAIL <scenario> [<mode>]`, then `vmtest: N passed, M failed`,
//! which the host parses.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    panic,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use testkit::{
    Daemon, client_closes_first, create_netns_at, run_in_netns, sample, tcp_counters_here,
    timewait_sockets_here, transitions,
};

/// Connections per family in each scenario.
const N: u64 = 50;

struct Ctx {
    twmon: PathBuf,
}

type Scenario = fn(&Ctx);

fn main() {
    let twmon = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/twmon"));
    let ctx = Ctx { twmon };
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("vmtest: kernel {}", kernel.trim());
    create_netns_at(Path::new(NETNS));

    let scenarios: &[(&str, Scenario)] = &[("client_close_transitions", client_close_transitions)];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        let mode = "tracepoint";
        match panic::catch_unwind(panic::AssertUnwindSafe(|| scenario(&ctx))) {
            Ok(()) => {
                passed += 1;
                println!("vmtest: PASS {name} [{mode}]");
            }
            Err(err) => {
                failed += 1;
                let msg = err
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("vmtest: FAIL {name} [{mode}]: {}", msg.replace('\n', " | "));
            }
        }
    }
    println!("vmtest: {passed} passed, {failed} failed");
}

/// Where the guest's test namespace is bound: twmon watches only it, so
/// the test's own scrapes (host-side loopback) stay out of the numbers.
const NETNS: &str = "/run/netns/vmtest";

/// N client-closed connections per family: every transition is received or
/// counted lost, and the TIME_WAIT population equals the kernel's.
fn client_close_transitions(ctx: &Ctx) {
    let daemon = Daemon::start(
        Path::new(&ctx.twmon),
        &["--snapshot-interval", "200ms", "--netns", NETNS],
    );
    let (tw4, tw6) = run_in_netns(Path::new(NETNS), timewait_sockets_here);
    let before = daemon.metrics();
    let base = |from: &str, to: &str| transitions(&before, from, to);
    let base_events = sample(&before, "twmon_events_total", "").unwrap_or(0.0);

    run_in_netns(Path::new(NETNS), || {
        client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), N);
        client_closes_first(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), N);
    });

    // 10 transitions per connection, 2 per listener.
    let expected = (2 * N * 10 + 4) as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = daemon.metrics();
    loop {
        let got = sample(&text, "twmon_events_total", "").unwrap_or(0.0)
            + sample(&text, "twmon_events_lost_total", "").unwrap_or(0.0)
            - base_events;
        if got >= expected {
            assert_eq!(got, expected, "more events than the workload made");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events did not arrive: {got} of {expected}"
        );
        thread::sleep(Duration::from_millis(100));
        text = daemon.metrics();
    }
    let lost = sample(&text, "twmon_events_lost_total", "").unwrap_or(0.0);
    assert_eq!(lost, 0.0, "events lost:\n{text}");
    let n = (2 * N) as f64;
    for (from, to) in [
        ("ESTABLISHED", "FIN_WAIT1"),
        ("FIN_WAIT1", "FIN_WAIT2"),
        ("FIN_WAIT2", "CLOSE"),
        ("ESTABLISHED", "CLOSE_WAIT"),
        ("LAST_ACK", "CLOSE"),
    ] {
        let got = transitions(&text, from, to) - base(from, to);
        assert_eq!(got, n, "{from}->{to}: {got}, expected {n}");
    }

    // Population: let the namespace settle and a snapshot run, then compare
    // with the kernel's own list.
    thread::sleep(Duration::from_millis(600));
    let text = daemon.metrics();
    let ((k4, k6), counters) = run_in_netns(Path::new(NETNS), || {
        (timewait_sockets_here(), tcp_counters_here())
    });
    assert!(
        k4 + k6 + counters.get("Tcp.OutRsts").copied().unwrap_or(0) >= tw4 + tw6 + 2 * N,
        "kernel TIME_WAIT ({k4}, {k6}): {counters:?}"
    );
    for (family, k) in [("ipv4", k4), ("ipv6", k6)] {
        let got = sample(
            &text,
            "twmon_timewait_sockets",
            &format!(r#"family="{family}""#),
        );
        assert_eq!(got, Some(k as f64), "{family} population");
    }
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}
