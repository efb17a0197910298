//! The kernel side of the daemon: capabilities, tracefs, BTF offsets, and
//! loading and attaching the programs of `monitor-ebpf`.
//!
//! Order matters: capabilities first (clearest error), then tracefs (aya
//! looks it up once and caches the answer), then BTF offsets and layout
//! checks, then load with globals set, then attach, hook by hook, each with
//! the best method the kernel allows ([`functions`], [`tracepoints`]).

pub mod btf;
pub mod caps;
pub mod closing;
mod functions;
pub mod host;
mod mapping;
mod missed;
pub mod recent;
pub mod tracefs;
mod tracepoints;

use std::{collections::BTreeMap, fmt, os::fd::RawFd, path::PathBuf, str::FromStr, sync::Arc};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{MapData, PerCpuArray, RingBuf},
};
use monitor_common::{
    SockOffsets,
    counters::{self, Errors, Transitions, reason},
    names::{globals, maps},
};

pub use functions::one_line;

use crate::model::{
    hooks::{Hook, HookStatus, Hooks, KernelCounts},
    tcp::TcpState,
};

/// The embedded eBPF object, built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// Which attach methods the daemon may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMode {
    /// fentry/fexit where possible, else kprobe/kretprobe, else without.
    Auto,
    /// Only fentry/fexit; fail if a hook cannot use it.
    Fentry,
    /// Only kprobe/kretprobe; fail if a hook cannot use it.
    Kprobe,
    /// Only the tracepoints and sock_diag snapshots, as on kernels with
    /// neither kprobes nor fentry.
    Tracepoint,
}

impl ProbeMode {
    pub const ALL: [ProbeMode; 4] = [
        ProbeMode::Auto,
        ProbeMode::Fentry,
        ProbeMode::Kprobe,
        ProbeMode::Tracepoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProbeMode::Auto => "auto",
            ProbeMode::Fentry => "fentry",
            ProbeMode::Kprobe => "kprobe",
            ProbeMode::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for ProbeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProbeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a probe mode: use auto, fentry, kprobe or tracepoint")
            })
    }
}

/// How to load the programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Only report this namespace inode (None = all).
    pub netns_filter: Option<u32>,
    /// Ring buffer size in bytes: a power of two, multiple of the page size.
    pub ring_bytes: u32,
    /// Kernel BTF to resolve struct offsets and function signatures from.
    pub btf: PathBuf,
    pub mode: ProbeMode,
}

/// Loaded and attached programs. Dropping this detaches everything.
pub struct Probes {
    /// Owns programs and links for the daemon's lifetime.
    _ebpf: Ebpf,
    errors: PerCpuArray<MapData, Errors>,
    transitions: PerCpuArray<MapData, Transitions>,
    /// fds of the attached programs by hook, valid as long as `_ebpf` lives.
    program_fds: Vec<(Hook, RawFd)>,
    /// The programs' ids, by which their kprobe links are found.
    program_ids: BTreeMap<u64, Hook>,
    /// How each hook is attached, and why better methods were refused.
    pub hooks: Hooks,
    /// Whether records carry their network namespace.
    pub netns_known: bool,
    /// The filter of recently closed four-tuples: read here, aged by the
    /// daemon.
    pub recent: Arc<recent::Recent>,
    /// The closes in progress, until the daemon takes them to recover the
    /// closers of orphans.
    pub closing: Option<closing::Closing>,
    /// The kernel programs' log, until the daemon takes it to forward it.
    pub kernel_log: Option<KernelLog>,
}

/// The kernel programs' log records (`aya_log_ebpf` warnings, only on
/// their error paths), forwarded to the daemon's own log.
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

