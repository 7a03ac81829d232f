//! The real `resiliency-operator operator` binary against an in-memory API server (list,
//! watch with resourceVersion replay, get, create, update with optimistic concurrency, merge
//! and apply patches (a changed spec bumps the generation), delete) and two real ZooKeeper
//! servers: the watch-driven path from the seed's Database and Synchronization to a verified
//! copy, leader election, /metrics and /readyz, a SIGTERM that releases the Lease, and a
//! Switchover of a LiveSynchronization.
#![allow(clippy::unwrap_used)]

mod fake_api;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use fake_api::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_syncs_the_seed_objects_and_releases_its_leases_on_sigterm() {
    let (src, dst) = shared_pair();
    let root = unique_root("operator-binary");
    let zs = client(src).await;
    build_tree(&zs, &root, 200, 10, 16).await;

    let fake = Fake::new();
    let ns = "resiliency-operator";
    fake.write("secrets", ns, secret("zookeeper-source"), "ADDED");
    fake.write(
        "databases",
        ns,
        database("zookeeper-source", &src.connect_string()),
        "ADDED",
    );
    fake.write("secrets", ns, secret("zookeeper-destination"), "ADDED");
    fake.write(
        "databases",
        ns,
        database("zookeeper-destination", &dst.connect_string()),
        "ADDED",
    );
    // The seed's Synchronization, with the root path pointed at this test's tree.
    fake.write(
        "synchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "synchronize-zookeeper-nodes-abcde"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "zookeeper-source", "destinationName": "zookeeper-destination",
                           "rootPath": root}}}),
        "ADDED",
    );

    // A plan created long ago: its latest missed slot fires at once.
    fake.write(
        "synchronizationplans",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "SynchronizationPlan",
            "metadata": {"name": "synchronize-zookeeper-nodes"},
            "spec": {"schedule": "*/5 * * * *", "template": {"spec": {
                "plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "zookeeper-source", "destinationName": "zookeeper-destination",
                           "rootPath": root}}}}}),
        "ADDED",
    );

    // Two Buckets: a local directory, and S3 whose Secret is missing.
    let bucket_dir = tempfile::tempdir().unwrap();
    fake.write(
        "buckets",
        ns,
        json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "local-backups"},
            "spec": {"local": {"path": bucket_dir.path()}}}),
        "ADDED",
    );
    fake.write(
        "buckets",
        ns,
        json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "s3-backups"},
            "spec": {"awsS3": {"name": "b", "region": "eu-west-1", "secretName": "no-such-secret"}}}),
        "ADDED",
    );
    // A LiveSynchronization of another tree, verified every second, with the heartbeat on.
    let live_root = unique_root("operator-binary-live");
    build_tree(&zs, &live_root, 50, 10, 8).await;
    fake.write(
        "livesynchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "zookeeper-live"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "zookeeper-source", "destinationName": "zookeeper-destination",
                           "rootPath": live_root},
                "verifyInterval": "1s", "maxLag": "5s",
                "heartbeat": {"enabled": true, "interval": "500ms"}}}),
        "ADDED",
    );

    let (mut operator, metrics_addr, _dir, api_port) = start_operator(
        &fake,
        ns,
        "operator-test-0",
        None,
        std::process::Stdio::piped(),
    )
    .await;

    let sync_status = || {
        fake.get("synchronizations", ns, "synchronize-zookeeper-nodes-abcde")
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };
    wait_for(
        "the Synchronization to succeed",
        Duration::from_secs(60),
        || async { sync_status()["phase"] == "Succeeded" },
    )
    .await;
    let st = sync_status();
    assert_eq!(st["verification"]["equal"], true, "{st}");
    assert_eq!(st["verification"]["sourceNodes"], 201, "{st}");
    let fp_src = fingerprint(src, &root).await;
    let fp_dst = fingerprint(dst, &root).await;
    assert_eq!(fp_src.len(), fp_dst.len());
    // The finalizer is gone once the run is over.
    wait_for(
        "the finalizer to be dropped",
        Duration::from_secs(20),
        || async {
            fake.get("synchronizations", ns, "synchronize-zookeeper-nodes-abcde")
                .is_some_and(|s| {
                    s["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty())
                })
        },
    )
    .await;
    wait_for(
        "both Databases to be Ready",
        Duration::from_secs(30),
        || async {
            ["zookeeper-source", "zookeeper-destination"]
                .iter()
                .all(|d| {
                    fake.get("databases", ns, d).is_some_and(|db| {
                        db["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                })
        },
    )
    .await;
    // One Lease per controller, held by this replica.
    for c in ["database", "synchronization", "synchronizationplan"] {
        let lease = fake
            .get("leases", ns, &format!("resiliency-operator-{c}-controller"))
            .unwrap();
        assert_eq!(
            lease["spec"]["holderIdentity"], "operator-test-0",
            "{lease}"
        );
    }
    let events: Vec<Value> = {
        let s = fake.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, _, _), _)| p == "events")
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert!(
        events.iter().any(|e| e["reason"] == "Succeeded"),
        "{events:?}"
    );
    assert!(events
        .iter()
        .all(|e| !e.to_string().contains("s3cr3t-value")));

    // The plan's child ran through the Synchronization controller and the plan saw it finish.
    wait_for(
        "the plan to record a successful run",
        Duration::from_secs(60),
        || async {
            fake.get("synchronizationplans", ns, "synchronize-zookeeper-nodes")
                .is_some_and(|p| p["status"]["lastSuccessfulTime"].is_string())
        },
    )
    .await;
    let children: Vec<Value> = {
        let s = fake.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, _, n), _)| {
                p == "synchronizations" && n.starts_with("synchronize-zookeeper-nodes-2")
            })
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(children.len(), 1, "{children:?}");
    let child = &children[0];
    assert_eq!(
        child["metadata"]["ownerReferences"][0]["uid"],
        "uid-synchronizationplans-synchronize-zookeeper-nodes"
    );
    assert_eq!(child["status"]["phase"], "Succeeded");
    // (It may have run alongside the first Synchronization, so its counters vary.)
    assert_eq!(child["status"]["verification"]["equal"], true, "{child}");

    // The LiveSynchronization streams, is verified equal and says so in its status.
    let live_status = || {
        fake.get("livesynchronizations", ns, "zookeeper-live")
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };
    let condition = |st: &Value, t: &str| {
        st["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .map(|c| c["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    mk(&zs, &format!("{live_root}/streamed"), b"live").await;
    wait_for(
        "the LiveSynchronization to be Ready and InSync",
        Duration::from_secs(60),
        || async {
            let st = live_status();
            st["phase"] == "Streaming"
                && condition(&st, "Ready") == "True"
                && condition(&st, "InSync") == "True"
        },
    )
    .await;
    let st = live_status();
    for t in [
        "Streaming",
        "CaughtUp",
        "SourceReachable",
        "DestinationReachable",
    ] {
        assert_eq!(condition(&st, t), "True", "{t}: {st}");
    }
    assert_eq!(st["divergentNodes"], 0, "{st}");
    // The root hashes come from the walk, which the 500ms heartbeat can overtake: the
    // verifier then clears the heartbeat as lag (InSync above) while the hashes differ.
    assert!(
        st["sourceRootHash"].is_string() && st["destinationRootHash"].is_string(),
        "{st}"
    );
    assert!(st["lastGoodSyncTime"].is_string(), "{st}");
    assert!(st["lastVerifiedTime"].is_string(), "{st}");
    assert!(st["lag"].is_string(), "{st}");
    assert!(st["lastHeartbeatTime"].is_string(), "{st}");
    assert!(st["fullSyncs"].as_u64().unwrap() >= 1, "{st}");
    wait_for(
        "the streamed node on the destination",
        Duration::from_secs(30),
        || async {
            client(dst)
                .await
                .get_data(&format!("{live_root}/streamed"))
                .await
                .is_ok()
        },
    )
    .await;
    let live_obj = fake
        .get("livesynchronizations", ns, "zookeeper-live")
        .unwrap();
    assert_eq!(
        live_obj["metadata"]["finalizers"],
        json!(["automation.astronetes.io/stop-run"])
    );

    // Buckets: Ready from their credentials and reachability.
    let bucket_ready = |name: &str| {
        fake.get("buckets", ns, name)
            .and_then(|b| {
                b["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            })
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
    };
    wait_for("both Buckets checked", Duration::from_secs(30), || async {
        bucket_ready("local-backups").is_some() && bucket_ready("s3-backups").is_some()
    })
    .await;
    assert_eq!(
        bucket_ready("local-backups"),
        Some(("True".to_string(), "Connected".to_string()))
    );
    assert_eq!(
        bucket_ready("s3-backups"),
        Some(("False".to_string(), "SecretNotFound".to_string()))
    );

    let (code, _) = http_get(&metrics_addr, "/readyz").await;
    assert_eq!(code, 200);
    let (code, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "astronetes_asset_status{kind=\"Database\",namespace=\"resiliency-operator\",name=\"zookeeper-source\",status=\"Ready\"} 1",
        "astronetes_asset_status{kind=\"Bucket\",namespace=\"resiliency-operator\",name=\"local-backups\",status=\"Ready\"} 1",
        "astronetes_asset_status{kind=\"Bucket\",namespace=\"resiliency-operator\",name=\"s3-backups\",status=\"Failed\"} 1",
        "astronetes_synchronization_status{kind=\"Synchronization\",namespace=\"resiliency-operator\",name=\"synchronize-zookeeper-nodes-abcde\",status=\"Ready\"} 1",
        "astronetes_synchronization_status{kind=\"SynchronizationPlan\",namespace=\"resiliency-operator\",name=\"synchronize-zookeeper-nodes\",status=\"Ready\"} 1",
        "astronetes_synchronization_status{kind=\"LiveSynchronization\",namespace=\"resiliency-operator\",name=\"zookeeper-live\",status=\"Ready\"} 1",
        "astronetes_total_synchronized_objects{kind=\"Synchronization\",namespace=\"resiliency-operator\",name=\"synchronize-zookeeper-nodes-abcde\",status=\"Sync\"} 201",
        "astronetes_total_synchronized_objects{kind=\"LiveSynchronization\",namespace=\"resiliency-operator\",name=\"zookeeper-live\",status=\"OutOfSync\"} 0",
        "resiliency_sync_streaming{namespace=\"resiliency-operator\",name=\"zookeeper-live\"} 1",
        "resiliency_sync_session_connected{namespace=\"resiliency-operator\",name=\"zookeeper-live\",side=\"source\"} 1",
        "resiliency_sync_runs_total{mode=\"once\",result=\"succeeded\"} 2",
        "resiliency_controller_leader{controller=\"synchronization\"} 1",
        "resiliency_database_ready{namespace=\"resiliency-operator\",name=\"zookeeper-source\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        metrics.contains("resiliency_reconcile_duration_seconds_bucket{controller=\"database\"")
    );
    // The body of the response, linted by Prometheus' own promtool.
    promtool_check_metrics(
        metrics
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default(),
    );

    // Deleting the LiveSynchronization stops its stream and keeps the destination data.
    let (code, body) = http(
        &format!("127.0.0.1:{api_port}"),
        "DELETE",
        &format!("/apis/automation.astronetes.io/v1alpha1/namespaces/{ns}/livesynchronizations/zookeeper-live"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    wait_for(
        "the LiveSynchronization to be gone",
        Duration::from_secs(30),
        || async {
            fake.get("livesynchronizations", ns, "zookeeper-live")
                .is_none()
        },
    )
    .await;
    mk(&zs, &format!("{live_root}/after-delete"), b"x").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let zd = client(dst).await;
    assert!(zd.get_data(&format!("{live_root}/streamed")).await.is_ok());
    assert!(
        zd.get_data(&format!("{live_root}/after-delete"))
            .await
            .is_err(),
        "the stream outlived its LiveSynchronization"
    );
    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert!(
        !metrics.contains("name=\"zookeeper-live\",status=\"Ready\""),
        "a deleted object's Astronetes series must go with it"
    );

    // SIGTERM: a clean exit, and the Leases handed back for a standby to take at once.
    let pid = operator.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), operator.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    for c in ["database", "synchronization", "synchronizationplan"] {
        let lease = fake
            .get("leases", ns, &format!("resiliency-operator-{c}-controller"))
            .unwrap();
        assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    }
}

/// A second cluster, as its API server shows it to a kubeconfig: `/version`, who the bearer
/// token is, one Service `zk/zk-client` (port 2181, named targetPort) with one ready pod `zk-0`,
/// and that pod's port-forward (the websocket `v4.channel.k8s.io` protocol kubectl speaks),
/// which leads to a real ZooKeeper server on loopback.
#[derive(Clone)]
struct RemoteCluster {
    /// The one bearer token accepted; changed to rotate credentials.
    token: Arc<Mutex<String>>,
    zookeeper_port: u16,
    forwards: Arc<std::sync::atomic::AtomicUsize>,
}

async fn remote_handle(
    State(r): State<RemoteCluster>,
    mut req: axum::extract::Request,
) -> Response {
    let path = req.uri().path().to_string();
    if path == "/version" {
        return ok(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.2-fake",
                "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        );
    }
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {}", r.token.lock().unwrap()).as_bytes());
    if !authorized {
        return status_error(401, "Unauthorized", "Unauthorized");
    }
    match path.as_str() {
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => ok(
            201,
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "metadata": {}, "status": {"userInfo": {"username": "system:serviceaccount:zk:dr-reader"}}}),
        ),
        "/api/v1/namespaces/zk/services/zk-client" => ok(
            200,
            &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "zk-client", "namespace": "zk"},
                "spec": {"ports": [{"name": "client", "port": 2181, "targetPort": "client"}]}}),
        ),
        "/api/v1/namespaces/zk/services/zk-empty" => ok(
            200,
            &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "zk-empty", "namespace": "zk"},
                "spec": {"ports": [{"name": "client", "port": 2181, "targetPort": 2181}]}}),
        ),
        // zk-empty's only pod is not ready.
        "/apis/discovery.k8s.io/v1/namespaces/zk/endpointslices"
            if req.uri().query().is_some_and(|q| q.contains("zk-empty")) =>
        {
            ok(
                200,
                &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": "1"},
                    "items": [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "zk-empty-abc", "namespace": "zk"},
                        "addressType": "IPv4",
                        "ports": [{"name": "client", "port": 2181}],
                        "endpoints": [{"addresses": ["10.0.0.3"], "conditions": {"ready": false},
                            "targetRef": {"kind": "Pod", "name": "zk-empty-0", "namespace": "zk"}}]}]}),
            )
        }
        "/apis/discovery.k8s.io/v1/namespaces/zk/endpointslices" => ok(
            200,
            &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": "1"},
                "items": [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "zk-client-abc", "namespace": "zk",
                        "labels": {"kubernetes.io/service-name": "zk-client"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "client", "port": r.zookeeper_port}],
                    "endpoints": [
                        {"addresses": ["10.0.0.9"], "conditions": {"ready": false},
                         "targetRef": {"kind": "Pod", "name": "zk-9", "namespace": "zk"}},
                        {"addresses": ["10.0.0.1"], "conditions": {"ready": true},
                         "targetRef": {"kind": "Pod", "name": "zk-0", "namespace": "zk"}}]}]}),
        ),
        "/api/v1/namespaces/zk/pods/zk-0/portforward" => {
            let port = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ports=")))
                .and_then(|p| p.parse::<u16>().ok());
            let key = req.headers().get("sec-websocket-key").cloned();
            let v4 = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|p| p.to_str().ok())
                .is_some_and(|p| p.split(',').any(|p| p.trim() == "v4.channel.k8s.io"));
            let (Some(port), Some(key), true) = (port, key, v4) else {
                let m = format!("not a v4 port-forward: {:?} {:?}", req.uri(), req.headers());
                return status_error(400, "BadRequest", &m);
            };
            assert_eq!(
                port, r.zookeeper_port,
                "the tunnel must use the slice's pod port"
            );
            r.forwards
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                relay_port_forward(ws, port).await;
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header(
                    "sec-websocket-accept",
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                )
                .header("sec-websocket-protocol", "v4.channel.k8s.io")
                .body(Body::empty())
                .unwrap()
        }
        _ => status_error(404, "NotFound", &format!("{path} not found")),
    }
}

