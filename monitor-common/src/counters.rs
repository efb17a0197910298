//! What the kernel programs count themselves, read by the daemon at each
//! scrape rather than sent record by record:
//!
//! - every way a record can fail to reach the ring buffer, per hook and
//!   reason ([`Errors`], in [`COUNTERS`](crate::names::maps::COUNTERS));
//! - every TCP state transition ([`Transitions`], in
//!   [`TRANSITIONS`](crate::names::maps::TRANSITIONS)): counting needs no
//!   four-tuple, so it never costs a record.
//!
//! Each map is a per-CPU array with one entry holding the whole table, so
//! a scrape reads it in one lookup.

use crate::hooks::Hook;

/// Why a hook's program lost what it was about to report.
pub mod reason {
    /// The ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Reading a kernel struct field failed (`bpf_probe_read_kernel`).
    pub const READ_FAILED: u32 = 1;
    /// The socket's network namespace could not be read, so a namespace
    /// filter could not keep it.
    pub const NETNS_UNREADABLE: u32 = 2;
    /// A function's return did not match the entry recorded for it.
    pub const UNPAIRED: u32 = 3;
    /// Calls nested deeper than the per-CPU stack that pairs entries with
    /// returns.
    pub const TOO_DEEP: u32 = 4;
    /// A map the hook keeps state in refused an insert.
    pub const MAP_FULL: u32 = 5;
    /// Reading the caller's memory failed (a syscall's arguments).
    pub const USER_READ_FAILED: u32 = 6;
    /// Not a loss: a run the kernel skipped (the hook's program was
    /// already running on that CPU, interrupted by a softirq) and that the
    /// hook's nested program did instead. The daemon subtracts these from
    /// the kernel's count of skipped runs.
    pub const RECOVERED: u32 = 7;
    /// An active close was forgotten before its timewait socket was born:
    /// more closes were in flight on the sockets sharing its slots than
    /// the table of closes in progress holds. That timewait socket is
    /// reported without the process that closed it.
    pub const CLOSER_DISPLACED: u32 = 8;
    pub const COUNT: u32 = 9;

    /// Label values, indexed by reason.
    pub const NAMES: [&str; COUNT as usize] = [
        "ringbuf_full",
        "read_failed",
        "netns_unreadable",
        "unpaired",
        "too_deep",
        "map_full",
        "user_read_failed",
        "recovered",
        "closer_displaced",
    ];
}

/// Reasons that are losses (all but [`reason::RECOVERED`]).
pub const fn is_loss(why: u32) -> bool {
    why != reason::RECOVERED
}

/// Slots of [`Errors`].
pub const SLOTS: usize = (Hook::COUNT * reason::COUNT) as usize;

/// Lost records, by [`slot`].
pub type Errors = [u64; SLOTS];

/// The slot counting `reason` for `hook`.
#[inline(always)]
pub const fn slot(hook: Hook, reason: u32) -> usize {
    (hook as u32 * reason::COUNT + reason) as usize
}

/// Slots of [`Transitions`]: every (old, new) pair of the 4-bit state
/// numbers, so an index needs no bounds but a mask.
pub const TRANSITION_SLOTS: usize = 256;

/// TCP state transitions, by [`transition_slot`].
pub type Transitions = [u64; TRANSITION_SLOTS];

/// The slot counting transitions from state `old` to `new`.
#[inline(always)]
pub const fn transition_slot(old: u8, new: u8) -> usize {
    ((old as usize & 0xf) << 4) | (new as usize & 0xf)
}
