//! A timewait socket sent an RST (`tcp:tcp_send_reset` from TIME_WAIT):
//! new data reached an orphaned FIN_WAIT2, or a segment TIME_WAIT could not
//! accept.

use super::{Header, Stamp, Tuple, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSent {
    pub header: Header,
    /// The timewait socket.
    pub tw: u64,
    pub tuple: Tuple,
    /// TIME_WAIT or FIN_WAIT2; 0 when it could not be read.
    pub substate: u8,
    pub _pad: [u8; 3],
}
wire!(ResetSent, kind::RESET_SENT, 16 + 8 + 36 + 4);

impl ResetSent {
    pub const fn new(at: Stamp, tw: u64, tuple: Tuple, substate: u8) -> ResetSent {
        ResetSent {
            header: Header::new(kind::RESET_SENT, at),
            tw,
            tuple,
            substate,
            _pad: [0; 3],
        }
    }
}
