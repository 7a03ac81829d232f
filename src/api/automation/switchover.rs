//! Switchover: make a LiveSynchronization's destination the primary, once, like a Job.
// Several printcolumn(...) entries repeat `type_ = ...`; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DURATION_RULE;

fn default_timeout() -> String {
    "2m".into()
}

/// Whether the old primary (the stream's source) is expected to answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwitchoverMode {
    /// The source answers: wait for the stream, prove the copy equal, report 0 changes lost
    /// only when that was proven. Refused while the source is unreachable.
    #[default]
    Planned,
    /// The source is lost (or you say go): stop the stream and report the data-loss window.
    Unplanned,
}

/// How writes at the old primary are stopped during a planned switchover.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FenceSpec {
    /// Not at all: stop the applications first, or verification fails while they write.
    #[default]
    None,
    /// Make the source tree read-only for everyone but the operator's identity (its Database
    /// credentials), recording the original ACLs so they can be restored exactly.
    Acl,
}

/// Makes a LiveSynchronization's destination the primary: planned (zero data loss, proven)
/// or unplanned (the data-loss window reported), optionally starting the reverse stream.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "automation.astronetes.io",
    version = "v1alpha1",
    kind = "Switchover",
    namespaced,
    status = "SwitchoverStatus",
    shortname = "swo",
    category = "astronetes",
    doc = "Switchover promotes the destination of a LiveSynchronization to primary, once",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Live Synchronization",
        type_ = "string",
        json_path = ".spec.liveSynchronizationName"
    ),
    printcolumn(name = "RTO", type_ = "string", json_path = ".status.rto"),
    printcolumn(
        name = "Data Loss",
        type_ = "string",
        json_path = ".status.dataLoss.summary"
    ),
    printcolumn(
        name = "Reverse",
        type_ = "string",
        json_path = ".status.reverseLiveSynchronizationName",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Switchover cannot be changed once created: create a new one"))]
#[x_kube(validation = Rule::new("self.mode != 'unplanned' || self.fence != 'acl'").message("spec.fence: acl applies to a planned switchover only: an unplanned one cannot reach the source"))]
pub struct SwitchoverSpec {
    /// The LiveSynchronization (same namespace) whose destination becomes the primary.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must name a LiveSynchronization"))]
    #[schemars(length(max = 253))]
    pub live_synchronization_name: String,
    /// planned (default) or unplanned.
    #[serde(default)]
    pub mode: SwitchoverMode,
    /// planned only: none (default) or acl.
    #[serde(default)]
    pub fence: FenceSpec,
    /// Create the reverse LiveSynchronization (new primary to old), so that failing back is
    /// one more Switchover.
    #[serde(default)]
    pub reverse: bool,
    /// Name of the reverse LiveSynchronization (default: `<liveSynchronizationName>-reverse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[schemars(length(max = 253))]
    pub reverse_name: Option<String>,
    /// How long a planned switchover waits for the stream to catch up and the copy to verify
    /// equal before it rolls back, e.g. 2m (the default).
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 2m"))]
    #[schemars(length(max = 64))]
    pub timeout: String,
}

impl SwitchoverSpec {
    /// The mode as the metrics' `mode` label spells it.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            SwitchoverMode::Planned => "planned",
            SwitchoverMode::Unplanned => "unplanned",
        }
    }
}

/// Where a Switchover is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SwitchoverPhase {
    #[default]
    Pending,
    Running,
    /// The new primary is promoted.
    Complete,
    /// Refused or failed (see the Failed condition; a planned one rolled back).
    Failed,
}

impl SwitchoverPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, SwitchoverPhase::Complete | SwitchoverPhase::Failed)
    }
}

/// One step and how it went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStep {
    /// Preflight, Fence, CatchUp, StopStream, Verify, Promote, Reverse or Rollback.
    pub name: String,
    /// Running, Succeeded, Failed or Skipped.
    pub state: String,
    pub start_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// How much was lost: proven zero (planned), or the window (unplanned).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataLossStatus {
    /// True only when the verifier showed the new primary equal to the quiet old one.
    pub proven: bool,
    /// Changes lost: 0 only when proven; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_lost: Option<u64>,
    /// One line, e.g. "0 (verified)" or "up to 12s (unverified)".
    pub summary: String,
    /// Planned: every source change up to this zxid is on the new primary (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_zxid: Option<String>,
    /// Unplanned: the last verification that found both trees equal, and up to which
    /// source zxid (hex) it proved the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_zxid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// Unplanned: source time of the newest change the stream applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_applied_time: Option<Time>,
    /// Unplanned: the last instant the stream had nothing pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up_time: Option<Time>,
    /// Unplanned: the last instant the source answered the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_last_seen_time: Option<Time>,
    /// Unplanned: changes made at the source in this window may be missing, e.g. 12s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    /// Unplanned with the source still answering: nodes that differ (changes not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergent_nodes: Option<u64>,
}

/// What the verifier showed of the two trees.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverVerification {
    /// Equal, Diverged or NotRun.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_root_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_root_hash: Option<String>,
    #[serde(default)]
    pub source_nodes: u64,
    #[serde(default)]
    pub destination_nodes: u64,
    #[serde(default)]
    pub divergent_nodes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub divergent_paths: Vec<String>,
}

/// The fence of a planned switchover.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FenceStatus {
    /// Nodes made read-only on the old primary.
    pub nodes: u64,
    /// The znode on the old primary holding the original ACLs.
    pub record: String,
    /// The fence was lifted again (a rollback).
    #[serde(default)]
    pub lifted: bool,
}

/// Observed state of a Switchover.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: SwitchoverPhase,
    /// Complete and Failed, as on a Job: `kubectl wait --for=condition=Complete`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The old and the new primary (the stream's source and destination Databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<SwitchoverStep>,
    /// From the request to the new primary promoted, e.g. 4.2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss: Option<DataLossStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<SwitchoverVerification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceStatus>,
    /// The reverse LiveSynchronization created (new primary to old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_live_synchronization_name: Option<String>,
}
