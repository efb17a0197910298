//! `sock:inet_sock_set_state`: every TCP state transition, both ends, both
//! families. The classic tracepoint works on every kernel since 4.16, even
//! where kprobes and fentry are unavailable.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use monitor_common::{Event, IPPROTO_TCP, family, kind, set_state_tp as off};

use crate::common::{emit, netns_of, netns_wanted};

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
    let netns = netns_of(skaddr);
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
    emit(Event {
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
    });
    Ok(())
}
