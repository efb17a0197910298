//! The four-tuple table: every timewait socket twmon knows of, keyed by
//! network namespace and four-tuple, with how it was born, what it absorbed
//! and how it ended; and what follows from it: populations, lifetimes,
//! collisions and ephemeral port pressure.
//!
//! Pure logic: fed decoded kernel events and sock_diag snapshot rounds in
//! the order they happened, it only reads their timestamps, never a clock,
//! so a recorded stream replays to the same table (`twmon replay`).
//!
//! Two ways of learning about timewait sockets meet here:
//! - probes (tcp_time_wait, the timewait death hooks) report births and
//!   deaths exactly;
//! - without them (tracepoint-only kernels) a birth is derived from a
//!   FIN_WAIT2 or CLOSING -> CLOSE transition, taken as tentative until a
//!   snapshot shows the socket, and a death from its timer running out
//!   (`expiry`) or the socket leaving the snapshots.
//!
//! Snapshots reconcile both: entries the kernel no longer has are closed,
//! sockets the table missed are adopted, and the difference is the drift.

mod aggregates;
mod binds;
mod bounded;
mod cgroups;
mod collisions;
mod entry;
mod exhaustion;
mod expiry;
pub mod histogram;
mod lifecycle;
mod pressure;
mod query;
mod reconcile;
pub mod state;
pub mod stats;
mod store;

use std::collections::BTreeMap;

use aggregates::Breakdowns;
pub use aggregates::{Summary, comm_label};
pub use binds::{HeldBy, Refusals};
use bounded::BoundedMap;
pub use cgroups::{Failure, OTHER as OTHER_CGROUP};
use collisions::Collisions;
pub use collisions::{Collision, CollisionKind};
use entry::{CLOSERS_CAPACITY, Ended};
pub use entry::{Config, Drift, Entry, Key, Origin, TIMEWAIT_LEN_NS};
use histogram::Histogram;
pub use pressure::Pressure;
pub use query::{Filter, Order};
pub use state::State;
use store::Store;

use crate::model::{
    event::{DeathCause, KernelEvent, Process},
    snapshot::Knobs,
    tcp::{Family, TcpState},
};

#[derive(Debug)]
pub struct Table {
    config: Config,
    entries: Store,
    /// Who closed sockets whose birth report was lost, for the snapshot
    /// that adopts them.
    closers: BoundedMap<Key, Process>,
    /// Who closed the sockets the latest rounds skipped, for re-adoption.
    unlisted: reconcile::Unlisted,
    /// What the latest round adopted without a closer, and when each was
    /// born: the kernel's table of closes in progress may still know.
    orphans: Vec<(Key, u64)>,
    /// Closers found for orphans that way.
    closers_recovered: u64,
    /// Entries cut short (RST, or a kill no hook explained) within the
    /// guard window, for reincarnations.
    early_ended: BoundedMap<Key, Ended>,
    /// When probes reported entries dead, since the latest dump began: a
    /// dump that began before a death may still list the socket, and must
    /// not bring it back.
    recent_deaths: BoundedMap<Key, u64>,
    /// A snapshot has been taken: adoptions from now on are drift.
    seeded: bool,
    /// The mark of the latest snapshot round (it alternates).
    mark: bool,
    breakdowns: Breakdowns,
    collisions: Collisions,
    started: BTreeMap<Origin, u64>,
    derived_births: BTreeMap<(Family, TcpState), u64>,
    exited: BTreeMap<(DeathCause, bool), u64>,
    durations: BTreeMap<DeathCause, Histogram>,
    evictions: u64,
    discarded: u64,
    unmatched_deaths: u64,
    drift: Drift,
    knobs: BTreeMap<u32, Knobs>,
    pressure: BTreeMap<u32, Vec<Pressure>>,
    expiry: expiry::Expiry,
    bind_refusals: binds::Refusals,
    failures_by_cgroup: cgroups::FailuresByCgroup,
    trends: exhaustion::Trends,
}

impl Table {
    pub fn new(config: Config) -> Table {
        Table {
            entries: Store::default(),
            closers: BoundedMap::new(CLOSERS_CAPACITY),
            unlisted: reconcile::Unlisted::default(),
            orphans: Vec::new(),
            closers_recovered: 0,
            early_ended: BoundedMap::new(config.capacity),
            recent_deaths: BoundedMap::new(config.capacity),
            seeded: false,
            mark: false,
            breakdowns: Breakdowns::default(),
            collisions: Collisions::default(),
            started: BTreeMap::new(),
            derived_births: BTreeMap::new(),
            exited: BTreeMap::new(),
            durations: BTreeMap::new(),
            evictions: 0,
            discarded: 0,
            unmatched_deaths: 0,
            drift: Drift::default(),
            knobs: BTreeMap::new(),
            pressure: BTreeMap::new(),
            expiry: expiry::Expiry::new(config.hz),
            bind_refusals: binds::Refusals::new(),
            failures_by_cgroup: cgroups::FailuresByCgroup::default(),
            trends: exhaustion::Trends::default(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds one kernel event.
    pub fn apply(&mut self, event: &KernelEvent) {
        self.expire_due(event.ts_ns());
        match event {
            KernelEvent::StateChange(sc) => self.on_state_change(sc),
            KernelEvent::Closed(c) => self.on_closed(c),
            KernelEvent::TimewaitBirth(tw) => self.on_birth(tw),
            KernelEvent::TimewaitDeath(d) => self.on_death(d),
            KernelEvent::TimewaitSegment(seg) => self.on_segment(seg),
            KernelEvent::ConnectEaddrnotavail(c) => self.on_connect_failure(c),
            KernelEvent::BindEaddrinuse(b) => self.on_bind_failure(b),
            // Counted by Stats; the segment it answered is the segment
            // hook's to count.
            KernelEvent::TimewaitOverflow(_) | KernelEvent::TimewaitResetSent(_) => {}
        }
    }

    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

#[cfg(test)]
mod tests;
