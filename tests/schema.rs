//! The API contract: committed CRDs match the types, and every example applies (parses into
//! its type and passes the schema and CEL rules the API server would enforce).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use resiliency_operator::api;
use serde_json::Value;

fn crd_schema(kind: &str) -> Option<Value> {
    let crd = api::all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)?;
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()?;
    Some(serde_json::to_value(schema).unwrap())
}

/// Structural and CEL validation of one object, as the API server would do it on create.
fn validate(kind: &str, obj: &Value) -> Result<(), String> {
    let Some(schema) = crd_schema(kind) else {
        return Ok(());
    };
    // metadata is validated by the API server itself, not by the CRD schema.
    let mut body = obj.clone();
    body.as_object_mut().unwrap().remove("metadata");
    let validator = jsonschema::draft4::new(&schema).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Validator::new()
        .validate(&schema, &body, None)
        .map_err(|e| format!("{e:?}"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(de)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

/// Parses `obj` into the Rust type of its kind; false for kinds that are not ours.
fn parse_typed(kind: &str, obj: &Value) -> Result<bool, serde_json::Error> {
    use api::assets::{Bucket, Database, KubernetesCluster};
    use api::automation::{LiveSynchronization, Switchover, Synchronization, SynchronizationPlan};
    let v = obj.clone();
    match kind {
        "Database" => serde_json::from_value::<Database>(v).map(|_| true),
        "Bucket" => serde_json::from_value::<Bucket>(v).map(|_| true),
        "KubernetesCluster" => serde_json::from_value::<KubernetesCluster>(v).map(|_| true),
        "Synchronization" => serde_json::from_value::<Synchronization>(v).map(|_| true),
        "SynchronizationPlan" => serde_json::from_value::<SynchronizationPlan>(v).map(|_| true),
        "LiveSynchronization" => serde_json::from_value::<LiveSynchronization>(v).map(|_| true),
        "Switchover" => serde_json::from_value::<Switchover>(v).map(|_| true),
        "Secret" => serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(v).map(|_| false),
        _ => Ok(false),
    }
}

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let regenerate = "regenerate with `cargo run -- crd --output-dir crds` (or `just generate`)";
    let all = std::fs::read_to_string(dir.join("crds.yaml")).unwrap();
    assert_eq!(
        all,
        api::crds_yaml().unwrap(),
        "crds/crds.yaml is stale: {regenerate}"
    );
    for crd in api::all_crds() {
        let name = api::crd_file_name(&crd);
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let want = format!("---\n{}", serde_norway::to_string(&crd).unwrap());
        assert_eq!(text, want, "crds/{name} is stale: {regenerate}");
    }
}

/// kubectl renders a `date` column as an age and shows "<invalid>" for a time in the future,
/// which every next schedule time is: a column that can hold one must be a string.
#[test]
fn no_printer_column_shows_a_future_time_as_a_date() {
    let future = [".status.nextScheduleTime"];
    for crd in api::all_crds() {
        for v in &crd.spec.versions {
            for c in v.additional_printer_columns.iter().flatten() {
                if future.contains(&c.json_path.as_str()) {
                    assert_eq!(
                        c.type_, "string",
                        "{} column {} is a {}",
                        crd.spec.names.kind, c.name, c.type_
                    );
                }
            }
        }
    }
    let plan = api::all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "SynchronizationPlan")
        .unwrap();
    let next = plan.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .find(|c| c.name == "Next")
        .expect("the plan shows its next run");
    assert_eq!(next.json_path, ".status.nextScheduleTime");
}

#[test]
fn every_example_parses_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    let mut ours = 0;
    for f in &files {
        for doc in documents(f) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let typed = parse_typed(&kind, &doc)
                .unwrap_or_else(|e| panic!("{}: {kind} does not parse: {e}", f.display()));
            if typed {
                ours += 1;
                validate(&kind, &doc)
                    .unwrap_or_else(|e| panic!("{}: {kind} is invalid: {e}", f.display()));
            }
        }
    }
    assert!(
        ours >= 6,
        "expected the seed samples and more under examples/, found {ours} objects"
    );
}

