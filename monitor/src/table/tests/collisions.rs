//! Four-tuple collisions.

use super::*;

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
        process: Some(process("curl")),
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
