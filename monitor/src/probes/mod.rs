//! Loading and attaching the kernel programs.
//!
//! Order matters: capabilities first (clearest error), then tracefs (aya
//! looks it up once and caches the answer), then BTF offsets and layout
//! checks, then load with globals set, then attach, hook by hook, each with
//! the best method the kernel allows (see [`hooks`]).

mod hooks;

use std::{
    fmt,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use monitor_common::{
    OFFSET_UNKNOWN, SockOffsets, connect_tp, counter, globals, reset_tp, set_state_tp,
};

pub use hooks::{HookStatus, Method};

use crate::{caps, kernel_btf, tracefs};

/// The embedded eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// Which attach methods the daemon may use (`--probes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// fentry/fexit where possible, else kprobe/kretprobe, else without.
    Auto,
    /// Only fentry/fexit; fail if a hook cannot use it.
    Fentry,
    /// Only kprobe/kretprobe; fail if a hook cannot use it.
    Kprobe,
    /// Only the tracepoint and sock_diag snapshots, as on kernels with
    /// neither kprobes nor fentry.
    Tracepoint,
}

impl fmt::Display for ProbeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeMode::Auto => "auto",
            ProbeMode::Fentry => "fentry",
            ProbeMode::Kprobe => "kprobe",
            ProbeMode::Tracepoint => "tracepoint",
        })
    }
}

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
    counters: PerCpuArray<MapData, u64>,
    /// fds of the attached programs, valid as long as `_ebpf` lives.
    program_fds: Vec<RawFd>,
    /// How each hook is attached, and why better methods were refused.
    pub hooks: Vec<HookStatus>,
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
        let misses: u64 = self
            .program_fds
            .iter()
            .filter_map(|fd| recursion_misses(*fd))
            .sum();
        self.counter(counter::RINGBUF_FULL) + self.counter(counter::TW_UNPAIRED) + misses
    }

    fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// Every hook twmon knows, attached or not.
pub fn all_hook_names() -> Vec<&'static str> {
    let mut names = vec![
        "inet_sock_set_state",
        "connect_eaddrnotavail",
        "timewait_reset_sent",
    ];
    names.extend(hooks::HOOKS.iter().map(|h| h.name));
    names
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

    let btf = match kernel_btf::load(&opts.btf) {
        Ok(btf) => Some(btf),
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
    let offsets = btf
        .as_ref()
        .map_or(SockOffsets::UNKNOWN, kernel_btf::resolve);
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
        .map_max_entries("EVENTS", opts.ring_bytes)
        .load(OBJECT)
        .context("loading the eBPF programs into the kernel")?;

    let (status, fd) = attach_set_state(&mut ebpf, &offsets, tracefs)?;
    let mut program_fds = vec![fd];
    let mut statuses = vec![status];

    let (status, fds) = attach_connect(&mut ebpf, &offsets, tracefs, netns_filter != 0);
    program_fds.extend(fds);
    statuses.push(status);

    let (status, fds) = attach_reset(&mut ebpf, &offsets, tracefs, netns_filter != 0);
    program_fds.extend(fds);
    statuses.push(status);

    let env = hooks::Env {
        btf: btf.as_ref(),
        aya_btf: aya_btf.as_ref(),
        offsets: &offsets,
        mode: opts.mode,
    };
    for hook in hooks::HOOKS {
        let (status, fds) = hooks::attach(&mut ebpf, hook, &env);
        if status.method.is_none() && matches!(opts.mode, ProbeMode::Fentry | ProbeMode::Kprobe) {
            return Err(anyhow!(
                "--probes {}: hook {} cannot use it: {}",
                opts.mode,
                status.hook,
                status.refused.join("; ")
            ));
        }
        program_fds.extend(fds);
        statuses.push(status);
    }
    for status in &statuses {
        log::info!("{status}");
    }

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
            program_fds,
            hooks: statuses,
            netns_known: offsets.skc_net != OFFSET_UNKNOWN,
        },
        ring,
    ))
}

/// Attaches the state-change program: the raw tracepoint when the socket
/// fields it reads are known, else the classic tracepoint (whose record
/// layout is checked first). This hook is mandatory: without it twmon has
/// nothing to report.
fn attach_set_state(
    ebpf: &mut Ebpf,
    offsets: &SockOffsets,
    tracefs: &Path,
) -> Result<(HookStatus, RawFd)> {
    let mut refused = Vec::new();
    if kernel_btf::tuple_fields_known(offsets) && offsets.sk_protocol != OFFSET_UNKNOWN {
        let mut attempt = || -> Result<RawFd> {
            let p: &mut RawTracePoint = ebpf
                .program_mut("inet_sock_set_state_raw")
                .ok_or_else(|| anyhow!("program inet_sock_set_state_raw missing"))?
                .try_into()?;
            p.load().context("load")?;
            p.attach("inet_sock_set_state").context("attach")?;
            Ok(p.fd()?.as_fd().as_raw_fd())
        };
        match attempt() {
            Ok(fd) => {
                let status = HookStatus {
                    hook: "inet_sock_set_state",
                    method: Some(Method::RawTracepoint),
                    refused,
                };
                return Ok((status, fd));
            }
            Err(err) => refused.push(format!("raw_tracepoint: {}", hooks::one_line(&err))),
        }
    } else {
        refused.push("raw_tracepoint: socket fields not found in kernel BTF".to_string());
    }
    tracefs::verify_tracepoint(tracefs, "sock", "inet_sock_set_state", set_state_tp::FIELDS)?;
    let program: &mut TracePoint = ebpf
        .program_mut("inet_sock_set_state")
        .ok_or_else(|| anyhow!("program inet_sock_set_state missing from the eBPF object"))?
        .try_into()?;
    program.load().context("verifying inet_sock_set_state")?;
    program
        .attach("sock", "inet_sock_set_state")
        .context("attaching to tracepoint sock:inet_sock_set_state")?;
    let status = HookStatus {
        hook: "inet_sock_set_state",
        method: Some(Method::Tracepoint),
        refused,
    };
    Ok((status, program.fd()?.as_fd().as_raw_fd()))
}

