//! Naming timewait sockets whose close was not seen (adopted from a
//! snapshot, or closed before twmon started) by their network namespace:
//! in a container or pod, every process in the namespace belongs to it, so
//! any one of them, found under /proc, gives the cgroup. The host's own
//! namespace is shared by everything on the host and names nothing.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use super::{CgroupName, Cgroups};

/// How long a namespace's owner is trusted before /proc is looked at
/// again (a pod's processes come and go; the pod stays).
const OWNER_TTL: Duration = Duration::from_secs(30);

/// Names (netns, cgroup id) pairs: by the id where known, else by the
/// namespace's owner.
#[derive(Debug)]
pub struct Namer {
    cgroups: Cgroups,
    host_netns: u32,
    owners: HashMap<u32, (Option<CgroupName>, Instant)>,
}

impl Namer {
    pub fn new(cgroups: Cgroups, host_netns: u32) -> Namer {
        Namer {
            cgroups,
            host_netns,
            owners: HashMap::new(),
        }
    }

    /// The name of cgroup `id` (0: the closer was not seen) for a socket
    /// of namespace `netns`.
    pub fn name(&mut self, netns: u32, id: u64) -> Option<CgroupName> {
        if id != 0 {
            return self.cgroups.name(id);
        }
        if netns == 0 || netns == self.host_netns {
            return None;
        }
        let now = Instant::now();
        if let Some((name, at)) = self.owners.get(&netns)
            && now.saturating_duration_since(*at) < OWNER_TTL
        {
            return name.clone();
        }
        let name = owner(netns).map(CgroupName::of);
        self.owners.insert(netns, (name.clone(), now));
        name
    }
}

/// The cgroup path of some process in namespace `netns`, from
/// /proc/PID/cgroup's cgroup2 line (`0::PATH`).
fn owner(netns: u32) -> Option<String> {
    let dir = fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let pid = entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let ns = entry.path().join("ns/net");
        if fs::metadata(&ns).is_ok_and(|m| m.ino() == u64::from(netns)) {
            let text = fs::read_to_string(entry.path().join("cgroup")).ok()?;
            return text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(str::to_string);
        }
    }
    None
}
