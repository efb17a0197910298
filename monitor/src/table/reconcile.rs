//! Reconciling the table with sock_diag snapshot rounds: entries the kernel
//! no longer has are closed (or, when tentative, discarded), sockets the
//! table missed are adopted, and the difference is the drift. Where no death
//! probe runs, this is how deaths are seen at all.
//!
//! Mark and sweep: each listed socket marks its entry with the round's mark
//! (which alternates), then one pass over the table finds those a dumped
//! namespace no longer lists. Nothing the size of the round is built.

use foldhash::HashMap;

use super::{
    Table,
    entry::{Drift, EXPIRY_SLACK_NS, Entry, Key, Origin, TIMEWAIT_LEN_NS, key},
    pressure::pressure_of,
};
use crate::model::{
    event::{DeathCause, Process},
    snapshot::{DiagSocket, FoundCloser, SnapshotRound},
    tcp::TcpState,
};

/// Who closed the sockets a round did not list before their time, kept
/// one round more: a dump taken under churn can skip a socket (sock_diag
/// resumes by position within a hash bucket) that the next one lists and
/// adopts, and only the ended entry knew its closer. Two rounds' worth at
/// most, so what no later dump lists (a socket an RST killed) is dropped.
#[derive(Debug, Default)]
pub(super) struct Unlisted {
    /// Parked by the latest round.
    latest: HashMap<Key, Process>,
    /// Parked by the round before: what this round's adoptions look in.
    previous: HashMap<Key, Process>,
}

impl Unlisted {
    fn begin_round(&mut self) {
        self.previous = std::mem::take(&mut self.latest);
    }

    fn park(&mut self, key: Key, closer: Option<Process>) {
        if let Some(process) = closer {
            self.latest.insert(key, process);
        }
    }

    fn take(&mut self, key: &Key) -> Option<Process> {
        self.previous.remove(key)
    }
}

/// What a round means for one entry it does not list.
enum Fate {
    /// A tentative entry no snapshot confirmed: never real.
    Discard,
    /// Ended at this time, for this cause (derived).
    End(u64, DeathCause),
}

impl Table {
    /// Reconciles the table with a round of sock_diag snapshots.
    pub fn reconcile(&mut self, round: &SnapshotRound) {
        self.mark = !self.mark;
        self.unlisted.begin_round();
        self.orphans.clear();
        let mut drift = Drift::default();
        let taken = self.take_context(round);
        for snap in &round.namespaces {
            for sock in snap.sockets.iter().filter(|s| s.timewait) {
                let key = key(Some(snap.netns), sock.family, sock.tuple);
                self.listed(key, sock, snap.taken_ns, &mut drift);
            }
        }
        self.close_missing(round, &taken, &mut drift);
        // Deaths older than this round's dumps cannot make a later round
        // stale.
        if let Some(oldest) = taken.values().min() {
            while self
                .recent_deaths
                .oldest()
                .is_some_and(|(_, ts)| ts < oldest)
            {
                self.recent_deaths.pop_oldest();
            }
        }
        self.seeded = true;
        self.drift = drift;
    }

    /// Keeps the round's knobs and port pressure; returns when each
    /// namespace's dump began.
    fn take_context(&mut self, round: &SnapshotRound) -> HashMap<u32, u64> {
        let mut taken = HashMap::default();
        for snap in &round.namespaces {
            taken.insert(snap.netns, snap.taken_ns);
            self.knobs.insert(snap.netns, snap.knobs);
            let pressure = pressure_of(snap);
            self.trends.observe(snap.netns, snap.taken_ns, &pressure);
            self.pressure.insert(snap.netns, pressure);
        }
        if let Some(existing) = &round.existing {
            self.knobs.retain(|ns, _| existing.contains(ns));
            self.pressure.retain(|ns, _| existing.contains(ns));
            self.trends.keep_namespaces(existing);
        }
        taken
    }

    /// A timewait socket a dump taken at `taken_ns` lists: its entry is
    /// brought up to date with the kernel, or the socket is adopted.
    fn listed(&mut self, key: Key, sock: &DiagSocket, taken_ns: u64, drift: &mut Drift) {
        let expires_ns = taken_ns + u64::from(sock.expires_ms) * 1_000_000;
        let mut moved = None;
        let mut confirmed = None;
        let mut rescheduled = false;
        let known = self.entries.update_marked(&key, self.mark, |entry| {
            if entry.born_ns < taken_ns {
                entry.expires_ns = expires_ns;
                rescheduled = true;
            }
            if entry.substate != sock.state {
                moved = Some(entry.substate);
                entry.substate = sock.state;
            }
            if !entry.confirmed {
                entry.confirmed = true;
                confirmed = Some((entry.origin, entry.substate));
            }
        });
        if rescheduled {
            self.due_at(expires_ns);
        }
        if known {
            if let Some(old) = moved {
                self.breakdowns.move_substate(&key, old, sock.state);
            }
            if let Some((origin, substate)) = confirmed {
                self.start(origin, key.family, substate);
            }
            return;
        }
        if self
            .recent_deaths
            .get(&key)
            .is_some_and(|&ts| ts >= taken_ns)
        {
            // Died after the dump began: the dump is the stale one.
            return;
        }
        if self.config.derive_deaths && sock.expires_ms == 0 && self.seeded {
            // Its timer is overdue: ended here as expired already, or
            // about to die. Adopting it would count it twice.
            return;
        }
        if self.seeded {
            drift.adopted += 1;
        }
        // Inserted with this round's mark: listed.
        self.adopt(key, sock.state, taken_ns, expires_ns);
    }

