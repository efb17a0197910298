//! Which hooks are attached and how, and what the kernel counted of them:
//! plain data for `twmon check`, the exposition and recordings.

use std::{collections::BTreeMap, fmt};

pub use monitor_common::hooks::Hook;

use super::tcp::TcpState;

/// How a hook is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Fentry,
    Kprobe,
    /// A raw tracepoint whose arguments BTF types (tp_btf).
    BtfTracepoint,
    RawTracepoint,
    Tracepoint,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Fentry,
        Method::Kprobe,
        Method::BtfTracepoint,
        Method::RawTracepoint,
        Method::Tracepoint,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Method::Fentry => "fentry",
            Method::Kprobe => "kprobe",
            Method::BtfTracepoint => "tp_btf",
            Method::RawTracepoint => "raw_tracepoint",
            Method::Tracepoint => "tracepoint",
        }
    }

    pub fn from_label(label: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.label() == label)
    }
}

/// Hooks whose numbers the table derives from transitions and snapshots
/// when they are not attached.
pub fn derivable(hook: Hook) -> bool {
    matches!(hook, Hook::TimewaitBirth | Hook::TimewaitDeath)
}

/// How one hook ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    pub hook: Hook,
    /// None: not attached; what it would report is missing or derived.
    pub method: Option<Method>,
    /// One line per refused method: `fentry: <why>`.
    pub refused: Vec<String>,
}

impl HookStatus {
    /// A hook not (yet) attached, with nothing refused so far.
    pub fn unattached(hook: Hook) -> Self {
        HookStatus {
            hook,
            method: None,
            refused: Vec::new(),
        }
    }
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = self.method.map_or("none", Method::label);
        write!(f, "{:<22} {method}", self.hook.name())?;
        if !self.refused.is_empty() {
            write!(f, " (refused: {})", self.refused.join("; "))?;
        }
        Ok(())
    }
}

/// The status of every hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks(pub Vec<HookStatus>);

impl Hooks {
    /// Every hook attached with `method`: what a scrape of a fully capable
    /// kernel shows.
    pub fn all(method: Method) -> Hooks {
        Hooks(
            Hook::ALL
                .into_iter()
                .map(|hook| HookStatus {
                    hook,
                    method: Some(method),
                    refused: Vec::new(),
                })
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = &HookStatus> {
        self.0.iter()
    }

    pub fn method(&self, hook: Hook) -> Option<Method> {
        self.0
            .iter()
            .find(|h| h.hook == hook)
            .and_then(|h| h.method)
    }

    pub fn attached(&self, hook: Hook) -> bool {
        self.method(hook).is_some()
    }

    /// Not attached, and stood in for by the table.
    pub fn derived(&self, hook: Hook) -> bool {
        derivable(hook) && !self.attached(hook)
    }
}

/// What the kernel counted itself, read at each scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// TCP state transitions (from, to).
    pub transitions: BTreeMap<(TcpState, TcpState), u64>,
    /// Records the programs lost, by hook and reason
    /// (`monitor_common::counters::reason::NAMES`).
    pub errors: BTreeMap<(Hook, &'static str), u64>,
    /// Program runs the kernel skipped because a program was already
    /// running on that CPU (recursion_misses), by hook.
    pub skipped_runs: BTreeMap<Hook, u64>,
    /// How full the kernel's filter of recent closes is; None where it is
    /// not loaded (and in recordings, which do not carry it).
    pub filter: Option<FilterFill>,
}

impl KernelCounts {
    /// Every record the kernel produced that never reached userspace.
    pub fn lost(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.skipped_runs.values().sum::<u64>()
    }
}

/// The kernel's Bloom filter of four-tuples that closed lately
/// (`monitor_common::recent`), counted word by word: each four-tuple sets
/// two distinct bits of one 64-bit word, and a new connection is sent to
/// userspace when both of its bits are set in that word of either
/// generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterFill {
    /// Words per generation.
    pub words: u64,
    /// Bits set, in the current generation (where closes go) and the
    /// previous one.
    pub bits_set: [u64; 2],
    /// Over the words, the ordered pairs of distinct bits set in that word
    /// of either generation: what a new connection's two bits fall on when
    /// it matches by chance.
    pub set_pairs: u64,
}

/// Ordered pairs of distinct bits set in `word`.
#[inline(always)]
fn pairs(word: u64) -> u64 {
    let c = u64::from(word.count_ones());
    c * c.saturating_sub(1)
}

impl FilterFill {
    pub const CURRENT: usize = 0;
    pub const PREVIOUS: usize = 1;

