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
    // The container test runs the image the way the DaemonSet does.
    let image = crate::image::build()?;
    let mut cmd = cargo();
    cmd.current_dir(&root)
        .env("TWMON_IMAGE", &image)
        .args(["test", "--", "--include-ignored"]);
    let mut totals = run_tests(&mut cmd)?;
    // Every input twmon reads from outside, fuzzed briefly so the targets
    // cannot rot (`cargo xtask fuzz` runs them longer).
    crate::fuzz::run(crate::fuzz::TARGETS, 30)?;
    // Two minutes of churn: memory flat once the table is full, the
    // population following ss while it has room.
    crate::soak::soak(2)?;
    // The bench, briefly, so it cannot rot: its figures are printed (and
    // written to target/bench/), never asserted; `cargo xtask bench` is the
    // measurement.
    crate::bench::bench(true)?;
    // The same scenarios on real 5.10, 6.1 and 6.18 kernels (and 6.1 and
    // 6.18 on arm64), with kprobes and fentry.
    let vm = crate::vm::vm_test(None, None)?;
    totals.passed += vm.passed;
    totals.failed += vm.failed;
    // One closing line for the whole run, so the last word is not the
    // count of whichever test binary happened to run last.
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    anyhow::ensure!(totals.failed == 0, "{} tests failed", totals.failed);
    Ok(())
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs a `cargo test` command, echoing its output, and adds up its
/// `test result:` lines.
fn run_tests(cmd: &mut Command) -> Result<Totals> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: $ {}", crate::util::display(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        add_result_line(&mut totals, &line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    anyhow::ensure!(
        status.success(),
        "cargo test failed with {status} ({} passed, {} failed)",
        totals.passed,
        totals.failed
    );
    Ok(totals)
}

/// `test result: ok. 21 passed; 0 failed; ...` -> adds 21 and 0.
fn add_result_line(totals: &mut Totals, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result:") else {
        return;
    };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        if let [.., n, kind] = words.as_slice()
            && let Ok(n) = n.parse::<u64>()
        {
            match *kind {
                "passed" => totals.passed += n,
                "failed" => totals.failed += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines() {
        let mut t = Totals::default();
        add_result_line(
            &mut t,
            "test result: ok. 21 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.33s",
        );
        add_result_line(&mut t, "test result: FAILED. 4 passed; 1 failed; 0 ignored");
        add_result_line(&mut t, "running 5 tests");
        assert_eq!(
            t,
            Totals {
                passed: 25,
                failed: 1
            }
        );
    }
}
