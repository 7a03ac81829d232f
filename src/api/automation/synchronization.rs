//! Synchronization: one copy of a tree, run once like a Job.
// Several printcolumn(...) entries repeat `type_ = ...`; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DeletionGuardStatus, Plugin, SyncConfig};

/// One copy of a tree, run once like a Job.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "automation.astronetes.io",
    version = "v1alpha1",
    kind = "Synchronization",
    namespaced,
    status = "SynchronizationStatus",
    shortname = "sync",
    category = "astronetes",
    doc = "Synchronization copies the content of an asset to another one once",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.config.sourceName"
    ),
    printcolumn(
        name = "Destination",
        type_ = "string",
        json_path = ".spec.config.destinationName"
    ),
    printcolumn(
        name = "Root",
        type_ = "string",
        json_path = ".spec.config.rootPath",
        priority = 1
    ),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Verified\")].status"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SynchronizationSpec {
    /// Replication plugin.
    pub plugin: Plugin,
    /// Plugin configuration.
    pub config: SyncConfig,
}

/// Where a Synchronization is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    /// The copy finished, but the deletion guard held its deletes: it runs again, deleting
    /// them, once released (see status.deletionGuard).
    Held,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the copy did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncCounters {
    pub source_nodes: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub skipped: u64,
    pub bytes_written: u64,
    pub write_ops: u64,
    /// Copy passes run (more than one after a lost connection).
    pub attempts: u32,
}

/// What the verifier found after the copy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub equal: bool,
    pub source_root_hash: String,
    pub destination_root_hash: String,
    pub source_nodes: u64,
    pub destination_nodes: u64,
    pub divergent_nodes: u64,
    /// Up to 10 divergent paths (relative to the roots) with their class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub divergent_paths: Vec<String>,
    pub duration_seconds: f64,
}

/// Observed state of a Synchronization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SynchronizationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// Ready, Complete, Failed, Verified, SourceReachable, DestinationReachable.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Wall time of the run, e.g. 3.2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Runs started; above 1 when the operator restarted a run it found unfinished.
    #[serde(default)]
    pub runs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<SyncCounters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Bucket plugins: the snapshot written or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStatus>,
    /// What the deletion guard holds, and the last release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_guard: Option<DeletionGuardStatus>,
}

/// A snapshot a backup wrote or a restore read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub name: String,
    /// Where, without credentials, e.g. s3://bucket/ns/db.
    pub location: String,
    pub nodes: u64,
    pub data_bytes: u64,
    /// Compressed size in the bucket.
    pub size_bytes: u64,
    /// The verifier's root hash of the captured tree.
    pub root_hash: String,
    /// Snapshots deleted by retention after this backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// The node count dropped past the deletion guard (more than 100 nodes and more than 10%)
    /// against the last verified snapshot: the snapshot is kept, but retention does not count
    /// it, and it causes no deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspect: bool,
    /// Why it is suspect, e.g. "node count dropped from 1200 to 1 (−99.9%) against snapshot
    /// X".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect_reason: Option<String>,
}

impl From<&resiliency_core::runs::Snapshot> for SnapshotStatus {
    fn from(s: &resiliency_core::runs::Snapshot) -> SnapshotStatus {
        SnapshotStatus {
            name: s.name.clone(),
            location: s.location.clone(),
            nodes: s.nodes,
            data_bytes: s.data_bytes,
            size_bytes: s.size_bytes,
            root_hash: s.root_hash.clone(),
            pruned: s.pruned.clone(),
            suspect: s.suspect,
            suspect_reason: s.suspect_reason.clone(),
        }
    }
}
