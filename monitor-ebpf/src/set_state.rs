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
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use monitor_common::{
    counters::reason,
    hooks::Hook,
    record::{Closer, StateChange, Tuple},
    tcp::{IPPROTO_TCP, family, state},
    tracepoints::set_state_tp as off,
};

use crate::common::{
    Outcome, emit, finish, netns_of, netns_wanted, offsets, sk_protocol, stamp, tuple_of,
};

const HOOK: Hook = Hook::SetState;

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old_state: i32 = ctx.arg(1);
    let new_state: i32 = ctx.arg(2);
    finish(HOOK, raw_set_state(sk, old_state as u8, new_state as u8));
    0
}

#[inline(always)]
fn raw_set_state(sk: u64, old_state: u8, new_state: u8) -> Outcome {
    let o = offsets();
    if sk_protocol(&o, sk)? != IPPROTO_TCP {
        return Ok(());
    }
    let netns = netns_of(HOOK, &o, sk);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let (fam, tuple) = tuple_of(&o, sk)?;
    let change = StateChange::new(stamp(netns, fam), sk, tuple, old_state, new_state);
    emit(change)?;
    emit_closer(&change)
}

/// After an active close, reports who closed: ESTABLISHED -> FIN_WAIT1 only
/// happens in tcp_close()/tcp_shutdown(), in the closing task's context,
/// which is the last place the process behind a future TIME_WAIT socket is
/// known (the timewait socket itself is born later, in a softirq).
#[inline(always)]
fn emit_closer(change: &StateChange) -> Outcome {
    if change.old_state != state::ESTABLISHED || change.new_state != state::FIN_WAIT1 {
        return Ok(());
    }
    let closer = Closer::new(
        change.header.stamp(),
        change.skaddr,
        bpf_get_current_pid_tgid(),
        unsafe { bpf_get_current_cgroup_id() },
        bpf_get_current_comm().unwrap_or([0u8; 16]),
        change.tuple.sport,
        change.tuple.dport,
    );
    emit(closer)
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    finish(HOOK, classic_set_state(&ctx));
    0
}

/// Reads a field of the tracepoint record.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Result<T, u32> {
    unsafe { ctx.read_at(offset) }.map_err(|_| reason::READ_FAILED)
}

#[inline(always)]
fn classic_set_state(ctx: &TracePointContext) -> Outcome {
    let protocol: u16 = field(ctx, off::PROTOCOL)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = field(ctx, off::SKADDR)?;
    let netns = netns_of(HOOK, &offsets(), skaddr);
    if !netns_wanted(netns) {
        return Ok(());
    }
    let fam: u16 = field(ctx, off::FAMILY)?;
    let old_state: i32 = field(ctx, off::OLDSTATE)?;
    let new_state: i32 = field(ctx, off::NEWSTATE)?;
    let mut tuple = Tuple {
        sport: field(ctx, off::SPORT)?,
        dport: field(ctx, off::DPORT)?,
        ..Tuple::default()
    };
    if fam == family::INET6 as u16 {
        tuple.saddr = field(ctx, off::SADDR_V6)?;
        tuple.daddr = field(ctx, off::DADDR_V6)?;
    } else {
        let s: [u8; 4] = field(ctx, off::SADDR)?;
        let d: [u8; 4] = field(ctx, off::DADDR)?;
        tuple.saddr[..4].copy_from_slice(&s);
        tuple.daddr[..4].copy_from_slice(&d);
    }
    let at = stamp(netns, fam as u8);
    let change = StateChange::new(at, skaddr, tuple, old_state as u8, new_state as u8);
    emit(change)?;
    emit_closer(&change)
}
