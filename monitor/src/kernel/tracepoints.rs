//! The hooks on tracepoints: state transitions (mandatory), EADDRNOTAVAIL
//! from connect(), and RSTs sent from TIME_WAIT. Each classic tracepoint's
//! record layout is checked against the running kernel's `format` file
//! before its program is loaded.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
};
use monitor_common::{
    OFFSET_UNKNOWN, SockOffsets,
    names::programs as p,
    tracepoints::{bind_tp, connect_tp, reset_tp, set_state_tp},
};

use super::{functions::one_line, tracefs};
use crate::model::hooks::{Hook, HookStatus, Method};

/// Attaches the state-change program: where the socket fields it reads are
/// known, the BTF-typed raw tracepoint (direct loads, the cheapest), else
/// the plain raw tracepoint; else the classic tracepoint. This hook is
/// mandatory: without it twmon has nothing to report.
pub fn attach_set_state(
    ebpf: &mut Ebpf,
    offsets: &SockOffsets,
    btf: Option<&Btf>,
    tracefs: &Path,
) -> Result<(HookStatus, RawFd)> {
    let mut status = HookStatus::unattached(Hook::SetState);
    let fields_known = offsets.tuple_known() && offsets.sk_protocol != OFFSET_UNKNOWN;
    match btf {
        Some(btf) if fields_known => match btf_set_state(ebpf, btf) {
            Ok(fd) => {
                status.method = Some(Method::BtfTracepoint);
                return Ok((status, fd));
            }
            Err(err) => status.refused.push(format!("tp_btf: {}", one_line(&err))),
        },
        _ => status
            .refused
            .push("tp_btf: socket fields or kernel BTF missing".to_string()),
    }
    if fields_known {
        match raw(ebpf, p::SET_STATE_RAW, "inet_sock_set_state") {
            Ok(fd) => {
                status.method = Some(Method::RawTracepoint);
                return Ok((status, fd));
            }
            Err(err) => status
                .refused
                .push(format!("raw_tracepoint: {}", one_line(&err))),
        }
    } else {
        status
            .refused
            .push("raw_tracepoint: socket fields not found in kernel BTF".to_string());
    }
    tracefs::verify_tracepoint(tracefs, "sock", "inet_sock_set_state", set_state_tp::FIELDS)?;
    let fd = classic(ebpf, p::SET_STATE_TP, "sock", "inet_sock_set_state")?;
    status.method = Some(Method::Tracepoint);
    Ok((status, fd))
}

fn btf_set_state(ebpf: &mut Ebpf, btf: &Btf) -> Result<RawFd> {
    let fd = btf_program(ebpf, btf, p::SET_STATE_BTF)?;
    // The spare for the runs the kernel skips in the first (see
    // monitor-ebpf's `nested`); without it those stay counted as skipped.
    if let Err(err) = btf_program(ebpf, btf, p::SET_STATE_BTF_NESTED) {
        log::warn!(
            "{}: {}; state transitions made while the first program runs stay skipped",
            p::SET_STATE_BTF_NESTED,
            one_line(&err)
        );
    }
    Ok(fd)
}

fn btf_program(ebpf: &mut Ebpf, btf: &Btf, name: &str) -> Result<RawFd> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing"))?
        .try_into()?;
    program.load("inet_sock_set_state", btf).context("load")?;
    program.attach().context("attach")?;
    Ok(program.fd()?.as_fd().as_raw_fd())
}

/// Loads program `name` and attaches it to raw tracepoint `event`.
fn raw(ebpf: &mut Ebpf, name: &str, event: &str) -> Result<RawFd> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing"))?
        .try_into()?;
    program.load().context("load")?;
    program.attach(event).context("attach")?;
    Ok(program.fd()?.as_fd().as_raw_fd())
}

/// Loads program `name` and attaches it to tracepoint `category:event`.
fn classic(ebpf: &mut Ebpf, name: &str, category: &str, event: &str) -> Result<RawFd> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("verifying {name}"))?;
    program
        .attach(category, event)
        .with_context(|| format!("attaching to tracepoint {category}:{event}"))?;
    Ok(program.fd()?.as_fd().as_raw_fd())
}

/// A syscall's entry and exit tracepoints, as one hook's programs.
pub struct SyscallHook {
    hook: Hook,
    /// The tracepoint events (`sys_enter_X`, `sys_exit_X`), which are also
    /// the programs' names.
    enter: &'static str,
    exit: &'static str,
    enter_fields: &'static [(&'static str, usize, usize)],
    exit_fields: &'static [(&'static str, usize, usize)],
}

