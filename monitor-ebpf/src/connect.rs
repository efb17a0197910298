//! `connect()` failing with EADDRNOTAVAIL: the kernel found no free local
//! port, i.e. no unused four-tuple toward that destination. Seen through
//! the syscall tracepoints, which exist even on kernels without kprobes:
//! the entry keeps the destination (user memory, read while it is valid)
//! by thread, the exit reports it if the call failed that way.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use monitor_common::{Event, connect_tp, family, kind};

use crate::common::{current_netns, emit, netns_wanted, offsets};

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
    let _ = enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx);
    0
}

#[inline(always)]
fn enter(ctx: &TracePointContext) -> Result<(), i64> {
    let netns = current_netns(&offsets());
    if !netns_wanted(netns) {
        return Ok(());
    }
    let uaddr: u64 = unsafe { ctx.read_at(connect_tp::USERVADDR) }.map_err(i64::from)?;
    let fam: u16 = unsafe { bpf_probe_read_user(uaddr as *const u16)? };
    let port_be: u16 = unsafe { bpf_probe_read_user((uaddr + 2) as *const u16)? };
    let mut addr = [0u8; 16];
    if fam == family::INET as u16 {
        let a: [u8; 4] = unsafe { bpf_probe_read_user((uaddr + 4) as *const [u8; 4])? };
        addr[..4].copy_from_slice(&a);
    } else if fam == family::INET6 as u16 {
        addr = unsafe { bpf_probe_read_user((uaddr + 8) as *const [u8; 16])? };
    } else {
        return Ok(());
    }
    let dest = Dest {
        family: fam,
        port_be,
        netns,
        addr,
    };
    let id = bpf_get_current_pid_tgid();
    CONNECTING.insert(id, dest, 0)?;
    Ok(())
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let Some(dest) = (unsafe { CONNECTING.get(id) }).copied() else {
        return Ok(());
    };
    let _ = CONNECTING.remove(id);
    let ret: i64 = unsafe { ctx.read_at(connect_tp::RET) }.map_err(i64::from)?;
    if ret != -EADDRNOTAVAIL {
        return Ok(());
    }
    emit(Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr: id,
        netns: dest.netns,
        kind: kind::CONNECT_EADDRNOTAVAIL,
        family: dest.family as u8,
        old_state: 0,
        new_state: 0,
        sport: 0,
        dport: u16::from_be(dest.port_be),
        aux: 0,
        saddr: [0; 16],
        daddr: dest.addr,
    });
    Ok(())
}
