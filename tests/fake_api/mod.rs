//! An in-memory Kubernetes API server for the operator binary: list, watch with
//! resourceVersion replay, get, create, update with optimistic concurrency, merge patches (a
//! changed spec bumps the generation; the status subresource changes only the status) and
//! delete with finalizers. Used by tests/operator_binary.rs and benches/operator.rs.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::support::{free_port, merge, write_kubeconfig};

/// Where an object lives: resource plural, namespace, name.
pub type Key = (String, String, String);

#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<Key, Value>,
    /// Every change, in order: (resourceVersion, plural, namespace, event type, object).
    pub log: Vec<(u64, String, String, &'static str, Value)>,
    pub version: u64,
    /// Every request, in order: method and path (with the query).
    pub requests: Vec<(Method, String)>,
}

#[derive(Clone)]
pub struct Fake {
    pub store: Arc<Mutex<Store>>,
    pub changed: tokio::sync::watch::Sender<u64>,
}

/// What a request path names.
pub struct Target {
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
}

pub fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match *parts.first()? {
        "api" => &parts[2..],
        "apis" => &parts[3..],
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    Some(Target {
        plural: rest.first()?.to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: rest.get(2) == Some(&"status"),
    })
}

pub fn status_error(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": message, "reason": reason, "code": code})
        .to_string(),
    )
        .into_response()
}

pub fn ok(code: u16, v: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub fn metadata_only(v: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]})
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            store: Arc::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// Stores `obj` (a new resourceVersion, a uid and generation when new) and logs the change.
    pub fn write(&self, plural: &str, ns: &str, mut obj: Value, kind: &'static str) -> Value {
        let mut s = self.store.lock().unwrap();
        s.version += 1;
        let v = s.version;
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
            panic!("{kind} {plural} without a name: {obj}");
        };
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["resourceVersion"] = json!(v.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{plural}-{name}"));
            obj["metadata"]["generation"] = json!(1);
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let key = (plural.to_string(), ns.to_string(), name);
        if kind == "DELETED" {
            s.objects.remove(&key);
        } else {
            s.objects.insert(key, obj.clone());
        }
        s.log
            .push((v, plural.to_string(), ns.to_string(), kind, obj.clone()));
        drop(s);
        self.changed.send_replace(v);
        obj
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let s = self.store.lock().unwrap();
        s.objects
            .get(&(plural.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn watch(&self, t: &Target, from: u64, meta: bool) -> Response {
        let fake = self.clone();
        let (plural, ns) = (t.plural.clone(), t.namespace.clone());
        let stream = futures::stream::unfold(
            (from, fake.changed.subscribe()),
            move |(mut cursor, mut rx)| {
                let (fake, plural, ns) = (fake.clone(), plural.clone(), ns.clone());
                async move {
                    loop {
                        let next = {
                            let s = fake.store.lock().unwrap();
                            s.log
                                .iter()
                                .find(|(v, p, n, _, _)| {
                                    *v > cursor
                                        && *p == plural
                                        && ns.as_ref().is_none_or(|x| x == n)
                                })
                                .cloned()
                        };
                        if let Some((v, _, _, kind, obj)) = next {
                            cursor = v;
                            let obj = if meta { metadata_only(&obj) } else { obj };
                            let line = format!("{}\n", json!({"type": kind, "object": obj}));
                            return Some((Ok::<_, Infallible>(Bytes::from(line)), (cursor, rx)));
                        }
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        );
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap()
    }
}

pub async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    fake.store
        .lock()
        .unwrap()
        .requests
        .push((method.clone(), path));
    let Some(t) = parse(uri.path()) else {
        return status_error(404, "NotFound", "no such path");
    };
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let meta = headers
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    let ns = t.namespace.clone().unwrap_or_default();
    match (method, &t.name) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let from = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            fake.watch(&t, from, meta)
        }
        (Method::GET, None) => {
            let s = fake.store.lock().unwrap();
            let selector = query
                .get("labelSelector")
                .map(|l| l.replace("%2F", "/").replace("%3D", "="));
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((p, n, _), _)| {
                    *p == t.plural && t.namespace.as_ref().is_none_or(|x| x == n)
                })
                .map(|(_, v)| v.clone())
                .filter(|v| match &selector {
                    Some(sel) => match sel.split_once('=') {
                        Some((k, val)) => v["metadata"]["labels"][k] == val,
                        None => !v["metadata"]["labels"][sel.as_str()].is_null(),
                    },
                    None => true,
                })
                .map(|v| if meta { metadata_only(&v) } else { v })
                .collect();
            let kind = if meta {
                "PartialObjectMetadataList"
            } else {
                "List"
            };
            ok(
                200,
                &json!({"apiVersion": "v1", "kind": kind,
                "metadata": {"resourceVersion": s.version.to_string()}, "items": items}),
            )
        }
        (Method::GET, Some(name)) => match fake.get(&t.plural, &ns, name) {
            Some(v) => ok(200, &v),
            None => status_error(404, "NotFound", &format!("{} {name} not found", t.plural)),
        },
        (Method::POST, None) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = if name.is_empty() {
                format!(
                    "{}{}",
                    body["metadata"]["generateName"].as_str().unwrap_or("x-"),
                    fake.store.lock().unwrap().version
                )
            } else {
                name
            };
            if fake.get(&t.plural, &ns, &name).is_some() {
                return status_error(409, "AlreadyExists", "already exists");
            }
            let mut obj = body;
            obj["metadata"]["name"] = json!(name);
            ok(201, &fake.write(&t.plural, &ns, obj, "ADDED"))
        }
        (Method::PUT, Some(name)) => {
            let Some(current) = fake.get(&t.plural, &ns, name) else {
                return status_error(404, "NotFound", "not found");
            };
            if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status_error(409, "Conflict", "the object has been modified");
            }
            let mut obj = body;
            obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
            ok(200, &fake.write(&t.plural, &ns, obj, "MODIFIED"))
        }
        (Method::PATCH, Some(name)) => {
            let Some(mut current) = fake.get(&t.plural, &ns, name) else {
                return status_error(404, "NotFound", "not found");
            };
            let rv = &body["metadata"]["resourceVersion"];
            if !rv.is_null() && *rv != current["metadata"]["resourceVersion"] {
                return status_error(409, "Conflict", "the object has been modified");
            }
            if t.status {
                // The status subresource changes only the status.
                current["status"] = body["status"].clone();
            } else {
                let mut patch = body;
                // get_mut, not ["metadata"]: indexing would add `metadata: null`, which a
                // merge patch reads as "delete the metadata".
                if let Some(m) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    m.remove("resourceVersion");
                }
                let spec = current["spec"].clone();
                merge(&mut current, &patch);
                // A changed spec is a new generation, as on a real API server.
                if current["spec"] != spec {
                    let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
                    current["metadata"]["generation"] = json!(g + 1);
                }
            }
            let finalizers_done = current["metadata"]["deletionTimestamp"].is_string()
                && current["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
            let kind = if finalizers_done {
                "DELETED"
            } else {
                "MODIFIED"
            };
            ok(200, &fake.write(&t.plural, &ns, current, kind))
        }
        (Method::DELETE, Some(name)) => {
            let Some(mut current) = fake.get(&t.plural, &ns, name) else {
                return status_error(404, "NotFound", "not found");
            };
            let has_finalizers = current["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if has_finalizers {
                current["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                ok(200, &fake.write(&t.plural, &ns, current, "MODIFIED"))
            } else {
                ok(200, &fake.write(&t.plural, &ns, current, "DELETED"))
            }
        }
        _ => status_error(405, "MethodNotAllowed", "not supported by the fake"),
    }
}

pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path).await
}

pub async fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

pub fn database(name: &str, servers: &str) -> Value {
    json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Database",
        "metadata": {"name": name},
        "spec": {"zookeeper": {"client": {"servers": [servers]}}}})
}

pub fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {"user": "YWRtaW4=", "password": "czNjcjN0LXZhbHVl"}})
}

/// Serves `app` on a free loopback port in the background.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The operator binary against `fake` (served on a loopback port) as pod `pod` in `ns`, all
/// controllers or only `controllers`. Returns it, its metrics address, the kubeconfig's
/// directory (both go when dropped) and the fake API server's port.
pub async fn start_operator(
    fake: &Fake,
    ns: &str,
    pod: &str,
    controllers: Option<&str>,
    stderr: std::process::Stdio,
) -> (tokio::process::Child, String, tempfile::TempDir, u16) {
    start_operator_with(fake, ns, pod, controllers, stderr, &[]).await
}

/// [`start_operator`] with extra environment variables.
pub async fn start_operator_with(
    fake: &Fake,
    ns: &str,
    pod: &str,
    controllers: Option<&str>,
    stderr: std::process::Stdio,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, tempfile::TempDir, u16) {
    let api_port = serve(
        axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone()),
    )
    .await
    .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), api_port);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(["operator", "--listen", &metrics_addr])
        .args(
            controllers
                .map(|c| ["--controllers", c])
                .into_iter()
                .flatten(),
        )
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", ns)
        .env("POD_NAME", pod)
        // The fake remote cluster's API server speaks plain HTTP.
        .env("RESILIENCY_ALLOW_INSECURE_KUBECONFIGS", "true")
        // OPERATOR_LOG=info shows what the operator did when a test fails.
        .env(
            "RUST_LOG",
            std::env::var("OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("WATCH_NAMESPACES")
        .envs(env.iter().copied())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (operator, metrics_addr, dir, api_port)
}
