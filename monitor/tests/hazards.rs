//! The hazards TIME_WAIT guards against, reproduced on purpose on this
//! machine's kernel, and what the four-tuple table makes of them: the
//! collisions, the port pressure, and populations that agree with `ss`.
//! On this host's kernel probes cannot attach, so these check what the
//! tracepoint-only mode promises (collisions derived from transitions);
//! `cargo xtask vm-test` checks the probe modes.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use crate::util::{TWMON, doctor};
use testkit::{Daemon, TestNetns, require_root, sample};

fn start(ns: &TestNetns) -> Daemon {
    Daemon::start(
        Path::new(TWMON),
        &["--netns", &ns.path(), "--snapshot-interval", "200ms"],
    )
}

fn collisions(text: &str, kind: &str) -> f64 {
    sample(
        text,
        "twmon_fourtuple_collisions_total",
        &format!(r#"kind="{kind}""#),
    )
    .unwrap_or(-1.0)
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// twmon's TIME_WAIT population against ss, once a snapshot has run after
/// the sockets settled.
fn population_matches_ss(daemon: &Daemon, ns: &TestNetns) {
    let (v4, v6) = ns.ss_timewait();
    let want = format!("{}", v4);
    let text = daemon.wait_for(&format!("population {want} as ss says"), |t| {
        sample(
            t,
            "twmon_timewait_sockets",
            r#"family="ipv4",substate="TIME_WAIT""#,
        ) == Some(v4 as f64)
    });
    assert_eq!(
        sample(
            &text,
            "twmon_timewait_sockets",
            r#"family="ipv6",substate="TIME_WAIT""#
        ),
        Some(v6 as f64),
        "{text}"
    );
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn syn_into_server_timewait_is_a_collision() {
    require_root();
    let ns = TestNetns::new("hz-syn");
    let daemon = start(&ns);
    let established = ns.run_inside(|| testkit::syn_into_server_timewait(loopback()));
    assert!(established, "the kernel refused the SYN into TIME_WAIT");
    let text = daemon.wait_for("syn_in_timewait counted", |t| {
        collisions(t, "syn_in_timewait") >= 1.0
    });
    assert_eq!(collisions(&text, "syn_in_timewait"), 1.0, "{text}");
    assert_eq!(collisions(&text, "connect_reuse"), 0.0, "{text}");
    // Information, not a problem: exit 0, the finding named.
    assert_eq!(doctor(&daemon), (Some(0), vec!["early-reuse".to_string()]));
    // The server's TIME_WAIT ended by the SYN, not by its timer.
    assert_eq!(
        sample(
            &text,
            "twmon_timewait_exited_total",
            r#"cause="reused_by_syn""#
        ),
        Some(1.0),
        "{text}"
    );
    population_matches_ss(&daemon, &ns);
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn reconnect_from_the_same_port_with_timestamps_is_connect_reuse() {
    require_root();
    let ns = TestNetns::new("hz-reuse");
    ns.sysctl("net.ipv4.tcp_timestamps", "1");
    let daemon = start(&ns);
    let before = ns.netstat();
    let (result, client) = ns.run_inside(|| testkit::reconnect_from_same_port(loopback()));
    result.unwrap_or_else(|e| panic!("reconnect from {client} refused: {e}"));
    let after = ns.netstat();
    let recycled = |m: &std::collections::BTreeMap<String, u64>| {
        m.get("TcpExt.TWRecycled").copied().unwrap_or(0)
    };
    let kernel = recycled(&after) - recycled(&before);
    assert_eq!(kernel, 1, "TWRecycled {before:?} -> {after:?}");
    let text = daemon.wait_for("connect_reuse counted", |t| {
        collisions(t, "connect_reuse") >= 1.0
    });
    assert_eq!(collisions(&text, "connect_reuse"), kernel as f64, "{text}");
    assert_eq!(collisions(&text, "eaddrnotavail"), 0.0, "{text}");
    population_matches_ss(&daemon, &ns);
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn reconnect_from_the_same_port_without_timestamps_fails_and_is_counted() {
    require_root();
    let ns = TestNetns::new("hz-eaddr");
    ns.sysctl("net.ipv4.tcp_timestamps", "0");
    let daemon = start(&ns);
    let (result, client) = ns.run_inside(|| testkit::reconnect_from_same_port(loopback()));
    let err = result.expect_err("the kernel let the four-tuple be reused without timestamps");
    assert_eq!(err.raw_os_error(), Some(99), "{client}: {err}");
    let text = daemon.wait_for("eaddrnotavail counted", |t| {
        collisions(t, "eaddrnotavail") >= 1.0
    });
    assert_eq!(collisions(&text, "eaddrnotavail"), 1.0, "{text}");
    assert_eq!(collisions(&text, "connect_reuse"), 0.0, "{text}");
    // The old incarnation is still there, protected.
    population_matches_ss(&daemon, &ns);
    assert!(ns.ss_timewait().0 >= 1);
    // tcp_tw_reuse (2, loopback only, by default) cannot work here.
    let (status, ids) = doctor(&daemon);
    assert!(
        ids.iter().any(|i| i == "reuse-without-timestamps"),
        "{ids:?}"
    );
    assert_eq!(status, Some(2), "EADDRNOTAVAIL makes it critical: {ids:?}");
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn a_tiny_port_range_fills_up_toward_one_destination() {
    require_root();
    let ns = TestNetns::new("hz-range");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40003");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let daemon = start(&ns);
    // The server listens outside the range, so all four ports are the
    // client's to lose (a listener inside it would hold one itself).
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
    let (made, failed) = ns.run_inside(move || testkit::exhaust_ports(server, 2));
    assert!(made == 4 && failed == 2, "made {made}, failed {failed}");
    let text = daemon.wait_for("pressure at the full range", |t| {
        t.lines()
            .any(|l| l.starts_with("twmon_ephemeral_port_pressure_ratio{") && l.ends_with(" 1"))
    });
    assert_eq!(
        sample(&text, "twmon_ephemeral_port_range_size", ""),
        Some(4.0),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("twmon_ephemeral_ports_in_use{"))
        .unwrap_or_else(|| panic!("no ports_in_use series:\n{text}"));
    assert!(
        line.contains(r#"local_addr="127.0.0.1",remote_addr="127.0.0.1""#) && line.ends_with(" 4"),
        "{line}"
    );
    assert_eq!(collisions(&text, "eaddrnotavail"), failed as f64, "{text}");
    population_matches_ss(&daemon, &ns);
    let (status, ids) = doctor(&daemon);
    assert_eq!(status, Some(2), "{ids:?}");
    assert_eq!(ids.first().map(String::as_str), Some("port-exhaustion"));
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn a_quiet_namespace_gets_a_clean_bill_of_health() {
    require_root();
    let ns = TestNetns::new("hz-quiet");
    let daemon = start(&ns);
    ns.run_inside(|| testkit::client_closes_first(loopback(), 5));
    daemon.wait_for("the five closes", |t| {
        sample(
            t,
            "twmon_timewait_sockets",
            r#"family="ipv4",substate="TIME_WAIT""#,
        ) == Some(5.0)
    });
    assert_eq!(doctor(&daemon), (Some(0), Vec::new()));
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn late_data_into_fin_wait2_is_answered_with_rst_and_counted() {
    require_root();
    const N: u64 = 10;
    let ns = TestNetns::new("hz-rst");
    let daemon = start(&ns);
    let attached = sample(
        &daemon.metrics(),
        "twmon_probe_attached",
        r#"hook="timewait_reset_sent",method="raw_tracepoint""#,
    );
    assert_eq!(attached, Some(1.0));
    let before = ns.netstat();
    ns.run_inside(|| testkit::late_data_into_fin_wait2(N));
    let count = |t: &str| sample(t, "twmon_timewait_resets_sent_total", "").unwrap_or(0.0);
    let text = daemon.wait_for("every RST counted", |t| count(t) >= N as f64);
    assert_eq!(count(&text), N as f64, "{text}");
    let after = ns.netstat();
    let out_rsts =
        |m: &std::collections::BTreeMap<String, u64>| m.get("Tcp.OutRsts").copied().unwrap_or(0);
    assert!(
        out_rsts(&after) - out_rsts(&before) >= N,
        "{before:?} -> {after:?}"
    );
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn a_bind_refused_because_timewait_holds_the_port_is_named() {
    require_root();
    const EADDRINUSE: Option<i32> = Some(98);
    let ns = TestNetns::new("bind");
    let daemon = start(&ns);
    let (client, server, live) = ns.run_inside(|| {
        (
            testkit::rebind_a_port_in_timewait(loopback()),
            testkit::restart_a_server_without_reuseaddr(loopback()),
            testkit::bind_a_port_a_listener_holds(loopback()),
        )
    });
    for (errno, _) in [client, server, live] {
        assert_eq!(errno, EADDRINUSE);
    }
    let refused = |t: &str, by: &str| {
        sample(
            t,
            "twmon_bind_eaddrinuse_total",
            &format!(r#"held_by="{by}""#),
        )
    };
    let text = daemon.wait_for("three refused binds", |t| {
        refused(t, "timewait") == Some(2.0) && refused(t, "live") == Some(1.0)
    });
    assert_eq!(collisions(&text, "bind_in_timewait"), 2.0, "{text}");
    // The API names each: the port, who bound, what holds it and how long.
    let (_, _, body) = daemon.get("/api/v1/collisions");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
    let (status, ids) = doctor(&daemon);
    assert_eq!(status, Some(1), "{ids:?}");
    assert!(ids.contains(&"bind-refused".to_string()), "{ids:?}");
    for (_, port) in [client, server] {
        let c = doc["collisions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["kind"] == "bind_in_timewait" && c["local_port"] == port)
            .unwrap_or_else(|| panic!("no bind_in_timewait on port {port}: {body}"));
        assert_eq!(c["binder"]["comm"], comm.trim(), "{c}");
        assert!(c["holders"].as_u64() >= Some(1), "{c}");
        let left = c["time_left_seconds"].as_f64().unwrap_or(-1.0);
        assert!(left > 0.0 && left <= 60.0, "{c}");
    }
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn the_time_to_exhaustion_is_estimated_within_a_fifth() {
    use std::{
        net::{TcpListener, TcpStream},
        sync::mpsc,
        thread,
        time::{Duration, Instant},
    };
    require_root();
    let ns = TestNetns::new("exhaust");
    // 300 ports, filled client-first at a steady 40 or so a second.
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40299");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let daemon = start(&ns);
    let (port_tx, port_rx) = mpsc::channel();
    let worker = {
        let path = ns.path();
        thread::spawn(move || {
            testkit::run_in_netns(Path::new(&path), move || {
                let listener = TcpListener::bind(loopback()).expect("listener");
                let server = listener.local_addr().expect("address");
                port_tx.send(server.port()).expect("port");
                loop {
                    match TcpStream::connect(server) {
                        Ok(client) => {
                            let (conn, _) = listener.accept().expect("accept");
                            drop(client);
                            drop(conn);
                        }
                        Err(e) if e.raw_os_error() == Some(99) => return Instant::now(),
                        Err(e) => panic!("connect: {e}"),
                    }
                    thread::sleep(Duration::from_millis(25));
                }
            })
        })
    };
    let port = port_rx.recv().expect("the listener's port");
    let labels = format!(r#"local_addr="127.0.0.1",remote_addr="127.0.0.1",remote_port="{port}""#);
    // Read the estimate once a few seconds of trend are in.
    thread::sleep(Duration::from_millis(2500));
    let text = daemon.wait_for("an exhaustion estimate", |t| {
        sample(t, "twmon_ephemeral_port_exhaustion_seconds", &labels).is_some()
    });
    let read_at = Instant::now();
    let estimate =
        sample(&text, "twmon_ephemeral_port_exhaustion_seconds", &labels).expect("an estimate");
    let failed_at = worker.join().expect("the workload");
    let actual = failed_at.duration_since(read_at).as_secs_f64();
    eprintln!("exhaustion: estimated {estimate:.2} s left, connect() failed after {actual:.2} s");
    assert!(
        (estimate - actual).abs() <= 0.2 * actual,
        "estimated {estimate:.2} s left, connect() failed after {actual:.2} s"
    );
}
