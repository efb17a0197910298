//! Reading a Prometheus text exposition back: the doctor reads a daemon's
//! `/metrics` (or one rendered from a local dump) rather than a second API
//! with the same numbers.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text`; lines that do not parse are skipped (a
/// diagnosis is better with fewer numbers than with none).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(sample)
        .collect()
}

fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"`, with the exposition's escapes (`\\`, `\"`, `\n`).
fn labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            return Some(out);
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        out.insert(name.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// The samples of one metric.
pub fn of<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| s.name == name)
}

/// The sum of a metric's samples whose labels include `with`; `None` when
/// the metric is absent (its hook did not attach).
pub fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let sum = of(samples, name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .inspect(|_| found = true)
        .map(|s| s.value)
        .sum();
    found.then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_escapes() {
        let text = "# HELP x y\nplain 3\nwith{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 2.5\nbroken{a= 1\n";
        let s = parse(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].value), ("plain", 3.0));
        assert_eq!(s[1].labels["a"], "1");
        assert_eq!(s[1].labels["b"], "q\"u\\o\nte");
        assert_eq!(total(&s, "with", &[("a", "1")]), Some(2.5));
        assert_eq!(total(&s, "with", &[("a", "2")]), None);
        assert_eq!(total(&s, "absent", &[]), None);
    }
}
