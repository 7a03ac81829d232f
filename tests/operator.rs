//! The operator's Kubernetes glue against a mocked API server (tower-test): each scenario
//! checks the method, path and body of every call in order, and that no other call follows.
//! ZooKeeper stays real: Databases point at the shared local servers.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock;

use resiliency_operator::api::assets::{Database, KubernetesCluster};
use resiliency_operator::api::automation::{Synchronization, SynchronizationPlan};
use resiliency_operator::controllers::database::RECHECK;
use resiliency_operator::controllers::synchronization::WAITING_RECHECK;
use resiliency_operator::operator::leader::{Elector, Ended, LeaseConfig};
use resiliency_operator::operator::remote::Remotes;
use resiliency_operator::operator::synchronization::{FINALIZER, RUN_POLL};
use resiliency_operator::operator::{
    database, kubernetes_cluster, synchronization, synchronization_plan, ControllerGroup, Process,
    Shared,
};
use resiliency_operator::remote_cluster::KubeconfigPolicy;
use resiliency_operator::runs::Runs;
use support::*;

const NS: &str = "team-a";

/// The API server side of a mocked client.
struct ApiServer {
    handle: mock::Handle<Request<Body>, Response<Body>>,
    /// Objects by path, so a PATCH is answered with the whole patched object.
    objects: std::collections::HashMap<String, Value>,
}

struct Call {
    method: String,
    /// Path and query.
    uri: String,
    body: Value,
    /// For a PATCH of a known object: the object after the patch.
    patched: Option<Value>,
    respond: mock::SendResponse<Response<Body>>,
}

impl Call {
    fn reply(self, status: u16, body: Value) {
        self.respond.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    fn not_found(self) {
        self.reply(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "not found", "reason": "NotFound", "code": 404}),
        );
    }

    /// Answers as the API server would: the patched object for a PATCH, else the body sent.
    fn echo(self) {
        let body = self.patched.clone().unwrap_or_else(|| self.body.clone());
        self.reply(200, body);
    }
}

impl ApiServer {
    async fn next(&mut self) -> Call {
        self.next_opt().await.expect("the client went away")
    }

    /// The next call, or None once the client is gone.
    async fn next_opt(&mut self) -> Option<Call> {
        let (req, respond) =
            tokio::time::timeout(Duration::from_secs(30), self.handle.next_request())
                .await
                .expect("timed out waiting for the next API call")?;
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let path = uri.split('?').next().unwrap_or_default();
        let path = path.strip_suffix("/status").unwrap_or(path).to_string();
        let patched = match (method.as_str(), self.objects.get_mut(&path)) {
            ("PATCH", Some(obj)) => {
                merge(obj, &body);
                Some(obj.clone())
            }
            _ => None,
        };
        Some(Call {
            method,
            uri,
            body,
            patched,
            respond,
        })
    }

    /// Makes `obj` known at `path`, so PATCHes of it are answered with the whole object.
    fn knows(&mut self, path: String, obj: impl serde::Serialize) {
        self.objects
            .insert(path, serde_json::to_value(obj).unwrap());
    }

    /// The next call, which must be `method` on a URI starting with `path`.
    async fn expect(&mut self, method: &str, path: &str) -> Call {
        let c = self.next().await;
        assert_eq!(
            (c.method.as_str(), c.uri.starts_with(path)),
            (method, true),
            "expected {method} {path}, got {} {}",
            c.method,
            c.uri
        );
        c
    }

    /// No call within `d`.
    async fn quiet(&mut self, d: Duration) {
        if let Ok(Some((req, _))) = tokio::time::timeout(d, self.handle.next_request()).await {
            panic!("unexpected call {} {}", req.method(), req.uri());
        }
    }
}

fn mock_client() -> (Client, ApiServer) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (
        Client::new(svc, "default"),
        ApiServer {
            handle,
            objects: Default::default(),
        },
    )
}

fn shared(client: Client, group: ControllerGroup) -> Shared {
    Shared::new(
        client,
        group,
        Some("test-replica".into()),
        &Process::default(),
    )
}

fn database(name: &str, servers: &[String]) -> Database {
    serde_json::from_value(json!({
        "apiVersion": "assets.astronetes.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "generation": 1, "resourceVersion": "10"},
        "spec": {"zookeeper": {"client": {"servers": servers}}}
    }))
    .unwrap()
}

fn secret(name: &str, version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": version},
        // base64 of "admin" and "s3cr3t-value"
        "data": {"user": "YWRtaW4=", "password": "czNjcjN0LXZhbHVl"}
    })
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn assert_status_apply(c: &Call, plural_path: &str) {
    assert!(
        c.uri.starts_with(&format!("{plural_path}/status?")),
        "{}",
        c.uri
    );
    assert!(
        c.uri.contains("fieldManager=resiliency-operator"),
        "{}",
        c.uri
    );
    assert!(c.uri.contains("force=true"), "{}", c.uri);
}

