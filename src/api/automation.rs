//! `automation.astronetes.io/v1alpha1`: what to copy, once, on a schedule or continuously.
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
    /// Snapshots a ZooKeeper tree (sourceName: a Database) into a Bucket (destinationName).
    #[serde(rename = "zookeeper-to-bucket")]
    ZookeeperToBucket,
    /// Restores a snapshot from a Bucket (sourceName) into a Database (destinationName).
    #[serde(rename = "bucket-to-zookeeper")]
    BucketToZookeeper,
}

impl Plugin {
    /// What the plugin moves.
    pub fn direction(self) -> Direction {
        match self {
            Plugin::ZookeeperToZookeeperNodes | Plugin::ZookeeperNodesToZookeeper => {
                Direction::Copy
            }
            Plugin::ZookeeperToBucket => Direction::Backup,
            Plugin::BucketToZookeeper => Direction::Restore,
        }
    }
}

/// Ensemble to ensemble, ensemble to bucket, or bucket to ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Copy,
    Backup,
    Restore,
}

/// How many snapshots a backup keeps in its bucket folder. It applies only after the new
/// snapshot was read back and checked (`verify` must be on), counts only verified snapshots
/// that are not suspect, and never deletes the newest snapshot or the newest verified one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest this many verified snapshots; older snapshots of any kind go once this
    /// many verified ones are newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("must be at least 1"))]
    pub keep_last: Option<u32>,
    /// Delete snapshots older than this, e.g. 720h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 720h"))]
    #[schemars(length(max = 64))]
    pub max_age: Option<String>,
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
    /// Bucket plugins: the folder of the snapshots in the bucket (default for a backup:
    /// `<namespace>/<sourceName>`; required for a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub bucket_path: Option<String>,
    /// bucket-to-zookeeper: the snapshot to restore, by name, or `latest` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub snapshot: Option<String>,
    /// bucket-to-zookeeper: the last snapshot taken at or before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_before: Option<Time>,
    /// zookeeper-to-bucket: snapshots to keep in the folder after a successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Limits of the deletion guard (default: more than 100 nodes and more than 10% of the
    /// destination tree in one pass or one live window are held until released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_guard: Option<DeletionGuardSpec>,
}

/// The deletion guard: a pass (or a live window) that would delete more destination nodes
/// than both limits allow deletes nothing until a person releases it with the annotation
/// `automation.astronetes.io/release-deletions` set to the token shown in the status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeletionGuardSpec {
    /// Deletes are held only above this many nodes; 0 turns this limit off.
    #[serde(default = "default_max_deletes")]
    #[x_kube(validation = Rule::new("self >= 0").message("must not be negative"))]
    pub max_deletes: i64,
    /// ...and only above this share of the destination tree, in percent; 0 turns this limit
    /// off. With both limits 0 there is no guard.
    #[serde(default = "default_max_delete_percent")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("must be a percentage from 0 to 100"))]
    pub max_delete_percent: i32,
    /// LiveSynchronization only: how long every delete waits so that a whole burst is counted
    /// before any of it lands, e.g. 2s (the default). 0s applies deletes at once, and a
    /// deleteall then loses up to the limits before the guard trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("must be a duration such as 2s"))]
    #[schemars(length(max = 64))]
    pub delete_delay: Option<String>,
}

fn default_max_deletes() -> i64 {
    crate::engine::guard::DEFAULT_MAX_DELETES as i64
}

fn default_max_delete_percent() -> i32 {
    crate::engine::guard::DEFAULT_MAX_DELETE_PERCENT as i32
}

/// The annotation a person sets to the status's `releaseToken` to let held deletes through.
pub const RELEASE_DELETIONS_ANNOTATION: &str = "automation.astronetes.io/release-deletions";

/// What the deletion guard holds, and the last release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionGuardStatus {
    /// Deletes held now (absent when none are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldDeletes>,
    /// The token of the last release that was applied (a token works once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_released_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_released_time: Option<Time>,
}

/// Deletes the guard did not apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldDeletes {
    /// MassDeletionHeld, or SourceEmptyHeld (nothing at all was written).
    pub reason: String,
    /// Destination nodes that would be deleted.
    pub deletes: u64,
    /// Destination nodes under the root when it was decided.
    pub destination_nodes: u64,
    pub source_nodes: u64,
    /// Share of the destination that would go, e.g. 99.9%.
    pub percent: String,
    /// Some of the paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_paths: Vec<String>,
    pub since: Time,
    /// Set the release annotation to this to let exactly these deletes through.
    pub release_token: String,
    /// The command that does it.
    pub release_command: String,
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

/// A duration as Kubernetes writes them (`30s`, `5m`, `1h30m`, `250ms`): a number followed by a
/// unit, repeated. Checked at admission by this rule, parsed by [`parse_duration`].
const DURATION_RULE: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')";

/// Parses a Kubernetes-style duration such as `30s`, `5m`, `1h30m` or `250ms`. `0s` is zero.
pub fn parse_duration(field: &str, s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{field}: {s:?} is not a duration such as 30s, 5m, 1h30m or 250ms");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(bad());
        };
        total += value * unit;
        rest = &rest[len..];
    }
    if !total.is_finite() || total > 10.0 * 365.0 * 86400.0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(total))
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
