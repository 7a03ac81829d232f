//! Where a tunnel leads: a Database's `HOST:PORT` read as the remote cluster's DNS would, and
//! the pod a connection goes to now.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use super::TunnelError;

/// The longest a DNS label may be (RFC 1035).
const DNS_LABEL_MAX: usize = 63;

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

/// The pod and port a connection to `target` goes to now.
pub(super) async fn pick(
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
