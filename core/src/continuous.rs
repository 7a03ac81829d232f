//! A continuous sync as one service: the stream ([`engine::live`]), the lag-aware verifier loop
//! ([`engine::judge`]) and the opt-in heartbeat znode, behind a handle whose [`Snapshot`] the
//! drivers (the CLI, standalone mode, the LiveSynchronization controller) turn into output,
//! status and metrics. Nothing here knows Kubernetes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use verifier::Side;
use zookeeper_client::{Acls, CreateMode, Error as ZkError};

use crate::engine::error::cause_chain;
use crate::engine::guard::SharedGate;
use crate::engine::judge;
use crate::engine::live::{self, DestinationDiff, LiveOptions, LiveState, Observer};
use crate::engine::oversized::TooBig;
use crate::engine::{Allowance, Held, SyncError, SyncSummary};

mod snapshot;
pub use snapshot::{
    Reach, Retry, Snapshot, VerifyOutcome, VerifySummary, HEARTBEAT_MISSES, MAX_LISTED,
};

/// Settings of a continuous sync and its verifier.
#[derive(Clone, Debug)]
pub struct ContinuousOptions {
    pub live: LiveOptions,
    /// Lag-aware verification this often (None: never).
    pub verify_interval: Option<Duration>,
    /// Re-sync subtrees a verification confirms divergent.
    pub repair: bool,
    /// The lag objective (RPO).
    pub max_lag: Duration,
    pub heartbeat: Option<HeartbeatOptions>,
}

impl ContinuousOptions {
    pub fn new(live: LiveOptions) -> ContinuousOptions {
        ContinuousOptions {
            live,
            verify_interval: None,
            repair: false,
            max_lag: Duration::from_secs(30),
            heartbeat: None,
        }
    }
}

/// The heartbeat znode: a source path rewritten every interval with the wall time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatOptions {
    pub path: String,
    pub interval: Duration,
}

