//! `cargo xtask vm-test`: boots a real Debian 6.1 kernel under QEMU (TCG:
//! KVM is not usable on these machines) with an initramfs of busybox, the
//! static twmon and the static scenario runner, and reads the verdict from
//! the serial console. Everything it needs it installs or downloads itself
//! and caches in `.tools/vm/`.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup::{self, MUSL_TARGET},
    util::{cargo, on_path, output, run as sh, workspace_root},
};

/// The metapackage whose dependency names the current 6.1 cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";
/// Modules the guest needs: inet_diag for sock_diag dumps (built as modules
/// in Debian), veth for multi-host scenarios.
const MODULES: &[&str] = &[
    "kernel/net/ipv4/inet_diag.ko",
    "kernel/net/ipv4/tcp_diag.ko",
    "kernel/drivers/net/veth.ko",
];
/// Generous: a TCG boot takes seconds, but CI machines may be slow.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Pass/fail counts reported by the guest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub passed: u64,
    pub failed: u64,
}

/// Runs the guest scenarios (those whose name contains `only`, if given);
/// the caller has run `setup` already.
pub fn vm_test(only: Option<&str>) -> Result<Verdict> {
    // It travels on the kernel command line, which splits on spaces.
    if let Some(only) = only
        && (only.is_empty() || !only.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        bail!("--only takes part of a scenario name (letters, digits, _), not {only:?}");
    }
    packages()?;
    let kernel = kernel()?;
    let bins = build_guest_binaries()?;
    let initrd = initramfs(&kernel, &bins)?;
    boot(&kernel.vmlinuz, &initrd, only)
}

fn packages() -> Result<()> {
    let mut missing = Vec::new();
    if !on_path("qemu-system-x86_64") {
        missing.push("qemu-system-x86");
    }
    if !deb_installed("busybox-static") {
        missing.push("busybox-static");
    }
    if !on_path("cpio") {
        missing.push("cpio");
    }
    setup::install_debian(&missing)
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

struct Kernel {
    vmlinuz: PathBuf,
    modules: Vec<PathBuf>,
}

fn vm_dir() -> PathBuf {
    workspace_root().join(".tools/vm")
}

/// Downloads (once) the kernel package the metapackage points at and
/// extracts the kernel image and the modules the guest needs.
fn kernel() -> Result<Kernel> {
    let dir = vm_dir().join("kernel");
    let stamp = dir.join("PACKAGE");
    let vmlinuz = dir.join("vmlinuz");
    let modules: Vec<PathBuf> = MODULES
        .iter()
        .map(|m| dir.join(Path::new(m).file_name().unwrap_or_default()))
        .collect();
    if stamp.is_file() && vmlinuz.is_file() && modules.iter().all(|m| m.is_file()) {
        return Ok(Kernel { vmlinuz, modules });
    }

    let package = kernel_package().or_else(|_| {
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        kernel_package()
    })?;
    eprintln!("xtask: downloading {package} for the QEMU guest");
    let dl = vm_dir().join("download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    sh(Command::new("apt-get")
        .current_dir(&dl)
        .args(["download", "-q", &package]))
    .with_context(|| format!("could not download {package} from Debian's archive"))?;
    let deb = fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let tree = dl.join("tree");
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;

    fs::create_dir_all(&dir)?;
    let boot = tree.join("boot");
    let image = fs::read_dir(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    fs::copy(&image, &vmlinuz)?;
    let release = image
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    for (module, dest) in MODULES.iter().zip(&modules) {
        let src = tree.join("lib/modules").join(&release).join(module);
        fs::copy(&src, dest).with_context(|| format!("missing module {}", src.display()))?;
    }
    fs::write(&stamp, format!("{package}\n"))?;
    let _ = fs::remove_dir_all(&dl);
    Ok(Kernel { vmlinuz, modules })
}

fn kernel_package() -> Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", KERNEL_META]))
        .with_context(|| format!("apt-cache knows no {KERNEL_META}"))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| format!("{KERNEL_META} depends on no linux-image package"))
}

struct GuestBinaries {
    twmon: PathBuf,
    vmtest: PathBuf,
}

fn build_guest_binaries() -> Result<GuestBinaries> {
    sh(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "--target",
        MUSL_TARGET,
        "--package",
        "monitor",
        "--bin",
        "twmon",
        "--package",
        "vmtest",
        "--bin",
        "twmon-vmtest",
    ]))?;
    let dir = workspace_root()
        .join("target")
        .join(MUSL_TARGET)
        .join("release");
    Ok(GuestBinaries {
        twmon: dir.join("twmon"),
        vmtest: dir.join("twmon-vmtest"),
    })
}

