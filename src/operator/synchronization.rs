//! Synchronization controller glue: read the Databases and Secrets, decide, write the status,
//! then start or forget the background run.
//!
//! A finalizer is held only while a Synchronization is unfinished, the only time there is a
//! worker to stop. Deleting a finished one (plan history pruning, or with the operator
//! uninstalled) never waits for us. Deleting never touches destination data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};

use super::apply::{self, Error};
use super::scope::Within;
use super::shared::{drive, stores, HasShared, Watched};
use super::Shared;
use crate::api::assets::Bucket;
use crate::api::assets::Database;
use crate::api::automation::{
    Direction, Phase, Plugin, SyncConfig, Synchronization, SynchronizationStatus,
};
use crate::api::conditions::{ConditionStatus, Reason};
use crate::controllers::synchronization::{self as decide, Note};
use crate::resolve::{self, SecretData};
use crate::runs::Runs;

pub const NAME: &str = "synchronization";
/// Held while a run may exist; removed after stopping it.
pub const FINALIZER: &str = "automation.astronetes.io/stop-run";

/// How often a Synchronization with a run in this process is looked at. Reading a run's state
/// is local (no API call); the status is written only when it changes.
pub const RUN_POLL: Duration = Duration::from_secs(2);

pub struct Ctx {
    pub shared: Shared,
    pub runs: Runs,
}

