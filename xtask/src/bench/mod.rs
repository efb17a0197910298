//! `cargo xtask bench`: what twmon costs the host it watches, measured side
//! by side, never asserted (this machine is shared and noisy; a timed test
//! would fail for the neighbours' sake).
//!
//! - **Overhead**: a loopback churn (`test/churn`) in a namespace of its
//!   own, with and without `twmon run` watching every namespace, in pairs
//!   whose order alternates; the figure is the median of the per-pair
//!   throughput ratios, at 1 and 2 client threads; and, for scale, the same
//!   with a bpftrace one-liner that only counts the state transitions
//!   instead of twmon (one thread), with an empty program on the same hook
//!   (both: the floor no watcher of it can go below), and with a program
//!   there that only counts the transitions in a per-CPU array (both: what
//!   any watcher that counts them pays).
//! - **Loss**: at the highest churn two threads make, what the kernel could
//!   not deliver (by reason), and how many timewait sockets carry the
//!   process that closed them.
//! - **Population**: N timewait sockets and no churn: twmon's CPU, resident
//!   memory per socket, how close its population is to `ss`, and one scrape
//!   of twmon against node_exporter's tcpstat and `ss` on the same sockets.
//!
//! Prints one table and writes `bench/results.md` and `bench/results.svg`
//! (`target/bench/` with `--quick`, which CI runs so the bench cannot rot).

pub mod daemon;
mod floor;
pub mod host;
mod report;
mod runs;

use std::{fs, path::PathBuf};

use anyhow::{Result, ensure};

use crate::{
    setup,
    util::{cargo, is_root, on_path, run as sh, workspace_root},
};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Alternating pairs per overhead series.
    pub pairs: usize,
    /// Seconds per churn run.
    pub seconds: u32,
    /// Timewait populations measured idle.
    pub populations: &'static [u64],
    /// Most seconds of idle CPU measured per population (fewer when the
    /// sockets would start dying sooner).
    pub idle_seconds: u32,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                pairs: 3,
                seconds: 1,
                populations: &[10_000],
                idle_seconds: 5,
            }
        } else {
            Plan {
                quick,
                pairs: 9,
                seconds: 3,
                populations: &[100_000, 1_000_000],
                idle_seconds: 50,
            }
        }
    }
}

/// The release binaries the bench runs.
pub struct Bins {
    pub twmon: PathBuf,
    pub churn: PathBuf,
}

pub fn bench(quick: bool) -> Result<()> {
    ensure!(
        is_root(),
        "`cargo xtask bench` loads eBPF programs and creates network namespaces: run it as root"
    );
    setup::run()?;
    let mut missing = Vec::new();
    for (tool, package) in [
        ("prometheus-node-exporter", "prometheus-node-exporter"),
        ("curl", "curl"),
        ("bpftrace", "bpftrace"),
    ] {
        if !on_path(tool) {
            missing.push(package);
        }
    }
    setup::install_debian(&missing)?;
    let bins = build()?;
    let plan = Plan::new(quick);
    let out_dir = if quick {
        workspace_root().join("target/bench")
    } else {
        workspace_root().join("bench")
    };
    fs::create_dir_all(&out_dir)?;
    let results = runs::all(&bins, &plan, &out_dir)?;
    let table = report::table(&results);
    println!("{table}");
    fs::write(
        out_dir.join("results.md"),
        report::markdown(&results, &plan),
    )?;
    fs::write(out_dir.join("results.svg"), report::svg(&results))?;
    eprintln!(
        "xtask: wrote {} and results.svg",
        out_dir.join("results.md").display()
    );
    Ok(())
}

pub fn build() -> Result<Bins> {
    sh(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "--package",
        "monitor",
        "--bin",
        "twmon",
        "--package",
        "churn",
        "--bin",
        "twmon-churn",
    ]))?;
    let dir = workspace_root().join("target/release");
    Ok(Bins {
        twmon: dir.join("twmon"),
        churn: dir.join("twmon-churn"),
    })
}
