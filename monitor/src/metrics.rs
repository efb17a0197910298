//! Prometheus exposition. Metrics are built fresh from a consistent
//! snapshot at every scrape, so what is served is exactly what the counters
//! held at one instant and nothing can go stale between scrapes.

use anyhow::{Context as _, Result};
use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::{
    event::{DeathCause, Family, SegmentKind, TcpState},
    probes::{HookStatus, Method},
    stats::{Population, StatsSnapshot},
};

/// The `Content-Type` of the text exposition format 0.0.4; Prometheus 3
/// rejects a scrape with a missing or malformed type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape shows.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub stats: StatsSnapshot,
    pub population: Population,
    /// Events the kernel could not deliver (ring buffer full, or the
    /// program run skipped because of nesting), as the kernel counted them.
    pub lost_in_kernel: u64,
    /// How each hook is attached.
    pub hooks: Vec<HookStatus>,
    /// Release of the running kernel, for `twmon_build_info`.
    pub kernel: String,
    /// How long taking this snapshot took.
    pub duration: std::time::Duration,
}

impl Scrape {
    /// A scrape in which every hook is attached and one transition was
    /// seen, so its exposition shows every metric twmon can export: what
    /// the docs and dashboards are checked against.
    pub fn showing_everything() -> Scrape {
        let mut scrape = Scrape::default();
        scrape
            .stats
            .transitions
            .insert((TcpState::FinWait2, TcpState::Close), 1);
        scrape.hooks = crate::probes::all_hook_names()
            .into_iter()
            .map(|hook| HookStatus {
                hook,
                method: Some(Method::Fentry),
                refused: Vec::new(),
            })
            .collect();
        scrape
    }

    fn attached(&self, hook: &str) -> bool {
        self.hooks
            .iter()
            .any(|h| h.hook == hook && h.method.is_some())
    }
}

