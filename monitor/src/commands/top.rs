//! `twmon top`: a live terminal view of a running daemon, redrawn every
//! interval from `/api/v1/summary` and `/api/v1/collisions`. Plain ANSI
//! (home + clear), so it works in any terminal and in tmux.

use std::{io::Write as _, time::Duration};

use anyhow::Result;

use super::runtime::runtime;
use crate::{
    expose::{
        api::{CollisionsDoc, SummaryDoc},
        text,
    },
    web::client::{Target, get_json},
};

#[derive(Clone, Debug)]
pub struct TopOptions {
    pub target: Target,
    pub interval: Duration,
}

pub fn run(opts: &TopOptions) -> Result<()> {
    let target = &opts.target;
    runtime()?.block_on(async {
        let mut previous: Option<SummaryDoc> = None;
        let mut tick = tokio::time::interval(opts.interval);
        // A daemon that hangs (up to 15 s per request) must not leave a
        // burst of back-to-back refreshes behind it.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let summary = get_json::<SummaryDoc>(target, "/api/v1/summary?top=8").await;
            let collisions = get_json::<CollisionsDoc>(target, "/api/v1/collisions?limit=8").await;
            let screen = match (summary, collisions) {
                (Ok(s), Ok(c)) => {
                    let screen = text::top(&s, previous.as_ref(), &c);
                    previous = Some(s);
                    screen
                }
                (Err(e), _) | (_, Err(e)) => {
                    format!("twmon top: {e} (retrying every {:?})\n", opts.interval)
                }
            };
            print!("\x1b[H\x1b[2J{screen}");
            let _ = std::io::stdout().flush();
        }
    })
}
