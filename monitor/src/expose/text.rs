//! The plain-text views: the `twmon top` screen (also printed by
//! `twmon replay`) and the `twmon snapshot` table, rendered from the API
//! documents so a remote daemon and a replay look the same.

use std::fmt::Write as _;

use super::api::{self, CollisionDoc, CollisionsDoc, SummaryDoc, TimewaitDoc};

/// Per-second rate of a counter between two summaries.
fn rate(now: u64, before: Option<u64>, seconds: f64) -> Option<f64> {
    let before = before?;
    (seconds > 0.0).then(|| now.saturating_sub(before) as f64 / seconds)
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.1}/s"))
}

/// The `twmon top` screen: totals and rates (against `previous`, the
/// summary before, when there is one), port pressure, the top remotes and
/// closing processes, and the latest collisions.
pub fn top(s: &SummaryDoc, previous: Option<&SummaryDoc>, c: &CollisionsDoc) -> String {
    let mut out = String::new();
    totals(&mut out, s, previous, c);
    pressure(&mut out, s);
    top_lists(&mut out, s);
    cgroups(&mut out, s);
    collisions(&mut out, c);
    out
}

fn totals(out: &mut String, s: &SummaryDoc, previous: Option<&SummaryDoc>, c: &CollisionsDoc) {
    let dt = previous.map_or(0.0, |p| s.now_seconds - p.now_seconds);
    let exited: u64 = s.exited.values().sum();
    let _ = writeln!(
        out,
        "twmon top    timewait sockets: {}    born {}    ended {}    events {}",
        s.entries,
        fmt_rate(rate(s.started, previous.map(|p| p.started), dt)),
        fmt_rate(rate(exited, previous.map(|p| p.exited.values().sum()), dt)),
        fmt_rate(rate(s.events, previous.map(|p| p.events), dt)),
    );
    let population: Vec<String> = s
        .population
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    let _ = writeln!(out, "  {}", population.join("   "));
    let ended: Vec<String> = s
        .exited
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(out, "  ended by cause: {}", ended.join(", "));
    let totals: Vec<String> = c.totals.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(out, "  collisions: {}", totals.join(", "));
}

fn pressure(out: &mut String, s: &SummaryDoc) {
    let _ = writeln!(
        out,
        "\nPORT PRESSURE (ephemeral four-tuples toward a destination)"
    );
    let _ = writeln!(
        out,
        "  {:<40} {:<40} {:>7} {:>7} {:>7} {:>6}",
        "LOCAL", "DESTINATION", "IN USE", "TW", "RANGE", "RATIO"
    );
    for p in &s.pressure {
        let _ = writeln!(
            out,
            "  {:<40} {:<40} {:>7} {:>7} {:>7} {:>5.0}%",
            p.local_addr.to_string(),
            api::endpoint(p.remote_addr, p.remote_port),
            p.in_use,
            p.in_timewait,
            p.range,
            p.ratio * 100.0
        );
    }
}

fn top_lists(out: &mut String, s: &SummaryDoc) {
    let _ = writeln!(
        out,
        "\nTOP REMOTES                                  TOP CLOSING PROCESSES"
    );
    for i in 0..s.by_remote.len().max(s.by_process.len()) {
        let remote = s
            .by_remote
            .get(i)
            .map_or(String::new(), |r| format!("{:<34} {:>7}", r.label, r.count));
        let process = s
            .by_process
            .get(i)
            .map_or(String::new(), |p| format!("{:<20} {:>7}", p.label, p.count));
        let _ = writeln!(out, "  {remote:<42} {process}");
    }
}

fn cgroups(out: &mut String, s: &SummaryDoc) {
    if s.by_cgroup.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nTOP CGROUPS (of the closing process, or of the namespace)"
    );
    for c in &s.by_cgroup {
        let _ = writeln!(out, "  {:<74} {:>7}", c.cgroup.label(c.netns), c.count);
    }
}

fn collisions(out: &mut String, c: &CollisionsDoc) {
    let _ = writeln!(out, "\nRECENT COLLISIONS");
    for col in &c.collisions {
        let local = match (col.local_addr, col.local_port) {
            (Some(a), Some(p)) => api::endpoint(a, p),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:>7.1}s ago  {:<16} {} -> {}{}{}",
            col.ago_seconds,
            col.kind,
            local,
            api::endpoint(col.remote_addr, col.remote_port),
            if col.derived { "  (derived)" } else { "" },
            bind_detail(col)
        );
    }
}