fn assert_event(c: &Call, kind: &str, name: &str, type_: &str, reason: &str) {
    assert_eq!(
        (
            c.body["regarding"]["kind"].as_str(),
            c.body["regarding"]["name"].as_str(),
            c.body["type"].as_str(),
            c.body["reason"].as_str()
        ),
        (Some(kind), Some(name), Some(type_), Some(reason)),
        "{}",
        c.body
    );
    assert!(
        !c.body.to_string().contains("s3cr3t-value"),
        "an Event carries the password: {}",
        c.body
    );
}

const DB_PATH: &str = "/apis/assets.astronetes.io/v1alpha1/namespaces/team-a/databases";
const SYNC_PATH: &str =
    "/apis/automation.astronetes.io/v1alpha1/namespaces/team-a/synchronizations";
const PLAN_PATH: &str =
    "/apis/automation.astronetes.io/v1alpha1/namespaces/team-a/synchronizationplans";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";
const SECRETS_PATH: &str = "/api/v1/namespaces/team-a/secrets";

// ---------------------------------------------------------------- Database

#[tokio::test]
async fn database_connects_reports_version_and_stays_quiet_until_the_recheck() {
    let (src, _) = shared_pair();
    let (client, mut api) = mock_client();
    let ctx = Arc::new(database::Ctx::new(shared(
        client,
        ControllerGroup::Database,
    )));
    let mut db = database("zk-src", &[src.connect_string()]);
    api.knows(format!("{DB_PATH}/zk-src"), &db);

    let task = tokio::spawn(database::reconcile(Arc::new(db.clone()), ctx.clone()));
    api.expect("GET", &format!("{SECRETS_PATH}/zk-src"))
        .await
        .reply(200, secret("zk-src", "7"));
    let c = api
        .expect("PATCH", &format!("{DB_PATH}/zk-src/status"))
        .await;
    assert_status_apply(&c, &format!("{DB_PATH}/zk-src"));
    let status = c.body["status"].clone();
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Connected"))
    );
    assert_eq!(ready["observedGeneration"], 1);
    assert!(
        status["serverVersion"].as_str().unwrap().starts_with("3."),
        "{status}"
    );
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Database", "zk-src", "Normal", "Connected");
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RECHECK));

    // Its own status write wakes it again: same spec, same Secret, so no new check and no
    // write, only a wait for the remaining recheck time.
    db.status = Some(serde_json::from_value(status).unwrap());
    let task = tokio::spawn(database::reconcile(Arc::new(db.clone()), ctx.clone()));
    api.expect("GET", &format!("{SECRETS_PATH}/zk-src"))
        .await
        .reply(200, secret("zk-src", "7"));
    let action = task.await.unwrap().unwrap();
    assert_ne!(action, Action::requeue(RECHECK));
    api.quiet(Duration::from_millis(300)).await;

    // A rotated Secret is checked at once; the status is the same but for the check time, and
    // no second Event is published for an unchanged Ready.
    let task = tokio::spawn(database::reconcile(Arc::new(db), ctx));
    api.expect("GET", &format!("{SECRETS_PATH}/zk-src"))
        .await
        .reply(200, secret("zk-src", "8"));
    let c = api
        .expect("PATCH", &format!("{DB_PATH}/zk-src/status"))
        .await;
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RECHECK));
    api.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn database_without_its_secret_says_which_and_warns() {
    let (src, _) = shared_pair();
    let (client, mut api) = mock_client();
    let ctx = Arc::new(database::Ctx::new(shared(
        client,
        ControllerGroup::Database,
    )));
    let db = database("zk-nosecret", &[src.connect_string()]);
    api.knows(format!("{DB_PATH}/zk-nosecret"), &db);
    let task = tokio::spawn(database::reconcile(Arc::new(db), ctx));
    api.expect("GET", &format!("{SECRETS_PATH}/zk-nosecret"))
        .await
        .not_found();
    let c = api
        .expect("PATCH", &format!("{DB_PATH}/zk-nosecret/status"))
        .await;
    let ready = condition(&c.body["status"], "Ready").clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("SecretNotFound"))
    );
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("Secret zk-nosecret not found in namespace team-a"));
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Database", "zk-nosecret", "Warning", "SecretNotFound");
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RECHECK));
}

