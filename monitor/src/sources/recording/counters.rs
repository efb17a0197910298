//! Counter frames: what the kernel counted itself (transitions, lost
//! records, skipped runs), which no event carries. The daemon writes one
//! with every snapshot round, so a replay shows the counts as of the last.

use monitor_common::{counters::reason, hooks::Hook};

use super::Bytes;
use crate::model::{hooks::KernelCounts, tcp::TcpState};

pub(super) fn encode_counters(counts: &KernelCounts) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(counts.transitions.len() as u32).to_le_bytes());
    for (&(from, to), n) in &counts.transitions {
        out.extend_from_slice(&[from as u8, to as u8]);
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(counts.errors.len() as u32).to_le_bytes());
    for (&(hook, why), n) in &counts.errors {
        let why = reason::NAMES.iter().position(|r| *r == why).unwrap_or(0);
        out.extend_from_slice(&[hook as u8, why as u8]);
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(counts.skipped_runs.len() as u32).to_le_bytes());
    for (&hook, n) in &counts.skipped_runs {
        out.push(hook as u8);
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

pub(super) fn decode_counters(payload: &[u8]) -> Result<KernelCounts, String> {
    let mut b = Bytes { rest: payload };
    let mut counts = KernelCounts::default();
    let state = |v: u8| TcpState::from_kernel(v).ok_or("unknown TCP state");
    let hook = |v: u8| {
        Hook::ALL
            .into_iter()
            .find(|h| *h as u8 == v)
            .ok_or("unknown hook")
    };
    for _ in 0..b.count(2 + 8)? {
        let (from, to) = (state(b.u8()?)?, state(b.u8()?)?);
        counts.transitions.insert((from, to), b.u64()?);
    }
    for _ in 0..b.count(2 + 8)? {
        let h = hook(b.u8()?)?;
        let why = *reason::NAMES
            .get(usize::from(b.u8()?))
            .ok_or("unknown loss reason")?;
        counts.errors.insert((h, why), b.u64()?);
    }
    for _ in 0..b.count(1 + 8)? {
        let h = hook(b.u8()?)?;
        counts.skipped_runs.insert(h, b.u64()?);
    }
    if !b.rest.is_empty() {
        return Err(format!(
            "{} bytes left over after the counters",
            b.rest.len()
        ));
    }
    Ok(counts)
}
