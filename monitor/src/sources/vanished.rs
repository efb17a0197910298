//! When a watched network namespace stops being reachable.
//!
//! A namespace nobody holds is torn down, and its timewait sockets with
//! it. Where the `timewait_purge` hook is attached the kernel reports each
//! of those deaths, but only once its cleanup worker has run, some time
//! after the last reference went. Until then the namespace is held as
//! still existing, so the table does not end the entries itself first and
//! the exact, probed deaths are the ones counted. Without the hook the
//! table is the only one who can end them, so there is no grace.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

/// How long the kernel gets to report a purge: cleanup runs from a
/// workqueue after an RCU grace period, well under a second on a idle
/// host, seconds on a loaded one.
pub const PURGE_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Vanished {
    grace: Duration,
    /// Namespaces seen reachable and not yet given up on.
    known: BTreeSet<u32>,
    /// Known namespaces missing since then.
    missing_since: BTreeMap<u32, Instant>,
}

/// What one look found.
#[derive(Debug, PartialEq, Eq)]
pub struct Look {
    /// The namespaces to treat as existing: the reachable ones and those
    /// missing for less than the grace.
    pub existing: Vec<u32>,
    /// Namespaces given up on in this look (each reported once).
    pub gone: Vec<u32>,
}

impl Vanished {
    pub fn new(grace: Duration) -> Self {
        Vanished {
            grace,
            known: BTreeSet::new(),
            missing_since: BTreeMap::new(),
        }
    }

    /// Takes the namespaces reachable `now`.
    pub fn look(&mut self, reachable: &[u32], now: Instant) -> Look {
        let reachable: BTreeSet<u32> = reachable.iter().copied().collect();
        let mut gone = Vec::new();
        for &ns in &self.known {
            if reachable.contains(&ns) {
                self.missing_since.remove(&ns);
                continue;
            }
            let since = *self.missing_since.entry(ns).or_insert(now);
            if now.saturating_duration_since(since) >= self.grace {
                gone.push(ns);
            }
        }
        for ns in &gone {
            self.known.remove(ns);
            self.missing_since.remove(ns);
        }
        self.known.extend(reachable.iter().copied());
        let existing = self.known.iter().copied().collect();
        Look { existing, gone }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_grace_a_missing_namespace_is_gone_at_once() {
        let mut v = Vanished::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(
            v.look(&[1, 2], t),
            Look {
                existing: vec![1, 2],
                gone: vec![]
            }
        );
        assert_eq!(
            v.look(&[1], t),
            Look {
                existing: vec![1],
                gone: vec![2]
            }
        );
        // Reported once.
        assert_eq!(v.look(&[1], t).gone, Vec::<u32>::new());
    }

    #[test]
    fn a_missing_namespace_is_held_for_the_grace() {
        let mut v = Vanished::new(Duration::from_secs(10));
        let t = Instant::now();
        v.look(&[1, 2], t);
        let held = v.look(&[1], t + Duration::from_secs(1));
        assert_eq!(held.existing, vec![1, 2]);
        assert!(held.gone.is_empty());
        let held = v.look(&[1], t + Duration::from_secs(10));
        assert_eq!(
            held.existing,
            vec![1, 2],
            "the grace runs from when it went"
        );
        let gone = v.look(&[1], t + Duration::from_secs(11));
        assert_eq!(
            gone,
            Look {
                existing: vec![1],
                gone: vec![2]
            }
        );
    }

    #[test]
    fn a_namespace_back_within_the_grace_starts_over() {
        let mut v = Vanished::new(Duration::from_secs(10));
        let t = Instant::now();
        v.look(&[1], t);
        v.look(&[], t + Duration::from_secs(8));
        v.look(&[1], t + Duration::from_secs(9));
        let look = v.look(&[], t + Duration::from_secs(12));
        assert_eq!(look.existing, vec![1], "missing again only since 12 s");
        assert!(look.gone.is_empty());
        assert_eq!(v.look(&[], t + Duration::from_secs(22)).gone, vec![1]);
    }

    #[test]
    fn a_namespace_never_seen_is_not_reported() {
        let mut v = Vanished::new(Duration::ZERO);
        let look = v.look(&[], Instant::now());
        assert!(look.existing.is_empty() && look.gone.is_empty());
    }
}
