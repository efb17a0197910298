//! The daemon's side of the kernel's Bloom filter of recently closed
//! four-tuples (`monitor_common::recent`): it ages the filter, flipping the
//! current generation and clearing the one that takes over, through a
//! mapping of the array (clearing 4 MiB with map updates would take half a
//! million system calls).

use std::{num::NonZeroUsize, ptr::NonNull, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, Map, MapData};
use monitor_common::recent::{GEN_WORDS, index};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// How long the kernel needs to remember a four-tuple: a timewait socket
/// lasts 60 s, and after it is cut short a new connection on its four-tuple
/// is a reincarnation for `guard` more. Each generation lives one period;
/// a four-tuple is remembered between one and two.
pub fn period(guard: Duration) -> Duration {
    Duration::from_secs(60) + guard
}

pub struct Recent {
    words: NonNull<u64>,
    len: NonZeroUsize,
    generation: Array<MapData, u32>,
    current: u32,
    /// Keeps the array's fd open as long as the mapping.
    _bits: MapData,
}

// SAFETY: the mapping belongs to this value alone (the kernel programs
// write it concurrently, which is what it is shared for), and it is only
// written through `&mut self`.
unsafe impl Send for Recent {}

impl Recent {
    pub fn new(bits: Map, generation: Map) -> Result<Recent> {
        let Map::Array(bits) = bits else {
            return Err(anyhow!("map RECENT is not an array"));
        };
        let generation: Array<MapData, u32> = Array::try_from(generation)?;
        let bytes = 2 * GEN_WORDS as usize * std::mem::size_of::<u64>();
        let len = NonZeroUsize::new(bytes).context("empty filter")?;
        // SAFETY: a fresh shared mapping of the whole array, which the
        // kernel created mmapable with exactly this size.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                bits.fd(),
                0,
            )
        }
        .context("mapping the kernel's filter of recent four-tuples")?;
        Ok(Recent {
            words: ptr.cast(),
            len,
            generation,
            current: 0,
            _bits: bits,
        })
    }

    /// Starts a new generation: clears the older one and makes it current.
    pub fn rotate(&mut self) -> Result<()> {
        let next = 1 - self.current;
        let words = self.words.as_ptr();
        for word in 0..GEN_WORDS {
            // SAFETY: within the mapping (two generations of GEN_WORDS
            // words). Programs still set bits in the current generation,
            // not this one; its words interleave with the current one's,
            // and an aligned 8-byte store never tears a neighbour.
            unsafe { words.add(index(word, next) as usize).write_volatile(0) };
        }
        self.generation
            .set(0, next, 0)
            .context("switching the filter's generation")?;
        self.current = next;
        Ok(())
    }
}

impl Drop for Recent {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        if let Err(err) = unsafe { munmap(self.words.cast(), self.len.get()) } {
            log::debug!("unmapping the filter of recent four-tuples: {err}");
        }
    }
}
