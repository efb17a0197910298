//! Four-tuples that recently began an active close (and so entered
//! TIME_WAIT), remembered in the kernel in a Bloom filter: a new connection
//! on one of them may be a four-tuple collision, which only the table can
//! tell, so only those are sent to userspace. Without the filter every new
//! connection costs a record; with it, only one in a few hundred does.
//!
//! Two generations of [`GEN_WORDS`] words each, in one mmapable array.
//! Closes set [`PROBES`] bits in the current generation; a new connection
//! is reported when all its bits are set in either. The daemon flips the
//! current generation and clears the new one every rotation period, so a
//! four-tuple is remembered for one to two periods.
//!
//! The filter is blocked: a four-tuple's bits all lie in one word, and the
//! two generations' words for it are neighbours (index `2 * word +
//! generation`), so a close touches one cache line and a new connection
//! one, where separate bits in separate generations took up to four cache
//! misses per check (profiled: half the state-change program's time went
//! to those loads in a loopback churn).

use crate::record::Tuple;

/// Words (u64) per generation: 2^25 bits, 4 MiB.
pub const GEN_WORDS: u32 = 1 << 19;
/// Bits each four-tuple sets, all in one word.
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

/// The hash of a four-tuple, whatever its namespace: naming the namespace
/// would cost the kernel programs a read of a cache line that every socket
/// created or freed on the host writes (`struct net`'s reference count sits
/// beside its inode number), and the same four-tuple in two namespaces at
/// once only makes a false positive, which the daemon's table settles.
///
/// It is also blind to direction: both ends of a connection on this host
/// (loopback, a sidecar proxy) hash alike, so their two checks at
/// ESTABLISHED and the close's mark share one cache line instead of
/// missing on two. The four-tuple seen from the other end is as rare a
/// false positive as another namespace's.
#[inline(always)]
pub fn hash(t: &Tuple) -> u64 {
    mix(endpoint(&t.saddr, t.sport) ^ endpoint(&t.daddr, t.dport))
}

/// One end of a four-tuple, mixed on its own so that the two ends combine
/// in either order.
#[inline(always)]
fn endpoint(addr: &[u8; 16], port: u16) -> u64 {
    let h = mix(half(addr, false) ^ u64::from(port));
    mix(h ^ half(addr, true))
}

/// Where a hash's bits are: the word (within a generation) and the mask of
/// its [`PROBES`] distinct bits in that word.
#[inline(always)]
pub fn bits(h: u64) -> (u32, u64) {
    let word = (h >> 32) as u32 & (GEN_WORDS - 1);
    let first = h & 63;
    // 1..=63 bits further on, so the two bits never coincide.
    let second = (first + 1 + (h >> 6) % 63) & 63;
    (word, (1u64 << first) | (1u64 << second))
}

/// The array index of `word` in `generation` (0 or 1).
#[inline(always)]
pub const fn index(word: u32, generation: u32) -> u32 {
    2 * word + generation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hash_sets_two_bits_of_one_word() {
        for i in 0..10_000u64 {
            let (word, mask) = bits(mix(i));
            assert!(word < GEN_WORDS);
            assert_eq!(mask.count_ones(), PROBES);
        }
    }

    #[test]
    fn both_ends_of_a_connection_hash_alike_and_others_apart() {
        let mut t = Tuple {
            sport: 40000,
            dport: 80,
            ..Tuple::default()
        };
        t.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        t.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let back = Tuple {
            saddr: t.daddr,
            daddr: t.saddr,
            sport: t.dport,
            dport: t.sport,
        };
        assert_eq!(hash(&t), hash(&back));
        // Ports swapped without the addresses is another four-tuple.
        let swapped = Tuple {
            sport: t.dport,
            dport: t.sport,
            ..t
        };
        assert_ne!(hash(&t), hash(&swapped));
        let next = Tuple { sport: 40001, ..t };
        assert_ne!(bits(hash(&t)), bits(hash(&next)));
    }

    #[test]
    fn generations_of_a_word_share_a_cache_line() {
        for word in [0, 1, GEN_WORDS / 2, GEN_WORDS - 1] {
            let a = index(word, 0) as usize * 8;
            let b = index(word, 1) as usize * 8;
            assert_eq!(a / 64, b / 64);
            assert!(index(word, 1) < 2 * GEN_WORDS);
        }
    }

    #[test]
    fn words_spread_evenly() {
        // 64 buckets of words, 64k hashes: each near 1024.
        let mut buckets = [0u32; 64];
        for i in 0..65_536u64 {
            let (word, _) = bits(mix(i));
            buckets[(word >> 13) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (850..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
