//! Scenarios of `connect`: connect() failing with EADDRNOTAVAIL.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
};

use testkit::sample;

use crate::util::*;

/// A two-port ip_local_port_range with tcp_tw_reuse off: once the used
/// ports sit in TIME_WAIT, connect() fails with EADDRNOTAVAIL, and twmon
/// counts every failure.
pub fn port_exhaustion(ctx: &Ctx) {
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
