//! Active closes in progress, kept by the kernel programs from
//! ESTABLISHED -> FIN_WAIT1 (the closing task's context) until the
//! timewait socket is born: who closed first travels with the birth's
//! record. The array is mapped by the daemon too, for the closes whose
//! birth the kernel never showed a program.
//!
//! Measured on Linux 6.18 under a loopback churn: a few in 100,000 runs of
//! `inet_sock_set_state` reach a `perf stat` listener but no BPF program
//! attached there (twmon's, or an empty one), not even as a recursion miss;
//! what goes unseen is FIN_WAIT1 -> FIN_WAIT2 and FIN_WAIT2 -> CLOSE of one
//! socket, whose close then stays in this array. The daemon, adopting the
//! timewait socket from a sock_diag dump, finds its closer here by the
//! four-tuple's hash.

use crate::record::Process;

/// Slots, a power of two.
pub const SLOTS: u32 = 65536;
/// Slots a close may take: an aligned group of neighbours. Two were not
/// enough at 64,000 connections a second, where a slow peer keeps
/// thousands of closes in flight: up to 0.16 % of the closes lost their
/// process to a displacement.
pub const WAYS: u32 = 4;

/// A close in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// The closing socket's address; 0 for a free slot; its low bit set
    /// once a birth hook claimed the close, [`ORPHANED`] once another
    /// socket took the address.
    pub sk: u64,
    pub process: Process,
    /// The low half of the four-tuple's [`hash`](crate::recent::hash).
    pub tuple_hash: u32,
    /// When the close began: CLOCK_MONOTONIC in units of 2^30 ns (about a
    /// second), the clock of record timestamps.
    pub began: u32,
}
const _: () = assert!(core::mem::size_of::<Slot>() == 48);

/// Set in [`Slot::sk`] when a new close of the same socket address begins:
/// the socket was freed, so this close ended without a program seeing it.
/// The slot waits for the daemon, and no longer matches the address.
pub const ORPHANED: u64 = 2;

/// Nanoseconds per unit of [`Slot::began`], as a shift.
pub const BEGAN_SHIFT: u32 = 30;

/// Whether a slot holds a close nothing has ended or claimed (orphaned
/// or not).
pub const fn is_open(s: &Slot) -> bool {
    s.sk != 0 && s.sk & 1 == 0
}
