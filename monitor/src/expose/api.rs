//! The JSON documents of `/api/v1` (docs/api.md), built from the table on
//! the server and read back by `twmon snapshot` and `twmon top`.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    model::event::{Comm, DeathCause, Process},
    sources::cgroups::CgroupName,
    table::{Collision, CollisionKind, Entry, Filter, Key, Order, State, comm_label},
};

/// Most entries or collisions one request may ask for.
pub const MAX_LIMIT: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessDoc {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
}

impl From<Process> for ProcessDoc {
    fn from(p: Process) -> Self {
        ProcessDoc {
            pid: p.pid,
            comm: p.comm.as_string(),
            cgroup: p.cgroup,
        }
    }
}

/// The cgroup a socket is attributed to: its closing process's, or, for
/// a close seen in no process (server side), that of a process living in
/// its network namespace. The names are known to a live daemon only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupDoc {
    /// The cgroup v2 id, 0 when the closing process was not seen.
    pub id: u64,
    /// Relative to the cgroup2 root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl CgroupDoc {
    fn name(&mut self, name: CgroupName) {
        self.path = Some(name.path);
        self.service = name.service;
        self.container_id = name.container_id;
        self.pod_uid = name.pod_uid;
    }

    /// The most telling name for display: pod, container, service, path;
    /// unnamed, the id, or for a close seen in no process the namespace
    /// (`netns`) it was counted by.
    pub fn label(&self, netns: u32) -> String {
        // Read from any --url: never slice, the id may be anything.
        let short = |id: &str| id.chars().take(12).collect::<String>();
        if let Some(pod) = &self.pod_uid {
            let container = self.container_id.as_deref().unwrap_or("");
            return format!("pod {pod} {}", short(container));
        }
        if let Some(id) = &self.container_id {
            return format!("container {}", short(id));
        }
        match (&self.service, &self.path, self.id) {
            (Some(service), _, _) => service.clone(),
            (None, Some(path), _) => path.clone(),
            (None, None, 0) => format!("netns {netns}, closer not seen"),
            (None, None, id) => format!("cgroup {id}"),
        }
    }
}

/// Names cgroups for the documents: (netns, cgroup id) to a name, where
/// known. Called outside the state lock (naming may walk the cgroup tree).
pub type Names<'a> = &'a dyn Fn(u32, u64) -> Option<CgroupName>;

/// Which containers or pods to list: `cgroup=` (a substring of the cgroup
/// path) and `pod=` (a pod uid, dashed or not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub cgroup: Option<String>,
    pub pod: Option<String>,
}

impl Attribution {
    /// No filter: every cgroup.
    pub fn selects_all(&self) -> bool {
        self.cgroup.is_none() && self.pod.is_none()
    }

    pub fn selects(&self, name: &CgroupName) -> bool {
        let pod = |want: &String| {
            let plain = |s: &str| s.replace(['-', '_'], "").to_ascii_lowercase();
            name.pod_uid
                .as_deref()
                .is_some_and(|uid| plain(uid) == plain(want))
        };
        self.cgroup
            .as_ref()
            .is_none_or(|c| name.path.contains(c.as_str()))
            && self.pod.as_ref().is_none_or(pod)
    }
}

/// One timewait socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SocketDoc {
    pub netns: u32,
    pub family: String,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// TIME_WAIT or FIN_WAIT2.
    pub substate: String,
    pub age_seconds: f64,
    /// Until its timer fires (0 when overdue).
    pub left_seconds: f64,
    /// probe, transition or snapshot.
    pub source: String,
    /// false for a transition-derived entry no snapshot has confirmed yet.
    pub confirmed: bool,
    pub segments: u32,
    pub closer: Option<ProcessDoc>,
    #[serde(default)]
    pub cgroup: CgroupDoc,
}

/// `GET /api/v1/timewait`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimewaitDoc {
    /// Entries in the whole table.
    pub total: u64,
    pub sockets: Vec<SocketDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollisionDoc {
    pub kind: String,
    /// How long ago it happened.
    pub ago_seconds: f64,
    pub netns: u32,
    pub family: String,
    /// Absent for eaddrnotavail (no local port was had).
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// How long the previous incarnation had been in TIME_WAIT when taken
    /// over, or (reincarnation) how long since its TIME_WAIT was cut short.
    pub previous_age_seconds: Option<f64>,
    pub previous_closer: Option<ProcessDoc>,
    /// Inferred from transitions, not reported by a probe.
    pub derived: bool,
    /// bind_in_timewait only: who called bind(), how many timewait sockets
    /// hold the port, and the seconds until the oldest of them (the one
    /// `remote_*`, `previous_age_seconds` and `previous_closer` describe)
    /// expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binder: Option<ProcessDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_left_seconds: Option<f64>,
}