impl Probes {
    /// What the kernel counted: transitions, records each hook lost, by
    /// reason, and the program runs it skipped because a tracing program
    /// was already running on that CPU (an interrupt's softirq nesting into
    /// a running program); and how full its filter of recent closes is.
    pub fn counts(&self) -> KernelCounts {
        let mut counts = KernelCounts::default();
        let transitions = sum(&self.transitions, "TRANSITIONS");
        for from in TcpState::ALL {
            for to in TcpState::ALL {
                let n = transitions[counters::transition_slot(from as u8, to as u8)];
                if n > 0 {
                    counts.transitions.insert((from, to), n);
                }
            }
        }
        let errors = sum(&self.errors, "COUNTERS");
        for hook in Hook::ALL {
            for why in (0..reason::COUNT).filter(|&why| counters::is_loss(why)) {
                let n = errors[counters::slot(hook, why)];
                if n > 0 {
                    counts.errors.insert((hook, reason::NAMES[why as usize]), n);
                }
            }
        }
        for &(hook, fd) in &self.program_fds {
            if let Some(n) = recursion_misses(fd).filter(|&n| n > 0) {
                *counts.skipped_runs.entry(hook).or_default() += n;
            }
        }
        // Kprobe runs skipped inside another kprobe's handler (6.7+).
        for (hook, n) in missed::by_hook(&self.program_ids) {
            *counts.skipped_runs.entry(hook).or_default() += n;
        }
        // Skipped runs a nested program did instead were not lost. Both
        // counts are read a moment apart, so the difference is clamped.
        for hook in Hook::ALL {
            let recovered = errors[counters::slot(hook, reason::RECOVERED)];
            if let Some(skipped) = counts.skipped_runs.get_mut(&hook) {
                *skipped = skipped.saturating_sub(recovered);
            }
        }
        counts.skipped_runs.retain(|_, n| *n > 0);
        counts.filter = Some(self.recent.fill());
        counts
    }
}

/// The per-CPU tables of a one-entry counter map, added up. A read that
/// fails (it should not: the map is ours and open) gives zeros, logged.
fn sum<const N: usize>(map: &PerCpuArray<MapData, [u64; N]>, name: &str) -> [u64; N] {
    let mut total = [0u64; N];
    match map.get(&0, 0) {
        Ok(per_cpu) => {
            for table in per_cpu.iter() {
                for (t, n) in total.iter_mut().zip(table) {
                    *t += n;
                }
            }
        }
        Err(err) => log::warn!("reading the kernel's {name}: {err}"),
    }
    total
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
/// their records arrive in.
pub fn load(opts: &LoadOptions) -> Result<(Probes, RingBuf<MapData>)> {
    caps::require_tracing()?;
    raise_memlock();
    let tracefs = tracefs::ensure_mounted()?;
    let btf = kernel_btf(opts)?;
    let offsets = btf.as_ref().map_or(SockOffsets::UNKNOWN, btf::resolve);
    let netns_filter = opts.netns_filter.unwrap_or(0);
    let ring_wake_bytes = u64::from(opts.ring_bytes / 4);
    log::debug!("offsets {offsets:?}; netns filter {netns_filter}");
    // aya wants its own BTF handle for fentry/fexit and relocations.
    let aya_btf = btf
        .as_ref()
        .and_then(|_| Btf::parse_file(&opts.btf, Endianness::default()).ok());

    let mut ebpf = EbpfLoader::new()
        .btf(aya_btf.as_ref())
        .override_global(globals::NETNS_FILTER, &netns_filter, true)
        .override_global(globals::SOCK_OFFSETS, &offsets, true)
        .override_global(globals::RING_WAKE_BYTES, &ring_wake_bytes, true)
        .map_max_entries(maps::EVENTS, opts.ring_bytes)
        .load(OBJECT)
        .context("loading the eBPF programs into the kernel")?;

    let filtered = netns_filter != 0;
    let mut attached = Vec::new();
    let (status, fd) =
        tracepoints::attach_set_state(&mut ebpf, &offsets, aya_btf.as_ref(), tracefs)?;
    attached.push((status, vec![fd]));
    for hook in [&tracepoints::CONNECT, &tracepoints::BIND] {
        attached.push(tracepoints::attach_syscall(
            &mut ebpf, &offsets, tracefs, filtered, hook,
        ));
    }
    attached.push(tracepoints::attach_reset(
        &mut ebpf, &offsets, tracefs, filtered,
    ));
    let env = functions::Env {
        btf: btf.as_ref(),
        aya_btf: aya_btf.as_ref(),
        offsets: &offsets,
        mode: opts.mode,
    };
    for hook in functions::FUNCTION_HOOKS {
        let (status, fds) = functions::attach(&mut ebpf, hook, &env);
        if status.method.is_none() && matches!(opts.mode, ProbeMode::Fentry | ProbeMode::Kprobe) {
            return Err(anyhow!(
                "--probes {}: hook {} cannot use it: {}",
                opts.mode,
                status.hook.name(),
                status.refused.join("; ")
            ));
        }
        attached.push((status, fds));
    }
    let (statuses, program_fds) = split(attached);
    for status in statuses.iter() {
        log::info!("{status}");
    }
    let ring = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)?;
    let errors = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)?;
    let transitions = PerCpuArray::try_from(take_map(&mut ebpf, maps::TRANSITIONS)?)?;
    let recent = recent::Recent::new(
        take_map(&mut ebpf, maps::RECENT)?,
        take_map(&mut ebpf, maps::RECENT_GEN)?,
    )?;
    let closing = closing::Closing::new(take_map(&mut ebpf, maps::CLOSING)?)?;
    // The programs' rare diagnostics (aya-log), for the daemon's log.
    let kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(err) => {
            log::warn!("the kernel programs' log cannot be read: {err}");
            None
        }
    };
    let probes = Probes {
        _ebpf: ebpf,
        kernel_log,
        errors,
        transitions,
        program_ids: missed::program_ids(&program_fds),
        program_fds,
        hooks: statuses,
        netns_known: offsets.netns_known(),
        recent: Arc::new(recent),
        closing: Some(closing),
    };
    Ok((probes, ring))
}

