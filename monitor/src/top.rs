//! `twmon top`: a live terminal view of a running daemon, redrawn every
//! interval from `/api/v1/summary` and `/api/v1/collisions`. Plain ANSI
//! (home + clear), so it works in any terminal and in tmux.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use crate::{
    api::{self, CollisionsDoc, SummaryDoc},
    cli::TopArgs,
    client::get_json,
};

pub fn run(args: &TopArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let target = args.target.target();
    runtime.block_on(async {
        let mut previous: Option<SummaryDoc> = None;
        let mut tick = tokio::time::interval(args.interval);
        // A daemon that hangs (up to 15 s per request) must not leave a
        // burst of back-to-back refreshes behind it.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let summary = get_json::<SummaryDoc>(&target, "/api/v1/summary?top=8").await;
            let collisions = get_json::<CollisionsDoc>(&target, "/api/v1/collisions?limit=8").await;
            let screen = match (summary, collisions) {
                (Ok(s), Ok(c)) => {
                    let screen = render(&s, previous.as_ref(), &c);
                    previous = Some(s);
                    screen
                }
                (Err(e), _) | (_, Err(e)) => {
                    format!("twmon top: {e} (retrying every {:?})\n", args.interval)
                }
            };
            print!("\x1b[H\x1b[2J{screen}");
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
    })
}

/// Per-second rate of a counter between two summaries.
fn rate(now: u64, before: Option<u64>, seconds: f64) -> Option<f64> {
    let before = before?;
    (seconds > 0.0).then(|| now.saturating_sub(before) as f64 / seconds)
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.1}/s"))
}

pub fn render(s: &SummaryDoc, previous: Option<&SummaryDoc>, c: &CollisionsDoc) -> String {
    let dt = previous.map_or(0.0, |p| s.now_seconds - p.now_seconds);
    let mut out = String::new();
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

    let _ = writeln!(out, "\nRECENT COLLISIONS");
    for col in &c.collisions {
        let local = match (col.local_addr, col.local_port) {
            (Some(a), Some(p)) => api::endpoint(a, p),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:>7.1}s ago  {:<16} {} -> {}{}",
            col.ago_seconds,
            col.kind,
            local,
            api::endpoint(col.remote_addr, col.remote_port),
            if col.derived { "  (derived)" } else { "" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{CollisionDoc, CountDoc, PressureDoc};

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
            }],
        };
        let text = render(&summary(12.0, 30), Some(&summary(10.0, 10)), &collisions);
        assert!(text.contains("timewait sockets: 12"), "{text}");
        assert!(text.contains("born 10.0/s"), "{text}");
        assert!(text.contains("75%"), "{text}");
        assert!(text.contains("10.0.0.2:80"), "{text}");
        assert!(text.contains("curl"), "{text}");
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
        let first = render(&summary(10.0, 10), None, &collisions);
        assert!(first.contains("born -"), "{first}");
    }
}
