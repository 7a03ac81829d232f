//! Backups and restores against real ZooKeeper servers, to a local directory and to a real
//! S3-protocol server on loopback: snapshot, wipe, restore, verify; corrupt snapshots refused
//! with nothing written.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use resiliency_operator::backup::{
    self, format, Backend, BackupError, BackupOptions, Location, RestoreOptions, Retention,
    Selector, Standing,
};
use support::*;
use verifier::ConnectOptions;
use zookeeper_client::{Acl, Acls, AuthId, CreateMode, Permission};

/// Every kind of node: binary data, a read-only ACL over children, a container, a TTL node,
/// sequential children, an ephemeral (skipped) and a deep chain.
async fn varied_tree(c: &zookeeper_client::Client, root: &str) {
    build_tree(c, root, 300, 10, 24).await;
    mk(c, &format!("{root}/binary"), &[0, 159, 255, 10, 0]).await;
    let ro = [Acl::new(Permission::READ, AuthId::anyone())];
    mk(c, &format!("{root}/locked"), b"l").await;
    mk(c, &format!("{root}/locked/child"), b"c").await;
    c.set_acl(&format!("{root}/locked"), &ro, None)
        .await
        .unwrap();
    let open = [Acl::new(Permission::ALL, AuthId::anyone())];
    mk_with(c, &format!("{root}/box"), b"", CreateMode::Container, &open).await;
    mk(c, &format!("{root}/box/in"), b"x").await;
    c.create(
        &format!("{root}/short-lived"),
        b"t",
        &CreateMode::Persistent
            .with_acls(Acls::anyone_all())
            .with_ttl(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    mk(c, &format!("{root}/queue"), b"").await;
    for _ in 0..5 {
        c.create(
            &format!("{root}/queue/item-"),
            b"q",
            &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    }
    c.create(
        &format!("{root}/session"),
        b"e",
        &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    let mut p = format!("{root}/deep");
    for i in 0..20 {
        mk(c, &p, format!("{i}").as_bytes()).await;
        p.push_str("/d");
    }
}

/// Clients see containers and TTL nodes as persistent: rules name them, as on a sync.
fn type_rules(root: &str) -> Vec<resiliency_operator::engine::TypeRule> {
    use resiliency_operator::engine::TypeRule;
    use verifier::NodeKind;
    vec![
        TypeRule::new(&format!("{root}/box"), NodeKind::Container).unwrap(),
        TypeRule::new(
            &format!("{root}/short-lived"),
            NodeKind::Ttl { ttl_ms: 3_600_000 },
        )
        .unwrap(),
    ]
}

fn local(dir: &std::path::Path) -> Location {
    Location::new(Backend::Local(dir.to_path_buf()), "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_a_directory_restores_to_a_verified_equal_tree() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-local");
    let zs = client(src).await;
    varied_tree(&zs, &root).await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "kafka",
    );
    o.type_rules = type_rules(&root);
    let m = backup::backup(&o).await.unwrap();
    // 301 + binary + locked/child (2) + box/in (2) + short-lived + queue + 5 + deep 20; no ephemeral.
    assert_eq!(m.nodes, 301 + 1 + 2 + 2 + 1 + 1 + 5 + 20, "{m:?}");
    assert_eq!(m.kinds.container, 1);
    assert_eq!(m.kinds.ttl, 1);
    assert_eq!(m.kinds.ephemeral_as_persistent, 0);
    assert!(m.object_bytes > 0 && m.object_bytes < m.data_bytes + 64 * m.nodes);
    assert!(m.name.starts_with("kafka-"));
    assert_eq!(m.source_servers, src.connect_string());
    // The manifest's root hash is the verifier's hash of the source tree.
    let report = verify(&sync_opts(src, &root, src, &root)).await;
    assert_eq!(m.root_hash, report.source_root_hash);
    assert_eq!(backup::list(&o.location).await.unwrap(), vec![m.clone()]);

    let target = format!("{root}-restored");
    let r = RestoreOptions::new(
        local(dir.path()),
        Selector::Latest,
        ConnectOptions::new(dst.connect_string()),
        &target,
    );
    let s = backup::restore(&r).await.unwrap();
    assert_eq!(s.nodes, m.nodes);
    assert_eq!(s.root_hash, m.root_hash);
    assert!(s.cversion_raised >= 1, "{s:?}");
    // Equal to the source by the verifier too, kinds and ACLs included.
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
    // Kinds clients cannot see were restored as such (the server's own transaction log).
    let log = txn_log(dst);
    assert!(logged(&log, "createContainer", &format!("{target}/box")));
    assert!(logged(&log, "createTtl", &format!("{target}/short-lived")));
    // Sequential numbering continues where the source's did.
    let zd = client(dst).await;
    let (_, s_stat) = zs.get_data(&format!("{root}/queue")).await.unwrap();
    let (_, d_stat) = zd.get_data(&format!("{target}/queue")).await.unwrap();
    assert!(d_stat.cversion >= s_stat.cversion, "{d_stat:?} {s_stat:?}");

    // Restoring over a tree with data is refused; nothing is touched.
    let e = backup::restore(&r).await.unwrap_err();
    assert!(matches!(e, BackupError::DestinationNotEmpty { .. }), "{e}");
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_refused_with_nothing_written() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-corrupt");
    let zs = client(src).await;
    build_tree(&zs, &root, 200, 10, 16).await;
    let dir = tempfile::tempdir().unwrap();
    let o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "corrupt",
    );
    let m = backup::backup(&o).await.unwrap();
    let data = dir.path().join(&m.name).join(format::NODES);
    let manifest = dir.path().join(&m.name).join(format::MANIFEST);
    let good_data = std::fs::read(&data).unwrap();
    let good_manifest = std::fs::read_to_string(&manifest).unwrap();
    let target = format!("{root}-never");
    let restore = || async {
        backup::restore(&RestoreOptions::new(
            local(dir.path()),
            Selector::Name(m.name.clone()),
            ConnectOptions::new(dst.connect_string()),
            &target,
        ))
        .await
    };
    let zd = client(dst).await;

    // One flipped bit in the object.
    let mut bad = good_data.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x10;
    std::fs::write(&data, &bad).unwrap();
    let e = restore().await.unwrap_err();
    assert!(
        matches!(&e, BackupError::Corrupt { what, .. } if what.contains("blake3")),
        "{e}"
    );
    assert!(zd.check_stat(&target).await.unwrap().is_none());

    // Truncated, with a manifest that matches the truncated bytes: the stream itself fails.
    let cut = &good_data[..good_data.len() * 2 / 3];
    std::fs::write(&data, cut).unwrap();
    let forged = good_manifest
        .replace(
            &format!("\"objectBytes\": {}", m.object_bytes),
            &format!("\"objectBytes\": {}", cut.len()),
        )
        .replace(&m.object_blake3, blake3::hash(cut).to_hex().as_ref());
    std::fs::write(&manifest, forged).unwrap();
    let e = restore().await.unwrap_err();
    assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
    assert!(zd.check_stat(&target).await.unwrap().is_none());

    // Intact object, but a manifest whose root hash is not the records': refused.
    std::fs::write(&data, &good_data).unwrap();
    std::fs::write(
        &manifest,
        good_manifest.replace(&m.root_hash, &"0".repeat(64)),
    )
    .unwrap();
    let e = restore().await.unwrap_err();
    assert!(
        matches!(&e, BackupError::Corrupt { what, .. } if what.contains("hash to")),
        "{e}"
    );
    assert!(zd.check_stat(&target).await.unwrap().is_none());

    // Put back, it restores.
    std::fs::write(&manifest, &good_manifest).unwrap();
    restore().await.unwrap();
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_chosen_by_name_latest_or_time_and_pruned_by_retention() {
    let (src, _) = shared_pair();
    let root = unique_root("backup-select");
    let zs = client(src).await;
    build_tree(&zs, &root, 20, 5, 8).await;
    let dir = tempfile::tempdir().unwrap();
    let o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "sel",
    );
    let sealed = |m| backup::seal(&o.location, m, true, Retention::default());
    let first = sealed(backup::backup(&o).await.unwrap()).await.unwrap();
    // Names have a one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between = k8s_openapi::jiff::Timestamp::now();
    mk(&zs, &format!("{root}/later"), b"l").await;
    let second = sealed(backup::backup(&o).await.unwrap()).await.unwrap();
    assert!(first.verified && second.verified && second.pruned.is_empty());
    let (first, second) = (first.manifest, second.manifest);
    assert_ne!(first.root_hash, second.root_hash);
    let all = backup::list(&o.location).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        backup::select(&all, &Selector::Latest).unwrap().name,
        second.name
    );
    assert_eq!(
        backup::select(&all, &Selector::Before(between))
            .unwrap()
            .name,
        first.name
    );
    assert_eq!(
        backup::select(&all, &Selector::Name(first.name.clone()))
            .unwrap()
            .name,
        first.name
    );
    assert!(backup::select(&all, &Selector::Name("nope".into())).is_none());
    // Keep the newest one; an age limit never deletes the last snapshot.
    let now = k8s_openapi::jiff::Timestamp::now();
    let keep_one = Retention {
        keep_last: Some(1),
        max_age: None,
    };
    assert_eq!(
        backup::to_prune(&all, keep_one, now),
        vec![first.name.clone()]
    );
    let no_age = Retention {
        keep_last: None,
        max_age: Some(Duration::ZERO),
    };
    assert_eq!(
        backup::to_prune(&all, no_age, now),
        vec![first.name.clone()]
    );
    backup::delete(&o.location, &backup::to_prune(&all, keep_one, now))
        .await
        .unwrap();
    let left = backup::list(&o.location).await.unwrap();
    assert_eq!(left, vec![second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_snapshot_restores_to_an_equal_tree() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-s3");
    let zs = client(src).await;
    varied_tree(&zs, &root).await;
    let s3 = S3Server::start("zk-backups").await;
    let location = Location::new(s3.backend(), "prod/zk");
    let mut o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        location.clone(),
        "s3",
    );
    o.type_rules = type_rules(&root);
    let m = backup::backup(&o).await.unwrap();
    // Stored where the S3 server keeps the bucket's objects.
    assert!(s3
        .dir
        .path()
        .join("zk-backups/prod/zk")
        .join(&m.name)
        .join(format::MANIFEST)
        .exists());
    let target = format!("{root}-from-s3");
    let s = backup::restore(&RestoreOptions::new(
        location,
        Selector::Latest,
        ConnectOptions::new(dst.connect_string()),
        &target,
    ))
    .await
    .unwrap();
    assert_eq!(s.root_hash, m.root_hash);
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
}

/// The CLI with `args` and extra environment: its exit code, stdout and stderr.
async fn run_cli(args: &[String], env: &[(&str, String)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_backs_up_lists_and_restores() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-cli");
    let zs = client(src).await;
    build_tree(&zs, &root, 50, 10, 8).await;
    let s3 = S3Server::start("cli-bucket").await;
    let run = |args: Vec<String>| {
        let env = [
            ("AWS_ACCESS_KEY_ID", s3.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key.clone()),
        ];
        async move { run_cli(&args, &env).await }
    };
    let to = "s3://cli-bucket/nightly".to_string();
    let (code, out, err) = run(vec![
        "backup".into(),
        "--source".into(),
        src.connect_string(),
        "--root-path".into(),
        root.clone(),
        "--to".into(),
        to.clone(),
        "--s3-endpoint".into(),
        s3.endpoint.clone(),
        "--keep-last".into(),
        "3".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("backed up 51 nodes"), "{out}");
    let (code, out, err) = run(vec![
        "snapshots".into(),
        "--from".into(),
        to.clone(),
        "--s3-endpoint".into(),
        s3.endpoint.clone(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{out}");
    let target = format!("{root}-cli");
    let (code, out, err) = run(vec![
        "restore".into(),
        "--from".into(),
        to.clone(),
        "--s3-endpoint".into(),
        s3.endpoint.clone(),
        "--destination".into(),
        dst.connect_string(),
        "--root-path".into(),
        target.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("verified: root hash"), "{out}");
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
    // Bad input names the flag; credentials never show.
    let (code, _, err) = run(vec![
        "restore".into(),
        "--from".into(),
        "backups".into(),
        "--destination".into(),
        dst.connect_string(),
        "--root-path".into(),
        "/x".into(),
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("--from"), "{err}");
    let (code, _, err) = run(vec![
        "restore".into(),
        "--from".into(),
        to,
        "--s3-endpoint".into(),
        s3.endpoint.clone(),
        "--snapshot".into(),
        "missing".into(),
        "--destination".into(),
        dst.connect_string(),
        "--root-path".into(),
        "/x".into(),
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("no snapshot named missing"), "{err}");
    assert!(!err.contains(&s3.secret_key));
}

/// GCS through the operator's own path: a Bucket and its Secret resolved to a location, then
/// backup, list, restore to an equal tree and retention, against a real fake-gcs-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_bucket_backs_up_and_restores_with_its_secret() {
    use resiliency_operator::api::assets::Bucket;
    let (src, dst) = shared_pair();
    let root = unique_root("backup-gcs");
    let zs = client(src).await;
    varied_tree(&zs, &root).await;
    let gcs = GcsServer::start("zk-dr-backups").await;
    let bucket: Bucket = serde_json::from_value(serde_json::json!({
        "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "gcs", "namespace": "dr"},
        "spec": {"gcpCloudStorage": {
            "name": gcs.bucket, "secretName": "gcs-key", "endpoint": gcs.endpoint,
        }}
    }))
    .unwrap();
    let mut secret = resiliency_operator::resolve::SecretData::new();
    secret.insert(
        "credentials.json".into(),
        gcs.credentials_json.clone().into_bytes(),
    );
    let location =
        resiliency_operator::resolve::bucket_location(&bucket, Some(&secret), "dr/zk").unwrap();
    assert_eq!(location.describe(), "gs://zk-dr-backups/dr/zk");
    backup::probe(&location).await.unwrap();
    let mut o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        location.clone(),
        "gcs",
    );
    o.type_rules = type_rules(&root);
    let first = backup::backup(&o).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = backup::backup(&o).await.unwrap();
    assert_eq!(first.root_hash, second.root_hash);
    let listed = backup::list(&location).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        vec![first.name.clone(), second.name.clone()]
    );
    let target = format!("{root}-from-gcs");
    let s = backup::restore(&RestoreOptions::new(
        location.clone(),
        Selector::Name(first.name.clone()),
        ConnectOptions::new(dst.connect_string()),
        &target,
    ))
    .await
    .unwrap();
    assert_eq!(s.root_hash, first.root_hash);
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
    backup::delete(&location, std::slice::from_ref(&first.name))
        .await
        .unwrap();
    let left = backup::list(&location).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, second.name);
    // Every request carried a signed bearer token from the service account key.
    let seen = gcs.requests.lock().unwrap().clone();
    assert!(seen.iter().any(|r| r.starts_with("PUT ")), "{seen:?}");
    assert!(seen.iter().any(|r| r.starts_with("DELETE ")), "{seen:?}");
    assert!(
        seen.iter().all(|r| !r.ends_with("(no bearer token)")),
        "{seen:?}"
    );
    // A key that is not one is refused with the location named, and nothing is written.
    secret.insert("credentials.json".into(), b"{\"not\": \"a key\"}".to_vec());
    let bad =
        resiliency_operator::resolve::bucket_location(&bucket, Some(&secret), "dr/zk").unwrap();
    let e = backup::backup(&BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        bad,
        "gcs",
    ))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("gs://zk-dr-backups"), "{e}");
    assert_eq!(backup::list(&location).await.unwrap().len(), 1);
}

/// An upload refused at its end is an error naming the location, not a panic (object_store's
/// writer panics if aborted after its shutdown began), and leaves nothing listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_an_error_not_a_panic() {
    let (src, _) = shared_pair();
    let root = unique_root("backup-refused");
    let zs = client(src).await;
    build_tree(&zs, &root, 20, 5, 8).await;
    let gcs = GcsServer::start("refusing").await;
    gcs.refuse_writes
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let location = Location::new(gcs.backend(), "zk");
    let o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        location.clone(),
        "refused",
    );
    let e = backup::backup(&o).await.unwrap_err();
    assert!(e.to_string().contains("gs://refusing"), "{e}");
    assert!(e.to_string().contains("finishing the upload"), "{e}");
    assert!(backup::list(&location).await.unwrap().is_empty());
}

/// Deletes `path` and everything under it, deepest first (the disaster).
async fn wipe(c: &zookeeper_client::Client, path: &str) {
    let mut order = vec![path.to_string()];
    let mut i = 0;
    while i < order.len() {
        let p = order[i].clone();
        for child in c.list_children(&p).await.unwrap() {
            order.push(format!("{p}/{child}"));
        }
        i += 1;
    }
    for p in order.iter().rev() {
        c.delete(p, None).await.unwrap();
    }
}

/// The disaster itself: snapshot a tree, wipe it from the source, restore it in place, and
/// the verifier finds the same tree as before the wipe (data, ACLs, kinds: the same root hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_tree_is_restored_in_place() {
    let (src, _) = shared_pair();
    let root = unique_root("backup-wipe");
    let zs = client(src).await;
    build_tree(&zs, &root, 200, 10, 24).await;
    let open = [Acl::new(Permission::ALL, AuthId::anyone())];
    mk_with(
        &zs,
        &format!("{root}/box"),
        b"",
        CreateMode::Container,
        &open,
    )
    .await;
    mk(&zs, &format!("{root}/box/in"), b"x").await;
    zs.create(
        &format!("{root}/short-lived"),
        b"t",
        &CreateMode::Persistent
            .with_acls(Acls::anyone_all())
            .with_ttl(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        zs.create(
            &format!("{root}/n0000/item-"),
            b"q",
            &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    }
    // Read and administer only: the restore has to stage it, and the wipe can reopen it.
    let guarded = [Acl::new(
        Permission::READ | Permission::ADMIN,
        AuthId::anyone(),
    )];
    mk(&zs, &format!("{root}/guarded"), b"g").await;
    mk(&zs, &format!("{root}/guarded/child"), b"c").await;
    zs.set_acl(&format!("{root}/guarded"), &guarded, None)
        .await
        .unwrap();
    let before = verify(&sync_opts(src, &root, src, &root)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "wipe",
    );
    o.type_rules = type_rules(&root);
    let m = backup::backup(&o).await.unwrap();
    assert_eq!(m.root_hash, before.source_root_hash);
    // The guarded node is reopened to be wiped; the restore brings its ACL back.
    zs.set_acl(&format!("{root}/guarded"), &open, None)
        .await
        .unwrap();
    wipe(&zs, &root).await;
    assert!(zs.check_stat(&root).await.unwrap().is_none());
    let s = backup::restore(&RestoreOptions::new(
        o.location.clone(),
        Selector::Latest,
        ConnectOptions::new(src.connect_string()),
        &root,
    ))
    .await
    .unwrap();
    assert_eq!(s.root_hash, m.root_hash);
    let after = verify(&sync_opts(src, &root, src, &root)).await;
    assert_eq!(after.source_root_hash, before.source_root_hash);
    assert_eq!(after.source_nodes, before.source_nodes);
    let (acl, _) = zs.get_acl(&format!("{root}/guarded")).await.unwrap();
    assert_eq!(acl, guarded.to_vec());
}

/// The child nodes of `root` deleted, the root kept: a source emptied by mistake.
async fn empty(c: &zookeeper_client::Client, root: &str) {
    for child in c.list_children(root).await.unwrap() {
        wipe(c, &format!("{root}/{child}")).await;
    }
}

/// Runs a backup as the operator does (the run registry) and waits for its outcome.
async fn run_backup_job(
    o: &BackupOptions,
    retention: Retention,
) -> resiliency_operator::runs::RunOutcome {
    use resiliency_operator::runs::{Job, RunState, Runs};
    let runs = Runs::new();
    runs.start(
        "backup",
        Job::Backup {
            opts: Box::new(o.clone()),
            retention,
            verify: true,
        },
    );
    wait_for("the backup run", Duration::from_secs(60), || async {
        matches!(runs.state("backup"), Some(RunState::Finished { .. }))
    })
    .await;
    match runs.state("backup") {
        Some(RunState::Finished { result, .. }) => result.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A good snapshot is never evicted by a bad one: with keepLast 2, two verified backups of a
/// populated tree, then the source's children deleted and more backups taken. The good
/// snapshots stay, restore, and hold the pre-wipe tree; the new ones are flagged suspect, in
/// the run's outcome, the manifest and the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_source_never_evicts_the_good_snapshots() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-emptied");
    let zs = client(src).await;
    build_tree(&zs, &root, 300, 10, 16).await;
    let before = verify(&sync_opts(src, &root, src, &root)).await;
    assert_eq!(before.source_nodes, 301);
    let dir = tempfile::tempdir().unwrap();
    let o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "emptied",
    );
    let keep_two = Retention {
        keep_last: Some(2),
        max_age: None,
    };
    let mut good = Vec::new();
    for _ in 0..2 {
        let out = run_backup_job(&o, keep_two).await;
        let snap = out.snapshot.unwrap();
        assert!(snap.verified && !snap.status.suspect, "{snap:?}");
        assert!(snap.status.pruned.is_empty());
        good.push(snap.status.name);
        // Names have a one-second resolution.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    empty(&zs, &root).await;
    assert_eq!(
        verify(&sync_opts(src, &root, src, &root))
            .await
            .source_nodes,
        1
    );
    let out = run_backup_job(&o, keep_two).await;
    let snap = out.snapshot.unwrap();
    let reason = format!(
        "node count dropped from 301 to 1 (\u{2212}99.7%) against snapshot {}",
        good[1]
    );
    assert!(snap.verified, "{snap:?}");
    assert!(snap.status.suspect, "{snap:?}");
    assert_eq!(snap.status.suspect_reason.as_deref(), Some(reason.as_str()));
    assert_eq!(snap.status.nodes, 1);
    assert!(snap.status.pruned.is_empty(), "{snap:?}");
    let suspect = snap.status.name;

    // Stored: both good snapshots, and the new one marked in its manifest.
    let all = backup::list(&o.location).await.unwrap();
    let names: Vec<_> = all.iter().map(|m| m.name.clone()).collect();
    assert_eq!(
        names,
        vec![good[0].clone(), good[1].clone(), suspect.clone()]
    );
    let standing: Vec<_> = all.iter().map(|m| m.standing()).collect();
    assert_eq!(
        standing,
        vec![Standing::Good, Standing::Good, Standing::Suspect]
    );
    let flag = all[2].suspect.as_ref().unwrap();
    assert_eq!(
        (flag.against.as_str(), flag.against_nodes),
        (good[1].as_str(), 301)
    );
    assert_eq!(flag.reason, reason);
    assert!(matches!(all[2].verified_at, format::ReadBack::Verified(_)));
    // Latest is still the newest snapshot: what is in the bucket now, flagged or not.
    assert_eq!(
        backup::select(&all, &Selector::Latest).unwrap().name,
        suspect
    );

    // The good ones hold the pre-wipe tree, and restore to it.
    for (i, name) in good.iter().enumerate() {
        assert_eq!(all[i].nodes, before.source_nodes);
        assert_eq!(all[i].root_hash, before.source_root_hash);
        let target = format!("{root}-good-{i}");
        let s = backup::restore(&RestoreOptions::new(
            o.location.clone(),
            Selector::Name(name.clone()),
            ConnectOptions::new(dst.connect_string()),
            &target,
        ))
        .await
        .unwrap();
        assert_eq!(
            (s.nodes, s.root_hash.as_str()),
            (301, before.source_root_hash.as_str())
        );
        let restored = verify(&sync_opts(dst, &target, dst, &target)).await;
        assert_eq!(restored.source_nodes, before.source_nodes);
        assert_eq!(restored.source_root_hash, before.source_root_hash);
    }

    // Still empty, through the CLI: compared with the last good snapshot again (never with
    // the suspect one), flagged again, and still nothing deleted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "backup",
            "--source",
            &src.connect_string(),
            "--root-path",
            &root,
        ])
        .args([
            "--to",
            &dir.path().display().to_string(),
            "--name",
            "emptied",
        ])
        .args(["--keep-last", "2", "--json"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["verified"], true, "{j}");
    assert_eq!(j["suspect"], true, "{j}");
    assert_eq!(j["suspectReason"], reason.as_str(), "{j}");
    assert_eq!(j["manifest"]["suspect"]["against"], good[1].as_str(), "{j}");
    assert_eq!(j["pruned"], serde_json::json!([]), "{j}");
    assert!(stderr.contains("is suspect"), "{stderr}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(["snapshots", "--from", &dir.path().display().to_string()])
        .output()
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<_> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    assert!(
        lines[0].ends_with("  verified") && lines[1].ends_with("  verified"),
        "{listing}"
    );
    assert!(
        lines[2].contains("SUSPECT: node count dropped from 301 to 1"),
        "{listing}"
    );
    assert!(
        lines[3].contains("SUSPECT: node count dropped from 301 to 1"),
        "{listing}"
    );
    assert_eq!(backup::list(&o.location).await.unwrap().len(), 4);
}

/// A snapshot that fails its read-back check deletes nothing, even where retention would:
/// the object is corrupted between the upload and the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_fails_its_read_back_deletes_nothing() {
    let (src, _) = shared_pair();
    let root = unique_root("backup-unverified");
    let zs = client(src).await;
    build_tree(&zs, &root, 50, 10, 8).await;
    let dir = tempfile::tempdir().unwrap();
    let o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "unverified",
    );
    let keep_one = Retention {
        keep_last: Some(1),
        max_age: Some(Duration::ZERO),
    };
    let good = backup::seal(
        &o.location,
        backup::backup(&o).await.unwrap(),
        true,
        keep_one,
    )
    .await
    .unwrap();
    assert!(good.verified);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let m = backup::backup(&o).await.unwrap();
    let data = dir.path().join(&m.name).join(format::NODES);
    let mut bytes = std::fs::read(&data).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    let e = backup::seal(&o.location, m.clone(), true, keep_one)
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::NotVerified { .. }), "{e}");
    let msg = backup::describe(&e);
    assert!(msg.contains("no snapshot was deleted"), "{msg}");
    assert!(msg.contains("blake3"), "{msg}");
    // Both are still there; the corrupt one stays unverified, so it counts for nothing.
    let all = backup::list(&o.location).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], good.manifest);
    assert_eq!(all[0].standing(), Standing::Good);
    assert_eq!(
        (all[1].name.as_str(), all[1].standing()),
        (m.name.as_str(), Standing::Unverified)
    );
    assert!(backup::to_prune(
        &all,
        Retention {
            keep_last: Some(1),
            max_age: None
        },
        k8s_openapi::jiff::Timestamp::now()
    )
    .is_empty());

    // The next good backup retires both: the older good one and the unverified one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = backup::seal(
        &o.location,
        backup::backup(&o).await.unwrap(),
        true,
        keep_one,
    )
    .await
    .unwrap();
    assert_eq!(
        next.pruned,
        vec![good.manifest.name.clone(), m.name.clone()]
    );
    assert_eq!(
        backup::list(&o.location).await.unwrap(),
        vec![next.manifest]
    );
}

