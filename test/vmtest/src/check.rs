//! Scenarios of `twmon check`: which method each hook gets on a capable kernel.

use std::process::Command;

use crate::util::*;

/// On a kernel with BPF trampolines, `twmon check` picks fentry for every
/// function hook and the BTF-typed raw tracepoint for state changes, and
/// exits 0.
pub fn check_prefers_fentry(ctx: &Ctx) {
    let out = Command::new(&ctx.twmon)
        .arg("check")
        .output()
        .expect("running twmon check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "twmon check failed: {out:?}");
    let method = |hook: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(hook))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(
        method("inet_sock_set_state").as_deref(),
        Some("tp_btf"),
        "{stdout}"
    );
    assert_eq!(
        method("timewait_birth").as_deref(),
        Some("fentry"),
        "{stdout}"
    );
}
