//! Reconciliation with sock_diag snapshots.

use super::*;

#[test]
fn snapshots_confirm_discard_and_end_derived_entries() {
    let mut table = tracepoint_only();
    let real = tuple(40010, 80);
    let aborted = tuple(40011, 80);
    let killed = tuple(40012, 80);
    for (i, t) in [real, aborted, killed].into_iter().enumerate() {
        let sk = 10 + i as u64;
        table.apply(&closed(SEC, sk, t, None));
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
    assert_eq!(s.started.get(&Origin::Transition), Some(&2));
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
    let e = table.get(&k(before_start)).unwrap();
    assert_eq!(e.origin, Origin::Snapshot);
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
    let e = table.get(&k(t)).unwrap();
    assert_eq!(
        (e.origin, e.skaddr, e.born_ns),
        (Origin::Probe, 8, 2 * SEC - 5)
    );
    let s = table.summary(20, false);
    assert_eq!(s.started.values().sum::<u64>(), 1);
    assert_eq!(population(&table), 1);
}

#[test]
fn a_transition_arriving_after_adoption_explains_the_socket() {
    let mut table = tracepoint_only();
    let t = tuple(40032, 80);
    table.reconcile(&snapshot(SEC, &[]));
    // The dump saw the timewait socket before the CLOSE record was drained
    // (a stalled producer in the ring holds later records back).
    table.reconcile(&snapshot(3 * SEC, &[(t, TcpState::TimeWait, 59_000)]));
    assert_eq!(table.get(&k(t)).unwrap().origin, Origin::Snapshot);
    table.apply(&closed(2 * SEC + 5, 9, t, Some("curl")));
    let e = table.get(&k(t)).unwrap();
    assert_eq!((e.origin, e.born_ns), (Origin::Transition, 2 * SEC + 5));
    assert_eq!(e.closer.unwrap().comm.as_string(), "curl");
    assert_eq!(e.expires_ns, 62 * SEC);
    let s = table.summary(20, false);
    assert_eq!(s.by_process, vec![((0, "curl".to_string()), 1)]);
    assert_eq!(s.started.values().sum::<u64>(), 1);
    assert_eq!(s.derived_births.values().sum::<u64>(), 1);
}

#[test]
fn an_adopted_socket_gets_the_closer_its_lost_birth_would_have_carried() {
    // Probe mode: the birth's kprobe run was skipped (counted lost).
    let mut table = Table::new(Config::default());
    let t = tuple(40033, 80);
    table.reconcile(&snapshot(SEC, &[]));
    // The birth's run was skipped, so the kernel's closing map still held
    // the close at CLOSE, and it sent it.
    table.apply(&closed(2 * SEC + 5, 9, t, Some("curl")));
    assert!(table.get(&k(t)).is_none());
    table.reconcile(&snapshot(3 * SEC, &[(t, TcpState::TimeWait, 59_000)]));
    let e = table.get(&k(t)).unwrap();
    assert_eq!(e.origin, Origin::Snapshot);
    assert_eq!(e.closer.unwrap().comm.as_string(), "curl");
    assert_eq!(
        table.summary(20, false).by_process,
        vec![((0, "curl".to_string()), 1)]
    );
}

#[test]
fn a_socket_one_dump_misses_keeps_its_closer_when_the_next_lists_it() {
    // sock_diag resumes a dump by position within a hash bucket, so a
    // socket can be missing from one dump taken under churn and listed
    // by the next.
    let mut table = tracepoint_only();
    let tentative = tuple(40034, 80);
    let confirmed = tuple(40035, 80);
    table.apply(&closed(SEC, 1, confirmed, Some("nginx")));
    table.reconcile(&snapshot(
        2 * SEC,
        &[(confirmed, TcpState::TimeWait, 59_000)],
    ));
    table.apply(&closed(3 * SEC, 2, tentative, Some("curl")));
    // This dump misses both: one is discarded, the other ended.
    table.reconcile(&snapshot(4 * SEC, &[]));
    assert!(table.is_empty());
    table.reconcile(&snapshot(
        6 * SEC,
        &[
            (tentative, TcpState::TimeWait, 57_000),
            (confirmed, TcpState::TimeWait, 55_000),
        ],
    ));
    let closer = |t| {
        table
            .get(&k(t))
            .and_then(|e| e.closer)
            .map(|p| p.comm.as_string())
    };
    assert_eq!(closer(tentative).as_deref(), Some("curl"));
    assert_eq!(closer(confirmed).as_deref(), Some("nginx"));
    let s = table.summary(20, false);
    assert_eq!(
        s.by_process,
        vec![((0, "curl".to_string()), 1), ((0, "nginx".to_string()), 1)]
    );
}

#[test]
fn a_skipped_sockets_closer_is_kept_one_round_only() {
    // An RST killed it: no later dump lists it. A socket of the same
    // four-tuple that a much later dump adopts is another one, whose
    // closer is unknown rather than the old one's.
    let mut table = tracepoint_only();
    let t = tuple(40036, 80);
    table.apply(&closed(SEC, 1, t, Some("curl")));
    table.reconcile(&snapshot(2 * SEC, &[]));
    table.reconcile(&snapshot(4 * SEC, &[]));
    table.reconcile(&snapshot(6 * SEC, &[(t, TcpState::TimeWait, 59_000)]));
    let e = table.get(&k(t)).unwrap();
    assert_eq!(e.origin, Origin::Snapshot);
    assert!(e.closer.is_none());
}

#[test]
fn without_a_death_probe_the_timer_ends_entries_between_snapshots() {
    let mut table = Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        hz: 250,
        ..Config::default()
    });
    let old = tuple(40020, 80);
    let young = tuple(40021, 80);
    table.apply(&closed(SEC, 1, old, None));
    table.apply(&closed(30 * SEC, 2, young, None));
    table.reconcile(&snapshot(
        31 * SEC,
        &[
            (old, TcpState::TimeWait, 30_000),
            (young, TcpState::TimeWait, 59_000),
        ],
    ));
    // `old` is due at 61 s; its timer fires up to 512 jiffies late, 257
    // on average (with the tick).
    table.advance_to(61 * SEC + SEC);
    assert_eq!(population(&table), 2, "not dead yet, most likely");
    table.advance_to(61 * SEC + 257 * 4_000_000);
    assert_eq!(population(&table), 1);
    let s = table.summary(20, false);
    assert_eq!(s.exited.get(&(DeathCause::Expired, true)), Some(&1));
    assert!(table.get(&k(old)).is_none() && table.get(&k(young)).is_some());
    // A later dump that still lists `old` as overdue does not bring it
    // back; nor does one begun before it was ended.
    table.reconcile(&snapshot(
        64 * SEC,
        &[
            (old, TcpState::TimeWait, 0),
            (young, TcpState::TimeWait, 26_000),
        ],
    ));
    assert!(table.get(&k(old)).is_none());
    assert_eq!(table.summary(20, false).drift, Drift::default());
    // `young` goes at 90 s + slack, with nothing else happening.
    table.advance_to(93 * SEC);
    assert!(table.is_empty());
}

