//! The table fed synthetic event streams: what each hazard looks like from
//! the kernel (one module per part of the table), and invariants over random
//! streams (`properties`).

mod aggregates;
mod collisions;
mod lifecycle;
mod properties;
mod snapshots;

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::model::{
    event::{
        Closed, Comm, ConnectFailure, Death, Segment, SegmentKind, StateChange, Timewait, TwVerdict,
    },
    snapshot::{DiagSocket, FoundCloser, NetnsSnapshot, SnapshotRound},
    tcp::FourTuple,
};

pub(super) const NS: u32 = 4026531840;
pub(super) const SEC: u64 = 1_000_000_000;

pub(super) fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

pub(super) fn tuple(sport: u16, dport: u16) -> FourTuple {
    FourTuple {
        saddr: ip(1),
        sport,
        daddr: ip(2),
        dport,
    }
}

pub(super) fn k(t: FourTuple) -> Key {
    Key {
        netns: NS,
        family: Family::Ipv4,
        tuple: t,
    }
}

pub(super) fn change(
    ts: u64,
    skaddr: u64,
    t: FourTuple,
    from: TcpState,
    to: TcpState,
) -> KernelEvent {
    KernelEvent::StateChange(StateChange {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        from,
        to,
        tuple: t,
    })
}

pub(super) fn birth(
    ts: u64,
    skaddr: u64,
    t: FourTuple,
    substate: TcpState,
    jiffies: u32,
) -> KernelEvent {
    KernelEvent::TimewaitBirth(Timewait {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        substate,
        timeout_jiffies: jiffies,
        tuple: t,
        closer: None,
    })
}

pub(super) fn death(ts: u64, skaddr: u64, t: FourTuple, cause: DeathCause) -> KernelEvent {
    KernelEvent::TimewaitDeath(Death {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        tuple: t,
        substate: Some(TcpState::TimeWait),
        cause,
    })
}

pub(super) fn segment(
    ts: u64,
    skaddr: u64,
    t: FourTuple,
    flags: u8,
    substate: TcpState,
) -> KernelEvent {
    let verdict = if flags & 0x01 != 0 {
        TwVerdict::Ack
    } else {
        TwVerdict::Success
    };
    KernelEvent::TimewaitSegment(Segment {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        tuple: t,
        flags,
        substate: Some(substate),
        verdict,
        kind: SegmentKind::classify(flags, Some(substate)),
    })
}

/// The process that closed, as a record names it.
pub(super) fn found(t: FourTuple, comm: &str) -> FoundCloser {
    FoundCloser {
        netns: NS,
        family: Family::Ipv4,
        tuple: t,
        closer: process(comm),
    }
}

pub(super) fn process(comm: &str) -> Process {
    Process {
        pid: 42,
        tid: 42,
        cgroup: 7,
        comm: Comm::new(comm),
    }
}

/// An active close reaching CLOSE from FIN_WAIT2, with the tuple it began
/// with and who closed (as the kernel joins them).
pub(super) fn closed(ts: u64, skaddr: u64, t: FourTuple, comm: Option<&str>) -> KernelEvent {
    KernelEvent::Closed(Closed {
        ts_ns: ts,
        skaddr,
        netns: Some(NS),
        family: Family::Ipv4,
        tuple: t,
        from: TcpState::FinWait2,
        closer: comm.map(process),
    })
}

pub(super) fn snapshot(taken: u64, tw: &[(FourTuple, TcpState, u32)]) -> SnapshotRound {
    SnapshotRound {
        namespaces: vec![NetnsSnapshot {
            netns: NS,
            taken_ns: taken,
            sockets: tw
                .iter()
                .map(|&(tuple, state, expires_ms)| DiagSocket {
                    family: Family::Ipv4,
                    state,
                    timewait: true,
                    expires_ms,
                    tuple,
                })
                .collect(),
            knobs: Knobs {
                port_range: Some((32768, 60999)),
                fin_timeout_s: Some(60),
                ..Knobs::default()
            },
        }],
        existing: Some(vec![NS]),
    }
}

/// An active close as the probes report it: the timewait socket's birth,
/// with who closed joined in the kernel (which then sends nothing at
/// CLOSE).
pub(super) fn close_with_probes(
    table: &mut Table,
    ts: u64,
    _sk: u64,
    tw: u64,
    t: FourTuple,
    comm: &str,
) {
    let KernelEvent::TimewaitBirth(born) = birth(ts + 2, tw, t, TcpState::TimeWait, 0) else {
        unreachable!("birth() makes births")
    };
    table.apply(&KernelEvent::TimewaitBirth(Timewait {
        closer: Some(process(comm)),
        ..born
    }));
}

/// A table as tracepoint-only mode runs it: births and deaths derived
/// from transitions and snapshots.
pub(super) fn tracepoint_only() -> Table {
    Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        ..Config::default()
    })
}

pub(super) fn population(table: &Table) -> u64 {
    table.summary(20, false).population.values().sum()
}

impl Table {
    /// Time passes with nothing to report.
    pub(super) fn advance_to(&mut self, now_ns: u64) {
        self.expire_due(now_ns);
    }
}
