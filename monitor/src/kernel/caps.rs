//! Capability checks, so a missing privilege is one clear line at start
//! rather than an EPERM from deep inside a bpf() call.

use std::fs;

use anyhow::{Context as _, Result, bail};

pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
pub fn effective() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_capeff(&status).context("no CapEff line in /proc/self/status")
}

pub fn parse_capeff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Names of the capabilities missing for loading and attaching tracing
/// programs: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN on kernels before 5.8.
pub fn missing_for_tracing(caps: u64) -> Vec<&'static str> {
    if has(caps, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(caps, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(caps, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

pub fn require_tracing() -> Result<()> {
    let missing = missing_for_tracing(effective()?);
    if !missing.is_empty() {
        bail!(
            "missing capability {}: twmon loads eBPF programs; run it as root or grant \
             CAP_BPF and CAP_PERFMON (plus CAP_SYS_ADMIN to read other network namespaces)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Once the programs are attached, keeps only what the running daemon
/// still uses: CAP_SYS_ADMIN to enter other network namespaces for
/// sock_diag dumps, and CAP_SYS_PTRACE to read /proc/PID/ns/net of
/// processes holding capabilities twmon would lack (containers): to find
/// every namespace, and with `--netns` to reach one given as such a file
/// or followed there once its file no longer names it.
/// Loading programs (CAP_BPF, CAP_PERFMON), mounting tracefs and raising
/// RLIMIT_MEMLOCK are done by then; map and fdinfo reads go through fds
/// already open.
pub fn drop_after_attach() -> Result<()> {
    use ::caps::{CapSet, Capability, CapsHashSet};
    let keep = CapsHashSet::from([Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE]);
    let err = |e: ::caps::errors::CapsError| anyhow::anyhow!("{e}");
    ::caps::clear(None, CapSet::Ambient).map_err(err)?;
    ::caps::clear(None, CapSet::Inheritable).map_err(err)?;
    // Effective first: it must stay a subset of permitted.
    let effective = ::caps::read(None, CapSet::Effective).map_err(err)?;
    ::caps::set(None, CapSet::Effective, &(&effective & &keep)).map_err(err)?;
    let permitted = ::caps::read(None, CapSet::Permitted).map_err(err)?;
    ::caps::set(None, CapSet::Permitted, &(&permitted & &keep))
        .map_err(err)
        .context("dropping capabilities")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capeff() {
        let status = "Name:\ttwmon\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_capeff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_capeff("Name: x\n"), None);
    }

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(missing_for_tracing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_tracing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_for_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_for_tracing(1 << CAP_SYS_ADMIN).is_empty());
    }
}
