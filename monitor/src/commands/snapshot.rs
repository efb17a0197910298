//! `twmon snapshot`: the TIME_WAIT table of a running daemon, from its
//! `/api/v1/timewait`, or straight from sock_diag when no daemon answers.

use anyhow::{Result, bail};

use super::runtime::runtime;
use crate::{
    expose::{
        api::{self, Attribution, TimewaitDoc},
        text,
    },
    model::snapshot::SnapshotRound,
    sources::{diag, netns},
    table::{Config, Filter, Order, State},
    web::{
        client::{GetError, Target, get_json},
        params::timewait_query,
    },
};

#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    pub target: Target,
    pub filter: Filter,
    /// Containers or pods, which only a running daemon can tell.
    pub attribution: Attribution,
    pub order: Order,
    pub limit: usize,
    pub json: bool,
}

pub fn run(opts: &SnapshotOptions) -> Result<()> {
    let query = timewait_query(&opts.filter, &opts.attribution, opts.order, opts.limit);
    let doc = match runtime()?.block_on(get_json::<TimewaitDoc>(&opts.target, &query)) {
        Ok(doc) => doc,
        Err(GetError::Unreachable(url)) => {
            eprintln!(
                "twmon: no daemon at {url}; showing sock_diag of this network namespace \
                 (closing process and segments are only known to a running daemon)"
            );
            from_sock_diag(opts)?
        }
        Err(GetError::Other(err)) => return Err(err),
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text::table(&doc));
    }
    Ok(())
}

/// The table as a one-off dump of this namespace builds it.
fn from_sock_diag(opts: &SnapshotOptions) -> Result<TimewaitDoc> {
    if !opts.attribution.selects_all() {
        bail!(
            "--cgroup and --pod need a running daemon: sock_diag does not say which process \
             closed a socket. Start one with `twmon run`, or pass its address with --url"
        );
    }
    let own = netns::current()?;
    let snap = diag::snapshot_here(own.inode)?;
    let now = snap.taken_ns;
    let mut state = State::new(Config::default());
    state.reconcile(&SnapshotRound {
        namespaces: vec![snap],
        existing: None,
    });
    // sock_diag was asked in this namespace only.
    let filter = Filter {
        netns: None,
        ..opts.filter.clone()
    };
    Ok(api::timewait(&state, now, &filter, opts.order, opts.limit))
}
