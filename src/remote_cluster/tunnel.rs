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

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

/// The longest a DNS label may be (RFC 1035).
const DNS_LABEL_MAX: usize = 63;
/// How long to wait after a failed accept (out of file descriptors, say) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a finished port-forward may take to report why it failed.
const FORWARD_ERROR_WAIT: Duration = Duration::from_millis(100);

/// Where in the remote cluster a `HOST:PORT` of a Database leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Service: a ready pod behind it, on the pod port its `port` maps to.
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
    /// One pod, by its StatefulSet DNS name (`POD.SERVICE.NAMESPACE.svc…`), on `port`.
    Pod {
        namespace: String,
        name: String,
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service {
                namespace,
                name,
                port,
            } => write!(f, "service {namespace}/{name}:{port}"),
            Target::Pod {
                namespace,
                name,
                port,
            } => write!(f, "pod {namespace}/{name}:{port}"),
        }
    }
}

/// Reads `HOST:PORT` as the cluster's DNS would: `NAME` (in `default_namespace`),
/// `NAME.NAMESPACE`, `NAME.NAMESPACE.svc[.DOMAIN]` for a Service, and
/// `POD.SERVICE.NAMESPACE.svc[.DOMAIN]` for a pod of a headless Service.
pub fn parse_target(server: &str, default_namespace: &str) -> Result<Target, String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| format!("{server:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{server:?}: bad port"))?;
    let labels: Vec<&str> = host.split('.').collect();
    let shape =
        "HOST must be a Service (NAME, NAME.NAMESPACE or NAME.NAMESPACE.svc.cluster.local) \
                 or a StatefulSet pod (POD.SERVICE.NAMESPACE.svc.cluster.local) of that cluster";
    let dns_label = |l: &str| {
        !l.is_empty()
            && l.len() <= DNS_LABEL_MAX
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let svc = labels.iter().position(|l| *l == "svc");
    let named = match (svc, labels.as_slice()) {
        (None, [name]) => Some((None, default_namespace, *name)),
        (None, [name, ns]) => Some((None, *ns, *name)),
        (Some(2), [name, ns, ..]) => Some((None, *ns, *name)),
        (Some(3), [pod, service, ns, ..]) => Some((Some(*pod), *ns, *service)),
        _ => None,
    };
    let (pod, namespace, name) = named.ok_or_else(|| format!("{server:?}: {shape}"))?;
    if ![namespace, name]
        .iter()
        .chain(pod.iter())
        .all(|l| dns_label(l))
    {
        return Err(format!("{server:?}: {shape}"));
    }
    Ok(match pod {
        Some(pod) => Target::Pod {
            namespace: namespace.to_string(),
            name: pod.to_string(),
            port,
        },
        None => Target::Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
        },
    })
}

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

/// The pod and port a connection to `target` goes to now.
async fn pick(
    client: &Client,
    target: &Target,
    turn: usize,
) -> Result<(String, String, u16), TunnelError> {
    let api_err = |source| TunnelError::Api {
        target: target.to_string(),
        source,
    };
    let resolve_err = |message: String| TunnelError::Resolve {
        target: target.to_string(),
        message,
    };
    match target {
        Target::Pod {
            namespace,
            name,
            port,
        } => Ok((namespace.clone(), name.clone(), *port)),
        Target::Service {
            namespace,
            name,
            port,
        } => {
            let svc = Api::<Service>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(api_err)?
                .ok_or_else(|| resolve_err("no such Service".into()))?;
            let svc_port = svc
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .find(|p| p.port == i32::from(*port))
                .ok_or_else(|| resolve_err(format!("the Service has no port {port}")))?;
            let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
                .await
                .map_err(api_err)?;
            let mut ready = ready_pods(&slices.items, svc_port.name.as_deref());
            if ready.is_empty() {
                return Err(resolve_err("the Service has no ready pods".into()));
            }
            let (pod, pod_port) = ready.swap_remove(turn % ready.len());
            Ok((namespace.clone(), pod, pod_port))
        }
    }
}

/// The ready pods behind a Service, with the pod port its port `port_name` maps to (a named
/// targetPort resolves per slice, so it is read from the slice, never guessed); sorted.
fn ready_pods(slices: &[EndpointSlice], port_name: Option<&str>) -> Vec<(String, u16)> {
    let mut ready = Vec::new();
    for slice in slices {
        let Some(pod_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let is_ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            if let (true, Some(pod)) = (is_ready, pod) {
                ready.push((pod, pod_port));
            }
        }
    }
    ready.sort();
    ready.dedup();
    ready
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn servers_read_as_the_cluster_dns_would() {
        let svc = |ns: &str, name: &str| Target::Service {
            namespace: ns.into(),
            name: name.into(),
            port: 2181,
        };
        assert_eq!(parse_target("zk:2181", "kafka"), Ok(svc("kafka", "zk")));
        assert_eq!(parse_target("zk.data:2181", "kafka"), Ok(svc("data", "zk")));
        assert_eq!(parse_target("zk.data.svc:2181", "x"), Ok(svc("data", "zk")));
        assert_eq!(
            parse_target("zk.data.svc.cluster.local:2181", "x"),
            Ok(svc("data", "zk"))
        );
        assert_eq!(
            parse_target("zk-1.zk-hs.data.svc.cluster.local:2181", "x"),
            Ok(Target::Pod {
                namespace: "data".into(),
                name: "zk-1".into(),
                port: 2181
            })
        );
        for bad in [
            "10.0.0.7:2181",
            "zk.data.cluster.local:2181",
            "Zk:2181",
            "zk:0",
            "zk",
            "a.b.c.d.svc:1",
        ] {
            let e = parse_target(bad, "x").unwrap_err();
            assert!(e.starts_with(&format!("{bad:?}")), "{e}");
        }
    }
}
