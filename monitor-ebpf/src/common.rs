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
/// Set by the daemon to a quarter of the ring's size (see `emit`).
#[unsafe(no_mangle)]
static RING_WAKE_BYTES: Global<u64> = Global::new(64 * 1024);

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
        // Per-CPU. Two different programs (a raw tracepoint and an fentry,
        // say) can still nest on one CPU through an interrupt; an increment
        // lost that way needs the interrupt to land between this load and
        // store while the inner program bumps the same slot. The BPF target
        // has no atomic add in stable Rust, so that window is accepted.
        unsafe { *slot += 1 };
    }
}

/// The load-time offsets. A volatile read of the whole struct: take it
/// once per program run and pass it down.
#[inline(always)]
pub fn offsets() -> SockOffsets {
    SOCK_OFFSETS.load()
}

/// Reads `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    if offset == OFFSET_UNKNOWN {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// Network namespace inode of `sk`, or 0 when it cannot be read.
#[inline(always)]
pub fn netns_of(o: &SockOffsets, sk: u64) -> u32 {
    if o.skc_net == OFFSET_UNKNOWN || o.net_inum == OFFSET_UNKNOWN {
        return 0;
    }
    let ino = match read::<u64>(sk, o.skc_net) {
        Ok(net) if net != 0 => read::<u32>(net, o.net_inum).ok(),
        _ => None,
    };
    ino.unwrap_or_else(|| {
        bump(counter::NETNS_READ_FAILED);
        0
    })
}

/// Network namespace inode of the calling task (process context only).
#[inline(always)]
pub fn current_netns(o: &SockOffsets) -> u32 {
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

/// `tw->tw_substate` of a timewait socket.
#[inline(always)]
pub fn tw_substate(o: &SockOffsets, tw: u64) -> Result<u8, i32> {
    read(tw, o.tw_substate)
}

/// `sk->sk_protocol`.
#[inline(always)]
pub fn sk_protocol(o: &SockOffsets, sk: u64) -> Result<u16, i32> {
    read(sk, o.sk_protocol)
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
pub fn tuple_of(o: &SockOffsets, sk: u64) -> Result<Tuple, i32> {
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

/// True when events of namespace `netns` should be reported.
#[inline(always)]
pub fn netns_wanted(netns: u32) -> bool {
    let filter = NETNS_FILTER.load();
    filter == 0 || filter == netns
}

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` selector (uapi bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

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
            // The ring's size is fixed at load; the daemon passes a quarter
            // of it rather than paying a second helper call per event.
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= RING_WAKE_BYTES.load() {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(flags);
        }
        None => bump(counter::RINGBUF_FULL),
    }
}
