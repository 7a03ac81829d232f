//! The steps of a switchover, in order, each recorded in the [`Progress`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use verifier::{AclView, DivergenceClass, Side, VerifyCache, VerifyOptions, Views};
use zookeeper_client::Client;

use super::fence::{self, FenceRecord, FenceView};
use super::{
    DataLoss, Failure, FenceMode, LossWindow, Mode, Outcome, Progress, StepName, StepState, Stream,
    SwitchoverOptions, Verification,
};
use crate::engine::error::cause_chain;
use crate::engine::judge;
use crate::Reason;

/// How often the stream's board is looked at while waiting for it to catch up.
const POLL: Duration = Duration::from_millis(20);
/// How long the stream must stay caught up before it counts as caught up.
const SETTLE: Duration = Duration::from_millis(100);
/// Sessions the fence writes ACLs over: setACL has no multi form, and a server works on
/// many sessions' requests at once.
const FENCE_SESSIONS: usize = 8;
/// Sessions each side is verified on: as many as a copy reads over (getACL, one node per
/// request, is what a cold verification waits on; the stream is stopped by then).
const VERIFY_SESSIONS: usize = verifier::zk::READ_SESSIONS;
/// Verifications (each after a repair of what the last one found) before giving up.
const VERIFY_ROUNDS: usize = 3;
/// Divergent paths a verification lists for repair.
const REPAIR_PATHS: usize = 10_000;
/// Paths kept in the report.
const LISTED: usize = 10;
/// How long an unplanned failover tries the old primary before calling it gone.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A step that failed.
struct Fail {
    step: StepName,
    reason: Reason,
    message: String,
}

fn fail(step: StepName, reason: Reason, message: impl Into<String>) -> Fail {
    Fail {
        step,
        reason,
        message: message.into(),
    }
}

/// Runs the switchover to its end; the same outcome is left in `progress`.
pub async fn run<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    progress: &Progress,
) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let r = match o.mode {
        Mode::Planned => planned(o, stream, progress, started).await,
        Mode::Unplanned => unplanned(o, stream, progress, started)
            .await
            .map_err(|f| Failure {
                step: f.step,
                reason: f.reason,
                message: f.message,
                rolled_back: false,
                fence: None,
                fence_lifted: false,
            }),
    };
    progress.finish(r.clone());
    r
}

/// What a planned switchover changed so far, for the rollback.
#[derive(Default)]
struct Done {
    /// Fencing began (a part of the tree may be fenced).
    fenced: bool,
    /// The fence, once complete.
    fence: Option<fence::Fenced>,
    stopped: bool,
}

async fn planned<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    p: &Progress,
    started: Instant,
) -> Result<Outcome, Failure> {
    let mut done = Done::default();
    match planned_steps(o, stream, p, started, &mut done).await {
        Ok(outcome) => Ok(outcome),
        Err(f) => {
            p.end(f.step, StepState::Failed, &f.message);
            let (rolled_back, fence_lifted) = rollback(o, stream, p, &done).await;
            Err(Failure {
                step: f.step,
                reason: f.reason,
                message: f.message,
                rolled_back,
                fence: done.fence,
                fence_lifted,
            })
        }
    }
}

