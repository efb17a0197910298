//! What the kernel reports, typed: the events the decoder makes of ring
//! records (`crate::sources::decode`) and the table and counters consume.

use std::net::IpAddr;

use monitor_common::tcp::verdict;

use super::tcp::{Family, FourTuple, TcpState};

/// A decoded `sock:inet_sock_set_state` transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub ts_ns: u64,
    pub skaddr: u64,
    /// Network namespace inode, `None` when the kernel could not read it.
    pub netns: Option<u32>,
    pub family: Family,
    pub from: TcpState,
    pub to: TcpState,
    pub tuple: FourTuple,
}

/// A timewait socket born, or refused (see [`KernelEvent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timewait {
    pub ts_ns: u64,
    /// The timewait socket (birth) or the closing full socket (overflow).
    pub skaddr: u64,
    pub netns: Option<u32>,
    pub family: Family,
    /// TIME_WAIT, or FIN_WAIT2 for an orphaned socket waiting for the
    /// peer's FIN.
    pub substate: TcpState,
    /// The timer `tcp_time_wait()` was asked for, in jiffies.
    pub timeout_jiffies: u32,
    pub tuple: FourTuple,
    /// Who closed first, when the close was seen.
    pub closer: Option<Process>,
}

/// What a segment that reached a timewait socket was, from the timewait
/// socket's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentKind {
    /// A FIN again, in TIME_WAIT: the peer never got our last ACK and
    /// retransmitted; TIME_WAIT re-ACKs it (the first reason it exists).
    FinRetransmit,
    /// An ACK or data of the old connection, in TIME_WAIT: a delayed
    /// duplicate absorbed instead of reaching a new incarnation (the
    /// second reason).
    OldDuplicate,
    /// A SYN: a new connection attempt on the same four-tuple.
    Syn,
    /// An RST: with tcp_rfc1337=0 it kills the timewait socket.
    Rst,
    /// Anything else, e.g. the peer's first FIN reaching an orphaned
    /// FIN_WAIT2 timewait socket.
    Other,
}

impl SegmentKind {
    pub const ALL: [SegmentKind; 5] = [
        SegmentKind::FinRetransmit,
        SegmentKind::OldDuplicate,
        SegmentKind::Syn,
        SegmentKind::Rst,
        SegmentKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SegmentKind::FinRetransmit => "fin_retransmit",
            SegmentKind::OldDuplicate => "old_duplicate",
            SegmentKind::Syn => "syn",
            SegmentKind::Rst => "rst",
            SegmentKind::Other => "other",
        }
    }

    /// Classifies by the TCP flags and the substate the socket was in when
    /// the segment arrived.
    pub fn classify(flags: u8, substate: Option<TcpState>) -> SegmentKind {
        use monitor_common::tcp::flags::{ACK, FIN, RST, SYN};
        let in_time_wait = substate == Some(TcpState::TimeWait);
        if flags & RST != 0 {
            SegmentKind::Rst
        } else if flags & SYN != 0 {
            SegmentKind::Syn
        } else if flags & FIN != 0 && in_time_wait {
            SegmentKind::FinRetransmit
        } else if flags & ACK != 0 && flags & FIN == 0 && in_time_wait {
            SegmentKind::OldDuplicate
        } else {
            SegmentKind::Other
        }
    }
}

/// The kernel's verdict on a segment (`enum tcp_tw_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwVerdict {
    /// Absorbed (or it killed the socket).
    Success,
    /// Answered with an RST.
    Rst,
    /// Answered with an ACK.
    Ack,
    /// A SYN accepted: the four-tuple goes to a new connection.
    Syn,
    /// An out-of-window ACK (newer kernels' TCP_TW_ACK_OOW).
    AckOutOfWindow,
    Unknown(u8),
}

impl TwVerdict {
    pub fn from_kernel(v: u8) -> TwVerdict {
        match v {
            verdict::SUCCESS => TwVerdict::Success,
            verdict::RST => TwVerdict::Rst,
            verdict::ACK => TwVerdict::Ack,
            verdict::SYN => TwVerdict::Syn,
            verdict::ACK_OOW => TwVerdict::AckOutOfWindow,
            other => TwVerdict::Unknown(other),
        }
    }
}

/// A segment that reached a timewait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ts_ns: u64,
    /// The timewait socket.
    pub skaddr: u64,
    pub netns: Option<u32>,
    pub family: Family,
    pub tuple: FourTuple,
    /// TCP flags byte of the segment.
    pub flags: u8,
    /// Substate when it arrived (None if it could not be read).
    pub substate: Option<TcpState>,
    pub verdict: TwVerdict,
    pub kind: SegmentKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    StateChange(StateChange),
    /// `tcp_time_wait()` made a timewait socket.
    TimewaitBirth(Timewait),
    /// `tcp_time_wait()` could not (tcp_max_tw_buckets full): the
    /// connection closed without TIME_WAIT protection.
    TimewaitOverflow(Timewait),
    /// A segment reached a timewait socket.
    TimewaitSegment(Segment),
    /// `connect()` failed with EADDRNOTAVAIL: no free four-tuple toward
    /// the destination.
    ConnectEaddrnotavail(ConnectFailure),
    /// A timewait socket died.
    TimewaitDeath(Death),
    /// An active close reached CLOSE where no birth hook reported the
    /// timewait socket it left: its birth, as transitions tell it.
    Closed(Closed),
    /// A timewait socket answered a segment with an RST.
    TimewaitResetSent(ResetSent),
    /// `bind()` failed with EADDRINUSE.
    BindEaddrinuse(BindFailure),
}

