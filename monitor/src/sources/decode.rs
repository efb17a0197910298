//! Ring records into typed events: the only place the daemon turns what
//! the kernel wrote into values the rest of it trusts. `monitor-common`
//! unpacks the bytes; this checks the values (family, states) and types
//! them, so a malformed record is rejected here with a reason, never
//! half-read.

#[cfg(test)]
use monitor_common::record::Stamp;
use monitor_common::record::{self, Record, Tuple, UnpackError};
use thiserror::Error;

use crate::model::{
    event::{
        BindFailure, Closed, Comm, ConnectFailure, Death, DeathCause, KernelEvent, Process,
        ResetSent, Segment, SegmentKind, StateChange, Timewait, TwVerdict,
    },
    tcp::{Family, FourTuple, TcpState, ip},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{0}")]
    Unpack(UnpackError),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown TCP state {0}")]
    State(u8),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let record = record::unpack(bytes).map_err(DecodeError::Unpack)?;
    let at = record.header().stamp();
    let family = Family::from_kernel(at.family).ok_or(DecodeError::Family(at.family))?;
    let at = At {
        ts_ns: at.ts_ns,
        netns: (at.netns != 0).then_some(at.netns),
        family,
    };
    Ok(match record {
        Record::StateChange(r) => KernelEvent::StateChange(at.state_change(&r)?),
        Record::TwAlloc(r) => at.tw_alloc(&r)?,
        Record::TwSegment(r) => KernelEvent::TimewaitSegment(at.segment(&r)),
        Record::ConnectFailure(r) => KernelEvent::ConnectEaddrnotavail(at.connect_failure(&r)),
        Record::TwDeath(r) => KernelEvent::TimewaitDeath(at.death(&r)),
        Record::Closed(r) => KernelEvent::Closed(at.closed(&r)?),
        Record::ResetSent(r) => KernelEvent::TimewaitResetSent(at.reset_sent(&r)),
        Record::BindRefused(r) => KernelEvent::BindEaddrinuse(at.bind_refused(&r)),
    })
}

/// What every record's header says, checked.
struct At {
    ts_ns: u64,
    /// None where the kernel could not read it (0).
    netns: Option<u32>,
    family: Family,
}

impl At {
    fn tuple(&self, t: &Tuple) -> FourTuple {
        FourTuple {
            saddr: ip(self.family, &t.saddr),
            sport: t.sport,
            daddr: ip(self.family, &t.daddr),
            dport: t.dport,
        }
    }

    fn state_change(&self, r: &record::StateChange) -> Result<StateChange, DecodeError> {
        Ok(StateChange {
            ts_ns: self.ts_ns,
            skaddr: r.skaddr,
            netns: self.netns,
            family: self.family,
            from: state(r.old_state)?,
            to: state(r.new_state)?,
            tuple: self.tuple(&r.tuple),
        })
    }

    /// A birth, or (no timewait socket) an overflow.
    fn tw_alloc(&self, r: &record::TwAlloc) -> Result<KernelEvent, DecodeError> {
        let tw = Timewait {
            ts_ns: self.ts_ns,
            skaddr: if r.tw != 0 { r.tw } else { r.sk },
            netns: self.netns,
            family: self.family,
            substate: state(r.substate)?,
            timeout_jiffies: r.timeout_jiffies,
            tuple: self.tuple(&r.tuple),
            closer: process(&r.process),
        };
        Ok(if r.tw != 0 {
            KernelEvent::TimewaitBirth(tw)
        } else {
            KernelEvent::TimewaitOverflow(tw)
        })
    }

    fn segment(&self, r: &record::TwSegment) -> Segment {
        let substate = TcpState::from_kernel(r.substate);
        Segment {
            ts_ns: self.ts_ns,
            skaddr: r.tw,
            netns: self.netns,
            family: self.family,
            tuple: self.tuple(&r.tuple),
            flags: r.flags,
            substate,
            verdict: TwVerdict::from_kernel(r.verdict),
            kind: SegmentKind::classify(r.flags, substate),
        }
    }

