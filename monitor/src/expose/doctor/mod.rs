//! `twmon doctor`: a diagnosis in words for the person on call, from what a
//! daemon exports (or a one-off dump of this namespace): findings worst
//! first, each with its evidence and what to do, the trade-off stated in
//! the terms of why TIME_WAIT exists. Pure logic over [`Inputs`]; the
//! command fetches them.

mod checks;
pub mod exposition;
mod inputs;
mod render;

use serde::Serialize;

pub use inputs::Inputs;
pub use render::text;

/// How bad a finding is; the exit status is the worst one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One thing found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable, for scripts: `port-exhaustion`, `tw-buckets`,
    /// `bind-refused`, `reuse-without-timestamps`, `server-closes-first`,
    /// `fin-timeout-misread`, `closed-by-rst`, `early-reuse`.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    /// The numbers, destinations, processes and four-tuples behind it.
    pub evidence: Vec<String>,
    /// What to do, with its trade-off.
    pub advice: String,
}

/// The whole diagnosis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    /// Where the numbers came from.
    pub source: String,
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// 0 healthy (or only information), 1 warnings, 2 critical findings.
    pub fn exit_code(&self) -> i32 {
        match self.findings.iter().map(|f| f.severity).max() {
            Some(Severity::Critical) => 2,
            Some(Severity::Warning) => 1,
            _ => 0,
        }
    }
}

/// Every check, worst findings first.
pub fn diagnose(inputs: &Inputs) -> Diagnosis {
    let mut findings: Vec<Finding> = checks::ALL
        .iter()
        .filter_map(|check| check(inputs))
        .collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Diagnosis {
        source: inputs.source.clone(),
        findings,
    }
}
