//! The table fed synthetic event streams: what each hazard looks like from
//! the kernel, and invariants over random streams.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::event::{
    Closer, ConnectFailure, Death, Segment, SegmentKind, StateChange, Timewait, TwVerdict,
};

const NS: u32 = 4026531840;
const SEC: u64 = 1_000_000_000;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn tuple(sport: u16, dport: u16) -> FourTuple {
    FourTuple {
        saddr: ip(1),
        sport,
        daddr: ip(2),
        dport,
    }
}

fn k(t: FourTuple) -> Key {
    Key {
        netns: NS,
        family: Family::Ipv4,
        tuple: t,
    }
}

fn change(ts: u64, skaddr: u64, t: FourTuple, from: TcpState, to: TcpState) -> KernelEvent {
    KernelEvent::StateChange(StateChange {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        from,
        to,
        tuple: t,
    })
}

fn birth(ts: u64, skaddr: u64, t: FourTuple, substate: TcpState, jiffies: u32) -> KernelEvent {
    KernelEvent::TimewaitBirth(Timewait {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        substate,
        timeout_jiffies: jiffies,
        tuple: t,
    })
}

fn death(ts: u64, skaddr: u64, t: FourTuple, cause: DeathCause) -> KernelEvent {
    KernelEvent::TimewaitDeath(Death {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        tuple: t,
        substate: Some(TcpState::TimeWait),
        cause,
    })
}

fn segment(ts: u64, skaddr: u64, t: FourTuple, flags: u8, substate: TcpState) -> KernelEvent {
    let verdict = if flags & 0x01 != 0 {
        TwVerdict::Ack
    } else {
        TwVerdict::Success
    };
    KernelEvent::TimewaitSegment(Segment {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        tuple: t,
        flags,
        substate: Some(substate),
        verdict,
        kind: SegmentKind::classify(flags, Some(substate)),
    })
}

fn closer(ts: u64, skaddr: u64, t: FourTuple, comm: &str) -> KernelEvent {
    KernelEvent::Closer(Closer {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        sport: t.sport,
        dport: t.dport,
        process: Process {
            pid: 42,
            tid: 42,
            cgroup: 7,
            comm: Comm::new(comm),
        },
    })
}

fn snapshot(taken: u64, tw: &[(FourTuple, TcpState, u32)]) -> SnapshotRound {
    SnapshotRound {
        namespaces: vec![NetnsSnapshot {
            netns: NS,
            taken_ns: taken,
            sockets: tw
                .iter()
                .map(|&(tuple, state, expires_ms)| DiagSocket {
                    family: Family::Ipv4,
                    state,
                    timewait: true,
                    expires_ms,
                    tuple,
                })
                .collect(),
            knobs: Knobs {
                port_range: Some((32768, 60999)),
                fin_timeout_s: Some(60),
                ..Knobs::default()
            },
        }],
        existing: Some(vec![NS]),
    }
}

/// An active close as the probes report it: the closing process, then the
/// timewait socket's birth, then the full socket's CLOSE.
fn close_with_probes(table: &mut Table, ts: u64, sk: u64, tw: u64, t: FourTuple, comm: &str) {
    table.apply(&change(
        ts,
        sk,
        t,
        TcpState::Established,
        TcpState::FinWait1,
    ));
    table.apply(&closer(ts, sk, t, comm));
    table.apply(&change(
        ts + 1,
        sk,
        t,
        TcpState::FinWait1,
        TcpState::FinWait2,
    ));
    table.apply(&birth(ts + 2, tw, t, TcpState::TimeWait, 0));
    table.apply(&change(ts + 3, sk, t, TcpState::FinWait2, TcpState::Close));
}

fn population(table: &Table) -> u64 {
    table.summary(20, false).population.values().sum()
}

