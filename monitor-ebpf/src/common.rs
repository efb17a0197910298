//! Maps, load-time globals and helpers shared by every hook.

use aya_ebpf::{
    Global,
    helpers::bpf_probe_read_kernel,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use monitor_common::{Event, OFFSET_UNKNOWN, SockOffsets, counter, family};

/// Set by the daemon before load: only this network namespace (0 = all).
#[unsafe(no_mangle)]
static NETNS_FILTER: Global<u32> = Global::new(0);
/// Offsets resolved from the running kernel's BTF by the daemon; Rust eBPF
/// has no CO-RE, so nothing layout-dependent is baked in at build time.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: Global<SockOffsets> = Global::new(SockOffsets::UNKNOWN);

/// Every event for userspace. 256 KiB by default (4096 events); the daemon
/// may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Counts that need no userspace, summed over CPUs by the daemon on scrape.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot, and the kernel never runs two tracing programs
        // nested on one CPU (bpf_prog_active), so a plain add is race-free.
        unsafe { *slot += 1 };
    }
}

/// Network namespace inode of `sk`, or 0 when it cannot be read.
#[inline(always)]
pub fn netns_of(sk: u64) -> u32 {
    let offsets = SOCK_OFFSETS.load();
    let (skc_net, inum) = (offsets.skc_net, offsets.net_inum);
    if skc_net == OFFSET_UNKNOWN || inum == OFFSET_UNKNOWN {
        return 0;
    }
    let net = match unsafe { bpf_probe_read_kernel((sk + skc_net as u64) as *const u64) } {
        Ok(net) if net != 0 => net,
        _ => {
            bump(counter::NETNS_READ_FAILED);
            return 0;
        }
    };
    match unsafe { bpf_probe_read_kernel((net + inum as u64) as *const u32) } {
        Ok(ino) => ino,
        Err(_) => {
            bump(counter::NETNS_READ_FAILED);
            0
        }
    }
}

/// Reads `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    if offset == OFFSET_UNKNOWN {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// Offset of `tw_timer` in `struct inet_timewait_sock`.
#[inline(always)]
pub fn tw_timer_offset() -> u32 {
    SOCK_OFFSETS.load().tw_timer
}

/// `tw->tw_substate` of a timewait socket.
#[inline(always)]
pub fn tw_substate(tw: u64) -> Result<u8, i32> {
    read(tw, SOCK_OFFSETS.load().tw_substate)
}

/// `sk->sk_protocol`.
#[inline(always)]
pub fn sk_protocol(sk: u64) -> Result<u16, i32> {
    read(sk, SOCK_OFFSETS.load().sk_protocol)
}

/// What identifies a connection, read from a `struct sock` (a full or a
/// timewait socket: both start with `sock_common`).
pub struct Tuple {
    pub family: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[inline(always)]
pub fn tuple_of(sk: u64) -> Result<Tuple, i32> {
    let o = SOCK_OFFSETS.load();
    let fam: u16 = read(sk, o.skc_family)?;
    let sport: u16 = read(sk, o.skc_num)?;
    let dport_be: u16 = read(sk, o.skc_dport)?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if fam == family::INET6 as u16 {
        saddr = read(sk, o.skc_v6_rcv_saddr)?;
        daddr = read(sk, o.skc_v6_daddr)?;
    } else {
        let s: [u8; 4] = read(sk, o.skc_rcv_saddr)?;
        let d: [u8; 4] = read(sk, o.skc_daddr)?;
        saddr[..4].copy_from_slice(&s);
        daddr[..4].copy_from_slice(&d);
    }
    Ok(Tuple {
        family: fam as u8,
        sport,
        dport: u16::from_be(dport_be),
        saddr,
        daddr,
    })
}

/// Network namespace inode of the calling task (process context only).
#[inline(always)]
pub fn current_netns() -> u32 {
    let o = SOCK_OFFSETS.load();
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let Ok(nsproxy) = read::<u64>(task, o.task_nsproxy) else {
        return 0;
    };
    if nsproxy == 0 {
        return 0;
    }
    let Ok(net) = read::<u64>(nsproxy, o.nsproxy_net_ns) else {
        return 0;
    };
    read::<u32>(net, o.net_inum).unwrap_or(0)
}

/// True when events of namespace `netns` should be reported.
#[inline(always)]
pub fn netns_wanted(netns: u32) -> bool {
    let filter = NETNS_FILTER.load();
    filter == 0 || filter == netns
}

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` selectors (uapi bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// Copies `event` into the ring buffer, counting a drop when it is full.
///
/// The reader is woken only once a quarter of the ring is waiting; the
/// daemon also drains on a short timer. A default submit wakes the reader
/// through irq_work, a self-interrupt that fires while this program still
/// runs; softirqs run on that interrupt's exit, and every TCP transition
/// they make finds a tracing program already active on the CPU and is
/// skipped by the kernel (recursion_misses). Measured: 0.5-1.7% of events
/// lost that way on loopback, none with deferred wake-ups.
#[inline(always)]
pub fn emit(event: Event) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(event);
            let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
            let size = EVENTS.query(BPF_RB_RING_SIZE);
            let flags = if waiting >= size / 4 {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(flags);
        }
        None => bump(counter::RINGBUF_FULL),
    }
}
