//! The guest kernels vm-test boots, fetched from Debian and cached in
//! `.tools/vm/kernel-<name>/`: the image and the few modules the guest
//! loads.
//!
//! Three kernels, because the hooks differ between them: Debian bullseye's
//! 5.10 (no recursion guard for tracing programs, so they nest instead of
//! being skipped, and no count of skipped runs at all), bookworm's 6.1
//! (3-argument `tcp_timewait_state_process`, no reason in
//! `tcp:tcp_send_reset`, the purge's kill inlined, kprobes skipped
//! uncounted) and 6.18 from trixie-backports (5 arguments, reasons, the
//! kill out of line); and 6.1 and 6.18 again for arm64, whose kprobes read
//! their arguments from other registers, and whose 6.1 cannot attach fentry
//! at all (no ftrace direct calls on arm64 before 6.4).
//!
//! No package host is named here: the Debian archive and its security
//! archive are the ones this machine's apt sources use (`apt-get
//! indextargets`), or TWMON_DEBIAN_MIRROR and TWMON_DEBIAN_SECURITY_MIRROR.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    arch::Arch,
    util::{output, run as sh, workspace_root},
};

/// Where a kernel package comes from.
pub enum Source {
    /// The package this machine's apt sources (bookworm) name as the
    /// dependency of a metapackage.
    Apt { meta: &'static str },
    /// The newest `linux-image-<series>.…-cloud-<arch>` of a suite this
    /// machine has no apt source for, checked against the archive's signed
    /// InRelease, then the index's and the package's SHA-256.
    Archive {
        archive: Archive,
        suite: &'static str,
        series: &'static str,
    },
}

/// Which of Debian's archives a suite is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    Main,
    Security,
}

pub struct Spec {
    /// Short name for logs and the cache directory.
    pub name: &'static str,
    pub arch: Arch,
    pub source: Source,
}

pub const KERNELS: &[Spec] = &[
    Spec {
        name: "5.10",
        arch: Arch::Amd64,
        // Its newest kernels are security updates.
        source: Source::Archive {
            archive: Archive::Security,
            suite: "bullseye-security",
            series: "5.10",
        },
    },
    Spec {
        name: "6.1",
        arch: Arch::Amd64,
        source: Source::Apt {
            meta: "linux-image-cloud-amd64",
        },
    },
    Spec {
        name: "6.18",
        arch: Arch::Amd64,
        source: Source::Archive {
            archive: Archive::Main,
            suite: "trixie-backports",
            series: "6.18",
        },
    },
    Spec {
        name: "6.1-arm64",
        arch: Arch::Arm64,
        source: Source::Archive {
            archive: Archive::Main,
            suite: "bookworm",
            series: "6.1",
        },
    },
    Spec {
        name: "6.18-arm64",
        arch: Arch::Arm64,
        source: Source::Archive {
            archive: Archive::Main,
            suite: "trixie-backports",
            series: "6.18",
        },
    },
];

/// Where a foreign architecture's static busybox comes from (the host's
/// own is the busybox-static package).
const BUSYBOX_SUITE: &str = "trixie";

/// Modules the guest needs: inet_diag for sock_diag dumps (built as modules
/// in Debian), veth for multi-host scenarios. Newer packages compress them.
const MODULES: &[&str] = &[
    "kernel/net/ipv4/inet_diag.ko",
    "kernel/net/ipv4/tcp_diag.ko",
    "kernel/drivers/net/veth.ko",
];

pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub struct Kernel {
    pub name: &'static str,
    pub arch: Arch,
    pub vmlinuz: PathBuf,
    pub modules: Vec<PathBuf>,
}

/// Debian packages the fetching needs.
pub const TOOLS: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("gpgv", "gpgv"),
    ("xz", "xz-utils"),
    ("dpkg-deb", "dpkg"),
];

