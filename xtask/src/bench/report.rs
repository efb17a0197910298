//! The bench's findings as a terminal table, as bench/results.md (with the
//! goals of issue 11 and whether each is met) and as an SVG chart.

use std::fmt::Write as _;

use super::{
    Plan, daemon, floor,
    runs::{Overhead, Population, Results, Watcher},
};

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "twmon bench on Linux {}, measured in {:.1} min",
        r.kernel,
        r.took.as_secs_f64() / 60.0
    );
    for o in &r.overhead {
        let (min, max) = spread(o);
        let _ = writeln!(
            out,
            "overhead, {} thread(s): median ratio {:.3} over {} pairs (min {min:.3}, max {max:.3}); \
             twmon CPU {:.2} s per run",
            o.threads,
            o.median_ratio(),
            o.pairs.len(),
            o.pairs.iter().map(|p| p.twmon_cpu).sum::<f64>() / o.pairs.len().max(1) as f64,
        );
    }
    for o in &r.peers {
        let (min, max) = spread(o);
        let _ = writeln!(
            out,
            "for scale, {} instead, {} thread(s): median ratio {:.3} over {} pairs (min {min:.3}, \
             max {max:.3})",
            watcher_text(o.watcher),
            o.threads,
            o.median_ratio(),
            o.pairs.len(),
        );
    }
    if let Some(l) = &r.loss {
        let _ = writeln!(
            out,
            "loss at {:.0} conn/s: {} events, {} lost ({} ring full, {} runs skipped); \
             {:.3} % of {} timewait sockets without their closing process",
            l.churn.rate(),
            l.events,
            l.lost,
            l.ringbuf_full,
            l.run_skipped,
            100.0 * l.unknown_closer / l.entries.max(1.0),
            l.entries
        );
    }
    for p in &r.populations {
        let _ = writeln!(
            out,
            "{} timewait sockets (filled at {:.0}/s; ss {}, twmon {} {:.0} s after the fill began): idle CPU {:.2} % of a \
             core over {:.0} s holding {} snapshot rounds, at most {:.2} % with the rounds at their pace (snapshots every {:.0} s, {:.0} ms of CPU each), {:.0} B resident per socket, worst population error {:.3} %; scrape twmon \
             {:.1} ms, node_exporter tcpstat {:.1} ms ({}), ss {:.1} ms",
            p.target,
            p.fill.rate(),
            p.ss,
            p.twmon,
            p.settled.as_secs_f64(),
            100.0 * p.idle_cpu_share,
            p.idle_window.as_secs_f64(),
            p.window_rounds,
            100.0 * p.long_run_bound(),
            p.snapshot_interval,
            1e3 * p.dump_cpu,
            p.rss_growth_per_socket,
            100.0 * p.worst_error,
            ms(p.twmon_scrape),
            ms(p.node_exporter_scrape),
            p.node_exporter_value,
            ms(p.ss_time)
        );
    }
    out
}

/// What watched a series, in words.
fn watcher_text(w: Watcher) -> String {
    match w {
        Watcher::Twmon => "twmon".into(),
        Watcher::Bpftrace => format!(
            "bpftrace counting the same transitions ({})",
            daemon::BPFTRACE_COUNTER
        ),
        Watcher::Floor => format!(
            "an empty program on the same hook (raw tracepoint {:?}: the floor)",
            floor::HOOK
        ),
        Watcher::Counting => format!(
            "a program on the same hook that only counts transitions in a per-CPU array \
             (raw tracepoint {:?})",
            floor::HOOK
        ),
    }
}

fn spread(o: &Overhead) -> (f64, f64) {
    let ratios = o.pairs.iter().map(|p| p.ratio());
    let min = ratios.clone().fold(f64::INFINITY, f64::min);
    let max = ratios.fold(0.0, f64::max);
    (min, max)
}