/// The pod side of a port-forward: channel 0 carries the bytes, channel 1 errors; each starts
/// with the port number (little-endian), as the kubelet sends it.
async fn relay_port_forward<S>(ws: tokio_tungstenite::WebSocketStream<S>, port: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut sink, mut stream) = ws.split();
    let p = port.to_le_bytes();
    for ch in [0u8, 1] {
        if sink
            .send(Message::binary(vec![ch, p[0], p[1]]))
            .await
            .is_err()
        {
            return;
        }
    }
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        let _ = sink
            .send(Message::binary(b"\x01connection refused".to_vec()))
            .await;
        let _ = sink.send(Message::Close(None)).await;
        return;
    };
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) if b.len() > 1 && b[0] == 0 => match wr.write_all(&b[1..]).await
                {
                    Ok(()) => {}
                    Err(_) => break,
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async move {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buf[..n]);
            if sink.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    tokio::join!(to_pod, from_pod);
}

fn kubeconfig_secret(name: &str, server: &str, user: &str) -> Value {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: east\n  cluster:\n    server: {server}\n\
         contexts:\n- name: east\n  context:\n    cluster: east\n    user: dr\ncurrent-context: east\n\
         users:\n- name: dr\n  user:\n{user}\n"
    );
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"kubeconfig": kubeconfig}})
}

