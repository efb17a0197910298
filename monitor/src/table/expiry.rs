//! Deaths foretold by the timer, for tracepoint-only kernels: no probe
//! reports a timewait socket's expiry there, and snapshots, paced by their
//! cost, may come a minute apart at a million sockets. A timewait socket
//! dies when its timer fires, so an entry whose due time has passed by
//! more than the timer's possible lateness is ended as expired without
//! waiting for a snapshot to miss it.
//!
//! Lateness: the kernel's timer wheel files a timer a minute out in a level
//! whose buckets are 512 or 4096 jiffies wide and rounds it up, never
//! down (`calc_wheel_index`), so it fires up to one bucket late: 2 s at
//! HZ=250, 4 s at HZ=1000, 5 s at HZ=100. An entry is ended half a bucket
//! after its due time, the lateness on average, so the population neither
//! lags nor leads the kernel's under a steady churn (ending it at the
//! bucket's end overcounted by half a bucket's births: 3 % in the soak).
//! One ended before its timer fired is not brought back by a snapshot:
//! the dump lists it as overdue, and overdue sockets are not adopted.

use super::{Key, TIMEWAIT_LEN_NS, Table};
use crate::model::event::DeathCause;

/// At most one sweep of the table per this much event time.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

/// Half the bucket width of the timer wheel level that holds a timer
/// `timeout_ns` out, at `hz` (`kernel/time/timer.c`: 64 buckets a level,
/// each level 8 times coarser), plus one jiffy for the tick that runs it.
pub(super) fn wheel_slack_ns(hz: u32, timeout_ns: u64) -> u64 {
    let hz = u64::from(hz.max(1));
    let jiffy_ns = 1_000_000_000 / hz;
    let delta = timeout_ns / jiffy_ns;
    let mut level = 0;
    // LVL_START(n + 1) = 63 << (3 * n)
    while level < 8 && delta >= 63 << (3 * level) {
        level += 1;
    }
    let granularity = 1u64 << (3 * level);
    (granularity / 2 + 1) * jiffy_ns
}

impl Table {
    /// Ends, as expired, the entries whose timer has surely fired by
    /// `now_ns` (an event's or a dump's timestamp, or the caller's clock
    /// when nothing happens). Only where deaths are derived; a sweep of the
    /// table at most once a second, and none while nothing is due.
    pub fn expire_due(&mut self, now_ns: u64) {
        if !self.config.derive_deaths {
            return;
        }
        let cutoff = now_ns.saturating_sub(self.expiry.slack_ns);
        if cutoff < self.expiry.next_due_ns
            || now_ns < self.expiry.last_sweep_ns.saturating_add(SWEEP_EVERY_NS)
        {
            return;
        }
        self.expiry.last_sweep_ns = now_ns;
        let (due, next) = self.entries.due(cutoff);
        self.expiry.next_due_ns = next;
        for key in due {
            self.expire(key, now_ns);
        }
    }

    fn expire(&mut self, key: Key, now_ns: u64) {
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        // Ended at its due time, the best estimate; a dump begun before now
        // that still lists it must not bring it back.
        self.end(key, entry.expires_ns, DeathCause::Expired, true);
        self.recent_deaths.insert(key, now_ns);
    }

    /// Notes a due time, so the next sweep is not skipped past it.
    pub(super) fn due_at(&mut self, expires_ns: u64) {
        self.expiry.next_due_ns = self.expiry.next_due_ns.min(expires_ns);
    }
}

/// When the next sweep is worth making.
#[derive(Debug)]
pub(super) struct Expiry {
    slack_ns: u64,
    /// No entry is due before this.
    next_due_ns: u64,
    last_sweep_ns: u64,
}

impl Expiry {
    pub fn new(hz: u32) -> Expiry {
        Expiry {
            slack_ns: wheel_slack_ns(hz, TIMEWAIT_LEN_NS),
            next_due_ns: u64::MAX,
            last_sweep_ns: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_timer_is_taken_to_fire_half_a_bucket_late() {
        let s = |hz| wheel_slack_ns(hz, TIMEWAIT_LEN_NS);
        // HZ=250: 15000 jiffies, level 3 (4032..32256), 512-jiffy buckets.
        assert_eq!(s(250), 257 * 4_000_000);
        // HZ=1000: 60000 jiffies, level 4, 4096-jiffy buckets.
        assert_eq!(s(1000), 2049 * 1_000_000);
        // HZ=100: 6000 jiffies, level 3.
        assert_eq!(s(100), 257 * 10_000_000);
        // Under 63 jiffies: level 0, exact to the jiffy.
        assert_eq!(wheel_slack_ns(1000, 10_000_000), 1_000_000);
    }
}
