//! Timewait sockets: their birth (or refusal), and the segments they
//! absorb.
//!
//! Birth: `tcp_time_wait(sk, state, timeo)` calls `inet_twsk_alloc()`
//! exactly once; a NULL return means tcp_max_tw_buckets is full (or memory
//! is short) and the connection closes with no TIME_WAIT protection.
//!
//! Segments: `tcp_timewait_state_process(tw, skb, th, ...)` handles every
//! segment that reaches a timewait socket; its return value is the verdict
//! (`enum tcp_tw_status`). Its first three parameters are the same on 6.1
//! and 6.18 (which added two more after them).
//!
//! Each hook's entry pushes what it needs on a per-CPU stack (see
//! `pending`) and the return pops it.

use aya_ebpf::{
    EbpfContext as _,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::PerCpuArray,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use monitor_common::{
    counters::reason,
    hooks::Hook,
    record::{TwAlloc, TwSegment},
    tcp::{flags as tcp_flags, verdict},
};

use crate::{
    closing,
    common::{
        Kmem as _, Outcome, Probe, emit, finish, netns_of, netns_wanted, offsets, read, stamp,
        tuple_of, tw_substate,
    },
    pending::{Pending, PendingStack, pop, push},
};

#[map]
static TW_BIRTH_PENDING: PerCpuArray<PendingStack> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static TW_SEGMENT_PENDING: PerCpuArray<PendingStack> = PerCpuArray::with_max_entries(1, 0);

/// The timewait socket whose last segment on this CPU was a SYN the kernel
/// accepted (verdict TCP_TW_SYN): the caller then kills it, after
/// tcp_timewait_state_process has returned.
#[map]
pub static LAST_SYN_TW: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// ---- birth ---------------------------------------------------------------

#[fentry(function = "tcp_time_wait")]
pub fn tcp_time_wait_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let state: i32 = ctx.arg(1);
    let timeo: i32 = ctx.arg(2);
    birth_entry(sk, state, timeo);
    0
}

#[kprobe]
pub fn tcp_time_wait_kprobe(ctx: ProbeContext) -> u32 {
    match (ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2)) {
        (Some(sk), Some(state), Some(timeo)) => birth_entry(sk, state, timeo),
        _ => finish(Hook::TimewaitBirth, Err(reason::READ_FAILED)),
    }
    0
}

#[fexit(function = "inet_twsk_alloc")]
pub fn inet_twsk_alloc_fexit(ctx: FExitContext) -> u32 {
    // The socket as a plain number, copied from the context: the verifier
    // allows no hashing of the typed pointer (see `closing`), and the
    // compiler would hash it, being equal to the one pushed at entry.
    let sk = match Probe::load::<u64>(ctx.as_ptr() as u64) {
        Ok(sk) => sk,
        Err(why) => {
            finish(Hook::TimewaitBirth, Err(why));
            return 0;
        }
    };
    // The return value follows the three arguments in the fexit context.
    let tw: u64 = ctx.arg(3);
    finish(Hook::TimewaitBirth, birth_return(Some(sk), tw));
    0
}

#[kretprobe]
pub fn inet_twsk_alloc_kretprobe(ctx: RetProbeContext) -> u32 {
    let tw: u64 = ctx.ret();
    finish(Hook::TimewaitBirth, birth_return(None, tw));
    0
}

#[inline(always)]
fn birth_entry(sk: u64, state: i32, timeo: i32) {
    push(
        &TW_BIRTH_PENDING,
        Pending {
            ptr: sk,
            a: state as u32,
            b: timeo as u32,
        },
    );
}

