//! Snapshot-round frames: every socket of each namespace dumped, with the
//! knobs read there (layout in docs/record-format.md).

use super::Bytes;
use crate::model::{
    snapshot::{DiagSocket, Knobs, NetnsSnapshot, SnapshotRound},
    tcp::{Family, FourTuple, TcpState, ip, ip_bytes},
};

/// Bytes per socket in a snapshot frame.
pub(super) const SOCKET_SIZE: usize = 44;

/// "Unknown" for a knob in the file.
const ABSENT: u64 = u64::MAX;

pub(super) fn encode_round(round: &SnapshotRound) -> Vec<u8> {
    let mut out = Vec::new();
    match &round.existing {
        Some(all) => {
            out.push(1);
            out.extend_from_slice(&(all.len() as u32).to_le_bytes());
            for ns in all {
                out.extend_from_slice(&ns.to_le_bytes());
            }
        }
        None => {
            out.push(0);
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }
    out.extend_from_slice(&(round.namespaces.len() as u32).to_le_bytes());
    for snap in &round.namespaces {
        out.extend_from_slice(&snap.netns.to_le_bytes());
        out.extend_from_slice(&snap.taken_ns.to_le_bytes());
        let k = &snap.knobs;
        for v in [k.max_tw_buckets, k.tw_reuse, k.fin_timeout_s] {
            out.extend_from_slice(&v.unwrap_or(ABSENT).to_le_bytes());
        }
        let (lo, hi) = k.port_range.unwrap_or((0, 0));
        out.push(u8::from(k.port_range.is_some()));
        out.extend_from_slice(&lo.to_le_bytes());
        out.extend_from_slice(&hi.to_le_bytes());
        out.extend_from_slice(&(snap.sockets.len() as u32).to_le_bytes());
        for s in &snap.sockets {
            out.push(s.family.to_kernel());
            out.push(s.state as u8);
            out.push(u8::from(s.timewait));
            out.push(0);
            out.extend_from_slice(&s.expires_ms.to_le_bytes());
            out.extend_from_slice(&s.tuple.sport.to_le_bytes());
            out.extend_from_slice(&s.tuple.dport.to_le_bytes());
            out.extend_from_slice(&ip_bytes(s.tuple.saddr));
            out.extend_from_slice(&ip_bytes(s.tuple.daddr));
        }
    }
    out
}

pub(super) fn decode_round(payload: &[u8]) -> Result<SnapshotRound, String> {
    let mut b = Bytes { rest: payload };
    let complete = b.u8()? != 0;
    let n = b.count(4)?;
    let mut existing = Vec::with_capacity(n);
    for _ in 0..n {
        existing.push(b.u32()?);
    }
    let namespaces_n = b.count(4 + 8 + 24 + 5 + 4)?;
    let mut namespaces = Vec::with_capacity(namespaces_n);
    for _ in 0..namespaces_n {
        let netns = b.u32()?;
        let taken_ns = b.u64()?;
        let opt = |v: u64| (v != ABSENT).then_some(v);
        let max_tw_buckets = opt(b.u64()?);
        let tw_reuse = opt(b.u64()?);
        let fin_timeout_s = opt(b.u64()?);
        let has_range = b.u8()? != 0;
        let (lo, hi) = (b.u16()?, b.u16()?);
        let sockets_n = b.count(SOCKET_SIZE)?;
        let mut sockets = Vec::with_capacity(sockets_n);
        for _ in 0..sockets_n {
            let family = Family::from_kernel(b.u8()?).ok_or("unknown address family")?;
            let state = TcpState::from_kernel(b.u8()?).ok_or("unknown TCP state")?;
            let timewait = b.u8()? != 0;
            b.u8()?;
            let expires_ms = b.u32()?;
            let sport = b.u16()?;
            let dport = b.u16()?;
            let saddr = ip(family, &b.array()?);
            let daddr = ip(family, &b.array()?);
            sockets.push(DiagSocket {
                family,
                state,
                timewait,
                expires_ms,
                tuple: FourTuple {
                    saddr,
                    sport,
                    daddr,
                    dport,
                },
            });
        }
        namespaces.push(NetnsSnapshot {
            netns,
            taken_ns,
            sockets,
            knobs: Knobs {
                max_tw_buckets,
                tw_reuse,
                port_range: has_range.then_some((lo, hi)),
                fin_timeout_s,
                // Format 3 does not record it.
                timestamps: None,
            },
        });
    }
    if !b.rest.is_empty() {
        return Err(format!(
            "{} bytes left over after the snapshot",
            b.rest.len()
        ));
    }
    Ok(SnapshotRound {
        namespaces,
        existing: complete.then_some(existing),
    })
}
