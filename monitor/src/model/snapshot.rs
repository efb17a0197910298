//! What the table is fed besides kernel events: sock_diag snapshots of the
//! watched namespaces, with the kernel knobs read there. Plain data, made
//! by `sources::diag` on a live host and by the recording reader on replay.

use super::{
    event::Process,
    tcp::{Family, FourTuple, TcpState},
};

/// One TCP socket as sock_diag listed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: Family,
    /// For a timewait socket its substate (TIME_WAIT or FIN_WAIT2).
    pub state: TcpState,
    /// A timewait socket (`struct inet_timewait_sock`), as opposed to a
    /// full socket in the same state: inet_diag reports timer 3 for those.
    pub timewait: bool,
    /// For a timewait socket: milliseconds until its timer fires.
    pub expires_ms: u32,
    pub tuple: FourTuple,
}

/// The sysctls that decide TIME_WAIT behaviour, per network namespace.
/// `None` where the file could not be read (older kernels lack some).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// net.ipv4.tcp_max_tw_buckets: more timewait sockets are refused.
    pub max_tw_buckets: Option<u64>,
    /// net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only.
    pub tw_reuse: Option<u64>,
    /// net.ipv4.ip_local_port_range, inclusive.
    pub port_range: Option<(u16, u16)>,
    /// net.ipv4.tcp_fin_timeout, seconds: the FIN_WAIT2 substate's life.
    pub fin_timeout_s: Option<u64>,
    /// net.ipv4.tcp_timestamps: tcp_tw_reuse takes over a four-tuple only
    /// with them on. Not kept in recordings.
    pub timestamps: Option<u64>,
}

impl Knobs {
    /// Number of ports in ip_local_port_range.
    pub fn port_range_size(&self) -> Option<u64> {
        self.port_range
            .map(|(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1)
    }

    /// True when `port` is in ip_local_port_range, i.e. may have been
    /// picked by the kernel for a connect() without bind().
    pub fn is_ephemeral(&self, port: u16) -> bool {
        self.port_range
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&port))
    }
}

/// Every TCP socket of one namespace at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsSnapshot {
    pub netns: u32,
    /// CLOCK_MONOTONIC (the clock of kernel event timestamps) when the dump
    /// started: anything the table learnt after this may be newer than
    /// the dump and must not be undone by it.
    pub taken_ns: u64,
    pub sockets: Vec<DiagSocket>,
    pub knobs: Knobs,
}

/// One round of snapshots over the watched namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRound {
    /// Namespaces dumped successfully in this round.
    pub namespaces: Vec<NetnsSnapshot>,
    /// The namespaces taken as existing, dumped or not (reachable, or
    /// unreachable for less than the purge grace): in all-namespaces mode
    /// every one found, and none once the one watched namespace is gone.
    /// Entries of namespaces not among them are gone with their namespace.
    /// `None` while the one watched namespace is there, and for one-off
    /// dumps of the caller's own namespace.
    pub existing: Option<Vec<u32>>,
}

/// Who closed a timewait socket a snapshot round adopted without knowing:
/// found afterwards where its close began, in the kernel's table of
/// closes in progress (`sources::closers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundCloser {
    pub netns: u32,
    pub family: Family,
    pub tuple: FourTuple,
    pub closer: Process,
}

/// What the snapshots cost the daemon so far, and how often they come.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SnapshotPacing {
    /// Rounds taken since start (the initial one included).
    pub rounds: u64,
    /// CPU time those rounds' dumps took.
    pub cpu: std::time::Duration,
    /// The wait before the next round, as the CPU budget set it.
    pub interval: std::time::Duration,
}

impl SnapshotPacing {
    /// Counts a round that cost `cpu`, the next one due in `interval`.
    pub fn record(&mut self, cpu: std::time::Duration, interval: std::time::Duration) {
        self.rounds += 1;
        self.cpu += cpu;
        self.interval = interval;
    }
}
