//! The Astronetes metric names users already alert on, computed at scrape time from the
//! controllers' caches (as kube-state-metrics does), so a deleted object's series go with it:
//!
//! - `astronetes_asset_status{kind,namespace,name,status}`: 1 for the asset's status, 0 for the
//!   other values (Ready, Progressing, Terminating, Unknown, Failed). Kinds: Database,
//!   Bucket and KubernetesCluster.
//! - `astronetes_synchronization_status{kind,namespace,name,status}`: the same for
//!   Synchronization, SynchronizationPlan and LiveSynchronization.
//! - `astronetes_total_synchronized_objects{kind,namespace,name,status}`: znodes by verification
//!   status: Sync (verified equal), OutOfSync (confirmed divergent), Unknown (not judged yet,
//!   or a copy run without verification).
//!
//! A controller exports the kinds it leads, so a standby replica exports none of them.

use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

use crate::api::assets::{Bucket, Database, KubernetesCluster};
use crate::api::automation::{
    LivePhase, LiveSynchronization, Phase, Synchronization, SynchronizationPlan,
};
use crate::api::conditions::{find, types, ConditionStatus, Reason};

pub const ASSET_STATUS: &str = "astronetes_asset_status";
pub const SYNCHRONIZATION_STATUS: &str = "astronetes_synchronization_status";
pub const TOTAL_SYNCHRONIZED_OBJECTS: &str = "astronetes_total_synchronized_objects";

/// Every compatibility name, for the tests that check rules and dashboards.
pub const ALL: &[&str] = &[
    ASSET_STATUS,
    SYNCHRONIZATION_STATUS,
    TOTAL_SYNCHRONIZED_OBJECTS,
];

/// The status values of the two `_status` metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ready,
    Progressing,
    Terminating,
    Unknown,
    Failed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Ready,
        Status::Progressing,
        Status::Terminating,
        Status::Unknown,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "Ready",
            Status::Progressing => "Progressing",
            Status::Terminating => "Terminating",
            Status::Unknown => "Unknown",
            Status::Failed => "Failed",
        }
    }
}

/// Znodes by verification status: (Sync, OutOfSync, Unknown).
pub type Objects = (u64, u64, u64);

/// Reasons that need someone to act (as opposed to waiting).
fn is_failure(reason: &str) -> bool {
    [
        Reason::Unreachable,
        Reason::AuthFailed,
        Reason::SecretNotFound,
        Reason::SecretInvalid,
        Reason::InvalidSpec,
        Reason::DatabaseNotFound,
        Reason::BucketNotFound,
        Reason::KubernetesClusterNotFound,
        Reason::CopyFailed,
        Reason::MassDeletionHeld,
        Reason::SourceEmptyHeld,
        Reason::WriterConflict,
        Reason::ReplicationLoop,
        Reason::SourceFenced,
        Reason::NodeTooLarge,
    ]
    .iter()
    .any(|r| r.as_str() == reason)
}

/// From the Ready condition: True is Ready, False for a failure reason is Failed, False for
/// anything else (being checked, starting) is Progressing; no condition yet is Unknown.
fn from_ready(conditions: &[Condition]) -> Status {
    let Some(c) = find(conditions, types::READY) else {
        return Status::Unknown;
    };
    match ConditionStatus::of(c) {
        ConditionStatus::True => Status::Ready,
        ConditionStatus::False if is_failure(&c.reason) => Status::Failed,
        ConditionStatus::False => Status::Progressing,
        ConditionStatus::Unknown => Status::Unknown,
    }
}

pub fn synchronization_status(s: &Synchronization) -> Status {
    if s.metadata.deletion_timestamp.is_some() {
        return Status::Terminating;
    }
    match s.status.as_ref().map(|st| st.phase) {
        None => Status::Unknown,
        Some(Phase::Pending) | Some(Phase::Running) => Status::Progressing,
        Some(Phase::Succeeded) => Status::Ready,
        // Held deletes wait for a person, as a failure does.
        Some(Phase::Failed) | Some(Phase::Held) => Status::Failed,
    }
}

pub fn plan_status(p: &SynchronizationPlan) -> Status {
    if p.metadata.deletion_timestamp.is_some() {
        return Status::Terminating;
    }
    p.status
        .as_ref()
        .map(|s| from_ready(&s.conditions))
        .unwrap_or(Status::Unknown)
}

