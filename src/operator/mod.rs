//! `resiliency-operator operator`: the Kubernetes glue around the pure decisions in
//! [`crate::controllers`]. Each controller reads state, calls its decision, applies it and
//! writes the status; only the holder of the controller's Lease acts. Also serves `/metrics`,
//! `/healthz` and `/readyz`, and shuts down gracefully on SIGTERM, releasing its Leases.

pub mod apply;
pub mod bucket;
pub mod database;
pub mod kubernetes_cluster;
pub mod leader;
pub mod live_synchronization;
mod preflight;
pub mod remote;
pub mod scope;
pub mod shared;
pub mod switchover;
pub mod synchronization;
pub mod synchronization_plan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use kube::Client;
use thiserror::Error;
use tokio::sync::watch;

use crate::metrics::compat::Exports;
use crate::runs::Runs;
use crate::serve::{http, shutdown};
pub use apply::Error;
use preflight::preflight;
pub use shared::Shared;

/// One `--controllers` value (all by default): the controllers that run under one Lease and
/// one Deployment, and share one `controller` label. Database also checks Buckets and
/// KubernetesClusters; Synchronization also drives LiveSynchronizations and Switchovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum ControllerGroup {
    Database,
    Synchronization,
    Synchronizationplan,
}

impl ControllerGroup {
    pub fn name(self) -> &'static str {
        match self {
            ControllerGroup::Database => database::NAME,
            ControllerGroup::Synchronization => synchronization::NAME,
            ControllerGroup::Synchronizationplan => synchronization_plan::NAME,
        }
    }

    /// The Deployment, Lease and Event reporter name, as in the seed's install.
    pub fn component(self) -> String {
        format!("resiliency-operator-{}-controller", self.name())
    }
}

