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

    pub fn from_label(label: &str) -> Option<Method> {
        [
            Method::Fentry,
            Method::Kprobe,
            Method::RawTracepoint,
            Method::Tracepoint,
        ]
        .into_iter()
        .find(|m| m.label() == label)
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

impl HookStatus {
    /// A hook not (yet) attached, with nothing refused so far.
    pub fn unattached(hook: &'static str) -> Self {
        HookStatus {
            hook,
            method: None,
            refused: Vec::new(),
        }
    }
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
    /// A part the hook can do without (it only refines what the others
    /// report); its failure is noted, not fatal to the hook.
    pub optional: bool,
    /// fexit programs by the kernel's parameter count, for returns whose
    /// position in the context follows the parameters; when set, it
    /// replaces `fentry_program`.
    pub fexit_by_params: &'static [(usize, &'static str)],
}

/// A hook: parts that only make sense together, attached all with the same
/// method or not at all.
pub struct Hook {
    pub name: &'static str,
    /// Whether the struct fields the programs read are all known.
    pub fields_known: fn(&SockOffsets) -> bool,
    pub parts: &'static [Part],
}

fn timewait_fields(o: &SockOffsets) -> bool {
    kernel_btf::tuple_fields_known(o) && o.tw_substate != monitor_common::OFFSET_UNKNOWN
}

fn death_fields(o: &SockOffsets) -> bool {
    timewait_fields(o) && o.tw_timer != monitor_common::OFFSET_UNKNOWN
}

/// A part at a function's entry (`at_return` false) or return.
const fn part(
    function: &'static str,
    params: usize,
    exact: bool,
    at_return: bool,
    fentry_program: &'static str,
    kprobe_program: &'static str,
    optional: bool,
) -> Part {
    Part {
        function,
        params,
        exact,
        at_return,
        fentry_program,
        kprobe_program,
        optional,
        fexit_by_params: &[],
    }
}

pub const HOOKS: &[Hook] = &[
    Hook {
        name: "timewait_birth",
        fields_known: timewait_fields,
        parts: &[
            part(
                "tcp_time_wait",
                3,
                false,
                false,
                "tcp_time_wait_fentry",
                "tcp_time_wait_kprobe",
                false,
            ),
            // The fexit program reads the return value right after the
            // three parameters, so the count must match exactly.
            part(
                "inet_twsk_alloc",
                3,
                true,
                true,
                "inet_twsk_alloc_fexit",
                "inet_twsk_alloc_kretprobe",
                false,
            ),
        ],
    },
    Hook {
        name: "timewait_segments",
        fields_known: timewait_fields,
        parts: &[
            // 3 parameters on 6.1, 5 on 6.18; the first three agree.
            part(
                "tcp_timewait_state_process",
                3,
                false,
                false,
                "tcp_timewait_state_process_fentry",
                "tcp_timewait_state_process_kprobe",
                false,
            ),
            Part {
                fexit_by_params: &[
                    (3, "tcp_timewait_state_process_fexit3"),
                    (5, "tcp_timewait_state_process_fexit5"),
                ],
                ..part(
                    "tcp_timewait_state_process",
                    3,
                    false,
                    true,
                    "tcp_timewait_state_process_fexit3",
                    "tcp_timewait_state_process_kretprobe",
                    false,
                )
            },
        ],
    },
    Hook {
        name: "timewait_death",
        fields_known: death_fields,
        parts: &[
            part(
                "inet_twsk_deschedule_put",
                1,
                false,
                false,
                "inet_twsk_deschedule_put_fentry",
                "inet_twsk_deschedule_put_kprobe",
                false,
            ),
            part(
                "tw_timer_handler",
                1,
                false,
                false,
                "tw_timer_handler_fentry",
                "tw_timer_handler_kprobe",
                false,
            ),
            // Context for the cause of early deaths (connect reuse; the
            // purge's context comes with `timewait_purge`); without it those
            // deaths are "unknown", not missed.
            part(
                "__inet_hash_connect",
                0,
                false,
                false,
                "inet_hash_connect_fentry",
                "inet_hash_connect_kprobe",
                true,
            ),
            part(
                "__inet_hash_connect",
                0,
                false,
                true,
                "inet_hash_connect_fexit",
                "inet_hash_connect_kretprobe",
                true,
            ),
        ],
    },
    // A namespace's teardown: the purge's kill may be inlined (Debian's
    // 6.1), so its deaths are seen where each socket is freed, by the
    // purging thread. Also gives `timewait_death` its `purged` cause where
    // the kill is not inlined.
    Hook {
        name: "timewait_purge",
        fields_known: timewait_fields,
        parts: &[
            part(
                "inet_twsk_purge",
                0,
                false,
                false,
                "inet_twsk_purge_fentry",
                "inet_twsk_purge_kprobe",
                false,
            ),
            part(
                "inet_twsk_purge",
                0,
                false,
                true,
                "inet_twsk_purge_fexit",
                "inet_twsk_purge_kretprobe",
                false,
            ),
            part(
                "tcp_twsk_destructor",
                1,
                false,
                false,
                "tcp_twsk_destructor_fentry",
                "tcp_twsk_destructor_kprobe",
                false,
            ),
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
    let mut status = HookStatus::unattached(hook.name);
    if !(hook.fields_known)(env.offsets) {
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
            Ok((fds, notes)) => {
                status.method = Some(method);
                status.refused.extend(notes);
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

/// Attaches every part with `method`; returns the fds and a note per
/// optional part that could not attach.
fn attach_all(
    ebpf: &mut Ebpf,
    hook: &Hook,
    method: Method,
    env: &Env<'_>,
) -> Result<(Vec<RawFd>, Vec<String>)> {
    let mut fds = Vec::new();
    let mut notes = Vec::new();
    for (i, part) in hook.parts.iter().enumerate() {
        match attach_part(ebpf, part, method, env) {
            Ok(fd) => fds.push(fd),
            Err(err) if part.optional => {
                unload(ebpf, part, method);
                let err = err.context(part.function);
                notes.push(format!(
                    "{} (optional): {}",
                    method.label(),
                    explain(&one_line(&err))
                ));
            }
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
    Ok((fds, notes))
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
            let name = if part.fexit_by_params.is_empty() {
                part.fentry_program
            } else {
                part.fexit_by_params
                    .iter()
                    .find(|(n, _)| *n == params)
                    .map(|(_, name)| *name)
                    .ok_or_else(|| anyhow!("no fexit program for {params} parameters"))?
            };
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?;
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
        Method::Fentry if !part.fexit_by_params.is_empty() => {
            for (_, name) in part.fexit_by_params {
                if let Some(p) = ebpf.program_mut(name)
                    && let Ok(p) = <&mut FExit>::try_from(p)
                {
                    let _ = p.unload();
                }
            }
            return;
        }
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
