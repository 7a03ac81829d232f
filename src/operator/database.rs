//! Database controller glue: read the Secret, check the ensemble, write the status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::Api;
use tokio::time::Instant;

use super::apply::{self, Error};
use super::shared::{drive, stores, HasShared, Watched};
use super::Shared;
use crate::api::assets::Database;
use crate::api::conditions::{find, types, ConditionStatus};
use crate::controllers::database::{self as decide, Probe, ProbeFailure, RECHECK};
use crate::metrics::compat::{Exported, Exports};
use crate::resolve::{self, ResolveError};

pub const NAME: &str = "database";

/// The context of a periodically checked asset's controller (Database, Bucket,
/// KubernetesCluster).
pub struct Ctx {
    pub shared: Shared,
    pub(super) checks: Checks,
}

impl HasShared for Ctx {
    fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Ctx {
    pub fn new(shared: Shared) -> Ctx {
        Ctx {
            shared,
            checks: Checks::default(),
        }
    }
}

/// What a check depends on: the spec and the Secret's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    pub generation: Option<i64>,
    pub secret_version: Option<String>,
}

impl Inputs {
    /// The object's generation and the version of the Secret it uses (if it exists).
    pub fn of(generation: Option<i64>, secret: Option<&Secret>) -> Inputs {
        Inputs {
            generation,
            secret_version: secret.and_then(|s| s.metadata.resource_version.clone()),
        }
    }
}

/// What each periodically checked asset (by UID) was last checked with, and when.
#[derive(Default)]
pub struct Checks(Mutex<HashMap<String, (Inputs, Instant)>>);

impl Checks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Inputs, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until the next check of `uid` is due (None: now); see [`check_due`].
    pub fn due(&self, uid: &str, inputs: &Inputs) -> Option<Duration> {
        check_due(self.lock().get(uid), inputs, Instant::now())
    }

    /// Records a check of `uid` with `inputs`, now.
    pub fn done(&self, uid: String, inputs: Inputs) {
        self.lock().insert(uid, (inputs, Instant::now()));
    }
}

/// How long until the next check is due (None: now). A check is due when its inputs changed
/// or `RECHECK` passed; without this, writing the status would trigger a new check at once.
pub fn check_due(
    last: Option<&(Inputs, Instant)>,
    inputs: &Inputs,
    now: Instant,
) -> Option<Duration> {
    let (was, at) = last?;
    if was != inputs {
        return None;
    }
    RECHECK
        .checked_sub(now.saturating_duration_since(*at))
        .filter(|d| !d.is_zero())
}