/// For a refused bind: who, and how long the port stays held.
fn bind_detail(col: &CollisionDoc) -> String {
    let Some(holders) = col.holders else {
        return String::new();
    };
    let who = col
        .binder
        .as_ref()
        .map_or("?".into(), |p| format!("{} ({})", p.comm, p.pid));
    let left = col
        .time_left_seconds
        .map_or(String::new(), |s| format!(", free in {s:.0}s"));
    format!("  bind by {who}: {holders} timewait socket(s) hold it{left}")
}

/// A fixed-width table, one socket per line.
pub fn table(doc: &TimewaitDoc) -> String {
    let mut out = format!(
        "{:<45} {:<45} {:<9} {:>7} {:>7} {:>5} {:<22} CGROUP\n",
        "LOCAL", "REMOTE", "STATE", "AGE", "LEFT", "SEGS", "PROCESS"
    );
    for s in &doc.sockets {
        out.push_str(&format!(
            "{:<45} {:<45} {:<9} {:>6.1}s {:>6.1}s {:>5} {:<22} {}\n",
            api::endpoint(s.local_addr, s.local_port),
            api::endpoint(s.remote_addr, s.remote_port),
            s.substate,
            s.age_seconds,
            s.left_seconds,
            s.segments,
            api::closer_label(s.closer.as_ref()),
            s.cgroup.label(s.netns),
        ));
    }
    out.push_str(&format!(
        "{} shown of {} timewait sockets\n",
        doc.sockets.len(),
        doc.total
    ));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::expose::api::{CgroupCountDoc, CgroupDoc, CollisionDoc, CountDoc, PressureDoc};

    fn summary(now: f64, started: u64) -> SummaryDoc {
        SummaryDoc {
            now_seconds: now,
            entries: 12,
            population: BTreeMap::from([("ipv4 TIME_WAIT".into(), 12)]),
            started,
            exited: BTreeMap::from([("expired".into(), 3)]),
            collisions: BTreeMap::new(),
            events: 100,
            evictions: 0,
            by_remote: vec![CountDoc {
                label: "10.0.0.2:80".into(),
                count: 12,
            }],
            by_process: vec![CountDoc {
                label: "curl".into(),
                count: 12,
            }],
            by_cgroup: vec![CgroupCountDoc {
                netns: 0,
                cgroup: CgroupDoc {
                    id: 9,
                    path: Some("/kubepods.slice/pod-x".into()),
                    service: None,
                    container_id: Some("0123456789abcdef".into()),
                    pod_uid: Some("4f1c2d3e-5a6b".into()),
                },
                count: 12,
            }],
            pressure: vec![PressureDoc {
                netns: 0,
                local_addr: "10.0.0.1".parse().unwrap(),
                remote_addr: "10.0.0.2".parse().unwrap(),
                remote_port: 80,
                in_use: 3,
                in_timewait: 2,
                range: 4,
                ratio: 0.75,
            }],
        }
    }

    #[test]
    fn shows_rates_pressure_and_collisions() {
        let collisions = CollisionsDoc {
            totals: BTreeMap::from([("syn_in_timewait".into(), 1)]),
            collisions: vec![CollisionDoc {
                kind: "syn_in_timewait".into(),
                ago_seconds: 2.0,
                netns: 0,
                family: "ipv4".into(),
                local_addr: Some("10.0.0.1".parse().unwrap()),
                local_port: Some(80),
                remote_addr: "10.0.0.2".parse().unwrap(),
                remote_port: 5555,
                previous_age_seconds: Some(1.0),
                previous_closer: None,
                derived: true,
                binder: None,
                holders: None,
                time_left_seconds: None,
            }],
        };
        let text = top(&summary(12.0, 30), Some(&summary(10.0, 10)), &collisions);
        assert!(text.contains("timewait sockets: 12"), "{text}");
        assert!(text.contains("born 10.0/s"), "{text}");
        assert!(text.contains("75%"), "{text}");
        assert!(text.contains("10.0.0.2:80"), "{text}");
        assert!(text.contains("curl"), "{text}");
        assert!(text.contains("pod 4f1c2d3e-5a6b 0123456789ab"), "{text}");
        assert!(
            text.contains("syn_in_timewait  10.0.0.1:80 -> 10.0.0.2:5555  (derived)"),
            "{text}"
        );
        // The process column lines up under its heading.
        let column = |needle: &str| {
            text.lines()
                .find_map(|l| l.find(needle))
                .unwrap_or_else(|| panic!("{needle} missing: {text}"))
        };
        assert_eq!(column("TOP CLOSING PROCESSES"), column("curl"), "{text}");
        // First frame: no rates yet.
        let first = top(&summary(10.0, 10), None, &collisions);
        assert!(first.contains("born -"), "{first}");
    }
}