/// Renders `scrape` in the text exposition format.
pub fn encode(scrape: &Scrape) -> Result<String> {
    let registry = Registry::new();

    let transitions = IntCounterVec::new(
        Opts::new(
            "twmon_tcp_state_transitions_total",
            "TCP state transitions seen by the sock:inet_sock_set_state tracepoint.",
        ),
        &["from", "to"],
    )?;
    for ((from, to), n) in &scrape.stats.transitions {
        transitions
            .with_label_values(&[from.name(), to.name()])
            .inc_by(*n);
    }

    let timewait = IntGaugeVec::new(
        Opts::new(
            "twmon_timewait_sockets",
            "TCP sockets in TIME_WAIT, from the last sock_diag dump of the watched namespaces.",
        ),
        &["family"],
    )?;
    for family in Family::ALL {
        timewait
            .with_label_values(&[family.label()])
            .set(gauge(scrape.population.get(family)));
    }

    let events = IntCounter::new(
        "twmon_events_total",
        "Events received from the kernel programs through the ring buffer.",
    )?;
    events.inc_by(scrape.stats.events);

    let lost = IntCounter::new(
        "twmon_events_lost_total",
        "Events lost: ring buffer full, program run skipped by the kernel (nesting), or malformed.",
    )?;
    lost.inc_by(scrape.lost_in_kernel + scrape.stats.malformed);

    let build_info = IntGaugeVec::new(
        Opts::new(
            "twmon_build_info",
            "Always 1; labels say which twmon is running.",
        ),
        &["version", "kernel"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION"), scrape.kernel.as_str()])
        .set(1);
    let scrape_duration = prometheus::Gauge::new(
        "twmon_scrape_duration_seconds",
        "Time taken to snapshot twmon's state for this scrape.",
    )?;
    scrape_duration.set(scrape.duration.as_secs_f64());
    registry.register(Box::new(scrape_duration))?;

    let probe_attached = IntGaugeVec::new(
        Opts::new(
            "twmon_probe_attached",
            "1 if the hook is attached with this method; method=\"none\" (0) if it could not be.",
        ),
        &["hook", "method"],
    )?;
    for hook in &scrape.hooks {
        let method = hook.method.map_or("none", Method::label);
        probe_attached
            .with_label_values(&[hook.hook, method])
            .set(i64::from(hook.method.is_some()));
    }
    registry.register(Box::new(probe_attached))?;

    // Only where the hook runs: a zero from a hook that is not attached
    // would read as an exact "none happened".
    if scrape.attached("timewait_birth") {
        let entered = IntCounterVec::new(
            Opts::new(
                "twmon_timewait_entered_total",
                "Timewait sockets born (tcp_time_wait), by family and substate.",
            ),
            &["family", "substate"],
        )?;
        for family in Family::ALL {
            for substate in [TcpState::TimeWait, TcpState::FinWait2] {
                let n = scrape.stats.entered.get(&(family, substate)).copied();
                entered
                    .with_label_values(&[family.label(), substate.name()])
                    .inc_by(n.unwrap_or(0));
            }
        }
        let overflow = IntCounter::new(
            "twmon_timewait_overflow_total",
            "Connections that closed without TIME_WAIT because no timewait socket could be \
             had (tcp_max_tw_buckets full).",
        )?;
        overflow.inc_by(scrape.stats.overflows);
        registry.register(Box::new(entered))?;
        registry.register(Box::new(overflow))?;
    }

    if scrape.attached("timewait_segments") {
        let segments = IntCounterVec::new(
            Opts::new(
                "twmon_timewait_segments_total",
                "Segments that reached a timewait socket, by kind: fin_retransmit and \
                 old_duplicate are TIME_WAIT doing its job.",
            ),
            &["kind"],
        )?;
        for kind in SegmentKind::ALL {
            let n = scrape.stats.segments.get(&kind).copied().unwrap_or(0);
            segments.with_label_values(&[kind.label()]).inc_by(n);
        }
        registry.register(Box::new(segments))?;
    }

    if scrape.attached("timewait_death") {
        let exited = IntCounterVec::new(
            Opts::new(
                "twmon_timewait_exited_total",
                "Timewait sockets that died, by cause: expired after their full time, or ended \
                 early (reused by connect or SYN, killed by RST, namespace purged, unknown).",
            ),
            &["cause"],
        )?;
        for cause in DeathCause::ALL {
            let n = scrape.stats.exited.get(&cause).copied().unwrap_or(0);
            exited.with_label_values(&[cause.label()]).inc_by(n);
        }
        registry.register(Box::new(exited))?;
    }

    if scrape.attached("connect_eaddrnotavail") {
        let eaddrnotavail = IntCounter::new(
            "twmon_connect_eaddrnotavail_total",
            "connect() calls that failed with EADDRNOTAVAIL: no free local port toward the \
             destination.",
        )?;
        eaddrnotavail.inc_by(scrape.stats.eaddrnotavail);
        registry.register(Box::new(eaddrnotavail))?;
    }

    registry.register(Box::new(transitions))?;
    registry.register(Box::new(timewait))?;
    registry.register(Box::new(events))?;
    registry.register(Box::new(lost))?;
    registry.register(Box::new(build_info))?;

    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .context("encoding metrics")?;
    String::from_utf8(out).context("metrics are not UTF-8")
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::sample;

    #[test]
    fn exposition_has_every_metric_with_values() {
        let mut scrape = Scrape::default();
        scrape.stats.events = 10;
        scrape.stats.malformed = 1;
        scrape
            .stats
            .transitions
            .insert((TcpState::FinWait1, TcpState::FinWait2), 7);
        scrape.population = Population { ipv4: 5, ipv6: 2 };
        scrape.lost_in_kernel = 3;
        let text = encode(&scrape).unwrap();

        assert_eq!(
            sample(
                &text,
                "twmon_tcp_state_transitions_total",
                r#"from="FIN_WAIT1",to="FIN_WAIT2""#
            ),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "twmon_timewait_sockets", r#"family="ipv4""#),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "twmon_timewait_sockets", r#"family="ipv6""#),
            Some(2.0)
        );
        assert_eq!(sample(&text, "twmon_events_total", ""), Some(10.0));
        assert_eq!(sample(&text, "twmon_events_lost_total", ""), Some(4.0));
        let version = format!(r#"kernel="",version="{}""#, env!("CARGO_PKG_VERSION"));
        assert_eq!(sample(&text, "twmon_build_info", &version), Some(1.0));
        assert!(text.contains("# TYPE twmon_events_total counter"));
        assert!(text.contains("# TYPE twmon_timewait_sockets gauge"));
    }

    #[test]
    fn timewait_counters_only_when_their_hook_runs() {
        let mut scrape = Scrape::default();
        scrape
            .stats
            .entered
            .insert((Family::Ipv6, TcpState::FinWait2), 3);
        scrape.stats.overflows = 2;
        scrape.hooks = vec![HookStatus {
            hook: "timewait_birth",
            method: None,
            refused: vec!["kprobe: no".into()],
        }];
        let text = encode(&scrape).unwrap();
        assert!(!text.contains("twmon_timewait_entered_total"), "{text}");
        assert_eq!(
            sample(
                &text,
                "twmon_probe_attached",
                r#"hook="timewait_birth",method="none""#
            ),
            Some(0.0)
        );

        scrape.hooks[0].method = Some(Method::Kprobe);
        let text = encode(&scrape).unwrap();
        let entered = |labels: &str| sample(&text, "twmon_timewait_entered_total", labels);
        assert_eq!(entered(r#"family="ipv6",substate="FIN_WAIT2""#), Some(3.0));
        assert_eq!(entered(r#"family="ipv4",substate="TIME_WAIT""#), Some(0.0));
        assert_eq!(
            sample(&text, "twmon_timewait_overflow_total", ""),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "twmon_probe_attached",
                r#"hook="timewait_birth",method="kprobe""#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn empty_population_still_exports_both_families() {
        let text = encode(&Scrape::default()).unwrap();
        assert_eq!(
            sample(&text, "twmon_timewait_sockets", r#"family="ipv4""#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "twmon_timewait_sockets", r#"family="ipv6""#),
            Some(0.0)
        );
    }
}
