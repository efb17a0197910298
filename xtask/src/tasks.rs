//! `run` and `test`: the two commands README.md promises.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{
    setup::{self, NIGHTLY},
    util::{cargo, is_root, on_path, run as sh, workspace_root},
};

/// Builds twmon (release) and runs `twmon run ARGS` as root, via sudo when
/// not root already: loading eBPF programs needs CAP_BPF and CAP_PERFMON.
pub fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    sh(cargo().args([
        "build",
        "--release",
        "--package",
        "monitor",
        "--bin",
        "twmon",
    ]))?;
    let twmon = workspace_root().join("target/release/twmon");
    let mut cmd = if is_root() {
        Command::new(&twmon)
    } else {
        anyhow::ensure!(
            on_path("sudo"),
            "twmon needs root (CAP_BPF, CAP_PERFMON) and sudo is not installed: run as root"
        );
        let mut cmd = Command::new("sudo");
        cmd.arg("-E").arg(&twmon);
        cmd
    };
    cmd.arg("run").args(args);
    sh(&mut cmd)
}

/// Everything CI checks, in the order that fails fastest.
pub fn test() -> Result<()> {
    setup::run()?;
    let root = workspace_root();
    sh(cargo().current_dir(&root).args(["fmt", "--all", "--check"]))
        .context("code is not formatted: run `cargo fmt --all`")?;
    sh(cargo()
        .current_dir(&root)
        .args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate is linted for its own target with the nightly toolchain.
    sh(Command::new("rustup")
        .current_dir(root.join("monitor-ebpf"))
        .args(["run", NIGHTLY, "cargo", "clippy", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env("CARGO_TARGET_DIR", root.join("target/ebpf-clippy")))?;
    // Root-only tests are #[ignore]d so a plain `cargo test` by a user
    // stays green; here they must run.
    anyhow::ensure!(
        is_root(),
        "`cargo xtask test` runs tests that load eBPF programs and create network \
         namespaces: run it as root (e.g. `sudo -E cargo xtask test`)"
    );
    sh(cargo()
        .current_dir(&root)
        .args(["test", "--", "--include-ignored"]))?;
    Ok(())
}