/// The seed's 3-cluster topology: the operator in a management cluster, the source ensemble
/// inside another cluster reachable only through that cluster's API server (a
/// KubernetesCluster), the destination reachable directly. KubernetesClusters report Ready
/// with the server version (or why not), and a copy from the remote ensemble verifies equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_in_another_cluster_is_reached_through_its_api_server() {
    let (src, dst) = shared_pair();
    let root = unique_root("remote-cluster");
    let zs = client(src).await;
    build_tree(&zs, &root, 120, 10, 16).await;

    let remote = RemoteCluster {
        token: Arc::new(Mutex::new("east-token".into())),
        zookeeper_port: src.port(),
        forwards: Arc::default(),
    };
    let remote_url = format!(
        "http://{}",
        serve(
            axum::Router::new()
                .fallback(remote_handle)
                .with_state(remote.clone())
        )
        .await
    );

    let fake = Fake::new();
    let ns = "resiliency-operator";
    let mk_cluster = |name: &str, secret: &str| {
        json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "KubernetesCluster",
            "metadata": {"name": name}, "spec": {"secretName": secret}})
    };
    fake.write(
        "secrets",
        ns,
        kubeconfig_secret("east-kubeconfig", &remote_url, "    token: east-token"),
        "ADDED",
    );
    fake.write(
        "kubernetesclusters",
        ns,
        mk_cluster("east", "east-kubeconfig"),
        "ADDED",
    );
    fake.write(
        "secrets",
        ns,
        kubeconfig_secret("west-kubeconfig", &remote_url, "    token: stale-token"),
        "ADDED",
    );
    fake.write(
        "kubernetesclusters",
        ns,
        mk_cluster("west", "west-kubeconfig"),
        "ADDED",
    );
    fake.write(
        "secrets",
        ns,
        kubeconfig_secret(
            "north-kubeconfig",
            &remote_url,
            "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}",
        ),
        "ADDED",
    );
    fake.write(
        "kubernetesclusters",
        ns,
        mk_cluster("north", "north-kubeconfig"),
        "ADDED",
    );

    let mut remote_db = database("zookeeper-remote", "zk-client.zk.svc.cluster.local:2181");
    remote_db["spec"]["kubernetesClusterName"] = json!("east");
    fake.write("secrets", ns, secret("zookeeper-remote"), "ADDED");
    fake.write("databases", ns, remote_db, "ADDED");
    let mut empty_db = database("zookeeper-empty", "zk-empty.zk:2181");
    empty_db["spec"]["kubernetesClusterName"] = json!("east");
    fake.write("secrets", ns, secret("zookeeper-empty"), "ADDED");
    fake.write("databases", ns, empty_db, "ADDED");
    let mut lost_db = database("zookeeper-lost", "zk-client.zk:2181");
    lost_db["spec"]["kubernetesClusterName"] = json!("nowhere");
    fake.write("secrets", ns, secret("zookeeper-lost"), "ADDED");
    fake.write("databases", ns, lost_db, "ADDED");
    fake.write("secrets", ns, secret("zookeeper-destination"), "ADDED");
    fake.write(
        "databases",
        ns,
        database("zookeeper-destination", &dst.connect_string()),
        "ADDED",
    );
    fake.write(
        "synchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "from-east"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "zookeeper-remote", "destinationName": "zookeeper-destination",
                           "rootPath": root}}}),
        "ADDED",
    );

    let (mut operator, metrics_addr, _dir, _) = start_operator(
        &fake,
        ns,
        "operator-remote-0",
        None,
        std::process::Stdio::inherit(),
    )
    .await;

    let ready = |plural: &str, name: &str| {
        fake.get(plural, ns, name)
            .and_then(|o| {
                o["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            })
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                    c["message"].as_str().unwrap_or_default().to_string(),
                )
            })
    };
    wait_for(
        "the KubernetesClusters to be checked",
        Duration::from_secs(30),
        || async {
            ["east", "west", "north"]
                .iter()
                .all(|c| ready("kubernetesclusters", c).is_some())
        },
    )
    .await;
    let (status, reason, message) = ready("kubernetesclusters", "east").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Connected"),
        "{message}"
    );
    assert!(
        message.contains("as system:serviceaccount:zk:dr-reader")
            && message.contains("v1.33.2-fake"),
        "{message}"
    );
    let east = fake.get("kubernetesclusters", ns, "east").unwrap();
    assert_eq!(east["status"]["serverVersion"], "v1.33.2-fake");
    assert_eq!(east["status"]["server"], json!(remote_url));
    let (status, reason, message) = ready("kubernetesclusters", "west").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AuthFailed"),
        "{message}"
    );
    assert!(message.contains("401"), "{message}");
    let (_, reason, message) = ready("kubernetesclusters", "north").unwrap();
    assert_eq!(reason, "SecretInvalid", "{message}");
    assert!(message.contains("exec"), "{message}");

    // The copy from the ensemble inside "east", through its API server, verified equal.
    wait_for(
        "the Synchronization from the remote cluster to succeed",
        Duration::from_secs(60),
        || async {
            let s = fake.get("synchronizations", ns, "from-east").unwrap();
            s["status"]["phase"] == "Succeeded" || s["status"]["phase"] == "Failed"
        },
    )
    .await;
    let s = fake.get("synchronizations", ns, "from-east").unwrap();
    assert_eq!(s["status"]["phase"], "Succeeded", "{}", s["status"]);
    let verified = s["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Verified")
        .cloned()
        .unwrap();
    assert_eq!(verified["status"], "True", "{verified}");
    assert_equal(&sync_opts(src, &root, dst, &root)).await;
    assert!(remote.forwards.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // The Database itself: Ready through the tunnel; one naming a missing cluster says so.
    wait_for(
        "the remote Database to be Ready",
        Duration::from_secs(30),
        || async { ready("databases", "zookeeper-remote").is_some_and(|r| r.0 == "True") },
    )
    .await;
    // The status names the server as the spec does, not the loopback end of the tunnel.
    let remote_db = fake.get("databases", ns, "zookeeper-remote").unwrap();
    assert_eq!(
        remote_db["status"]["connectedServer"],
        "zk-client.zk.svc.cluster.local:2181"
    );
    // srvr went through the tunnel too, with the key in front.
    assert!(
        remote_db["status"]["serverVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        remote_db["status"]
    );
    // A Service with no ready pod: unreachable, and the message says why.
    wait_for(
        "the empty Database to be checked",
        Duration::from_secs(40),
        || async { ready("databases", "zookeeper-empty").is_some() },
    )
    .await;
    let (status, reason, message) = ready("databases", "zookeeper-empty").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unreachable"),
        "{message}"
    );
    assert!(
        message.contains("through KubernetesCluster east")
            && message.contains("service zk/zk-empty:2181: the Service has no ready pods"),
        "{message}"
    );
    let (_, reason, message) = ready("databases", "zookeeper-lost").unwrap();
    assert_eq!(reason, "KubernetesClusterNotFound", "{message}");
    assert!(message.contains("KubernetesCluster nowhere"), "{message}");

    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    for line in [
        "astronetes_asset_status{kind=\"KubernetesCluster\",namespace=\"resiliency-operator\",name=\"east\",status=\"Ready\"} 1",
        "astronetes_asset_status{kind=\"KubernetesCluster\",namespace=\"resiliency-operator\",name=\"west\",status=\"Failed\"} 1",
        "resiliency_tunnel_connections_total{cluster=\"resiliency-operator/east\",outcome=\"forwarded\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // Credentials rotated: the cluster accepts only the new token, the Secret is updated, and
    // a new copy through the same cluster succeeds with it.
    *remote.token.lock().unwrap() = "east-token-2".into();
    let mut rotated = fake.get("secrets", ns, "east-kubeconfig").unwrap();
    let fresh = kubeconfig_secret("east-kubeconfig", &remote_url, "    token: east-token-2");
    rotated["stringData"] = fresh["stringData"].clone();
    fake.write("secrets", ns, rotated, "MODIFIED");
    fake.write(
        "synchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "from-east-rotated"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "zookeeper-remote", "destinationName": "zookeeper-destination",
                           "rootPath": root, "destinationRootPath": format!("{root}-rotated")}}}),
        "ADDED",
    );
    wait_for(
        "the copy after the rotation to finish",
        Duration::from_secs(60),
        || async {
            let s = fake
                .get("synchronizations", ns, "from-east-rotated")
                .unwrap();
            s["status"]["phase"] == "Succeeded" || s["status"]["phase"] == "Failed"
        },
    )
    .await;
    let s = fake
        .get("synchronizations", ns, "from-east-rotated")
        .unwrap();
    assert_eq!(s["status"]["phase"], "Succeeded", "{}", s["status"]);
    wait_for(
        "east checked with the new token",
        Duration::from_secs(30),
        || async { ready("kubernetesclusters", "east").is_some_and(|r| r.0 == "True") },
    )
    .await;
    operator.kill().await.unwrap();
}

