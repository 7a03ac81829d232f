//! One writer per destination tree and no replication loops, against real ZooKeeper servers,
//! through the CLI: the same ensemble named two ways, a stream the other way, two writers on
//! one tree and a crashed holder, and a rewrite of equal data that must not be copied again.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;

/// `sync --continuous` from `src` to `dst` with a short session timeout, so a killed holder's
/// claim expires quickly.
fn stream(src: &str, dst: &str, root: &str, dst_root: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--continuous",
            "--progress",
            "0",
            "--session-timeout",
            "4",
        ])
        .args(["--source", src, "--destination", dst])
        .args(["--root-path", root, "--destination-root-path", dst_root])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_ensemble_named_two_ways_is_found_by_the_probe_and_refused() {
    let (s, _) = shared_pair();
    let root = unique_root("same-ensemble");
    let c = client(s).await;
    build_tree(&c, &root, 50, 10, 4).await;
    let before = fingerprint(s, &root).await;
    let port = s.connect_string().rsplit(':').next().unwrap().to_string();
    let dst_root = format!("{root}/copy");
    let out = cli(&[
        "sync",
        "--source",
        &format!("127.0.0.1:{port}"),
        "--destination",
        &format!("localhost:{port}"),
        "--root-path",
        &root,
        "--destination-root-path",
        &dst_root,
        "--progress",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source and destination are the same ensemble"),
        "{err}"
    );
    assert_eq!(fingerprint(s, &root).await, before, "the tree was written");
    // The claim went with the refused copy (other tests' claims may be there).
    for name in c
        .list_children("/.resiliency-operator/claims")
        .await
        .unwrap()
    {
        if let Ok((data, _)) = c
            .get_data(&format!("/.resiliency-operator/claims/{name}"))
            .await
        {
            let text = String::from_utf8_lossy(&data);
            assert!(!text.contains(&format!("\"{dst_root}\"")), "{name}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_other_way_is_refused_and_one_write_stays_one_version() {
    let (a, b) = shared_pair();
    let root = unique_root("loop");
    let ca = client(a).await;
    build_tree(&ca, &root, 100, 10, 4).await;
    let o = sync_opts(a, &root, b, &root);
    let mut forward = stream(&a.connect_string(), &b.connect_string(), &root, &root);
    let forward_err = gather(forward.stderr.take().unwrap());
    wait_for("the forward copy", Duration::from_secs(60), || async {
        verify(&o).await.equal
    })
    .await;
    // The classic failback mistake: B -> A while A -> B runs.
    let back = stream(&b.connect_string(), &a.connect_string(), &root, &root);
    let out = tokio::time::timeout(Duration::from_secs(30), back.wait_with_output())
        .await
        .expect("the reverse stream was not refused")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("replication loop"), "{err}");
    assert!(
        err.contains("resiliency-operator (pid"),
        "names the holder: {err}"
    );

    // One write on A is one version on A and one on B, however long we wait.
    let p = format!("{root}/n0003");
    let (_, before) = ca.get_data(&p).await.unwrap();
    ca.set_data(&p, b"once", None).await.unwrap();
    let cb = client(b).await;
    wait_for("the write on B", Duration::from_secs(10), || async {
        cb.get_data(&p).await.unwrap().0 == b"once"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ca.get_data(&p).await.unwrap().1.version, before.version + 1);
    let (_, on_b) = cb.get_data(&p).await.unwrap();
    // Equal data written again at the source is not copied again either.
    ca.set_data(&p, b"once", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cb.get_data(&p).await.unwrap().1.version, on_b.version);
    assert!(verify(&o).await.equal);
    assert!(
        !forward_err.lock().unwrap().contains("error"),
        "{}",
        forward_err.lock().unwrap()
    );
    drop(forward.kill().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_destination_tree_and_a_crashed_holder_frees_it() {
    let (a, b) = shared_pair();
    let first_root = unique_root("writer-one");
    let second_root = unique_root("writer-two");
    let dst_root = unique_root("shared-destination");
    let ca = client(a).await;
    build_tree(&ca, &first_root, 80, 10, 4).await;
    build_tree(&ca, &second_root, 120, 10, 4).await;
    let first_o = sync_opts(a, &first_root, b, &dst_root);
    let second_o = sync_opts(a, &second_root, b, &dst_root);
    let mut first = stream(
        &a.connect_string(),
        &b.connect_string(),
        &first_root,
        &dst_root,
    );
    wait_for(
        "the first writer's copy",
        Duration::from_secs(60),
        || async { verify(&first_o).await.equal },
    )
    .await;
    let held = verify(&first_o).await;

    // A one-shot copy into the same tree is refused, naming the holder.
    let out = cli(&[
        "sync",
        "--source",
        &a.connect_string(),
        "--destination",
        &b.connect_string(),
        "--root-path",
        &second_root,
        "--destination-root-path",
        &dst_root,
        "--retries",
        "1",
        "--progress",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("which resiliency-operator (pid"), "{err}");
    assert!(err.contains("one writer per destination tree"), "{err}");

    // A second stream waits, writing nothing, and counts the refusals.
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut second = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--continuous",
            "--progress",
            "0",
            "--session-timeout",
            "4",
        ])
        .args([
            "--source",
            &a.connect_string(),
            "--destination",
            &b.connect_string(),
        ])
        .args([
            "--root-path",
            &second_root,
            "--destination-root-path",
            &dst_root,
        ])
        .args(["--listen", &metrics_addr, "--name", "second"])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let second_err = gather(second.stderr.take().unwrap());
    wait_for(
        "the second writer to wait",
        Duration::from_secs(20),
        || async { second_err.lock().unwrap().contains("is writing") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scrape = scrape_metrics(&metrics_addr).await;
    assert!(
        scrape.contains("resiliency_sync_claims_refused_total{namespace=\"cli\",name=\"second\",reason=\"writer_conflict\"}"),
        "{scrape}"
    );
    let now = verify(&first_o).await;
    assert!(now.equal);
    assert_eq!(
        (now.destination_nodes, now.destination_root_hash),
        (held.destination_nodes, held.destination_root_hash),
        "the waiting writer wrote"
    );

    // The holder crashes: its claim expires with its session and the second takes over.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    wait_for(
        "the second writer's copy",
        Duration::from_secs(60),
        || async { verify(&second_o).await.equal },
    )
    .await;
    assert_eq!(verify(&second_o).await.destination_nodes, 121);
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}