/// `GET /api/v1/collisions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollisionsDoc {
    /// Collisions since start, by kind.
    pub totals: BTreeMap<String, u64>,
    /// Most recent first.
    pub collisions: Vec<CollisionDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureDoc {
    pub netns: u32,
    pub local_addr: IpAddr,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub in_use: u64,
    pub in_timewait: u64,
    pub range: u64,
    pub ratio: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountDoc {
    pub label: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupCountDoc {
    pub netns: u32,
    pub cgroup: CgroupDoc,
    pub count: u64,
}

/// `GET /api/v1/summary`: what `twmon top` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryDoc {
    /// CLOCK_MONOTONIC of the daemon when taken, seconds: rates are
    /// differences over it.
    pub now_seconds: f64,
    pub entries: u64,
    /// "family substate" -> sockets.
    pub population: BTreeMap<String, u64>,
    /// Timewait sockets that became known (born, or adopted).
    pub started: u64,
    /// Ended, by cause.
    pub exited: BTreeMap<String, u64>,
    pub collisions: BTreeMap<String, u64>,
    pub events: u64,
    pub evictions: u64,
    pub by_remote: Vec<CountDoc>,
    pub by_process: Vec<CountDoc>,
    /// Timewait sockets by the cgroup they are attributed to.
    #[serde(default)]
    pub by_cgroup: Vec<CgroupCountDoc>,
    pub pressure: Vec<PressureDoc>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn socket_doc(now_ns: u64, key: &Key, e: &Entry) -> SocketDoc {
    SocketDoc {
        netns: key.netns,
        family: key.family.label().into(),
        local_addr: key.tuple.saddr,
        local_port: key.tuple.sport,
        remote_addr: key.tuple.daddr,
        remote_port: key.tuple.dport,
        substate: e.substate.name().into(),
        age_seconds: secs(now_ns.saturating_sub(e.born_ns)),
        left_seconds: secs(e.expires_ns.saturating_sub(now_ns)),
        source: e.origin.label().into(),
        confirmed: e.confirmed,
        segments: e.segments,
        closer: e.closer.map(ProcessDoc::from),
        cgroup: CgroupDoc {
            id: e.cgroup(),
            ..CgroupDoc::default()
        },
    }
}

pub fn timewait(
    state: &State,
    now_ns: u64,
    filter: &Filter,
    order: Order,
    limit: usize,
) -> TimewaitDoc {
    let sockets = state
        .table
        .list(filter, order, limit.min(MAX_LIMIT))
        .iter()
        .map(|(k, e)| socket_doc(now_ns, k, e))
        .collect();
    TimewaitDoc {
        total: state.table.len() as u64,
        sockets,
    }
}

fn collision_doc(now_ns: u64, c: &Collision) -> CollisionDoc {
    CollisionDoc {
        kind: c.kind.label().into(),
        ago_seconds: secs(now_ns.saturating_sub(c.ts_ns)),
        netns: c.netns,
        family: c.family.label().into(),
        local_addr: c.local.map(|l| l.0),
        local_port: c.local.map(|l| l.1),
        remote_addr: c.remote.0,
        remote_port: c.remote.1,
        previous_age_seconds: c.previous_age_ns.map(secs),
        previous_closer: c.previous_closer.map(ProcessDoc::from),
        derived: c.derived,
        binder: c.binder.map(ProcessDoc::from),
        holders: (c.kind == CollisionKind::BindInTimewait).then_some(c.holders),
        time_left_seconds: c.time_left_ns.map(secs),
    }
}

pub fn collisions(state: &State, now_ns: u64, limit: usize) -> CollisionsDoc {
    CollisionsDoc {
        totals: state
            .table
            .collision_totals()
            .iter()
            .map(|(k, n)| (k.label().to_string(), *n))
            .collect(),
        collisions: state
            .table
            .recent_collisions(limit.min(MAX_LIMIT))
            .iter()
            .map(|c| collision_doc(now_ns, c))
            .collect(),
    }
}

pub fn summary(state: &State, now_ns: u64, top_k: usize) -> SummaryDoc {
    let s = state.table.summary(top_k, false);
    let mut exited: BTreeMap<String, u64> = BTreeMap::new();
    for ((cause, _), n) in &s.exited {
        *exited.entry(cause.label().into()).or_default() += n;
    }
    for cause in DeathCause::ALL {
        exited.entry(cause.label().into()).or_default();
    }
    SummaryDoc {
        now_seconds: secs(now_ns),
        entries: s.entries,
        population: s
            .population
            .iter()
            .map(|((_, f, st), n)| (format!("{} {}", f.label(), st.name()), *n))
            .collect(),
        started: s.started.values().sum(),
        exited,
        collisions: s
            .collisions
            .iter()
            .map(|(k, n)| (k.label().to_string(), *n))
            .collect(),
        events: state.stats.events(),
        evictions: s.evictions,
        by_remote: s
            .by_remote
            .iter()
            .map(|((_, addr, port), n)| CountDoc {
                label: endpoint(*addr, *port),
                count: *n,
            })
            .collect(),
        by_process: s
            .by_process
            .iter()
            .map(|((_, comm), n)| CountDoc {
                label: comm.clone(),
                count: *n,
            })
            .collect(),
        by_cgroup: s
            .by_cgroup
            .iter()
            .map(|((netns, id), n)| CgroupCountDoc {
                netns: *netns,
                cgroup: CgroupDoc {
                    id: *id,
                    ..CgroupDoc::default()
                },
                count: *n,
            })
            .collect(),
        pressure: s
            .pressure
            .iter()
            .map(|p| PressureDoc {
                netns: p.netns,
                local_addr: p.local,
                remote_addr: p.remote,
                remote_port: p.remote_port,
                in_use: p.in_use,
                in_timewait: p.in_timewait,
                range: p.range,
                ratio: p.ratio(),
            })
            .collect(),
    }
}

/// Fills in the names of the sockets' cgroups, each named once.
pub fn name_sockets(doc: &mut TimewaitDoc, names: Names) {
    let mut known = BTreeMap::new();
    for s in &mut doc.sockets {
        let name = known
            .entry((s.netns, s.cgroup.id))
            .or_insert_with(|| names(s.netns, s.cgroup.id));
        if let Some(name) = name {
            s.cgroup.name(name.clone());
        }
    }
}

/// Fills in the names of the summary's cgroups.
pub fn name_summary(doc: &mut SummaryDoc, names: Names) {
    for c in &mut doc.by_cgroup {
        if let Some(name) = names(c.netns, c.cgroup.id) {
            c.cgroup.name(name);
        }
    }
}

/// `addr:port`, with brackets around an IPv6 address.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// The closing process's name for display.
pub fn closer_label(closer: Option<&ProcessDoc>) -> String {
    closer.map_or_else(
        || comm_label(Comm::default()),
        |p| format!("{}[{}]", p.comm, p.pid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_selects_by_path_part_and_pod_uid_however_spelt() {
        let name = CgroupName::of(
            "/kubepods.slice/kubepods-pod4f1c2d3e_5a6b_4c7d_8e9f_0123456789ab.slice/\
             cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"
                .into(),
        );
        assert_eq!(
            name.pod_uid.as_deref(),
            Some("4f1c2d3e-5a6b-4c7d-8e9f-0123456789ab")
        );
        let by = |cgroup: Option<&str>, pod: Option<&str>| Attribution {
            cgroup: cgroup.map(Into::into),
            pod: pod.map(Into::into),
        };
        assert!(by(Some("kubepods.slice"), None).selects(&name));
        assert!(by(None, Some("4F1C2D3E_5A6B_4C7D_8E9F_0123456789AB")).selects(&name));
        assert!(
            by(
                Some("cri-containerd"),
                Some("4f1c2d3e-5a6b-4c7d-8e9f-0123456789ab")
            )
            .selects(&name)
        );
        assert!(!by(Some("nginx.service"), None).selects(&name));
        assert!(!by(None, Some("4f1c2d3e")).selects(&name));
        let label = CgroupDoc {
            id: 3,
            path: Some(name.path.clone()),
            service: name.service.clone(),
            container_id: name.container_id.clone(),
            pod_uid: name.pod_uid.clone(),
        }
        .label(7);
        assert_eq!(
            label,
            "pod 4f1c2d3e-5a6b-4c7d-8e9f-0123456789ab 0123456789ab"
        );
        let unnamed = |id| CgroupDoc {
            id,
            ..CgroupDoc::default()
        };
        assert_eq!(unnamed(0).label(7), "netns 7, closer not seen");
        assert_eq!(unnamed(9).label(7), "cgroup 9");
        let odd = CgroupDoc {
            container_id: Some("ééééééééééééééé".into()),
            ..unnamed(9)
        };
        assert_eq!(odd.label(7), "container éééééééééééé");
    }
}
