//! Maps, load-time globals and helpers shared by every hook.
//!
//! Every program body returns an [`Outcome`]: `Ok` when it reported what it
//! saw or had nothing to report (not TCP, another namespace), `Err(reason)`
//! when something it should have reported was lost. The entry point hands
//! it to [`finish`], which counts the loss for its hook, so no failure is
//! dropped silently.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use monitor_common::{
    OFFSET_UNKNOWN, SockOffsets,
    counters::{self, reason},
    hooks::Hook,
    record::{Stamp, Tuple, Wire},
    tcp::family,
};

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

/// Every record for userspace. 256 KiB by default; the daemon may resize
/// it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Lost records by hook and reason (`monitor_common::counters`), summed
/// over CPUs by the daemon on scrape.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::SLOTS, 0);

/// `Err(reason)`: what a program was about to report is lost, and why.
pub type Outcome = Result<(), u32>;

/// Counts a lost record of `hook`, if `outcome` is one.
#[inline(always)]
pub fn finish(hook: Hook, outcome: Outcome) {
    if let Err(why) = outcome {
        count(hook, why);
    }
}

#[inline(always)]
pub fn count(hook: Hook, why: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counters::slot(hook, why)) {
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
pub fn read<T>(base: u64, offset: u32) -> Result<T, u32> {
    if offset == OFFSET_UNKNOWN {
        return Err(reason::READ_FAILED);
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
        .map_err(|_| reason::READ_FAILED)
}

/// Network namespace inode of `sk`; 0 when unknown (no BTF offsets), or
/// when the read failed, which is counted for `hook`: the record goes on
/// without its namespace.
#[inline(always)]
pub fn netns_of(hook: Hook, o: &SockOffsets, sk: u64) -> u32 {
    if !o.netns_known() {
        return 0;
    }
    let inode = match read::<u64>(sk, o.skc_net) {
        Ok(net) if net != 0 => read::<u32>(net, o.net_inum).ok(),
        _ => None,
    };
    inode.unwrap_or_else(|| {
        count(hook, reason::NETNS_UNREADABLE);
        0
    })
}

/// Network namespace inode of the calling task (process context only); 0
/// when the offsets are unknown (the daemon then only attaches the callers
/// of this without a namespace filter).
#[inline(always)]
pub fn current_netns(o: &SockOffsets) -> Result<u32, u32> {
    if !o.task_netns_known() {
        return Ok(0);
    }
    let task = unsafe { bpf_get_current_task() };
    let nsproxy = read::<u64>(task, o.task_nsproxy)?;
    if nsproxy == 0 {
        // An exiting task; nothing of it to report.
        return Ok(0);
    }
    let net = read::<u64>(nsproxy, o.nsproxy_net_ns)?;
    read::<u32>(net, o.net_inum)
}

/// `tw->tw_substate` of a timewait socket, 0 when it cannot be read (the
/// records say so; the daemon knows 0 is no state).
#[inline(always)]
pub fn tw_substate(o: &SockOffsets, tw: u64) -> u8 {
    read(tw, o.tw_substate).unwrap_or(0)
}

/// `sk->sk_protocol`.
#[inline(always)]
pub fn sk_protocol(o: &SockOffsets, sk: u64) -> Result<u16, u32> {
    read(sk, o.sk_protocol)
}

/// The address family and four-tuple of `sk`, a full or a timewait socket
/// (both start with `sock_common`).
#[inline(always)]
pub fn tuple_of(o: &SockOffsets, sk: u64) -> Result<(u8, Tuple), u32> {
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
    let tuple = Tuple {
        saddr,
        daddr,
        sport,
        dport: u16::from_be(dport_be),
    };
    Ok((fam as u8, tuple))
}

/// True when records of namespace `netns` should be reported.
#[inline(always)]
pub fn netns_wanted(netns: u32) -> bool {
    let filter = NETNS_FILTER.load();
    filter == 0 || filter == netns
}

/// Now, in namespace `netns`, for an address of `family`.
#[inline(always)]
pub fn stamp(netns: u32, family: u8) -> Stamp {
    Stamp {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        netns,
        family,
    }
}

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` selector (uapi bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Copies `record` into the ring buffer.
///
/// The reader is woken only once a quarter of the ring is waiting; the
/// daemon also drains on a short timer. A default submit wakes the reader
/// through irq_work, a self-interrupt that fires while this program still
/// runs; softirqs run on that interrupt's exit, and every TCP transition
/// they make finds a tracing program already active on the CPU and is
/// skipped by the kernel (recursion_misses). Measured: 0.5-1.7% of events
/// lost that way on loopback, none with deferred wake-ups.
#[inline(always)]
pub fn emit<T: Wire + 'static>(record: T) -> Outcome {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        return Err(reason::RINGBUF_FULL);
    };
    entry.write(record);
    // The ring's size is fixed at load; the daemon passes a quarter of it
    // rather than paying a second helper call per record.
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= RING_WAKE_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags);
    Ok(())
}
