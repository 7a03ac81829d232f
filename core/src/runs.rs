//! Copies running in the background. Reconcilers never copy inline: they start a run here,
//! keyed by the resource's UID, and read its state on later passes. Dropping the registry entry
//! (or `stop`) aborts the task; an aborted copy leaves a partial destination that the next run
//! converges, never a corrupted one (each write batch is one atomic multi).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use verifier::{Report, Side, VerifyOptions};

use crate::backup::{self, BackupError, BackupOptions, RestoreOptions};
use crate::engine::{self, SyncError, SyncOptions, SyncSummary};
use crate::reason::Reason;

/// What a Synchronization runs, by plugin.
#[derive(Clone, Debug)]
pub enum Job {
    /// Ensemble to ensemble, then the verifier when `verify`.
    Copy {
        opts: Box<SyncOptions>,
        verify: bool,
    },
    /// A snapshot into a bucket, then (`verify`) a read-back check, then retention: see
    /// [`backup::seal`].
    Backup {
        opts: Box<BackupOptions>,
        retention: backup::Retention,
        verify: bool,
    },
    /// A snapshot restored (always checked before and verified after).
    Restore(Box<RestoreOptions>),
}

impl Job {
    /// What it does, for a condition message.
    pub fn describe(&self) -> String {
        match self {
            Job::Copy { opts, .. } => {
                format!("copying {} to {}", opts.source_root, opts.destination_root)
            }
            Job::Backup { opts, .. } => {
                format!("backing up {} to {}", opts.root, opts.location.describe())
            }
            Job::Restore(o) => format!(
                "restoring from {} into {}",
                o.location.describe(),
                o.destination_root
            ),
        }
    }
}

/// A finished run: for a copy, its summary and the verifier's report when one was asked for;
/// for a backup or restore, the snapshot.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub summary: SyncSummary,
    pub report: Option<Report>,
    pub snapshot: Option<SnapshotOutcome>,
}

/// A snapshot a backup wrote or a restore read, as a resource's status reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub name: String,
    /// Where, without credentials, e.g. s3://bucket/ns/db.
    pub location: String,
    pub nodes: u64,
    pub data_bytes: u64,
    /// Compressed size in the bucket.
    pub size_bytes: u64,
    /// The verifier's root hash of the captured tree.
    pub root_hash: String,
    /// Snapshots deleted by retention after this backup.
    pub pruned: Vec<String>,
    /// Kept, but not counted by retention: see [`backup::Manifest::suspect`].
    pub suspect: bool,
    pub suspect_reason: Option<String>,
}

/// What a backup wrote or a restore read.
#[derive(Clone, Debug)]
pub struct SnapshotOutcome {
    pub restore: bool,
    pub status: Snapshot,
    /// Backup: read back and checked. Restore: the restored tree hashes to the manifest's root.
    pub verified: bool,
    pub duration_seconds: f64,
    /// A restore that finished an interrupted one (an operator restart): the nodes it found
    /// already in place.
    pub resumed: Option<u64>,
}

/// A copy that did not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFailure {
    pub reason: Reason,
    /// The cause chain, never with credentials in it.
    pub message: String,
    /// The ensemble the failure was on, when it was on one.
    pub side: Option<Side>,
}

// Few of these exist at once; boxing the outcome would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum RunState {
    Running {
        started: Timestamp,
    },
    Finished {
        started: Timestamp,
        finished: Timestamp,
        result: Result<RunOutcome, RunFailure>,
    },
}

struct Entry {
    state: RunState,
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Clone, Default)]
pub struct Runs {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Runs {
    pub fn new() -> Runs {
        Runs::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self, key: &str) -> Option<RunState> {
        self.lock().get(key).map(|e| e.state.clone())
    }

    /// Starts a job unless one runs under `key` already.
    pub fn start(&self, key: &str, job: Job) {
        let mut map = self.lock();
        if matches!(
            map.get(key),
            Some(Entry {
                state: RunState::Running { .. },
                ..
            })
        ) {
            return;
        }
        let started = Timestamp::now();
        let inner = self.inner.clone();
        let owned_key = key.to_string();
        let task = tokio::spawn(async move {
            let result = run(job).await;
            let finished = Timestamp::now();
            let mut map = inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = map.get_mut(&owned_key) {
                e.state = RunState::Finished {
                    started,
                    finished,
                    result,
                };
                e.task = None;
            }
        });
        map.insert(
            key.to_string(),
            Entry {
                state: RunState::Running { started },
                task: Some(task.abort_handle()),
            },
        );
    }

