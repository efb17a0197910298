//! A per-CPU stack pairing a function's entry with its return.
//!
//! A kretprobe sees only the return value, so what the entry knew (its
//! arguments) is pushed here and popped at return. A stack, not a slot:
//! in process context a softirq can run the same hooks in between on the
//! same CPU, and calls nest strictly.

use aya_ebpf::maps::PerCpuArray;
use monitor_common::counters::reason;

/// Nesting depth tracked per CPU; a power of two (see the index masks).
pub const DEPTH: usize = 4;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pending {
    pub ptr: u64,
    pub a: u32,
    pub b: u32,
}

#[repr(C)]
pub struct PendingStack {
    depth: u32,
    _pad: u32,
    slots: [Pending; DEPTH],
}

/// `index` masked into `0..DEPTH` in a way the verifier can see. LLVM
/// drops a mask it can prove redundant (the callers already checked the
/// range) and the verifier, which tracks ranges less precisely through
/// 32-bit arithmetic, then rejects the access; the volatile read hides the
/// range from LLVM so the mask stays.
#[inline(always)]
fn bounded(index: u32) -> usize {
    let index = unsafe { core::ptr::read_volatile(&index) };
    index as usize & (DEPTH - 1)
}

#[inline(always)]
pub fn push(map: &PerCpuArray<PendingStack>, entry: Pending) {
    let Some(stack) = map.get_ptr_mut(0) else {
        return;
    };
    let stack = unsafe { &mut *stack };
    let depth = stack.depth;
    if (depth as usize) < DEPTH {
        stack.slots[bounded(depth)] = entry;
    }
    // Counted on: a return popping past DEPTH reports the loss.
    stack.depth = depth.saturating_add(1);
}

/// The entry pushed by the matching call. `Ok(None)` when the stack is
/// empty (the function was called before the program attached); `Err`
/// when the entry was not stored (nested deeper than tracked) or `ptr`
/// (known in fexit mode) does not match it.
#[inline(always)]
pub fn pop(map: &PerCpuArray<PendingStack>, ptr: Option<u64>) -> Result<Option<Pending>, u32> {
    let Some(stack) = map.get_ptr_mut(0) else {
        return Ok(None);
    };
    let stack = unsafe { &mut *stack };
    if stack.depth == 0 {
        return Ok(None);
    }
    let depth = stack.depth - 1;
    stack.depth = depth;
    if depth as usize >= DEPTH {
        return Err(reason::TOO_DEEP);
    }
    let pending = stack.slots[bounded(depth)];
    if ptr.is_some_and(|p| p != pending.ptr) {
        return Err(reason::UNPAIRED);
    }
    Ok(Some(pending))
}

/// The innermost pending entry, without popping it.
#[inline(always)]
pub fn peek(map: &PerCpuArray<PendingStack>) -> Option<Pending> {
    let stack = map.get_ptr_mut(0)?;
    let stack = unsafe { &*stack };
    let depth = stack.depth;
    if depth == 0 || depth as usize > DEPTH {
        return None;
    }
    Some(stack.slots[bounded(depth - 1)])
}