async fn planned_steps<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    p: &Progress,
    started: Instant,
    done: &mut Done,
) -> Result<Outcome, Fail> {
    let (src, dst, identity) = preflight(o, stream, p).await?;
    // Taken while the stream runs: what its verifier read is read again only where changed.
    let cache = acl_cache(o, stream);
    let fenced = match (o.fence, identity) {
        (FenceMode::Acl, Some(id)) => {
            p.begin(StepName::Fence, "making the source tree read-only");
            done.fenced = true;
            let pool = verifier::connect_pool(Side::Source, &o.sync.source, FENCE_SESSIONS)
                .await
                .map_err(|e| fail(StepName::Fence, Reason::Unreachable, cause_chain(&e)))?;
            let f = fence::fence(
                &pool,
                &o.sync.source_root,
                &id,
                &o.holder,
                Some(&cache.source),
            )
            .await
            .map_err(|e| fail(StepName::Fence, Reason::FenceRefused, e.to_string()))?;
            p.end(
                StepName::Fence,
                StepState::Succeeded,
                &format!(
                    "{} nodes read-only for all but the operator; their ACLs are recorded at {}",
                    f.nodes, f.record
                ),
            );
            done.fence = Some(f.clone());
            Some(f)
        }
        _ => {
            p.end(
                StepName::Fence,
                StepState::Skipped,
                "fence: none: the applications must have stopped writing, or verification fails",
            );
            None
        }
    };
    catch_up(o, stream, p).await?;
    p.begin(StepName::StopStream, "stopping the stream");
    stream
        .stop()
        .await
        .map_err(|e| fail(StepName::StopStream, Reason::Interrupted, e))?;
    done.stopped = true;
    p.end(
        StepName::StopStream,
        StepState::Succeeded,
        "the stream stopped",
    );
    let v = prove_equal(o, p, &cache).await?;
    let source_zxid = v.source_max_mzxid;
    let lifted = promote(o, &dst, p).await?;
    let rto = started.elapsed();
    let keep_fenced = fenced
        .as_ref()
        .and_then(|_| o.sync.source.auth.as_ref().map(|a| a.acl_id()));
    let (reverse, reverse_error) = reverse(o, stream, p, keep_fenced).await;
    drop(src);
    Ok(Outcome {
        rto,
        data_loss: DataLoss::None { source_zxid },
        verification: Some(v),
        fence: fenced,
        lifted,
        reverse,
        reverse_error,
    })
}

/// Checks the stream and both sides; the sessions and, for `fence: acl`, the operator's
/// identity on the source.
async fn preflight<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    p: &Progress,
) -> Result<(Client, Client, Option<String>), Fail> {
    let step = StepName::Preflight;
    p.begin(step, "checking the stream and both ensembles");
    let snap = stream.snapshot().ok_or_else(|| {
        fail(step, Reason::StreamNotRunning, "the stream does not run, so nothing can catch up: resume it (spec.suspend: false) and wait until it streams, or use mode: unplanned")
    })?;
    if let Some((_, why)) = &snap.failed {
        return Err(fail(
            step,
            Reason::StreamNotRunning,
            format!(
                "the stream has stopped on an error: {why}; fix it first, or use mode: unplanned"
            ),
        ));
    }
    // A stream still in its first full sync has not copied the tree yet: fencing now would
    // only make that sync copy the fence. Wait for it to stream, within the timeout.
    let snap = if snap.streaming() {
        snap
    } else {
        p.update(
            step,
            "waiting for the stream's full sync to end before anything is changed",
        );
        wait_streaming(o, stream, snap).await?
    };
    if let Some((_, h)) = &snap.held {
        return Err(fail(step, Reason::MassDeletionHeld, format!("the stream's deletion guard holds {} deletes: release them or repair the source first, since a copy that holds them cannot verify equal", h.deletes)));
    }
    let identity = match o.fence {
        FenceMode::Acl => Some(o.sync.source.auth.as_ref().map(|a| a.acl_id()).ok_or_else(
            || {
                fail(
                    step,
                    Reason::FenceRefused,
                    fence::FenceError::NoCredentials.to_string(),
                )
            },
        )?),
        FenceMode::None => None,
    };
    let (src, dst) = tokio::join!(
        verifier::connect(Side::Source, &o.sync.source),
        verifier::connect(Side::Destination, &o.sync.destination)
    );
    let src = src.map_err(|e| {
        fail(
            step,
            Reason::Unreachable,
            format!(
                "{}: a planned switchover needs the source; if it is lost, use mode: unplanned",
                cause_chain(&e)
            ),
        )
    })?;
    let dst = dst.map_err(|e| fail(step, Reason::Unreachable, cause_chain(&e)))?;
    p.end(
        step,
        StepState::Succeeded,
        "the stream runs and both ensembles answer",
    );
    Ok((src, dst, identity))
}