impl HasShared for Ctx {
    fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// Both Databases of a sync config and their Secrets, by Database name; a Database in another
/// cluster comes with its servers routed through tunnels (see [`super::remote`]).
pub(super) type Endpoints = BTreeMap<String, resolve::Found>;

/// Buckets by name, with the Secret each names.
pub(super) type Buckets = BTreeMap<String, (Option<Bucket>, Option<SecretData>)>;

/// Reads the Databases (and Secrets) of a sync config: both sides of a copy, or the one side
/// of a backup or restore, plus the Bucket of the other side and the Secret it names. A missing
/// object is `None`; any other API error fails the reconcile (and is retried), so an API
/// outage never looks like a deletion.
pub(super) async fn read_sync_endpoints(
    shared: &Shared,
    ns: &str,
    plugin: Plugin,
    config: &SyncConfig,
) -> Result<(Endpoints, Buckets), Error> {
    let (db_names, bucket): (Vec<&String>, Option<&String>) = match plugin.direction() {
        Direction::Copy => (vec![&config.source_name, &config.destination_name], None),
        Direction::Backup => (vec![&config.source_name], Some(&config.destination_name)),
        Direction::Restore => (vec![&config.destination_name], Some(&config.source_name)),
    };
    let dbs = read_databases(shared, ns, &db_names).await?;
    let client = &shared.client;
    let mut buckets = BTreeMap::new();
    if let Some(name) = bucket {
        let b = Api::<Bucket>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(Error::api("reading", "Bucket", ns, name))?;
        let secret = match b.as_ref().and_then(resolve::bucket_secret_name) {
            Some(secret) => Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(secret)
                .await
                .map_err(Error::api("reading", "Secret", ns, secret))?
                .map(|s| resolve::secret_data(&s)),
            None => None,
        };
        buckets.insert(name.clone(), (b, secret));
    }
    Ok((dbs, buckets))
}

/// Reads both Databases of a sync config and their Secrets (see [`read_sync_endpoints`]).
pub(super) async fn read_endpoints(
    shared: &Shared,
    ns: &str,
    config: &SyncConfig,
) -> Result<Endpoints, Error> {
    read_databases(shared, ns, &[&config.source_name, &config.destination_name]).await
}

async fn read_databases(shared: &Shared, ns: &str, names: &[&String]) -> Result<Endpoints, Error> {
    let client = &shared.client;
    let dbs = Api::<Database>::namespaced(client.clone(), ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for name in names.iter().copied() {
        if out.contains_key(name) {
            continue;
        }
        let db = dbs
            .get_opt(name)
            .await
            .map_err(Error::api("reading", "Database", ns, name))?;
        let secret = match db {
            Some(_) => secrets
                .get_opt(name)
                .await
                .map_err(Error::api("reading", "Secret", ns, name))?
                .map(|s| resolve::secret_data(&s)),
            None => None,
        };
        let found = match db {
            Some(db) => shared
                .process
                .remotes
                .route(client, ns, db)
                .await?
                .map(|db| (Some(db), secret)),
            None => Ok((None, secret)),
        };
        out.insert(name.clone(), found);
    }
    Ok(out)
}

/// Adds (`add`) or removes our finalizer. The patch carries the resourceVersion read, so a
/// concurrent change by someone else makes it fail (409) and retry instead of clobbering.
pub(super) async fn set_finalizer<K>(api: &Api<K>, s: &K, add: bool) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = apply::static_kind::<K>();
    let (ns, name) = apply::key(s, kind)?;
    let mut wanted: Vec<String> = s
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if add {
        wanted.push(FINALIZER.to_string());
    }
    let patch = serde_json::json!({
        "metadata": {"finalizers": wanted, "resourceVersion": s.meta().resource_version}
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::api("updating the finalizers of", kind, &ns, &name))?;
    Ok(())
}

/// Whether `obj` carries our finalizer.
fn has_finalizer<K: kube::Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// The finalizer step of a kind with a worker behind it. Deleted: stop the worker (`stop`
/// says whether one was running; `stopped` is the Event that says so) and let go of the
/// object. Otherwise hold the finalizer while `wanted`. `Some(action)` ends the reconcile.
pub(super) async fn finalize<K>(
    api: &Api<K>,
    obj: &K,
    events: &apply::Events,
    wanted: bool,
    stop: impl FnOnce() -> bool,
    stopped: Note,
) -> Result<Option<Action>, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let held = has_finalizer(obj);
    if obj.meta().deletion_timestamp.is_some() {
        if held {
            if stop() {
                events.publish(obj, "Delete", &stopped).await;
            }
            set_finalizer(api, obj, false).await?;
        }
        return Ok(Some(Action::await_change()));
    }
    if wanted && !held {
        // Recorded before any worker starts; the patch wakes us again.
        set_finalizer(api, obj, true).await?;
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

pub async fn reconcile(s: Arc<Synchronization>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = apply::key(&*s, "Synchronization")?;
    let uid = s.metadata.uid.clone().unwrap_or_default();
    let api = Api::<Synchronization>::namespaced(ctx.shared.client.clone(), &ns);
    let had_finalizer = has_finalizer(&*s);
    // Held deletes settle a run like an end does, until a person releases them.
    let finished = decide::settled(&s);
    let stop = || {
        let was_running = ctx.runs.state(&uid).is_some();
        ctx.runs.stop(&uid);
        was_running
    };
    let stopped = Note {
        warning: true,
        reason: Reason::Interrupted,
        message: "deleted while running: the copy was stopped; destination data is left as it is"
            .into(),
    };
    if let Some(action) = finalize(&api, &*s, &ctx.shared.events, !finished, stop, stopped).await? {
        return Ok(action);
    }

    let run = ctx.runs.state(&uid);
    let (endpoints, buckets) = if decide::needs_endpoints(&s, run.as_ref()) {
        read_sync_endpoints(&ctx.shared, &ns, s.spec.plugin, &s.spec.config).await?
    } else {
        Default::default()
    };
    let d = decide::desired(
        &s,
        || {
            resolve::resolve_job(
                &s,
                |n| endpoints.get(n).cloned().unwrap_or(Ok((None, None))),
                &|n| buckets.get(n).cloned().unwrap_or((None, None)),
            )
        },
        run.as_ref(),
        Timestamp::now(),
    );

    // Status first: a run starts only once its start is recorded, and an outcome is forgotten
    // only once it is stored.
    apply::status(&api, &*s, s.status.as_ref(), &d.status).await?;
    ctx.shared.events.publish_all(&*s, "Sync", &d.notes).await;
    if !finished && (d.status.phase.is_finished() || d.status.phase == Phase::Held) {
        record_outcome(&ns, &series(&s, &name), s.spec.plugin, &d.status);
    }
    act(&ctx.runs, &uid, d.action, finished);
    if finished && had_finalizer && ctx.runs.state(&uid).is_none() {
        // No worker any more: nothing to stop on deletion.
        set_finalizer(&api, &s, false).await?;
    }
    Ok(match d.requeue {
        Some(after) => Action::requeue(after),
        // A run reports nothing to the API server: look at it until it ends.
        None if ctx.runs.state(&uid).is_some() => Action::requeue(RUN_POLL),
        None => Action::await_change(),
    })
}

/// Starts or forgets the run of `uid` as decided.
fn act(runs: &Runs, uid: &str, action: decide::Action, finished: bool) {
    match action {
        decide::Action::Start(job) => runs.start(uid, *job),
        // The outcome is forgotten only once the cache shows it stored (the watch event of
        // the status just written brings us back here). Forgetting earlier would let a
        // reconcile on a stale object see "Running, no run" and start the copy again.
        decide::Action::Forget if finished => runs.stop(uid),
        decide::Action::Forget | decide::Action::Nothing => {}
    }
}

/// The name a run's metrics go under: a plan's runs are reported under the plan's name, one
/// series per plan, not per run.
fn series(s: &Synchronization, name: &str) -> String {
    s.labels()
        .get(crate::controllers::synchronization_plan::PLAN_LABEL)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// The metrics of a run that just ended (or held its deletes).
fn record_outcome(ns: &str, name: &str, plugin: Plugin, st: &SynchronizationStatus) {
    use crate::metrics as m;
    let labels = [("namespace", ns.to_string()), ("name", name.to_string())];
    record_result(&labels, st);
    if let Some(c) = &st.counters {
        for (op, n) in [
            ("create", c.created),
            ("update", c.updated),
            ("delete", c.deleted),
        ] {
            metrics::counter!(m::SYNC_NODES_WRITTEN_TOTAL, "namespace" => ns.to_string(), "name" => name.to_string(), "operation" => op)
                .increment(n);
        }
        metrics::counter!(m::SYNC_BYTES_COPIED_TOTAL, &labels).increment(c.bytes_written);
    }
    if let Some(v) = &st.verification {
        metrics::gauge!(m::VERIFY_DIVERGENT_NODES, &labels).set(v.divergent_nodes as f64);
        metrics::histogram!(m::VERIFY_DURATION_SECONDS).record(v.duration_seconds);
    }
    if st.phase == Phase::Succeeded {
        record_success(&labels, plugin, st);
    }
}

/// How the run ended, what it held, why it was refused, and how long it took.
fn record_result(labels: &[(&'static str, String); 2], st: &SynchronizationStatus) {
    use crate::metrics as m;
    let diverged = st.verification.as_ref().is_some_and(|v| !v.equal);
    let result = match st.phase {
        Phase::Succeeded if diverged => "diverged",
        Phase::Succeeded => "succeeded",
        Phase::Held => "held",
        _ => "failed",
    };
    metrics::counter!(m::SYNC_RUNS_TOTAL, "mode" => "once", "result" => result).increment(1);
    let held = st
        .deletion_guard
        .as_ref()
        .and_then(|g| g.held.as_ref())
        .map_or(0, |h| h.deletes);
    m::deletes_held(labels, held, held);
    let failed =
        crate::api::conditions::find(&st.conditions, crate::api::conditions::types::FAILED)
            .filter(|c| ConditionStatus::of(c) == ConditionStatus::True)
            .map(|c| c.reason.as_str());
    match failed {
        Some("WriterConflict") => m::claims_refused(labels, "writer_conflict"),
        Some("ReplicationLoop") => m::claims_refused(labels, "replication_loop"),
        Some("SourceFenced") => m::claims_refused(labels, "source_fenced"),
        _ => {}
    }
    if let (Some(a), Some(b)) = (&st.start_time, &st.completion_time) {
        let secs = b.0.duration_since(a.0).as_secs_f64().max(0.0);
        metrics::histogram!(m::SYNC_DURATION_SECONDS, "mode" => "once").record(secs);
    }
}

/// When the run last succeeded, and for a backup or restore its snapshot.
fn record_success(
    labels: &[(&'static str, String); 2],
    plugin: Plugin,
    st: &SynchronizationStatus,
) {
    use crate::metrics as m;
    let Some(t) = &st.completion_time else {
        return;
    };
    metrics::gauge!(m::SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS, labels).set(m::unix_seconds(t.0));
    let Some(snap) = &st.snapshot else {
        return;
    };
    let op = if plugin.direction() == Direction::Restore {
        "restore"
    } else {
        "backup"
    };
    let [ns, name] = labels.clone();
    let with_op = [ns, name, ("operation", op.to_string())];
    metrics::gauge!(m::BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS, &with_op).set(m::unix_seconds(t.0));
    if op == "backup" {
        metrics::gauge!(m::BACKUP_SIZE_BYTES, labels).set(snap.size_bytes as f64);
        metrics::gauge!(m::BACKUP_LAST_SNAPSHOT_SUSPECT, labels).set(if snap.suspect {
            1.0
        } else {
            0.0
        });
    }
    if let Some(a) = &st.start_time {
        let secs = t.0.duration_since(a.0).as_secs_f64().max(0.0);
        metrics::histogram!(m::BACKUP_DURATION_SECONDS, "operation" => op).record(secs);
    }
}

/// The unfinished Synchronizations in `ns` that use the Database `db`: the ones to wake when
/// it (or its Secret) changes.
pub fn users_of(
    store: &Store<Synchronization>,
    ns: &str,
    db: &str,
) -> Vec<ObjectRef<Synchronization>> {
    store
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| !s.status.as_ref().is_some_and(|st| st.phase.is_finished()))
        .filter(|s| uses(&s.spec.config, db))
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// Whether a sync config reads or writes the Database `db`.
pub fn uses(config: &SyncConfig, db: &str) -> bool {
    config.source_name == db || config.destination_name == db
}

/// Wakes the objects that use a Database (per `users`) when it or its Secret changes. Secrets
/// are watched metadata-only: no controller caches credentials.
pub(super) fn wake_users_on_endpoint_changes<K>(
    controller: Controller<K>,
    within: &Within,
    users: fn(&Store<K>, &str, &str) -> Vec<ObjectRef<K>>,
) -> Controller<K>
where
    K: Watched,
{
    let by_db = controller.store();
    let by_secret = controller.store();
    let secrets = within.api::<PartialObjectMeta<Secret>>();
    controller
        .watches(
            within.api::<Database>(),
            watcher::Config::default(),
            move |db: Database| users(&by_db, &db.namespace().unwrap_or_default(), &db.name_any()),
        )
        .watches(secrets, watcher::Config::default(), move |s| {
            users(
                &by_secret,
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            )
        })
}

/// The controller, until `stop` resolves; every run it started is stopped when it ends.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controllers: Vec<_> = ctx
        .shared
        .within()
        .iter()
        .map(|w| {
            let c = Controller::new(
                w.api::<Synchronization>(),
                watcher::Config::default().any_semantic(),
            );
            wake_users_on_endpoint_changes(c, w, users_of)
        })
        .collect();
    ctx.shared
        .process
        .exports
        .register_synchronizations(stores(&controllers));
    let exported = crate::metrics::compat::Exported::new(ctx.shared.process.exports.clone(), NAME);
    drive(NAME, controllers, reconcile, ctx.clone(), stop).await;
    drop(exported);
    // Shutting down: the next leader restarts unfinished runs.
    ctx.runs.clear();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn sync(ns: &str, name: &str, src: &str, dst: &str, phase: &str) -> Synchronization {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": src, "destinationName": dst, "rootPath": "/x"}},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn a_database_or_secret_change_wakes_only_the_unfinished_users_in_its_namespace() {
        let mut w = Writer::<Synchronization>::default();
        for s in [
            sync("a", "uses-src", "db1", "db2", "Pending"),
            sync("a", "uses-dst", "db0", "db1", "Running"),
            sync("a", "finished", "db1", "db2", "Succeeded"),
            sync("a", "other", "db3", "db4", "Pending"),
            sync("b", "other-namespace", "db1", "db2", "Pending"),
        ] {
            w.apply_watcher_event(&Event::Apply(s));
        }
        let store = w.as_reader();
        let mut woken: Vec<String> = users_of(&store, "a", "db1")
            .into_iter()
            .map(|r| r.name)
            .collect();
        woken.sort();
        assert_eq!(woken, vec!["uses-dst", "uses-src"]);
    }
}