/// Each goal of issue 11, what was measured, and whether it is met.
fn goals(r: &Results) -> Vec<(String, String, bool)> {
    let mut g = Vec::new();
    for o in &r.overhead {
        let m = o.median_ratio();
        g.push((
            format!(
                "churn throughput with twmon ≥ 0.97 of without, {} thread(s)",
                o.threads
            ),
            format!("{m:.3} (median of {} pairs)", o.pairs.len()),
            m >= 0.97,
        ));
    }
    if let Some(l) = &r.loss {
        g.push((
            "no event lost to a full ring buffer at the highest churn".into(),
            format!("{} at {:.0} conn/s", l.ringbuf_full, l.churn.rate()),
            l.ringbuf_full == 0.0,
        ));
        let skipped = l.run_skipped / (l.events + l.lost).max(1.0);
        g.push((
            "runs the kernel skips < 1 in 10,000".into(),
            format!("{} of {} ({skipped:.2e})", l.run_skipped, l.events + l.lost),
            skipped < 1e-4,
        ));
        let known = 1.0 - l.unknown_closer / l.entries.max(1.0);
        g.push((
            "≥ 99.9 % of timewait sockets carry their closing process".into(),
            format!("{:.3} % of {}", 100.0 * known, l.entries),
            known >= 0.999,
        ));
    }
    for p in &r.populations {
        population_goals(p, &mut g);
    }
    g
}

fn population_goals(p: &Population, g: &mut Vec<(String, String, bool)>) {
    let n = p.target;
    if n >= 1_000_000 {
        g.push((
            format!("idle CPU ≤ 2 % of a core at {n}"),
            format!(
                "{:.2} % over {:.0} s ({} snapshot rounds); at most {:.2} % with the rounds at \
                 their pace",
                100.0 * p.idle_cpu_share,
                p.idle_window.as_secs_f64(),
                p.window_rounds,
                100.0 * p.long_run_bound()
            ),
            p.idle_cpu_share <= 0.02 && p.long_run_bound() <= 0.02,
        ));
        g.push((
            format!("≤ 150 bytes resident per socket at {n}"),
            format!("{:.0} B", p.rss_growth_per_socket),
            p.rss_growth_per_socket <= 150.0,
        ));
    }
    g.push((
        format!("population within 1 % of ss at {n}"),
        format!("worst {:.3} %", 100.0 * p.worst_error),
        p.worst_error <= 0.01,
    ));
    let limit = if n >= 1_000_000 { 50.0 } else { 10.0 };
    g.push((
        format!("scrape under {limit} ms at {n}"),
        format!("{:.1} ms", ms(p.twmon_scrape)),
        ms(p.twmon_scrape) < limit,
    ));
    let speedup = ms(p.node_exporter_scrape) / ms(p.twmon_scrape).max(1e-3);
    g.push((
        format!("≥ 10x faster than node_exporter tcpstat at {n}"),
        format!("{speedup:.0}x"),
        speedup >= 10.0,
    ));
}

pub fn markdown(r: &Results, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# twmon bench results\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench{}` on Linux {} (2 cores; tracepoint-only mode, as this \
         host allows). Figures are measured side by side and printed, never asserted.\n",
        if plan.quick { " --quick" } else { "" },
        r.kernel
    );
    let _ = writeln!(out, "![results](results.svg)\n");
    let _ = writeln!(out, "| goal | measured | met |\n|---|---|---|");
    for (goal, measured, met) in goals(r) {
        let _ = writeln!(
            out,
            "| {goal} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(out, "\n## Overhead pairs (connections per second)\n");
    let _ = writeln!(
        out,
        "| watcher | threads | pair | without | with | ratio | watcher CPU (s) |\n\
         |---|---|---|---|---|---|---|"
    );
    for o in r.overhead.iter().chain(&r.peers) {
        for (i, p) in o.pairs.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {:?} | {} | {} | {:.0} | {:.0} | {:.3} | {:.2} |",
                o.watcher,
                o.threads,
                i + 1,
                p.without.rate(),
                p.with.rate(),
                p.ratio(),
                p.twmon_cpu
            );
        }
    }
    let _ = writeln!(out, "\n## Summary\n\n```\n{}```", table(r));
    out
}

/// Three panels: throughput ratio per pair, lost events, and CPU and memory
/// per population.
pub fn svg(r: &Results) -> String {
    let (w, h) = (900.0, 300.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    ratio_panel(&mut s, r, 10.0);
    loss_panel(&mut s, r, 310.0);
    population_panel(&mut s, r, 610.0);
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, x: f64, title: &str) {
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"18\" font-weight=\"bold\">{title}</text>\n<rect x=\"{x}\" y=\"30\" \
         width=\"280\" height=\"230\" fill=\"none\" stroke=\"#ccc\"/>",
        x + 4.0
    );
}