/// Waits for a stream in a full sync (or connecting, or retrying) to stream, within the
/// timeout; nothing has been changed yet, so giving up changes nothing.
async fn wait_streaming<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    mut snap: crate::continuous::Snapshot,
) -> Result<crate::continuous::Snapshot, Fail> {
    let step = StepName::Preflight;
    let deadline = Instant::now() + o.timeout;
    while !snap.streaming() {
        if let Some((_, why)) = &snap.failed {
            return Err(fail(
                step,
                Reason::StreamNotRunning,
                format!("the stream has stopped on an error: {why}; fix it first, or use mode: unplanned"),
            ));
        }
        if Instant::now() >= deadline {
            return Err(fail(step, Reason::CatchUpTimeout, format!("the stream did not reach streaming within {} (it is {}: {}); nothing was changed; spec.timeout allows more", seconds(o.timeout), state_word(&snap), snap.why)));
        }
        tokio::time::sleep(POLL).await;
        snap = stream.snapshot().ok_or_else(|| {
            fail(
                step,
                Reason::StreamNotRunning,
                "the stream stopped before it streamed",
            )
        })?;
    }
    Ok(snap)
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Where the stream is, in words.
fn state_word(s: &crate::continuous::Snapshot) -> &'static str {
    use crate::engine::live::LiveState;
    match s.state {
        None | Some(LiveState::Connecting) => "connecting",
        Some(LiveState::FullSync) => "in a full sync",
        Some(LiveState::Streaming) if s.caught_up => "streaming, caught up",
        Some(LiveState::Streaming) => "streaming with changes pending",
        Some(LiveState::Retrying) => "retrying after a failure",
    }
}

