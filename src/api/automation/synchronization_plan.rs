//! SynchronizationPlan: Synchronizations on a cron schedule, like a CronJob.
// Several printcolumn(...) entries repeat `type_ = ...`; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SynchronizationSpec;

/// What to do when a slot comes while the previous run is still active.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start the new run anyway.
    Allow,
    /// Skip the new slot.
    #[default]
    Forbid,
    /// Stop the active run and start the new one.
    Replace,
}

fn three() -> u32 {
    3
}

fn one() -> u32 {
    1
}

/// The Synchronization a plan creates at each slot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SynchronizationTemplate {
    /// Labels and annotations copied to each Synchronization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    pub spec: SynchronizationSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Periodic copies on a cron schedule, like a CronJob.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "automation.astronetes.io",
    version = "v1alpha1",
    kind = "SynchronizationPlan",
    namespaced,
    status = "SynchronizationPlanStatus",
    shortname = "syncplan",
    category = "astronetes",
    doc = "SynchronizationPlan creates a Synchronization at every slot of a cron schedule",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.activeCount"),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    // A string, not a date: kubectl shows a future date as "<invalid>", the time itself as it
    // is (RFC 3339, UTC).
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SynchronizationPlanSpec {
    /// Cron schedule: 5 fields (minute hour day-of-month month day-of-week) or a macro such as
    /// @hourly, @daily, @weekly, @monthly, @yearly.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must be a cron expression"))]
    #[schemars(length(max = 256))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. Europe/Madrid (default: UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Stop creating Synchronizations; runs already started go on.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a slot comes while a run is active.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A slot missed by more than this (e.g. while the operator was down) is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("must not be negative"))]
    pub starting_deadline_seconds: Option<i64>,
    /// Succeeded Synchronizations kept.
    #[serde(default = "three")]
    pub successful_history_limit: u32,
    /// Failed Synchronizations kept.
    #[serde(default = "one")]
    pub failed_history_limit: u32,
    /// The Synchronization to create.
    pub template: SynchronizationTemplate,
}

/// Observed state of a SynchronizationPlan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SynchronizationPlanStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (the schedule is valid and the plan is running or suspended).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Names of the running Synchronizations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    #[serde(default)]
    pub active_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
}