/// The kernel of `spec`, downloaded and extracted once.
pub fn fetch(spec: &Spec) -> Result<Kernel> {
    let dir = workspace_root()
        .join(".tools/vm")
        .join(format!("kernel-{}", spec.name));
    let stamp = dir.join("PACKAGE");
    let kernel = Kernel {
        name: spec.name,
        arch: spec.arch,
        vmlinuz: dir.join("vmlinuz"),
        modules: MODULES
            .iter()
            .map(|m| dir.join(Path::new(m).file_name().unwrap_or_default()))
            .collect(),
    };
    if stamp.is_file() && kernel.vmlinuz.is_file() && kernel.modules.iter().all(|m| m.is_file()) {
        return Ok(kernel);
    }

    // Not with_extension: the name's dots ("6.18") are no extension.
    let dl = workspace_root()
        .join(".tools/vm")
        .join(format!("kernel-{}.download", spec.name));
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    let (package, deb) = match &spec.source {
        Source::Apt { meta } => apt_download(meta, &dl)?,
        Source::Archive {
            archive,
            suite,
            series,
        } => archive_download(&mirror(*archive)?, suite, series, spec.arch, &dl)?,
    };
    let tree = dl.join("tree");
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;

    fs::create_dir_all(&dir)?;
    let boot = tree.join("boot");
    let image = fs::read_dir(&boot)
        .with_context(|| format!("{package} has no /boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    fs::copy(&image, &kernel.vmlinuz)?;
    let release = image
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    for (module, dest) in MODULES.iter().zip(&kernel.modules) {
        extract_module(&tree, &release, module, dest)
            .with_context(|| format!("{package}: module {module}"))?;
    }
    fs::write(&stamp, format!("{package}\n"))?;
    let _ = fs::remove_dir_all(&dl);
    Ok(kernel)
}

/// Copies a module out of an extracted package, uncompressing it: the
/// guest's busybox insmod takes plain ELF only.
fn extract_module(tree: &Path, release: &str, module: &str, dest: &Path) -> Result<()> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let plain = tree.join(base).join(release).join(module);
        if plain.is_file() {
            fs::copy(&plain, dest)?;
            return Ok(());
        }
        let xz = plain.with_extension("ko.xz");
        if xz.is_file() {
            fs::write(dest, unxz(&xz)?)?;
            return Ok(());
        }
    }
    bail!("not in the package (looked for .ko and .ko.xz)")
}

fn apt_download(meta: &str, dl: &Path) -> Result<(String, PathBuf)> {
    let package = apt_package(meta).or_else(|_| {
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        apt_package(meta)
    })?;
    eprintln!("xtask: downloading {package} for the QEMU guest");
    sh(Command::new("apt-get")
        .current_dir(dl)
        .args(["download", "-q", &package]))
    .with_context(|| format!("could not download {package} from Debian's archive"))?;
    let deb = fs::read_dir(dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    Ok((package, deb))
}

fn apt_package(meta: &str) -> Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", meta]))
        .with_context(|| format!("apt-cache knows no {meta}"))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| format!("{meta} depends on no linux-image package"))
}

/// The base URL of `archive`: from the environment, else from this
/// machine's apt sources.
fn mirror(archive: Archive) -> Result<String> {
    let (var, label) = match archive {
        Archive::Main => ("TWMON_DEBIAN_MIRROR", "Debian"),
        Archive::Security => ("TWMON_DEBIAN_SECURITY_MIRROR", "Debian-Security"),
    };
    if let Ok(url) = std::env::var(var) {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let targets = output(Command::new("apt-get").args([
        "indextargets",
        "--format",
        "$(REPO_URI) $(ORIGIN) $(LABEL)",
    ]))
    .unwrap_or_default();
    mirror_of(&targets, label).with_context(|| {
        format!(
            "no {label} archive in this machine's apt sources (apt-get indextargets): \
             set {var} to its URL, e.g. a Debian mirror's /debian{}",
            if archive == Archive::Security {
                "-security"
            } else {
                ""
            }
        )
    })
}

/// The http(s) repository of `apt-get indextargets` lines whose origin is
/// Debian and whose label is `label`.
fn mirror_of(targets: &str, label: &str) -> Option<String> {
    targets.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (uri, origin, l) = (fields.next()?, fields.next()?, fields.next()?);
        let web = uri.starts_with("http://") || uri.starts_with("https://");
        (web && origin == "Debian" && l == label).then(|| uri.trim_end_matches('/').to_string())
    })
}

fn archive_download(
    mirror: &str,
    suite: &str,
    series: &str,
    arch: Arch,
    dl: &Path,
) -> Result<(String, PathBuf)> {
    let packages = signed_index(mirror, suite, arch, dl)?;
    let pick = newest_cloud_image(&packages, series, arch).with_context(|| {
        format!(
            "{suite} has no linux-image-{series}.*-cloud-{} any more",
            arch.deb()
        )
    })?;
    eprintln!(
        "xtask: downloading {} from {suite} for the QEMU guest",
        pick.package
    );
    let deb = dl.join("kernel.deb");
    download(mirror, &pick, &deb)?;
    Ok((pick.package, deb))
}

