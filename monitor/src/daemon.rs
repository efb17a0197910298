//! `twmon run`: wires kernel -> ring buffer -> decoder -> stats, the
//! sock_diag snapshot loop, and the HTTP server, and tears it all down on
//! SIGINT/SIGTERM.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    cli::RunArgs,
    diag,
    event::decode,
    http::{self, ScrapeSource},
    metrics::Scrape,
    netns::{self, Netns},
    probes::{self, LoadOptions, Probes},
    stats::{Population, Stats},
    web_config::WebConfig,
};

/// State shared between the event loop, the snapshot loop and scrapes.
struct Shared {
    stats: Mutex<Stats>,
    population: Mutex<Population>,
    /// The loaded programs; they detach when the last reference drops.
    probes: Mutex<Probes>,
    kernel: String,
}

impl ScrapeSource for Shared {
    fn scrape(&self) -> Scrape {
        let started = std::time::Instant::now();
        // A poisoned lock only means another task panicked mid-update of
        // plain counters; the numbers are still the best we have.
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot();
        let population = *self
            .population
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        let lost_in_kernel = probes.lost_in_kernel();
        let hooks = probes.hooks.clone();
        drop(probes);
        Scrape {
            stats,
            population,
            lost_in_kernel,
            hooks,
            kernel: self.kernel.clone(),
            duration: started.elapsed(),
        }
    }
}

/// Which namespaces sock_diag dumps cover.
#[derive(Clone)]
enum Scope {
    One(Netns),
    All,
}

pub fn run(args: RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run_async(args));
    // Leaves any in-flight sock_diag dump behind instead of waiting on it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn run_async(args: RunArgs) -> Result<()> {
    // First of all: a config that cannot be honoured must stop us before
    // anything listens, never leave a plain or open port behind.
    let web = match &args.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
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
    let initial = snapshot(scope.clone(), own.inode).await?;

    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::default()),
        population: Mutex::new(initial),
        probes: Mutex::new(probes),
        kernel: crate::kernel_release(),
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
    let events = tokio::spawn(read_events(ring, shared.clone()));
    let snapshots = tokio::spawn(snapshot_loop(
        scope,
        own.inode,
        args.snapshot_interval,
        shared.clone(),
    ));
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
/// short timer for the records whose wake-up was deferred.
async fn read_events(ring: RingBuf<MapData>, shared: Arc<Shared>) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd and closes it only when dropped,
    // and it is moved into the AsyncFd, so the fd stays valid and the same
    // for the AsyncFd's whole lifetime.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the runtime: {e}"))?;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                // Clear readiness *before* draining: the kernel only wakes
                // the reader when it had caught up, so clearing after the
                // drain could swallow the wake-up of a record committed in
                // between.
                guard.clear_ready();
                drain(guard.get_inner_mut(), &shared, &mut warned);
            }
            _ = tick.tick() => drain(fd.get_mut(), &shared, &mut warned),
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, shared: &Shared, warned: &mut bool) {
    let mut stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(event) => stats.record(&event),
            Err(err) => {
                stats.record_malformed();
                if !*warned {
                    log::warn!(
                        "malformed event from the kernel (further ones are only counted): {err}"
                    );
                    *warned = true;
                }
            }
        }
    }
}

async fn snapshot(scope: Scope, own_inode: u32) -> Result<Population> {
    tokio::task::spawn_blocking(move || {
        let (namespaces, strict) = match scope {
            Scope::One(ns) => (vec![ns], true),
            Scope::All => (netns::discover(), false),
        };
        diag::timewait_population(&namespaces, own_inode, strict)
    })
    .await
    .context("sock_diag worker panicked")?
}

async fn snapshot_loop(
    scope: Scope,
    own_inode: u32,
    every: Duration,
    shared: Arc<Shared>,
) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the initial dump already ran
    loop {
        tick.tick().await;
        match snapshot(scope.clone(), own_inode).await {
            Ok(p) => {
                *shared
                    .population
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = p
            }
            // A failed dump keeps the previous population; it is retried on
            // the next tick rather than taking the daemon down.
            Err(err) => log::warn!("TIME_WAIT snapshot failed: {err:#}"),
        }
    }
}
