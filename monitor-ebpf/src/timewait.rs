//! Birth of timewait sockets, and births refused.
//!
//! `tcp_time_wait(sk, state, timeo)` calls `inet_twsk_alloc()` exactly
//! once; a NULL return means tcp_max_tw_buckets is full (or memory is
//! short) and the connection closes with no TIME_WAIT protection. The entry
//! of `tcp_time_wait` pushes its arguments on a small per-CPU stack and the
//! return of `inet_twsk_alloc` pops them, because a kretprobe sees only the
//! return value. A stack, not a slot: in process context (socket backlog
//! processing) a softirq can run another `tcp_time_wait` in between on the
//! same CPU, and calls nest strictly.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::PerCpuArray,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use monitor_common::{Event, counter, kind};

use crate::common::{bump, emit, netns_of, netns_wanted, tuple_of};

/// Nesting depth tracked per CPU; a power of two (see the index masks).
const DEPTH: usize = 4;

#[derive(Clone, Copy)]
#[repr(C)]
struct Pending {
    sk: u64,
    state: u32,
    timeo: u32,
}

#[repr(C)]
pub struct PendingStack {
    depth: u32,
    _pad: u32,
    slots: [Pending; DEPTH],
}

#[map]
static TW_PENDING: PerCpuArray<PendingStack> = PerCpuArray::with_max_entries(1, 0);

#[fentry(function = "tcp_time_wait")]
pub fn tcp_time_wait_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let state: i32 = ctx.arg(1);
    let timeo: i32 = ctx.arg(2);
    push(sk, state as u32, timeo as u32);
    0
}

#[kprobe]
pub fn tcp_time_wait_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(state), Some(timeo)) =
        (ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2))
    else {
        return 0;
    };
    push(sk, state as u32, timeo as u32);
    0
}

#[fexit(function = "inet_twsk_alloc")]
pub fn inet_twsk_alloc_fexit(ctx: FExitContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    // The return value follows the three arguments in the fexit context.
    let tw: u64 = ctx.arg(3);
    pop(Some(sk), tw);
    0
}

#[kretprobe]
pub fn inet_twsk_alloc_kretprobe(ctx: RetProbeContext) -> u32 {
    let tw: u64 = ctx.ret();
    pop(None, tw);
    0
}

#[inline(always)]
fn push(sk: u64, state: u32, timeo: u32) {
    let Some(stack) = TW_PENDING.get_ptr_mut(0) else {
        return;
    };
    let stack = unsafe { &mut *stack };
    let depth = stack.depth;
    if (depth as usize) < DEPTH {
        // The mask keeps the index provably in bounds for the verifier.
        stack.slots[depth as usize & (DEPTH - 1)] = Pending { sk, state, timeo };
    }
    stack.depth = depth.saturating_add(1);
}

/// `sk` is known in fexit mode and checked against the pending entry; a
/// kretprobe trusts the stack.
#[inline(always)]
fn pop(sk: Option<u64>, tw: u64) {
    let Some(stack) = TW_PENDING.get_ptr_mut(0) else {
        return;
    };
    let stack = unsafe { &mut *stack };
    if stack.depth == 0 {
        // inet_twsk_alloc called from elsewhere (DCCP on old kernels).
        return;
    }
    let depth = stack.depth - 1;
    stack.depth = depth;
    if depth as usize >= DEPTH {
        // Nested deeper than tracked: that entry was never stored.
        bump(counter::TW_UNPAIRED);
        return;
    }
    let pending = stack.slots[depth as usize & (DEPTH - 1)];
    if sk.is_some_and(|sk| sk != pending.sk) {
        bump(counter::TW_UNPAIRED);
        return;
    }
    let netns = netns_of(pending.sk);
    if !netns_wanted(netns) {
        return;
    }
    let Ok(t) = tuple_of(pending.sk) else {
        return;
    };
    let (kind, skaddr) = if tw != 0 {
        (kind::TW_BIRTH, tw)
    } else {
        (kind::TW_OVERFLOW, pending.sk)
    };
    emit(Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr,
        netns,
        kind,
        family: t.family,
        old_state: 0,
        new_state: pending.state as u8,
        sport: t.sport,
        dport: t.dport,
        aux: pending.timeo,
        saddr: t.saddr,
        daddr: t.daddr,
    });
}
