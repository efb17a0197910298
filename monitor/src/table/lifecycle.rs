//! How entries live: born (by probe, derived from a transition, or
//! adopted by a snapshot), re-armed by the segments they absorb, and ended.

use super::{
    Table,
    collisions::{Collision, CollisionKind},
    entry::{Ended, Entry, Key, Origin, TIMEWAIT_LEN_NS, key},
};
use crate::model::{
    event::{
        Closed, Death, DeathCause, Process, Segment, SegmentKind, StateChange, Timewait, TwVerdict,
    },
    tcp::{Family, TcpState},
};

/// A timewait socket's birth, as one report of it tells it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Birth {
    pub key: Key,
    pub ts_ns: u64,
    pub origin: Origin,
    pub substate: TcpState,
    /// Until its timer is due; None: the full TIME_WAIT.
    pub timeout_ns: Option<u64>,
    /// The timewait socket's address, 0 where unknown.
    pub skaddr: u64,
    /// Who closed first, when the report says.
    pub closer: Option<Process>,
}

impl Birth {
    /// When its timer is due.
    fn expires_ns(&self) -> u64 {
        self.ts_ns + self.timeout_ns.unwrap_or(TIMEWAIT_LEN_NS)
    }
}

impl Table {
    /// A new connection: the only transitions the kernel sends (it counts
    /// the rest), for the collisions they may be.
    pub(super) fn on_state_change(&mut self, sc: &StateChange) {
        if matches!(sc.from, TcpState::SynSent | TcpState::SynRecv)
            && sc.to == TcpState::Established
        {
            let key = key(sc.netns, sc.family, sc.tuple);
            self.new_incarnation(key, sc.from, sc.ts_ns);
        }
    }

    /// An active close reached CLOSE and no birth hook reported its
    /// timewait socket. Without birth hooks this is the birth, tentative
    /// until a snapshot shows the socket (the same transition ends a close
    /// reset in FIN_WAIT2). With them, the hook's run was lost: who closed
    /// is kept for the snapshot that will adopt the socket; a later close
    /// of the four-tuple replaces it.
    pub(super) fn on_closed(&mut self, c: &Closed) {
        let key = key(c.netns, c.family, c.tuple);
        if self.config.derive_births && key.tuple.sport != 0 {
            self.birth(Birth {
                key,
                ts_ns: c.ts_ns,
                origin: Origin::Transition,
                substate: TcpState::TimeWait,
                timeout_ns: None,
                skaddr: 0,
                closer: c.closer,
            });
        } else if let Some(process) = c.closer {
            self.closers.insert(key, process);
        }
    }

    pub(super) fn on_birth(&mut self, tw: &Timewait) {
        let timeout_ns = if tw.substate == TcpState::TimeWait {
            // tcp_time_wait() ignores its timeout for TIME_WAIT.
            TIMEWAIT_LEN_NS
        } else {
            u64::from(tw.timeout_jiffies) * 1_000_000_000 / u64::from(self.config.hz.max(1))
        };
        self.birth(Birth {
            key: key(tw.netns, tw.family, tw.tuple),
            ts_ns: tw.ts_ns,
            origin: Origin::Probe,
            substate: tw.substate,
            timeout_ns: Some(timeout_ns),
            skaddr: tw.skaddr,
            closer: tw.closer,
        });
    }

    pub(super) fn on_death(&mut self, d: &Death) {
        let key = key(d.netns, d.family, d.tuple);
        let matches = self
            .entries
            .get(&key)
            .is_some_and(|e| e.skaddr == 0 || d.skaddr == 0 || e.skaddr == d.skaddr);
        if matches {
            self.end(key, d.ts_ns, d.cause, false);
        } else {
            // Already closed by a snapshot, evicted, a second report of one
            // death, or born before the table was seeded.
            self.unmatched_deaths += 1;
        }
    }

    pub(super) fn on_segment(&mut self, seg: &Segment) {
        let key = key(seg.netns, seg.family, seg.tuple);
        let fin = seg.flags & monitor_common::tcp::flags::FIN != 0;
        let rearmed = match seg.substate {
            // The peer's FIN turns an orphaned FIN_WAIT2 into TIME_WAIT for
            // the full length.
            Some(TcpState::FinWait2) => fin && seg.verdict == TwVerdict::Ack,
            // A retransmitted FIN is re-ACKed and the timer re-armed.
            _ => seg.kind == SegmentKind::FinRetransmit && seg.verdict == TwVerdict::Ack,
        };
        let mut old = None;
        let mut rearmed_at = None;
        self.entries.update(&key, |entry| {
            entry.segments = entry.segments.saturating_add(1);
            if rearmed {
                old = Some(entry.substate);
                entry.substate = TcpState::TimeWait;
                entry.expires_ns = seg.ts_ns + TIMEWAIT_LEN_NS;
                rearmed_at = Some(entry.expires_ns);
            }
        });
        if let Some(at) = rearmed_at {
            self.due_at(at);
        }
        if let Some(old) = old.filter(|&s| s != TcpState::TimeWait) {
            self.breakdowns.move_substate(&key, old, TcpState::TimeWait);
        }
    }