/// A tunnel belongs to the Database it was routed for: that Database's connections go
/// through, another namespace's Database naming the same loopback port is turned away before
/// anything is dialled in the remote cluster, and the listener closes when its Database, or
/// its KubernetesCluster, is deleted. In process, against the in-memory API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_admits_only_its_own_database_and_closes_with_it_or_its_cluster() {
    use resiliency_operator::api::assets::Database;
    use resiliency_operator::operator::remote::Remotes;
    use resiliency_operator::remote_cluster::KubeconfigPolicy;
    use resiliency_operator::resolve;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let (src, _) = shared_pair();
    let remote = RemoteCluster {
        token: Arc::new(Mutex::new("east-token".into())),
        zookeeper_port: src.port(),
        forwards: Arc::default(),
    };
    let remote_url = format!(
        "http://{}",
        serve(
            axum::Router::new()
                .fallback(remote_handle)
                .with_state(remote.clone())
        )
        .await
    );
    let fake = Fake::new();
    let (a, b) = ("team-a", "team-b");
    fake.write(
        "secrets",
        a,
        kubeconfig_secret("east-kubeconfig", &remote_url, "    token: east-token"),
        "ADDED",
    );
    let cluster = json!({"apiVersion": "assets.astronetes.io/v1alpha1",
        "kind": "KubernetesCluster", "metadata": {"name": "east"},
        "spec": {"secretName": "east-kubeconfig"}});
    fake.write("kubernetesclusters", a, cluster, "ADDED");
    let remote_db = |name: &str| {
        let mut db = database(name, "zk-client.zk:2181");
        db["spec"]["kubernetesClusterName"] = json!("east");
        let db = fake.write("databases", a, db, "ADDED");
        serde_json::from_value::<Database>(db).unwrap()
    };
    let owned = remote_db("zk-remote");
    let api = serve(
        axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone()),
    )
    .await;
    let mgmt = kube::Client::try_from(kube::Config::new(format!("http://{api}").parse().unwrap()))
        .unwrap();
    // The plain-HTTP fake remote API server needs the insecure policy; tunnels do not care.
    let remotes = Arc::new(Remotes::new(KubeconfigPolicy {
        allow_insecure: true,
    }));
    let janitor = tokio::spawn(remotes.clone().close_deleted(
        resiliency_operator::operator::scope::Scope::All.within(&mgmt),
        std::future::pending(),
    ));
    let credentials: resolve::SecretData = [
        ("user".to_string(), b"admin".to_vec()),
        ("password".to_string(), b"s3cr3t-value".to_vec()),
    ]
    .into();
    let route = |ns: &'static str, db: Database| {
        let (remotes, mgmt) = (remotes.clone(), mgmt.clone());
        async move { remotes.route(&mgmt, ns, db).await.unwrap().unwrap() }
    };

    // Its own Database: a session and the version probe get through.
    let routed = route(a, owned.clone()).await;
    let servers = &routed
        .spec
        .zookeeper
        .as_ref()
        .unwrap()
        .client
        .as_ref()
        .unwrap()
        .servers;
    let tunnel: std::net::SocketAddr = servers[0].parse().unwrap();
    assert!(tunnel.ip().is_loopback(), "{servers:?}");
    let opts = resolve::connect_options(&routed, Some(&credentials)).unwrap();
    let zk = verifier::connect(verifier::Role::Database, &opts)
        .await
        .unwrap();
    zk.get_data("/").await.unwrap();
    drop(zk);
    let probe = resiliency_operator::controllers::database::probe(&opts, None)
        .await
        .unwrap();
    assert!(
        probe
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("3.")),
        "the srvr probe through the tunnel: {probe:?}"
    );
    // Routing it again hands out the same tunnel, with the same key.
    let again = route(a, owned.clone()).await;
    assert_eq!(
        resolve::connect_options(&again, Some(&credentials))
            .unwrap()
            .servers,
        opts.servers
    );
    let forwarded = remote.forwards.load(Relaxed);
    assert!(forwarded >= 2, "{forwarded}");

    // Another namespace's Database naming the tunnel's port reaches the listener, and no
    // further: refused before any port-forward, whatever it sends.
    let intruder: Database = serde_json::from_value(json!({
        "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Database",
        "metadata": {"name": "zk-borrowed", "namespace": b, "uid": "uid-borrowed"},
        "spec": {"zookeeper": {"client": {"servers": [tunnel.to_string()]}}}}))
    .unwrap();
    let borrowed = route(b, intruder).await;
    let mut o = resolve::connect_options(&borrowed, Some(&credentials)).unwrap();
    assert_eq!(o.proxy_auth, None);
    o.connect_timeout = Duration::from_secs(2);
    let refused = verifier::connect(verifier::Role::Database, &o).await;
    assert!(
        refused.is_err(),
        "another namespace's Database got a session"
    );
    let mut raw = tokio::net::TcpStream::connect(tunnel).await.unwrap();
    raw.write_all(b"srvr").await.unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(remote.forwards.load(Relaxed), forwarded);
    assert_eq!(remotes.tunnels().len(), 1, "{:?}", remotes.tunnels());

    // Deleted: its tunnel goes, the listener refuses connections.
    let closed = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    };
    let stored = fake.get("databases", a, "zk-remote").unwrap();
    fake.write("databases", a, stored, "DELETED");
    wait_for(
        "the deleted Database's tunnel to close",
        Duration::from_secs(10),
        || async { closed(tunnel).await && remotes.tunnels().is_empty() },
    )
    .await;

    // A second Database through east; then east itself is deleted.
    let second = route(a, remote_db("zk-remote-2")).await;
    let addr: std::net::SocketAddr = second.spec.zookeeper.unwrap().client.unwrap().servers[0]
        .parse()
        .unwrap();
    assert!(!closed(addr).await);
    let stored = fake.get("kubernetesclusters", a, "east").unwrap();
    fake.write("kubernetesclusters", a, stored, "DELETED");
    wait_for(
        "the deleted KubernetesCluster's tunnels to close",
        Duration::from_secs(10),
        || async { closed(addr).await && remotes.tunnels().is_empty() },
    )
    .await;
    janitor.abort();
}

