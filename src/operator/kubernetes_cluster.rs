//! KubernetesCluster controller glue: read the Secret it names, connect with the kubeconfig in
//! it, write Ready with the server version. It runs in the database controller's process, under
//! its Lease, like the other asset checks.

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
use crate::api::assets::KubernetesCluster;
use crate::controllers::database::RECHECK;
use crate::controllers::kubernetes_cluster::{self as decide, Outcome};
use crate::{remote_cluster, resolve};

pub const NAME: &str = "kubernetescluster";

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

/// Checks a cluster: the kubeconfig from its Secret, then the API server it names.
pub async fn check(kc: &KubernetesCluster, secret: Option<&Secret>) -> Outcome {
    let data = secret.map(resolve::secret_data);
    let config = match remote_cluster::kubeconfig_for(kc, data.as_ref()) {
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
    let outcome = check(&kc, secret.as_ref()).await;
    let status = decide::desired(&kc, outcome, Timestamp::now());
    let api = Api::<KubernetesCluster>::namespaced(ctx.shared.client.clone(), &ns);
    apply::status(&api, &*kc, kc.status.as_ref(), &status).await?;
    let old = kc.status.as_ref().map(|s| s.conditions.as_slice());
    if let Some(note) = apply::ready_transition(old, &status.conditions) {
        ctx.shared.events.publish(&*kc, "Check", &note).await;
    }
    ctx.checks.done(uid, inputs);
    Ok(Action::requeue(RECHECK))
}

/// The KubernetesClusters in `ns` that name the Secret `secret`.
pub fn users_of(
    store: &Store<KubernetesCluster>,
    ns: &str,
    secret: &str,
) -> Vec<ObjectRef<KubernetesCluster>> {
    store
        .state()
        .iter()
        .filter(|k| k.metadata.namespace.as_deref() == Some(ns) && k.spec.secret_name == secret)
        .map(|k| ObjectRef::from_obj(&**k))
        .collect()
}

/// The controller, until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.shared.client.clone();
    let controller = Controller::new(
        Api::<KubernetesCluster>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    crate::metrics::compat::register_kubernetes_clusters(controller.store());
    let store = controller.store();
    // Metadata only: the controller never caches kubeconfigs.
    let secrets = Api::<PartialObjectMeta<Secret>>::all(client);
    controller
        .watches(secrets, watcher::Config::default(), move |s| {
            users_of(&store, &s.namespace().unwrap_or_default(), &s.name_any())
        })
        .graceful_shutdown_on(stop)
        .run(
            |kc, ctx: Arc<Ctx>| {
                let shared = ctx.shared.clone();
                shared.instrument(kc, ctx, reconcile)
            },
            |kc, err, ctx| ctx.shared.error_policy(&*kc, err),
            ctx,
        )
        .for_each(|r| async move { super::log_result(NAME, r) })
        .await;
    crate::metrics::compat::unregister(NAME);
}
