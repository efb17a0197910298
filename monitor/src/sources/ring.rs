//! The ring buffer the kernel programs write records into, read from the
//! async runtime.

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// How often the ring buffer should be drained when the kernel did not wake
/// us: the kernel programs defer wake-ups (see `emit` in monitor-ebpf) until
/// a quarter of the ring is full, so a quiet host is drained by a timer.
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Ring {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl Ring {
    pub fn new(ring: RingBuf<MapData>) -> Result<Ring> {
        // SAFETY: the RingBuf owns its map fd and closes it only when
        // dropped, and it moves into the AsyncFd, so the fd stays valid and
        // the same for the AsyncFd's whole lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow!("registering the ring buffer with the runtime: {e}"))?;
        Ok(Ring { fd })
    }

    /// Waits until the kernel wakes the reader.
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self
            .fd
            .readable_mut()
            .await
            .context("waiting on the ring buffer")?;
        // Clear readiness *before* draining: the kernel only wakes the
        // reader when it had caught up, so clearing after the drain could
        // swallow the wake-up of a record committed in between.
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record waiting to `each`, in the order they were
    /// committed; returns how many there were.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<usize> {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            each(&item)?;
            n += 1;
        }
        Ok(n)
    }
}