/// The synchronization controller alone: see [`start_operator`].
async fn synchronization_controller(
    fake: &Fake,
    ns: &str,
    pod: &str,
) -> (tokio::process::Child, String, tempfile::TempDir) {
    let (operator, metrics_addr, dir, _) = start_operator(
        fake,
        ns,
        pod,
        Some("synchronization"),
        std::process::Stdio::inherit(),
    )
    .await;
    (operator, metrics_addr, dir)
}

/// Databases `zk-a` (on `src`) and `zk-b` (on `dst`) with their Secrets.
fn two_databases(fake: &Fake, ns: &str, src: &ZkServer, dst: &ZkServer) {
    for (name, server) in [("zk-a", src), ("zk-b", dst)] {
        fake.write("secrets", ns, secret(name), "ADDED");
        fake.write(
            "databases",
            ns,
            database(name, &server.connect_string()),
            "ADDED",
        );
    }
}

/// Every child of `root` deleted, node by node, children first (the root stays).
async fn empty_tree(c: &zookeeper_client::Client, root: &str) {
    let mut order = vec![root.to_string()];
    let mut i = 0;
    while i < order.len() {
        let p = order[i].clone();
        let mut kids = c.list_children(&p).await.unwrap();
        kids.sort();
        order.extend(kids.into_iter().map(|k| format!("{p}/{k}")));
        i += 1;
    }
    for p in order.iter().skip(1).rev() {
        c.delete(p, None).await.unwrap();
    }
}

/// The destination tree's node count and root hash.
async fn destination_state(o: &resiliency_operator::engine::SyncOptions) -> (u64, String) {
    let r = verify(o).await;
    (r.destination_nodes, r.destination_root_hash)
}

fn condition<'a>(st: &'a Value, t: &str) -> &'a Value {
    st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

