//! Continuous replication against real ZooKeeper servers: every kind of change streamed, and
//! faults injected for real (server restarts, an expired session, the replicator killed), each
//! ending with the verifier finding equal trees.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use resiliency_operator::continuous::{Continuous, ContinuousOptions, HeartbeatOptions};
use resiliency_operator::engine::live::{self, LiveOptions, LiveState, Stats};
use resiliency_operator::engine::SyncOptions;
use support::*;
use tokio::sync::watch;
use zookeeper_client::{Acl, Acls, AuthId, CreateMode, Permission};

struct Running {
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), resiliency_operator::engine::SyncError>>,
}

fn start(opts: LiveOptions) -> Running {
    let stats = Arc::new(Stats::default());
    let (stop, rx) = watch::channel(false);
    let observer: Arc<dyn live::Observer> = stats.clone();
    let task = tokio::spawn(async move { live::run(&opts, observer, rx).await });
    Running { stats, stop, task }
}

impl Running {
    async fn streaming(&self) {
        wait_for("the first full sync", Duration::from_secs(60), || async {
            let s = self.stats.snapshot();
            s.full_syncs >= 1 && s.state == Some(LiveState::Streaming)
        })
        .await;
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the stream did not stop")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_is_streamed() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-kinds");
    let dst_root = format!("{root}-dr");
    let zs = client(src).await;
    build_tree(&zs, &root, 50, 10, 8).await;
    let o = sync_opts(src, &root, dst, &dst_root);
    let mut lo = LiveOptions::new(o.clone());
    lo.resync_interval = None;
    let run = start(lo);
    run.streaming().await;
    assert_equal(&o).await;
    let full_syncs = run.stats.snapshot().full_syncs;

