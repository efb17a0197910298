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
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_get_current_cgroup_id,
    },
    macros::map,
    maps::Array,
};
use monitor_common::{
    closing::{BEGAN_SHIFT, ORPHANED, SLOTS, Slot, WAYS},
    counters::reason,
    hooks::Hook,
    recent::MMAPABLE,
    record::Process,
};

use crate::common::count;

const SLOT_BITS: u32 = SLOTS.trailing_zeros();

/// Mapped by the daemon, which recovers the closes whose end no program
/// saw (see `monitor_common::closing`).
#[map]
static CLOSING: Array<Slot> = Array::with_max_entries(SLOTS, MMAPABLE);

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

/// Remembers that the current task is closing `sk`, whose four-tuple
/// hashes to `tuple_hash` (`monitor_common::recent::hash`): in the first
/// free of its slots, else over the first (counted: that close will be
/// reported without its process).
///
/// A slot still naming `sk` belongs to an earlier socket at this address,
/// freed since, whose close ended unseen: it is set aside for the daemon
/// (`closing::ORPHANED`), or freed if a birth hook reported it already.
/// Left as it was, the next end of `sk` could take it for this close.
#[inline(always)]
pub fn begin(sk: u64, tuple_hash: u64) {
    let slot = Slot {
        sk,
        process: Process::new(
            bpf_get_current_pid_tgid(),
            unsafe { bpf_get_current_cgroup_id() },
            bpf_get_current_comm().unwrap_or([0u8; 16]),
        ),
        tuple_hash: tuple_hash as u32,
        began: (unsafe { bpf_ktime_get_ns() } >> BEGAN_SHIFT) as u32,
    };
    let first = group(sk);
    let mut free = None;
    for i in first..first + WAYS {
        if let Some(s) = CLOSING.get_ptr_mut(i) {
            let held = unsafe { (*s).sk };
            if held == sk {
                unsafe { (*s).sk = sk | ORPHANED };
            } else if held == sk | 1 {
                unsafe { (*s).sk = 0 };
            }
            if free.is_none() && unsafe { (*s).sk } == 0 {
                free = Some(s);
            }
        }
    }
    if let Some(s) = free {
        unsafe { *s = slot };
    } else if let Some(s) = CLOSING.get_ptr_mut(first) {
        count(Hook::SetState, reason::CLOSER_DISPLACED);
        unsafe { *s = slot };
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
