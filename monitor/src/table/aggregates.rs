//! What the table adds up: populations and top-K breakdowns kept current
//! as entries come and go, and the [`Summary`] a scrape reads.

use std::{collections::BTreeMap, hash::Hash, net::IpAddr};

use foldhash::HashMap;

use super::{
    Table,
    collisions::CollisionKind,
    entry::{Drift, Entry, Key, Origin},
    histogram::Histogram,
    pressure::Pressure,
};
use crate::model::{
    event::{Comm, DeathCause},
    snapshot::Knobs,
    tcp::{Family, TcpState},
};

/// Entries counted by what the exposition breaks them down by.
#[derive(Debug, Default)]
pub(super) struct Breakdowns {
    pub population: HashMap<(u32, Family, TcpState), u64>,
    pub by_remote: HashMap<(u32, IpAddr, u16), u64>,
    pub by_local_port: HashMap<(u32, u16), u64>,
    pub by_process: HashMap<(u32, Comm), u64>,
    /// By the closer's cgroup id (0 when the close was not seen).
    pub by_cgroup: HashMap<(u32, u64), u64>,
}

impl Breakdowns {
    /// Adds (`delta` 1) or removes (-1) an entry.
    pub fn count(&mut self, key: &Key, entry: &Entry, delta: i64) {
        let ns = key.netns;
        bump(
            &mut self.population,
            (ns, key.family, entry.substate),
            delta,
        );
        bump(
            &mut self.by_remote,
            (ns, key.tuple.daddr, key.tuple.dport),
            delta,
        );
        bump(&mut self.by_local_port, (ns, key.tuple.sport), delta);
        let comm = entry.closer.map(|p| p.comm).unwrap_or_default();
        bump(&mut self.by_process, (ns, comm), delta);
        bump(&mut self.by_cgroup, (ns, entry.cgroup()), delta);
    }

    /// An entry of `key` moved from substate `old` to `new`.
    pub fn move_substate(&mut self, key: &Key, old: TcpState, new: TcpState) {
        bump(&mut self.population, (key.netns, key.family, old), -1);
        bump(&mut self.population, (key.netns, key.family, new), 1);
    }
}

/// Aggregates of the table at one instant, for the exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub entries: u64,
    /// (netns or 0, family, substate) -> sockets.
    pub population: BTreeMap<(u32, Family, TcpState), u64>,
    pub by_remote: Vec<((u32, IpAddr, u16), u64)>,
    pub by_local_port: Vec<((u32, u16), u64)>,
    pub by_process: Vec<((u32, String), u64)>,
    /// Timewait sockets by (netns, the closer's cgroup id, 0 for unknown),
    /// the top K; the namespace is kept whatever `per_netns` says, to name
    /// unknown closers by the namespace's owner.
    pub by_cgroup: Vec<((u32, u64), u64)>,
    /// connect()/bind() failures by (netns, the caller's cgroup id, what
    /// failed), the top 3K.
    pub failures_by_cgroup: Vec<((u32, u64, super::Failure), u64)>,
    pub started: BTreeMap<Origin, u64>,
    /// Confirmed transition-derived births by family and substate.
    pub derived_births: BTreeMap<(Family, TcpState), u64>,
    /// (cause, derived) -> entries ended.
    pub exited: BTreeMap<(DeathCause, bool), u64>,
    pub durations: BTreeMap<DeathCause, Histogram>,
    pub collisions: BTreeMap<CollisionKind, u64>,
    /// Refused binds, by what held the port.
    pub bind_refusals: super::Refusals,
    pub evictions: u64,
    /// Orphans whose closer was found in the kernel's table of closes in
    /// progress.
    pub closers_recovered: u64,
    /// Tentative (transition-derived) entries no snapshot confirmed.
    pub discarded: u64,
    pub unmatched_deaths: u64,
    pub drift: Drift,
    /// Knobs per namespace. Unless per netns, one entry (namespace 0)
    /// holding the lowest inode's: the initial namespace, the host's, when
    /// it is watched (it is created first).
    pub knobs: BTreeMap<u32, Knobs>,
    /// Top destinations by ephemeral port pressure.
    pub pressure: Vec<Pressure>,
    /// Destinations whose ports are being used up, with the seconds left
    /// at the current pace: the top K soonest.
    pub exhaustion: Vec<(Pressure, f64)>,
}

