//! Repeated verification with an ACL cache against real servers: an unchanged tree is verified
//! again without a getACL per node, and every ACL change in between is still seen.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use verifier::{AclCacheStats, DivergenceClass, Report, VerifyCache, VerifyOptions};
use zookeeper_client::{Acl, AuthId, Client, CreateMode, Permission};

/// The ACLs the test trees use: three distinct ones, all readable from loopback.
fn acls() -> [Vec<Acl>; 3] {
    [
        vec![Acl::new(Permission::ALL, AuthId::anyone())],
        vec![Acl::new(Permission::READ, AuthId::anyone())],
        vec![
            Acl::new(Permission::ALL, AuthId::new("ip", "127.0.0.1")),
            Acl::new(Permission::READ, AuthId::anyone()),
        ],
    ]
}

/// The same tree on both servers, built node by node (no copy), so both sides have equal
/// content and every node is at aversion 0: 1 root, 3 directories, 40 leaves each.
async fn build_both(root: &str) -> (Client, Client) {
    let (s, d) = shared_pair();
    let (c, dc) = (client(s).await, client(d).await);
    let acls = acls();
    for z in [&c, &dc] {
        mk(z, root, b"root").await;
        for dir in 0..3 {
            let dp = format!("{root}/d{dir}");
            mk(z, &dp, b"dir").await;
            for leaf in 0..40 {
                let acl = &acls[(dir + leaf) % 3];
                let data = format!("{dir}-{leaf}");
                let p = format!("{dp}/n{leaf:02}");
                mk_with(z, &p, data.as_bytes(), CreateMode::Persistent, acl).await;
            }
        }
    }
    (c, dc)
}

const NODES: u64 = 1 + 3 + 3 * 40;

async fn pools() -> (Vec<Client>, Vec<Client>) {
    let (s, d) = shared_pair();
    let so = verifier::ConnectOptions::new(s.connect_string());
    let dopt = verifier::ConnectOptions::new(d.connect_string());
    (
        verifier::connect_pool(verifier::Side::Source, &so, 2)
            .await
            .unwrap(),
        verifier::connect_pool(verifier::Side::Destination, &dopt, 2)
            .await
            .unwrap(),
    )
}

fn cache() -> VerifyCache {
    let (s, d) = shared_pair();
    VerifyCache::new(&s.connect_string(), &d.connect_string())
}

/// One verification, with the cache's counters it moved: (source, destination).
async fn run(
    root: &str,
    cache: Option<&VerifyCache>,
) -> (Report, Option<(AclCacheStats, AclCacheStats)>) {
    let (src, dst) = pools().await;
    let o = VerifyOptions::default();
    match cache {
        None => (
            verifier::verify(&src, root, &dst, root, o).await.unwrap(),
            None,
        ),
        Some(c) => {
            let before = c.stats();
            let r = verifier::verify_cached(&src, root, &dst, root, o, c)
                .await
                .unwrap();
            let after = c.stats();
            let moved = |b: AclCacheStats, a: AclCacheStats| AclCacheStats {
                hits: a.hits - b.hits,
                reads: a.reads - b.reads,
                ..a
            };
            (
                r,
                Some((moved(before.0, after.0), moved(before.1, after.1))),
            )
        }
    }
}

fn divergences(r: &Report) -> Vec<(String, DivergenceClass)> {
    r.divergences
        .iter()
        .map(|d| (d.path.clone(), d.class))
        .collect()
}

