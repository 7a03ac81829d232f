//! A stream at its limits, against real ZooKeeper servers: a tree another writer holds or a
//! source that keeps dropping the connection is tried again with a growing backoff the stream
//! reports, a node too big for the destination is left out and named while everything else
//! streams, and a destination root of `/` never touches ZooKeeper's own `/zookeeper`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resiliency_operator::continuous::{Continuous, ContinuousOptions};
use resiliency_operator::engine::claim;
use resiliency_operator::engine::live::{LiveOptions, LiveState, Observer};
use resiliency_operator::engine::SyncOptions;
use support::*;
use zookeeper_client::{Acls, CreateMode};

/// What a stream told its observer: claims refused, full syncs, every reason it gave.
#[derive(Default)]
struct Seen {
    refused: AtomicU64,
    full_syncs: AtomicU64,
    whys: Mutex<Vec<String>>,
}

impl Seen {
    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
    fn said(&self, what: &str) -> bool {
        self.whys.lock().unwrap().iter().any(|w| w.contains(what))
    }
    fn full_syncs(&self) -> u64 {
        self.full_syncs.load(Ordering::SeqCst)
    }
}

impl Observer for Seen {
    fn state(&self, _state: LiveState, why: &str) {
        self.whys.lock().unwrap().push(why.to_string());
    }
    fn full_sync(&self, _summary: &resiliency_operator::engine::SyncSummary) {
        self.full_syncs.fetch_add(1, Ordering::SeqCst);
    }
    fn claim_refused(&self, _reason: &'static str) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }
}

fn stream(o: &SyncOptions, seen: &Arc<Seen>) -> Continuous {
    let mut lo = LiveOptions::new(o.clone());
    lo.resync_interval = None;
    Continuous::start(
        ContinuousOptions::new(lo),
        vec![seen.clone() as Arc<dyn Observer>],
        None,
    )
}

async fn streaming(run: &Continuous) {
    wait_for("streaming", Duration::from_secs(60), || async {
        run.snapshot().streaming()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_another_writer_holds_is_claimed_again_with_a_growing_backoff() {
    let (src, dst) = shared_pair();
    let root = unique_root("limits-claimed");
    build_tree(&client(src).await, &root, 20, 5, 8).await;
    let o = sync_opts(src, &root, dst, &root);
    let other = claim::acquire(&o, "another writer (test)").await.unwrap();
    let seen = Arc::new(Seen::default());
    let run = stream(&o, &seen);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // 1 s, 2 s, 4 s, 8 s between attempts: four in ten seconds, where a hot loop makes dozens.
    let attempts = seen.refused();
    assert!((2..=4).contains(&attempts), "{attempts} claims in 10 s");
    let snap = run.snapshot();
    assert_eq!(snap.state, Some(LiveState::Retrying), "{snap:?}");
    assert!(
        snap.why.contains("retrying in")
            && snap.why.contains(&format!("after {attempts} failures")),
        "{}",
        snap.why
    );
    assert!(snap.why.contains("another writer (test)"), "{}", snap.why);
    let retry = snap.retry.clone().expect("the backoff in the snapshot");
    assert_eq!(retry.failures as u64, attempts);
    assert!(retry.wait >= Duration::from_secs(4), "{retry:?}");
    // Nothing was written while the tree was held.
    assert!(client(dst)
        .await
        .check_stat(&format!("{root}/n0000"))
        .await
        .unwrap()
        .is_none());

    // The other writer goes: the stream takes the tree at its next attempt.
    other.release().await;
    streaming(&run).await;
    converges(&o).await;
    assert!(run.snapshot().retry.is_none());
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_source_connection_is_not_re_walked_at_every_reconnect() {
    let (src, dst) = shared_pair();
    let root = unique_root("limits-flapping");
    let zs = client(src).await;
    build_tree(&zs, &root, 100, 10, 8).await;
    let proxy = Proxy::start(src.port()).await;
    let mut o = sync_opts(src, &root, dst, &root);
    o.source = verifier::ConnectOptions::new(proxy.connect_string());
    let seen = Arc::new(Seen::default());
    let run = stream(&o, &seen);
    streaming(&run).await;
    let before = seen.full_syncs();

    // Each reconnect may have lost events, so it ends the epoch: a hot loop re-walks the tree
    // at every one of them.
    for i in 0..12 {
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.heal();
        mk(&zs, &format!("{root}/flap-{i}"), b"f").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rewalks = seen.full_syncs() - before;
    assert!(rewalks <= 5, "{rewalks} full syncs in 12 reconnects");
    assert!(seen.said("retrying in"), "the backoff was never reported");

    let mut direct = o.clone();
    direct.source = verifier::ConnectOptions::new(src.connect_string());
    converges(&direct).await;
    run.stop().await.unwrap();
}

/// A destination that takes requests of at most 256 KiB, a source that takes 1 MiB.
fn small_destination() -> ZkServer {
    ZkServer::start(ZkOptions {
        jute_maxbuffer: Some(256 << 10),
        ..ZkOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_too_big_for_the_destination_is_reported_and_the_rest_streams() {
    let src = &shared_pair().0;
    let dst = small_destination();
    let root = unique_root("limits-big");
    let zs = client(src).await;
    build_tree(&zs, &root, 30, 10, 8).await;
    // Too big before the stream starts: its full sync leaves it (and its child) out.
    let early = format!("{root}/early-big");
    mk(&zs, &early, &vec![1u8; 400 << 10]).await;
    mk(&zs, &format!("{early}/child"), b"c").await;
    let o = sync_opts(src, &root, &dst, &root);
    let seen = Arc::new(Seen::default());
    let run = stream(&o, &seen);
    streaming(&run).await;
    let zd = client(&dst).await;
    assert!(zd.check_stat(&early).await.unwrap().is_none());
    assert_eq!(
        zd.get_data(&format!("{root}/n0001")).await.unwrap().0,
        vec![0, 1, 2, 3, 4, 5, 6, 7]
    );

    // Too big while streaming: a new node, and an existing one that grows past the limit.
    let late = format!("{root}/late-big");
    let grown = format!("{root}/n0002");
    mk(&zs, &late, &vec![2u8; 300 << 10]).await;
    zs.set_data(&grown, &vec![3u8; 500 << 10], None)
        .await
        .unwrap();
    // Everything else keeps flowing, in the same batches and after them.
    mk(&zs, &format!("{root}/beside"), b"b").await;
    zs.set_data(&format!("{root}/n0003"), b"updated", None)
        .await
        .unwrap();
    wait_for("the rest streamed", Duration::from_secs(30), || async {
        zd.get_data(&format!("{root}/n0003"))
            .await
            .is_ok_and(|(d, _)| d == b"updated")
            && zd
                .check_stat(&format!("{root}/beside"))
                .await
                .unwrap()
                .is_some()
    })
    .await;
    mk(&zs, &format!("{root}/after"), b"a").await;
    wait_for(
        "a later change streamed",
        Duration::from_secs(30),
        || async {
            zd.check_stat(&format!("{root}/after"))
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;

    // Each is named with its size, and the stream streams on: no restart loop.
    let snap = run.snapshot();
    assert!(snap.streaming(), "{snap:?}");
    let named: Vec<(String, usize)> = snap
        .oversized
        .iter()
        .map(|n| (n.path.clone(), n.size))
        .collect();
    for (path, at_least) in [(&early, 400 << 10), (&late, 300 << 10), (&grown, 500 << 10)] {
        assert!(
            named.iter().any(|(p, s)| p == path && *s >= at_least),
            "{path} not reported: {named:?}"
        );
    }
    assert_eq!(snap.oversized_limit, Some(256 << 10), "{snap:?}");
    assert_eq!(seen.full_syncs(), 1, "the stream re-walked");
    assert!(!snap.why.contains("retrying"), "{}", snap.why);
    let zd_grown = zd.get_data(&grown).await.unwrap().0;
    assert_eq!(
        zd_grown,
        vec![0, 1, 2, 3, 4, 5, 6, 7],
        "stale, not half-written"
    );

    // The verifier keeps showing exactly those as divergent: never in sync.
    let r = verify(&o).await;
    assert!(!r.equal);
    assert_eq!(r.destination_nodes, r.source_nodes - 3, "{}", r.render());
    let mut divergent: Vec<String> = r.divergences.iter().map(|d| d.path.clone()).collect();
    divergent.sort();
    divergent.dedup();
    let rel = |p: &str| p.strip_prefix(root.as_str()).unwrap().to_string();
    let mut expected = vec![
        rel(&early),
        format!("{}/child", rel(&early)),
        rel(&grown),
        rel(&late),
    ];
    expected.sort();
    assert_eq!(divergent, expected, "{}", r.render());

    // Shrunk back under the limit, each is copied (the early one with its subtree).
    zs.set_data(&early, b"small now", None).await.unwrap();
    zs.set_data(&late, b"small now", None).await.unwrap();
    zs.set_data(&grown, b"small now", None).await.unwrap();
    converges(&o).await;
    wait_for("nothing reported", Duration::from_secs(30), || async {
        run.snapshot().oversized.is_empty()
    })
    .await;
    run.stop().await.unwrap();
}

/// The destination's `/zookeeper` subtree: every node with its stat, and the data of
/// `/zookeeper/config`. Equal before and after: nothing there was written or deleted.
async fn system_tree(server: &ZkServer) -> (Vec<(String, verifier::NodeStat)>, Vec<u8>) {
    let tree = fingerprint(server, "/zookeeper").await;
    let (config, _) = client(server)
        .await
        .get_data("/zookeeper/config")
        .await
        .unwrap();
    (tree, config)
}

/// Nodes under `/zookeeper/quota` of `server`, as quotas make them (a person may set some on
/// the destination too).
async fn quota_nodes(server: &ZkServer, name: &str) {
    let c = client(server).await;
    mk(&c, &format!("/zookeeper/quota/{name}"), b"").await;
    mk(
        &c,
        &format!("/zookeeper/quota/{name}/zookeeper_limits"),
        b"count=10,bytes=-1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_of_slash_streams_everything_but_the_zookeeper_subtree() {
    let (src, dst) = std::thread::scope(|s| {
        let a = s.spawn(ZkServer::start_default);
        let b = s.spawn(ZkServer::start_default);
        (a.join().unwrap(), b.join().unwrap())
    });
    let zs = client(&src).await;
    let zd = client(&dst).await;
    build_tree(&zs, "/app", 50, 10, 8).await;
    // Churn under / on the source only: its cversion is far above the destination's, so the
    // copy raises the cversion of / itself.
    for i in 0..20 {
        mk(&zs, &format!("/churn-{i}"), b"").await;
        zs.delete(&format!("/churn-{i}"), None).await.unwrap();
    }
    quota_nodes(&src, "app").await;
    quota_nodes(&dst, "kept").await;
    mk(&zd, "/stale", b"destination only").await;
    let before = system_tree(&dst).await;

    let o = sync_opts(&src, "/", &dst, "/");
    let seen = Arc::new(Seen::default());
    let run = stream(&o, &seen);
    streaming(&run).await;
    // Creates, updates, a subtree deleted, sequential children of / itself.
    mk(&zs, "/new", b"n").await;
    mk(&zs, "/new/deeper", b"d").await;
    zs.set_data("/app/n0001", b"updated", None).await.unwrap();
    for c in zs.list_children("/app/n0002").await.unwrap() {
        zs.delete(&format!("/app/n0002/{c}"), None).await.unwrap();
    }
    zs.delete("/app/n0002", None).await.unwrap();
    zs.create(
        "/seq-",
        b"s",
        &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    converges(&o).await;
    run.stop().await.unwrap();

    assert!(zd.check_stat("/stale").await.unwrap().is_none(), "pruned");
    assert_eq!(zd.get_data("/app/n0001").await.unwrap().0, b"updated");
    let after = system_tree(&dst).await;
    assert_eq!(before, after, "the destination's /zookeeper was written");
    assert!(zd
        .check_stat("/zookeeper/quota/app")
        .await
        .unwrap()
        .is_none());

    // A one-shot copy and a verification with the same roots leave it alone too.
    mk(&zs, "/once", b"o").await;
    resiliency_operator::engine::sync(&o).await.unwrap();
    assert_equal(&o).await;
    assert_eq!(before, system_tree(&dst).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_child_named_zookeeper_is_never_written_onto_the_destination_zookeeper() {
    let (src, dst) = std::thread::scope(|s| {
        let a = s.spawn(ZkServer::start_default);
        let b = s.spawn(ZkServer::start_default);
        (a.join().unwrap(), b.join().unwrap())
    });
    let zs = client(&src).await;
    let zd = client(&dst).await;
    build_tree(&zs, "/tenant", 20, 5, 8).await;
    // Under /tenant this is an ordinary node; copied onto / it would land on the server's own.
    mk(&zs, "/tenant/zookeeper", b"tenant data").await;
    mk(&zs, "/tenant/zookeeper/config", b"not a config").await;
    mk(&zs, "/tenant/zookeeper/quota", b"").await;
    quota_nodes(&dst, "kept").await;
    let before = system_tree(&dst).await;

    let o = sync_opts(&src, "/tenant", &dst, "/");
    let seen = Arc::new(Seen::default());
    let run = stream(&o, &seen);
    streaming(&run).await;
    // Streamed changes there are left out too: creates, updates and deletes.
    mk(&zs, "/tenant/zookeeper/new", b"n").await;
    zs.set_data("/tenant/zookeeper/config", b"changed", None)
        .await
        .unwrap();
    zs.delete("/tenant/zookeeper/quota", None).await.unwrap();
    mk(&zs, "/tenant/beside", b"b").await;
    wait_for("the rest streamed", Duration::from_secs(30), || async {
        zd.check_stat("/beside").await.unwrap().is_some()
    })
    .await;
    assert_eq!(
        zd.get_data("/n0001").await.unwrap().0,
        vec![0, 1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        before,
        system_tree(&dst).await,
        "the destination's /zookeeper was written"
    );
    let snap = run.snapshot();
    assert!(snap.streaming(), "{snap:?}");
    assert_eq!(seen.full_syncs(), 1, "the stream re-walked");
    // The verifier says the copy lacks them: never in sync.
    let r = verify(&o).await;
    assert!(!r.equal, "{}", r.render());
    assert!(
        r.divergences
            .iter()
            .all(|d| d.path.starts_with("/zookeeper")),
        "{}",
        r.render()
    );
    run.stop().await.unwrap();

    // A one-shot copy leaves them out the same way, and so does its repair of the divergence.
    resiliency_operator::engine::sync(&o).await.unwrap();
    let confirmed = vec!["/zookeeper".to_string()];
    let guard = resiliency_operator::engine::DeletionGuard::default();
    resiliency_operator::engine::judge::repair(&o, &confirmed, guard, 100)
        .await
        .unwrap();
    assert_eq!(before, system_tree(&dst).await);
}
