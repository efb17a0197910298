//! `sock:inet_sock_set_state`: every TCP state transition, both ends, both
//! families, in two flavours.
//!
//! The raw tracepoint is preferred: the classic one runs under the global
//! per-CPU `bpf_prog_active` guard, so while any kprobe or classic
//! tracepoint program runs on a CPU, a transition made by a softirq that
//! interrupts it is dropped, and kernels before 6.7 do not even count the
//! drop. Raw tracepoints only guard against their own program's recursion
//! (and count it). The classic tracepoint remains for kernels where the
//! socket fields cannot be resolved from BTF; it works on every kernel
//! since 4.16.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_get_current_cgroup_id,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use monitor_common::{Event, IPPROTO_TCP, family, kind, set_state_tp as off};

use crate::common::{emit, netns_of, netns_wanted, offsets, sk_protocol, tuple_of};

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old_state: i32 = ctx.arg(1);
    let new_state: i32 = ctx.arg(2);
    let _ = raw_set_state(sk, old_state, new_state);
    0
}

#[inline(always)]
fn raw_set_state(sk: u64, old_state: i32, new_state: i32) -> Result<(), i32> {
    let o = offsets();
    if sk_protocol(&o, sk)? != IPPROTO_TCP {
        return Ok(());
    }
    let netns = netns_of(&o, sk);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let t = tuple_of(&o, sk)?;
    let event = Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr: sk,
        netns,
        kind: kind::STATE_CHANGE,
        family: t.family,
        old_state: old_state as u8,
        new_state: new_state as u8,
        sport: t.sport,
        dport: t.dport,
        aux: 0,
        saddr: t.saddr,
        daddr: t.daddr,
    };
    emit(event);
    emit_closer(&event);
    Ok(())
}

/// `TCP_ESTABLISHED` and `TCP_FIN_WAIT1` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;
const TCP_FIN_WAIT1: u8 = 4;

/// After an active close, reports who closed: ESTABLISHED -> FIN_WAIT1 only
/// happens in tcp_close()/tcp_shutdown(), in the closing task's context,
/// which is the last place the process behind a future TIME_WAIT socket is
/// known (the timewait socket itself is born later, in a softirq).
#[inline(always)]
fn emit_closer(change: &Event) {
    if change.old_state != TCP_ESTABLISHED || change.new_state != TCP_FIN_WAIT1 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let cgroup = unsafe { bpf_get_current_cgroup_id() }.to_le_bytes();
    let tid = (pid_tgid as u32).to_le_bytes();
    let mut daddr = [0u8; 16];
    daddr[..8].copy_from_slice(&cgroup);
    daddr[8..12].copy_from_slice(&tid);
    emit(Event {
        kind: kind::CLOSER,
        aux: (pid_tgid >> 32) as u32,
        saddr: bpf_get_current_comm().unwrap_or([0u8; 16]),
        daddr,
        ..*change
    });
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

#[inline(always)]
fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let protocol: u16 = unsafe { ctx.read_at(off::PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(off::SKADDR)? };
    let netns = netns_of(&offsets(), skaddr);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let fam: u16 = unsafe { ctx.read_at(off::FAMILY)? };
    let old_state: i32 = unsafe { ctx.read_at(off::OLDSTATE)? };
    let new_state: i32 = unsafe { ctx.read_at(off::NEWSTATE)? };
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if fam == family::INET6 as u16 {
        saddr = unsafe { ctx.read_at(off::SADDR_V6)? };
        daddr = unsafe { ctx.read_at(off::DADDR_V6)? };
    } else {
        let s: [u8; 4] = unsafe { ctx.read_at(off::SADDR)? };
        let d: [u8; 4] = unsafe { ctx.read_at(off::DADDR)? };
        saddr[..4].copy_from_slice(&s);
        daddr[..4].copy_from_slice(&d);
    }
    let event = Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr,
        netns,
        kind: kind::STATE_CHANGE,
        family: fam as u8,
        old_state: old_state as u8,
        new_state: new_state as u8,
        sport: unsafe { ctx.read_at(off::SPORT)? },
        dport: unsafe { ctx.read_at(off::DPORT)? },
        aux: 0,
        saddr,
        daddr,
    };
    emit(event);
    emit_closer(&event);
    Ok(())
}