pub fn live_status(l: &LiveSynchronization) -> Status {
    if l.metadata.deletion_timestamp.is_some() {
        return Status::Terminating;
    }
    match &l.status {
        None => Status::Unknown,
        Some(s) if s.phase == LivePhase::Failed => Status::Failed,
        Some(s) => from_ready(&s.conditions),
    }
}

/// A one-shot copy: verified nodes are Sync or OutOfSync; without a verification every copied
/// node is Unknown.
pub fn synchronization_objects(s: &Synchronization) -> Objects {
    let Some(st) = &s.status else {
        return (0, 0, 0);
    };
    match (&st.verification, &st.counters) {
        (Some(v), _) => (
            v.source_nodes.saturating_sub(v.divergent_nodes),
            v.divergent_nodes,
            0,
        ),
        (None, Some(c)) => (0, 0, c.source_nodes),
        (None, None) => (0, 0, 0),
    }
}

/// A continuous sync: from its last verification (undecided nodes are Unknown).
pub fn live_objects(l: &LiveSynchronization) -> Objects {
    let Some(st) = &l.status else {
        return (0, 0, 0);
    };
    let divergent = st.divergent_nodes.unwrap_or(0);
    let undecided = st.undecided_nodes.unwrap_or(0);
    match st.source_nodes {
        Some(n) => (
            n.saturating_sub(divergent).saturating_sub(undecided),
            divergent,
            undecided,
        ),
        None => (0, 0, 0),
    }
}

/// One object's samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub status: Status,
    /// Only for synchronizations.
    pub objects: Option<Objects>,
}

impl Sample {
    fn is_asset(&self) -> bool {
        matches!(self.kind, "Database" | "Bucket" | "KubernetesCluster")
    }
}

type Source = Box<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// The conditions of an asset, if it has a status.
type Conditions<K> = fn(&K) -> Option<&[Condition]>;

/// What each running controller exports, by controller name: one per operator process, filled
/// by the controllers it leads and rendered by its `/metrics`.
#[derive(Default)]
pub struct Exports {
    sources: Mutex<Vec<(&'static str, Source)>>,
}

impl Exports {
    fn sources(&self) -> MutexGuard<'_, Vec<(&'static str, Source)>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exports `f`'s samples under `key` until [`Exports::unregister`].
    pub fn register(&self, key: &'static str, f: Source) {
        let mut s = self.sources();
        s.retain(|(k, _)| *k != key);
        s.push((key, f));
    }

    pub fn unregister(&self, key: &'static str) {
        self.sources().retain(|(k, _)| *k != key);
    }

    /// Prometheus text for everything registered now.
    pub fn render(&self) -> String {
        let samples: Vec<Sample> = self.sources().iter().flat_map(|(_, f)| f()).collect();
        render_samples(&samples)
    }

    /// Exports the assets in `store` under `key` as `kind`.
    fn register_assets<K>(
        &self,
        key: &'static str,
        kind: &'static str,
        stores: Vec<Store<K>>,
        conditions: Conditions<K>,
    ) where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let sample = move |o: &K| asset_sample(kind, o, conditions(o));
        self.register(key, from_stores(stores, sample));
    }

    pub fn register_databases(&self, stores: Vec<Store<Database>>) {
        self.register_assets("database", "Database", stores, |d| {
            d.status.as_ref().map(|s| &s.conditions[..])
        });
    }

    pub fn register_buckets(&self, stores: Vec<Store<Bucket>>) {
        self.register_assets("bucket", "Bucket", stores, |b| {
            b.status.as_ref().map(|s| &s.conditions[..])
        });
    }

    pub fn register_kubernetes_clusters(&self, stores: Vec<Store<KubernetesCluster>>) {
        self.register_assets("kubernetescluster", "KubernetesCluster", stores, |k| {
            k.status.as_ref().map(|s| &s.conditions[..])
        });
    }

    pub fn register_synchronizations(&self, stores: Vec<Store<Synchronization>>) {
        self.register(
            "synchronization",
            from_stores(stores, |s: &Synchronization| {
                let objects = Some(synchronization_objects(s));
                sample_of("Synchronization", s, synchronization_status(s), objects)
            }),
        );
    }

    pub fn register_plans(&self, stores: Vec<Store<SynchronizationPlan>>) {
        self.register(
            "synchronizationplan",
            from_stores(stores, |p: &SynchronizationPlan| {
                sample_of("SynchronizationPlan", p, plan_status(p), None)
            }),
        );
    }

    pub fn register_live(&self, stores: Vec<Store<LiveSynchronization>>) {
        self.register(LIVE_KEY, from_stores(stores, live_sample));
    }
}

