//! The kernel side of `monitor_common::recent`: remembering four-tuples as
//! their active close begins, and asking about new connections.

use aya_ebpf::{macros::map, maps::Array};
use monitor_common::{
    recent::{GEN_WORDS, MMAPABLE, bits, hash},
    record::Tuple,
};

#[map]
static RECENT: Array<u64> = Array::with_max_entries(2 * GEN_WORDS, MMAPABLE);

/// 0 or 1: the generation closes go into. Set by the daemon.
#[map]
static RECENT_GEN: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn current() -> u32 {
    RECENT_GEN.get(0).map_or(0, |g| *g & 1)
}

/// The word holding bit `bit` of generation `gen`, and the bit's mask.
#[inline(always)]
fn word(generation: u32, bit: u64) -> (u32, u64) {
    let index = generation * GEN_WORDS + (bit / 64) as u32;
    (index, 1u64 << (bit % 64))
}

/// Remembers that the four-tuple began an active close. Two CPUs setting
/// bits of one word at the same instant may lose one (no atomics before
/// Linux 5.12): a missed report of a rare collision, not a wrong one.
#[inline(always)]
pub fn remember(netns: u32, tuple: &Tuple) {
    let generation = current();
    for bit in bits(hash(netns, tuple)) {
        let (index, mask) = word(generation, bit);
        if let Some(w) = RECENT.get_ptr_mut(index) {
            unsafe { *w |= mask };
        }
    }
}

/// Whether the four-tuple may have begun an active close lately.
#[inline(always)]
pub fn recalls(netns: u32, tuple: &Tuple) -> bool {
    let bits = bits(hash(netns, tuple));
    for generation in 0..2 {
        let mut all = true;
        for &bit in &bits {
            let (index, mask) = word(generation, bit);
            all &= RECENT.get(index).is_some_and(|w| *w & mask != 0);
        }
        if all {
            return true;
        }
    }
    false
}
