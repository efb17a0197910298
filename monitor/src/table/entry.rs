//! What the table holds: one [`Entry`] per timewait socket, under its
//! [`Key`], and how the table is configured.

use crate::model::{
    event::Process,
    tcp::{Family, FourTuple, TcpState},
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
pub enum Origin {
    /// tcp_time_wait(): exact.
    Probe,
    /// A FIN_WAIT2/CLOSING -> CLOSE transition (tracepoint-only kernels).
    Transition,
    /// Found in a sock_diag snapshot without having been seen born.
    Snapshot,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Probe => "probe",
            Origin::Transition => "transition",
            Origin::Snapshot => "snapshot",
        }
    }
}

/// One timewait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// TIME_WAIT, or FIN_WAIT2 for an orphaned socket still waiting for
    /// the peer's FIN.
    pub substate: TcpState,
    pub origin: Origin,
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

impl Entry {
    /// The cgroup id it is counted under: its closer's, 0 when the close
    /// was not seen (the exposition then names it by its namespace).
    pub fn cgroup(&self) -> u64 {
        self.closer.map_or(0, |p| p.cgroup)
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

/// A timewait socket cut short recently, for the guard window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ended {
    pub ts_ns: u64,
    pub closer: Option<Process>,
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

/// Closers kept for sockets whose birth report was lost, until a snapshot
/// adopts them; far more than a round's worth of lost reports.
pub(super) const CLOSERS_CAPACITY: usize = 1 << 16;
/// How late a snapshot may still find an entry past its due time before it
/// is taken as killed early: the timer wheel fires TIME_WAIT up to ~2 s
/// late at HZ=100.
pub(super) const EXPIRY_SLACK_NS: u64 = 3_000_000_000;

/// The key of a socket the kernel reported in `netns` (0 when unknown).
pub(super) fn key(netns: Option<u32>, family: Family, tuple: FourTuple) -> Key {
    Key {
        netns: netns.unwrap_or(0),
        family,
        tuple,
    }
}
