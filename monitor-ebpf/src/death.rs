//! Deaths of timewait sockets, and why.
//!
//! Expiry: `tw_timer_handler(timer)` (static, but a timer callback, so
//! never inlined) gets the socket's `tw_timer`. Early death:
//! `inet_twsk_deschedule_put(tw)`, called by every path that kills a
//! timewait socket before its time; the cause is what it was called from,
//! tracked per CPU by the other hooks here:
//! - inside `__inet_hash_connect` (IPv4 and IPv6): a connect() took the
//!   four-tuple over (the kill happens after `__inet_check_established`
//!   hands the timewait socket back, still inside);
//! - inside `inet_twsk_purge`: the namespace is going away (see below);
//! - inside `tcp_timewait_state_process` for this socket with an RST: TIME_WAIT
//!   assassination;
//! - right after that function accepted a SYN for this socket: reuse by
//!   SYN.
//!
//! When a timer fires while an early kill is racing it, both hooks report;
//! the daemon keeps the first death of each birth.
//!
//! Purge: a namespace's teardown kills its timewait sockets in
//! `inet_twsk_purge`, and on some builds (Debian's 6.1, measured) the kill
//! is inlined there, so neither hook above runs. The one call on that path
//! that cannot be inlined is the free's indirect call of the protocol's
//! `twsk_destructor` (`tcp_twsk_destructor`): it runs once per timewait
//! socket, when its last reference goes. A destructor run by the purging
//! task for a socket no hook reported dead on this CPU is a purge.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use monitor_common::{SockOffsets, death_cause, kind};

use crate::{
    common::{offsets, tw_substate},
    pending::peek,
    timewait::{LAST_SYN_TW, TW_SEGMENT_PENDING, report},
};

/// Per-CPU depth of the calls that give an early death its cause.
#[map]
static CONTEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
const IN_HASH_CONNECT: u32 = 0;

/// The thread inside `inet_twsk_purge`, 0 when none. Not per CPU: the
/// purge walks the whole hash table with `cond_resched()` between
/// sockets, so the thread may move to another CPU, and others may run on
/// its CPU meanwhile. One slot is enough: namespaces are torn down by one
/// ordered workqueue, one batch at a time.
#[map]
static PURGER: Array<u32> = Array::with_max_entries(1, 0);

/// The last timewait socket reported dead on this CPU: its destructor
/// usually runs right after, in the same call, and must not report again.
#[map]
static LAST_DEATH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const RST: u32 = 0x04;

#[inline(always)]
fn enter(slot: u32) {
    if let Some(depth) = CONTEXT.get_ptr_mut(slot) {
        unsafe { *depth = (*depth).saturating_add(1) };
    }
}

#[inline(always)]
fn leave(slot: u32) {
    if let Some(depth) = CONTEXT.get_ptr_mut(slot) {
        unsafe { *depth = (*depth).saturating_sub(1) };
    }
}

#[inline(always)]
fn inside(slot: u32) -> bool {
    CONTEXT.get(slot).is_some_and(|d| *d > 0)
}