/// The key LiveSynchronizations are exported under.
pub const LIVE_KEY: &str = "livesynchronization";

/// Unregisters its key when dropped. A controller is aborted, not stopped, when its replica
/// loses the Lease; holding one of these makes its exports go with it, so a standby exports
/// nothing.
pub struct Exported {
    exports: Arc<Exports>,
    key: &'static str,
}

impl Exported {
    pub fn new(exports: Arc<Exports>, key: &'static str) -> Exported {
        Exported { exports, key }
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        self.exports.unregister(self.key);
    }
}

/// The samples of every object in `stores`: one cache per watched namespace (or one for all).
fn from_stores<K, F>(stores: Vec<Store<K>>, f: F) -> Source
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    F: Fn(&K) -> Sample + Send + Sync + 'static,
{
    Box::new(move || {
        stores
            .iter()
            .flat_map(|s| s.state())
            .map(|o| f(&o))
            .collect()
    })
}

/// An asset's sample: Terminating while deleted, else from its Ready condition.
fn asset_sample<K: kube::Resource>(
    kind: &'static str,
    obj: &K,
    conditions: Option<&[Condition]>,
) -> Sample {
    let status = asset_status(obj.meta().deletion_timestamp.is_some(), conditions);
    sample_of(kind, obj, status, None)
}

/// Any asset's status: Terminating while deleted, else from its Ready condition.
pub fn asset_status(deleting: bool, conditions: Option<&[Condition]>) -> Status {
    if deleting {
        return Status::Terminating;
    }
    conditions.map(from_ready).unwrap_or(Status::Unknown)
}

pub fn live_sample(l: &LiveSynchronization) -> Sample {
    sample_of(
        "LiveSynchronization",
        l,
        live_status(l),
        Some(live_objects(l)),
    )
}