#[test]
fn probe_lifecycle_with_attribution_and_lifetime() {
    let mut table = Table::new(Config::default());
    let t = tuple(40000, 80);
    close_with_probes(&mut table, SEC, 0xa0, 0xb0, t, "curl");
    let entry = *table.get(&k(t)).unwrap();
    assert_eq!(entry.substate, TcpState::TimeWait);
    assert_eq!(entry.source, Source::Probe);
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
    let mut table = Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        ..Config::default()
    });
    let server = tuple(80, 50000);
    // Server closes first: the derived birth comes from FIN_WAIT2 -> CLOSE.
    table.apply(&change(
        SEC,
        1,
        server,
        TcpState::Established,
        TcpState::FinWait1,
    ));
    table.apply(&closer(SEC, 1, server, "nginx"));
    table.apply(&change(
        SEC + 1,
        1,
        server,
        TcpState::FinWait1,
        TcpState::FinWait2,
    ));
    // The kernel has released the port when it reports CLOSE.
    let released = FourTuple { sport: 0, ..server };
    table.apply(&change(
        SEC + 2,
        1,
        released,
        TcpState::FinWait2,
        TcpState::Close,
    ));
    let e = *table.get(&k(server)).unwrap();
    assert_eq!((e.source, e.confirmed), (Source::Transition, false));
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
    assert_eq!(s.started.get(&Source::Transition), Some(&1));
    assert!(table.recent_collisions(1)[0].derived);
}

#[test]
fn snapshots_confirm_discard_and_end_derived_entries() {
    let mut table = Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        ..Config::default()
    });
    let real = tuple(40010, 80);
    let aborted = tuple(40011, 80);
    let killed = tuple(40012, 80);
    for (i, t) in [real, aborted, killed].into_iter().enumerate() {
        let sk = 10 + i as u64;
        table.apply(&change(SEC, sk, t, TcpState::FinWait2, TcpState::Close));
    }
    assert_eq!(population(&table), 3);
    // The dump at 2 s holds two of them: the third was an abort (RST).
    table.reconcile(&snapshot(
        2 * SEC,
        &[
            (real, TcpState::TimeWait, 59_000),
            (killed, TcpState::TimeWait, 59_000),
        ],
    ));
    assert_eq!(population(&table), 2);
    let s = table.summary(20, false);
    assert_eq!(s.discarded, 1);
    assert_eq!(s.started.get(&Source::Transition), Some(&2));
    assert_eq!(table.get(&k(real)).unwrap().expires_ns, 61 * SEC);
    assert_eq!(s.drift, Drift::default());

    // At 10 s `killed` is gone long before its time: unknown. At 70 s
    // `real` is gone after its time: expired.
    table.reconcile(&snapshot(10 * SEC, &[(real, TcpState::TimeWait, 51_000)]));
    table.reconcile(&snapshot(70 * SEC, &[]));
    let s = table.summary(20, false);
    assert_eq!(s.exited.get(&(DeathCause::Unknown, true)), Some(&1));
    assert_eq!(s.exited.get(&(DeathCause::Expired, true)), Some(&1));
    assert!(table.is_empty());
}

#[test]
fn snapshots_adopt_what_the_table_missed_and_count_drift() {
    let mut table = Table::new(Config::default());
    let before_start = tuple(40020, 443);
    // Seeding at start is not drift.
    table.reconcile(&snapshot(
        100 * SEC,
        &[(before_start, TcpState::TimeWait, 30_000)],
    ));
    let e = *table.get(&k(before_start)).unwrap();
    assert_eq!(e.source, Source::Snapshot);
    assert_eq!(e.born_ns, 70 * SEC);
    assert_eq!(e.expires_ns, 130 * SEC);
    assert_eq!(table.summary(20, false).drift, Drift::default());

    // A birth whose event was lost shows up in the next dump: drift. The
    // seeded entry is gone without a death event: drift too (probe mode).
    let lost = tuple(40021, 443);
    table.reconcile(&snapshot(105 * SEC, &[(lost, TcpState::TimeWait, 59_000)]));
    let s = table.summary(20, false);
    assert_eq!(
        s.drift,
        Drift {
            adopted: 1,
            closed: 1
        }
    );
    assert_eq!(s.exited.get(&(DeathCause::Unknown, true)), Some(&1));
}

#[test]
fn a_dump_older_than_what_the_table_knows_changes_nothing() {
    let mut table = Table::new(Config::default());
    let t = tuple(40030, 80);
    table.reconcile(&snapshot(SEC, &[]));
    // Born while the dump ran (after it started) and not in it: kept.
    table.apply(&birth(2 * SEC, 7, t, TcpState::TimeWait, 0));
    table.reconcile(&snapshot(SEC + SEC / 2, &[]));
    assert!(table.get(&k(t)).is_some());
    // Died while a dump ran that still lists it: not resurrected.
    table.apply(&death(3 * SEC, 7, t, DeathCause::Expired));
    table.reconcile(&snapshot(
        2 * SEC + SEC / 2,
        &[(t, TcpState::TimeWait, 100)],
    ));
    assert!(table.get(&k(t)).is_none());
    assert_eq!(table.summary(20, false).drift, Drift::default());
}

