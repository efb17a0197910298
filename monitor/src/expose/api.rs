//! The JSON documents of `/api/v1` (docs/api.md), built from the table on
//! the server and read back by `twmon snapshot` and `twmon top`.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    model::event::{Comm, DeathCause, Process},
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
