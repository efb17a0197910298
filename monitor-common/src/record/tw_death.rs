//! A timewait socket died, and why.

use super::{Header, Stamp, Tuple, kind, wire};

/// Why, as the kernel programs tell it.
pub mod cause {
    /// Killed early for a reason no hook saw.
    pub const UNKNOWN: u8 = 0;
    /// Its timer fired: the full 2*MSL (or tcp_fin_timeout for FIN_WAIT2).
    pub const EXPIRED: u8 = 1;
    /// A connect() took its four-tuple over (tcp_tw_reuse, or an explicitly
    /// bound port with timestamps on).
    pub const REUSED_BY_CONNECT: u8 = 2;
    /// An incoming SYN was accepted as a new incarnation.
    pub const REUSED_BY_SYN: u8 = 3;
    /// An RST killed it (tcp_rfc1337=0): TIME_WAIT assassination.
    pub const KILLED_BY_RST: u8 = 4;
    /// Its network namespace went away.
    pub const PURGED: u8 = 5;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwDeath {
    pub header: Header,
    /// The timewait socket.
    pub tw: u64,
    pub tuple: Tuple,
    /// TIME_WAIT or FIN_WAIT2; 0 when it could not be read.
    pub substate: u8,
    /// One of [`cause`].
    pub cause: u8,
    pub _pad: [u8; 2],
}
wire!(TwDeath, kind::TW_DEATH, 16 + 8 + 36 + 4);

impl TwDeath {
    pub const fn new(at: Stamp, tw: u64, tuple: Tuple, substate: u8, cause: u8) -> TwDeath {
        TwDeath {
            header: Header::new(kind::TW_DEATH, at),
            tw,
            tuple,
            substate,
            cause,
            _pad: [0; 2],
        }
    }
}