    pub(super) fn birth(&mut self, b: Birth) {
        if let Some(existing) = self.entries.get(&b.key) {
            let same_socket = existing.skaddr == 0 || b.skaddr == 0 || existing.skaddr == b.skaddr;
            if same_socket {
                // Something else got there first. A probe knows better than
                // a snapshot or a transition; a transition explains a socket
                // a snapshot adopted (its events can reach the ring after
                // the dump: a producer preempted between reserving and
                // committing holds back every record behind it).
                let explains = b.origin == Origin::Probe
                    || (b.origin == Origin::Transition && existing.origin == Origin::Snapshot);
                if explains {
                    self.explain(existing, &b);
                }
                return;
            }
            // Another socket held this four-tuple and its death was never
            // reported (lost event).
            self.end(b.key, b.ts_ns, DeathCause::Unknown, true);
        }
        let entry = Entry {
            substate: b.substate,
            origin: b.origin,
            confirmed: b.origin != Origin::Transition,
            born_ns: b.ts_ns,
            expires_ns: b.expires_ns(),
            skaddr: b.skaddr,
            segments: 0,
            closer: b.closer.or_else(|| self.closers.remove(&b.key)),
        };
        self.insert(b.key, entry);
    }

    /// Re-attributes the entry at `key` to a better-informed birth report
    /// of the same socket, carrying the close seen before it.
    fn explain(&mut self, existing: Entry, b: &Birth) {
        let key = b.key;
        let mut entry = existing;
        entry.origin = b.origin;
        entry.born_ns = b.ts_ns;
        if b.skaddr != 0 {
            entry.skaddr = b.skaddr;
        }
        if b.origin == Origin::Probe {
            // Exact; a transition's substate and timeout are guesses and the
            // snapshot's are kept.
            entry.substate = b.substate;
            entry.expires_ns = b.expires_ns();
        }
        if entry.closer.is_none() {
            entry.closer = b.closer.or_else(|| self.closers.remove(&key));
        }
        entry.confirmed = true;
        if existing.confirmed
            && let Some(n) = self.started.get_mut(&existing.origin)
        {
            *n = n.saturating_sub(1);
        }
        self.start(b.origin, key.family, entry.substate);
        self.breakdowns.count(&key, &existing, -1);
        self.breakdowns.count(&key, &entry, 1);
        self.due_at(entry.expires_ns);
        self.entries.update(&key, |slot| *slot = entry);
    }

    pub(super) fn insert(&mut self, key: Key, entry: Entry) {
        if entry.confirmed {
            self.start(entry.origin, key.family, entry.substate);
        }
        self.breakdowns.count(&key, &entry, 1);
        self.early_ended.remove(&key);
        self.due_at(entry.expires_ns);
        // Marked as the latest round's lists were: the next round, whose
        // mark is the other, finds it unlisted unless its dump lists it.
        if let Some(old) = self.entries.insert(key, &entry, self.mark) {
            self.breakdowns.count(&key, &old, -1);
        }
        if self.entries.len() > self.config.capacity {
            self.evict();
        }
    }

    /// Makes room: drops the oldest entries, a hundredth of the capacity at
    /// a time, so a table kept full scans itself once per hundred inserts.
    fn evict(&mut self) {
        let excess = self.entries.len() - self.config.capacity;
        let batch = excess.max(self.config.capacity / 100).max(1);
        for key in self.entries.oldest(batch) {
            if let Some(old) = self.entries.remove(&key) {
                self.breakdowns.count(&key, &old, -1);
                self.evictions += 1;
            }
        }
    }

    /// Ends the entry at `key` (which must exist).
    pub(super) fn end(&mut self, key: Key, ts_ns: u64, cause: DeathCause, derived: bool) {
        let Some(mut entry) = self.entries.remove(&key) else {
            return;
        };
        self.breakdowns.count(&key, &entry, -1);
        if !entry.confirmed {
            // Anything that ends a tentative entry other than a snapshot
            // missing it shows it was real.
            entry.confirmed = true;
            self.start(entry.origin, key.family, entry.substate);
        }
        let age = ts_ns.saturating_sub(entry.born_ns);
        *self.exited.entry((cause, derived)).or_default() += 1;
        self.durations
            .entry(cause)
            .or_default()
            .observe(age as f64 / 1e9);
        let kind = match cause {
            DeathCause::ReusedByConnect => Some(CollisionKind::ConnectReuse),
            DeathCause::ReusedBySyn => Some(CollisionKind::SynInTimewait),
            _ => None,
        };
        if let Some(kind) = kind {
            self.collide(Collision::on(&key, ts_ns, kind, age, entry.closer, derived));
        }
        if matches!(cause, DeathCause::KilledByRst | DeathCause::Unknown) {
            let ended = Ended {
                ts_ns,
                closer: entry.closer,
            };
            self.early_ended.insert(key, ended);
        }
        let cutoff = ts_ns.saturating_sub(self.config.guard_ns);
        while self
            .early_ended
            .oldest()
            .is_some_and(|(_, e)| e.ts_ns < cutoff)
        {
            self.early_ended.pop_oldest();
        }
        if !derived {
            self.recent_deaths.insert(key, ts_ns);
        }
    }

    /// An entry became real: born by probe, adopted, or a derived birth
    /// confirmed.
    pub(super) fn start(&mut self, origin: Origin, family: Family, substate: TcpState) {
        *self.started.entry(origin).or_default() += 1;
        if origin == Origin::Transition {
            *self.derived_births.entry((family, substate)).or_default() += 1;
        }
    }
}
