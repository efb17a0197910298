//! Runs the kernel would skip: a tracing program does not run while it is
//! already running on the same CPU, so a transition made by a softirq that
//! interrupts the program (on a busy host, a few in ten thousand) is lost,
//! only counted by the kernel as a recursion miss.
//!
//! A second program on the same hook has its own guard. The first notes,
//! per CPU, each run it starts in a short history; the second does the
//! work of every run missing from it, which is exactly the runs the kernel
//! skipped in the first. Softirqs do not nest, so one spare level covers
//! them all. (A flag set while the first runs would miss the interrupts
//! landing just before it is set or after it is cleared, around a tenth
//! of them as measured; the history has no such window.)
//!
//! A run is known by its socket and transition. The history is eight
//! deep: the second program, interrupted before it reads the history by
//! a softirq making eight transitions, would do a run twice; the same
//! socket address making the same transition twice within eight runs of
//! one CPU would make one be skipped. Neither was seen in the bench.

use aya_ebpf::{macros::map, maps::PerCpuArray};

const DEPTH: usize = 8;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct History {
    next: u64,
    runs: [u64; DEPTH],
}

#[map]
static HISTORY: PerCpuArray<History> = PerCpuArray::with_max_entries(1, 0);

/// A run of the state-change hook. Kernel addresses share their top 16
/// bits, so the states folded into them keep runs apart.
#[inline(always)]
pub fn run_id(sk: u64, old: u8, new: u8) -> u64 {
    sk ^ ((old as u64 & 0xf) << 52) ^ ((new as u64 & 0xf) << 48)
}

/// Notes, in the first program, that it does run `id`.
#[inline(always)]
pub fn started(id: u64) {
    if let Some(h) = HISTORY.get_ptr_mut(0) {
        let h = unsafe { &mut *h };
        h.runs[h.next as usize % DEPTH] = id;
        h.next = h.next.wrapping_add(1);
    }
}

/// True, in the second program, when the first did not start run `id`.
#[inline(always)]
pub fn skipped(id: u64) -> bool {
    match HISTORY.get_ptr(0) {
        Some(h) => !unsafe { &*h }.runs.contains(&id),
        None => false,
    }
}
