//! docs/metrics.md must list exactly what twmon exports: same names, types
//! and label sets.

use std::{collections::BTreeMap, fs, path::Path};

use monitor::expose::{Scrape, metrics::encode};

/// name -> (type, sorted labels) from the exposition, every hook attached.
fn exported() -> BTreeMap<String, (String, Vec<String>)> {
    let scrape = Scrape::showing_everything();
    let text = encode(&scrape).expect("encoding");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            out.insert(name.to_string(), (kind.to_string(), Vec::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let sample_name = line.split(['{', ' ']).next().unwrap_or("");
            // A histogram's samples are NAME_bucket (with `le`), _sum and
            // _count; its labels are those of its buckets without `le`.
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample_name.strip_suffix(suffix))
                .find(|base| out.get(*base).is_some_and(|(k, _)| k == "histogram"))
                .unwrap_or(sample_name);
            let labels: Vec<String> = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(labels, _)| {
                    labels
                        .split(',')
                        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                        .filter(|k| k != "le")
                        .collect()
                })
                .unwrap_or_default();
            if let Some((_, seen)) = out.get_mut(name) {
                let mut labels = labels;
                labels.sort();
                *seen = labels;
            }
        }
    }
    out
}

/// name -> (type, sorted labels) from the table in docs/metrics.md.
fn documented() -> BTreeMap<String, (String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = fs::read_to_string(&path).expect("docs/metrics.md exists");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `twmon_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let kind = cells[2].to_string();
        let mut labels: Vec<String> = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        labels.sort();
        out.insert(name, (kind, labels));
    }
    out
}

#[test]
fn docs_match_the_exposition() {
    let exported = exported();
    let documented = documented();
    assert!(
        !documented.is_empty(),
        "no metrics table found in docs/metrics.md"
    );
    for (name, spec) in &exported {
        assert_eq!(
            documented.get(name),
            Some(spec),
            "{name}: exported as {spec:?}, documented as {:?}",
            documented.get(name)
        );
    }
    for name in documented.keys() {
        assert!(
            exported.contains_key(name),
            "{name} is documented but not exported"
        );
    }
}
