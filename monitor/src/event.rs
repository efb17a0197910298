//! Decoding of ring-buffer records into typed events.
//!
//! The kernel side writes [`monitor_common::Event`] records; this module is
//! the only place that turns those bytes into values the rest of the daemon
//! trusts, so a malformed record is rejected here with a reason, never
//! half-read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor_common::{EVENT_SIZE, Event, family, kind};
use thiserror::Error;

/// TCP states in the kernel's numbering (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    pub fn from_kernel(value: u8) -> Option<TcpState> {
        TcpState::ALL
            .get(usize::from(value).checked_sub(1)?)
            .copied()
    }

    /// The kernel's name without the `TCP_` prefix, as `ss` spells states
    /// in upper case; used as metric label value.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub fn from_kernel(value: u8) -> Option<Family> {
        match value {
            family::INET => Some(Family::Ipv4),
            family::INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// The kernel's number for it (inverse of [`Family::from_kernel`]).
    pub fn to_kernel(self) -> u8 {
        match self {
            Family::Ipv4 => family::INET,
            Family::Ipv6 => family::INET6,
        }
    }
}

/// `addr` laid out as the kernel programs write it (inverse of [`ip`]).
pub(crate) fn ip_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A connection's four-tuple as seen from the socket's own side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourTuple {
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
}

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
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
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
            0 => TwVerdict::Success,
            1 => TwVerdict::Rst,
            2 => TwVerdict::Ack,
            3 => TwVerdict::Syn,
            4 => TwVerdict::AckOutOfWindow,
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
    /// Who closed a connection first (right after its ESTABLISHED ->
    /// FIN_WAIT1 transition).
    Closer(Closer),
    /// A timewait socket answered a segment with an RST.
    TimewaitResetSent(ResetSent),
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
            KernelEvent::Closer(e) => e.ts_ns,
            KernelEvent::TimewaitResetSent(e) => e.ts_ns,
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

/// An active close, with who did it. The addresses are those of the
/// STATE_CHANGE event of the same socket just before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closer {
    pub ts_ns: u64,
    pub skaddr: u64,
    pub netns: Option<u32>,
    pub family: Family,
    pub sport: u16,
    pub dport: u16,
    pub process: Process,
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

    pub fn from_kernel(code: u32) -> DeathCause {
        use monitor_common::death_cause as c;
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
    /// Thread group (pid) in the high half, thread id in the low half.
    pub pid_tgid: u64,
    pub netns: Option<u32>,
    pub family: Family,
    pub daddr: IpAddr,
    pub dport: u16,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record is {0} bytes, expected {EVENT_SIZE}")]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown TCP state {0}")]
    State(u8),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() != EVENT_SIZE {
        return Err(DecodeError::Size(bytes.len()));
    }
    // SAFETY: the length matches `Event`'s size, every bit pattern is a valid
    // `Event` (integers and byte arrays only), and read_unaligned makes no
    // alignment assumption about the ring buffer's memory.
    let raw: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    decode_event(&raw)
}

