//! Alert rules and the dashboard: promtool checks and unit-tests the rules, the PrometheusRule
//! matches the plain rules file, and every metric they use is one the code exports.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use resiliency_operator::metrics;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool not found: run scripts/install-deps.sh (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// Every `resiliency_*` and `astronetes_*` metric name in `text`, with histogram suffixes
/// removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = prefixed(text, "resiliency_");
    out.extend(prefixed(text, "astronetes_"));
    out
}

fn prefixed(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find(prefix) {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if metrics::ALL.contains(&base) {
                    name = base;
                }
            }
        }
        // Not a metric: a Lease or Deployment name such as resiliency-operator-... is not matched
        // (it has a dash), nor is a word that merely contains the prefix.
        // Nor is the bare prefix of a glob in prose (`astronetes_*`).
        if !preceded && name != prefix {
            out.insert(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo("deploy/alerts");
    let checked = promtool(&["check", "rules", "resiliency-rules.yaml"], &dir);
    assert!(checked.contains("SUCCESS: 15 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_unit_test_and_a_runbook() {
    let rules: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo("deploy/alerts/resiliency-rules.yaml")).unwrap(),
    )
    .unwrap();
    let tests = std::fs::read_to_string(repo("deploy/alerts/tests.yaml")).unwrap();
    let groups = rules["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "ours and the Astronetes names");
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool unit test"
        );
        let description = rule["annotations"]["description"].as_str().unwrap();
        for part in ["Check:", "Fix:"] {
            assert!(
                description.contains(part),
                "{name}: the description has no {part:?}"
            );
        }
        assert!(
            rule["labels"]["severity"].is_string(),
            "{name} has no severity"
        );
    }
}

#[test]
fn the_prometheusrule_carries_the_same_groups_as_the_rules_file() {
    let plain: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo("deploy/alerts/resiliency-rules.yaml")).unwrap(),
    )
    .unwrap();
    let cr: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo("deploy/alerts/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(cr["kind"], "PrometheusRule");
    assert_eq!(cr["metadata"]["namespace"], "resiliency-operator");
    assert_eq!(
        cr["spec"]["groups"], plain["groups"],
        "edit both files alike"
    );
}

#[test]
fn the_dashboard_and_rules_only_use_exported_metrics() {
    let dashboard = std::fs::read_to_string(repo("dashboards/resiliency-operator.json")).unwrap();
    let rules = std::fs::read_to_string(repo("deploy/alerts/resiliency-rules.yaml")).unwrap();
    let exported: BTreeSet<String> = metrics::ALL
        .iter()
        .chain(metrics::compat::ALL)
        .map(|s| s.to_string())
        .collect();
    for (what, text) in [("dashboard", &dashboard), ("alert rules", &rules)] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{what}: found only {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics nobody exports: {unknown:?}"
        );
    }
}

#[test]
fn the_dashboard_is_valid_and_filters_by_datasource_namespace_and_name() {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("dashboards/resiliency-operator.json")).unwrap(),
    )
    .unwrap();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, vec!["datasource", "namespace", "name"]);
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert!(!t["expr"].as_str().unwrap().is_empty(), "{}", p["title"]);
        }
    }
}
