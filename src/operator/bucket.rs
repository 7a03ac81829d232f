//! Bucket controller glue: read the Secret the Bucket names, list its store, write Ready. It
//! runs in the database controller's process, under its Lease: both check assets.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};

use super::apply::{self, Error};
use super::database::{Checks, Inputs};
use super::Shared;
use crate::api::assets::Bucket;
use crate::controllers::bucket as decide;
use crate::controllers::database::RECHECK;
use crate::resolve;

pub const NAME: &str = "bucket";

pub struct Ctx {
    pub shared: Shared,
    checks: Checks,
}

impl Ctx {
    pub fn new(shared: Shared) -> Ctx {
        Ctx {
            shared,
            checks: Checks::default(),
        }
    }
}

pub async fn reconcile(b: Arc<Bucket>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, _) = apply::key(&*b, "Bucket")?;
    let uid = b.metadata.uid.clone().unwrap_or_default();
    let secret = match resolve::bucket_secret_name(&b) {
        Some(name) => Api::<Secret>::namespaced(ctx.shared.client.clone(), &ns)
            .get_opt(name)
            .await
            .map_err(Error::api("reading", "Secret", &ns, name))?,
        None => None,
    };
    let inputs = Inputs::of(b.metadata.generation, secret.as_ref());
    if let Some(wait) = ctx.checks.due(&uid, &inputs) {
        return Ok(Action::requeue(wait));
    }
    let data = secret.as_ref().map(resolve::secret_data);
    let outcome = match resolve::bucket_location(&b, data.as_ref(), "") {
        Err(e) => Err(e),
        Ok(location) => Ok(match crate::backup::probe(&location).await {
            Ok(()) => Ok(location.describe()),
            Err(e) => Err((decide::probe_reason(&e), crate::runs::cause_chain(&e))),
        }),
    };
    let status = decide::desired(&b, outcome, Timestamp::now());
    let api = Api::<Bucket>::namespaced(ctx.shared.client.clone(), &ns);
    apply::status(&api, &*b, b.status.as_ref(), &status).await?;
    let old = b.status.as_ref().map(|s| s.conditions.as_slice());
    if let Some(note) = apply::ready_transition(old, &status.conditions) {
        ctx.shared.events.publish(&*b, "Check", &note).await;
    }
    ctx.checks.done(uid, inputs);
    Ok(Action::requeue(RECHECK))
}

/// The Buckets in `ns` that name the Secret `secret`.
pub fn users_of(store: &Store<Bucket>, ns: &str, secret: &str) -> Vec<ObjectRef<Bucket>> {
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
        .filter(|b| resolve::bucket_secret_name(b) == Some(secret))
        .map(|b| ObjectRef::from_obj(&**b))
        .collect()
}

/// The controller, until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.shared.client.clone();
    let controller = Controller::new(
        Api::<Bucket>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    crate::metrics::compat::register_buckets(controller.store());
    let store = controller.store();
    // Metadata only: the controller never caches credentials.
    let secrets = Api::<PartialObjectMeta<Secret>>::all(client);
    controller
        .watches(secrets, watcher::Config::default(), move |s| {
            users_of(&store, &s.namespace().unwrap_or_default(), &s.name_any())
        })
        .graceful_shutdown_on(stop)
        .run(
            |b, ctx: Arc<Ctx>| {
                let shared = ctx.shared.clone();
                shared.instrument(b, ctx, reconcile)
            },
            |b, err, ctx| ctx.shared.error_policy(&*b, err),
            ctx,
        )
        .for_each(|r| async move { super::log_result(NAME, r) })
        .await;
    crate::metrics::compat::unregister(NAME);
}
