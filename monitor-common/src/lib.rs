//! Types shared by twmon's kernel programs and its daemon.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every
//! type is `#[repr(C)]`, has no padding the compiler may fill with garbage,
//! and has a size pinned by a compile-time assertion: a change on one side
//! that the other side does not see is a build error, not a silent misread.
#![no_std]

/// What an [`Event`] reports. The numbers are part of the wire format (and,
/// later, of recorded event files), so they are never reused.
pub mod kind {
    /// A `sock:inet_sock_set_state` transition of a TCP socket.
    pub const STATE_CHANGE: u8 = 1;
    /// `tcp_time_wait()` got a timewait socket: a TIME_WAIT (or orphaned
    /// FIN_WAIT2) socket was born. `skaddr` is the new timewait socket,
    /// `new_state` its substate, `aux` its timeout in jiffies.
    pub const TW_BIRTH: u8 = 2;
    /// `tcp_time_wait()` got no timewait socket (tcp_max_tw_buckets full, or
    /// out of memory): the connection closed without TIME_WAIT protection.
    /// `skaddr` is the full socket, `new_state` the substate it wanted.
    pub const TW_OVERFLOW: u8 = 3;
    /// A segment reached a timewait socket (`tcp_timewait_state_process`).
    /// `skaddr` is the timewait socket; `aux` packs the TCP flags byte
    /// (bits 0-7), the substate (8-15) and the kernel's verdict,
    /// `enum tcp_tw_status` (16-23).
    pub const TW_SEGMENT: u8 = 4;
    /// `connect()` failed with EADDRNOTAVAIL: no free local port (four-tuple)
    /// toward that destination. `skaddr` is the caller's pid_tgid, `daddr`
    /// and `dport` the destination; the source side is empty.
    pub const CONNECT_EADDRNOTAVAIL: u8 = 5;
    /// A timewait socket died. `skaddr` is the timewait socket, `aux` one
    /// of [`death_cause`](super::death_cause).
    pub const TW_DEATH: u8 = 6;
    /// The process that closed a connection first: emitted right after the
    /// ESTABLISHED -> FIN_WAIT1 [`STATE_CHANGE`] of the same `skaddr`,
    /// from the closing task's context (close() or shutdown()). That side
    /// is the one that will hold TIME_WAIT, so this is who to blame for it.
    /// `aux` is the pid (thread group id), `saddr` the comm (NUL padded),
    /// `daddr[..8]` the cgroup v2 id (little endian), `daddr[8..12]` the
    /// thread id; family and ports are those of the socket, addresses are
    /// not repeated.
    pub const CLOSER: u8 = 7;
    /// A timewait socket sent an RST (`tcp:tcp_send_reset` from a socket
    /// in TIME_WAIT state): new data reached an orphaned FIN_WAIT2, or a
    /// segment TIME_WAIT could not accept. `skaddr` is the timewait
    /// socket, `new_state` its substate (0 if unread).
    pub const TW_RESET_SENT: u8 = 8;
}

/// Why a timewait socket died, as the kernel programs tell it.
pub mod death_cause {
    /// Its timer fired: the full 2*MSL (or tcp_fin_timeout for FIN_WAIT2).
    pub const EXPIRED: u32 = 1;
    /// A connect() took its four-tuple over (tcp_tw_reuse, or an
    /// explicitly bound port with timestamps on).
    pub const REUSED_BY_CONNECT: u32 = 2;
    /// An incoming SYN was accepted as a new incarnation.
    pub const REUSED_BY_SYN: u32 = 3;
    /// An RST killed it (tcp_rfc1337=0): TIME_WAIT assassination.
    pub const KILLED_BY_RST: u32 = 4;
    /// Its network namespace went away.
    pub const PURGED: u32 = 5;
    /// Killed early for a reason no hook saw.
    pub const UNKNOWN: u32 = 0;
}

/// Address families as the kernel numbers them (`AF_INET`, `AF_INET6`).
pub mod family {
    pub const INET: u8 = 2;
    pub const INET6: u8 = 10;
}

/// `IPPROTO_TCP`, as carried in the tracepoint's `protocol` field.
pub const IPPROTO_TCP: u16 = 6;

/// One fixed-size record in the `EVENTS` ring buffer.
///
/// Ports are in host byte order (the tracepoint already converts them).
/// Addresses are in network byte order; an IPv4 address fills the first four
/// bytes and leaves the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds since boot.
    pub ts_ns: u64,
    /// Kernel address of the socket: identifies one socket for its lifetime.
    pub skaddr: u64,
    /// Inode number of the socket's network namespace, 0 if it could not be
    /// read (no BTF offsets, or the read failed).
    pub netns: u32,
    /// One of [`kind`].
    pub kind: u8,
    /// One of [`family`].
    pub family: u8,
    /// TCP state before the transition (kernel numbering, `TCP_ESTABLISHED` = 1).
    pub old_state: u8,
    /// TCP state after the transition.
    pub new_state: u8,
    pub sport: u16,
    pub dport: u16,
    /// Kind-specific: for [`kind::TW_BIRTH`] the timeout in jiffies.
    pub aux: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Size of an [`Event`] on the wire.