#[tokio::test]
async fn database_unreachable_is_a_condition_not_an_error() {
    let port = free_port();
    let (client, mut api) = mock_client();
    let ctx = Arc::new(database::Ctx::new(shared(
        client,
        ControllerGroup::Database,
    )));
    let db = database("zk-down", &[format!("127.0.0.1:{port}")]);
    api.knows(format!("{DB_PATH}/zk-down"), &db);
    let task = tokio::spawn(database::reconcile(Arc::new(db), ctx));
    api.expect("GET", &format!("{SECRETS_PATH}/zk-down"))
        .await
        .reply(200, secret("zk-down", "1"));
    let c = api
        .expect("PATCH", &format!("{DB_PATH}/zk-down/status"))
        .await;
    let ready = condition(&c.body["status"], "Ready").clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Unreachable"))
    );
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Database", "zk-down", "Warning", "Unreachable");
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RECHECK));
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_and_publishes_one_warning() {
    let (client, mut api) = mock_client();
    let shared = shared(client, ControllerGroup::Database);
    let ctx = Arc::new(database::Ctx::new(shared.clone()));
    let db = database("zk-forbidden", &["127.0.0.1:1".into()]);
    let task = tokio::spawn(database::reconcile(Arc::new(db.clone()), ctx));
    api.expect("GET", &format!("{SECRETS_PATH}/zk-forbidden")).await.reply(
        403,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "secrets \"zk-forbidden\" is forbidden", "reason": "Forbidden", "code": 403}),
    );
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.reason(), "Forbidden");
    assert!(
        err.to_string()
            .contains("reading Secret team-a/zk-forbidden"),
        "{err}"
    );
    // The error policy: a growing retry, and one Warning Event with the cause.
    let action = shared.error_policy(&db, &err);
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Database", "zk-forbidden", "Warning", "Retrying");
    assert!(c.body["note"].as_str().unwrap().contains("forbidden"));
    c.echo();
    assert_eq!(
        shared.error_policy(&db, &err),
        Action::requeue(Duration::from_secs(10))
    );
}

// ---------------------------------------------------------------- KubernetesCluster

const KC_PATH: &str = "/apis/assets.astronetes.io/v1alpha1/namespaces/team-a/kubernetesclusters";

fn kubernetes_cluster(name: &str) -> KubernetesCluster {
    serde_json::from_value(json!({
        "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "KubernetesCluster",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "generation": 1, "resourceVersion": "30"},
        "spec": {"secretName": format!("{name}-kubeconfig")}
    }))
    .unwrap()
}

/// A Secret holding `kubeconfig` under the key kubeconfig, as an API server returns it (base64).
fn kubeconfig_secret(name: &str, kubeconfig: &str) -> Value {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            resource_version: Some("3".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "kubeconfig".to_string(),
                k8s_openapi::ByteString(kubeconfig.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

/// Everything logged on this thread while the guard lives, at every level.
fn capture_logs() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    #[derive(Clone)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Sink(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || sink.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// Checks the KubernetesCluster `name` whose Secret holds `kubeconfig`, through the drive
/// loop's instrumentation; returns its Ready condition and the Event published.
async fn check_cluster(process: &Process, name: &str, kubeconfig: &str) -> (Value, Value) {
    let (client, mut api) = mock_client();
    let shared = Shared::new(
        client,
        ControllerGroup::Database,
        Some("test-replica".into()),
        process,
    );
    let ctx = Arc::new(database::Ctx::new(shared.clone()));
    let kc = kubernetes_cluster(name);
    api.knows(format!("{KC_PATH}/{name}"), &kc);
    let task = tokio::spawn(shared.instrument(Arc::new(kc), ctx, kubernetes_cluster::reconcile));
    let secret = format!("{name}-kubeconfig");
    api.expect("GET", &format!("{SECRETS_PATH}/{secret}"))
        .await
        .reply(200, kubeconfig_secret(&secret, kubeconfig));
    let c = api
        .expect("PATCH", &format!("{KC_PATH}/{name}/status"))
        .await;
    let ready = condition(&c.body["status"], "Ready").clone();
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    let event = c.body.clone();
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RECHECK));
    (ready, event)
}

#[tokio::test]
async fn a_kubeconfig_that_does_not_parse_keeps_its_secrets_out_of_status_events_and_logs() {
    let (logs, _guard) = capture_logs();
    // A syntax error right next to the token: YAML parsers quote the lines around an error.
    let kubeconfig = "apiVersion: v1\nkind: Config\nusers:\n- name: dr\n  user:\n    \
                      token: SECRET-TOKEN-xyz\n    client-key-data: [SECRET-TOKEN-xyz\n";
    let (ready, event) = check_cluster(&Process::default(), "broken", kubeconfig).await;
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("SecretInvalid"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Secret broken-kubeconfig: key kubeconfig is not a kubeconfig: line 7, column 22: "
        ),
        "{message}"
    );
    assert_eq!(event["reason"], "SecretInvalid", "{event}");
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("reconcile"), "nothing was logged: {logs}");
    for (what, text) in [
        ("status", ready.to_string()),
        ("Event", event.to_string()),
        ("log", logs),
    ] {
        assert!(
            !text.contains("SECRET-TOKEN"),
            "the {what} carries the token: {text}"
        );
    }
}

