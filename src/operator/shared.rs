//! What every reconciler of one controller shares, and the loop that drives a controller:
//! each reconcile instrumented, each failure retried with a growing delay and reported once.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::Controller;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::{apply, ControllerGroup, Error, Process};
use crate::controllers::synchronization::Note;
use crate::runs::cause_chain;

/// The retry delay after a first failure; it doubles with each one after.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Doublings before the delay stops growing (5 s << 6 = 320 s, above [`LONGEST_RETRY`]).
const MAX_DOUBLINGS: u32 = 6;
/// The longest a failed object waits for its next try.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// What every reconciler of one controller shares.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub events: apply::Events,
    pub controller: &'static str,
    pub process: Process,
    /// Consecutive failures per object, for the growing retry delay.
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Shared {
    pub fn new(
        client: Client,
        group: ControllerGroup,
        instance: Option<String>,
        process: &Process,
    ) -> Shared {
        Shared {
            events: apply::Events::new(client.clone(), &group.component(), instance),
            client,
            controller: group.name(),
            process: process.clone(),
            failures: Arc::default(),
        }
    }

    /// Where this controller's Apis point: one [`super::scope::Within`] per watched
    /// namespace, or one over all namespaces.
    pub fn within(&self) -> Vec<super::scope::Within> {
        self.process.scope.within(&self.client)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one reconcile with a span, its duration and error metrics, and resets the
    /// object's retry delay when it succeeds.
    pub async fn instrument<K, C, F, Fut>(
        self,
        obj: Arc<K>,
        ctx: Arc<C>,
        f: F,
    ) -> Result<Action, Error>
    where
        K: Resource,
        F: FnOnce(Arc<K>, Arc<C>) -> Fut,
        Fut: Future<Output = Result<Action, Error>>,
    {
        use tracing::Instrument;
        let key = object_key(&*obj);
        let span = tracing::info_span!("reconcile", controller = self.controller, object = %key);
        let started = Instant::now();
        let result = f(obj, ctx).instrument(span).await;
        let c = self.controller;
        metrics::counter!(crate::metrics::RECONCILE_TOTAL, "controller" => c).increment(1);
        metrics::histogram!(crate::metrics::RECONCILE_DURATION_SECONDS, "controller" => c)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                self.failures().remove(&key);
            }
            Err(e) => {
                metrics::counter!(crate::metrics::RECONCILE_ERRORS_TOTAL, "controller" => c, "reason" => e.reason())
                    .increment(1);
            }
        }
        result
    }

    /// Retries a failed reconcile after 5 s, doubling per consecutive failure up to 5 min, and
    /// publishes one Warning Event with the cause chain.
    pub fn error_policy<K>(&self, obj: &K, err: &Error) -> Action
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let key = object_key(obj);
        let n = {
            let mut f = self.failures();
            let n = f.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = retry_delay(n);
        tracing::warn!(controller = self.controller, object = %key, reason = err.reason(),
            retry_in_seconds = delay.as_secs(), error = %cause_chain(err), "reconcile failed");
        let events = self.events.clone();
        let obj = obj.clone();
        let note = Note {
            warning: true,
            reason: crate::api::conditions::Reason::Retrying,
            message: crate::text::truncate(&cause_chain(err), apply::EVENT_NOTE_MAX_BYTES),
        };
        tokio::spawn(async move { events.publish(&obj, "Reconcile", &note).await });
        Action::requeue(delay)
    }
}

/// 5 s after the first failure, doubling up to 5 min.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_DOUBLINGS);
    (FIRST_RETRY * (1 << doublings)).min(LONGEST_RETRY)
}

fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Logs what the controller stream yields: errors from the reconciler are handled (and logged)
/// by the error policy; watch errors are logged here.
pub fn log_result<K: Resource, E: std::error::Error + 'static, QE: std::error::Error + 'static>(
    controller: &'static str,
    r: Result<(ObjectRef<K>, Action), controller::Error<E, QE>>,
) where
    K::DynamicType: Debug,
{
    match r {
        Ok((obj, _)) => tracing::debug!(controller, object = %obj.name, "reconciled"),
        Err(controller::Error::ReconcilerFailed(_, obj)) => {
            tracing::debug!(controller, object = %obj.name, "reconcile failed; retry scheduled")
        }
        Err(controller::Error::ObjectNotFound(_)) => {}
        Err(e) => tracing::warn!(controller, error = %cause_chain(&e), "controller"),
    }
}

/// A kind a controller watches: what kube's Controller asks of it. Namespaced, so that
/// [`super::scope::Within`] can point its Api at one namespace.
pub trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// A controller's context: everything it needs, its [`Shared`] among it.
pub trait HasShared: Send + Sync + 'static {
    fn shared(&self) -> &Shared;
}

/// The caches of `controllers` (one per watched namespace), for the compat exports.
pub fn stores<K: Watched>(controllers: &[Controller<K>]) -> Vec<Store<K>> {
    controllers.iter().map(Controller::store).collect()
}

/// Drives `controllers` (one per watched namespace, see [`Shared::within`]) until `stop`
/// resolves: every reconcile through [`Shared::instrument`], every failure through
/// [`Shared::error_policy`], every result logged under `name`.
pub async fn drive<K, C, Fut>(
    name: &'static str,
    controllers: Vec<Controller<K>>,
    reconcile: fn(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Watched,
    C: HasShared,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let stop = stop.shared();
    let each = controllers
        .into_iter()
        .map(|c| drive_one(name, c, reconcile, ctx.clone(), stop.clone()));
    futures::future::join_all(each).await;
}

async fn drive_one<K, C, Fut>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: fn(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Watched,
    C: HasShared,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(stop)
        .run(
            move |obj, ctx: Arc<C>| {
                let shared = ctx.shared().clone();
                shared.instrument(obj, ctx, reconcile)
            },
            |obj, err, ctx| ctx.shared().error_policy(&*obj, err),
            ctx,
        )
        .for_each(|r| async move { log_result(name, r) })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