/// The `main` package index of `suite` for `arch`, checked against the
/// suite's InRelease, whose signature is checked against Debian's keyring.
fn signed_index(mirror: &str, suite: &str, arch: Arch, dl: &Path) -> Result<String> {
    let dist = format!("{mirror}/dists/{suite}");
    let in_release = dl.join("InRelease");
    curl(&format!("{dist}/InRelease"), &in_release)?;
    let signed = dl.join("Release");
    sh(Command::new("gpgv")
        .args(["--quiet", "--keyring", KEYRING, "--output"])
        .arg(&signed)
        .arg(&in_release))
    .with_context(|| format!("{suite}'s InRelease is not signed by a key in {KEYRING}"))?;
    let release = fs::read_to_string(&signed)?;
    let index = format!("main/binary-{}/Packages.xz", arch.deb());
    let (index_sha, _) = release_sha256(&release, &index)
        .with_context(|| format!("{suite}'s Release lists no {index}"))?;
    let packages_xz = dl.join("Packages.xz");
    curl(&format!("{dist}/{index}"), &packages_xz)?;
    check_sha256(&packages_xz, &index_sha)?;
    Ok(String::from_utf8_lossy(&unxz(&packages_xz)?).into_owned())
}

/// Downloads the package `pick` names to `to`, checking its SHA-256.
fn download(mirror: &str, pick: &Pick, to: &Path) -> Result<()> {
    curl(&format!("{mirror}/{}", pick.filename), to)?;
    check_sha256(to, &pick.sha256)
}

/// A static busybox for `arch`'s guests: the host's own (Debian's
/// busybox-static) or one from the archive, checked as kernels are and
/// cached in `.tools/vm/busybox-<arch>`.
pub fn busybox(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::host() {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let cached = workspace_root()
        .join(".tools/vm")
        .join(format!("busybox-{}", arch.deb()));
    if cached.is_file() {
        return Ok(cached);
    }
    let dl = workspace_root()
        .join(".tools/vm")
        .join(format!("busybox-{}.download", arch.deb()));
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    let mirror = mirror(Archive::Main)?;
    let packages = signed_index(&mirror, BUSYBOX_SUITE, arch, &dl)?;
    let pick = package(&packages, "busybox-static")
        .with_context(|| format!("{BUSYBOX_SUITE} has no busybox-static for {}", arch.deb()))?;
    eprintln!(
        "xtask: downloading busybox-static ({}) from {BUSYBOX_SUITE}",
        arch.deb()
    );
    let deb = dl.join("busybox.deb");
    download(&mirror, &pick, &deb)?;
    let tree = dl.join("tree");
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    // /usr/bin since trixie merged /usr, /bin before.
    let binary = ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|p| tree.join(p))
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no busybox in /usr/bin or /bin", pick.package))?;
    fs::copy(binary, &cached)?;
    let _ = fs::remove_dir_all(&dl);
    Ok(cached)
}

fn unxz(file: &Path) -> Result<Vec<u8>> {
    let out = Command::new("xz")
        .arg("-dc")
        .arg(file)
        .output()
        .context("running xz")?;
    if !out.status.success() {
        bail!("xz -dc {} failed: {}", file.display(), out.status);
    }
    Ok(out.stdout)
}

fn curl(url: &str, to: &Path) -> Result<()> {
    sh(Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--retry", "3", "--max-time", "600", "--output"])
        .arg(to)
        .arg(url))
    .with_context(|| format!("could not download {url}"))
}

fn check_sha256(file: &Path, want: &str) -> Result<()> {
    let out = output(Command::new("sha256sum").arg(file))
        .with_context(|| format!("sha256sum {}", file.display()))?;
    let got = out.split_whitespace().next().unwrap_or_default();
    if got != want {
        bail!(
            "{} has SHA-256 {got}, the signed index says {want}: a broken or tampered download",
            file.display()
        );
    }
    Ok(())
}

/// The SHA-256 and size of `path` in a Release file's `SHA256:` list.
fn release_sha256(release: &str, path: &str) -> Option<(String, u64)> {
    let mut in_sha256 = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        if !in_sha256 {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(sha), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if name == path {
            return Some((sha.to_string(), size.parse().ok()?));
        }
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
struct Pick {
    package: String,
    filename: String,
    sha256: String,
}

/// The newest `linux-image-<series>.…-cloud-amd64` in a Packages index
/// (not `-dbg` or `-unsigned`), by the numbers after the series in order:
/// `6.18.15+deb13` is patch 15, `5.10.0-46` ABI 46 of the 5.10 series.
/// The stanza of package `name` in a Packages index.
fn package(packages: &str, name: &str) -> Option<Pick> {
    stanzas(packages).find(|p| p.package == name)
}

/// The index's packages, with where each is and its checksum.
fn stanzas(packages: &str) -> impl Iterator<Item = Pick> + '_ {
    packages.split("\n\n").filter_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::to_string)
        };
        Some(Pick {
            package: field("Package")?,
            filename: field("Filename")?,
            sha256: field("SHA256")?,
        })
    })
}

