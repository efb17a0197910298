//! Births, segments and deaths, with and without probes.

use super::*;

#[test]
fn probe_lifecycle_with_attribution_and_lifetime() {
    let mut table = Table::new(Config::default());
    let t = tuple(40000, 80);
    close_with_probes(&mut table, SEC, 0xa0, 0xb0, t, "curl");
    let entry = table.get(&k(t)).unwrap();
    assert_eq!(entry.substate, TcpState::TimeWait);
    assert_eq!(entry.origin, Origin::Probe);
    assert_eq!(entry.expires_ns, SEC + 2 + TIMEWAIT_LEN_NS);
    assert_eq!(entry.closer.unwrap().comm.as_string(), "curl");
    assert_eq!(entry.closer.unwrap().pid, 42);

    let s = table.summary(20, false);
    assert_eq!(s.by_process, vec![((0, "curl".to_string()), 1)]);
    assert_eq!(s.by_remote, vec![((0, ip(2), 80), 1)]);
    assert_eq!(s.by_local_port, vec![((0, 40000), 1)]);

    table.apply(&death(SEC + 2 + 61 * SEC, 0xb0, t, DeathCause::Expired));
    assert!(table.is_empty());
    let s = table.summary(20, false);
    assert_eq!(s.exited.get(&(DeathCause::Expired, false)), Some(&1));
    let h = &s.durations[&DeathCause::Expired];
    assert_eq!(h.count, 1);
    assert!((h.sum_seconds - 61.0).abs() < 1e-6);
    assert!(s.by_process.is_empty() && s.by_remote.is_empty());
    assert_eq!(population(&table), 0);
}

#[test]
fn retransmitted_fin_rearms_the_timer() {
    let mut table = Table::new(Config::default());
    let t = tuple(40001, 80);
    close_with_probes(&mut table, SEC, 1, 2, t, "curl");
    // The peer lost our last ACK and sends its FIN again 10 s later.
    table.apply(&segment(11 * SEC, 2, t, 0x11, TcpState::TimeWait));
    let e = table.get(&k(t)).unwrap();
    assert_eq!(e.expires_ns, 11 * SEC + TIMEWAIT_LEN_NS);
    assert_eq!(e.segments, 1);
    // An old duplicate ACK is absorbed without touching the timer.
    table.apply(&segment(12 * SEC, 2, t, 0x10, TcpState::TimeWait));
    let e = table.get(&k(t)).unwrap();
    assert_eq!((e.segments, e.expires_ns), (2, 11 * SEC + TIMEWAIT_LEN_NS));
}

#[test]
fn orphaned_fin_wait2_turns_time_wait_on_the_peers_fin() {
    let mut table = Table::new(Config {
        hz: 1000,
        ..Config::default()
    });
    let t = tuple(40002, 80);
    table.apply(&birth(SEC, 3, t, TcpState::FinWait2, 5000));
    assert_eq!(table.get(&k(t)).unwrap().expires_ns, 6 * SEC);
    let pop = |table: &Table, s| {
        table
            .summary(20, false)
            .population
            .get(&(0, Family::Ipv4, s))
            .copied()
    };
    assert_eq!(pop(&table, TcpState::FinWait2), Some(1));
    table.apply(&segment(2 * SEC, 3, t, 0x11, TcpState::FinWait2));
    let e = table.get(&k(t)).unwrap();
    assert_eq!(e.substate, TcpState::TimeWait);
    assert_eq!(e.expires_ns, 2 * SEC + TIMEWAIT_LEN_NS);
    assert_eq!(pop(&table, TcpState::FinWait2), None);
    assert_eq!(pop(&table, TcpState::TimeWait), Some(1));
}

#[test]
fn connect_reuse_seen_by_probes_is_one_collision() {
    let mut table = Table::new(Config::default());
    let t = tuple(40003, 80);
    close_with_probes(&mut table, SEC, 1, 2, t, "client");
    // tcp_tw_reuse: connect() kills the timewait socket, then the new
    // connection establishes on the same four-tuple.
    table.apply(&death(3 * SEC, 2, t, DeathCause::ReusedByConnect));
    table.apply(&change(
        3 * SEC + 5,
        9,
        t,
        TcpState::SynSent,
        TcpState::Established,
    ));
    let s = table.summary(20, false);
    assert_eq!(s.collisions.get(&CollisionKind::ConnectReuse), Some(&1));
    assert_eq!(s.collisions.len(), 1);
    let c = table.recent_collisions(10)[0];
    assert_eq!(c.previous_age_ns, Some(2 * SEC - 2));
    assert_eq!(c.previous_closer.unwrap().comm.as_string(), "client");
    assert!(!c.derived);
}

#[test]
fn takeovers_are_derived_from_transitions_without_death_probes() {
    let mut table = tracepoint_only();
    let server = tuple(80, 50000);
    // Server closes first: the derived birth comes from FIN_WAIT2 -> CLOSE,
    // with the four-tuple the close began with (by CLOSE the kernel has
    // released the port) and who closed, joined in the kernel.
    table.apply(&closed(SEC + 2, 1, server, Some("nginx")));
    let e = table.get(&k(server)).unwrap();
    assert_eq!((e.origin, e.confirmed), (Origin::Transition, false));
    assert_eq!(e.closer.unwrap().comm.as_string(), "nginx");
    // The client comes back from the same port before any snapshot.
    table.apply(&change(
        2 * SEC,
        5,
        server,
        TcpState::SynRecv,
        TcpState::Established,
    ));
    let s = table.summary(20, false);
    assert_eq!(s.collisions.get(&CollisionKind::SynInTimewait), Some(&1));
    assert_eq!(s.exited.get(&(DeathCause::ReusedBySyn, true)), Some(&1));
    assert_eq!(s.started.get(&Origin::Transition), Some(&1));
    assert!(table.recent_collisions(1)[0].derived);
}
