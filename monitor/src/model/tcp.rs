//! TCP as the daemon speaks it: states, families and four-tuples, in the
//! kernel's numbering (`monitor_common::tcp`) but typed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor_common::tcp::{family, state};

/// TCP states in the kernel's numbering (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = state::ESTABLISHED,
    SynSent = state::SYN_SENT,
    SynRecv = state::SYN_RECV,
    FinWait1 = state::FIN_WAIT1,
    FinWait2 = state::FIN_WAIT2,
    TimeWait = state::TIME_WAIT,
    Close = state::CLOSE,
    CloseWait = state::CLOSE_WAIT,
    LastAck = state::LAST_ACK,
    Listen = state::LISTEN,
    Closing = state::CLOSING,
    NewSynRecv = state::NEW_SYN_RECV,
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
pub fn ip_bytes(addr: IpAddr) -> [u8; 16] {
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

/// An address as the kernel programs write it: IPv4 in the first four
/// bytes of sixteen.
pub fn ip(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_numbering_matches_the_kernel() {
        assert_eq!(TcpState::ALL.len(), usize::from(state::MAX));
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as u8 as usize, i + 1);
            assert_eq!(TcpState::from_kernel(*s as u8), Some(*s));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(state::MAX + 1), None);
        assert_eq!(
            TcpState::from_kernel(state::TIME_WAIT).map(TcpState::name),
            Some("TIME_WAIT")
        );
    }

    #[test]
    fn addresses_round_trip_through_the_record_layout() {
        for addr in ["10.1.2.3", "fe80::7"] {
            let addr: IpAddr = addr.parse().unwrap();
            let family = if addr.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            assert_eq!(ip(family, &ip_bytes(addr)), addr);
        }
    }
}
