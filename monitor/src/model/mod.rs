//! The daemon's vocabulary: plain types every layer above the kernel
//! shares, with no I/O of their own.
//!
//! - [`tcp`]: states, families, four-tuples;
//! - [`event`]: what the kernel reports, decoded;
//! - [`snapshot`]: what sock_diag dumps show;
//! - [`hooks`]: which hooks are attached, and how.

pub mod event;
pub mod hooks;
pub mod snapshot;
pub mod tcp;