#[tokio::test]
async fn a_kubeconfig_that_turns_tls_down_is_refused_naming_the_field_unless_allowed() {
    // Each on a loopback port nothing listens on: once allowed, the check gets as far as
    // connecting and finds nobody.
    let cluster = |server: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: east\n  cluster:\n    \
             server: {server}\n{extra}contexts:\n- name: east\n  context: {{cluster: east, \
             user: dr}}\ncurrent-context: east\nusers:\n- name: dr\n  user: {{token: abc}}\n"
        )
    };
    let cases = [
        (
            cluster(
                "https://127.0.0.1:1",
                "    insecure-skip-tls-verify: true\n",
            ),
            "clusters[0].cluster.insecure-skip-tls-verify is true",
        ),
        (
            cluster("http://127.0.0.1:1", ""),
            "clusters[0].cluster.server is \"http://127.0.0.1:1\", plain HTTP",
        ),
        (
            cluster("https://127.0.0.1:1", "    tls-server-name: kubernetes\n"),
            "clusters[0].cluster.tls-server-name is set",
        ),
    ];
    // As main does: kube and object_store bring two rustls providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let strict = Process::default();
    let allowing = Process {
        remotes: Arc::new(Remotes::new(KubeconfigPolicy {
            allow_insecure: true,
        })),
        ..Process::default()
    };
    for (kubeconfig, field) in &cases {
        let (ready, event) = check_cluster(&strict, "east", kubeconfig).await;
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("SecretInvalid")),
            "{ready}"
        );
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "Secret east-kubeconfig: key kubeconfig: {field}: "
            )) && message.contains("--allow-insecure-kubeconfigs"),
            "{message}"
        );
        assert_eq!(event["reason"], "SecretInvalid", "{event}");
        let (ready, _) = check_cluster(&allowing, "east", kubeconfig).await;
        assert_eq!(ready["reason"], "Unreachable", "{field}: {ready}");
    }
}

// ---------------------------------------------------------------- Synchronization

fn sync_object(name: &str, root: &str, finalizer: bool, status: Option<Value>) -> Synchronization {
    let mut v = json!({
        "apiVersion": "automation.astronetes.io/v1alpha1",
        "kind": "Synchronization",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "generation": 1, "resourceVersion": "20"},
        "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                 "config": {"sourceName": "zk-src", "destinationName": "zk-dst", "rootPath": root}}
    });
    if finalizer {
        v["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).unwrap()
}

/// Answers the four reads of a Synchronization's endpoints.
async fn serve_endpoints(api: &mut ApiServer, src: &str, dst: &str) {
    let c = api.expect("GET", &format!("{DB_PATH}/zk-src")).await;
    c.reply(
        200,
        serde_json::to_value(database("zk-src", &[src.to_string()])).unwrap(),
    );
    api.expect("GET", &format!("{SECRETS_PATH}/zk-src"))
        .await
        .reply(200, secret("zk-src", "1"));
    let c = api.expect("GET", &format!("{DB_PATH}/zk-dst")).await;
    c.reply(
        200,
        serde_json::to_value(database("zk-dst", &[dst.to_string()])).unwrap(),
    );
    api.expect("GET", &format!("{SECRETS_PATH}/zk-dst"))
        .await
        .reply(200, secret("zk-dst", "1"));
}

fn sync_ctx(client: Client) -> Arc<synchronization::Ctx> {
    Arc::new(synchronization::Ctx {
        shared: shared(client, ControllerGroup::Synchronization),
        runs: Runs::new(),
    })
}

#[tokio::test]
async fn synchronization_adds_its_finalizer_before_anything_else() {
    let (client, mut api) = mock_client();
    let ctx = sync_ctx(client);
    let s = sync_object("s-new", "/x", false, None);
    api.knows(format!("{SYNC_PATH}/s-new"), &s);
    let task = tokio::spawn(synchronization::reconcile(Arc::new(s), ctx));
    let c = api.expect("PATCH", &format!("{SYNC_PATH}/s-new?")).await;
    assert_eq!(
        c.body,
        json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "20"}})
    );
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn synchronization_runs_once_records_the_verified_outcome_and_drops_its_finalizer() {
    let (src, dst) = shared_pair();
    let root = unique_root("operator-sync");
    let zs = client(src).await;
    build_tree(&zs, &root, 300, 10, 32).await;

    let (client, mut api) = mock_client();
    let ctx = sync_ctx(client);
    let s = sync_object("s-ok", &root, true, None);
    api.knows(format!("{SYNC_PATH}/s-ok"), &s);

    // First pass: endpoints read, start recorded, then the run starts.
    let task = tokio::spawn(synchronization::reconcile(Arc::new(s.clone()), ctx.clone()));
    serve_endpoints(&mut api, &src.connect_string(), &dst.connect_string()).await;
    let c = api
        .expect("PATCH", &format!("{SYNC_PATH}/s-ok/status"))
        .await;
    assert_status_apply(&c, &format!("{SYNC_PATH}/s-ok"));
    let mut status = c.body["status"].clone();
    assert_eq!(
        (status["phase"].as_str(), status["runs"].as_u64()),
        (Some("Running"), Some(1))
    );
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Synchronization", "s-ok", "Normal", "Running");
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RUN_POLL));
    assert!(ctx.runs.state("uid-s-ok").is_some());

    // Later passes look at the run (no API call) until it ends, then record the outcome once.
    loop {
        let s = sync_object("s-ok", &root, true, Some(status.clone()));
        let task = tokio::spawn(synchronization::reconcile(Arc::new(s), ctx.clone()));
        let next = tokio::select! {
            r = &mut Box::pin(task) => { assert_eq!(r.unwrap().unwrap(), Action::requeue(RUN_POLL)); None }
            c = api.next() => Some(c),
        };
        let Some(c) = next else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        assert_eq!(c.method, "PATCH");
        assert_status_apply(&c, &format!("{SYNC_PATH}/s-ok"));
        status = c.body["status"].clone();
        c.echo();
        break;
    }
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(condition(&status, "Complete")["status"], "True");
    assert_eq!(condition(&status, "Verified")["reason"], "Equal");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(status["verification"]["equal"], true);
    assert_eq!(status["verification"]["sourceNodes"], 301);
    assert_eq!(status["counters"]["created"], 301);
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Synchronization", "s-ok", "Normal", "Succeeded");
    c.echo();
    // The run entry is kept until the stored status shows the outcome (a stale read must not
    // restart the copy); the pass that sees it forgets the run and drops the finalizer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ctx.runs.state("uid-s-ok").is_some());
    let s = sync_object("s-ok", &root, true, Some(status.clone()));
    let task = tokio::spawn(synchronization::reconcile(Arc::new(s), ctx.clone()));
    let c = api.expect("PATCH", &format!("{SYNC_PATH}/s-ok?")).await;
    assert_eq!(c.body["metadata"]["finalizers"], json!([]));
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(ctx.runs.state("uid-s-ok").is_none());

    // Finished means finished: another pass writes nothing and starts nothing.
    let s = sync_object("s-ok", &root, false, Some(status));
    let task = tokio::spawn(synchronization::reconcile(Arc::new(s), ctx.clone()));
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    api.quiet(Duration::from_millis(300)).await;
    assert!(ctx.runs.state("uid-s-ok").is_none());
}

