//! The daemon's side of the kernel's table of closes in progress
//! (`monitor_common::closing`), through a mapping of the array: which
//! slots hold a close nothing ended, and freeing one (`sources::closers`
//! decides which).

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use aya::maps::Map;
use monitor_common::closing::{SLOTS, Slot, is_open};

use super::mapping::Mapping;

pub struct Closing {
    slots: Mapping<Slot>,
}

/// A slot as read: freed only if it still holds the same close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub index: usize,
    pub sk: u64,
}

// SAFETY: the mapping belongs to this value alone; the daemon reads slots
// with volatile loads and frees them only with a compare-and-swap of their
// aligned first word, which the kernel programs' plain stores cannot tear.
unsafe impl Send for Closing {}
unsafe impl Sync for Closing {}

impl Closing {
    pub fn new(map: Map) -> Result<Closing> {
        Ok(Closing {
            slots: Mapping::new(map, "CLOSING", SLOTS as usize)?,
        })
    }

    /// The slots holding a close nothing ended or claimed, by index.
    pub fn open(&self) -> Vec<(usize, Slot)> {
        (0..SLOTS as usize)
            .filter_map(|i| {
                // SAFETY: within the mapping; volatile, as the kernel
                // writes it. A slot torn by a concurrent write is caught
                // by the compare-and-swap that frees it.
                let s = unsafe { self.slots.as_ptr().add(i).read_volatile() };
                is_open(&s).then_some((i, s))
            })
            .collect()
    }

    /// Frees a slot if it still holds the close it held when read.
    pub fn free(&self, Held { index: i, sk }: Held) -> bool {
        if i >= SLOTS as usize {
            return false;
        }
        // SAFETY: `sk` is the slot's first field, 8-aligned within the
        // page-aligned mapping (slots are 48 bytes).
        let word = unsafe { AtomicU64::from_ptr(self.slots.as_ptr().add(i).cast::<u64>()) };
        word.compare_exchange(sk, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}
