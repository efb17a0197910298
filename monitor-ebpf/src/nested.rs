//! Runs the kernel would skip: a tracing program does not run while it is
//! already running on the same CPU, so a transition made by a softirq that
//! interrupts the program (on a busy host, a few in ten thousand) is lost,
//! only counted by the kernel as a recursion miss.
//!
//! A second program on the same hook has its own guard. The first notes,
//! per CPU, each run it starts, in a slot of the socket's; the second does
//! the work of every run it does not find there, which is exactly the runs
//! the kernel skipped in the first. Softirqs do not nest, so one spare
//! level covers them all. (A flag set while the first runs would miss the
//! interrupts landing just before it is set or after it is cleared, around
//! a tenth of them as measured.)
//!
//! A run is known by its socket and transition, and kept in a slot chosen
//! by the socket: a socket's transitions in process context hold its lock,
//! so no softirq transition of the same socket comes between the two
//! programs. The second program does a run twice only when an interrupt
//! between them makes a transition of another socket in the same slot
//! (1 in 2048 of the transitions that land in that gap; a FIFO of the last
//! few runs failed whenever a softirq made more than its depth, as seen in
//! the emulated 6.1 guest).

use aya_ebpf::{macros::map, maps::PerCpuArray};

const SLOTS: usize = 2048;

/// Per-CPU values are limited to 32 KiB: 2048 runs of 8 bytes is half.
#[map]
static HISTORY: PerCpuArray<[u64; SLOTS]> = PerCpuArray::with_max_entries(1, 0);

/// A run of the state-change hook. Kernel addresses share their top 16
/// bits, so the states folded into them keep runs apart.
#[inline(always)]
pub fn run_id(sk: u64, old: u8, new: u8) -> u64 {
    sk ^ ((old as u64 & 0xf) << 52) ^ ((new as u64 & 0xf) << 48)
}

/// The slot of socket `sk`: slab addresses step by the object size, which
/// a multiplicative hash spreads.
#[inline(always)]
fn slot(sk: u64) -> usize {
    (sk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 53) as usize & (SLOTS - 1)
}

/// Notes, in the first program, that it does the run of `sk`, `id`.
#[inline(always)]
pub fn started(sk: u64, id: u64) {
    if let Some(h) = HISTORY.get_ptr_mut(0)
        && let Some(at) = unsafe { &mut *h }.get_mut(slot(sk))
    {
        *at = id;
    }
}

/// True, in the second program, when the first did not start this run.
#[inline(always)]
pub fn skipped(sk: u64, id: u64) -> bool {
    match HISTORY.get_ptr(0) {
        Some(h) => unsafe { &*h }.get(slot(sk)).is_some_and(|at| *at != id),
        None => false,
    }
}
