//! Struct field offsets the kernel programs read at, resolved from the
//! running kernel's BTF by the daemon (Rust eBPF has no CO-RE).

/// Byte offsets of the fields the programs read from kernel structs.
/// [`OFFSET_UNKNOWN`] marks a field this kernel does not have; the
/// daemon only loads programs whose fields are all known.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOffsets {
    /// `struct sock` -> `__sk_common.skc_family` (u16).
    pub skc_family: u32,
    /// -> `skc_num`: local port, host byte order (u16).
    pub skc_num: u32,
    /// -> `skc_dport`: remote port, network byte order (u16).
    pub skc_dport: u32,
    /// -> `skc_rcv_saddr`: local IPv4 address (4 bytes).
    pub skc_rcv_saddr: u32,
    /// -> `skc_daddr`: remote IPv4 address (4 bytes).
    pub skc_daddr: u32,
    /// -> `skc_v6_rcv_saddr`: local IPv6 address (16 bytes).
    pub skc_v6_rcv_saddr: u32,
    /// -> `skc_v6_daddr`: remote IPv6 address (16 bytes).
    pub skc_v6_daddr: u32,
    /// -> `skc_net`: the `struct net *` (possible_net_t).
    pub skc_net: u32,
    /// -> `skc_state` (u8): for a timewait socket, TIME_WAIT whatever its
    /// substate.
    pub skc_state: u32,
    /// `struct net` -> `ns.inum` (u32).
    pub net_inum: u32,
    /// `struct sock` -> `sk_protocol` (u16; a bitfield before Linux 5.6,
    /// then unknown and the classic tracepoint is used instead).
    pub sk_protocol: u32,
    /// `struct inet_timewait_sock` -> `tw_substate` (u8).
    pub tw_substate: u32,
    /// `struct task_struct` -> `nsproxy` (pointer), for the namespace of
    /// the calling process in syscall hooks.
    pub task_nsproxy: u32,
    /// `struct nsproxy` -> `net_ns` (pointer to `struct net`).
    pub nsproxy_net_ns: u32,
    /// `struct inet_timewait_sock` -> `tw_timer`: the timer handler gets a
    /// pointer to it and steps back to the socket.
    pub tw_timer: u32,
    /// `struct inet_sock` -> `inet_sport`: the local port, network byte
    /// order (u16). Unlike `skc_num`, still set when a closing socket
    /// reports CLOSE (the port is released before that).
    pub inet_sport: u32,
}

impl SockOffsets {
    pub const UNKNOWN: SockOffsets = SockOffsets {
        skc_family: OFFSET_UNKNOWN,
        skc_num: OFFSET_UNKNOWN,
        skc_dport: OFFSET_UNKNOWN,
        skc_rcv_saddr: OFFSET_UNKNOWN,
        skc_daddr: OFFSET_UNKNOWN,
        skc_v6_rcv_saddr: OFFSET_UNKNOWN,
        skc_v6_daddr: OFFSET_UNKNOWN,
        skc_net: OFFSET_UNKNOWN,
        skc_state: OFFSET_UNKNOWN,
        net_inum: OFFSET_UNKNOWN,
        sk_protocol: OFFSET_UNKNOWN,
        tw_substate: OFFSET_UNKNOWN,
        task_nsproxy: OFFSET_UNKNOWN,
        nsproxy_net_ns: OFFSET_UNKNOWN,
        tw_timer: OFFSET_UNKNOWN,
        inet_sport: OFFSET_UNKNOWN,
    };
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, only `u32` fields: no padding.
unsafe impl aya::Pod for SockOffsets {}

/// Sentinel for an offset the daemon could not resolve.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

impl SockOffsets {
    /// Every field of a four-tuple is known.
    pub fn tuple_known(&self) -> bool {
        [
            self.skc_family,
            self.skc_num,
            self.skc_dport,
            self.skc_rcv_saddr,
            self.skc_daddr,
            self.skc_v6_rcv_saddr,
            self.skc_v6_daddr,
        ]
        .iter()
        .all(|&o| o != OFFSET_UNKNOWN)
    }

    /// A socket's network namespace can be read.
    pub fn netns_known(&self) -> bool {
        self.skc_net != OFFSET_UNKNOWN && self.net_inum != OFFSET_UNKNOWN
    }

    /// The calling task's network namespace can be read.
    pub fn task_netns_known(&self) -> bool {
        self.task_nsproxy != OFFSET_UNKNOWN
            && self.nsproxy_net_ns != OFFSET_UNKNOWN
            && self.net_inum != OFFSET_UNKNOWN
    }
}
