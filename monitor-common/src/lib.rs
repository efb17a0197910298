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
    /// Explicit padding so the layout has no implicit holes.
    pub _pad: [u8; 4],
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
    /// Number of slots in the `COUNTERS` array.
    pub const COUNT: u32 = 2;
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

/// Names of the globals the daemon sets before load.
pub mod globals {
    /// `u32`: only report sockets of this network namespace inode (0 = all).
    pub const NETNS_FILTER: &str = "NETNS_FILTER";
    /// `u32`: byte offset of `sock_common.skc_net` inside `struct sock`
    /// (`u32::MAX` = unknown, namespace not read).
    pub const SKC_NET_OFFSET: &str = "SKC_NET_OFFSET";
    /// `u32`: byte offset of `ns.inum` inside `struct net`.
    pub const NET_INUM_OFFSET: &str = "NET_INUM_OFFSET";
}

/// Sentinel for an offset the daemon could not resolve.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;
