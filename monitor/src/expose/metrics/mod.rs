//! Prometheus exposition. Metrics are built fresh from a consistent
//! [`Scrape`] at every scrape, so what is served is exactly what the
//! counters held at one instant and nothing can go stale between scrapes.
//! One small function per metric family, grouped by what they describe:
//! [`kernel`] (the probes and what they delivered), [`lifecycle`] (births,
//! segments, deaths) and [`table`] (the four-tuple table's aggregates).

mod cgroups;
mod kernel;
mod lifecycle;
mod table;

use anyhow::{Context as _, Result};
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    core::{Collector, MetricVec, MetricVecBuilder},
};

use super::scrape::Scrape;

/// The `Content-Type` of the text exposition format 0.0.4; Prometheus 3
/// rejects a scrape with a missing or malformed type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers one metric family (or none, where its hook is not attached).
type Family = fn(&Registry, &Scrape) -> prometheus::Result<()>;

const FAMILIES: &[Family] = &[
    kernel::transitions,
    kernel::events,
    kernel::lost,
    kernel::errors,
    kernel::collision_filter,
    kernel::build_info,
    kernel::scrape_duration,
    kernel::snapshots,
    kernel::probe_attached,
    lifecycle::entered,
    lifecycle::overflow,
    lifecycle::segments,
    lifecycle::exited,
    lifecycle::resets_sent,
    lifecycle::eaddrnotavail,
    lifecycle::bind_eaddrinuse,
    table::sockets,
    table::collisions,
    table::by_remote,
    table::by_local_port,
    table::by_process,
    cgroups::by_cgroup,
    cgroups::failures,
    table::pressure,
    table::exhaustion,
    table::knobs,
    table::entries,
    table::evictions,
    table::closers_recovered,
    table::drift,
];

/// Renders `scrape` in the text exposition format.
pub fn encode(scrape: &Scrape) -> Result<String> {
    let registry = Registry::new();
    for family in FAMILIES {
        family(&registry, scrape)?;
    }
    let mut families = registry.gather();
    families.push(lifecycle::durations(&scrape.table));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut out)
        .context("encoding metrics")?;
    String::from_utf8(out).context("metrics are not UTF-8")
}

fn register(registry: &Registry, c: impl Collector + 'static) -> prometheus::Result<()> {
    registry.register(Box::new(c))
}

/// A counter without labels.
fn counter(registry: &Registry, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
    let c = IntCounter::new(name, help)?;
    c.inc_by(value);
    register(registry, c)
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

/// `labels` with `netns` in front when namespaces are kept apart.
fn names<'a>(per_netns: bool, labels: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    if per_netns {
        all.push("netns");
    }
    all.extend_from_slice(labels);
    all
}

/// Label values matching [`names`].
fn values(per_netns: bool, netns: u32, labels: &[String]) -> Vec<String> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    if per_netns {
        all.push(netns.to_string());
    }
    all.extend_from_slice(labels);
    all
}

fn gauge_vec(
    name: &str,
    help: &str,
    per_netns: bool,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), &names(per_netns, labels))
}

/// The series of `vec` for `labels` (and `netns` when kept apart).
fn series<B: MetricVecBuilder>(
    vec: &MetricVec<B>,
    per_netns: bool,
    netns: u32,
    labels: &[String],
) -> B::M {
    let v = values(per_netns, netns, labels);
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    vec.with_label_values(&refs)
}

