//! The kernel side of `monitor_common::recent`: remembering four-tuples as
//! their active close begins, and asking about new connections.

use aya_ebpf::{macros::map, maps::Array};
use monitor_common::{
    recent::{GEN_WORDS, MMAPABLE, bits, hash, index},
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

/// Remembers that the four-tuple of hash `tuple_hash` began an active
/// close (in any namespace: see `hash`). Two CPUs setting bits of one
/// word at the same instant may lose one (no atomics before Linux 5.12):
/// a missed report of a rare collision, not a wrong one.
#[inline(always)]
pub fn remember(tuple_hash: u64) {
    let (word, mask) = bits(tuple_hash);
    if let Some(w) = RECENT.get_ptr_mut(index(word, current())) {
        unsafe { *w |= mask };
    }
}

/// Whether the four-tuple may have begun an active close lately.
#[inline(always)]
pub fn recalls(tuple: &Tuple) -> bool {
    let (word, mask) = bits(hash(tuple));
    let set = |generation| {
        RECENT
            .get(index(word, generation))
            .is_some_and(|w| *w & mask == mask)
    };
    set(0) || set(1)
}
