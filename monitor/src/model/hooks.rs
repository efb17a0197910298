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
}

impl KernelCounts {
    /// Every record the kernel produced that never reached userspace.
    pub fn lost(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.skipped_runs.values().sum::<u64>()
    }
}
