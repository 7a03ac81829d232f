//! Switchover and failover: the recovery half of disaster recovery.
//!
//! A live stream copies a primary (the source) to a replica (the destination). A switchover
//! makes the replica the primary:
//!
//! - **planned** (the source answers): optionally fence the source ([`fence`]), wait for the
//!   stream to catch up, stop it, then prove the replica equal to the now quiet source with
//!   the verifier (fenced nodes seen with their recorded ACLs). Only that proof reports zero
//!   data loss. A failure after the fence rolls back: the fence is lifted and the stream
//!   resumed, so the old primary goes on serving.
//! - **unplanned** (the source is gone, or the user says go): stop the stream and report the
//!   data-loss window from what the stream last knew, never more than was proven.
//!
//! Either may start the reverse stream (new primary to old). The drivers (the operator, the
//! CLI, standalone mode) own the stream and hand it over as a [`Stream`]; progress is read
//! from [`Progress`] while the run goes on. Nothing here knows Kubernetes.

pub mod fence;
pub mod local;
mod steps;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::continuous::Snapshot;
use crate::engine::SyncOptions;
use crate::Reason;

pub use steps::run;

/// Whether the old primary is expected to answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Mode {
    #[default]
    Planned,
    Unplanned,
}

/// How writes at the old primary are stopped during a planned switchover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum FenceMode {
    /// Not at all: the applications were stopped, or verification fails while they write.
    #[default]
    None,
    /// The tree is made read-only for everyone but the operator ([`fence`]).
    Acl,
}

/// What a switchover is asked to do.
#[derive(Clone, Debug)]
pub struct SwitchoverOptions {
    /// The stream's copy settings: source (old primary), destination (new primary), roots,
    /// ACL and ephemeral policies, the deletion guard.
    pub sync: SyncOptions,
    pub mode: Mode,
    pub fence: FenceMode,
    /// Start the reverse stream (new primary to old) once promoted.
    pub reverse: bool,
    /// How long a planned switchover may wait for the stream to catch up and the copy to
    /// verify equal before it rolls back.
    pub timeout: Duration,
    /// Who runs it, in the fence record, e.g. `Switchover prod/to-dr`.
    pub holder: String,
}

