//! Invariants over random event streams.

use super::*;

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
                table.apply(&closed(ts, sk(*slot), t(*slot), Some("p")));
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
                    DeathCause::from_kernel(*cause),
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
