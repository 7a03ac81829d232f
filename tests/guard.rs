//! What protects the copy: the deletion guard in one-shot copies, through the engine and the
//! CLI, against real ZooKeeper servers. Each test checks the destination's node count and
//! root hash, not only an exit code.
#![allow(clippy::unwrap_used)]

mod support;

use resiliency_operator::engine::{self, Allowance, HoldReason};
use support::*;

/// Destination node count and root hash (the verifier's Merkle root).
async fn destination_state(o: &engine::SyncOptions) -> (u64, String) {
    let r = verify(o).await;
    (r.destination_nodes, r.destination_root_hash)
}

async fn children(c: &zookeeper_client::Client, p: &str) -> Vec<String> {
    let mut v = c.list_children(p).await.unwrap();
    v.sort();
    v
}

/// Deletes every child of `root` (and their subtrees), keeping the root: an emptied tree.
async fn empty_tree(c: &zookeeper_client::Client, root: &str) {
    delete_tree(c, root, true).await;
}

/// Deletes `top` and its subtree (only the subtree with `keep_top`); returns the count.
async fn delete_tree(c: &zookeeper_client::Client, top: &str, keep_top: bool) -> u64 {
    let mut order = vec![top.to_string()];
    let mut i = 0;
    while i < order.len() {
        let p = order[i].clone();
        for ch in children(c, &p).await {
            order.push(format!("{p}/{ch}"));
        }
        i += 1;
    }
    let skip = usize::from(keep_top);
    for p in order.iter().skip(skip).rev() {
        c.delete(p, None).await.unwrap();
    }
    (order.len() - skip) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_source_does_not_wipe_the_copy_until_released() {
    let (s, d) = shared_pair();
    let root = unique_root("emptied");
    let c = client(s).await;
    build_tree(&c, &root, 2000, 40, 16).await;
    let o = sync_opts(s, &root, d, &root);
    engine::sync(&o).await.unwrap();
    let before = destination_state(&o).await;
    assert_eq!(before.0, 2001);

    empty_tree(&c, &root).await;
    let (src, dst) = (s.connect_string(), d.connect_string());
    let base = [
        "sync",
        "--source",
        &src,
        "--destination",
        &dst,
        "--root-path",
        &root,
        "--progress",
        "0",
    ];

    // A dry run says the guard would trip, and lists nothing as deleted.
    let dry = cli(&[&base[..], &["--dry-run"]].concat());
    let (out, err) = (
        String::from_utf8_lossy(&dry.stdout),
        String::from_utf8_lossy(&dry.stderr),
    );
    assert_eq!(dry.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains("DELETES would be HELD"), "{out}");
    assert!(err.contains("2000 of 2001 destination nodes"), "{err}");

    // The real run: exit 3, a message with the counts and the flag, nothing deleted.
    let held = cli(&base);
    let err = String::from_utf8_lossy(&held.stderr);
    assert_eq!(held.status.code(), Some(3), "{err}");
    assert!(err.contains("source root is empty or near-empty"), "{err}");
    assert!(err.contains("--allow-mass-delete"), "{err}");
    assert_eq!(destination_state(&o).await, before, "the copy was touched");

    // The JSON document carries the hold too.
    let json = cli(&[&base[..], &["--json"]].concat());
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["sync"]["held"]["reason"], "SourceEmpty", "{doc}");
    assert_eq!(doc["sync"]["held"]["deletes"], 2000, "{doc}");
    assert_eq!(destination_state(&o).await, before);

    // Released by a person: the deletes go through and the trees are equal.
    let released = cli(&[&base[..], &["--allow-mass-delete", "--verify"]].concat());
    let out = String::from_utf8_lossy(&released.stdout);
    assert!(
        released.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&released.stderr)
    );
    let r = assert_equal(&o).await;
    assert_eq!(r.destination_nodes, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mass_delete_is_held_while_creates_and_updates_go_through() {
    let (s, d) = shared_pair();
    let root = unique_root("partial");
    let c = client(s).await;
    build_tree(&c, &root, 2000, 40, 16).await;
    let mut o = sync_opts(s, &root, d, &root);
    engine::sync(&o).await.unwrap();
    let before = destination_state(&o).await;

    // 25 % of the tree goes (whole subtrees and leaves), one node is new, one is updated.
    let tops = children(&c, &root).await;
    let mut gone = 0u64;
    for t in tops.iter().take(12) {
        gone += delete_tree(&c, &format!("{root}/{t}"), false).await;
    }
    assert!(gone > 200, "{gone}");
    mk(&c, &format!("{root}/new-node"), b"new").await;
    let kept = format!("{root}/{}", tops[20]);
    c.set_data(&kept, b"changed", None).await.unwrap();

    let summary = engine::sync(&o).await.unwrap();
    let held = summary.held.clone().expect("held");
    assert_eq!(held.reason, HoldReason::MassDeletion);
    assert_eq!(held.deletes, gone);
    assert_eq!(held.destination_nodes, 2001);
    assert_eq!(held.sample.len(), 10);
    assert_eq!(summary.deleted.total(), 0);
    assert_eq!(summary.created.total(), 1, "{}", summary.render());
    assert_eq!(summary.updated.total(), 1, "{}", summary.render());
    let dc = client(d).await;
    assert_eq!(
        dc.get_data(&format!("{root}/new-node")).await.unwrap().0,
        b"new"
    );
    assert_eq!(dc.get_data(&kept).await.unwrap().0, b"changed");
    let (nodes, _) = destination_state(&o).await;
    assert_eq!(nodes, before.0 + 1, "only the create changed the count");
    let r = verify(&o).await;
    assert_eq!(r.counts.extra, gone, "the held nodes are all still there");

    // A release for fewer deletes than are held holds them again.
    o.guard.allowance = Allowance::UpTo(gone - 1);
    let again = engine::sync(&o).await.unwrap();
    assert_eq!(again.held.map(|h| h.deletes), Some(gone));
    assert_eq!(verify(&o).await.counts.extra, gone);

    // The release shown for the held count applies them.
    o.guard.allowance = Allowance::UpTo(gone);
    let done = engine::sync(&o).await.unwrap();
    assert!(done.held.is_none(), "{}", done.render());
    assert_eq!(done.deleted.total(), gone);
    let r = assert_equal(&o).await;
    assert_eq!(r.destination_nodes, 2001 - gone + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_under_the_limits_and_an_explicitly_disabled_guard_pass() {
    let (s, d) = shared_pair();
    let root = unique_root("small-deletes");
    let c = client(s).await;
    build_tree(&c, &root, 500, 25, 4).await;
    let mut o = sync_opts(s, &root, d, &root);
    engine::sync(&o).await.unwrap();
    // 20 leaves: under 100 nodes, so not held whatever the share.
    let top = format!("{root}/{}", children(&c, &root).await[0]);
    for k in children(&c, &top).await.iter().take(20) {
        c.delete(&format!("{top}/{k}"), None).await.unwrap();
    }
    let summary = engine::sync(&o).await.unwrap();
    assert!(summary.held.is_none());
    assert_eq!(summary.deleted.total(), 20);
    assert_equal(&o).await;

    // Both limits at 0: no guard, said explicitly.
    empty_tree(&c, &root).await;
    o.guard = engine::DeletionGuard::off();
    let summary = engine::sync(&o).await.unwrap();
    assert!(summary.held.is_none());
    let r = assert_equal(&o).await;
    assert_eq!(r.destination_nodes, 1);
}

#[test]
fn bad_guard_flags_are_refused_naming_the_flag() {
    let out = cli(&[
        "sync",
        "--source",
        "127.0.0.1:1",
        "--destination",
        "127.0.0.1:2",
        "--root-path",
        "/a",
        "--max-delete-percent",
        "150",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--max-delete-percent: 150 is not a percentage"),
        "{err}"
    );
    // Durations out of range are refused by name, never a panic.
    for (flag, value) in [
        ("--resync-interval", "inf"),
        ("--apply-delay", "1e300"),
        ("--max-lag", "-1"),
        ("--delete-delay", "NaN"),
        ("--verify-interval", "-5"),
    ] {
        let arg = format!("{flag}={value}");
        let out = cli(&[
            "sync",
            "--continuous",
            "--source",
            "127.0.0.1:1",
            "--destination",
            "127.0.0.1:2",
            "--root-path",
            "/a",
            &arg,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(&format!("{flag}: ")), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleteall_under_a_live_stream_is_held_until_released() {
    let (s, d) = shared_pair();
    let root = unique_root("live-deleteall");
    let c = client(s).await;
    build_tree(&c, &root, 2500, 50, 8).await;
    let o = sync_opts(s, &root, d, &root);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--continuous",
            "--progress",
            "0",
            "--root-path",
            &root,
        ])
        .args(["--listen", &metrics_addr, "--name", "guarded"])
        .args(["--source", &s.connect_string()])
        .args(["--destination", &d.connect_string()])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = gather(child.stderr.take().unwrap());
    let pid = child.id().unwrap();
    wait_for(
        "the first copy",
        std::time::Duration::from_secs(60),
        || async { verify(&o).await.equal },
    )
    .await;
    let before = destination_state(&o).await;
    assert_eq!(before.0, 2501);

    // `deleteall` node by node, as zkCli does; a live change rides along.
    let n = delete_tree(&c, &root, true).await;
    assert_eq!(n, 2500);
    mk(&c, &format!("{root}/after"), b"still streamed").await;
    wait_for("the hold", std::time::Duration::from_secs(30), || async {
        stderr.lock().unwrap().contains("DELETES HELD")
    })
    .await;
    // Well past the delay every delete waits: nothing was deleted.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (nodes, _) = destination_state(&o).await;
    assert_eq!(nodes, before.0 + 1, "{}", stderr.lock().unwrap());
    let dc = client(d).await;
    assert_eq!(
        dc.get_data(&format!("{root}/after")).await.unwrap().0,
        b"still streamed"
    );
    let scrape = scrape_metrics(&metrics_addr).await;
    assert!(
        scrape.contains("resiliency_sync_deletes_held{namespace=\"cli\",name=\"guarded\"} 2500"),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            "resiliency_sync_deletes_held_total{namespace=\"cli\",name=\"guarded\"} 2500"
        ),
        "{scrape}"
    );
    promtool_check_metrics(&scrape);
    let text = stderr.lock().unwrap().clone();
    assert!(
        text.contains("deletion guard: 2500 deletes held now"),
        "{text}"
    );
    assert!(text.contains(&format!("kill -USR1 {pid}")), "{text}");

    // Released by a person: the deletes go through.
    signal(pid, "-USR1");
    wait_for(
        "the release",
        std::time::Duration::from_secs(60),
        || async { verify(&o).await.equal },
    )
    .await;
    let r = verify(&o).await;
    assert_eq!(r.destination_nodes, 2);
    let scrape = scrape_metrics(&metrics_addr).await;
    assert!(
        scrape.contains("resiliency_sync_deletes_held{namespace=\"cli\",name=\"guarded\"} 0"),
        "{scrape}"
    );
    signal(pid, "-TERM");
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let text = stderr.lock().unwrap().clone();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("released by SIGUSR1: applying 2500 deletes"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_started_on_an_emptied_source_writes_nothing() {
    use resiliency_operator::continuous::{Continuous, ContinuousOptions};
    use resiliency_operator::engine::live::LiveOptions;
    let (s, d) = shared_pair();
    let root = unique_root("live-emptied");
    let c = client(s).await;
    build_tree(&c, &root, 1000, 40, 8).await;
    let o = sync_opts(s, &root, d, &root);
    engine::sync(&o).await.unwrap();
    let before = destination_state(&o).await;
    empty_tree(&c, &root).await;

    let run = Continuous::start(
        ContinuousOptions::new(LiveOptions::new(o.clone())),
        vec![],
        None,
    );
    wait_for("the hold", std::time::Duration::from_secs(30), || async {
        run.snapshot().held.is_some()
    })
    .await;
    let (_, held) = run.snapshot().held.unwrap();
    assert_eq!(held.reason, HoldReason::SourceEmpty);
    assert_eq!((held.deletes, held.destination_nodes), (1000, 1001));
    // New source nodes still stream while the deletes are held.
    mk(&c, &format!("{root}/new"), b"n").await;
    let dc = client(d).await;
    wait_for("the create", std::time::Duration::from_secs(30), || async {
        dc.check_stat(&format!("{root}/new"))
            .await
            .unwrap()
            .is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (nodes, _) = destination_state(&o).await;
    assert_eq!(nodes, before.0 + 1);

    // A release for fewer than are held is refused, with the count.
    assert_eq!(run.release(Allowance::UpTo(10)), Err(1000));
    run.release(Allowance::UpTo(1000)).unwrap();
    wait_for(
        "the release",
        std::time::Duration::from_secs(60),
        || async { verify(&o).await.equal },
    )
    .await;
    assert_eq!(verify(&o).await.destination_nodes, 2);
    assert!(run.snapshot().held.is_none());
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_stream_lets_a_destructive_change_be_stopped_before_it_lands() {
    let (s, d) = shared_pair();
    let root = unique_root("delayed");
    let c = client(s).await;
    build_tree(&c, &root, 300, 20, 8).await;
    let o = sync_opts(s, &root, d, &root);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let start = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
            .args([
                "sync",
                "--continuous",
                "--progress",
                "0",
                "--root-path",
                &root,
            ])
            .args(["--apply-delay", "4", "--max-lag", "1"])
            .args(["--listen", &metrics_addr, "--name", "delayed"])
            .args(["--source", &s.connect_string()])
            .args(["--destination", &d.connect_string()])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let stderr = gather(child.stderr.take().unwrap());
    wait_for(
        "the first copy",
        std::time::Duration::from_secs(60),
        || async { verify(&o).await.equal },
    )
    .await;
    let dc = client(d).await;

    // A change arrives, but only once it is 4 s old.
    let p = format!("{root}/n0001");
    let t0 = std::time::Instant::now();
    c.set_data(&p, b"later", None).await.unwrap();
    mk(&c, &format!("{root}/created"), b"c").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_ne!(
        dc.get_data(&p).await.unwrap().0,
        b"later",
        "applied before its delay"
    );
    assert!(dc
        .check_stat(&format!("{root}/created"))
        .await
        .unwrap()
        .is_none());
    let scrape = scrape_metrics(&metrics_addr).await;
    assert!(
        scrape.contains("resiliency_sync_max_lag_seconds{namespace=\"cli\",name=\"delayed\"} 5"),
        "the objective counts on top of the delay: {scrape}"
    );
    wait_for(
        "the delayed change",
        std::time::Duration::from_secs(20),
        || async { dc.get_data(&p).await.unwrap().0 == b"later" },
    )
    .await;
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(4),
        "{:?}",
        t0.elapsed()
    );
    wait_for(
        "the delayed create",
        std::time::Duration::from_secs(10),
        || async {
            dc.check_stat(&format!("{root}/created"))
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    assert!(verify(&o).await.equal);
    let before = destination_state(&o).await;

    // The destructive change: the stream is stopped a second later, before it lands.
    let top = children(&c, &root).await;
    for k in &top {
        c.set_data(&format!("{root}/{k}"), b"CORRUPTED", None)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    signal(child.id().unwrap(), "-TERM");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{}", stderr.lock().unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        destination_state(&o).await,
        before,
        "the corruption reached the copy"
    );
    let r = verify(&o).await;
    assert_eq!(r.counts.data_differs, top.len() as u64, "{}", r.render());
}
