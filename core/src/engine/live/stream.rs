//! The stream's control loop: epochs of fresh sessions, each a full sync and then watch
//! events applied in batches until a gap, a due re-walk or a stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use verifier::ConnectOptions;
use zookeeper_client::{AddWatchMode, Error as ZkError};

use super::batch::apply_batch;
use super::deletes::apply_deletes;
use super::events::on_watch_event;
use super::readers::Readers;
use super::CREATED_OR_DELETED;
use super::{delay, ApplyError, DelayQueue, Epoch, LiveOptions, LiveState, Observer, Pending};
use crate::engine::claim::{self, Claims};
use crate::engine::guard::LiveGate;
use crate::engine::plan::Identity;
use crate::engine::{error::cause_chain, Held, HoldReason, SyncError, SyncSummary};

/// Runs until `stop` turns true. Returns an error only for what a retry cannot fix (bad
/// options, refused credentials, a full sync failing permanently).
pub async fn run(
    opts: &LiveOptions,
    observer: Arc<dyn Observer>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    crate::engine::validate(&opts.sync)?;
    // Held across epochs, so the tree stays ours while the stream reconnects.
    let mut claims: Option<Claims> = None;
    let r = epochs(opts, observer, &mut stop, &mut claims).await;
    if let Some(c) = claims {
        c.release().await;
    }
    r
}

