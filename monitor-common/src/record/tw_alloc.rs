//! `tcp_time_wait()` asked for a timewait socket: born, or refused.

use super::{Header, Process, Stamp, Tuple, kind, wire};

/// A TIME_WAIT (or orphaned FIN_WAIT2) socket was born when `tw` is set;
/// when it is 0, none could be had (tcp_max_tw_buckets full, or out of
/// memory) and the connection closed without TIME_WAIT protection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwAlloc {
    pub header: Header,
    /// The full socket that is closing.
    pub sk: u64,
    /// The timewait socket replacing it; 0 when refused.
    pub tw: u64,
    /// Who closed first, joined in the kernel; zero when unknown.
    pub process: Process,
    /// Read from the full socket: the timewait socket is not filled in yet.
    pub tuple: Tuple,
    /// The timer `tcp_time_wait()` was asked for, in jiffies (ignored by
    /// the kernel for TIME_WAIT, which always lasts 60 s).
    pub timeout_jiffies: u32,
    /// TIME_WAIT, or FIN_WAIT2 for an orphaned socket.
    pub substate: u8,
    pub _pad: [u8; 7],
}
wire!(TwAlloc, kind::TW_ALLOC, 16 + 8 + 8 + 32 + 36 + 4 + 1 + 7);

impl TwAlloc {
    pub const fn new(
        at: Stamp,
        sk: u64,
        tw: u64,
        process: Process,
        tuple: Tuple,
        substate: u8,
        timeout_jiffies: u32,
    ) -> TwAlloc {
        TwAlloc {
            header: Header::new(kind::TW_ALLOC, at),
            sk,
            tw,
            process,
            tuple,
            timeout_jiffies,
            substate,
            _pad: [0; 7],
        }
    }
}
