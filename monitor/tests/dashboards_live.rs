//! Every dashboard query, evaluated by a real Prometheus that scrapes two
//! twmon instances (two namespaces, so `instance` differs) while a workload
//! makes births, deaths, collisions, reuse and port pressure. Grafana's
//! variables are substituted the way Grafana does. A query must parse and
//! return data, or be listed below with the reason it may be empty here.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use serde_json::Value;
use testkit::{
    Daemon, TestNetns, client_closes_first, client_closes_server_holds, exhaust_ports,
    require_root, syn_into_server_timewait,
};

use crate::{
    dashboards::dashboards,
    prometheus::{Prometheus, encode},
    util::TWMON,
};

/// Panels that may show nothing on this host, and why: (dashboard uid,
/// panel title).
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[];

/// Metrics of hooks that need kprobes or fentry, absent (not zero) where
/// those hooks do not attach (tracepoint-only mode, as on this host).
const PROBE_METRICS: &[(&str, &str)] = &[
    ("twmon_timewait_segments_total", "timewait_segments"),
    ("twmon_timewait_overflow_total", "timewait_birth"),
];

/// Whether `expr` reads a metric whose hook did not attach.
fn needs_missing_probe(prom: &Prometheus, expr: &str) -> bool {
    PROBE_METRICS.iter().any(|(metric, hook)| {
        let attached = format!(r#"twmon_probe_attached{{hook="{hook}",method!~"none|derived"}}"#);
        expr.contains(metric) && prom.query_range(&attached) == Ok(0)
    })
}

fn workload(ns: &TestNetns) {
    ns.sysctl("net.ipv4.tcp_fin_timeout", "1");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40063");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    ns.run_inside(|| {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        client_closes_first(any, 10);
        // Orphaned FIN_WAIT2 sockets that die within tcp_fin_timeout.
        let held = client_closes_server_holds(any, 5);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(held);
        syn_into_server_timewait(any);
        exhaust_ports(any, 3);
    });
}

/// The first value of a `label_values(match, label)` variable query.
fn resolve(prom: &Prometheus, query: &str) -> Option<String> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (matcher, label) = inner.rsplit_once(',')?;
    let path = format!(
        "/api/v1/label/{}/values?match[]={}",
        label.trim(),
        encode(matcher.trim())
    );
    let json = prom.api(&path)?;
    json["data"][0].as_str().map(str::to_string)
}

fn busiest_destination(prom: &Prometheus, instance: &str) -> Vec<(&'static str, String)> {
    let q = format!(
        r#"topk(1, sum by (remote_addr, remote_port) (twmon_ephemeral_ports_in_timewait{{job="twmon",instance=~"{instance}"}}))"#
    );
    let json = prom
        .api(&format!("/api/v1/query?query={}", encode(&q)))
        .expect("the busiest destination");
    let metric = &json["data"]["result"][0]["metric"];
    ["remote_addr", "remote_port"]
        .into_iter()
        .map(|l| {
            let v = metric[l]
                .as_str()
                .unwrap_or_else(|| panic!("no destination: {json}"));
            (l, v.to_string())
        })
        .collect()
}

/// `expr` with Grafana's variables replaced, longest names first.
fn substitute(expr: &str, values: &[(String, String)]) -> String {
    let mut expr = expr.replace("$__rate_interval", "30s");
    let mut sorted = values.to_vec();
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    for (name, value) in &sorted {
        expr = expr
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    expr
}

/// The dashboard's query variables resolved in order, `fixed` first.
fn variables(prom: &Prometheus, d: &Value, fixed: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = fixed
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("");
        if v["type"] != "query" || values.iter().any(|(n, _)| n == name) {
            continue;
        }
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        let value = resolve(prom, &substitute(query, &values))
            .unwrap_or_else(|| panic!("{}: variable {name} ({query}) has no value", d["uid"]));
        values.push((name.to_string(), value));
    }
    values
}

#[test]
#[ignore = "needs root and Debian's prometheus: run `cargo xtask test`"]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    require_root();
    let spaces = [TestNetns::new("dash-a"), TestNetns::new("dash-b")];
    let daemons: Vec<Daemon> = spaces
        .iter()
        .map(|ns| {
            Daemon::start(
                Path::new(TWMON),
                &["--netns", &ns.path(), "--snapshot-interval", "200ms"],
            )
        })
        .collect();
    let targets: Vec<String> = daemons.iter().map(|d| format!("'{}'", d.addr)).collect();
    let prom = Prometheus::start_with(
        "dashboards",
        &format!(
            "  - job_name: twmon\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    );
    prom.wait_for(r#"count(up{job="twmon"} == 1)"#, |v| v == 2.0);
    spaces.iter().for_each(workload);
    // Rates over 30 s need a few scrapes after the workload.
    std::thread::sleep(std::time::Duration::from_secs(8));
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut excused_n = 0;
    for (uid, d) in dashboards() {
        for instance in [".*", daemons[0].addr.to_string().as_str()] {
            // The destination drill-down is looked at for a destination
            // under pressure: the one whose ports are most in TIME_WAIT
            // (Grafana's default, the first value, may have live
            // connections only).
            let dest = busiest_destination(&prom, instance);
            let mut fixed = vec![("job", "twmon"), ("instance", instance)];
            fixed.extend(dest.iter().map(|(n, v)| (*n, v.as_str())));
            let values = variables(&prom, &d, &fixed);
            for p in d["panels"].as_array().into_iter().flatten() {
                let title = p["title"].as_str().unwrap_or("");
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = substitute(t["expr"].as_str().unwrap_or(""), &values);
                    checked += 1;
                    let series = match prom.query_range(&expr) {
                        Ok(n) => n,
                        Err(e) => {
                            failures.push(format!("{uid} / {title}: does not run: {e}\n  {expr}"));
                            continue;
                        }
                    };
                    let excused = needs_missing_probe(&prom, &expr)
                        || MAY_BE_EMPTY
                            .iter()
                            .any(|(u, t, _)| *u == uid && *t == title);
                    if excused {
                        excused_n += 1;
                    }
                    if series == 0 && !excused {
                        failures.push(format!("{uid} / {title} [{instance}]: no data\n  {expr}"));
                    }
                }
            }
        }
    }
    eprintln!("{checked} queries evaluated, {excused_n} allowed to be empty on this kernel");
    // Series per host under this workload, for docs/metrics.md's sizing.
    let q = r#"count by (instance) ({job="twmon"})"#;
    if let Some(json) = prom.api(&format!("/api/v1/query?query={}", encode(q))) {
        eprintln!("series per host: {}", json["data"]["result"]);
    }
    assert!(checked > 50, "only {checked} queries");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
