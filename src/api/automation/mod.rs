//! `automation.astronetes.io/v1alpha1`: what to copy, once, on a schedule or continuously.
//! One file per resource; here what they share: the plugin, the copy's config, the deletion
//! guard and durations.

mod live_synchronization;
mod switchover;
mod synchronization;
mod synchronization_plan;

pub use live_synchronization::*;
pub use switchover::*;
pub use synchronization::*;
pub use synchronization_plan::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
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

/// A duration as Kubernetes writes them (`30s`, `5m`, `1h30m`, `250ms`): a number followed by a
/// unit, repeated. Checked at admission by this rule, parsed by [`parse_duration`].
pub(crate) const DURATION_RULE: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')";

/// The longest duration accepted, ten years: longer is a typo, and would overflow some
/// timestamps it is added to.
const MAX_DURATION_SECS: f64 = 10.0 * 365.0 * 86400.0;

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
    if !total.is_finite() || total > MAX_DURATION_SECS {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(total))
}