#[test]
fn a_probe_birth_after_adoption_is_the_same_socket() {
    let mut table = Table::new(Config::default());
    let t = tuple(40031, 80);
    table.reconcile(&snapshot(SEC, &[]));
    table.reconcile(&snapshot(2 * SEC, &[(t, TcpState::TimeWait, 60_000)]));
    table.apply(&birth(2 * SEC - 5, 8, t, TcpState::TimeWait, 0));
    let e = *table.get(&k(t)).unwrap();
    assert_eq!(
        (e.source, e.skaddr, e.born_ns),
        (Source::Probe, 8, 2 * SEC - 5)
    );
    let s = table.summary(20, false);
    assert_eq!(s.started.values().sum::<u64>(), 1);
    assert_eq!(population(&table), 1);
}

#[test]
fn a_transition_arriving_after_adoption_explains_the_socket() {
    let mut table = Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        ..Config::default()
    });
    let t = tuple(40032, 80);
    table.reconcile(&snapshot(SEC, &[]));
    table.apply(&change(
        2 * SEC,
        9,
        t,
        TcpState::Established,
        TcpState::FinWait1,
    ));
    table.apply(&closer(2 * SEC, 9, t, "curl"));
    // The dump saw the timewait socket before the CLOSE event was drained
    // (a stalled producer in the ring holds later records back).
    table.reconcile(&snapshot(3 * SEC, &[(t, TcpState::TimeWait, 59_000)]));
    assert_eq!(table.get(&k(t)).unwrap().source, Source::Snapshot);
    table.apply(&change(
        2 * SEC + 5,
        9,
        t,
        TcpState::FinWait2,
        TcpState::Close,
    ));
    let e = *table.get(&k(t)).unwrap();
    assert_eq!((e.source, e.born_ns), (Source::Transition, 2 * SEC + 5));
    assert_eq!(e.closer.unwrap().comm.as_string(), "curl");
    assert_eq!(e.expires_ns, 62 * SEC);
    let s = table.summary(20, false);
    assert_eq!(s.by_process, vec![((0, "curl".to_string()), 1)]);
    assert_eq!(s.started.values().sum::<u64>(), 1);
    assert_eq!(s.derived_births.values().sum::<u64>(), 1);
}

#[test]
fn an_adopted_socket_gets_the_closer_its_lost_birth_would_have_carried() {
    // Probe mode: the birth's kprobe run was skipped (counted lost), the
    // transitions and the closer arrived.
    let mut table = Table::new(Config::default());
    let t = tuple(40033, 80);
    table.reconcile(&snapshot(SEC, &[]));
    let (established, fin_wait1) = (TcpState::Established, TcpState::FinWait1);
    table.apply(&change(2 * SEC, 9, t, established, fin_wait1));
    table.apply(&closer(2 * SEC, 9, t, "curl"));
    table.apply(&change(
        2 * SEC + 5,
        9,
        t,
        TcpState::FinWait2,
        TcpState::Close,
    ));
    assert!(table.get(&k(t)).is_none());
    table.reconcile(&snapshot(3 * SEC, &[(t, TcpState::TimeWait, 59_000)]));
    let e = *table.get(&k(t)).unwrap();
    assert_eq!(e.source, Source::Snapshot);
    assert_eq!(e.closer.unwrap().comm.as_string(), "curl");
    assert_eq!(
        table.summary(20, false).by_process,
        vec![((0, "curl".to_string()), 1)]
    );
}

#[test]
fn an_aborted_connection_leaves_no_closer_behind() {
    let mut table = Table::new(Config::default());
    let t = tuple(40034, 80);
    table.reconcile(&snapshot(SEC, &[]));
    let (established, fin_wait1) = (TcpState::Established, TcpState::FinWait1);
    table.apply(&change(2 * SEC, 9, t, established, fin_wait1));
    table.apply(&closer(2 * SEC, 9, t, "curl"));
    // An RST in FIN_WAIT1: no timewait socket.
    table.apply(&change(2 * SEC + 5, 9, t, fin_wait1, TcpState::Close));
    table.reconcile(&snapshot(3 * SEC, &[(t, TcpState::TimeWait, 59_000)]));
    assert_eq!(table.get(&k(t)).unwrap().closer, None);
}