/// Keeps the snapshot up to date from the stream's observations.
struct Board {
    snap: Mutex<Snapshot>,
    heartbeat_path: Option<String>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snap.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a stream's figures go besides its board: Prometheus, in the operator and standalone
/// mode. Beside every [`Observer`] event, the lag and heartbeat (each second), paths the
/// verifier repaired and each verification's verdict.
pub trait StreamMetrics: Observer {
    fn current_lag(&self, lag: Duration);
    fn heartbeat(&self, seen: Option<Timestamp>);
    fn repaired(&self, n: u64);
    fn verdict(&self, verdict: Option<&judge::Verdict>);
}

impl Observer for Board {
    fn state(&self, state: LiveState, why: &str) {
        let mut s = self.lock();
        s.state = Some(state);
        s.why = why.to_string();
        if state != LiveState::Retrying {
            // Trying again (or streaming): no longer waiting.
            s.retry = None;
        }
    }
    fn backoff(&self, failures: u32, wait: Duration) {
        let at = jiff::SignedDuration::try_from(wait)
            .ok()
            .and_then(|w| Timestamp::now().checked_add(w).ok())
            .unwrap_or_else(Timestamp::now);
        self.lock().retry = Some(snapshot::Retry { failures, wait, at });
    }
    fn too_big(&self, nodes: &[TooBig], limit: Option<usize>) {
        let mut s = self.lock();
        s.oversized = nodes.iter().take(MAX_LISTED).cloned().collect();
        s.oversized_count = nodes.len();
        s.oversized_limit = limit;
    }
    fn full_sync(&self, _summary: &SyncSummary) {
        let mut s = self.lock();
        s.full_syncs += 1;
        let now = Timestamp::now();
        s.last_full_sync = Some(now);
        s.source_seen = Some(now);
    }
    fn applied(&self, path: &str, lag: Duration) {
        let mut s = self.lock();
        s.applied_total += 1;
        s.last_applied_lag = Some(lag);
        let now = Timestamp::now();
        s.source_seen = Some(now);
        let changed = jiff::SignedDuration::try_from(lag)
            .ok()
            .and_then(|l| now.checked_sub(l).ok());
        s.last_change_applied = s.last_change_applied.max(changed);
        if self.heartbeat_path.as_deref() == Some(path) {
            s.heartbeat_seen = Some(Timestamp::now());
        }
    }
    fn caught_up(&self, caught_up: bool) {
        let mut s = self.lock();
        s.caught_up = caught_up;
        if caught_up {
            s.caught_up_at = Some(Timestamp::now());
        }
    }
    fn watch_event(&self) {
        self.lock().source_seen = Some(Timestamp::now());
    }
    fn reachable(&self, side: Side, reachable: bool, why: &str) {
        let mut s = self.lock();
        if reachable && side == Side::Source {
            s.source_seen = Some(Timestamp::now());
        }
        let r = if side == Side::Source {
            &mut s.source
        } else {
            &mut s.destination
        };
        *r = if reachable {
            Reach::Connected
        } else {
            Reach::Unreachable(why.to_string())
        };
    }
    fn delay_backlog(&self, waiting: usize, oldest: Option<Duration>, shortened: Option<Duration>) {
        let mut s = self.lock();
        s.delayed = waiting;
        s.delayed_since = oldest.and_then(|age| {
            Timestamp::now()
                .checked_sub(jiff::SignedDuration::try_from(age).ok()?)
                .ok()
        });
        s.delay_shortened_to = shortened;
    }
    fn destination_diff(&self, diff: &DestinationDiff) {
        self.lock().destination_diff = Some((Timestamp::now(), diff.clone()));
    }
    fn deletions_held(&self, held: Option<&Held>) {
        let mut s = self.lock();
        let since = s.held.as_ref().map_or_else(Timestamp::now, |(t, _)| *t);
        s.held = held.map(|h| (since, h.clone()));
    }
}

/// A running continuous sync. Dropping it stops everything it started; destination data is
/// left as it is.
pub struct Continuous {
    board: Arc<Board>,
    gate: SharedGate,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::AbortHandle>,
    main: Option<tokio::task::JoinHandle<Result<(), SyncError>>>,
    /// The verifier's ACL caches, kept across its rounds (see [`Continuous::verify_cache`]).
    cache: verifier::VerifyCache,
}

impl Continuous {
    /// Starts the stream, the verifier loop and the heartbeat. `extra` observers see every
    /// observation too (the CLI's line printer); `metrics` exports them to Prometheus.
    pub fn start(
        mut opts: ContinuousOptions,
        extra: Vec<Arc<dyn Observer>>,
        metrics: Option<Arc<dyn StreamMetrics>>,
    ) -> Continuous {
        let board = Arc::new(Board {
            snap: Mutex::new(Snapshot {
                apply_delay: opts.live.delay.as_ref().map(|q| q.delay),
                ..Snapshot::new(
                    Timestamp::now(),
                    opts.heartbeat.as_ref().map(|h| h.interval),
                )
            }),
            heartbeat_path: opts.heartbeat.as_ref().map(|h| h.path.clone()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut observers: Vec<Arc<dyn Observer>> = vec![board.clone()];
        observers.extend(extra);
        if let Some(m) = &metrics {
            observers.push(m.clone() as Arc<dyn Observer>);
        }
        let observer: Arc<dyn Observer> = Arc::new(live::Tee(observers));
        let mut tasks = Vec::new();
        // One pair of ACL caches for the verifier and the stream's full syncs: each reads
        // again only the ACLs that changed since either read them. A cache handed over (a
        // switchover's, to its reverse stream) is taken when it is of these ensembles.
        let sync = &opts.live.sync;
        let cache = sync.acl_cache().cloned().unwrap_or_else(|| {
            verifier::VerifyCache::new(&sync.source.servers, &sync.destination.servers)
        });
        opts.live.sync.acl_cache = Some(cache.clone());
        if let Some(every) = opts.verify_interval {
            let (o, b, m, c) = (opts.clone(), board.clone(), metrics.clone(), cache.clone());
            tasks.push(tokio::spawn(verify_loop(o, b, m, c, every)).abort_handle());
        }
        if let Some(h) = opts.heartbeat.clone() {
            let (c, b) = (opts.live.sync.source.clone(), board.clone());
            tasks.push(tokio::spawn(heartbeat_loop(c, h, b)).abort_handle());
        }
        if let Some(m) = metrics {
            let b = board.clone();
            tasks.push(tokio::spawn(lag_gauge(b, m)).abort_handle());
        }
        let gate = opts.live.gate.clone();
        let main = {
            let board = board.clone();
            tokio::spawn(async move {
                let r = live::run(&opts.live, observer, stop_rx).await;
                if let Err(e) = &r {
                    board.lock().failed = Some((Timestamp::now(), cause_chain(e)));
                }
                r
            })
        };
        Continuous {
            board,
            gate,
            stop,
            tasks,
            main: Some(main),
            cache,
        }
    }

    /// The ACLs the verifier has read of both sides, keyed by each node's stat: a
    /// switchover's fence and verification read again only what changed since.
    pub fn verify_cache(&self) -> verifier::VerifyCache {
        self.cache.clone()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.board.lock().clone()
    }

    /// A person released the held deletes, up to `allowance`. `Err` with the count held now
    /// when that is more than the release covers (more were deleted since it was shown).
    pub fn release(&self, allowance: Allowance) -> Result<(), u64> {
        self.gate.release(allowance)
    }

    /// Stops the stream after its current batch and waits for it, at most [`STOP_GRACE`]:
    /// a stream stuck connecting to a lost source is aborted (its sessions close with it,
    /// and with them its claims). The verifier and heartbeat are aborted.
    pub async fn stop(mut self) -> Result<(), SyncError> {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let Some(mut m) = self.main.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_GRACE, &mut m).await {
            Ok(r) => r.unwrap_or(Ok(())),
            Err(_) => {
                m.abort();
                let _ = m.await;
                Ok(())
            }
        }
    }
}

impl Drop for Continuous {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let Some(main) = self.main.take() else { return };
        // The stream stops by itself at once (it watches `stop`) and then withdraws its
        // writer claim, so the tree is free for the next writer without waiting for a session
        // to expire. It is aborted if it does not stop in time.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let abort = main.abort_handle();
                rt.spawn(async move {
                    if tokio::time::timeout(STOP_GRACE, main).await.is_err() {
                        abort.abort();
                    }
                });
            }
            Err(_) => main.abort(),
        }
    }
}

