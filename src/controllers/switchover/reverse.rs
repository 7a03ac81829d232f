//! The reverse LiveSynchronization (new primary to old): its name and spec, and whether one
//! that exists already is it (a failback reuses the original, suspended by the switchover).

use std::collections::BTreeMap;

use crate::api::automation::{
    Heartbeat, LiveSynchronization, LiveSynchronizationSpec, Switchover, SyncConfig,
};

/// Label and annotation naming the LiveSynchronization a reverse one copies back.
pub const REVERSE_OF: &str = "automation.astronetes.io/reverse-of";
/// Label and annotation naming the Switchover that created a reverse LiveSynchronization.
pub const SWITCHOVER: &str = "automation.astronetes.io/switchover";

/// Longest label value Kubernetes accepts; longer names go in the annotations only.
const MAX_LABEL_VALUE: usize = 63;

/// spec.reverseName; else, switching over a reverse stream (a failback), the original it
/// copies back (named in its `reverse-of` annotation), which is resumed; else
/// `<liveSynchronizationName>-reverse`.
pub fn reverse_name(sw: &Switchover, ls: &LiveSynchronization) -> String {
    if let Some(n) = &sw.spec.reverse_name {
        return n.clone();
    }
    ls.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVERSE_OF))
        .cloned()
        .unwrap_or_else(|| format!("{}-reverse", sw.spec.live_synchronization_name))
}

/// The spec of the stream back: Databases and roots swapped, the same copy settings, checks
/// and deletion guard; no heartbeat (its znode would be written to the new primary's tree
/// under the old one's path), no delay, not suspended.
pub fn reverse_spec(spec: &LiveSynchronizationSpec) -> LiveSynchronizationSpec {
    let c = &spec.config;
    let config = SyncConfig {
        source_name: c.destination_name.clone(),
        destination_name: c.source_name.clone(),
        root_path: destination_root(c).to_string(),
        destination_root_path: c
            .destination_root_path
            .as_ref()
            .map(|_| c.root_path.clone()),
        ..c.clone()
    };
    LiveSynchronizationSpec {
        config,
        heartbeat: Heartbeat::default(),
        apply_delay: "0s".into(),
        suspend: false,
        // Set by the switchover when it fenced the old primary.
        fence_destination: false,
        // The old primary may hold writes nobody else has: reported before they are lost.
        compare_before_sync: true,
        ..spec.clone()
    }
}

/// The labels and annotations of a reverse LiveSynchronization.
pub fn reverse_marks(
    original: &str,
    switchover: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let all = BTreeMap::from([
        (REVERSE_OF.to_string(), original.to_string()),
        (SWITCHOVER.to_string(), switchover.to_string()),
    ]);
    let labels = all
        .iter()
        .filter(|(_, v)| v.len() <= MAX_LABEL_VALUE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (labels, all)
}

fn destination_root(c: &SyncConfig) -> &str {
    c.destination_root_path.as_deref().unwrap_or(&c.root_path)
}

/// Whether `a` and `b` copy the same tree the same way: the Databases and roots (an absent
/// destinationRootPath is the rootPath).
pub fn same_copy(a: &SyncConfig, b: &SyncConfig) -> bool {
    a.source_name == b.source_name
        && a.destination_name == b.destination_name
        && a.root_path == b.root_path
        && destination_root(a) == destination_root(b)
}

/// Why an existing LiveSynchronization named like the reverse cannot be used as it.
pub fn not_the_reverse(existing: &LiveSynchronization, want: &SyncConfig) -> Option<String> {
    if same_copy(&existing.spec.config, want) {
        return None;
    }
    let c = &existing.spec.config;
    Some(format!(
        "LiveSynchronization {} exists and is not the reverse stream: it copies {}:{} to {}:{}, the reverse copies {}:{} to {}:{}; set spec.reverseName to another name",
        existing.metadata.name.as_deref().unwrap_or_default(),
        c.source_name,
        c.root_path,
        c.destination_name,
        destination_root(c),
        want.source_name,
        want.root_path,
        want.destination_name,
        destination_root(want),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ls(name: &str, config: serde_json::Value) -> LiveSynchronization {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes", "config": config,
                     "verifyInterval": "1m", "maxLag": "3s", "resyncInterval": "0s", "repair": true,
                     "applyDelay": "5m", "heartbeat": {"enabled": true}, "suspend": true}
        }))
        .unwrap()
    }

    #[test]
    fn the_reverse_swaps_databases_and_roots_and_keeps_the_checks() {
        let l = ls(
            "live",
            serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "/app",
                "destinationRootPath": "/copy", "deletionGuard": {"maxDeletes": 7}}),
        );
        let r = reverse_spec(&l.spec);
        assert_eq!(
            (
                r.config.source_name.as_str(),
                r.config.destination_name.as_str()
            ),
            ("b", "a")
        );
        assert_eq!(r.config.root_path, "/copy");
        assert_eq!(r.config.destination_root_path.as_deref(), Some("/app"));
        assert_eq!(r.config.deletion_guard, l.spec.config.deletion_guard);
        assert_eq!(
            (
                r.verify_interval.as_str(),
                r.max_lag.as_str(),
                r.resync_interval.as_str()
            ),
            ("1m", "3s", "0s")
        );
        assert!(r.repair && !r.suspend && !r.heartbeat.enabled);
        assert_eq!(r.apply_delay, "0s");
        // Swapped back, it is the original copy: a failback finds the original.
        assert!(same_copy(&reverse_spec(&r).config, &l.spec.config));

        // No destinationRootPath: none on the reverse either.
        let plain = ls(
            "live",
            serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "/app"}),
        );
        let r = reverse_spec(&plain.spec);
        assert_eq!(
            (r.config.root_path.as_str(), r.config.destination_root_path),
            ("/app", None)
        );
    }

    #[test]
    fn an_existing_reverse_is_reused_and_another_stream_is_refused() {
        let plain =
            serde_json::json!({"sourceName": "b", "destinationName": "a", "rootPath": "/app"});
        let want = ls("x", plain.clone()).spec.config;
        // destinationRootPath equal to the rootPath reads as absent.
        let explicit = ls(
            "live-reverse",
            serde_json::json!({"sourceName": "b", "destinationName": "a", "rootPath": "/app",
                "destinationRootPath": "/app"}),
        );
        assert_eq!(not_the_reverse(&explicit, &want), None);
        let other = ls(
            "live-reverse",
            serde_json::json!({"sourceName": "b", "destinationName": "c", "rootPath": "/app"}),
        );
        let m = not_the_reverse(&other, &want).unwrap();
        assert!(
            m.contains("it copies b:/app to c:/app, the reverse copies b:/app to a:/app"),
            "{m}"
        );
        assert!(m.contains("spec.reverseName"), "{m}");
    }

    #[test]
    fn marks_name_the_original_and_the_switchover() {
        let (labels, annotations) = reverse_marks("live", &"s".repeat(70));
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[REVERSE_OF], "live");
        assert_eq!(annotations[SWITCHOVER].len(), 70);
    }
}
