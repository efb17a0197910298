//! Who, by cgroup: timewait sockets by the closing process's cgroup, and
//! connect()/bind() failures by the caller's, labelled with the cgroup's
//! path and the container and pod it names (kube-state-metrics'
//! `kube_pod_info` joins on `pod_uid`: docs/metrics.md).

use std::collections::BTreeMap;

use prometheus::{IntCounterVec, Opts, Registry};

use super::{gauge_vec, names, register, series, set};
use crate::{
    expose::scrape::Scrape,
    model::hooks::Hook,
    table::{Failure, OTHER_CGROUP},
};

const LABELS: [&str; 3] = ["cgroup", "container_id", "pod_uid"];

/// The labels of cgroup `id` of namespace `netns`: its path, container
/// and pod where named; `unknown` where the closer was not seen and its
/// namespace names nothing (the host's), `other` for the ids beyond what
/// the table tracks, `id:N` for a cgroup gone before it was named.
fn labels(scrape: &Scrape, netns: u32, id: u64) -> [String; 3] {
    if let Some(name) = scrape.cgroups.get(&(netns, id)) {
        return [
            name.path.clone(),
            name.container_id.clone().unwrap_or_default(),
            name.pod_uid.clone().unwrap_or_default(),
        ];
    }
    let cgroup = match id {
        0 => "unknown".to_string(),
        OTHER_CGROUP => "other".to_string(),
        id => format!("id:{id}"),
    };
    [cgroup, String::new(), String::new()]
}

pub fn by_cgroup(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let vec = gauge_vec(
        "twmon_timewait_sockets_by_cgroup",
        "Timewait sockets by the cgroup of the process that closed first (its path, and the \
         container and pod it names); unknown closers are named by their network namespace \
         where a pod or container owns it. The top K by count.",
        per,
        &LABELS,
    )?;
    let mut sums: BTreeMap<(u32, [String; 3]), u64> = BTreeMap::new();
    for &((netns, id), n) in &scrape.table.by_cgroup {
        let shown = if per { netns } else { 0 };
        *sums.entry((shown, labels(scrape, netns, id))).or_default() += n;
    }
    for ((netns, l), n) in &sums {
        set(&vec, per, *netns, l, *n);
    }
    register(registry, vec)
}

pub fn failures(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let connect = IntCounterVec::new(
        Opts::new(
            "twmon_connect_eaddrnotavail_by_cgroup_total",
            "connect() calls that failed with EADDRNOTAVAIL, by the caller's cgroup (top K).",
        ),
        &names(per, &LABELS),
    )?;
    let mut bind_labels = LABELS.to_vec();
    bind_labels.push("held_by");
    let bind = IntCounterVec::new(
        Opts::new(
            "twmon_bind_eaddrinuse_by_cgroup_total",
            "bind() calls refused with EADDRINUSE, by the caller's cgroup and what held the \
             port (top K).",
        ),
        &names(per, &bind_labels),
    )?;
    for &((netns, id, failure), n) in &scrape.table.failures_by_cgroup {
        let shown = if per { netns } else { 0 };
        let l = labels(scrape, netns, id);
        match failure {
            Failure::Eaddrnotavail => series(&connect, per, shown, &l).inc_by(n),
            Failure::Eaddrinuse(by) => {
                let mut l = l.to_vec();
                l.push(by.label().to_string());
                series(&bind, per, shown, &l).inc_by(n);
            }
        }
    }
    // Absent, not zero, where the hook that counts them is not attached.
    if scrape.hooks.attached(Hook::ConnectEaddrnotavail) {
        register(registry, connect)?;
    }
    if scrape.hooks.attached(Hook::BindEaddrinuse) {
        register(registry, bind)?;
    }
    Ok(())
}