fn newest_cloud_image(packages: &str, series: &str, arch: Arch) -> Option<Pick> {
    let prefix = format!("linux-image-{series}.");
    let suffix = format!("-cloud-{}", arch.deb());
    stanzas(packages)
        .filter_map(|pick| {
            let version = pick.package.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            let key: Vec<u32> = version
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            Some((key, pick))
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, pick)| pick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_cloud_image_of_the_series_is_picked() {
        let packages = "\
Package: linux-image-6.18.9+deb13-cloud-amd64
Filename: pool/a_6.18.9.deb
SHA256: 09

Package: linux-image-6.18.15+deb13-cloud-amd64
Filename: pool/a_6.18.15.deb
SHA256: 15

Package: linux-image-6.18.15+deb13-cloud-amd64-dbg
Filename: pool/dbg.deb
SHA256: 99

Package: linux-image-6.18.16+deb13-amd64
Filename: pool/generic.deb
SHA256: 16

Package: linux-image-7.3.4+deb13-cloud-amd64
Filename: pool/seven.deb
SHA256: 73
";
        assert_eq!(
            newest_cloud_image(packages, "6.18", Arch::Amd64),
            Some(Pick {
                package: "linux-image-6.18.15+deb13-cloud-amd64".into(),
                filename: "pool/a_6.18.15.deb".into(),
                sha256: "15".into(),
            })
        );
        assert_eq!(newest_cloud_image(packages, "6.12", Arch::Amd64), None);
        assert_eq!(newest_cloud_image(packages, "6.18", Arch::Arm64), None);
        let bullseye = "\
Package: linux-image-5.10.0-43-cloud-amd64
Filename: pool/43.deb
SHA256: 43

Package: linux-image-5.10.0-46-cloud-amd64
Filename: pool/46.deb
SHA256: 46

Package: linux-image-5.10.0-9-cloud-amd64
Filename: pool/9.deb
SHA256: 09
";
        assert_eq!(
            newest_cloud_image(bullseye, "5.10", Arch::Amd64).map(|p| p.sha256),
            Some("46".into())
        );
    }

    #[test]
    fn arm64_images_and_a_named_package_are_found() {
        let packages = "\
Package: linux-image-6.18.15+deb13-cloud-arm64
Filename: pool/arm.deb
SHA256: a1

Package: busybox-static
Filename: pool/busybox.deb
SHA256: b2
";
        assert_eq!(
            newest_cloud_image(packages, "6.18", Arch::Arm64).map(|p| p.filename),
            Some("pool/arm.deb".into())
        );
        assert_eq!(
            package(packages, "busybox-static").map(|p| p.sha256),
            Some("b2".into())
        );
        assert_eq!(package(packages, "busybox"), None);
    }

    #[test]
    fn mirrors_come_from_apt_indextargets() {
        let targets = "\
http://deb.example/debian-security/ Debian Debian-Security
cdrom://[Debian]/ Debian Debian
http://deb.example/debian/ Debian Debian
https://other.example/ubuntu/ Ubuntu Ubuntu
";
        assert_eq!(
            mirror_of(targets, "Debian").as_deref(),
            Some("http://deb.example/debian")
        );
        assert_eq!(
            mirror_of(targets, "Debian-Security").as_deref(),
            Some("http://deb.example/debian-security")
        );
        assert_eq!(mirror_of("", "Debian"), None);
    }

    #[test]
    fn release_sha256_reads_only_its_own_list() {
        let release = "\
Origin: Debian
MD5Sum:
 aaaa 10 main/binary-amd64/Packages.xz
SHA256:
 bbbb 20 main/binary-amd64/Packages.gz
 cccc 30 main/binary-amd64/Packages.xz
";
        assert_eq!(
            release_sha256(release, "main/binary-amd64/Packages.xz"),
            Some(("cccc".to_string(), 30))
        );
        assert_eq!(
            release_sha256(release, "main/binary-i386/Packages.xz"),
            None
        );
    }
}
