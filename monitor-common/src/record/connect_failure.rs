//! `connect()` failed with EADDRNOTAVAIL: no free local port (four-tuple)
//! toward the destination.

use super::{Header, Stamp, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectFailure {
    pub header: Header,
    /// Thread group id in the high half, thread id in the low half.
    pub pid_tgid: u64,
    /// The destination; no local address or port was had.
    pub daddr: [u8; 16],
    pub dport: u16,
    pub _pad: [u8; 6],
}
wire!(ConnectFailure, kind::CONNECT_FAILURE, 16 + 8 + 16 + 2 + 6);

impl ConnectFailure {
    pub const fn new(at: Stamp, pid_tgid: u64, daddr: [u8; 16], dport: u16) -> ConnectFailure {
        ConnectFailure {
            header: Header::new(kind::CONNECT_FAILURE, at),
            pid_tgid,
            daddr,
            dport,
            _pad: [0; 6],
        }
    }
}