#[tokio::test]
async fn synchronization_waits_for_a_missing_database() {
    let (client, mut api) = mock_client();
    let ctx = sync_ctx(client);
    let s = sync_object("s-wait", "/x", true, None);
    api.knows(format!("{SYNC_PATH}/s-wait"), &s);
    let task = tokio::spawn(synchronization::reconcile(Arc::new(s), ctx.clone()));
    api.expect("GET", &format!("{DB_PATH}/zk-src"))
        .await
        .not_found();
    api.expect("GET", &format!("{DB_PATH}/zk-dst"))
        .await
        .not_found();
    let c = api
        .expect("PATCH", &format!("{SYNC_PATH}/s-wait/status"))
        .await;
    let status = c.body["status"].clone();
    assert_eq!(status["phase"], "Pending");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "DatabaseNotFound");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("Database zk-src not found"));
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(
        &c,
        "Synchronization",
        "s-wait",
        "Warning",
        "DatabaseNotFound",
    );
    c.echo();
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(WAITING_RECHECK)
    );
    assert!(ctx.runs.state("uid-s-wait").is_none());
}

#[tokio::test]
async fn deleting_a_running_synchronization_stops_the_run_and_keeps_destination_data() {
    let (src, dst) = shared_pair();
    let root = unique_root("operator-delete");
    let zs = client(src).await;
    build_tree(&zs, &root, 20_000, 50, 64).await;
    let zd = client(dst).await;
    mk(&zd, &root, b"kept").await;
    mk(&zd, &format!("{root}/already-here"), b"kept").await;

    let (client, mut api) = mock_client();
    let ctx = sync_ctx(client);
    ctx.runs.start(
        "uid-s-del",
        resiliency_operator::runs::Job::Copy {
            opts: Box::new(sync_opts(src, &root, dst, &root)),
            verify: true,
        },
    );
    let mut s = sync_object(
        "s-del",
        &root,
        true,
        Some(json!({"phase": "Running", "runs": 1})),
    );
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    api.knows(format!("{SYNC_PATH}/s-del"), &s);
    let task = tokio::spawn(synchronization::reconcile(Arc::new(s), ctx.clone()));
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(&c, "Synchronization", "s-del", "Warning", "Interrupted");
    assert!(c.body["note"]
        .as_str()
        .unwrap()
        .contains("destination data is left as it is"));
    c.echo();
    let c = api.expect("PATCH", &format!("{SYNC_PATH}/s-del?")).await;
    assert_eq!(c.body["metadata"]["finalizers"], json!([]));
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(ctx.runs.state("uid-s-del").is_none());
    api.quiet(Duration::from_millis(200)).await;
    // Nothing was deleted on the destination: what was there before the copy still is.
    let (data, _) = zd.get_data(&format!("{root}/already-here")).await.unwrap();
    assert_eq!(data, b"kept");
    let (data, _) = zd.get_data(&root).await.unwrap();
    assert!(!data.is_empty());
}

