//! `twmon run` (and `record`): wires kernel -> ring buffer -> decoder ->
//! table, the sock_diag snapshot loop, and the HTTP server, and tears it
//! all down on SIGINT/SIGTERM.

use std::{
    fs::File,
    io::BufWriter,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    cli::{RunArgs, ViewArgs},
    diag,
    http::{self, Source},
    metrics::Scrape,
    netns::{self, Netns},
    probes::{self, HookStatus, LoadOptions, Probes},
    record::{Meta, Writer},
    state::State,
    table::{self, SnapshotRound},
    vanished::{self, Vanished},
    web_config::WebConfig,
};

/// State shared between the event loop, the snapshot loop and requests.
pub struct Shared {
    pub state: Mutex<State>,
    /// The loaded programs (they detach when the last reference drops);
    /// none on replay.
    pub probes: Option<Mutex<Probes>>,
    pub hooks: Vec<HookStatus>,
    pub kernel: String,
    pub view: ViewArgs,
    /// Replayed tables are looked at as of their last event, live ones now.
    pub replay: bool,
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update;
        // the numbers are still the best there are.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Source for Shared {
    fn scrape(&self) -> Scrape {
        let started = std::time::Instant::now();
        let state = self.lock_state();
        let stats = state.stats.snapshot();
        let table = state
            .table
            .summary(self.view.top_k as usize, self.view.netns_label);
        drop(state);
        let lost_in_kernel = self.probes.as_ref().map_or(0, |p| {
            p.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .lost_in_kernel()
        });
        Scrape {
            stats,
            table,
            per_netns: self.view.netns_label,
            lost_in_kernel,
            hooks: self.hooks.clone(),
            kernel: self.kernel.clone(),
            duration: started.elapsed(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.lock_state()
    }

    fn now_ns(&self) -> u64 {
        if self.replay {
            self.lock_state().last_ns
        } else {
            diag::monotonic_ns()
        }
    }
}

/// Which namespaces sock_diag dumps cover.
#[derive(Clone)]
enum Scope {
    One(Netns),
    All,
}

pub fn run(args: RunArgs, record: Option<&Path>) -> Result<()> {
    // First of all: a config that cannot be honoured must stop us before
    // anything listens, never leave a plain or open port behind.
    let web = match &args.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    // Created before anything is loaded: a path that cannot be written is
    // a mistake to report at once, not after the probes are up.
    let recording = match record {
        Some(path) => Some(
            File::create(path)
                .map(BufWriter::new)
                .with_context(|| format!("cannot create the recording {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run_async(args, web, recording));
    // Leaves any in-flight sock_diag dump behind instead of waiting on it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// A recording being written.
type Recorder = Writer<BufWriter<File>>;

async fn run_async(
    args: RunArgs,
    web: WebConfig,
    recording: Option<BufWriter<File>>,
) -> Result<()> {
    let scope = match &args.netns {
        Some(arg) => Scope::One(netns::resolve(arg)?),
        None => Scope::All,
    };
    // Bind before loading anything, so a busy port fails fast and cleanly.
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: pick another address with --listen",
            args.listen
        )
    })?;

    let (probes, ring) = probes::load(&LoadOptions {
        netns_filter: match &scope {
            Scope::One(ns) => Some(ns.inode),
            Scope::All => None,
        },
        ring_bytes: args.ring_buffer_bytes,
        btf: args.probes.btf.clone(),
        mode: args.probes.probes,
    })?;
    // Everything privileged but the namespace dumps is done. Capabilities
    // are per thread and inherited by new ones, so this runs before any
    // other thread exists (the runtime has none; dumps spawn theirs).
    crate::caps::drop_after_attach(matches!(scope, Scope::All))?;
    log::info!(
        "dropped every capability but CAP_SYS_ADMIN (and CAP_SYS_PTRACE to discover namespaces)"
    );
    let own = netns::current()?;
    let attached = |hook: &str| {
        probes
            .hooks
            .iter()
            .any(|h| h.hook == hook && h.method.is_some())
    };
    let config = table::Config {
        capacity: usize::try_from(args.table_capacity).unwrap_or(usize::MAX),
        guard_ns: u64::try_from(args.guard_window.as_nanos()).unwrap_or(u64::MAX),
        derive_births: !attached("timewait_birth"),
        derive_deaths: !attached("timewait_death"),
        hz: crate::kernel_hz(),
        ..table::Config::default()
    };
    let kernel = crate::kernel_release();
    let mut recorder = match recording {
        Some(out) => Some(
            Writer::new(
                out,
                &Meta {
                    twmon: env!("CARGO_PKG_VERSION").into(),
                    kernel: kernel.clone(),
                    hz: config.hz,
                    derive_births: config.derive_births,
                    derive_deaths: config.derive_deaths,
                    hooks: probes
                        .hooks
                        .iter()
                        .map(|h| (h.hook.to_string(), h.method.map(|m| m.label().to_string())))
                        .collect(),
                },
            )
            .context("writing the recording's header")?,
        ),
        None => None,
    };
    let mut state = State::new(config);
    // Seeded from a snapshot, so what is already in TIME_WAIT is known.
    // The kernel reports purges itself where the hook is attached; it is
    // given time to before the table concludes anything.
    let grace = if attached("timewait_purge") {
        vanished::PURGE_GRACE
    } else {
        Duration::ZERO
    };
    let mut snapshots = Snapshots {
        scope: scope.clone(),
        own_inode: own.inode,
        vanished: Vanished::new(grace),
    };
    let initial = snapshots.round().await?.unwrap_or_default();
    if let Some(rec) = recorder.as_mut() {
        rec.snapshot(&initial).context("writing the recording")?;
    }
    state.reconcile(&initial);
    log::info!(
        "seeded the table with {} timewait sockets",
        state.table.len()
    );

    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        hooks: probes.hooks.clone(),
        probes: Some(Mutex::new(probes)),
        kernel,
        view: args.view.clone(),
        replay: false,
    });
    match &scope {
        Scope::One(ns) => log::info!(
            "watching network namespace {} ({})",
            ns.inode,
            ns.path.display()
        ),
        Scope::All => log::info!("watching all network namespaces"),
    }
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

    let (stop_tx, stop_rx) = watch::channel(false);
    // Snapshot rounds go through the event task, which drains the ring
    // first: the table then has every event older than the dump.
    let (rounds_tx, rounds_rx) = mpsc::channel(1);
    let events = tokio::spawn(read_events(ring, shared.clone(), rounds_rx, recorder));
    let snapshots = tokio::spawn(snapshot_loop(snapshots, args.snapshot_interval, rounds_tx));
    let mut http_stop = stop_rx.clone();
    let mut server = tokio::spawn(http::serve(listener, shared.clone(), web, async move {
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
        Ok(Ok(())) => Err(anyhow::anyhow!("{what} stopped unexpectedly")),
        Ok(Err(err)) => Err(err.context(format!("{what} failed"))),
        Err(err) => Err(anyhow::anyhow!("{what} panicked: {err}")),
    }
}

/// How often the ring buffer is drained when the kernel did not wake us.
/// The kernel programs defer wake-ups (see `emit` in monitor-ebpf) until a
/// quarter of the ring is full, so a quiet host is drained by this timer.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Drains the ring buffer when the kernel signals it readable, and on a
/// short timer for the records whose wake-up was deferred; applies
/// snapshot rounds in between.
async fn read_events(
    ring: RingBuf<MapData>,
    shared: Arc<Shared>,
    mut rounds: mpsc::Receiver<SnapshotRound>,
    mut recorder: Option<Recorder>,
) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd and closes it only when dropped,
    // and it is moved into the AsyncFd, so the fd stays valid and the same
    // for the AsyncFd's whole lifetime.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the runtime: {e}"))?;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                // Clear readiness *before* draining: the kernel only wakes
                // the reader when it had caught up, so clearing after the
                // drain could swallow the wake-up of a record committed in
                // between.
                guard.clear_ready();
                drain(guard.get_inner_mut(), &shared, &mut recorder)?;
            }
            _ = tick.tick() => drain(fd.get_mut(), &shared, &mut recorder)?,
            Some(round) = rounds.recv() => {
                drain(fd.get_mut(), &shared, &mut recorder)?;
                if let Some(rec) = recorder.as_mut() {
                    rec.snapshot(&round).and_then(|()| rec.flush()).context("writing the recording")?;
                }
                shared.lock_state().reconcile(&round);
            }
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    shared: &Shared,
    recorder: &mut Option<Recorder>,
) -> Result<()> {
    let mut state = shared.lock_state();
    let mut any = false;
    while let Some(item) = ring.next() {
        if let Some(rec) = recorder.as_mut() {
            rec.event(&item).context("writing the recording")?;
        }
        state.ingest(&item);
        any = true;
    }
    drop(state);
    if any && let Some(rec) = recorder.as_mut() {
        rec.flush().context("writing the recording")?;
    }
    Ok(())
}

/// Takes the sock_diag snapshot rounds, and says when a watched namespace
/// is gone for good (see `vanished`).
struct Snapshots {
    scope: Scope,
    own_inode: u32,
    vanished: Vanished,
}

impl Snapshots {
    /// The next round; `None` while the watched namespace is missing but
    /// still within its grace (nothing to dump, nothing to conclude).
    async fn round(&mut self) -> Result<Option<SnapshotRound>> {
        let scope = self.scope.clone();
        let own_inode = self.own_inode;
        let (mut round, reachable) = tokio::task::spawn_blocking(move || {
            let (namespaces, strict) = match scope {
                Scope::One(ns) if reachable(&ns) => (vec![ns], true),
                Scope::One(_) => (Vec::new(), true),
                Scope::All => (netns::discover(), false),
            };
            let reachable: Vec<u32> = namespaces.iter().map(|ns| ns.inode).collect();
            diag::snapshot_round(&namespaces, own_inode, strict, false).map(|r| (r, reachable))
        })
        .await
        .context("sock_diag worker panicked")??;
        let look = self.vanished.look(&reachable, Instant::now());
        match &self.scope {
            Scope::One(ns) if reachable.is_empty() => {
                if look.existing.contains(&ns.inode) {
                    return Ok(None);
                }
                if !look.gone.is_empty() {
                    log::warn!(
                        "the watched namespace {} is gone; its timewait sockets still in the \
                         table are taken as purged",
                        ns.path.display()
                    );
                }
                round.existing = Some(Vec::new());
            }
            Scope::One(_) => {}
            Scope::All => {
                for ns in &look.gone {
                    log::info!("network namespace {ns} is gone");
                }
                round.existing = Some(look.existing);
            }
        }
        Ok(Some(round))
    }
}

/// Whether the watched namespace can still be reached: its file is there,
/// or a process or bind mount holds it. Once not, it is being torn down,
/// and its timewait sockets with it. twmon cannot hold it open to watch
/// it, since that would keep it alive.
fn reachable(ns: &Netns) -> bool {
    ns.path.exists() || netns::discover().iter().any(|n| n.inode == ns.inode)
}

async fn snapshot_loop(
    mut snapshots: Snapshots,
    every: Duration,
    rounds: mpsc::Sender<SnapshotRound>,
) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the initial dump already ran
    loop {
        tick.tick().await;
        match snapshots.round().await {
            Ok(None) => {}
            Ok(Some(round)) => {
                if rounds.send(round).await.is_err() {
                    return Ok(());
                }
            }
            // A failed dump changes nothing; it is retried on the next
            // tick rather than taking the daemon down.
            Err(err) => log::warn!("TIME_WAIT snapshot failed: {err:#}"),
        }
    }
}