/// The sample of `obj`, exported as `kind`.
fn sample_of<K: kube::Resource>(
    kind: &'static str,
    obj: &K,
    status: Status,
    objects: Option<Objects>,
) -> Sample {
    Sample {
        kind,
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        status,
        objects,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample line: `metric{kind,namespace,name,status} value`.
fn write_line(out: &mut String, metric: &str, s: &Sample, status: &str, value: u64) {
    let _ = writeln!(
        out,
        "{metric}{{kind=\"{}\",namespace=\"{}\",name=\"{}\",status=\"{status}\"}} {value}",
        s.kind,
        escape(&s.namespace),
        escape(&s.name),
    );
}

/// Prometheus text for `samples`.
pub fn render_samples(samples: &[Sample]) -> String {
    let mut out = String::new();
    let families: [(&str, &str, bool); 2] = [
        (
            ASSET_STATUS,
            "Status of each asset (1 for its status, 0 for the others)",
            true,
        ),
        (
            SYNCHRONIZATION_STATUS,
            "Status of each synchronization (1 for its status, 0 for the others)",
            false,
        ),
    ];
    for (metric, help, assets) in families {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.is_asset() == assets).collect();
        if mine.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in mine {
            for v in Status::ALL {
                write_line(&mut out, metric, s, v.as_str(), u64::from(s.status == v));
            }
        }
    }
    let with_objects: Vec<(&Sample, Objects)> = samples
        .iter()
        .filter_map(|s| s.objects.map(|o| (s, o)))
        .collect();
    if !with_objects.is_empty() {
        let metric = TOTAL_SYNCHRONIZED_OBJECTS;
        let _ = writeln!(
            out,
            "# HELP {metric} Znodes by verification status: Sync (verified equal), OutOfSync (confirmed divergent), Unknown (not judged)\n# TYPE {metric} gauge"
        );
        for (s, (sync, out_of_sync, unknown)) in with_objects {
            for (status, n) in [
                ("Sync", sync),
                ("OutOfSync", out_of_sync),
                ("Unknown", unknown),
            ] {
                write_line(&mut out, metric, s, status, n);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_controller_aborted_with_its_lease_stops_exporting() {
        let exports = Arc::new(Exports::default());
        exports.register(
            "database",
            Box::new(|| {
                vec![Sample {
                    kind: "Database",
                    namespace: "prod".into(),
                    name: "zk".into(),
                    status: Status::Ready,
                    objects: None,
                }]
            }),
        );
        let (held_tx, held) = tokio::sync::oneshot::channel();
        let controller = tokio::spawn({
            let exports = exports.clone();
            async move {
                let _exported = Exported::new(exports, "database");
                let _ = held_tx.send(());
                std::future::pending::<()>().await
            }
        });
        held.await.unwrap();
        assert!(
            exports.render().contains("name=\"zk\""),
            "{}",
            exports.render()
        );
        // Losing the Lease aborts the controller's future: nothing after its await runs.
        controller.abort();
        assert!(controller.await.unwrap_err().is_cancelled());
        assert!(!exports.render().contains("zk"), "{}", exports.render());
    }

    fn live(status: serde_json::Value) -> LiveSynchronization {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "kafka", "namespace": "prod"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/x"}},
            "status": status
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!([{"type": "Ready", "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    }

    #[test]
    fn statuses_follow_ready_and_failures_need_someone_to_act() {
        let l = live(
            serde_json::json!({"phase": "Streaming", "conditions": ready("True", "Streaming")}),
        );
        assert_eq!(live_status(&l), Status::Ready);
        let l = live(
            serde_json::json!({"phase": "Retrying", "conditions": ready("False", "Unreachable")}),
        );
        assert_eq!(live_status(&l), Status::Failed);
        let l =
            live(serde_json::json!({"phase": "Syncing", "conditions": ready("False", "Syncing")}));
        assert_eq!(live_status(&l), Status::Progressing);
        let mut l = live(serde_json::json!({"phase": "Failed"}));
        assert_eq!(live_status(&l), Status::Failed);
        l.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(live_status(&l), Status::Terminating);
        l.status = None;
        l.metadata.deletion_timestamp = None;
        assert_eq!(live_status(&l), Status::Unknown);
    }

    #[test]
    fn objects_split_by_verification() {
        let l =
            live(serde_json::json!({"sourceNodes": 100, "divergentNodes": 2, "undecidedNodes": 3}));
        assert_eq!(live_objects(&l), (95, 2, 3));
        let s: Synchronization = serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "once", "namespace": "prod"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/x"}},
            "status": {"phase": "Succeeded", "counters": {"sourceNodes": 7, "created": 7, "updated": 0,
                "deleted": 0, "skipped": 0, "bytesWritten": 0, "writeOps": 7, "attempts": 1}}
        }))
        .unwrap();
        assert_eq!(synchronization_objects(&s), (0, 0, 7));
        assert_eq!(synchronization_status(&s), Status::Ready);
    }

    #[test]
    fn renders_a_state_set_per_object() {
        let l = live(
            serde_json::json!({"phase": "Streaming", "conditions": ready("True", "Streaming"),
            "sourceNodes": 10, "divergentNodes": 0, "undecidedNodes": 0}),
        );
        let text = render_samples(&[live_sample(&l)]);
        assert!(text.contains("# TYPE astronetes_synchronization_status gauge"));
        assert!(text.contains(
            "astronetes_synchronization_status{kind=\"LiveSynchronization\",namespace=\"prod\",name=\"kafka\",status=\"Ready\"} 1"
        ));
        assert!(text.contains(
            "astronetes_synchronization_status{kind=\"LiveSynchronization\",namespace=\"prod\",name=\"kafka\",status=\"Failed\"} 0"
        ));
        assert!(text.contains(
            "astronetes_total_synchronized_objects{kind=\"LiveSynchronization\",namespace=\"prod\",name=\"kafka\",status=\"Sync\"} 10"
        ));
        assert!(!text.contains("astronetes_asset_status"));
    }
}
