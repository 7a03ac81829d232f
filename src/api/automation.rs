//! `automation.astronetes.io/v1alpha1`: what to copy, once or on a schedule.
// Several printcolumn(...) entries repeat `type_ = ...`; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The replication plugin. `zookeeper-nodes-to-zookeeper` is accepted as an alias, as written
/// in some of the product's documentation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Plugin {
    /// Replicates from one Zookeeper instance to another one directly.
    #[default]
    #[serde(rename = "zookeeper-to-zookeeper-nodes")]
    ZookeeperToZookeeperNodes,
    /// Alias of `zookeeper-to-zookeeper-nodes`.
    #[serde(rename = "zookeeper-nodes-to-zookeeper")]
    ZookeeperNodesToZookeeper,
}

/// What happens to ACLs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AclPolicy {
    /// Copy each node's ACL exactly (the verifier compares them too).
    #[default]
    Copy,
    /// Leave ACLs alone: new nodes get the destination's open ACL, and the verifier ignores ACLs.
    Ignore,
}

/// What happens to ephemeral nodes, which belong to sessions of the source ensemble.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EphemeralPolicy {
    /// Leave them out.
    #[default]
    Skip,
    /// Copy them as persistent nodes.
    Persistent,
}

fn yes() -> bool {
    true
}

/// Which ensembles and which tree.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("self.sourceName != self.destinationName || (has(self.destinationRootPath) && self.destinationRootPath != self.rootPath && !self.destinationRootPath.startsWith(self.rootPath == '/' ? '/' : self.rootPath + '/') && !self.rootPath.startsWith(self.destinationRootPath == '/' ? '/' : self.destinationRootPath + '/'))").message("spec.config: source and destination are the same Database and their trees overlap"))]
pub struct SyncConfig {
    /// Database to read from (same namespace).
    #[x_kube(validation = Rule::new("size(self) > 0").message("must name a Database"))]
    #[schemars(length(max = 253))]
    pub source_name: String,
    /// Database to write to (same namespace).
    #[x_kube(validation = Rule::new("size(self) > 0").message("must name a Database"))]
    #[schemars(length(max = 253))]
    pub destination_name: String,
    /// Root of the copied tree on the source, e.g. /kafka.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path"))]
    #[x_kube(validation = Rule::new("self == '/' || (!self.endsWith('/') && !self.contains('//'))").message("must not end with / or contain //"))]
    #[x_kube(validation = Rule::new("self != '/zookeeper' && !self.startsWith('/zookeeper/')").message("must not be /zookeeper or under it: that tree belongs to the server"))]
    #[schemars(length(max = 4096))]
    pub root_path: String,
    /// Root of the copy on the destination (default: rootPath).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path"))]
    #[x_kube(validation = Rule::new("self == '/' || (!self.endsWith('/') && !self.contains('//'))").message("must not end with / or contain //"))]
    #[x_kube(validation = Rule::new("self != '/zookeeper' && !self.startsWith('/zookeeper/')").message("must not be /zookeeper or under it: that tree belongs to the server"))]
    #[schemars(length(max = 4096))]
    pub destination_root_path: Option<String>,
    /// Delete destination nodes that the source does not have.
    #[serde(default = "yes")]
    pub prune: bool,
    /// Copy or ignore ACLs.
    #[serde(default)]
    pub acl_policy: AclPolicy,
    /// Skip ephemeral nodes or copy them as persistent.
    #[serde(default)]
    pub ephemeral_policy: EphemeralPolicy,
    /// Plan and report the changes without writing.
    #[serde(default)]
    pub dry_run: bool,
    /// Run the verifier after the copy and report whether both trees are equal.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Globs of source paths to create as container nodes. ZooKeeper shows containers to
    /// clients as persistent nodes, so they can only be recreated by rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_paths: Vec<String>,
    /// Source paths to create as TTL nodes (the destination must enable extended types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ttl_paths: Vec<TtlRule>,
}

/// Paths whose nodes are created as TTL nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TtlRule {
    /// Glob of source paths, e.g. /locks/*.
    pub path: String,
    /// Time to live in seconds.
    #[x_kube(validation = Rule::new("self > 0").message("must be positive"))]
    pub seconds: i64,
}

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
}

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
    printcolumn(name = "Next", type_ = "date", json_path = ".status.nextScheduleTime"),
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