    // Creates (deep, with a parent made in the same burst), updates, deletes of a subtree,
    // binary and empty data, sequential children.
    mk(&zs, &format!("{root}/new"), b"n").await;
    mk(&zs, &format!("{root}/new/deeper"), b"").await;
    mk(&zs, &format!("{root}/new/deeper/leaf"), &[0, 159, 146, 150]).await;
    for i in 0..20 {
        zs.set_data(&format!("{root}/new"), format!("v{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    let victim = zs.list_children(&root).await.unwrap()[0].clone();
    zs.set_data(&format!("{root}/{victim}"), b"about to go", None)
        .await
        .unwrap();
    let victim_path = format!("{root}/{victim}");
    for c in zs.list_children(&victim_path).await.unwrap() {
        zs.delete(&format!("{victim_path}/{c}"), None)
            .await
            .unwrap();
    }
    zs.delete(&victim_path, None).await.unwrap();
    mk(&zs, &format!("{root}/queue"), b"").await;
    for _ in 0..5 {
        zs.create(
            &format!("{root}/queue/item-"),
            b"x",
            &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    }
    converges(&o).await;
    let s = run.stats.snapshot();
    assert_eq!(s.full_syncs, full_syncs, "streamed, not re-synced: {s:?}");
    assert!(s.applied_total >= 8, "{s:?}");

    // The next sequential number on the destination does not go back below the source's.
    let (_, seq) = zs
        .create(
            &format!("{root}/queue/item-"),
            b"x",
            &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    converges(&o).await;
    let zd = client(dst).await;
    let (_, dseq) = zd
        .create(
            &format!("{dst_root}/queue/item-"),
            b"x",
            &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    assert!(
        dseq.into_i64() > seq.into_i64(),
        "destination {dseq} after source {seq}"
    );
    run.stop().await;
}

/// One burst that puts every case of the batched path into the same batches: hundreds of new
/// nodes three levels deep with their parents, new nodes whose ACL locks the copier out (set
/// aside to the staged path inside chunks of ordinary creates), a node deleted and made again
/// (its create fails on the destination, which still has the old one), nested subtrees
/// deleted, sequential children of two parents and updates. All of it is streamed (no full
/// sync) and the trees end equal, node for node and ACL for ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_burst_goes_through_the_batched_path_and_ends_equal() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-burst");
    let dst_root = format!("{root}-dr");
    let zs = client(src).await;
    // 2,000 nodes. The burst deletes about 440 and creates about 470: the guard judges net
    // deletes, so it lets them through.
    build_tree(&zs, &root, 2_000, 20, 8).await;
    mk(&zs, &format!("{root}/q1"), b"").await;
    mk(&zs, &format!("{root}/q2"), b"").await;
    let o = sync_opts(src, &root, dst, &dst_root);
    let mut lo = LiveOptions::new(o.clone()).with_delete_delay(Duration::ZERO);
    lo.resync_interval = None;
    let run = start(lo);
    run.streaming().await;
    assert_equal(&o).await;
    let full_syncs = run.stats.snapshot().full_syncs;

    let read_only = [Acl::new(Permission::READ, AuthId::anyone())];
    let mut writes = Vec::new();
    for a in 0..10 {
        let pa = format!("{root}/burst{a}");
        mk(&zs, &pa, b"a").await;
        for b in 0..10 {
            let pb = format!("{pa}/b{b}");
            writes.push((pb.clone(), None));
            for c in 0..3 {
                writes.push((format!("{pb}/c{c}"), Some(c == 2 && b % 3 == 0)));
            }
        }
    }
    // Parents first, each level pipelined, so the stream sees them in a few batches.
    for level in [false, true] {
        let creates = writes
            .iter()
            .filter(|(_, leaf)| leaf.is_some() == level)
            .map(|(p, locked)| {
                let acl = if *locked == Some(true) {
                    Acls::new(&read_only)
                } else {
                    Acls::anyone_all()
                };
                let zs = zs.clone();
                let p = p.clone();
                async move {
                    zs.create(&p, p.as_bytes(), &CreateMode::Persistent.with_acls(acl))
                        .await
                        .unwrap()
                }
            });
        futures::future::join_all(creates).await;
    }
    // Deleted and made again with other data; nested subtrees deleted children first.
    let again = format!("{root}/n0003");
    let doomed = [format!("{root}/n0005"), format!("{root}/n0006")];
    let mut deletes = Vec::new();
    for top in &doomed {
        for c in zs.list_children(top).await.unwrap() {
            let cp = format!("{top}/{c}");
            for g in zs.list_children(&cp).await.unwrap() {
                deletes.push(format!("{cp}/{g}"));
            }
            deletes.push(cp);
        }
        deletes.push(top.clone());
    }
    let mut gone_children = Vec::new();
    for c in zs.list_children(&again).await.unwrap() {
        gone_children.push(format!("{again}/{c}"));
    }
    for p in gone_children.iter().chain(std::iter::once(&again)) {
        for g in zs.list_children(p).await.unwrap() {
            zs.delete(&format!("{p}/{g}"), None).await.unwrap();
        }
        zs.delete(p, None).await.unwrap();
    }
    mk(&zs, &again, b"made again").await;
    for p in &deletes {
        zs.delete(p, None).await.unwrap();
    }
    let sequential = (0..60).map(|i| {
        let zs = zs.clone();
        let parent = format!("{root}/q{}", 1 + i % 2);
        async move {
            zs.create(
                &format!("{parent}/item-"),
                b"x",
                &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap()
        }
    });
    futures::future::join_all(sequential).await;
    let updates = zs.list_children(&format!("{root}/n0001")).await.unwrap();
    let updates = updates.iter().map(|c| {
        let zs = zs.clone();
        let p = format!("{root}/n0001/{c}");
        async move { zs.set_data(&p, b"updated", None).await.unwrap() }
    });
    futures::future::join_all(updates).await;

    converges(&o).await;
    let r = verify(&o).await;
    assert!(
        r.source_nodes > 2_000 && r.equal,
        "equal trees, every node counted: {}",
        r.render()
    );
    let s = run.stats.snapshot();
    assert_eq!(s.full_syncs, full_syncs, "streamed, not re-synced: {s:?}");
    let zd = client(dst).await;
    assert_eq!(
        zd.get_data(&format!("{dst_root}/n0003")).await.unwrap().0,
        b"made again"
    );
    for top in &doomed {
        let gone = top.replacen(&root, &dst_root, 1);
        assert!(zd.check_stat(&gone).await.unwrap().is_none(), "{gone}");
    }
    // Both sequential parents go on from the source's numbers.
    for q in ["q1", "q2"] {
        let (s_stat, d_stat) = (
            zs.check_stat(&format!("{root}/{q}"))
                .await
                .unwrap()
                .unwrap(),
            zd.check_stat(&format!("{dst_root}/{q}"))
                .await
                .unwrap()
                .unwrap(),
        );
        assert!(
            d_stat.cversion >= s_stat.cversion,
            "{q}: destination cversion {} below the source's {}",
            d_stat.cversion,
            s_stat.cversion
        );
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_restart_and_a_destination_restart_lose_nothing() {
    let mut src = ZkServer::start_default();
    let mut dst = ZkServer::start_default();
    let root = "/live-restarts";
    let zs = client(&src).await;
    build_tree(&zs, root, 200, 20, 16).await;
    let o = sync_opts(&src, root, &dst, root);
    let run = start(LiveOptions::new(o.clone()));
    run.streaming().await;

    // Source restarted: events during the gap may be lost, so the stream re-walks the tree.
    src.restart();
    let zs = client(&src).await;
    for i in 0..50 {
        mk(&zs, &format!("{root}/after-source-restart-{i}"), b"a").await;
    }
    converges(&o).await;
    assert!(
        run.stats.snapshot().full_syncs >= 2,
        "no anti-entropy pass after the gap"
    );

    // Destination stopped while the source changes: the changes wait, then land.
    dst.stop();
    for i in 0..50 {
        mk(&zs, &format!("{root}/while-destination-down-{i}"), b"b").await;
    }
    zs.delete(&format!("{root}/after-source-restart-0"), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    dst.start_again();
    converges(&o).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_source_session_is_replaced_and_the_tree_re_walked() {
    /// Stats, plus why each epoch ended and which sides were reconnected.
    #[derive(Default)]
    struct Epochs {
        stats: Stats,
        restarts: std::sync::Mutex<Vec<String>>,
        reconnected: std::sync::Mutex<Vec<verifier::Side>>,
    }
    impl live::Observer for Epochs {
        fn state(&self, state: LiveState, why: &str) {
            if state == LiveState::Connecting {
                self.restarts.lock().unwrap().push(why.to_string());
            }
            self.stats.state(state, why);
        }
        fn full_sync(&self, summary: &resiliency_operator::engine::SyncSummary) {
            self.stats.full_sync(summary);
        }
        fn reconnected(&self, side: verifier::Side) {
            self.reconnected.lock().unwrap().push(side);
        }
    }

    let mut src = ZkServer::start_default();
    let dst = ZkServer::start_default();
    let root = "/live-expiry";
    let zs = client(&src).await;
    build_tree(&zs, root, 100, 10, 16).await;
    let mut o = sync_opts(&src, root, &dst, root);
    o.source.session_timeout = Duration::from_secs(4);
    let epochs = Arc::new(Epochs::default());
    let (stop, rx) = watch::channel(false);
    let observer: Arc<dyn live::Observer> = epochs.clone();
    let opts = LiveOptions::new(o.clone());
    let task = tokio::spawn(async move { live::run(&opts, observer, rx).await });
    wait_for("the first full sync", Duration::from_secs(60), || async {
        let s = epochs.stats.snapshot();
        s.full_syncs >= 1 && s.state == Some(LiveState::Streaming)
    })
    .await;
    assert_eq!(epochs.stats.snapshot().full_syncs, 1);
    // Down for longer than the session timeout: the session expires.
    src.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    src.start_again();
    let zs = client(&src).await;
    for i in 0..30 {
        mk(&zs, &format!("{root}/after-expiry-{i}"), b"e").await;
    }
    converges(&o).await;
    // The epoch ended because the session expired (not a mere reconnect), a new source
    // session replaced it, and the tree was walked again on it.
    let restarts = epochs.restarts.lock().unwrap().clone();
    assert!(
        restarts.iter().any(|why| why == "source session Expired"),
        "the source session never expired: {restarts:?}"
    );
    assert!(
        epochs
            .reconnected
            .lock()
            .unwrap()
            .contains(&verifier::Side::Source),
        "no new source session"
    );
    let s = epochs.stats.snapshot();
    assert!(s.full_syncs >= 2, "no second full sync: {s:?}");
    // And it keeps streaming on the new session.
    mk(&zs, &format!("{root}/streamed-after-expiry"), b"s").await;
    converges(&o).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the stream did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_killed_mid_stream_converges_when_started_again() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-killed");
    let zs = client(src).await;
    build_tree(&zs, &root, 100, 10, 16).await;
    let o = sync_opts(src, &root, dst, &root);
    let run = start(LiveOptions::new(o.clone()));
    run.streaming().await;
    // Killed while a burst is being written.
    let writer = {
        let zs = client(src).await;
        let root = root.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                mk(&zs, &format!("{root}/burst-{i}"), b"k").await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    run.task.abort();
    writer.await.unwrap();
    zs.delete(&format!("{root}/burst-1"), None).await.unwrap();
    assert!(
        !verify(&o).await.equal,
        "nothing should have copied the changes yet"
    );
    let again = start(LiveOptions::new(o.clone()));
    again.streaming().await;
    converges(&o).await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_change_fires_no_event_and_is_copied_by_the_periodic_re_walk() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-acl");
    let zs = client(src).await;
    build_tree(&zs, &root, 10, 10, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let mut lo = LiveOptions::new(o.clone());
    lo.resync_interval = Some(Duration::from_secs(2));
    let run = start(lo);
    run.streaming().await;
    let before = run.stats.snapshot().full_syncs;
    let child = zs.list_children(&root).await.unwrap()[0].clone();
    let read_write = [Acl::new(
        Permission::READ | Permission::WRITE,
        AuthId::anyone(),
    )];
    zs.set_acl(&format!("{root}/{child}"), &read_write, None)
        .await
        .unwrap();
    converges(&o).await;
    assert!(run.stats.snapshot().full_syncs > before);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_streams_until_sigterm() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-cli");
    let zs = client(src).await;
    build_tree(&zs, &root, 20, 10, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--continuous",
            "--progress",
            "0.3",
            "--root-path",
            &root,
        ])
        .args(["--verify-interval", "0.5", "--repair"])
        .args(["--listen", &metrics_addr, "--name", "cli-test"])
        .args([
            "--source",
            &src.connect_string(),
            "--destination",
            &dst.connect_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    converges(&o).await;
    for i in 0..10 {
        mk(&zs, &format!("{root}/cli-{i}"), b"c").await;
    }
    converges(&o).await;
    // Written on the destination behind the stream's back: the verifier confirms it and the
    // repair removes it.
    mk(&client(dst).await, &format!("{root}/intruder"), b"x").await;
    converges(&o).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let scrape = scrape_metrics(&metrics_addr).await;
    for needle in [
        "resiliency_sync_changes_applied_total{namespace=\"cli\",name=\"cli-test\"}",
        "resiliency_sync_lag_seconds_bucket{namespace=\"cli\",name=\"cli-test\",le=\"0.001\"}",
        "resiliency_sync_caught_up{namespace=\"cli\",name=\"cli-test\"} 1",
        "resiliency_sync_current_lag_seconds{namespace=\"cli\",name=\"cli-test\"} 0",
        "resiliency_sync_streaming{namespace=\"cli\",name=\"cli-test\"} 1",
        "resiliency_verify_runs_total{namespace=\"cli\",name=\"cli-test\",result=\"diverged\"} 1",
        "resiliency_verify_runs_total{namespace=\"cli\",name=\"cli-test\",result=\"in_sync\"}",
        "resiliency_sync_last_good_sync_timestamp_seconds{namespace=\"cli\",name=\"cli-test\"}",
        "resiliency_sync_repaired_paths_total{namespace=\"cli\",name=\"cli-test\"} 1",
        "resiliency_sync_session_connected{namespace=\"cli\",name=\"cli-test\",side=\"source\"} 1",
        "resiliency_sync_session_connected{namespace=\"cli\",name=\"cli-test\",side=\"destination\"} 1",
        "resiliency_sync_watch_events_total{namespace=\"cli\",name=\"cli-test\"}",
    ] {
        assert!(scrape.contains(needle), "{needle} missing from\n{scrape}");
    }
    promtool_check_metrics(&scrape);
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("continuous: Streaming"), "{stderr}");
    assert!(stderr.contains("lag p50"), "{stderr}");
    assert!(stderr.contains("continuous: stopped after"), "{stderr}");
    assert!(
        stderr.contains("verify: DIVERGED: 1 confirmed, 0 undecided: /intruder"),
        "{stderr}"
    );
    assert!(
        stderr.contains("verify: repaired 1 divergent subtrees"),
        "{stderr}"
    );
    assert!(stderr.contains("verify: IN SYNC"), "{stderr}");
}

async fn pools(o: &SyncOptions) -> (Vec<zookeeper_client::Client>, Vec<zookeeper_client::Client>) {
    (
        verifier::connect_pool(verifier::Side::Source, &o.source, 2)
            .await
            .unwrap(),
        verifier::connect_pool(verifier::Side::Destination, &o.destination, 2)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_aware_verifier_blames_nothing_under_heavy_writes() {
    use resiliency_operator::engine::judge;
    let (src, dst) = shared_pair();
    let root = unique_root("live-judge-busy");
    let zs = client(src).await;
    build_tree(&zs, &root, 300, 30, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let run = start(LiveOptions::new(o.clone()));
    run.streaming().await;
    let keys: Vec<String> = zs.list_children(&root).await.unwrap();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let zs = client(src).await;
        let (root, writing) = (root.clone(), writing.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let futs = (0..20).map(|j| {
                    let p = format!("{root}/{}", keys[(i + j) % keys.len()]);
                    let zs = &zs;
                    async move { zs.set_data(&p, &i.to_le_bytes(), None).await.unwrap() }
                });
                futures::future::join_all(futs).await;
                mk(&zs, &format!("{root}/busy-{i}"), b"b").await;
                i += 20;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (sp, dp) = pools(&o).await;
    let mut suspected = 0;
    for _ in 0..3 {
        let stats = run.stats.clone();
        let v = judge::judge(&sp, &dp, &o, 1000, Duration::from_millis(50), move || {
            stats.snapshot().caught_up
        })
        .await
        .unwrap();
        suspected += v.report.divergent_nodes;
        assert!(
            v.confirmed.is_empty(),
            "lag blamed as divergence: {:?}",
            v.confirmed
        );
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    // The full verifications did see the lag (otherwise this test proves nothing).
    assert!(suspected > 0, "the writes never showed as lag");
    converges(&o).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_aware_verifier_confirms_a_tampered_destination() {
    use resiliency_operator::engine::judge;
    let (src, dst) = shared_pair();
    let root = unique_root("live-judge-tamper");
    let zs = client(src).await;
    build_tree(&zs, &root, 50, 10, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let mut lo = LiveOptions::new(o.clone());
    lo.resync_interval = None;
    let run = start(lo);
    run.streaming().await;
    // Written on the destination behind the stream's back: no source event will fix it.
    let zd = client(dst).await;
    let victim = zs.list_children(&root).await.unwrap()[0].clone();
    zd.set_data(&format!("{root}/{victim}"), b"tampered", None)
        .await
        .unwrap();
    mk(&zd, &format!("{root}/intruder"), b"x").await;
    let (sp, dp) = pools(&o).await;
    let stats = run.stats.clone();
    let v = judge::judge(&sp, &dp, &o, 1000, Duration::from_millis(50), move || {
        stats.snapshot().caught_up
    })
    .await
    .unwrap();
    let mut confirmed = v.confirmed.clone();
    confirmed.sort();
    assert_eq!(
        confirmed,
        vec!["/intruder".to_string(), format!("/{victim}")]
    );
    assert!(!v.in_sync());
    // Repair re-syncs exactly those: the intruder goes, the data comes back.
    let nodes = v.report.destination_nodes;
    assert_eq!(
        judge::repair(&o, &v.confirmed, o.guard, nodes)
            .await
            .unwrap(),
        2
    );
    assert_equal(&o).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_source_root_stops_the_stream_and_keeps_the_destination_root() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-root-gone");
    let zs = client(src).await;
    mk(&zs, &root, b"root").await;
    let o = sync_opts(src, &root, dst, &root);
    let run = start(LiveOptions::new(o.clone()));
    run.streaming().await;
    zs.delete(&root, None).await.unwrap();
    wait_for(
        "the stream to stop on the missing root",
        Duration::from_secs(30),
        || async {
            let s = run.stats.snapshot();
            s.state == Some(LiveState::Retrying) && s.why.contains("does not exist")
        },
    )
    .await;
    let (data, _) = client(dst).await.get_data(&root).await.unwrap();
    assert_eq!(data, b"root", "the destination copy was kept");
    // Once the root is back, the stream resumes.
    mk(&zs, &root, b"back").await;
    converges(&o).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_noticed_and_the_tree_re_walked() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-cut");
    let zs = client(src).await;
    build_tree(&zs, &root, 100, 10, 8).await;
    let proxy = Proxy::start(src.port()).await;
    let mut o = sync_opts(src, &root, dst, &root);
    o.source = verifier::ConnectOptions::new(proxy.connect_string());
    // The session expires during the outage and reconnects give up quickly, so the outage sees
    // several failed reconnects.
    o.source.session_timeout = Duration::from_secs(4);
    o.source.connect_timeout = Duration::from_secs(1);
    let run = Continuous::start(
        ContinuousOptions::new(LiveOptions::new(o.clone())),
        vec![],
        None,
    );
    wait_for("streaming", Duration::from_secs(60), || async {
        run.snapshot().streaming()
    })
    .await;
    assert_eq!(run.snapshot().full_syncs, 1);

    // The network between the replicator and the source goes away; the source keeps changing.
    proxy.cut();
    for i in 0..30 {
        mk(&zs, &format!("{root}/during-cut-{i}"), b"c").await;
    }
    zs.set_data(&root, b"changed during the cut", None)
        .await
        .unwrap();
    wait_for("the cut noticed", Duration::from_secs(30), || async {
        run.snapshot().source.is_unreachable()
    })
    .await;
    // Through failed reconnects to the source, the destination is never blamed.
    wait_for("a failed reconnect", Duration::from_secs(30), || async {
        let s = run.snapshot();
        s.state == Some(LiveState::Retrying) && s.why.contains("source ensemble")
    })
    .await;
    for _ in 0..20 {
        let snap = run.snapshot();
        assert!(snap.source.is_unreachable(), "{snap:?}");
        assert_eq!(
            snap.destination,
            resiliency_operator::continuous::Reach::Connected,
            "the source's outage reported as the destination's: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snap = run.snapshot();
    assert!(!snap.streaming(), "{snap:?}");
    assert!(snap.why.contains("source"), "{}", snap.why);
    let lag = snap.lag(k8s_openapi::jiff::Timestamp::now());
    assert!(
        lag >= Duration::from_secs(2),
        "the lag must grow while cut off: {lag:?}"
    );

    proxy.heal();
    let mut verified = o.clone();
    verified.source = verifier::ConnectOptions::new(src.connect_string());
    converges(&verified).await;
    wait_for("streaming again", Duration::from_secs(60), || async {
        run.snapshot().streaming()
    })
    .await;
    let snap = run.snapshot();
    assert!(
        snap.full_syncs >= 2,
        "no anti-entropy pass after the cut: {snap:?}"
    );
    assert_eq!(
        snap.source,
        resiliency_operator::continuous::Reach::Connected
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_measures_lag_while_idle_and_the_verifier_stays_in_sync() {
    let (src, dst) = shared_pair();
    let root = unique_root("live-heartbeat");
    let zs = client(src).await;
    build_tree(&zs, &root, 50, 10, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let mut co = ContinuousOptions::new(LiveOptions::new(o.clone()));
    let hb = format!("{root}/.resiliency-heartbeat");
    co.heartbeat = Some(HeartbeatOptions {
        path: hb.clone(),
        interval: Duration::from_millis(200),
    });
    co.verify_interval = Some(Duration::from_millis(500));
    let run = Continuous::start(co, vec![], None);
    wait_for("three verifications", Duration::from_secs(60), || async {
        let s = run.snapshot();
        s.last_good_sync.is_some() && s.heartbeat_seen.is_some() && s.applied_total >= 10
    })
    .await;
    // Idle apart from the heartbeat: the lag stays small and nothing is late.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = k8s_openapi::jiff::Timestamp::now();
    let snap = run.snapshot();
    assert!(snap.streaming(), "{snap:?}");
    assert!(snap.heartbeat_error.is_none(), "{snap:?}");
    assert!(!snap.heartbeat_late(now), "{snap:?}");
    assert!(
        snap.lag(now) < Duration::from_secs(1),
        "{:?}",
        snap.lag(now)
    );
    let seen = now.duration_since(snap.heartbeat_seen.unwrap());
    assert!(seen.as_secs_f64() < 1.0, "last heartbeat {seen:?} ago");
    // The heartbeat is replicated like any node: the destination holds a recent time.
    let (data, _) = client(dst).await.get_data(&hb).await.unwrap();
    let written: i64 = String::from_utf8(data).unwrap().parse().unwrap();
    assert!((now.as_millisecond() - written).abs() < 5_000, "{written}");
    // A node written every 200 ms is never blamed.
    match &snap.last_verify.as_ref().unwrap().result {
        Ok(v) => assert_eq!(v.confirmed_count, 0, "{v:?}"),
        Err(e) => panic!("verification failed: {e}"),
    }
    run.stop().await.unwrap();
}
