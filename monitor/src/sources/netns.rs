//! Network namespaces: naming the one to watch, finding all of them, and
//! running work inside one (sock_diag only reports the caller's namespace).

use std::{
    collections::BTreeMap,
    fs::{self, File},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sched::{CloneFlags, setns};

/// A network namespace we can enter: its inode and a path that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pub inode: u32,
    pub path: PathBuf,
}

/// Resolves what the user gave to `--netns`: a path to a namespace file
/// (`/run/netns/NAME`, `/proc/PID/ns/net`) or a bare name under /run/netns.
pub fn resolve(arg: &str) -> Result<Netns> {
    let path = if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        Path::new("/run/netns").join(arg)
    };
    let inode = inode_of(&path).with_context(|| {
        format!(
            "--netns {arg}: cannot open {}: give a namespace file such as /run/netns/NAME \
             (see `ip netns list`) or /proc/PID/ns/net",
            path.display()
        )
    })?;
    Ok(Netns { inode, path })
}

pub fn inode_of(path: &Path) -> Result<u32> {
    let meta = fs::metadata(path)?;
    u32::try_from(meta.ino()).with_context(|| format!("inode {} does not fit u32", meta.ino()))
}

/// The daemon's own namespace.
pub fn current() -> Result<Netns> {
    let path = PathBuf::from("/proc/self/ns/net");
    Ok(Netns {
        inode: inode_of(&path).context("cannot stat /proc/self/ns/net")?,
        path: PathBuf::from("/proc/thread-self/ns/net"),
    })
}

/// Every network namespace reachable through a process or a bind mount in
/// /run/netns, one entry per inode. Namespaces vanish at any moment, so
/// entries that cannot be read are skipped, not errors.
pub fn discover() -> Vec<Netns> {
    let mut found: BTreeMap<u32, PathBuf> = BTreeMap::new();
    if let Ok(own) = current() {
        found.insert(own.inode, own.path);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = fs::read_dir("/run/netns") {
        candidates.extend(dir.flatten().map(|e| e.path()));
    }
    if let Ok(dir) = fs::read_dir("/proc") {
        candidates.extend(
            dir.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .map(|e| e.path().join("ns/net")),
        );
    }
    for path in candidates {
        // A file under /run/netns is only a namespace while bind-mounted
        // (`ip netns add` creates it first, `del` unmounts it before
        // removing it).
        if !is_nsfs(&path) {
            continue;
        }
        if let Ok(inode) = inode_of(&path) {
            found.entry(inode).or_insert(path);
        }
    }
    found
        .into_iter()
        .map(|(inode, path)| Netns { inode, path })
        .collect()
}

fn is_nsfs(path: &Path) -> bool {
    /// `NSFS_MAGIC` from linux/magic.h.
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // f_type's width differs between architectures; i64 on x86_64.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// Runs `f` on a fresh thread that has joined namespace `ns`, so the
/// caller's threads never change namespace. Sockets created by `f` stay in
/// `ns`.
pub fn run_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let file = File::open(&ns.path).with_context(|| format!("opening {}", ns.path.display()))?;
    // The path was found or checked a moment ago; a PID reused or a name
    // re-created since would make this another namespace, whose sockets
    // must not be filed under `ns.inode`.
    let inode = file
        .metadata()
        .with_context(|| format!("reading {}", ns.path.display()))?
        .ino();
    ensure!(
        inode == u64::from(ns.inode),
        "{} no longer names network namespace {}",
        ns.path.display(),
        ns.inode
    );
    let handle = std::thread::Builder::new()
        .name("twmon-netns".into())
        .spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .context("setns(CLONE_NEWNET) failed (needs CAP_SYS_ADMIN)")?;
            f()
        })
        .context("spawning a thread")?;
    match handle.join() {
        Ok(result) => result,
        Err(_) => bail!("worker thread in {} panicked", ns.path.display()),
    }
}
