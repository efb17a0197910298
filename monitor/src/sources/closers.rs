//! Closers the kernel did not show: a close whose end no program saw
//! (see `monitor_common::closing`) stays in the kernel's table of closes
//! in progress, and its timewait socket reaches the table through a
//! sock_diag dump as an orphan, without a closer. After each round the
//! daemon matches the round's orphans to those slots by four-tuple hash
//! and time, and frees the slots it matched and those too old to hold a
//! close still in progress (left taken, they would in time make the kernel
//! displace live closes).

use foldhash::{HashMap, HashMapExt as _};
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
        tcp::{FourTuple, ip_bytes},
    },
};

/// The longest a close can be in progress: FIN_WAIT1 retransmitting to a
/// silent peer gives up after about two minutes (tcp_orphan_retries),
/// FIN_WAIT2 after tcp_fin_timeout (60 s); ten minutes leaves room for
/// hosts that raised either.
const LONGEST_CLOSE_NS: u64 = 600_000_000_000;

/// How much later than an adopted socket's birth time its close may seem
/// to begin: the birth is estimated from the timer left at the reply,
/// counted from the dump's start, so it comes out early by up to the
/// dump's length (hundreds of milliseconds at a million sockets).
const BIRTH_SLACK_NS: u64 = 10_000_000_000;

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
/// before its birth (give or take the estimate's slack), within the
/// longest close. Times on CLOCK_MONOTONIC.
pub fn settle(open: &[(usize, Slot)], orphans: &[(FourTuple, u64)], now_ns: u64) -> Settled {
    let stale_before = now_ns.saturating_sub(LONGEST_CLOSE_NS) >> BEGAN_SHIFT;
    let stale = open
        .iter()
        .filter(|(_, s)| u64::from(s.began) < stale_before)
        .map(|&(index, s)| Held { index, sk: s.sk })
        .collect();
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
        let began = (born_ns.saturating_sub(LONGEST_CLOSE_NS) >> BEGAN_SHIFT)
            ..=(born_ns.saturating_add(BIRTH_SLACK_NS) >> BEGAN_SHIFT);
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

    const S: u64 = 1 << BEGAN_SHIFT;

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

    #[test]
    fn an_orphan_takes_the_latest_close_of_its_four_tuple_begun_before_its_birth() {
        let open = [
            (3, slot(40000, 100 * S, 1)),
            (9, slot(40000, 200 * S, 2)),
            // Begun long after the birth: another close.
            (12, slot(40000, 400 * S, 3)),
            (20, slot(40001, 200 * S, 4)),
        ];
        let settled = settle(&open, &[(tuple(40000), 210 * S)], 220 * S);
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
        let settled = settle(&open, &[(tuple(40000), 100 * S - 300_000_000)], 101 * S);
        assert_eq!(settled.found.len(), 1);
    }

    #[test]
    fn an_orphan_no_close_names_stays_unknown() {
        let open = [(5, slot(40001, 100 * S, 1))];
        let settled = settle(&open, &[(tuple(40000), 100 * S)], 101 * S);
        assert!(settled.found.is_empty());
    }

    #[test]
    fn closes_older_than_any_in_progress_are_freed() {
        let now = 2000 * S;
        let open = [
            (1, slot(40000, now - LONGEST_CLOSE_NS - 2 * S, 1)),
            (2, slot(40001, now - S, 2)),
        ];
        let stale = settle(&open, &[], now).stale;
        assert_eq!(stale.iter().map(|h| h.index).collect::<Vec<_>>(), vec![1]);
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
