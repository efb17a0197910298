//! `twmon doctor` on the hazards it names, each made for real in a fresh
//! network namespace watched by a daemon: the finding must come out of
//! what the kernel did (checked against its own counters or `ss`), with
//! the exit status its severity calls for. The collision and port-range
//! findings are checked with their scenarios in `hazards`.

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread,
    time::Duration,
};

use socket2::SockRef;
use testkit::{Daemon, TestNetns, require_root, sample};

use crate::util::{TWMON, doctor};

/// Connections each scenario makes: above the 100 the doctor wants before
/// it calls a pattern a habit.
const N: u64 = 120;

fn start(ns: &TestNetns) -> Daemon {
    Daemon::start(
        Path::new(TWMON),
        &["--netns", &ns.path(), "--snapshot-interval", "200ms"],
    )
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// `n` connections the server closes first; each client reads to EOF
/// before closing, so the server side keeps the TIME_WAIT.
fn server_closes_first(n: u64) -> u16 {
    let listener = TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        for _ in 0..n {
            drop(listener.accept().expect("accept"));
        }
    });
    for _ in 0..n {
        let mut client = TcpStream::connect(addr).expect("connect");
        let mut buf = [0u8; 16];
        while client.read(&mut buf).expect("read to EOF") > 0 {}
    }
    server.join().expect("server thread");
    addr.port()
}

/// `n` connections the client aborts with an RST (SO_LINGER 0), as code
/// that wants to avoid TIME_WAIT does.
fn abort_with_rst(n: u64) {
    let listener = TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    for _ in 0..n {
        let client = TcpStream::connect(addr).expect("connect");
        let (_conn, _) = listener.accept().expect("accept");
        SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(client);
    }
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn a_server_closing_first_and_a_lowered_fin_timeout_are_named() {
    require_root();
    let ns = TestNetns::new("dr-server");
    ns.sysctl("net.ipv4.tcp_fin_timeout", "30");
    let daemon = start(&ns);
    let port = ns.run_inside(|| server_closes_first(N));
    let (v4, _) = ns.ss_timewait();
    assert!(v4 >= N, "ss shows {v4} timewait sockets");
    let by_port = format!(r#"local_port="{port}""#);
    daemon.wait_for("the server's timewait sockets", |t| {
        sample(t, "twmon_timewait_sockets_by_local_port", &by_port) == Some(N as f64)
    });
    let (status, ids) = doctor(&daemon);
    assert_eq!(status, Some(0), "information only: {ids:?}");
    for id in ["server-closes-first", "fin-timeout-misread"] {
        assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
    }
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn connections_aborted_with_rst_are_named() {
    require_root();
    let ns = TestNetns::new("dr-rst");
    let daemon = start(&ns);
    let resets = |m: &std::collections::BTreeMap<String, u64>| {
        m.get("Tcp.EstabResets").copied().unwrap_or(0)
    };
    let before = ns.netstat();
    ns.run_inside(|| abort_with_rst(N));
    let kernel = resets(&ns.netstat()) - resets(&before);
    assert!(kernel >= N, "EstabResets grew by {kernel}");
    daemon.wait_for("the aborts counted", |t| {
        testkit::transitions(t, "ESTABLISHED", "CLOSE") >= N as f64
    });
    let (status, ids) = doctor(&daemon);
    assert!(ids.iter().any(|i| i == "closed-by-rst"), "{ids:?}");
    assert_eq!(status, Some(1), "a warning: {ids:?}");
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn timewait_over_tcp_max_tw_buckets_is_critical() {
    require_root();
    const BUCKETS: u64 = 8;
    let ns = TestNetns::new("dr-buckets");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", &BUCKETS.to_string());
    let daemon = start(&ns);
    let overflows =
        |m: &std::collections::BTreeMap<String, u64>| m.get("TcpExt.TCPTimeWaitOverflow").copied();
    let before = ns.netstat();
    ns.run_inside(move || testkit::client_closes_first(loopback(), 2 * BUCKETS));
    let kernel = overflows(&ns.netstat()).unwrap_or(0) - overflows(&before).unwrap_or(0);
    assert_eq!(
        kernel, BUCKETS,
        "the kernel refused the rest a timewait socket"
    );
    daemon.wait_for("the table full to the cap", |t| {
        let tw = r#"family="ipv4",substate="TIME_WAIT""#;
        sample(t, "twmon_timewait_sockets", tw) == Some(BUCKETS as f64)
    });
    let (status, ids) = doctor(&daemon);
    assert_eq!(
        ids.first().map(String::as_str),
        Some("tw-buckets"),
        "{ids:?}"
    );
    // Critical when twmon saw the overflows, a warning when it only saw the
    // table at the cap (no overflow hook in this mode).
    let text = daemon.metrics();
    let seen = sample(&text, "twmon_timewait_overflow_total", "").unwrap_or(0.0);
    assert_eq!(
        status,
        Some(if seen > 0.0 { 2 } else { 1 }),
        "{ids:?}\n{text}"
    );
}
