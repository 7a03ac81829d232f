//! The stream's control loop: epochs of fresh sessions, each a full sync and then watch
//! events applied in batches until a gap, a due re-walk or a stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use verifier::{ConnectOptions, Side};
use zookeeper_client::{AddWatchMode, Client, Error as ZkError, PersistentWatcher, WatchedEvent};

use super::backoff::{self, retrying, Backoff};
use super::batch::apply_batch;
use super::deletes::apply_deletes;
use super::events::on_watch_event;
use super::readers::Readers;
use super::CREATED_OR_DELETED;
use super::{delay, ApplyError, DelayQueue, Epoch, LiveOptions, LiveState, Observer, Pending};
use crate::engine::claim::{self, Claims};
use crate::engine::guard::LiveGate;
use crate::engine::oversized;
use crate::engine::plan::Identity;
use crate::engine::{error::cause_chain, Held, HoldReason, SyncError, SyncOptions, SyncSummary};

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
    let mut backoff = Backoff::default();
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
            if stopped_during(q.delay, stop).await {
                return Ok(());
            }
        }
        // When the epoch's first full sync ended: how long it streamed tells a healthy epoch.
        let mut streaming_since = None;
        let outcome = async {
            if claims.as_ref().is_none_or(Claims::lost) {
                *claims = None;
                observer.state(LiveState::Connecting, "claiming the destination tree");
                *claims = Some(claim::acquire(&opts.sync, &opts.sync.holder).await?);
            }
            let claims = claims.as_ref();
            epoch(opts, &observer, stop, first, claims, &mut streaming_since).await
        }
        .await;
        if let Some(reason) = outcome.as_ref().err().and_then(SyncError::claim_refusal) {
            observer.claim_refused(reason);
        }
        let healthy = backoff.ended(streaming_since.map(|t: Instant| t.elapsed()));
        match outcome {
            Ok(Epoch::Stopped) => return Ok(()),
            // A gap after a healthy epoch is closed at once: a blip costs no lag.
            Ok(Epoch::Restart(why)) if healthy => {
                tracing::info!(why = %why, "continuous sync: new sessions and a full sync");
                observer.state(LiveState::Connecting, &why);
            }
            // Restarting at once again and again would re-walk both trees in a loop.
            Ok(Epoch::Restart(why)) => {
                let (failures, wait) = backoff.failed();
                tracing::info!(why = %why, failures, retry_in = ?wait,
                    "continuous sync: new sessions and a full sync after a backoff");
                observer.backoff(failures, wait);
                observer.state(LiveState::Retrying, &retrying(failures, wait, &why));
                if stopped_during(wait, stop).await {
                    return Ok(());
                }
                observer.state(LiveState::Connecting, &why);
            }
            Err(e) if e.is_transient() || !first => {
                let (failures, wait) = backoff.failed();
                let why = cause_chain(&e);
                if let Some(side) = e.side() {
                    observer.reachable(side, false, &why);
                }
                tracing::warn!(error = %why, failures, retry_in = ?wait, "continuous sync interrupted");
                observer.backoff(failures, wait);
                observer.state(LiveState::Retrying, &retrying(failures, wait, &why));
                if stopped_during(wait, stop).await {
                    return Ok(());
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

/// Waits `wait` unless `stop` changes first (true).
async fn stopped_during(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.changed() => true,
    }
}

/// One epoch: fresh sessions, a watch, a full sync, then streaming until a gap or stop.
async fn epoch(
    opts: &LiveOptions,
    observer: &Arc<dyn Observer>,
    stop: &mut watch::Receiver<bool>,
    first: bool,
    claims: Option<&Claims>,
    streaming_since: &mut Option<Instant>,
) -> Result<Epoch, SyncError> {
    let o = &opts.sync;
    let (src, dst) = open_sessions(o, observer, first).await?;
    // Before the full sync, so it leaves out what the destination cannot take.
    learn_limit(opts, observer).await;
    let readers = Readers::open(&src, &o.source).await?;
    // Registered before the full sync: every change from here on is an event.
    let watcher = src
        .watch(&o.source_root, AddWatchMode::PersistentRecursive)
        .await
        .map_err(|e| {
            SyncError::Read(verifier::reader::ReadError {
                side: Side::Source,
                op: "watch",
                path: o.source_root.clone(),
                source: e,
            })
        })?;
    let mut s = Streamer {
        opts,
        observer,
        claims,
        src,
        dst,
        readers,
        watcher,
        me: Identity::new(o.destination.auth.as_ref()),
        dirty: BTreeMap::new(),
        overflowed: false,
        disconnected: false,
        due: None,
        failures: 0,
        reported: opts.gate.held(),
        compare: opts.compare_before_sync,
    };
    let mut why = "full sync";
    loop {
        if let Some(end) = s.full_sync(stop, why).await? {
            return Ok(end);
        }
        streaming_since.get_or_insert_with(Instant::now);
        match s.stream(stop).await {
            Round::End(end) => return Ok(end),
            Round::FullSync(next) => why = next,
        }
    }
}

/// Opens a session to each side at once and reports which answered. The error keeps its side:
/// the epoch loop retries any failure after the first epoch, and reports the side it names.
async fn open_sessions(
    o: &SyncOptions,
    observer: &Arc<dyn Observer>,
    first: bool,
) -> Result<(Client, Client), SyncError> {
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
        connect(Side::Source, &o.source),
        connect(Side::Destination, &o.destination)
    );
    for (side, r) in [
        (Side::Source, src.as_ref().err()),
        (Side::Destination, dst.as_ref().err()),
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
    match (src, dst) {
        (Ok(s), Ok(d)) => Ok((s, d)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// What ends a round of streaming.
enum Round {
    /// The epoch ends.
    End(Epoch),
    /// A full sync runs again, for this reason.
    FullSync(&'static str),
}

/// One epoch's sessions and what the stream has seen on them.
struct Streamer<'a> {
    opts: &'a LiveOptions,
    observer: &'a Arc<dyn Observer>,
    claims: Option<&'a Claims>,
    src: Client,
    /// Replaced when its session expires: the dirty set survives it.
    dst: Client,
    readers: Readers,
    watcher: PersistentWatcher,
    me: Identity,
    dirty: BTreeMap<String, Pending>,
    /// More paths went dirty than `max_pending`: only a full sync catches up.
    overflowed: bool,
    /// The source connection was lost (events may be lost with it).
    disconnected: bool,
    /// When the pending changes are applied next (None: nothing pending).
    due: Option<tokio::time::Instant>,
    /// Writes that failed in a row: the next batch that succeeds reports the destination back.
    failures: u32,
    /// The deletion guard's hold as last reported.
    reported: Option<Held>,
    /// The trees are compared before the next full sync (once per epoch).
    compare: bool,
}

impl Streamer<'_> {
    /// A full sync, watch events gathered meanwhile. Some: the epoch ended during it.
    async fn full_sync(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        why: &str,
    ) -> Result<Option<Epoch>, SyncError> {
        let (opts, observer, gate) = (self.opts, self.observer, &self.opts.gate);
        observer.state(LiveState::FullSync, why);
        observer.caught_up(false);
        // A full sync re-reads both trees: it judges (or holds) every delete itself.
        let mut full_opts = opts.sync.clone();
        full_opts.guard = gate.full_sync_guard();
        // Nothing longer than the destination takes: such nodes are left out and named.
        (
            full_opts.writer.jute_maxbuffer,
            full_opts.writer.max_batch_bytes,
        ) = opts.limits();
        full_opts.leave_out_too_big = true;
        gate.reset_queue();
        if let Some(q) = &opts.delay {
            q.clear();
        }
        let compare = self.compare.then(|| (self.src.clone(), self.dst.clone()));
        let full = async {
            if let Some((src, dst)) = &compare {
                observer.state(
                    LiveState::FullSync,
                    "comparing the trees before the full sync",
                );
                let diff = super::compare::compare(&opts.sync, src, dst).await?;
                observer.destination_diff(&diff);
                observer.state(LiveState::FullSync, why);
            }
            crate::engine::sync_with(&full_opts, crate::engine::Claiming::Held).await
        };
        tokio::pin!(full);
        // Drain events while the full sync runs, so the watch channel stays small.
        let summary = loop {
            tokio::select! {
                r = &mut full => break r?,
                ev = self.watcher.changed() => {
                    if let Some(end) = self.on_watch(ev) {
                        return Ok(Some(end));
                    }
                }
                _ = stop.changed() => return Ok(Some(Epoch::Stopped)),
            }
        };
        self.compare = false;
        observer.full_sync(&summary);
        gate.after_full_sync(summary.held.clone(), destination_nodes(&summary));
        opts.oversized.replace(&summary.too_big);
        report_too_big(opts, observer);
        self.report_hold();
        self.report_caught_up();
        Ok(None)
    }

    /// Applies watch events in batches, due deletes and due delayed records, until the epoch
    /// ends or a full sync is due.
    async fn stream(&mut self, stop: &mut watch::Receiver<bool>) -> Round {
        let (opts, observer, gate) = (self.opts, self.observer, &self.opts.gate);
        observer.state(LiveState::Streaming, "streaming changes");
        // ACL changes fire no watch event: only a re-walk sees them.
        let resync_at = opts
            .resync_interval
            .map(|d| tokio::time::Instant::now() + d);
        loop {
            if self.overflowed {
                return Round::End(Epoch::Restart(format!(
                    "more than {} changes pending: running a full sync instead",
                    opts.max_pending
                )));
            }
            // A batch is due a window after its first event (or after a retry delay), however
            // busy the watch is: without the deadline a steady stream would starve it.
            if self.due.is_none() && !self.dirty.is_empty() {
                self.due = Some(tokio::time::Instant::now() + opts.batch_window);
                observer.caught_up(false);
            }
            let batch_at = self.due.unwrap_or_else(tokio::time::Instant::now);
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
            let batch_due = self.due.is_some();
            let ended = tokio::select! {
                biased;
                _ = stop.changed() => Some(Round::End(Epoch::Stopped)),
                _ = gate.released.notified() => None,
                _ = sleep_until(records_at), if records_at.is_some() => {
                    self.apply_due_records().await.map(Round::End)
                }
                _ = sleep_until(deletes_at), if deletes_at.is_some() => self.apply_due_deletes().await,
                _ = tokio::time::sleep(resync_wait.unwrap_or_default()), if resync_wait.is_some() => {
                    Some(Round::FullSync("periodic anti-entropy full sync"))
                }
                _ = tokio::time::sleep_until(batch_at), if batch_due => {
                    self.apply_due_batch().await.map(Round::End)
                }
                ev = self.watcher.changed() => self.on_watch(ev).map(Round::End),
            };
            if let Some(round) = ended {
                return round;
            }
            report_too_big(opts, observer);
            if opts.oversized.take_rewalk() {
                return Round::FullSync(
                    "a node left out for its size fits now: a full sync copies its subtree",
                );
            }
        }
    }

    /// Records a watch event. Some: the epoch ends.
    fn on_watch(&mut self, ev: WatchedEvent) -> Option<Epoch> {
        on_watch_event(
            &self.opts.sync,
            ev,
            &mut self.dirty,
            &mut self.overflowed,
            self.opts.max_pending,
            &mut self.disconnected,
            self.observer,
        )
    }

    /// Delayed apply: applies the records that are `delay` old, in order.
    async fn apply_due_records(&mut self) -> Option<Epoch> {
        let (opts, observer) = (self.opts, self.observer);
        let q = opts.delay.as_ref()?;
        let records = q.take_due(Instant::now());
        let applied =
            delay::apply_records(&self.src, &self.dst, opts, &self.me, records, observer).await;
        if let Err((e, rest)) = applied {
            q.requeue_front(rest);
            if let Some(end) = interrupted(&e, observer) {
                return Some(end);
            }
            let pause = self.destination_failed(&e);
            tokio::time::sleep(pause).await;
        }
        report_backlog(q, observer);
        self.report_caught_up();
        None
    }

    /// Applies the deletes the guard lets through now (or a full sync when a release asks
    /// for one).
    async fn apply_due_deletes(&mut self) -> Option<Round> {
        let (opts, observer) = (self.opts, self.observer);
        let now = Instant::now();
        let d = opts.gate.take_due(now);
        self.report_hold();
        if d.full_sync.is_some() {
            return Some(Round::FullSync(
                "deletes released: a full sync applies them",
            ));
        }
        if let Err(e) = apply_deletes(&self.src, &self.dst, opts, &d.paths, observer).await {
            // Each path goes back through the stream (and the guard) again.
            for p in d.paths {
                self.dirty.entry(p).or_insert(Pending {
                    since: now,
                    kinds: CREATED_OR_DELETED,
                });
            }
            if let Some(end) = interrupted(&e, observer) {
                return Some(Round::End(end));
            }
            let pause = self.destination_failed(&e);
            self.due = Some(tokio::time::Instant::now() + pause);
        }
        self.report_caught_up();
        None
    }

    /// Applies (or, delayed, records) every dirty path.
    async fn apply_due_batch(&mut self) -> Option<Epoch> {
        if self.claims.is_some_and(Claims::lost) {
            return Some(Epoch::Restart(
                "the session holding the writer claim ended: claiming the tree again".into(),
            ));
        }
        let (opts, observer) = (self.opts, self.observer);
        self.due = None;
        let batch = std::mem::take(&mut self.dirty);
        let (src, dst, me) = (&self.src, &self.dst, &self.me);
        let applied = match &opts.delay {
            Some(q) => delay::record_batch(src, dst, opts, me, q, &batch, observer).await,
            None => apply_batch(&self.readers, dst, opts, me, &batch, observer).await,
        };
        match applied {
            Err(e) => self.batch_failed(e, batch).await,
            Ok(()) => {
                if std::mem::take(&mut self.failures) > 0 {
                    observer.reachable(Side::Destination, true, "connected");
                    observer.state(LiveState::Streaming, "destination back: streaming changes");
                }
                self.report_hold();
                self.report_caught_up();
                None
            }
        }
    }

    /// Keeps every path of a failed batch for a retry, or ends the epoch when a retry cannot
    /// help.
    async fn batch_failed(
        &mut self,
        e: ApplyError,
        batch: BTreeMap<String, Pending>,
    ) -> Option<Epoch> {
        let (opts, observer) = (self.opts, self.observer);
        // Newer events keep their own time.
        for (p, t) in batch {
            let e = self.dirty.entry(p).or_insert(t);
            e.since = e.since.min(t.since);
            e.kinds |= t.kinds;
        }
        self.overflowed |= self.dirty.len() > opts.max_pending;
        if !e.is_transient() {
            // NoAuth and friends need the full pass (ACL staging, kind changes).
            return Some(Epoch::Restart(format!(
                "{}: {} {}: {}",
                e.side, e.op, e.path, e.source
            )));
        }
        if let Some(end) = interrupted(&e, observer) {
            return Some(end);
        }
        if self.failures > 0 && matches!(e.zk(), Some(ZkError::ConnectionLoss)) {
            // Dropped twice in a row: a request longer than the destination takes (its limit
            // may have been lowered since the epoch began) looks just like this.
            learn_limit(opts, observer).await;
        }
        if matches!(
            e.zk(),
            Some(ZkError::SessionExpired | ZkError::ClientClosed)
        ) {
            // A new destination session; the dirty set is still complete.
            if let Ok(c) = verifier::connect(Side::Destination, &opts.sync.destination).await {
                self.dst = c;
                observer.reconnected(Side::Destination);
            }
        }
        let pause = self.destination_failed(&e);
        self.due = Some(tokio::time::Instant::now() + pause);
        None
    }

    /// A write to the destination failed: counts it, reports the pause before the next try
    /// (doubling from [`RETRY_PAUSE`] to [`RETRY_PAUSE_CAP`] over failures in a row) and
    /// returns it.
    fn destination_failed(&mut self, e: &ApplyError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let pause = backoff::wait(self.failures, RETRY_PAUSE, RETRY_PAUSE_CAP);
        self.observer.backoff(self.failures, pause);
        let why = retrying(self.failures, pause, &destination_why(e));
        self.observer.state(LiveState::Retrying, &why);
        pause
    }

    /// Caught up: nothing dirty and no delete waiting in the guard.
    fn report_caught_up(&self) {
        let idle = self.dirty.is_empty() && self.opts.gate.queued() == 0;
        self.observer.caught_up(idle);
    }

    fn report_hold(&mut self) {
        report_hold(&self.opts.gate, &mut self.reported, self.observer);
    }
}

/// Probes the destination's request limit on a session of its own (the probe's dropped
/// connections disturb nothing else) and reports what changed. A destination that does not
/// answer leaves the limit as it was.
async fn learn_limit(opts: &LiveOptions, observer: &Arc<dyn Observer>) {
    let configured = opts.sync.writer.jute_maxbuffer;
    let probed = match verifier::connect(Side::Destination, &opts.sync.destination).await {
        Ok(c) => oversized::probe(&c, configured)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(cause_chain(&e)),
    };
    match probed {
        Ok(found) => {
            if let Some(limit) = found {
                tracing::warn!(limit, configured, "the destination takes shorter requests than jute.maxbuffer says: nodes too big for it are left out");
            }
            opts.oversized.set_probed(found);
        }
        Err(e) => tracing::debug!(error = %e, "could not probe the destination's request limit"),
    }
    report_too_big(opts, observer);
}

/// Tells the observer about the nodes left out for their size when they (or the limit)
/// changed.
fn report_too_big(opts: &LiveOptions, observer: &Arc<dyn Observer>) {
    let o = &opts.oversized;
    if o.take_changed() {
        let limit = o.probed_below(opts.sync.writer.jute_maxbuffer);
        observer.too_big(&o.list(), limit);
    }
}

/// Sleeps until `at`; select! only polls it when `at` is Some.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    tokio::time::sleep_until(at.unwrap_or_else(tokio::time::Instant::now)).await
}

/// Deletes that come due within this of the first one go in the same round: a round costs
/// the same few round trips for one path or a thousand, and each round holds up the batches.
const DELETE_GATHER: Duration = Duration::from_millis(20);

/// A pause before the stream tries the destination again after a write failed, doubled for
/// each failure in a row up to [`RETRY_PAUSE_CAP`]: the dirty set is kept meanwhile.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
const RETRY_PAUSE_CAP: Duration = Duration::from_secs(5);

/// What a failed apply means: a source failure ends the epoch (events may be lost); a
/// destination failure is reported and retried with the same changes.
fn interrupted(e: &ApplyError, observer: &Arc<dyn Observer>) -> Option<Epoch> {
    if e.side == Side::Source {
        return Some(Epoch::Restart(format!("source: {}", e.source)));
    }
    observer.reachable(Side::Destination, false, &destination_why(e));
    None
}

fn destination_why(e: &ApplyError) -> String {
    format!("destination: {} {}: {}", e.op, e.path, e.source)
}

/// Nodes a full sync left under the destination root: the copied ones, plus the deletes it
/// held (an emptied source held before any write leaves the destination as it was).
fn destination_nodes(summary: &SyncSummary) -> u64 {
    let missing = summary.too_big.iter().filter(|n| n.missing).count() as u64;
    let copied = summary
        .source_nodes
        .saturating_sub(summary.skipped.total() + missing);
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