async fn epochs(
    opts: &LiveOptions,
    observer: Arc<dyn Observer>,
    stop: &mut watch::Receiver<bool>,
    claims: &mut Option<Claims>,
) -> Result<(), SyncError> {
    let mut failures = 0u32;
    let mut first = true;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if let (false, Some(q)) = (first, &opts.delay) {
            // Changes made before the gap reach the copy no sooner than the delay: the re-walk
            // that closes the gap copies the source as it is then.
            let why = format!(
                "a gap under applyDelay: waiting {:?} before the re-walk (changes made meanwhile reach the copy with less delay)",
                q.delay
            );
            observer.state(LiveState::Retrying, &why);
            tokio::select! {
                _ = tokio::time::sleep(q.delay) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
        let outcome = async {
            if claims.as_ref().is_none_or(Claims::lost) {
                *claims = None;
                observer.state(LiveState::Connecting, "claiming the destination tree");
                *claims = Some(claim::acquire(&opts.sync, &opts.sync.holder).await?);
            }
            epoch(opts, &observer, stop, first, claims.as_ref()).await
        }
        .await;
        if let Some(reason) = outcome.as_ref().err().and_then(SyncError::claim_refusal) {
            observer.claim_refused(reason);
        }
        match outcome {
            Ok(Epoch::Stopped) => return Ok(()),
            Ok(Epoch::Restart(why)) => {
                tracing::info!(why = %why, "continuous sync: new sessions and a full sync");
                failures = 0;
                observer.state(LiveState::Connecting, &why);
            }
            Err(e) if e.is_transient() || !first => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(250u64 << failures.min(5));
                let why = cause_chain(&e);
                if let Some(side) = e.side() {
                    observer.reachable(side, false, &why);
                }
                tracing::warn!(error = %why, retry_in = ?wait, "continuous sync interrupted");
                observer.state(LiveState::Retrying, &why);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(e) => {
                if let Some(side) = e.side() {
                    observer.reachable(side, false, &cause_chain(&e));
                }
                return Err(e);
            }
        }
        first = false;
    }
}

/// One epoch: fresh sessions, a watch, a full sync, then streaming until a gap or stop.
async fn epoch(
    opts: &LiveOptions,
    observer: &Arc<dyn Observer>,
    stop: &mut watch::Receiver<bool>,
    first: bool,
    claims: Option<&Claims>,
) -> Result<Epoch, SyncError> {
    let o = &opts.sync;
    observer.state(LiveState::Connecting, "opening sessions");
    let connect = |role, c: &ConnectOptions| {
        let c = c.clone();
        async move {
            verifier::connect(role, &c)
                .await
                .map_err(SyncError::Connect)
        }
    };
    let (src, dst) = tokio::join!(
        connect("source", &o.source),
        connect("destination", &o.destination)
    );
    for (side, r) in [
        ("source", src.as_ref().err()),
        ("destination", dst.as_ref().err()),
    ] {
        match r {
            None => {
                observer.reachable(side, true, "connected");
                if !first {
                    observer.reconnected(side);
                }
            }
            Some(e) => observer.reachable(side, false, &cause_chain(e)),
        }
    }
    let (src, dst) = match (src, dst) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) if !first => return Err(transient(e)),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let readers = match Readers::open(&src, &o.source).await {
        Ok(r) => r,
        Err(e) if !first => return Err(transient(e)),
        Err(e) => return Err(e),
    };
    // Registered before the full sync: every change from here on is an event.
    let mut watcher = src
        .watch(&o.source_root, AddWatchMode::PersistentRecursive)
        .await
        .map_err(|e| SyncError::Write {
            op: "watch",
            path: o.source_root.clone(),
            source: e,
        })?;
    let mut dirty: BTreeMap<String, Pending> = BTreeMap::new();
    let mut overflowed = false;

    let me = Identity::new(o.destination.auth.as_ref());
    let mut disconnected = false;
    // When the pending changes are applied next (None: nothing pending).
    let mut due: Option<tokio::time::Instant> = None;
    let mut retrying = false;
    let mut dst = dst;
    let mut why = "full sync";
    let gate = &opts.gate;
    let mut reported: Option<Held> = gate.held();
    'rounds: loop {
        observer.state(LiveState::FullSync, why);
        observer.caught_up(false);
        {
            // A full sync re-reads both trees: it judges (or holds) every delete itself.
            let mut full_opts = o.clone();
            full_opts.guard = gate.full_sync_guard();
            gate.reset_queue();
            if let Some(q) = &opts.delay {
                q.clear();
            }
            let full = crate::engine::sync_with(&full_opts, crate::engine::Claiming::Held);
            tokio::pin!(full);
            // Drain events while the full sync runs, so the watch channel stays small.
            let summary = loop {
                tokio::select! {
                    r = &mut full => break r?,
                    ev = watcher.changed() => {
                        if let Some(end) = on_watch_event(ev, &mut dirty, &mut overflowed, opts.max_pending, &mut disconnected, observer) {
                            return Ok(end);
                        }
                    }
                    _ = stop.changed() => return Ok(Epoch::Stopped),
                }
            };
            observer.full_sync(&summary);
            gate.after_full_sync(summary.held.clone(), destination_nodes(&summary));
            report_hold(gate, &mut reported, observer);
            observer.caught_up(dirty.is_empty() && gate.queued() == 0);
        }
        observer.state(LiveState::Streaming, "streaming changes");
        // ACL changes fire no watch event: only a re-walk sees them.
        let resync_at = opts
            .resync_interval
            .map(|d| tokio::time::Instant::now() + d);
        loop {
            if overflowed {
                return Ok(Epoch::Restart(format!(
                    "more than {} changes pending: running a full sync instead",
                    opts.max_pending
                )));
            }
            // A batch is due a window after its first event (or after a retry delay), however
            // busy the watch is: without the deadline a steady stream would starve it.
            if due.is_none() && !dirty.is_empty() {
                due = Some(tokio::time::Instant::now() + opts.batch_window);
                observer.caught_up(false);
            }
            let batch_at = due.unwrap_or_else(tokio::time::Instant::now);
            let resync_wait =
                resync_at.map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
            let deletes_at = gate
                .next_due()
                .map(|t| tokio::time::Instant::from_std(t) + DELETE_GATHER);
            let records_at = opts
                .delay
                .as_ref()
                .and_then(|q| q.next_due())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(Epoch::Stopped),
                _ = gate.released.notified() => {}
                _ = tokio::time::sleep_until(records_at.unwrap_or_else(tokio::time::Instant::now)), if records_at.is_some() => {
                    if let Some(q) = &opts.delay {
                        let records = q.take_due(Instant::now());
                        if let Err((e, rest)) = delay::apply_records(&src, &dst, opts, &me, records, observer).await {
                            q.requeue_front(rest);
                            if let Some(end) = interrupted(&e, observer) {
                                return Ok(end);
                            }
                            retrying = true;
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                        report_backlog(q, observer);
                        observer.caught_up(dirty.is_empty() && gate.queued() == 0);
                    }
                }
                _ = tokio::time::sleep_until(deletes_at.unwrap_or_else(tokio::time::Instant::now)), if deletes_at.is_some() => {
                    let now = Instant::now();
                    let d = gate.take_due(now);
                    report_hold(gate, &mut reported, observer);
                    if d.full_sync.is_some() {
                        why = "deletes released: a full sync applies them";
                        continue 'rounds;
                    }
                    if let Err(e) = apply_deletes(&src, &dst, opts, &d.paths, observer).await {
                        // Each path goes back through the stream (and the guard) again.
                        for p in d.paths {
                            dirty.entry(p).or_insert(Pending { since: now, kinds: CREATED_OR_DELETED });
                        }
                        if let Some(end) = interrupted(&e, observer) {
                            return Ok(end);
                        }
                        retrying = true;
                    }
                    observer.caught_up(dirty.is_empty() && gate.queued() == 0);
                }
                _ = tokio::time::sleep(resync_wait.unwrap_or_default()), if resync_wait.is_some() => {
                    why = "periodic anti-entropy full sync";
                    continue 'rounds;
                }
                _ = tokio::time::sleep_until(batch_at), if due.is_some() => {
                    if claims.is_some_and(Claims::lost) {
                        return Ok(Epoch::Restart("the session holding the writer claim ended: claiming the tree again".into()));
                    }
                    due = None;
                    let batch = std::mem::take(&mut dirty);
                    let applied = match &opts.delay {
                        Some(q) => delay::record_batch(&src, &dst, opts, &me, q, &batch, observer).await,
                        None => apply_batch(&readers, &dst, opts, &me, &batch, observer).await,
                    };
                    if let Err(e) = applied {
                        // Keep every path of the batch (newer events keep their own time).
                        for (p, t) in batch {
                            let e = dirty.entry(p).or_insert(t);
                            e.since = e.since.min(t.since);
                            e.kinds |= t.kinds;
                        }
                        overflowed |= dirty.len() > opts.max_pending;
                        if !e.is_transient() {
                            // NoAuth and friends need the full pass (ACL staging, kind changes).
                            return Ok(Epoch::Restart(format!("{}: {} {}: {}", e.side, e.op, e.path, e.source)));
                        }
                        if e.side == "source" {
                            return Ok(Epoch::Restart(format!("source: {}", e.source)));
                        }
                        let why = format!("destination: {} {}: {}", e.op, e.path, e.source);
                        observer.state(LiveState::Retrying, &why);
                        observer.reachable("destination", false, &why);
                        if matches!(e.source, ZkError::SessionExpired | ZkError::ClientClosed) {
                            // A new destination session; the dirty set is still complete.
                            if let Ok(c) = verifier::connect("destination", &o.destination).await {
                                dst = c;
                                observer.reconnected("destination");
                            }
                        }
                        due = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                        retrying = true;
                    } else {
                        if std::mem::take(&mut retrying) {
                            observer.reachable("destination", true, "connected");
                            observer.state(LiveState::Streaming, "destination back: streaming changes");
                        }
                        report_hold(gate, &mut reported, observer);
                        observer.caught_up(dirty.is_empty() && gate.queued() == 0);
                    }
                }
                ev = watcher.changed() => {
                    if let Some(end) = on_watch_event(ev, &mut dirty, &mut overflowed, opts.max_pending, &mut disconnected, observer) {
                        return Ok(end);
                    }
                }
            }
        }
    }
}

