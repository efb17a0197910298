//! `cargo xtask soak --minutes N`: twmon under a long churn with
//! collisions (a SYN into TIME_WAIT from the server-closes churn, connect()
//! taking over TIME_WAIT four-tuples toward a destination whose ports run
//! out), refused binds and port pressure. Records resident memory, table
//! size, population and lost events over time (target/soak/soak.md and
//! soak.svg) and fails if the population drifts from `ss` while the table
//! has room, or if memory grows once the table is full.
//!
//! Two halves: the first churns below the table's capacity, so twmon's
//! population must follow `ss`; the second adds a churn that fills it, so
//! memory must hold still while the oldest entries are evicted.

use std::{
    fmt::Write as _,
    fs,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::{
        self,
        daemon::twmon,
        host::{Netns, rss, sample},
    },
    util::{is_root, workspace_root},
};

/// Entries the table may hold: above the first half's population, below
/// the second's.
const CAPACITY: u64 = 40_000;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The ports the churns listen on (7001 to 7003).
const PORTS: (u16, u16) = (7001, 7003);

/// A refused bind every few seconds: a client rebinding its port in
/// TIME_WAIT.
const REBIND: &str = "import socket\ns=socket.socket();s.bind(('127.0.0.1',0));p=s.getsockname()[1]\nl=socket.socket();l.bind(('127.0.0.1',0));l.listen(1)\ns.connect(l.getsockname());c,_=l.accept();s.close();c.recv(1);c.close()\nt=socket.socket()\ntry:\n t.bind(('127.0.0.1',p))\nexcept OSError:\n pass\n";

#[derive(Clone, Copy, Debug)]
struct Sample {
    at_s: f64,
    rss: u64,
    entries: f64,
    twmon: f64,
    ss: u64,
    lost: f64,
    full: bool,
}

pub fn soak(minutes: u32) -> Result<()> {
    anyhow::ensure!(
        is_root(),
        "`cargo xtask soak` creates network namespaces: run it as root"
    );
    let bins = bench::build()?;
    let out = workspace_root().join("target/soak");
    fs::create_dir_all(&out)?;
    let ns = Netns::new("twmon-soak")?;
    // tcp_tw_reuse lets connect() take over TIME_WAIT four-tuples once the
    // single-destination churn runs short of ports: connect_reuse.
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])?;
    // The churns' listening ports, kept out of the ephemeral range (1024 to
    // 65535 here): the one that starts halfway would otherwise find its
    // port held by a client's timewait socket (EADDRINUSE, as twmon's
    // bind_in_timewait says) about as often as not.
    ns.exec(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.ip_local_reserved_ports={}-{}", PORTS.0, PORTS.1),
    ])?;
    let netns = format!("/run/netns/{}", ns.name);
    let capacity = CAPACITY.to_string();
    let daemon = twmon(
        &bins.twmon,
        &out.join("twmon.log"),
        &["--netns", &netns, "--table-capacity", &capacity],
    )?;
    let total = Duration::from_secs(u64::from(minutes.max(2)) * 60);
    let half = total / 2;
    let churn = |args: &[&str]| -> Result<Child> {
        let bin = bins.churn.to_string_lossy().to_string();
        let mut all = vec![bin.as_str()];
        all.extend(args);
        ns.command(&all)
            .stdout(Stdio::null())
            .spawn()
            .context("starting twmon-churn")
    };
    let seconds = total.as_secs().to_string();
    let second_half = half.as_secs().to_string();
    let mut children = vec![
        churn(&["--seconds", &seconds, "--rate", "300", "--port", "7001"])?,
        churn(&[
            "--seconds",
            &seconds,
            "--rate",
            "100",
            "--port",
            "7002",
            "--closer",
            "server",
        ])?,
    ];
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_bind = Instant::now();
    while started.elapsed() < total {
        if children.len() == 2 && started.elapsed() >= half {
            let args = [
                "--seconds",
                &second_half,
                "--rate",
                "1200",
                "--port",
                "7003",
            ];
            children.push(churn(
                &[&args[..], &["--sources", "1", "--destinations", "1"]].concat(),
            )?);
        }
        if last_bind.elapsed() >= Duration::from_secs(3) {
            let _ = ns.exec(&["python3", "-c", REBIND]);
            last_bind = Instant::now();
        }
        let (metrics, _) = daemon.scrape()?;
        let (ss, _) = ns.ss_timewait()?;
        let entries = sample(&metrics, "twmon_table_entries", "");
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss: rss(daemon.pid())?,
            entries,
            twmon: sample(&metrics, "twmon_timewait_sockets", ""),
            ss,
            lost: sample(&metrics, "twmon_events_lost_total", ""),
            full: entries >= 0.99 * CAPACITY as f64,
        });
        thread::sleep(SAMPLE_EVERY);
    }
    for mut child in children {
        let _ = child.wait();
    }
    daemon.stop()?;
    fs::write(out.join("soak.md"), markdown(&samples))?;
    fs::write(out.join("soak.svg"), svg(&samples))?;
    eprintln!("xtask: wrote {}", out.join("soak.md").display());
    verdict(&samples, half.as_secs_f64())
}

