//! `twmon run` (and `record`): wires kernel -> ring buffer -> decoder ->
//! table, the sock_diag snapshot schedule, and the HTTP server, and tears
//! it all down on SIGINT/SIGTERM.

use std::{
    fs::File,
    io::BufWriter,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use super::runtime::runtime;
use crate::{
    expose::{Exposed, View},
    kernel::{
        self, LoadOptions, ProbeMode, Probes, caps,
        closing::Closing,
        host,
        recent::{self, Recent},
    },
    model::{hooks::Hook, snapshot::FoundCloser},
    sources::{
        cgroups::{Cgroups, Namer},
        closers, diag, kernel_log, netns,
        recording::{Meta, Writer},
        ring::{DRAIN_EVERY, Ring},
        snapshots::{self, Pace, Paced, Scope, Snapshots},
        vanished::PURGE_GRACE,
    },
    table::{Config, State, Table},
    web::{config::WebConfig, routes},
};

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub listen: SocketAddr,
    pub web_config: Option<PathBuf>,
    /// Watch only this namespace (a name under /run/netns or a path).
    pub netns: Option<String>,
    pub snapshot_pace: Pace,
    pub table_capacity: usize,
    pub guard_window: Duration,
    pub view: View,
    pub ring_bytes: u32,
    pub mode: ProbeMode,
    pub btf: PathBuf,
    /// Also write everything the table is fed to this file.
    pub record: Option<PathBuf>,
}

/// A recording being written.
type Recorder = Writer<BufWriter<File>>;

