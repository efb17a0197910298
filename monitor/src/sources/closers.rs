//! Closers the kernel did not show: a close whose end no program saw
//! (see `monitor_common::closing`) stays in the kernel's table of closes
//! in progress, and its timewait socket reaches the table through a
//! sock_diag dump as an orphan, without a closer. After each round the
//! daemon matches the round's orphans to those slots by four-tuple hash
//! and time, and frees the slots it matched and those of closes that ended
//! unseen long ago (left taken, they would in time make the kernel
//! displace live closes).

use foldhash::{HashMap, HashMapExt as _, HashSet};
use monitor_common::{
    closing::{BEGAN_SHIFT, Slot},
    recent,
    record::Tuple,
};

use super::decode::process;
use crate::{
    kernel::closing::Held,
    model::{
        event::Process,
        snapshot::SnapshotRound,
        tcp::{FourTuple, TcpState, ip_bytes},
    },
};

/// How long a close may stay open before its slot is checked against the
/// sockets a round lists. An orphaned close (the process closed the
/// socket) is over within minutes: FIN_WAIT1 retransmitting to a silent
/// peer gives up after tcp_orphan_retries, FIN_WAIT2 after
/// tcp_fin_timeout. A half-close (shutdown() with the socket still open)
/// has no limit: its FIN_WAIT2 lasts until the peer's FIN, so an older
/// slot is kept while a round still lists a full socket of its four-tuple
/// in a closing state.
const LONGEST_CLOSE_NS: u64 = 600_000_000_000;

/// How long a close may stay open while a round could not dump some
/// namespace. Slots name no namespace, so such a round cannot tell a
/// half-close there from a close long over; it frees only slots this old,
/// so that a namespace failing every round (an LSM denying setns) cannot
/// keep dead slots taken for ever.
const LONGEST_CLOSE_UNSEEN_NS: u64 = 6 * LONGEST_CLOSE_NS;

/// How much later than an adopted socket's birth time its close may seem
/// to begin: the birth is estimated from the timer left at the reply,
/// counted from the dump's start, so it comes out early by up to the
/// dump's length (hundreds of milliseconds at a million sockets).
const BIRTH_SLACK_NS: u64 = 10_000_000_000;

/// A round, as far as its closes are concerned.
pub struct Seen<'a> {
    pub round: &'a SnapshotRound,
    /// Namespaces the round could not dump though they are still there.
    pub missed: usize,
}

/// What to do with the open slots.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// (orphan index, its close's slot, who closed it).
    pub found: Vec<(usize, Held, Process)>,
    /// Slots too old to hold a close in progress.
    pub stale: Vec<Held>,
}

/// Matches `orphans` (four-tuple, birth time) to the `open` slots (index,
/// slot): an orphan's closer is the latest close of its four-tuple begun
/// before its birth (give or take the estimate's slack). Slots older than
/// the longest orphaned close whose four-tuple the round lists in no closing
/// state are stale (older still when it missed a namespace), even when one
/// was found too: free the found first. Times on CLOCK_MONOTONIC.
pub fn settle(
    open: &[(usize, Slot)],
    orphans: &[(FourTuple, u64)],
    seen: &Seen,
    now_ns: u64,
) -> Settled {
    let stale = stale(open, seen, now_ns);
    if orphans.is_empty() {
        return Settled {
            found: Vec::new(),
            stale,
        };
    }
    let mut by_hash: HashMap<u32, Vec<(usize, &Slot)>> = HashMap::with_capacity(open.len());
    for (i, s) in open {
        by_hash.entry(s.tuple_hash).or_default().push((*i, s));
    }
    let mut found = Vec::new();
    for (n, (tuple, born_ns)) in orphans.iter().enumerate() {
        let h = recent::hash(&wire_tuple(tuple)) as u32;
        let Some(candidates) = by_hash.get_mut(&h) else {
            continue;
        };
        // No lower bound: a half-close may have begun hours before; slots
        // of closes long over are gone (`stale`).
        let began = ..=(born_ns.saturating_add(BIRTH_SLACK_NS) >> BEGAN_SHIFT);
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| began.contains(&u64::from(s.began)))
            .max_by_key(|(_, (_, s))| s.began)
            .map(|(at, _)| at);
        if let Some(at) = best {
            let (index, s) = candidates.swap_remove(at);
            if let Some(p) = process(&s.process) {
                found.push((n, Held { index, sk: s.sk }, p));
            }
        }
    }
    Settled { found, stale }
}