pub fn decode_event(raw: &Event) -> Result<KernelEvent, DecodeError> {
    match raw.kind {
        kind::STATE_CHANGE => {
            let family = family_of(raw)?;
            let state = |v| TcpState::from_kernel(v).ok_or(DecodeError::State(v));
            Ok(KernelEvent::StateChange(StateChange {
                ts_ns: raw.ts_ns,
                skaddr: raw.skaddr,
                netns: netns(raw),
                family,
                from: state(raw.old_state)?,
                to: state(raw.new_state)?,
                tuple: four_tuple(family, raw),
            }))
        }
        kind::TW_BIRTH | kind::TW_OVERFLOW => {
            let family = family_of(raw)?;
            let substate =
                TcpState::from_kernel(raw.new_state).ok_or(DecodeError::State(raw.new_state))?;
            let tw = Timewait {
                ts_ns: raw.ts_ns,
                skaddr: raw.skaddr,
                netns: netns(raw),
                family,
                substate,
                timeout_jiffies: raw.aux,
                tuple: four_tuple(family, raw),
            };
            Ok(if raw.kind == kind::TW_BIRTH {
                KernelEvent::TimewaitBirth(tw)
            } else {
                KernelEvent::TimewaitOverflow(tw)
            })
        }
        kind::TW_SEGMENT => {
            let family = family_of(raw)?;
            let flags = (raw.aux & 0xff) as u8;
            let substate = TcpState::from_kernel(((raw.aux >> 8) & 0xff) as u8);
            Ok(KernelEvent::TimewaitSegment(Segment {
                ts_ns: raw.ts_ns,
                skaddr: raw.skaddr,
                netns: netns(raw),
                family,
                tuple: four_tuple(family, raw),
                flags,
                substate,
                verdict: TwVerdict::from_kernel(((raw.aux >> 16) & 0xff) as u8),
                kind: SegmentKind::classify(flags, substate),
            }))
        }
        kind::CONNECT_EADDRNOTAVAIL => {
            let family = family_of(raw)?;
            Ok(KernelEvent::ConnectEaddrnotavail(ConnectFailure {
                ts_ns: raw.ts_ns,
                pid_tgid: raw.skaddr,
                netns: netns(raw),
                family,
                daddr: ip(family, &raw.daddr),
                dport: raw.dport,
            }))
        }
        kind::TW_DEATH => {
            let family = family_of(raw)?;
            Ok(KernelEvent::TimewaitDeath(Death {
                ts_ns: raw.ts_ns,
                skaddr: raw.skaddr,
                netns: netns(raw),
                family,
                tuple: four_tuple(family, raw),
                substate: TcpState::from_kernel(raw.new_state),
                cause: DeathCause::from_kernel(raw.aux),
            }))
        }
        kind::CLOSER => {
            let family = family_of(raw)?;
            let mut cgroup = [0u8; 8];
            cgroup.copy_from_slice(&raw.daddr[..8]);
            let mut tid = [0u8; 4];
            tid.copy_from_slice(&raw.daddr[8..12]);
            Ok(KernelEvent::Closer(Closer {
                ts_ns: raw.ts_ns,
                skaddr: raw.skaddr,
                netns: netns(raw),
                family,
                sport: raw.sport,
                dport: raw.dport,
                process: Process {
                    pid: raw.aux,
                    tid: u32::from_le_bytes(tid),
                    cgroup: u64::from_le_bytes(cgroup),
                    comm: Comm(raw.saddr),
                },
            }))
        }
        kind::TW_RESET_SENT => {
            let family = family_of(raw)?;
            Ok(KernelEvent::TimewaitResetSent(ResetSent {
                ts_ns: raw.ts_ns,
                skaddr: raw.skaddr,
                netns: netns(raw),
                family,
                tuple: four_tuple(family, raw),
                substate: TcpState::from_kernel(raw.new_state),
            }))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// The namespace inode, `None` where the kernel could not read it (0).
fn netns(raw: &Event) -> Option<u32> {
    (raw.netns != 0).then_some(raw.netns)
}

fn family_of(raw: &Event) -> Result<Family, DecodeError> {
    Family::from_kernel(raw.family).ok_or(DecodeError::Family(raw.family))
}

fn four_tuple(family: Family, raw: &Event) -> FourTuple {
    FourTuple {
        saddr: ip(family, &raw.saddr),
        sport: raw.sport,
        daddr: ip(family, &raw.daddr),
        dport: raw.dport,
    }
}

/// An address as the kernel programs write it: IPv4 in the first four
/// bytes of sixteen.
pub(crate) fn ip(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw record as the kernel program would write it.
    pub fn raw(family: u8, from: u8, to: u8) -> Event {
        let mut saddr = [0u8; 16];
        let mut daddr = [0u8; 16];
        if family == family::INET {
            saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
            daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        } else {
            saddr[15] = 1;
            daddr[0] = 0xfe;
            daddr[1] = 0x80;
            daddr[15] = 7;
        }
        Event {
            ts_ns: 42,
            skaddr: 0xffff_8880_0000_1000,
            netns: 4026531840,
            kind: kind::STATE_CHANGE,
            family,
            old_state: from,
            new_state: to,
            sport: 40000,
            dport: 80,
            aux: 0,
            saddr,
            daddr,
        }
    }

    fn bytes(ev: &Event) -> Vec<u8> {
        // SAFETY: Event is plain old data of EVENT_SIZE bytes.
        unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    #[test]
    fn decodes_ipv4_transition() {
        let ev = decode(&bytes(&raw(family::INET, 4, 5))).unwrap();
        let KernelEvent::StateChange(sc) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(sc.family, Family::Ipv4);
        assert_eq!(sc.from, TcpState::FinWait1);
        assert_eq!(sc.to, TcpState::FinWait2);
        assert_eq!(sc.netns, Some(4026531840));
        assert_eq!(sc.tuple.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(sc.tuple.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((sc.tuple.sport, sc.tuple.dport), (40000, 80));
        assert_eq!(sc.ts_ns, 42);
    }

    #[test]
    fn decodes_ipv6_transition() {
        let Ok(KernelEvent::StateChange(sc)) = decode(&bytes(&raw(family::INET6, 5, 7))) else {
            panic!("not a state change")
        };
        assert_eq!(sc.family, Family::Ipv6);
        assert_eq!(sc.tuple.saddr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(sc.tuple.daddr, "fe80::7".parse::<IpAddr>().unwrap());
        assert_eq!(sc.to, TcpState::Close);
    }

    #[test]
    fn unknown_netns_is_none() {
        let mut ev = raw(family::INET, 1, 4);
        ev.netns = 0;
        let Ok(KernelEvent::StateChange(sc)) = decode(&bytes(&ev)) else {
            panic!("not a state change")
        };
        assert_eq!(sc.netns, None);
    }

    #[test]
    fn decodes_timewait_birth_and_overflow() {
        let mut ev = raw(family::INET, 0, 6);
        ev.kind = kind::TW_BIRTH;
        ev.aux = 15000;
        let Ok(KernelEvent::TimewaitBirth(tw)) = decode(&bytes(&ev)) else {
            panic!("not a birth")
        };
        assert_eq!(tw.substate, TcpState::TimeWait);
        assert_eq!(tw.timeout_jiffies, 15000);
        assert_eq!(tw.tuple.dport, 80);
        ev.kind = kind::TW_OVERFLOW;
        ev.new_state = 5;
        let Ok(KernelEvent::TimewaitOverflow(tw)) = decode(&bytes(&ev)) else {
            panic!("not an overflow")
        };
        assert_eq!(tw.substate, TcpState::FinWait2);
        ev.new_state = 0;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::State(0)));
    }

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
    fn decodes_segments() {
        let mut ev = raw(family::INET6, 0, 6);
        ev.kind = kind::TW_SEGMENT;
        ev.aux = 0x11 | (6 << 8) | (2 << 16);
        let Ok(KernelEvent::TimewaitSegment(seg)) = decode(&bytes(&ev)) else {
            panic!("not a segment")
        };
        assert_eq!(seg.kind, SegmentKind::FinRetransmit);
        assert_eq!(seg.verdict, TwVerdict::Ack);
        assert_eq!(seg.substate, Some(TcpState::TimeWait));
        assert_eq!(seg.family, Family::Ipv6);
        ev.aux = 0x02 | (6 << 8) | (3 << 16);
        let Ok(KernelEvent::TimewaitSegment(seg)) = decode(&bytes(&ev)) else {
            panic!("not a segment")
        };
        assert_eq!((seg.kind, seg.verdict), (SegmentKind::Syn, TwVerdict::Syn));
    }

    #[test]
    fn decodes_connect_failures() {
        let mut ev = raw(family::INET, 0, 0);
        ev.kind = kind::CONNECT_EADDRNOTAVAIL;
        ev.skaddr = (1234 << 32) | 1235;
        let Ok(KernelEvent::ConnectEaddrnotavail(c)) = decode(&bytes(&ev)) else {
            panic!("not a connect failure")
        };
        assert_eq!(c.pid_tgid >> 32, 1234);
        assert_eq!(c.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(c.dport, 80);
    }

    #[test]
    fn decodes_deaths() {
        let mut ev = raw(family::INET, 0, 6);
        ev.kind = kind::TW_DEATH;
        for (code, cause) in [
            (1, DeathCause::Expired),
            (2, DeathCause::ReusedByConnect),
            (3, DeathCause::ReusedBySyn),
            (4, DeathCause::KilledByRst),
            (5, DeathCause::Purged),
            (0, DeathCause::Unknown),
            (77, DeathCause::Unknown),
        ] {
            ev.aux = code;
            let Ok(KernelEvent::TimewaitDeath(d)) = decode(&bytes(&ev)) else {
                panic!("not a death")
            };
            assert_eq!(d.cause, cause);
            assert_eq!(d.substate, Some(TcpState::TimeWait));
        }
    }

    #[test]
    fn rejects_malformed_records() {
        let good = bytes(&raw(family::INET, 1, 4));
        assert_eq!(decode(&good[..63]), Err(DecodeError::Size(63)));
        assert_eq!(decode(&[]), Err(DecodeError::Size(0)));
        let mut ev = raw(family::INET, 1, 4);
        ev.kind = 99;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::Kind(99)));
        assert_eq!(decode(&bytes(&raw(7, 1, 4))), Err(DecodeError::Family(7)));
        assert_eq!(
            decode(&bytes(&raw(family::INET, 0, 4))),
            Err(DecodeError::State(0))
        );
        assert_eq!(
            decode(&bytes(&raw(family::INET, 1, 13))),
            Err(DecodeError::State(13))
        );
    }

    #[test]
    fn state_numbering_matches_kernel() {
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as u8 as usize, i + 1);
            assert_eq!(TcpState::from_kernel(*s as u8), Some(*s));
        }
        assert_eq!(
            TcpState::from_kernel(6).map(TcpState::name),
            Some("TIME_WAIT")
        );
    }
    #[test]
    fn decodes_resets_sent() {
        let mut ev = raw(family::INET, 0, 5);
        ev.kind = kind::TW_RESET_SENT;
        let Ok(KernelEvent::TimewaitResetSent(r)) = decode(&bytes(&ev)) else {
            panic!("not a reset")
        };
        assert_eq!(r.substate, Some(TcpState::FinWait2));
        assert_eq!(r.tuple.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        ev.new_state = 0;
        let Ok(KernelEvent::TimewaitResetSent(r)) = decode(&bytes(&ev)) else {
            panic!("not a reset")
        };
        assert_eq!(r.substate, None);
    }

    #[test]
    fn decodes_closers() {
        let mut ev = raw(family::INET, 1, 4);
        ev.kind = kind::CLOSER;
        ev.aux = 4242;
        ev.saddr = *b"curl\0\0\0\0\0\0\0\0\0\0\0\0";
        ev.daddr = [0u8; 16];
        ev.daddr[..8].copy_from_slice(&7777u64.to_le_bytes());
        ev.daddr[8..12].copy_from_slice(&4243u32.to_le_bytes());
        let Ok(KernelEvent::Closer(c)) = decode(&bytes(&ev)) else {
            panic!("not a closer")
        };
        assert_eq!(c.process.pid, 4242);
        assert_eq!(c.process.tid, 4243);
        assert_eq!(c.process.cgroup, 7777);
        assert_eq!(c.process.comm.as_string(), "curl");
        assert_eq!(c.process.comm, Comm::new("curl"));
        assert_eq!((c.sport, c.dport), (ev.sport, ev.dport));
        // A comm is whatever the process set: never trusted as UTF-8.
        assert_eq!(Comm([0xff; 16]).as_string().chars().count(), 16);
    }
}
