//! KubernetesCluster controller glue: read the Secret it names, connect with the kubeconfig in
//! it, write Ready with the server version. It runs in the database controller's process, under
//! its Lease, like the other asset checks.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::Api;

use super::apply::{self, Error};
use super::database::{report, Ctx, Inputs};
use crate::api::assets::KubernetesCluster;
use crate::controllers::database::RECHECK;
use crate::controllers::kubernetes_cluster::{self as decide, Outcome};
use crate::{remote_cluster, resolve};

pub const NAME: &str = "kubernetescluster";

/// Checks a cluster: the kubeconfig from its Secret (as `policy` allows), then the API server it
/// names.
pub async fn check(
    kc: &KubernetesCluster,
    secret: Option<&Secret>,
    policy: remote_cluster::KubeconfigPolicy,
) -> Outcome {
    let data = secret.map(resolve::secret_data);
    let config = match remote_cluster::kubeconfig_for(kc, data.as_ref(), policy) {
        Ok(c) => c,
        Err(e) => return Outcome::Resolve(e),
    };
    let server = remote_cluster::server(&config);
    let result = match remote_cluster::client(config).await {
        Ok(client) => remote_cluster::probe(&client, server.as_deref().unwrap_or_default()).await,
        Err(e) => Err(e),
    };
    Outcome::Checked { server, result }
}

pub async fn reconcile(kc: Arc<KubernetesCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, _) = apply::key(&*kc, "KubernetesCluster")?;
    let uid = kc.metadata.uid.clone().unwrap_or_default();
    let secret_name = kc.spec.secret_name.as_str();
    let secret = if secret_name.is_empty() {
        None
    } else {
        Api::<Secret>::namespaced(ctx.shared.client.clone(), &ns)
            .get_opt(secret_name)
            .await
            .map_err(Error::api("reading", "Secret", &ns, secret_name))?
    };
    let inputs = Inputs::of(kc.metadata.generation, secret.as_ref());
    if let Some(wait) = ctx.checks.due(&uid, &inputs) {
        return Ok(Action::requeue(wait));
    }
    let policy = ctx.shared.process.remotes.kubeconfig_policy();
    let outcome = check(&kc, secret.as_ref(), policy).await;
    let status = decide::desired(&kc, outcome, Timestamp::now());
    let old = kc.status.as_ref();
    report(&ctx, &*kc, &ns, old, &status, |s| &s.conditions).await?;
    ctx.checks.done(uid, inputs);
    Ok(Action::requeue(RECHECK))
}

fn secret_of(kc: &KubernetesCluster) -> Option<&str> {
    Some(kc.spec.secret_name.as_str()).filter(|s| !s.is_empty())
}

/// The controller, until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    super::database::run_checked_with_secret(
        NAME,
        ctx,
        secret_of,
        crate::metrics::compat::Exports::register_kubernetes_clusters,
        reconcile,
        stop,
    )
    .await;
}
