//! Time to exhaustion: per destination (namespace, local address, remote
//! address and port), how fast ephemeral four-tuples toward it are taken,
//! net of those freed, and so how long until the port range is full and
//! connect() fails with EADDRNOTAVAIL. A least-squares line through the
//! ports in use at each snapshot of the last [`WINDOW_NS`]; no estimate
//! while the count is not growing.

use std::{collections::VecDeque, net::IpAddr};

use foldhash::HashMap;

use super::Pressure;

/// How far back the trend looks: long enough to see through the noise of
/// a few snapshots, short enough to follow a change of pace.
const WINDOW_NS: u64 = 60_000_000_000;
/// Samples kept per destination, whatever the snapshot interval.
const MAX_SAMPLES: usize = 32;
/// Fewer samples than this make no trend.
const MIN_SAMPLES: usize = 3;

type Destination = (u32, IpAddr, IpAddr, u16);

/// Ports in use toward each destination, at each snapshot.
#[derive(Debug, Default)]
pub(super) struct Trends(HashMap<Destination, VecDeque<(u64, u64)>>);

impl Trends {
    /// Adds the pressure of namespace `netns`'s snapshot taken at
    /// `taken_ns`; destinations it no longer lists are forgotten.
    pub fn observe(&mut self, netns: u32, taken_ns: u64, pressure: &[Pressure]) {
        self.0.retain(|d, _| {
            d.0 != netns
                || pressure
                    .iter()
                    .any(|p| (p.netns, p.local, p.remote, p.remote_port) == *d)
        });
        for p in pressure {
            let samples = self
                .0
                .entry((p.netns, p.local, p.remote, p.remote_port))
                .or_default();
            samples.push_back((taken_ns, p.in_use));
            while samples.len() > MAX_SAMPLES
                || samples
                    .front()
                    .is_some_and(|&(t, _)| t + WINDOW_NS < taken_ns)
            {
                samples.pop_front();
            }
        }
    }

    /// Forgets the namespaces not in `existing`.
    pub fn keep_namespaces(&mut self, existing: &[u32]) {
        self.0.retain(|d, _| existing.contains(&d.0));
    }

    /// Seconds until `p`'s range is full at the current pace, if its use
    /// is growing.
    pub fn seconds_left(&self, p: &Pressure) -> Option<f64> {
        let samples = self.0.get(&(p.netns, p.local, p.remote, p.remote_port))?;
        let per_second = slope(samples)?;
        let free = p.range.saturating_sub(p.in_use) as f64;
        (per_second > 0.0).then(|| free / per_second)
    }
}

/// Ports per second: the least-squares slope of (time, in use).
fn slope(samples: &VecDeque<(u64, u64)>) -> Option<f64> {
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let t0 = samples.front()?.0;
    let n = samples.len() as f64;
    let points = samples
        .iter()
        .map(|&(t, y)| ((t - t0) as f64 / 1e9, y as f64));
    let (sx, sy, sxx, sxy) = points.fold((0.0, 0.0, 0.0, 0.0), |(sx, sy, sxx, sxy), (x, y)| {
        (sx + x, sy + y, sxx + x * x, sxy + x * y)
    });
    let denominator = n * sxx - sx * sx;
    (denominator > 0.0).then(|| (n * sxy - sx * sy) / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure(in_use: u64) -> Pressure {
        Pressure {
            netns: 1,
            local: IpAddr::from([10, 0, 0, 1]),
            remote: IpAddr::from([10, 0, 0, 2]),
            remote_port: 80,
            in_use,
            in_timewait: in_use,
            range: 1000,
        }
    }

    #[test]
    fn a_steady_pace_gives_the_time_left() {
        let mut t = Trends::default();
        // 10 ports a second, sampled every 5 s.
        for i in 0..6u64 {
            t.observe(1, i * 5_000_000_000, &[pressure(100 + 50 * i)]);
        }
        let left = t.seconds_left(&pressure(350)).expect("growing");
        assert!((left - 65.0).abs() < 1e-6, "{left}");
    }

    #[test]
    fn no_estimate_while_flat_shrinking_or_new() {
        let mut t = Trends::default();
        t.observe(1, 0, &[pressure(100)]);
        t.observe(1, 5_000_000_000, &[pressure(100)]);
        assert_eq!(t.seconds_left(&pressure(100)), None, "two samples");
        t.observe(1, 10_000_000_000, &[pressure(100)]);
        assert_eq!(t.seconds_left(&pressure(100)), None, "flat");
        t.observe(1, 15_000_000_000, &[pressure(50)]);
        assert_eq!(t.seconds_left(&pressure(50)), None, "shrinking");
    }

    #[test]
    fn a_destination_gone_from_its_namespace_is_forgotten() {
        let mut t = Trends::default();
        for i in 0..3u64 {
            t.observe(1, i * 1_000_000_000, &[pressure(10 * i)]);
        }
        assert!(t.seconds_left(&pressure(20)).is_some());
        t.observe(2, 4_000_000_000, &[]);
        assert!(t.seconds_left(&pressure(20)).is_some(), "another namespace");
        t.observe(1, 4_000_000_000, &[]);
        assert_eq!(t.seconds_left(&pressure(20)), None);
    }
}
