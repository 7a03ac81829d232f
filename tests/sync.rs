//! One-shot copy against real ZooKeeper servers.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use resiliency_operator::engine::TypeRule;
use support::*;
use verifier::model::NodeKind;
use verifier::EphemeralPolicy;
use zookeeper_client::{Acl, AuthId, CreateMode, Permission};

#[tokio::test(flavor = "multi_thread")]
async fn copies_a_small_tree_and_second_run_writes_nothing() {
    let (s, d) = shared_pair();
    let root = unique_root("small");
    let c = client(s).await;
    mk(&c, &root, b"top").await;
    mk(&c, &format!("{root}/a"), b"").await;
    mk(&c, &format!("{root}/a/b"), &[0, 1, 2, 255, 0]).await;
    mk(&c, &format!("{root}/c"), b"hello").await;
    let o = sync_opts(s, &root, d, &root);
    let first = resiliency_operator::engine::sync(&o).await.unwrap();
    assert_eq!(first.created.persistent, 4, "{}", first.render());
    assert_eq!(first.source_nodes, 4);
    assert_equal(&o).await;

    let before = fingerprint(d, &root).await;
    let second = resiliency_operator::engine::sync(&o).await.unwrap();
    assert!(second.unchanged(), "{}", second.render());
    assert_eq!(second.write_ops, 0);
    assert_eq!(
        fingerprint(d, &root).await,
        before,
        "an idempotent re-run wrote to the destination"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_type() {
    let (s, d) = shared_pair();
    let root = unique_root("kinds");
    let c = client(s).await;
    mk(&c, &root, b"").await;
    mk(&c, &format!("{root}/plain"), b"p").await;
    let q = format!("{root}/queue");
    mk(&c, &q, b"").await;
    for _ in 0..5 {
        mk_with(
            &c,
            &format!("{q}/item-"),
            b"seq",
            CreateMode::PersistentSequential,
            &[Acl::new(Permission::ALL, AuthId::anyone())],
        )
        .await;
    }
    // Consume two: the parent's cversion is now 7 with 3 children.
    let mut kids = c.list_children(&q).await.unwrap();
    kids.sort();
    c.delete(&format!("{q}/{}", kids[0]), None).await.unwrap();
    c.delete(&format!("{q}/{}", kids[1]), None).await.unwrap();
    let open_acl = [Acl::new(Permission::ALL, AuthId::anyone())];
    mk_with(
        &c,
        &format!("{root}/container"),
        b"c",
        CreateMode::Container,
        &open_acl,
    )
    .await;
    mk(
        &c,
        &format!("{root}/container/child"),
        b"keeps the container alive",
    )
    .await;
    c.create(
        &format!("{root}/ttl"),
        b"t",
        &CreateMode::Persistent
            .with_acls(open())
            .with_ttl(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    mk_with(
        &c,
        &format!("{root}/eph"),
        b"e",
        CreateMode::Ephemeral,
        &open_acl,
    )
    .await;

    let mut o = sync_opts(s, &root, d, &root);
    // The server reports containers and TTL nodes as persistent: rules name them.
    o.type_rules = vec![
        TypeRule::new(&format!("{root}/container"), NodeKind::Container).unwrap(),
        TypeRule::new(&format!("{root}/t*"), NodeKind::Ttl { ttl_ms: 3_600_000 }).unwrap(),
    ];
    let sum = resiliency_operator::engine::sync(&o).await.unwrap();
    assert_eq!(sum.created.sequential, 3, "{}", sum.render());
    assert_eq!(sum.created.container, 1, "{}", sum.render());
    assert_eq!(sum.created.ttl, 1);
    assert_eq!(sum.skipped.ephemeral, 1);
    // The queue (7 changes, 3 children copied) and the root (5 changes, 4 copied).
    assert_eq!(sum.cversion_raised, 2);
    assert_equal(&o).await;
    let again = resiliency_operator::engine::sync(&o).await.unwrap();
    assert!(again.unchanged(), "{}", again.render());

    // The destination's transaction log shows what the server created.
    let log = txn_log(d);
    assert!(
        logged(&log, "createContainer", &format!("{root}/container")),
        "no createContainer for {root}/container"
    );
    assert!(
        logged(&log, "createTtl", &format!("{root}/ttl")),
        "no createTtl for {root}/ttl"
    );
    assert!(logged(&log, "create", &format!("{root}/plain")));
    assert!(!logged(&log, "createContainer", &format!("{root}/plain")));

    let dc = client(d).await;
    assert!(dc
        .check_stat(&format!("{root}/eph"))
        .await
        .unwrap()
        .is_none());
    // Same names, and the next sequential number continues after the source's.
    let mut dkids = dc.list_children(&q).await.unwrap();
    dkids.sort();
    assert_eq!(dkids, kids[2..].to_vec());
    let (_, src_seq) = c
        .create(
            &format!("{q}/item-"),
            b"",
            &CreateMode::PersistentSequential.with_acls(open()),
        )
        .await
        .unwrap();
    let (_, dst_seq) = dc
        .create(
            &format!("{q}/item-"),
            b"",
            &CreateMode::PersistentSequential.with_acls(open()),
        )
        .await
        .unwrap();
    assert!(
        dst_seq.into_i64() >= src_seq.into_i64(),
        "destination sequence {dst_seq} went below source {src_seq}"
    );

    // Ephemerals as persistent.
    let mut o2 = sync_opts(s, &root, d, &unique_root("kinds-eph"));
    o2.ephemerals = EphemeralPolicy::Persistent;
    let sum = resiliency_operator::engine::sync(&o2).await.unwrap();
    assert_eq!(sum.skipped.ephemeral, 0);
    assert_equal(&o2).await;
    let (_, st) = dc
        .get_data(&format!("{}/eph", o2.destination_root))
        .await
        .unwrap();
    assert_eq!(st.ephemeral_owner, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn acls_are_copied_exactly_including_ones_that_lock_the_copier_out() {
    let (s, d) = shared_pair();
    let root = unique_root("acl");
    let admin = "admin:secret";
    let admin_id = verifier::DigestAuth::parse(admin).unwrap().acl_id();
    let c = client_at(&s.connect_string(), Some(admin)).await;
    mk(&c, &root, b"").await;
    // Readable only with the admin credentials.
    let private = [Acl::new(Permission::ALL, AuthId::new("digest", &admin_id))];
    mk_with(
        &c,
        &format!("{root}/private"),
        b"secret data",
        CreateMode::Persistent,
        &private,
    )
    .await;
    // World-readable only: nobody may add children once it exists.
    let read_only = [Acl::new(Permission::READ, AuthId::anyone())];
    mk(&c, &format!("{root}/frozen"), b"f").await;
    mk(&c, &format!("{root}/frozen/child"), b"x").await;
    mk(&c, &format!("{root}/frozen/child/grandchild"), b"y").await;
    c.set_acl(&format!("{root}/frozen/child"), &read_only, None)
        .await
        .unwrap();
    c.set_acl(&format!("{root}/frozen"), &read_only, None)
        .await
        .unwrap();
    let mixed = [
        Acl::new(Permission::READ | Permission::WRITE, AuthId::anyone()),
        Acl::new(Permission::ALL, AuthId::new("digest", &admin_id)),
    ];
    mk_with(
        &c,
        &format!("{root}/mixed"),
        b"m",
        CreateMode::Persistent,
        &mixed,
    )
    .await;

    // Without credentials the source cannot be read: a clear error, nothing written.
    let o_anon = sync_opts(s, &root, d, &root);
    let err = resiliency_operator::engine::sync(&o_anon)
        .await
        .unwrap_err()
        .to_string();
    // /private cannot be read at all; /mixed can, but its digest hash comes back hidden.
    assert!(
        err.contains("not authorized") && (err.contains("/private") || err.contains("/mixed")),
        "{err}"
    );
    // The root was readable, so the copy started; the unreadable node was never created.
    let dc = client_at(&d.connect_string(), Some(admin)).await;
    assert!(dc
        .check_stat(&format!("{root}/private"))
        .await
        .unwrap()
        .is_none());

    let mut o = sync_opts(s, &root, d, &root);
    o.source.auth = Some(verifier::DigestAuth::parse(admin).unwrap());
    o.destination.auth = Some(verifier::DigestAuth::parse(admin).unwrap());
    resiliency_operator::engine::sync(&o).await.unwrap();
    assert_equal(&o).await;
    let (acl, _) = dc.get_acl(&format!("{root}/frozen")).await.unwrap();
    assert_eq!(acl, read_only.to_vec());
    let (data, _) = dc
        .get_data(&format!("{root}/frozen/child/grandchild"))
        .await
        .unwrap();
    assert_eq!(data, b"y");
    // Re-run over locked nodes is a no-op.
    let again = resiliency_operator::engine::sync(&o).await.unwrap();
    assert!(again.unchanged(), "{}", again.render());

    // ACL copy off: ACLs are neither compared nor copied.
    let mut o2 = sync_opts(s, &root, d, &unique_root("acl-off"));
    o2.source.auth = o.source.auth.clone();
    o2.destination.auth = o.destination.auth.clone();
    o2.copy_acl = false;
    resiliency_operator::engine::sync(&o2).await.unwrap();
    assert_equal(&o2).await;
    let (acl, _) = dc
        .get_acl(&format!("{}/private", o2.destination_root))
        .await
        .unwrap();
    assert_eq!(acl, vec![Acl::new(Permission::ALL, AuthId::anyone())]);
}
