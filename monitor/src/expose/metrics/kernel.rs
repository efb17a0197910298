//! The probes and what they delivered.

use prometheus::{Counter, Gauge, GaugeVec, IntGaugeVec, Opts, Registry};

use super::{counter, counter_vec, register};
use crate::{
    expose::scrape::Scrape,
    model::hooks::{FilterFill, Hook, Method},
};

pub fn transitions(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let vec = counter_vec(
        "twmon_tcp_state_transitions_total",
        "TCP state transitions seen by the sock:inet_sock_set_state tracepoint, counted in the \
         kernel.",
        &["from", "to"],
    )?;
    for ((from, to), n) in &scrape.kernel.transitions {
        vec.with_label_values(&[from.name(), to.name()]).inc_by(*n);
    }
    register(registry, vec)
}

pub fn events(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    counter(
        registry,
        "twmon_events_total",
        "Events received from the kernel programs through the ring buffer.",
        scrape.stats.events,
    )
}

pub fn lost(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    counter(
        registry,
        "twmon_events_lost_total",
        "Events lost: ring buffer full, a kernel read that failed, program run skipped by the \
         kernel (nesting), or malformed (twmon_kernel_errors_total has them by hook and reason).",
        scrape.kernel.lost() + scrape.stats.malformed,
    )
}

/// Only the hooks and reasons that lost something: a series per hook and
/// reason, zeros included, would be dozens of series saying nothing;
/// `twmon_events_lost_total` is always there.
pub fn errors(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let vec = counter_vec(
        "twmon_kernel_errors_total",
        "Records the kernel programs lost, by hook and reason (ringbuf_full, read_failed, \
         netns_unreadable, unpaired, too_deep, map_full, user_read_failed, closer_displaced, run_skipped); \
         only hooks and reasons that lost something are listed.",
        &["hook", "reason"],
    )?;
    for ((hook, reason), n) in &scrape.kernel.errors {
        vec.with_label_values(&[hook.name(), reason]).inc_by(*n);
    }
    for (hook, n) in &scrape.kernel.skipped_runs {
        vec.with_label_values(&[hook.name(), "run_skipped"])
            .inc_by(*n);
    }
    register(registry, vec)
}

/// The kernel's filter of recent closes, which decides which new
/// connections are sent to userspace (absent on replay).
pub fn collision_filter(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let Some(filter) = scrape.kernel.filter else {
        return Ok(());
    };
    let fill = GaugeVec::new(
        Opts::new(
            "twmon_collision_filter_fill_ratio",
            "Share of the bits set in the kernel's Bloom filter of four-tuples that closed \
             lately, by generation (current: where closes go now; previous: the one before, \
             still checked).",
        ),
        &["generation"],
    )?;
    for (name, generation) in [
        ("current", FilterFill::CURRENT),
        ("previous", FilterFill::PREVIOUS),
    ] {
        fill.with_label_values(&[name])
            .set(filter.fill_ratio(generation));
    }
    register(registry, fill)?;
    let false_match = Gauge::new(
        "twmon_collision_filter_false_match_ratio",
        "Chance that a new connection whose four-tuple did not close lately is sent to \
         userspace anyway, as the filter stands: near 0 normally; sustained above 0.1, the \
         filter is too small for this host's close rate.",
    )?;
    false_match.set(filter.false_match_ratio());
    register(registry, false_match)
}

pub fn build_info(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let vec = IntGaugeVec::new(
        Opts::new(
            "twmon_build_info",
            "Always 1; labels say which twmon is running.",
        ),
        &["version", "kernel"],
    )?;
    vec.with_label_values(&[env!("CARGO_PKG_VERSION"), scrape.kernel_release.as_str()])
        .set(1);
    register(registry, vec)
}

pub fn snapshots(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let p = scrape.pacing;
    counter(
        registry,
        "twmon_snapshots_total",
        "sock_diag snapshot rounds taken (each dumps every watched namespace's TCP sockets).",
        p.rounds,
    )?;
    let cpu = Counter::new(
        "twmon_snapshot_cpu_seconds_total",
        "CPU time the snapshot dumps took.",
    )?;
    cpu.inc_by(p.cpu.as_secs_f64());
    register(registry, cpu)?;
    let interval = Gauge::new(
        "twmon_snapshot_interval_seconds",
        "The wait before the next snapshot: --snapshot-interval, or longer when the last \
         dump cost more than --snapshot-cpu-percent of a core over it.",
    )?;
    interval.set(p.interval.as_secs_f64());
    register(registry, interval)
}

pub fn scrape_duration(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let gauge = Gauge::new(
        "twmon_scrape_duration_seconds",
        "Time taken to snapshot twmon's state for this scrape.",
    )?;
    gauge.set(scrape.duration.as_secs_f64());
    register(registry, gauge)
}

pub fn probe_attached(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    let vec = IntGaugeVec::new(
        Opts::new(
            "twmon_probe_attached",
            "1 if the hook is attached with this method; method=\"none\" (0) if it could not be.",
        ),
        &["hook", "method"],
    )?;
    for status in scrape.hooks.iter() {
        let fallback = if scrape.hooks.derived(status.hook) {
            "derived"
        } else {
            "none"
        };
        let method = status.method.map_or(fallback, Method::label);
        vec.with_label_values(&[status.hook.name(), method])
            .set(i64::from(status.method.is_some()));
    }
    register(registry, vec)
}

/// Whether a counter of `hook` means anything: its hook runs, or the table
/// stands in for it. A zero from a hook that is not attached would read as
/// an exact "none happened".
pub fn known(scrape: &Scrape, hook: Hook) -> bool {
    scrape.hooks.attached(hook) || scrape.hooks.derived(hook)
}
