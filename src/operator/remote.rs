//! Databases that live in another cluster (spec.kubernetesClusterName): their servers are
//! swapped for loopback tunnels through that cluster's API server before anything connects.
//! The controllers route here; the engine and the verifier see plain `127.0.0.1:PORT`s.
//!
//! Each Database gets tunnels of its own, which admit only connections showing its key (see
//! [`tunnel::admit`]); the key rides in memory on the routed copy of the Database into its
//! connection settings. A Database of another namespace that names `127.0.0.1:PORT` (or a
//! host resolving there) reaches the port, but cannot show the key, so is never forwarded.
//! Tunnels close when their Database or KubernetesCluster is deleted
//! ([`Remotes::close_deleted`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::config::Kubeconfig;
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use super::apply::Error;
use crate::api::assets::{Database, KubernetesCluster};
use crate::remote_cluster::{self, tunnel};
use crate::resolve::{self, ResolveError};

/// The namespace a kubeconfig that sets none means, as with kubectl.
const DEFAULT_NAMESPACE: &str = "default";

/// The tunnels and clients into other clusters: one set per operator process, shared by the
/// controllers in it, so a tunnel's address never changes under a running stream.
#[derive(Default)]
pub struct Remotes {
    /// What the kubeconfigs of KubernetesClusters may ask for (`--allow-insecure-kubeconfigs`).
    policy: remote_cluster::KubeconfigPolicy,
    tunnels: tunnel::Tunnels,
    /// By cluster (see [`cluster_key`]).
    clients: Mutex<HashMap<String, Cached>>,
}

/// A cluster's client and the namespace its kubeconfig defaults to, built from the kubeconfig
/// with this fingerprint.
#[derive(Clone)]
struct Cached {
    fingerprint: String,
    client: Client,
    default_namespace: String,
}

/// A KubernetesCluster's kubeconfig, with the name of the Secret it came from.
type Found = (Kubeconfig, String);

/// The key of a KubernetesCluster `ns/name`, for its client and its tunnels.
fn cluster_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The kubeconfig of the KubernetesCluster `ns/name`, as its Secret is now. `Ok(Err(_))` is a
/// problem with the cluster or its Secret; `Err(_)` an API error.
async fn read_kubeconfig(
    mgmt: &Client,
    ns: &str,
    name: &str,
    database: &str,
    policy: remote_cluster::KubeconfigPolicy,
) -> Result<Result<Found, ResolveError>, Error> {
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
    Ok(remote_cluster::kubeconfig_for(&cluster, data.as_ref(), policy).map(|k| (k, secret_name)))
}

impl Remotes {
    /// No tunnels or clients yet; kubeconfigs checked with `policy`.
    pub fn new(policy: remote_cluster::KubeconfigPolicy) -> Remotes {
        Remotes {
            policy,
            ..Remotes::default()
        }
    }

    /// What the kubeconfigs of KubernetesClusters may ask for.
    pub fn kubeconfig_policy(&self) -> remote_cluster::KubeconfigPolicy {
        self.policy
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client for the KubernetesCluster `ns/name` as its Secret is now, with the namespace
    /// its kubeconfig defaults to. Read at each use, so rotated credentials reach every
    /// process and every running stream; the client is rebuilt only when the kubeconfig
    /// changed.
    async fn current_client(
        &self,
        mgmt: &Client,
        ns: &str,
        name: &str,
        database: &str,
    ) -> Result<Result<(Client, String), ResolveError>, Error> {
        let found = read_kubeconfig(mgmt, ns, name, database, self.policy).await?;
        let (kubeconfig, secret_name) = match found {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let fingerprint = serde_json::to_vec(&kubeconfig)
            .map(|b| blake3::hash(&b).to_hex().to_string())
            .unwrap_or_default();
        let key = cluster_key(ns, name);
        let cached = self
            .clients()
            .get(&key)
            .filter(|c| c.fingerprint == fingerprint)
            .map(|c| (c.client.clone(), c.default_namespace.clone()));
        if let Some(found) = cached {
            return Ok(Ok(found));
        }
        let default_namespace =
            remote_cluster::namespace(&kubeconfig).unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let client = match remote_cluster::client(kubeconfig).await {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(ResolveError::SecretInvalid {
                    name: secret_name,
                    message: e.to_string(),
                }))
            }
        };
        let found = (client.clone(), default_namespace.clone());
        self.clients().insert(
            key,
            Cached {
                fingerprint,
                client,
                default_namespace,
            },
        );
        Ok(Ok(found))
    }

