//! Scenarios that run inside the QEMU guest booted by `cargo xtask vm-test`
//! (PID 1 is a busybox script; this binary is static, built for musl).
//!
//! Each scenario runs the real daemon against the guest's real kernel, in a
//! network namespace of its own, once per probe mode, and checks exact
//! numbers against the kernel's own view (/proc/net/tcp*, /proc/net/netstat).
//! Output is one line per scenario and mode,
//! `vmtest: PASS|FAIL <scenario> [<mode>]`, then `vmtest: N passed, M failed`,
//! which the host parses.

use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    panic,
    path::PathBuf,
    process::Command,
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
    /// `--probes` value.
    mode: &'static str,
    /// Namespace of this scenario run; twmon watches only it, so the test's
    /// own scrapes (loopback in the root namespace) stay out of the numbers.
    netns: PathBuf,
}

impl Ctx {
    fn start(&self, extra: &[&str]) -> Daemon {
        let netns = self.netns.to_string_lossy().into_owned();
        let mut args = vec!["--snapshot-interval", "200ms", "--probes", self.mode];
        args.extend(["--netns", &netns]);
        args.extend(extra);
        Daemon::start(&self.twmon, &args)
    }

    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(&self.netns, f)
    }
}

type Scenario = fn(&Ctx);

const SCENARIOS: &[(&str, Scenario, &[&str])] = &[
    (
        "client_close_transitions",
        client_close_transitions,
        &["tracepoint", "fentry", "kprobe"],
    ),
    ("timewait_births", timewait_births, &["fentry", "kprobe"]),
    (
        "timewait_overflow",
        timewait_overflow,
        &["fentry", "kprobe"],
    ),
    ("syn_in_timewait", syn_in_timewait, &["fentry", "kprobe"]),
    ("timewait_expiry", timewait_expiry, &["fentry", "kprobe"]),
    ("connect_reuse", connect_reuse, &["fentry", "kprobe"]),
    ("bound_port_reuse", bound_port_reuse, &["fentry", "kprobe"]),
    (
        "segments_replayed",
        segments_replayed,
        &["fentry", "kprobe"],
    ),
    ("netns_deleted", netns_deleted, &["fentry", "kprobe"]),
    // A tracepoint hook whatever the mode; once is enough.
    ("resets_sent", resets_sent, &["fentry"]),
    (
        "port_exhaustion",
        port_exhaustion,
        &["tracepoint", "fentry", "kprobe"],
    ),
    ("check_prefers_fentry", check_prefers_fentry, &["auto"]),
];

fn main() {
    let twmon = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/twmon"));
    println!("vmtest: kernel {}", monitor::kernel_release());

    // Set by `cargo xtask vm-test --only` through the kernel command line.
    let only = std::env::var("TWMON_VMTEST_ONLY").ok();
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario, modes) in SCENARIOS {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for mode in *modes {
            let netns = PathBuf::from(format!("/run/netns/{name}-{mode}"));
            create_netns_at(&netns);
            let ctx = Ctx {
                twmon: twmon.clone(),
                mode,
                netns,
            };
            let started = Instant::now();
            match panic::catch_unwind(panic::AssertUnwindSafe(|| scenario(&ctx))) {
                Ok(()) => {
                    passed += 1;
                    println!("vmtest: PASS {name} [{mode}] {:.1?}", started.elapsed());
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
    }
    println!("vmtest: {passed} passed, {failed} failed");
}

fn counter_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, key: &str) -> u64 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}

fn workload(ctx: &Ctx) {
    ctx.inside(|| {
        client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), N);
        client_closes_first(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), N);
    });
}