/// How often the lag and heartbeat gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// The current lag is a function of time (it grows while the stream is stuck), so the gauge
/// is refreshed on a clock, not only when something happens.
async fn lag_gauge(board: Arc<Board>, m: Arc<dyn StreamMetrics>) {
    let mut tick = tokio::time::interval(GAUGE_EVERY);
    loop {
        tick.tick().await;
        let snap = board.lock().clone();
        m.current_lag(snap.lag(Timestamp::now()));
        m.heartbeat(snap.heartbeat_seen);
    }
}

/// How long a dropped stream may take to stop and withdraw its claim before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn summarize(v: &judge::Verdict) -> VerifySummary {
    let r = &v.report;
    VerifySummary {
        in_sync: v.in_sync(),
        confirmed: v.confirmed.iter().take(MAX_LISTED).cloned().collect(),
        confirmed_count: v.confirmed.len() as u64,
        undecided: v.undecided,
        suspected: r.divergent_nodes,
        source_nodes: r.source_nodes,
        destination_nodes: r.destination_nodes,
        source_root_hash: r.source_root_hash.clone(),
        destination_root_hash: r.destination_root_hash.clone(),
        duration_seconds: r.duration_seconds,
        source_max_mzxid: r.source_max_mzxid,
    }
}

/// Suspects judged per verification; beyond, the rest count as undecided.
const MAX_SUSPECTS: usize = 1000;

/// Sessions a verification reads each side on (ACL reads are spread over them).
const VERIFY_SESSIONS: usize = 2;

/// Between the two rechecks of a suspect: a few batch windows, enough for a change in
/// flight to land.
const RECHECK_SETTLE: Duration = Duration::from_millis(100);

