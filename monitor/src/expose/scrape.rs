//! What a scrape or an API request reads: the daemon's state, shared
//! between the event loop and requests, whether it is fed live by the
//! kernel or by a recording.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use crate::{
    model::{
        event::DeathCause,
        hooks::{Hooks, KernelCounts, Method},
        snapshot::{Knobs, SnapshotPacing},
        tcp::{Family, TcpState},
    },
    sources::{cgroups::CgroupName, diag::monotonic_ns},
    table::{Failure, HeldBy, Pressure, State, Summary, stats::StatsSnapshot},
};

/// How the table is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// Series kept per breakdown: the top K by count.
    pub top_k: usize,
    /// Keep network namespaces apart with a `netns` label.
    pub netns_label: bool,
}

impl Default for View {
    fn default() -> View {
        View {
            top_k: 20,
            netns_label: false,
        }
    }
}

/// Reads what the kernel counted, at each scrape.
pub type KernelReader = Box<dyn Fn() -> KernelCounts + Send + Sync>;

/// Names (netns, cgroup id) pairs, at each scrape (see
/// `sources::cgroups::Namer`).
pub type CgroupNamer = Box<dyn Fn(u32, u64) -> Option<CgroupName> + Send + Sync>;

/// The daemon's state as requests see it.
pub struct Exposed {
    state: Mutex<State>,
    /// None on replay: nothing is loaded.
    kernel: Option<KernelReader>,
    hooks: Hooks,
    kernel_release: String,
    view: View,
    /// A replayed table is looked at as of its last event, a live one now.
    replay: bool,
    /// None on replay (the host that recorded is elsewhere), and in tests.
    namer: Option<CgroupNamer>,
}

impl Exposed {
    /// A live daemon's state.
    pub fn live(
        state: State,
        hooks: Hooks,
        kernel_release: String,
        view: View,
        kernel: KernelReader,
    ) -> Exposed {
        Exposed {
            state: Mutex::new(state),
            kernel: Some(kernel),
            hooks,
            kernel_release,
            view,
            replay: false,
            namer: None,
        }
    }

    /// Names cgroups with `namer` in the exposition.
    pub fn with_cgroup_names(mut self, namer: CgroupNamer) -> Exposed {
        self.namer = Some(namer);
        self
    }

    /// A recording's state, as of its end.
    pub fn replayed(state: State, hooks: Hooks, kernel_release: String, view: View) -> Exposed {
        Exposed {
            state: Mutex::new(state),
            kernel: None,
            hooks,
            kernel_release,
            view,
            replay: true,
            namer: None,
        }
    }

    /// The table and counters, locked: hold it briefly, it stops events.
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update;
        // the numbers are still the best there are.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the kernel counted, now; None on replay.
    pub fn kernel_counts(&self) -> Option<KernelCounts> {
        self.kernel.as_ref().map(|read| read())
    }

    /// Now on the clock of event timestamps (CLOCK_MONOTONIC).
    pub fn now_ns(&self) -> u64 {
        if self.replay {
            self.state().last_ns
        } else {
            monotonic_ns()
        }
    }

    /// The namer of a live daemon; None on replay.
    pub(super) fn namer(&self) -> Option<&CgroupNamer> {
        self.namer.as_ref()
    }

    /// A consistent snapshot for one scrape.
    pub fn scrape(&self) -> Scrape {
        let started = Instant::now();
        let state = self.state();
        let stats = state.stats.snapshot();
        let table = state.table.summary(self.view.top_k, self.view.netns_label);
        let recorded = state.recorded_counts.clone();
        let pacing = state.pacing;
        drop(state);
        let kernel = match &self.kernel {
            Some(read) => read(),
            None => recorded.unwrap_or_default(),
        };
        let cgroups = self.cgroup_names(&table);
        Scrape {
            stats,
            table,
            per_netns: self.view.netns_label,
            kernel,
            hooks: self.hooks.clone(),
            kernel_release: self.kernel_release.clone(),
            pacing,
            cgroups,
            duration: started.elapsed(),
        }
    }

    /// Names for the cgroups `table` breaks down by, outside the lock
    /// (naming may walk the cgroup tree).
    fn cgroup_names(&self, table: &Summary) -> BTreeMap<(u32, u64), CgroupName> {
        let Some(name) = &self.namer else {
            return BTreeMap::new();
        };
        let keys = table.by_cgroup.iter().map(|(k, _)| *k).chain(
            table
                .failures_by_cgroup
                .iter()
                .map(|((n, c, _), _)| (*n, *c)),
        );
        keys.filter_map(|(netns, id)| Some(((netns, id), name(netns, id)?)))
            .collect()
    }
}

/// Everything one scrape shows.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub stats: StatsSnapshot,
    /// The four-tuple table's aggregates.
    pub table: Summary,
    /// Keep network namespaces apart with a `netns` label.
    pub per_netns: bool,
    /// What the kernel counted: records lost, runs skipped.
    pub kernel: KernelCounts,
    /// How each hook is attached.
    pub hooks: Hooks,
    /// Release of the running kernel, for `twmon_build_info`.
    pub kernel_release: String,
    /// The sock_diag snapshots so far.
    pub pacing: SnapshotPacing,
    /// Names of the cgroups the table breaks down by, where known.
    pub cgroups: BTreeMap<(u32, u64), CgroupName>,
    /// How long taking this snapshot took.
    pub duration: Duration,
}

impl Scrape {
    /// A scrape in which every hook is attached and each breakdown has a
    /// sample, so its exposition shows every metric twmon can export: what
    /// the docs and dashboards are checked against.
    pub fn showing_everything() -> Scrape {
        use crate::model::hooks::Hook;
        let mut scrape = Scrape {
            hooks: Hooks::all(Method::Fentry),
            ..Scrape::default()
        };
        scrape
            .kernel
            .transitions
            .insert((TcpState::FinWait2, TcpState::Close), 1);
        scrape
            .kernel
            .errors
            .insert((Hook::SetState, "ringbuf_full"), 1);
        scrape.kernel.filter = Some(crate::model::hooks::FilterFill {
            words: 1,
            ..Default::default()
        });
        let addr = std::net::IpAddr::from([192, 0, 2, 1]);
        let t = &mut scrape.table;
        t.population
            .insert((0, Family::Ipv4, TcpState::TimeWait), 1);
        t.by_remote = vec![((0, addr, 443), 1)];
        t.by_local_port = vec![((0, 40000), 1)];
        t.by_process = vec![((0, "curl".into()), 1)];
        t.durations
            .entry(DeathCause::Expired)
            .or_default()
            .observe(60.0);
        t.pressure = vec![Pressure {
            netns: 0,
            local: addr,
            remote: addr,
            remote_port: 443,
            in_use: 1,
            in_timewait: 1,
            range: 28232,
        }];
        t.exhaustion = vec![(t.pressure[0], 600.0)];
        t.knobs.insert(
            0,
            Knobs {
                max_tw_buckets: Some(262144),
                tw_reuse: Some(2),
                port_range: Some((32768, 60999)),
                fin_timeout_s: Some(60),
                timestamps: Some(1),
            },
        );
        t.by_cgroup = vec![((0, 7), 1)];
        t.failures_by_cgroup = vec![
            ((0, 7, Failure::Eaddrnotavail), 1),
            ((0, 7, Failure::Eaddrinuse(HeldBy::Timewait)), 1),
        ];
        scrape
            .cgroups
            .insert((0, 7), CgroupName::of("/system.slice/nginx.service".into()));
        scrape
    }
}
