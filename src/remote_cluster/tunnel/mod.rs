//! Reaching a ZooKeeper server inside another cluster through that cluster's API server, as
//! `kubectl port-forward` does: a listener on loopback per server, and for each connection
//! accepted there a port-forward to a ready pod behind the named Service (or to the named
//! StatefulSet pod). The engine and the verifier only ever see `127.0.0.1:PORT`.
//!
//! The pod is chosen per connection, so a tunnel follows pods as they restart or move; a
//! ZooKeeper client reconnecting after a pod died gets a live one.
//!
//! A tunnel belongs to one Database ([`Owner`]) and admits only connections that show that
//! Database's key ([`admit`]): a loopback port is open to every connection the operator
//! makes, those of other namespaces' Databases among them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use verifier::DigestAuth;

pub mod admit;
mod target;

use target::pick;
pub use target::{parse_target, Target};

/// How long to wait after a failed accept (out of file descriptors, say) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a finished port-forward may take to report why it failed.
const FORWARD_ERROR_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum TunnelError {
    #[error("{target}: {message}")]
    Resolve { target: String, message: String },
    #[error("{target}: reading it from the cluster: {source}")]
    Api {
        target: String,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster's credentials: {message}")]
    Credentials { message: String },
    #[error("port-forward to pod {namespace}/{pod}:{port}: {message}")]
    Forward {
        namespace: String,
        pod: String,
        port: u16,
        message: String,
    },
}

/// Forwards one admitted connection to a pod of `target`.
async fn forward(
    client: &Client,
    target: &Target,
    turn: usize,
    local: &mut TcpStream,
    admitted: admit::Admitted,
) -> Result<(), TunnelError> {
    let (namespace, pod, port) = pick(client, target, turn).await?;
    let forward_err = |message: String| TunnelError::Forward {
        namespace: namespace.clone(),
        pod: pod.clone(),
        port,
        message,
    };
    let mut pf = Api::<Pod>::namespaced(client.clone(), &namespace)
        .portforward(&pod, &[port])
        .await
        .map_err(|e| forward_err(crate::runs::cause_chain(&e)))?;
    let remote = pf
        .take_stream(port)
        .ok_or_else(|| forward_err("no stream for the port".into()))?;
    let errors = pf.take_error(port);
    let relayed = admit::relay(local, remote, admitted).await;
    if let Some(errors) = errors {
        if let Ok(Some(e)) = tokio::time::timeout(FORWARD_ERROR_WAIT, errors).await {
            return Err(forward_err(e));
        }
    }
    let _ = pf.join().await;
    // A connection closed by either end is how ZooKeeper sessions move; not an error.
    let _ = relayed;
    Ok(())
}

/// Where a tunnel gets the remote cluster's client, asked at each connection so it always
/// carries the credentials as they are now (a rotated kubeconfig reaches running streams).
pub type ClientSource = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Client, String>> + Send>>
        + Send
        + Sync,
>;

/// How one connection through a tunnel ended, as the `outcome` label counts it.
fn outcome_label(outcome: &Result<(), TunnelError>) -> &'static str {
    match outcome {
        Ok(()) => "forwarded",
        Err(_) => "failed",
    }
}

/// One loopback listener leading to one remote server, for the connections that show `key`.
pub struct Tunnel {
    pub local: SocketAddr,
    pub target: Target,
    /// When it was opened (a relist closes only tunnels older than itself).
    pub opened: std::time::Instant,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    /// Opens the listener (bound before this returns, so no await sits between a decision to
    /// open and the port existing); connections showing `key` are forwarded until the tunnel
    /// is dropped, which closes the listener and cuts the connections through it.
    pub fn open(
        source: ClientSource,
        cluster: String,
        target: Target,
        key: &DigestAuth,
    ) -> std::io::Result<Tunnel> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let local = listener.local_addr()?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let t = target.clone();
        let key = Arc::new(admit::key_bytes(key));
        let task = tokio::spawn(async move {
            let turn = Arc::new(AtomicUsize::new(0));
            // Owned by this task: aborting it drops them, so no connection outlives the tunnel.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => {
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                };
                let _ = socket.set_nodelay(true);
                let (source, t, errors, cluster, key) = (
                    source.clone(),
                    t.clone(),
                    errors.clone(),
                    cluster.clone(),
                    key.clone(),
                );
                let n = turn.fetch_add(1, Ordering::Relaxed);
                connections.spawn(async move {
                    let mut socket = socket;
                    // Before anything is dialled: the key, or nothing.
                    let admitted = match admit::admit(&mut socket, &key).await {
                        Ok(a) => a,
                        Err(admit::Refused::Closed) => {
                            // A client that gave up mid-handshake (its own timeout, say).
                            tracing::debug!(cluster, target = %t, "tunnel connection closed before the key");
                            return;
                        }
                        Err(why) => {
                            metrics::counter!(crate::metrics::TUNNEL_CONNECTIONS_TOTAL, "cluster" => cluster.clone(), "outcome" => "refused")
                                .increment(1);
                            // Not the owner's failure: its status is not told.
                            tracing::warn!(cluster, target = %t, reason = %why, "tunnel connection refused");
                            return;
                        }
                    };
                    let outcome = match source().await {
                        Ok(client) => forward(&client, &t, n, &mut socket, admitted).await,
                        Err(message) => Err(TunnelError::Credentials { message }),
                    };
                    metrics::counter!(crate::metrics::TUNNEL_CONNECTIONS_TOTAL, "cluster" => cluster.clone(), "outcome" => outcome_label(&outcome))
                        .increment(1);
                    let mut last = errors.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(()) => *last = None,
                        Err(e) => {
                            tracing::warn!(cluster, error = %crate::runs::cause_chain(&e), "tunnel connection failed");
                            *last = Some(e.to_string());
                        }
                    }
                    // Closed only now, so whoever sees the connection drop finds the reason.
                    drop(last);
                    drop(socket);
                });
            }
        });
        Ok(Tunnel {
            local,
            target,
            opened: std::time::Instant::now(),
            last_error,
            task,
        })
    }

    /// Why the last connection through this tunnel failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Database a tunnel is for: only its connection settings get the tunnel's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database {}/{}", self.namespace, self.name)
    }
}

