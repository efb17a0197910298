//! The cgroup names against the paths each runtime makes, the mountinfo
//! parser, and the cache against a directory tree.

use std::os::unix::fs::MetadataExt as _;

use super::{mountinfo::unescape, *};

fn check(path: &str, service: Option<&str>, container: Option<&str>, pod: Option<&str>) {
    let want = (
        service.map(String::from),
        container.map(String::from),
        pod.map(String::from),
    );
    assert_eq!(classify(path), want, "{path}");
}

#[test]
fn kubelet_systemd_driver() {
    check(
        concat!(
            "/kubepods.slice/kubepods-besteffort.slice/",
            "kubepods-besteffort-podeb052b63_ea96_4728_ab4a_64ab3babccd7.slice/",
            "cri-containerd-5694f82f44168cc048e014ae14d1b0c8ef673bec49f329dc169911ea638f63c2.scope"
        ),
        None,
        Some("5694f82f44168cc048e014ae14d1b0c8ef673bec49f329dc169911ea638f63c2"),
        Some("eb052b63-ea96-4728-ab4a-64ab3babccd7"),
    );
    // Guaranteed pods have no QoS level.
    check(
        concat!(
            "/kubepods.slice/kubepods-pod48d25824_cbe2_4fdc_9928_5bb49e05473d.slice/",
            "cri-containerd-c40dff48f1d53c3f07a50aa12bb9ae0e58c0927dc6b1d77e3f166784722642ad.scope"
        ),
        None,
        Some("c40dff48f1d53c3f07a50aa12bb9ae0e58c0927dc6b1d77e3f166784722642ad"),
        Some("48d25824-cbe2-4fdc-9928-5bb49e05473d"),
    );
    check(
        concat!(
            "/kubepods.slice/kubepods-burstable.slice/",
            "kubepods-burstable-podb39963e8_cc41_4d44_912a_ed5394b6d4d5.slice/",
            "cri-containerd-12da3d97e9069757d06fa9862b9e3f8d8555ff62281877333326a205ff283b50.scope"
        ),
        None,
        Some("12da3d97e9069757d06fa9862b9e3f8d8555ff62281877333326a205ff283b50"),
        Some("b39963e8-cc41-4d44-912a-ed5394b6d4d5"),
    );
    // cri-dockerd.
    check(
        concat!(
            "/kubepods.slice/kubepods-besteffort.slice/",
            "kubepods-besteffort-podeb653d22_2525_47ca_9fc4_3762497ae1d2.slice/",
            "docker-84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4.scope"
        ),
        None,
        Some("84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4"),
        Some("eb653d22-2525-47ca-9fc4-3762497ae1d2"),
    );
}

const CRIO_POD: &str = concat!(
    "/kubepods.slice/kubepods-burstable.slice/",
    "kubepods-burstable-pod1399d9c7_c86f_4371_8568_07b3d32258a4.slice"
);
const CRIO_ID: &str = "c64064614423cb790e88b3e5492ff5ccf673b25ae823089f7a60c65cda24d809";
const CRIO_UID: &str = "1399d9c7-c86f-4371-8568-07b3d32258a4";

#[test]
fn crio_with_systemd() {
    let container = format!("{CRIO_POD}/crio-{CRIO_ID}.scope");
    check(&container, None, Some(CRIO_ID), Some(CRIO_UID));
    // crun puts the payload in a child of the container's cgroup.
    check(
        &format!("{container}/container"),
        None,
        Some(CRIO_ID),
        Some(CRIO_UID),
    );
    // The monitor belongs to the pod, but is no container.
    let conmon = format!("{CRIO_POD}/crio-conmon-{CRIO_ID}.scope");
    check(&conmon, None, None, Some(CRIO_UID));
    check(CRIO_POD, None, None, Some(CRIO_UID));
}

#[test]
fn kubelet_cgroup_root_prefixes_the_slices() {
    // kind runs kubelet with --cgroup-root=/kubelet.
    let path = format!(
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
         kubelet-kubepods-besteffort-pod1399d9c7_c86f_4371_8568_07b3d32258a4.slice/\
         cri-containerd-{CRIO_ID}.scope"
    );
    check(&path, None, Some(CRIO_ID), Some(CRIO_UID));
}