// ---------------------------------------------------------------- SynchronizationPlan

fn plan_object(
    schedule: &str,
    created_minutes_ago: i64,
    status: Option<Value>,
) -> SynchronizationPlan {
    let created = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_mins(created_minutes_ago);
    let mut v = json!({
        "apiVersion": "automation.astronetes.io/v1alpha1",
        "kind": "SynchronizationPlan",
        "metadata": {"name": "nightly", "namespace": NS, "uid": "uid-plan",
                     "generation": 1, "resourceVersion": "30",
                     "creationTimestamp": created.to_string()},
        "spec": {"schedule": schedule, "successfulHistoryLimit": 2,
                 "template": {"spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "zk-src", "destinationName": "zk-dst", "rootPath": "/x"}}}}
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).unwrap()
}

fn plan_ctx(client: Client) -> Arc<synchronization_plan::Ctx> {
    Arc::new(synchronization_plan::Ctx {
        shared: shared(client, ControllerGroup::Synchronizationplan),
    })
}

fn finished_child(minutes_ago: i64) -> Value {
    let slot = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_mins(minutes_ago);
    let slot = k8s_openapi::jiff::Timestamp::from_second(slot.as_second() / 60 * 60).unwrap();
    json!({
        "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
        "metadata": {"name": format!("nightly-{}", slot.as_second() / 60), "namespace": NS,
            "labels": {"automation.astronetes.io/synchronization-plan": "nightly"},
            "annotations": {"automation.astronetes.io/scheduled-time": slot.to_string()},
            "ownerReferences": [{"apiVersion": "automation.astronetes.io/v1alpha1",
                "kind": "SynchronizationPlan", "name": "nightly", "uid": "uid-plan", "controller": true}]},
        "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                 "config": {"sourceName": "zk-src", "destinationName": "zk-dst", "rootPath": "/x"}},
        "status": {"phase": "Succeeded", "completionTime": slot.to_string()}
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "40"}, "items": items})
}

#[tokio::test]
async fn a_due_plan_creates_one_owned_child_and_prunes_its_history() {
    let (client, mut api) = mock_client();
    let ctx = plan_ctx(client);
    // Every 5 minutes, created 2 hours ago, three succeeded children: the oldest goes.
    let kids = vec![finished_child(30), finished_child(20), finished_child(10)];
    let plan = plan_object(
        "*/5 * * * *",
        120,
        Some(json!({
            "lastScheduleTime": kids[2]["metadata"]["annotations"]["automation.astronetes.io/scheduled-time"]
        })),
    );
    api.knows(format!("{PLAN_PATH}/nightly"), &plan);
    let task = tokio::spawn(synchronization_plan::reconcile(Arc::new(plan), ctx));
    let c = api.expect("GET", &format!("{SYNC_PATH}?")).await;
    assert!(
        c.uri
            .contains("labelSelector=automation.astronetes.io%2Fsynchronization-plan%3Dnightly"),
        "{}",
        c.uri
    );
    c.reply(200, list(kids.clone()));
    let oldest = kids[0]["metadata"]["name"].as_str().unwrap();
    let c = api.expect("DELETE", &format!("{SYNC_PATH}/{oldest}")).await;
    assert_eq!(c.body["propagationPolicy"], "Background");
    c.reply(200, kids[0].clone());
    let c = api.expect("POST", &format!("{SYNC_PATH}?")).await;
    let child = c.body.clone();
    let name = child["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("nightly-"), "{name}");
    assert_eq!(
        child["metadata"]["labels"]["automation.astronetes.io/synchronization-plan"],
        "nightly"
    );
    let owner = &child["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["uid"].as_str(),
            owner["controller"].as_bool(),
            owner["blockOwnerDeletion"].as_bool()
        ),
        (Some("uid-plan"), Some(true), Some(true))
    );
    assert_eq!(child["spec"]["config"]["sourceName"], "zk-src");
    c.reply(201, child);
    let c = api
        .expect("PATCH", &format!("{PLAN_PATH}/nightly/status"))
        .await;
    assert_status_apply(&c, &format!("{PLAN_PATH}/nightly"));
    let status = c.body["status"].clone();
    assert_eq!(status["active"], json!([name]));
    assert!(status["nextScheduleTime"].is_string(), "{status}");
    assert!(status["lastSuccessfulTime"].is_string(), "{status}");
    c.echo();
    let c = api.next().await;
    assert_eq!(c.method, "POST");
    assert!(c.uri.starts_with(EVENTS_PATH));
    assert_event(&c, "SynchronizationPlan", "nightly", "Normal", "Scheduled");
    c.echo();
    let action = task.await.unwrap().unwrap();
    // Requeued at the next slot, at most 5 minutes away.
    assert_ne!(action, Action::await_change());
    assert!(
        format!("{action:?}").contains("requeue_after: Some("),
        "{action:?}"
    );
    api.quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_bad_schedule_creates_nothing_and_names_the_field() {
    let (client, mut api) = mock_client();
    let ctx = plan_ctx(client);
    let plan = plan_object("61 * * * *", 120, None);
    api.knows(format!("{PLAN_PATH}/nightly"), &plan);
    let task = tokio::spawn(synchronization_plan::reconcile(Arc::new(plan), ctx));
    api.expect("GET", &format!("{SYNC_PATH}?"))
        .await
        .reply(200, list(vec![]));
    let c = api
        .expect("PATCH", &format!("{PLAN_PATH}/nightly/status"))
        .await;
    let ready = condition(&c.body["status"], "Ready").clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.schedule:"),
        "{ready}"
    );
    c.echo();
    let c = api.expect("POST", EVENTS_PATH).await;
    assert_event(
        &c,
        "SynchronizationPlan",
        "nightly",
        "Warning",
        "InvalidSpec",
    );
    c.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    api.quiet(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------- Leader election

fn lease_cfg(identity: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new(
        "resiliency-operator-database-controller",
        "resiliency-operator",
        identity,
    );
    c.duration = Duration::from_secs(1);
    c.renew_every = Duration::from_millis(100);
    c.renew_deadline = Duration::from_millis(500);
    c.retry = Duration::from_millis(100);
    c
}

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/resiliency-operator/leases/resiliency-operator-database-controller";

fn lease(holder: &str, version: &str, renew: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "resiliency-operator-database-controller",
                     "namespace": "resiliency-operator", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1,
                 "renewTime": renew, "leaseTransitions": 4}})
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_renews_it_and_releases_it_on_shutdown() {
    let (client, mut api) = mock_client();
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let mut elector = Elector::new(client, lease_cfg("pod-a"));
    let task = tokio::spawn(async move {
        assert!(elector.acquire(&mut stop).await);
        let ended = elector.hold(&mut stop).await;
        elector.release().await;
        ended
    });
    api.expect("GET", LEASE_PATH).await.not_found();
    let c = api
        .expect(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/resiliency-operator/leases?",
        )
        .await;
    assert_eq!(c.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(c.body["spec"]["leaseTransitions"], 0);
    let mut created = c.body.clone();
    created["metadata"]["resourceVersion"] = json!("1");
    c.reply(201, created);
    // Renewals are updates guarded by the resourceVersion last written.
    let c = api.expect("PUT", format!("{LEASE_PATH}?").as_str()).await;
    assert_eq!(c.body["metadata"]["resourceVersion"], "1");
    assert_eq!(c.body["spec"]["holderIdentity"], "pod-a");
    let mut renewed = c.body.clone();
    renewed["metadata"]["resourceVersion"] = json!("2");
    c.reply(200, renewed);
    stop_tx.send(true).unwrap();
    let c = api.expect("PUT", format!("{LEASE_PATH}?").as_str()).await;
    assert_eq!(c.body["metadata"]["resourceVersion"], "2");
    assert!(c.body["spec"].get("holderIdentity").is_none(), "{}", c.body);
    c.echo();
    assert_eq!(task.await.unwrap(), Ended::Shutdown);
}

#[tokio::test]
async fn a_standby_waits_for_a_live_holder_and_takes_over_a_dead_one() {
    let (client, mut api) = mock_client();
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let mut elector = Elector::new(client, lease_cfg("pod-b"));
    let task = tokio::spawn(async move { elector.acquire(&mut stop).await });
    // pod-a renews twice: pod-b keeps waiting whatever the clocks say.
    let started = tokio::time::Instant::now();
    for (v, renew) in [("5", "2020-01-01T00:00:00Z"), ("6", "2020-01-01T00:00:01Z")] {
        api.expect("GET", LEASE_PATH)
            .await
            .reply(200, lease("pod-a", v, renew));
    }
    // Then it stops renewing: after a whole lease duration unchanged, pod-b takes over.
    let c = loop {
        let c = api.next().await;
        if c.method == "GET" {
            c.reply(200, lease("pod-a", "6", "2020-01-01T00:00:01Z"));
            continue;
        }
        break c;
    };
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        (c.method.as_str(), c.uri.as_str()),
        ("PUT", format!("{LEASE_PATH}?").as_str())
    );
    assert_eq!(c.body["metadata"]["resourceVersion"], "6");
    assert_eq!(c.body["spec"]["holderIdentity"], "pod-b");
    assert_eq!(c.body["spec"]["leaseTransitions"], 5);
    c.echo();
    assert!(task.await.unwrap());
}

#[tokio::test]
async fn a_holder_stands_down_when_another_replica_took_the_lease() {
    let (client, mut api) = mock_client();
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let mut elector = Elector::new(client, lease_cfg("pod-a"));
    let task = tokio::spawn(async move {
        assert!(elector.acquire(&mut stop).await);
        elector.hold(&mut stop).await
    });
    api.expect("GET", LEASE_PATH)
        .await
        .reply(200, lease("pod-a", "7", "2020-01-01T00:00:00Z"));
    let c = api.expect("PUT", format!("{LEASE_PATH}?").as_str()).await;
    let mut v = c.body.clone();
    v["metadata"]["resourceVersion"] = json!("8");
    c.reply(200, v);
    // The renewal conflicts: someone wrote the Lease. It now names pod-c.
    api.expect("PUT", format!("{LEASE_PATH}?").as_str())
        .await
        .reply(
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "conflict", "reason": "Conflict", "code": 409}),
        );
    api.expect("GET", LEASE_PATH)
        .await
        .reply(200, lease("pod-c", "9", "2020-01-01T00:00:05Z"));
    assert_eq!(task.await.unwrap(), Ended::Lost);
}

