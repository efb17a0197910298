//! Scenarios of `twmon check` and of `--probes`: which method each hook
//! gets, and what a kernel that cannot attach fentry makes of it.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::util::*;

/// The reason twmon gives when the kernel cannot attach trampolines.
const NO_TRAMPOLINES: &str = "this kernel cannot attach BPF trampolines to kernel functions";

/// On a kernel with BPF trampolines, `twmon check` picks fentry for every
/// function hook and the BTF-typed raw tracepoint for state changes, and
/// exits 0. Where they cannot attach (see `fentry_attaches`) it picks
/// kprobes and says why fentry was refused.
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
    let want = if fentry_attaches() {
        "fentry"
    } else {
        "kprobe"
    };
    assert_eq!(method("timewait_birth").as_deref(), Some(want), "{stdout}");
    if !fentry_attaches() {
        assert!(stdout.contains(NO_TRAMPOLINES), "{stdout}");
    }
}

/// Run in place of each fentry scenario where fentry cannot attach: asked
/// for fentry, twmon refuses to start, exits 1 and says why, rather than
/// running with less than it was asked for.
pub fn fentry_refused(ctx: &Ctx) {
    let netns = ctx.netns.to_string_lossy().into_owned();
    let mut child = Command::new(&ctx.twmon)
        .args(["run", "--listen", "127.0.0.1:0", "--probes", "fentry"])
        .args(["--netns", &netns])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting twmon");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("waiting for twmon").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("twmon --probes fentry started on a kernel that cannot attach fentry");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("twmon's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--probes fentry") && stderr.contains(NO_TRAMPOLINES),
        "{stderr}"
    );
}
