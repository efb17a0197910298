//! Lifetimes of timewait sockets, bucketed as a Prometheus histogram is.
//!
//! Kept as plain counts because the exposition is rebuilt from the table at
//! every scrape: a prometheus-crate Histogram would need every observation
//! replayed.

/// Upper bounds, in seconds. Dense around 60 s: TIME_WAIT lasts
/// TCP_TIMEWAIT_LEN (60 s) plus the timer wheel's rounding (up to a couple
/// of seconds at that range), so the interesting question, "did it serve
/// its full time?", is answered by the buckets from 55 s to 65 s.
pub const BOUNDS: [f64; 18] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 55.0, 59.0, 60.0, 60.5, 61.0, 62.0, 65.0,
    90.0, 120.0,
];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    pub counts: [u64; BOUNDS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let slot = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        self.counts[slot] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Cumulative counts per bound, as the exposition wants them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        BOUNDS
            .iter()
            .zip(self.counts.iter())
            .map(|(&bound, &n)| {
                total += n;
                (bound, total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::default();
        for s in [0.0, 60.0, 60.2, 61.9, 500.0] {
            h.observe(s);
        }
        let cumulative = h.cumulative();
        let at = |bound: f64| cumulative.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.01), 1);
        assert_eq!(at(59.0), 1);
        assert_eq!(at(60.0), 2);
        assert_eq!(at(60.5), 3);
        assert_eq!(at(62.0), 4);
        assert_eq!(at(120.0), 4);
        assert_eq!(h.count, 5);
        assert!((h.sum_seconds - 682.1).abs() < 1e-9);
    }

    #[test]
    fn bounds_increase() {
        assert!(BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }
}