/// The shipped pods have a read-only root filesystem and TMPDIR on an emptyDir: a verified
/// backup and a restore write nothing but TMPDIR, and an unwritable TMPDIR is a clear error
/// that names it and writes nothing to the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_restores_write_only_tmpdir_and_say_so_when_it_is_unwritable() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-tmpdir");
    let zs = client(src).await;
    build_tree(&zs, &root, 30, 10, 8).await;
    let bucket = tempfile::tempdir().unwrap();
    let to = format!("file://{}", bucket.path().display());
    // The only writable directory the binary is given.
    let tmp = tempfile::tempdir().unwrap();
    // A path under a regular file can never hold a file, even for root.
    let blocker = tmp.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let unwritable = blocker.join("tmp");
    let run = |tmpdir: std::path::PathBuf, args: Vec<String>| async move {
        run_cli(&args, &[("TMPDIR", tmpdir.display().to_string())]).await
    };
    let backup = |tmpdir, name: &str| {
        run(
            tmpdir,
            vec![
                "backup".into(),
                "--name".into(),
                name.to_string(),
                "--source".into(),
                src.connect_string(),
                "--root-path".into(),
                root.clone(),
                "--to".into(),
                to.clone(),
            ],
        )
    };
    let restore = |tmpdir, target: &str| {
        run(
            tmpdir,
            vec![
                "restore".into(),
                "--from".into(),
                to.clone(),
                "--destination".into(),
                dst.connect_string(),
                "--root-path".into(),
                target.to_string(),
            ],
        )
    };

    let (code, out, err) = backup(tmp.path().to_path_buf(), "first").await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("backed up 31 nodes"), "{out}");
    let good = backup::list(&local(bucket.path())).await.unwrap();
    assert_eq!(good.len(), 1);
    let target = format!("{root}-restored");
    let (code, out, err) = restore(tmp.path().to_path_buf(), &target).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("verified: root hash"), "{out}");
    assert_equal(&sync_opts(src, &root, dst, &target)).await;
    // Nothing was left behind in TMPDIR (the staging file is unlinked at once).
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "only the blocker"
    );

    // Restore with nowhere to stage the snapshot: refused, naming TMPDIR, nothing written.
    let elsewhere = format!("{root}-not-restored");
    let (code, out, err) = restore(unwritable.clone(), &elsewhere).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("TMPDIR") && err.contains(&unwritable.display().to_string()),
        "{err}"
    );
    assert!(
        fingerprint(dst, &elsewhere).await.is_empty(),
        "wrote to the destination"
    );
    // A backup whose read-back cannot stage fails the same way and leaves the good snapshot.
    let (code, out, err) = backup(unwritable.clone(), "second").await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("TMPDIR"), "{err}");
    let after = backup::list(&local(bucket.path())).await.unwrap();
    assert!(
        after.contains(&good[0]),
        "the verified snapshot is gone: {after:?}"
    );
}