pub async fn reconcile(db: Arc<Database>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = apply::key(&*db, "Database")?;
    let uid = db.metadata.uid.clone().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(ctx.shared.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(Error::api("reading", "Secret", &ns, &name))?;
    let inputs = Inputs::of(db.metadata.generation, secret.as_ref());
    if let Some(wait) = ctx.checks.due(&uid, &inputs) {
        return Ok(Action::requeue(wait));
    }
    let data = secret.as_ref().map(resolve::secret_data);
    let routed = ctx
        .shared
        .process
        .remotes
        .route(&ctx.shared.client, &ns, (*db).clone())
        .await?;
    let outcome = match routed.and_then(|r| {
        let options = resolve::connect_options(&r, data.as_ref());
        options.map(|o| (o, r))
    }) {
        Err(e) => Err(Err(e)),
        Ok((options, routed)) => check(&ctx, &ns, &db, &routed, &options).await,
    };
    let status = decide::desired(&db, outcome, Timestamp::now());
    let ready = find(&status.conditions, types::READY)
        .map(|c| ConditionStatus::of(c) == ConditionStatus::True);
    let old = db.status.as_ref();
    report(&ctx, &*db, &ns, old, &status, |s| &s.conditions).await?;
    if let Some(ready) = ready {
        metrics::gauge!(crate::metrics::DATABASE_READY, "namespace" => ns, "name" => name)
            .set(if ready { 1.0 } else { 0.0 });
    }
    ctx.checks.done(uid, inputs);
    Ok(Action::requeue(RECHECK))
}

/// Connects to the Database as `routed` (its servers through tunnels, if it lives in another
/// cluster) and reports the servers and failures as its spec names them.
async fn check(
    ctx: &Ctx,
    ns: &str,
    db: &Database,
    routed: &Database,
    options: &verifier::ConnectOptions,
) -> Result<Probe, Result<ProbeFailure, ResolveError>> {
    let servers = |d: &Database| {
        d.spec
            .zookeeper
            .as_ref()
            .and_then(|z| z.client.as_ref())
            .map(|c| c.servers.clone())
            .unwrap_or_default()
    };
    // Loopback tunnel address -> the server as the spec names it, for the status.
    let named: Vec<(String, String)> = servers(routed).into_iter().zip(servers(db)).collect();
    let admin = db.spec.zookeeper.as_ref().and_then(|z| z.admin.as_ref());
    let mut probed = decide::probe(options, admin).await.map_err(|mut failed| {
        // Through a tunnel, "connection refused" on loopback says little; the tunnel's own
        // failure says why.
        if let Some(why) = ctx.shared.process.remotes.last_tunnel_error(ns, db) {
            failed.message = format!(
                "{} (through KubernetesCluster {}: {why})",
                failed.message,
                db.spec
                    .kubernetes_cluster_name
                    .as_deref()
                    .unwrap_or_default()
            );
        }
        Ok(failed)
    })?;
    if let Some((_, spec)) = named
        .iter()
        .find(|(addr, _)| Some(addr) == probed.server.as_ref())
    {
        probed.server = Some(spec.clone());
    }
    Ok(probed)
}

/// The end of every asset check: write the status and publish one Event per Ready
/// transition, not one per periodic check.
pub(super) async fn report<K, S>(
    ctx: &Ctx,
    obj: &K,
    ns: &str,
    old: Option<&S>,
    new: &S,
    conditions: fn(&S) -> &Vec<Condition>,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    let api = Api::<K>::namespaced(ctx.shared.client.clone(), ns);
    apply::status(&api, obj, old, new).await?;
    let old = old.map(|s| conditions(s).as_slice());
    if let Some(note) = apply::ready_transition(old, conditions(new)) {
        ctx.shared.events.publish(obj, "Check", &note).await;
    }
    Ok(())
}

/// The controller: Databases, and the Secret of the same name (metadata only: the controller
/// never caches credentials), until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let exports = ctx.shared.process.exports.clone();
    let controllers: Vec<_> = ctx
        .shared
        .within()
        .into_iter()
        .map(|w| {
            // Metadata only: the controller never caches credentials.
            Controller::new(
                w.api::<Database>(),
                watcher::Config::default().any_semantic(),
            )
            .watches(
                w.api::<PartialObjectMeta<Secret>>(),
                watcher::Config::default(),
                |s| {
                    Some(
                        ObjectRef::<Database>::new(&s.metadata.name?)
                            .within(&s.metadata.namespace?),
                    )
                },
            )
        })
        .collect();
    exports.register_databases(stores(&controllers));
    let _exported = Exported::new(exports, NAME);
    drive(NAME, controllers, reconcile, ctx, stop).await;
}

/// Runs the controller of an asset checked with the Secret its spec names (`secret_of`):
/// woken when the asset or that Secret changes (metadata only: the controller never caches
/// credentials), until `stop` resolves. Buckets and KubernetesClusters.
pub async fn run_checked_with_secret<K, Fut>(
    name: &'static str,
    ctx: Arc<Ctx>,
    secret_of: fn(&K) -> Option<&str>,
    register: fn(&Exports, Vec<kube::runtime::reflector::Store<K>>),
    reconcile: fn(Arc<K>, Arc<Ctx>) -> Fut,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: Watched,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    use kube::ResourceExt;
    let controllers: Vec<_> = ctx
        .shared
        .within()
        .into_iter()
        .map(|w| {
            let controller =
                Controller::new(w.api::<K>(), watcher::Config::default().any_semantic());
            let store = controller.store();
            // Metadata only: the controller never caches credentials.
            let secrets = w.api::<PartialObjectMeta<Secret>>();
            controller.watches(secrets, watcher::Config::default(), move |s| {
                let (ns, secret) = (s.namespace(), s.name_any());
                store
                    .state()
                    .iter()
                    .filter(|o| o.namespace() == ns && secret_of(o) == Some(secret.as_str()))
                    .map(|o| ObjectRef::from_obj(&**o))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let exports = ctx.shared.process.exports.clone();
    register(&exports, stores(&controllers));
    let _exported = Exported::new(exports, name);
    drive(name, controllers, reconcile, ctx, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_check_is_due_when_inputs_change_or_time_passes() {
        let i = Inputs {
            generation: Some(1),
            secret_version: Some("7".into()),
        };
        let t0 = Instant::now();
        assert_eq!(check_due(None, &i, t0), None);
        let last = (i.clone(), t0);
        assert_eq!(
            check_due(Some(&last), &i, t0 + Duration::from_secs(10)),
            Some(RECHECK - Duration::from_secs(10))
        );
        assert_eq!(check_due(Some(&last), &i, t0 + RECHECK), None);
        let rotated = Inputs {
            secret_version: Some("8".into()),
            ..i.clone()
        };
        assert_eq!(check_due(Some(&last), &rotated, t0), None);
        let edited = Inputs {
            generation: Some(2),
            ..i
        };
        assert_eq!(check_due(Some(&last), &edited, t0), None);
    }
}
