//! What the kernel programs count themselves because userspace cannot see
//! it happen: every way a record can fail to reach the ring buffer, per
//! hook and reason, in the per-CPU [`COUNTERS`](crate::names::maps::COUNTERS)
//! array. The daemon sums them on scrape; all of them are lost records.

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
    pub const COUNT: u32 = 7;

    /// Label values, indexed by reason.
    pub const NAMES: [&str; COUNT as usize] = [
        "ringbuf_full",
        "read_failed",
        "netns_unreadable",
        "unpaired",
        "too_deep",
        "map_full",
        "user_read_failed",
    ];
}

/// Slots in the array.
pub const SLOTS: u32 = Hook::COUNT * reason::COUNT;

/// The slot counting `reason` for `hook`.
#[inline(always)]
pub const fn slot(hook: Hook, reason: u32) -> u32 {
    hook as u32 * reason::COUNT + reason
}