    /// Adds one word of the filter: its value in the current generation
    /// and in the previous one. Inlined into the daemon's scan of the
    /// filter, which is compiled with POPCNT where the CPU has it.
    #[inline(always)]
    pub fn add_word(&mut self, current: u64, previous: u64) {
        self.bits_set[Self::CURRENT] += u64::from(current.count_ones());
        self.bits_set[Self::PREVIOUS] += u64::from(previous.count_ones());
        // Pairs set in both generations would count twice.
        self.set_pairs += pairs(current) + pairs(previous) - pairs(current & previous);
    }

    /// The share of generation `generation`'s bits that are set.
    pub fn fill_ratio(&self, generation: usize) -> f64 {
        self.bits_set[generation] as f64 / (self.words * 64).max(1) as f64
    }

    /// The chance that a four-tuple that did not close lately matches
    /// anyway: each such match costs a record that the table only drops.
    pub fn false_match_ratio(&self) -> f64 {
        self.set_pairs as f64 / (self.words * 64 * 63).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::FilterFill;

    fn fill(words: &[[u64; 2]]) -> FilterFill {
        let mut f = FilterFill {
            words: words.len() as u64,
            ..FilterFill::default()
        };
        for &[current, previous] in words {
            f.add_word(current, previous);
        }
        f
    }

    #[test]
    fn an_empty_filter_matches_nothing() {
        let f = fill(&[[0, 0]; 4]);
        assert_eq!(f.fill_ratio(FilterFill::CURRENT), 0.0);
        assert_eq!(f.false_match_ratio(), 0.0);
    }

    #[test]
    fn a_full_filter_matches_everything() {
        let f = fill(&[[u64::MAX, 0]; 4]);
        assert_eq!(f.fill_ratio(FilterFill::CURRENT), 1.0);
        assert_eq!(f.fill_ratio(FilterFill::PREVIOUS), 0.0);
        assert_eq!(f.false_match_ratio(), 1.0);
    }

    #[test]
    fn one_remembered_four_tuple_is_matched_by_its_own_two_bits_only() {
        // Two words; one holds a four-tuple's two bits. A random
        // four-tuple picks that word (1 in 2) and those two bits out of
        // 64 * 63 / 2 pairs.
        let f = fill(&[[0b101, 0], [0, 0]]);
        assert_eq!(f.bits_set, [2, 0]);
        assert_eq!(f.fill_ratio(FilterFill::CURRENT), 2.0 / 128.0);
        let expected = 0.5 / 2016.0;
        assert!((f.false_match_ratio() - expected).abs() < 1e-15);
    }

    #[test]
    fn either_generation_matches() {
        let half = fill(&[[u64::MAX, 0], [0, u64::MAX]]);
        assert!((half.false_match_ratio() - 1.0).abs() < 1e-12);
        let one = fill(&[[u64::MAX, 0], [0, 0]]);
        let both = fill(&[[u64::MAX, u64::MAX], [0, 0]]);
        // The same bits set in both generations match no more often.
        assert_eq!(one.false_match_ratio(), 0.5);
        assert_eq!(both.false_match_ratio(), 0.5);
        // Bits split between the generations match only together with
        // their own generation's.
        let split = fill(&[[0b11, 0b1100], [0, 0]]);
        assert_eq!(split.set_pairs, 4);
    }
}