#[test]
fn reincarnation_after_assassination_within_the_guard_window() {
    let mut table = Table::new(Config::default());
    // (local port, how it ended, when the four-tuple came back)
    let cases = [
        // Assassinated, back 3 s later: the hazard.
        (40040, DeathCause::KilledByRst, 5 * SEC),
        // Outside the window it is just a new connection.
        (40041, DeathCause::KilledByRst, 70 * SEC),
        // A full TIME_WAIT served is no hazard either.
        (40042, DeathCause::Expired, 63 * SEC),
    ];
    for (i, (port, cause, back)) in cases.into_iter().enumerate() {
        let t = tuple(port, 80);
        let sk = 10 * i as u64;
        close_with_probes(&mut table, SEC, sk, sk + 1, t, "client");
        let ended = if cause == DeathCause::Expired {
            62 * SEC
        } else {
            2 * SEC
        };
        table.apply(&death(ended, sk + 1, t, cause));
        let established = TcpState::Established;
        table.apply(&change(back, sk + 2, t, TcpState::SynSent, established));
    }
    let s = table.summary(20, false);
    assert_eq!(s.collisions.get(&CollisionKind::Reincarnation), Some(&1));
    assert_eq!(s.collisions.values().sum::<u64>(), 1);
    assert_eq!(table.recent_collisions(1)[0].previous_age_ns, Some(3 * SEC));
}

#[test]
fn eaddrnotavail_is_a_collision_toward_the_destination() {
    let mut table = Table::new(Config::default());
    table.apply(&KernelEvent::ConnectEaddrnotavail(ConnectFailure {
        ts_ns: SEC,
        pid_tgid: 1 << 32,
        netns: Some(NS),
        family: Family::Ipv4,
        daddr: ip(9),
        dport: 8080,
    }));
    let c = table.recent_collisions(5);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].kind, c[0].remote, c[0].local),
        (CollisionKind::Eaddrnotavail, (ip(9), 8080), None)
    );
}

#[test]
fn capacity_evicts_oldest_first_and_counts() {
    let mut table = Table::new(Config {
        capacity: 3,
        ..Config::default()
    });
    for port in 0..5u16 {
        table.apply(&birth(
            u64::from(port) * SEC,
            100 + u64::from(port),
            tuple(41000 + port, 80),
            TcpState::TimeWait,
            0,
        ));
    }
    assert_eq!(table.len(), 3);
    assert!(table.get(&k(tuple(41000, 80))).is_none());
    assert!(table.get(&k(tuple(41001, 80))).is_none());
    assert!(table.get(&k(tuple(41004, 80))).is_some());
    let s = table.summary(20, false);
    assert_eq!(s.evictions, 2);
    assert_eq!(population(&table), 3);
    assert_eq!(s.by_local_port.len(), 3);
}

#[test]
fn namespace_gone_purges_its_entries() {
    let mut table = Table::new(Config {
        derive_deaths: true,
        ..Config::default()
    });
    let t = tuple(40050, 80);
    table.apply(&birth(SEC, 1, t, TcpState::TimeWait, 0));
    table.reconcile(&SnapshotRound {
        namespaces: vec![],
        existing: Some(vec![1234]),
    });
    let s = table.summary(20, false);
    assert_eq!(s.exited.get(&(DeathCause::Purged, true)), Some(&1));
    assert!(table.is_empty());
}

#[test]
fn top_k_keeps_the_largest_and_sums_namespaces_unless_asked() {
    let mut table = Table::new(Config::default());
    let mut n = 0u64;
    for (netns, dport, count) in [(1u32, 80u16, 3), (2, 80, 2), (1, 443, 4), (1, 22, 1)] {
        for _ in 0..count {
            n += 1;
            let mut e = birth(n, n, tuple(30000 + n as u16, dport), TcpState::TimeWait, 0);
            if let KernelEvent::TimewaitBirth(tw) = &mut e {
                tw.netns = Some(netns);
            }
            table.apply(&e);
        }
    }
    let s = table.summary(2, false);
    assert_eq!(s.by_remote, vec![((0, ip(2), 80), 5), ((0, ip(2), 443), 4)]);
    let s = table.summary(2, true);
    assert_eq!(s.by_remote, vec![((1, ip(2), 443), 4), ((1, ip(2), 80), 3)]);
}