pub fn run(opts: RunOptions) -> Result<()> {
    // First of all: a config that cannot be honoured must stop us before
    // anything listens, never leave a plain or open port behind.
    let web = match &opts.web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    // Created before anything is loaded: a path that cannot be written is
    // a mistake to report at once, not after the probes are up.
    let recording = match &opts.record {
        Some(path) => Some(
            File::create(path)
                .map(BufWriter::new)
                .with_context(|| format!("cannot create the recording {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = runtime()?;
    let result = runtime.block_on(run_async(opts, web, recording));
    // Leaves any in-flight sock_diag dump behind instead of waiting on it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn run_async(
    opts: RunOptions,
    web: WebConfig,
    recording: Option<BufWriter<File>>,
) -> Result<()> {
    let scope = match &opts.netns {
        Some(arg) => Scope::One(netns::resolve(arg)?),
        None => Scope::All,
    };
    // Bind before loading anything, so a busy port fails fast and cleanly.
    let listener = TcpListener::bind(opts.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: pick another address with --listen",
            opts.listen
        )
    })?;
    let (probes, ring) = kernel::load(&LoadOptions {
        netns_filter: match &scope {
            Scope::One(ns) => Some(ns.inode),
            Scope::All => None,
        },
        ring_bytes: opts.ring_bytes,
        btf: opts.btf.clone(),
        mode: opts.mode,
    })?;
    // Everything privileged but the namespace dumps is done. Capabilities
    // are per thread and inherited by new ones, so this runs before any
    // other thread exists (the runtime has none; dumps spawn theirs).
    caps::drop_after_attach()?;
    log::info!(
        "dropped every capability but CAP_SYS_ADMIN and CAP_SYS_PTRACE (to find and enter \
         network namespaces)"
    );
    log_scope(&scope);
    let mut probes = probes;
    let recent = Arc::clone(&probes.recent);
    let kernel_log = probes.kernel_log.take();
    let closing = probes
        .closing
        .take()
        .context("the kernel's table of closes was taken twice")?;
    let (exposed, snapshots, recorder) = seed(&opts, scope, probes, recording).await?;
    log::info!(
        "serving metrics on {}://{}/metrics{}",
        web.scheme(),
        listener.local_addr()?,
        if web.auth.is_some() {
            " (basic auth required)"
        } else {
            ""
        }
    );
    let feeds = Feeds {
        ring: Ring::new(ring)?,
        closing,
    };
    tokio::spawn(age_recent(recent, recent::period(opts.guard_window)));
    if let Some(kernel_log) = kernel_log {
        tokio::spawn(kernel_log::forward(kernel_log));
    }
    serve_until_signal(
        opts.snapshot_pace,
        exposed,
        feeds,
        snapshots,
        recorder,
        listener,
        web,
    )
    .await
}

/// Ages the kernel's filter of recently closed four-tuples, one generation
/// per period, for as long as the daemon runs.
async fn age_recent(recent: Arc<Recent>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = recent.rotate() {
            log::warn!("{err:#}; new connections may be reported more often than needed");
        }
    }
}

/// The host's network namespace (init's), which names no container: its
/// sockets are not attributed by namespace.
fn host_netns() -> u32 {
    netns::inode_of(std::path::Path::new("/proc/1/ns/net"))
        .or_else(|_| netns::current().map(|ns| ns.inode))
        .unwrap_or(0)
}

fn log_scope(scope: &Scope) {
    match scope {
        Scope::One(ns) => log::info!(
            "watching network namespace {} ({})",
            ns.inode,
            ns.path.display()
        ),
        Scope::All => log::info!("watching all network namespaces"),
    }
}

/// The state as the first snapshot leaves it, so what is already in
/// TIME_WAIT is known, with the recording begun.
async fn seed(
    opts: &RunOptions,
    scope: Scope,
    probes: Probes,
    recording: Option<BufWriter<File>>,
) -> Result<(Arc<Exposed>, Snapshots, Option<Recorder>)> {
    let hooks = probes.hooks.clone();
    let config = Config {
        capacity: opts.table_capacity,
        guard_ns: u64::try_from(opts.guard_window.as_nanos()).unwrap_or(u64::MAX),
        derive_births: !hooks.attached(Hook::TimewaitBirth),
        derive_deaths: !hooks.attached(Hook::TimewaitDeath),
        hz: host::kernel_hz(),
        ..Config::default()
    };
    let kernel_release = host::kernel_release();
    let mut recorder = match recording {
        Some(out) => Some(start_recording(out, &config, &kernel_release, &probes)?),
        None => None,
    };
    // The kernel reports purges itself where the hook is attached; it is
    // given time to before the table concludes anything.
    let grace = if hooks.attached(Hook::TimewaitPurge) {
        PURGE_GRACE
    } else {
        Duration::ZERO
    };
    let mut snapshots = Snapshots::new(scope, netns::current()?.inode, grace);
    // Nothing is held in the closing table yet, so what the first round
    // missed matters to no one.
    let initial = snapshots
        .round()
        .await?
        .map(|taken| taken.round)
        .unwrap_or_default();
    if let Some(rec) = recorder.as_mut() {
        rec.snapshot(&initial).context("writing the recording")?;
    }
    let mut state = State::new(config);
    state.reconcile(&initial);
    let cost = snapshots.last_cost();
    state.pacing.record(cost, opts.snapshot_pace.next(cost));
    log::info!(
        "seeded the table with {} timewait sockets",
        state.table.len()
    );
    let probes = Mutex::new(probes);
    let counts = move || {
        probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counts()
    };
    let namer = Mutex::new(Namer::new(Cgroups::new(), host_netns()));
    let names = move |netns: u32, id: u64| {
        namer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .name(netns, id)
    };
    let exposed = Exposed::live(state, hooks, kernel_release, opts.view, Box::new(counts))
        .with_cgroup_names(Box::new(names));
    Ok((Arc::new(exposed), snapshots, recorder))
}

fn start_recording(
    out: BufWriter<File>,
    config: &Config,
    kernel_release: &str,
    probes: &Probes,
) -> Result<Recorder> {
    let meta = Meta {
        twmon: env!("CARGO_PKG_VERSION").into(),
        wire: monitor_common::record::WIRE_VERSION,
        kernel: kernel_release.to_string(),
        hz: config.hz,
        derive_births: config.derive_births,
        derive_deaths: config.derive_deaths,
        hooks: probes
            .hooks
            .iter()
            .map(|h| {
                (
                    h.hook.name().to_string(),
                    h.method.map(|m| m.label().to_string()),
                )
            })
            .collect(),
    };
    Writer::new(out, &meta).context("writing the recording's header")
}

/// Runs the event loop, the snapshot schedule and the server until a
/// signal (exit 0) or until one of them fails.
async fn serve_until_signal(
    snapshot_pace: Pace,
    exposed: Arc<Exposed>,
    feeds: Feeds,
    snapshots: Snapshots,
    recorder: Option<Recorder>,
    listener: TcpListener,
    web: WebConfig,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Snapshot rounds go through the event task, which drains the ring
    // first: the table then has every event older than the dump.
    let (rounds_tx, rounds_rx) = mpsc::channel(1);
    let apply_cost = snapshots.apply_cost();
    let events = tokio::spawn(read_events(
        feeds,
        exposed.clone(),
        rounds_rx,
        apply_cost,
        recorder,
    ));
    let rounds = snapshots::schedule(snapshots, snapshot_pace, rounds_tx);
    let snapshots = tokio::spawn(rounds);
    let mut http_stop = stop_rx.clone();
    let mut server = tokio::spawn(routes::serve(listener, exposed, web, async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));
    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let outcome = tokio::select! {
        _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); Ok(()) }
        _ = sigint.recv() => { log::info!("SIGINT: shutting down"); Ok(()) }
        r = events => flatten(r, "event reader"),
        r = snapshots => flatten(r, "snapshot loop"),
        r = &mut server => flatten(r, "HTTP server"),
    };
    let _ = stop_tx.send(true);
    // Scrapes in flight get the server's short grace; idle connections
    // close at once, so a normal shutdown does not wait.
    if !server.is_finished() {
        let _ = server.await;
    }
    // Programs detach when the last owner of the maps and links drops,
    // which happens as this function and its tasks unwind.
    outcome
}