/// Waits until the stream has nothing pending, up to the timeout.
async fn catch_up<S: Stream>(o: &SwitchoverOptions, stream: &S, p: &Progress) -> Result<(), Fail> {
    let step = StepName::CatchUp;
    p.begin(step, "waiting for the stream to apply everything it saw");
    let deadline = Instant::now() + o.timeout;
    // Caught up on two looks at least SETTLE apart: an event in flight at the first look
    // has arrived by the second.
    let mut since: Option<Instant> = None;
    loop {
        let snap = stream.snapshot().ok_or_else(|| {
            fail(
                step,
                Reason::StreamNotRunning,
                "the stream stopped while catching up",
            )
        })?;
        if let Some((_, why)) = &snap.failed {
            return Err(fail(
                step,
                Reason::StreamNotRunning,
                format!("the stream failed: {why}"),
            ));
        }
        let idle = snap.streaming() && snap.caught_up;
        since = if idle {
            since.or(Some(Instant::now()))
        } else {
            None
        };
        if since.is_some_and(|t| t.elapsed() >= SETTLE) {
            p.end(
                step,
                StepState::Succeeded,
                &format!(
                    "caught up: {} changes applied by this stream",
                    snap.applied_total
                ),
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail(
                step,
                Reason::CatchUpTimeout,
                format!(
                    "the stream did not catch up within {} (it is {}: {}); spec.timeout allows more",
                    seconds(o.timeout),
                    state_word(&snap),
                    snap.why
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Proves the destination equal to the quiet source: the verifier, fenced nodes seen with
/// their recorded ACLs. What a first verification finds (the last changes of a stream that
/// stopped, a re-walk that copied the fence's ACLs) is repaired from the source and verified
/// again.
async fn prove_equal(
    o: &SwitchoverOptions,
    p: &Progress,
    cache: &VerifyCache,
) -> Result<Verification, Fail> {
    let step = StepName::Verify;
    p.begin(step, "verifying the new primary against the old");
    let s = &o.sync;
    let (src, dst) = tokio::try_join!(
        verifier::connect_pool(Side::Source, &s.source, VERIFY_SESSIONS),
        verifier::connect_pool(Side::Destination, &s.destination, VERIFY_SESSIONS)
    )
    .map_err(|e| fail(step, Reason::Unreachable, cause_chain(&e)))?;
    let records = (
        load(&src[0], &s.source_root, step).await?,
        load(&dst[0], &s.destination_root, step).await?,
    );
    let mut last = None;
    let mut repaired = 0;
    for round in 0..VERIFY_ROUNDS {
        let r = verify(o, &src, &dst, &records, REPAIR_PATHS, Some(cache))
            .await
            .map_err(|e| fail(step, Reason::VerifyFailed, e))?;
        tracing::info!(
            round,
            equal = r.equal,
            divergent = r.divergent_nodes,
            seconds = r.duration_seconds,
            "switchover verification"
        );
        if r.equal {
            let v = verification(&r);
            let how = match repaired {
                0 => String::new(),
                n => format!(" (after {n} nodes the stream had not applied were copied again)"),
            };
            p.end(step, StepState::Succeeded, &format!("equal: {} nodes, root hash {}, every source change up to zxid {:#x} is on the new primary: 0 changes lost{how}", r.source_nodes, verifier::short_hash(&r.source_root_hash), r.source_max_mzxid));
            return Ok(v);
        }
        repaired += r.divergent_nodes;
        if round + 1 < VERIFY_ROUNDS {
            repair(o, &dst[0], &records.0, &r)
                .await
                .map_err(|e| fail(step, Reason::VerifyFailed, e))?;
        }
        last = Some(r);
    }
    let r = last.map(|r| verification(&r)).unwrap_or_else(empty);
    Err(fail(step, Reason::Diverged, format!("the new primary still differs from the old in {} nodes after {VERIFY_ROUNDS} verifications, e.g. {}; the old primary keeps serving", r.divergent_nodes, r.divergent_paths.join(", "))))
}

fn empty() -> Verification {
    Verification {
        equal: false,
        source_root_hash: String::new(),
        destination_root_hash: String::new(),
        source_nodes: 0,
        destination_nodes: 0,
        divergent_nodes: 0,
        divergent_paths: Vec::new(),
        source_max_mzxid: 0,
    }
}

async fn load(c: &Client, root: &str, step: StepName) -> Result<Option<FenceRecord>, Fail> {
    fence::load(c, root)
        .await
        .map_err(|e| fail(step, Reason::VerifyFailed, e.to_string()))
}

/// The stream's verifier caches when they are of these ensembles, else empty ones.
fn acl_cache<S: Stream>(o: &SwitchoverOptions, stream: &S) -> VerifyCache {
    let (src, dst) = (&o.sync.source.servers, &o.sync.destination.servers);
    stream
        .verify_cache()
        .filter(|c| c.is_of(src, dst))
        .unwrap_or_else(|| VerifyCache::new(src, dst))
}

/// One verification of the whole tree, each side's fence (if any) seen through; ACLs from
/// `cache` where a node's stat shows them unchanged.
async fn verify(
    o: &SwitchoverOptions,
    src: &[Client],
    dst: &[Client],
    records: &(Option<FenceRecord>, Option<FenceRecord>),
    max_paths: usize,
    cache: Option<&VerifyCache>,
) -> Result<verifier::Report, String> {
    let s = &o.sync;
    let view = |r: &Option<FenceRecord>| r.as_ref().map(|r| FenceView::new(r) as Arc<dyn AclView>);
    let mut opts = VerifyOptions {
        max_paths,
        ..VerifyOptions::default()
    };
    opts.walk.hash.acl = s.copy_acl;
    opts.walk.ephemerals = s.ephemerals;
    opts.walk.window = s.read_window;
    // A destination a stream kept fenced carries the fenced form of the source's ACLs.
    let views = match &s.fence_destination {
        Some(id) => Views {
            source: Some(fence::Fencing::over(id, view(&records.0))),
            destination: None,
            cache: cache.cloned(),
        },
        None => Views {
            source: view(&records.0),
            destination: view(&records.1),
            cache: cache.cloned(),
        },
    };
    verifier::verify_viewed(src, &s.source_root, dst, &s.destination_root, opts, views)
        .await
        .map_err(|e| cause_chain(&e))
}

fn verification(r: &verifier::Report) -> Verification {
    Verification {
        equal: r.equal,
        source_root_hash: r.source_root_hash.clone(),
        destination_root_hash: r.destination_root_hash.clone(),
        source_nodes: r.source_nodes,
        destination_nodes: r.destination_nodes,
        divergent_nodes: r.divergent_nodes,
        divergent_paths: r
            .divergences
            .iter()
            .take(LISTED)
            .map(|d| d.path.clone())
            .collect(),
        source_max_mzxid: r.source_max_mzxid,
    }
}

/// Copies what differs from the source again: data and structure with ACLs left alone (the
/// source's are the fence), then the recorded ACL of every fenced node whose ACL differs.
async fn repair(
    o: &SwitchoverOptions,
    dst: &Client,
    record: &Option<FenceRecord>,
    r: &verifier::Report,
) -> Result<(), String> {
    let other: Vec<_> = r
        .divergences
        .iter()
        .filter(|d| d.class != DivergenceClass::AclDiffers)
        .collect();
    if !other.is_empty() {
        let mut s = o.sync.clone();
        // The source's ACLs are the fence's; the recorded ones follow below.
        s.copy_acl = s.copy_acl && record.is_none();
        let paths: Vec<String> = other.iter().map(|d| d.path.clone()).collect();
        judge::repair(&s, &paths, s.guard, r.destination_nodes)
            .await
            .map_err(|e| cause_chain(&e))?;
    }
    let Some(record) = record else { return Ok(()) };
    let restore = r.divergences.iter().filter(|d| {
        d.class == DivergenceClass::AclDiffers
            || (d.class == DivergenceClass::Missing && record.originals.contains_key(&d.path))
    });
    for d in restore {
        let Some(original) = record.originals.get(&d.path) else {
            continue;
        };
        let dp = verifier::path::join(&o.sync.destination_root, &d.path);
        let zk: Vec<_> = original.iter().map(verifier::AclEntry::to_zk).collect();
        match dst.set_acl(&dp, &zk, None).await {
            Ok(_) | Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(format!("setACL {dp}: {e}")),
        }
    }
    Ok(())
}

/// The new primary takes writes: a fence an earlier switchover left on it is lifted.
async fn promote(
    o: &SwitchoverOptions,
    dst: &Client,
    p: &Progress,
) -> Result<Option<fence::Lifted>, Fail> {
    let step = StepName::Promote;
    p.begin(step, "promoting the new primary");
    let lifted = fence::unfence_from(&o.sync, dst).await.map_err(|e| {
        fail(
            step,
            Reason::FenceRefused,
            format!("lifting the fence an earlier switchover left on the new primary: {e}"),
        )
    })?;
    let message = match &lifted {
        Some(l) => format!("promoted; the fence an earlier switchover left on it is lifted: {} nodes got the ACL they have on the old primary, {} whose ACL someone changed were left, {} were gone", l.restored, l.changed_since, l.gone),
        None => "promoted: nothing writes to it but the applications".to_string(),
    };
    p.end(step, StepState::Succeeded, &message);
    Ok(lifted)
}

/// Starts the reverse stream once promoted: its name, or why it did not start. Never an
/// error of the switchover: the new primary is promoted and may already take writes, so
/// nothing is rolled back for it.
async fn reverse<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    p: &Progress,
    keep_fenced: Option<String>,
) -> (Option<String>, Option<String>) {
    let step = StepName::Reverse;
    if !o.reverse {
        p.end(step, StepState::Skipped, "reverse: false");
        return (None, None);
    }
    p.begin(step, "starting the reverse stream (new primary to old)");
    match stream.start_reverse(keep_fenced.clone()).await {
        Ok(name) => {
            let how = if keep_fenced.is_some() {
                "the old primary was fenced and then proven equal, so it holds nothing of its own; the stream keeps it fenced while it is a replica, and its deletion guard applies"
            } else {
                "it reports what only the old primary holds before its first full sync, and its deletion guard applies"
            };
            p.end(
                step,
                StepState::Succeeded,
                &format!("the reverse stream {name} started: {how}"),
            );
            (Some(name), None)
        }
        Err(e) => {
            let why = format!("the new primary is promoted, but the reverse stream did not start: {e}; the old primary gets no copy until it is started");
            p.end(step, StepState::Failed, &why);
            (None, Some(why))
        }
    }
}

/// Lifts the source's fence, and gives the destination nodes the stream copied with fenced
/// ACLs meanwhile their recorded ACL back (the stream sees no ACL change until a re-walk).
async fn unfence_both(o: &SwitchoverOptions) -> Result<(), String> {
    let (src, dst) = tokio::try_join!(
        verifier::connect(Side::Source, &o.sync.source),
        verifier::connect(Side::Destination, &o.sync.destination)
    )
    .map_err(|e| cause_chain(&e))?;
    let record = fence::load(&src, &o.sync.source_root)
        .await
        .map_err(|e| e.to_string())?;
    fence::lift(&src, &o.sync.source_root)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(r) = record {
        fence::restore_recorded(&dst, &o.sync.destination_root, &r)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Undoes a failed planned switchover: the fence lifted, the stream resumed. True when all
/// of it worked.
async fn rollback<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    p: &Progress,
    done: &Done,
) -> (bool, bool) {
    if !done.fenced && !done.stopped {
        return (true, false);
    }
    let step = StepName::Rollback;
    p.begin(step, "rolling back: the old primary keeps serving");
    let mut problems = Vec::new();
    let mut lifted = false;
    if done.fenced {
        match unfence_both(o).await {
            Ok(()) => lifted = true,
            Err(e) => problems.push(format!("lifting the fence: {e}")),
        }
    }
    if done.stopped {
        if let Err(e) = stream.resume().await {
            problems.push(format!("resuming the stream: {e}"));
        }
    }
    if problems.is_empty() {
        p.end(
            step,
            StepState::Succeeded,
            if done.fenced {
                "rolled back: the fence is lifted and the stream runs again"
            } else {
                "rolled back: the stream runs again"
            },
        );
        (true, lifted)
    } else {
        let record = fence::record_path(&o.sync.source_root);
        p.end(
            step,
            StepState::Failed,
            &format!(
                "{}; the fence record stays at {record} on the source until lifted",
                problems.join("; ")
            ),
        );
        (false, lifted)
    }
}

async fn unplanned<S: Stream>(
    o: &SwitchoverOptions,
    stream: &S,
    p: &Progress,
    started: Instant,
) -> Result<Outcome, Fail> {
    let step = StepName::Preflight;
    p.begin(step, "checking the new primary; the old one may be gone");
    let dst = verifier::connect(Side::Destination, &o.sync.destination)
        .await
        .map_err(|e| {
            fail(
                step,
                Reason::Unreachable,
                format!("{}: the new primary must answer", cause_chain(&e)),
            )
        })?;
    p.end(step, StepState::Succeeded, "the new primary answers");
    p.end(
        StepName::Fence,
        StepState::Skipped,
        "unplanned: the old primary is not fenced",
    );
    p.end(
        StepName::CatchUp,
        StepState::Skipped,
        "unplanned: nothing is waited for",
    );
    p.begin(StepName::StopStream, "stopping the stream");
    let last = stream.snapshot();
    stream
        .stop()
        .await
        .map_err(|e| fail(StepName::StopStream, Reason::Interrupted, e))?;
    let last = stream.snapshot().or(last);
    p.end(
        StepName::StopStream,
        StepState::Succeeded,
        "the stream stopped",
    );
    let mut window = last
        .as_ref()
        .map(LossWindow::from_snapshot)
        .unwrap_or_default();
    let verification = count_loss(o, p, &mut window).await;
    let lifted = promote(o, &dst, p).await?;
    let rto = started.elapsed();
    let (reverse, reverse_error) = reverse(o, stream, p, None).await;
    Ok(Outcome {
        rto,
        data_loss: DataLoss::Window(window),
        verification,
        fence: None,
        lifted,
        reverse,
        reverse_error,
    })
}

/// Unplanned, with the old primary still answering: the verifier counts what the new one
/// lacks. Gone: nothing is counted and nothing is claimed.
async fn count_loss(
    o: &SwitchoverOptions,
    p: &Progress,
    window: &mut LossWindow,
) -> Option<Verification> {
    let step = StepName::Verify;
    p.begin(step, "trying the old primary, to count what differs");
    let mut probe = o.sync.source.clone();
    probe.connect_timeout = probe.connect_timeout.min(PROBE_TIMEOUT);
    let src = match verifier::connect_pool(Side::Source, &probe, VERIFY_SESSIONS).await {
        Ok(s) => s,
        Err(e) => {
            p.end(step, StepState::Skipped, &format!("the old primary does not answer ({}): what it had after the window below is unknown", cause_chain(&e)));
            return None;
        }
    };
    let dst = match verifier::connect_pool(Side::Destination, &o.sync.destination, VERIFY_SESSIONS)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            p.end(step, StepState::Failed, &cause_chain(&e));
            return None;
        }
    };
    let records = (
        fence::load(&src[0], &o.sync.source_root)
            .await
            .ok()
            .flatten(),
        fence::load(&dst[0], &o.sync.destination_root)
            .await
            .ok()
            .flatten(),
    );
    match verify(o, &src, &dst, &records, LISTED, None).await {
        Ok(r) => {
            window.divergent_nodes = Some(r.divergent_nodes);
            let msg = if r.equal {
                format!("the old primary answers and the new one is equal to it ({} nodes): nothing it had was lost", r.source_nodes)
            } else {
                format!("the old primary answers; {} nodes differ on the new one (changes not applied), e.g. {}", r.divergent_nodes, r.divergences.iter().take(LISTED).map(|d| d.path.as_str()).collect::<Vec<_>>().join(", "))
            };
            p.end(step, StepState::Succeeded, &msg);
            Some(verification(&r))
        }
        Err(e) => {
            p.end(step, StepState::Failed, &e);
            None
        }
    }
}
