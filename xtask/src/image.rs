//! `cargo xtask image`: the container image, with Podman. The static musl
//! `twmon` (the binary the QEMU tests boot) is copied into an otherwise
//! empty build context and built `FROM scratch` (deploy/container/
//! Containerfile), so the build pulls nothing from any registry.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    setup,
    util::{output, run as sh, workspace_root},
};

/// The image's name; the tag is the workspace version.
pub const NAME: &str = "localhost/twmon";

/// Builds the image; returns its `name:tag`.
pub fn build() -> Result<String> {
    let root = workspace_root();
    let binary =
        setup::build_static(crate::arch::Arch::host(), &[("monitor", "twmon")])?.join("twmon");
    let context = root.join("target/image-context");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    fs::copy(&binary, context.join("twmon"))
        .with_context(|| format!("copying {} into the build context", binary.display()))?;
    let version = version()?;
    let revision = output(
        Command::new("git")
            .current_dir(&root)
            .args(["rev-parse", "HEAD"]),
    )
    .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
    let tag = format!("{NAME}:{version}");
    // --no-cache: Buildah 1.28 reuses a cached LABEL step when only a
    // --build-arg changed (see the Containerfile).
    sh(Command::new("podman")
        .args(["build", "--no-cache", "--quiet", "-f"])
        .arg(root.join("deploy/container/Containerfile"))
        .arg(format!("--build-arg=VERSION={version}"))
        .arg(format!("--build-arg=REVISION={revision}"))
        .args(["-t", &tag])
        .arg(&context))
    .context("podman build")?;
    eprintln!("xtask: built {tag}");
    Ok(tag)
}

/// The workspace version, from the root Cargo.toml.
fn version() -> Result<String> {
    let manifest: PathBuf = workspace_root().join("Cargo.toml");
    let text = fs::read_to_string(&manifest).context("reading Cargo.toml")?;
    text.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("version")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .context("no version in the workspace Cargo.toml")
}