#[test]
fn kubelet_cgroupfs_driver() {
    check(
        concat!(
            "/kubepods/besteffort/pod26ab26cd-6409-443f-a13c-fd6c231207c8/",
            "ae7a1981e064c217035e0b23979c8defd51c850d1af26fbcf148187e5b0da61c"
        ),
        None,
        Some("ae7a1981e064c217035e0b23979c8defd51c850d1af26fbcf148187e5b0da61c"),
        Some("26ab26cd-6409-443f-a13c-fd6c231207c8"),
    );
    check(
        concat!(
            "/kubepods/burstable/pod1399d9c7-c86f-4371-8568-07b3d32258a4/",
            "91f2457fb4c2b1356eefc7bace36532f5eb3d354804bb2cff787ea321320b5a5"
        ),
        None,
        Some("91f2457fb4c2b1356eefc7bace36532f5eb3d354804bb2cff787ea321320b5a5"),
        Some(CRIO_UID),
    );
    // Guaranteed, and a static pod whose uid is an md5.
    check(
        &format!("/kubepods/pod55db13a1-c151-4cdd-a48b-e002a2b1fb58/{CRIO_ID}"),
        None,
        Some(CRIO_ID),
        Some("55db13a1-c151-4cdd-a48b-e002a2b1fb58"),
    );
    check(
        &format!("/kubepods/besteffort/podd76e26fba3bf2bfd215eb29011d55250/{CRIO_ID}"),
        None,
        Some(CRIO_ID),
        Some("d76e26fba3bf2bfd215eb29011d55250"),
    );
    let pod = "/kubepods/burstable/pod1399d9c7-c86f-4371-8568-07b3d32258a4";
    check(
        &format!("{pod}/crio-{CRIO_ID}"),
        None,
        Some(CRIO_ID),
        Some(CRIO_UID),
    );
    check(
        &format!("{pod}/crio-conmon-{CRIO_ID}"),
        None,
        None,
        Some(CRIO_UID),
    );
    check(pod, None, None, Some(CRIO_UID));
}

#[test]
fn nested_nodes_name_the_inner_container() {
    // minikube: the node is a Docker container, kubelet uses systemd.
    check(
        concat!(
            "/system.slice/docker-1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07.scope/",
            "kubepods.slice/kubepods-besteffort.slice/",
            "kubepods-besteffort-podeb653d22_2525_47ca_9fc4_3762497ae1d2.slice/",
            "docker-84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4.scope"
        ),
        None,
        Some("84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4"),
        Some("eb653d22-2525-47ca-9fc4-3762497ae1d2"),
    );
    // kind: kubelet uses cgroupfs under the node's scope.
    check(
        concat!(
            "/system.slice/docker-c1146e7ccca9ab4436abd69923c07d097b37b762ed21cc3f24584c2f84e77c57.scope/",
            "kubelet/kubepods/burstable/pod09a70ae9ccc491e651e5c773579b3490/",
            "b0e6aa50e847c3d3b1880e307ec7996040275c8063832cffc9274defce2cb655"
        ),
        None,
        Some("b0e6aa50e847c3d3b1880e307ec7996040275c8063832cffc9274defce2cb655"),
        Some("09a70ae9ccc491e651e5c773579b3490"),
    );
    // The node's own services are not in a pod.
    check(
        concat!(
            "/system.slice/docker-c1146e7ccca9ab4436abd69923c07d097b37b762ed21cc3f24584c2f84e77c57.scope/",
            "system.slice/kubelet.service"
        ),
        Some("kubelet.service"),
        Some("c1146e7ccca9ab4436abd69923c07d097b37b762ed21cc3f24584c2f84e77c57"),
        None,
    );
}

#[test]
fn docker() {
    let id = "ee40841f79d52f66f4958c8a484bd2dfb453228874dcca1a3f2ec6e8420ec87c";
    check(
        &format!("/system.slice/docker-{id}.scope"),
        None,
        Some(id),
        None,
    );
    let id = "5aaf9eb7648eeb1459d86eaa0ace8bcfa93089642e5c3113a14250dae3238aaf";
    check(&format!("/docker/{id}"), None, Some(id), None);
    // Rootless: the user's systemd runs it.
    check(
        &format!("/user.slice/user-1000.slice/user@1000.service/docker-{id}.scope"),
        Some("user@1000.service"),
        Some(id),
        None,
    );
}

