//! Builds `monitor-ebpf` for the BPF target with aya-build, as aya's own
//! template does, so `include_bytes_aligned!` can embed the object.
//!
//! bpf-linker lives in the project-local `.tools/` that `cargo xtask setup`
//! fills; it is put on PATH here so that a plain `cargo build` works too
//! once setup has run, without touching anything global.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("monitor crate has no parent directory"))?;
    let tools_bin = workspace.join(".tools/bpf-linker/bin");
    println!("cargo:rerun-if-changed={}", tools_bin.display());
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![tools_bin.clone()];
    dirs.extend(env::split_paths(&path));
    let joined = env::join_paths(dirs).context("PATH contains an invalid entry")?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", &joined) };
    if !dirs_have(&joined, "bpf-linker") {
        return Err(anyhow!(
            "bpf-linker not found (looked in {} and PATH): run `cargo xtask setup` first",
            tools_bin.display()
        ));
    }
    let ebpf_dir = workspace.join("monitor-ebpf");
    let common_dir = workspace.join("monitor-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "monitor-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

fn dirs_have(path: &std::ffi::OsStr, program: &str) -> bool {
    env::split_paths(path).any(|dir| dir.join(program).is_file())
}
