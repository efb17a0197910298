//! The one async runtime every command runs on: a single thread. twmon's
//! work is one event loop, a sock_diag worker (its own thread) and a few
//! HTTP connections; a second runtime thread would only take CPU from the
//! hosts it watches.

use anyhow::{Context as _, Result};
use tokio::runtime::Runtime;

pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