#[test]
fn podman() {
    let id = "89e89703fbd1e88b72d279d951ce389d3742874205196d73f96e0dcbc0da0659";
    check(
        &format!("/machine.slice/libpod-{id}.scope"),
        None,
        Some(id),
        None,
    );
    check(
        &format!("/machine.slice/libpod-{id}.scope/container"),
        None,
        Some(id),
        None,
    );
    // A Podman pod is not a Kubernetes pod.
    check(
        &format!("/machine.slice/machine-libpod_pod_{CRIO_ID}.slice/libpod-{id}.scope"),
        None,
        Some(id),
        None,
    );
    let conmon = "6dd05e91f00f99281f70b1fd90a29e5cc30b0dab243cb7cfb6153d8017872394";
    check(
        &format!("/machine.slice/libpod-conmon-{conmon}.scope"),
        None,
        None,
        None,
    );
    let id = "01f3c60cfaadbb51e4d5947dd2ef0480d53551cbcee8f3ada8c3723b2bf03bf4";
    check(&format!("/libpod_parent/libpod-{id}"), None, Some(id), None);
    check("/libpod_parent/conmon", None, None, None);
}

#[test]
fn podman_rootless() {
    let id = "6fb480da903b96185cd497db694641d13534e2b80cf4cb738b6691677146adea";
    let user = "/user.slice/user-1000.slice/user@1000.service/user.slice";
    check(
        &format!("{user}/libpod-{id}.scope/container"),
        Some("user@1000.service"),
        Some(id),
        None,
    );
    check(
        &format!("{user}/libpod-conmon-{id}.scope"),
        Some("user@1000.service"),
        None,
        None,
    );
}

#[test]
fn containerd_without_kubernetes() {
    let id = "2752ea5db34c1dc718967086526c49d5f55793678e2002db3f7a3e45a4a97b2a";
    // ctr: /<namespace>/<id>.
    check(&format!("/default/{id}"), None, Some(id), None);
    check(&format!("/k8s.io/{id}"), None, Some(id), None);
    let id = "aa470170773aae4a69e6e0a509eb8c1f304140b1fea1a2d55ec93a07a78e497c";
    check(
        &format!("/system.slice/nerdctl-{id}.scope"),
        None,
        Some(id),
        None,
    );
    // Containers whose v2 cgroup was never made (cgroupfs on a hybrid
    // host) show as the daemon's.
    check(
        "/system.slice/containerd.service",
        Some("containerd.service"),
        None,
        None,
    );
    // A cgroupfs containerd under a systemd kubelet (verbatim).
    check(
        concat!(
            "/podruntime.slice/containerd.service/",
            "kubepods-burstable-pod29349498_197c_4919_b13f_9a928e7d001b.slice:cri-containerd:",
            "0ca2b3cd20e5f55a2bbe8d4aa3f811cf7963b40f0542ad147054b0fcb60fc400"
        ),
        Some("containerd.service"),
        Some("0ca2b3cd20e5f55a2bbe8d4aa3f811cf7963b40f0542ad147054b0fcb60fc400"),
        Some("29349498-197c-4919-b13f-9a928e7d001b"),
    );
}

#[test]
fn systemd_services() {
    let nginx = Some("nginx.service");
    check("/system.slice/nginx.service", nginx, None, None);
    let getty = "/system.slice/system-getty.slice/getty@tty1.service";
    check(getty, Some("getty@tty1.service"), None, None);
    // The user's own unit, not the user manager.
    let user = "/user.slice/user-1000.slice/user@1000.service";
    check(
        &format!("{user}/app.slice/foo.service"),
        Some("foo.service"),
        None,
        None,
    );
    check(user, Some("user@1000.service"), None, None);
    check(
        "/user.slice/user-1000.slice/session-3.scope",
        None,
        None,
        None,
    );
    check("/init.scope", None, None, None);
}