/// The label for a closing process: its comm, or "unknown" when the close
/// was not seen (adopted from a snapshot, or started before twmon).
pub fn comm_label(comm: Comm) -> String {
    if comm == Comm::default() {
        "unknown".to_string()
    } else {
        comm.as_string()
    }
}

fn bump<K: Hash + Eq>(map: &mut HashMap<K, u64>, k: K, delta: i64) {
    if delta >= 0 {
        *map.entry(k).or_default() += delta as u64;
    } else if let Some(n) = map.get_mut(&k) {
        *n = n.saturating_sub(delta.unsigned_abs());
        if *n == 0 {
            map.remove(&k);
        }
    }
}

/// The `k` largest counts after mapping keys with `label` (merging keys
/// that map to the same label), largest first, ties by label.
fn top<K, L: Ord + Clone + Hash>(
    counts: &HashMap<K, u64>,
    label: impl Fn(&K) -> L,
    k: usize,
) -> Vec<(L, u64)> {
    let mut merged: HashMap<L, u64> = HashMap::default();
    for (key, &n) in counts {
        *merged.entry(label(key)).or_default() += n;
    }
    let mut all: Vec<(L, u64)> = merged.into_iter().collect();
    let order = |a: &(L, u64), b: &(L, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if all.len() > k && k > 0 {
        all.select_nth_unstable_by(k - 1, order);
    }
    all.truncate(k);
    all.sort_unstable_by(order);
    all
}

impl Table {
    /// Counters and gauges for a scrape. `top_k` bounds the per-remote,
    /// per-port, per-process and per-destination lists; `per_netns` keeps
    /// namespaces apart instead of summing them.
    pub fn summary(&self, top_k: usize, per_netns: bool) -> Summary {
        let ns = |n: u32| if per_netns { n } else { 0 };
        let mut population: BTreeMap<(u32, Family, TcpState), u64> = BTreeMap::new();
        for (&(n, family, substate), &count) in &self.breakdowns.population {
            *population.entry((ns(n), family, substate)).or_default() += count;
        }
        let mut pressure: Vec<Pressure> = self.pressure.values().flatten().copied().collect();
        // Estimated before namespaces are merged away: the trends are kept
        // per namespace.
        let mut exhaustion: Vec<(Pressure, f64)> = pressure
            .iter()
            .filter_map(|p| Some((*p, self.trends.seconds_left(p)?)))
            .collect();
        exhaustion.sort_by(|a, b| a.1.total_cmp(&b.1));
        exhaustion.truncate(top_k);
        if !per_netns {
            pressure.iter_mut().for_each(|p| p.netns = 0);
            exhaustion.iter_mut().for_each(|(p, _)| p.netns = 0);
        }
        pressure.sort_by(|a, b| {
            b.ratio()
                .total_cmp(&a.ratio())
                .then(b.in_use.cmp(&a.in_use))
                .then((a.netns, a.local, a.remote, a.remote_port).cmp(&(
                    b.netns,
                    b.local,
                    b.remote,
                    b.remote_port,
                )))
        });
        pressure.truncate(top_k);
        let mut knobs = BTreeMap::new();
        for (&n, k) in &self.knobs {
            knobs.entry(ns(n)).or_insert(*k);
        }
        Summary {
            entries: self.entries.len() as u64,
            population,
            by_remote: top(
                &self.breakdowns.by_remote,
                |&(n, a, p)| (ns(n), a, p),
                top_k,
            ),
            by_local_port: top(&self.breakdowns.by_local_port, |&(n, p)| (ns(n), p), top_k),
            by_process: top(
                &self.breakdowns.by_process,
                |&(n, comm)| (ns(n), comm_label(comm)),
                top_k,
            ),
            by_cgroup: top(&self.breakdowns.by_cgroup, |&k| k, top_k),
            failures_by_cgroup: top(self.failures_by_cgroup.all(), |&k| k, 3 * top_k),
            started: self.started.clone(),
            derived_births: self.derived_births.clone(),
            exited: self.exited.clone(),
            durations: self.durations.clone(),
            collisions: self.collisions.totals.clone(),
            bind_refusals: self.bind_refusals.clone(),
            evictions: self.evictions,
            closers_recovered: self.closers_recovered,
            discarded: self.discarded,
            unmatched_deaths: self.unmatched_deaths,
            drift: self.drift,
            knobs,
            pressure,
            exhaustion,
        }
    }
}