/// pod-a creates the Lease and holds it; the task returns how the hold ended and how long it
/// lasted. `api` has answered the GET and the POST.
async fn holder_of_a_new_lease(
    client: Client,
    api: &mut ApiServer,
) -> tokio::task::JoinHandle<(Ended, Duration)> {
    let mut elector = Elector::new(client, lease_cfg("pod-a"));
    let task = tokio::spawn(async move {
        let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
        assert!(elector.acquire(&mut stop).await);
        let held = tokio::time::Instant::now();
        (elector.hold(&mut stop).await, held.elapsed())
    });
    api.expect("GET", LEASE_PATH).await.not_found();
    api.expect(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/resiliency-operator/leases?",
    )
    .await
    .echo();
    task
}

#[tokio::test]
async fn a_holder_that_cannot_renew_stands_down_before_the_lease_expires() {
    let (client, mut api) = mock_client();
    let task = holder_of_a_new_lease(client, &mut api).await;
    // From now on every renewal fails: the API server is unavailable.
    let mut task = task;
    let (ended, held) = loop {
        tokio::select! {
            r = &mut task => break r.unwrap(),
            Some(c) = api.next_opt() => {
                assert_eq!((c.method.as_str(), c.uri.as_str()), ("PUT", format!("{LEASE_PATH}?").as_str()));
                c.reply(
                    503,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "unavailable", "reason": "ServiceUnavailable", "code": 503}),
                );
            }
        }
    };
    assert_eq!(ended, Ended::Lost);
    // Gave up at the renew deadline, before the 1 s lease could expire for the others.
    assert!(held < Duration::from_secs(1), "{held:?}");
}

