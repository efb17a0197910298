//! An active close finished: a FIN_WAIT2 or CLOSING socket reached CLOSE,
//! so a timewait socket was born (or refused) for it. Sent only when no
//! birth hook reported the birth itself, joined in the kernel with who
//! closed first: one record per timewait socket, where it used to take
//! four transitions and a closer record.

use super::{Header, Process, Stamp, Tuple, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    pub header: Header,
    /// The full socket that closed.
    pub sk: u64,
    /// Who closed first (ESTABLISHED -> FIN_WAIT1 ran in its context).
    pub process: Process,
    /// As the close began: by CLOSE the kernel has released the local port.
    pub tuple: Tuple,
    /// FIN_WAIT2 or CLOSING.
    pub from_state: u8,
    pub _pad: [u8; 3],
}
wire!(Closed, kind::CLOSED, 16 + 8 + 32 + 36 + 1 + 3);

impl Closed {
    pub const fn new(at: Stamp, sk: u64, process: Process, tuple: Tuple, from_state: u8) -> Closed {
        Closed {
            header: Header::new(kind::CLOSED, at),
            sk,
            process,
            tuple,
            from_state,
            _pad: [0; 3],
        }
    }
}
