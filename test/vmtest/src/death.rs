//! Scenarios of `death`: how timewait sockets end, and why, namespace purges included.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    thread,
    time::Duration,
};

use testkit::{sample, tcp_counters_here, timewait_sockets_here};

use crate::util::*;

/// A client reconnecting from the same port while the server holds the
/// four-tuple in TIME_WAIT: its SYN reaches the timewait socket, which
/// gives the four-tuple to the new connection; twmon sees one SYN segment.
pub fn syn_in_timewait(ctx: &Ctx) {
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

/// With tcp_fin_timeout=1, orphaned FIN_WAIT2 timewait sockets (the server
/// never sends its FIN) expire after a second: every one born is seen to
/// expire, and nothing dies otherwise. The kernel counts a timewait socket
/// scheduled for 4 s or less in TcpExt.TWKilled (not TW), so the births
/// must equal that.
pub fn timewait_expiry(ctx: &Ctx) {
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
pub fn connect_reuse(ctx: &Ctx) {
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

/// The textbook hazard with probes: reconnecting from the same bound port
/// while the old four-tuple is in the client's TIME_WAIT. With timestamps
/// the kernel hands the four-tuple over (connect_reuse, exactly
/// TcpExt.TWRecycled); without, connect() fails (eaddrnotavail).
pub fn bound_port_reuse(ctx: &Ctx) {
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

/// Deleting the watched namespace kills its timewait sockets. On this
/// kernel the kill is inlined into inet_twsk_purge, out of the death
/// hooks' reach; the `timewait_purge` hook sees each socket freed by the
/// purging thread instead. Every entry must end as purged, reported by the
/// kernel (twmon holds its own conclusion back for a grace period).
pub fn netns_deleted(ctx: &Ctx) {
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
