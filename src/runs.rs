//! Copies running in the background. Reconcilers never copy inline: they start a run here,
//! keyed by the resource's UID, and read its state on later passes. Dropping the registry entry
//! (or `stop`) aborts the task; an aborted copy leaves a partial destination that the next run
//! converges, never a corrupted one (each write batch is one atomic multi).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use verifier::{Report, VerifyOptions};

use crate::api::conditions::Reason;
use crate::engine::{self, SyncError, SyncOptions, SyncSummary};

/// A finished copy, with the verifier's report when one was asked for.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub summary: SyncSummary,
    pub report: Option<Report>,
}

/// A copy that did not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFailure {
    pub reason: Reason,
    /// The cause chain, never with credentials in it.
    pub message: String,
    /// Whether the failure was on the source side (else the destination).
    pub source_side: Option<bool>,
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

    /// Starts a copy (then, when `verify`, the verifier) unless one runs under `key` already.
    pub fn start(&self, key: &str, opts: SyncOptions, verify: bool) {
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
            let result = run(&opts, verify).await;
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
pub fn classify(err: &SyncError) -> (Reason, Option<bool>) {
    use verifier::ConnectError;
    let side = |role: &str| Some(role == "source");
    match err {
        SyncError::Connect(ConnectError::Unreachable { role, .. }) => {
            (Reason::Unreachable, side(role))
        }
        SyncError::Connect(ConnectError::Refused { role, source, .. }) => {
            let reason = if matches!(source, zookeeper_client::Error::AuthFailed) {
                Reason::AuthFailed
            } else {
                Reason::Unreachable
            };
            (reason, side(role))
        }
        SyncError::Connect(ConnectError::InvalidServers { role, .. }) => {
            (Reason::InvalidSpec, side(role))
        }
        SyncError::NotAuthorized { side: s, .. } => (Reason::AuthFailed, side(s)),
        SyncError::InvalidPath(_) | SyncError::Overlap { .. } => (Reason::InvalidSpec, None),
        SyncError::SourceRootMissing { .. } => (Reason::CopyFailed, Some(true)),
        SyncError::Read(e) => (Reason::CopyFailed, side(e.side)),
        SyncError::RetriesExhausted { last, .. } => classify(last),
        _ => (Reason::CopyFailed, Some(false)),
    }
}

async fn run(opts: &SyncOptions, verify: bool) -> Result<RunOutcome, RunFailure> {
    let summary = engine::sync(opts).await.map_err(|e| {
        let (reason, source_side) = classify(&e);
        RunFailure {
            reason,
            message: cause_chain(&e),
            source_side,
        }
    })?;
    let report = if verify && !opts.dry_run {
        Some(verify_copy(opts).await?)
    } else {
        None
    };
    Ok(RunOutcome { summary, report })
}

/// Compares both trees with the policies the copy used.
pub async fn verify_copy(opts: &SyncOptions) -> Result<Report, RunFailure> {
    let fail = |e: &dyn std::error::Error| RunFailure {
        reason: Reason::VerifyFailed,
        message: cause_chain(e),
        source_side: None,
    };
    let sessions = verifier::zk::READ_SESSIONS;
    let src = verifier::connect_pool("source", &opts.source, sessions)
        .await
        .map_err(|e| fail(&e))?;
    let dst = verifier::connect_pool("destination", &opts.destination, sessions)
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
        runs.start("one", opts.clone(), true);
        runs.start("two", opts, false);
        assert_eq!(runs.running().len(), 2);
        runs.clear();
        assert!(runs.running().is_empty());
        assert!(runs.state("one").is_none() && runs.state("two").is_none());
    }
}