/// Attaches the connect() syscall tracepoints that see EADDRNOTAVAIL. Not
/// mandatory: kernels built without syscall tracepoints just lack it.
fn attach_connect(
    ebpf: &mut Ebpf,
    offsets: &SockOffsets,
    tracefs: &Path,
    filtered: bool,
) -> (HookStatus, Vec<RawFd>) {
    let mut status = HookStatus::unattached("connect_eaddrnotavail");
    let task_known = [
        offsets.task_nsproxy,
        offsets.nsproxy_net_ns,
        offsets.net_inum,
    ]
    .iter()
    .all(|&o| o != OFFSET_UNKNOWN);
    if filtered && !task_known {
        status
            .refused
            .push("tracepoint: the caller's namespace cannot be read (no BTF offsets)".into());
        return (status, Vec::new());
    }
    let mut attempt = || -> Result<Vec<RawFd>> {
        tracefs::verify_tracepoint(
            tracefs,
            "syscalls",
            "sys_enter_connect",
            connect_tp::ENTER_FIELDS,
        )?;
        tracefs::verify_tracepoint(
            tracefs,
            "syscalls",
            "sys_exit_connect",
            connect_tp::EXIT_FIELDS,
        )?;
        let mut fds = Vec::new();
        for name in ["sys_enter_connect", "sys_exit_connect"] {
            let p: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            p.load().with_context(|| format!("load {name}"))?;
            p.attach("syscalls", name)
                .with_context(|| format!("attach {name}"))?;
            fds.push(p.fd()?.as_fd().as_raw_fd());
        }
        Ok(fds)
    };
    tracepoint_outcome(status, attempt())
}

/// A tracepoint hook's status once its attach attempt is over.
fn tracepoint_outcome(
    mut status: HookStatus,
    attempt: Result<Vec<RawFd>>,
) -> (HookStatus, Vec<RawFd>) {
    match attempt {
        Ok(fds) => {
            status.method = Some(Method::Tracepoint);
            (status, fds)
        }
        Err(err) => {
            status
                .refused
                .push(format!("tracepoint: {}", hooks::one_line(&err)));
            (status, Vec::new())
        }
    }
}

/// Attaches `tcp:tcp_send_reset`, filtered in the kernel to RSTs sent by
/// timewait sockets, on kernels that report those there (6.10+, whose
/// record has a reset reason). Not mandatory. The record's skaddr and
/// state are all twmon reads from it; the four-tuple is read from the
/// socket at BTF offsets, and without them the hook is refused.
fn attach_reset(
    ebpf: &mut Ebpf,
    offsets: &SockOffsets,
    tracefs: &Path,
    filtered: bool,
) -> (HookStatus, Vec<RawFd>) {
    let mut status = HookStatus::unattached("timewait_reset_sent");
    let tuple_known = [
        offsets.skc_family,
        offsets.skc_num,
        offsets.skc_dport,
        offsets.skc_rcv_saddr,
        offsets.skc_daddr,
        offsets.skc_v6_rcv_saddr,
        offsets.skc_v6_daddr,
    ]
    .iter()
    .all(|&o| o != OFFSET_UNKNOWN);
    let netns_known = offsets.skc_net != OFFSET_UNKNOWN && offsets.net_inum != OFFSET_UNKNOWN;
    if !tuple_known || (filtered && !netns_known) {
        status
            .refused
            .push("tracepoint: the socket's fields are not in kernel BTF".into());
        return (status, Vec::new());
    }
    let mut attempt = || -> Result<Vec<RawFd>> {
        let fields =
            tracefs::verify_tracepoint(tracefs, "tcp", "tcp_send_reset", reset_tp::FIELDS)?;
        // Before 6.10 (no `reason` field) the tracepoint is not reached
        // for timewait sockets' RSTs (measured on 6.1: 0 of 10), and a
        // zero would read as "none sent".
        if !fields.iter().any(|f| f.name == "reason") {
            anyhow::bail!(
                "tcp:tcp_send_reset has no reset reason: kernels before 6.10 do not report \
                 the RSTs of timewait sockets there"
            );
        }
        let p: &mut TracePoint = ebpf
            .program_mut("tcp_send_reset")
            .ok_or_else(|| anyhow!("program tcp_send_reset missing"))?
            .try_into()?;
        p.load().context("load tcp_send_reset")?;
        p.attach("tcp", "tcp_send_reset")
            .context("attach tcp_send_reset")?;
        Ok(vec![p.fd()?.as_fd().as_raw_fd()])
    };
    tracepoint_outcome(status, attempt())
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
