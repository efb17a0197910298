//! `tcp:tcp_send_reset` from a timewait socket: TIME_WAIT (or its
//! FIN_WAIT2 substate) answering with an RST. The only view of TIME_WAIT
//! refusing segments on kernels where the segment hook cannot attach.
//!
//! The raw tracepoint is preferred, as for state changes: the classic one
//! is skipped whenever its RST is sent from a softirq that interrupted any
//! other kprobe or classic tracepoint program on the CPU (the syscall
//! hooks), which in a loopback churn was 63 of 13,048 RSTs. The classic
//! one remains for kernels whose BTF lacks `skc_state`.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use monitor_common::{
    counters::reason, hooks::Hook, record::ResetSent, tcp::state, tracepoints::reset_tp,
};

use crate::common::{
    Outcome, emit, finish, netns_of, netns_wanted, offsets, read, stamp, tuple_of, tw_substate,
};

const HOOK: Hook = Hook::TimewaitResetSent;

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset_raw(ctx: RawTracePointContext) -> u32 {
    // The socket is the first argument on every kernel (6.10 added the
    // reason after the skb).
    let sk: u64 = ctx.arg(0);
    let outcome = match sk {
        0 => Ok(()),
        sk => read::<u8>(sk, offsets().skc_state).and_then(|st| reset_sent(sk, st)),
    };
    finish(HOOK, outcome);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    finish(HOOK, classic_reset_sent(&ctx));
    0
}

#[inline(always)]
fn classic_reset_sent(ctx: &TracePointContext) -> Outcome {
    let sk_state: i32 = unsafe { ctx.read_at(reset_tp::STATE) }.map_err(|_| reason::READ_FAILED)?;
    let sk: u64 = unsafe { ctx.read_at(reset_tp::SKADDR) }.map_err(|_| reason::READ_FAILED)?;
    reset_sent(sk, sk_state as u8)
}

/// An RST sent from socket `sk` (0 for none) in state `sk_state`.
#[inline(always)]
fn reset_sent(sk: u64, sk_state: u8) -> Outcome {
    // What `sk_state` reads for any timewait socket, whatever its substate.
    if sk_state != state::TIME_WAIT || sk == 0 {
        return Ok(());
    }
    let o = offsets();
    let netns = netns_of(HOOK, &o, sk);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let (fam, tuple) = tuple_of(&o, sk)?;
    emit(ResetSent::new(
        stamp(netns, fam),
        sk,
        tuple,
        tw_substate(&o, sk),
    ))
}