#[test]
fn plain_paths_and_look_alikes() {
    check("/", None, None, None);
    check("", None, None, None);
    check("/mygroup/worker", None, None, None);
    check("/system.slice/.service", None, None, None);
    // A mount unit that embeds a container id.
    check(
        concat!(
            "/system.slice/run-containerd-io.containerd.runtime.v1.linux-k8s.io-",
            "14ae50f1d3ada102aec3ab00168fdafb2dc0986d79ca9e8d5b75581fa89e9fea-rootfs.mount"
        ),
        None,
        None,
        None,
    );
    // A UUID is not a container id.
    let vte = "vte-spawn-f9176c6a-2a34-4ce2-86af-60d16888ed8e.scope";
    let apps = "/user.slice/user-1000.slice/user@1000.service/apps.slice";
    check(
        &format!("{apps}/{vte}"),
        Some("user@1000.service"),
        None,
        None,
    );
    // Not under kubepods, or not a whole id.
    check("/batch/pod1399d9c7/worker", None, None, None);
    check("/system.slice/docker-5aaf9eb7.scope", None, None, None);
    check(
        &format!("/system.slice/docker-{CRIO_ID}0.scope"),
        None,
        None,
        None,
    );
    let upper = CRIO_ID.to_uppercase();
    check(&format!("/docker/{upper}"), None, None, None);
}

const HYBRID: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:12 - cgroup2 cgroup2 rw,nsdelegate
";

const UNIFIED: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
26 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 26 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

const V1_ONLY: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
50 22 0:40 / /mnt/cgroup2 rw,relatime - tmpfs cgroup2 rw
";