#[test]
fn with_a_death_probe_the_timer_ends_nothing() {
    let mut table = Table::new(Config::default());
    let t = tuple(40022, 80);
    table.apply(&birth(SEC, 1, t, TcpState::TimeWait, 0));
    table.advance_to(600 * SEC);
    assert_eq!(population(&table), 1);
}

#[test]
fn orphans_are_listed_once_and_take_a_closer_found_later() {
    let mut table = tracepoint_only();
    let known = tuple(40030, 80);
    let orphan = tuple(40031, 80);
    table.apply(&closed(SEC, 30, known, Some("curl")));
    table.reconcile(&snapshot(
        2 * SEC,
        &[
            (known, TcpState::TimeWait, 59_000),
            (orphan, TcpState::TimeWait, 59_500),
        ],
    ));
    // Only the socket adopted without a closer, born when its timer says.
    assert_eq!(table.orphans(), &[(k(orphan), SEC + SEC / 2)]);
    table.attribute(&found(orphan, "nginx"));
    // A closer already known is not replaced.
    table.attribute(&found(known, "nginx"));
    assert_eq!(
        table.get(&k(orphan)).unwrap().closer,
        Some(process("nginx"))
    );
    assert_eq!(table.get(&k(known)).unwrap().closer, Some(process("curl")));
    let s = table.summary(20, false);
    assert_eq!(s.closers_recovered, 1);
    let nginx = s.by_process.iter().find(|((_, comm), _)| comm == "nginx");
    assert_eq!(nginx.map(|(_, n)| *n), Some(1), "{:?}", s.by_process);
    // The next round adopts nothing new: no orphans.
    table.reconcile(&snapshot(
        3 * SEC,
        &[
            (known, TcpState::TimeWait, 58_000),
            (orphan, TcpState::TimeWait, 58_500),
        ],
    ));
    assert!(table.orphans().is_empty());
}
