//! Switchover and failover against real ZooKeeper servers: a planned switchover under a steady
//! write load (no acknowledged write missing on the new primary), the ACL fence applied and
//! lifted exactly, a rollback, an unplanned failover with the source killed, and each bad
//! input refused with nothing changed.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use resiliency_operator::continuous::{Continuous, ContinuousOptions};
use resiliency_operator::engine::live::LiveOptions;
use resiliency_operator::engine::SyncOptions;
use resiliency_operator::switchover::fence;
use resiliency_operator::switchover::local::Local;
use resiliency_operator::switchover::{
    self, DataLoss, Failure, FenceMode, Mode, Outcome, Progress, StepName, StepState, Stream,
    SwitchoverOptions,
};
use resiliency_operator::Reason;
use support::*;
use verifier::DigestAuth;
use zookeeper_client::{Acl, AuthId, CreateMode, Error as ZkError, Permission};

const OP: &str = "op:op-secret";

fn op_auth() -> Option<DigestAuth> {
    DigestAuth::parse(OP).ok()
}

/// A copy of `root` whose sessions authenticate as the operator's identity.
fn opts(src: &str, root: &str, dst: &str, dst_root: &str) -> SyncOptions {
    let mut o = SyncOptions::new(
        verifier::ConnectOptions::new(src).with_auth(op_auth()),
        root,
        verifier::ConnectOptions::new(dst).with_auth(op_auth()),
        dst_root,
    );
    o.retries = 3;
    o.holder = format!("test {root}");
    o
}

/// Starts a stream and waits until it streams.
async fn stream(o: &SyncOptions) -> (ContinuousOptions, Continuous) {
    let mut lo = LiveOptions::new(o.clone());
    lo.resync_interval = None;
    let co = ContinuousOptions::new(lo);
    let c = Continuous::start(co.clone(), Vec::new(), None);
    wait_for("the stream to stream", Duration::from_secs(60), || async {
        let s = c.snapshot();
        s.streaming() && s.full_syncs >= 1 && s.caught_up
    })
    .await;
    (co, c)
}

fn switch(o: &SyncOptions, mode: Mode, fence: FenceMode, reverse: bool) -> SwitchoverOptions {
    SwitchoverOptions {
        sync: o.clone(),
        mode,
        fence,
        reverse,
        timeout: Duration::from_secs(60),
        holder: format!("test switchover {}", o.source_root),
    }
}

async fn run(
    o: &SwitchoverOptions,
    local: &Local,
) -> (Result<Outcome, Failure>, switchover::Report) {
    let progress = Progress::new(o.mode, jiff::Timestamp::now());
    let r = switchover::run(o, local, &progress).await;
    (r, progress.report())
}

