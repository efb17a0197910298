//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/ for a bounded
//! time. The seeds in fuzz/seeds/TARGET are read, never written; what the
//! fuzzer learns goes to target/fuzz-corpus/TARGET, kept between runs; an
//! empty seed directory is fine. A
//! crash fails the run and names the input libFuzzer saved under
//! fuzz/artifacts/TARGET, which becomes a regression test once fixed.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup::NIGHTLY,
    util::{run as sh, workspace_root},
};

/// The targets, as fuzz/Cargo.toml names them.
pub const TARGETS: &[&str] = &["decode", "diag_reply", "recording", "web_config", "query"];

const CARGO_FUZZ_VERSION: &str = "0.13.1";

fn cargo_fuzz() -> PathBuf {
    workspace_root().join(".tools/cargo-fuzz/bin/cargo-fuzz")
}

/// Installs cargo-fuzz under .tools/ (not on PATH: nothing global).
pub fn install() -> Result<()> {
    if cargo_fuzz().is_file() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into .tools/cargo-fuzz");
    sh(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--quiet",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .arg("--root")
        .arg(workspace_root().join(".tools/cargo-fuzz")))
    .context("installing cargo-fuzz")
}

/// Fuzzes each of `targets` for `seconds`.
pub fn run(targets: &[&str], seconds: u32) -> Result<()> {
    install()?;
    let root = workspace_root();
    let fuzz = root.join("fuzz");
    let mut crashed = Vec::new();
    for target in targets {
        let corpus = root.join("target/fuzz-corpus").join(target);
        fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = fuzz.join("seeds").join(target);
        let mut cmd = Command::new("rustup");
        cmd.current_dir(&fuzz)
            .args(["run", NIGHTLY])
            .arg(cargo_fuzz())
            .args(["fuzz", "run", target])
            .arg(&corpus);
        if seeds.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // The eBPF build under monitor's build script is not
            // instrumented; nothing else needs the environment changed.
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        if sh(&mut cmd).is_err() {
            crashed.push(format!("{target} (see fuzz/artifacts/{target}/)"));
        }
    }
    if !crashed.is_empty() {
        bail!("fuzzing found crashes: {}", crashed.join(", "));
    }
    Ok(())
}