/// N client-closed connections per family: every transition is received or
/// counted lost, and the TIME_WAIT population equals the kernel's.
fn client_close_transitions(ctx: &Ctx) {
    let daemon = ctx.start(&[]);
    let before = daemon.metrics();
    workload(ctx);

    // 10 transitions per connection, 2 per listener. (Probe modes also
    // report births and segments: other scenarios count those.)
    let expected = (2 * N * 10 + 4) as f64;
    let all_transitions = |t: &str| -> f64 {
        t.lines()
            .filter(|l| l.starts_with("twmon_tcp_state_transitions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let lost_since = |t: &str| {
        sample(t, "twmon_events_lost_total", "").unwrap_or(0.0)
            - sample(&before, "twmon_events_lost_total", "").unwrap_or(0.0)
    };
    let made = |t: &str| all_transitions(t) - all_transitions(&before);
    let text = daemon.wait_for("all transitions", |t| made(t) + lost_since(t) >= expected);
    // More is possible: under TCG's timing TCP sometimes takes another
    // path (a retransmission, a simultaneous close); the transitions that
    // matter are checked one by one below.
    if made(&text) > expected {
        println!(
            "vmtest: info {} transitions beyond the usual {expected}",
            made(&text) - expected
        );
    }
    // Received + lost equals what the workload made (checked above), so a
    // transition may be short by at most the events the kernel counted as
    // skipped (an interrupt's softirq nesting into a running program; under
    // TCG's slow emulation that happens every few hundred events).
    let lost = lost_since(&text);
    let n = (2 * N) as f64;
    for (from, to) in [
        ("ESTABLISHED", "FIN_WAIT1"),
        ("FIN_WAIT1", "FIN_WAIT2"),
        ("FIN_WAIT2", "CLOSE"),
        ("ESTABLISHED", "CLOSE_WAIT"),
        ("LAST_ACK", "CLOSE"),
    ] {
        let got = transitions(&text, from, to) - transitions(&before, from, to);
        assert!(
            got <= n && got + lost >= n,
            "{from}->{to}: {got} counted, {lost} lost, {n} expected"
        );
        if lost == 0.0 {
            assert_eq!(got, n, "{from}->{to}");
        }
    }
    println!("vmtest: info {lost} events lost (counted by the kernel)");

    // Population: let the namespace settle and a snapshot run, then compare
    // with the kernel's own list.
    thread::sleep(Duration::from_millis(600));
    let text = daemon.metrics();
    let ((k4, k6), counters) = ctx.inside(|| (timewait_sockets_here(), tcp_counters_here()));
    let rsts = counters.get("Tcp.OutRsts").copied().unwrap_or(0);
    assert!(
        k4 + k6 + rsts >= 2 * N,
        "kernel TIME_WAIT ({k4}, {k6}): {counters:?}"
    );
    for (family, k) in [("ipv4", k4), ("ipv6", k6)] {
        let got = sample(
            &text,
            "twmon_timewait_sockets",
            &format!(r#"family="{family}",substate="TIME_WAIT""#),
        );
        assert_eq!(got, Some(k as f64), "{family} population");
    }
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// Every client-closed connection gives exactly one timewait birth, in the
/// right family, as the kernel's TcpExt.TW confirms.
fn timewait_births(ctx: &Ctx) {
    let daemon = ctx.start(&[]);
    let attached = format!(r#"hook="timewait_birth",method="{}""#, ctx.mode);
    let before = daemon.metrics();
    assert_eq!(
        sample(&before, "twmon_probe_attached", &attached),
        Some(1.0),
        "{before}"
    );
    let kernel_before = ctx.inside(tcp_counters_here);
    workload(ctx);

    let entered = |t: &str, family: &str| -> f64 {
        ["TIME_WAIT", "FIN_WAIT2"]
            .iter()
            .filter_map(|s| {
                let labels = format!(r#"family="{family}",substate="{s}""#);
                sample(t, "twmon_timewait_entered_total", &labels)
            })
            .sum()
    };
    let n = N as f64;
    let text = daemon.wait_for("N births per family", |t| {
        let slack = shortfall(ctx, n, t);
        entered(t, "ipv4") >= n - slack && entered(t, "ipv6") >= n - slack
    });
    let text = settled(&daemon, shortfall(ctx, n, &text), text);
    let slack = shortfall(ctx, n, &text);
    for family in ["ipv4", "ipv6"] {
        let what = format!("{family} births");
        assert_within(entered(&text, family), n, slack, &what, &text);
    }
    assert_eq!(
        sample(&text, "twmon_timewait_overflow_total", ""),
        Some(0.0)
    );
    // Attribution: every timewait socket still in the table was closed by
    // the workload's thread, whose comm a new thread inherits.
    let comm = ctx.inside(|| fs::read_to_string("/proc/thread-self/comm").unwrap_or_default());
    let entries = sample(&text, "twmon_table_entries", "").unwrap_or(-1.0);
    let by_comm = sample(
        &text,
        "twmon_timewait_sockets_by_process",
        &format!(r#"comm="{}""#, comm.trim()),
    );
    assert!(entries > 0.0, "{text}");
    assert_eq!(by_comm, Some(entries), "closing process {comm:?}: {text}");

    // Segments: each orphaned FIN_WAIT2 timewait socket receives exactly
    // one peer's first FIN ("other"). Under TCG's timing a delayed ACK can
    // also reach a socket already in TIME_WAIT (old_duplicate); its re-ACK
    // meets the closed server's listener, whose RST kills the timewait
    // socket (rst): TIME_WAIT assassination, bounded by the RSTs the
    // namespace sent. No SYN, no retransmitted FIN.
    // Every close made a timewait socket; a birth not seen (a run lost,
    // or skipped uncounted by kprobes before 6.7) may have been a FIN_WAIT2
    // one whose FIN was seen.
    let fin_wait2 = fin_wait2_births(&text);
    let missed_births = (n * 2.0 - entered(&text, "ipv4") - entered(&text, "ipv6")).max(0.0);
    let text = daemon.wait_for("one FIN per FIN_WAIT2 socket", |t| {
        sample(t, "twmon_timewait_segments_total", r#"kind="other""#).unwrap_or(0.0)
            + shortfall(ctx, fin_wait2, t)
            >= fin_wait2
    });
    let seg_slack = shortfall(ctx, fin_wait2, &text);
    let segments = |kind: &str| {
        sample(
            &text,
            "twmon_timewait_segments_total",
            &format!(r#"kind="{kind}""#),
        )
        .unwrap_or(-1.0)
    };
    let other = segments("other");
    assert!(
        other <= fin_wait2 + missed_births && other + seg_slack >= fin_wait2,
        "other: {other} for {fin_wait2} FIN_WAIT2 births ({missed_births} births missed): {text}"
    );
    assert_eq!(
        (segments("syn"), segments("fin_retransmit")),
        (0.0, 0.0),
        "{text}"
    );
    let out_rsts = counter_delta(
        &kernel_before,
        &ctx.inside(tcp_counters_here),
        "Tcp.OutRsts",
    );
    assert!(
        segments("rst") <= out_rsts as f64,
        "rst > OutRsts {out_rsts}: {text}"
    );
    println!(
        "vmtest: info {fin_wait2} FIN_WAIT2 births, {other} FINs, {} old duplicates, {} RSTs absorbed",
        segments("old_duplicate"),
        segments("rst")
    );

    let kernel_after = ctx.inside(tcp_counters_here);
    let tw = counter_delta(&kernel_before, &kernel_after, "TcpExt.TW");
    println!("vmtest: info {} births, TcpExt.TW +{tw}", 2 * N);
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// With tcp_max_tw_buckets tiny, births beyond it are refused: twmon's
/// overflow count equals the kernel's TCPTimeWaitOverflow, and births plus
/// overflows account for every connection.
fn timewait_overflow(ctx: &Ctx) {
    const BUCKETS: u64 = 10;
    ctx.inside(|| {
        fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", BUCKETS.to_string())
            .expect("setting tcp_max_tw_buckets in the namespace");
    });
    let daemon = ctx.start(&[]);
    let kernel_before = ctx.inside(tcp_counters_here);
    workload(ctx);

    let births = |t: &str| -> f64 {
        let mut sum = 0.0;
        for family in ["ipv4", "ipv6"] {
            for s in ["TIME_WAIT", "FIN_WAIT2"] {
                let labels = format!(r#"family="{family}",substate="{s}""#);
                sum += sample(t, "twmon_timewait_entered_total", &labels).unwrap_or(0.0);
            }
        }
        sum
    };
    let overflows = |t: &str| sample(t, "twmon_timewait_overflow_total", "").unwrap_or(0.0);
    let total = (2 * N) as f64;
    let text = daemon.wait_for("every close accounted", |t| {
        births(t) + overflows(t) >= total - shortfall(ctx, total, t)
    });
    let text = settled(&daemon, shortfall(ctx, total, &text), text);
    let slack = shortfall(ctx, total, &text);
    let kernel_after = ctx.inside(tcp_counters_here);
    let kernel_overflows =
        counter_delta(&kernel_before, &kernel_after, "TcpExt.TCPTimeWaitOverflow") as f64;
    assert!(
        kernel_overflows > 0.0,
        "the kernel saw no overflow: {kernel_after:?}"
    );
    assert_within(
        overflows(&text),
        kernel_overflows,
        slack,
        "overflows",
        &text,
    );
    assert_within(
        births(&text) + overflows(&text),
        total,
        slack,
        "closes",
        &text,
    );
    // TcpExt.TW counts births on these kernels (checked in timewait_births).
    let kernel_births = counter_delta(&kernel_before, &kernel_after, "TcpExt.TW") as f64;
    assert_within(births(&text), kernel_births, slack, "births", &text);
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// A client reconnecting from the same port while the server holds the
/// four-tuple in TIME_WAIT: its SYN reaches the timewait socket, which
/// gives the four-tuple to the new connection; twmon sees one SYN segment.
fn syn_in_timewait(ctx: &Ctx) {
    let daemon = ctx.start(&[]);
    let established = ctx
        .inside(|| testkit::syn_into_server_timewait(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
    assert!(established, "the reconnect from the same port failed");
    let syn = |t: &str| sample(t, "twmon_timewait_segments_total", r#"kind="syn""#);
    let reused = |t: &str| sample(t, "twmon_timewait_exited_total", r#"cause="reused_by_syn""#);
    let text = daemon.wait_for("the SYN and the reuse", |t| {
        syn(t).unwrap_or(0.0) >= 1.0 && reused(t).unwrap_or(0.0) >= 1.0
    });
    assert_eq!(syn(&text), Some(1.0), "{text}");
    assert_eq!(reused(&text), Some(1.0), "{text}");
    assert_eq!(collisions(&text, "syn_in_timewait"), 1.0, "{text}");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

fn collisions(t: &str, kind: &str) -> f64 {
    sample(
        t,
        "twmon_fourtuple_collisions_total",
        &format!(r#"kind="{kind}""#),
    )
    .unwrap_or(-1.0)
}

/// The textbook hazard with probes: reconnecting from the same bound port
/// while the old four-tuple is in the client's TIME_WAIT. With timestamps
/// the kernel hands the four-tuple over (connect_reuse, exactly
/// TcpExt.TWRecycled); without, connect() fails (eaddrnotavail).
fn bound_port_reuse(ctx: &Ctx) {
    let daemon = ctx.start(&[]);
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    for (timestamps, reused) in [("1", true), ("0", false)] {
        let before = ctx.inside(tcp_counters_here);
        let result = ctx.inside(move || {
            fs::write("/proc/sys/net/ipv4/tcp_timestamps", timestamps).expect("timestamps");
            testkit::reconnect_from_same_port(listen).0.is_ok()
        });
        let after = ctx.inside(tcp_counters_here);
        let recycled = counter_delta(&before, &after, "TcpExt.TWRecycled") as f64;
        assert_eq!(result, reused, "tcp_timestamps={timestamps}");
        assert_eq!(recycled, f64::from(u8::from(reused)), "{after:?}");
    }
    let text = daemon.wait_for("one reuse and one refusal", |t| {
        collisions(t, "connect_reuse") >= 1.0 && collisions(t, "eaddrnotavail") >= 1.0
    });
    assert_eq!(collisions(&text, "connect_reuse"), 1.0, "{text}");
    assert_eq!(collisions(&text, "eaddrnotavail"), 1.0, "{text}");
    assert_eq!(exited(&text, "reused_by_connect"), 1.0, "{text}");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// What TIME_WAIT is for, on purpose: the peer's FIN sent again (our last
/// ACK "lost") is a fin_retransmit; a copy of the peer's older data is an
/// old_duplicate, which the kernel rejects by PAWS (TcpExt.PAWSTimewait,
/// PAWSEstab before 6.14);
/// the closed peer's RSTs to TIME_WAIT's ACKs are absorbed (rfc1337=1).
fn segments_replayed(ctx: &Ctx) {
    let daemon = ctx.start(&[]);
    let before = ctx.inside(tcp_counters_here);
    let replayed = ctx.inside(testkit::replay_segments::segments_into_timewait);
    assert_eq!((replayed.fins, replayed.duplicates), (1, 1));
    let segments = |t: &str, kind: &str| {
        sample(
            t,
            "twmon_timewait_segments_total",
            &format!(r#"kind="{kind}""#),
        )
        .unwrap_or(0.0)
    };
    let text = daemon.wait_for("both copies seen", |t| {
        segments(t, "fin_retransmit") >= 1.0 && segments(t, "old_duplicate") >= 1.0
    });
    let after = ctx.inside(tcp_counters_here);
    // Kernels before 6.14 count a PAWS reject in TIME_WAIT as PAWSEstab;
    // newer ones as PAWSTimewait. Nothing else here is established.
    let paws = (counter_delta(&before, &after, "TcpExt.PAWSTimewait")
        + counter_delta(&before, &after, "TcpExt.PAWSEstab")) as f64;
    let rsts = counter_delta(&before, &after, "Tcp.OutRsts") as f64;
    assert_eq!(segments(&text, "fin_retransmit"), 1.0, "{text}");
    assert_eq!(segments(&text, "old_duplicate"), 1.0, "{text}");
    assert_eq!(paws, 1.0, "PAWS rejects: {after:?}");
    let text = daemon.wait_for("every RST absorbed", |t| segments(t, "rst") >= rsts);
    assert_eq!(segments(&text, "rst"), rsts, "{text}");
    println!("vmtest: info fin_retransmit 1, old_duplicate 1 = PAWS rejects +1, rst {rsts}");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// RSTs sent from TIME_WAIT (late data into orphaned FIN_WAIT2 timewait
/// sockets, one RST each). Since 6.10 `tcp:tcp_send_reset` sees them and
/// the count must be exact, within the kernel's Tcp.OutRsts. Before, the
/// tracepoint is not reached for timewait sockets (its record has no
/// reason field yet), so the hook must say so instead of exporting a zero
/// that reads as "none sent".
fn resets_sent(ctx: &Ctx) {
    const SENT: u64 = 10;
    let daemon = ctx.start(&[]);
    let text = daemon.metrics();
    let attached = |method: &str| {
        let labels = format!(r#"hook="timewait_reset_sent",method="{method}""#);
        sample(&text, "twmon_probe_attached", &labels)
    };
    if kernel_at_least(6, 10) {
        assert_eq!(attached("tracepoint"), Some(1.0), "{text}");
        let before = ctx.inside(tcp_counters_here);
        ctx.inside(|| testkit::late_data_into_fin_wait2(SENT));
        let count = |t: &str| sample(t, "twmon_timewait_resets_sent_total", "").unwrap_or(0.0);
        let text = daemon.wait_for("every RST counted", |t| count(t) >= SENT as f64);
        assert_eq!(count(&text), SENT as f64, "{text}");
        let after = ctx.inside(tcp_counters_here);
        let out_rsts = counter_delta(&before, &after, "Tcp.OutRsts");
        assert!(out_rsts >= SENT, "Tcp.OutRsts +{out_rsts}");
        println!("vmtest: info {SENT} RSTs sent from TIME_WAIT counted, Tcp.OutRsts +{out_rsts}");
    } else {
        assert_eq!(attached("none"), Some(0.0), "{text}");
        ctx.inside(|| testkit::late_data_into_fin_wait2(SENT));
        let text = daemon.metrics();
        assert!(!text.contains("twmon_timewait_resets_sent_total"), "{text}");
    }
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// Whether the guest kernel is `major.minor` or newer.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = monitor::kernel_release();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (major, minor)
}

/// Deleting the watched namespace kills its timewait sockets. On this
/// kernel the kill is inlined into inet_twsk_purge, out of the death
/// hooks' reach; the `timewait_purge` hook sees each socket freed by the
/// purging thread instead. Every entry must end as purged, reported by the
/// kernel (twmon holds its own conclusion back for a grace period).
fn netns_deleted(ctx: &Ctx) {
    let daemon = ctx.start(&[]);
    let text = daemon.metrics();
    let attached = format!(r#"hook="timewait_purge",method="{}""#, ctx.mode);
    assert_eq!(
        sample(&text, "twmon_probe_attached", &attached),
        Some(1.0),
        "{text}"
    );
    workload(ctx);
    // Once the sockets settle, the table holds what the kernel lists.
    thread::sleep(Duration::from_millis(600));
    let (k4, k6) = ctx.inside(timewait_sockets_here);
    let entries = (k4 + k6) as f64;
    let before = daemon.wait_for("the table holds the sockets", |t| {
        sample(t, "twmon_table_entries", "") == Some(entries)
    });
    assert_eq!(exited(&before, "purged"), 0.0, "{before}");
    nix::mount::umount2(&ctx.netns, nix::mount::MntFlags::MNT_DETACH).expect("umount netns");
    fs::remove_file(&ctx.netns).expect("removing the netns file");
    let text = daemon.wait_for("the kernel reports the purge", |t| {
        exited(t, "purged") >= entries - shortfall(ctx, entries, t)
    });
    let text = settled(&daemon, shortfall(ctx, entries, &text), text);
    let slack = shortfall(ctx, entries, &text);
    assert_within(exited(&text, "purged"), entries, slack, "purged", &text);
    // Nothing else died meanwhile. (The workload may end a socket early
    // itself: under TCG a late segment sometimes meets a FIN_WAIT2 one.)
    for cause in [
        "expired",
        "reused_by_connect",
        "reused_by_syn",
        "killed_by_rst",
        "unknown",
    ] {
        assert_eq!(
            exited(&text, cause),
            exited(&before, cause),
            "{cause}: {text}"
        );
    }
    // Whatever a skipped kprobe run missed, the table ends after the grace.
    let text = daemon.wait_for("the table lets go", |t| {
        sample(t, "twmon_table_entries", "") == Some(0.0)
    });
    let purged = sample(
        &text,
        "twmon_timewait_duration_seconds_count",
        r#"cause="purged""#,
    );
    assert_eq!(purged, Some(entries), "{text}");
    println!("vmtest: info {entries} timewait sockets purged with their namespace");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// How far a count may fall short of `expected`, as of the exposition
/// `text`: by the program runs twmon reports lost (each scenario has a
/// fresh daemon, so all of them are this scenario's; normally 0). And in
/// kprobe mode by up to half more: a kprobe that fires while another kprobe
/// handler runs on the CPU (a softirq interrupting one) is skipped, and the
/// kernel counts that only on the kprobe itself (its own miss count, which
/// twmon does not read), not in the program's recursion_misses that twmon
/// reports. Seen on 6.1: 6 of 100 closes, 4 of 10 births through the
/// keepalive timer; on 6.18: 87 of 100 closes with 6 reported. So kprobe
/// mode is held to "never more than happened, at least half"; fentry and
/// tracepoints are exact up to the losses reported.
fn shortfall(ctx: &Ctx, expected: f64, text: &str) -> f64 {
    let lost = sample(text, "twmon_events_lost_total", "").unwrap_or(0.0);
    if ctx.mode == "kprobe" {
        lost + (expected / 2.0).ceil()
    } else {
        lost
    }
}

/// With slack, waits for stragglers before the final look; otherwise the
/// exposition already waited for is final.
fn settled(daemon: &Daemon, slack: f64, text: String) -> String {
    if slack == 0.0 {
        return text;
    }
    thread::sleep(Duration::from_millis(500));
    daemon.metrics()
}

/// `got` is `want`, or up to `slack` short of it (see `shortfall`), never
/// more; a shortfall is printed.
fn assert_within(got: f64, want: f64, slack: f64, what: &str, text: &str) {
    assert!(
        got <= want && got >= want - slack,
        "{what}: {got} of {want}: {text}"
    );
    if got < want {
        println!("vmtest: info {what}: {got} of {want} (runs lost or skipped)");
    }
}

fn exited(t: &str, cause: &str) -> f64 {
    sample(
        t,
        "twmon_timewait_exited_total",
        &format!(r#"cause="{cause}""#),
    )
    .unwrap_or(0.0)
}

fn fin_wait2_births(t: &str) -> f64 {
    ["ipv4", "ipv6"]
        .iter()
        .filter_map(|f| {
            let labels = format!(r#"family="{f}",substate="FIN_WAIT2""#);
            sample(t, "twmon_timewait_entered_total", &labels)
        })
        .sum()
}

/// With tcp_fin_timeout=1, orphaned FIN_WAIT2 timewait sockets (the server
/// never sends its FIN) expire after a second: every one born is seen to
/// expire, and nothing dies otherwise. The kernel counts a timewait socket
/// scheduled for 4 s or less in TcpExt.TWKilled (not TW), so the births
/// must equal that.
fn timewait_expiry(ctx: &Ctx) {
    ctx.inside(|| {
        fs::write("/proc/sys/net/ipv4/tcp_fin_timeout", "1").expect("tcp_fin_timeout");
    });
    let daemon = ctx.start(&[]);
    let kernel_before = ctx.inside(tcp_counters_here);
    let held = ctx.inside(|| {
        testkit::client_closes_server_holds(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 10)
    });
    // Born within about a second (some through the keepalive timer), gone
    // a second after that.
    thread::sleep(Duration::from_secs(4));
    let text = daemon.metrics();
    let births = fin_wait2_births(&text);
    assert!(births >= 1.0, "no FIN_WAIT2 births: {text}");
    let text = daemon.wait_for("every birth to expire", |t| {
        exited(t, "expired") >= births - shortfall(ctx, births, t)
    });
    let text = settled(&daemon, shortfall(ctx, births, &text), text);
    // Either side may miss a run.
    let expired = exited(&text, "expired");
    let slack = shortfall(ctx, births.max(expired), &text);
    assert!(
        (expired - births).abs() <= slack,
        "{births} births, {expired} expired: {text}"
    );
    for cause in [
        "reused_by_connect",
        "reused_by_syn",
        "killed_by_rst",
        "purged",
        "unknown",
    ] {
        assert_eq!(exited(&text, cause), 0.0, "{cause}: {text}");
    }
    let kernel_after = ctx.inside(tcp_counters_here);
    let killed = counter_delta(&kernel_before, &kernel_after, "TcpExt.TWKilled") as f64;
    let slack = shortfall(ctx, killed, &text);
    assert_within(
        births,
        killed,
        slack,
        "FIN_WAIT2 births = TcpExt.TWKilled",
        &text,
    );
    assert_eq!(
        counter_delta(&kernel_before, &kernel_after, "TcpExt.TW"),
        0,
        "no full-length TIME_WAIT here"
    );
    println!(
        "vmtest: info {births} FIN_WAIT2 timewait sockets born and expired, TcpExt.TWKilled +{killed}"
    );
    drop(held);
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// tcp_tw_reuse=1 and a two-port range: once the ports sit in TIME_WAIT
/// for over a second, connect() takes a four-tuple over. Each takeover is
/// a death by reused_by_connect, as many as the kernel's TWRecycled.
fn connect_reuse(ctx: &Ctx) {
    ctx.inside(|| {
        fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001").expect("port range");
        fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1").expect("tw_reuse");
    });
    let daemon = ctx.start(&[]);
    let kernel_before = ctx.inside(tcp_counters_here);
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (made, failed) = ctx.inside(move || {
        let listener = std::net::TcpListener::bind(listen).expect("bind");
        let server = listener.local_addr().expect("addr");
        let round = |listener: &std::net::TcpListener| {
            let client = std::net::TcpStream::connect(server)?;
            let (mut conn, _) = listener.accept().expect("accept");
            drop(client);
            let mut buf = [0u8; 16];
            while std::io::Read::read(&mut conn, &mut buf).expect("read") > 0 {}
            Ok::<(), std::io::Error>(())
        };
        let (mut made, mut failed) = (0, 0);
        for pass in 0..2 {
            if pass == 1 {
                // tcp_tw_reuse needs the timestamp to be a second old.
                thread::sleep(Duration::from_millis(1500));
            }
            for _ in 0..2 {
                match round(&listener) {
                    Ok(()) => made += 1,
                    Err(_) => failed += 1,
                }
            }
        }
        (made, failed)
    });
    let kernel_after = ctx.inside(tcp_counters_here);
    let recycled = counter_delta(&kernel_before, &kernel_after, "TcpExt.TWRecycled") as f64;
    assert!(
        recycled >= 1.0,
        "the kernel reused nothing (made {made}, failed {failed}): {kernel_after:?}"
    );
    let text = daemon.wait_for("the reuses", |t| exited(t, "reused_by_connect") >= recycled);
    assert_eq!(exited(&text, "reused_by_connect"), recycled, "{text}");
    assert_eq!(collisions(&text, "connect_reuse"), recycled, "{text}");
    println!(
        "vmtest: info {recycled} four-tuples reused by connect (TWRecycled), {made} connections, {failed} refused"
    );
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// A two-port ip_local_port_range with tcp_tw_reuse off: once the used
/// ports sit in TIME_WAIT, connect() fails with EADDRNOTAVAIL, and twmon
/// counts every failure.
fn port_exhaustion(ctx: &Ctx) {
    ctx.inside(|| {
        fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001").expect("port range");
        fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0").expect("tw_reuse");
    });
    let daemon = ctx.start(&[]);
    let (made, failed) =
        ctx.inside(|| testkit::exhaust_ports(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 3));
    assert!(made >= 1 && failed == 3, "made {made}, failed {failed}");
    let count = |t: &str| sample(t, "twmon_connect_eaddrnotavail_total", "");
    let text = daemon.wait_for("3 failures", |t| count(t) >= Some(3.0));
    assert_eq!(count(&text), Some(3.0), "{text}");
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}

/// On a kernel with BPF trampolines, `twmon check` picks fentry for every
/// function hook and the raw tracepoint for state changes, and exits 0.
fn check_prefers_fentry(ctx: &Ctx) {
    let out = Command::new(&ctx.twmon)
        .arg("check")
        .output()
        .expect("running twmon check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "twmon check failed: {out:?}");
    let method = |hook: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(hook))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(
        method("inet_sock_set_state").as_deref(),
        Some("raw_tracepoint"),
        "{stdout}"
    );
    assert_eq!(
        method("timewait_birth").as_deref(),
        Some("fentry"),
        "{stdout}"
    );
}
