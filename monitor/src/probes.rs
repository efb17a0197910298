//! Loading and attaching the kernel programs.
//!
//! Order matters: capabilities first (clearest error), then tracefs (aya
//! looks it up once and caches the answer), then BTF offsets and layout
//! checks, then load with globals set, then attach.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::PathBuf,
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use monitor_common::{OFFSET_UNKNOWN, counter, globals, set_state_tp};

use crate::{caps, kernel_btf, tracefs};

/// The embedded eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

pub struct LoadOptions {
    /// Only report this namespace inode (None = all).
    pub netns_filter: Option<u32>,
    /// Ring buffer size in bytes: a power of two, multiple of the page size.
    pub ring_bytes: u32,
    /// Kernel BTF to resolve struct offsets from.
    pub btf: PathBuf,
}

/// Loaded and attached programs. Dropping this detaches everything.
pub struct Probes {
    /// Owns programs and links for the daemon's lifetime.
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    /// fds of the attached programs, valid as long as `_ebpf` lives.
    program_fds: Vec<RawFd>,
    /// Whether events carry the network namespace.
    pub netns_known: bool,
}

impl Probes {
    /// Events the kernel could not deliver, exactly: records dropped
    /// because the ring buffer was full, plus program runs the kernel
    /// skipped because a tracing program was already running on that CPU
    /// (an interrupt's softirq nesting into a running program). Both are
    /// counted by the kernel itself.
    pub fn lost_in_kernel(&self) -> u64 {
        let drops: u64 = self
            .counters
            .get(&counter::RINGBUF_FULL, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0);
        let misses: u64 = self
            .program_fds
            .iter()
            .filter_map(|fd| recursion_misses(*fd))
            .sum();
        drops + misses
    }
}

/// `recursion_misses` of a program, from /proc/self/fdinfo (kernel 5.12+;
/// None where the kernel does not report it).
fn recursion_misses(fd: RawFd) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    parse_fdinfo(&text, "recursion_misses")
}

pub fn parse_fdinfo(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Loads and attaches every program; returns them with the ring buffer
/// their events arrive in.
pub fn load(opts: &LoadOptions) -> Result<(Probes, RingBuf<MapData>)> {
    caps::require_tracing()?;
    raise_memlock();
    let tracefs = tracefs::ensure_mounted()?;
    tracefs::verify_tracepoint(tracefs, "sock", "inet_sock_set_state", set_state_tp::FIELDS)?;

    let offsets = match kernel_btf::load(&opts.btf).and_then(|btf| kernel_btf::resolve(&btf)) {
        Ok(offsets) => Some(offsets),
        Err(err) if opts.netns_filter.is_none() => {
            log::warn!("{err:#}; events will not carry their network namespace");
            None
        }
        Err(err) => {
            return Err(err.context(
                "--netns needs the socket's namespace, which twmon reads at offsets from kernel BTF",
            ));
        }
    };
    let skc_net = offsets.map_or(OFFSET_UNKNOWN, |o| o.skc_net);
    let net_inum = offsets.map_or(OFFSET_UNKNOWN, |o| o.net_inum);
    let netns_filter = opts.netns_filter.unwrap_or(0);
    log::debug!("offsets: skc_net={skc_net} net.ns.inum={net_inum}; netns filter {netns_filter}");

    let mut ebpf = EbpfLoader::new()
        .override_global(globals::NETNS_FILTER, &netns_filter, true)
        .override_global(globals::SKC_NET_OFFSET, &skc_net, true)
        .override_global(globals::NET_INUM_OFFSET, &net_inum, true)
        .map_max_entries("EVENTS", opts.ring_bytes)
        .load(OBJECT)
        .context("loading the eBPF programs into the kernel")?;

    let program: &mut TracePoint = ebpf
        .program_mut("inet_sock_set_state")
        .ok_or_else(|| anyhow!("program inet_sock_set_state missing from the eBPF object"))?
        .try_into()?;
    program.load().context("verifying inet_sock_set_state")?;
    program
        .attach("sock", "inet_sock_set_state")
        .context("attaching to tracepoint sock:inet_sock_set_state")?;
    let program_fd = program.fd()?.as_fd().as_raw_fd();
    log::info!("attached sock:inet_sock_set_state (tracepoint)");

    let ring = RingBuf::try_from(
        ebpf.take_map("EVENTS")
            .ok_or_else(|| anyhow!("map EVENTS missing from the eBPF object"))?,
    )?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map("COUNTERS")
            .ok_or_else(|| anyhow!("map COUNTERS missing from the eBPF object"))?,
    )?;
    Ok((
        Probes {
            _ebpf: ebpf,
            counters,
            program_fds: vec![program_fd],
            netns_known: offsets.is_some(),
        },
        ring,
    ))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so map
/// creation does not fail there. Newer kernels ignore it.
fn raise_memlock() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, u64::MAX, u64::MAX) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fdinfo;

    #[test]
    fn reads_recursion_misses_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nrun_cnt:\t0\nrecursion_misses:\t2\nverified_insns:\t89\n";
        assert_eq!(parse_fdinfo(text, "recursion_misses"), Some(2));
        assert_eq!(parse_fdinfo(text, "run_cnt"), Some(0));
        assert_eq!(parse_fdinfo(text, "missing"), None);
    }
}
