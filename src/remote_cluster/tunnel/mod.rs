//! Reaching a ZooKeeper server inside another cluster through that cluster's API server, as
//! `kubectl port-forward` does: a listener on loopback per server, and for each connection
//! accepted there a port-forward to a ready pod behind the named Service (or to the named
//! StatefulSet pod). The engine and the verifier only ever see `127.0.0.1:PORT`.
//!
//! The pod is chosen per connection, so a tunnel follows pods as they restart or move; a
//! ZooKeeper client reconnecting after a pod died gets a live one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

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

/// Forwards one accepted connection to a pod of `target`.
async fn forward(
    client: &Client,
    target: &Target,
    turn: usize,
    local: &mut TcpStream,
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
    let mut remote = pf
        .take_stream(port)
        .ok_or_else(|| forward_err("no stream for the port".into()))?;
    let errors = pf.take_error(port);
    let copied = tokio::io::copy_bidirectional(local, &mut remote).await;
    drop(remote);
    if let Some(errors) = errors {
        if let Ok(Some(e)) = tokio::time::timeout(FORWARD_ERROR_WAIT, errors).await {
            return Err(forward_err(e));
        }
    }
    let _ = pf.join().await;
    // A connection closed by either end is how ZooKeeper sessions move; not an error.
    let _ = copied;
    Ok(())
}

/// Where a tunnel gets the remote cluster's client, asked at each connection so it always
/// carries the credentials as they are now (a rotated kubeconfig reaches running streams).
pub type ClientSource = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Client, String>> + Send>>
        + Send
        + Sync,
>;

/// One loopback listener leading to one remote server.
pub struct Tunnel {
    pub local: SocketAddr,
    pub target: Target,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    /// Opens the listener; connections are forwarded until the tunnel is dropped.
    pub async fn open(
        source: ClientSource,
        cluster: String,
        target: Target,
    ) -> std::io::Result<Tunnel> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let t = target.clone();
        let task = tokio::spawn(async move {
            let turn = Arc::new(AtomicUsize::new(0));
            loop {
                let socket = match listener.accept().await {
                    Ok((socket, _)) => socket,
                    Err(_) => {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let (source, t, errors, cluster) =
                    (source.clone(), t.clone(), errors.clone(), cluster.clone());
                let n = turn.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut socket = socket;
                    let outcome = match source().await {
                        Ok(client) => forward(&client, &t, n, &mut socket).await,
                        Err(message) => Err(TunnelError::Credentials { message }),
                    };
                    let label = if outcome.is_ok() {
                        "forwarded"
                    } else {
                        "failed"
                    };
                    metrics::counter!(crate::metrics::TUNNEL_CONNECTIONS_TOTAL, "cluster" => cluster.clone(), "outcome" => label)
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

/// (cluster namespace/name, target) of a tunnel.
type TunnelKey = (String, String);

/// Tunnels by (cluster, server): one listener per remote server for the life of the process,
/// shared by every run that uses it, so its address never changes under a running stream.
#[derive(Default)]
pub struct Tunnels {
    open: Mutex<HashMap<TunnelKey, Arc<Tunnel>>>,
}

impl Tunnels {
    /// The tunnel leading to `target` in the cluster `cluster` (namespace/name), opened on
    /// first use with `source` for its credentials.
    pub async fn route(
        &self,
        cluster: &str,
        source: &ClientSource,
        target: Target,
    ) -> std::io::Result<Arc<Tunnel>> {
        let key = (cluster.to_string(), target.to_string());
        if let Some(t) = self.lock().get(&key) {
            return Ok(t.clone());
        }
        let tunnel = Arc::new(Tunnel::open(source.clone(), cluster.to_string(), target).await?);
        Ok(self.lock().entry(key).or_insert(tunnel).clone())
    }

    /// Why the last connection through a tunnel into `cluster` to one of `targets` failed, if
    /// it did.
    pub fn last_error(&self, cluster: &str, targets: &[Target]) -> Option<String> {
        let open = self.lock();
        targets.iter().find_map(|t| {
            open.get(&(cluster.to_string(), t.to_string()))
                .and_then(|tunnel| tunnel.last_error())
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TunnelKey, Arc<Tunnel>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
