//! Database controller glue: read the Secret, check the ensemble, write the status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::Api;
use tokio::time::Instant;

use super::apply::{self, Error};
use super::Shared;
use crate::api::assets::Database;
use crate::api::conditions::{find, types, ConditionStatus};
use crate::controllers::database::{self as decide, RECHECK};
use crate::resolve;

pub const NAME: &str = "database";

/// The context of a periodically checked asset's controller (Database, Bucket,
/// KubernetesCluster).
pub struct Ctx {
    pub shared: Shared,
    pub(super) checks: Checks,
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
    let routed = super::remote::route(&ctx.shared.client, &ns, (*db).clone()).await?;
    let servers = |d: &Database| {
        d.spec
            .zookeeper
            .as_ref()
            .and_then(|z| z.client.as_ref())
            .map(|c| c.servers.clone())
            .unwrap_or_default()
    };
    // Loopback tunnel address -> the server as the spec names it, for the status.
    let named: Vec<(String, String)> = match &routed {
        Ok(r) => servers(r).into_iter().zip(servers(&db)).collect(),
        Err(_) => Vec::new(),
    };
    let outcome = match routed.and_then(|r| resolve::connect_options(&r, data.as_ref())) {
        Err(e) => Err(Err(e)),
        Ok(o) => {
            let admin = db.spec.zookeeper.as_ref().and_then(|z| z.admin.as_ref());
            let probed = decide::probe(&o, admin).await.map(|mut p| {
                if let Some((_, spec)) = named
                    .iter()
                    .find(|(addr, _)| Some(addr) == p.server.as_ref())
                {
                    p.server = Some(spec.clone());
                }
                p
            });
            probed.map_err(|mut failed| {
                // Through a tunnel, "connection refused" on loopback says little; the
                // tunnel's own failure says why.
                if let Some(why) = super::remote::last_tunnel_error(&ns, &db) {
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
            })
        }
    };
    let status = decide::desired(&db, outcome, Timestamp::now());
    let api = Api::<Database>::namespaced(ctx.shared.client.clone(), &ns);
    apply::status(&api, &*db, db.status.as_ref(), &status).await?;

    if let Some(new) = find(&status.conditions, types::READY) {
        let ready = ConditionStatus::of(new) == ConditionStatus::True;
        metrics::gauge!(crate::metrics::DATABASE_READY, "namespace" => ns.clone(), "name" => name.clone())
            .set(if ready { 1.0 } else { 0.0 });
    }
    // One Event per transition, not one per periodic check.
    let old = db.status.as_ref().map(|s| s.conditions.as_slice());
    if let Some(note) = apply::ready_transition(old, &status.conditions) {
        ctx.shared.events.publish(&*db, "Check", &note).await;
    }
    ctx.checks.done(uid, inputs);
    Ok(Action::requeue(RECHECK))
}

/// The controller: Databases, and the Secret of the same name (metadata only: the controller
/// never caches credentials), until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.shared.client.clone();
    // Metadata only: the controller never caches credentials.
    let secrets = Api::<PartialObjectMeta<Secret>>::all(client.clone());
    let controller = Controller::new(
        Api::<Database>::all(client),
        watcher::Config::default().any_semantic(),
    );
    crate::metrics::compat::register_databases(controller.store());
    controller
        .watches(secrets, watcher::Config::default(), |s| {
            Some(ObjectRef::<Database>::new(&s.metadata.name?).within(&s.metadata.namespace?))
        })
        .graceful_shutdown_on(stop)
        .run(
            |db, ctx: Arc<Ctx>| {
                let shared = ctx.shared.clone();
                shared.instrument(db, ctx, reconcile)
            },
            |db, err, ctx| ctx.shared.error_policy(&*db, err),
            ctx,
        )
        .for_each(|r| async move { super::log_result(NAME, r) })
        .await;
    crate::metrics::compat::unregister(NAME);
}

/// Runs the controller of an asset checked with the Secret its spec names (`secret_of`):
/// woken when the asset or that Secret changes (metadata only: the controller never caches
/// credentials), until `stop` resolves. Buckets and KubernetesClusters.
pub async fn run_checked_with_secret<K, Fut>(
    name: &'static str,
    ctx: Arc<Ctx>,
    secret_of: fn(&K) -> Option<&str>,
    register: fn(kube::runtime::reflector::Store<K>),
    reconcile: fn(Arc<K>, Arc<Ctx>) -> Fut,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    use kube::ResourceExt;
    let client = ctx.shared.client.clone();
    let controller = Controller::new(
        Api::<K>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    register(controller.store());
    let store = controller.store();
    let secrets = Api::<PartialObjectMeta<Secret>>::all(client);
    controller
        .watches(secrets, watcher::Config::default(), move |s| {
            let (ns, secret) = (s.namespace(), s.name_any());
            store
                .state()
                .iter()
                .filter(|o| o.namespace() == ns && secret_of(o) == Some(secret.as_str()))
                .map(|o| ObjectRef::from_obj(&**o))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop)
        .run(
            move |o, ctx: Arc<Ctx>| {
                let shared = ctx.shared.clone();
                shared.instrument(o, ctx, reconcile)
            },
            |o, err, ctx| ctx.shared.error_policy(&*o, err),
            ctx,
        )
        .for_each(|r| async move { super::log_result(name, r) })
        .await;
    crate::metrics::compat::unregister(name);
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
