//! The kernel programs' log records (aya-log, only on their error paths),
//! forwarded into the daemon's own log with their level.

use tokio::io::{Interest, unix::AsyncFd};

use crate::kernel::KernelLog;

/// Forwards records as they come, for as long as the daemon runs.
pub async fn forward(logger: KernelLog) {
    // SAFETY: the logger owns its ring buffer's fd and closes it only when
    // dropped; it moves into the AsyncFd, so the fd stays valid and the
    // same for the AsyncFd's whole lifetime.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(err) => {
            log::warn!("cannot wait on the kernel programs' log: {err}");
            return;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else {
            return;
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