/// An RST sent by a timewait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSent {
    pub ts_ns: u64,
    pub skaddr: u64,
    pub netns: Option<u32>,
    pub family: Family,
    pub tuple: FourTuple,
    /// TIME_WAIT or FIN_WAIT2 (None if it could not be read).
    pub substate: Option<TcpState>,
}

impl KernelEvent {
    /// When it happened (CLOCK_MONOTONIC, ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            KernelEvent::StateChange(e) => e.ts_ns,
            KernelEvent::TimewaitBirth(e) | KernelEvent::TimewaitOverflow(e) => e.ts_ns,
            KernelEvent::TimewaitSegment(e) => e.ts_ns,
            KernelEvent::ConnectEaddrnotavail(e) => e.ts_ns,
            KernelEvent::TimewaitDeath(e) => e.ts_ns,
            KernelEvent::Closed(e) => e.ts_ns,
            KernelEvent::TimewaitResetSent(e) => e.ts_ns,
            KernelEvent::BindEaddrinuse(e) => e.ts_ns,
        }
    }
}

/// A task's name as the kernel keeps it: at most 15 bytes, NUL padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn new(name: &str) -> Comm {
        let mut bytes = [0u8; 16];
        let n = name.len().min(15);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        Comm(bytes)
    }

    /// The name up to its NUL; a comm is set by the process itself and may
    /// hold any bytes, so invalid UTF-8 is replaced rather than trusted.
    pub fn as_string(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_string())
    }
}

/// The process that closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Process {
    /// Thread group id: what userspace calls the pid.
    pub pid: u32,
    pub tid: u32,
    /// cgroup v2 id (the inode of the cgroup's directory), 0 on cgroup v1.
    pub cgroup: u64,
    pub comm: Comm,
}

/// A FIN_WAIT2 or CLOSING socket that reached CLOSE: the end of an active
/// close, so a timewait socket was born for it, or refused, or the
/// connection was reset in FIN_WAIT2 (then none was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    pub ts_ns: u64,
    /// The full socket.
    pub skaddr: u64,
    pub netns: Option<u32>,
    pub family: Family,
    /// As the close began (the local port is gone by CLOSE).
    pub tuple: FourTuple,
    /// FIN_WAIT2 or CLOSING.
    pub from: TcpState,
    /// Who closed first, when the close was seen.
    pub closer: Option<Process>,
}

/// Why a timewait socket died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeathCause {
    Expired,
    ReusedByConnect,
    ReusedBySyn,
    KilledByRst,
    Purged,
    Unknown,
}

impl DeathCause {
    pub const ALL: [DeathCause; 6] = [
        DeathCause::Expired,
        DeathCause::ReusedByConnect,
        DeathCause::ReusedBySyn,
        DeathCause::KilledByRst,
        DeathCause::Purged,
        DeathCause::Unknown,
    ];

    pub fn from_kernel(code: u8) -> DeathCause {
        use monitor_common::record::cause as c;
        match code {
            c::EXPIRED => DeathCause::Expired,
            c::REUSED_BY_CONNECT => DeathCause::ReusedByConnect,
            c::REUSED_BY_SYN => DeathCause::ReusedBySyn,
            c::KILLED_BY_RST => DeathCause::KilledByRst,
            c::PURGED => DeathCause::Purged,
            _ => DeathCause::Unknown,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DeathCause::Expired => "expired",
            DeathCause::ReusedByConnect => "reused_by_connect",
            DeathCause::ReusedBySyn => "reused_by_syn",
            DeathCause::KilledByRst => "killed_by_rst",
            DeathCause::Purged => "purged",
            DeathCause::Unknown => "unknown",
        }
    }
}

/// A timewait socket's death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Death {
    pub ts_ns: u64,
    /// The timewait socket.
    pub skaddr: u64,
    pub netns: Option<u32>,
    pub family: Family,
    pub tuple: FourTuple,
    pub substate: Option<TcpState>,
    pub cause: DeathCause,
}

/// A `connect()` that found no free local port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectFailure {
    pub ts_ns: u64,
    /// Who called connect().
    pub process: Option<Process>,
    pub netns: Option<u32>,
    pub family: Family,
    pub daddr: IpAddr,
    pub dport: u16,
}

/// A `bind()` refused because the address and port were held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindFailure {
    pub ts_ns: u64,
    pub netns: Option<u32>,
    pub family: Family,
    /// The address asked for: unspecified for a wildcard bind.
    pub addr: IpAddr,
    pub port: u16,
    /// Who called bind().
    pub process: Option<Process>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_segments() {
        use SegmentKind::*;
        let tw = Some(TcpState::TimeWait);
        let fw2 = Some(TcpState::FinWait2);
        // FIN|ACK again in TIME_WAIT: the peer lost our last ACK.
        assert_eq!(SegmentKind::classify(0x11, tw), FinRetransmit);
        // The first FIN reaching an orphaned FIN_WAIT2 socket.
        assert_eq!(SegmentKind::classify(0x11, fw2), Other);
        assert_eq!(SegmentKind::classify(0x10, tw), OldDuplicate);
        assert_eq!(SegmentKind::classify(0x18, tw), OldDuplicate);
        assert_eq!(SegmentKind::classify(0x02, tw), Syn);
        assert_eq!(SegmentKind::classify(0x04, tw), Rst);
        assert_eq!(SegmentKind::classify(0x14, fw2), Rst);
        assert_eq!(SegmentKind::classify(0x10, None), Other);
    }

    #[test]
    fn comms_are_bytes_not_trusted_text() {
        assert_eq!(Comm::new("curl").as_string(), "curl");
        assert_eq!(Comm::new("a-name-longer-than-15").as_string().len(), 15);
        // A comm is whatever the process set: never trusted as UTF-8.
        assert_eq!(Comm([0xff; 16]).as_string().chars().count(), 16);
    }
}