fn flatten(joined: Result<Result<()>, tokio::task::JoinError>, what: &str) -> Result<()> {
    match joined {
        Ok(Ok(())) => Err(anyhow!("{what} stopped unexpectedly")),
        Ok(Err(err)) => Err(err.context(format!("{what} failed"))),
        Err(err) => Err(anyhow!("{what} panicked: {err}")),
    }
}

/// Drains the ring buffer when the kernel signals it readable, and on a
/// short timer for the records whose wake-up was deferred; applies
/// snapshot rounds in between.
async fn read_events(
    Feeds { mut ring, closing }: Feeds,
    exposed: Arc<Exposed>,
    mut rounds: mpsc::Receiver<Paced>,
    apply_cost: Arc<AtomicU64>,
    mut recorder: Option<Recorder>,
) -> Result<()> {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = ring.readable() => {
                ready?;
                drain(&mut ring, &exposed, &mut recorder)?;
            }
            _ = tick.tick() => {
                drain(&mut ring, &exposed, &mut recorder)?;
                exposed.state().advance(diag::monotonic_ns());
            }
            Some(Paced { round, cpu, next, missed }) = rounds.recv() => {
                drain(&mut ring, &exposed, &mut recorder)?;
                if let Some(rec) = recorder.as_mut() {
                    let counts = exposed.kernel_counts().unwrap_or_default();
                    rec.snapshot(&round)
                        .and_then(|()| rec.counters(&counts))
                        .and_then(|()| rec.flush())
                        .context("writing the recording")?;
                }
                let start = diag::thread_cpu();
                let mut state = exposed.state();
                state.reconcile(&round);
                let seen = closers::Seen { round: &round, missed };
                let found = recover_closers(&closing, &state.table, &seen, diag::monotonic_ns());
                state.closers_found(&found);
                state.pacing.record(cpu, next);
                drop(state);
                if let Some(rec) = recorder.as_mut().filter(|_| !found.is_empty()) {
                    rec.closers(&found)
                        .and_then(|()| rec.flush())
                        .context("writing the recording")?;
                }
                let took = diag::thread_cpu().saturating_sub(start);
                apply_cost.store(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        }
    }
}

/// What the event task reads from the kernel: the ring buffer, and the
/// closes in progress.
struct Feeds {
    ring: Ring,
    closing: Closing,
}

/// Names who closed the sockets the latest round adopted without a
/// closer, from the closes the kernel still holds (see `sources::closers`).
fn recover_closers(
    closing: &Closing,
    table: &Table,
    seen: &closers::Seen,
    now_ns: u64,
) -> Vec<FoundCloser> {
    let orphans = table.orphans();
    let open = closing.open();
    if open.is_empty() {
        return Vec::new();
    }
    let tuples: Vec<_> = orphans.iter().map(|(k, born)| (k.tuple, *born)).collect();
    let settled = closers::settle(&open, &tuples, seen, now_ns);
    let mut found = Vec::with_capacity(settled.found.len());
    for (n, held, closer) in settled.found {
        if let Some((key, _)) = orphans.get(n)
            && closing.free(held)
        {
            found.push(FoundCloser {
                netns: key.netns,
                family: key.family,
                tuple: key.tuple,
                closer,
            });
        }
    }
    for held in settled.stale {
        closing.free(held);
    }
    found
}

fn drain(ring: &mut Ring, exposed: &Exposed, recorder: &mut Option<Recorder>) -> Result<()> {
    let mut state = exposed.state();
    let n = ring.drain(|record| {
        if let Some(rec) = recorder.as_mut() {
            rec.event(record).context("writing the recording")?;
        }
        state.ingest(record);
        Ok(())
    })?;
    drop(state);
    if n > 0
        && let Some(rec) = recorder.as_mut()
    {
        rec.flush().context("writing the recording")?;
    }
    Ok(())
}
