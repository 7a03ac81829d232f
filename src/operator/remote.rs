//! Databases that live in another cluster (spec.kubernetesClusterName): their servers are
//! swapped for loopback tunnels through that cluster's API server before anything connects.
//! The controllers route here; the engine and the verifier see plain `127.0.0.1:PORT`s.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::apply::Error;
use crate::api::assets::{Database, KubernetesCluster};
use crate::remote_cluster::{self, tunnel};
use crate::resolve::{self, ResolveError};

/// One set of tunnels and one client per cluster for the whole process, shared by the
/// controllers in it.
static TUNNELS: LazyLock<tunnel::Tunnels> = LazyLock::new(tunnel::Tunnels::default);
/// By cluster (namespace/name): the kubeconfig fingerprint, the client, the default namespace.
type Clients = HashMap<String, (String, Client, String)>;
static CLIENTS: LazyLock<Mutex<Clients>> = LazyLock::new(Default::default);

/// The client for the KubernetesCluster `ns/name` as its Secret is now, with the namespace
/// its kubeconfig defaults to. Read at each use, so rotated credentials reach every process
/// and every running stream; the client is rebuilt only when the kubeconfig changed.
async fn current_client(
    mgmt: &Client,
    ns: &str,
    name: &str,
    database: &str,
) -> Result<Result<(Client, String), ResolveError>, Error> {
    let Some(cluster) = Api::<KubernetesCluster>::namespaced(mgmt.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::api("reading", "KubernetesCluster", ns, name))?
    else {
        return Ok(Err(ResolveError::KubernetesClusterNotFound {
            namespace: ns.to_string(),
            name: name.to_string(),
            database: database.to_string(),
        }));
    };
    let secret_name = cluster.spec.secret_name.clone();
    let secret = if secret_name.is_empty() {
        None
    } else {
        Api::<Secret>::namespaced(mgmt.clone(), ns)
            .get_opt(&secret_name)
            .await
            .map_err(Error::api("reading", "Secret", ns, &secret_name))?
    };
    let data = secret.as_ref().map(resolve::secret_data);
    let kubeconfig = match remote_cluster::kubeconfig_for(&cluster, data.as_ref()) {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let fingerprint = serde_json::to_vec(&kubeconfig)
        .map(|b| blake3::hash(&b).to_hex().to_string())
        .unwrap_or_default();
    let key = format!("{ns}/{name}");
    let cached = CLIENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .filter(|(fp, _, _)| *fp == fingerprint)
        .map(|(_, c, default_ns)| (c.clone(), default_ns.clone()));
    if let Some(found) = cached {
        return Ok(Ok(found));
    }
    let default_ns = remote_cluster::namespace(&kubeconfig).unwrap_or_else(|| "default".into());
    let client = match remote_cluster::client(kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(ResolveError::SecretInvalid {
                name: secret_name,
                message: e.to_string(),
            }))
        }
    };
    CLIENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, (fingerprint, client.clone(), default_ns.clone()));
    Ok(Ok((client, default_ns)))
}

/// `db` as it should be connected to: itself, or (for a Database in a KubernetesCluster) a copy
/// whose servers are loopback tunnels. `Ok(Err(_))` is a problem to report in status; `Err(_)`
/// an API error to retry.
pub async fn route(
    client: &Client,
    ns: &str,
    mut db: Database,
) -> Result<Result<Database, ResolveError>, Error> {
    let Some(cluster_name) = db.spec.kubernetes_cluster_name.clone() else {
        return Ok(Ok(db));
    };
    let db_name = db.metadata.name.clone().unwrap_or_default();
    let default_ns = match current_client(client, ns, &cluster_name, &db_name).await? {
        Ok((_, default_ns)) => default_ns,
        Err(e) => return Ok(Err(e)),
    };
    let key = format!("{ns}/{cluster_name}");
    // Each connection through a tunnel asks for the cluster's client as it is then.
    let source: tunnel::ClientSource = {
        let (mgmt, ns, cluster) = (client.clone(), ns.to_string(), cluster_name.clone());
        Arc::new(move || {
            let (mgmt, ns, cluster, db) =
                (mgmt.clone(), ns.clone(), cluster.clone(), db_name.clone());
            Box::pin(async move {
                match current_client(&mgmt, &ns, &cluster, &db).await {
                    Ok(Ok((c, _))) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
    };
    let Some(servers) = db
        .spec
        .zookeeper
        .as_mut()
        .and_then(|z| z.client.as_mut())
        .map(|c| &mut c.servers)
    else {
        // Nothing to route: the resolver reports the missing servers.
        return Ok(Ok(db));
    };
    let mut routed = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        let target = match tunnel::parse_target(server, &default_ns) {
            Ok(t) => t,
            Err(m) => {
                return Ok(Err(ResolveError::InvalidSpec {
                    field: format!("spec.zookeeper.client.servers[{i}]"),
                    message: format!("{m} (spec.kubernetesClusterName is {cluster_name})"),
                }))
            }
        };
        match TUNNELS.route(&key, &source, target).await {
            Ok(t) => routed.push(t.local.to_string()),
            Err(e) => {
                return Ok(Err(ResolveError::InvalidSpec {
                    field: "spec.kubernetesClusterName".into(),
                    message: format!("opening a loopback listener for {server}: {e}"),
                }))
            }
        }
    }
    *servers = routed;
    // Routed: what is left are loopback addresses to connect to directly.
    db.spec.kubernetes_cluster_name = None;
    Ok(Ok(db))
}

/// Why the last connection to `db`'s cluster failed, for a status message (None when the
/// Database is reached directly or nothing failed).
pub fn last_tunnel_error(ns: &str, db: &Database) -> Option<String> {
    let cluster = db.spec.kubernetes_cluster_name.as_ref()?;
    let key = format!("{ns}/{cluster}");
    let default_ns = CLIENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .map(|(_, _, ns)| ns.clone())?;
    let targets: Vec<_> = db
        .spec
        .zookeeper
        .as_ref()
        .and_then(|z| z.client.as_ref())
        .into_iter()
        .flat_map(|c| c.servers.iter())
        .filter_map(|s| tunnel::parse_target(s, &default_ns).ok())
        .collect();
    TUNNELS.last_error(&key, &targets)
}
