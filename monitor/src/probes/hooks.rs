//! Hooks on kernel functions, each tried with fentry/fexit first (cheapest,
//! typed arguments), then kprobe/kretprobe, then given up with the reason
//! recorded, so `twmon check` and `twmon_probe_attached` can say exactly
//! what runs and why not more.

use std::{
    fmt,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe},
};
use monitor_common::SockOffsets;

use super::ProbeMode;
use crate::kernel_btf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Fentry,
    Kprobe,
    RawTracepoint,
    Tracepoint,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Fentry => "fentry",
            Method::Kprobe => "kprobe",
            Method::RawTracepoint => "raw_tracepoint",
            Method::Tracepoint => "tracepoint",
        }
    }
}

/// How one hook ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    /// Stable name, used as the `hook` metric label.
    pub hook: &'static str,
    /// None: not attached; what it would report is missing or derived.
    pub method: Option<Method>,
    /// One line per refused method: `fentry: <why>`.
    pub refused: Vec<String>,
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = self.method.map_or("none", Method::label);
        write!(f, "{:<22} {method}", self.hook)?;
        if !self.refused.is_empty() {
            write!(f, " (refused: {})", self.refused.join("; "))?;
        }
        Ok(())
    }
}

/// One kernel function a hook attaches to.
pub struct Part {
    pub function: &'static str,
    /// Parameters the fentry/fexit program reads (checked against BTF:
    /// signatures change between kernels).
    pub params: usize,
    /// Whether the kernel must have exactly `params` (the program reads the
    /// return value right after them) or may have more after them.
    pub exact: bool,
    /// Attach at return (fexit/kretprobe) rather than entry.
    pub at_return: bool,
    pub fentry_program: &'static str,
    pub kprobe_program: &'static str,
}

/// A hook: parts that only make sense together, attached all with the same
/// method or not at all.
pub struct Hook {
    pub name: &'static str,
    /// Needs the socket-tuple offsets from BTF.
    pub needs_tuple: bool,
    pub parts: &'static [Part],
}

pub const HOOKS: &[Hook] = &[
    Hook {
        name: "timewait_birth",
        needs_tuple: true,
        parts: &[
            Part {
                function: "tcp_time_wait",
                params: 3,
                exact: false,
                at_return: false,
                fentry_program: "tcp_time_wait_fentry",
                kprobe_program: "tcp_time_wait_kprobe",
            },
            Part {
                function: "inet_twsk_alloc",
                params: 3,
                exact: true,
                at_return: true,
                fentry_program: "inet_twsk_alloc_fexit",
                kprobe_program: "inet_twsk_alloc_kretprobe",
            },
        ],
    },
    Hook {
        name: "timewait_segments",
        needs_tuple: true,
        parts: &[
            Part {
                function: "tcp_timewait_state_process",
                params: 3,
                exact: false,
                at_return: false,
                fentry_program: "tcp_timewait_state_process_fentry",
                kprobe_program: "tcp_timewait_state_process_kprobe",
            },
            Part {
                function: "tcp_timewait_state_process",
                params: 3,
                exact: false,
                at_return: true,
                fentry_program: "tcp_timewait_state_process_fexit",
                kprobe_program: "tcp_timewait_state_process_kretprobe",
            },
        ],
    },
];

pub struct Env<'a> {
    pub btf: Option<&'a btf_rs::Btf>,
    pub aya_btf: Option<&'a Btf>,
    pub offsets: &'a SockOffsets,
    pub mode: ProbeMode,
}

/// Attaches `hook` with the best method allowed; returns its status and
/// the fds of the programs attached.
pub fn attach(ebpf: &mut Ebpf, hook: &Hook, env: &Env<'_>) -> (HookStatus, Vec<RawFd>) {
    let mut status = HookStatus {
        hook: hook.name,
        method: None,
        refused: Vec::new(),
    };
    if hook.needs_tuple
        && !(kernel_btf::tuple_fields_known(env.offsets)
            && env.offsets.tw_substate != monitor_common::OFFSET_UNKNOWN)
    {
        status
            .refused
            .push("socket fields not found in kernel BTF".to_string());
        return (status, Vec::new());
    }
    let methods: &[Method] = match env.mode {
        ProbeMode::Auto => &[Method::Fentry, Method::Kprobe],
        ProbeMode::Fentry => &[Method::Fentry],
        ProbeMode::Kprobe => &[Method::Kprobe],
        ProbeMode::Tracepoint => {
            status.refused.push("--probes tracepoint".to_string());
            return (status, Vec::new());
        }
    };
    for &method in methods {
        match attach_all(ebpf, hook, method, env) {
            Ok(fds) => {
                status.method = Some(method);
                return (status, fds);
            }
            Err(err) => {
                status
                    .refused
                    .push(format!("{}: {}", method.label(), explain(&one_line(&err))))
            }
        }
    }
    (status, Vec::new())
}

