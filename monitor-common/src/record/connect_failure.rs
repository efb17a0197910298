//! `connect()` failed with EADDRNOTAVAIL: no free local port (four-tuple)
//! toward the destination.

use super::{Header, Process, Stamp, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectFailure {
    pub header: Header,
    /// Who called connect().
    pub process: Process,
    /// The destination; no local address or port was had.
    pub daddr: [u8; 16],
    pub dport: u16,
    pub _pad: [u8; 6],
}
wire!(ConnectFailure, kind::CONNECT_FAILURE, 16 + 32 + 16 + 2 + 6);

impl ConnectFailure {
    pub const fn new(at: Stamp, process: Process, daddr: [u8; 16], dport: u16) -> ConnectFailure {
        ConnectFailure {
            header: Header::new(kind::CONNECT_FAILURE, at),
            process,
            daddr,
            dport,
            _pad: [0; 6],
        }
    }
}
