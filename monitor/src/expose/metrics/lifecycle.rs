//! How timewait sockets are born, what they absorb, and how they end.

use prometheus::{
    Registry,
    proto::{self, MetricFamily, MetricType},
};

use super::{counter, counter_vec, kernel::known, register};
use crate::{
    expose::scrape::Scrape,
    model::{
        event::{DeathCause, SegmentKind},
        hooks::Hook,
        tcp::{Family, TcpState},
    },
    table::{HeldBy, Summary},
};

pub fn entered(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !known(scrape, Hook::TimewaitBirth) {
        return Ok(());
    }
    let vec = counter_vec(
        "twmon_timewait_entered_total",
        "Timewait sockets born (tcp_time_wait), by family and substate; derived from \
         FIN_WAIT2/CLOSING->CLOSE transitions confirmed by sock_diag where \
         twmon_probe_attached{hook=\"timewait_birth\",method=\"derived\"}.",
        &["family", "substate"],
    )?;
    let derived = scrape.hooks.derived(Hook::TimewaitBirth);
    for family in Family::ALL {
        for substate in [TcpState::TimeWait, TcpState::FinWait2] {
            let counts = if derived {
                &scrape.table.derived_births
            } else {
                &scrape.stats.entered
            };
            let n = counts.get(&(family, substate)).copied().unwrap_or(0);
            vec.with_label_values(&[family.label(), substate.name()])
                .inc_by(n);
        }
    }
    register(registry, vec)
}

pub fn overflow(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !scrape.hooks.attached(Hook::TimewaitBirth) {
        return Ok(());
    }
    counter(
        registry,
        "twmon_timewait_overflow_total",
        "Connections that closed without TIME_WAIT because no timewait socket could be had \
         (tcp_max_tw_buckets full).",
        scrape.stats.overflows,
    )
}

pub fn segments(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !scrape.hooks.attached(Hook::TimewaitSegments) {
        return Ok(());
    }
    let vec = counter_vec(
        "twmon_timewait_segments_total",
        "Segments that reached a timewait socket, by kind: fin_retransmit and old_duplicate \
         are TIME_WAIT doing its job.",
        &["kind"],
    )?;
    for kind in SegmentKind::ALL {
        let n = scrape.stats.segments.get(&kind).copied().unwrap_or(0);
        vec.with_label_values(&[kind.label()]).inc_by(n);
    }
    register(registry, vec)
}

pub fn exited(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !known(scrape, Hook::TimewaitDeath) {
        return Ok(());
    }
    let vec = counter_vec(
        "twmon_timewait_exited_total",
        "Timewait sockets that died, by cause: expired after their full time, or ended early \
         (reused by connect or SYN, killed by RST, namespace purged, unknown). Derived from \
         sock_diag snapshots and transitions where \
         twmon_probe_attached{hook=\"timewait_death\",method=\"derived\"}.",
        &["cause"],
    )?;
    let derived = scrape.hooks.derived(Hook::TimewaitDeath);
    for cause in DeathCause::ALL {
        let n = if derived {
            scrape.table.exited.get(&(cause, true)).copied()
        } else {
            scrape.stats.exited.get(&cause).copied()
        };
        vec.with_label_values(&[cause.label()])
            .inc_by(n.unwrap_or(0));
    }
    register(registry, vec)
}

pub fn resets_sent(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !scrape.hooks.attached(Hook::TimewaitResetSent) {
        return Ok(());
    }
    counter(
        registry,
        "twmon_timewait_resets_sent_total",
        "RSTs sent by timewait sockets (tcp:tcp_send_reset from TIME_WAIT): new data reaching \
         an orphaned FIN_WAIT2, or a segment TIME_WAIT refused.",
        scrape.stats.resets_sent,
    )
}

pub fn eaddrnotavail(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !scrape.hooks.attached(Hook::ConnectEaddrnotavail) {
        return Ok(());
    }
    counter(
        registry,
        "twmon_connect_eaddrnotavail_total",
        "connect() calls that failed with EADDRNOTAVAIL: no free local port toward the \
         destination.",
        scrape.stats.eaddrnotavail,
    )
}

pub fn bind_eaddrinuse(registry: &Registry, scrape: &Scrape) -> prometheus::Result<()> {
    if !scrape.hooks.attached(Hook::BindEaddrinuse) {
        return Ok(());
    }
    let vec = counter_vec(
        "twmon_bind_eaddrinuse_total",
        "bind() calls refused with EADDRINUSE, by what held the address and port: a timewait \
         socket of an earlier connection (timewait) or a live socket (live).",
        &["held_by"],
    )?;
    for by in HeldBy::ALL {
        let n = scrape.table.bind_refusals.get(&by).copied().unwrap_or(0);
        vec.with_label_values(&[by.label()]).inc_by(n);
    }
    register(registry, vec)
}

/// `twmon_timewait_duration_seconds`, built directly: the table keeps
/// bucket counts, which the crate's Histogram cannot be set from.
pub fn durations(t: &Summary) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name("twmon_timewait_duration_seconds".into());
    family.set_help(
        "Real lifetimes of timewait sockets that ended, by cause (a full TIME_WAIT is 60 s \
         plus timer slack)."
            .into(),
    );
    family.set_field_type(MetricType::HISTOGRAM);
    let metrics = DeathCause::ALL
        .into_iter()
        .map(|cause| {
            let h = t.durations.get(&cause).cloned().unwrap_or_default();
            let mut histogram = proto::Histogram::default();
            histogram.set_sample_count(h.count);
            histogram.set_sample_sum(h.sum_seconds);
            let buckets = h.cumulative().into_iter().map(|(bound, count)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(count);
                b
            });
            histogram.set_bucket(buckets.collect());
            let mut label = proto::LabelPair::default();
            label.set_name("cause".into());
            label.set_value(cause.label().into());
            let mut metric = proto::Metric::default();
            metric.set_label(vec![label]);
            metric.set_histogram(histogram);
            metric
        })
        .collect();
    family.set_metric(metrics);
    family
}
