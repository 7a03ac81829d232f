//! Standalone mode end to end: the seed's manifests, pointed at two real local servers, run
//! through `resiliency-operator run -f` without Kubernetes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::*;

fn manifests(src: &str, dst: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: zookeeper-source
stringData:
  user: admin
  password: s3cr3t-value
---
apiVersion: assets.astronetes.io/v1alpha1
kind: Database
metadata:
  name: zookeeper-source
spec:
  zookeeper:
    client:
      servers:
        - {src}
---
apiVersion: v1
kind: Secret
metadata:
  name: zookeeper-destination
stringData:
  user: admin
  password: s3cr3t-value
---
apiVersion: assets.astronetes.io/v1alpha1
kind: Database
metadata:
  name: zookeeper-destination
spec:
  zookeeper:
    client:
      servers:
        - {dst}
{extra}"#
    )
}

fn run(dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(["run", "-f"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_samples_copy_and_verify_without_kubernetes() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone");
    let c = client(s).await;
    build_tree(&c, &root, 300, 10, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let syncs = format!(
        r#"---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  generateName: synchronize-zookeeper-
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: {root}
---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  name: remapped
spec:
  plugin: zookeeper-nodes-to-zookeeper
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: {root}
    destinationRootPath: {root}-dr
"#
    );
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(&s.connect_string(), &d.connect_string(), &syncs),
    )
    .unwrap();
    let (code, out, err) = run(dir.path());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("database/default/zookeeper-source: Ready=True Connected"),
        "{out}"
    );
    assert!(out.contains("synchronization/default/synchronize-zookeeper-00001: phase Succeeded | verified: EQUAL"), "{out}");
    assert!(
        out.contains("synchronization/default/remapped: phase Succeeded | verified: EQUAL"),
        "{out}"
    );
    let mut o = sync_opts(s, &root, d, &root);
    assert_equal(&o).await;
    o.destination_root = format!("{root}-dr");
    assert_equal(&o).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_or_secret_is_named_and_nothing_is_written() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-bad");
    let c = client(s).await;
    build_tree(&c, &root, 20, 5, 10).await;
    // Only this test's tree: the other test of this binary writes to the same server.
    let before = fingerprint(d, &root).await;
    assert!(before.is_empty());
    let cases = [
        ("zookeeper-nowhere", "Database zookeeper-nowhere not found"),
        ("zookeeper-nosecret", "Secret zookeeper-nosecret not found"),
    ];
    for (dst_name, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            r#"---
apiVersion: assets.astronetes.io/v1alpha1
kind: Database
metadata:
  name: zookeeper-nosecret
spec:
  zookeeper:
    client:
      servers: ["{dst}"]
---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  name: bad
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: {dst_name}
    rootPath: {root}
"#,
            dst = d.connect_string()
        );
        std::fs::write(
            dir.path().join("all.yaml"),
            manifests(&s.connect_string(), &d.connect_string(), &extra),
        )
        .unwrap();
        let (code, out, err) = run(dir.path());
        assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("s3cr3t-value"), "{err}");
    }
    assert_eq!(
        before,
        fingerprint(d, &root).await,
        "the destination was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_synchronization_streams_from_files_until_sigterm() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-live");
    let c = client(s).await;
    build_tree(&c, &root, 40, 10, 8).await;
    let dir = tempfile::tempdir().unwrap();
    let live = format!(
        r#"---
apiVersion: automation.astronetes.io/v1alpha1
kind: LiveSynchronization
metadata:
  name: live-from-files
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: {root}
  verifyInterval: 1s
  maxLag: 10s
"#
    );
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(&s.connect_string(), &d.connect_string(), &live),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(["run", "-f"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let o = sync_opts(s, &root, d, &root);
    wait_for(
        "the first copy",
        std::time::Duration::from_secs(60),
        || async { verify(&o).await.equal },
    )
    .await;
    mk(&c, &format!("{root}/streamed"), b"v").await;
    let zd = client(d).await;
    wait_for(
        "the change streamed",
        std::time::Duration::from_secs(30),
        || async { zd.get_data(&format!("{root}/streamed")).await.is_ok() },
    )
    .await;
    // Long enough for a verification after the change.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for needle in [
        "livesynchronization/default/live-from-files: phase Streaming",
        "Ready=True Streaming",
        "InSync=True Equal",
        "verified: 0 divergent",
        "stopped; destination data is left as it is",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    assert!(!stdout.contains("s3cr3t-value") && !stderr.contains("s3cr3t-value"));
}

#[test]
fn a_live_synchronization_with_a_bad_duration_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(
            "127.0.0.1:1",
            "127.0.0.1:2",
            r#"---
apiVersion: automation.astronetes.io/v1alpha1
kind: LiveSynchronization
metadata:
  name: bad
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: /x
  maxLag: soon
"#,
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = run(dir.path());
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("spec.maxLag"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_and_a_restore_run_from_manifests_with_a_local_bucket() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-backup");
    let c = client(s).await;
    build_tree(&c, &root, 60, 10, 8).await;
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bucket = format!(
        r#"---
apiVersion: assets.astronetes.io/v1alpha1
kind: Bucket
metadata:
  name: backups
spec:
  local:
    path: {}
"#,
        store.path().display()
    );
    let backup = format!(
        r#"{bucket}---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  name: nightly-backup
spec:
  plugin: zookeeper-to-bucket
  config:
    sourceName: zookeeper-source
    destinationName: backups
    rootPath: {root}
    retention:
      keepLast: 2
"#
    );
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(&s.connect_string(), &d.connect_string(), &backup),
    )
    .unwrap();
    let (code, out, err) = run(dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("phase Succeeded"), "{out}");
    // Stored under <namespace>/<source Database>.
    let folder = store.path().join("default/zookeeper-source");
    let snapshots: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert_eq!(snapshots.len(), 1, "{folder:?}");

    let target = format!("{root}-restored");
    let restore = format!(
        r#"{bucket}---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  name: restore
spec:
  plugin: bucket-to-zookeeper
  config:
    sourceName: backups
    destinationName: zookeeper-destination
    rootPath: {target}
    bucketPath: default/zookeeper-source
    snapshot: latest
"#
    );
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(&s.connect_string(), &d.connect_string(), &restore),
    )
    .unwrap();
    let (code, out, err) = run(dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("phase Succeeded"), "{out}");
    assert_equal(&sync_opts(s, &root, d, &target)).await;

    // A restore without bucketPath is refused naming the field; nothing is written.
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(
            &s.connect_string(),
            &d.connect_string(),
            &restore.replace("    bucketPath: default/zookeeper-source\n", ""),
        ),
    )
    .unwrap();
    let (code, _, err) = run(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("spec.config.bucketPath"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_source_is_held_and_released_by_the_manifests_annotation() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-guard");
    let c = client(s).await;
    build_tree(&c, &root, 500, 25, 8).await;
    let o = sync_opts(s, &root, d, &root);
    resiliency_operator::engine::sync(&o).await.unwrap();
    let before = verify(&o).await;
    // Every child deleted, children first, as `deleteall` does.
    let mut order = vec![root.clone()];
    let mut i = 0;
    while i < order.len() {
        let p = order[i].clone();
        for k in c.list_children(&p).await.unwrap() {
            order.push(format!("{p}/{k}"));
        }
        i += 1;
    }
    for p in order.iter().skip(1).rev() {
        c.delete(p, None).await.unwrap();
    }
    let sync = |annotation: &str| {
        format!(
            r#"---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  name: dr-copy{annotation}
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: {root}
"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    let base = manifests(&s.connect_string(), &d.connect_string(), "");
    std::fs::write(&file, format!("{base}{}", sync(""))).unwrap();
    let (code, out, err) = run(dir.path());
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("phase Held"), "{out}");
    assert!(out.contains("SourceEmptyHeld"), "{out}");
    assert!(out.contains("500 of 501 destination nodes"), "{out}");
    let after = verify(&o).await;
    assert_eq!(
        (after.destination_nodes, &after.destination_root_hash),
        (before.destination_nodes, &before.destination_root_hash),
        "the copy was touched"
    );
    let token = out
        .split("automation.astronetes.io/release-deletions: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no release token in {out}"))
        .to_string();

    // The person's release: the token in the manifest.
    let annotated = sync(&format!(
        "\n  annotations:\n    automation.astronetes.io/release-deletions: \"{token}\""
    ));
    std::fs::write(&file, format!("{base}{annotated}")).unwrap();
    let (code, out, err) = run(dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("DeletesReleased"), "{out}");
    let r = verify(&o).await;
    assert!(r.equal, "{}", r.render());
    assert_eq!(r.destination_nodes, 1);
}
