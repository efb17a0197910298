//! Prometheus exposition. Metrics are built fresh from a consistent
//! snapshot at every scrape, so what is served is exactly what the counters
//! held at one instant and nothing can go stale between scrapes.

use anyhow::{Context as _, Result};
use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::{
    event::{DeathCause, Family, SegmentKind, TcpState},
    probes::{HookStatus, Method},
    stats::StatsSnapshot,
    table::Summary,
};

/// The `Content-Type` of the text exposition format 0.0.4; Prometheus 3
/// rejects a scrape with a missing or malformed type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape shows.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub stats: StatsSnapshot,
    /// The four-tuple table's aggregates.
    pub table: Summary,
    /// Keep network namespaces apart with a `netns` label.
    pub per_netns: bool,
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
        // One of each breakdown, so every table series has a sample.
        let addr = std::net::IpAddr::from([192, 0, 2, 1]);
        let t = &mut scrape.table;
        t.by_remote = vec![((0, addr, 443), 1)];
        t.by_local_port = vec![((0, 40000), 1)];
        t.by_process = vec![((0, "curl".into()), 1)];
        t.pressure = vec![crate::table::Pressure {
            netns: 0,
            local: addr,
            remote: addr,
            remote_port: 443,
            in_use: 1,
            in_timewait: 1,
            range: 28232,
        }];
        t.knobs.insert(
            0,
            crate::table::Knobs {
                max_tw_buckets: Some(262144),
                tw_reuse: Some(2),
                port_range: Some((32768, 60999)),
                fin_timeout_s: Some(60),
            },
        );
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

    pub(crate) fn attached(&self, hook: &str) -> bool {
        self.hooks
            .iter()
            .any(|h| h.hook == hook && h.method.is_some())
    }

    /// Hooks whose numbers the table derives from transitions and
    /// snapshots when they are not attached.
    fn derived(&self, hook: &str) -> bool {
        DERIVABLE.contains(&hook) && !self.attached(hook)
    }
}

