//! Every metric the operator exports, by name. Names follow Prometheus conventions: the
//! `resiliency_` prefix and an area, base units, `_total` on counters only, points in time as
//! `_timestamp_seconds` gauges. Labels come from bounded sets only (controller, reason,
//! namespace, name, result), never a znode path or an error text.

pub mod compat;

use crate::continuous::StreamMetrics;
use crate::engine::judge::Verdict;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Reconciles run, by `controller`.
pub const RECONCILE_TOTAL: &str = "resiliency_reconcile_total";
/// Reconciles that failed, by `controller` and `reason`.
pub const RECONCILE_ERRORS_TOTAL: &str = "resiliency_reconcile_errors_total";
/// Reconcile wall time, by `controller`.
pub const RECONCILE_DURATION_SECONDS: &str = "resiliency_reconcile_duration_seconds";
/// 1 while this replica holds the `controller`'s Lease, else 0.
pub const CONTROLLER_LEADER: &str = "resiliency_controller_leader";
/// 1 when the Database (`namespace`, `name`) is reachable with its credentials, else 0.
pub const DATABASE_READY: &str = "resiliency_database_ready";
/// Finished runs, by `mode` (once) and `result` (succeeded, diverged, held, failed).
pub const SYNC_RUNS_TOTAL: &str = "resiliency_sync_runs_total";
/// Run wall time, copy and verification, by `mode`.
pub const SYNC_DURATION_SECONDS: &str = "resiliency_sync_duration_seconds";
/// Znodes written by finished runs, by `namespace`, `name` and `operation` (create, update,
/// delete).
pub const SYNC_NODES_WRITTEN_TOTAL: &str = "resiliency_sync_nodes_written_total";
/// Payload bytes written to destinations, by `namespace` and `name`.
pub const SYNC_BYTES_COPIED_TOTAL: &str = "resiliency_sync_bytes_copied_total";
/// When a run of (`namespace`, `name`) last succeeded.
pub const SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "resiliency_sync_last_success_timestamp_seconds";
/// Znodes the last verification of (`namespace`, `name`) found divergent.
pub const VERIFY_DIVERGENT_NODES: &str = "resiliency_verify_divergent_nodes";
/// Verification wall time.
pub const VERIFY_DURATION_SECONDS: &str = "resiliency_verify_duration_seconds";
/// Lag of each change a continuous sync applied: apply time minus the source node's mtime.
pub const SYNC_LAG_SECONDS: &str = "resiliency_sync_lag_seconds";
/// Lag of a continuous sync now: 0 when caught up, else the lag of the last change applied.
pub const SYNC_CURRENT_LAG_SECONDS: &str = "resiliency_sync_current_lag_seconds";
/// Changes a continuous sync applied, by `namespace` and `name`.
pub const SYNC_CHANGES_APPLIED_TOTAL: &str = "resiliency_sync_changes_applied_total";
/// Full (anti-entropy) syncs a continuous sync ran, by `namespace` and `name`.
pub const SYNC_FULL_SYNCS_TOTAL: &str = "resiliency_sync_full_syncs_total";
/// 1 while a continuous sync streams changes (not connecting, re-walking or retrying).
pub const SYNC_STREAMING: &str = "resiliency_sync_streaming";
/// 1 while a continuous sync has nothing pending.
pub const SYNC_CAUGHT_UP: &str = "resiliency_sync_caught_up";
/// The lag objective (RPO) of a continuous sync: alerts fire when the current lag exceeds it.
pub const SYNC_MAX_LAG_SECONDS: &str = "resiliency_sync_max_lag_seconds";
/// Lag-aware verifications, by `result` (in_sync, diverged, undecided, error).
pub const VERIFY_RUNS_TOTAL: &str = "resiliency_verify_runs_total";
/// When a verification last found the trees equal (the last good sync).
pub const SYNC_LAST_GOOD_SYNC_TIMESTAMP_SECONDS: &str =
    "resiliency_sync_last_good_sync_timestamp_seconds";