/// Kernel BTF, or None when it cannot be had and nothing requires it.
fn kernel_btf(opts: &LoadOptions) -> Result<Option<btf_rs::Btf>> {
    match btf::load(&opts.btf) {
        Ok(btf) => Ok(Some(btf)),
        Err(err) if opts.netns_filter.is_none() => {
            log::warn!("{err:#}; events will not carry their network namespace");
            Ok(None)
        }
        Err(err) => Err(err.context(
            "--netns needs the socket's namespace, which twmon reads at offsets from kernel BTF",
        )),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

/// Hook statuses in order, and every program fd with its hook.
fn split(attached: Vec<(HookStatus, Vec<RawFd>)>) -> (Hooks, Vec<(Hook, RawFd)>) {
    let mut fds = Vec::new();
    let mut statuses = Vec::new();
    for (status, hook_fds) in attached {
        fds.extend(hook_fds.into_iter().map(|fd| (status.hook, fd)));
        statuses.push(status);
    }
    (Hooks(statuses), fds)
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
    use super::*;

    #[test]
    fn reads_recursion_misses_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nrun_cnt:\t0\nrecursion_misses:\t2\nverified_insns:\t89\n";
        assert_eq!(parse_fdinfo(text, "recursion_misses"), Some(2));
        assert_eq!(parse_fdinfo(text, "run_cnt"), Some(0));
        assert_eq!(parse_fdinfo(text, "missing"), None);
    }

    #[test]
    fn probe_modes_parse_by_name() {
        for mode in ProbeMode::ALL {
            assert_eq!(mode.name().parse(), Ok(mode));
        }
        assert!(
            "uprobe"
                .parse::<ProbeMode>()
                .unwrap_err()
                .contains("kprobe")
        );
    }

    /// Every program and map the loader names is in the object build.rs
    /// embedded: a typo in a name is a test failure, not a hook that
    /// silently never attaches. Needs no root: the object is only parsed.
    #[test]
    fn every_name_the_loader_uses_is_in_the_object() {
        use monitor_common::names::programs;
        let object = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        for name in programs::ALL {
            assert!(
                object.programs.contains_key(*name),
                "program {name} missing"
            );
        }
        for name in maps::ALL {
            assert!(object.maps.contains_key(*name), "map {name} missing");
        }
        use object::{Object as _, ObjectSymbol as _};
        let elf = object::File::parse(OBJECT).expect("the embedded object is ELF");
        let symbols: Vec<&str> = elf.symbols().filter_map(|s| s.name().ok()).collect();
        for name in globals::ALL {
            assert!(symbols.contains(name), "global {name} missing");
        }
        let mut used: Vec<&str> = functions::FUNCTION_HOOKS
            .iter()
            .flat_map(|h| h.parts)
            .flat_map(|part| {
                let mut names = vec![part.fentry_program, part.kprobe_program];
                names.extend(part.fexit_by_params.iter().map(|(_, n)| *n));
                names
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        for name in used {
            assert!(
                programs::ALL.contains(&name),
                "{name} not in names::programs"
            );
        }
    }
}
