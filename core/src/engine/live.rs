//! Continuous replication: a full sync, then every change streamed from a persistent recursive
//! watch on the source root.
//!
//! Each watch event only marks its path dirty. A batch reads the *current* source state of
//! each dirty path and applies it (create, update or delete), so bursts on a hot node coalesce
//! and the order of events does not matter. Parents go before children: paths are applied one
//! depth at a time, each depth concurrently.
//!
//! Events can be lost across a source reconnect (ZOOKEEPER-4698) and are lost with a session.
//! So after any source disconnection, and whenever the dirty set overflows, the engine runs a
//! full sync again (anti-entropy) before it reports being caught up. The watch is registered
//! before each full sync, so no change made during the sync is missed. A destination outage
//! keeps the dirty set, which is bounded, and retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use verifier::model::{canonical_acl, AclEntry, NodeKind};
use verifier::{path, ConnectOptions};
use zookeeper_client::{Acl, AddWatchMode, Client, Error as ZkError, EventType, SessionState};

mod batch;
mod cversion;
mod delay;
mod deletes;
mod multi;
mod readers;

use batch::apply_batch;
pub use cversion::raise_cversion_to;
pub use delay::{DelayQueue, DEFAULT_MAX_BYTES as DEFAULT_DELAY_MAX_BYTES};
use deletes::apply_deletes;
pub use deletes::delete_destination_subtree;

use super::guard::{LiveGate, SharedGate};
use super::plan::{desired_kind, plan_create_acl, Identity};
use super::writer::create_options;
use super::{kind_for, Held, HoldReason, SyncError, SyncOptions, SyncSummary};

/// What the stream needs on a node it creates to go on with it as events come (reading and
/// setting its data, creating and deleting its children), where a one-shot copy needs only the
/// child operations it still has to do: a node whose final ACL denies any of these is created
/// with the staging ACL, then locked (the stream holds no staging plan across batches).
const STREAM_NEEDS: i32 = verifier::model::perms::ALL & !verifier::model::perms::ADMIN;

/// Net deletes (deletes minus creates) are judged over this sliding window, so a `deleteall`
/// that removes a tree node by node counts as one burst, while queue churn never trips it.
pub const GUARD_WINDOW: Duration = Duration::from_secs(60);
/// Every delete waits this long before it is applied, so the whole burst is counted before
/// any of it reaches the copy. It adds this much to the lag of deletes only.
pub const DELETE_DELAY: Duration = Duration::from_secs(2);

/// Settings of a continuous sync.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub sync: SyncOptions,
    /// How long events are gathered before a batch is applied (coalesces bursts).
    pub batch_window: Duration,
    /// Dirty paths kept while the destination is away; beyond this a full sync is run instead.
    pub max_pending: usize,
    /// A full sync this often while streaming (None: only after gaps). ZooKeeper fires no
    /// watch event for an ACL change, so only a re-walk copies one.
    pub resync_interval: Option<Duration>,
    /// The deletion guard of the stream (built from `sync.guard`); whoever runs the stream
    /// keeps a clone to read the hold and to release it.
    pub gate: SharedGate,
    /// Delayed apply (None: changes are applied as soon as they are read).
    pub delay: Option<Arc<DelayQueue>>,
}

impl LiveOptions {
    pub fn new(sync: SyncOptions) -> LiveOptions {
        let max_pending = 100_000;
        let gate = Arc::new(LiveGate::new(
            sync.guard,
            GUARD_WINDOW,
            DELETE_DELAY,
            max_pending,
        ));
        LiveOptions {
            sync,
            batch_window: Duration::from_millis(2),
            max_pending,
            resync_interval: Some(Duration::from_secs(600)),
            gate,
            delay: None,
        }
    }

    /// Every delete waits `delay` (default [`DELETE_DELAY`]) before the deletion guard lets it
    /// through. Zero applies deletes at once, at the price of letting up to the guard's limits
    /// of a burst through before it trips.
    pub fn with_delete_delay(mut self, delay: Duration) -> LiveOptions {
        self.gate = Arc::new(LiveGate::new(
            self.sync.guard,
            GUARD_WINDOW,
            delay,
            self.max_pending,
        ));
        self
    }

