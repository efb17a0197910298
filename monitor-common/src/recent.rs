//! Four-tuples that recently began an active close (and so entered
//! TIME_WAIT), remembered in the kernel in a Bloom filter: a new connection
//! on one of them may be a four-tuple collision, which only the table can
//! tell, so only those are sent to userspace. Without the filter every new
//! connection costs a record; with it, only one in a few hundred does.
//!
//! Two generations of [`GEN_BITS`] bits each, in one mmapable array of
//! words. Closes set [`PROBES`] bits in the current generation; a new
//! connection is reported when all its bits are set in either. The daemon
//! flips the current generation and clears the new one every rotation
//! period, so a four-tuple is remembered for one to two periods.

use crate::record::Tuple;

/// Words (u64) per generation: 2^25 bits, 4 MiB.
pub const GEN_WORDS: u32 = 1 << 19;
/// Bits per generation.
pub const GEN_BITS: u64 = GEN_WORDS as u64 * 64;
/// Bits each four-tuple sets.
pub const PROBES: u32 = 2;
/// `BPF_F_MMAPABLE`: the daemon clears a generation through a mapping of
/// the array rather than half a million map updates.
pub const MMAPABLE: u32 = 1 << 10;

/// The murmur3 finaliser: every input bit reaches every output bit.
#[inline(always)]
const fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline(always)]
fn half(bytes: &[u8; 16], second: bool) -> u64 {
    let at = if second { 8 } else { 0 };
    let mut w = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        w[i] = bytes[at + i];
        i += 1;
    }
    u64::from_le_bytes(w)
}

/// The four-tuple's hash, the same on both sides.
#[inline(always)]
pub fn hash(netns: u32, t: &Tuple) -> u64 {
    let ports = (u64::from(t.sport) << 16) | u64::from(t.dport);
    let mut h = mix((u64::from(netns) << 32) | ports);
    h = mix(h ^ half(&t.saddr, false));
    h = mix(h ^ half(&t.saddr, true));
    h = mix(h ^ half(&t.daddr, false));
    mix(h ^ half(&t.daddr, true))
}

/// The bit positions (within a generation) of a hash.
#[inline(always)]
pub fn bits(h: u64) -> [u64; PROBES as usize] {
    [h % GEN_BITS, h.rotate_left(32) % GEN_BITS]
}