/// Deletes that come due within this of the first one go in the same round: a round costs
/// the same few round trips for one path or a thousand, and each round holds up the batches.
const DELETE_GATHER: Duration = Duration::from_millis(20);

/// A pause before the stream tries the destination again after a write failed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a failed apply means: a source failure ends the epoch (events may be lost); a
/// destination failure is reported and retried with the same changes.
fn interrupted(e: &ApplyError, observer: &Arc<dyn Observer>) -> Option<Epoch> {
    if e.side == "source" {
        return Some(Epoch::Restart(format!("source: {}", e.source)));
    }
    let why = format!("destination: {} {}: {}", e.op, e.path, e.source);
    observer.state(LiveState::Retrying, &why);
    observer.reachable("destination", false, &why);
    None
}

/// Nodes a full sync left under the destination root: the copied ones, plus the deletes it
/// held (an emptied source held before any write leaves the destination as it was).
fn destination_nodes(summary: &SyncSummary) -> u64 {
    let copied = summary.source_nodes.saturating_sub(summary.skipped.total());
    match &summary.held {
        Some(h) if h.reason == HoldReason::SourceEmpty => h.destination_nodes,
        Some(h) => copied + h.deletes,
        None => copied,
    }
}

/// Tells the observer what the delayed apply holds back.
pub(super) fn report_backlog(q: &DelayQueue, observer: &Arc<dyn Observer>) {
    let (waiting, oldest) = q.backlog();
    observer.delay_backlog(waiting, oldest, q.shortened_to());
}

/// Tells the observer when the hold starts, grows or ends.
fn report_hold(gate: &LiveGate, reported: &mut Option<Held>, observer: &Arc<dyn Observer>) {
    let now = gate.held();
    if now != *reported {
        if let Some(h) = &now {
            if reported.is_none() {
                tracing::warn!(deletes = h.deletes, "deletion guard: {}", h.describe());
            }
        } else {
            tracing::info!("deletion guard: no deletes held any more");
        }
        observer.deletions_held(now.as_ref());
        *reported = now;
    }
}

fn transient(e: SyncError) -> SyncError {
    match e {
        SyncError::Connect(c) => SyncError::Write {
            op: "connect",
            path: c.to_string(),
            source: ZkError::ConnectionLoss,
        },
        other => other,
    }
}