/// Verifies every `every`, lag-aware; repairs confirmed divergence when asked.
async fn verify_loop(
    o: ContinuousOptions,
    board: Arc<Board>,
    metrics: Option<Arc<dyn StreamMetrics>>,
    // Kept across rounds: each round reads again only the ACLs that changed.
    cache: verifier::VerifyCache,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let verdict = verify_once(&o, &board, &cache).await;
        if let Some(m) = &metrics {
            m.verdict(verdict.as_ref().ok());
        }
        log_cache(&cache);
        record_verdict(&board, &verdict);
        let confirmed = verdict
            .as_ref()
            .map(|v| v.confirmed.clone())
            .unwrap_or_default();
        if o.repair && !confirmed.is_empty() {
            let nodes = verdict.as_ref().map_or(0, |v| v.report.destination_nodes);
            repair(&o, &board, metrics.as_deref(), &confirmed, nodes).await;
        }
    }
}

/// One lag-aware verification on fresh sessions; the error as a line.
async fn verify_once(
    o: &ContinuousOptions,
    board: &Arc<Board>,
    cache: &verifier::VerifyCache,
) -> Result<judge::Verdict, String> {
    let sync = &o.live.sync;
    let (src, dst) = tokio::try_join!(
        verifier::connect_pool(Side::Source, &sync.source, VERIFY_SESSIONS),
        verifier::connect_pool(Side::Destination, &sync.destination, VERIFY_SESSIONS)
    )
    .map_err(|e| cause_chain(&e))?;
    let b = board.clone();
    let delay = o.live.delay.clone();
    let sides = judge::Sides {
        source: &src,
        destination: &dst,
        cache: Some(cache),
    };
    judge::judge_delayed(
        sides,
        sync,
        MAX_SUSPECTS,
        RECHECK_SETTLE,
        move || b.lock().caught_up,
        move |p| delay.as_ref().is_some_and(|q| q.pending(p)),
    )
    .await
    .map_err(|e| cause_chain(&e))
}

/// What the verification ACL cache holds and saved, for the debug log.
fn log_cache(cache: &verifier::VerifyCache) {
    let (s, d) = cache.stats();
    tracing::debug!(
        source_acl_entries = s.entries,
        source_acl_reads = s.reads,
        source_acl_hits = s.hits,
        destination_acl_entries = d.entries,
        destination_acl_reads = d.reads,
        destination_acl_hits = d.hits,
        acl_cache_bytes = s.memory_bytes + d.memory_bytes,
        "verification ACL cache"
    );
}

/// Puts a verification's outcome on the board.
fn record_verdict(board: &Board, verdict: &Result<judge::Verdict, String>) {
    let now = Timestamp::now();
    let mut s = board.lock();
    if let Ok(v) = verdict {
        if v.in_sync() {
            s.last_good_sync = Some(now);
            s.last_good_zxid = Some(v.report.source_max_mzxid);
        }
    }
    s.last_verify = Some(VerifyOutcome {
        at: now,
        result: verdict.as_ref().map(summarize).map_err(Clone::clone),
    });
}

/// Re-syncs the confirmed divergent paths (of a destination of `nodes`) and records how it
/// went.
async fn repair(
    o: &ContinuousOptions,
    board: &Board,
    metrics: Option<&dyn StreamMetrics>,
    confirmed: &[String],
    nodes: u64,
) {
    let guard = o.live.gate.full_sync_guard();
    // What the stream leaves out for its size stays divergent: repair would leave it out too.
    let sync_root = &o.live.sync.source_root;
    let confirmed: Vec<String> = confirmed
        .iter()
        .filter(|rel| {
            !o.live
                .oversized
                .covers(&verifier::path::join(sync_root, rel))
        })
        .cloned()
        .collect();
    if confirmed.is_empty() {
        return;
    }
    let mut sync = o.live.sync.clone();
    (sync.writer.jute_maxbuffer, sync.writer.max_batch_bytes) = o.live.limits();
    sync.leave_out_too_big = true;
    let r = judge::repair(&sync, &confirmed, guard, nodes).await;
    let mut s = board.lock();
    match r {
        Ok(n) => {
            s.repaired_total += n as u64;
            s.last_repair_error = None;
            if let Some(m) = metrics {
                m.repaired(n as u64);
            }
        }
        Err(e) => s.last_repair_error = Some(cause_chain(&e)),
    }
}

