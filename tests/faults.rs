//! Faults injected for real: a destination restarted or lost in the middle of a copy.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;

const NODES: usize = 60_000;

fn node_count(server: &ZkServer) -> usize {
    server
        .four_letter("srvr")
        .ok()
        .and_then(|o| {
            o.lines().find_map(|l| {
                l.strip_prefix("Node count: ")
                    .map(|n| n.trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// Waits until part of the tree has landed on `dst`; returns how many nodes it holds.
async fn copy_under_way(dst: &ZkServer) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node_count(dst) < 5_000 {
        assert!(std::time::Instant::now() < deadline, "copy never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node_count(dst)
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_restarted_mid_copy_is_retried_to_an_equal_tree() {
    let src = ZkServer::start_default();
    let mut dst = ZkServer::start_default();
    let root = "/restart";
    build_tree(&client(&src).await, root, NODES, 50, 64).await;
    let mut o = sync_opts(&src, root, &dst, root);
    o.retries = 8;
    let copy = tokio::spawn(async move { resiliency_operator::engine::sync(&o).await });
    // Restart the destination once part of the tree has landed.
    let landed = copy_under_way(&dst).await;
    dst.restart();
    let summary = copy.await.unwrap().unwrap();
    if landed < NODES {
        assert!(
            summary.attempts >= 2,
            "restart did not interrupt the copy: {}",
            summary.render()
        );
    }
    let o = sync_opts(&src, root, &dst, root);
    let r = assert_equal(&o).await;
    assert_eq!(r.source_nodes, NODES as u64 + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_lost_for_good_is_a_failed_copy_not_a_success() {
    let src = ZkServer::start_default();
    let mut dst = ZkServer::start_default();
    let root = "/lost";
    build_tree(&client(&src).await, root, NODES, 50, 64).await;
    let mut o = sync_opts(&src, root, &dst, root);
    o.retries = 1;
    o.destination.connect_timeout = Duration::from_secs(2);
    o.destination.session_timeout = Duration::from_secs(4);
    let copy = tokio::spawn(async move { resiliency_operator::engine::sync(&o).await });
    let landed = copy_under_way(&dst).await;
    dst.kill();
    let result = tokio::time::timeout(Duration::from_secs(120), copy)
        .await
        .unwrap()
        .unwrap();
    if landed < NODES {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("destination"), "{err}");
    }
}
