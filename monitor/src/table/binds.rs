//! `bind()` refused with EADDRINUSE, and what holds the port: a timewait
//! socket of an earlier connection (the table has one with that local
//! port, on that address or, for a wildcard bind, any), or a live socket.
//! A refusal by TIME_WAIT is a `bind_in_timewait` collision naming the
//! oldest holder, who closed it and how long until it frees the port.

use std::collections::BTreeMap;

use super::{
    Failure, Table,
    collisions::{Collision, CollisionKind},
    entry::{Entry, Key},
};
use crate::model::event::BindFailure;

/// What held the address and port a bind() was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeldBy {
    Timewait,
    Live,
}

impl HeldBy {
    pub const ALL: [HeldBy; 2] = [HeldBy::Timewait, HeldBy::Live];

    pub fn label(self) -> &'static str {
        match self {
            HeldBy::Timewait => "timewait",
            HeldBy::Live => "live",
        }
    }
}

/// Refused binds by what held the port.
pub type Refusals = BTreeMap<HeldBy, u64>;

impl Table {
    pub(super) fn on_bind_failure(&mut self, b: &BindFailure) {
        let netns = b.netns.unwrap_or(0);
        let held = self
            .breakdowns
            .by_local_port
            .get(&(netns, b.port))
            .is_some_and(|&n| n > 0);
        // Only a port the table holds is worth a look for its holders.
        let holders = if held {
            self.holders(netns, b)
        } else {
            Vec::new()
        };
        let by = if holders.is_empty() {
            HeldBy::Live
        } else {
            HeldBy::Timewait
        };
        *self.bind_refusals.entry(by).or_default() += 1;
        let cgroup = b.process.map_or(0, |p| p.cgroup);
        self.count_failure(b.netns, cgroup, Failure::Eaddrinuse(by));
        let Some((key, oldest)) = holders.iter().min_by_key(|(_, e)| e.born_ns) else {
            return;
        };
        let mut collision = Collision::on(
            key,
            b.ts_ns,
            CollisionKind::BindInTimewait,
            b.ts_ns.saturating_sub(oldest.born_ns),
            oldest.closer,
            false,
        );
        collision.binder = b.process;
        collision.holders = u32::try_from(holders.len()).unwrap_or(u32::MAX);
        collision.time_left_ns = Some(oldest.expires_ns.saturating_sub(b.ts_ns));
        self.collide(collision);
    }

    /// The timewait sockets of `netns` that hold what `b` asked for.
    fn holders(&self, netns: u32, b: &BindFailure) -> Vec<(Key, Entry)> {
        let wildcard = b.addr.is_unspecified();
        self.entries
            .with_local_port(netns, b.port)
            .into_iter()
            .filter(|(k, _)| wildcard || k.tuple.saddr == b.addr)
            .collect()
    }

    /// Refused binds since start, by what held the port.
    pub fn bind_refusals(&self) -> &Refusals {
        &self.bind_refusals
    }
}
