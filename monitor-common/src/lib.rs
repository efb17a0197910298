//! The contract between twmon's kernel programs (`monitor-ebpf`) and its
//! daemon (`monitor`): both crates build against this one, so a change on
//! one side that the other does not see is a build error, not a misread.
//!
//! - [`record`]: the records the programs put in the ring buffer, one module
//!   per record type, each with named fields, a size pinned at compile time,
//!   the constructor the kernel side packs with and the [`record::unpack`]
//!   the daemon reads with;
//! - [`tcp`]: the kernel's numbering of TCP states, flags, timewait verdicts
//!   and address families;
//! - [`hooks`] and [`counters`]: which hook counts what, in the per-CPU
//!   counters the daemon sums on scrape;
//! - [`names`]: the names of maps, programs and load-time globals;
//! - [`recent`]: the kernel's Bloom filter of four-tuples recently closed;
//! - [`offsets`]: struct field offsets resolved from kernel BTF;
//! - [`tracepoints`]: the tracepoint record layouts the programs read.
#![no_std]

pub mod closing;
pub mod counters;
pub mod hooks;
pub mod names;
pub mod offsets;
pub mod recent;
pub mod record;
pub mod tcp;
pub mod tracepoints;

pub use offsets::{OFFSET_UNKNOWN, SockOffsets};
