//! What twmon knows: the event counters and the four-tuple table, fed the
//! same way by the live daemon and by `twmon replay`, so a recording
//! reproduces what the daemon showed.

use super::{Config, Table, stats::Stats};
use crate::{
    model::{
        hooks::KernelCounts,
        snapshot::{FoundCloser, SnapshotPacing, SnapshotRound},
    },
    sources::decode::decode,
};

#[derive(Debug)]
pub struct State {
    pub stats: Stats,
    pub table: Table,
    /// Timestamp of the newest thing fed: "now" for a replayed table.
    pub last_ns: u64,
    /// What the kernel counted, as a recording last said (a live daemon
    /// reads the kernel instead).
    pub recorded_counts: Option<KernelCounts>,
    /// The snapshot schedule so far (zero for a replayed table).
    pub pacing: SnapshotPacing,
    warned: bool,
}

impl State {
    pub fn new(config: Config) -> State {
        State {
            stats: Stats::default(),
            table: Table::new(config),
            last_ns: 0,
            recorded_counts: None,
            pacing: SnapshotPacing::default(),
            warned: false,
        }
    }

    /// One ring-buffer record.
    pub fn ingest(&mut self, raw: &[u8]) {
        match decode(raw) {
            Ok(event) => {
                self.stats.record(&event);
                self.table.apply(&event);
                self.last_ns = self.last_ns.max(event.ts_ns());
            }
            Err(err) => {
                self.stats.record_malformed();
                if !self.warned {
                    log::warn!(
                        "malformed event from the kernel (further ones are only counted): {err}"
                    );
                    self.warned = true;
                }
            }
        }
    }

    /// Lets the table act on time passing with nothing to report (see
    /// `Table::expire_due`); `now_ns` on the clock of event timestamps.
    pub fn advance(&mut self, now_ns: u64) {
        self.table.expire_due(now_ns);
    }

    pub fn reconcile(&mut self, round: &SnapshotRound) {
        self.table.reconcile(round);
        let newest = round.namespaces.iter().map(|s| s.taken_ns).max();
        self.last_ns = self.last_ns.max(newest.unwrap_or(0));
    }

    /// Closers found for what the latest round adopted without one.
    pub fn closers_found(&mut self, found: &[FoundCloser]) {
        for f in found {
            self.table.attribute(f);
        }
    }
}
