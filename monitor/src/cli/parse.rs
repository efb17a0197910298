//! Value parsers for flags whose values clap cannot check alone: each
//! error names the value and what is allowed.

use std::{str::FromStr, time::Duration};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::{kernel::ProbeMode, table::Order};

pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 5s, 500ms or 1m"))?;
    if n == 0 {
        return Err("the interval must be greater than zero".into());
    }
    n.checked_mul(scale_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// A share of one core, in percent: above 0, at most 100.
pub fn percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage: use e.g. 1 or 0.5"))?;
    if n > 0.0 && n <= 100.0 {
        Ok(n)
    } else {
        Err(format!(
            "`{s}` is out of range: use a percentage above 0, at most 100"
        ))
    }
}

pub fn ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!(
            "{n} is not a power of two of at least 4096 (the kernel requires a power-of-two \
             number of pages); try 262144"
        ));
    }
    Ok(n)
}

/// One of `values` (name and help), parsed into `T` by name: the domain
/// type is the one type every layer uses, and `--help` lists its values.
fn named<T>(
    values: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    let values = values
        .into_iter()
        .map(|(name, help)| PossibleValue::new(name).help(help));
    PossibleValuesParser::new(values).try_map(|name| name.parse::<T>())
}

pub fn order() -> impl TypedValueParser<Value = Order> {
    named(Order::ALL.map(|o| (o.name(), o.help())))
}

pub fn probe_mode() -> impl TypedValueParser<Value = ProbeMode> {
    named(ProbeMode::ALL.map(|m| {
        let help = match m {
            ProbeMode::Auto => "fentry/fexit where possible, else kprobe/kretprobe, else without",
            ProbeMode::Fentry => "only fentry/fexit; fail if a hook cannot use it",
            ProbeMode::Kprobe => "only kprobe/kretprobe; fail if a hook cannot use it",
            ProbeMode::Tracepoint => {
                "only the tracepoints and sock_diag snapshots, as on kernels with neither \
                 kprobes nor fentry"
            }
        };
        (m.name(), help)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent("1"), Ok(1.0));
        assert_eq!(percent("0.5%"), Ok(0.5));
        assert!(percent("0").unwrap_err().contains("above 0"));
        assert!(percent("101").is_err());
        assert!(percent("NaN").is_err());
        assert!(percent("lots").unwrap_err().contains("e.g. 1"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert!(duration("0s").is_err());
        assert!(duration("fast").unwrap_err().contains("5s"));
        assert!(
            duration("99999999999999999m")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_bytes("262144"), Ok(262144));
        assert!(ring_bytes("1000").is_err());
        assert!(ring_bytes("2048").is_err());
        assert!(ring_bytes("x").is_err());
    }
}