#[test]
fn port_pressure_counts_ephemeral_tuples_per_destination() {
    let mut round = snapshot(SEC, &[]);
    let ns = &mut round.namespaces[0];
    ns.knobs.port_range = Some((40000, 40003));
    let sock = |sport, state, timewait| DiagSocket {
        family: Family::Ipv4,
        state,
        timewait,
        expires_ms: 0,
        tuple: tuple(sport, 5432),
    };
    ns.sockets = vec![
        sock(40000, TcpState::Established, false),
        sock(40001, TcpState::TimeWait, true),
        sock(40002, TcpState::TimeWait, true),
        sock(40003, TcpState::SynSent, false),
        // Not ephemeral: a server-side socket or an explicit bind.
        sock(5000, TcpState::Established, false),
    ];
    let mut table = Table::new(Config::default());
    table.reconcile(&round);
    let p = table.summary(20, false).pressure;
    assert_eq!((p[0].in_use, p[0].ratio()), (4, 1.0));
    // A listener on a port of the range takes it from every destination.
    let ns = &mut round.namespaces[0];
    ns.sockets.remove(0);
    let mut listener = sock(40000, TcpState::Listen, false);
    listener.tuple.daddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    listener.tuple.dport = 0;
    ns.sockets.push(listener);
    // What that listener accepted is the server side, not connect()s.
    let mut accepted = sock(40000, TcpState::Established, false);
    accepted.tuple.daddr = ip(3);
    ns.sockets.push(accepted);
    let mut table = Table::new(Config::default());
    table.reconcile(&round);
    let p = table.summary(20, false).pressure;
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].in_use, p[0].in_timewait, p[0].range), (4, 2, 4));
    assert_eq!(p[0].ratio(), 1.0);
    assert_eq!((p[0].remote, p[0].remote_port), (ip(2), 5432));
}

#[test]
fn list_filters_and_orders_oldest_first() {
    let mut table = Table::new(Config::default());
    close_with_probes(&mut table, 3 * SEC, 1, 2, tuple(40060, 80), "curl");
    close_with_probes(&mut table, SEC, 3, 4, tuple(40061, 80), "wget");
    close_with_probes(&mut table, 2 * SEC, 5, 6, tuple(40062, 443), "curl");
    let all = table.list(&Filter::default(), Order::Age, 10);
    let ports: Vec<u16> = all.iter().map(|(k, _)| k.tuple.sport).collect();
    assert_eq!(ports, vec![40061, 40062, 40060]);
    let curl = table.list(
        &Filter {
            process: Some("cur".into()),
            port: Some(80),
            ..Filter::default()
        },
        Order::Age,
        10,
    );
    assert_eq!(curl.len(), 1);
    assert_eq!(curl[0].0.tuple.sport, 40060);
    assert_eq!(table.list(&Filter::default(), Order::Age, 1).len(), 1);
    assert_eq!(
        table.list(&Filter::default(), Order::Age, 1)[0]
            .0
            .tuple
            .sport,
        40061
    );
}