fn step(r: &switchover::Report, name: StepName) -> &switchover::Step {
    r.steps
        .iter()
        .rev()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} step in {:#?}", r.steps))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_under_load_loses_no_acknowledged_write_and_the_reverse_stream_runs() {
    let (a, b) = shared_pair();
    let root = unique_root("switch-planned");
    let zs = client(a).await;
    build_tree(&zs, &root, 300, 10, 8).await;
    let o = opts(&a.connect_string(), &root, &b.connect_string(), &root);
    let (co, c) = stream(&o).await;
    let before = acls(a, &root, OP).await;
    let writer = Writer::start(client(a).await, root.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let local = Local::new(co, c, "test reverse");
    let so = switch(&o, Mode::Planned, FenceMode::Acl, true);
    let (r, report) = run(&so, &local).await;
    // The application keeps trying after the fence: every one of those writes is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, refused) = writer.stop().await;
    let out = r.unwrap_or_else(|f| panic!("switchover failed: {f:?}\n{:#?}", report.steps));

    assert!(
        matches!(out.data_loss, DataLoss::None { .. }),
        "{:?}",
        out.data_loss
    );
    let v = out.verification.clone().unwrap();
    assert!(v.equal && v.divergent_nodes == 0, "{v:?}");
    assert!(
        refused > 0,
        "the fence refused no write: the application was never fenced"
    );
    assert!(!acked.is_empty());
    let f = out.fence.clone().unwrap();
    assert!(f.nodes >= 301, "{f:?}");
    for name in [
        StepName::Preflight,
        StepName::Fence,
        StepName::CatchUp,
        StepName::StopStream,
        StepName::Verify,
        StepName::Promote,
        StepName::Reverse,
    ] {
        assert_eq!(
            step(&report, name).state,
            StepState::Succeeded,
            "{name}: {:#?}",
            report.steps
        );
    }
    // No write the source acknowledged is missing on the new primary.
    let zd = client(b).await;
    for (p, data) in &acked {
        let (got, _) = zd
            .get_data(p)
            .await
            .unwrap_or_else(|e| panic!("{p} missing on the new primary: {e}"));
        let on_a = zs.get_data(p).await.unwrap().0;
        assert_eq!(
            &got,
            data,
            "{p}: the new primary has another value than the last acknowledged (A has {:?}) {:#?}",
            String::from_utf8_lossy(&on_a),
            report.steps
        );
    }
    // The new primary has the applications' ACLs, not the fence.
    let on_b = acls(b, &root, OP).await;
    let identity = DigestAuth::parse(OP).unwrap().acl_id();
    for (p, acl) in &before {
        assert_eq!(on_b.get(p), Some(acl), "{p}");
    }
    // Fenced, the old primary refuses the application.
    let app = client(a).await;
    let victim = format!("{root}/load-0");
    assert!(matches!(
        app.set_data(&victim, b"late", None).await,
        Err(ZkError::NoAuth)
    ));

    // The reverse stream copies the new primary's writes to the old one and keeps it fenced:
    // an application still pointed at it is refused, not silently overwritten later.
    let rev = local.take_reverse().expect("no reverse stream");
    wait_for("the reverse stream", Duration::from_secs(60), || async {
        let s = rev.snapshot();
        s.streaming() && s.full_syncs >= 1
    })
    .await;
    // Fenced and then verified equal, the old primary cannot hold anything of its own: the
    // reverse stream's first full sync is not preceded by a comparison.
    assert_eq!(rev.snapshot().destination_diff, None);
    mk(&zd, &format!("{root}/after-switch"), b"written on B").await;
    let mut back = opts(&b.connect_string(), &root, &a.connect_string(), &root);
    back.fence_destination = Some(identity.clone());
    wait_for(
        "the new primary's write on the old one",
        Duration::from_secs(30),
        || async {
            zs.check_stat(&format!("{root}/after-switch"))
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    let mut data_only = back.clone();
    data_only.copy_acl = false;
    converges(&data_only).await;
    let (on_a, on_b) = (acls(a, &root, OP).await, acls(b, &root, OP).await);
    assert_eq!(on_a.len(), on_b.len());
    for (p, acl) in &on_b {
        assert_eq!(
            on_a.get(p),
            Some(&fence::fenced_acl(acl, &identity)),
            "{p} is not fenced on the old primary"
        );
    }
    assert!(matches!(
        app.set_data(&victim, b"late", None).await,
        Err(ZkError::NoAuth)
    ));

    // Failback: the same switchover the other way. The old primary is promoted again with
    // the ACLs the applications have (those of B), and B is fenced in turn.
    let (rev_opts, _) = (
        resiliency_operator::switchover::local::reversed(
            &ContinuousOptions::new(LiveOptions::new(o.clone())),
            "test",
        ),
        (),
    );
    let mut back_opts = rev_opts.clone();
    back_opts.live.sync.fence_destination = Some(identity.clone());
    let local_back = Local::new(back_opts, rev, "test failback reverse");
    let mut sb = switch(&back, Mode::Planned, FenceMode::Acl, true);
    sb.sync.fence_destination = Some(identity.clone());
    let (r, report) = run(&sb, &local_back).await;
    let out = r.unwrap_or_else(|f| panic!("failback failed: {f:?}\n{:#?}", report.steps));
    assert!(matches!(out.data_loss, DataLoss::None { .. }));
    let l = out.lifted.expect("the old primary's fence was not lifted");
    let on_a = acls(a, &root, OP).await;
    let wrong: Vec<_> = on_b
        .iter()
        .filter(|(p, acl)| on_a.get(*p) != Some(acl))
        .collect();
    assert!(
        wrong.is_empty(),
        "{l:?}: A did not get these ACLs back: {wrong:?} (A has {:?})",
        wrong.iter().map(|(p, _)| on_a.get(*p)).collect::<Vec<_>>()
    );
    assert_eq!(l.changed_since, 0, "{l:?}");
    assert!(l.restored as usize >= on_b.len() - 1, "{l:?}");
    assert!(
        fence::load(&zs, &root).await.unwrap().is_none(),
        "A's fence record stayed"
    );
    app.set_data(&victim, b"A is the primary again", None)
        .await
        .unwrap();
    let app_b = client(b).await;
    assert!(matches!(
        app_b.set_data(&victim, b"late on B", None).await,
        Err(ZkError::NoAuth)
    ));
    local_back.take_reverse().unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_is_applied_and_lifted_exactly() {
    let (a, _) = shared_pair();
    let root = unique_root("switch-fence");
    let zs = client(a).await;
    mk(&zs, &root, b"r").await;
    mk(&zs, &format!("{root}/open"), b"1").await;
    let reader_and_op = [
        Acl::new(Permission::READ, AuthId::new("world", "anyone")),
        Acl::new(
            Permission::ALL,
            AuthId::new("digest", &DigestAuth::parse(OP).unwrap().acl_id()),
        ),
    ];
    mk_with(
        &zs,
        &format!("{root}/ro"),
        b"2",
        CreateMode::Persistent,
        &reader_and_op,
    )
    .await;
    mk(&zs, &format!("{root}/open/deep"), b"3").await;
    for i in 0..50 {
        mk(&zs, &format!("{root}/open/deep/n{i}"), b"x").await;
    }
    let before = acls(a, &root, OP).await;
    let op = client_at(&a.connect_string(), Some(OP)).await;
    let identity = DigestAuth::parse(OP).unwrap().acl_id();

    let f = fence::fence(std::slice::from_ref(&op), &root, &identity, "test", None)
        .await
        .unwrap();
    assert_eq!(f.nodes, before.len() as u64);
    let fenced = acls(a, &root, OP).await;
    for (p, acl) in &before {
        assert_eq!(
            fenced.get(p),
            Some(&fence::fenced_acl(acl, &identity)),
            "{p}"
        );
    }
    // Nobody but the operator writes, creates or deletes; everyone still reads.
    let app = client(a).await;
    assert!(matches!(
        app.set_data(&format!("{root}/open"), b"no", None).await,
        Err(ZkError::NoAuth)
    ));
    assert!(matches!(
        app.create(
            &format!("{root}/open/new"),
            b"",
            &CreateMode::Persistent.with_acls(open())
        )
        .await,
        Err(ZkError::NoAuth)
    ));
    assert!(matches!(
        app.delete(&format!("{root}/open/deep/n1"), None).await,
        Err(ZkError::NoAuth)
    ));
    assert_eq!(app.get_data(&format!("{root}/open")).await.unwrap().0, b"1");
    // The record survives the session: a new one reads it.
    let record = fence::load(&client_at(&a.connect_string(), Some(OP)).await, &root)
        .await
        .unwrap()
        .unwrap();
    assert!(record.header.complete);
    assert_eq!(record.originals.len(), before.len());

    // Someone with the operator's identity changes one ACL meanwhile: lifting leaves it.
    let changed = format!("{root}/open/deep/n7");
    op.set_acl(
        &changed,
        &[Acl::new(
            Permission::READ | Permission::ADMIN,
            AuthId::new("world", "anyone"),
        )],
        None,
    )
    .await
    .unwrap();
    let lifted = fence::lift(&op, &root).await.unwrap().unwrap();
    assert_eq!(lifted.changed_since, 1);
    assert_eq!(lifted.restored, before.len() as u64 - 1);
    let after = acls(a, &root, OP).await;
    for (p, acl) in &before {
        if *p != changed {
            assert_eq!(after.get(p), Some(acl), "{p} did not get its ACL back");
        }
    }
    assert!(
        fence::load(&op, &root).await.unwrap().is_none(),
        "the record stayed"
    );
    app.set_data(&format!("{root}/open"), b"writable again", None)
        .await
        .unwrap();
}

/// A fence that starts from a stream's verifier cache reads again only the ACLs that changed
/// since: one changed after the cache was filled is recorded as it is now, not as cached,
/// and lifting puts that one back. The fenced ACLs go into the cache, so a verification that
/// follows reads no ACL of the fenced side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_from_a_warm_acl_cache_records_what_changed_since_and_fills_the_cache() {
    let (a, b) = shared_pair();
    let root = unique_root("switch-fence-cache");
    let zs = client(a).await;
    build_tree(&zs, &root, 300, 10, 8).await;
    let op = client_at(&a.connect_string(), Some(OP)).await;
    let identity = DigestAuth::parse(OP).unwrap().acl_id();
    // The cache of a verification of the tree against a copy of it.
    let o = opts(&a.connect_string(), &root, &b.connect_string(), &root);
    resiliency_operator::engine::sync(&o).await.unwrap();
    let cache = verifier::VerifyCache::new(&a.connect_string(), &b.connect_string());
    let verify_cached = |cache: &verifier::VerifyCache| {
        let (o, cache) = (o.clone(), cache.clone());
        async move {
            let (src, dst) = tokio::try_join!(
                verifier::connect_pool(verifier::Side::Source, &o.source, 2),
                verifier::connect_pool(verifier::Side::Destination, &o.destination, 2)
            )
            .unwrap();
            verifier::verify_cached(
                &src,
                &root_of(&o, true),
                &dst,
                &root_of(&o, false),
                verifier::VerifyOptions::default(),
                &cache,
            )
            .await
            .unwrap()
        }
    };
    assert!(verify_cached(&cache).await.equal);
    // Changed after the cache was filled.
    let changed = format!("{root}/n0003/n0004");
    let own = [
        Acl::new(
            Permission::READ | Permission::WRITE,
            AuthId::new("world", "anyone"),
        ),
        Acl::new(
            Permission::ALL,
            AuthId::new("digest", &DigestAuth::parse(OP).unwrap().acl_id()),
        ),
    ];
    op.set_acl(&changed, &own, None).await.unwrap();
    let before = acls(a, &root, OP).await;

    let f = fence::fence(
        std::slice::from_ref(&op),
        &root,
        &identity,
        "test",
        Some(&cache.source),
    )
    .await
    .unwrap();
    assert_eq!(f.nodes, before.len() as u64);
    let record = fence::load(&op, &root).await.unwrap().unwrap();
    let rel = changed.trim_start_matches(&root).to_string();
    assert_eq!(
        record.originals.get(&rel),
        before.get(&changed),
        "the changed ACL was recorded as cached, not as it is"
    );
    for (p, acl) in &before {
        let rel = p.trim_start_matches(&root).to_string();
        assert_eq!(record.originals.get(&rel), Some(acl), "{p}");
    }
    // The fenced ACLs are in the cache: a source walk now reads none.
    let reads = cache.source.stats().reads;
    let src = verifier::connect_pool(verifier::Side::Source, &o.source, 2)
        .await
        .unwrap();
    let mut rx = verifier::walk_cached(
        src,
        verifier::Side::Source,
        root.clone(),
        verifier::WalkOptions::default(),
        Some(cache.source.clone()),
    );
    let mut walked = 0;
    while let Some(e) = rx.recv().await {
        match e.unwrap() {
            verifier::WalkEvent::Nodes(n) => walked += n.len(),
            verifier::WalkEvent::Done(_) => break,
        }
    }
    assert_eq!(walked, before.len());
    assert_eq!(
        cache.source.stats().reads,
        reads,
        "the walk read ACLs again"
    );

    // Lifting puts every recorded ACL back, the changed one as it was before the fence.
    let lifted = fence::lift(&op, &root).await.unwrap().unwrap();
    assert_eq!(lifted.restored, before.len() as u64);
    assert_eq!(acls(a, &root, OP).await, before);
}

/// The absolute root of one side of `o`.
fn root_of(o: &SyncOptions, source: bool) -> String {
    if source {
        o.source_root.clone()
    } else {
        o.destination_root.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_that_cannot_finish_rolls_back() {
    let (a, b) = shared_pair();
    let root = unique_root("switch-rollback");
    let zs = client(a).await;
    build_tree(&zs, &root, 100, 10, 8).await;
    let o = opts(&a.connect_string(), &root, &b.connect_string(), &root);
    let (co, c) = stream(&o).await;
    let before = acls(a, &root, OP).await;
    // A destination node the stream would delete, held by the deletion guard: the copy
    // cannot verify equal. Made behind the stream's back, as a stray writer would.
    let zd = client(b).await;
    let local = Local::new(co, c, "test reverse");
    let mut so = switch(&o, Mode::Planned, FenceMode::Acl, false);
    // Every node still pending: the stream never settles within a zero timeout.
    so.timeout = Duration::ZERO;
    let dst_before = fingerprint(b, &root).await;
    let writer = Writer::start(client(a).await, root.clone());
    let (r, report) = run(&so, &local).await;
    writer.stop().await;
    let f = r.expect_err("a switchover with no time to catch up succeeded");
    assert_eq!(f.step, StepName::CatchUp, "{f:?}");
    assert_eq!(f.reason, Reason::CatchUpTimeout);
    assert!(f.rolled_back, "{f:?}\n{:#?}", report.steps);
    assert_eq!(
        step(&report, StepName::Rollback).state,
        StepState::Succeeded
    );
    // The old primary serves as before: its ACLs are back and the stream runs again.
    let after = acls(a, &root, OP).await;
    for (p, acl) in &before {
        assert_eq!(after.get(p), Some(acl), "{p}");
    }
    assert!(fence::load(&zs, &root).await.unwrap().is_none());
    assert!(local.is_running());
    mk(&zs, &format!("{root}/after-rollback"), b"x").await;
    converges(&o).await;
    drop(zd);
    drop(dst_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let (a, b) = shared_pair();
    let root = unique_root("switch-bad");
    let zs = client(a).await;
    build_tree(&zs, &root, 60, 6, 8).await;
    // A node the operator's identity may read but not administer.
    mk_without_admin(&zs, &format!("{root}/locked")).await;
    let proxy = Proxy::start(a.port()).await;
    let o = opts(&proxy.connect_string(), &root, &b.connect_string(), &root);
    let (co, c) = stream(&o).await;
    let local = Local::new(co, c, "test reverse");
    let src_before = acls(a, &root, OP).await;
    let dst_before = fingerprint(b, &root).await;
    let unchanged = || async {
        assert_eq!(
            acls(a, &root, OP).await,
            src_before,
            "the source's ACLs changed"
        );
        assert_eq!(
            fingerprint(b, &root).await,
            dst_before,
            "the destination was written"
        );
        assert!(local.is_running(), "the stream was stopped");
    };

    // fence: acl without credentials: nobody could be kept out.
    let mut no_creds = switch(&o, Mode::Planned, FenceMode::Acl, false);
    no_creds.sync.source.auth = None;
    let (r, _) = run(&no_creds, &local).await;
    let f = r.unwrap_err();
    assert_eq!(
        (f.step, f.reason),
        (StepName::Preflight, Reason::FenceRefused),
        "{f:?}"
    );
    assert!(f.message.contains("credentials"), "{}", f.message);
    unchanged().await;

    // fence: acl where the operator's identity lacks ADMIN on one node: what was fenced is
    // lifted again, and the stream resumed.
    let (r, report) = run(&switch(&o, Mode::Planned, FenceMode::Acl, false), &local).await;
    let f = r.unwrap_err();
    assert_eq!(
        (f.step, f.reason),
        (StepName::Fence, Reason::FenceRefused),
        "{f:?}"
    );
    assert!(f.message.contains("/locked"), "{}", f.message);
    assert!(f.rolled_back, "{:#?}", report.steps);
    assert!(
        fence::load(&zs, &root).await.unwrap().is_none(),
        "the record stayed"
    );
    unchanged().await;

    // planned, with the source unreachable: refused, pointing at mode: unplanned.
    proxy.cut();
    let (r, _) = run(&switch(&o, Mode::Planned, FenceMode::None, false), &local).await;
    let f = r.unwrap_err();
    assert_eq!(
        (f.step, f.reason),
        (StepName::Preflight, Reason::Unreachable),
        "{f:?}"
    );
    assert!(f.message.contains("mode: unplanned"), "{}", f.message);
    proxy.heal();
    assert_eq!(
        fingerprint(b, &root).await,
        dst_before,
        "the destination was written"
    );

    // No stream to take over.
    Stream::stop(&local).await.unwrap();
    let (r, _) = run(&switch(&o, Mode::Planned, FenceMode::None, false), &local).await;
    let f = r.unwrap_err();
    assert_eq!(
        (f.step, f.reason),
        (StepName::Preflight, Reason::StreamNotRunning),
        "{f:?}"
    );
    assert_eq!(
        fingerprint(b, &root).await,
        dst_before,
        "the destination was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplanned_failover_with_the_source_killed_reports_the_window_and_the_new_primary_takes_writes(
) {
    let mut a = ZkServer::start_default();
    let (_, b) = shared_pair();
    let root = unique_root("switch-unplanned");
    let zs = client(&a).await;
    build_tree(&zs, &root, 100, 10, 8).await;
    let o = opts(&a.connect_string(), &root, &b.connect_string(), &root);
    let (co, c) = stream(&o).await;
    for i in 0..20 {
        mk(&zs, &format!("{root}/late-{i}"), b"x").await;
    }
    wait_for(
        "the stream to apply the last writes",
        Duration::from_secs(30),
        || async { c.snapshot().caught_up && c.snapshot().applied_total >= 20 },
    )
    .await;
    a.kill();
    let local = Local::new(co, c, "test reverse");
    let (r, report) = run(&switch(&o, Mode::Unplanned, FenceMode::None, false), &local).await;
    let out = r.unwrap_or_else(|f| panic!("{f:?}\n{:#?}", report.steps));
    let DataLoss::Window(w) = &out.data_loss else {
        panic!("an unplanned failover claimed no loss: {:?}", out.data_loss)
    };
    assert!(
        w.source_last_seen.is_some() && w.caught_up_at.is_some() && w.last_change_applied.is_some(),
        "{w:?}"
    );
    assert!(w.window.is_some(), "{w:?}");
    // Gone: nothing counted, nothing claimed.
    assert_eq!(w.divergent_nodes, None);
    assert!(out.verification.is_none());
    assert_eq!(step(&report, StepName::Verify).state, StepState::Skipped);
    assert_eq!(step(&report, StepName::Promote).state, StepState::Succeeded);
    assert!(out.rto < Duration::from_secs(30), "{:?}", out.rto);
    // Every change the stream applied is on the new primary, and it takes writes.
    let zd = client(b).await;
    for i in 0..20 {
        zd.get_data(&format!("{root}/late-{i}")).await.unwrap();
    }
    mk(&zd, &format!("{root}/on-the-new-primary"), b"y").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_switches_over_with_a_json_report_and_unfences() {
    let (a, b) = shared_pair();
    let root = unique_root("switch-cli");
    let zs = client(a).await;
    build_tree(&zs, &root, 80, 8, 8).await;
    let before = acls(a, &root, OP).await;
    let (sa, sb, r1) = (a.connect_string(), b.connect_string(), root.clone());
    let out = tokio::task::spawn_blocking(move || {
        cli(&[
            "switchover",
            "--source",
            &sa,
            "--destination",
            &sb,
            "--root-path",
            &r1,
            "--source-auth",
            OP,
            "--destination-auth",
            OP,
            "--fence",
            "acl",
            "--json",
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["dataLoss"]["proven"], true, "{r}");
    assert_eq!(r["dataLoss"]["changesLost"], 0, "{r}");
    assert_eq!(r["verification"]["equal"], true, "{r}");
    assert_eq!(
        r["verification"]["sourceNodes"],
        r["verification"]["destinationNodes"]
    );
    assert_eq!(r["steps"].as_array().unwrap().len(), 7, "{r}");
    let o = opts(&a.connect_string(), &root, &b.connect_string(), &root);
    let mut data_only = o.clone();
    data_only.copy_acl = false;
    assert_equal(&data_only).await;
    // The old primary stays fenced until someone lifts it.
    let zop = client_at(&a.connect_string(), Some(OP)).await;
    assert!(fence::load(&zop, &root).await.unwrap().is_some());
    let (sa, r2) = (a.connect_string(), root.clone());
    let out = tokio::task::spawn_blocking(move || {
        cli(&[
            "unfence",
            "--servers",
            &sa,
            "--root-path",
            &r2,
            "--auth",
            OP,
            "--json",
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(acls(a, &root, OP).await, before);
    assert!(fence::load(&zop, &root).await.unwrap().is_none());
}

/// A failback after a split brain: the old primary, cut off from the stream, took writes of
/// its own. The unplanned failover's reverse stream, once the old primary is back, reports
/// them (paths and counts, from the verifier, before its first full sync writes anything),
/// overwrites what differs and holds the mass of deletes in its deletion guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_stream_reports_the_old_primarys_split_brain_writes_and_guards_them() {
    let a = ZkServer::start_default();
    let (_, b) = shared_pair();
    let root = unique_root("switch-split");
    let za = client(&a).await;
    build_tree(&za, &root, 200, 10, 8).await;
    mk(&za, &format!("{root}/config"), b"v1").await;
    let pa = Proxy::start(a.port()).await;
    let o = opts(&pa.connect_string(), &root, &b.connect_string(), &root);
    let (co, c) = stream(&o).await;

    // The partition: the stream loses the old primary, whose applications go on writing.
    pa.cut();
    wait_for(
        "the stream to lose the source",
        Duration::from_secs(30),
        || async { c.snapshot().source.is_unreachable() },
    )
    .await;
    const SPLIT: usize = 150;
    for i in 0..SPLIT {
        mk(&za, &format!("{root}/split-{i:03}"), b"only on A").await;
    }
    za.set_data(&format!("{root}/config"), b"v2 on A", None)
        .await
        .unwrap();

    let local = Local::new(co, c, "test reverse");
    let (r, report) = run(&switch(&o, Mode::Unplanned, FenceMode::None, true), &local).await;
    let out = r.unwrap_or_else(|f| panic!("{f:?}\n{:#?}", report.steps));
    assert!(
        out.reverse.is_some() && out.reverse_error.is_none(),
        "{out:?}"
    );
    let zb = client(b).await;
    zb.set_data(&format!("{root}/config"), b"v3 on B", None)
        .await
        .unwrap();
    mk(&zb, &format!("{root}/on-b"), b"new primary").await;
    let rev = local.take_reverse().expect("the reverse stream runs");

    // The old primary comes back: compared, then synced under the guard.
    pa.heal();
    wait_for(
        "the reverse stream to compare and sync",
        Duration::from_secs(60),
        || async {
            let s = rev.snapshot();
            s.destination_diff.is_some() && s.full_syncs >= 1 && s.held.is_some()
        },
    )
    .await;
    let s = rev.snapshot();
    let (_, diff) = s.destination_diff.clone().unwrap();
    assert_eq!(diff.only_on_destination, SPLIT as u64, "{diff:?}");
    assert_eq!(diff.changed, 1, "{diff:?}");
    assert_eq!(diff.only_on_source, 1, "{diff:?}");
    assert!(diff.loses_anything());
    let listed: Vec<_> = diff.paths.iter().map(|p| p.path.as_str()).collect();
    assert!(listed.contains(&"/config"), "{listed:?}");
    assert!(listed.contains(&"/split-000"), "{listed:?}");
    let (_, held) = s.held.clone().unwrap();
    assert_eq!(held.deletes, SPLIT as u64, "{held:?}");

    // On the old primary: the split-brain nodes kept (held), everything else the new
    // primary's, checked node by node by the verifier.
    let back = opts(&b.connect_string(), &root, &a.connect_string(), &root);
    let v = verify(&back).await;
    assert_eq!(v.counts.extra, SPLIT as u64, "{v:?}");
    assert_eq!(
        v.counts.total(),
        SPLIT as u64,
        "only the held split-brain nodes differ: {v:?}"
    );
    assert_eq!(v.destination_nodes, v.source_nodes + SPLIT as u64);
    let (config, _) = za.get_data(&format!("{root}/config")).await.unwrap();
    assert_eq!(config, b"v3 on B");
    drop(rev);
}

/// After a planned switchover with a fence, the old primary is a fenced source: a copy from
/// it (a manifest run again, a stream resumed by hand) would overwrite the new primary with
/// what it held then. Both a one-shot copy and a stream are refused, and the new primary is
/// left exactly as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_a_fenced_old_primary_is_refused_and_the_new_primary_is_untouched() {
    let (a, b) = shared_pair();
    let root = unique_root("switch-fenced-source");
    let zs = client(a).await;
    build_tree(&zs, &root, 150, 10, 8).await;
    let o = opts(&a.connect_string(), &root, &b.connect_string(), &root);
    let (co, c) = stream(&o).await;
    let local = Local::new(co.clone(), c, "test reverse");
    let (r, report) = run(&switch(&o, Mode::Planned, FenceMode::Acl, false), &local).await;
    r.unwrap_or_else(|f| panic!("{f:?}\n{:#?}", report.steps));
    // The new primary moves on.
    let zd = client_at(&b.connect_string(), Some(OP)).await;
    mk(&zd, &format!("{root}/after"), b"on the new primary").await;
    zd.delete(&format!("{root}/n0001"), None).await.ok();
    let before = (fingerprint(b, &root).await, verify(&o).await);

    let e = resiliency_operator::engine::sync(&o)
        .await
        .expect_err("a copy from the fenced old primary ran");
    assert!(
        matches!(
            e,
            resiliency_operator::engine::SyncError::SourceFenced { .. }
        ),
        "{e}"
    );
    let said = e.to_string();
    assert!(
        said.contains("fenced") && said.contains("test switchover"),
        "{said}"
    );

    let again = Continuous::start(co, Vec::new(), None);
    wait_for("the stream to refuse", Duration::from_secs(30), || async {
        again.snapshot().failed.is_some()
    })
    .await;
    let (_, why) = again.snapshot().failed.unwrap();
    assert!(why.contains("is fenced"), "{why}");
    drop(again);

    let after = (fingerprint(b, &root).await, verify(&o).await);
    assert_eq!(before.0, after.0, "the new primary was written");
    assert_eq!(
        before.1.destination_root_hash, after.1.destination_root_hash,
        "the new primary's tree changed"
    );
    assert_eq!(before.1.destination_nodes, after.1.destination_nodes);
}