/// Sets the release annotation on a stored object, as `kubectl annotate` would.
fn annotate(fake: &Fake, plural: &str, ns: &str, name: &str, token: &str) {
    let mut obj = fake.get(plural, ns, name).unwrap();
    obj["metadata"]["annotations"] = json!({"automation.astronetes.io/release-deletions": token});
    fake.write(plural, ns, obj, "MODIFIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_holds_mass_deletions_until_a_person_releases_them() {
    let (src, dst) = shared_pair();
    let zs = client(src).await;
    let once_root = unique_root("operator-guard-once");
    let live_root = unique_root("operator-guard-live");
    build_tree(&zs, &once_root, 1000, 40, 8).await;
    build_tree(&zs, &live_root, 1000, 40, 8).await;
    let once = sync_opts(src, &once_root, dst, &once_root);
    let live = sync_opts(src, &live_root, dst, &live_root);
    resiliency_operator::engine::sync(&once).await.unwrap();
    let before = destination_state(&once).await;
    assert_eq!(before.0, 1001);
    // The source is emptied before the Synchronization runs (a plan's next slot, say).
    empty_tree(&zs, &once_root).await;

    let fake = Fake::new();
    let ns = "resiliency-operator";
    two_databases(&fake, ns, src, dst);
    let config =
        |root: &str| json!({"sourceName": "zk-a", "destinationName": "zk-b", "rootPath": root});
    fake.write(
        "synchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "dr-copy"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes", "config": config(&once_root)}}),
        "ADDED",
    );
    fake.write(
        "livesynchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "dr-live"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes", "config": config(&live_root),
                     "verifyInterval": "0s"}}),
        "ADDED",
    );
    let (_operator, metrics_addr, _dir) =
        synchronization_controller(&fake, ns, "operator-guard-0").await;
    let status = |plural: &str, name: &str| {
        fake.get(plural, ns, name)
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };

    // One-shot: Held, with the numbers and the release, and nothing deleted.
    wait_for(
        "the Synchronization to be held",
        Duration::from_secs(60),
        || async { status("synchronizations", "dr-copy")["phase"] == "Held" },
    )
    .await;
    let st = status("synchronizations", "dr-copy");
    let held = &st["deletionGuard"]["held"];
    assert_eq!(held["reason"], "SourceEmptyHeld", "{st}");
    assert_eq!(held["deletes"], 1000, "{st}");
    assert_eq!(held["destinationNodes"], 1001, "{st}");
    let token = held["releaseToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("1000-"), "{token}");
    assert!(
        held["releaseCommand"]
            .as_str()
            .unwrap()
            .contains(&format!("kubectl annotate --overwrite synchronization dr-copy -n {ns} automation.astronetes.io/release-deletions={token}")),
        "{st}"
    );
    assert_eq!(condition(&st, "DeletionGuard")["status"], "True", "{st}");
    assert_eq!(condition(&st, "Complete")["status"], "False", "{st}");
    assert_eq!(condition(&st, "Ready")["reason"], "SourceEmptyHeld", "{st}");
    assert_eq!(
        destination_state(&once).await,
        before,
        "the copy was touched"
    );
    let events: Vec<Value> = {
        let s = fake.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, _, _), v)| p == "events" && v["reason"] == "SourceEmptyHeld")
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert!(
        events.iter().any(|e| e["type"] == "Warning"
            && e["note"]
                .as_str()
                .or(e["message"].as_str())
                .is_some_and(|m| m.contains(&token))),
        "{events:?}"
    );
    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert!(
        metrics.contains(
            "resiliency_sync_deletes_held{namespace=\"resiliency-operator\",name=\"dr-copy\"} 1000"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("resiliency_sync_runs_total{mode=\"once\",result=\"held\"} 1"),
        "{metrics}"
    );
    // Still held a while later: a hold never times out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status("synchronizations", "dr-copy")["phase"], "Held");
    // A token typed with another count does nothing.
    let forged = format!("5000-{}", token.split_once('-').unwrap().1);
    annotate(&fake, "synchronizations", ns, "dr-copy", &forged);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status("synchronizations", "dr-copy")["phase"], "Held");
    assert_eq!(destination_state(&once).await, before);

    // Released: the copy runs again and deletes them.
    annotate(&fake, "synchronizations", ns, "dr-copy", &token);
    wait_for("the released copy", Duration::from_secs(60), || async {
        status("synchronizations", "dr-copy")["phase"] == "Succeeded"
    })
    .await;
    let st = status("synchronizations", "dr-copy");
    assert_eq!(st["verification"]["equal"], true, "{st}");
    assert_eq!(
        st["deletionGuard"]["lastReleasedToken"],
        token.as_str(),
        "{st}"
    );
    assert!(st["deletionGuard"]["held"].is_null(), "{st}");
    assert_eq!(condition(&st, "DeletionGuard")["status"], "False", "{st}");
    assert_eq!(destination_state(&once).await.0, 1);

    // Live: streaming, then a deleteall at the source is held.
    wait_for("the stream", Duration::from_secs(60), || async {
        condition(&status("livesynchronizations", "dr-live"), "Ready")["status"] == "True"
    })
    .await;
    let live_before = destination_state(&live).await;
    assert_eq!(live_before.0, 1001);
    empty_tree(&zs, &live_root).await;
    wait_for("the live hold", Duration::from_secs(60), || async {
        status("livesynchronizations", "dr-live")["deletionGuard"]["held"]["deletes"] == 1000
    })
    .await;
    let st = status("livesynchronizations", "dr-live");
    assert_eq!(
        condition(&st, "Ready")["reason"],
        "MassDeletionHeld",
        "{st}"
    );
    assert_eq!(condition(&st, "DeletionGuard")["status"], "True", "{st}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        destination_state(&live).await,
        live_before,
        "the stream deleted"
    );
    let token = status("livesynchronizations", "dr-live")["deletionGuard"]["held"]["releaseToken"]
        .as_str()
        .unwrap()
        .to_string();
    annotate(&fake, "livesynchronizations", ns, "dr-live", &token);
    wait_for("the live release", Duration::from_secs(60), || async {
        verify(&live).await.equal
    })
    .await;
    assert_eq!(destination_state(&live).await.0, 1);
    wait_for(
        "the release in the status",
        Duration::from_secs(30),
        || async {
            let st = status("livesynchronizations", "dr-live");
            st["deletionGuard"]["lastReleasedToken"] == token.as_str()
                && st["deletionGuard"]["held"].is_null()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_live_synchronization_is_suspended_before_a_destructive_change_lands() {
    let (src, dst) = shared_pair();
    let zs = client(src).await;
    let root = unique_root("operator-delayed");
    build_tree(&zs, &root, 200, 20, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let fake = Fake::new();
    let ns = "resiliency-operator";
    two_databases(&fake, ns, src, dst);
    fake.write(
        "livesynchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "dr-delayed"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "zk-a", "destinationName": "zk-b", "rootPath": root},
                     "applyDelay": "6s", "maxLag": "2s", "verifyInterval": "0s"}}),
        "ADDED",
    );
    let (_operator, metrics_addr, _dir) =
        synchronization_controller(&fake, ns, "operator-delay-0").await;
    let status = || {
        fake.get("livesynchronizations", ns, "dr-delayed")
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };
    wait_for("the stream", Duration::from_secs(60), || async {
        condition(&status(), "Streaming")["status"] == "True" && verify(&o).await.equal
    })
    .await;
    let before = destination_state(&o).await;
    let st = status();
    assert_eq!(condition(&st, "DelayedApply")["reason"], "Delaying", "{st}");
    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("resiliency_sync_max_lag_seconds{namespace=\"resiliency-operator\",name=\"dr-delayed\"} 8"),
        "{metrics}"
    );

    // The destructive change, then the person suspends the stream within the delay.
    let kids = zs.list_children(&root).await.unwrap();
    for k in &kids {
        zs.set_data(&format!("{root}/{k}"), b"CORRUPTED", None)
            .await
            .unwrap();
    }
    wait_for(
        "the changes to be recorded",
        Duration::from_secs(10),
        || async { status()["delayedChanges"].as_u64().is_some_and(|n| n > 0) },
    )
    .await;
    let mut obj = fake.get("livesynchronizations", ns, "dr-delayed").unwrap();
    obj["spec"]["suspend"] = json!(true);
    obj["metadata"]["generation"] = json!(2);
    fake.write("livesynchronizations", ns, obj, "MODIFIED");
    wait_for("the suspension", Duration::from_secs(20), || async {
        status()["phase"] == "Suspended"
    })
    .await;
    // Well past the delay: none of it reached the copy.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(destination_state(&o).await, before, "the corruption landed");
    let st = status();
    assert_eq!(condition(&st, "Ready")["reason"], "Suspended", "{st}");
    assert_eq!(condition(&st, "Streaming")["status"], "False", "{st}");
    assert_eq!(
        verify(&o).await.counts.data_differs,
        kids.len() as u64,
        "the copy keeps the good data"
    );

    // Resumed: a full sync first (the suspended stream withdrew its writer claim, so it does
    // not wait for a session to expire).
    let mut obj = fake.get("livesynchronizations", ns, "dr-delayed").unwrap();
    obj["spec"]["suspend"] = json!(false);
    obj["metadata"]["generation"] = json!(3);
    fake.write("livesynchronizations", ns, obj, "MODIFIED");
    wait_for("the resumed stream", Duration::from_secs(20), || async {
        status()["phase"] == "Streaming" && verify(&o).await.equal
    })
    .await;
}

fn switchover(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Switchover",
        "metadata": {"name": name}, "spec": spec})
}