/// Writes the wall time (milliseconds, as text) to the heartbeat znode every interval,
/// creating it when missing. Failures are reported, never fatal: the stream goes on.
async fn heartbeat_loop(c: verifier::ConnectOptions, h: HeartbeatOptions, board: Arc<Board>) {
    let mut client = None;
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client.is_none() {
            match verifier::connect(Side::Source, &c).await {
                Ok(cl) => client = Some(cl),
                Err(e) => {
                    board.lock().heartbeat_error = Some(cause_chain(&e));
                    continue;
                }
            }
        }
        let Some(cl) = client.as_ref() else { continue };
        let r = beat(cl, &h.path, c.auth.is_some()).await;
        let mut s = board.lock();
        match r {
            Ok(()) => s.heartbeat_error = None,
            Err(e) => {
                s.heartbeat_error = Some(format!("writing the heartbeat {}: {e}", h.path));
                if matches!(e, ZkError::SessionExpired | ZkError::ClientClosed) {
                    client = None;
                }
            }
        }
    }
}

async fn beat(c: &zookeeper_client::Client, path: &str, authed: bool) -> Result<(), ZkError> {
    let now = Timestamp::now().as_millisecond().to_string();
    match c.set_data(path, now.as_bytes(), None).await {
        Err(ZkError::NoNode) => {
            let acl = if authed {
                Acls::creator_all()
            } else {
                Acls::anyone_all()
            };
            match c
                .create(path, now.as_bytes(), &CreateMode::Persistent.with_acls(acl))
                .await
            {
                Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                Err(e) => Err(e),
            }
        }
        r => r.map(|_| ()),
    }
}

/// The continuous syncs this process runs, keyed (by the operator, the resource's UID) with
/// the generation of the spec each was started from.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Runs>>,
    /// Keys [`Registry::start`] ignores (see [`Registry::keep_stopped`]).
    kept_stopped: Arc<Mutex<HashSet<String>>>,
    /// ACL caches handed over for a run about to start (see [`Registry::hand_over_cache`]).
    handed_over: Arc<Mutex<Vec<(std::time::Instant, verifier::VerifyCache)>>>,
}

/// How long a handed-over cache waits for its run before it is dropped.
const HAND_OVER_TTL: Duration = Duration::from_secs(600);

