//! Reconciling the table with sock_diag snapshot rounds: entries the kernel
//! no longer has are closed (or, when tentative, discarded), sockets the
//! table missed are adopted, and the difference is the drift. Where no death
//! probe runs, this is how deaths are seen at all.

use std::collections::HashMap;

use super::{
    Table,
    entry::{Drift, EXPIRY_SLACK_NS, Entry, Key, Origin, TIMEWAIT_LEN_NS, key},
    pressure::pressure_of,
};
use crate::model::{
    event::DeathCause,
    snapshot::{DiagSocket, SnapshotRound},
    tcp::TcpState,
};

/// What one round lists.
struct Listing {
    /// Timewait sockets, with when their namespace's dump began.
    listed: HashMap<Key, (DiagSocket, u64)>,
    /// Namespaces dumped, and when each dump began.
    taken: HashMap<u32, u64>,
    /// When the latest dump began.
    newest: u64,
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
        let listing = self.take_listing(round);
        let mut drift = Drift::default();
        self.close_missing(round, &listing, &mut drift);
        self.update_and_adopt(listing, &mut drift);
        self.seeded = true;
        self.drift = drift;
    }

    /// Keeps the round's knobs and port pressure and indexes its sockets.
    fn take_listing(&mut self, round: &SnapshotRound) -> Listing {
        let mut listed = HashMap::new();
        let mut taken = HashMap::new();
        for snap in &round.namespaces {
            taken.insert(snap.netns, snap.taken_ns);
            self.knobs.insert(snap.netns, snap.knobs);
            self.pressure.insert(snap.netns, pressure_of(snap));
            for sock in snap.sockets.iter().filter(|s| s.timewait) {
                let key = key(Some(snap.netns), sock.family, sock.tuple);
                listed.insert(key, (*sock, snap.taken_ns));
            }
        }
        if let Some(existing) = &round.existing {
            self.knobs.retain(|ns, _| existing.contains(ns));
            self.pressure.retain(|ns, _| existing.contains(ns));
        }
        let newest = round.namespaces.iter().map(|s| s.taken_ns).max();
        Listing {
            listed,
            taken,
            newest: newest.unwrap_or(0),
        }
    }

    /// Ends (or discards) the entries the round shows gone.
    fn close_missing(&mut self, round: &SnapshotRound, listing: &Listing, drift: &mut Drift) {
        let mut fates = Vec::new();
        for (key, entry) in self.entries.iter() {
            let Some(&taken_ns) = listing.taken.get(&key.netns) else {
                let vanished = round
                    .existing
                    .as_ref()
                    .is_some_and(|all| key.netns != 0 && !all.contains(&key.netns));
                if vanished {
                    fates.push((*key, Fate::End(listing.newest, DeathCause::Purged)));
                }
                continue;
            };
            if listing.listed.contains_key(key) || entry.born_ns >= taken_ns {
                continue;
            }
            fates.push((*key, self.fate_of_missing(entry, taken_ns, drift)));
        }
        for (key, fate) in fates {
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

    /// Brings listed entries up to date with the kernel and adopts the
    /// sockets the table did not have.
    fn update_and_adopt(&mut self, listing: Listing, drift: &mut Drift) {
        let mut moves = Vec::new();
        let mut confirmed = Vec::new();
        for (key, (sock, taken_ns)) in listing.listed {
            let expires_ns = taken_ns + u64::from(sock.expires_ms) * 1_000_000;
            if let Some(entry) = self.entries.get_mut(&key) {
                if entry.born_ns < taken_ns {
                    entry.expires_ns = expires_ns;
                }
                if entry.substate != sock.state {
                    moves.push((key, entry.substate, sock.state));
                    entry.substate = sock.state;
                }
                if !entry.confirmed {
                    entry.confirmed = true;
                    confirmed.push((entry.origin, key.family, entry.substate));
                }
                continue;
            }
            if self.ended.get(&key).is_some_and(|e| e.ts_ns >= taken_ns) {
                // Died after the dump began: the dump is the stale one.
                continue;
            }
            if self.seeded {
                drift.adopted += 1;
            }
            self.adopt(key, sock.state, taken_ns, expires_ns);
        }
        for (origin, family, substate) in confirmed {
            self.start(origin, family, substate);
        }
        for (key, old, new) in moves {
            self.breakdowns.move_substate(&key, old, new);
        }
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
            closer: self.closers.remove(&key),
        };
        self.insert(key, entry);
    }
}