macro_rules! context_hooks {
    ($slot:expr, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident, $func:literal) => {
        #[fentry(function = $func)]
        pub fn $fentry(_ctx: FEntryContext) -> u32 {
            enter($slot);
            0
        }

        #[fexit(function = $func)]
        pub fn $fexit(_ctx: FExitContext) -> u32 {
            leave($slot);
            0
        }

        #[kprobe]
        pub fn $kprobe(_ctx: ProbeContext) -> u32 {
            enter($slot);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(_ctx: RetProbeContext) -> u32 {
            leave($slot);
            0
        }
    };
}

context_hooks!(
    IN_HASH_CONNECT,
    inet_hash_connect_fentry,
    inet_hash_connect_fexit,
    inet_hash_connect_kprobe,
    inet_hash_connect_kretprobe,
    "__inet_hash_connect"
);
#[inline(always)]
fn current_tid() -> u32 {
    // The lower half is the thread id.
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn purge_enter() {
    if let Some(slot) = PURGER.get_ptr_mut(0) {
        unsafe { *slot = current_tid() };
    }
}

#[inline(always)]
fn purge_leave() {
    if let Some(slot) = PURGER.get_ptr_mut(0)
        && unsafe { *slot } == current_tid()
    {
        unsafe { *slot = 0 };
    }
}

#[inline(always)]
fn purging() -> bool {
    PURGER
        .get(0)
        .is_some_and(|&tid| tid != 0 && tid == current_tid())
}

#[fentry(function = "inet_twsk_purge")]
pub fn inet_twsk_purge_fentry(_ctx: FEntryContext) -> u32 {
    purge_enter();
    0
}

#[fexit(function = "inet_twsk_purge")]
pub fn inet_twsk_purge_fexit(_ctx: FExitContext) -> u32 {
    purge_leave();
    0
}

#[kprobe]
pub fn inet_twsk_purge_kprobe(_ctx: ProbeContext) -> u32 {
    purge_enter();
    0
}

#[kretprobe]
pub fn inet_twsk_purge_kretprobe(_ctx: RetProbeContext) -> u32 {
    purge_leave();
    0
}

#[fentry(function = "tcp_twsk_destructor")]
pub fn tcp_twsk_destructor_fentry(ctx: FEntryContext) -> u32 {
    freed(ctx.arg(0));
    0
}

#[kprobe]
pub fn tcp_twsk_destructor_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(tw) = ctx.arg::<u64>(0) {
        freed(tw);
    }
    0
}

#[inline(always)]
fn freed(tw: u64) {
    if !purging() || LAST_DEATH.get(0).is_some_and(|&last| last == tw) {
        return;
    }
    died(&offsets(), tw, death_cause::PURGED);
}

#[fentry(function = "inet_twsk_deschedule_put")]
pub fn inet_twsk_deschedule_put_fentry(ctx: FEntryContext) -> u32 {
    early_death(ctx.arg(0));
    0
}

#[kprobe]
pub fn inet_twsk_deschedule_put_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(tw) = ctx.arg::<u64>(0) {
        early_death(tw);
    }
    0
}

#[fentry(function = "tw_timer_handler")]
pub fn tw_timer_handler_fentry(ctx: FEntryContext) -> u32 {
    expiry(ctx.arg(0));
    0
}

#[kprobe]
pub fn tw_timer_handler_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(timer) = ctx.arg::<u64>(0) {
        expiry(timer);
    }
    0
}

#[inline(always)]
fn early_death(tw: u64) {
    let cause = if inside(IN_HASH_CONNECT) {
        death_cause::REUSED_BY_CONNECT
    } else if purging() {
        death_cause::PURGED
    } else if let Some(seg) = peek(&TW_SEGMENT_PENDING)
        && seg.ptr == tw
    {
        if seg.a & RST != 0 {
            death_cause::KILLED_BY_RST
        } else {
            death_cause::UNKNOWN
        }
    } else if let Some(last) = LAST_SYN_TW.get_ptr_mut(0)
        && unsafe { *last } == tw
    {
        unsafe { *last = 0 };
        death_cause::REUSED_BY_SYN
    } else {
        death_cause::UNKNOWN
    };
    died(&offsets(), tw, cause);
}

#[inline(always)]
fn expiry(timer: u64) {
    let o = offsets();
    if o.tw_timer == monitor_common::OFFSET_UNKNOWN || timer < o.tw_timer as u64 {
        return;
    }
    died(&o, timer - o.tw_timer as u64, death_cause::EXPIRED);
}

#[inline(always)]
fn died(o: &SockOffsets, tw: u64, cause: u32) {
    if let Some(last) = LAST_DEATH.get_ptr_mut(0) {
        unsafe { *last = tw };
    }
    let substate = tw_substate(o, tw).unwrap_or(0);
    report(o, kind::TW_DEATH, tw, tw, substate, cause);
}