fn bar(s: &mut String, x: f64, value: f64, max: f64, color: &str, label: &str) {
    let height = 200.0 * (value / max).clamp(0.0, 1.0);
    let _ = writeln!(
        s,
        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"{height:.1}\" fill=\"{color}\"><title>{label}</title></rect>",
        250.0 - height
    );
}

fn ratio_panel(s: &mut String, r: &Results, x0: f64) {
    panel(s, x0, "throughput with / without the watcher");
    // 0.7 to 1.05 fills the panel (lower ratios sit on its floor); the
    // 0.97 goal is a line.
    let y = |v: f64| 250.0 - 200.0 * ((v - 0.7) / 0.35).clamp(0.0, 1.0);
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"red\" stroke-dasharray=\"4\"/>\
         <text x=\"{}\" y=\"{:.1}\" fill=\"red\">0.97</text>",
        x0 + 280.0,
        y(0.97),
        y(0.97),
        x0 + 250.0,
        y(0.97) - 3.0
    );
    let series: Vec<&Overhead> = r.overhead.iter().chain(&r.peers).collect();
    let points = series.iter().map(|o| o.pairs.len()).sum::<usize>().max(1);
    // The series and the gaps between them fill the panel's 280 px; labels
    // alternate between two lines so neighbours do not overlap.
    let gap = 20.0;
    let step = ((260.0 - gap * series.len() as f64) / points as f64).min(12.0);
    let mut x = x0 + 10.0;
    for (i, (o, color)) in series
        .into_iter()
        .zip([
            "#4477aa", "#66ccee", "#999999", "#bbbbbb", "#dddddd", "#ccbb44", "#eedd88",
        ])
        .enumerate()
    {
        let label = match o.watcher {
            Watcher::Twmon => format!("twmon, {} thr", o.threads),
            Watcher::Bpftrace => format!("bpftrace, {} thr", o.threads),
            Watcher::Floor => format!("empty, {} thr", o.threads),
            Watcher::Counting => format!("count, {} thr", o.threads),
        };
        let label_y = 272 + 13 * (i % 2);
        let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{label_y}\">{label}</text>");
        for p in &o.pairs {
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{label}: {:.3}</title></circle>",
                y(p.ratio()),
                p.ratio()
            );
            x += step;
        }
        x += gap;
    }
}

fn loss_panel(s: &mut String, r: &Results, x0: f64) {
    panel(s, x0, "lost events at the highest churn");
    let Some(l) = &r.loss else { return };
    let max = l.events.max(1.0);
    for (i, (label, v, color)) in [
        ("events", l.events, "#4477aa"),
        ("lost", l.lost, "#ee6677"),
        ("ring full", l.ringbuf_full, "#ee6677"),
        ("skipped", l.run_skipped, "#ccbb44"),
        ("no closer", l.unknown_closer, "#aa3377"),
    ]
    .into_iter()
    .enumerate()
    {
        let x = x0 + 20.0 + 52.0 * i as f64;
        bar(s, x, v, max, color, &format!("{label}: {v}"));
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"275\">{label}</text><text x=\"{x:.1}\" y=\"288\">{v}</text>"
        );
    }
}

fn population_panel(s: &mut String, r: &Results, x0: f64) {
    panel(s, x0, "idle CPU (%) and bytes per socket");
    for (i, p) in r.populations.iter().enumerate() {
        let x = x0 + 30.0 + 120.0 * i as f64;
        let cpu = 100.0 * p.idle_cpu_share;
        bar(
            s,
            x,
            cpu,
            10.0,
            "#4477aa",
            &format!("CPU {cpu:.2} % of a core"),
        );
        bar(
            s,
            x + 14.0,
            p.rss_growth_per_socket,
            400.0,
            "#228833",
            &format!("{:.0} B per socket", p.rss_growth_per_socket),
        );
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"275\">{} sockets</text><text x=\"{x:.1}\" y=\"288\">{cpu:.1} %, {:.0} B</text>",
            p.target, p.rss_growth_per_socket
        );
    }
}
