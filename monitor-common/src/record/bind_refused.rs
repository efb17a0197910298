//! `bind()` failed with EADDRINUSE: the local address and port asked for
//! are held, by a live socket or by a timewait socket (which one is for
//! the daemon's table to tell).

use super::{Header, Process, Stamp, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindRefused {
    pub header: Header,
    /// Who called bind().
    pub process: Process,
    /// The local address asked for (all zeros for a wildcard bind).
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}
wire!(BindRefused, kind::BIND_REFUSED, 16 + 32 + 16 + 2 + 6);

impl BindRefused {
    pub const fn new(at: Stamp, process: Process, addr: [u8; 16], port: u16) -> BindRefused {
        BindRefused {
            header: Header::new(kind::BIND_REFUSED, at),
            process,
            addr,
            port,
            _pad: [0; 6],
        }
    }
}
