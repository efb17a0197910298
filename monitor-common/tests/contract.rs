//! Every record type, packed with the constructor the kernel programs call
//! and unpacked with what the daemon calls, comes back field for field; a
//! record of the wrong size or kind is refused, never half-read.

use monitor_common::{
    counters::{self, transition_slot},
    record::{
        BindRefused, Closed, ConnectFailure, Process, Record, ResetSent, Stamp, StateChange, Tuple,
        TwAlloc, TwDeath, TwSegment, UnpackError, Wire, cause, ipv4, kind, unpack,
    },
    tcp::{family, flags, state, verdict},
};

const AT: Stamp = Stamp {
    ts_ns: 0x0102_0304_0506_0708,
    netns: 4026531840,
    family: family::INET6,
};

fn tuple() -> Tuple {
    let mut saddr = [0u8; 16];
    saddr[15] = 1;
    Tuple {
        saddr,
        daddr: ipv4([10, 1, 2, 3]),
        sport: 40000,
        dport: 443,
    }
}

fn curl() -> Process {
    Process::new((4242 << 32) | 4243, 7777, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0")
}

fn every_record() -> Vec<Record> {
    vec![
        Record::StateChange(StateChange::new(
            AT,
            0xffff_8880_0000_1000,
            tuple(),
            state::ESTABLISHED,
            state::FIN_WAIT1,
        )),
        Record::TwAlloc(TwAlloc::new(
            AT,
            0xffff_8880_0000_1000,
            0xffff_8880_0000_2000,
            curl(),
            tuple(),
            state::FIN_WAIT2,
            15000,
        )),
        Record::TwSegment(TwSegment::new(
            AT,
            0xffff_8880_0000_2000,
            tuple(),
            flags::FIN | flags::ACK,
            state::TIME_WAIT,
            verdict::ACK,
        )),
        Record::ConnectFailure(ConnectFailure::new(AT, curl(), ipv4([192, 0, 2, 1]), 80)),
        Record::BindRefused(BindRefused::new(AT, curl(), ipv4([192, 0, 2, 7]), 8080)),
        Record::TwDeath(TwDeath::new(
            AT,
            0xffff_8880_0000_2000,
            tuple(),
            state::TIME_WAIT,
            cause::REUSED_BY_SYN,
        )),
        Record::Closed(Closed::new(
            AT,
            0xffff_8880_0000_1000,
            curl(),
            tuple(),
            state::FIN_WAIT2,
        )),
        Record::ResetSent(ResetSent::new(
            AT,
            0xffff_8880_0000_2000,
            tuple(),
            state::FIN_WAIT2,
        )),
    ]
}

#[test]
fn every_record_type_round_trips() {
    let records = every_record();
    let mut kinds: Vec<u8> = records.iter().map(|r| r.header().kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), records.len(), "one record per kind");
    for record in records {
        assert_eq!(unpack(record.as_bytes()), Ok(record), "{record:?}");
        assert_eq!(record.header().stamp(), AT);
    }
}

#[test]
fn named_fields_land_where_the_kernel_wrote_them() {
    let Some(closed) = every_record().into_iter().find_map(|r| match r {
        Record::Closed(c) => Some(c),
        _ => None,
    }) else {
        panic!("no close among the records")
    };
    assert_eq!((closed.process.pid, closed.process.tid), (4242, 4243));
    assert!(closed.process.is_known() && !Process::default().is_known());
    let bytes = closed.as_bytes();
    assert_eq!(bytes.len(), 96);
    assert_eq!(&bytes[..8], &AT.ts_ns.to_ne_bytes());
    assert_eq!(bytes[12], kind::CLOSED);
    assert_eq!(bytes[13], family::INET6);
    // cgroup, pid, tid, then the comm.
    assert_eq!(&bytes[24..32], &7777u64.to_ne_bytes());
    assert_eq!(&bytes[40..44], b"curl");
    assert_eq!(bytes[92], state::FIN_WAIT2);
}

#[test]
fn counter_slots_are_distinct_and_in_range() {
    use monitor_common::hooks::Hook;
    let mut seen = std::collections::BTreeSet::new();
    for hook in Hook::ALL {
        for reason in 0..counters::reason::COUNT {
            let slot = counters::slot(hook, reason);
            assert!(slot < counters::SLOTS && seen.insert(slot));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for old in 1..=state::MAX {
        for new in 1..=state::MAX {
            let slot = transition_slot(old, new);
            assert!(slot < counters::TRANSITION_SLOTS && seen.insert(slot));
        }
    }
}

#[test]
fn wrong_sizes_and_kinds_are_refused() {
    let record = every_record()[0];
    let bytes = record.as_bytes();
    assert_eq!(unpack(&bytes[..10]), Err(UnpackError::Short(10)));
    assert_eq!(
        unpack(&bytes[..63]),
        Err(UnpackError::Size {
            kind: kind::STATE_CHANGE,
            len: 63,
            expected: StateChange::SIZE
        })
    );
    let mut other = bytes.to_vec();
    other[12] = 200;
    assert_eq!(unpack(&other), Err(UnpackError::UnknownKind(200)));
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(unpack(&longer), Err(UnpackError::Size { .. })));
}
