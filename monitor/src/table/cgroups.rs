//! Who, by cgroup: timewait sockets by the cgroup of the process that
//! closed them, and connect()/bind() failures by the caller's. Only ids
//! here (the table is pure logic); the exposition names them (service,
//! container, pod) through `sources::cgroups`.

use foldhash::HashMap;

use super::{HeldBy, Table};

/// A failure counted by the caller's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// connect() found no free four-tuple.
    Eaddrnotavail,
    /// bind() found the port held.
    Eaddrinuse(HeldBy),
}

/// (netns, cgroup id) pairs counted one by one at most; the rest are
/// counted under [`OTHER`], so a host starting and stopping containers
/// forever cannot grow this without bound.
const CAPACITY: usize = 4096;

/// The cgroup id failures beyond [`CAPACITY`] are counted under.
pub const OTHER: u64 = u64::MAX;

/// Failures by (netns, cgroup id, what failed).
#[derive(Debug, Default)]
pub(super) struct FailuresByCgroup(HashMap<(u32, u64, Failure), u64>);

impl FailuresByCgroup {
    pub fn count(&mut self, netns: u32, cgroup: u64, failure: Failure) {
        let known = self.0.len() < CAPACITY || self.0.contains_key(&(netns, cgroup, failure));
        let cgroup = if known { cgroup } else { OTHER };
        *self.0.entry((netns, cgroup, failure)).or_default() += 1;
    }

    pub fn all(&self) -> &HashMap<(u32, u64, Failure), u64> {
        &self.0
    }
}

impl Table {
    pub(super) fn count_failure(&mut self, netns: Option<u32>, cgroup: u64, failure: Failure) {
        self.failures_by_cgroup
            .count(netns.unwrap_or(0), cgroup, failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_capacity_failures_are_counted_as_other() {
        let mut f = FailuresByCgroup::default();
        for id in 0..CAPACITY as u64 + 10 {
            f.count(1, id, Failure::Eaddrnotavail);
        }
        f.count(1, 3, Failure::Eaddrnotavail);
        assert_eq!(f.all().get(&(1, 3, Failure::Eaddrnotavail)), Some(&2));
        assert_eq!(f.all().get(&(1, OTHER, Failure::Eaddrnotavail)), Some(&10));
        assert_eq!(f.all().len(), CAPACITY + 1);
    }
}