/// The Events published about the object `name`.
fn events_of(fake: &Fake, name: &str) -> Vec<Value> {
    let s = fake.store.lock().unwrap();
    s.objects
        .iter()
        .filter(|((p, _, _), v)| p == "events" && v["regarding"]["name"] == name)
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_promotes_the_verified_copy_starts_the_reverse_stream_and_fails_back()
{
    let (src, dst) = shared_pair();
    let zs = client(src).await;
    let root = unique_root("operator-switchover");
    build_tree(&zs, &root, 200, 20, 8).await;
    let mut o = sync_opts(src, &root, dst, &root);
    // The heartbeat znode is the operator's: read with its credentials (the Secrets').
    let admin = verifier::DigestAuth::parse("admin:s3cr3t-value").unwrap();
    o.source.auth = Some(admin.clone());
    o.destination.auth = Some(admin);
    let fake = Fake::new();
    let ns = "resiliency-operator";
    two_databases(&fake, ns, src, dst);
    fake.write(
        "livesynchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "dr-live"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "zk-a", "destinationName": "zk-b", "rootPath": root},
                     "verifyInterval": "0s", "maxLag": "5s",
                     "heartbeat": {"enabled": true, "interval": "200ms"}}}),
        "ADDED",
    );
    let (_operator, metrics_addr, _dir) =
        synchronization_controller(&fake, ns, "operator-switchover-0").await;
    let status = |plural: &str, name: &str| {
        fake.get(plural, ns, name)
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };
    wait_for("the stream", Duration::from_secs(60), || async {
        condition(&status("livesynchronizations", "dr-live"), "Streaming")["status"] == "True"
            && verify(&o).await.equal
    })
    .await;
    // Changes made just before the switchover must reach the new primary too.
    for i in 0..20 {
        mk(&zs, &format!("{root}/late-{i}"), b"late").await;
    }

    fake.write(
        "switchovers",
        ns,
        switchover(
            "to-dr",
            json!({"liveSynchronizationName": "dr-live", "reverse": true}),
        ),
        "ADDED",
    );
    wait_for("the switchover to end", Duration::from_secs(90), || async {
        let p = &status("switchovers", "to-dr")["phase"];
        p == "Complete" || p == "Failed"
    })
    .await;
    let st = status("switchovers", "to-dr");
    assert_eq!(st["phase"], "Complete", "{st:#}");
    assert_eq!(condition(&st, "Complete")["status"], "True", "{st:#}");
    assert_eq!(condition(&st, "Complete")["reason"], "Promoted", "{st:#}");
    assert_eq!(condition(&st, "Failed")["status"], "False", "{st:#}");
    let loss = &st["dataLoss"];
    assert_eq!(loss["proven"], true, "{st:#}");
    assert_eq!(loss["changesLost"], 0, "{st:#}");
    assert_eq!(loss["summary"], "0 (verified)", "{st:#}");
    assert!(
        loss["sourceZxid"].as_str().unwrap().starts_with("0x"),
        "{st:#}"
    );
    assert_eq!(st["verification"]["result"], "Equal", "{st:#}");
    // 201 built, 20 late, the heartbeat znode.
    assert_eq!(st["verification"]["sourceNodes"], 222, "{st:#}");
    assert!(st["rtoSeconds"].as_f64().unwrap() > 0.0, "{st:#}");
    assert!(st["rto"].is_string(), "{st:#}");
    assert_eq!(st["oldPrimary"], "zk-a", "{st:#}");
    assert_eq!(st["newPrimary"], "zk-b", "{st:#}");
    assert_eq!(
        st["reverseLiveSynchronizationName"], "dr-live-reverse",
        "{st:#}"
    );
    assert!(st["completionTime"].is_string(), "{st:#}");
    let steps: Vec<(String, String)> = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(
                s["startTime"].is_string() && s["endTime"].is_string(),
                "{s}"
            );
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("Preflight", "Succeeded"),
        ("Fence", "Skipped"),
        ("CatchUp", "Succeeded"),
        ("StopStream", "Succeeded"),
        ("Verify", "Succeeded"),
        ("Promote", "Succeeded"),
        ("Reverse", "Succeeded"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(steps, want, "{st:#}");

    // The new primary holds exactly the old one's tree.
    let r = verify(&o).await;
    assert!(r.equal, "{r:?}");
    assert_eq!(r.destination_nodes, r.source_nodes);
    assert_eq!(r.destination_nodes, 222);
    assert_eq!(r.destination_root_hash, r.source_root_hash);

    // The stream is suspended for good, and the reverse one copies back.
    let original = fake.get("livesynchronizations", ns, "dr-live").unwrap();
    assert_eq!(original["spec"]["suspend"], true, "{original:#}");
    let reverse = fake
        .get("livesynchronizations", ns, "dr-live-reverse")
        .unwrap();
    let c = &reverse["spec"]["config"];
    assert_eq!(
        (&c["sourceName"], &c["destinationName"], &c["rootPath"]),
        (&json!("zk-b"), &json!("zk-a"), &json!(root)),
        "{reverse:#}"
    );
    assert!(c["destinationRootPath"].is_null(), "{reverse:#}");
    assert_eq!(reverse["spec"]["suspend"], false, "{reverse:#}");
    assert_eq!(
        reverse["spec"]["heartbeat"]["enabled"], false,
        "{reverse:#}"
    );
    assert_eq!(reverse["spec"]["maxLag"], "5s", "{reverse:#}");
    for marks in ["labels", "annotations"] {
        let m = &reverse["metadata"][marks];
        assert_eq!(
            m["automation.astronetes.io/reverse-of"], "dr-live",
            "{reverse:#}"
        );
        assert_eq!(
            m["automation.astronetes.io/switchover"], "to-dr",
            "{reverse:#}"
        );
    }
    wait_for("the reverse stream", Duration::from_secs(60), || async {
        condition(
            &status("livesynchronizations", "dr-live-reverse"),
            "Streaming",
        )["status"]
            == "True"
    })
    .await;
    wait_for(
        "the original to report Suspended",
        Duration::from_secs(20),
        || async { status("livesynchronizations", "dr-live")["phase"] == "Suspended" },
    )
    .await;

    let events = events_of(&fake, "to-dr");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Promoted" && e["type"] == "Normal"),
        "{events:#?}"
    );
    assert!(events.iter().any(|e| e["reason"] == "Equal"), "{events:#?}");
    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert!(
        metrics
            .contains("resiliency_switchover_runs_total{mode=\"planned\",result=\"complete\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("resiliency_switchover_last_success_timestamp_seconds{namespace=\"resiliency-operator\",name=\"dr-live\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "resiliency_switchover_duration_seconds_bucket{mode=\"planned\",result=\"complete\""
        ),
        "{metrics}"
    );

    // The reverse stream compared A before its first full sync: A held nothing of its own.
    assert_eq!(reverse["spec"]["compareBeforeSync"], true, "{reverse:#}");
    wait_for(
        "the reverse stream's comparison in its status",
        Duration::from_secs(20),
        || async {
            status("livesynchronizations", "dr-live-reverse")["destinationDivergence"].is_object()
        },
    )
    .await;
    let dd = status("livesynchronizations", "dr-live-reverse")["destinationDivergence"].clone();
    assert_eq!(
        (&dd["onlyOnDestination"], &dd["changed"]),
        (&json!(0), &json!(0)),
        "{dd:#}"
    );
    // B takes writes, and they reach A.
    let zd = client(dst).await;
    mk(&zd, &format!("{root}/written-on-b"), b"b").await;
    wait_for("B's write on A", Duration::from_secs(30), || async {
        zs.check_stat(&format!("{root}/written-on-b"))
            .await
            .unwrap()
            .is_some()
    })
    .await;

    // Failback: one more Switchover, of the reverse stream. It resumes the original.
    fake.write(
        "switchovers",
        ns,
        switchover(
            "back",
            json!({"liveSynchronizationName": "dr-live-reverse", "reverse": true}),
        ),
        "ADDED",
    );
    wait_for("the failback to end", Duration::from_secs(90), || async {
        let p = &status("switchovers", "back")["phase"];
        p == "Complete" || p == "Failed"
    })
    .await;
    let st = status("switchovers", "back");
    assert_eq!(st["phase"], "Complete", "{st:#}");
    assert_eq!(st["dataLoss"]["proven"], true, "{st:#}");
    assert_eq!(st["verification"]["result"], "Equal", "{st:#}");
    assert_eq!(
        (&st["oldPrimary"], &st["newPrimary"]),
        (&json!("zk-b"), &json!("zk-a")),
        "{st:#}"
    );
    assert_eq!(st["reverseLiveSynchronizationName"], "dr-live", "{st:#}");
    let original = fake.get("livesynchronizations", ns, "dr-live").unwrap();
    assert_eq!(original["spec"]["suspend"], false, "{original:#}");
    assert_eq!(original["spec"]["compareBeforeSync"], true, "{original:#}");
    let reverse = fake
        .get("livesynchronizations", ns, "dr-live-reverse")
        .unwrap();
    assert_eq!(reverse["spec"]["suspend"], true, "{reverse:#}");
    wait_for(
        "the original streaming again",
        Duration::from_secs(60),
        || async {
            condition(&status("livesynchronizations", "dr-live"), "Streaming")["status"] == "True"
        },
    )
    .await;
    // A is the primary again: its writes reach B, and the trees are equal.
    mk(&zs, &format!("{root}/written-on-a-again"), b"a").await;
    wait_for("A's write on B", Duration::from_secs(30), || async {
        zd.check_stat(&format!("{root}/written-on-a-again"))
            .await
            .unwrap()
            .is_some()
            && verify(&o).await.equal
    })
    .await;
    let r = verify(&o).await;
    assert_eq!(r.destination_nodes, r.source_nodes, "{r:?}");
    assert_eq!(r.destination_root_hash, r.source_root_hash);
    let events = events_of(&fake, "back");
    assert!(
        events.iter().any(|e| e["reason"] == "Promoted"),
        "{events:#?}"
    );
    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert!(
        metrics
            .contains("resiliency_switchover_runs_total{mode=\"planned\",result=\"complete\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_of_a_missing_or_suspended_live_synchronization_fails_and_changes_nothing() {
    let fake = Fake::new();
    let ns = "resiliency-operator";
    fake.write(
        "livesynchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "paused"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "zk-a", "destinationName": "zk-b", "rootPath": "/app"},
                     "suspend": true}}),
        "ADDED",
    );
    let (_operator, metrics_addr, _dir) =
        synchronization_controller(&fake, ns, "operator-switchover-bad-0").await;
    fake.write(
        "switchovers",
        ns,
        switchover(
            "to-nowhere",
            json!({"liveSynchronizationName": "nope", "reverse": true}),
        ),
        "ADDED",
    );
    fake.write(
        "switchovers",
        ns,
        switchover(
            "of-paused",
            json!({"liveSynchronizationName": "paused", "reverse": true}),
        ),
        "ADDED",
    );
    let status = |name: &str| {
        fake.get("switchovers", ns, name)
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };
    wait_for("both to fail", Duration::from_secs(30), || async {
        status("to-nowhere")["phase"] == "Failed" && status("of-paused")["phase"] == "Failed"
    })
    .await;
    let st = status("to-nowhere");
    let failed = condition(&st, "Failed");
    assert_eq!(failed["status"], "True", "{st:#}");
    assert_eq!(failed["reason"], "LiveSynchronizationNotFound", "{st:#}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("spec.liveSynchronizationName: LiveSynchronization nope not found"),
        "{st:#}"
    );
    assert_eq!(condition(&st, "Complete")["status"], "False", "{st:#}");
    assert!(st["steps"].is_null() && st["dataLoss"].is_null(), "{st:#}");
    let st = status("of-paused");
    assert_eq!(condition(&st, "Failed")["reason"], "Suspended", "{st:#}");
    assert_eq!(st["oldPrimary"], "zk-a", "{st:#}");

    // Nothing was created or changed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lives: Vec<String> = {
        let s = fake.store.lock().unwrap();
        s.objects
            .keys()
            .filter(|(p, _, _)| p == "livesynchronizations")
            .map(|(_, _, n)| n.clone())
            .collect()
    };
    assert_eq!(lives, vec!["paused".to_string()]);
    let paused = fake.get("livesynchronizations", ns, "paused").unwrap();
    assert_eq!(paused["spec"]["suspend"], true);
    assert_eq!(paused["metadata"]["generation"], 1);
    assert!(events_of(&fake, "to-nowhere")
        .iter()
        .any(|e| e["type"] == "Warning" && e["reason"] == "LiveSynchronizationNotFound"));
    let (_, metrics) = http_get(&metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("resiliency_switchover_runs_total{mode=\"planned\",result=\"failed\"} 2"),
        "{metrics}"
    );
}

