//! The four-tuple table's part of the exposition: populations, collisions,
//! top-K breakdowns, port pressure, the kernel knobs and the table's own
//! health.
//!
//! Top-K series are rebuilt from the table at every scrape, so a label
//! that drops out of the top K disappears instead of going stale.

use std::collections::HashSet;

use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::{counter, counter_vec, gauge_vec, names, register, saturating_i64, series, set};
use crate::{
    expose::scrape::Scrape,
    model::{
        hooks::Hook,
        tcp::{Family, TcpState},
    },
    table::{CollisionKind, Pressure},
};

pub fn sockets(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let vec = gauge_vec(
        "twmon_timewait_sockets",
        "Timewait sockets now, by family and substate (TIME_WAIT, or FIN_WAIT2 for orphaned \
         sockets), from the four-tuple table.",
        per,
        &["family", "substate"],
    )?;
    let labels = |family: Family, substate: TcpState| {
        [family.label().to_string(), substate.name().to_string()]
    };
    if !per {
        // Both families and substates always, so an empty host reads 0.
        for family in Family::ALL {
            for substate in [TcpState::TimeWait, TcpState::FinWait2] {
                set(&vec, per, 0, &labels(family, substate), 0);
            }
        }
    }
    for (&(netns, family, substate), &n) in &scrape.table.population {
        set(&vec, per, netns, &labels(family, substate), n);
    }
    register(registry, vec)
}

pub fn collisions(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let vec = counter_vec(
        "twmon_fourtuple_collisions_total",
        "New connections on a four-tuple whose previous incarnation was still in TIME_WAIT \
         (syn_in_timewait, connect_reuse) or had it cut short less than the guard window ago \
         (reincarnation), connects that found no free four-tuple (eaddrnotavail), and binds \
         refused because a timewait socket held the port (bind_in_timewait).",
        &["kind"],
    )?;
    for kind in CollisionKind::ALL {
        // A zero would claim "none happened" where nothing could see them.
        let hook = match kind {
            CollisionKind::Eaddrnotavail => Some(Hook::ConnectEaddrnotavail),
            CollisionKind::BindInTimewait => Some(Hook::BindEaddrinuse),
            _ => None,
        };
        if hook.is_some_and(|h| !scrape.hooks.attached(h)) {
            continue;
        }
        let n = scrape.table.collisions.get(&kind).copied().unwrap_or(0);
        vec.with_label_values(&[kind.label()]).inc_by(n);
    }
    register(registry, vec)
}

pub fn by_remote(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let vec = gauge_vec(
        "twmon_timewait_sockets_by_remote",
        "Timewait sockets per remote address and port: the top K by count.",
        per,
        &["remote_addr", "remote_port"],
    )?;
    for ((netns, addr, port), n) in &scrape.table.by_remote {
        set(&vec, per, *netns, &[addr.to_string(), port.to_string()], *n);
    }
    register(registry, vec)
}

pub fn by_local_port(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let vec = gauge_vec(
        "twmon_timewait_sockets_by_local_port",
        "Timewait sockets per local port: the top K by count.",
        per,
        &["local_port"],
    )?;
    for ((netns, port), n) in &scrape.table.by_local_port {
        set(&vec, per, *netns, &[port.to_string()], *n);
    }
    register(registry, vec)
}

pub fn by_process(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let vec = gauge_vec(
        "twmon_timewait_sockets_by_process",
        "Timewait sockets per process that closed first (comm; \"unknown\" when the close was \
         not seen): the top K by count.",
        per,
        &["comm"],
    )?;
    for ((netns, comm), n) in &scrape.table.by_process {
        set(&vec, per, *netns, std::slice::from_ref(comm), *n);
    }
    register(registry, vec)
}

pub fn pressure(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let labels = ["local_addr", "remote_addr", "remote_port"];
    let in_use = gauge_vec(
        "twmon_ephemeral_ports_in_use",
        "Ports of ip_local_port_range taken toward one destination: four-tuples from an \
         ephemeral local port in any state (TIME_WAIT included) plus range ports held by \
         listeners, as of the last sock_diag snapshot; the top K destinations by pressure.",
        per,
        &labels,
    )?;
    let in_tw = gauge_vec(
        "twmon_ephemeral_ports_in_timewait",
        "Of twmon_ephemeral_ports_in_use, those in TIME_WAIT.",
        per,
        &labels,
    )?;
    let ratio = GaugeVec::new(
        Opts::new(
            "twmon_ephemeral_port_pressure_ratio",
            "twmon_ephemeral_ports_in_use over the size of ip_local_port_range: at 1 connect() \
             toward that destination fails with EADDRNOTAVAIL.",
        ),
        &names(per, &labels),
    )?;
    // Without a netns label two namespaces can share a label set (loopback
    // in containers); the list is sorted by pressure, so the first one seen
    // is the one to show.
    let mut seen = HashSet::new();
    for p in &scrape.table.pressure {
        if !seen.insert((p.netns, p.local, p.remote, p.remote_port)) {
            continue;
        }
        let l = destination(p);
        set(&in_use, per, p.netns, &l, p.in_use);
        set(&in_tw, per, p.netns, &l, p.in_timewait);
        series(&ratio, per, p.netns, &l).set(p.ratio());
    }
    register(registry, in_use)?;
    register(registry, in_tw)?;
    register(registry, ratio)
}

