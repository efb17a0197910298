//! `tcp:tcp_send_reset` from a timewait socket: TIME_WAIT (or its
//! FIN_WAIT2 substate) answering with an RST. The only view of TIME_WAIT
//! refusing segments on kernels where the segment hook cannot attach.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use monitor_common::{Event, kind, reset_tp};

use crate::common::{emit, netns_of, netns_wanted, offsets, tuple_of, tw_substate};

/// `TCP_TIME_WAIT`: what `sk_state` reads for any timewait socket.
const TCP_TIME_WAIT: i32 = 6;

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_send_reset(&ctx);
    0
}

#[inline(always)]
fn try_tcp_send_reset(ctx: &TracePointContext) -> Result<(), i32> {
    let state: i32 = unsafe { ctx.read_at(reset_tp::STATE)? };
    if state != TCP_TIME_WAIT {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(reset_tp::SKADDR)? };
    if sk == 0 {
        return Ok(());
    }
    let o = offsets();
    let netns = netns_of(&o, sk);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let t = tuple_of(&o, sk)?;
    emit(Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr: sk,
        netns,
        kind: kind::TW_RESET_SENT,
        family: t.family,
        old_state: 0,
        new_state: tw_substate(&o, sk).unwrap_or(0),
        sport: t.sport,
        dport: t.dport,
        aux: 0,
        saddr: t.saddr,
        daddr: t.daddr,
    });
    Ok(())
}
