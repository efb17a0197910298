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
    counters::{self, Errors, Transitions, reason},
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

/// Every record for userspace. The daemon sizes it before load
/// (`--ring-buffer-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Lost records by hook and reason (`monitor_common::counters`), summed
/// over CPUs by the daemon on scrape: one entry, the whole table.
#[map]
static COUNTERS: PerCpuArray<Errors> = PerCpuArray::with_max_entries(1, 0);

/// TCP state transitions, likewise: counted here, never sent.
#[map]
static TRANSITIONS: PerCpuArray<Transitions> = PerCpuArray::with_max_entries(1, 0);

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
    if let Some(errors) = COUNTERS.get_ptr_mut(0)
        && let Some(slot) = unsafe { &mut *errors }.get_mut(counters::slot(hook, why))
    {
        // Per-CPU. Two different programs (a raw tracepoint and an fentry,
        // say) can still nest on one CPU through an interrupt; an increment
        // lost that way needs the interrupt to land between this load and
        // store while the inner program bumps the same slot. The BPF target
        // has no atomic add in stable Rust, so that window is accepted.
        let first = *slot == 0;
        *slot += 1;
        if first && counters::is_loss(why) {
            first_loss(hook, why);
        }
    }
}

/// Says in the daemon's log, once per hook, reason and CPU, that a hook
/// began losing records: the counters say how many, this says when it
/// started. Never per event: the slot is non-zero from then on. Numbers,
/// not names: a string picked from a table is a pointer BPF cannot follow
/// (the daemon logs the names beside it, from the counters).
#[inline(never)]
fn first_loss(hook: Hook, why: u32) {
    // The context argument is unused by aya-log's ring-buffer transport.
    aya_log_ebpf::warn!(
        &(),
        "a kernel program began losing records: hook {} reason {} (monitor_common::hooks, counters::reason)",
        hook as u8,
        why
    );
}

/// Counts a transition from `old` to `new`.
#[inline(always)]
pub fn count_transition(old: u8, new: u8) {
    if let Some(all) = TRANSITIONS.get_ptr_mut(0)
        && let Some(slot) = unsafe { &mut *all }.get_mut(counters::transition_slot(old, new))
    {
        *slot += 1;
    }
}

/// The load-time offsets. A volatile read of the whole struct: take it
/// once per program run and pass it down.
#[inline(always)]
pub fn offsets() -> SockOffsets {
    SOCK_OFFSETS.load()
}

/// How a program reads kernel memory.
///
/// Programs whose arguments are typed by BTF (tp_btf, fentry) may load
/// through those pointers directly: the verifier checks each load against
/// the struct's layout (the offsets are load-time constants it can see)
/// and turns it into a plain load that cannot fault, several times cheaper
/// than the helper. Others go through `bpf_probe_read_kernel`.
pub trait Kmem {
    fn load<T>(addr: u64) -> Result<T, u32>;
}

/// `bpf_probe_read_kernel`: any program, any pointer.
pub struct Probe;

impl Kmem for Probe {
    #[inline(always)]
    fn load<T>(addr: u64) -> Result<T, u32> {
        unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(|_| reason::READ_FAILED)
    }
}

/// A direct load through a BTF-typed pointer (or one loaded through it).
pub struct Direct;

impl Kmem for Direct {
    #[inline(always)]
    fn load<T>(addr: u64) -> Result<T, u32> {
        // SAFETY: the verifier admits this only through a BTF-typed pointer
        // at an offset of its struct, and makes the load fault-free.
        Ok(unsafe { core::ptr::read_volatile(addr as *const T) })
    }
}

/// Reads `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, u32> {
    read_with::<Probe, T>(base, offset)
}

/// Reads `T` at `base + offset` with `M`.
#[inline(always)]
pub fn read_with<M: Kmem, T>(base: u64, offset: u32) -> Result<T, u32> {
    if offset == OFFSET_UNKNOWN {
        return Err(reason::READ_FAILED);
    }
    M::load(base + offset as u64)
}

/// Network namespace inode of `sk`; 0 when unknown (no BTF offsets), or
/// when the read failed, which is counted for `hook`: the record goes on
/// without its namespace.
#[inline(always)]
pub fn netns_of(hook: Hook, o: &SockOffsets, sk: u64) -> u32 {
    netns_with::<Probe>(hook, o, sk)
}

/// [`netns_of`], read with `M`. The inode number shares a cache line with
/// the namespace's reference count, which every socket created or freed in
/// it writes: on a churning host each read is a cache miss, so the
/// state-change hook reads it only for a record or a namespace filter.
#[inline(always)]
pub fn netns_with<M: Kmem>(hook: Hook, o: &SockOffsets, sk: u64) -> u32 {
    if !o.netns_known() {
        return 0;
    }
    let inode = match read_with::<M, u64>(sk, o.skc_net) {
        Ok(net) if net != 0 => read_with::<M, u32>(net, o.net_inum).ok(),
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

/// `sk->sk_protocol`, read with `M`.
#[inline(always)]
pub fn sk_protocol<M: Kmem>(o: &SockOffsets, sk: u64) -> Result<u16, u32> {
    read_with::<M, u16>(sk, o.sk_protocol)
}

/// The address family and four-tuple of `sk`, a full or a timewait socket
/// (both start with `sock_common`).
#[inline(always)]
pub fn tuple_of(o: &SockOffsets, sk: u64) -> Result<(u8, Tuple), u32> {
    tuple_with::<Probe>(o, sk)
}

/// [`tuple_of`], read with `M`. Addresses are read as whole words: a
/// direct load must be one the verifier can match to a field.
#[inline(always)]
pub fn tuple_with<M: Kmem>(o: &SockOffsets, sk: u64) -> Result<(u8, Tuple), u32> {
    let fam: u16 = read_with::<M, u16>(sk, o.skc_family)?;
    let sport: u16 = read_with::<M, u16>(sk, o.skc_num)?;
    let dport_be: u16 = read_with::<M, u16>(sk, o.skc_dport)?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if fam == family::INET6 as u16 {
        let s: [u64; 2] = read_with::<M, [u64; 2]>(sk, o.skc_v6_rcv_saddr)?;
        let d: [u64; 2] = read_with::<M, [u64; 2]>(sk, o.skc_v6_daddr)?;
        saddr[..8].copy_from_slice(&s[0].to_ne_bytes());
        saddr[8..].copy_from_slice(&s[1].to_ne_bytes());
        daddr[..8].copy_from_slice(&d[0].to_ne_bytes());
        daddr[8..].copy_from_slice(&d[1].to_ne_bytes());
    } else {
        let s: u32 = read_with::<M, u32>(sk, o.skc_rcv_saddr)?;
        let d: u32 = read_with::<M, u32>(sk, o.skc_daddr)?;
        saddr[..4].copy_from_slice(&s.to_ne_bytes());
        daddr[..4].copy_from_slice(&d.to_ne_bytes());
    }
    let tuple = Tuple {
        saddr,
        daddr,
        sport,
        dport: u16::from_be(dport_be),
    };
    Ok((fam as u8, tuple))
}

/// Whether the daemon watches one namespace only.
#[inline(always)]
pub fn filtering() -> bool {
    NETNS_FILTER.load() != 0
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
