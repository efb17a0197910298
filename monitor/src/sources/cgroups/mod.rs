//! Names for cgroup v2 ids. The id the kernel programs record for a closing
//! task (`bpf_get_current_cgroup_id()`) is the inode number of the task's
//! directory on the cgroup2 filesystem, so a walk of that tree maps ids to
//! paths, and a path names the systemd service, the container and the
//! Kubernetes pod (kubelet with either cgroup driver, containerd, CRI-O,
//! Docker, Podman).
//!
//! Lookups are cached. A miss rescans the tree, at most once a second, and
//! names outlive their cgroups: a TIME_WAIT socket outlives the pod that
//! closed it by up to a minute.

mod classify;
mod mountinfo;
mod owners;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use classify::classify;
use mountinfo::cgroup2_mount;
pub use mountinfo::parse_mountinfo;
pub use owners::Namer;

/// What a cgroup's path says about who runs in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupName {
    /// Relative to the cgroup2 root, starting with `/`.
    pub path: String,
    /// The innermost systemd service, e.g. `nginx.service`.
    pub service: Option<String>,
    /// The innermost container's id, 64 hex digits.
    pub container_id: Option<String>,
    /// The Kubernetes pod's uid as the API spells it (dashed), or a static
    /// pod's 32-hex config hash.
    pub pod_uid: Option<String>,
}

impl CgroupName {
    pub fn of(path: String) -> CgroupName {
        let (service, container_id, pod_uid) = classify(&path);
        CgroupName {
            path,
            service,
            container_id,
            pod_uid,
        }
    }
}

/// Entries kept at most; the least recently seen go first.
const CAPACITY: usize = 65_536;

/// A walk reads every cgroup directory; without a limit, a host starting
/// many containers at once would walk the tree once per new cgroup.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// A cache from cgroup id to [`CgroupName`].
#[derive(Debug)]
pub struct Cgroups {
    /// `None` without cgroup v2: every task then reports the same root id,
    /// and there is nothing to name.
    root: Option<PathBuf>,
    entries: HashMap<u64, Entry>,
    /// Ids by the stamp of their last use, oldest first.
    by_age: BTreeMap<u64, u64>,
    next_stamp: u64,
    capacity: usize,
    last_scan: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    name: CgroupName,
    stamp: u64,
}

impl Default for Cgroups {
    fn default() -> Cgroups {
        Cgroups::new()
    }
}

impl Cgroups {
    /// The cgroup2 tree this process sees, found in /proc/self/mountinfo.
    pub fn new() -> Cgroups {
        let mount = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|text| cgroup2_mount(&text));
        match &mount {
            None => log::info!("no cgroup2 mount (a cgroup v1 host): cgroups will not be named"),
            Some(m) if m.root != "/" => log::warn!(
                "the cgroup2 mount at {} shows only {} of the hierarchy (a cgroup namespace \
                 of twmon's own?): cgroups outside it stay unnamed; run twmon in the host's \
                 cgroup namespace",
                m.point.display(),
                m.root
            ),
            Some(_) => {}
        }
        Cgroups::from_root(mount.map(|m| m.point))
    }

    /// The cgroup2 tree mounted at `root`.
    pub fn with_root(root: PathBuf) -> Cgroups {
        Cgroups::from_root(Some(root))
    }

    fn from_root(root: Option<PathBuf>) -> Cgroups {
        Cgroups {
            root,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            next_stamp: 0,
            capacity: CAPACITY,
            last_scan: None,
        }
    }

    /// The name of cgroup `id`, or `None` if no walk of the tree has seen
    /// it: a cgroup created less than a second after the last walk stays
    /// unnamed until a later miss walks again.
    pub fn name(&mut self, id: u64) -> Option<CgroupName> {
        self.name_at(id, Instant::now())
    }

    fn name_at(&mut self, id: u64, now: Instant) -> Option<CgroupName> {
        if let Some(name) = self.touch(id).cloned() {
            return Some(name);
        }
        if self.scanned_recently(now) {
            return None;
        }
        let found = walk(self.root.as_deref()?);
        self.last_scan = Some(now);
        for (seen, path) in found {
            self.remember(seen, path);
        }
        self.touch(id).cloned()
    }

    fn scanned_recently(&self, now: Instant) -> bool {
        self.last_scan
            .is_some_and(|last| now.saturating_duration_since(last) < RESCAN_EVERY)
    }

    /// The entry for `id`, marked as the most recently used.
    fn touch(&mut self, id: u64) -> Option<&CgroupName> {
        let entry = self.entries.get_mut(&id)?;
        self.by_age.remove(&entry.stamp);
        entry.stamp = self.next_stamp;
        self.by_age.insert(entry.stamp, id);
        self.next_stamp += 1;
        Some(&entry.name)
    }

    /// Records what a walk found; a renamed cgroup takes its new name.
    fn remember(&mut self, id: u64, path: String) {
        if self.entries.get(&id).is_some_and(|e| e.name.path == path) {
            self.touch(id);
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let entry = Entry {
            name: CgroupName::of(path),
            stamp,
        };
        if let Some(old) = self.entries.insert(id, entry) {
            self.by_age.remove(&old.stamp);
        }
        self.by_age.insert(stamp, id);
        self.evict();
    }

    fn evict(&mut self) {
        while self.entries.len() > self.capacity {
            let Some((_, id)) = self.by_age.pop_first() else {
                break;
            };
            self.entries.remove(&id);
        }
    }
}

/// Every directory under `root`, itself included as `/`, with its inode.
/// On cgroupfs readdir's inode (d_ino) is the cgroup id, so no directory
/// needs a stat.
fn walk(root: &Path) -> Vec<(u64, String)> {
    let Ok(meta) = fs::metadata(root) else {
        return Vec::new();
    };
    let mut found = vec![(meta.ino(), "/".to_string())];
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, path)) = pending.pop() {
        // Cgroups vanish mid-walk, and some are unreadable (EACCES): what
        // cannot be read now is named by a later walk, or never.
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // Interface files such as cgroup.procs have inodes too.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = format!("{path}/{}", entry.file_name().to_string_lossy());
            found.push((entry.ino(), child.clone()));
            pending.push((entry.path(), child));
        }
    }
    found
}
