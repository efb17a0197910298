//! Hooks on kernel functions, each tried with fentry/fexit first (cheapest,
//! typed arguments), then kprobe/kretprobe, then given up with the reason
//! recorded, so `twmon check` and `twmon_probe_attached` can say exactly
//! what runs and why not more.

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe},
};
use monitor_common::{OFFSET_UNKNOWN, SockOffsets, names::programs as p};

use super::{ProbeMode, btf};
use crate::model::hooks::{Hook, HookStatus, Method};

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

impl Part {
    /// At the entry of `function`, which takes at least `params`.
    const fn entry(
        function: &'static str,
        params: usize,
        fentry_program: &'static str,
        kprobe_program: &'static str,
    ) -> Part {
        Part {
            function,
            params,
            exact: false,
            at_return: false,
            fentry_program,
            kprobe_program,
            optional: false,
            fexit_by_params: &[],
        }
    }

    /// At the return of `function`.
    const fn exit(
        function: &'static str,
        params: usize,
        fexit_program: &'static str,
        kretprobe_program: &'static str,
    ) -> Part {
        Part {
            at_return: true,
            ..Part::entry(function, params, fexit_program, kretprobe_program)
        }
    }

    /// The function must take exactly `params`.
    const fn exact(self) -> Part {
        Part {
            exact: true,
            ..self
        }
    }

    const fn optional(self) -> Part {
        Part {
            optional: true,
            ..self
        }
    }
}

/// A hook on kernel functions: parts that only make sense together,
/// attached all with the same method or not at all.
pub struct FunctionHook {
    pub hook: Hook,
    /// Whether the struct fields the programs read are all known.
    pub fields_known: fn(&SockOffsets) -> bool,
    pub parts: &'static [Part],
}

fn timewait_fields(o: &SockOffsets) -> bool {
    o.tuple_known() && o.tw_substate != OFFSET_UNKNOWN
}

fn death_fields(o: &SockOffsets) -> bool {
    timewait_fields(o) && o.tw_timer != OFFSET_UNKNOWN
}

pub const FUNCTION_HOOKS: &[FunctionHook] = &[
    FunctionHook {
        hook: Hook::TimewaitBirth,
        fields_known: timewait_fields,
        parts: &[
            Part::entry(
                "tcp_time_wait",
                3,
                p::TCP_TIME_WAIT_FENTRY,
                p::TCP_TIME_WAIT_KPROBE,
            ),
            // The fexit program reads the return value right after the
            // three parameters, so the count must match exactly.
            Part::exit(
                "inet_twsk_alloc",
                3,
                p::TWSK_ALLOC_FEXIT,
                p::TWSK_ALLOC_KRETPROBE,
            )
            .exact(),
        ],
    },
    FunctionHook {
        hook: Hook::TimewaitSegments,
        fields_known: timewait_fields,
        parts: &[
            // 3 parameters on 6.1, 5 on 6.18; the first three agree.
            Part::entry(
                "tcp_timewait_state_process",
                3,
                p::TW_PROCESS_FENTRY,
                p::TW_PROCESS_KPROBE,
            ),
            Part {
                fexit_by_params: &[(3, p::TW_PROCESS_FEXIT3), (5, p::TW_PROCESS_FEXIT5)],
                ..Part::exit(
                    "tcp_timewait_state_process",
                    3,
                    p::TW_PROCESS_FEXIT3,
                    p::TW_PROCESS_KRETPROBE,
                )
            },
        ],
    },
    FunctionHook {
        hook: Hook::TimewaitDeath,
        fields_known: death_fields,
        parts: &[
            Part::entry(
                "inet_twsk_deschedule_put",
                1,
                p::DESCHEDULE_PUT_FENTRY,
                p::DESCHEDULE_PUT_KPROBE,
            ),
            Part::entry(
                "tw_timer_handler",
                1,
                p::TW_TIMER_FENTRY,
                p::TW_TIMER_KPROBE,
            ),
            // Context for the cause of early deaths (connect reuse; the
            // purge's context comes with `timewait_purge`); without it those
            // deaths are "unknown", not missed.
            Part::entry(
                "__inet_hash_connect",
                0,
                p::HASH_CONNECT_FENTRY,
                p::HASH_CONNECT_KPROBE,
            )
            .optional(),
            Part::exit(
                "__inet_hash_connect",
                0,
                p::HASH_CONNECT_FEXIT,
                p::HASH_CONNECT_KRETPROBE,
            )
            .optional(),
        ],
    },
    // A namespace's teardown: the purge's kill may be inlined (Debian's
    // 6.1), so its deaths are seen where each socket is freed, by the
    // purging thread. Also gives `timewait_death` its `purged` cause where
    // the kill is not inlined.
    FunctionHook {
        hook: Hook::TimewaitPurge,
        fields_known: timewait_fields,
        parts: &[
            Part::entry(
                "inet_twsk_purge",
                0,
                p::TWSK_PURGE_FENTRY,
                p::TWSK_PURGE_KPROBE,
            ),
            Part::exit(
                "inet_twsk_purge",
                0,
                p::TWSK_PURGE_FEXIT,
                p::TWSK_PURGE_KRETPROBE,
            ),
            Part::entry(
                "tcp_twsk_destructor",
                1,
                p::TWSK_DESTRUCTOR_FENTRY,
                p::TWSK_DESTRUCTOR_KPROBE,
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
pub fn attach(ebpf: &mut Ebpf, hook: &FunctionHook, env: &Env<'_>) -> (HookStatus, Vec<RawFd>) {
    let mut status = HookStatus::unattached(hook.hook);
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
    hook: &FunctionHook,
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
                .and_then(|btf| btf::func_params(btf, part.function))
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
        Method::BtfTracepoint | Method::RawTracepoint | Method::Tracepoint => {
            bail!("not a function hook")
        }
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
        Method::BtfTracepoint | Method::RawTracepoint | Method::Tracepoint => return,
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
    // ENOTSUPP from attach: the trampoline exists, the kernel cannot
    // point a function's ftrace call at it.
    if line.contains("attach") && line.contains("os error 524") {
        return format!(
            "this kernel cannot attach BPF trampolines to kernel functions (no \
             CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS: arm64 before 6.4, among others): {}",
            line.replace("No error information (os error 524)", "os error 524")
        );
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

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn an_unsupported_trampoline_attach_says_why() {
        let line = "tcp_time_wait: attach: `bpf_raw_tracepoint_open` failed: No error \
                    information (os error 524)";
        let text = explain(line);
        assert!(
            text.starts_with("this kernel cannot attach BPF trampolines"),
            "{text}"
        );
        assert!(text.ends_with("failed: os error 524"), "{text}");
        assert_eq!(explain("something else"), "something else");
    }
}