/// Hooks the table can stand in for.
const DERIVABLE: [&str; 2] = ["timewait_birth", "timewait_death"];

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
        let fallback = if scrape.derived(hook.hook) {
            "derived"
        } else {
            "none"
        };
        let method = hook.method.map_or(fallback, Method::label);
        probe_attached
            .with_label_values(&[hook.hook, method])
            .set(i64::from(hook.method.is_some()));
    }
    registry.register(Box::new(probe_attached))?;

    // Only where the hook runs or the table stands in for it: a zero from a
    // hook that is not attached would read as an exact "none happened".
    if scrape.attached("timewait_birth") || scrape.derived("timewait_birth") {
        let entered = IntCounterVec::new(
            Opts::new(
                "twmon_timewait_entered_total",
                "Timewait sockets born (tcp_time_wait), by family and substate; derived from \
                 FIN_WAIT2/CLOSING->CLOSE transitions confirmed by sock_diag where \
                 twmon_probe_attached{hook=\"timewait_birth\",method=\"derived\"}.",
            ),
            &["family", "substate"],
        )?;
        let derived = scrape.derived("timewait_birth");
        for family in Family::ALL {
            for substate in [TcpState::TimeWait, TcpState::FinWait2] {
                let n = if derived {
                    scrape
                        .table
                        .derived_births
                        .get(&(family, substate))
                        .copied()
                } else {
                    scrape.stats.entered.get(&(family, substate)).copied()
                };
                entered
                    .with_label_values(&[family.label(), substate.name()])
                    .inc_by(n.unwrap_or(0));
            }
        }
        registry.register(Box::new(entered))?;
    }
    if scrape.attached("timewait_birth") {
        let overflow = IntCounter::new(
            "twmon_timewait_overflow_total",
            "Connections that closed without TIME_WAIT because no timewait socket could be \
             had (tcp_max_tw_buckets full).",
        )?;
        overflow.inc_by(scrape.stats.overflows);
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

    if scrape.attached("timewait_death") || scrape.derived("timewait_death") {
        let exited = IntCounterVec::new(
            Opts::new(
                "twmon_timewait_exited_total",
                "Timewait sockets that died, by cause: expired after their full time, or ended \
                 early (reused by connect or SYN, killed by RST, namespace purged, unknown). \
                 Derived from sock_diag snapshots and transitions where \
                 twmon_probe_attached{hook=\"timewait_death\",method=\"derived\"}.",
            ),
            &["cause"],
        )?;
        let derived = scrape.derived("timewait_death");
        for cause in DeathCause::ALL {
            let n = if derived {
                scrape.table.exited.get(&(cause, true)).copied()
            } else {
                scrape.stats.exited.get(&cause).copied()
            };
            exited
                .with_label_values(&[cause.label()])
                .inc_by(n.unwrap_or(0));
        }
        registry.register(Box::new(exited))?;
    }

    if scrape.attached("timewait_reset_sent") {
        let resets = IntCounter::new(
            "twmon_timewait_resets_sent_total",
            "RSTs sent by timewait sockets (tcp:tcp_send_reset from TIME_WAIT): new data \
             reaching an orphaned FIN_WAIT2, or a segment TIME_WAIT refused.",
        )?;
        resets.inc_by(scrape.stats.resets_sent);
        registry.register(Box::new(resets))?;
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
    registry.register(Box::new(events))?;
    registry.register(Box::new(lost))?;
    registry.register(Box::new(build_info))?;
    crate::metrics_table::register(&registry, scrape)?;

    let mut families = registry.gather();
    families.push(crate::metrics_table::durations(&scrape.table));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut out)
        .context("encoding metrics")?;
    String::from_utf8(out).context("metrics are not UTF-8")
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
        scrape
            .table
            .population
            .insert((0, Family::Ipv4, TcpState::TimeWait), 5);
        scrape
            .table
            .population
            .insert((0, Family::Ipv6, TcpState::FinWait2), 2);
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
            sample(
                &text,
                "twmon_timewait_sockets",
                r#"family="ipv4",substate="TIME_WAIT""#
            ),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &text,
                "twmon_timewait_sockets",
                r#"family="ipv6",substate="FIN_WAIT2""#
            ),
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
        scrape.stats.segments.insert(SegmentKind::Syn, 5);
        // Segments have no stand-in: without their hook, no series at all.
        scrape.hooks = vec![HookStatus {
            hook: "timewait_segments",
            method: None,
            refused: vec!["kprobe: no".into()],
        }];
        let text = encode(&scrape).unwrap();
        assert!(!text.contains("twmon_timewait_segments_total"), "{text}");
        assert_eq!(
            sample(
                &text,
                "twmon_probe_attached",
                r#"hook="timewait_segments",method="none""#
            ),
            Some(0.0)
        );

        scrape.hooks[0] = HookStatus {
            hook: "timewait_birth",
            method: Some(Method::Kprobe),
            refused: vec![],
        };
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
        for labels in [
            r#"family="ipv4",substate="TIME_WAIT""#,
            r#"family="ipv6",substate="FIN_WAIT2""#,
        ] {
            assert_eq!(sample(&text, "twmon_timewait_sockets", labels), Some(0.0));
        }
    }

    #[test]
    fn derived_lifecycle_is_marked_and_taken_from_the_table() {
        let mut scrape = Scrape {
            hooks: ["timewait_birth", "timewait_death"]
                .into_iter()
                .map(HookStatus::unattached)
                .collect(),
            ..Scrape::default()
        };
        scrape
            .table
            .derived_births
            .insert((Family::Ipv4, TcpState::TimeWait), 4);
        scrape.table.exited.insert((DeathCause::Expired, true), 3);
        // A probe count the daemon cannot have in this mode is not shown.
        scrape
            .stats
            .entered
            .insert((Family::Ipv4, TcpState::TimeWait), 99);
        let text = encode(&scrape).unwrap();
        let attached = |hook: &str, method: &str| {
            sample(
                &text,
                "twmon_probe_attached",
                &format!(r#"hook="{hook}",method="{method}""#),
            )
        };
        assert_eq!(attached("timewait_birth", "derived"), Some(0.0));
        assert_eq!(attached("timewait_death", "derived"), Some(0.0));
        assert_eq!(
            sample(
                &text,
                "twmon_timewait_entered_total",
                r#"family="ipv4",substate="TIME_WAIT""#
            ),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "twmon_timewait_exited_total", r#"cause="expired""#),
            Some(3.0)
        );
        assert!(!text.contains("twmon_timewait_overflow_total"));
    }

    #[test]
    fn table_metrics_with_and_without_netns() {
        use crate::table::{CollisionKind, Knobs, Pressure};
        let mut scrape = Scrape::default();
        let t = &mut scrape.table;
        t.population
            .insert((7, Family::Ipv4, TcpState::TimeWait), 3);
        t.by_remote = vec![((7, "10.0.0.2".parse().unwrap(), 80), 3)];
        t.by_process = vec![((7, "curl".into()), 3)];
        t.collisions.insert(CollisionKind::ConnectReuse, 2);
        t.knobs.insert(
            7,
            Knobs {
                port_range: Some((40000, 40003)),
                max_tw_buckets: Some(10),
                ..Knobs::default()
            },
        );
        t.pressure = vec![Pressure {
            netns: 7,
            local: "10.0.0.1".parse().unwrap(),
            remote: "10.0.0.2".parse().unwrap(),
            remote_port: 80,
            in_use: 3,
            in_timewait: 2,
            range: 4,
        }];
        t.durations
            .entry(DeathCause::Expired)
            .or_default()
            .observe(60.3);
        let text = encode(&scrape).unwrap();
        let dest = r#"local_addr="10.0.0.1",remote_addr="10.0.0.2",remote_port="80""#;
        assert_eq!(
            sample(&text, "twmon_ephemeral_ports_in_use", dest),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "twmon_ephemeral_ports_in_timewait", dest),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "twmon_ephemeral_port_pressure_ratio", dest),
            Some(0.75)
        );
        assert_eq!(
            sample(&text, "twmon_ephemeral_port_range_size", ""),
            Some(4.0)
        );
        assert_eq!(sample(&text, "twmon_tcp_max_tw_buckets", ""), Some(10.0));
        assert_eq!(
            sample(&text, "twmon_timewait_sockets_by_process", r#"comm="curl""#),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "twmon_fourtuple_collisions_total",
                r#"kind="connect_reuse""#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "twmon_timewait_duration_seconds_bucket",
                r#"cause="expired",le="60.5""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "twmon_timewait_duration_seconds_bucket",
                r#"cause="expired",le="60""#
            ),
            Some(0.0)
        );
        assert!(text.contains("# TYPE twmon_timewait_duration_seconds histogram"));

        scrape.per_netns = true;
        let text = encode(&scrape).unwrap();
        assert_eq!(
            sample(
                &text,
                "twmon_timewait_sockets_by_remote",
                r#"netns="7",remote_addr="10.0.0.2",remote_port="80""#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "twmon_ephemeral_port_range_size", r#"netns="7""#),
            Some(4.0)
        );
    }
}
