//! `connect()` failing with EADDRNOTAVAIL: the kernel found no free local
//! port, i.e. no unused four-tuple toward that destination. Seen through
//! the syscall tracepoints, which exist even on kernels without kprobes:
//! the entry keeps the destination (user memory, read while it is valid)
//! by thread, the exit reports it if the call failed that way.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use monitor_common::{
    counters::reason, hooks::Hook, record::ConnectFailure, tcp::family, tracepoints::connect_tp,
};

use crate::common::{Outcome, current_netns, emit, finish, netns_wanted, offsets, stamp};

const HOOK: Hook = Hook::ConnectEaddrnotavail;
const EADDRNOTAVAIL: i64 = 99;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Dest {
    family: u16,
    /// Network byte order, as in the sockaddr.
    port_be: u16,
    netns: u32,
    addr: [u8; 16],
}

/// Destinations of connect() calls in progress, by thread. Bounded: a
/// thread blocked in connect holds one entry; LRU drops the oldest if
/// more threads than that are connecting at once.
#[map]
static CONNECTING: LruHashMap<u64, Dest> = LruHashMap::with_max_entries(16384, 0);

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
    let netns = current_netns(&offsets())?;
    if !netns_wanted(netns) {
        return Ok(());
    }
    let uaddr: u64 =
        unsafe { ctx.read_at(connect_tp::USERVADDR) }.map_err(|_| reason::READ_FAILED)?;
    let fam: u16 = user(uaddr)?;
    let port_be: u16 = user(uaddr + 2)?;
    let mut addr = [0u8; 16];
    if fam == u16::from(family::INET) {
        let a: [u8; 4] = user(uaddr + 4)?;
        addr[..4].copy_from_slice(&a);
    } else if fam == u16::from(family::INET6) {
        addr = user(uaddr + 8)?;
    } else {
        return Ok(());
    }
    let dest = Dest {
        family: fam,
        port_be,
        netns,
        addr,
    };
    CONNECTING
        .insert(bpf_get_current_pid_tgid(), dest, 0)
        .map_err(|_| reason::MAP_FULL)
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Outcome {
    let id = bpf_get_current_pid_tgid();
    let Some(dest) = (unsafe { CONNECTING.get(id) }).copied() else {
        return Ok(());
    };
    // Gone already if LRU pressure took it: nothing left to clean up.
    let _ = CONNECTING.remove(id);
    let ret: i64 = unsafe { ctx.read_at(connect_tp::RET) }.map_err(|_| reason::READ_FAILED)?;
    if ret != -EADDRNOTAVAIL {
        return Ok(());
    }
    let at = stamp(dest.netns, dest.family as u8);
    emit(ConnectFailure::new(
        at,
        id,
        dest.addr,
        u16::from_be(dest.port_be),
    ))
}