/// The open slots of closes that cannot still be in progress.
fn stale(open: &[(usize, Slot)], seen: &Seen, now_ns: u64) -> Vec<Held> {
    let longest = match seen.missed {
        0 => LONGEST_CLOSE_NS,
        _ => LONGEST_CLOSE_UNSEEN_NS,
    };
    let stale_before = now_ns.saturating_sub(longest) >> BEGAN_SHIFT;
    let old = || {
        open.iter()
            .filter(move |(_, s)| u64::from(s.began) < stale_before)
    };
    if old().next().is_none() {
        return Vec::new();
    }
    let closing: HashSet<u32> = seen
        .round
        .namespaces
        .iter()
        .flat_map(|ns| &ns.sockets)
        .filter(|s| {
            !s.timewait
                && matches!(
                    s.state,
                    TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing
                )
        })
        .map(|s| recent::hash(&wire_tuple(&s.tuple)) as u32)
        .collect();
    old()
        .filter(|(_, s)| !closing.contains(&s.tuple_hash))
        .map(|&(index, s)| Held { index, sk: s.sk })
        .collect()
}

/// A four-tuple as the kernel programs hash it: IPv4 in the first four
/// bytes of sixteen, ports in host order.
fn wire_tuple(t: &FourTuple) -> Tuple {
    Tuple {
        saddr: ip_bytes(t.saddr),
        daddr: ip_bytes(t.daddr),
        sport: t.sport,
        dport: t.dport,
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::record;

    use super::*;
    use crate::model::{
        snapshot::{DiagSocket, NetnsSnapshot},
        tcp::Family,
    };

    const S: u64 = 1 << BEGAN_SHIFT;

    /// `round`, every namespace it reached dumped.
    fn seen(round: &SnapshotRound) -> Seen<'_> {
        Seen { round, missed: 0 }
    }

    fn none() -> SnapshotRound {
        SnapshotRound::default()
    }

    /// A round listing sockets (local port, state, timewait) of `tuple`.
    fn listing(sockets: &[(u16, TcpState, bool)]) -> SnapshotRound {
        let sockets = sockets
            .iter()
            .map(|&(sport, state, timewait)| DiagSocket {
                family: Family::Ipv4,
                state,
                timewait,
                expires_ms: 0,
                tuple: tuple(sport),
            })
            .collect();
        SnapshotRound {
            namespaces: vec![NetnsSnapshot {
                sockets,
                ..NetnsSnapshot::default()
            }],
            existing: None,
        }
    }

    fn tuple(sport: u16) -> FourTuple {
        FourTuple {
            saddr: "10.0.0.1".parse().unwrap(),
            sport,
            daddr: "10.0.0.2".parse().unwrap(),
            dport: 80,
        }
    }

    fn slot(sport: u16, began_ns: u64, pid: u32) -> Slot {
        Slot {
            sk: 0xffff_8880_0000_0040,
            process: record::Process::new(u64::from(pid) << 32, 7, *b"nginx\0\0\0\0\0\0\0\0\0\0\0"),
            tuple_hash: recent::hash(&wire_tuple(&tuple(sport))) as u32,
            began: (began_ns >> BEGAN_SHIFT) as u32,
        }
    }

    /// The indices of the slots a round with no orphans frees.
    fn stale_slots(open: &[(usize, Slot)], seen: &Seen, now_ns: u64) -> Vec<usize> {
        let settled = settle(open, &[], seen, now_ns);
        settled.stale.iter().map(|h| h.index).collect()
    }

    #[test]
    fn an_orphan_takes_the_latest_close_of_its_four_tuple_begun_before_its_birth() {
        let open = [
            (3, slot(40000, 100 * S, 1)),
            (9, slot(40000, 200 * S, 2)),
            // Begun long after the birth: another close.
            (12, slot(40000, 400 * S, 3)),
            (20, slot(40001, 200 * S, 4)),
        ];
        let settled = settle(&open, &[(tuple(40000), 210 * S)], &seen(&none()), 220 * S);
        assert_eq!(settled.found.len(), 1);
        let (orphan, held, process) = settled.found[0];
        assert_eq!((orphan, held.index, process.pid), (0, 9, 2));
        assert!(settled.stale.is_empty());
    }

    #[test]
    fn a_birth_estimated_early_still_finds_its_close() {
        // The dump began 300 ms before the reply: the birth comes out
        // before the close began, across a unit boundary.
        let open = [(5, slot(40000, 100 * S + 10, 1))];
        let settled = settle(
            &open,
            &[(tuple(40000), 100 * S - 300_000_000)],
            &seen(&none()),
            101 * S,
        );
        assert_eq!(settled.found.len(), 1);
    }

    #[test]
    fn an_orphan_no_close_names_stays_unknown() {
        let open = [(5, slot(40001, 100 * S, 1))];
        let settled = settle(&open, &[(tuple(40000), 100 * S)], &seen(&none()), 101 * S);
        assert!(settled.found.is_empty());
    }

    #[test]
    fn closes_older_than_any_in_progress_are_freed() {
        let now = 2000 * S;
        let open = [
            (1, slot(40000, now - LONGEST_CLOSE_NS - 2 * S, 1)),
            (2, slot(40001, now - S, 2)),
        ];
        assert_eq!(stale_slots(&open, &seen(&listing(&[])), now), vec![1]);
    }

    #[test]
    fn a_round_that_missed_a_namespace_frees_only_far_older_closes() {
        let now = 20_000 * S;
        let open = [
            // Could be a half-close in the namespace the round missed.
            (1, slot(40000, now - LONGEST_CLOSE_NS - 2 * S, 1)),
            // Older than the round can leave in doubt.
            (2, slot(40001, now - LONGEST_CLOSE_UNSEEN_NS - 2 * S, 2)),
        ];
        let round = listing(&[]);
        let missed = Seen {
            round: &round,
            missed: 1,
        };
        assert_eq!(stale_slots(&open, &missed, now), vec![2]);
        assert_eq!(stale_slots(&open, &seen(&round), now), vec![1, 2]);
    }

    #[test]
    fn a_half_close_still_listed_keeps_its_slot() {
        let now = 2000 * S;
        let long_ago = now - LONGEST_CLOSE_NS - 2 * S;
        let open = [
            // shutdown() long ago; the peer still sends: a full FIN_WAIT2.
            (1, slot(40000, long_ago, 1)),
            // Its socket is a timewait socket now: its end went unseen.
            (2, slot(40001, long_ago, 2)),
            // Not listed at all.
            (3, slot(40002, long_ago, 3)),
        ];
        let round = listing(&[
            (40000, TcpState::FinWait2, false),
            (40001, TcpState::FinWait2, true),
        ]);
        assert_eq!(stale_slots(&open, &seen(&round), now), vec![2, 3]);
    }

    #[test]
    fn a_half_close_whose_end_went_unseen_still_names_its_closer() {
        let now = 5000 * S;
        let open = [(4, slot(40000, now - 3 * LONGEST_CLOSE_NS, 9))];
        // Kept while it was a full FIN_WAIT2; now a timewait socket that
        // the round adopted as an orphan.
        let round = listing(&[(40000, TcpState::TimeWait, true)]);
        let settled = settle(&open, &[(tuple(40000), now - S)], &seen(&round), now);
        assert_eq!(settled.found.len(), 1);
        assert_eq!(settled.found[0].1.index, 4);
        // Stale as well: the caller frees the found slot first.
        assert_eq!(settled.stale.len(), 1);
    }

    #[test]
    fn both_families_hash_as_the_kernel_writes_them() {
        let v4 = ip_bytes("10.0.0.1".parse().unwrap());
        assert_eq!(&v4[..4], &[10, 0, 0, 1]);
        assert!(v4[4..].iter().all(|&b| b == 0));
        let v6 = ip_bytes("fd00::1".parse().unwrap());
        assert_eq!(v6[0], 0xfd);
        assert_eq!(v6[15], 1);
    }
}