/// The two checks, with what failed.
fn verdict(samples: &[Sample], half_s: f64) -> Result<()> {
    for s in samples.iter().filter(|s| s.at_s < half_s && !s.full) {
        let ss = s.ss as f64;
        if (s.twmon - ss).abs() > 0.02 * ss + 100.0 {
            bail!(
                "at {:.0} s twmon listed {} timewait sockets, ss {}",
                s.at_s,
                s.twmon,
                s.ss
            );
        }
    }
    let Some(first_full) = samples.iter().position(|s| s.full) else {
        bail!("the table never filled ({CAPACITY} entries): the second half's churn fell short");
    };
    // Hash tables settle after filling: measure from 20 s later.
    let settled = samples[first_full..]
        .iter()
        .find(|s| s.at_s >= samples[first_full].at_s + 20.0);
    let (Some(base), Some(last)) = (settled, samples.last()) else {
        bail!("too short to see memory once the table was full: give more --minutes");
    };
    if last.rss as f64 > base.rss as f64 * 1.05 + 2.0 * 1048576.0 {
        bail!(
            "resident memory grew from {} to {} bytes while the table stayed full",
            base.rss,
            last.rss
        );
    }
    Ok(())
}

fn markdown(samples: &[Sample]) -> String {
    let mut out = String::from(
        "# twmon soak\n\n![soak](soak.svg)\n\n| s | RSS (MiB) | table entries | twmon population | ss | lost events | table full |\n|---|---|---|---|---|---|---|\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "| {:.0} | {:.1} | {:.0} | {:.0} | {} | {:.0} | {} |",
            s.at_s,
            s.rss as f64 / 1048576.0,
            s.entries,
            s.twmon,
            s.ss,
            s.lost,
            if s.full { "yes" } else { "" }
        );
    }
    out
}

/// A line of the chart: its name, colour and value.
type Series = (&'static str, &'static str, fn(&Sample) -> f64);

/// RSS, table entries and ss's population over time, each scaled to its
/// own maximum.
fn svg(samples: &[Sample]) -> String {
    let (w, h) = (720.0, 300.0);
    let t_max = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let series: [Series; 3] = [
        ("RSS", "#d62728", |s| s.rss as f64),
        ("table entries", "#1f77b4", |s| s.entries),
        ("ss population", "#2ca02c", |s| s.ss as f64),
    ];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\">\n",
        h + 40.0
    );
    for (i, (name, colour, value)) in series.iter().enumerate() {
        let max = samples.iter().map(value).fold(1.0, f64::max);
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", s.at_s / t_max * w, h - value(s) / max * h))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\" font-size=\"12\">{name} (max {max:.0})</text>",
            points.join(" "),
            10 + 240 * i,
            h + 30.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_s: f64, rss: u64, full: bool, twmon: f64, ss: u64) -> Sample {
        Sample {
            at_s,
            rss,
            entries: if full { CAPACITY as f64 } else { 0.0 },
            twmon,
            ss,
            lost: 0.0,
            full,
        }
    }

    #[test]
    fn flat_memory_once_full_and_a_population_that_follows_ss_pass() {
        let ok = [
            s(0.0, 10 << 20, false, 100.0, 101),
            s(30.0, 20 << 20, true, 40000.0, 50000),
            s(55.0, 30 << 20, true, 40000.0, 60000),
            s(90.0, 30 << 20, true, 40000.0, 60000),
        ];
        assert!(verdict(&ok, 20.0).is_ok());
        let mut grew = ok;
        grew[3].rss = 40 << 20;
        assert!(
            verdict(&grew, 20.0)
                .unwrap_err()
                .to_string()
                .contains("grew")
        );
        let mut drift = ok;
        drift[0].twmon = 5000.0;
        assert!(
            verdict(&drift, 20.0)
                .unwrap_err()
                .to_string()
                .contains("ss")
        );
    }
}
