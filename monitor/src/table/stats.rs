//! Counting what the event stream says. Pure logic: fed decoded events (or
//! decode failures), read back as a [`StatsSnapshot`] at scrape time. TCP
//! state transitions are not here: the kernel counts them itself
//! (`model::hooks::KernelCounts`).

use std::collections::{BTreeMap, VecDeque};

use foldhash::HashSet;

use crate::model::{
    event::{DeathCause, KernelEvent, SegmentKind},
    tcp::{Family, TcpState},
};

/// Running totals since the daemon started.
#[derive(Debug, Default)]
pub struct Stats {
    events: u64,
    malformed: u64,
    entered: BTreeMap<(Family, TcpState), u64>,
    overflows: u64,
    segments: BTreeMap<SegmentKind, u64>,
    eaddrnotavail: u64,
    resets_sent: u64,
    exited: BTreeMap<DeathCause, u64>,
    /// Timewait sockets that died since their last birth: a timer firing
    /// while an early kill races it makes both hooks report one death.
    /// Addresses are reused by the allocator, so a birth clears its entry.
    /// Bounded: the oldest entries go first.
    recently_dead: HashSet<u64>,
    recently_dead_order: VecDeque<u64>,
    duplicate_deaths: u64,
}

/// How many recent deaths are remembered for de-duplication.
const RECENTLY_DEAD: usize = 65536;

/// A consistent copy of [`Stats`] for one scrape.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub events: u64,
    pub malformed: u64,
    /// Timewait sockets born, by family and substate.
    pub entered: BTreeMap<(Family, TcpState), u64>,
    /// Timewait sockets refused (tcp_max_tw_buckets full).
    pub overflows: u64,
    /// Segments that reached timewait sockets, by kind.
    pub segments: BTreeMap<SegmentKind, u64>,
    /// connect() calls that failed with EADDRNOTAVAIL.
    pub eaddrnotavail: u64,
    /// RSTs sent by timewait sockets.
    pub resets_sent: u64,
    /// Timewait sockets that died, by cause.
    pub exited: BTreeMap<DeathCause, u64>,
    /// Second reports of one death (timer and early kill racing).
    pub duplicate_deaths: u64,
}

impl Stats {
    pub fn record(&mut self, event: &KernelEvent) {
        self.events += 1;
        match event {
            // For the table: new connections (collisions) and derived
            // births; the kernel counts transitions itself.
            KernelEvent::StateChange(_) | KernelEvent::Closed(_) => {}
            KernelEvent::TimewaitBirth(tw) => {
                *self.entered.entry((tw.family, tw.substate)).or_default() += 1;
                self.recently_dead.remove(&tw.skaddr);
            }
            KernelEvent::TimewaitDeath(death) => {
                if !self.recently_dead.insert(death.skaddr) {
                    self.duplicate_deaths += 1;
                    return;
                }
                self.recently_dead_order.push_back(death.skaddr);
                if self.recently_dead_order.len() > RECENTLY_DEAD
                    && let Some(old) = self.recently_dead_order.pop_front()
                {
                    self.recently_dead.remove(&old);
                }
                *self.exited.entry(death.cause).or_default() += 1;
            }
            KernelEvent::TimewaitOverflow(_) => self.overflows += 1,
            KernelEvent::TimewaitSegment(seg) => {
                *self.segments.entry(seg.kind).or_default() += 1;
            }
            KernelEvent::ConnectEaddrnotavail(_) => self.eaddrnotavail += 1,
            KernelEvent::TimewaitResetSent(_) => self.resets_sent += 1,
            // By what held the port: the table's to tell.
            KernelEvent::BindEaddrinuse(_) => {}
        }
    }

    /// A record the kernel sent that could not be decoded: still an event
    /// received, but one whose content is lost.
    pub fn record_malformed(&mut self) {
        self.events += 1;
        self.malformed += 1;
    }

