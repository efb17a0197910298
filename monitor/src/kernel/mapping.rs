//! A shared mapping of a whole mmapable BPF array (`BPF_F_MMAPABLE`),
//! for arrays the daemon reads or clears wholesale, where map syscalls
//! would cost one call per element.

use std::{num::NonZeroUsize, ptr::NonNull};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Map, MapData};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

pub struct Mapping<T> {
    start: NonNull<T>,
    len: NonZeroUsize,
    /// Keeps the array's fd open as long as the mapping.
    _map: MapData,
}

impl<T> Mapping<T> {
    /// Maps `count` elements of array `name`, which the kernel programs
    /// declared mmapable with exactly that many.
    pub fn new(map: Map, name: &str, count: usize) -> Result<Mapping<T>> {
        let Map::Array(map) = map else {
            return Err(anyhow!("map {name} is not an array"));
        };
        let bytes = count * std::mem::size_of::<T>();
        let len = NonZeroUsize::new(bytes).with_context(|| format!("map {name} is empty"))?;
        // SAFETY: a fresh shared mapping of the whole array.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                map.fd(),
                0,
            )
        }
        .with_context(|| format!("mapping the kernel's {name} array"))?;
        Ok(Mapping {
            start: ptr.cast(),
            len,
            _map: map,
        })
    }

    /// The first element; `count` of them follow.
    pub fn as_ptr(&self) -> *mut T {
        self.start.as_ptr()
    }
}

impl<T> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        if let Err(err) = unsafe { munmap(self.start.cast(), self.len.get()) } {
            log::debug!("unmapping a kernel array: {err}");
        }
    }
}
