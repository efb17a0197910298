//! What a cgroup path says: the systemd service, the container and the
//! Kubernetes pod, for the naming schemes of systemd and cgroupfs drivers,
//! containerd, CRI-O, Docker and Podman.

/// Runtimes' prefixes of a container's cgroup: `<prefix>-<id>`, with
/// `.scope` when systemd manages it, or `<slice>:<prefix>:<id>`, systemd's
/// notation for runc, which containerd with its cgroupfs driver under a
/// systemd kubelet takes literally as a directory name.
const RUNTIMES: [&str; 6] = [
    "docker",
    "cri-containerd",
    "crio",
    "libpod",
    "libpod-payload",
    "nerdctl",
];

const ID_LEN: usize = 64;

/// The systemd service, container id and pod uid that a cgroup path names.
/// Containers nest (kind and minikube run the pods inside a node
/// container), so the innermost container is the workload, and its pod is
/// the nearest one above it.
pub fn classify(path: &str) -> (Option<String>, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let service = parts.iter().copied().rev().find(|c| is_service(c));
    let container = parts
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| container_id(c).map(|id| (i, id)));
    // Up to the container itself: a literal `<slice>:<prefix>:<id>`
    // directory names its pod's slice too.
    let last = container.map_or(parts.len(), |(i, _)| i + 1);
    let pod = (0..last).rev().find_map(|i| pod_uid(&parts, i));
    (
        service.map(String::from),
        container.map(|(_, id)| id.to_string()),
        pod,
    )
}

fn is_service(component: &str) -> bool {
    component
        .strip_suffix(".service")
        .is_some_and(|unit| !unit.is_empty())
}

/// The id of the container whose cgroup `component` is. Exactly 64 hex
/// digits after a known prefix leaves out `libpod-conmon-<id>` and
/// `crio-conmon-<id>` (the runtime's monitor, not the container) and mount
/// units whose names embed an id.
fn container_id(component: &str) -> Option<&str> {
    // cgroupfs layouts name the directory by the id alone: /docker/<id>,
    // /kubepods/<qos>/pod<uid>/<id>, ctr's /<namespace>/<id>.
    if is_id(component) {
        return Some(component);
    }
    let mut colons = component.splitn(3, ':');
    if let (Some(_), Some(prefix), Some(id)) = (colons.next(), colons.next(), colons.next()) {
        return (RUNTIMES.contains(&prefix) && is_id(id)).then_some(id);
    }
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    let (prefix, id) = stem.split_at_checked(stem.len().checked_sub(ID_LEN)?)?;
    let prefix = prefix.strip_suffix('-')?;
    (RUNTIMES.contains(&prefix) && is_id(id)).then_some(id)
}

/// Runtimes write ids in lowercase hex.
fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The uid of the pod whose cgroup `parts[i]` is.
fn pod_uid(parts: &[&str], i: usize) -> Option<String> {
    let component = *parts.get(i)?;
    let parent = i.checked_sub(1).and_then(|p| parts.get(p)).copied();
    let grandparent = i.checked_sub(2).and_then(|g| parts.get(g)).copied();
    systemd_pod(component).or_else(|| cgroupfs_pod(component, parent, grandparent))
}

/// Kubelet's systemd driver: `[<root>-]kubepods[-<qos>]-pod<uid>.slice`,
/// with the uid's `-` written `_` because systemd reads `-` as nesting.
/// Kubelet refuses `_` in cgroup names, so turning it back is lossless.
fn systemd_pod(component: &str) -> Option<String> {
    let slice = component.split(':').next()?.strip_suffix(".slice")?;
    let (owner, uid) = slice.split_at(slice.rfind("-pod")?);
    let uid = uid.strip_prefix("-pod")?;
    let owner = owner
        .strip_suffix("-burstable")
        .or_else(|| owner.strip_suffix("-besteffort"))
        .unwrap_or(owner);
    let kubelet = owner == "kubepods" || owner.ends_with("-kubepods");
    (kubelet && is_uid(uid, '_')).then(|| uid.replace('_', "-"))
}

/// Kubelet's cgroupfs driver: `pod<uid>` right under `kubepods` or under
/// its `burstable` or `besteffort` level (Guaranteed pods have no level),
/// which is how kubelet itself tells pod cgroups from others.
fn cgroupfs_pod(name: &str, parent: Option<&str>, grandparent: Option<&str>) -> Option<String> {
    let uid = name.strip_prefix("pod")?;
    let placed = match parent? {
        "kubepods" => true,
        "burstable" | "besteffort" => grandparent == Some("kubepods"),
        _ => false,
    };
    (placed && is_uid(uid, '-')).then(|| uid.to_string())
}

fn is_uid(s: &str, dash: char) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == dash)
}
