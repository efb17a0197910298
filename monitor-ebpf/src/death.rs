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
use monitor_common::{
    OFFSET_UNKNOWN, SockOffsets,
    counters::reason,
    hooks::Hook,
    record::{TwDeath, cause},
    tcp::flags,
};

use crate::{
    common::{
        Outcome, emit, finish, netns_of, netns_wanted, offsets, stamp, tuple_of, tw_substate,
    },
    pending::peek,
    timewait::{LAST_SYN_TW, TW_SEGMENT_PENDING},
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
    finish(Hook::TimewaitPurge, freed(ctx.arg(0)));
    0
}

#[kprobe]
pub fn tcp_twsk_destructor_kprobe(ctx: ProbeContext) -> u32 {
    let outcome = ctx.arg::<u64>(0).map_or(Err(reason::READ_FAILED), freed);
    finish(Hook::TimewaitPurge, outcome);
    0
}

#[inline(always)]
fn freed(tw: u64) -> Outcome {
    if !purging() || LAST_DEATH.get(0).is_some_and(|&last| last == tw) {
        return Ok(());
    }
    died(Hook::TimewaitPurge, &offsets(), tw, cause::PURGED)
}

#[fentry(function = "inet_twsk_deschedule_put")]
pub fn inet_twsk_deschedule_put_fentry(ctx: FEntryContext) -> u32 {
    finish(Hook::TimewaitDeath, early_death(ctx.arg(0)));
    0
}

#[kprobe]
pub fn inet_twsk_deschedule_put_kprobe(ctx: ProbeContext) -> u32 {
    let outcome = ctx
        .arg::<u64>(0)
        .map_or(Err(reason::READ_FAILED), early_death);
    finish(Hook::TimewaitDeath, outcome);
    0
}

#[fentry(function = "tw_timer_handler")]
pub fn tw_timer_handler_fentry(ctx: FEntryContext) -> u32 {
    finish(Hook::TimewaitDeath, expiry(ctx.arg(0)));
    0
}

#[kprobe]
pub fn tw_timer_handler_kprobe(ctx: ProbeContext) -> u32 {
    let outcome = ctx.arg::<u64>(0).map_or(Err(reason::READ_FAILED), expiry);
    finish(Hook::TimewaitDeath, outcome);
    0
}

#[inline(always)]
fn early_death(tw: u64) -> Outcome {
    let why = if inside(IN_HASH_CONNECT) {
        cause::REUSED_BY_CONNECT
    } else if purging() {
        cause::PURGED
    } else if let Some(seg) = peek(&TW_SEGMENT_PENDING)
        && seg.ptr == tw
    {
        if seg.a & u32::from(flags::RST) != 0 {
            cause::KILLED_BY_RST
        } else {
            cause::UNKNOWN
        }
    } else if let Some(last) = LAST_SYN_TW.get_ptr_mut(0)
        && unsafe { *last } == tw
    {
        unsafe { *last = 0 };
        cause::REUSED_BY_SYN
    } else {
        cause::UNKNOWN
    };
    died(Hook::TimewaitDeath, &offsets(), tw, why)
}

#[inline(always)]
fn expiry(timer: u64) -> Outcome {
    let o = offsets();
    if o.tw_timer == OFFSET_UNKNOWN || timer < o.tw_timer as u64 {
        return Err(reason::READ_FAILED);
    }
    died(
        Hook::TimewaitDeath,
        &o,
        timer - o.tw_timer as u64,
        cause::EXPIRED,
    )
}

#[inline(always)]
fn died(hook: Hook, o: &SockOffsets, tw: u64, why: u8) -> Outcome {
    if let Some(last) = LAST_DEATH.get_ptr_mut(0) {
        unsafe { *last = tw };
    }
    let netns = netns_of(hook, o, tw);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let (fam, tuple) = tuple_of(o, tw)?;
    let substate = tw_substate(o, tw);
    emit(TwDeath::new(stamp(netns, fam), tw, tuple, substate, why))
}
