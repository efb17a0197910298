//! Found-closer frames: who closed the sockets a snapshot round adopted
//! without a closer, as the daemon found them after that round (layout in
//! docs/record-format.md). Without them a replay would show those sockets
//! under "unknown" where the live daemon named their process.

use super::Bytes;
use crate::model::{
    event::{Comm, Process},
    snapshot::FoundCloser,
    tcp::{Family, FourTuple, ip, ip_bytes},
};

/// Bytes per found closer in the frame.
pub(super) const FOUND_SIZE: usize = 4 + 4 + 36 + 32;

pub(super) fn encode_closers(found: &[FoundCloser]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + found.len() * FOUND_SIZE);
    out.extend_from_slice(&(found.len() as u32).to_le_bytes());
    for f in found {
        out.extend_from_slice(&f.netns.to_le_bytes());
        out.extend_from_slice(&[f.family.to_kernel(), 0, 0, 0]);
        out.extend_from_slice(&ip_bytes(f.tuple.saddr));
        out.extend_from_slice(&ip_bytes(f.tuple.daddr));
        out.extend_from_slice(&f.tuple.sport.to_le_bytes());
        out.extend_from_slice(&f.tuple.dport.to_le_bytes());
        let p = &f.closer;
        out.extend_from_slice(&p.cgroup.to_le_bytes());
        out.extend_from_slice(&p.pid.to_le_bytes());
        out.extend_from_slice(&p.tid.to_le_bytes());
        out.extend_from_slice(&p.comm.0);
    }
    out
}

pub(super) fn decode_closers(payload: &[u8]) -> Result<Vec<FoundCloser>, String> {
    let mut b = Bytes { rest: payload };
    let n = b.count(FOUND_SIZE)?;
    let mut found = Vec::with_capacity(n);
    for _ in 0..n {
        let netns = b.u32()?;
        let family = Family::from_kernel(b.u8()?).ok_or("unknown address family")?;
        b.take(3)?;
        let saddr = ip(family, &b.array()?);
        let daddr = ip(family, &b.array()?);
        let (sport, dport) = (b.u16()?, b.u16()?);
        let closer = Process {
            cgroup: b.u64()?,
            pid: b.u32()?,
            tid: b.u32()?,
            comm: Comm(b.array()?),
        };
        found.push(FoundCloser {
            netns,
            family,
            tuple: FourTuple {
                saddr,
                sport,
                daddr,
                dport,
            },
            closer,
        });
    }
    if !b.rest.is_empty() {
        return Err(format!(
            "{} bytes left over after the found closers",
            b.rest.len()
        ));
    }
    Ok(found)
}