#[inline(always)]
fn birth_return(sk: Option<u64>, tw: u64) -> Outcome {
    let Some(pending) = pop(&TW_BIRTH_PENDING, sk)? else {
        return Ok(());
    };
    // Four-tuple and namespace from the full socket: the timewait socket
    // is not filled in yet when inet_twsk_alloc returns.
    let o = offsets();
    let netns = netns_of(Hook::TimewaitBirth, &o, pending.ptr);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let (fam, tuple) = tuple_of(&o, pending.ptr)?;
    let at = stamp(netns, fam);
    // The close this birth ends: its record carries who closed first, and
    // the CLOSE transition that follows has nothing left to report.
    let process = closing::claim(pending.ptr);
    let alloc = TwAlloc::new(
        at,
        pending.ptr,
        tw,
        process,
        tuple,
        pending.a as u8,
        pending.b,
    );
    emit(alloc)
}

// ---- segments ------------------------------------------------------------

#[fentry(function = "tcp_timewait_state_process")]
pub fn tcp_timewait_state_process_fentry(ctx: FEntryContext) -> u32 {
    let tw: u64 = ctx.arg(0);
    let th: u64 = ctx.arg(2);
    segment_entry(tw, th);
    0
}

#[kprobe]
pub fn tcp_timewait_state_process_kprobe(ctx: ProbeContext) -> u32 {
    match (ctx.arg::<u64>(0), ctx.arg::<u64>(2)) {
        (Some(tw), Some(th)) => segment_entry(tw, th),
        _ => finish(Hook::TimewaitSegments, Err(reason::READ_FAILED)),
    }
    0
}

// The verdict follows the parameters in the fexit context, and their
// number differs (3 on 6.1, 5 on 6.18): one program per signature, the
// daemon loads the one matching the kernel's BTF. (bpf_get_func_ret would
// avoid that, but the 6.1 verifier's precision tracking can make it read
// 0; seen as SYN verdicts that never showed.)
#[fexit(function = "tcp_timewait_state_process")]
pub fn tcp_timewait_state_process_fexit3(ctx: FExitContext) -> u32 {
    let verdict: i32 = ctx.arg(3);
    finish(
        Hook::TimewaitSegments,
        segment_return(Some(ctx.arg(0)), verdict),
    );
    0
}

#[fexit(function = "tcp_timewait_state_process")]
pub fn tcp_timewait_state_process_fexit5(ctx: FExitContext) -> u32 {
    let verdict: i32 = ctx.arg(5);
    finish(
        Hook::TimewaitSegments,
        segment_return(Some(ctx.arg(0)), verdict),
    );
    0
}

#[kretprobe]
pub fn tcp_timewait_state_process_kretprobe(ctx: RetProbeContext) -> u32 {
    let verdict: i32 = ctx.ret();
    finish(Hook::TimewaitSegments, segment_return(None, verdict));
    0
}

#[inline(always)]
fn segment_entry(tw: u64, th: u64) {
    // A flags byte that cannot be read is 0: the segment still counts, as
    // "other".
    let flags: u8 = read(th, tcp_flags::OFFSET).unwrap_or(0);
    // The substate before processing: a FIN turns FIN_WAIT2 into TIME_WAIT.
    let substate = tw_substate(&offsets(), tw);
    push(
        &TW_SEGMENT_PENDING,
        Pending {
            ptr: tw,
            a: u32::from(flags),
            b: u32::from(substate),
        },
    );
}

#[inline(always)]
fn segment_return(tw: Option<u64>, verdict: i32) -> Outcome {
    let Some(pending) = pop(&TW_SEGMENT_PENDING, tw)? else {
        return Ok(());
    };
    let verdict = verdict as u8;
    if verdict == verdict::SYN
        && let Some(slot) = LAST_SYN_TW.get_ptr_mut(0)
    {
        unsafe { *slot = pending.ptr };
    }
    let o = offsets();
    let netns = netns_of(Hook::TimewaitSegments, &o, pending.ptr);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let (fam, tuple) = tuple_of(&o, pending.ptr)?;
    let segment = TwSegment::new(
        stamp(netns, fam),
        pending.ptr,
        tuple,
        pending.a as u8,
        pending.b as u8,
        verdict,
    );
    emit(segment)
}
