//! A segment reached a timewait socket (`tcp_timewait_state_process`).

use super::{Header, Stamp, Tuple, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwSegment {
    pub header: Header,
    /// The timewait socket.
    pub tw: u64,
    pub tuple: Tuple,
    /// The segment's [`flags`](crate::tcp::flags) byte.
    pub flags: u8,
    /// The socket's substate when it arrived (a FIN turns FIN_WAIT2 into
    /// TIME_WAIT); 0 when it could not be read.
    pub substate: u8,
    /// The kernel's [`verdict`](crate::tcp::verdict).
    pub verdict: u8,
    pub _pad: u8,
}
wire!(TwSegment, kind::TW_SEGMENT, 16 + 8 + 36 + 4);

impl TwSegment {
    pub const fn new(
        at: Stamp,
        tw: u64,
        tuple: Tuple,
        flags: u8,
        substate: u8,
        verdict: u8,
    ) -> TwSegment {
        TwSegment {
            header: Header::new(kind::TW_SEGMENT, at),
            tw,
            tuple,
            flags,
            substate,
            verdict,
            _pad: 0,
        }
    }
}