/// The stream a switchover takes over, owned by whoever drives it.
pub trait Stream: Send + Sync {
    /// What the stream knows now; `None` when it is not running here.
    fn snapshot(&self) -> Option<Snapshot>;
    /// The ACLs its verifier has read of both sides (see [`verifier::VerifyCache`]), while it
    /// runs: the fence and the verification then read again only the ACLs that changed.
    fn verify_cache(&self) -> Option<verifier::VerifyCache> {
        None
    }
    /// Stops it for good (a restart must not start it again) and returns once it has
    /// stopped writing.
    fn stop(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts it again: a planned switchover that failed after stopping it rolls back.
    fn resume(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts the reverse stream (new primary to old); its name. `keep_fenced`: the old
    /// primary was fenced, and the reverse stream keeps it so (its ACLs written in fenced
    /// form for this digest identity, see `SyncOptions::fence_destination`) while it is a
    /// replica: applications still pointed at it are refused, not silently overwritten.
    fn start_reverse(
        &self,
        keep_fenced: Option<String>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// The steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display, strum::IntoStaticStr)]
pub enum StepName {
    /// The stream runs, both sides answer, the input is sound.
    Preflight,
    /// `fence: acl`: the old primary made read-only.
    Fence,
    /// The stream has applied everything it saw.
    CatchUp,
    /// The stream stopped for good.
    StopStream,
    /// The new primary proven equal to the old (planned), or the divergence counted.
    Verify,
    /// The new primary takes writes (a stale fence of an earlier switchover lifted).
    Promote,
    /// The reverse stream started.
    Reverse,
    /// A planned switchover that failed: fence lifted, stream resumed.
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
pub enum StepState {
    Running,
    Succeeded,
    Failed,
    Skipped,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: StepName,
    pub state: StepState,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub message: String,
}

/// What the verifier showed of the two trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub equal: bool,
    pub source_root_hash: String,
    pub destination_root_hash: String,
    pub source_nodes: u64,
    pub destination_nodes: u64,
    pub divergent_nodes: u64,
    /// Some of the divergent paths (relative to the roots).
    pub divergent_paths: Vec<String>,
    /// Highest source mzxid read.
    pub source_max_mzxid: i64,
}

/// How much was lost.
#[derive(Clone, Debug, PartialEq)]
pub enum DataLoss {
    /// Proven: the new primary verified equal to the quiet old one, up to this zxid.
    None { source_zxid: i64 },
    /// Not proven: what the stream last knew.
    Window(LossWindow),
}

/// The unplanned data-loss window: changes made at the source after `caught_up` (or after
/// the last change applied) and before the source was last seen may be missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossWindow {
    /// The last verification that found both trees equal: every source change up to this
    /// zxid is proven on the new primary.
    pub verified_zxid: Option<i64>,
    pub verified_at: Option<Timestamp>,
    /// Source time of the newest change the stream applied.
    pub last_change_applied: Option<Timestamp>,
    /// The last instant the stream had nothing pending.
    pub caught_up_at: Option<Timestamp>,
    /// The last instant the source answered the stream.
    pub source_last_seen: Option<Timestamp>,
    /// From the last instant known caught up to the source last seen.
    pub window: Option<Duration>,
    /// The source still answered: nodes the verifier found different after the stop.
    pub divergent_nodes: Option<u64>,
}

impl LossWindow {
    /// From what the stream knew when it stopped.
    pub fn from_snapshot(s: &Snapshot) -> LossWindow {
        // The last good verification, even when later ones failed (a source going away
        // fails them).
        let verified = s.last_good_zxid.zip(s.last_good_sync);
        let known = s.caught_up_at.max(s.last_change_applied);
        let window = match (known, s.source_seen) {
            // Caught up after the source was last seen: nothing known is missing.
            (Some(k), Some(seen)) => Some(seen.duration_since(k).try_into().unwrap_or_default()),
            _ => None,
        };
        LossWindow {
            verified_zxid: verified.map(|v| v.0),
            verified_at: verified.map(|v| v.1),
            last_change_applied: s.last_change_applied,
            caught_up_at: s.caught_up_at,
            source_last_seen: s.source_seen,
            window,
            divergent_nodes: None,
        }
    }
}

/// A switchover that reached its end.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// From the request to the new primary promoted.
    pub rto: Duration,
    pub data_loss: DataLoss,
    pub verification: Option<Verification>,
    pub fence: Option<fence::Fenced>,
    /// A fence an earlier switchover left on the new primary, lifted.
    pub lifted: Option<fence::Lifted>,
    /// The reverse stream's name.
    pub reverse: Option<String>,
    /// Why the reverse stream did not start. The new primary is promoted all the same: a
    /// switchover is never rolled back once applications may have written to it.
    pub reverse_error: Option<String>,
}

/// Why a switchover failed, and whether it rolled back.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub step: StepName,
    pub reason: Reason,
    pub message: String,
    /// The fence was lifted and the stream resumed: the old primary serves as before.
    pub rolled_back: bool,
    /// The fence this run put on the old primary (once complete), and whether the rollback
    /// lifted it.
    pub fence: Option<fence::Fenced>,
    pub fence_lifted: bool,
}

/// A switchover as it goes: its steps and, once ended, the outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub mode: Mode,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub steps: Vec<Step>,
    pub outcome: Option<Result<Outcome, Failure>>,
}

/// The report of a run under way, shared with whoever shows it.
#[derive(Clone)]
pub struct Progress(Arc<Mutex<Report>>);

impl Progress {
    pub fn new(mode: Mode, started: Timestamp) -> Progress {
        Progress(Arc::new(Mutex::new(Report {
            mode,
            started,
            finished: None,
            steps: Vec::new(),
            outcome: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Report> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn report(&self) -> Report {
        self.lock().clone()
    }

    fn begin(&self, name: StepName, message: &str) {
        tracing::info!(step = %name, "switchover: {message}");
        self.lock().steps.push(Step {
            name,
            state: StepState::Running,
            started: Timestamp::now(),
            finished: None,
            message: message.to_string(),
        });
    }

    /// Says what the running step `name` is doing now.
    fn update(&self, name: StepName, message: &str) {
        tracing::info!(step = %name, "switchover: {message}");
        let mut r = self.lock();
        if let Some(s) = r.steps.iter_mut().rev().find(|s| s.name == name) {
            if s.state == StepState::Running {
                s.message = message.to_string();
            }
        }
    }

    /// Ends the running step `name`.
    fn end(&self, name: StepName, state: StepState, message: &str) {
        tracing::info!(step = %name, state = %state, "switchover: {message}");
        let now = Timestamp::now();
        let mut r = self.lock();
        match r.steps.iter_mut().rev().find(|s| s.name == name) {
            Some(s) if s.state == StepState::Running => {
                s.state = state;
                s.finished = Some(now);
                s.message = message.to_string();
            }
            _ => r.steps.push(Step {
                name,
                state,
                started: now,
                finished: Some(now),
                message: message.to_string(),
            }),
        }
    }

    fn finish(&self, outcome: Result<Outcome, Failure>) {
        let mut r = self.lock();
        r.finished = Some(Timestamp::now());
        r.outcome = Some(outcome);
    }
}
