//! The four-tuple table's part of the exposition: populations, lifetimes,
//! collisions, top-K breakdowns, port pressure and the kernel knobs.
//!
//! Top-K series are rebuilt from the table at every scrape, so a label
//! that drops out of the top K disappears instead of going stale.

use anyhow::Result;
use prometheus::{
    GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    proto::{self, MetricFamily, MetricType},
};

use crate::{
    event::{DeathCause, Family, TcpState},
    metrics::Scrape,
    table::{CollisionKind, Summary},
};

/// `labels` with `netns` in front when namespaces are kept apart.
fn names<'a>(per_netns: bool, labels: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    if per_netns {
        all.push("netns");
    }
    all.extend_from_slice(labels);
    all
}

/// Label values matching [`names`].
fn values(per_netns: bool, netns: u32, labels: &[String]) -> Vec<String> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    if per_netns {
        all.push(netns.to_string());
    }
    all.extend_from_slice(labels);
    all
}

fn gauge_vec(
    name: &str,
    help: &str,
    per_netns: bool,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), &names(per_netns, labels))
}

fn set(vec: &IntGaugeVec, per_netns: bool, netns: u32, labels: &[String], n: u64) {
    let v = values(per_netns, netns, labels);
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    vec.with_label_values(&refs)
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

pub fn register(registry: &Registry, scrape: &Scrape) -> Result<()> {
    let t = &scrape.table;
    let per = scrape.per_netns;

    let sockets = gauge_vec(
        "twmon_timewait_sockets",
        "Timewait sockets now, by family and substate (TIME_WAIT, or FIN_WAIT2 for orphaned \
         sockets), from the four-tuple table.",
        per,
        &["family", "substate"],
    )?;
    if !per {
        // Both families and substates always, so an empty host reads 0.
        for family in Family::ALL {
            for substate in [TcpState::TimeWait, TcpState::FinWait2] {
                set(
                    &sockets,
                    per,
                    0,
                    &[family.label().into(), substate.name().into()],
                    0,
                );
            }
        }
    }
    for (&(netns, family, substate), &n) in &t.population {
        set(
            &sockets,
            per,
            netns,
            &[family.label().into(), substate.name().into()],
            n,
        );
    }
    registry.register(Box::new(sockets))?;

    let collisions = IntCounterVec::new(
        Opts::new(
            "twmon_fourtuple_collisions_total",
            "New connections on a four-tuple whose previous incarnation was still in \
             TIME_WAIT (syn_in_timewait, connect_reuse) or had it cut short less than the \
             guard window ago (reincarnation), and connects that found no free four-tuple \
             (eaddrnotavail).",
        ),
        &["kind"],
    )?;
    for kind in CollisionKind::ALL {
        // A zero would claim "none happened" where nothing could see them.
        if kind == CollisionKind::Eaddrnotavail && !scrape.attached("connect_eaddrnotavail") {
            continue;
        }
        let n = t.collisions.get(&kind).copied().unwrap_or(0);
        collisions.with_label_values(&[kind.label()]).inc_by(n);
    }
    registry.register(Box::new(collisions))?;

    let by_remote = gauge_vec(
        "twmon_timewait_sockets_by_remote",
        "Timewait sockets per remote address and port: the top K by count.",
        per,
        &["remote_addr", "remote_port"],
    )?;
    for ((netns, addr, port), n) in &t.by_remote {
        set(
            &by_remote,
            per,
            *netns,
            &[addr.to_string(), port.to_string()],
            *n,
        );
    }
    registry.register(Box::new(by_remote))?;

    let by_port = gauge_vec(
        "twmon_timewait_sockets_by_local_port",
        "Timewait sockets per local port: the top K by count.",
        per,
        &["local_port"],
    )?;
    for ((netns, port), n) in &t.by_local_port {
        set(&by_port, per, *netns, &[port.to_string()], *n);
    }
    registry.register(Box::new(by_port))?;

    let by_process = gauge_vec(
        "twmon_timewait_sockets_by_process",
        "Timewait sockets per process that closed first (comm; \"unknown\" when the close \
         was not seen): the top K by count.",
        per,
        &["comm"],
    )?;
    for ((netns, comm), n) in &t.by_process {
        set(&by_process, per, *netns, std::slice::from_ref(comm), *n);
    }
    registry.register(Box::new(by_process))?;

    register_pressure(registry, t, per)?;
    register_knobs(registry, t, per)?;

    let entries = IntGauge::new(
        "twmon_table_entries",
        "Entries in the four-tuple table (timewait sockets tracked).",
    )?;
    entries.set(i64::try_from(t.entries).unwrap_or(i64::MAX));
    registry.register(Box::new(entries))?;
    let evictions = IntCounter::new(
        "twmon_table_evictions_total",
        "Entries dropped, oldest first, because the table was at its --table-capacity.",
    )?;
    evictions.inc_by(t.evictions);
    registry.register(Box::new(evictions))?;
    let drift = IntGaugeVec::new(
        Opts::new(
            "twmon_reconcile_drift_sockets",
            "Disagreement found by the last sock_diag reconciliation: timewait sockets the \
             table had missed (adopted) and entries the kernel no longer had although no \
             death was reported (closed).",
        ),
        &["direction"],
    )?;
    drift
        .with_label_values(&["adopted"])
        .set(i64::try_from(t.drift.adopted).unwrap_or(i64::MAX));
    drift
        .with_label_values(&["closed"])
        .set(i64::try_from(t.drift.closed).unwrap_or(i64::MAX));
    registry.register(Box::new(drift))?;
    Ok(())
}

fn register_pressure(registry: &Registry, t: &Summary, per: bool) -> Result<()> {
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
    // Without a netns label two namespaces can share a label set
    // (loopback in containers); the list is sorted by pressure, so the
    // first one seen is the one to show.
    let mut seen = std::collections::HashSet::new();
    for p in &t.pressure {
        if !seen.insert((p.netns, p.local, p.remote, p.remote_port)) {
            continue;
        }
        let l = [
            p.local.to_string(),
            p.remote.to_string(),
            p.remote_port.to_string(),
        ];
        set(&in_use, per, p.netns, &l, p.in_use);
        set(&in_tw, per, p.netns, &l, p.in_timewait);
        let v = values(per, p.netns, &l);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        ratio.with_label_values(&refs).set(p.ratio());
    }
    registry.register(Box::new(in_use))?;
    registry.register(Box::new(in_tw))?;
    registry.register(Box::new(ratio))?;
    Ok(())
}

fn register_knobs(registry: &Registry, t: &Summary, per: bool) -> Result<()> {
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
    for (&netns, k) in &t.knobs {
        for (vec, value) in [
            (&range, k.port_range_size()),
            (&buckets, k.max_tw_buckets),
            (&reuse, k.tw_reuse),
            (&fin, k.fin_timeout_s),
        ] {
            if let Some(v) = value {
                set(vec, per, netns, &[], v);
            }
        }
    }
    for vec in [range, buckets, reuse, fin] {
        registry.register(Box::new(vec))?;
    }
    Ok(())
}

/// `twmon_timewait_duration_seconds`, built directly: the table keeps
/// bucket counts, which the crate's Histogram cannot be set from.
pub fn durations(t: &Summary) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name("twmon_timewait_duration_seconds".into());
    family.set_help(
        "Real lifetimes of timewait sockets that ended, by cause (a full TIME_WAIT is 60 s \
         plus timer slack)."
            .into(),
    );
    family.set_field_type(MetricType::HISTOGRAM);
    let mut metrics = Vec::new();
    for cause in DeathCause::ALL {
        let h = t.durations.get(&cause).cloned().unwrap_or_default();
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(h.count);
        histogram.set_sample_sum(h.sum_seconds);
        let buckets = h
            .cumulative()
            .into_iter()
            .map(|(bound, count)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(count);
                b
            })
            .collect();
        histogram.set_bucket(buckets);
        let mut label = proto::LabelPair::default();
        label.set_name("cause".into());
        label.set_value(cause.label().into());
        let mut metric = proto::Metric::default();
        metric.set_label(vec![label]);
        metric.set_histogram(histogram);
        metrics.push(metric);
    }
    family.set_metric(metrics);
    family
}
