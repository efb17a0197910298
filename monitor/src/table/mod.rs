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
//!   snapshot shows the socket, and a death from the socket leaving the
//!   snapshots.
//!
//! Snapshots reconcile both: entries the kernel no longer has are closed,
//! sockets the table missed are adopted, and the difference is the drift.

mod bounded;
pub mod histogram;
pub mod input;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
};

use bounded::BoundedMap;
use histogram::Histogram;
pub use input::{DiagSocket, Knobs, NetnsSnapshot, SnapshotRound};

use crate::event::{
    Comm, DeathCause, Family, FourTuple, KernelEvent, Process, SegmentKind, TcpState, TwVerdict,
};

/// TCP_TIMEWAIT_LEN: how long TIME_WAIT lasts, and how long the kernel
/// re-arms it for when a retransmitted FIN is re-ACKed.
pub const TIMEWAIT_LEN_NS: u64 = 60_000_000_000;

/// What identifies a connection on a host: its namespace and four-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Namespace inode; 0 when the kernel could not read it.
    pub netns: u32,
    pub family: Family,
    pub tuple: FourTuple,
}

/// How the table learnt of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// tcp_time_wait(): exact.
    Probe,
    /// A FIN_WAIT2/CLOSING -> CLOSE transition (tracepoint-only kernels).
    Transition,
    /// Found in a sock_diag snapshot without having been seen born.
    Snapshot,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Probe => "probe",
            Source::Transition => "transition",
            Source::Snapshot => "snapshot",
        }
    }
}

/// One timewait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// TIME_WAIT, or FIN_WAIT2 for an orphaned socket still waiting for
    /// the peer's FIN.
    pub substate: TcpState,
    pub source: Source,
    /// Seen by a probe or a snapshot. A transition-derived entry is
    /// tentative until then: the same transition also ends aborted
    /// connections and those refused a timewait socket.
    pub confirmed: bool,
    pub born_ns: u64,
    /// When its timer is due; moved when the kernel re-arms it (a
    /// retransmitted FIN re-ACKed, FIN_WAIT2 turning TIME_WAIT) and set
    /// exactly by every snapshot that lists it.
    pub expires_ns: u64,
    /// Kernel address of the timewait socket, 0 where unknown.
    pub skaddr: u64,
    /// Segments it absorbed or answered.
    pub segments: u32,
    /// Who closed first, when the close was seen.
    pub closer: Option<Process>,
}

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
}

impl CollisionKind {
    pub const ALL: [CollisionKind; 4] = [
        CollisionKind::SynInTimewait,
        CollisionKind::ConnectReuse,
        CollisionKind::Reincarnation,
        CollisionKind::Eaddrnotavail,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CollisionKind::SynInTimewait => "syn_in_timewait",
            CollisionKind::ConnectReuse => "connect_reuse",
            CollisionKind::Reincarnation => "reincarnation",
            CollisionKind::Eaddrnotavail => "eaddrnotavail",
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
}

impl Collision {
    /// A collision on the four-tuple `key`.
    fn on(
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
        }
    }
}

/// Ephemeral ports in use toward one destination from one local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    pub netns: u32,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Ports taken toward it: four-tuples in any state (TIME_WAIT
    /// included), plus ports of the range held by listeners, which no
    /// connect() may use.
    pub in_use: u64,
    /// Of which in TIME_WAIT (or its FIN_WAIT2 substate).
    pub in_timewait: u64,
    /// Size of ip_local_port_range in that namespace.
    pub range: u64,
}

impl Pressure {
    pub fn ratio(&self) -> f64 {
        if self.range == 0 {
            return 0.0;
        }
        self.in_use as f64 / self.range as f64
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Most entries tracked; the oldest are evicted (and counted) beyond.
    pub capacity: usize,
    /// How long after an early end a returning four-tuple still counts as
    /// a reincarnation.
    pub guard_ns: u64,
    /// No birth probe: derive births from transitions.
    pub derive_births: bool,
    /// No death probe: derive deaths from snapshots.
    pub derive_deaths: bool,
    /// The kernel's HZ, to turn tcp_time_wait()'s timeout into time.
    pub hz: u32,
    /// Collisions kept for /api/v1/collisions and `twmon top`.
    pub recent_collisions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1_000_000,
            guard_ns: TIMEWAIT_LEN_NS,
            derive_births: false,
            derive_deaths: false,
            hz: 250,
            recent_collisions: 1000,
        }
    }
}