fn set(vec: &IntGaugeVec, per_netns: bool, netns: u32, labels: &[String], n: u64) {
    series(vec, per_netns, netns, labels).set(saturating_i64(n));
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use testkit::sample;

    use super::*;
    use crate::{
        model::{
            event::{DeathCause, SegmentKind},
            hooks::{Hook, HookStatus, Hooks, Method},
            snapshot::Knobs,
            tcp::{Family, TcpState},
        },
        table::{CollisionKind, Pressure},
    };

    #[test]
    fn exposition_has_every_metric_with_values() {
        let mut scrape = Scrape::default();
        scrape.stats.events = 10;
        scrape.stats.malformed = 1;
        scrape
            .kernel
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
        scrape
            .kernel
            .errors
            .insert((Hook::SetState, "ringbuf_full"), 2);
        scrape.kernel.skipped_runs.insert(Hook::TimewaitBirth, 1);
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
        let errors = |labels: &str| sample(&text, "twmon_kernel_errors_total", labels);
        assert_eq!(
            errors(r#"hook="inet_sock_set_state",reason="ringbuf_full""#),
            Some(2.0)
        );
        assert_eq!(
            errors(r#"hook="timewait_birth",reason="run_skipped""#),
            Some(1.0)
        );
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
        scrape.hooks = Hooks(vec![HookStatus {
            hook: Hook::TimewaitSegments,
            method: None,
            refused: vec!["kprobe: no".into()],
        }]);
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

        scrape.hooks.0[0] = HookStatus {
            hook: Hook::TimewaitBirth,
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
            hooks: Hooks(
                [Hook::TimewaitBirth, Hook::TimewaitDeath]
                    .into_iter()
                    .map(HookStatus::unattached)
                    .collect(),
            ),
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

    /// A table in namespace 7 with one of everything.
    fn table_scrape() -> Scrape {
        let mut scrape = Scrape::default();
        let t = &mut scrape.table;
        t.population
            .insert((7, Family::Ipv4, TcpState::TimeWait), 3);
        t.by_remote = vec![((7, "10.0.0.2".parse().unwrap(), 80), 3)];
        t.by_process = vec![((7, "curl".into()), 3)];
        t.collisions.insert(CollisionKind::ConnectReuse, 2);
        let knobs = Knobs {
            port_range: Some((40000, 40003)),
            max_tw_buckets: Some(10),
            ..Knobs::default()
        };
        t.knobs.insert(7, knobs);
        t.pressure = vec![Pressure {
            netns: 7,
            local: "10.0.0.1".parse().unwrap(),
            remote: "10.0.0.2".parse().unwrap(),
            remote_port: 80,
            in_use: 3,
            in_timewait: 2,
            range: 4,
        }];
        let expired = t.durations.entry(DeathCause::Expired).or_default();
        expired.observe(60.3);
        scrape
    }

    #[test]
    fn table_metrics() {
        let text = encode(&table_scrape()).unwrap();
        let at = |name: &str, labels: &str| sample(&text, name, labels);
        let dest = r#"local_addr="10.0.0.1",remote_addr="10.0.0.2",remote_port="80""#;
        assert_eq!(at("twmon_ephemeral_ports_in_use", dest), Some(3.0));
        assert_eq!(at("twmon_ephemeral_ports_in_timewait", dest), Some(2.0));
        assert_eq!(at("twmon_ephemeral_port_pressure_ratio", dest), Some(0.75));
        assert_eq!(at("twmon_ephemeral_port_range_size", ""), Some(4.0));
        assert_eq!(at("twmon_tcp_max_tw_buckets", ""), Some(10.0));
        assert_eq!(
            at("twmon_timewait_sockets_by_process", r#"comm="curl""#),
            Some(3.0)
        );
        assert_eq!(
            at(
                "twmon_fourtuple_collisions_total",
                r#"kind="connect_reuse""#
            ),
            Some(2.0)
        );
        let bucket = "twmon_timewait_duration_seconds_bucket";
        assert_eq!(at(bucket, r#"cause="expired",le="60.5""#), Some(1.0));
        assert_eq!(at(bucket, r#"cause="expired",le="60""#), Some(0.0));
        assert!(text.contains("# TYPE twmon_timewait_duration_seconds histogram"));
    }

    #[test]
    fn table_metrics_keep_namespaces_apart_when_asked() {
        let scrape = Scrape {
            per_netns: true,
            ..table_scrape()
        };
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