/// The label values of a destination under pressure.
fn destination(p: &Pressure) -> [String; 3] {
    [
        p.local.to_string(),
        p.remote.to_string(),
        p.remote_port.to_string(),
    ]
}

pub fn exhaustion(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let vec = GaugeVec::new(
        Opts::new(
            "twmon_ephemeral_port_exhaustion_seconds",
            "Estimated seconds until ip_local_port_range is full toward one destination, at the \
             pace its ports were taken (net of those freed) over the last minute of snapshots; \
             absent while that count is not growing. The top K soonest.",
        ),
        &names(per, &["local_addr", "remote_addr", "remote_port"]),
    )?;
    let mut seen = HashSet::new();
    for (p, seconds) in &scrape.table.exhaustion {
        if !seen.insert((p.netns, p.local, p.remote, p.remote_port)) {
            continue;
        }
        series(&vec, per, p.netns, &destination(p)).set(*seconds);
    }
    register(registry, vec)
}

pub fn knobs(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let per = scrape.per_netns;
    let knob = |name: &str, help: &str| gauge_vec(name, help, per, &[]);
    let range = knob(
        "twmon_ephemeral_port_range_size",
        "Ports in net.ipv4.ip_local_port_range.",
    )?;
    let buckets = knob(
        "twmon_tcp_max_tw_buckets",
        "net.ipv4.tcp_max_tw_buckets: timewait sockets beyond it are refused (overflow).",
    )?;
    let reuse = knob(
        "twmon_tcp_tw_reuse",
        "net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only.",
    )?;
    let fin = knob(
        "twmon_tcp_fin_timeout_seconds",
        "net.ipv4.tcp_fin_timeout: how long an orphaned FIN_WAIT2 lives.",
    )?;
    let timestamps = knob(
        "twmon_tcp_timestamps",
        "net.ipv4.tcp_timestamps: 0 off; tcp_tw_reuse needs them on.",
    )?;
    for (&netns, k) in &scrape.table.knobs {
        for (vec, value) in [
            (&range, k.port_range_size()),
            (&buckets, k.max_tw_buckets),
            (&reuse, k.tw_reuse),
            (&fin, k.fin_timeout_s),
            (&timestamps, k.timestamps),
        ] {
            if let Some(v) = value {
                set(vec, per, netns, &[], v);
            }
        }
    }
    for vec in [range, buckets, reuse, fin, timestamps] {
        register(registry, vec)?;
    }
    Ok(())
}

pub fn entries(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let gauge = IntGauge::new(
        "twmon_table_entries",
        "Entries in the four-tuple table (timewait sockets tracked).",
    )?;
    gauge.set(saturating_i64(scrape.table.entries));
    register(registry, gauge)
}

pub fn evictions(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    counter(
        registry,
        "twmon_table_evictions_total",
        "Entries dropped, oldest first, because the table was at its --table-capacity.",
        scrape.table.evictions,
    )
}

pub fn closers_recovered(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    counter(
        registry,
        "twmon_closers_recovered_total",
        "Timewait sockets adopted from a snapshot whose closing process was found where their \
         close began, in the kernel's table of closes in progress, after no program saw their \
         birth.",
        scrape.table.closers_recovered,
    )
}

pub fn drift(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let vec = IntGaugeVec::new(
        Opts::new(
            "twmon_reconcile_drift_sockets",
            "Disagreement found by the last sock_diag reconciliation: timewait sockets the \
             table had missed (adopted) and entries the kernel no longer had although no death \
             was reported (closed).",
        ),
        &["direction"],
    )?;
    let d = scrape.table.drift;
    vec.with_label_values(&["adopted"])
        .set(saturating_i64(d.adopted));
    vec.with_label_values(&["closed"])
        .set(saturating_i64(d.closed));
    register(registry, vec)
}