    /// Applies every change only once it is `delay` old at the source, keeping at most
    /// `max_bytes` of recorded changes. A periodic re-walk would copy the source as it is now,
    /// so there is none; after a gap the stream waits `delay` before it re-walks.
    pub fn with_apply_delay(mut self, delay: Duration, max_bytes: usize) -> LiveOptions {
        if !delay.is_zero() {
            self.delay = Some(Arc::new(DelayQueue::new(delay, max_bytes)));
            self.resync_interval = None;
        }
        self
    }
}

/// Where the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveState {
    Connecting,
    /// Running a full sync (the first one, or anti-entropy after a gap).
    FullSync,
    /// Applying watch events; caught up when nothing is pending.
    Streaming,
    /// Waiting to retry after a failure.
    Retrying,
}

/// Receives what the stream does. Every method has a no-op default.
pub trait Observer: Send + Sync {
    fn state(&self, _state: LiveState, _why: &str) {}
    /// A full sync finished.
    fn full_sync(&self, _summary: &SyncSummary) {}
    /// One path applied; `lag` is apply time minus the source node's mtime (or, for a delete,
    /// minus when its event arrived).
    fn applied(&self, _path: &str, _lag: Duration) {}
    /// Nothing pending after a batch (true) or changes waiting (false).
    fn caught_up(&self, _caught_up: bool) {}
    /// A side ("source" or "destination") answered (true) or was lost (false), and why.
    fn reachable(&self, _side: &'static str, _reachable: bool, _why: &str) {}
    /// A watch event for a node arrived.
    fn watch_event(&self) {}
    /// A session to `side` was opened again after a gap (a new epoch, or a replaced
    /// destination session).
    fn reconnected(&self, _side: &'static str) {}
    /// The deletion guard started or stopped holding deletes, or holds more of them now.
    fn deletions_held(&self, _held: Option<&Held>) {}
    /// A claim was refused (`writer_conflict`, `replication_loop`, `same_ensemble`): the
    /// stream waits and tries again, or stops.
    fn claim_refused(&self, _reason: &'static str) {}
    /// Delayed apply: changes recorded and waiting, the oldest's age, and the delay the byte
    /// bound cut it to (None: the full delay holds).
    fn delay_backlog(
        &self,
        _waiting: usize,
        _oldest: Option<Duration>,
        _shortened: Option<Duration>,
    ) {
    }
}

/// Hands every observation to each of several observers (e.g. stats for a status line and
/// metrics for Prometheus).
pub struct Tee(pub Vec<Arc<dyn Observer>>);

impl Observer for Tee {
    fn state(&self, state: LiveState, why: &str) {
        self.0.iter().for_each(|o| o.state(state, why));
    }
    fn full_sync(&self, summary: &SyncSummary) {
        self.0.iter().for_each(|o| o.full_sync(summary));
    }
    fn applied(&self, path: &str, lag: Duration) {
        self.0.iter().for_each(|o| o.applied(path, lag));
    }
    fn caught_up(&self, caught_up: bool) {
        self.0.iter().for_each(|o| o.caught_up(caught_up));
    }
    fn reachable(&self, side: &'static str, reachable: bool, why: &str) {
        self.0
            .iter()
            .for_each(|o| o.reachable(side, reachable, why));
    }
    fn watch_event(&self) {
        self.0.iter().for_each(|o| o.watch_event());
    }
    fn reconnected(&self, side: &'static str) {
        self.0.iter().for_each(|o| o.reconnected(side));
    }
    fn deletions_held(&self, held: Option<&Held>) {
        self.0.iter().for_each(|o| o.deletions_held(held));
    }
    fn claim_refused(&self, reason: &'static str) {
        self.0.iter().for_each(|o| o.claim_refused(reason));
    }
    fn delay_backlog(&self, waiting: usize, oldest: Option<Duration>, shortened: Option<Duration>) {
        self.0
            .iter()
            .for_each(|o| o.delay_backlog(waiting, oldest, shortened));
    }
}

/// Why one path could not be applied.
#[derive(Debug)]
struct ApplyError {
    side: &'static str,
    op: &'static str,
    path: String,
    source: ZkError,
}

impl ApplyError {
    fn on(side: &'static str, op: &'static str, path: &str) -> impl FnOnce(ZkError) -> ApplyError {
        let path = path.to_string();
        move |source| ApplyError {
            side,
            op,
            path,
            source,
        }
    }

    /// A lost connection or session: retry the same paths later.
    fn is_transient(&self) -> bool {
        verifier::zk::is_transient(&self.source)
            || matches!(
                self.source,
                ZkError::SessionExpired | ZkError::ConnectionLoss | ZkError::ClientClosed
            )
    }
}

/// A dirty path: when its first pending event arrived and which kinds of event it had.
#[derive(Clone, Copy, Debug)]
struct Pending {
    since: Instant,
    kinds: u8,
}

const DATA_CHANGED: u8 = 1;
const CREATED_OR_DELETED: u8 = 2;

/// How a stream epoch ended.
enum Epoch {
    Stopped,
    /// Reconnect (new sessions) and run a full sync again.
    Restart(String),
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs until `stop` turns true. Returns an error only for what a retry cannot fix (bad
/// options, refused credentials, a full sync failing permanently).
pub async fn run(
    opts: &LiveOptions,
    observer: Arc<dyn Observer>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    super::validate(&opts.sync)?;
    // Held across epochs, so the tree stays ours while the stream reconnects.
    let mut claims: Option<super::claim::Claims> = None;
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
    claims: &mut Option<super::claim::Claims>,
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
            if claims.as_ref().is_none_or(super::claim::Claims::lost) {
                *claims = None;
                observer.state(LiveState::Connecting, "claiming the destination tree");
                *claims = Some(super::claim::acquire(&opts.sync, &opts.sync.holder).await?);
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
                let why = super::error::cause_chain(&e);
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
                    observer.reachable(side, false, &super::error::cause_chain(&e));
                }
                return Err(e);
            }
        }
        first = false;
    }
}

/// Now minus a source node's mtime: the lag of a change written to the destination.
fn since_mtime(mtime_ms: i64) -> Duration {
    Duration::from_millis((wall_ms() - mtime_ms).max(0) as u64)
}

/// One epoch: fresh sessions, a watch, a full sync, then streaming until a gap or stop.
async fn epoch(
    opts: &LiveOptions,
    observer: &Arc<dyn Observer>,
    stop: &mut watch::Receiver<bool>,
    first: bool,
    claims: Option<&super::claim::Claims>,
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
            Some(e) => observer.reachable(side, false, &super::error::cause_chain(e)),
        }
    }
    let (src, dst) = match (src, dst) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) if !first => return Err(transient(e)),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let readers = match readers::Readers::open(&src, &o.source).await {
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
            let full = super::sync_with(&full_opts, super::Claiming::Held);
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
                    if claims.is_some_and(super::claim::Claims::lost) {
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
fn report_backlog(q: &DelayQueue, observer: &Arc<dyn Observer>) {
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

/// [`on_event`], telling the observer about node events and a lost source connection.
fn on_watch_event(
    ev: zookeeper_client::WatchedEvent,
    dirty: &mut BTreeMap<String, Pending>,
    overflowed: &mut bool,
    max_pending: usize,
    disconnected: &mut bool,
    observer: &Arc<dyn Observer>,
) -> Option<Epoch> {
    let was_disconnected = *disconnected;
    let is_node = ev.event_type != EventType::Session;
    let end = on_event(
        (ev.event_type, ev.session_state, ev.path),
        dirty,
        overflowed,
        max_pending,
        disconnected,
    );
    if is_node {
        observer.watch_event();
    } else if *disconnected && !was_disconnected {
        // Changes made meanwhile are unseen: not caught up until a re-walk after reconnecting.
        let why = "source connection lost; reconnecting";
        observer.reachable("source", false, why);
        observer.caught_up(false);
        observer.state(LiveState::Retrying, why);
    }
    end
}

/// Records one watch event. Returns how the epoch ends when the session says so.
fn on_event(
    ev: (EventType, SessionState, String),
    dirty: &mut BTreeMap<String, Pending>,
    overflowed: &mut bool,
    max_pending: usize,
    disconnected: &mut bool,
) -> Option<Epoch> {
    let (event_type, session_state, path) = ev;
    match event_type {
        EventType::Session => match session_state {
            SessionState::Disconnected => {
                *disconnected = true;
                None
            }
            // Events during the gap may be lost (ZOOKEEPER-4698): a full sync closes it.
            SessionState::SyncConnected if *disconnected => Some(Epoch::Restart(
                "source reconnected: events may have been lost, running a full sync".into(),
            )),
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => None,
            other => Some(Epoch::Restart(format!("source session {other:?}"))),
        },
        // /zookeeper is the server's own (quotas, config): never copied.
        _ if path::is_reserved(&path) => None,
        _ => {
            if dirty.len() >= max_pending && !dirty.contains_key(&path) {
                *overflowed = true;
            } else {
                let bit = if event_type == EventType::NodeDataChanged {
                    DATA_CHANGED
                } else {
                    CREATED_OR_DELETED
                };
                dirty
                    .entry(path)
                    .or_insert_with(|| Pending {
                        since: Instant::now(),
                        kinds: 0,
                    })
                    .kinds |= bit;
            }
            None
        }
    }
}

enum Applied {
    Written {
        mtime_ms: i64,
    },
    Unchanged,
    /// A delete handed to the deletion guard; reported when it is applied.
    Queued,
}

fn dst_path(o: &SyncOptions, src_path: &str) -> String {
    // Relative to the source root: "" for the root itself, else starting with '/'.
    let rel = if o.source_root == "/" {
        if src_path == "/" {
            ""
        } else {
            src_path
        }
    } else {
        src_path
            .strip_prefix(o.source_root.as_str())
            .unwrap_or_default()
    };
    path::join(&o.destination_root, rel)
}

/// Absolute path of the child `name` of the absolute path `parent`.
fn child_of(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        path::child(parent, name)
    }
}

/// Only the data of `p` changed (no create or delete event): copy it with one read and one
/// write. ACLs fire no event and kinds cannot change without a delete, so neither is compared
/// here; anything unexpected falls back to [`apply_path`].
async fn apply_data(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
) -> Result<Applied, ApplyError> {
    let o = &lo.sync;
    let (data, stat) = match src.get_data(p).await {
        Ok(v) => v,
        Err(ZkError::NoNode) => return apply_path(src, dst, lo, me, p).await,
        Err(e) => return Err(ApplyError::on("source", "getData", p)(e)),
    };
    let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    if desired_kind(kind_for(&o.type_rules, p, reported), o.ephemerals).is_none() {
        return Ok(Applied::Unchanged);
    }
    let dp = dst_path(o, p);
    match dst.set_data(&dp, &data, None).await {
        Ok(_) => Ok(Applied::Written {
            mtime_ms: stat.mtime,
        }),
        Err(ZkError::NoNode) => apply_path(src, dst, lo, me, p).await,
        Err(e) => Err(ApplyError::on("destination", "setData", &dp)(e)),
    }
}

/// Makes the destination node of `p` equal to the source node as it is now.
async fn apply_path(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
) -> Result<Applied, ApplyError> {
    let state = read_source(src, &lo.sync, p).await?;
    write_state(src, dst, lo, me, p, state).await
}

/// What the source holds at a path, as the copy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SourceState {
    Absent,
    /// An ephemeral the policy leaves out.
    Skipped,
    Node(SourceNode),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SourceNode {
    pub data: Vec<u8>,
    pub mtime_ms: i64,
    pub kind: NodeKind,
    /// Canonical, when ACLs are copied.
    pub acl: Option<Vec<AclEntry>>,
}

impl SourceState {
    /// Bytes it keeps in memory, for the delay queue's bound.
    fn size(&self) -> usize {
        match self {
            SourceState::Node(n) => {
                n.data.len()
                    + n.acl
                        .as_ref()
                        .map_or(0, |a| a.iter().map(|e| e.id.len() + 16).sum())
            }
            _ => 0,
        }
    }
}

/// Reads the node at `p` with its ACL.
async fn read_source(src: &Client, o: &SyncOptions, p: &str) -> Result<SourceState, ApplyError> {
    let (data, stat) = match src.get_data(p).await {
        Ok(v) => v,
        Err(ZkError::NoNode) => return Ok(SourceState::Absent),
        Err(e) => return Err(ApplyError::on("source", "getData", p)(e)),
    };
    let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    let Some(kind) = desired_kind(kind_for(&o.type_rules, p, reported), o.ephemerals) else {
        return Ok(SourceState::Skipped);
    };
    let acl: Option<Vec<AclEntry>> = if o.copy_acl {
        let (acl, _) = match src.get_acl(p).await {
            Ok(v) => v,
            Err(ZkError::NoNode) => return Ok(SourceState::Absent),
            Err(e) => return Err(ApplyError::on("source", "getACL", p)(e)),
        };
        let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
        if acl.iter().any(verifier::reader::is_redacted) {
            // Needs ADMIN on the source; the full pass reports it with the fix.
            return Err(ApplyError::on("source", "getACL", p)(ZkError::NoAuth));
        }
        Some(canonical_acl(acl))
    } else {
        None
    };
    Ok(SourceState::Node(SourceNode {
        data,
        mtime_ms: stat.mtime,
        kind,
        acl,
    }))
}

/// Makes the destination node of `p` what `state` says the source holds. A delete goes
/// through the deletion guard.
async fn write_state(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
    state: SourceState,
) -> Result<Applied, ApplyError> {
    let o = &lo.sync;
    let dp = dst_path(o, p);
    let node = match state {
        SourceState::Skipped => return Ok(Applied::Unchanged),
        SourceState::Absent => {
            if p == o.source_root {
                // The whole source root is gone: stop here, as a one-shot sync would, rather
                // than wipe the destination copy (it may be the only one left).
                return Err(ApplyError::on("source", "getData", p)(ZkError::NoNode));
            }
            if !o.prune {
                return Ok(Applied::Unchanged);
            }
            // Through the deletion guard: applied after its delay, unless the burst is held.
            lo.gate.offer(p, Instant::now());
            return Ok(Applied::Queued);
        }
        SourceState::Node(n) => n,
    };
    let SourceNode {
        data,
        mtime_ms,
        kind,
        acl,
    } = node;
    let existing = match dst.get_data(&dp).await {
        Ok(v) => Some(v),
        Err(ZkError::NoNode) => None,
        Err(e) => return Err(ApplyError::on("destination", "getData", &dp)(e)),
    };
    match existing {
        None => {
            // A node whose ACL would lock the copier out is created open to it, then locked.
            let plan = plan_create_acl(me, acl.as_deref(), STREAM_NEEDS);
            let zk_acl: Vec<Acl> = plan.create_with.iter().map(AclEntry::to_zk).collect();
            let options = create_options(kind, &zk_acl);
            match dst.create(&dp, &data, &options).await {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(ZkError::NoNode) => {
                    // The parent is missing on the destination: bring it first, then retry.
                    if let Some(parent) =
                        path::parent(p).filter(|pp| pp.len() >= o.source_root.len())
                    {
                        Box::pin(apply_path(src, dst, lo, me, parent)).await?;
                    }
                    match dst.create(&dp, &data, &options).await {
                        Ok(_) | Err(ZkError::NodeExists) => {}
                        Err(e) => return Err(ApplyError::on("destination", "create", &dp)(e)),
                    }
                }
                Err(e) => return Err(ApplyError::on("destination", "create", &dp)(e)),
            }
            lo.gate.created(Instant::now(), 1);
            if let Some(target) = plan.set_at_end {
                let zk: Vec<Acl> = target.iter().map(AclEntry::to_zk).collect();
                dst.set_acl(&dp, &zk, None).await.map_err(ApplyError::on(
                    "destination",
                    "setACL",
                    &dp,
                ))?;
            }
            Ok(Applied::Written { mtime_ms })
        }
        Some((current, dstat)) => {
            let current_kind = NodeKind::from_ephemeral_owner(dstat.ephemeral_owner);
            if super::observable(current_kind) != super::observable(kind) {
                // A kind change needs the subtree recreated: the full pass does that.
                return Err(ApplyError::on("destination", "kind", &dp)(
                    ZkError::BadArguments(&"node kind differs"),
                ));
            }
            let mut wrote = false;
            if current != data {
                dst.set_data(&dp, &data, None)
                    .await
                    .map_err(ApplyError::on("destination", "setData", &dp))?;
                wrote = true;
            }
            if let Some(acl) = &acl {
                let (cur, _) =
                    dst.get_acl(&dp)
                        .await
                        .map_err(ApplyError::on("destination", "getACL", &dp))?;
                let cur = canonical_acl(cur.iter().map(AclEntry::from_zk).collect());
                if &cur != acl {
                    let zk: Vec<Acl> = acl.iter().map(AclEntry::to_zk).collect();
                    dst.set_acl(&dp, &zk, None).await.map_err(ApplyError::on(
                        "destination",
                        "setACL",
                        &dp,
                    ))?;
                    wrote = true;
                }
            }
            Ok(if wrote {
                Applied::Written { mtime_ms }
            } else {
                Applied::Unchanged
            })
        }
    }
}

/// An observer that keeps counts and lag samples for a reader to take: the CLI's status lines,
/// benchmarks and tests.
#[derive(Default)]
pub struct Stats {
    inner: std::sync::Mutex<StatsInner>,
}

#[derive(Clone, Debug, Default)]
pub struct StatsInner {
    pub state: Option<LiveState>,
    pub why: String,
    pub applied_total: u64,
    pub full_syncs: u64,
    pub caught_up: bool,
    /// Lags since the last [`Stats::take_lags`].
    pub lags: Vec<Duration>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the counters (lags included).
    pub fn snapshot(&self) -> StatsInner {
        self.lock().clone()
    }

    /// The lag samples gathered since the last call.
    pub fn take_lags(&self) -> Vec<Duration> {
        std::mem::take(&mut self.lock().lags)
    }
}

impl Observer for Stats {
    fn state(&self, state: LiveState, why: &str) {
        let mut s = self.lock();
        s.state = Some(state);
        s.why = why.to_string();
    }
    fn full_sync(&self, _summary: &SyncSummary) {
        self.lock().full_syncs += 1;
    }
    fn applied(&self, _path: &str, lag: Duration) {
        let mut s = self.lock();
        s.applied_total += 1;
        // Bounded: a reader that never takes samples does not make memory grow.
        if s.lags.len() < 1_000_000 {
            s.lags.push(lag);
        }
    }
    fn caught_up(&self, caught_up: bool) {
        self.lock().caught_up = caught_up;
    }
}

/// The `q` quantile (0..=1) of `samples`, sorted in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    samples.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_paths_follow_the_root_mapping() {
        let mut o = SyncOptions::new(
            ConnectOptions::new("a:1"),
            "/kafka",
            ConnectOptions::new("b:1"),
            "/dr/kafka",
        );
        assert_eq!(dst_path(&o, "/kafka"), "/dr/kafka");
        assert_eq!(
            dst_path(&o, "/kafka/brokers/ids/1"),
            "/dr/kafka/brokers/ids/1"
        );
        o.source_root = "/".into();
        o.destination_root = "/".into();
        assert_eq!(dst_path(&o, "/a/b"), "/a/b");
        assert_eq!(dst_path(&o, "/"), "/");
        o.destination_root = "/dr".into();
        assert_eq!(dst_path(&o, "/a/b"), "/dr/a/b");
        assert_eq!(child_of("/", "x"), "/x");
        assert_eq!(child_of("/a", "x"), "/a/x");
    }

    #[test]
    fn quantiles_of_lag_samples() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(Duration::from_millis(51)));
        assert_eq!(quantile(&mut v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn events_mark_paths_and_a_reconnect_ends_the_epoch() {
        let mut dirty = BTreeMap::new();
        let (mut over, mut disc) = (false, false);
        let node = |p: &str| {
            (
                EventType::NodeDataChanged,
                SessionState::SyncConnected,
                p.to_string(),
            )
        };
        assert!(on_event(node("/a"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert!(on_event(node("/a"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert!(on_event(node("/b"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert_eq!(dirty.len(), 2);
        assert!(!over);
        // Over the bound: a full sync instead of an ever-growing set.
        assert!(on_event(node("/c"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert!(over);
        let session = |s| (EventType::Session, s, String::new());
        assert!(on_event(
            session(SessionState::Disconnected),
            &mut dirty,
            &mut over,
            2,
            &mut disc
        )
        .is_none());
        assert!(matches!(
            on_event(
                session(SessionState::SyncConnected),
                &mut dirty,
                &mut over,
                2,
                &mut disc
            ),
            Some(Epoch::Restart(_))
        ));
        assert!(matches!(
            on_event(
                session(SessionState::Expired),
                &mut dirty,
                &mut over,
                2,
                &mut disc
            ),
            Some(Epoch::Restart(_))
        ));
    }
}
