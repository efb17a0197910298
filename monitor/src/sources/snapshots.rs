//! The schedule of sock_diag snapshot rounds over the watched namespaces,
//! and when a watched namespace is gone for good (see [`super::vanished`]).

use std::time::{Duration, Instant};

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
}

impl Snapshots {
    /// Rounds over `scope` from a daemon in namespace `own_inode`; a
    /// namespace missing for `grace` is given up on.
    pub fn new(scope: Scope, own_inode: u32, grace: Duration) -> Snapshots {
        Snapshots {
            scope,
            own_inode,
            vanished: Vanished::new(grace),
        }
    }
}

impl Snapshots {
    /// The next round; `None` while the watched namespace is missing but
    /// still within its grace (nothing to dump, nothing to conclude).
    pub async fn round(&mut self) -> Result<Option<SnapshotRound>> {
        let scope = self.scope.clone();
        let own_inode = self.own_inode;
        let (mut round, reachable) = tokio::task::spawn_blocking(move || {
            let (namespaces, strict) = match scope {
                Scope::One(ns) if reachable(&ns) => (vec![ns], true),
                Scope::One(_) => (Vec::new(), true),
                Scope::All => (netns::discover(), false),
            };
            let reachable: Vec<u32> = namespaces.iter().map(|ns| ns.inode).collect();
            diag::snapshot_round(&namespaces, own_inode, strict, false).map(|r| (r, reachable))
        })
        .await
        .context("sock_diag worker panicked")??;
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
        Ok(Some(round))
    }
}

/// Whether the watched namespace can still be reached: its file is there,
/// or a process or bind mount holds it. Once not, it is being torn down,
/// and its timewait sockets with it. twmon cannot hold it open to watch
/// it, since that would keep it alive.
fn reachable(ns: &Netns) -> bool {
    ns.path.exists() || netns::discover().iter().any(|n| n.inode == ns.inode)
}

/// Sends a round every `every` (the first one after `every`: the caller
/// took the initial one) until the receiver is gone. A failed dump changes
/// nothing and is retried at the next tick.
pub async fn schedule(
    mut snapshots: Snapshots,
    every: Duration,
    rounds: mpsc::Sender<SnapshotRound>,
) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the initial dump already ran
    loop {
        tick.tick().await;
        match snapshots.round().await {
            Ok(None) => {}
            Ok(Some(round)) => {
                if rounds.send(round).await.is_err() {
                    return Ok(());
                }
            }
            // A failed dump changes nothing; it is retried on the next
            // tick rather than taking the daemon down.
            Err(err) => log::warn!("TIME_WAIT snapshot failed: {err:#}"),
        }
    }
}