/// The facts of a report that a cache must not change.
fn verdict(r: &Report) -> (bool, String, String, u64, u64) {
    (
        r.equal,
        r.source_root_hash.clone(),
        r.destination_root_hash.clone(),
        r.source_nodes,
        r.destination_nodes,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_tree_is_verified_again_without_a_get_acl() {
    let root = unique_root("reverify-same");
    build_both(&root).await;
    let (plain, _) = run(&root, None).await;
    assert!(plain.equal, "{}", plain.render());
    assert_eq!(plain.source_nodes, NODES);

    let c = cache();
    let (first, moved) = run(&root, Some(&c)).await;
    let (s, d) = moved.unwrap();
    // Nothing cached yet: every ACL is read, as without a cache.
    assert_eq!((s.reads, s.hits, s.entries), (NODES, 0, NODES as usize));
    assert_eq!((d.reads, d.hits, d.entries), (NODES, 0, NODES as usize));
    assert_eq!(verdict(&first), verdict(&plain));
    // Three distinct ACLs, each held once per side.
    assert_eq!((s.acls, d.acls), (3, 3));
    assert!(s.memory_bytes >= NODES as usize * verifier::acl_cache::ENTRY_BYTES);

    let (second, moved) = run(&root, Some(&c)).await;
    let (s, d) = moved.unwrap();
    assert_eq!(
        (s.reads, s.hits),
        (0, NODES),
        "source getACLs on the re-run"
    );
    assert_eq!(
        (d.reads, d.hits),
        (0, NODES),
        "destination getACLs on the re-run"
    );
    assert_eq!(verdict(&second), verdict(&first));
    assert_eq!(second.source_root_hash, second.destination_root_hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_acl_between_verifications_is_seen() {
    let root = unique_root("reverify-setacl");
    let (c, dc) = build_both(&root).await;
    let cache = cache();
    let (first, _) = run(&root, Some(&cache)).await;
    assert!(first.equal, "{}", first.render());

    // Same data, same czxid, only the aversion moves.
    let victim = format!("{root}/d1/n07");
    let narrow = [Acl::new(
        Permission::READ | Permission::ADMIN,
        AuthId::anyone(),
    )];
    dc.set_acl(&victim, &narrow, None).await.unwrap();
    let (second, moved) = run(&root, Some(&cache)).await;
    let (s, d) = moved.unwrap();
    assert!(!second.equal);
    assert_eq!(
        divergences(&second),
        vec![("/d1/n07".to_string(), DivergenceClass::AclDiffers)]
    );
    assert_eq!(second.source_root_hash, first.source_root_hash);
    assert_ne!(second.destination_root_hash, first.destination_root_hash);
    // Exactly the changed node was read again.
    assert_eq!((s.reads, d.reads), (0, 1));
    assert_eq!(verdict(&run(&root, None).await.0), verdict(&second));

    // The same change on the source: equal again, with a new root hash on both sides.
    c.set_acl(&victim, &narrow, None).await.unwrap();
    let (third, moved) = run(&root, Some(&cache)).await;
    let (s, d) = moved.unwrap();
    assert!(third.equal, "{}", third.render());
    assert_ne!(third.source_root_hash, first.source_root_hash);
    assert_eq!(third.source_root_hash, second.destination_root_hash);
    assert_eq!((s.reads, d.reads), (1, 0));
    assert_eq!(verdict(&run(&root, None).await.0), verdict(&third));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_created_again_with_another_acl_is_seen() {
    let root = unique_root("reverify-recreate");
    let (_, dc) = build_both(&root).await;
    let cache = cache();
    let (first, _) = run(&root, Some(&cache)).await;
    assert!(first.equal, "{}", first.render());

    let victim = format!("{root}/d2/n10");
    let (data, old) = dc.get_data(&victim).await.unwrap();
    dc.delete(&victim, None).await.unwrap();
    let other = [Acl::new(Permission::ALL, AuthId::new("ip", "127.0.0.1"))];
    mk_with(&dc, &victim, &data, CreateMode::Persistent, &other).await;
    let (_, new) = dc.get_data(&victim).await.unwrap();
    // What the test is about: the ACL version starts over, only the creation tells.
    assert_eq!((old.aversion, new.aversion), (0, 0));
    assert_ne!(old.czxid, new.czxid);

    let (second, moved) = run(&root, Some(&cache)).await;
    let (s, d) = moved.unwrap();
    assert_eq!(
        divergences(&second),
        vec![("/d2/n10".to_string(), DivergenceClass::AclDiffers)]
    );
    assert_eq!(second.source_root_hash, first.source_root_hash);
    assert_ne!(second.destination_root_hash, first.destination_root_hash);
    assert_eq!((s.reads, d.reads), (0, 1));
    assert_eq!(verdict(&run(&root, None).await.0), verdict(&second));
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_without_a_cache_reads_as_before() {
    let root = unique_root("reverify-plain");
    let (_, dc) = build_both(&root).await;
    let cache = cache();
    // A cache filled by other runs changes nothing for a run without it.
    run(&root, Some(&cache)).await;
    let victim = format!("{root}/d0/n03");
    dc.set_acl(&victim, &acls()[1], None).await.unwrap();
    let before = cache.stats();
    let (plain, moved) = run(&root, None).await;
    assert!(moved.is_none());
    assert_eq!(
        divergences(&plain),
        vec![("/d0/n03".to_string(), DivergenceClass::AclDiffers)]
    );
    assert_eq!(plain.source_nodes, NODES);
    assert_eq!(cache.stats(), before, "an uncached run touched the cache");
    let (cached, _) = run(&root, Some(&cache)).await;
    assert_eq!(verdict(&cached), verdict(&plain));
    assert_eq!(divergences(&cached), divergences(&plain));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_walk_drops_the_entries_of_nodes_gone_from_the_tree() {
    let root = unique_root("reverify-churn");
    let (c, dc) = build_both(&root).await;
    let cache = cache();
    run(&root, Some(&cache)).await;
    for z in [&c, &dc] {
        for leaf in 0..40 {
            z.delete(&format!("{root}/d0/n{leaf:02}"), None)
                .await
                .unwrap();
        }
        z.delete(&format!("{root}/d0"), None).await.unwrap();
    }
    let (r, moved) = run(&root, Some(&cache)).await;
    let (s, d) = moved.unwrap();
    assert!(r.equal, "{}", r.render());
    assert_eq!(r.source_nodes, NODES - 41);
    assert_eq!(
        (s.entries, d.entries),
        ((NODES - 41) as usize, (NODES - 41) as usize)
    );
    assert_eq!((s.reads, d.reads), (0, 0));
}

/// The lag-aware verifier's rechecks take unchanged ACLs from the cache as well: with a
/// cache its suspects cost no getACL, and the divergence is still confirmed.
#[tokio::test(flavor = "multi_thread")]
async fn the_lag_aware_rechecks_use_the_cache() {
    use resiliency_operator::engine::judge;
    let root = unique_root("reverify-judge");
    let (_, dc) = build_both(&root).await;
    let (s, d) = shared_pair();
    let o = sync_opts(s, &root, d, &root);
    dc.set_acl(&format!("{root}/d1/n01"), &acls()[0], None)
        .await
        .unwrap();
    let (src, dst) = pools().await;
    let cache = cache();
    let sides = judge::Sides {
        source: &src,
        destination: &dst,
        cache: Some(&cache),
    };
    let settle = Duration::from_millis(20);
    let v = judge::judge_delayed(sides, &o, 1000, settle, || true, |_| false)
        .await
        .unwrap();
    assert_eq!(v.confirmed, vec!["/d1/n01".to_string()]);
    // One getACL per node for the walk, none for the two rechecks.
    let (sc, dcs) = cache.stats();
    assert_eq!((sc.reads, dcs.reads), (NODES, NODES));
    assert_eq!((sc.hits, dcs.hits), (2, 2));
    // The uncached judge agrees.
    let plain = judge::judge(&src, &dst, &o, 1000, settle, || true)
        .await
        .unwrap();
    assert_eq!(plain.confirmed, v.confirmed);
    assert_eq!(
        plain.report.destination_root_hash,
        v.report.destination_root_hash
    );
}