pub const EVENT_SIZE: usize = 64;
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_SIZE);

#[cfg(feature = "user")]
// SAFETY: `Event` is `#[repr(C)]`, `Copy`, made only of integers and byte
// arrays, and has no implicit padding (checked by the size assertion above).
unsafe impl aya::Pod for Event {}

/// Indexes into the per-CPU `COUNTERS` array: things the kernel counts
/// itself because userspace cannot see them happen.
pub mod counter {
    /// An event was dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Reading the socket's network namespace failed.
    pub const NETNS_READ_FAILED: u32 = 1;
    /// An `inet_twsk_alloc` return did not match the pending
    /// `tcp_time_wait` call on that CPU (nesting deeper than tracked, or a
    /// skipped entry); that birth is not reported.
    pub const TW_UNPAIRED: u32 = 2;
    /// Number of slots in the `COUNTERS` array.
    pub const COUNT: u32 = 3;
}

/// Field offsets of the `sock:inet_sock_set_state` tracepoint record.
///
/// This layout has been stable since Linux 4.16. The kernel program reads at
/// these constant offsets (a fixed offset keeps the program simple for the
/// verifier); the daemon checks them against the running kernel's
/// `events/sock/inet_sock_set_state/format` before it attaches, and refuses
/// with a clear error if they ever differ.
pub mod set_state_tp {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;

    /// (field name, offset, size) as the format file must list them.
    pub const FIELDS: &[(&str, usize, usize)] = &[
        ("skaddr", SKADDR, 8),
        ("oldstate", OLDSTATE, 4),
        ("newstate", NEWSTATE, 4),
        ("sport", SPORT, 2),
        ("dport", DPORT, 2),
        ("family", FAMILY, 2),
        ("protocol", PROTOCOL, 2),
        ("saddr", SADDR, 4),
        ("daddr", DADDR, 4),
        ("saddr_v6", SADDR_V6, 16),
        ("daddr_v6", DADDR_V6, 16),
    ];
}

/// Field offsets of the `syscalls:sys_enter_connect` and
/// `syscalls:sys_exit_connect` records, checked against the running
/// kernel's format files before attaching (as for [`set_state_tp`]).
pub mod connect_tp {
    pub const USERVADDR: usize = 24;
    pub const RET: usize = 16;
    pub const ENTER_FIELDS: &[(&str, usize, usize)] = &[
        ("fd", 16, 8),
        ("uservaddr", USERVADDR, 8),
        ("addrlen", 32, 8),
    ];
    pub const EXIT_FIELDS: &[(&str, usize, usize)] = &[("ret", RET, 8)];
}

/// Fields of the `tcp:tcp_send_reset` record twmon reads: skaddr and state,
/// at the same place since 4.15 (6.10 added a reason and reshaped the
/// addresses); the four-tuple is read from the socket at BTF offsets.
pub mod reset_tp {
    pub const SKADDR: usize = 16;
    pub const STATE: usize = 24;
    pub const FIELDS: &[(&str, usize, usize)] = &[("skaddr", SKADDR, 8), ("state", STATE, 4)];
}

/// Names of the globals the daemon sets before load.
pub mod globals {
    /// `u32`: only report sockets of this network namespace inode (0 = all).
    pub const NETNS_FILTER: &str = "NETNS_FILTER";
    /// [`SockOffsets`](super::SockOffsets): where to read socket fields.
    pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";
    /// `u64`: bytes waiting in the ring buffer before the reader is woken
    /// (a quarter of its size).
    pub const RING_WAKE_BYTES: &str = "RING_WAKE_BYTES";
}

/// Byte offsets of the fields the programs read from kernel structs,
/// resolved from the running kernel's BTF by the daemon (Rust eBPF has no
/// CO-RE). [`OFFSET_UNKNOWN`] marks a field this kernel does not have; the
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
        net_inum: OFFSET_UNKNOWN,
        sk_protocol: OFFSET_UNKNOWN,
        tw_substate: OFFSET_UNKNOWN,
        task_nsproxy: OFFSET_UNKNOWN,
        nsproxy_net_ns: OFFSET_UNKNOWN,
        tw_timer: OFFSET_UNKNOWN,
    };
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, only `u32` fields: no padding.
unsafe impl aya::Pod for SockOffsets {}

/// Sentinel for an offset the daemon could not resolve.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;
