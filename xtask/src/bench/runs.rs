//! The measurements themselves, and what each one found.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Bins, Plan,
    daemon::{self, Server, population},
    floor,
    host::{Netns, await_timewait_freed, cpu_time, rss, sample, timewait_objects},
};

/// One churn run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Churn {
    pub connections: u64,
    pub seconds: f64,
    pub errors: u64,
}

impl Churn {
    pub fn rate(&self) -> f64 {
        (self.connections - self.errors) as f64 / self.seconds.max(1e-9)
    }
}

/// One pair: the churn without and with twmon.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pair {
    pub without: Churn,
    pub with: Churn,
    /// The watcher's (twmon's) CPU during its run, seconds.
    pub twmon_cpu: f64,
}

impl Pair {
    pub fn ratio(&self) -> f64 {
        self.with.rate() / self.without.rate().max(1e-9)
    }
}

/// What watches the churn in the "with" runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Watcher {
    #[default]
    Twmon,
    /// [`daemon::BPFTRACE_COUNTER`], for scale.
    Bpftrace,
    /// An empty program on the same hook ([`floor`]): what any watcher of
    /// it pays.
    Floor,
    /// A program on the same hook that only counts transitions in a per-CPU
    /// array ([`floor`]): what any watcher that counts them pays.
    Counting,
}

#[derive(Clone, Debug, Default)]
pub struct Overhead {
    pub watcher: Watcher,
    pub threads: usize,
    pub pairs: Vec<Pair>,
}

impl Overhead {
    pub fn median_ratio(&self) -> f64 {
        let mut r: Vec<f64> = self.pairs.iter().map(Pair::ratio).collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => 0.0,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }
}

/// What twmon saw of the highest churn.
#[derive(Clone, Debug, Default)]
pub struct Loss {
    pub churn: Churn,
    pub events: f64,
    pub lost: f64,
    pub ringbuf_full: f64,
    pub run_skipped: f64,
    /// Timewait sockets in the table, and those without a closing process.
    pub entries: f64,
    pub unknown_closer: f64,
}

/// N timewait sockets, no churn.
#[derive(Clone, Debug, Default)]
pub struct Population {
    pub target: u64,
    pub fill: Churn,
    /// `ss` and twmon at the start of the idle window.
    pub ss: u64,
    pub twmon: f64,
    /// Largest |twmon - ss| / ss seen at the checks.
    pub worst_error: f64,
    /// When twmon's population came within 1 % of `ss` with a snapshot
    /// round done since the fill, after the fill began (at most 45 s
    /// later: `settle` gives up then).
    pub settled: Duration,
    /// twmon's CPU over the idle window, as a share of one core.
    pub idle_cpu_share: f64,
    /// The same without the window's snapshot dumps.
    pub between_rounds_share: f64,
    pub idle_window: Duration,
    /// Snapshot rounds taken in the window.
    pub window_rounds: f64,
    /// CPU per snapshot dump, and the interval the CPU budget set.
    pub dump_cpu: f64,
    pub snapshot_interval: f64,
    pub rss_growth_per_socket: f64,
    pub twmon_scrape: Duration,
    pub node_exporter_scrape: Duration,
    pub node_exporter_value: f64,
    pub ss_time: Duration,
}

/// The share of a core twmon's snapshot rounds may take on average: its
/// default `--snapshot-cpu-percent`, which paces them.
pub const SNAPSHOT_BUDGET: f64 = 0.01;

impl Population {
    /// twmon's CPU with no churn over any long stretch: what it uses
    /// between snapshot rounds, plus the rounds at the most their pace
    /// allows. A short window may hold a round or none, so its own figure
    /// errs either way.
    pub fn long_run_bound(&self) -> f64 {
        self.between_rounds_share + SNAPSHOT_BUDGET
    }
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub kernel: String,
    pub overhead: Vec<Overhead>,
    /// The same as `overhead`, watched by bpftrace (one thread), the empty
    /// program and the counting one (one and two each) instead, for scale.
    pub peers: Vec<Overhead>,
    pub loss: Option<Loss>,
    pub populations: Vec<Population>,
    /// How long the measurements took (the build not included).
    pub took: Duration,
}