    fn bind_refused(&self, r: &record::BindRefused) -> BindFailure {
        BindFailure {
            ts_ns: self.ts_ns,
            netns: self.netns,
            family: self.family,
            addr: ip(self.family, &r.addr),
            port: r.port,
            process: process(&r.process),
        }
    }

    fn connect_failure(&self, r: &record::ConnectFailure) -> ConnectFailure {
        ConnectFailure {
            ts_ns: self.ts_ns,
            process: process(&r.process),
            netns: self.netns,
            family: self.family,
            daddr: ip(self.family, &r.daddr),
            dport: r.dport,
        }
    }

    fn death(&self, r: &record::TwDeath) -> Death {
        Death {
            ts_ns: self.ts_ns,
            skaddr: r.tw,
            netns: self.netns,
            family: self.family,
            tuple: self.tuple(&r.tuple),
            substate: TcpState::from_kernel(r.substate),
            cause: DeathCause::from_kernel(r.cause),
        }
    }

    fn closed(&self, r: &record::Closed) -> Result<Closed, DecodeError> {
        Ok(Closed {
            ts_ns: self.ts_ns,
            skaddr: r.sk,
            netns: self.netns,
            family: self.family,
            tuple: self.tuple(&r.tuple),
            from: state(r.from_state)?,
            closer: process(&r.process),
        })
    }

    fn reset_sent(&self, r: &record::ResetSent) -> ResetSent {
        ResetSent {
            ts_ns: self.ts_ns,
            skaddr: r.tw,
            netns: self.netns,
            family: self.family,
            tuple: self.tuple(&r.tuple),
            substate: TcpState::from_kernel(r.substate),
        }
    }
}

/// The process a record names, if it names one.
pub fn process(p: &record::Process) -> Option<Process> {
    p.is_known().then_some(Process {
        pid: p.pid,
        tid: p.tid,
        cgroup: p.cgroup,
        comm: Comm(p.comm),
    })
}

fn state(value: u8) -> Result<TcpState, DecodeError> {
    TcpState::from_kernel(value).ok_or(DecodeError::State(value))
}

