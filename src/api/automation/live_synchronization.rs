//! LiveSynchronization: a full copy, then every change streamed, with its verifier.
// Several printcolumn(...) entries repeat `type_ = ...`; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{parse_duration, DeletionGuardStatus, Plugin, SyncConfig, DURATION_RULE};

fn default_verify_interval() -> String {
    "5m".into()
}

fn default_max_lag() -> String {
    "30s".into()
}

fn default_resync_interval() -> String {
    "10m".into()
}

fn default_heartbeat_interval() -> String {
    "10s".into()
}

/// The opt-in heartbeat: a znode on the source that the operator rewrites every interval, so
/// lag is measured end to end even while the source is idle, and a stalled stream shows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Write the heartbeat znode.
    #[serde(default)]
    pub enabled: bool,
    /// Source path of the heartbeat znode; must be under spec.config.rootPath (default:
    /// `<rootPath>/.resiliency-heartbeat`). It is replicated like any other node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path"))]
    #[schemars(length(max = 4096))]
    pub path: Option<String>,
    /// How often the heartbeat is written, e.g. 10s.
    #[serde(default = "default_heartbeat_interval")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 10s"))]
    #[schemars(length(max = 64))]
    pub interval: String,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            enabled: false,
            path: None,
            interval: default_heartbeat_interval(),
        }
    }
}

/// Continuous replication: a full copy, then every change streamed from the source, with a
/// lag-aware verifier proving the copy right.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "automation.astronetes.io",
    version = "v1alpha1",
    kind = "LiveSynchronization",
    namespaced,
    status = "LiveSynchronizationStatus",
    shortname = "livesync",
    category = "astronetes",
    doc = "LiveSynchronization streams every change of an asset to another one continuously",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.config.sourceName",
        priority = 1
    ),
    printcolumn(
        name = "Destination",
        type_ = "string",
        json_path = ".spec.config.destinationName",
        priority = 1
    ),
    printcolumn(name = "Lag", type_ = "string", json_path = ".status.lag"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Divergent",
        type_ = "integer",
        json_path = ".status.divergentNodes"
    ),
    printcolumn(
        name = "Last Good Sync",
        type_ = "date",
        json_path = ".status.lastGoodSyncTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LiveSynchronizationSpec {
    /// Replication plugin.
    pub plugin: Plugin,
    /// Plugin configuration, as on a Synchronization (`verify` and `dryRun` do not apply).
    pub config: SyncConfig,
    /// How often the lag-aware verifier compares both trees, e.g. 5m; 0s turns it off.
    #[serde(default = "default_verify_interval")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 5m"))]
    #[schemars(length(max = 64))]
    pub verify_interval: String,
    /// The lag objective (RPO), e.g. 30s: Ready turns False while the lag is above it.
    #[serde(default = "default_max_lag")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 30s"))]
    #[schemars(length(max = 64))]
    pub max_lag: String,
    /// The opt-in heartbeat znode (off by default).
    #[serde(default)]
    pub heartbeat: Heartbeat,
    /// Re-sync subtrees the verifier confirms divergent (off by default: report only).
    #[serde(default)]
    pub repair: bool,
    /// A full anti-entropy re-walk this often, e.g. 10m; 0s: only after a gap. ZooKeeper fires
    /// no watch event for an ACL change, so this is also the RPO of ACL changes.
    #[serde(default = "default_resync_interval")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 10m"))]
    #[schemars(length(max = 64))]
    pub resync_interval: String,
    /// Delayed apply, e.g. 10m: each change reaches the copy only once it is this old at the
    /// source, so a destructive change can be stopped (suspend this resource) before it lands.
    /// The lag objective counts on top of it; there is no periodic re-walk. 0s (default): off.
    #[serde(default = "default_apply_delay")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 10m"))]
    #[schemars(length(max = 64))]
    pub apply_delay: String,
    /// Stop streaming, keeping the status and the destination as they are; resuming runs a
    /// full sync first, as after a gap.
    #[serde(default)]
    pub suspend: bool,
    /// Keep the destination fenced: it is an old primary a Switchover fenced (`fence: acl`),
    /// and every ACL the stream writes is the fenced form of the source's (read-only for all
    /// but the destination Database's credentials), so applications still pointed at it are
    /// refused. Set on the reverse stream a Switchover creates; needs destination credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fence_destination: bool,
    /// Before each full sync that follows a start or a gap, compare the trees and report in
    /// status.destinationDivergence (and an Event) what the destination holds that the sync
    /// deletes or overwrites. Set on the reverse stream a Switchover creates: the old primary
    /// may hold writes made after the split.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compare_before_sync: bool,
}

/// What the destination held, compared by the verifier before a full sync, that the sync
/// deletes (under the deletion guard) or overwrites.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationDivergenceStatus {
    /// When the trees were compared (the full sync began right after).
    pub time: Time,
    pub source_nodes: u64,
    pub destination_nodes: u64,
    /// Nodes only on the destination: the sync deletes them, unless the deletion guard
    /// holds the deletes (see status.deletionGuard).
    pub only_on_destination: u64,
    /// Nodes whose data, ACL or kind differ: the sync overwrote them with the source's.
    pub changed: u64,
    /// Nodes only on the source: created by the sync (nothing of the destination's lost).
    pub only_on_source: u64,
    /// Up to 20 of the destination's nodes deleted or overwritten, as `path (what differs)`,
    /// relative to the roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

fn default_apply_delay() -> String {
    "0s".into()
}

/// Where a LiveSynchronization is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LivePhase {
    /// Not started yet (waiting for its Databases).
    #[default]
    Pending,
    /// Running a full sync: the first one, or anti-entropy after a gap.
    Syncing,
    /// Streaming changes.
    Streaming,
    /// Waiting to retry after an error.
    Retrying,
    /// Stopped on an error a retry cannot fix (see the Ready condition).
    Failed,
    /// Stopped by `spec.suspend`.
    Suspended,
}

/// Observed state of a LiveSynchronization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveSynchronizationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: LivePhase,
    /// Ready, Streaming, CaughtUp, InSync, SourceReachable, DestinationReachable.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Current replication lag, e.g. 12ms (0s when caught up, or the heartbeat's lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Changes applied since the stream started in this operator process.
    #[serde(default)]
    pub changes_applied: u64,
    /// Full syncs run (the first one and every anti-entropy re-walk).
    #[serde(default)]
    pub full_syncs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_sync_time: Option<Time>,
    /// Nodes the last verification confirmed divergent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergent_nodes: Option<u64>,
    /// Up to 10 confirmed divergent paths (relative to the roots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub divergent_paths: Vec<String>,
    /// Suspects of the last verification that could not be judged (still changing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecided_nodes: Option<u64>,
    /// Source nodes counted by the last verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_nodes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_root_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_root_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    /// The last verification that found both trees equal: the last known good copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_sync_time: Option<Time>,
    /// Subtrees re-synced by `repair`.
    #[serde(default)]
    pub repaired_paths: u64,
    /// When the last heartbeat reached the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// What the deletion guard holds, and the last release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_guard: Option<DeletionGuardStatus>,
    /// Delayed apply: changes recorded and waiting their delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_changes: Option<u64>,
    /// `compareBeforeSync`: what the last compared full sync found on the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_divergence: Option<DestinationDivergenceStatus>,
}

impl LiveSynchronizationSpec {
    /// Whether the verifier runs: `verifyInterval` is a duration other than 0s.
    pub(crate) fn verify_interval_enabled(&self) -> bool {
        parse_duration("spec.verifyInterval", &self.verify_interval).is_ok_and(|d| !d.is_zero())
    }
}
