//! What the syscall hooks (`connect`, `bind`) share: the caller's sockaddr
//! pointer, noted at entry in a slot of its thread, and the sockaddr read
//! from the caller's memory at exit, only for a call that failed the way
//! twmon reports.
//!
//! The syscall tracepoints run for every call on the host, whatever the
//! protocol, so the entry does the least it can. A thread is in one
//! syscall at a time, so one table serves both hooks.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::bpf_get_current_cgroup_id,
    },
    macros::map,
    maps::Array,
    programs::TracePointContext,
};
use monitor_common::{
    counters::reason,
    record::{Process, Stamp},
    tcp::family,
};

use crate::common::{current_netns, netns_wanted, offsets, stamp};

/// A call in progress: who called, and where its sockaddr is.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Call {
    pid_tgid: u64,
    uaddr: u64,
}

/// Slots by thread id (its low bits): a plain array, no hashing and no
/// locks on this path. Two threads sharing a slot while both are in a
/// call make the earlier one's exit miss; that is counted as unpaired only
/// when the call failed the way twmon reports.
const SLOTS: u32 = 4096;
#[map]
static CALLS: Array<Call> = Array::with_max_entries(SLOTS, 0);

#[inline(always)]
fn slot(pid_tgid: u64) -> u32 {
    pid_tgid as u32 & (SLOTS - 1)
}

/// At entry: notes where the call's sockaddr is (the argument at
/// `uaddr_at` in the tracepoint's record).
#[inline(always)]
pub fn enter(ctx: &TracePointContext, uaddr_at: usize) -> Result<(), u32> {
    let uaddr: u64 = unsafe { ctx.read_at(uaddr_at) }.map_err(|_| reason::READ_FAILED)?;
    note(uaddr);
    Ok(())
}

/// A call that failed the way a hook reports.
pub struct Failed {
    pub at: Stamp,
    pub process: Process,
    /// The sockaddr's address (IPv4 in the first 4 bytes) and port.
    pub addr: [u8; 16],
    pub port: u16,
}

/// At exit: the call, if it failed with `errno` (the return value at
/// `ret_at`) in a watched namespace, with an IPv4 or IPv6 sockaddr.
#[inline(always)]
pub fn failed(ctx: &TracePointContext, ret_at: usize, errno: i64) -> Result<Option<Failed>, u32> {
    let ret: i64 = unsafe { ctx.read_at(ret_at) }.map_err(|_| reason::READ_FAILED)?;
    if ret != -errno {
        return Ok(None);
    }
    let (pid_tgid, uaddr) = noted()?;
    let netns = current_netns(&offsets())?;
    if !netns_wanted(netns) {
        return Ok(None);
    }
    let Some((fam, addr, port)) = sockaddr(uaddr)? else {
        return Ok(None);
    };
    Ok(Some(Failed {
        at: stamp(netns, fam),
        process: caller(pid_tgid),
        addr,
        port,
    }))
}

/// The current thread's call has its sockaddr at `uaddr`.
#[inline(always)]
fn note(uaddr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(call) = CALLS.get_ptr_mut(slot(pid_tgid)) {
        unsafe { *call = Call { pid_tgid, uaddr } };
    }
}

/// The current thread's pid_tgid and sockaddr pointer.
#[inline(always)]
fn noted() -> Result<(u64, u64), u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    match CALLS.get(slot(pid_tgid)).copied() {
        Some(call) if call.pid_tgid == pid_tgid => Ok((pid_tgid, call.uaddr)),
        _ => Err(reason::UNPAIRED),
    }
}

/// Reads `T` from the caller's memory at `addr`.
#[inline(always)]
fn user<T>(addr: u64) -> Result<T, u32> {
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|_| reason::USER_READ_FAILED)
}

/// An IPv4 or IPv6 sockaddr in the caller's memory: family, address
/// (IPv4 in the first 4 bytes) and host-order port; `None` for any other
/// family.
#[inline(always)]
fn sockaddr(uaddr: u64) -> Result<Option<(u8, [u8; 16], u16)>, u32> {
    let fam: u16 = user(uaddr)?;
    let port_be: u16 = user(uaddr + 2)?;
    let mut addr = [0u8; 16];
    if fam == u16::from(family::INET) {
        let a: [u8; 4] = user(uaddr + 4)?;
        addr[..4].copy_from_slice(&a);
    } else if fam == u16::from(family::INET6) {
        addr = user(uaddr + 8)?;
    } else {
        return Ok(None);
    }
    Ok(Some((fam as u8, addr, u16::from_be(port_be))))
}

/// The calling task, as records name it.
#[inline(always)]
fn caller(pid_tgid: u64) -> Process {
    Process::new(
        pid_tgid,
        unsafe { bpf_get_current_cgroup_id() },
        bpf_get_current_comm().unwrap_or([0u8; 16]),
    )
}