/// connect() failing with EADDRNOTAVAIL.
pub const CONNECT: SyscallHook = SyscallHook {
    hook: Hook::ConnectEaddrnotavail,
    enter: p::SYS_ENTER_CONNECT,
    exit: p::SYS_EXIT_CONNECT,
    enter_fields: connect_tp::ENTER_FIELDS,
    exit_fields: connect_tp::EXIT_FIELDS,
};

/// bind() failing with EADDRINUSE.
pub const BIND: SyscallHook = SyscallHook {
    hook: Hook::BindEaddrinuse,
    enter: p::SYS_ENTER_BIND,
    exit: p::SYS_EXIT_BIND,
    enter_fields: bind_tp::ENTER_FIELDS,
    exit_fields: bind_tp::EXIT_FIELDS,
};

/// Attaches a syscall hook's tracepoints. Not mandatory: kernels built
/// without syscall tracepoints just lack it.
pub fn attach_syscall(
    ebpf: &mut Ebpf,
    offsets: &SockOffsets,
    tracefs: &Path,
    filtered: bool,
    h: &SyscallHook,
) -> (HookStatus, Vec<RawFd>) {
    let status = HookStatus::unattached(h.hook);
    if filtered && !offsets.task_netns_known() {
        return refused(
            status,
            "the caller's namespace cannot be read (no BTF offsets)",
        );
    }
    let mut attempt = || -> Result<Vec<RawFd>> {
        for (event, fields) in [(h.enter, h.enter_fields), (h.exit, h.exit_fields)] {
            tracefs::verify_tracepoint(tracefs, "syscalls", event, fields)?;
        }
        Ok(vec![
            classic(ebpf, h.enter, "syscalls", h.enter)?,
            classic(ebpf, h.exit, "syscalls", h.exit)?,
        ])
    };
    outcome(status, attempt())
}

/// Attaches `tcp:tcp_send_reset`, filtered in the kernel to RSTs sent by
/// timewait sockets, on kernels that report those there (6.10+, whose
/// record has a reset reason). Not mandatory. The raw tracepoint is
/// preferred (see monitor-ebpf's `reset`); the classic one takes the
/// socket's state from its record. The four-tuple is read from the socket
/// at BTF offsets, and without them the hook is refused.
pub fn attach_reset(
    ebpf: &mut Ebpf,
    offsets: &SockOffsets,
    tracefs: &Path,
    filtered: bool,
) -> (HookStatus, Vec<RawFd>) {
    let mut status = HookStatus::unattached(Hook::TimewaitResetSent);
    if !offsets.tuple_known() || (filtered && !offsets.netns_known()) {
        return refused(status, "the socket's fields are not in kernel BTF");
    }
    if let Err(err) = reports_timewait_resets(tracefs) {
        return refused(status, &one_line(&err));
    }
    if offsets.skc_state == OFFSET_UNKNOWN {
        status
            .refused
            .push("raw_tracepoint: skc_state not found in kernel BTF".to_string());
    } else {
        match raw(ebpf, p::TCP_SEND_RESET_RAW, "tcp_send_reset") {
            Ok(fd) => {
                status.method = Some(Method::RawTracepoint);
                return (status, vec![fd]);
            }
            Err(err) => status
                .refused
                .push(format!("raw_tracepoint: {}", one_line(&err))),
        }
    }
    let attempt = classic(ebpf, p::TCP_SEND_RESET, "tcp", "tcp_send_reset").map(|fd| vec![fd]);
    outcome(status, attempt)
}

/// Whether `tcp:tcp_send_reset` is reached for timewait sockets' RSTs:
/// before 6.10 (no `reason` field) it is not (measured on 6.1: 0 of 10),
/// and a zero would read as "none sent". Also checks the record layout the
/// classic program reads.
fn reports_timewait_resets(tracefs: &Path) -> Result<()> {
    let fields = tracefs::verify_tracepoint(tracefs, "tcp", "tcp_send_reset", reset_tp::FIELDS)?;
    if !fields.iter().any(|f| f.name == "reason") {
        anyhow::bail!(
            "tcp:tcp_send_reset has no reset reason: kernels before 6.10 do not report \
             the RSTs of timewait sockets there"
        );
    }
    Ok(())
}

fn refused(mut status: HookStatus, why: &str) -> (HookStatus, Vec<RawFd>) {
    status.refused.push(format!("tracepoint: {why}"));
    (status, Vec::new())
}

/// A tracepoint hook's status once its attach attempt is over.
fn outcome(mut status: HookStatus, attempt: Result<Vec<RawFd>>) -> (HookStatus, Vec<RawFd>) {
    match attempt {
        Ok(fds) => {
            status.method = Some(Method::Tracepoint);
            (status, fds)
        }
        Err(err) => refused(status, &one_line(&err)),
    }
}
