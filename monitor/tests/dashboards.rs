//! The shipped Grafana dashboards must only query metrics twmon exports,
//! so a renamed metric cannot silently leave a panel empty.

use std::{collections::BTreeSet, fs, path::Path};

use monitor::expose::{Scrape, metrics::encode};

fn exported_names() -> BTreeSet<String> {
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

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("twmon_") {
        let tail = &rest[pos..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboards_query_only_exported_metrics() {
    let exported = exported_names();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("dashboards/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable");
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut found = Vec::new();
        exprs(&json, &mut found);
        assert!(!found.is_empty(), "{} has no queries", path.display());
        for expr in found {
            for name in metric_names(&expr) {
                assert!(
                    exported.contains(&name),
                    "{}: `{name}` is not exported (exported: {exported:?})",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no twmon metrics referenced by any dashboard");
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names("sum(rate(twmon_events_total[5m])) / twmon_build_info"),
        vec!["twmon_events_total", "twmon_build_info"]
    );
}
