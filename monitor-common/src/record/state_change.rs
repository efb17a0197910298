//! A TCP state transition (`sock:inet_sock_set_state`).

use super::{Header, Stamp, Tuple, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub header: Header,
    /// Kernel address of the socket: one socket for its lifetime.
    pub skaddr: u64,
    pub tuple: Tuple,
    /// [`state`](crate::tcp::state) before and after.
    pub old_state: u8,
    pub new_state: u8,
    pub _pad: [u8; 2],
}
wire!(StateChange, kind::STATE_CHANGE, 16 + 8 + 36 + 4);

impl StateChange {
    pub const fn new(
        at: Stamp,
        skaddr: u64,
        tuple: Tuple,
        old_state: u8,
        new_state: u8,
    ) -> StateChange {
        StateChange {
            header: Header::new(kind::STATE_CHANGE, at),
            skaddr,
            tuple,
            old_state,
            new_state,
            _pad: [0; 2],
        }
    }
}
