//! `twmon replay`: a recording fed through the same decoder and table as
//! the live daemon, printed or served.

use std::{
    fs::File,
    io::BufReader,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};

use crate::{
    api,
    cli::ReplayArgs,
    client,
    daemon::Shared,
    http,
    probes::{self, HookStatus, Method},
    record::{Frame, Meta, Reader},
    state::State,
    table::{Config, Filter, Order},
    web_config::WebConfig,
};

/// Replays the file at `path` into a fresh state. A damaged or cut file
/// replays up to the damage; the error is returned beside the state so
/// nothing before it is lost.
pub fn load(path: &std::path::Path) -> Result<(State, Meta, u64, Option<String>)> {
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
            Ok(None) => break None,
            Err(err) => break Some(err.to_string()),
        }
        frames += 1;
    };
    Ok((state, meta, frames, problem))
}

/// The hooks as the recording daemon had them attached.
fn hooks(meta: &Meta) -> Vec<HookStatus> {
    probes::all_hook_names()
        .into_iter()
        .map(|hook| HookStatus {
            hook,
            method: meta
                .hooks
                .iter()
                .find(|(name, _)| name == hook)
                .and_then(|(_, m)| m.as_deref())
                .and_then(Method::from_label),
            refused: Vec::new(),
        })
        .collect()
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    // Like `run`: a config that cannot be honoured stops us first.
    let web = match &args.web_config_file {
        Some(path) if args.listen.is_some() => WebConfig::load(path)?,
        Some(_) => anyhow::bail!("--web.config.file only applies with --listen"),
        None => WebConfig::default(),
    };
    let (state, meta, frames, problem) = load(&args.file)?;
    if let Some(problem) = &problem {
        eprintln!("twmon: warning: {problem}; replayed the {frames} frames before it");
    }
    log::info!(
        "replayed {frames} frames recorded by twmon {} on kernel {}",
        meta.twmon,
        meta.kernel
    );
    let shared = Arc::new(Shared {
        hooks: hooks(&meta),
        state: Mutex::new(state),
        probes: None,
        kernel: meta.kernel.clone(),
        view: args.view.clone(),
        replay: true,
    });
    if let Some(listen) = args.listen {
        return serve(shared, listen, web);
    }
    let state = shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = state.last_ns;
    let timewait = api::timewait(&state, now, &Filter::default(), Order::Age, args.limit);
    let collisions = api::collisions(&state, now, args.limit);
    let summary = api::summary(&state, now, args.view.top_k as usize);
    if args.json {
        let doc = serde_json::json!({
            "summary": summary,
            "timewait": timewait,
            "collisions": collisions,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", crate::top::render(&summary, None, &collisions));
        println!();
        print!("{}", client::render(&timewait));
    }
    Ok(())
}

fn serve(shared: Arc<Shared>, listen: std::net::SocketAddr, web: WebConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
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
        http::serve(listener, shared, web, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}