pub fn all(bins: &Bins, plan: &Plan, out: &Path) -> Result<Results> {
    let started = Instant::now();
    let mut results = Results {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        ..Results::default()
    };
    for threads in [1, 2] {
        results
            .overhead
            .push(overhead(bins, plan, Watcher::Twmon, threads, out)?);
    }
    // The floor and the counting program at both thread counts, as twmon;
    // bpftrace at one suffices for scale.
    for (watcher, threads) in [
        (Watcher::Bpftrace, 1),
        (Watcher::Floor, 1),
        (Watcher::Floor, 2),
        (Watcher::Counting, 1),
        (Watcher::Counting, 2),
    ] {
        results
            .peers
            .push(overhead(bins, plan, watcher, threads, out)?);
    }
    results.loss = Some(loss(bins, plan, out)?);
    for &n in plan.populations {
        results
            .populations
            .push(idle_population(bins, plan, n, out)?);
    }
    results.took = started.elapsed();
    Ok(results)
}

fn churn(bins: &Bins, ns: &Netns, args: &[&str]) -> Result<Churn> {
    let churn = bins.churn.to_string_lossy();
    let mut cmd = vec![churn.as_ref()];
    cmd.extend(args);
    let line = ns.exec(&cmd)?;
    let field = |name: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("twmon-churn printed no {name}: {line}"))
    };
    Ok(Churn {
        connections: field("connections")? as u64,
        seconds: field("seconds")?,
        errors: field("errors")? as u64,
    })
}

fn overhead(
    bins: &Bins,
    plan: &Plan,
    watcher: Watcher,
    threads: usize,
    out: &Path,
) -> Result<Overhead> {
    let name = format!("twmon-bench-{threads}t");
    let (t, s) = (threads.to_string(), plan.seconds.to_string());
    let args = ["--threads", t.as_str(), "--seconds", s.as_str()];
    let mut series = Overhead {
        watcher,
        threads,
        pairs: Vec::new(),
    };
    for i in 0..plan.pairs {
        let mut pair = Pair::default();
        // The order alternates, so a drift over the series (the timewait
        // population grows) weighs on both sides alike.
        for with in [i % 2 == 1, i % 2 == 0] {
            let baseline = timewait_objects();
            // Each run in a namespace of its own: the timewait sockets an
            // earlier run left (60 s of them) slow the kernel's port search
            // and grow what twmon dumps, so runs would not compare.
            let ns = Netns::new(&name)?;
            if with {
                (pair.with, pair.twmon_cpu) = watched(bins, watcher, &ns, &args, out)?;
            } else {
                pair.without = churn(bins, &ns, &args)?;
            }
            drop(ns);
            await_timewait_freed(baseline);
        }
        eprintln!(
            "xtask: bench: {watcher:?}, {threads} thread(s), pair {}: {:.0}/s without, {:.0}/s \
             with, ratio {:.3}",
            i + 1,
            pair.without.rate(),
            pair.with.rate(),
            pair.ratio()
        );
        series.pairs.push(pair);
    }
    Ok(series)
}

/// One churn run under `watcher`, and the watcher's CPU seconds meanwhile.
fn watched(
    bins: &Bins,
    watcher: Watcher,
    ns: &Netns,
    args: &[&str],
    out: &Path,
) -> Result<(Churn, f64)> {
    let measured = |pid: u32| -> Result<(Churn, f64)> {
        let cpu0 = cpu_time(pid)?;
        let run = churn(bins, ns, args)?;
        Ok((run, (cpu_time(pid)? - cpu0).as_secs_f64()))
    };
    match watcher {
        Watcher::Twmon => {
            let twmon = daemon::twmon(&bins.twmon, &out.join("twmon-overhead.log"), &[])?;
            let got = measured(twmon.pid())?;
            twmon.stop()?;
            Ok(got)
        }
        Watcher::Bpftrace => {
            let bpftrace = daemon::Bpftrace::start(&out.join("bpftrace.log"))?;
            let got = measured(bpftrace.pid())?;
            bpftrace.stop()?;
            Ok(got)
        }
        // Runs in the kernel only, in the churn's own threads.
        Watcher::Floor => {
            let _floor = floor::Attached::attach(floor::Program::Empty)?;
            Ok((churn(bins, ns, args)?, 0.0))
        }
        Watcher::Counting => {
            let counting = floor::Attached::attach(floor::Program::Counting)?;
            let run = churn(bins, ns, args)?;
            ran_on_every_connection(counting.counted()?, &run)?;
            Ok((run, 0.0))
        }
    }
}