/// Each run with the generation it was started from.
type Runs = HashMap<String, (Option<i64>, Continuous)>;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation the run under `key` was started from and its snapshot.
    pub fn get(&self, key: &str) -> Option<(Option<i64>, Snapshot)> {
        self.lock().get(key).map(|(g, c)| (*g, c.snapshot()))
    }

    /// The verifier's ACL caches of the run under `key` (see [`Continuous::verify_cache`]).
    pub fn verify_cache(&self, key: &str) -> Option<verifier::VerifyCache> {
        self.lock().get(key).map(|(_, c)| c.verify_cache())
    }

    /// Releases the deletes the run under `key` holds (see [`Continuous::release`]); `None`
    /// when there is no such run.
    pub fn release(&self, key: &str, allowance: Allowance) -> Option<Result<(), u64>> {
        self.lock().get(key).map(|(_, c)| c.release(allowance))
    }

    /// Starts a run under `key`, stopping the one there (a changed spec).
    pub fn start(
        &self,
        key: &str,
        generation: Option<i64>,
        opts: ContinuousOptions,
        metrics: Option<Arc<dyn StreamMetrics>>,
    ) {
        if self.is_kept_stopped(key) {
            tracing::info!(key, "not starting a stream kept stopped by a switchover");
            return;
        }
        let mut opts = opts;
        if opts.live.sync.acl_cache.is_none() {
            opts.live.sync.acl_cache = self.take_cache(&opts.live.sync);
        }
        let run = Continuous::start(opts, Vec::new(), metrics);
        // The old one is dropped (stopped) outside the lock.
        let old = self.lock().insert(key.to_string(), (generation, run));
        drop(old);
    }

    /// Keeps `cache` for the next run started between its two ensembles (a switchover hands
    /// its caches to the reverse stream it creates), for a while.
    pub fn hand_over_cache(&self, cache: verifier::VerifyCache) {
        let mut h = self.handed_over.lock().unwrap_or_else(|p| p.into_inner());
        h.retain(|(at, _)| at.elapsed() < HAND_OVER_TTL);
        h.push((std::time::Instant::now(), cache));
    }

    /// A handed-over cache of `sync`'s ensembles, taken.
    fn take_cache(&self, sync: &crate::engine::SyncOptions) -> Option<verifier::VerifyCache> {
        let mut h = self.handed_over.lock().unwrap_or_else(|p| p.into_inner());
        h.retain(|(at, _)| at.elapsed() < HAND_OVER_TTL);
        let (src, dst) = (&sync.source.servers, &sync.destination.servers);
        let i = h.iter().position(|(_, c)| c.is_of(src, dst))?;
        Some(h.swap_remove(i).1)
    }

    /// Takes the run under `key` out of the registry, still running: a driver that switches
    /// it over owns it from now on (see [`crate::switchover::local::Local`]).
    pub fn take(&self, key: &str) -> Option<(Option<i64>, Continuous)> {
        self.lock().remove(key)
    }

    /// Puts a run started elsewhere under `key` (a stream resumed by a rolled-back
    /// switchover, or its reverse stream), stopping the one there.
    pub fn adopt(&self, key: &str, generation: Option<i64>, run: Continuous) {
        let old = self.lock().insert(key.to_string(), (generation, run));
        drop(old);
    }

    /// Stops the run under `key`, if any.
    pub fn stop(&self, key: &str) {
        let old = self.lock().remove(key);
        drop(old);
    }

    /// Stops the run under `key` (at once: it is gone from the registry when this returns)
    /// and resolves once it has stopped writing and withdrawn its writer claim.
    pub fn stop_and_wait(&self, key: &str) -> impl Future<Output = ()> + Send + 'static {
        let old = self.lock().remove(key);
        async move {
            if let Some((_, run)) = old {
                if let Err(e) = run.stop().await {
                    tracing::debug!(error = %cause_chain(&e), "the stopped stream had failed");
                }
            }
        }
    }

    /// While `on`, [`Registry::start`] under `key` does nothing: a switchover that stopped a
    /// stream for good must not see it started again by a reconcile that read the spec from
    /// before its `suspend: true` (a watch cache lags behind the write).
    pub fn keep_stopped(&self, key: &str, on: bool) {
        let mut k = self.kept_stopped.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            k.insert(key.to_string());
        } else {
            k.remove(key);
        }
    }

    fn is_kept_stopped(&self, key: &str) -> bool {
        self.kept_stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Stops every run (this replica is no longer the leader, or is shutting down).
    pub fn clear(&self) {
        let old: Vec<_> = self.lock().drain().collect();
        drop(old);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn lag_is_zero_when_caught_up_and_grows_while_the_stream_is_stuck() {
        let mut s = Snapshot::new(at(1000), None);
        // Never caught up yet: counted from the start.
        s.state = Some(LiveState::FullSync);
        assert_eq!(s.lag(at(1004)), Duration::from_secs(4));
        s.state = Some(LiveState::Streaming);
        s.caught_up = true;
        s.caught_up_at = Some(at(1005));
        // Idle source: no growth however long.
        assert_eq!(s.lag(at(9999)), Duration::ZERO);
        s.caught_up = false;
        s.last_applied_lag = Some(Duration::from_millis(12));
        assert_eq!(s.lag(at(1006)), Duration::from_millis(12));
        // The destination went away: grows from the last caught-up instant.
        s.state = Some(LiveState::Retrying);
        assert_eq!(s.lag(at(1065)), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_stream_kept_stopped_is_not_started_again_until_let_go() {
        let reg = Registry::default();
        // Nothing listens there: the stream keeps trying to connect, so it stays registered.
        let opts = || {
            ContinuousOptions::new(LiveOptions::new(crate::engine::SyncOptions::new(
                verifier::ConnectOptions::new("127.0.0.1:9"),
                "/a",
                verifier::ConnectOptions::new("127.0.0.1:9"),
                "/b",
            )))
        };
        reg.start("live", Some(1), opts(), None);
        assert!(reg.get("live").is_some());
        reg.keep_stopped("live", true);
        let stopped = reg.stop_and_wait("live");
        // Gone at once, before the stop is awaited.
        assert!(reg.get("live").is_none());
        tokio::time::timeout(Duration::from_secs(10), stopped)
            .await
            .unwrap();
        // A reconcile that read the spec from before the stop starts nothing.
        reg.start("live", Some(1), opts(), None);
        assert!(reg.is_empty());
        reg.keep_stopped("live", false);
        reg.start("live", Some(2), opts(), None);
        assert_eq!(reg.get("live").map(|(g, _)| g), Some(Some(2)));
        reg.clear();
    }

    #[tokio::test]
    async fn a_handed_over_acl_cache_goes_to_the_next_run_between_its_ensembles_only() {
        let reg = Registry::default();
        let opts = |src: &str, dst: &str| {
            ContinuousOptions::new(LiveOptions::new(crate::engine::SyncOptions::new(
                verifier::ConnectOptions::new(src),
                "/a",
                verifier::ConnectOptions::new(dst),
                "/a",
            )))
        };
        let stat = zookeeper_client::Stat {
            czxid: 7,
            mzxid: 7,
            pzxid: 7,
            ctime: 1,
            mtime: 1,
            version: 0,
            cversion: 0,
            aversion: 2,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let acl = [verifier::AclEntry::new(31, "world", "anyone")];
        // A switchover's caches of 127.0.0.1:9 -> 127.0.0.1:10, handed to the stream back.
        let forward = verifier::VerifyCache::new("127.0.0.1:9", "127.0.0.1:10");
        forward.source.put("/a/x", &stat, &acl);
        reg.hand_over_cache(forward.reversed());
        // Another pair of ensembles does not take it.
        reg.start("other", None, opts("127.0.0.1:11", "127.0.0.1:9"), None);
        assert!(reg.verify_cache("other").unwrap().destination.is_empty());
        // The reverse stream does: what the old primary's cache held is its destination's.
        reg.start("reverse", None, opts("127.0.0.1:10", "127.0.0.1:9"), None);
        let cache = reg.verify_cache("reverse").unwrap();
        assert_eq!(cache.destination.get("/a/x", &stat), Some(acl.to_vec()));
        // Taken once.
        reg.start("again", None, opts("127.0.0.1:10", "127.0.0.1:9"), None);
        assert!(reg.verify_cache("again").unwrap().destination.is_empty());
        reg.clear();
    }

    #[tokio::test]
    async fn a_taken_stream_keeps_running_and_can_be_put_back() {
        let reg = Registry::default();
        let opts = ContinuousOptions::new(LiveOptions::new(crate::engine::SyncOptions::new(
            verifier::ConnectOptions::new("127.0.0.1:9"),
            "/a",
            verifier::ConnectOptions::new("127.0.0.1:9"),
            "/b",
        )));
        reg.start("live", Some(3), opts, None);
        let (generation, run) = reg.take("live").unwrap();
        assert!(reg.is_empty());
        assert_eq!(generation, Some(3));
        // Still trying to connect: not stopped by the take.
        assert!(run.snapshot().failed.is_none());
        reg.adopt("live", generation, run);
        assert_eq!(reg.get("live").map(|(g, _)| g), Some(Some(3)));
        reg.clear();
    }

    #[test]
    fn a_missing_heartbeat_shows_a_stalled_stream() {
        let mut s = Snapshot::new(at(1000), Some(Duration::from_secs(10)));
        s.state = Some(LiveState::Streaming);
        s.caught_up = true;
        s.heartbeat_seen = Some(at(1000));
        assert_eq!(s.lag(at(1008)), Duration::ZERO);
        assert!(!s.heartbeat_late(at(1008)));
        // "Caught up", but no heartbeat for 45 s: the watch is stuck somewhere.
        assert_eq!(s.lag(at(1045)), Duration::from_secs(35));
        assert!(s.heartbeat_late(at(1045)));
    }
}
