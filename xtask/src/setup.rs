//! `cargo xtask setup`: everything a fresh machine needs, installed where
//! it belongs (rustup components, or the project-local `.tools/`), never by
//! hand. Each step checks first and says what it installs, so a second run
//! takes well under a second.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    arch::Arch,
    util::{self, is_root, on_path, output, run as sh, workspace_root},
};

/// The toolchain aya-build compiles the eBPF crate with.
pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests use, by the command that proves each is there.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("ss", "iproute2"),
    ("ip", "iproute2"),
    // promtool and a real Prometheus for the exporter tests.
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // `twmon top` is tested in a real terminal.
    ("tmux", "tmux"),
    // The container image: built and run the way the DaemonSet runs it.
    // crun refuses hybrid cgroup hosts; runc does not.
    ("podman", "podman"),
    ("runc", "runc"),
    // Renders deploy/kubernetes (kustomize is built in).
    ("kubectl", "kubectl"),
    // Lists what BPF objects the kernel holds (the SIGKILL test).
    ("bpftool", "bpftool"),
    // A venv for kubernetes-validate.
    ("virtualenv", "python3-virtualenv"),
];

/// The Kubernetes API schema validator the manifests are checked with
/// (PyPI; it bundles the schemas of Kubernetes 1.25 to 1.37, so the tests
/// need no network).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

pub fn run() -> Result<()> {
    let sysroot = nightly_toolchain()?;
    rust_src(&sysroot)?;
    musl_target(Arch::host())?;
    bpf_linker(&sysroot)?;
    debian_packages()?;
    kubernetes_validate()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = output(rustup().args(["run", NIGHTLY, "rustc", "--print", "sysroot"])).with_context(
        || format!("`rustup run {NIGHTLY} rustc` failed: is the {NIGHTLY} toolchain installed?"),
    )?;
    Ok(PathBuf::from(out.trim()))
}

/// Makes sure the nightly toolchain exists; returns its sysroot.
fn nightly_toolchain() -> Result<PathBuf> {
    if !on_path("rustup") {
        bail!(
            "rustup not found on PATH: twmon builds its eBPF programs with a rustup-managed \
             nightly toolchain; install rustup first"
        );
    }
    if let Ok(sysroot) = nightly_sysroot() {
        return Ok(sysroot);
    }
    eprintln!("xtask: installing the {NIGHTLY} toolchain (needed to build eBPF programs)");
    sh(rustup().args(["toolchain", "install", NIGHTLY, "--profile", "minimal"])).with_context(
        || format!("could not install the {NIGHTLY} toolchain: install it with `rustup toolchain install {NIGHTLY}`"),
    )?;
    nightly_sysroot()
}

fn rust_src(sysroot: &Path) -> Result<()> {
    if sysroot
        .join("lib/rustlib/src/rust/library/Cargo.lock")
        .is_file()
    {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {NIGHTLY} (eBPF builds compile core from source)");
    sh(rustup().args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// The static target of `arch`: the container image's and the QEMU
/// guests' binaries.
pub fn musl_target(arch: Arch) -> Result<()> {
    let target = arch.musl_target();
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))
        .context("`rustc --print sysroot` failed")?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(target)
        .is_dir()
    {
        return Ok(());
    }
    eprintln!("xtask: adding target {target} (static binaries for images and QEMU guests)");
    sh(rustup().args(["target", "add", target]))
}

/// Where setup puts bpf-linker: inside the checkout, so nothing global moves.
pub fn bpf_linker_root() -> PathBuf {
    workspace_root().join(".tools/bpf-linker")
}

/// bpf-linker must be built against the very libLLVM the nightly rustc
/// uses, or bitcode from rustc may not load. The nightly ships that library
/// as `lib/libLLVM.so.<major>.<minor>-rust-<version>`; link against it
/// (through an LLVM_PREFIX with a `libLLVM.so` symlink) and bake its
/// directory into the rpath so the linker finds it at run time.
fn bpf_linker(sysroot: &Path) -> Result<()> {
    let libdir = sysroot.join("lib");
    let libllvm = find_libllvm(&libdir)?;
    let major = llvm_major(&libllvm)
        .with_context(|| format!("cannot read the LLVM major version from {libllvm}"))?;

    let root = bpf_linker_root();
    let bin = root.join("bin/bpf-linker");
    let stamp_path = root.join("STAMP");
    let stamp = format!(
        "bpf-linker {BPF_LINKER_VERSION} llvm-{major} {}\n",
        libdir.join(&libllvm).display()
    );
    if bin.is_file()
        && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
        && output(Command::new(&bin).arg("--version")).is_some()
    {
        return Ok(());
    }

    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {libllvm} into {} (about a minute)",
        root.display()
    );
    let prefix = workspace_root().join(".tools/llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(libdir.join(&libllvm), &link)
        .with_context(|| format!("could not create {}", link.display()))?;

    let mut cmd = util::cargo();
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--force",
    ])
    .args([
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ])
    .arg("--root")
    .arg(&root)
    .env("LLVM_PREFIX", &prefix)
    .env(
        "RUSTFLAGS",
        format!("-C link-arg=-Wl,-rpath,{}", libdir.display()),
    )
    // Build in cargo's own temporary directory, not the workspace's.
    .env_remove("CARGO_TARGET_DIR");
    sh(&mut cmd).with_context(|| {
        format!(
            "building bpf-linker failed; it needs crates.io and a C toolchain (gcc). \
             Check that bpf-linker {BPF_LINKER_VERSION} has a feature llvm-{major}"
        )
    })?;
    fs::write(&stamp_path, stamp)?;
    Ok(())
}