/// Checks that the counting program saw `counted` transitions, at least
/// the four each connection of `run` makes at the least (the client's
/// SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE): a program
/// that did not run would make its ratio a floor's.
fn ran_on_every_connection(counted: u64, run: &Churn) -> Result<()> {
    let made = run.connections - run.errors;
    eprintln!(
        "xtask: bench: the counting program counted {counted} transitions, {:.1} per connection",
        counted as f64 / made.max(1) as f64
    );
    if counted < 4 * made {
        bail!(
            "the counting program counted {counted} transitions for {made} connections: it did not run on each"
        );
    }
    Ok(())
}

fn loss(bins: &Bins, plan: &Plan, out: &Path) -> Result<Loss> {
    let ns = Netns::new("twmon-bench-loss")?;
    let netns = format!("/run/netns/{}", ns.name);
    let extra = ["--netns", netns.as_str(), "--snapshot-interval", "1s"];
    let twmon = daemon::twmon(&bins.twmon, &out.join("twmon-loss.log"), &extra)?;
    let s = plan.seconds.max(3).to_string();
    let churn = churn(bins, &ns, &["--threads", "2", "--seconds", &s])?;
    // Let the ring drain and two snapshots confirm the derived births.
    thread::sleep(Duration::from_millis(2500));
    let (text, _) = twmon.scrape()?;
    twmon.stop()?;
    let error = |reason: &str| {
        text.lines()
            .filter(|l| l.starts_with("twmon_kernel_errors_total{") && l.contains(reason))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok(Loss {
        churn,
        events: sample(&text, "twmon_events_total", ""),
        lost: sample(&text, "twmon_events_lost_total", ""),
        ringbuf_full: error("reason=\"ringbuf_full\"") + 0.0,
        run_skipped: error("reason=\"run_skipped\"") + 0.0,
        entries: sample(&text, "twmon_table_entries", ""),
        // + 0.0: a sum of nothing is -0.0, printed "-0.000".
        unknown_closer: sample(
            &text,
            "twmon_timewait_sockets_by_process",
            "comm=\"unknown\"",
        ) + 0.0,
    })
}

fn idle_population(bins: &Bins, plan: &Plan, n: u64, out: &Path) -> Result<Population> {
    let ns = Netns::new("twmon-bench-idle")?;
    let twmon = daemon::twmon(&bins.twmon, &out.join(format!("twmon-idle-{n}.log")), &[])?;
    let rss0 = rss(twmon.pid())?;
    let count = n.to_string();
    let filling = Instant::now();
    let fill = churn(bins, &ns, &["--threads", "2", "--connections", &count])?;
    if fill.seconds > 30.0 {
        bail!(
            "filling {n} timewait sockets took {:.0} s: too little of TIME_WAIT's 60 s is left \
             to measure an idle window",
            fill.seconds
        );
    }
    let (ss, twmon_now) = settle(&twmon, &ns, filling + Duration::from_secs(45))?;
    let settled = filling.elapsed();
    let rss1 = rss(twmon.pid())?;
    let before = twmon.scrape()?.0;
    let cpu0 = cpu_time(twmon.pid())?;
    let started = Instant::now();
    // Inside the window, as Prometheus's scrapes would be (eleven here, a
    // few ms of twmon's CPU each); ss and node_exporter are processes of
    // their own.
    let worst = compare(&twmon, &ns, 3)?;
    let scrapes = (0..5)
        .map(|_| twmon.scrape().map(|(_, d)| d))
        .collect::<Result<Vec<_>>>()?;
    let node = daemon::node_exporter(&ns.name, &out.join("node-exporter.log"))?;
    let node_scrapes = (0..3).map(|_| node.scrape()).collect::<Result<Vec<_>>>()?;
    drop(node);
    let node_value = sample(
        &node_scrapes[0].0,
        "node_tcp_connection_states",
        "state=\"time_wait\"",
    );
    let (_, ss_time) = ns.ss_timewait()?;
    thread::sleep(idle_window(plan, filling.elapsed()));
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_time(twmon.pid())? - cpu0).as_secs_f64() / elapsed;
    let after = twmon.scrape()?.0;
    let dumps = |m: &str| sample(m, "twmon_snapshot_cpu_seconds_total", "");
    let window_rounds = rounds(&after) - rounds(&before);
    let window_dumps = dumps(&after) - dumps(&before);
    // The dumps the window held, or every one so far when it held none.
    let dump_cpu = if window_rounds > 0.0 {
        window_dumps / window_rounds
    } else {
        dumps(&after) / rounds(&after).max(1.0)
    };
    let snapshot_interval = sample(&after, "twmon_snapshot_interval_seconds", "");
    twmon.stop()?;
    Ok(Population {
        target: n,
        fill,
        ss,
        twmon: twmon_now,
        worst_error: worst,
        settled,
        idle_cpu_share: cpu,
        between_rounds_share: (cpu - window_dumps / elapsed).max(0.0),
        idle_window: Duration::from_secs_f64(elapsed),
        window_rounds,
        dump_cpu,
        snapshot_interval,
        rss_growth_per_socket: rss1.saturating_sub(rss0) as f64 / ss.max(1) as f64,
        twmon_scrape: median(scrapes),
        node_exporter_scrape: median(node_scrapes.into_iter().map(|(_, d)| d).collect()),
        node_exporter_value: node_value,
        ss_time,
    })
}