/// Watch events received by a continuous sync.
pub const SYNC_WATCH_EVENTS_TOTAL: &str = "resiliency_sync_watch_events_total";
/// ZooKeeper sessions a continuous sync opened again after a gap, by side.
pub const SYNC_SESSION_RECONNECTS_TOTAL: &str = "resiliency_sync_session_reconnects_total";
/// 1 while the continuous sync's session to a side is connected, by side.
pub const SYNC_SESSION_CONNECTED: &str = "resiliency_sync_session_connected";
/// Subtrees re-synced by repair.
pub const SYNC_REPAIRED_PATHS_TOTAL: &str = "resiliency_sync_repaired_paths_total";
/// Deletes the deletion guard holds now for (`namespace`, `name`), waiting for a person to
/// release them (0 when nothing is held).
pub const SYNC_DELETES_HELD: &str = "resiliency_sync_deletes_held";
/// Deletes the deletion guard held, counted when held (a hold that grows adds the growth).
pub const SYNC_DELETES_HELD_TOTAL: &str = "resiliency_sync_deletes_held_total";
/// Unix time the last heartbeat reached the destination.
pub const SYNC_LAST_HEARTBEAT_TIMESTAMP_SECONDS: &str =
    "resiliency_sync_last_heartbeat_timestamp_seconds";
/// Unix time of the last successful backup or restore, by operation.
pub const BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "resiliency_backup_last_success_timestamp_seconds";
/// Compressed size of the last snapshot written.
pub const BACKUP_SIZE_BYTES: &str = "resiliency_backup_size_bytes";
/// 1 when the last snapshot of (`namespace`, `name`) is suspect: its node count fell past the
/// deletion guard's limits against the last verified one, so it evicts nothing.
pub const BACKUP_LAST_SNAPSHOT_SUSPECT: &str = "resiliency_backup_last_snapshot_suspect";
/// Copies refused before writing anything, by `reason`: writer_conflict (another copy
/// writes the tree), replication_loop (a stream the other way), source_fenced (an old primary a switchover fenced), same_ensemble.
pub const SYNC_CLAIMS_REFUSED_TOTAL: &str = "resiliency_sync_claims_refused_total";
/// Changes a delayed stream recorded and holds back until they are old enough.
pub const SYNC_DELAYED_CHANGES: &str = "resiliency_sync_delayed_changes";
/// How long a continuous sync waits before it tries again after failures in a row (0 while it
/// is not waiting): doubling to a minute for epochs, to seconds for destination writes.
pub const SYNC_RETRY_BACKOFF_SECONDS: &str = "resiliency_sync_retry_backoff_seconds";
/// Source nodes a continuous sync leaves out because their write would be longer than the
/// destination takes (its jute.maxbuffer).
pub const SYNC_OVERSIZED_NODES: &str = "resiliency_sync_oversized_nodes";
/// Times a continuous sync backed off after a failure (a new epoch, or a batch the
/// destination refused, tried again later).
pub const SYNC_RETRIES_TOTAL: &str = "resiliency_sync_retries_total";
/// Wall time of backups and restores, by operation.
pub const BACKUP_DURATION_SECONDS: &str = "resiliency_backup_duration_seconds";
/// Connections through tunnels to ZooKeeper in other clusters, by cluster and outcome.
pub const TUNNEL_CONNECTIONS_TOTAL: &str = "resiliency_tunnel_connections_total";
/// Finished switchovers, by `mode` (planned, unplanned) and `result` (complete, failed; a
/// Switchover refused for its input or interrupted counts as failed).
pub const SWITCHOVER_RUNS_TOTAL: &str = "resiliency_switchover_runs_total";
/// A switchover's RTO (request to new primary promoted) when complete, or how long it took
/// to fail, by `mode` and `result`.
pub const SWITCHOVER_DURATION_SECONDS: &str = "resiliency_switchover_duration_seconds";
/// When a switchover of the LiveSynchronization (`namespace`, `name`) last completed.
pub const SWITCHOVER_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "resiliency_switchover_last_success_timestamp_seconds";
/// Always 1, with the `version` label.
pub const BUILD_INFO: &str = "resiliency_build_info";