fn find_libllvm(libdir: &Path) -> Result<String> {
    let entries =
        fs::read_dir(libdir).with_context(|| format!("cannot list {}", libdir.display()))?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.starts_with("libLLVM.so.")
                || (name.starts_with("libLLVM-") && name.ends_with(".so"))
        })
        .collect();
    // Prefer the fully versioned name (`libLLVM.so.22.1-rust-...`).
    found.sort_by_key(|name| !name.starts_with("libLLVM.so."));
    found.into_iter().next().with_context(|| {
        format!(
            "no libLLVM shared library in {}: the {NIGHTLY} toolchain should ship one; \
             reinstall it with `rustup toolchain install {NIGHTLY}`",
            libdir.display()
        )
    })
}

/// `libLLVM.so.22.1-rust-…` or `libLLVM-22-rust-….so` -> 22.
fn llvm_major(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("libLLVM.so.")
        .or_else(|| name.strip_prefix("libLLVM-"))?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn debian_packages() -> Result<()> {
    // With the C compiler of the host's musl target: ring (TLS) builds C
    // and assembly for the static binaries (image, QEMU guests).
    let musl_cc = Arch::host().c_compiler();
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .chain([&musl_cc])
        .filter(|(cmd, _)| !on_path(cmd) && !Path::new("/usr/sbin").join(cmd).is_file())
        .map(|(_, pkg)| *pkg)
        .collect();
    install_debian(&missing)
}

/// Builds static (musl) release binaries, given as (package, bin) pairs;
/// returns the directory they are in.
pub fn build_static(arch: Arch, bins: &[(&str, &str)]) -> Result<PathBuf> {
    let root = workspace_root();
    let target = arch.musl_target();
    let mut cmd = crate::util::cargo();
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", target]);
    arch.cross_env(&mut cmd);
    for (package, bin) in bins {
        cmd.args(["--package", package, "--bin", bin]);
    }
    sh(&mut cmd)?;
    Ok(root.join("target").join(target).join("release"))
}

/// kubernetes-validate in its own virtualenv under .tools/.
fn kubernetes_validate() -> Result<()> {
    let venv = workspace_root().join(".tools/kubernetes-validate");
    let bin = venv.join("bin/kubernetes-validate");
    if bin.is_file() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {KUBERNETES_VALIDATE} into {}",
        venv.display()
    );
    sh(Command::new("virtualenv").arg("-q").arg(&venv))?;
    sh(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]))
    .context("installing kubernetes-validate from PyPI")
}

/// Installs Debian packages by name (root only), deduplicated.
pub fn install_debian(packages: &[&str]) -> Result<()> {
    let mut packages: Vec<&str> = packages.to_vec();
    packages.sort_unstable();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !is_root() || !on_path("apt-get") {
        bail!("missing Debian packages: {list}; install them with `sudo apt-get install {list}`");
    }
    eprintln!("xtask: installing Debian packages: {list}");
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_from_library_names() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM-21-rust-1.90.0-nightly.so"), Some(21));
        assert_eq!(llvm_major("libfoo.so"), None);
    }
}
