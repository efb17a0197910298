//! `twmon doctor`: a running daemon's numbers (its /metrics and latest
//! collisions), or without one a dump of this network namespace, turned
//! into findings for the person on call. Exits 0 when healthy, 1 with
//! warnings, 2 with critical findings.

use anyhow::Result;

use super::runtime::runtime;
use crate::{
    expose::{
        Exposed, View,
        api::CollisionsDoc,
        doctor::{self, Diagnosis, Inputs},
        metrics::encode,
    },
    model::{hooks::Hooks, snapshot::SnapshotRound},
    sources::{diag, netns},
    table::{Config, State},
    web::client::{GetError, Target, get_json, get_text},
};

#[derive(Clone, Debug)]
pub struct DoctorOptions {
    pub target: Target,
    pub json: bool,
}

/// Prints the diagnosis; returns the exit status it calls for.
pub fn run(opts: &DoctorOptions) -> Result<i32> {
    let mut inputs = match runtime()?.block_on(from_daemon(&opts.target)) {
        Ok(inputs) => inputs,
        Err(GetError::Unreachable(url)) => from_sock_diag(&url)?,
        Err(GetError::Other(err)) => return Err(err),
    };
    // A replay does not know it: read it where doctor runs.
    if inputs.timestamps.is_none() {
        inputs.timestamps = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_timestamps")
            .ok()
            .and_then(|t| t.trim().parse().ok());
    }
    let diagnosis: Diagnosis = doctor::diagnose(&inputs);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&diagnosis)?);
    } else {
        print!("{}", doctor::text(&diagnosis));
    }
    Ok(diagnosis.exit_code())
}

async fn from_daemon(target: &Target) -> Result<Inputs, GetError> {
    let metrics = get_text(target, "/metrics").await?;
    let collisions: CollisionsDoc = get_json(target, "/api/v1/collisions?limit=20").await?;
    Ok(Inputs::read(
        format!("the daemon at {}", target.url),
        &metrics,
        collisions.collisions,
    ))
}

/// The numbers one dump of this namespace gives: populations, pressure,
/// knobs; no counters, processes or collisions (only a daemon sees those).
fn from_sock_diag(url: &str) -> Result<Inputs> {
    let own = netns::current()?;
    let snap = diag::snapshot_here(own.inode)?;
    let mut state = State::new(Config::default());
    state.reconcile(&SnapshotRound {
        namespaces: vec![snap],
        existing: None,
    });
    let exposed = Exposed::replayed(state, Hooks::default(), String::new(), View::default());
    let metrics = encode(&exposed.scrape())?;
    let source = format!(
        "sock_diag of this network namespace (no daemon at {url}: counters, closing \
         processes and collisions need one)"
    );
    Ok(Inputs::read(source, &metrics, Vec::new()))
}