#[test]
fn mountinfo() {
    let unified = Some(PathBuf::from("/sys/fs/cgroup/unified"));
    assert_eq!(parse_mountinfo(HYBRID), unified);
    assert_eq!(
        parse_mountinfo(UNIFIED),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    assert_eq!(parse_mountinfo(V1_ONLY), None);
    assert_eq!(parse_mountinfo(""), None);
    assert_eq!(parse_mountinfo("garbage\n41 31 0:38 /\n"), None);
}

#[test]
fn mountinfo_escapes_and_namespaces() {
    let spaced = r"60 22 0:41 / /mnt/my\040cgroups rw - cgroup2 none rw";
    assert_eq!(
        parse_mountinfo(spaced),
        Some(PathBuf::from("/mnt/my cgroups"))
    );
    assert_eq!(unescape(r"a\134b\0"), b"a\\b\\0");
    assert_eq!(unescape(r"\777"), b"\\777");
    // A private cgroup namespace's own view, and the host's.
    let own = "61 22 0:27 /kubepods.slice/x.scope /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
    let host = "62 22 0:27 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw";
    let both = format!("{own}\n{host}\n");
    assert_eq!(
        parse_mountinfo(&both),
        Some(PathBuf::from("/host/sys/fs/cgroup"))
    );
    let mount = cgroup2_mount(own);
    assert_eq!(
        mount.map(|m| m.root).as_deref(),
        Some("/kubepods.slice/x.scope")
    );
}

/// A directory tree standing in for cgroupfs, removed when dropped.
struct TempTree {
    root: PathBuf,
}

impl TempTree {
    fn new(tag: &str) -> TempTree {
        let name = format!("twmon-cgroups-{tag}-{}", std::process::id());
        let root = std::env::temp_dir().join(name);
        // Left over from an earlier run with the same pid; usually absent.
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        TempTree { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Creates `rel` and returns its inode, as the kernel's cgroup id.
    fn mkdir(&self, rel: &str) -> u64 {
        fs::create_dir_all(self.path(rel)).unwrap();
        fs::metadata(self.path(rel)).unwrap().ino()
    }

    fn cgroups(&self) -> Cgroups {
        Cgroups::with_root(self.root.clone())
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn names_directories_by_inode() {
    let tree = TempTree::new("names");
    let nginx = tree.mkdir("/system.slice/nginx.service");
    let scope = format!("{CRIO_POD}/crio-{CRIO_ID}.scope");
    let container = tree.mkdir(&scope);
    let procs = tree.path("/system.slice/nginx.service/cgroup.procs");
    fs::write(&procs, "").unwrap();
    let file = fs::metadata(procs).unwrap().ino();
    let root = fs::metadata(tree.root.as_path()).unwrap().ino();
    let mut cgroups = tree.cgroups();
    let t0 = Instant::now();

    let name = cgroups.name_at(nginx, t0).unwrap();
    assert_eq!(name.path, "/system.slice/nginx.service");
    assert_eq!(name.service.as_deref(), Some("nginx.service"));
    // Found by the same walk.
    let name = cgroups.name_at(container, t0).unwrap();
    assert_eq!(name.path, scope);
    assert_eq!(name.container_id.as_deref(), Some(CRIO_ID));
    assert_eq!(name.pod_uid.as_deref(), Some(CRIO_UID));
    let name = cgroups.name_at(root, t0).unwrap();
    assert_eq!(name.path, "/");
    assert_eq!(
        (name.service, name.container_id, name.pod_uid),
        (None, None, None)
    );
    // Files are not cgroups, even after another walk.
    assert_eq!(cgroups.name_at(file, t0 + 2 * SECOND), None);
    assert_eq!(cgroups.last_scan, Some(t0 + 2 * SECOND));
}

#[test]
fn a_removed_cgroup_keeps_its_name() {
    let tree = TempTree::new("removed");
    let id = "5aaf9eb7648eeb1459d86eaa0ace8bcfa93089642e5c3113a14250dae3238aaf";
    let rel = format!("/docker/{id}");
    let gone = tree.mkdir(&rel);
    let mut cgroups = tree.cgroups();
    let t0 = Instant::now();
    assert!(cgroups.name_at(gone, t0).is_some());
    fs::remove_dir(tree.path(&rel)).unwrap();

    // A walk that no longer finds it keeps what was known.
    assert_eq!(cgroups.name_at(u64::MAX, t0 + 2 * SECOND), None);
    assert_eq!(cgroups.last_scan, Some(t0 + 2 * SECOND));
    let name = cgroups.name_at(gone, t0 + 3 * SECOND).unwrap();
    assert_eq!(name.path, rel);
    assert_eq!(name.container_id.as_deref(), Some(id));
}

#[test]
fn walks_at_most_once_a_second() {
    let tree = TempTree::new("ratelimit");
    let mut cgroups = tree.cgroups();
    let t0 = Instant::now();
    assert_eq!(cgroups.name_at(u64::MAX, t0), None);
    let late = tree.mkdir("/system.slice/late.service");

    let soon = t0 + SECOND - Duration::from_millis(1);
    assert_eq!(cgroups.name_at(late, soon), None);
    assert_eq!(cgroups.last_scan, Some(t0));
    let name = cgroups.name_at(late, t0 + SECOND).map(|n| n.path);
    assert_eq!(name.as_deref(), Some("/system.slice/late.service"));
    // A clock that went back does not walk either.
    let other = tree.mkdir("/system.slice/other.service");
    assert_eq!(cgroups.name_at(other, t0), None);
}

#[test]
fn the_least_recently_seen_go_first() {
    let tree = TempTree::new("evict");
    let x = tree.mkdir("/x");
    let mut cgroups = tree.cgroups();
    cgroups.capacity = 2;
    let t0 = Instant::now();
    assert!(cgroups.name_at(x, t0).is_some());
    // Made before x goes, so that they cannot take its inode.
    let y = tree.mkdir("/y");
    let z = tree.mkdir("/z");
    fs::remove_dir(tree.path("/x")).unwrap();

    // The walk refreshes the root, y and z; x, not seen, goes first.
    assert!(cgroups.name_at(y, t0 + SECOND).is_some());
    assert!(cgroups.name_at(z, t0 + SECOND).is_some());
    assert_eq!(cgroups.entries.len(), 2);
    assert_eq!(cgroups.by_age.len(), 2);
    assert_eq!(cgroups.name_at(x, t0 + SECOND), None);
}

#[test]
fn no_cgroup2_names_nothing() {
    let mut cgroups = Cgroups::from_root(None);
    assert_eq!(cgroups.name_at(1, Instant::now()), None);
    assert_eq!(cgroups.last_scan, None);
    let missing = std::env::temp_dir().join("twmon-cgroups-no-such-dir");
    let mut cgroups = Cgroups::with_root(missing);
    assert_eq!(cgroups.name_at(1, Instant::now()), None);
}

/// On the real cgroupfs: the directory of this process's own cgroup is
/// named by the path /proc/self/cgroup gives.
#[test]
fn names_this_process_cgroup() {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = parse_mountinfo(&mountinfo) else {
        return; // cgroup v1 only
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return;
    };
    let Ok(meta) = fs::metadata(mount.join(path.trim_start_matches('/'))) else {
        return; // outside this mount's view
    };
    let name = Cgroups::new().name(meta.ino()).map(|n| n.path);
    assert_eq!(name.as_deref(), Some(path));
}