    /// What a tunnel into `ns/cluster` asks at each connection for the cluster's client as it
    /// is then.
    fn client_source(
        self: &Arc<Self>,
        mgmt: &Client,
        ns: &str,
        cluster: &str,
        database: &str,
    ) -> tunnel::ClientSource {
        let (remotes, mgmt, ns, cluster, db) = (
            self.clone(),
            mgmt.clone(),
            ns.to_string(),
            cluster.to_string(),
            database.to_string(),
        );
        Arc::new(move || {
            let (remotes, mgmt, ns, cluster, db) = (
                remotes.clone(),
                mgmt.clone(),
                ns.clone(),
                cluster.clone(),
                db.clone(),
            );
            Box::pin(async move {
                match remotes.current_client(&mgmt, &ns, &cluster, &db).await {
                    Ok(Ok((c, _))) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
    }

    /// `db` as it should be connected to: itself, or (for a Database in a KubernetesCluster) a
    /// copy whose servers are loopback tunnels of its own, with the key they admit
    /// (`spec.zookeeper.client.tunnel_key`, in memory only). `Ok(Err(_))` is a problem to
    /// report in status; `Err(_)` an API error to retry.
    pub async fn route(
        self: &Arc<Self>,
        client: &Client,
        ns: &str,
        mut db: Database,
    ) -> Result<Result<Database, ResolveError>, Error> {
        let Some(cluster_name) = db.spec.kubernetes_cluster_name.clone() else {
            return Ok(Ok(db));
        };
        let owner = owner(ns, &db);
        let default_ns = match self
            .current_client(client, ns, &cluster_name, &owner.name)
            .await?
        {
            Ok((_, default_ns)) => default_ns,
            Err(e) => return Ok(Err(e)),
        };
        let source = self.client_source(client, ns, &cluster_name, &owner.name);
        let Some(zk) = db.spec.zookeeper.as_mut().and_then(|z| z.client.as_mut()) else {
            // Nothing to route: the resolver reports the missing servers.
            return Ok(Ok(db));
        };
        let key = cluster_key(ns, &cluster_name);
        match self.tunnel_each(
            &owner,
            &key,
            &cluster_name,
            &source,
            &zk.servers,
            &default_ns,
        ) {
            Ok((routed, tunnel_key)) => {
                zk.servers = routed;
                zk.tunnel_key = tunnel_key;
            }
            Err(e) => return Ok(Err(e)),
        }
        // Routed: what is left are loopback addresses to connect to directly.
        db.spec.kubernetes_cluster_name = None;
        Ok(Ok(db))
    }

    /// The loopback address of `owner`'s tunnel to each of `servers` in the cluster `key`, and
    /// the key they admit (None when there are no servers).
    fn tunnel_each(
        &self,
        owner: &tunnel::Owner,
        key: &str,
        cluster_name: &str,
        source: &tunnel::ClientSource,
        servers: &[String],
        default_ns: &str,
    ) -> Result<(Vec<String>, Option<verifier::DigestAuth>), ResolveError> {
        let mut routed = Vec::with_capacity(servers.len());
        let mut tunnel_key = None;
        for (i, server) in servers.iter().enumerate() {
            let target = tunnel::parse_target(server, default_ns).map_err(|m| {
                ResolveError::InvalidSpec {
                    field: format!("spec.zookeeper.client.servers[{i}]"),
                    message: format!("{m} (spec.kubernetesClusterName is {cluster_name})"),
                }
            })?;
            let (t, k) = self
                .tunnels
                .route(owner, key, source, target)
                .map_err(|e| ResolveError::InvalidSpec {
                    field: "spec.kubernetesClusterName".into(),
                    message: format!("opening a loopback listener for {server}: {e}"),
                })?;
            routed.push(t.local.to_string());
            tunnel_key = Some(k);
        }
        Ok((routed, tunnel_key))
    }

    /// Why the last connection to `db`'s cluster failed, for a status message (None when the
    /// Database is reached directly or nothing failed).
    pub fn last_tunnel_error(&self, ns: &str, db: &Database) -> Option<String> {
        let cluster = db.spec.kubernetes_cluster_name.as_ref()?;
        let key = cluster_key(ns, cluster);
        let default_ns = self
            .clients()
            .get(&key)
            .map(|c| c.default_namespace.clone())?;
        let targets: Vec<_> = db
            .spec
            .zookeeper
            .as_ref()
            .and_then(|z| z.client.as_ref())
            .into_iter()
            .flat_map(|c| c.servers.iter())
            .filter_map(|s| tunnel::parse_target(s, &default_ns).ok())
            .collect();
        self.tunnels.last_error(&owner(ns, db), &key, &targets)
    }

    /// Every open tunnel: the Database it is for, its KubernetesCluster (namespace/name) and
    /// its loopback address.
    pub fn tunnels(&self) -> Vec<(tunnel::Owner, String, std::net::SocketAddr)> {
        self.tunnels.list()
    }

    /// Closes the tunnels of Databases and KubernetesClusters once they are deleted, until
    /// `stop` resolves. Watches both (metadata only) in every process that routes; after each
    /// (re)list, a tunnel opened before it whose Database or cluster is no longer listed goes
    /// too (a deletion missed while the watch was down).
    ///
    /// One watch of each per watched namespace (`--watch-namespaces`), each judging only the
    /// tunnels of its namespace: a re-list there says nothing of the others.
    pub async fn close_deleted(
        self: Arc<Self>,
        within: Vec<super::scope::Within>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let each = within.into_iter().map(|w| self.clone().close_deleted_in(w));
        tokio::select! {
            _ = stop => {}
            _ = futures::future::join_all(each) => {}
        }
    }

    async fn close_deleted_in(self: Arc<Self>, within: super::scope::Within) {
        let dbs = watcher::watcher(
            within.api::<PartialObjectMeta<Database>>(),
            watcher::Config::default(),
        )
        .default_backoff()
        .map(Gone::Database);
        let clusters = watcher::watcher(
            within.api::<PartialObjectMeta<KubernetesCluster>>(),
            watcher::Config::default(),
        )
        .default_backoff()
        .map(Gone::Cluster);
        let mut events = std::pin::pin!(futures::stream::select(dbs, clusters));
        let mut janitor = Janitor {
            namespace: within.namespace().map(str::to_string),
            ..Janitor::default()
        };
        loop {
            let event = events.next().await;
            match event {
                Some(Gone::Database(Ok(e))) => janitor.database(&self, e),
                Some(Gone::Cluster(Ok(e))) => janitor.cluster(&self, e),
                Some(Gone::Database(Err(e)) | Gone::Cluster(Err(e))) => {
                    tracing::warn!(error = %crate::runs::cause_chain(&e), "watching for deleted tunnel owners")
                }
                None => return,
            }
        }
    }

    /// Closes tunnels `gone` says are no longer wanted, and forgets the clients of clusters in
    /// `clusters_gone`.
    fn close(
        &self,
        gone: impl Fn(&tunnel::Owner, &str, Instant) -> bool,
        clusters_gone: &[String],
    ) {
        let n = self.tunnels.close(gone);
        let mut clients = self.clients();
        for c in clusters_gone {
            clients.remove(c);
        }
        if n > 0 {
            tracing::info!(
                closed = n,
                "closed the tunnels of deleted Databases or KubernetesClusters"
            );
        }
    }
}

/// The owner of `db`'s tunnels.
fn owner(ns: &str, db: &Database) -> tunnel::Owner {
    tunnel::Owner {
        namespace: ns.to_string(),
        name: db.metadata.name.clone().unwrap_or_default(),
        uid: db.metadata.uid.clone().unwrap_or_default(),
    }
}

/// An event of either watch of [`Remotes::close_deleted`].
enum Gone {
    Database(Result<watcher::Event<PartialObjectMeta<Database>>, watcher::Error>),
    Cluster(Result<watcher::Event<PartialObjectMeta<KubernetesCluster>>, watcher::Error>),
}

/// What a (re)list of either kind has seen so far, and when it began.
#[derive(Default)]
struct Janitor {
    /// The namespace its watches list (None: all).
    namespace: Option<String>,
    databases: Option<(Instant, HashSet<String>)>,
    clusters: Option<(Instant, HashSet<String>)>,
}

impl Janitor {
    /// Whether a re-list of this janitor's watches speaks for namespace `ns`.
    fn judges(&self, ns: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == ns)
    }

    /// Same for a cluster key `ns/name`.
    fn judges_cluster(&self, key: &str) -> bool {
        self.judges(key.split('/').next().unwrap_or_default())
    }

    fn database(&mut self, remotes: &Remotes, e: watcher::Event<PartialObjectMeta<Database>>) {
        use watcher::Event;
        match e {
            Event::Delete(db) => {
                let uid = db.metadata.uid.unwrap_or_default();
                remotes.close(|owner, _, _| owner.uid == uid, &[]);
            }
            Event::Init => self.databases = Some((Instant::now(), HashSet::new())),
            Event::InitApply(db) => {
                if let Some((_, seen)) = self.databases.as_mut() {
                    seen.extend(db.metadata.uid);
                }
            }
            Event::InitDone => {
                if let Some((began, seen)) = self.databases.take() {
                    remotes.close(
                        |owner, _, opened| {
                            self.judges(&owner.namespace)
                                && opened < began
                                && !seen.contains(&owner.uid)
                        },
                        &[],
                    );
                }
            }
            Event::Apply(_) => {}
        }
    }

    fn cluster(
        &mut self,
        remotes: &Remotes,
        e: watcher::Event<PartialObjectMeta<KubernetesCluster>>,
    ) {
        use watcher::Event;
        let key = |c: &PartialObjectMeta<KubernetesCluster>| {
            cluster_key(
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default(),
            )
        };
        match e {
            Event::Delete(c) => {
                let key = key(&c);
                remotes.close(|_, cluster, _| cluster == key, std::slice::from_ref(&key));
            }
            Event::Init => self.clusters = Some((Instant::now(), HashSet::new())),
            Event::InitApply(c) => {
                if let Some((_, seen)) = self.clusters.as_mut() {
                    seen.insert(key(&c));
                }
            }
            Event::InitDone => {
                if let Some((began, seen)) = self.clusters.take() {
                    let gone: Vec<String> = remotes
                        .clients()
                        .keys()
                        .filter(|k| self.judges_cluster(k) && !seen.contains(*k))
                        .cloned()
                        .collect();
                    remotes.close(
                        |_, cluster, opened| {
                            self.judges_cluster(cluster)
                                && opened < began
                                && !seen.contains(cluster)
                        },
                        &gone,
                    );
                }
            }
            Event::Apply(_) => {}
        }
    }
}
