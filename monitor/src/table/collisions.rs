//! Four-tuple collisions: a new connection on a four-tuple whose previous
//! incarnation was still in TIME_WAIT, or had it cut short less than the
//! guard window ago, and connects that found no free four-tuple.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use super::{Table, entry::Key};
use crate::model::{
    event::{ConnectFailure, DeathCause, Process},
    tcp::{Family, TcpState},
};

/// Kinds of four-tuple collision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CollisionKind {
    /// An inbound SYN took over a server-side TIME_WAIT four-tuple.
    SynInTimewait,
    /// A connect() took over a client-side TIME_WAIT four-tuple.
    ConnectReuse,
    /// A four-tuple came back within the guard window after its TIME_WAIT
    /// was cut short (RST, or a kill no hook explained).
    Reincarnation,
    /// connect() found no free four-tuple toward the destination.
    Eaddrnotavail,
    /// bind() was refused because a timewait socket holds the address and
    /// port.
    BindInTimewait,
}

impl CollisionKind {
    pub const ALL: [CollisionKind; 5] = [
        CollisionKind::SynInTimewait,
        CollisionKind::ConnectReuse,
        CollisionKind::Reincarnation,
        CollisionKind::Eaddrnotavail,
        CollisionKind::BindInTimewait,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CollisionKind::SynInTimewait => "syn_in_timewait",
            CollisionKind::ConnectReuse => "connect_reuse",
            CollisionKind::Reincarnation => "reincarnation",
            CollisionKind::Eaddrnotavail => "eaddrnotavail",
            CollisionKind::BindInTimewait => "bind_in_timewait",
        }
    }
}

/// One collision, for the recent-collisions list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collision {
    pub ts_ns: u64,
    pub kind: CollisionKind,
    pub netns: u32,
    pub family: Family,
    /// The local end; `None` for a failed connect (no port was had).
    pub local: Option<(IpAddr, u16)>,
    pub remote: (IpAddr, u16),
    /// How long the previous incarnation had been in TIME_WAIT when it was
    /// taken over (or, for a reincarnation, since it ended).
    pub previous_age_ns: Option<u64>,
    /// Who closed the previous incarnation, where known.
    pub previous_closer: Option<Process>,
    /// Inferred from transitions rather than reported by a probe.
    pub derived: bool,
    /// bind_in_timewait: who called bind(), how many timewait sockets hold
    /// the port, and how long until the oldest (the one described by
    /// `remote`, `previous_age_ns` and `previous_closer`) expires.
    pub binder: Option<Process>,
    pub holders: u32,
    pub time_left_ns: Option<u64>,
}

impl Collision {
    /// A collision on the four-tuple `key`.
    pub(super) fn on(
        key: &Key,
        ts_ns: u64,
        kind: CollisionKind,
        previous_age_ns: u64,
        previous_closer: Option<Process>,
        derived: bool,
    ) -> Collision {
        Collision {
            ts_ns,
            kind,
            netns: key.netns,
            family: key.family,
            local: Some((key.tuple.saddr, key.tuple.sport)),
            remote: (key.tuple.daddr, key.tuple.dport),
            previous_age_ns: Some(previous_age_ns),
            previous_closer,
            derived,
            binder: None,
            holders: 0,
            time_left_ns: None,
        }
    }
}

/// Collisions since start and the most recent ones.
#[derive(Debug, Default)]
pub(super) struct Collisions {
    pub totals: BTreeMap<CollisionKind, u64>,
    /// Oldest first.
    pub recent: VecDeque<Collision>,
}

impl Table {
    /// A connection reached ESTABLISHED on `key`.
    pub(super) fn new_incarnation(&mut self, key: Key, from: TcpState, ts_ns: u64) {
        if self.entries.contains(&key) {
            // The previous incarnation was still here: without death probes
            // this is how the takeover is seen.
            let cause = if from == TcpState::SynSent {
                DeathCause::ReusedByConnect
            } else {
                DeathCause::ReusedBySyn
            };
            self.end(key, ts_ns, cause, true);
            self.early_ended.remove(&key);
            return;
        }
        let Some(ended) = self.early_ended.remove(&key) else {
            return;
        };
        let since = ts_ns.saturating_sub(ended.ts_ns);
        if since < self.config.guard_ns {
            let kind = CollisionKind::Reincarnation;
            self.collide(Collision::on(&key, ts_ns, kind, since, ended.closer, false));
        }
    }

    pub(super) fn on_connect_failure(&mut self, c: &ConnectFailure) {
        let cgroup = c.process.map_or(0, |p| p.cgroup);
        self.count_failure(c.netns, cgroup, super::Failure::Eaddrnotavail);
        self.collide(Collision {
            ts_ns: c.ts_ns,
            kind: CollisionKind::Eaddrnotavail,
            netns: c.netns.unwrap_or(0),
            family: c.family,
            local: None,
            remote: (c.daddr, c.dport),
            previous_age_ns: None,
            previous_closer: None,
            derived: false,
            binder: None,
            holders: 0,
            time_left_ns: None,
        });
    }

    pub(super) fn collide(&mut self, collision: Collision) {
        let c = &mut self.collisions;
        *c.totals.entry(collision.kind).or_default() += 1;
        if c.recent.len() >= self.config.recent_collisions.max(1) {
            c.recent.pop_front();
        }
        c.recent.push_back(collision);
    }

    /// Collisions since start, by kind.
    pub fn collision_totals(&self) -> &BTreeMap<CollisionKind, u64> {
        &self.collisions.totals
    }

    /// The most recent collisions, newest first.
    pub fn recent_collisions(&self, limit: usize) -> Vec<Collision> {
        self.collisions
            .recent
            .iter()
            .rev()
            .take(limit)
            .copied()
            .collect()
    }
}
