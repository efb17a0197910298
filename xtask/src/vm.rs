//! `cargo xtask vm-test`: boots real Debian kernels (5.10, 6.1 and 6.18 for
//! x86_64, 6.1 and 6.18 for arm64, see `kernels`) under QEMU (TCG: KVM is not
//! usable on these machines) with an initramfs of busybox, the static twmon
//! and the static scenario runner built for the guest's architecture, and
//! reads the verdict from the serial console. Everything it needs it
//! installs or downloads itself and caches in `.tools/vm/`.

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

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{
    arch::Arch,
    kernels::{self, KERNELS, Kernel},
    setup,
    util::{on_path, output, workspace_root},
};

/// Generous: a TCG boot takes seconds, but CI machines may be slow.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Pass/fail counts reported by the guest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub passed: u64,
    pub failed: u64,
}

/// Runs the guest scenarios (those whose name contains `only`, if given)
/// on every kernel, or on the one named `kernel`; the caller has run
/// `setup` already.
pub fn vm_test(only: Option<&str>, kernel: Option<&str>) -> Result<Verdict> {
    // It travels on the kernel command line, which splits on spaces.
    if let Some(only) = only
        && (only.is_empty() || !only.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        bail!("--only takes part of a scenario name (letters, digits, _), not {only:?}");
    }
    let extra = only.map(|o| format!("TWMON_VMTEST_ONLY={o}"));
    let guests = guests(kernel)?;
    // Every kernel runs, so one failing does not hide how the other does.
    let mut total = Verdict::default();
    let mut failures = Vec::new();
    for (spec, bins) in &guests {
        let verdict = bins
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
            .and_then(|bins| run_guest(spec, bins, extra.as_deref()))
            .and_then(|lines| verdict(&lines))
            .with_context(|| format!("kernel {}", spec.name));
        match verdict {
            Ok(v) => {
                eprintln!("xtask: kernel {}: {} passed", spec.name, v.passed);
                total.passed += v.passed;
            }
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(total)
}

/// `vm-test --bench`: the guest measures what twmon costs its churn in each
/// probe mode (test/vmtest/src/bench.rs) instead of testing; the figures
/// are printed and written to `bench/guest.md`.
pub fn vm_bench(kernel: Option<&str>) -> Result<()> {
    let mut report = String::from(
        "# twmon bench in QEMU guests (emulated CPU)\n\n\
         Written by `cargo xtask vm-test --bench`. The guests' CPUs are emulated by QEMU \
         (TCG, one host thread for two vCPUs), so these ratios compare probe modes on one \
         kernel; they are not figures for a real host (see results.md for this host's \
         tracepoint-only mode). Method as on the host: a loopback churn (one client \
         thread, client closing first) in a fresh namespace per run, with and without \
         `twmon run --probes MODE` watching every namespace, in pairs of alternating \
         order; the median of the per-pair ratios of connections per second.\n",
    );
    for (spec, bins) in &guests(kernel)? {
        let bins = bins.as_ref().map_err(|e| anyhow!("{e}"))?;
        let lines = run_guest(spec, bins, Some("TWMON_VMTEST_BENCH=1"))
            .with_context(|| format!("kernel {}", spec.name))?;
        let release = lines
            .iter()
            // Firmware output may precede it on the same line.
            .find_map(|l| Some(&l[l.find("vmtest: kernel ")? + 15..]))
            .unwrap_or(spec.name);
        let figures: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("vmtest: bench "))
            .filter(|l| *l != "done")
            .collect();
        if !lines.iter().any(|l| l == "vmtest: bench done") {
            bail!("kernel {}: the guest bench did not finish", spec.name);
        }
        report.push_str(&format!(
            "\n## {} ({release})\n\n```\n{}\n```\n",
            spec.name,
            figures.join("\n")
        ));
    }
    let out = workspace_root().join("bench/guest.md");
    fs::write(&out, &report)?;
    print!("{report}");
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

/// The kernels to boot (all, or the one named `kernel`), each with the
/// guest binaries of its architecture, built as needed, or why they could
/// not be: one architecture failing to build does not stop the others.
type Guests = Vec<(&'static kernels::Spec, Result<GuestBinaries, String>)>;

fn guests(kernel: Option<&str>) -> Result<Guests> {
    let specs: Vec<&'static kernels::Spec> = KERNELS
        .iter()
        .filter(|k| kernel.is_none_or(|name| k.name == name))
        .collect();
    if specs.is_empty() {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        bail!(
            "--kernel {:?} is none of vm-test's kernels: {}",
            kernel.unwrap_or_default(),
            names.join(", ")
        );
    }
    let mut arches: Vec<Arch> = specs.iter().map(|k| k.arch).collect();
    arches.sort_unstable();
    arches.dedup();
    packages(&arches)?;
    let built: Vec<(Arch, Result<GuestBinaries, String>)> = arches
        .iter()
        .map(|&arch| {
            let bins = build_guest_binaries(arch)
                .with_context(|| format!("building the {} guest binaries", arch.deb()))
                .map_err(|e| format!("{e:#}"));
            (arch, bins)
        })
        .collect();
    Ok(specs
        .into_iter()
        .filter_map(|spec| {
            let (_, bins) = built.iter().find(|(a, _)| *a == spec.arch)?;
            Some((spec, bins.clone()))
        })
        .collect())
}

/// Boots the kernel of `spec` with the guest binaries `bins`, `extra` on
/// its command line; returns what its console printed.
fn run_guest(
    spec: &kernels::Spec,
    bins: &GuestBinaries,
    extra: Option<&str>,
) -> Result<Vec<String>> {
    let kernel = kernels::fetch(spec)?;
    let initrd = initramfs(&kernel, bins)?;
    boot(kernel.arch, &kernel.vmlinuz, &initrd, extra)
}

/// What booting guests of `arches` needs: QEMU for each, a C compiler and
/// a Rust target to build their binaries, busybox and the tools that fetch
/// and check Debian packages.
fn packages(arches: &[Arch]) -> Result<()> {
    let mut missing = Vec::new();
    for arch in arches {
        for (tool, package) in [arch.qemu(), arch.c_compiler()] {
            if !on_path(tool) {
                missing.push(package);
            }
        }
        missing.extend(arch.c_libraries().iter().filter(|p| !deb_installed(p)));
    }
    if !deb_installed("busybox-static") {
        missing.push("busybox-static");
    }
    if !on_path("cpio") {
        missing.push("cpio");
    }
    for (tool, package) in kernels::TOOLS {
        if !on_path(tool) {
            missing.push(package);
        }
    }
    if !Path::new(kernels::KEYRING).is_file() {
        missing.push("debian-archive-keyring");
    }
    setup::install_debian(&missing)?;
    for &arch in arches {
        setup::musl_target(arch)?;
    }
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

#[derive(Clone)]
struct GuestBinaries {
    busybox: PathBuf,
    churn: PathBuf,
    twmon: PathBuf,
    vmtest: PathBuf,
}

fn build_guest_binaries(arch: Arch) -> Result<GuestBinaries> {
    let bins = [
        ("monitor", "twmon"),
        ("vmtest", "twmon-vmtest"),
        ("churn", "twmon-churn"),
    ];
    let dir = setup::build_static(arch, &bins)?;
    Ok(GuestBinaries {
        churn: dir.join("twmon-churn"),
        busybox: kernels::busybox(arch)?,
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
    let out = workspace_root()
        .join("target/vmtest")
        .join(format!("kernel-{}", kernel.name));
    let root = out.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp", "run", "modules"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(&bins.busybox, root.join("bin/busybox"))
        .with_context(|| format!("copying {}", bins.busybox.display()))?;
    fs::copy(&bins.twmon, root.join("bin/twmon"))?;
    fs::copy(&bins.vmtest, root.join("bin/twmon-vmtest"))?;
    fs::copy(&bins.churn, root.join("bin/twmon-churn"))?;
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

/// Boots until the scenario runner starts, at most this often: a crash of
/// the kernel's own boot under emulation (seen once with multi-threaded
/// TCG, see `boot_once`) says nothing about twmon, so it is retried; once
/// the runner has started, nothing is.
const BOOT_ATTEMPTS: u32 = 3;

fn boot(arch: Arch, vmlinuz: &Path, initrd: &Path, extra: Option<&str>) -> Result<Vec<String>> {
    for attempt in 1.. {
        let lines = boot_once(arch, vmlinuz, initrd, extra)?;
        if attempt < BOOT_ATTEMPTS && !runner_started(&lines) {
            eprintln!(
                "xtask: the guest crashed before the scenario runner started \
                 (attempt {attempt} of {BOOT_ATTEMPTS}): booting again"
            );
            continue;
        }
        return Ok(lines);
    }
    unreachable!("the loop returns")
}

/// Whether the guest got as far as the scenario runner.
fn runner_started(lines: &[String]) -> bool {
    lines.iter().any(|l| l.contains("vmtest: kernel "))
}

fn boot_once(
    arch: Arch,
    vmlinuz: &Path,
    initrd: &Path,
    extra: Option<&str>,
) -> Result<Vec<String>> {
    // Parameters the kernel does not know reach init's environment.
    let mut append = format!("console={} quiet panic=-1", arch.console());
    if let Some(extra) = extra {
        append.push(' ');
        append.push_str(extra);
    }
    let (qemu, _) = arch.qemu();
    let mut cmd = Command::new(qemu);
    // One host thread for both vCPUs: with multi-threaded TCG the guest
    // kernel's live code patching (int3 first, then the new bytes) raced
    // the other vCPU's stale translations, "Oops: int3" twice in about 20
    // boots of 6.18, once in boot and once when a tracepoint was detached.
    // Round-robin vCPUs still interleave (preemption, softirqs), and the
    // whole run was faster (87 s against 97 s for 6.1).
    cmd.args(arch.qemu_machine())
        .args(["-accel", "tcg,thread=single", "-m", "1024", "-smp", "2"])
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
    let mut child = cmd.spawn().with_context(|| format!("starting {qemu}"))?;
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
    Ok(lines)
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
    fn only_a_crash_before_the_runner_is_retried() {
        let boot_crash = lines("[    1.5] Oops: int3\n[    1.5] Kernel panic - not syncing\n");
        assert!(!runner_started(&boot_crash));
        let test_crash = lines("vmtest: kernel 6.18.15\nvmtest: PASS a [fentry]\nKernel panic\n");
        assert!(runner_started(&test_crash));
    }

    #[test]
    fn strips_escapes() {
        assert_eq!(strip_ansi("\u{1b}[?7l\u{1b}[2Jvmtest: x\r"), "vmtest: x");
        assert_eq!(strip_ansi("\u{1b}cvmtest: y"), "vmtest: y");
    }
}
