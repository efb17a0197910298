//! `connect()` failing with EADDRNOTAVAIL: the kernel found no free local
//! port, i.e. no unused four-tuple toward that destination. Seen through
//! the syscall tracepoints, which exist even on kernels without kprobes.
//!
//! They run for every connect() on the host, whatever the protocol, so the
//! entry does the least it can: it notes the caller's sockaddr pointer in a
//! slot of its thread. Only a call that failed with EADDRNOTAVAIL reads the
//! destination (still in the caller's memory: it is the same thread) and
//! its namespace at exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use monitor_common::{
    counters::reason, hooks::Hook, record::ConnectFailure, tcp::family, tracepoints::connect_tp,
};

use crate::common::{Outcome, current_netns, emit, finish, netns_wanted, offsets, stamp};

const HOOK: Hook = Hook::ConnectEaddrnotavail;
const EADDRNOTAVAIL: i64 = 99;

/// A connect() in progress: who called, and where its sockaddr is.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Call {
    pid_tgid: u64,
    uaddr: u64,
}

/// Slots by thread id (its low bits): a plain array, no hashing and no
/// locks on this path. Two threads sharing a slot while both connect make
/// the earlier one's exit miss; that is counted as unpaired only when the
/// call failed the way twmon reports.
const SLOTS: u32 = 4096;
#[map]
static CONNECTING: Array<Call> = Array::with_max_entries(SLOTS, 0);

#[inline(always)]
fn slot(pid_tgid: u64) -> u32 {
    pid_tgid as u32 & (SLOTS - 1)
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    finish(HOOK, enter(&ctx));
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    finish(HOOK, exit(&ctx));
    0
}

/// Reads `T` from the caller's memory at `addr`.
#[inline(always)]
fn user<T>(addr: u64) -> Result<T, u32> {
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|_| reason::USER_READ_FAILED)
}

#[inline(always)]
fn enter(ctx: &TracePointContext) -> Outcome {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uaddr: u64 =
        unsafe { ctx.read_at(connect_tp::USERVADDR) }.map_err(|_| reason::READ_FAILED)?;
    if let Some(call) = CONNECTING.get_ptr_mut(slot(pid_tgid)) {
        unsafe { *call = Call { pid_tgid, uaddr } };
    }
    Ok(())
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Outcome {
    let ret: i64 = unsafe { ctx.read_at(connect_tp::RET) }.map_err(|_| reason::READ_FAILED)?;
    if ret != -EADDRNOTAVAIL {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = CONNECTING.get(slot(pid_tgid)).copied();
    let Some(call) = call.filter(|c| c.pid_tgid == pid_tgid) else {
        return Err(reason::UNPAIRED);
    };
    let netns = current_netns(&offsets())?;
    if !netns_wanted(netns) {
        return Ok(());
    }
    let fam: u16 = user(call.uaddr)?;
    let port_be: u16 = user(call.uaddr + 2)?;
    let mut addr = [0u8; 16];
    if fam == u16::from(family::INET) {
        let a: [u8; 4] = user(call.uaddr + 4)?;
        addr[..4].copy_from_slice(&a);
    } else if fam == u16::from(family::INET6) {
        addr = user(call.uaddr + 8)?;
    } else {
        return Ok(());
    }
    let at = stamp(netns, fam as u8);
    emit(ConnectFailure::new(
        at,
        pid_tgid,
        addr,
        u16::from_be(port_be),
    ))
}
