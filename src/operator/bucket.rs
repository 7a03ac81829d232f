//! Bucket controller glue: read the Secret the Bucket names, list its store, write Ready. It
//! runs in the database controller's process, under its Lease: both check assets.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::Api;

use super::apply::{self, Error};
use super::database::{report, Ctx, Inputs};
use crate::api::assets::Bucket;
use crate::controllers::bucket as decide;
use crate::controllers::database::RECHECK;
use crate::resolve;

pub const NAME: &str = "bucket";

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
    let old = b.status.as_ref();
    report(&ctx, &*b, &ns, old, &status, |s| &s.conditions).await?;
    ctx.checks.done(uid, inputs);
    Ok(Action::requeue(RECHECK))
}

/// The controller, until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    super::database::run_checked_with_secret(
        NAME,
        ctx,
        resolve::bucket_secret_name,
        crate::metrics::compat::Exports::register_buckets,
        reconcile,
        stop,
    )
    .await;
}
