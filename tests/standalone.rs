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

/// The credentials of both Databases in [`manifests`]: the identity a fence keeps ALL for.
const DB_AUTH: &str = "admin:s3cr3t-value";

fn live_and_switchover(root: &str, switchover: &str) -> String {
    format!(
        r#"---
apiVersion: automation.astronetes.io/v1alpha1
kind: LiveSynchronization
metadata:
  name: live
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: {root}
  resyncInterval: 0s
{switchover}"#
    )
}

const PLANNED: &str = r#"---
apiVersion: automation.astronetes.io/v1alpha1
kind: Switchover
metadata:
  name: to-dr
spec:
  liveSynchronizationName: live
  mode: planned
  fence: acl
  reverse: true
  timeout: 60s
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_switchover_from_files_fences_proves_no_loss_and_streams_back_until_sigterm() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-switchover");
    let zs = client(s).await;
    build_tree(&zs, &root, 200, 10, 8).await;
    let before = acls(s, &root, DB_AUTH).await;
    // An application writes to the source while the stream copies and streams it.
    let writer = Writer::start(client(s).await, root.clone());
    let mut run = Running::switch_over(s, d, &root);
    run.until(
        "the switchover to end",
        &["switchover/default/to-dr: complete in", "failed at"],
    )
    .await;
    // The application keeps trying after the fence: those writes are refused.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (acked, refused) = writer.stop().await;
    let out = run.stdout();
    assert!(run.said("complete in"), "{out}\n{}", run.stderr());
    assert!(refused > 0, "the fence refused no write:\n{out}");

    // Each step as it ended, and the report: zero changes lost, proven.
    assert!(
        out.contains("waiting for the stream to finish its first full sync"),
        "{out}"
    );
    for step in [
        "Preflight  Succeeded",
        "Fence      Succeeded",
        "CatchUp    Succeeded",
        "StopStream Succeeded",
        "Verify     Succeeded",
        "Promote    Succeeded",
        "Reverse    Succeeded",
    ] {
        assert!(
            out.contains(&format!("switchover/default/to-dr: {step}")),
            "{step} missing from:\n{out}"
        );
    }
    assert!(
        out.contains("data loss: 0 changes (verified up to zxid"),
        "{out}"
    );
    let report: serde_json::Value = out
        .lines()
        .find_map(|l| {
            l.split_once("switchover/default/to-dr: report ")
                .map(|(_, j)| j)
        })
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no report in:\n{out}"));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["dataLoss"]["changesLost"], 0, "{report}");
    assert_eq!(report["verification"]["equal"], true, "{report}");
    assert!(
        report["fence"]["nodes"].as_u64().unwrap() >= 201,
        "{report}"
    );
    assert!(
        out.contains("livesynchronization/default/live: stopped for good by switchover to-dr"),
        "{out}"
    );
    // The files still say the old stream runs: the person is told before running them again.
    assert!(
        out.contains("WARNING the files still say LiveSynchronization live streams"),
        "{out}"
    );

    // No acknowledged write is missing on the new primary, and its tree equals the old one's
    // (node count and blake3 root hash, data and structure: the old one's ACLs are fenced).
    let zd = client(d).await;
    for (p, data) in &acked {
        let (got, _) = zd
            .get_data(p)
            .await
            .unwrap_or_else(|e| panic!("{p} missing on the new primary: {e}"));
        assert_eq!(&got, data, "{p}");
    }
    let mut data_only = sync_opts(s, &root, d, &root);
    data_only.copy_acl = false;
    let r = assert_equal(&data_only).await;
    assert_eq!(r.source_nodes, r.destination_nodes);
    assert!(r.source_nodes >= 201, "{}", r.render());

    // The old primary is fenced: every node read-only for all but the Database's identity,
    // and an application's write refused; the new primary has the applications' ACLs.
    let identity = verifier::DigestAuth::parse(DB_AUTH).unwrap().acl_id();
    let (on_s, on_d) = (acls(s, &root, DB_AUTH).await, acls(d, &root, DB_AUTH).await);
    for (p, acl) in &before {
        assert_eq!(on_d.get(p), Some(acl), "{p} on the new primary");
        assert_eq!(
            on_s.get(p),
            Some(&resiliency_operator::switchover::fence::fenced_acl(
                acl, &identity
            )),
            "{p} is not fenced on the old primary"
        );
    }
    let app = client(s).await;
    assert!(matches!(
        app.set_data(&format!("{root}/load-0"), b"late", None).await,
        Err(zookeeper_client::Error::NoAuth)
    ));

    // The reverse stream, reported as the LiveSynchronization the operator would create,
    // carries a write on the new primary to the old one.
    run.until(
        "the reverse stream to stream",
        &["livesynchronization/default/live-reverse: phase Streaming"],
    )
    .await;
    mk(
        &zd,
        &format!("{root}/after-switch"),
        b"written on the new primary",
    )
    .await;
    appears(
        &zs,
        &format!("{root}/after-switch"),
        "the new primary's write on the old one",
    )
    .await;

    let (code, out) = run.stop().await;
    assert_eq!(code, Some(0), "{out}\n{}", run.stderr());
    assert!(
        out.contains(
            "livesynchronization/default/live-reverse: stopped; destination data is left as it is"
        ),
        "{out}"
    );
    assert!(!out.contains("s3cr3t-value"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_that_fails_rolls_back_the_stream_streams_on_and_the_exit_code_says_so() {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-switchover-rollback");
    let zs = client(s).await;
    build_tree(&zs, &root, 60, 6, 8).await;
    // The fence cannot finish: the Database's identity may not administer this node.
    mk_without_admin(&zs, &format!("{root}/locked")).await;
    let before = acls(s, &root, DB_AUTH).await;
    let mut run = Running::switch_over(s, d, &root);
    run.until(
        "the switchover to fail",
        &["switchover/default/to-dr: failed at"],
    )
    .await;
    let out = run.stdout();
    assert!(out.contains("failed at Fence: "), "{out}");
    assert!(out.contains("/locked"), "{out}");
    assert!(
        out.contains("(rolled back: the old primary serves as before)"),
        "{out}"
    );
    assert!(out.contains("Rollback   Succeeded"), "{out}");
    // The fence is lifted, and the resumed stream carries a new write.
    assert_eq!(acls(s, &root, DB_AUTH).await, before);
    mk(&zs, &format!("{root}/after-rollback"), b"x").await;
    let zd = client(d).await;
    appears(
        &zd,
        &format!("{root}/after-rollback"),
        "the resumed stream's copy of a new write",
    )
    .await;
    let (code, out) = run.stop().await;
    // A switchover that failed fails the run, as a failed Synchronization does.
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "livesynchronization/default/live: stopped; destination data is left as it is"
        ),
        "{out}"
    );
    assert!(!out.contains("live-reverse"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_a_switchover_waits_for_its_stream_ends_it_unbegun() {
    // Nothing answers: the stream never streams, so the switchover only waits.
    let mut run = Running::start("127.0.0.1:1", "127.0.0.1:2", "/never");
    run.until(
        "the switchover to wait",
        &["switchover/default/to-dr: waiting for the stream"],
    )
    .await;
    let (code, out) = run.stop().await;
    assert_eq!(code, Some(1), "{out}\n{}", run.stderr());
    assert!(
        out.contains("Preflight  Failed    stopped by SIGINT or SIGTERM before it began; nothing was changed"),
        "{out}"
    );
    assert!(!out.contains("Fence"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_of_a_missing_or_suspended_stream_is_refused_naming_the_field_and_nothing_is_written(
) {
    let (s, d) = shared_pair();
    let root = unique_root("standalone-switchover-bad");
    let zs = client(s).await;
    build_tree(&zs, &root, 60, 6, 8).await;
    // A stale copy: a stream that started would change it.
    let o = sync_opts(s, &root, d, &root);
    resiliency_operator::engine::sync(&o).await.unwrap();
    mk(&zs, &format!("{root}/newer"), b"only on the source").await;
    let before = fingerprint(d, &root).await;
    let cases = [
        (
            PLANNED.replace(
                "liveSynchronizationName: live",
                "liveSynchronizationName: nope",
            ),
            "",
            "spec.liveSynchronizationName: LiveSynchronization nope not found",
        ),
        (
            PLANNED.to_string(),
            "  suspend: true\n",
            "spec.suspend: true",
        ),
    ];
    for (switchover, suspend, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let files = format!("{}{suspend}{switchover}", live_and_switchover(&root, ""));
        std::fs::write(
            dir.path().join("all.yaml"),
            manifests(&s.connect_string(), &d.connect_string(), &files),
        )
        .unwrap();
        let (code, out, err) = run(dir.path());
        assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
        assert!(err.contains("switchover to-dr: "), "{err}");
        assert!(err.contains(needle), "{needle} missing from: {err}");
        // Refused before anything started: no stream, no Database probed.
        assert!(out.is_empty(), "{out}");
    }
    let after = fingerprint(d, &root).await;
    assert_eq!(
        before.len(),
        after.len(),
        "the destination's node count changed"
    );
    assert_eq!(before, after, "the destination was written");
    let zd = client(d).await;
    assert!(zd
        .check_stat(&format!("{root}/newer"))
        .await
        .unwrap()
        .is_none());
}

/// `run -f` running, its output gathered as it comes.
struct Running {
    child: tokio::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// `run -f` on the two Databases, a LiveSynchronization of `root` and the [`PLANNED`]
    /// Switchover of it.
    fn switch_over(s: &ZkServer, d: &ZkServer, root: &str) -> Running {
        Running::start(&s.connect_string(), &d.connect_string(), root)
    }

    fn start(src: &str, dst: &str, root: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("all.yaml"),
            manifests(src, dst, &live_and_switchover(root, PLANNED)),
        )
        .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
            .args(["run", "-f"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = gather(child.stdout.take().unwrap());
        let stderr = gather(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// Waits until it has printed one of `needles`.
    async fn until(&self, what: &str, needles: &[&str]) {
        wait_for(what, std::time::Duration::from_secs(120), || async {
            needles.iter().any(|n| self.said(n))
        })
        .await;
    }

    fn said(&self, needle: &str) -> bool {
        self.stdout.lock().unwrap().contains(needle)
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then its exit code and all it printed.
    async fn stop(&mut self) -> (Option<i32>, String) {
        signal(self.child.id().unwrap(), "-TERM");
        let status = tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        (status.code(), self.stdout())
    }
}

/// Waits until `path` exists on the server of `c`.
async fn appears(c: &zookeeper_client::Client, path: &str, what: &str) {
    wait_for(what, std::time::Duration::from_secs(60), || async {
        c.check_stat(path).await.unwrap().is_some()
    })
    .await;
}