    /// Ends (or discards) the entries the round shows gone.
    fn close_missing(
        &mut self,
        round: &SnapshotRound,
        taken: &HashMap<u32, u64>,
        drift: &mut Drift,
    ) {
        let newest = taken.values().copied().max().unwrap_or(0);
        let mut fates = Vec::new();
        for (key, entry, marked) in self.entries.iter(self.mark) {
            let Some(&taken_ns) = taken.get(&key.netns) else {
                let vanished = round
                    .existing
                    .as_ref()
                    .is_some_and(|all| key.netns != 0 && !all.contains(&key.netns));
                if vanished {
                    fates.push((key, Fate::End(newest, DeathCause::Purged), None));
                }
                continue;
            };
            if marked || entry.born_ns >= taken_ns {
                continue;
            }
            let fate = self.fate_of_missing(&entry, taken_ns, drift);
            fates.push((key, fate, entry.closer));
        }
        for (key, fate, closer) in fates {
            if !matches!(fate, Fate::End(_, DeathCause::Expired | DeathCause::Purged)) {
                self.unlisted.park(key, closer);
            }
            match fate {
                Fate::Discard => {
                    if let Some(entry) = self.entries.remove(&key) {
                        self.breakdowns.count(&key, &entry, -1);
                        self.discarded += 1;
                    }
                }
                Fate::End(ts, cause) => self.end(key, ts, cause, true),
            }
        }
    }

    /// An entry a dump taken at `taken_ns` no longer lists.
    fn fate_of_missing(&self, entry: &Entry, taken_ns: u64, drift: &mut Drift) -> Fate {
        if !entry.confirmed {
            return Fate::Discard;
        }
        if !self.config.derive_deaths {
            // A death probe should have reported it.
            drift.closed += 1;
            return Fate::End(taken_ns, DeathCause::Unknown);
        }
        let cause = if taken_ns + EXPIRY_SLACK_NS >= entry.expires_ns {
            DeathCause::Expired
        } else {
            DeathCause::Unknown
        };
        // The death happened between the last look and this one; the due
        // time is the best estimate of when.
        Fate::End(entry.expires_ns.min(taken_ns).max(entry.born_ns), cause)
    }

    /// A timewait socket the table learns of from a snapshot alone.
    fn adopt(&mut self, key: Key, substate: TcpState, taken_ns: u64, expires_ns: u64) {
        let lifetime = match substate {
            TcpState::TimeWait => TIMEWAIT_LEN_NS,
            _ => self
                .knobs
                .get(&key.netns)
                .and_then(|k| k.fin_timeout_s)
                .map_or(TIMEWAIT_LEN_NS, |s| s * 1_000_000_000),
        };
        let entry = Entry {
            substate,
            origin: Origin::Snapshot,
            confirmed: true,
            born_ns: expires_ns.saturating_sub(lifetime).min(taken_ns),
            expires_ns,
            skaddr: 0,
            segments: 0,
            closer: self
                .closers
                .remove(&key)
                .or_else(|| self.unlisted.take(&key)),
        };
        if entry.closer.is_none() {
            self.orphans.push((key, entry.born_ns));
        }
        self.insert(key, entry);
    }

    /// The timewait sockets the latest round adopted without knowing who
    /// closed them, with when each was born.
    pub fn orphans(&self) -> &[(Key, u64)] {
        &self.orphans
    }

    /// Names who closed an orphan: found where its close began (the
    /// kernel's table of closes in progress) after the record of its end
    /// was lost.
    pub fn attribute(&mut self, found: &FoundCloser) {
        let key = &Key {
            netns: found.netns,
            family: found.family,
            tuple: found.tuple,
        };
        let closer = found.closer;
        let Some(existing) = self.entries.get(key) else {
            return;
        };
        if existing.closer.is_some() {
            return;
        }
        let entry = Entry {
            closer: Some(closer),
            ..existing
        };
        self.breakdowns.count(key, &existing, -1);
        self.breakdowns.count(key, &entry, 1);
        self.entries.update(key, |slot| *slot = entry);
        self.closers_recovered += 1;
    }
}