/// (cluster namespace/name, target) of one of an owner's tunnels.
type Route = (String, String);

/// One Database's tunnels and the key they all ask for.
struct Owned {
    key: DigestAuth,
    tunnels: BTreeMap<Route, Arc<Tunnel>>,
}

/// Tunnels by owner, then (cluster, server): one listener per server of a Database for as
/// long as the Database and its KubernetesCluster exist (see [`Tunnels::close`]), so its
/// address never changes under a running stream. Never shared between Databases: a tunnel is
/// only ever reached by the owner it was routed for.
#[derive(Default)]
pub struct Tunnels {
    open: Mutex<HashMap<Owner, Owned>>,
}

impl Tunnels {
    /// `owner`'s tunnel to `target` in the cluster `cluster` (namespace/name), opened on first
    /// use with `source` for its credentials, and the key to show it.
    pub fn route(
        &self,
        owner: &Owner,
        cluster: &str,
        source: &ClientSource,
        target: Target,
    ) -> std::io::Result<(Arc<Tunnel>, DigestAuth)> {
        let mut open = self.lock();
        let owned = match open.entry(owner.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Owned {
                key: admit::new_key()?,
                tunnels: BTreeMap::new(),
            }),
        };
        let route = (cluster.to_string(), target.to_string());
        if let Some(t) = owned.tunnels.get(&route) {
            return Ok((t.clone(), owned.key.clone()));
        }
        let tunnel = Arc::new(Tunnel::open(
            source.clone(),
            cluster.to_string(),
            target,
            &owned.key,
        )?);
        owned.tunnels.insert(route, tunnel.clone());
        Ok((tunnel, owned.key.clone()))
    }

    /// Why the last connection through one of `owner`'s tunnels into `cluster` to one of
    /// `targets` failed, if it did.
    pub fn last_error(&self, owner: &Owner, cluster: &str, targets: &[Target]) -> Option<String> {
        let open = self.lock();
        let owned = open.get(owner)?;
        targets.iter().find_map(|t| {
            owned
                .tunnels
                .get(&(cluster.to_string(), t.to_string()))
                .and_then(|tunnel| tunnel.last_error())
        })
    }

    /// Closes the tunnels `gone(owner, cluster, opened)` says are no longer wanted (their
    /// Database or KubernetesCluster was deleted): their listeners stop accepting and their
    /// connections are cut. Returns how many closed.
    pub fn close(&self, gone: impl Fn(&Owner, &str, std::time::Instant) -> bool) -> usize {
        let mut closed = Vec::new();
        {
            let mut open = self.lock();
            for (owner, owned) in open.iter_mut() {
                let routes: Vec<Route> = owned
                    .tunnels
                    .iter()
                    .filter(|((cluster, _), t)| gone(owner, cluster, t.opened))
                    .map(|(route, _)| route.clone())
                    .collect();
                for route in routes {
                    closed.extend(owned.tunnels.remove(&route));
                }
            }
            open.retain(|_, owned| !owned.tunnels.is_empty());
        }
        // Dropped outside the lock: aborting tasks takes no lock, but needs none held either.
        let n = closed.len();
        drop(closed);
        n
    }

    /// Every open tunnel: its owner, cluster and loopback address.
    pub fn list(&self) -> Vec<(Owner, String, SocketAddr)> {
        let open = self.lock();
        let mut out: Vec<_> = open
            .iter()
            .flat_map(|(owner, owned)| {
                owned
                    .tunnels
                    .iter()
                    .map(|((cluster, _), t)| (owner.clone(), cluster.clone(), t.local))
            })
            .collect();
        out.sort();
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, Owned>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
