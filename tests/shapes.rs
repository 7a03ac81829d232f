//! Tree shapes and options: deep, wide, big, binary, unicode, prune, remapping, dry run.
#![allow(clippy::unwrap_used)]

mod support;

use resiliency_operator::engine::sync;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn deep_wide_big_binary_and_unicode_nodes() {
    let (s, d) = shared_pair();
    let root = unique_root("shapes");
    let c = client(s).await;
    mk(&c, &root, b"").await;
    // Depth 50.
    let mut p = format!("{root}/deep");
    mk(&c, &p, b"0").await;
    for i in 1..50 {
        p = format!("{p}/d{i}");
        mk(&c, &p, format!("{i}").as_bytes()).await;
    }
    // 10k children of one parent.
    build_tree(&c, &format!("{root}/wide"), 10_000, 10_000, 16).await;
    // Near 1 MiB (the default jute.maxbuffer is 1 MiB - 1).
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    mk(&c, &format!("{root}/big"), &big).await;
    mk(&c, &format!("{root}/empty"), b"").await;
    mk(&c, &format!("{root}/binary"), &[0, 0, 255, 1, 0x80, 0xfe]).await;
    mk(&c, &format!("{root}/ünïcødé-名前-ключ"), "värde".as_bytes()).await;
    mk(&c, &format!("{root}/ünïcødé-名前-ключ/子"), b"x").await;

    let o = sync_opts(s, &root, d, &root);
    let sum = sync(&o).await.unwrap();
    assert_eq!(sum.source_nodes, 1 + 50 + 10_001 + 5, "{}", sum.render());
    let r = assert_equal(&o).await;
    assert_eq!(r.destination_nodes, sum.source_nodes);
    let dc = client(d).await;
    let (data, _) = dc.get_data(&format!("{root}/big")).await.unwrap();
    assert_eq!(data, big);
    let (data, _) = dc.get_data(&format!("{root}/binary")).await.unwrap();
    assert_eq!(data, vec![0, 0, 255, 1, 0x80, 0xfe]);
    assert!(sync(&o).await.unwrap().unchanged());
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_on_and_off_and_updates() {
    let (s, d) = shared_pair();
    let root = unique_root("prune");
    let (c, dc) = (client(s).await, client(d).await);
    mk(&c, &root, b"v1").await;
    mk(&c, &format!("{root}/keep"), b"k").await;
    mk(&c, &format!("{root}/change"), b"old").await;
    let o = sync_opts(s, &root, d, &root);
    sync(&o).await.unwrap();
    // Destination-only subtree and a source change.
    mk(&dc, &format!("{root}/extra"), b"").await;
    mk(&dc, &format!("{root}/extra/deeper"), b"").await;
    mk(&dc, &format!("{root}/extra/deeper/deepest"), b"").await;
    c.set_data(&format!("{root}/change"), b"new", None)
        .await
        .unwrap();

    let mut keep = o.clone();
    keep.prune = false;
    let sum = sync(&keep).await.unwrap();
    assert_eq!(sum.updated.persistent, 1, "{}", sum.render());
    assert_eq!(sum.deleted.total(), 0);
    assert!(dc
        .check_stat(&format!("{root}/extra/deeper/deepest"))
        .await
        .unwrap()
        .is_some());
    let r = verify(&o).await;
    assert_eq!(r.counts.extra, 3, "{}", r.render());

    let sum = sync(&o).await.unwrap();
    assert_eq!(sum.deleted.persistent, 3, "{}", sum.render());
    assert_equal(&o).await;
    assert!(dc
        .check_stat(&format!("{root}/extra"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn root_path_remapping_creates_missing_ancestors() {
    let (s, d) = shared_pair();
    let root = unique_root("remap-src");
    let c = client(s).await;
    mk(&c, &root, b"r").await;
    mk(&c, &format!("{root}/a"), b"a").await;
    let dst_root = format!("{}/dr/copy", unique_root("remap-dst"));
    let o = sync_opts(s, &root, d, &dst_root);
    let sum = sync(&o).await.unwrap();
    assert_eq!(sum.ancestors_created, 2, "{}", sum.render());
    assert_equal(&o).await;
    let dc = client(d).await;
    let (data, _) = dc.get_data(&format!("{dst_root}/a")).await.unwrap();
    assert_eq!(data, b"a");
    // Nothing was written at the source path on the destination.
    assert!(dc.check_stat(&root).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing_and_lists_the_plan() {
    let (s, d) = shared_pair();
    let root = unique_root("dry");
    let (c, dc) = (client(s).await, client(d).await);
    mk(&c, &root, b"").await;
    mk(&c, &format!("{root}/new"), b"n").await;
    mk(&c, &format!("{root}/changed"), b"src").await;
    mk(&dc, &root, b"").await;
    mk(&dc, &format!("{root}/changed"), b"dst").await;
    mk(&dc, &format!("{root}/gone"), b"").await;
    let before = fingerprint(d, &root).await;
    let mut o = sync_opts(s, &root, d, &root);
    o.dry_run = true;
    let sum = sync(&o).await.unwrap();
    assert_eq!(fingerprint(d, &root).await, before);
    assert_eq!(sum.write_ops, 0);
    let mut planned: Vec<(&str, String)> =
        sum.changes.iter().map(|c| (c.op, c.path.clone())).collect();
    planned.sort();
    assert_eq!(
        planned,
        vec![
            ("create", format!("{root}/new")),
            ("delete", format!("{root}/gone")),
            ("setData", format!("{root}/changed")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kind_change_is_replaced_and_destination_ephemerals_are_left_alone() {
    let (s, d) = shared_pair();
    let root = unique_root("kind");
    let (c, dc) = (client(s).await, client(d).await);
    mk(&c, &root, b"").await;
    mk(&c, &format!("{root}/x"), b"persistent at the source").await;
    mk(&dc, &root, b"").await;
    let open = [zookeeper_client::Acl::new(
        zookeeper_client::Permission::ALL,
        zookeeper_client::AuthId::anyone(),
    )];
    mk_with(
        &dc,
        &format!("{root}/x"),
        b"ephemeral here",
        zookeeper_client::CreateMode::Ephemeral,
        &open,
    )
    .await;
    mk_with(
        &dc,
        &format!("{root}/live-session"),
        b"",
        zookeeper_client::CreateMode::Ephemeral,
        &open,
    )
    .await;
    let o = sync_opts(s, &root, d, &root);
    let sum = sync(&o).await.unwrap();
    assert_eq!(sum.replaced, 1, "{}", sum.render());
    let (data, st) = dc.get_data(&format!("{root}/x")).await.unwrap();
    assert_eq!(
        (data.as_slice(), st.ephemeral_owner),
        (&b"persistent at the source"[..], 0)
    );
    // A destination-only ephemeral belongs to a live client there.
    assert!(dc
        .check_stat(&format!("{root}/live-session"))
        .await
        .unwrap()
        .is_some());
    assert_equal(&o).await;
}
