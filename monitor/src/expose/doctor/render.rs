//! The diagnosis as text for a terminal.

use std::fmt::Write as _;

use super::Diagnosis;

pub fn text(d: &Diagnosis) -> String {
    let mut out = format!("twmon doctor: {}\n", d.source);
    if d.findings.is_empty() {
        out.push_str("\nNo TIME_WAIT problem found.\n");
        return out;
    }
    for f in &d.findings {
        let _ = writeln!(out, "\n[{}] {}", f.severity.label().to_uppercase(), f.title);
        for e in &f.evidence {
            let _ = writeln!(out, "  - {e}");
        }
        let _ = writeln!(out, "  What to do: {}", f.advice);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::doctor::{Finding, Severity};

    #[test]
    fn shows_each_finding_with_its_evidence_and_advice() {
        let d = Diagnosis {
            source: "the daemon at http://127.0.0.1:9877".into(),
            findings: vec![Finding {
                id: "tw-buckets",
                severity: Severity::Critical,
                title: "full".into(),
                evidence: vec!["90 %".into()],
                advice: "raise it".into(),
            }],
        };
        let t = text(&d);
        assert!(
            t.contains("[CRITICAL] full\n  - 90 %\n  What to do: raise it"),
            "{t}"
        );
        let quiet = text(&Diagnosis {
            source: "x".into(),
            findings: vec![],
        });
        assert!(quiet.contains("No TIME_WAIT problem found"), "{quiet}");
    }
}