    /// Events received so far, without copying the rest.
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            events: self.events,
            malformed: self.malformed,
            entered: self.entered.clone(),
            overflows: self.overflows,
            segments: self.segments.clone(),
            eaddrnotavail: self.eaddrnotavail,
            resets_sent: self.resets_sent,
            exited: self.exited.clone(),
            duplicate_deaths: self.duplicate_deaths,
        }
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::{
        record::{Process, TwAlloc, TwDeath, cause},
        tcp::{family, state},
    };

    use super::*;
    use crate::sources::decode::{
        test_stamp,
        tests::{decoded, transition, tuple},
    };

    fn ev(fam: u8, from: u8, to: u8) -> KernelEvent {
        decoded(&transition(fam, from, to)).unwrap()
    }

    #[test]
    fn transitions_are_events_but_not_counted_here() {
        let mut stats = Stats::default();
        stats.record(&ev(family::INET, state::SYN_SENT, state::ESTABLISHED));
        stats.record(&ev(family::INET6, state::SYN_RECV, state::ESTABLISHED));
        let snap = stats.snapshot();
        assert_eq!((snap.events, snap.malformed), (2, 0));
        assert_eq!(
            snap,
            StatsSnapshot {
                events: 2,
                ..StatsSnapshot::default()
            }
        );
    }

    /// A timewait allocation record: born as `tw`, or refused when 0.
    fn alloc(fam: u8, tw: u64, substate: u8) -> KernelEvent {
        let unknown = Process::default();
        let record = TwAlloc::new(
            test_stamp(fam),
            0xabc0,
            tw,
            unknown,
            tuple(fam),
            substate,
            0,
        );
        decoded(&record).unwrap()
    }

    #[test]
    fn counts_births_and_overflows() {
        let mut stats = Stats::default();
        stats.record(&alloc(family::INET, 0xdef0, state::TIME_WAIT));
        stats.record(&alloc(family::INET, 0xdef8, state::TIME_WAIT));
        stats.record(&alloc(family::INET6, 0xdf00, state::FIN_WAIT2));
        stats.record(&alloc(family::INET, 0, state::FIN_WAIT2));
        let snap = stats.snapshot();
        let entered = |family, substate| snap.entered.get(&(family, substate)).copied();
        assert_eq!(entered(Family::Ipv4, TcpState::TimeWait), Some(2));
        assert_eq!(entered(Family::Ipv6, TcpState::FinWait2), Some(1));
        assert_eq!(entered(Family::Ipv4, TcpState::FinWait2), None);
        assert_eq!(snap.overflows, 1);
        assert_eq!(snap.events, 4);
    }

    #[test]
    fn a_death_counts_once_per_birth() {
        let mut stats = Stats::default();
        let death = |why: u8| {
            let at = test_stamp(family::INET);
            let record = TwDeath::new(at, 0xabc0, tuple(family::INET), state::TIME_WAIT, why);
            decoded(&record).unwrap()
        };
        stats.record(&alloc(family::INET, 0xabc0, state::TIME_WAIT));
        // Timer and early kill racing: one death.
        stats.record(&death(cause::EXPIRED));
        stats.record(&death(cause::UNKNOWN));
        // The address is reused by the next timewait socket.
        stats.record(&alloc(family::INET, 0xabc0, state::TIME_WAIT));
        stats.record(&death(cause::REUSED_BY_SYN));
        let snap = stats.snapshot();
        assert_eq!(snap.exited.get(&DeathCause::Expired), Some(&1));
        assert_eq!(snap.exited.get(&DeathCause::ReusedBySyn), Some(&1));
        assert_eq!(snap.exited.get(&DeathCause::Unknown), None);
        assert_eq!(snap.duplicate_deaths, 1);
    }

    #[test]
    fn malformed_records_count_as_events() {
        let mut stats = Stats::default();
        stats.record_malformed();
        stats.record(&ev(family::INET, state::SYN_SENT, state::ESTABLISHED));
        let snap = stats.snapshot();
        assert_eq!((snap.events, snap.malformed), (2, 1));
    }
}