#[tokio::test]
async fn a_holder_whose_renewal_never_answers_stands_down_before_the_lease_expires() {
    let (client, mut api) = mock_client();
    let task = holder_of_a_new_lease(client, &mut api).await;
    // The API server takes the renewal and never answers it (kept, so the connection stays
    // open rather than failing).
    let unanswered = api.expect("PUT", format!("{LEASE_PATH}?").as_str()).await;
    let (ended, held) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the holder waited on the renewal past its deadline")
        .unwrap();
    assert_eq!(ended, Ended::Lost);
    // Stood down at the renew deadline (0.5 s), before the 1 s lease could expire for the
    // others: the controller and its runs are stopped on Lost.
    assert!(held < Duration::from_secs(1), "{held:?}");
    drop(unanswered);
}

// ---------------------------------------------------------------- The binary

/// `operator` against an API server without our CRDs: exits 2 and says how to install them,
/// instead of logging watch errors forever.
#[tokio::test]
async fn the_operator_refuses_to_start_without_its_crds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#,
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), port);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "operator",
            "--controllers",
            "synchronization",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CustomResourceDefinition databases.assets.astronetes.io is not installed: kubectl apply -f crds/crds.yaml"),
        "{stderr}"
    );
}

#[test]
fn a_bad_controller_name_is_refused_by_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(["operator", "--controllers", "database,backup"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'backup' for '--controllers"),
        "{stderr}"
    );
}