/// One step of a random stream over a few four-tuples.
#[derive(Clone, Debug)]
enum Step {
    Close(u8),
    Birth(u8, bool),
    Death(u8, u8),
    Segment(u8, u8),
    Establish(u8, bool),
    Snapshot(Vec<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    let slot = 0u8..6;
    prop_oneof![
        slot.clone().prop_map(Step::Close),
        (slot.clone(), any::<bool>()).prop_map(|(s, tw)| Step::Birth(s, tw)),
        (slot.clone(), 0u8..6).prop_map(|(s, c)| Step::Death(s, c)),
        (slot.clone(), any::<u8>()).prop_map(|(s, f)| Step::Segment(s, f)),
        (slot.clone(), any::<bool>()).prop_map(|(s, c)| Step::Establish(s, c)),
        proptest::collection::vec(slot, 0..6).prop_map(Step::Snapshot),
    ]
}

fn run(steps: &[Step], derive: bool, capacity: usize) -> Table {
    let mut table = Table::new(Config {
        derive_births: derive,
        derive_deaths: derive,
        capacity,
        ..Config::default()
    });
    let t = |slot: u8| tuple(45000 + u16::from(slot), 80);
    for (i, s) in steps.iter().enumerate() {
        let ts = (i as u64 + 1) * SEC;
        let sk = |slot: u8| 0x1000 + u64::from(slot);
        match s {
            Step::Close(slot) => {
                table.apply(&change(
                    ts,
                    sk(*slot),
                    t(*slot),
                    TcpState::Established,
                    TcpState::FinWait1,
                ));
                table.apply(&closer(ts, sk(*slot), t(*slot), "p"));
                table.apply(&change(
                    ts,
                    sk(*slot),
                    t(*slot),
                    TcpState::FinWait2,
                    TcpState::Close,
                ));
            }
            Step::Birth(slot, tw) => {
                let sub = if *tw {
                    TcpState::TimeWait
                } else {
                    TcpState::FinWait2
                };
                table.apply(&birth(ts, sk(*slot) + 0x100, t(*slot), sub, 250));
            }
            Step::Death(slot, cause) => {
                table.apply(&death(
                    ts,
                    sk(*slot) + 0x100,
                    t(*slot),
                    DeathCause::from_kernel(u32::from(*cause)),
                ));
            }
            Step::Segment(slot, flags) => {
                table.apply(&segment(
                    ts,
                    sk(*slot) + 0x100,
                    t(*slot),
                    *flags,
                    TcpState::TimeWait,
                ));
            }
            Step::Establish(slot, connect) => {
                let from = if *connect {
                    TcpState::SynSent
                } else {
                    TcpState::SynRecv
                };
                table.apply(&change(
                    ts,
                    sk(*slot),
                    t(*slot),
                    from,
                    TcpState::Established,
                ));
            }
            Step::Snapshot(slots) => {
                let listed: Vec<_> = slots
                    .iter()
                    .map(|&s| (t(s), TcpState::TimeWait, 30_000))
                    .collect();
                table.reconcile(&snapshot(ts, &listed));
            }
        }
    }
    table
}

proptest! {
    /// Every entry that started ends exactly once, is evicted, or is still
    /// there; tentative ones that never started are discarded or still
    /// there; and the aggregates always agree with the entries.
    #[test]
    fn every_start_ends_exactly_once(
        steps in proptest::collection::vec(step(), 0..80),
        derive in any::<bool>(),
        capacity in 2usize..8,
    ) {
        let table = run(&steps, derive, capacity);
        let s = table.summary(100, false);
        let started: u64 = s.started.values().sum();
        let ended: u64 = s.exited.values().sum();
        let live = table.list(&Filter::default(), Order::Age, usize::MAX);
        let confirmed = live.iter().filter(|(_, e)| e.confirmed).count() as u64;
        prop_assert!(table.len() <= capacity);
        prop_assert!(started >= ended + confirmed);
        prop_assert!(started <= ended + confirmed + s.evictions);
        prop_assert_eq!(s.population.values().sum::<u64>(), table.len() as u64);
        prop_assert_eq!(s.by_remote.iter().map(|x| x.1).sum::<u64>(), table.len() as u64);
        prop_assert_eq!(s.by_local_port.iter().map(|x| x.1).sum::<u64>(), table.len() as u64);
        prop_assert_eq!(s.by_process.iter().map(|x| x.1).sum::<u64>(), table.len() as u64);
        let histogram_total: u64 = s.durations.values().map(|h| h.count).sum();
        prop_assert_eq!(histogram_total, ended);
        for (_, e) in &live {
            prop_assert!(e.expires_ns >= e.born_ns);
        }
    }

    /// The same stream always gives the same table: what replay relies on.
    #[test]
    fn deterministic(steps in proptest::collection::vec(step(), 0..60), derive in any::<bool>()) {
        let a = run(&steps, derive, 1000);
        let b = run(&steps, derive, 1000);
        prop_assert_eq!(a.summary(100, true), b.summary(100, true));
        prop_assert_eq!(a.list(&Filter::default(), Order::Age, usize::MAX), b.list(&Filter::default(), Order::Age, usize::MAX));
    }
}