/// Where test records happen: a fixed time, namespace and family.
#[cfg(test)]
pub fn test_stamp(family: u8) -> Stamp {
    Stamp {
        ts_ns: 42,
        netns: 4026531840,
        family,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;

    use monitor_common::{
        record::{self as r, Wire as _, cause, ipv4},
        tcp::{family, flags, state, verdict},
    };

    use super::*;

    pub const SK: u64 = 0xffff_8880_0000_1000;

    /// A tuple from 127.0.0.1:40000 (or ::1) to 10.1.2.3:80 (or fe80::7).
    pub fn tuple(fam: u8) -> Tuple {
        if fam == family::INET {
            return Tuple {
                saddr: ipv4([127, 0, 0, 1]),
                daddr: ipv4([10, 1, 2, 3]),
                sport: 40000,
                dport: 80,
            };
        }
        let mut t = Tuple {
            sport: 40000,
            dport: 80,
            ..Tuple::default()
        };
        t.saddr[15] = 1;
        t.daddr[..2].copy_from_slice(&[0xfe, 0x80]);
        t.daddr[15] = 7;
        t
    }

    /// The process tests close with.
    pub fn curl() -> r::Process {
        r::Process::new((4242 << 32) | 4243, 7777, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0")
    }

    /// A transition record as the kernel program packs it.
    pub fn transition(fam: u8, from: u8, to: u8) -> r::StateChange {
        r::StateChange::new(test_stamp(fam), SK, tuple(fam), from, to)
    }

    /// Decodes `record` from its wire bytes.
    pub fn decoded(record: &impl r::Wire) -> Result<KernelEvent, DecodeError> {
        decode(record.as_bytes())
    }

    #[test]
    fn decodes_transitions_of_both_families() {
        let ev = decoded(&transition(
            family::INET,
            state::FIN_WAIT1,
            state::FIN_WAIT2,
        ));
        let Ok(KernelEvent::StateChange(sc)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(sc.family, Family::Ipv4);
        assert_eq!((sc.from, sc.to), (TcpState::FinWait1, TcpState::FinWait2));
        assert_eq!(sc.netns, Some(4026531840));
        assert_eq!(sc.tuple.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(sc.tuple.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((sc.tuple.sport, sc.tuple.dport), (40000, 80));
        assert_eq!((sc.ts_ns, sc.skaddr), (42, SK));
        let Ok(KernelEvent::StateChange(sc)) =
            decoded(&transition(family::INET6, state::FIN_WAIT2, state::CLOSE))
        else {
            panic!("not a state change")
        };
        assert_eq!(sc.family, Family::Ipv6);
        assert_eq!(sc.tuple.saddr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(sc.tuple.daddr, "fe80::7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unknown_netns_is_none() {
        let at = Stamp {
            netns: 0,
            ..test_stamp(family::INET)
        };
        let record = r::StateChange::new(at, SK, tuple(family::INET), 1, 4);
        let Ok(KernelEvent::StateChange(sc)) = decoded(&record) else {
            panic!("not a state change")
        };
        assert_eq!(sc.netns, None);
    }

    #[test]
    fn births_and_overflows_are_one_record() {
        let at = test_stamp(family::INET);
        let born = r::TwAlloc::new(
            at,
            SK,
            SK + 64,
            curl(),
            tuple(family::INET),
            state::TIME_WAIT,
            15000,
        );
        let Ok(KernelEvent::TimewaitBirth(tw)) = decoded(&born) else {
            panic!("not a birth")
        };
        assert_eq!(
            (tw.skaddr, tw.substate, tw.timeout_jiffies),
            (SK + 64, TcpState::TimeWait, 15000)
        );
        assert_eq!(tw.closer.map(|p| p.comm), Some(Comm::new("curl")));
        let unknown = r::Process::default();
        let refused = r::TwAlloc::new(at, SK, 0, unknown, tuple(family::INET), state::FIN_WAIT2, 0);
        let Ok(KernelEvent::TimewaitOverflow(tw)) = decoded(&refused) else {
            panic!("not an overflow")
        };
        assert_eq!((tw.skaddr, tw.substate), (SK, TcpState::FinWait2));
        assert_eq!(tw.closer, None, "pid 0 names no process");
        let nonsense = r::TwAlloc::new(at, SK, 0, unknown, tuple(family::INET), 0, 0);
        assert_eq!(decoded(&nonsense), Err(DecodeError::State(0)));
    }

    #[test]
    fn segments_carry_flags_substate_and_verdict() {
        let at = test_stamp(family::INET6);
        let fin = r::TwSegment::new(
            at,
            SK,
            tuple(family::INET6),
            flags::FIN | flags::ACK,
            state::TIME_WAIT,
            verdict::ACK,
        );
        let Ok(KernelEvent::TimewaitSegment(seg)) = decoded(&fin) else {
            panic!("not a segment")
        };
        assert_eq!(seg.kind, SegmentKind::FinRetransmit);
        assert_eq!(seg.verdict, TwVerdict::Ack);
        assert_eq!(seg.substate, Some(TcpState::TimeWait));
        let syn = r::TwSegment::new(at, SK, tuple(family::INET6), flags::SYN, 6, verdict::SYN);
        let Ok(KernelEvent::TimewaitSegment(seg)) = decoded(&syn) else {
            panic!("not a segment")
        };
        assert_eq!((seg.kind, seg.verdict), (SegmentKind::Syn, TwVerdict::Syn));
    }

    #[test]
    fn connect_failures_name_the_destination_and_caller() {
        let at = test_stamp(family::INET);
        let caller = r::Process::new((1234 << 32) | 1235, 77, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0");
        let record = r::ConnectFailure::new(at, caller, ipv4([10, 1, 2, 3]), 80);
        let Ok(KernelEvent::ConnectEaddrnotavail(c)) = decoded(&record) else {
            panic!("not a connect failure")
        };
        let p = c.process.expect("a caller");
        assert_eq!(
            (p.pid, p.cgroup, p.comm.as_string()),
            (1234, 77, "curl".to_string())
        );
        assert_eq!(c.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(c.dport, 80);
    }

    #[test]
    fn refused_binds_name_the_address_and_caller() {
        let at = test_stamp(family::INET6);
        let caller = r::Process::new(9 << 32, 5, *b"nginx\0\0\0\0\0\0\0\0\0\0\0");
        let mut addr = [0u8; 16];
        addr[15] = 1;
        let record = r::BindRefused::new(at, caller, addr, 8080);
        let Ok(KernelEvent::BindEaddrinuse(b)) = decoded(&record) else {
            panic!("not a refused bind")
        };
        assert_eq!(b.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(b.port, 8080);
        assert_eq!(b.process.map(|p| p.pid), Some(9));
    }

    #[test]
    fn deaths_keep_their_cause() {
        let at = test_stamp(family::INET);
        for (code, expected) in [
            (cause::EXPIRED, DeathCause::Expired),
            (cause::REUSED_BY_CONNECT, DeathCause::ReusedByConnect),
            (cause::REUSED_BY_SYN, DeathCause::ReusedBySyn),
            (cause::KILLED_BY_RST, DeathCause::KilledByRst),
            (cause::PURGED, DeathCause::Purged),
            (cause::UNKNOWN, DeathCause::Unknown),
            (77, DeathCause::Unknown),
        ] {
            let record = r::TwDeath::new(at, SK, tuple(family::INET), state::TIME_WAIT, code);
            let Ok(KernelEvent::TimewaitDeath(d)) = decoded(&record) else {
                panic!("not a death")
            };
            assert_eq!((d.cause, d.substate), (expected, Some(TcpState::TimeWait)));
        }
    }

    #[test]
    fn closes_carry_the_process_and_the_tuple_they_began_with() {
        let at = test_stamp(family::INET);
        let record = r::Closed::new(at, SK, curl(), tuple(family::INET), state::FIN_WAIT2);
        let Ok(KernelEvent::Closed(c)) = decoded(&record) else {
            panic!("not a close")
        };
        let p = c.closer.expect("a closer");
        assert_eq!((p.pid, p.tid, p.cgroup), (4242, 4243, 7777));
        assert_eq!(p.comm, Comm::new("curl"));
        assert_eq!((c.skaddr, c.from), (SK, TcpState::FinWait2));
        assert_eq!((c.tuple.sport, c.tuple.dport), (40000, 80));
        let bad = r::Closed::new(at, SK, curl(), tuple(family::INET), 99);
        assert_eq!(decoded(&bad), Err(DecodeError::State(99)));
    }

    #[test]
    fn resets_sent_may_lack_their_substate() {
        let at = test_stamp(family::INET);
        let record = r::ResetSent::new(at, SK, tuple(family::INET), state::FIN_WAIT2);
        let Ok(KernelEvent::TimewaitResetSent(reset)) = decoded(&record) else {
            panic!("not a reset")
        };
        assert_eq!(reset.substate, Some(TcpState::FinWait2));
        let record = r::ResetSent::new(at, SK, tuple(family::INET), 0);
        let Ok(KernelEvent::TimewaitResetSent(reset)) = decoded(&record) else {
            panic!("not a reset")
        };
        assert_eq!(reset.substate, None);
    }

    #[test]
    fn rejects_malformed_records_with_the_reason() {
        let good = transition(family::INET, 1, 4);
        let bytes = good.as_bytes();
        assert!(matches!(
            decode(&bytes[..63]),
            Err(DecodeError::Unpack(UnpackError::Size { len: 63, .. }))
        ));
        assert_eq!(decode(&[]), Err(DecodeError::Unpack(UnpackError::Short(0))));
        assert_eq!(decoded(&transition(7, 1, 4)), Err(DecodeError::Family(7)));
        assert_eq!(
            decoded(&transition(family::INET, 0, 4)),
            Err(DecodeError::State(0))
        );
        assert_eq!(
            decoded(&transition(family::INET, 1, 13)),
            Err(DecodeError::State(13))
        );
    }
}