/// A timewait socket that ended recently, for the guard window.
#[derive(Clone, Copy, Debug)]
struct Ended {
    ts_ns: u64,
    cause: DeathCause,
    closer: Option<Process>,
}

/// How much the last snapshot round disagreed with the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Timewait sockets the kernel had and the table did not.
    pub adopted: u64,
    /// Entries the kernel no longer had although no death was reported
    /// (with death probes attached; without, that is how deaths are seen).
    pub closed: u64,
}

/// Sockets whose close was seen but whose timewait birth not yet, kept to
/// carry the closing process over; far more than can be in flight.
const CLOSING_CAPACITY: usize = 1 << 16;
/// How late a snapshot may still find an entry past its due time before it
/// is taken as killed early: the timer wheel fires TIME_WAIT up to ~2 s
/// late at HZ=100.
const EXPIRY_SLACK_NS: u64 = 3_000_000_000;

#[derive(Debug)]
pub struct Table {
    config: Config,
    entries: BoundedMap<Key, Entry>,
    /// Full sockets in an active close: socket address -> key.
    closing: BoundedMap<u64, Key>,
    /// Who closed them.
    closers: BoundedMap<Key, Process>,
    ended: BoundedMap<Key, Ended>,
    seeded: bool,

    population: HashMap<(u32, Family, TcpState), u64>,
    by_remote: HashMap<(u32, IpAddr, u16), u64>,
    by_local_port: HashMap<(u32, u16), u64>,
    by_process: HashMap<(u32, Comm), u64>,

    started: BTreeMap<Source, u64>,
    derived_births: BTreeMap<(Family, TcpState), u64>,
    exited: BTreeMap<(DeathCause, bool), u64>,
    durations: BTreeMap<DeathCause, Histogram>,
    collisions: BTreeMap<CollisionKind, u64>,
    recent: VecDeque<Collision>,
    evictions: u64,
    discarded: u64,
    unmatched_deaths: u64,
    drift: Drift,
    knobs: BTreeMap<u32, Knobs>,
    pressure: BTreeMap<u32, Vec<Pressure>>,
}