/// Every name above, for tests that check dashboards and rules only use exported metrics.
pub const ALL: &[&str] = &[
    RECONCILE_TOTAL,
    RECONCILE_ERRORS_TOTAL,
    RECONCILE_DURATION_SECONDS,
    CONTROLLER_LEADER,
    DATABASE_READY,
    SYNC_RUNS_TOTAL,
    SYNC_DURATION_SECONDS,
    SYNC_NODES_WRITTEN_TOTAL,
    SYNC_BYTES_COPIED_TOTAL,
    SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS,
    VERIFY_DIVERGENT_NODES,
    VERIFY_DURATION_SECONDS,
    SYNC_LAG_SECONDS,
    SYNC_CURRENT_LAG_SECONDS,
    SYNC_CHANGES_APPLIED_TOTAL,
    SYNC_FULL_SYNCS_TOTAL,
    SYNC_STREAMING,
    SYNC_CAUGHT_UP,
    SYNC_MAX_LAG_SECONDS,
    VERIFY_RUNS_TOTAL,
    SYNC_LAST_GOOD_SYNC_TIMESTAMP_SECONDS,
    SYNC_WATCH_EVENTS_TOTAL,
    SYNC_SESSION_RECONNECTS_TOTAL,
    SYNC_SESSION_CONNECTED,
    SYNC_REPAIRED_PATHS_TOTAL,
    SYNC_DELETES_HELD,
    SYNC_DELETES_HELD_TOTAL,
    SYNC_LAST_HEARTBEAT_TIMESTAMP_SECONDS,
    BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS,
    BACKUP_SIZE_BYTES,
    BACKUP_LAST_SNAPSHOT_SUSPECT,
    SYNC_CLAIMS_REFUSED_TOTAL,
    SYNC_DELAYED_CHANGES,
    SYNC_RETRY_BACKOFF_SECONDS,
    SYNC_RETRIES_TOTAL,
    SYNC_OVERSIZED_NODES,
    BACKUP_DURATION_SECONDS,
    TUNNEL_CONNECTIONS_TOTAL,
    SWITCHOVER_RUNS_TOTAL,
    SWITCHOVER_DURATION_SECONDS,
    SWITCHOVER_LAST_SUCCESS_TIMESTAMP_SECONDS,
    BUILD_INFO,
];

/// Lag buckets: a millisecond to a minute.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets for reconciles (milliseconds to a minute) and runs (a second to hours).
const RECONCILE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
const RUN_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
/// RTO buckets: a fraction of a second (a quiet planned switchover) to ten minutes.
const SWITCHOVER_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A recorder with our buckets (without them histograms render as summaries), not installed.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(RECONCILE_DURATION_SECONDS.into()),
            RECONCILE_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(SYNC_DURATION_SECONDS.into()), RUN_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(VERIFY_DURATION_SECONDS.into()), RUN_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BACKUP_DURATION_SECONDS.into()), RUN_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SYNC_LAG_SECONDS.into()), LAG_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(SWITCHOVER_DURATION_SECONDS.into()),
            SWITCHOVER_BUCKETS,
        )
}

/// Installs the global recorder and describes every metric. Call once, inside the runtime.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    describe();
    Ok(handle)
}