/// A tree for the resume tests: `n` nodes of 1 KiB, plus a node whose ACL (read and
/// administer only) a restore must stage to create its child, and sequential children.
async fn resumable_tree(c: &zookeeper_client::Client, root: &str, n: usize) {
    build_tree(c, root, n, 20, 1024).await;
    mk(c, &format!("{root}/guarded"), b"g").await;
    mk(c, &format!("{root}/guarded/child"), b"c").await;
    let guarded = [Acl::new(
        Permission::READ | Permission::ADMIN,
        AuthId::anyone(),
    )];
    c.set_acl(&format!("{root}/guarded"), &guarded, None)
        .await
        .unwrap();
    for _ in 0..3 {
        c.create(
            &format!("{root}/n0001/item-"),
            b"q",
            &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    }
}

/// Polls (every 2 ms) until `root` exists on `server` with children.
async fn until_written(c: &zookeeper_client::Client, root: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while c
        .check_stat(root)
        .await
        .unwrap()
        .is_none_or(|s| s.num_children == 0)
    {
        assert!(tokio::time::Instant::now() < deadline, "nothing written");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A restore killed part way, as a crash or an operator restart kills it (SIGKILL: its claim
/// stays until its session expires), is resumed by the next restore of the same snapshot:
/// it waits for the dead one's claim, creates what is missing, puts right what the dead one
/// staged, and verifies. Meanwhile a restore of another snapshot into that tree is refused,
/// saying how to proceed, and writes nothing; once verified the tree is no longer marked, so
/// a restore over it is refused as any non-empty tree is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_part_way_is_resumed_by_the_next_one() {
    let (src, dst) = shared_pair();
    let root = unique_root("backup-resume");
    let zs = client(src).await;
    resumable_tree(&zs, &root, 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let o = BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "resume",
    );
    let m = backup::backup(&o).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    mk(&zs, &format!("{root}-other"), b"o").await;
    let other = backup::backup(&BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &format!("{root}-other"),
        local(dir.path()),
        "resume",
    ))
    .await
    .unwrap();
    let from = dir.path().display().to_string();
    let target = format!("{root}-restored");
    let cli_restore = |snapshot: &str| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"));
        c.args(["restore", "--from", &from, "--snapshot", snapshot])
            .args([
                "--destination",
                &dst.connect_string(),
                "--root-path",
                &target,
            ])
            // Short: the killed one's claim expires soon. Small batches: it is still
            // writing when it is killed.
            .args(["--session-timeout", "4", "--jute-maxbuffer", "65536"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    };

    let zd = client(dst).await;
    let mut first = cli_restore(&m.name).spawn().unwrap();
    until_written(&zd, &target).await;
    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "finished before it was killed");
    let partial = fingerprint(dst, &target).await;
    println!("killed with {} of {} nodes written", partial.len(), m.nodes);
    assert!(
        !partial.is_empty() && (partial.len() as u64) < m.nodes,
        "killed with {} of {} nodes written",
        partial.len(),
        m.nodes
    );
    let marked = zd
        .get_data(&backup::marker::path_for(&target))
        .await
        .unwrap()
        .0;
    let mark: backup::marker::Mark = serde_json::from_slice(&marked).unwrap();
    assert_eq!(
        (mark.snapshot.as_str(), mark.root.as_str()),
        (m.name.as_str(), target.as_str())
    );

    // Another snapshot: refused before it claims or writes anything, naming the way out.
    let e = backup::restore(&RestoreOptions::new(
        local(dir.path()),
        Selector::Name(other.name.clone()),
        ConnectOptions::new(dst.connect_string()),
        &target,
    ))
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, BackupError::OtherRestore { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "holds an interrupted restore of snapshot {}",
            m.name
        )) && msg.contains(&format!("restore {} again to finish it", m.name))
            && msg.contains(&format!("delete {target} to restore {}", other.name)),
        "{msg}"
    );
    assert_eq!(fingerprint(dst, &target).await, partial, "it wrote");

    // The same snapshot again: resumed, and the tree is the source's.
    let out = cli_restore(&m.name).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "resumed an interrupted restore of {} into {target}",
            m.name
        )),
        "{stdout}"
    );
    assert!(stdout.contains("verified: root hash"), "{stdout}");
    let report = assert_equal(&sync_opts(src, &root, dst, &target)).await;
    assert_eq!(report.destination_nodes, m.nodes);
    assert_eq!(report.destination_root_hash, m.root_hash);
    assert_eq!(
        fingerprint(dst, &target).await.len(),
        fingerprint(src, &root).await.len()
    );
    let (acl, _) = zd.get_acl(&format!("{target}/guarded")).await.unwrap();
    assert_eq!(
        acl,
        vec![Acl::new(
            Permission::READ | Permission::ADMIN,
            AuthId::anyone()
        )]
    );
    let (_, s_stat) = zs.get_data(&format!("{root}/n0001")).await.unwrap();
    let (_, d_stat) = zd.get_data(&format!("{target}/n0001")).await.unwrap();
    assert!(d_stat.cversion >= s_stat.cversion, "{d_stat:?} {s_stat:?}");

    // Verified: unmarked, so the tree is any non-empty tree now.
    assert!(zd
        .check_stat(&backup::marker::path_for(&target))
        .await
        .unwrap()
        .is_none());
    let e = backup::restore(&RestoreOptions::new(
        local(dir.path()),
        Selector::Name(m.name.clone()),
        ConnectOptions::new(dst.connect_string()),
        &target,
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, BackupError::DestinationNotEmpty { .. }), "{e}");
}