fn sync(config: Value) -> Value {
    serde_json::json!({
        "apiVersion": "automation.astronetes.io/v1alpha1",
        "kind": "Synchronization",
        "metadata": {"name": "s"},
        "spec": {"plugin": "zookeeper-to-zookeeper-nodes", "config": config}
    })
}

#[test]
fn bad_synchronizations_are_refused_naming_the_field() {
    let ok = serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "/app"});
    validate("Synchronization", &sync(ok)).unwrap();
    let alias = serde_json::json!({
        "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
        "metadata": {"name": "s"},
        "spec": {"plugin": "zookeeper-nodes-to-zookeeper",
                 "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/"}}
    });
    validate("Synchronization", &alias).unwrap();
    let cases = [
        (
            serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "app"}),
            "absolute",
        ),
        (
            serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "/zookeeper/quota"}),
            "/zookeeper",
        ),
        (
            serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "/app/"}),
            "end with /",
        ),
        (
            serde_json::json!({"sourceName": "a", "destinationName": "a", "rootPath": "/app"}),
            "same Database",
        ),
        (
            serde_json::json!({"sourceName": "a", "destinationName": "a", "rootPath": "/app", "destinationRootPath": "/app/copy"}),
            "overlap",
        ),
        (
            serde_json::json!({"sourceName": "a", "destinationName": "b", "rootPath": "/app", "aclPolicy": "Sometimes"}),
            "aclPolicy",
        ),
        (
            serde_json::json!({"sourceName": "a", "rootPath": "/app"}),
            "destinationName",
        ),
    ];
    for (config, needle) in cases {
        let err =
            validate("Synchronization", &sync(config.clone())).expect_err(&config.to_string());
        assert!(
            err.contains(needle),
            "{config}: {err} does not mention {needle}"
        );
    }
    // Same Database, disjoint trees: a legitimate copy within one ensemble.
    let within = serde_json::json!({"sourceName": "a", "destinationName": "a", "rootPath": "/app", "destinationRootPath": "/app-copy"});
    validate("Synchronization", &sync(within)).unwrap();
    let bad_plugin = serde_json::json!({
        "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
        "metadata": {"name": "s"},
        "spec": {"plugin": "mysql", "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/"}}
    });
    assert!(validate("Synchronization", &bad_plugin)
        .unwrap_err()
        .contains("plugin"));
}

#[test]
fn bad_databases_are_refused() {
    let db = |servers: Value| {
        serde_json::json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Database",
            "metadata": {"name": "d"}, "spec": {"zookeeper": {"client": {"servers": servers}}}})
    };
    validate(
        "Database",
        &db(serde_json::json!([
            "zk-0.zk:2181",
            "10.0.0.1:2181",
            "[::1]:2181"
        ])),
    )
    .unwrap();
    for bad in [
        serde_json::json!([]),
        serde_json::json!(["zk-0.zk"]),
        serde_json::json!(["zk:2181/chroot"]),
    ] {
        let err = validate("Database", &db(bad.clone())).expect_err(&bad.to_string());
        assert!(
            err.contains("servers") || err.contains("HOST:PORT"),
            "{bad}: {err}"
        );
    }
    // admin.host goes into a raw HTTP request: a line break there would add a header.
    let admin = |host: &str| {
        serde_json::json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Database",
            "metadata": {"name": "d"}, "spec": {"zookeeper": {
                "client": {"servers": ["zk:2181"]},
                "admin": {"protocol": "http", "host": host, "port": "8080"}}}})
    };
    validate("Database", &admin("zk-0.zk.kafka.svc")).unwrap();
    validate("Database", &admin("[::1]")).unwrap();
    for bad in ["zk\r\nX-Evil: 1", "zk 0", "zk/x"] {
        let err = validate("Database", &admin(bad)).expect_err(bad);
        assert!(err.contains("host name or IP address"), "{bad:?}: {err}");
    }
}