/// PID 1 of the guest: mount what the daemon expects, load the diag
/// modules, run the scenarios, power off. Exit status of the runner is
/// echoed so a crash is not mistaken for silence.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
for m in inet_diag tcp_diag veth; do insmod /modules/$m.ko || echo "vmtest: insmod $m failed"; done
ip link set lo up
/bin/twmon-vmtest /bin/twmon
echo "vmtest: runner exited with $?"
poweroff -f
"#;

fn initramfs(kernel: &Kernel, bins: &GuestBinaries) -> Result<PathBuf> {
    let out = workspace_root().join("target/vmtest");
    let root = out.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp", "run", "modules"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("copying /bin/busybox")?;
    fs::copy(&bins.twmon, root.join("bin/twmon"))?;
    fs::copy(&bins.vmtest, root.join("bin/twmon-vmtest"))?;
    for m in &kernel.modules {
        fs::copy(
            m,
            root.join("modules").join(m.file_name().unwrap_or_default()),
        )?;
    }
    let init = root.join("init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;

    let initrd = out.join("initrd.cpio");
    let status = Command::new("sh")
        .current_dir(&root)
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet > '{}'",
            initrd.display()
        ))
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("building the initramfs with cpio failed: {status}");
    }
    Ok(initrd)
}

fn boot(vmlinuz: &Path, initrd: &Path, only: Option<&str>) -> Result<Verdict> {
    // Parameters the kernel does not know reach init's environment.
    let mut append = "console=ttyS0 quiet panic=-1".to_string();
    if let Some(only) = only {
        append.push_str(&format!(" TWMON_VMTEST_ONLY={only}"));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(&append)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("xtask: $ {}", crate::util::display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu has no stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let line = strip_ansi(&line);
                println!("guest: {line}");
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if started.elapsed() > TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("the QEMU guest did not finish within {TIMEOUT:?}");
                }
            }
        }
    }
    let status = child.wait()?;
    eprintln!(
        "xtask: guest ran {:.1?}, qemu exited with {status}",
        started.elapsed()
    );
    verdict(&lines)
}

/// Reads the guest's console: a kernel panic, a FAIL line, or a missing
/// summary is a failure.
pub fn verdict(lines: &[String]) -> Result<Verdict> {
    if let Some(panic) = lines.iter().find(|l| l.contains("Kernel panic")) {
        bail!("the guest kernel panicked: {panic}");
    }
    let fails: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("vmtest: FAIL"))
        .collect();
    let summary = lines
        .iter()
        .rev()
        .find_map(|l| {
            let rest = l.strip_prefix("vmtest: ")?;
            let (p, f) = rest.split_once(" passed, ")?;
            Some(Verdict {
                passed: p.trim().parse().ok()?,
                failed: f.trim_end_matches(" failed").trim().parse().ok()?,
            })
        })
        .context("the guest printed no summary (vmtest crashed or never ran)")?;
    if !fails.is_empty() || summary.failed > 0 {
        bail!(
            "{} guest scenario(s) failed",
            summary.failed.max(fails.len() as u64)
        );
    }
    if summary.passed == 0 {
        bail!("the guest ran no scenario");
    }
    Ok(summary)
}

/// Serial output carries terminal escapes from the firmware; drop them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences (`ESC [ ... letter`) or two-character ones
            // such as `ESC c` (reset).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn verdicts() {
        let ok = lines("vmtest: PASS a [fentry]\nvmtest: 1 passed, 0 failed\n");
        assert_eq!(
            verdict(&ok).unwrap(),
            Verdict {
                passed: 1,
                failed: 0
            }
        );
        let failed = lines("vmtest: FAIL a [kprobe]: x\nvmtest: 0 passed, 1 failed\n");
        assert!(verdict(&failed).is_err());
        assert!(verdict(&lines("booting\n")).is_err());
        let panic = lines("Kernel panic - not syncing\nvmtest: 1 passed, 0 failed\n");
        assert!(
            verdict(&panic)
                .unwrap_err()
                .to_string()
                .contains("panicked")
        );
        assert!(verdict(&lines("vmtest: 0 passed, 0 failed\n")).is_err());
    }

    #[test]
    fn strips_escapes() {
        assert_eq!(strip_ansi("\u{1b}[?7l\u{1b}[2Jvmtest: x\r"), "vmtest: x");
        assert_eq!(strip_ansi("\u{1b}cvmtest: y"), "vmtest: y");
    }
}