/// The operator's path: a restore run of the run registry (what a Synchronization with the
/// bucket-to-zookeeper plugin starts) stopped part way, as an operator restart stops it, and
/// started again as the restarted operator does: it resumes and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_run_stopped_by_an_operator_restart_resumes_when_started_again() {
    use resiliency_operator::runs::{Job, RunState, Runs};
    let (src, dst) = shared_pair();
    let root = unique_root("backup-resume-run");
    let zs = client(src).await;
    resumable_tree(&zs, &root, 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let m = backup::backup(&BackupOptions::new(
        ConnectOptions::new(src.connect_string()),
        &root,
        local(dir.path()),
        "run",
    ))
    .await
    .unwrap();
    let target = format!("{root}-restored");
    let mut o = RestoreOptions::new(
        local(dir.path()),
        Selector::Latest,
        ConnectOptions::new(dst.connect_string()),
        &target,
    );
    // One small transaction at a time: still writing when it is stopped.
    o.writer.max_batch_bytes = 16 << 10;
    o.writer.max_in_flight = 1;
    let job = Job::Restore(Box::new(o));
    let runs = Runs::new();
    runs.start("restore", job.clone());
    let zd = client(dst).await;
    until_written(&zd, &target).await;
    runs.stop("restore");
    let partial = fingerprint(dst, &target).await.len() as u64;
    println!("stopped with {partial} of {} nodes written", m.nodes);
    assert!(partial > 0 && partial < m.nodes, "{partial} of {}", m.nodes);

    // The restarted operator's registry is empty: the Synchronization starts the job again.
    let runs = Runs::new();
    runs.start("restore", job);
    wait_for("the restore run", Duration::from_secs(120), || async {
        matches!(runs.state("restore"), Some(RunState::Finished { .. }))
    })
    .await;
    let Some(RunState::Finished { result, .. }) = runs.state("restore") else {
        panic!()
    };
    let outcome = result.unwrap();
    let snap = outcome.snapshot.unwrap();
    assert!(snap.restore && snap.verified, "{snap:?}");
    assert!(snap.resumed.is_some_and(|n| n > 0), "{snap:?}");
    assert_eq!(snap.status.root_hash, m.root_hash);
    let report = assert_equal(&sync_opts(src, &root, dst, &target)).await;
    assert_eq!(report.destination_nodes, m.nodes);
}