/// How much longer to measure idle CPU, `since_fill` after the fill
/// began: up to `plan.idle_seconds` in all, and over 55 s after the fill
/// began, before the first socket can die (TIME_WAIT lasts 60 s; the
/// kernel's timer never fires early). As long as that allows: a dump of a
/// million sockets costs a few hundred ms and comes every half minute or
/// more, so a short window that happens to hold one overstates the
/// average, and one that holds none understates it.
fn idle_window(plan: &Plan, since_fill: Duration) -> Duration {
    let end = Duration::from_secs(55);
    Duration::from_secs(plan.idle_seconds.into()).min(end.saturating_sub(since_fill))
}

fn rounds(metrics: &str) -> f64 {
    sample(metrics, "twmon_snapshots_total", "")
}

/// Waits, after a fill, until twmon's population is within 1 % of `ss` and
/// a snapshot round has ended since the fill did (the one that reconciles
/// the burst is the churn's cost, not idle work), or until `deadline`;
/// returns both populations.
fn settle(twmon: &Server, ns: &Netns, deadline: Instant) -> Result<(u64, f64)> {
    let after_fill = rounds(&twmon.scrape()?.0);
    loop {
        let (ss, _) = ns.ss_timewait()?;
        let metrics = twmon.scrape()?.0;
        let pop = population(&metrics);
        let close = (pop - ss as f64).abs() <= 0.01 * ss as f64;
        if (close && rounds(&metrics) > after_fill) || Instant::now() > deadline {
            return Ok((ss, pop));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// `checks` comparisons of twmon's population with `ss`, each bracketing
/// one `ss` between two scrapes (the population moves while `ss` runs);
/// returns the worst relative error.
fn compare(twmon: &Server, ns: &Netns, checks: usize) -> Result<f64> {
    let mut worst: f64 = 0.0;
    for _ in 0..checks {
        let before = population(&twmon.scrape()?.0);
        let (ss, _) = ns.ss_timewait()?;
        let after = population(&twmon.scrape()?.0);
        let ss = ss as f64;
        let nearest = if (before - ss).abs() < (after - ss).abs() {
            before
        } else {
            after
        };
        worst = worst.max((nearest - ss).abs() / ss.max(1.0));
    }
    Ok(worst)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