    /// Aborts the run under `key`, if any, and forgets it.
    pub fn stop(&self, key: &str) {
        if let Some(e) = self.lock().remove(key) {
            if let Some(t) = e.task {
                t.abort();
            }
        }
    }

    /// Aborts every run and forgets every outcome (when this replica stops being the leader:
    /// the next leader owns them now).
    pub fn clear(&self) {
        for (_, e) in self.lock().drain() {
            if let Some(t) = e.task {
                t.abort();
            }
        }
    }

    /// Keys of the runs still going.
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| matches!(e.state, RunState::Running { .. }))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

pub use crate::engine::error::cause_chain;

/// The reason and side of a copy error, for conditions and metrics.
pub fn classify(err: &SyncError) -> (Reason, Option<Side>) {
    use verifier::ConnectError;
    let reason = match err {
        SyncError::Connect(ConnectError::Refused {
            source: zookeeper_client::Error::AuthFailed,
            ..
        }) => Reason::AuthFailed,
        SyncError::Connect(ConnectError::Unreachable { .. } | ConnectError::Refused { .. }) => {
            Reason::Unreachable
        }
        SyncError::Connect(ConnectError::InvalidServers { .. })
        | SyncError::InvalidPath(_)
        | SyncError::Overlap { .. } => Reason::InvalidSpec,
        SyncError::NotAuthorized { .. } | SyncError::ClaimRefused { .. } => Reason::AuthFailed,
        SyncError::RetriesExhausted { last, .. } => return classify(last),
        SyncError::Busy { .. } => Reason::WriterConflict,
        SyncError::Loop { .. } => Reason::ReplicationLoop,
        SyncError::SourceFenced { .. } => Reason::SourceFenced,
        _ => Reason::CopyFailed,
    };
    (reason, err.side())
}

fn backup_failure(e: &BackupError) -> RunFailure {
    let (reason, side) = match e {
        BackupError::Sync(s) => classify(s),
        BackupError::Store { .. } => (Reason::Unreachable, None),
        BackupError::Invalid { .. } | BackupError::Path(_) => (Reason::InvalidSpec, None),
        BackupError::Corrupt { .. }
        | BackupError::Mismatch { .. }
        | BackupError::NotVerified { .. } => (Reason::VerifyFailed, None),
        _ => (Reason::CopyFailed, None),
    };
    RunFailure {
        reason,
        message: cause_chain(e),
        side,
    }
}

async fn run(job: Job) -> Result<RunOutcome, RunFailure> {
    match job {
        Job::Copy { opts, verify } => run_copy(&opts, verify).await,
        Job::Backup {
            opts,
            retention,
            verify,
        } => {
            let m = backup::backup(&opts)
                .await
                .map_err(|e| backup_failure(&e))?;
            let sealed = backup::seal(&opts.location, m, verify, retention)
                .await
                .map_err(|e| backup_failure(&e))?;
            let m = &sealed.manifest;
            let status = Snapshot {
                name: m.name.clone(),
                location: opts.location.describe(),
                nodes: m.nodes,
                data_bytes: m.data_bytes,
                size_bytes: m.object_bytes,
                root_hash: m.root_hash.clone(),
                pruned: sealed.pruned.clone(),
                suspect: m.suspect.is_some(),
                suspect_reason: m.suspect.as_ref().map(|s| s.reason.clone()),
            };
            Ok(snapshot_outcome(
                false,
                status,
                sealed.verified,
                m.duration_seconds,
            ))
        }
        Job::Restore(o) => {
            let s = backup::restore(&o).await.map_err(|e| backup_failure(&e))?;
            let status = Snapshot {
                name: s.snapshot.clone(),
                location: o.location.describe(),
                nodes: s.nodes,
                data_bytes: s.data_bytes,
                size_bytes: 0,
                root_hash: s.root_hash.clone(),
                pruned: Vec::new(),
                suspect: false,
                suspect_reason: None,
            };
            let mut done = snapshot_outcome(true, status, true, s.duration_seconds);
            if let Some(snap) = &mut done.snapshot {
                snap.resumed = s.resumed.then_some(s.existing);
            }
            Ok(done)
        }
    }
}

fn snapshot_outcome(
    restore: bool,
    status: Snapshot,
    verified: bool,
    duration_seconds: f64,
) -> RunOutcome {
    let summary = SyncSummary {
        source_nodes: status.nodes,
        bytes_written: if restore {
            status.data_bytes
        } else {
            status.size_bytes
        },
        attempts: 1,
        duration_seconds,
        ..SyncSummary::default()
    };
    RunOutcome {
        summary,
        report: None,
        snapshot: Some(SnapshotOutcome {
            restore,
            status,
            verified,
            duration_seconds,
            resumed: None,
        }),
    }
}

async fn run_copy(opts: &SyncOptions, verify: bool) -> Result<RunOutcome, RunFailure> {
    let summary = engine::sync(opts).await.map_err(|e| {
        let (reason, side) = classify(&e);
        RunFailure {
            reason,
            message: cause_chain(&e),
            side,
        }
    })?;
    let report = if verify && !opts.dry_run {
        Some(verify_copy(opts).await?)
    } else {
        None
    };
    Ok(RunOutcome {
        summary,
        report,
        snapshot: None,
    })
}

/// Compares both trees with the policies the copy used.
pub async fn verify_copy(opts: &SyncOptions) -> Result<Report, RunFailure> {
    let fail = |e: &dyn std::error::Error| RunFailure {
        reason: Reason::VerifyFailed,
        message: cause_chain(e),
        side: None,
    };
    let sessions = verifier::zk::READ_SESSIONS;
    let src = verifier::connect_pool(Side::Source, &opts.source, sessions)
        .await
        .map_err(|e| fail(&e))?;
    let dst = verifier::connect_pool(Side::Destination, &opts.destination, sessions)
        .await
        .map_err(|e| fail(&e))?;
    let mut v = VerifyOptions {
        max_paths: 10,
        ..VerifyOptions::default()
    };
    v.walk.hash.acl = opts.copy_acl;
    v.walk.ephemerals = opts.ephemerals;
    verifier::verify(&src, &opts.source_root, &dst, &opts.destination_root, v)
        .await
        .map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use verifier::ConnectOptions;

    #[test]
    fn refused_claims_have_their_own_reasons_and_name_no_side() {
        let busy = SyncError::Busy {
            holder: "LiveSynchronization prod/kafka".into(),
            root: "/kafka".into(),
            destination_root: "/kafka".into(),
        };
        assert_eq!(classify(&busy), (Reason::WriterConflict, None));
        let waited = SyncError::RetriesExhausted {
            attempts: 6,
            last: Box::new(busy),
        };
        assert_eq!(classify(&waited), (Reason::WriterConflict, None));
        assert!(waited
            .to_string()
            .contains("LiveSynchronization prod/kafka"));
        let looped = SyncError::Loop {
            holder: "LiveSynchronization prod/forward".into(),
            source_root: "/a".into(),
            destination_root: "/a".into(),
        };
        assert_eq!(classify(&looped), (Reason::ReplicationLoop, None));
        assert_eq!(looped.claim_refusal(), Some("replication_loop"));
        assert!(!looped.is_transient(), "a loop needs a person");
    }

    #[tokio::test]
    async fn clear_aborts_every_run_and_forgets_every_outcome() {
        let runs = Runs::new();
        // Nothing listens there: the copy waits on its connect timeout, so it is still running.
        let opts = SyncOptions::new(
            ConnectOptions::new("127.0.0.1:9"),
            "/a",
            ConnectOptions::new("127.0.0.1:9"),
            "/b",
        );
        runs.start(
            "one",
            Job::Copy {
                opts: Box::new(opts.clone()),
                verify: true,
            },
        );
        runs.start(
            "two",
            Job::Copy {
                opts: Box::new(opts),
                verify: false,
            },
        );
        assert_eq!(runs.running().len(), 2);
        runs.clear();
        assert!(runs.running().is_empty());
        assert!(runs.state("one").is_none() && runs.state("two").is_none());
    }
}