impl Table {
    pub fn new(config: Config) -> Table {
        Table {
            entries: BoundedMap::new(config.capacity),
            closing: BoundedMap::new(CLOSING_CAPACITY),
            closers: BoundedMap::new(CLOSING_CAPACITY),
            ended: BoundedMap::new(config.capacity),
            seeded: false,
            population: HashMap::new(),
            by_remote: HashMap::new(),
            by_local_port: HashMap::new(),
            by_process: HashMap::new(),
            started: BTreeMap::new(),
            derived_births: BTreeMap::new(),
            exited: BTreeMap::new(),
            durations: BTreeMap::new(),
            collisions: BTreeMap::new(),
            recent: VecDeque::new(),
            evictions: 0,
            discarded: 0,
            unmatched_deaths: 0,
            drift: Drift::default(),
            knobs: BTreeMap::new(),
            pressure: BTreeMap::new(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds one kernel event.
    pub fn apply(&mut self, event: &KernelEvent) {
        match event {
            KernelEvent::StateChange(sc) => {
                let key = key(sc.netns, sc.family, sc.tuple);
                match (sc.from, sc.to) {
                    (TcpState::Established, TcpState::FinWait1) => {
                        self.closing.insert(sc.skaddr, key);
                    }
                    (TcpState::SynSent | TcpState::SynRecv, TcpState::Established) => {
                        self.new_incarnation(key, sc.from, sc.ts_ns);
                    }
                    (from, TcpState::Close) => {
                        // By the time a socket reports CLOSE, tcp_set_state()
                        // has released its port (inet_put_port zeroes
                        // inet_num), so the local port is 0 here: the
                        // four-tuple is the one its close reported.
                        let key = self.closing.remove(&sc.skaddr).unwrap_or(key);
                        if self.config.derive_births
                            && matches!(from, TcpState::FinWait2 | TcpState::Closing)
                            && key.tuple.sport != 0
                        {
                            self.birth(
                                key,
                                sc.ts_ns,
                                Source::Transition,
                                TcpState::TimeWait,
                                None,
                                0,
                            );
                        }
                        // After FIN_WAIT2 or CLOSING a timewait socket was
                        // born (or refused), and its birth took the closer.
                        // One still here means that birth's probe run was
                        // lost: keep it for the snapshot that will adopt the
                        // socket. A later close of the four-tuple replaces it.
                        if !matches!(from, TcpState::FinWait2 | TcpState::Closing) {
                            self.closers.remove(&key);
                        }
                    }
                    _ => {}
                }
            }
            KernelEvent::Closer(c) => {
                if let Some(key) = self.closing.get(&c.skaddr).copied() {
                    self.closers.insert(key, c.process);
                }
            }
            KernelEvent::TimewaitBirth(tw) => {
                let timeout = if tw.substate == TcpState::TimeWait {
                    // tcp_time_wait() ignores its timeout for TIME_WAIT.
                    TIMEWAIT_LEN_NS
                } else {
                    u64::from(tw.timeout_jiffies) * 1_000_000_000 / u64::from(self.config.hz.max(1))
                };
                let key = key(tw.netns, tw.family, tw.tuple);
                self.birth(
                    key,
                    tw.ts_ns,
                    Source::Probe,
                    tw.substate,
                    Some(timeout),
                    tw.skaddr,
                );
            }
            KernelEvent::TimewaitDeath(d) => {
                let key = key(d.netns, d.family, d.tuple);
                let matches = self
                    .entries
                    .get(&key)
                    .is_some_and(|e| e.skaddr == 0 || d.skaddr == 0 || e.skaddr == d.skaddr);
                if matches {
                    self.end(key, d.ts_ns, d.cause, false);
                } else {
                    // Already closed by a snapshot, evicted, a second report
                    // of one death, or born before the table was seeded.
                    self.unmatched_deaths += 1;
                }
            }
            KernelEvent::TimewaitSegment(seg) => {
                let key = key(seg.netns, seg.family, seg.tuple);
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.segments = entry.segments.saturating_add(1);
                    let fin = seg.flags & 0x01 != 0;
                    let rearmed = match seg.substate {
                        // The peer's FIN turns an orphaned FIN_WAIT2 into
                        // TIME_WAIT for the full length.
                        Some(TcpState::FinWait2) => fin && seg.verdict == TwVerdict::Ack,
                        // A retransmitted FIN is re-ACKed and the timer re-armed.
                        _ => {
                            seg.kind == SegmentKind::FinRetransmit && seg.verdict == TwVerdict::Ack
                        }
                    };
                    if rearmed {
                        let old = entry.substate;
                        entry.substate = TcpState::TimeWait;
                        entry.expires_ns = seg.ts_ns + TIMEWAIT_LEN_NS;
                        if old != TcpState::TimeWait {
                            bump(&mut self.population, (key.netns, key.family, old), -1);
                            bump(
                                &mut self.population,
                                (key.netns, key.family, TcpState::TimeWait),
                                1,
                            );
                        }
                    }
                }
            }
            KernelEvent::ConnectEaddrnotavail(c) => {
                let collision = Collision {
                    ts_ns: c.ts_ns,
                    kind: CollisionKind::Eaddrnotavail,
                    netns: c.netns.unwrap_or(0),
                    family: c.family,
                    local: None,
                    remote: (c.daddr, c.dport),
                    previous_age_ns: None,
                    previous_closer: None,
                    derived: false,
                };
                self.collide(collision);
            }
            // Counted by Stats; the segment it answered is the segment
            // hook's to count.
            KernelEvent::TimewaitOverflow(_) | KernelEvent::TimewaitResetSent(_) => {}
        }
    }

    fn birth(
        &mut self,
        key: Key,
        ts_ns: u64,
        source: Source,
        substate: TcpState,
        timeout_ns: Option<u64>,
        skaddr: u64,
    ) {
        if let Some(existing) = self.entries.get(&key).copied() {
            let same_socket = existing.skaddr == 0 || skaddr == 0 || existing.skaddr == skaddr;
            if same_socket {
                // Something else got there first. A probe knows better than
                // a snapshot or a transition; a transition explains a socket
                // a snapshot adopted (its events can reach the ring after
                // the dump: a producer preempted between reserving and
                // committing holds back every record behind it).
                let explains = source == Source::Probe
                    || (source == Source::Transition && existing.source == Source::Snapshot);
                if explains {
                    self.explain(key, existing, ts_ns, source, substate, timeout_ns, skaddr);
                }
                return;
            }
            // Another socket held this four-tuple and its death was never
            // reported (lost event).
            self.end(key, ts_ns, DeathCause::Unknown, true);
        }
        let entry = Entry {
            substate,
            source,
            confirmed: source != Source::Transition,
            born_ns: ts_ns,
            expires_ns: ts_ns + timeout_ns.unwrap_or(TIMEWAIT_LEN_NS),
            skaddr,
            segments: 0,
            closer: self.closers.remove(&key),
        };
        self.insert(key, entry);
    }

    /// Re-attributes the entry at `key` to a better-informed birth report
    /// of the same socket, carrying the close seen before it.
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &mut self,
        key: Key,
        existing: Entry,
        ts_ns: u64,
        source: Source,
        substate: TcpState,
        timeout_ns: Option<u64>,
        skaddr: u64,
    ) {
        let mut entry = existing;
        entry.source = source;
        entry.born_ns = ts_ns;
        if skaddr != 0 {
            entry.skaddr = skaddr;
        }
        if source == Source::Probe {
            // Exact; a transition's substate and timeout are guesses and the
            // snapshot's are kept.
            entry.substate = substate;
            entry.expires_ns = ts_ns + timeout_ns.unwrap_or(TIMEWAIT_LEN_NS);
        }
        if entry.closer.is_none() {
            entry.closer = self.closers.remove(&key);
        }
        entry.confirmed = true;
        if existing.confirmed
            && let Some(n) = self.started.get_mut(&existing.source)
        {
            *n = n.saturating_sub(1);
        }
        self.start(source, key.family, entry.substate);
        self.count(&key, &existing, -1);
        self.count(&key, &entry, 1);
        if let Some(slot) = self.entries.get_mut(&key) {
            *slot = entry;
        }
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        if entry.confirmed {
            self.start(entry.source, key.family, entry.substate);
        }
        self.count(&key, &entry, 1);
        self.ended.remove(&key);
        for (old_key, old) in self.entries.insert(key, entry) {
            self.count(&old_key, &old, -1);
            self.evictions += 1;
        }
    }

    /// Ends the entry at `key` (which must exist).
    fn end(&mut self, key: Key, ts_ns: u64, cause: DeathCause, derived: bool) {
        let Some(mut entry) = self.entries.remove(&key) else {
            return;
        };
        self.count(&key, &entry, -1);
        if !entry.confirmed {
            // Anything that ends a tentative entry other than a snapshot
            // missing it shows it was real.
            entry.confirmed = true;
            self.start(entry.source, key.family, entry.substate);
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
        self.ended.insert(
            key,
            Ended {
                ts_ns,
                cause,
                closer: entry.closer,
            },
        );
        self.forget_ended_before(ts_ns.saturating_sub(self.config.guard_ns));
    }

    fn forget_ended_before(&mut self, cutoff: u64) {
        while self.ended.oldest().is_some_and(|(_, e)| e.ts_ns < cutoff) {
            self.ended.pop_oldest();
        }
    }

    /// A connection reached ESTABLISHED on `key`.
    fn new_incarnation(&mut self, key: Key, from: TcpState, ts_ns: u64) {
        if self.entries.contains_key(&key) {
            // The previous incarnation was still here: without death probes
            // this is how the takeover is seen.
            let cause = if from == TcpState::SynSent {
                DeathCause::ReusedByConnect
            } else {
                DeathCause::ReusedBySyn
            };
            self.end(key, ts_ns, cause, true);
            self.ended.remove(&key);
            return;
        }
        let Some(ended) = self.ended.remove(&key) else {
            return;
        };
        let since = ts_ns.saturating_sub(ended.ts_ns);
        let early = matches!(ended.cause, DeathCause::KilledByRst | DeathCause::Unknown);
        if early && since < self.config.guard_ns {
            let kind = CollisionKind::Reincarnation;
            self.collide(Collision::on(&key, ts_ns, kind, since, ended.closer, false));
        }
    }

    /// An entry became real: born by probe, adopted, or a derived birth
    /// confirmed.
    fn start(&mut self, source: Source, family: Family, substate: TcpState) {
        *self.started.entry(source).or_default() += 1;
        if source == Source::Transition {
            *self.derived_births.entry((family, substate)).or_default() += 1;
        }
    }

    fn collide(&mut self, collision: Collision) {
        *self.collisions.entry(collision.kind).or_default() += 1;
        if self.recent.len() >= self.config.recent_collisions.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(collision);
    }

    /// Adds (`delta` 1) or removes (-1) an entry from the aggregates.
    fn count(&mut self, key: &Key, entry: &Entry, delta: i64) {
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
    }

    /// Reconciles the table with a round of sock_diag snapshots.
    pub fn reconcile(&mut self, round: &SnapshotRound) {
        let mut drift = Drift::default();
        let mut listed: HashMap<Key, (DiagSocket, u64)> = HashMap::new();
        let mut taken: HashMap<u32, u64> = HashMap::new();
        for snap in &round.namespaces {
            taken.insert(snap.netns, snap.taken_ns);
            self.knobs.insert(snap.netns, snap.knobs);
            self.pressure.insert(snap.netns, pressure_of(snap));
            for sock in snap.sockets.iter().filter(|s| s.timewait) {
                listed.insert(
                    key(Some(snap.netns), sock.family, sock.tuple),
                    (*sock, snap.taken_ns),
                );
            }
        }
        if let Some(existing) = &round.existing {
            self.knobs.retain(|ns, _| existing.contains(ns));
            self.pressure.retain(|ns, _| existing.contains(ns));
        }
        let newest = round
            .namespaces
            .iter()
            .map(|s| s.taken_ns)
            .max()
            .unwrap_or(0);

        let mut gone: Vec<(Key, u64, DeathCause, bool)> = Vec::new();
        let mut discard: Vec<Key> = Vec::new();
        let mut substate_moves: Vec<(Key, TcpState, TcpState)> = Vec::new();
        let mut confirmed: Vec<(Source, Family, TcpState)> = Vec::new();
        for (key, entry) in self.entries.iter() {
            let Some(&taken_ns) = taken.get(&key.netns) else {
                let vanished = round
                    .existing
                    .as_ref()
                    .is_some_and(|all| key.netns != 0 && !all.contains(&key.netns));
                if vanished {
                    gone.push((*key, newest, DeathCause::Purged, true));
                }
                continue;
            };
            if listed.contains_key(key) || entry.born_ns >= taken_ns {
                continue;
            }
            if !entry.confirmed {
                discard.push(*key);
            } else if self.config.derive_deaths {
                let cause = if taken_ns + EXPIRY_SLACK_NS >= entry.expires_ns {
                    DeathCause::Expired
                } else {
                    DeathCause::Unknown
                };
                // The death happened between the last look and this one;
                // the due time is the best estimate of when.
                let when = entry.expires_ns.min(taken_ns).max(entry.born_ns);
                gone.push((*key, when, cause, true));
            } else {
                drift.closed += 1;
                gone.push((*key, taken_ns, DeathCause::Unknown, true));
            }
        }
        for key in discard {
            if let Some(entry) = self.entries.remove(&key) {
                self.count(&key, &entry, -1);
                self.discarded += 1;
            }
        }
        for (key, ts, cause, derived) in gone {
            self.end(key, ts, cause, derived);
        }

        for (key, (sock, taken_ns)) in listed {
            let expires_ns = taken_ns + u64::from(sock.expires_ms) * 1_000_000;
            if let Some(entry) = self.entries.get_mut(&key) {
                if entry.born_ns < taken_ns {
                    entry.expires_ns = expires_ns;
                }
                if entry.substate != sock.state {
                    substate_moves.push((key, entry.substate, sock.state));
                    entry.substate = sock.state;
                }
                if !entry.confirmed {
                    entry.confirmed = true;
                    confirmed.push((entry.source, key.family, entry.substate));
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
            let lifetime = match sock.state {
                TcpState::TimeWait => TIMEWAIT_LEN_NS,
                _ => self
                    .knobs
                    .get(&key.netns)
                    .and_then(|k| k.fin_timeout_s)
                    .map_or(TIMEWAIT_LEN_NS, |s| s * 1_000_000_000),
            };
            let entry = Entry {
                substate: sock.state,
                source: Source::Snapshot,
                confirmed: true,
                born_ns: expires_ns.saturating_sub(lifetime).min(taken_ns),
                expires_ns,
                skaddr: 0,
                segments: 0,
                closer: self.closers.remove(&key),
            };
            self.insert(key, entry);
        }
        for (source, family, substate) in confirmed {
            self.start(source, family, substate);
        }
        for (key, old, new) in substate_moves {
            bump(&mut self.population, (key.netns, key.family, old), -1);
            bump(&mut self.population, (key.netns, key.family, new), 1);
        }
        self.seeded = true;
        self.drift = drift;
    }

    /// Counters and gauges for a scrape. `top_k` bounds the per-remote,
    /// per-port, per-process and per-destination lists; `per_netns` keeps
    /// namespaces apart instead of summing them.
    pub fn summary(&self, top_k: usize, per_netns: bool) -> Summary {
        let ns = |n: u32| if per_netns { n } else { 0 };
        let mut population: BTreeMap<(u32, Family, TcpState), u64> = BTreeMap::new();
        for (&(n, family, substate), &count) in &self.population {
            *population.entry((ns(n), family, substate)).or_default() += count;
        }
        let mut pressure: Vec<Pressure> = self.pressure.values().flatten().copied().collect();
        if !per_netns {
            pressure.iter_mut().for_each(|p| p.netns = 0);
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
            by_remote: top(&self.by_remote, |&(n, a, p)| (ns(n), a, p), top_k),
            by_local_port: top(&self.by_local_port, |&(n, p)| (ns(n), p), top_k),
            by_process: top(
                &self.by_process,
                |&(n, comm)| (ns(n), comm_label(comm)),
                top_k,
            ),
            started: self.started.clone(),
            derived_births: self.derived_births.clone(),
            exited: self.exited.clone(),
            durations: self.durations.clone(),
            collisions: self.collisions.clone(),
            evictions: self.evictions,
            discarded: self.discarded,
            unmatched_deaths: self.unmatched_deaths,
            drift: self.drift,
            knobs,
            pressure,
        }
    }

    /// Entries matching `filter`, in `order`, at most `limit`.
    pub fn list(&self, filter: &Filter, order: Order, limit: usize) -> Vec<(Key, Entry)> {
        // References, not copies: a 1M-entry table is 16 MB of these
        // rather than 130 MB, and only `limit` of them get sorted.
        let mut found: Vec<(&Key, &Entry)> = self
            .entries
            .iter()
            .filter(|(k, e)| filter.matches(k, e))
            .collect();
        let cmp = |a: &(&Key, &Entry), b: &(&Key, &Entry)| {
            let by = match order {
                Order::Age => a.1.born_ns.cmp(&b.1.born_ns),
                Order::Left => a.1.expires_ns.cmp(&b.1.expires_ns),
                Order::Remote => {
                    (a.0.tuple.daddr, a.0.tuple.dport).cmp(&(b.0.tuple.daddr, b.0.tuple.dport))
                }
                Order::Port => a.0.tuple.sport.cmp(&b.0.tuple.sport),
                Order::Process => {
                    let comm = |e: &Entry| e.closer.map(|p| p.comm);
                    comm(a.1).cmp(&comm(b.1))
                }
            };
            by.then_with(|| (a.1.born_ns, a.0).cmp(&(b.1.born_ns, b.0)))
        };
        if limit > 0 && found.len() > limit {
            found.select_nth_unstable_by(limit - 1, cmp);
        }
        found.truncate(limit);
        found.sort_unstable_by(cmp);
        found.into_iter().map(|(k, e)| (*k, *e)).collect()
    }

    /// Collisions since start, by kind.
    pub fn collision_totals(&self) -> &BTreeMap<CollisionKind, u64> {
        &self.collisions
    }

    /// The most recent collisions, newest first.
    pub fn recent_collisions(&self, limit: usize) -> Vec<Collision> {
        self.recent.iter().rev().take(limit).copied().collect()
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How to order a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    #[default]
    Age,
    /// Least time left first.
    Left,
    Remote,
    /// Local port.
    Port,
    /// Closing process's name.
    Process,
}

/// What to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Remote address.
    pub remote: Option<IpAddr>,
    /// Local or remote port.
    pub port: Option<u16>,
    /// Substring of the closing process's name.
    pub process: Option<String>,
    pub netns: Option<u32>,
}

impl Filter {
    fn matches(&self, key: &Key, entry: &Entry) -> bool {
        self.remote.is_none_or(|r| key.tuple.daddr == r)
            && self
                .port
                .is_none_or(|p| key.tuple.sport == p || key.tuple.dport == p)
            && self.netns.is_none_or(|n| key.netns == n)
            && self.process.as_ref().is_none_or(|name| {
                entry
                    .closer
                    .is_some_and(|p| p.comm.as_string().contains(name.as_str()))
            })
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
    pub started: BTreeMap<Source, u64>,
    /// Confirmed transition-derived births by family and substate.
    pub derived_births: BTreeMap<(Family, TcpState), u64>,
    /// (cause, derived) -> entries ended.
    pub exited: BTreeMap<(DeathCause, bool), u64>,
    pub durations: BTreeMap<DeathCause, Histogram>,
    pub collisions: BTreeMap<CollisionKind, u64>,
    pub evictions: u64,
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

fn key(netns: Option<u32>, family: Family, tuple: FourTuple) -> Key {
    Key {
        netns: netns.unwrap_or(0),
        family,
        tuple,
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, k: K, delta: i64) {
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
fn top<K, L: Ord + Clone + std::hash::Hash>(
    counts: &HashMap<K, u64>,
    label: impl Fn(&K) -> L,
    k: usize,
) -> Vec<(L, u64)> {
    let mut merged: HashMap<L, u64> = HashMap::new();
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

/// Ephemeral four-tuples per (local address, destination) in one snapshot.
///
/// A port in the range that a listener holds is lost to every destination:
/// connect()'s port search skips ports bound with bind() (their bind
/// bucket allows no reuse by connect), so those count as in use too.
fn pressure_of(snap: &NetnsSnapshot) -> Vec<Pressure> {
    let Some(range) = snap.knobs.port_range_size() else {
        return Vec::new();
    };
    let reserved: std::collections::HashSet<u16> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen && snap.knobs.is_ephemeral(s.tuple.sport))
        .map(|s| s.tuple.sport)
        .collect();
    let mut groups: HashMap<(IpAddr, IpAddr, u16), (u64, u64)> = HashMap::new();
    for sock in &snap.sockets {
        let t = &sock.tuple;
        // Connections accepted on a listener's port are the server side,
        // not ports a connect() picked.
        if sock.state == TcpState::Listen
            || t.daddr.is_unspecified()
            || !snap.knobs.is_ephemeral(t.sport)
            || reserved.contains(&t.sport)
        {
            continue;
        }
        let g = groups.entry((t.saddr, t.daddr, t.dport)).or_default();
        g.0 += 1;
        if sock.timewait {
            g.1 += 1;
        }
    }
    groups
        .into_iter()
        .map(
            |((local, remote, remote_port), (in_use, in_timewait))| Pressure {
                netns: snap.netns,
                local,
                remote,
                remote_port,
                in_use: in_use + reserved.len() as u64,
                in_timewait,
                range,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests;
