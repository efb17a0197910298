//! The deployment files agree with twmon and with each other: every metric
//! the alert and recording rules name is exported, the PrometheusRule for
//! the operator carries exactly the rule files promtool tests, and the
//! Kubernetes manifests pass the Kubernetes API schema.

use std::{fs, path::PathBuf, process::Command};

use serde_norway::Value;

use crate::dashboards::{exported_names, selectors};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml(path: &str) -> Value {
    let path = deploy().join(path);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn groups(v: &Value) -> Vec<Value> {
    v["groups"].as_sequence().cloned().unwrap_or_default()
}

/// (record or alert name, expr) of every rule in `groups`.
fn rules(groups: &[Value]) -> Vec<(String, String)> {
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .map(|r| {
            let name = r["record"].as_str().or(r["alert"].as_str()).unwrap_or("");
            (
                name.to_string(),
                r["expr"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn rules_name_only_exported_metrics() {
    let exported = exported_names();
    let mut all = groups(&yaml("prometheus/twmon-alerts.yml"));
    all.extend(groups(&yaml("prometheus/twmon-rules.yml")));
    let rules = rules(&all);
    assert!(rules.len() > 10, "{rules:?}");
    let recorded: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for (name, expr) in &rules {
        for (metric, _) in selectors(expr) {
            assert!(
                exported.contains(&metric) || recorded.contains(&metric.as_str()),
                "{name}: `{metric}` is neither exported nor recorded"
            );
        }
    }
}

#[test]
fn the_prometheusrule_is_the_rule_files() {
    let mut want = groups(&yaml("prometheus/twmon-alerts.yml"));
    want.extend(groups(&yaml("prometheus/twmon-rules.yml")));
    let rule = yaml("kubernetes/prometheusrule.yaml");
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        rule["spec"]["groups"]
            .as_sequence()
            .cloned()
            .unwrap_or_default(),
        want,
        "kubernetes/prometheusrule.yaml must carry twmon-alerts.yml then twmon-rules.yml, \
         unchanged: copy them again"
    );
}

/// The manifests as kustomize renders them.
fn rendered() -> String {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy().join("kubernetes"))
        .output()
        .expect("running kubectl kustomize (kubectl must be on PATH)");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// kubernetes-validate (PyPI), installed by `cargo xtask setup`.
fn validator() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/kubernetes-validate/bin/kubernetes-validate")
}

#[test]
#[ignore = "needs kubectl and kubernetes-validate: run `cargo xtask test`"]
fn kubernetes_manifests_pass_the_api_schema() {
    let file = std::env::temp_dir().join(format!("twmon-k8s-{}.yaml", std::process::id()));
    fs::write(&file, rendered()).expect("writing the rendered manifests");
    // The oldest supported release with every field used (appArmorProfile
    // is 1.30's) and the newest the validator knows.
    for version in ["1.30", "1.37"] {
        let out = Command::new(validator())
            .args(["--strict", "--no-warn", "-k", version])
            .arg(&file)
            .output()
            .expect("running kubernetes-validate");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
    }
    // It must catch a mistake, or the pass above means nothing.
    let broken = rendered().replace("readinessProbe:", "readinesProbe:");
    fs::write(&file, broken).expect("writing");
    let out = Command::new(validator())
        .args(["--strict", "--no-warn", "-k", "1.37"])
        .arg(&file)
        .output()
        .expect("running kubernetes-validate");
    assert!(!out.status.success(), "a misspelt field passed");
    let _ = fs::remove_file(&file);
}

#[test]
#[ignore = "needs kubectl: run `cargo xtask test`"]
fn the_kustomization_renders_a_daemonset_twmon_can_run() {
    let text = rendered();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "DaemonSet",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    assert_ne!(
        c["securityContext"]["privileged"].as_bool(),
        Some(true),
        "twmon needs a few capabilities, not a privileged container"
    );
    assert!(
        c["readinessProbe"]["httpGet"]["path"] == "/healthz",
        "{c:?}"
    );
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());
}
