//! The daemon's side of the kernel's Bloom filter of recently closed
//! four-tuples (`monitor_common::recent`): it ages the filter, flipping the
//! current generation and clearing the one that takes over, and reads how
//! full it is, both through a mapping of the array (clearing 4 MiB with map
//! updates would take half a million system calls).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use monitor_common::recent::{GEN_WORDS, index};

use super::mapping::Mapping;

use crate::model::hooks::FilterFill;

/// How long the kernel needs to remember a four-tuple: a timewait socket
/// lasts 60 s, and after it is cut short a new connection on its four-tuple
/// is a reincarnation for `guard` more. Each generation lives one period;
/// a four-tuple is remembered between one and two.
pub fn period(guard: Duration) -> Duration {
    Duration::from_secs(60) + guard
}

pub struct Recent {
    words: Mapping<u64>,
    /// Behind a lock because aya's `set` takes `&mut`; only the aging task
    /// writes it.
    generation: std::sync::Mutex<Array<MapData, u32>>,
    current: AtomicU32,
}

// SAFETY: the mapping belongs to this value alone and is only accessed
// with volatile aligned 8-byte loads and stores, which the kernel programs'
// concurrent stores (what it is shared for) cannot tear; the daemon's only
// writer is `rotate`, called by one task.
unsafe impl Send for Recent {}
unsafe impl Sync for Recent {}

impl Recent {
    pub fn new(bits: Map, generation: Map) -> Result<Recent> {
        let words = Mapping::new(bits, "RECENT", 2 * GEN_WORDS as usize)?;
        let generation = std::sync::Mutex::new(Array::try_from(generation)?);
        Ok(Recent {
            words,
            generation,
            current: AtomicU32::new(0),
        })
    }

    /// Starts a new generation: clears the older one and makes it current.
    pub fn rotate(&self) -> Result<()> {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = 1 - self.current.load(Ordering::Relaxed);
        let words = self.words.as_ptr();
        for word in 0..GEN_WORDS {
            // SAFETY: within the mapping (two generations of GEN_WORDS
            // words). Programs still set bits in the current generation,
            // not this one; its words interleave with the current one's,
            // and an aligned 8-byte store never tears a neighbour.
            unsafe { words.add(index(word, next) as usize).write_volatile(0) };
        }
        generation
            .set(0, next, 0)
            .context("switching the filter's generation")?;
        self.current.store(next, Ordering::Relaxed);
        Ok(())
    }

    /// How full the filter is now: a pass over its 8 MiB, read per scrape,
    /// not per event (0.4 ms for a sparse filter, about 2 ms for a dense
    /// one with POPCNT; twice that without it, measured on this host).
    pub fn fill(&self) -> FilterFill {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT.
            return unsafe { self.fill_popcnt() };
        }
        self.scan()
    }

    /// [`Recent::scan`] with the POPCNT instruction, which the x86_64
    /// baseline the daemon is built for lacks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn fill_popcnt(&self) -> FilterFill {
        self.scan()
    }

    #[inline(always)]
    fn scan(&self) -> FilterFill {
        let current = self.current.load(Ordering::Relaxed);
        let words = self.words.as_ptr();
        // SAFETY: within the mapping; volatile, as the kernel writes it.
        let read = |i: u32| unsafe { words.add(i as usize).read_volatile() };
        let mut fill = FilterFill {
            words: u64::from(GEN_WORDS),
            ..FilterFill::default()
        };
        for word in 0..GEN_WORDS {
            let (now, before) = (read(index(word, current)), read(index(word, 1 - current)));
            if now | before != 0 {
                fill.add_word(now, before);
            }
        }
        fill
    }
}