fn live(extra: Value) -> Value {
    let mut spec = serde_json::json!({"plugin": "zookeeper-to-zookeeper-nodes",
        "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/app"}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::json!({
        "apiVersion": "automation.astronetes.io/v1alpha1",
        "kind": "LiveSynchronization",
        "metadata": {"name": "l"},
        "spec": spec
    })
}

#[test]
fn live_synchronizations_take_kubernetes_durations_and_refuse_others_naming_the_field() {
    validate("LiveSynchronization", &live(serde_json::json!({}))).unwrap();
    validate(
        "LiveSynchronization",
        &live(
            serde_json::json!({"verifyInterval": "1h30m", "maxLag": "250ms",
            "resyncInterval": "0s", "repair": true,
            "heartbeat": {"enabled": true, "path": "/app/hb", "interval": "5s"}}),
        ),
    )
    .unwrap();
    for (extra, needle) in [
        (serde_json::json!({"maxLag": "30"}), "30s"),
        (serde_json::json!({"verifyInterval": "five minutes"}), "5m"),
        (
            serde_json::json!({"heartbeat": {"enabled": true, "path": "hb"}}),
            "absolute",
        ),
        (serde_json::json!({"repair": "yes"}), "repair"),
    ] {
        let err =
            validate("LiveSynchronization", &live(extra.clone())).expect_err(&extra.to_string());
        assert!(
            err.contains(needle),
            "{extra}: {err} does not mention {needle}"
        );
    }
    // The same config rules as a Synchronization.
    let mut same = live(serde_json::json!({}));
    same["spec"]["config"]["destinationName"] = "a".into();
    same["spec"]["config"]["sourceName"] = "a".into();
    assert!(validate("LiveSynchronization", &same)
        .unwrap_err()
        .contains("same Database"));
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &Value) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == *name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// deploy/namespaced: each controller's ClusterRole rules as a Role (and its binding as a
/// RoleBinding) in the watched namespace; the rendered install holds nothing cluster-wide for
/// the operator, and each Deployment watches exactly the namespaces its Roles are in.
#[test]
fn the_namespaced_install_grants_the_cluster_rules_with_roles_only() {
    let base = documents(&repo("deploy/kubernetes/rbac.yaml"));
    let roles = documents(&repo("deploy/namespaced/roles.yaml"));
    let controllers: Vec<&Value> = base
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("-controller")
        })
        .collect();
    assert_eq!(controllers.len(), 3);
    for cluster_role in controllers {
        let name = &cluster_role["metadata"]["name"];
        let role = named(&roles, "Role", name);
        assert_eq!(
            role["rules"], cluster_role["rules"],
            "{name}: rules drifted"
        );
        let binding = named(&roles, "RoleBinding", name);
        let cluster_binding = named(&base, "ClusterRoleBinding", name);
        assert_eq!(binding["subjects"], cluster_binding["subjects"], "{name}");
        assert_eq!(
            binding["roleRef"],
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name})
        );
        assert_eq!(
            binding["metadata"]["namespace"],
            role["metadata"]["namespace"]
        );
    }

    // Rendered by `bash deploy/render.sh` from deploy/namespaced.
    let rendered = documents(&repo("deploy/operator-namespaced.yaml"));
    for d in &rendered {
        let (kind, name) = (d["kind"].as_str().unwrap(), &d["metadata"]["name"]);
        assert!(
            !matches!(kind, "ClusterRoleBinding" | "CustomResourceDefinition"),
            "{kind} {name} in the namespaced install"
        );
        if kind == "ClusterRole" {
            // Only the aggregated roles for people.
            assert!(["resiliency-operator-view", "resiliency-operator-edit"]
                .contains(&name.as_str().unwrap()));
        }
    }
    let deployments: Vec<&Value> = rendered
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 3);
    for d in deployments {
        let pod = &d["spec"]["template"]["spec"];
        let account = &pod["serviceAccountName"];
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let watched = env
            .iter()
            .find(|e| e["name"] == "WATCH_NAMESPACES")
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{account}: no WATCH_NAMESPACES"));
        let mut watched: Vec<&str> = watched.split(',').collect();
        watched.sort();
        // Where this account may reconcile: its RoleBindings, leader election aside.
        let mut granted: Vec<&str> = rendered
            .iter()
            .filter(|b| b["kind"] == "RoleBinding")
            .filter(|b| {
                !b["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-leader-election")
            })
            .filter(|b| b["subjects"][0]["name"] == *account)
            .map(|b| b["metadata"]["namespace"].as_str().unwrap())
            .collect();
        granted.sort();
        assert_eq!(watched, granted, "{account}");
    }
}
