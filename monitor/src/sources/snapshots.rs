//! The schedule of sock_diag snapshot rounds over the watched namespaces,
//! and when a watched namespace is gone for good (see [`super::vanished`]).

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use super::{
    diag,
    netns::{self, Netns},
    vanished::Vanished,
};
use crate::model::snapshot::SnapshotRound;

/// Which namespaces sock_diag dumps cover.
#[derive(Clone, Debug)]
pub enum Scope {
    One(Netns),
    All,
}

/// Takes the sock_diag snapshot rounds, and says when a watched namespace
/// is gone for good (see `vanished`).
pub struct Snapshots {
    scope: Scope,
    own_inode: u32,
    vanished: Vanished,
    /// CPU time the last dump took.
    last_cost: Duration,
    /// CPU time (ns) applying the last round to the table took, written by
    /// whoever applies it (see [`Snapshots::apply_cost`]).
    apply_ns: Arc<AtomicU64>,
}

/// A round and what it cost.
pub struct Paced {
    pub round: SnapshotRound,
    /// CPU time its dump took.
    pub cpu: Duration,
    /// The wait before the next round.
    pub next: Duration,
    /// Namespaces it could not dump though they are still there (see
    /// `missed`): what it does not list may still exist there.
    pub missed: usize,
}

impl Snapshots {
    /// Rounds over `scope` from a daemon in namespace `own_inode`; a
    /// namespace missing for `grace` is given up on.
    pub fn new(scope: Scope, own_inode: u32, grace: Duration) -> Snapshots {
        Snapshots {
            scope,
            own_inode,
            vanished: Vanished::new(grace),
            last_cost: Duration::ZERO,
            apply_ns: Arc::default(),
        }
    }
}

impl Snapshots {
    /// CPU time the last round cost: its dump, and applying the one
    /// before it (the latest known).
    pub fn last_cost(&self) -> Duration {
        self.last_cost + Duration::from_nanos(self.apply_ns.load(Ordering::Relaxed))
    }

    /// Where to note the CPU time applying a round took, so the schedule
    /// counts it.
    pub fn apply_cost(&self) -> Arc<AtomicU64> {
        self.apply_ns.clone()
    }

    /// The next round; `None` while the watched namespace is missing but
    /// still within its grace (nothing to dump, nothing to conclude).
    pub async fn round(&mut self) -> Result<Option<Taken>> {
        let scope = self.scope.clone();
        let own_inode = self.own_inode;
        let (dumped, cost) = tokio::task::spawn_blocking(move || {
            let start = diag::thread_cpu();
            let dumped = dump(scope, own_inode);
            let here = diag::thread_cpu().saturating_sub(start);
            match dumped {
                Ok(d) => {
                    let cost = here + d.elsewhere;
                    (Ok(d), cost)
                }
                Err(err) => (Err(err), here),
            }
        })
        .await
        .context("sock_diag worker panicked")?;
        self.last_cost = cost;
        let Dumped {
            mut round,
            reachable,
            missed,
            ..
        } = dumped?;
        let look = self.vanished.look(&reachable, Instant::now());
        match &self.scope {
            Scope::One(ns) if reachable.is_empty() => {
                if look.existing.contains(&ns.inode) {
                    return Ok(None);
                }
                if !look.gone.is_empty() {
                    log::warn!(
                        "the watched namespace {} is gone; its timewait sockets still in the \
                         table are taken as purged",
                        ns.path.display()
                    );
                }
                round.existing = Some(Vec::new());
            }
            Scope::One(_) => {}
            Scope::All => {
                for ns in &look.gone {
                    log::info!("network namespace {ns} is gone");
                }
                round.existing = Some(look.existing);
            }
        }
        Ok(Some(Taken { round, missed }))
    }
}

/// A round as [`Snapshots::round`] took it.
pub struct Taken {
    pub round: SnapshotRound,
    /// Namespaces it could not dump though they are still there (see
    /// `missed`).
    pub missed: usize,
}

/// One dump of a scope.
struct Dumped {
    round: SnapshotRound,
    /// The CPU it took in threads that entered other namespaces.
    elsewhere: Duration,
    /// The namespaces it could reach.
    reachable: Vec<u32>,
    /// How many of those it could not dump though they are still there.
    missed: usize,
}

fn dump(scope: Scope, own_inode: u32) -> Result<Dumped> {
    let (namespaces, strict) = match scope {
        Scope::One(ns) => (locate(&ns).into_iter().collect(), true),
        Scope::All => (netns::discover(), false),
    };
    let reachable: Vec<u32> = namespaces.iter().map(|ns| ns.inode).collect();
    let (round, elsewhere) = diag::snapshot_round(&namespaces, own_inode, strict)?;
    let missed = missed(&reachable, &round, || {
        netns::discover().iter().map(|n| n.inode).collect()
    });
    Ok(Dumped {
        round,
        elsewhere,
        reachable,
        missed,
    })
}

/// How many `reachable` namespaces `round` did not dump though they are
/// still there (`still_there`, asked only when some were skipped): one
/// torn down during the round held nothing worth waiting for.
fn missed(
    reachable: &[u32],
    round: &SnapshotRound,
    still_there: impl FnOnce() -> Vec<u32>,
) -> usize {
    let dumped: HashSet<u32> = round.namespaces.iter().map(|ns| ns.netns).collect();
    let skipped: Vec<u32> = reachable
        .iter()
        .copied()
        .filter(|i| !dumped.contains(i))
        .collect();
    if skipped.is_empty() {
        return 0;
    }
    let alive: HashSet<u32> = still_there().into_iter().collect();
    skipped.iter().filter(|i| alive.contains(i)).count()
}