pub struct Settings {
    pub controllers: Vec<ControllerGroup>,
    pub listen: SocketAddr,
    /// Namespace of the Leases; None disables leader election (one replica only).
    pub lease_namespace: Option<String>,
    pub identity: String,
    /// The namespaces watched (`--watch-namespaces`): all, or only these.
    pub scope: scope::Scope,
    /// What the kubeconfigs of KubernetesClusters may ask for.
    pub kubeconfig_policy: crate::remote_cluster::KubeconfigPolicy,
}

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("cannot build a Kubernetes client (KUBECONFIG or in-cluster config): {0}")]
    Client(#[source] kube::Error),
    #[error("the API server refused {what}: {source}")]
    Preflight {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("CustomResourceDefinition {0} is not installed: kubectl apply -f crds/crds.yaml")]
    CrdMissing(String),
    #[error("cannot serve metrics and probes on {0}")]
    Listen(#[source] std::io::Error),
    #[error("controller {0} stopped unexpectedly")]
    ControllerDied(&'static str),
}

/// What the controllers in one process share, whichever Leases it holds: the tunnels and
/// clients into other clusters, the Astronetes names its `/metrics` renders, and the
/// namespaces it watches.
#[derive(Clone, Default)]
pub struct Process {
    pub remotes: Arc<remote::Remotes>,
    pub exports: Arc<Exports>,
    pub scope: scope::Scope,
}

/// Resolves once `rx` says true (or its sender is gone).
async fn when_set(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The copies and streams a controller started: owned by the supervisor, so losing the Lease
/// stops them even when it aborts the controller future.
#[derive(Clone, Default)]
struct Workers {
    runs: Runs,
    live: crate::continuous::Registry,
    switchovers: switchover::Runs,
}

impl Workers {
    fn clear(&self) {
        // Switchovers first: a run must not act on a stream that is going.
        self.switchovers.clear();
        self.runs.clear();
        self.live.clear();
    }
}

/// Runs one controller until it is told to stop. Used with and without leader election.
/// The synchronization controller also drives LiveSynchronizations, under the same Lease.
async fn run_one(
    group: ControllerGroup,
    client: Client,
    instance: Option<String>,
    process: Process,
    stop: watch::Receiver<bool>,
    workers: Workers,
) {
    let shared = Shared::new(client, group, instance, &process);
    match group {
        ControllerGroup::Database => {
            // Buckets and KubernetesClusters are assets too: checked in the same process,
            // under the same Lease.
            let buckets = database::Ctx::new(shared.clone());
            let clusters = database::Ctx::new(shared.clone());
            tokio::join!(
                database::run(Arc::new(database::Ctx::new(shared)), when_set(stop.clone())),
                bucket::run(Arc::new(buckets), when_set(stop.clone())),
                kubernetes_cluster::run(Arc::new(clusters), when_set(stop))
            );
        }
        ControllerGroup::Synchronization => {
            // Switchovers take over streams of this process's registry.
            let switchovers = switchover::Ctx {
                shared: shared.clone(),
                live: workers.live.clone(),
                runs: workers.switchovers,
            };
            let live = live_synchronization::Ctx::new(shared.clone(), workers.live);
            let ctx = synchronization::Ctx {
                shared,
                runs: workers.runs,
            };
            tokio::join!(
                synchronization::run(Arc::new(ctx), when_set(stop.clone())),
                live_synchronization::run(Arc::new(live), when_set(stop.clone())),
                switchover::run(Arc::new(switchovers), when_set(stop))
            );
        }
        ControllerGroup::Synchronizationplan => {
            let ctx = synchronization_plan::Ctx { shared };
            synchronization_plan::run(Arc::new(ctx), when_set(stop)).await
        }
    }
}

/// How long a controller may take to stop on shutdown before it is aborted: within the
/// kubelet's default 30 s grace period, with time left to release the Lease.
const GRACEFUL_STOP: Duration = Duration::from_secs(20);

/// Sets whether this replica leads `controller`.
fn set_leader(controller: &'static str, leads: bool) {
    metrics::gauge!(crate::metrics::CONTROLLER_LEADER, "controller" => controller).set(if leads {
        1.0
    } else {
        0.0
    });
}

/// Campaigns for the controller's Lease, runs the controller while holding it, stands by
/// again when it is lost, and releases it on shutdown.
async fn supervise(
    group: ControllerGroup,
    client: Client,
    settings: Arc<Settings>,
    process: Process,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = group.name();
    let instance = Some(settings.identity.clone());
    let Some(ns) = settings.lease_namespace.clone() else {
        set_leader(name, true);
        let workers = Workers::default();
        run_one(group, client, instance, process, shutdown, workers).await;
        return;
    };
    let cfg = leader::LeaseConfig::new(&group.component(), &ns, &settings.identity);
    let mut elector = leader::Elector::new(client.clone(), cfg);
    loop {
        set_leader(name, false);
        tracing::info!(controller = name, lease = %group.component(), "standing by for the Lease");
        if !elector.acquire(&mut shutdown).await {
            return;
        }
        set_leader(name, true);
        let term = lead(
            group,
            &client,
            &instance,
            &process,
            &mut elector,
            &mut shutdown,
        );
        if term.await == leader::Ended::Shutdown {
            elector.release().await;
            set_leader(name, false);
            return;
        }
    }
}

/// One term as leader: runs the controller while `elector` holds the Lease, and stops it when
/// the Lease is lost (at once) or shutdown is asked for (within [`GRACEFUL_STOP`]).
async fn lead(
    group: ControllerGroup,
    client: &Client,
    instance: &Option<String>,
    process: &Process,
    elector: &mut leader::Elector,
    shutdown: &mut watch::Receiver<bool>,
) -> leader::Ended {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Owned here: losing the Lease aborts the controller, and its runs must go with it.
    let workers = Workers::default();
    let mut controller = tokio::spawn(run_one(
        group,
        client.clone(),
        instance.clone(),
        process.clone(),
        stop_rx,
        workers.clone(),
    ));
    let ended = tokio::select! {
        ended = elector.hold(shutdown) => ended,
        _ = &mut controller => leader::Ended::Lost,
    };
    match ended {
        leader::Ended::Lost => {
            // Stop acting at once: the next leader may start within the lease duration.
            controller.abort();
            let _ = controller.await;
            tracing::warn!(controller = group.name(), "lost the Lease; standing by");
        }
        leader::Ended::Shutdown => {
            let _ = stop_tx.send(true);
            if tokio::time::timeout(GRACEFUL_STOP, &mut controller)
                .await
                .is_err()
            {
                controller.abort();
            }
        }
    }
    workers.clear();
    ended
}

/// The `operator` subcommand.
pub async fn run(
    settings: Settings,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<(), OperatorError> {
    let health = Arc::new(http::Health::default());
    let process = Process {
        scope: settings.scope.clone(),
        remotes: Arc::new(remote::Remotes::new(settings.kubeconfig_policy)),
        ..Process::default()
    };
    let listener = http::bind(settings.listen)
        .await
        .map_err(OperatorError::Listen)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        http::router_with_exports(health.clone(), metrics.clone(), process.exports.clone()),
        when_set(shutdown_rx.clone()),
    ));
    if let Some(h) = metrics.clone() {
        http::spawn_upkeep(h);
    }
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    preflight(&client, &settings.controllers, &settings.scope).await?;
    health.set_ready();
    tracing::info!(controllers = ?settings.controllers.iter().map(|g| g.name()).collect::<Vec<_>>(),
        identity = %settings.identity, namespaces = %settings.scope.describe(), "operator started");

    // Tunnels close with their Database or KubernetesCluster, in the processes that route.
    let routes = settings.controllers.iter().any(|g| {
        matches!(
            g,
            ControllerGroup::Database | ControllerGroup::Synchronization
        )
    });
    let janitor = routes.then(|| {
        let stop = when_set(shutdown_rx.clone());
        let within = settings.scope.within(&client);
        tokio::spawn(process.remotes.clone().close_deleted(within, stop))
    });
    let settings = Arc::new(settings);
    let mut tasks = tokio::task::JoinSet::new();
    for group in settings.controllers.clone() {
        let (client, settings, rx) = (client.clone(), settings.clone(), shutdown_rx.clone());
        let process = process.clone();
        tasks.spawn(async move {
            supervise(group, client, settings, process, rx).await;
            group
        });
    }
    let mut died = None;
    tokio::select! {
        _ = shutdown::termination() => tracing::info!("termination signal: shutting down"),
        Some(done) = tasks.join_next() => {
            let w = done.map(|g| g.name()).unwrap_or("unknown");
            health.set_broken();
            died = Some(w);
        }
    }
    let _ = shutdown_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let Some(janitor) = janitor {
        let _ = janitor.await;
    }
    let _ = server.await;
    match died {
        Some(w) => Err(OperatorError::ControllerDied(w)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_match_the_deployments_and_leases() {
        assert_eq!(
            ControllerGroup::Database.component(),
            "resiliency-operator-database-controller"
        );
        assert_eq!(
            ControllerGroup::Synchronizationplan.component(),
            "resiliency-operator-synchronizationplan-controller"
        );
    }
}