/// One of each kind the operator reconciles, in `ns`: Databases `zk-a` and `zk-b` with their
/// Secrets, a Synchronization of `root`, a local Bucket, a suspended SynchronizationPlan and
/// LiveSynchronization, and a Switchover of a LiveSynchronization that does not exist.
fn one_of_each(fake: &Fake, ns: &str, src: &ZkServer, dst: &ZkServer, root: &str, dir: &str) {
    two_databases(fake, ns, src, dst);
    let config = json!({"sourceName": "zk-a", "destinationName": "zk-b", "rootPath": root});
    let plugin = "zookeeper-to-zookeeper-nodes";
    fake.write(
        "synchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "copy"}, "spec": {"plugin": plugin, "config": config}}),
        "ADDED",
    );
    fake.write(
        "buckets",
        ns,
        json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "local"}, "spec": {"local": {"path": dir}}}),
        "ADDED",
    );
    fake.write(
        "synchronizationplans",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "SynchronizationPlan",
            "metadata": {"name": "plan"},
            "spec": {"schedule": "*/5 * * * *", "suspend": true,
                     "template": {"spec": {"plugin": plugin, "config": config}}}}),
        "ADDED",
    );
    fake.write(
        "livesynchronizations",
        ns,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "live"},
            "spec": {"plugin": plugin, "config": config, "suspend": true}}),
        "ADDED",
    );
    fake.write(
        "switchovers",
        ns,
        switchover("over", json!({"liveSynchronizationName": "nope"})),
        "ADDED",
    );
}

const RECONCILED: [&str; 7] = [
    "databases",
    "buckets",
    "synchronizations",
    "synchronizationplans",
    "livesynchronizations",
    "switchovers",
    "secrets",
];

/// The namespaced install: WATCH_NAMESPACES=ns-a reconciles every kind in ns-a, leaves ns-b
/// alone, and sends every request to ns-a or (Leases only) the operator's own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_namespaces_the_operator_reconciles_only_there_and_never_asks_cluster_wide() {
    let (src, dst) = shared_pair();
    let root = unique_root("operator-namespaced");
    build_tree(&client(src).await, &root, 20, 5, 8).await;
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    for ns in ["ns-a", "ns-b"] {
        one_of_each(&fake, ns, src, dst, &root, dir);
    }
    let untouched: Vec<(Key, Value)> = {
        let s = fake.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, n, _), _)| n == "ns-b" && RECONCILED.contains(&p.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let lease_ns = "resiliency-operator";
    let (mut operator, _metrics, _kubeconfig, _) = start_operator_with(
        &fake,
        lease_ns,
        "operator-namespaced-0",
        None,
        std::process::Stdio::inherit(),
        &[("WATCH_NAMESPACES", "ns-a")],
    )
    .await;

    let status = |plural: &str, name: &str| {
        fake.get(plural, "ns-a", name)
            .map(|o| o["status"].clone())
            .unwrap_or(Value::Null)
    };
    let ready =
        |plural: &str, name: &str| condition(&status(plural, name), "Ready")["status"] == "True";
    wait_for(
        "every kind in ns-a reconciled",
        Duration::from_secs(60),
        || async {
            status("synchronizations", "copy")["phase"] == "Succeeded"
                && ready("databases", "zk-a")
                && ready("databases", "zk-b")
                && ready("buckets", "local")
                && !status("synchronizationplans", "plan").is_null()
                && status("livesynchronizations", "live")["phase"] == "Suspended"
                && status("switchovers", "over")["phase"] == "Failed"
        },
    )
    .await;
    // Time for a stray cluster-wide watch to deliver ns-b's objects, had there been one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    operator.kill().await.unwrap();

    // ns-b: no status, no finalizer, no new resourceVersion, no Event.
    let changed: Vec<&Key> = untouched
        .iter()
        .filter(|(k, v)| fake.get(&k.0, &k.1, &k.2).as_ref() != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(changed.is_empty(), "changed in ns-b: {changed:?}");
    assert!(
        !events_of(&fake, "over").is_empty(),
        "the Switchover's Warning in ns-a"
    );

    let requests = fake.store.lock().unwrap().requests.clone();
    assert!(requests.len() > 20, "{requests:?}");
    for (method, path) in &requests {
        let t = parse(path.split('?').next().unwrap()).unwrap();
        match t.namespace.as_deref() {
            Some("ns-a") => {}
            Some(ns) if ns == lease_ns => assert_eq!(t.plural, "leases", "{method} {path}"),
            Some(_) => panic!("outside the watched namespace: {method} {path}"),
            None => panic!("a cluster-scoped request: {method} {path}"),
        }
    }
}