fn attach_all(ebpf: &mut Ebpf, hook: &Hook, method: Method, env: &Env<'_>) -> Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for (i, part) in hook.parts.iter().enumerate() {
        match attach_part(ebpf, part, method, env) {
            Ok(fd) => fds.push(fd),
            Err(err) => {
                // All or nothing: half a hook would report half the truth.
                for done in &hook.parts[..i] {
                    unload(ebpf, done, method);
                }
                unload(ebpf, part, method);
                return Err(err.context(part.function));
            }
        }
    }
    Ok(fds)
}

fn attach_part(ebpf: &mut Ebpf, part: &Part, method: Method, env: &Env<'_>) -> Result<RawFd> {
    match method {
        Method::Fentry => {
            let btf = env.aya_btf.ok_or_else(|| anyhow!("no kernel BTF"))?;
            let params = env
                .btf
                .and_then(|btf| kernel_btf::func_params(btf, part.function))
                .ok_or_else(|| anyhow!("not described in kernel BTF"))?;
            if params < part.params || (part.exact && params != part.params) {
                bail!(
                    "takes {params} parameters on this kernel, twmon expects {}",
                    part.params
                );
            }
            let program = ebpf
                .program_mut(part.fentry_program)
                .ok_or_else(|| anyhow!("program {} missing", part.fentry_program))?;
            if part.at_return {
                let p: &mut FExit = program.try_into()?;
                p.load(part.function, btf).context("load")?;
                p.attach().context("attach")?;
                Ok(p.fd()?.as_fd().as_raw_fd())
            } else {
                let p: &mut FEntry = program.try_into()?;
                p.load(part.function, btf).context("load")?;
                p.attach().context("attach")?;
                Ok(p.fd()?.as_fd().as_raw_fd())
            }
        }
        Method::Kprobe => {
            let program = ebpf
                .program_mut(part.kprobe_program)
                .ok_or_else(|| anyhow!("program {} missing", part.kprobe_program))?;
            let p: &mut KProbe = program.try_into()?;
            p.load().context("load")?;
            p.attach(part.function, 0).context("attach")?;
            Ok(p.fd()?.as_fd().as_raw_fd())
        }
        Method::RawTracepoint | Method::Tracepoint => bail!("not a function hook"),
    }
}

fn unload(ebpf: &mut Ebpf, part: &Part, method: Method) {
    let name = match method {
        Method::Fentry => part.fentry_program,
        Method::Kprobe => part.kprobe_program,
        Method::RawTracepoint | Method::Tracepoint => return,
    };
    let Some(program) = ebpf.program_mut(name) else {
        return;
    };
    let result = match (method, part.at_return) {
        (Method::Fentry, false) => <&mut FEntry>::try_from(program).map(|p| p.unload()),
        (Method::Fentry, true) => <&mut FExit>::try_from(program).map(|p| p.unload()),
        _ => <&mut KProbe>::try_from(program).map(|p| p.unload()),
    };
    if let Ok(Err(err)) | Err(err) = result {
        log::debug!("unloading {name}: {err}");
    }
}

/// Turns the two refusals seen on real kernels into their cause, and cuts
/// a verifier log down to its verdict (the last line before the stats).
fn explain(line: &str) -> String {
    if let Some((head, log)) = line.split_once("Verifier output:") {
        let log = log.split(" verification time").next().unwrap_or(log).trim();
        if !log.is_empty() {
            let verdict = log.rsplit(" ; ").next().unwrap_or(log);
            let verdict: String = verdict
                .chars()
                .rev()
                .take(200)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return format!("{}verifier: …{verdict}", head.trim_end_matches(". "));
        }
    }
    if line.contains("kprobe/type") {
        return format!("the kernel has no kprobes (built without CONFIG_KPROBES): {line}");
    }
    if line.contains("BPF_PROG_LOAD") && line.contains("Operation not permitted") {
        return format!(
            "the kernel refused to load a tracing program (EPERM with no verifier log: \
             BPF trampolines unsupported, or lockdown): {}",
            line.trim_end_matches(" Verifier output:")
                .trim_end_matches('.')
        );
    }
    line.to_string()
}

/// An error chain on one line, without the noise of repeated causes.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ").trim().to_string()
}
