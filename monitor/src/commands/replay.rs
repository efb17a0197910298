//! `twmon replay`: a recording fed through the same decoder and table as
//! the live daemon, printed or served.

use std::{
    fs::File,
    io::BufReader,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result};

use super::runtime::runtime;
use crate::{
    expose::{Exposed, View, api, text},
    model::hooks::{Hook, HookStatus, Hooks, Method},
    sources::recording::{Frame, Meta, Reader},
    table::{Config, Filter, Order, State},
    web::{config::WebConfig, routes},
};

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub file: PathBuf,
    /// Serve the replayed table here instead of printing it.
    pub listen: Option<SocketAddr>,
    pub web_config: Option<PathBuf>,
    pub json: bool,
    /// Entries and collisions printed.
    pub limit: usize,
    pub view: View,
}

/// A replayed recording: the state at its end, and how far it got.
pub struct Replayed {
    pub state: State,
    pub meta: Meta,
    pub frames: u64,
    /// What stopped it before the end of the file, if anything did.
    pub problem: Option<String>,
}

/// Replays the file at `path` into a fresh state. A damaged or cut file
/// replays up to the damage; the problem is returned beside the state so
/// nothing before it is lost.
pub fn load(path: &Path) -> Result<Replayed> {
    let file = File::open(path)
        .with_context(|| format!("cannot open the recording {}", path.display()))?;
    let mut reader = Reader::new(BufReader::new(file))
        .with_context(|| format!("cannot replay {}", path.display()))?;
    let meta = reader.meta.clone();
    let mut state = State::new(Config {
        derive_births: meta.derive_births,
        derive_deaths: meta.derive_deaths,
        hz: meta.hz,
        ..Config::default()
    });
    let mut frames = 0u64;
    let problem = loop {
        match reader.next_frame() {
            Ok(Some(Frame::Event(raw))) => state.ingest(&raw),
            Ok(Some(Frame::Snapshot(round))) => state.reconcile(&round),
            Ok(Some(Frame::Counters(counts))) => state.recorded_counts = Some(counts),
            Ok(Some(Frame::Closers(found))) => state.closers_found(&found),
            Ok(None) => break None,
            Err(err) => break Some(err.to_string()),
        }
        frames += 1;
    };
    Ok(Replayed {
        state,
        meta,
        frames,
        problem,
    })
}

/// The hooks as the recording daemon had them attached.
fn hooks(meta: &Meta) -> Hooks {
    let method = |hook: Hook| {
        meta.hooks
            .iter()
            .find(|(name, _)| name == hook.name())
            .and_then(|(_, m)| m.as_deref())
            .and_then(Method::from_label)
    };
    Hooks(
        Hook::ALL
            .into_iter()
            .map(|hook| HookStatus {
                method: method(hook),
                ..HookStatus::unattached(hook)
            })
            .collect(),
    )
}

pub fn run(opts: &ReplayOptions) -> Result<()> {
    // Like `run`: a config that cannot be honoured stops us first.
    let web = match &opts.web_config {
        Some(path) if opts.listen.is_some() => WebConfig::load(path)?,
        Some(_) => anyhow::bail!("--web.config.file only applies with --listen"),
        None => WebConfig::default(),
    };
    let replayed = load(&opts.file)?;
    if let Some(problem) = &replayed.problem {
        eprintln!(
            "twmon: warning: {problem}; replayed the {} frames before it",
            replayed.frames
        );
    }
    let meta = &replayed.meta;
    log::info!(
        "replayed {} frames recorded by twmon {} on kernel {}",
        replayed.frames,
        meta.twmon,
        meta.kernel
    );
    let exposed = Exposed::replayed(replayed.state, hooks(meta), meta.kernel.clone(), opts.view);
    match opts.listen {
        Some(listen) => serve(Arc::new(exposed), listen, web),
        None => print(&exposed, opts),
    }
}

fn print(exposed: &Exposed, opts: &ReplayOptions) -> Result<()> {
    let now = exposed.now_ns();
    let state = exposed.state();
    let timewait = api::timewait(&state, now, &Filter::default(), Order::Age, opts.limit);
    let collisions = api::collisions(&state, now, opts.limit);
    let summary = api::summary(&state, now, opts.view.top_k);
    if opts.json {
        let doc = serde_json::json!({
            "summary": summary,
            "timewait": timewait,
            "collisions": collisions,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text::top(&summary, None, &collisions));
        println!();
        print!("{}", text::table(&timewait));
    }
    Ok(())
}

fn serve(exposed: Arc<Exposed>, listen: SocketAddr, web: WebConfig) -> Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}: pick another with --listen"))?;
        // Said on stderr, not logged: replay logs only warnings by default,
        // and with port 0 the port is known only now.
        let bound = listener.local_addr().unwrap_or(listen);
        eprintln!(
            "twmon: serving metrics on {}://{bound}/metrics and /api/v1 from the recording",
            web.scheme()
        );
        routes::serve(listener, exposed, web, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}