/// Help texts and units, so /metrics explains itself.
pub fn describe() {
    describe_counter!(RECONCILE_TOTAL, "Reconciles run, by controller");
    describe_counter!(
        RECONCILE_ERRORS_TOTAL,
        "Reconciles that failed, by controller and reason"
    );
    describe_histogram!(
        RECONCILE_DURATION_SECONDS,
        Unit::Seconds,
        "Reconcile wall time, by controller"
    );
    describe_gauge!(
        CONTROLLER_LEADER,
        "1 while this replica holds the controller's Lease, else 0"
    );
    describe_gauge!(
        DATABASE_READY,
        "1 when the Database is reachable with its credentials, else 0"
    );
    describe_counter!(SYNC_RUNS_TOTAL, "Finished runs, by mode and result");
    describe_histogram!(
        SYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Run wall time (copy and verification), by mode"
    );
    describe_counter!(
        SYNC_NODES_WRITTEN_TOTAL,
        "Znodes written by finished runs, by operation"
    );
    describe_counter!(
        SYNC_BYTES_COPIED_TOTAL,
        Unit::Bytes,
        "Payload bytes written to destinations"
    );
    describe_gauge!(
        SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last successful run"
    );
    describe_gauge!(
        VERIFY_DIVERGENT_NODES,
        "Znodes the last verification found divergent"
    );
    describe_histogram!(
        VERIFY_DURATION_SECONDS,
        Unit::Seconds,
        "Verification wall time"
    );
    describe_histogram!(
        SYNC_LAG_SECONDS,
        Unit::Seconds,
        "Lag of each applied change: apply time minus the source node's mtime"
    );
    describe_gauge!(
        SYNC_CURRENT_LAG_SECONDS,
        Unit::Seconds,
        "Current lag: 0 when caught up, else the lag of the last applied change"
    );
    describe_counter!(
        SYNC_CHANGES_APPLIED_TOTAL,
        "Changes a continuous sync applied"
    );
    describe_counter!(
        SYNC_FULL_SYNCS_TOTAL,
        "Full anti-entropy syncs a continuous sync ran"
    );
    describe_gauge!(
        SYNC_STREAMING,
        "1 while the continuous sync streams changes"
    );
    describe_gauge!(
        SYNC_CAUGHT_UP,
        "1 while the continuous sync has nothing pending"
    );
    describe_gauge!(
        SYNC_MAX_LAG_SECONDS,
        Unit::Seconds,
        "The lag objective (RPO) of the continuous sync"
    );
    describe_counter!(VERIFY_RUNS_TOTAL, "Lag-aware verifications, by result");
    describe_gauge!(
        SYNC_LAST_GOOD_SYNC_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last verification that found the trees equal"
    );
    describe_counter!(
        SYNC_WATCH_EVENTS_TOTAL,
        "Watch events a continuous sync received"
    );
    describe_counter!(
        SYNC_SESSION_RECONNECTS_TOTAL,
        "ZooKeeper sessions a continuous sync opened again after a gap, by side"
    );
    describe_gauge!(
        SYNC_SESSION_CONNECTED,
        "1 while the continuous sync's session to a side is connected, by side"
    );
    describe_counter!(
        SYNC_REPAIRED_PATHS_TOTAL,
        "Divergent subtrees re-synced by repair"
    );
    describe_gauge!(
        SYNC_DELETES_HELD,
        "Deletes the deletion guard holds now, waiting for a person to release them"
    );
    describe_counter!(
        SYNC_DELETES_HELD_TOTAL,
        "Deletes the deletion guard held (a hold that grows adds the growth)"
    );
    describe_gauge!(
        SYNC_LAST_HEARTBEAT_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time the last heartbeat znode reached the destination"
    );
    describe_gauge!(
        BACKUP_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last successful backup or restore, by operation"
    );
    describe_gauge!(
        BACKUP_SIZE_BYTES,
        Unit::Bytes,
        "Compressed size of the last snapshot written"
    );
    describe_gauge!(
        BACKUP_LAST_SNAPSHOT_SUSPECT,
        "1 when the last snapshot's node count fell past the deletion guard's limits (it evicts nothing)"
    );
    describe_counter!(
        SYNC_CLAIMS_REFUSED_TOTAL,
        "Copies refused before writing, by reason (writer_conflict, replication_loop, source_fenced, same_ensemble)"
    );
    describe_gauge!(
        SYNC_DELAYED_CHANGES,
        "Changes a delayed stream holds back until they are old enough"
    );
    describe_gauge!(
        SYNC_RETRY_BACKOFF_SECONDS,
        Unit::Seconds,
        "How long the continuous sync waits before it tries again after failures in a row (0 while not waiting)"
    );
    describe_counter!(
        SYNC_RETRIES_TOTAL,
        "Times the continuous sync backed off after a failure (a new epoch or a refused batch tried again later)"
    );
    describe_gauge!(
        SYNC_OVERSIZED_NODES,
        "Source nodes the continuous sync leaves out because the destination's jute.maxbuffer cannot take their write"
    );
    describe_histogram!(
        BACKUP_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of backups and restores, by operation"
    );
    describe_counter!(
        TUNNEL_CONNECTIONS_TOTAL,
        "Connections through tunnels to ZooKeeper in other clusters (KubernetesCluster), by cluster and outcome (forwarded, failed, refused: it did not show the tunnel's key)"
    );
    describe_counter!(
        SWITCHOVER_RUNS_TOTAL,
        "Finished switchovers, by mode and result (complete, failed)"
    );
    describe_histogram!(
        SWITCHOVER_DURATION_SECONDS,
        Unit::Seconds,
        "Switchover RTO (request to new primary promoted) when complete, else the time to fail, by mode and result"
    );
    describe_gauge!(
        SWITCHOVER_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time a switchover of the LiveSynchronization last completed"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Records what a continuous sync does, labelled with its namespace and name. The per-change
/// handles are registered once: the stream calls them tens of thousands of times a second.
pub struct LiveMetrics {
    labels: [(&'static str, String); 2],
    applied: metrics::Counter,
    lag: metrics::Histogram,
    events: metrics::Counter,
    /// Deletes held at the last report, so the counter adds only what is new.
    held: std::sync::atomic::AtomicU64,
}

/// A point in time as a `_timestamp_seconds` gauge holds it.
pub fn unix_seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl LiveMetrics {
    /// `max_lag` is the lag objective, exported so alerts compare against it.
    pub fn new(namespace: &str, name: &str, max_lag: std::time::Duration) -> LiveMetrics {
        let labels = [
            ("namespace", namespace.to_string()),
            ("name", name.to_string()),
        ];
        metrics::gauge!(SYNC_MAX_LAG_SECONDS, &labels).set(max_lag.as_secs_f64());
        metrics::gauge!(SYNC_CURRENT_LAG_SECONDS, &labels).set(0.0);
        metrics::gauge!(SYNC_DELETES_HELD, &labels).set(0.0);
        metrics::gauge!(SYNC_RETRY_BACKOFF_SECONDS, &labels).set(0.0);
        metrics::gauge!(SYNC_OVERSIZED_NODES, &labels).set(0.0);
        LiveMetrics {
            applied: metrics::counter!(SYNC_CHANGES_APPLIED_TOTAL, &labels),
            lag: metrics::histogram!(SYNC_LAG_SECONDS, &labels),
            events: metrics::counter!(SYNC_WATCH_EVENTS_TOTAL, &labels),
            held: std::sync::atomic::AtomicU64::new(0),
            labels,
        }
    }

    fn side(&self, side: verifier::Side) -> [(&'static str, String); 3] {
        let [a, b] = self.labels.clone();
        [a, b, ("side", side.as_str().to_string())]
    }
}

impl StreamMetrics for LiveMetrics {
    /// The current lag (see [`crate::continuous::Snapshot::lag`]).
    fn current_lag(&self, lag: std::time::Duration) {
        metrics::gauge!(SYNC_CURRENT_LAG_SECONDS, &self.labels).set(lag.as_secs_f64());
    }

    fn heartbeat(&self, seen: Option<jiff::Timestamp>) {
        if let Some(t) = seen {
            metrics::gauge!(SYNC_LAST_HEARTBEAT_TIMESTAMP_SECONDS, &self.labels)
                .set(unix_seconds(t));
        }
    }

    fn repaired(&self, n: u64) {
        metrics::counter!(SYNC_REPAIRED_PATHS_TOTAL, &self.labels).increment(n);
    }

    /// Records the outcome of one lag-aware verification.
    fn verdict(&self, verdict: Option<&Verdict>) {
        let result = match verdict {
            None => "error",
            Some(v) if v.in_sync() => "in_sync",
            Some(v) if !v.confirmed.is_empty() => "diverged",
            Some(_) => "undecided",
        };
        let [(_, ns), (_, name)] = &self.labels;
        metrics::counter!(VERIFY_RUNS_TOTAL, "namespace" => ns.clone(), "name" => name.clone(), "result" => result)
            .increment(1);
        if let Some(v) = verdict {
            metrics::gauge!(VERIFY_DIVERGENT_NODES, &self.labels).set(v.confirmed.len() as f64);
            metrics::histogram!(VERIFY_DURATION_SECONDS).record(v.report.duration_seconds);
            if v.in_sync() {
                metrics::gauge!(SYNC_LAST_GOOD_SYNC_TIMESTAMP_SECONDS, &self.labels)
                    .set(unix_seconds(jiff::Timestamp::now()));
            }
        }
    }
}

impl crate::engine::live::Observer for LiveMetrics {
    fn state(&self, state: crate::engine::live::LiveState, _why: &str) {
        let streaming = state == crate::engine::live::LiveState::Streaming;
        metrics::gauge!(SYNC_STREAMING, &self.labels).set(if streaming { 1.0 } else { 0.0 });
        if state != crate::engine::live::LiveState::Retrying {
            metrics::gauge!(SYNC_RETRY_BACKOFF_SECONDS, &self.labels).set(0.0);
        }
    }
    fn too_big(&self, nodes: &[crate::engine::oversized::TooBig], _limit: Option<usize>) {
        metrics::gauge!(SYNC_OVERSIZED_NODES, &self.labels).set(nodes.len() as f64);
    }
    fn backoff(&self, _failures: u32, wait: std::time::Duration) {
        metrics::gauge!(SYNC_RETRY_BACKOFF_SECONDS, &self.labels).set(wait.as_secs_f64());
        metrics::counter!(SYNC_RETRIES_TOTAL, &self.labels).increment(1);
    }
    fn full_sync(&self, _summary: &crate::engine::SyncSummary) {
        metrics::counter!(SYNC_FULL_SYNCS_TOTAL, &self.labels).increment(1);
    }
    fn applied(&self, _path: &str, lag: std::time::Duration) {
        self.applied.increment(1);
        self.lag.record(lag.as_secs_f64());
    }
    fn caught_up(&self, caught_up: bool) {
        metrics::gauge!(SYNC_CAUGHT_UP, &self.labels).set(if caught_up { 1.0 } else { 0.0 });
    }
    fn reachable(&self, side: verifier::Side, reachable: bool, _why: &str) {
        metrics::gauge!(SYNC_SESSION_CONNECTED, &self.side(side)).set(if reachable {
            1.0
        } else {
            0.0
        });
    }
    fn watch_event(&self) {
        self.events.increment(1);
    }
    fn reconnected(&self, side: verifier::Side) {
        metrics::counter!(SYNC_SESSION_RECONNECTS_TOTAL, &self.side(side)).increment(1);
    }
    fn claim_refused(&self, reason: &'static str) {
        claims_refused(&self.labels, reason);
    }
    fn delay_backlog(
        &self,
        waiting: usize,
        _oldest: Option<std::time::Duration>,
        _shortened: Option<std::time::Duration>,
    ) {
        metrics::gauge!(SYNC_DELAYED_CHANGES, &self.labels).set(waiting as f64);
    }
    fn deletions_held(&self, held: Option<&crate::engine::Held>) {
        let now = held.map_or(0, |h| h.deletes);
        let before = self.held.swap(now, std::sync::atomic::Ordering::Relaxed);
        deletes_held(&self.labels, now, now.saturating_sub(before));
    }
}

/// Records the end of a switchover of the LiveSynchronization (`namespace`, `name`): `mode`
/// planned or unplanned, `complete` or failed, after `seconds` (the RTO when complete; none
/// for one refused before it ran).
pub fn switchover_ended(
    namespace: &str,
    name: &str,
    mode: &'static str,
    complete: bool,
    seconds: Option<f64>,
) {
    let result = if complete { "complete" } else { "failed" };
    metrics::counter!(SWITCHOVER_RUNS_TOTAL, "mode" => mode, "result" => result).increment(1);
    if let Some(s) = seconds {
        metrics::histogram!(SWITCHOVER_DURATION_SECONDS, "mode" => mode, "result" => result)
            .record(s);
    }
    if complete {
        metrics::gauge!(SWITCHOVER_LAST_SUCCESS_TIMESTAMP_SECONDS, "namespace" => namespace.to_string(), "name" => name.to_string())
            .set(unix_seconds(jiff::Timestamp::now()));
    }
}

/// Counts a copy of (`namespace`, `name`) refused before it wrote, by reason.
pub fn claims_refused(labels: &[(&'static str, String); 2], reason: &'static str) {
    let [(_, ns), (_, name)] = labels;
    metrics::counter!(SYNC_CLAIMS_REFUSED_TOTAL, "namespace" => ns.clone(), "name" => name.clone(), "reason" => reason)
        .increment(1);
}

/// Sets the held-deletes gauge of (`namespace`, `name`) to `now` and counts `new` more held.
pub fn deletes_held(labels: &[(&'static str, String); 2], now: u64, new: u64) {
    metrics::gauge!(SYNC_DELETES_HELD, labels).set(now as f64);
    metrics::counter!(SYNC_DELETES_HELD_TOTAL, labels).increment(new);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for name in ALL {
            assert!(name.starts_with("resiliency_"), "{name}");
            let counter = name.ends_with("_total");
            let is_counter = [
                RECONCILE_TOTAL,
                RECONCILE_ERRORS_TOTAL,
                SYNC_RUNS_TOTAL,
                SYNC_NODES_WRITTEN_TOTAL,
                SYNC_BYTES_COPIED_TOTAL,
                SYNC_CHANGES_APPLIED_TOTAL,
                SYNC_FULL_SYNCS_TOTAL,
                VERIFY_RUNS_TOTAL,
                SYNC_WATCH_EVENTS_TOTAL,
                SYNC_SESSION_RECONNECTS_TOTAL,
                SYNC_REPAIRED_PATHS_TOTAL,
                SYNC_DELETES_HELD_TOTAL,
                SYNC_CLAIMS_REFUSED_TOTAL,
                SYNC_RETRIES_TOTAL,
                TUNNEL_CONNECTIONS_TOTAL,
                SWITCHOVER_RUNS_TOTAL,
            ]
            .contains(name);
            assert_eq!(counter, is_counter, "{name}: only counters end in _total");
        }
    }

    #[test]
    fn histograms_render_with_buckets() {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::histogram!(RECONCILE_DURATION_SECONDS, "controller" => "database")
                .record(0.02);
        });
        let text = handle.render();
        assert!(
            text.contains("resiliency_reconcile_duration_seconds_bucket{controller=\"database\",le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE resiliency_reconcile_duration_seconds histogram"));
        assert!(text.contains("resiliency_build_info{version="));
    }
}
