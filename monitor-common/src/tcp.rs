//! TCP as the kernel numbers it. Both sides compare against these, so a
//! state or verdict is spelled once.

/// `include/net/tcp_states.h`.
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
    /// The highest state number; states run from 1 to this.
    pub const MAX: u8 = NEW_SYN_RECV;
}

/// The flags byte of a TCP header (RFC 9293), at [`flags::OFFSET`].
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    /// Byte offset of the flags in a TCP header: fixed by the RFC, not by
    /// any kernel.
    pub const OFFSET: u32 = 13;
}

/// `enum tcp_tw_status`: what `tcp_timewait_state_process` decided about a
/// segment.
pub mod verdict {
    /// Absorbed (or it killed the socket).
    pub const SUCCESS: u8 = 0;
    /// Answered with an RST.
    pub const RST: u8 = 1;
    /// Answered with an ACK.
    pub const ACK: u8 = 2;
    /// A SYN accepted: the four-tuple goes to a new connection.
    pub const SYN: u8 = 3;
    /// An out-of-window ACK (TCP_TW_ACK_OOW, Linux 6.13+).
    pub const ACK_OOW: u8 = 4;
}

/// Address families (`AF_INET`, `AF_INET6`).
pub mod family {
    pub const INET: u8 = 2;
    pub const INET6: u8 = 10;
}

/// `IPPROTO_TCP`, as in `sk_protocol` and the tracepoint's `protocol`.
pub const IPPROTO_TCP: u16 = 6;
