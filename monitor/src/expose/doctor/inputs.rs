//! What the checks look at, read from an exposition and the collisions
//! list, so a remote daemon and a local dump are diagnosed alike.

use super::exposition::{Sample, of, parse, total};
use crate::expose::api::CollisionDoc;

/// A destination under port pressure.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub local: String,
    pub remote: String,
    pub port: String,
    pub in_use: f64,
    pub in_timewait: f64,
    pub ratio: f64,
    /// Seconds to exhaustion at the current pace, where growing.
    pub seconds_left: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Where the numbers came from, for the report.
    pub source: String,
    /// Timewait sockets now (TIME_WAIT and FIN_WAIT2 substates).
    pub population: f64,
    pub max_tw_buckets: Option<f64>,
    pub tw_reuse: Option<f64>,
    /// net.ipv4.tcp_timestamps of the watched namespace; where doctor runs
    /// when the daemon does not say (a replay).
    pub timestamps: Option<f64>,
    pub fin_timeout_s: Option<f64>,
    /// Counters since the daemon started; `None` where not counted.
    pub overflows: Option<f64>,
    pub eaddrnotavail: Option<f64>,
    pub bind_refused_by_timewait: Option<f64>,
    /// Connections that went ESTABLISHED -> CLOSE (an RST, sent or
    /// received) and active closes (ESTABLISHED -> FIN_WAIT1).
    pub aborts: Option<f64>,
    pub active_closes: Option<f64>,
    pub destinations: Vec<Destination>,
    /// (local port, timewait sockets), most first.
    pub by_local_port: Vec<(String, f64)>,
    /// (closing process, timewait sockets), most first.
    pub by_process: Vec<(String, f64)>,
    /// Collisions since start, by kind.
    pub collisions: Vec<(String, f64)>,
    /// The latest collisions, newest first.
    pub recent: Vec<CollisionDoc>,
}

fn label(s: &Sample, name: &str) -> String {
    s.labels.get(name).cloned().unwrap_or_default()
}

fn value(samples: &[Sample], name: &str) -> Option<f64> {
    total(samples, name, &[])
}

/// A per-namespace gauge (with --netns-label, one series per namespace)
/// reduced by `pick`, e.g. the smallest: a knob off anywhere is off
/// somewhere that matters.
fn across(samples: &[Sample], name: &str, pick: fn(f64, f64) -> f64) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .reduce(pick)
}

fn transitions(samples: &[Sample], from: &str, to: &str) -> Option<f64> {
    total(
        samples,
        "twmon_tcp_state_transitions_total",
        &[("from", from), ("to", to)],
    )
    .or_else(|| {
        of(samples, "twmon_tcp_state_transitions_total")
            .next()
            .map(|_| 0.0)
    })
}

/// Sorted most first.
fn counts(samples: &[Sample], name: &str, by: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = of(samples, name).map(|s| (label(s, by), s.value)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

impl Inputs {
    /// From the exposition `metrics` and `collisions`, the latest first.
    pub fn read(source: String, metrics: &str, recent: Vec<CollisionDoc>) -> Inputs {
        let s = parse(metrics);
        Inputs {
            source,
            population: value(&s, "twmon_timewait_sockets").unwrap_or(0.0),
            max_tw_buckets: value(&s, "twmon_tcp_max_tw_buckets"),
            tw_reuse: across(&s, "twmon_tcp_tw_reuse", f64::max),
            timestamps: across(&s, "twmon_tcp_timestamps", f64::min),
            fin_timeout_s: value(&s, "twmon_tcp_fin_timeout_seconds"),
            overflows: value(&s, "twmon_timewait_overflow_total"),
            eaddrnotavail: value(&s, "twmon_connect_eaddrnotavail_total"),
            bind_refused_by_timewait: total(
                &s,
                "twmon_bind_eaddrinuse_total",
                &[("held_by", "timewait")],
            ),
            aborts: transitions(&s, "ESTABLISHED", "CLOSE"),
            active_closes: transitions(&s, "ESTABLISHED", "FIN_WAIT1"),
            destinations: destinations(&s),
            by_local_port: counts(&s, "twmon_timewait_sockets_by_local_port", "local_port"),
            by_process: counts(&s, "twmon_timewait_sockets_by_process", "comm"),
            collisions: counts(&s, "twmon_fourtuple_collisions_total", "kind"),
            recent,
        }
    }
}

/// The destinations under pressure, most pressed first.
fn destinations(s: &[Sample]) -> Vec<Destination> {
    let key = |x: &Sample| {
        (
            label(x, "local_addr"),
            label(x, "remote_addr"),
            label(x, "remote_port"),
        )
    };
    let find = |name: &str, k: &(String, String, String)| {
        of(s, name).find(|x| key(x) == *k).map(|x| x.value)
    };
    let mut out: Vec<Destination> = of(s, "twmon_ephemeral_port_pressure_ratio")
        .map(|r| {
            let k = key(r);
            Destination {
                in_use: find("twmon_ephemeral_ports_in_use", &k).unwrap_or(0.0),
                in_timewait: find("twmon_ephemeral_ports_in_timewait", &k).unwrap_or(0.0),
                seconds_left: find("twmon_ephemeral_port_exhaustion_seconds", &k),
                ratio: r.value,
                local: k.0,
                remote: k.1,
                port: k.2,
            }
        })
        .collect();
    out.sort_by(|a, b| b.ratio.total_cmp(&a.ratio));
    out
}
