//! Active closes in progress: who closed first, kept by socket from
//! ESTABLISHED -> FIN_WAIT1 (the closing task's context) until the
//! timewait socket is born, in softirq, where that task is long gone. The
//! birth hook claims it for its record; where no birth hook runs, the
//! FIN_WAIT2/CLOSING -> CLOSE transition takes it. Either way a timewait
//! socket costs one record, with its closer joined in the kernel.
//!
//! A direct-mapped table, not a hash map: a slot per socket address hash,
//! found with an array lookup the verifier inlines. A hash map's insert and
//! delete cost more than the rest of the program together (measured on
//! this path: 2.4 us per connection for an LRU hash, against nothing
//! measurable here). A close may take any free slot of a small group; when
//! all are taken the latest takes the first, and the close it displaced is
//! counted (`closer_displaced`) and reported without its process.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
    },
    macros::map,
    maps::Array,
};
use monitor_common::{counters::reason, hooks::Hook, record::Process};

use crate::common::count;

/// A close in progress: the socket (0 for none; its low bit set once a
/// birth hook claimed it) and who closed it.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slot {
    sk: u64,
    process: Process,
}

/// A power of two.
const SLOTS: u32 = 65536;
const SLOT_BITS: u32 = SLOTS.trailing_zeros();
/// Slots a close may take: an aligned group, so all sit in two adjacent
/// cache lines. Two were not enough at 64,000 connections a second, where
/// a slow peer keeps thousands of closes in flight: up to 0.16 % of the
/// closes lost their process to a displacement.
const WAYS: u32 = 4;

#[map]
static CLOSING: Array<Slot> = Array::with_max_entries(SLOTS, 0);

/// The first of the slots `sk` may take. Socket addresses step by the slab
/// object size (a multiple of 64 bytes but rarely a power of two), which
/// folds badly with masks; a multiplicative hash spreads them.
#[inline(always)]
fn group(sk: u64) -> u32 {
    (sk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_BITS)) as u32 & !(WAYS - 1)
}

/// The slot holding `sk` (claimed or not), if any.
#[inline(always)]
fn find(sk: u64) -> Option<&'static mut Slot> {
    let first = group(sk);
    for i in first..first + WAYS {
        if let Some(s) = CLOSING.get_ptr_mut(i) {
            let s = unsafe { &mut *s };
            if s.sk & !1 == sk {
                return Some(s);
            }
        }
    }
    None
}

/// Remembers that the current task is closing `sk`: in the first free of
/// its slots, else over the first (counted: that close will be reported
/// without its process).
#[inline(always)]
pub fn begin(sk: u64) {
    let process = Process::new(
        bpf_get_current_pid_tgid(),
        unsafe { bpf_get_current_cgroup_id() },
        bpf_get_current_comm().unwrap_or([0u8; 16]),
    );
    let first = group(sk);
    for i in first..first + WAYS {
        if let Some(s) = CLOSING.get_ptr_mut(i)
            && unsafe { (*s).sk } == 0
        {
            unsafe { *s = Slot { sk, process } };
            return;
        }
    }
    if let Some(s) = CLOSING.get_ptr_mut(first) {
        count(Hook::SetState, reason::CLOSER_DISPLACED);
        unsafe { *s = Slot { sk, process } };
    }
}

/// For a birth hook: who closed `sk`, and marks the close as reported so
/// the CLOSE transition that follows sends nothing.
#[inline(always)]
pub fn claim(sk: u64) -> Process {
    match find(sk) {
        Some(s) => {
            s.sk = sk | 1;
            s.process
        }
        None => Process::default(),
    }
}

/// How a close ended, as its slot tells.
pub enum Ended {
    /// A birth hook reported the timewait socket already.
    Claimed,
    /// Not reported yet: by this process (unknown if its start was not
    /// seen, or other closes took both slots since).
    Open(Process),
}

/// Ends the close of `sk`, freeing its slot.
#[inline(always)]
pub fn end(sk: u64) -> Ended {
    let Some(s) = find(sk) else {
        return Ended::Open(Process::default());
    };
    let claimed = s.sk & 1 == 1;
    s.sk = 0;
    if claimed {
        Ended::Claimed
    } else {
        Ended::Open(s.process)
    }
}
