//! The shipped Grafana dashboards: they query only metrics twmon exports
//! (so a renamed metric cannot silently leave a panel empty), and they keep
//! the conventions of well-kept dashboards: a datasource variable (no
//! `${DS_...}` inputs, which break file provisioning), `job` and `instance`
//! variables every query filters by, rates over `$__rate_interval`, a unit,
//! title and description on every panel, stable uids, links between them.
//! Whether each query returns data from a real Prometheus is checked in
//! `prometheus.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use monitor::expose::{Scrape, metrics::encode};
use serde_json::Value;

/// The dashboards, by uid (each file is named after its uid).
pub const UIDS: [&str; 4] = [
    "twmon-fleet",
    "twmon-host",
    "twmon-destination",
    "twmon-health",
];

pub fn exported_names() -> BTreeSet<String> {
    let scrape = Scrape::showing_everything();
    let text = encode(&scrape).expect("encoding");
    // Sample names, not family names: a histogram is queried by its
    // _bucket, _sum and _count series.
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

pub fn dashboards() -> BTreeMap<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut all = BTreeMap::new();
    for entry in fs::read_dir(&dir).expect("dashboards/ exists") {
        let path: PathBuf = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable");
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .to_string();
        all.insert(stem, json);
    }
    all
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every vector selector of `expr` that names a twmon metric (or a
/// recorded series of one), with its matchers (`""` for none).
pub fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !ident_char(chars[i]) || (i > 0 && ident_char(chars[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ident_char(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if !name.contains("twmon_") {
            continue;
        }
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        let mut body = String::new();
        if chars.get(j) == Some(&'{') {
            while j < chars.len() && chars[j] != '}' {
                body.push(chars[j]);
                j += 1;
            }
            body.push('}');
            i = j + 1;
        }
        out.push((name, body));
    }
    out
}

/// The metric a selector reads: the name itself, or for a recorded series
/// (`level:metric:operations`) the metric in the middle.
fn metric_of(name: &str) -> &str {
    name.split(':')
        .find(|part| part.starts_with("twmon_"))
        .unwrap_or(name)
}

#[test]
fn dashboards_query_only_exported_metrics() {
    let exported = exported_names();
    let mut checked = 0;
    for (file, json) in dashboards() {
        let mut found = Vec::new();
        exprs(&json, &mut found);
        assert!(!found.is_empty(), "{file} has no queries");
        for expr in found {
            for (name, _) in selectors(&expr) {
                let metric = metric_of(&name);
                assert!(
                    exported.contains(metric),
                    "{file}: `{metric}` is not exported (exported: {exported:?})"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no twmon metrics referenced by any dashboard");
}

#[test]
fn selector_extraction() {
    assert_eq!(
        selectors(
            r#"sum(rate(twmon_events_total{job=~"$job"}[5m])) / on (instance) twmon_build_info"#
        ),
        vec![
            ("twmon_events_total".into(), r#"{job=~"$job"}"#.into()),
            ("twmon_build_info".into(), String::new()),
        ]
    );
    assert_eq!(
        metric_of("instance:twmon_timewait_sockets:sum"),
        "twmon_timewait_sockets"
    );
}

fn datasource_ok(v: &Value) -> bool {
    v["type"] == "prometheus" && v["uid"] == "${datasource}"
}

/// Problems with the dashboard-wide settings of `d`, filed as `file`.
fn lint_dashboard(file: &str, d: &Value, errs: &mut Vec<String>) {
    let mut err = |msg: String| errs.push(format!("{file}: {msg}"));
    let text = d.to_string();
    if text.contains("${DS_") || d.get("__inputs").is_some() {
        err("uses ${DS_...} inputs, which break file provisioning".into());
    }
    if d["uid"] != file {
        err(format!("uid {} is not the file's name", d["uid"]));
    }
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let ds = vars.get("datasource").copied().unwrap_or(&Value::Null);
    if ds["type"] != "datasource" || ds["query"] != "prometheus" {
        err("no `datasource` variable of type datasource for prometheus".into());
    }
    for name in ["job", "instance"] {
        let v = vars.get(name).copied().unwrap_or(&Value::Null);
        if v["type"] != "query" || !datasource_ok(&v["datasource"]) {
            err(format!("variable {name} is not a query of ${{datasource}}"));
        }
        if v["multi"] != true || v["includeAll"] != true {
            err(format!("variable {name} is not multi-select with All"));
        }
    }
    let links: BTreeSet<&str> = d["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["includeVars"] == true && l["keepTime"] == true)
        .filter_map(|l| l["url"].as_str())
        .collect();
    for other in UIDS.iter().filter(|&&u| u != file) {
        if !links.contains(format!("/d/{other}").as_str()) {
            err(format!("no link to {other} keeping variables and time"));
        }
    }
}

/// Problems with one panel.
fn lint_panel(file: &str, p: &Value, errs: &mut Vec<String>) {
    let where_ = format!("{file}: panel {} {}", p["id"], p["title"]);
    let mut err = |msg: String| errs.push(format!("{where_}: {msg}"));
    for key in ["title", "description"] {
        if p[key].as_str().is_none_or(|s| s.trim().is_empty()) {
            err(format!("no {key}"));
        }
    }
    if p["fieldConfig"]["defaults"]["unit"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        err("no unit".into());
    }
    if !datasource_ok(&p["datasource"]) {
        err(format!("datasource {}", p["datasource"]));
    }
    let targets = p["targets"].as_array().cloned().unwrap_or_default();
    if targets.is_empty() {
        err("no queries".into());
    }
    for t in &targets {
        let expr = t["expr"].as_str().unwrap_or("");
        for (name, body) in selectors(expr) {
            if !body.contains(r#"job=~"$job""#) || !body.contains(r#"instance=~"$instance""#) {
                err(format!(
                    "`{name}{body}` is not filtered by $job and $instance"
                ));
            }
        }
        for window in range_windows(expr) {
            if window != "$__rate_interval" {
                err(format!("a range of [{window}], not [$__rate_interval]"));
            }
        }
    }
}

/// The windows of the range selectors in `expr` (`[5m]` gives `5m`).
fn range_windows(expr: &str) -> Vec<&str> {
    expr.split('[')
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(w, _)| w))
        .collect()
}

#[test]
fn dashboards_keep_the_conventions() {
    let all = dashboards();
    let files: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(files, UIDS.into_iter().collect(), "the dashboards shipped");
    let mut errs = Vec::new();
    for (file, d) in &all {
        lint_dashboard(file, d, &mut errs);
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().into_iter().flatten() {
            if !ids.insert(p["id"].to_string()) {
                errs.push(format!("{file}: panel id {} twice", p["id"]));
            }
            lint_panel(file, p, &mut errs);
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn the_lint_catches_what_it_should() {
    let mut d: Value = dashboards()["twmon-host"].clone();
    d["panels"][0]["targets"][0]["expr"] = "rate(twmon_events_total[5m])".into();
    d["panels"][0]["description"] = "".into();
    let mut errs = Vec::new();
    lint_panel("twmon-host", &d["panels"][0], &mut errs);
    let all = errs.join("\n");
    assert!(all.contains("no description"), "{all}");
    assert!(all.contains("not filtered by $job"), "{all}");
    assert!(all.contains("[5m]"), "{all}");
    d["uid"] = "host".into();
    let mut errs = Vec::new();
    lint_dashboard("twmon-host", &d, &mut errs);
    assert!(errs.iter().any(|e| e.contains("uid")), "{errs:?}");
}