/// Where the watched namespace can still be entered: its file, while that
/// still names it, or else a process or bind mount that holds it (after
/// `ip netns del` with processes left inside). `None` once none is found:
/// it is taken as torn down, and its timewait sockets with it. twmon
/// cannot hold it open to watch it, since that would keep it alive.
/// (`run_in` checks the inode again as it opens the file.)
fn locate(ns: &Netns) -> Option<Netns> {
    if netns::inode_of(&ns.path).is_ok_and(|inode| inode == ns.inode) {
        return Some(ns.clone());
    }
    netns::discover().into_iter().find(|n| n.inode == ns.inode)
}

/// How often rounds run: every `every`, unless that would cost more than
/// `budget` of one core, in which case the gap grows with the cost.
///
/// Snapshots only confirm what the probes already told (and, in
/// tracepoint-only mode, end the timewait sockets whose timer ran out), so
/// at a million sockets, where a dump costs around a second of CPU, they
/// can come every minute or two: deaths are then reported late, never
/// missed, and the population gauges keep counting from the probes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub every: Duration,
    /// A fraction of one core, in (0, 1].
    pub budget: f64,
}

impl Pace {
    /// The wait before the next round, after one that cost `cost`.
    pub fn next(&self, cost: Duration) -> Duration {
        let spread = cost.as_secs_f64() / self.budget;
        self.every
            .max(Duration::try_from_secs_f64(spread).unwrap_or(Duration::MAX))
    }
}

/// Sends a round per `pace` (the first one after `pace.every`: the caller
/// took the initial one) until the receiver is gone. A failed dump changes
/// nothing and is retried at the next round.
pub async fn schedule(
    mut snapshots: Snapshots,
    pace: Pace,
    rounds: mpsc::Sender<Paced>,
) -> Result<()> {
    let mut stretched = false;
    loop {
        let wait = pace.next(snapshots.last_cost());
        if (wait > pace.every) != stretched {
            stretched = !stretched;
            log::info!(
                "snapshots now every {:.1}s (the last took {:.0} ms of CPU; budget {:.1}% of a core)",
                wait.as_secs_f64(),
                snapshots.last_cost().as_secs_f64() * 1e3,
                pace.budget * 100.0
            );
        }
        tokio::time::sleep(wait).await;
        match snapshots.round().await {
            Ok(None) => {}
            Ok(Some(Taken { round, missed })) => {
                let cpu = snapshots.last_cost();
                let next = pace.next(cpu);
                let paced = Paced {
                    round,
                    cpu,
                    next,
                    missed,
                };
                if rounds.send(paced).await.is_err() {
                    return Ok(());
                }
            }
            // A failed dump changes nothing; it is retried on the next
            // tick rather than taking the daemon down.
            Err(err) => log::warn!("TIME_WAIT snapshot failed: {err:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_stretches_only_past_the_budget() {
        let pace = Pace {
            every: Duration::from_secs(5),
            budget: 0.01,
        };
        assert_eq!(pace.next(Duration::ZERO), Duration::from_secs(5));
        assert_eq!(pace.next(Duration::from_millis(50)), Duration::from_secs(5));
        assert_eq!(
            pace.next(Duration::from_millis(800)),
            Duration::from_secs(80)
        );
        assert_eq!(pace.next(Duration::MAX), Duration::MAX);
    }

    fn dumped(inodes: &[u32]) -> SnapshotRound {
        SnapshotRound {
            namespaces: inodes
                .iter()
                .map(|&netns| crate::model::snapshot::NetnsSnapshot {
                    netns,
                    ..Default::default()
                })
                .collect(),
            existing: None,
        }
    }

    #[test]
    fn a_namespace_skipped_but_still_there_is_missed() {
        // 3 could not be dumped and is still there; 4 was torn down.
        let missed = missed(&[1, 2, 3, 4], &dumped(&[1, 2]), || vec![1, 2, 3]);
        assert_eq!(missed, 1);
    }

    #[test]
    fn a_full_round_looks_for_nothing_more() {
        let missed = missed(&[1, 2], &dumped(&[1, 2]), || {
            panic!("discovery is for rounds that skipped a namespace")
        });
        assert_eq!(missed, 0);
    }

    #[test]
    fn the_watched_namespace_is_found_by_inode_not_by_name() {
        let own = netns::current().expect("own namespace");
        // Its file gone (`ip netns del` with processes left inside): found
        // where something still holds it.
        let moved = Netns {
            inode: own.inode,
            path: "/nonexistent/twmon-netns".into(),
        };
        assert_eq!(locate(&moved).map(|n| n.inode), Some(own.inode));
        // A file that now names another namespace does not stand for it
        // (namespace inodes sit just below or above 0xF0000000: none is 1).
        let renamed = Netns {
            inode: 1,
            path: own.path.clone(),
        };
        assert_eq!(locate(&renamed), None);
        assert_eq!(locate(&own), Some(own));
    }
}
