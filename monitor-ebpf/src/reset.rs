//! `tcp:tcp_send_reset` from a timewait socket: TIME_WAIT (or its
//! FIN_WAIT2 substate) answering with an RST. The only view of TIME_WAIT
//! refusing segments on kernels where the segment hook cannot attach.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{
    counters::reason, hooks::Hook, record::ResetSent, tcp::state, tracepoints::reset_tp,
};

use crate::common::{
    Outcome, emit, finish, netns_of, netns_wanted, offsets, stamp, tuple_of, tw_substate,
};

const HOOK: Hook = Hook::TimewaitResetSent;

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    finish(HOOK, reset_sent(&ctx));
    0
}

#[inline(always)]
fn reset_sent(ctx: &TracePointContext) -> Outcome {
    let sk_state: i32 = unsafe { ctx.read_at(reset_tp::STATE) }.map_err(|_| reason::READ_FAILED)?;
    // What `sk_state` reads for any timewait socket, whatever its substate.
    if sk_state != i32::from(state::TIME_WAIT) {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(reset_tp::SKADDR) }.map_err(|_| reason::READ_FAILED)?;
    if sk == 0 {
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
