//! Synchronization: one copy, run like a Job. Pure decisions here ([`desired`]); the kube glue
//! lives in [`crate::operator::synchronization`] and the standalone driver in [`crate::standalone`].
//!
//! One file per job: `start` (a run begins, runs, or waits for what it needs), `outcome`
//! (a copy finished or failed), `snapshot` (a backup or restore finished), `held` (the
//! deletion guard). Each writes into a [`Draft`](crate::controllers::draft::Draft) of the status.

mod held;
mod outcome;
mod snapshot;
mod start;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{Phase, Synchronization, SynchronizationStatus};
/// Kept at its old path for the drivers.
pub use crate::controllers::note::Note;
use crate::controllers::{deletion_guard, draft};
use crate::resolve::ResolveError;
use crate::runs::{Job, RunState};

/// What the driver must do after a decision.
#[derive(Debug)]
pub enum Action {
    Nothing,
    /// Start the job (copy, backup or restore) in the background.
    Start(Box<Job>),
    /// The outcome is in the status: the run's entry can go.
    Forget,
}

pub type Decision = draft::Decision<SynchronizationStatus, Action>;
type Draft = draft::Draft<SynchronizationStatus>;

/// How often a Synchronization waiting for a Database or Secret looks again, on top of the
/// watches that wake it when one appears.
pub const WAITING_RECHECK: Duration = Duration::from_secs(60);

/// Decides the next step of `sync` from its spec and status, the engine settings resolved from
/// its Databases and Secrets, the state of its background run (`None`: no run in this process),
/// and `now`. `resolve` is called only when a run may start (see [`needs_endpoints`]).
pub fn desired(
    sync: &Synchronization,
    resolve: impl FnOnce() -> Result<Job, ResolveError>,
    run: Option<&RunState>,
    now: Timestamp,
) -> Decision {
    let old = sync.status.clone().unwrap_or_default();
    let mut d = Draft::new(sync.status.as_ref(), sync.metadata.generation, now);
    let release = deletion_guard::requested_release(&sync.metadata, old.deletion_guard.as_ref());
    if let Some(action) = idle(&old, run, release.is_some()) {
        return d.decide(action, None);
    }
    match run {
        Some(RunState::Running { started }) => {
            start::running(&mut d, *started);
            d.decide(Action::Nothing, None)
        }
        Some(RunState::Finished {
            started,
            finished,
            result,
        }) => {
            outcome::finished(&mut d, sync, (*started, *finished), result);
            d.decide(Action::Forget, None)
        }
        None => match resolve() {
            Err(e) => {
                let requeue = start::waiting(&mut d, &old, &e);
                d.decide(Action::Nothing, requeue)
            }
            Ok(job) => {
                let job = start::start(&mut d, &old, job, release);
                d.decide(Action::Start(Box::new(job)), None)
            }
        },
    }
}

/// What to do when nothing runs or may run: held deletes wait for a person (only the release
/// annotation starts the copy again), and a finished Synchronization never runs again (a run
/// entry left over can go). `None`: the Synchronization has a step to take.
///
/// A token names this object, so one present at the first run (standalone mode, whose
/// manifests keep no status) was shown for it by an earlier run.
fn idle(old: &SynchronizationStatus, run: Option<&RunState>, release: bool) -> Option<Action> {
    if old.phase == Phase::Held && run.is_none() && !release {
        return Some(Action::Nothing);
    }
    if !old.phase.is_finished() {
        return None;
    }
    Some(if run.is_some() {
        Action::Forget
    } else {
        Action::Nothing
    })
}

/// Whether [`desired`] will need the Databases and Secrets: only when no run exists and the
/// Synchronization is not finished. Drivers skip reading them otherwise.
pub fn needs_endpoints(sync: &Synchronization, run: Option<&RunState>) -> bool {
    run.is_none() && !settled(sync)
}

/// Nothing more to do until something changes: finished, or held with no release asked for
/// (no worker, no finalizer needed, its outcome recorded once).
pub fn settled(sync: &Synchronization) -> bool {
    sync.status.as_ref().is_some_and(|st| {
        st.phase.is_finished()
            || (st.phase == Phase::Held
                && deletion_guard::requested_release(&sync.metadata, st.deletion_guard.as_ref())
                    .is_none())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::automation::SynchronizationSpec;
    use crate::api::conditions::{find, is_true, types, ConditionStatus, Reason};
    use crate::engine::{Allowance, SyncSummary};
    use crate::runs::{RunFailure, RunOutcome};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use verifier::ConnectOptions;

    fn sync(yaml_status: Option<SynchronizationStatus>) -> Synchronization {
        let spec: SynchronizationSpec = serde_json::from_value(serde_json::json!({
            "plugin": "zookeeper-to-zookeeper-nodes",
            "config": {"sourceName": "src", "destinationName": "dst", "rootPath": "/test"}
        }))
        .unwrap();
        let mut s = Synchronization::new("s", spec);
        s.metadata.generation = Some(1);
        s.status = yaml_status;
        s
    }

    fn opts() -> Result<Job, ResolveError> {
        Ok(Job::Copy {
            opts: Box::new(crate::engine::SyncOptions::new(
                ConnectOptions::new("a:1"),
                "/test",
                ConnectOptions::new("b:1"),
                "/test",
            )),
            verify: true,
        })
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn only_held_without_a_release_or_finished_is_idle() {
        let st = |phase| SynchronizationStatus {
            phase,
            ..Default::default()
        };
        let running = RunState::Running { started: t(1) };
        assert!(matches!(
            idle(&st(Phase::Held), None, false),
            Some(Action::Nothing)
        ));
        assert!(idle(&st(Phase::Held), None, true).is_none());
        assert!(matches!(
            idle(&st(Phase::Succeeded), Some(&running), false),
            Some(Action::Forget)
        ));
        assert!(idle(&st(Phase::Running), None, false).is_none());
    }

    #[test]
    fn a_new_sync_starts_once() {
        let d = desired(&sync(None), opts, None, t(100));
        assert!(matches!(
            d.action,
            Action::Start(ref j) if matches!(**j, Job::Copy { verify: true, .. })
        ));
        assert_eq!(d.status.phase, Phase::Running);
        assert_eq!(d.status.runs, 1);
        assert_eq!(d.status.start_time, Some(Time(t(100))));
        // While it runs, nothing new starts.
        let running = RunState::Running { started: t(100) };
        let d2 = desired(&sync(Some(d.status.clone())), opts, Some(&running), t(105));
        assert!(matches!(d2.action, Action::Nothing));
        // Looking at a running copy changes nothing, so nothing is written.
        assert_eq!(d2.status, d.status);
    }

    #[test]
    fn a_run_lost_with_the_operator_restarts_with_a_warning() {
        let mut st = SynchronizationStatus {
            phase: Phase::Running,
            runs: 1,
            ..Default::default()
        };
        st.start_time = Some(Time(t(50)));
        let d = desired(&sync(Some(st)), opts, None, t(100));
        assert!(matches!(d.action, Action::Start(..)));
        assert_eq!(d.status.runs, 2);
        assert_eq!(d.status.start_time, Some(Time(t(50))));
        assert!(d
            .notes
            .iter()
            .any(|n| n.warning && n.reason == Reason::Interrupted));
    }

    #[test]
    fn a_missing_database_waits_and_says_which() {
        let e = ResolveError::DatabaseNotFound {
            namespace: "ns".into(),
            name: "src".into(),
        };
        let d = desired(&sync(None), || Err(e), None, t(1));
        assert!(matches!(d.action, Action::Nothing));
        assert_eq!(d.status.phase, Phase::Pending);
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(ready), ready.reason.as_str()),
            (ConditionStatus::False, "DatabaseNotFound")
        );
        assert!(ready.message.contains("src"));
        assert_eq!(d.requeue, Some(WAITING_RECHECK));
        // The same wait again publishes no second Event.
        let d2 = desired(
            &sync(Some(d.status)),
            || {
                Err(ResolveError::DatabaseNotFound {
                    namespace: "ns".into(),
                    name: "src".into(),
                })
            },
            None,
            t(2),
        );
        assert!(d2.notes.is_empty());
        // An invalid spec waits for a fix, not for time.
        let e = ResolveError::InvalidSpec {
            field: "spec.config.rootPath".into(),
            message: "x".into(),
        };
        assert_eq!(desired(&sync(None), || Err(e), None, t(1)).requeue, None);
    }

    fn finished(result: Result<RunOutcome, RunFailure>) -> RunState {
        RunState::Finished {
            started: t(10),
            finished: t(13),
            result,
        }
    }

    fn report(equal: bool) -> verifier::Report {
        verifier::Report {
            equal,
            source_root: "/test".into(),
            destination_root: "/test".into(),
            source_root_hash: "aa".into(),
            destination_root_hash: if equal { "aa" } else { "bb" }.into(),
            source_nodes: 3,
            destination_nodes: 3,
            destination_root_exists: true,
            divergent_nodes: u64::from(!equal),
            counts: Default::default(),
            divergences: vec![],
            truncated: false,
            duration_seconds: 0.1,
            source_max_mzxid: 0,
        }
    }

    #[test]
    fn held_deletes_hold_the_sync_until_its_token_is_set() {
        let held = crate::engine::Held {
            reason: crate::engine::HoldReason::MassDeletion,
            deletes: 300,
            destination_nodes: 1000,
            source_nodes: 700,
            max_deletes: 100,
            max_delete_percent: 10.0,
            sample: vec!["/test/a".into()],
        };
        let outcome = RunOutcome {
            summary: SyncSummary {
                held: Some(held),
                ..SyncSummary::default()
            },
            report: Some(report(false)),
            snapshot: None,
        };
        let mut s = sync(Some(SynchronizationStatus {
            phase: Phase::Running,
            runs: 1,
            ..Default::default()
        }));
        s.metadata.uid = Some("u".into());
        s.metadata.namespace = Some("ns".into());
        let d = desired(&s, opts, Some(&finished(Ok(outcome))), t(20));
        assert_eq!(d.status.phase, Phase::Held);
        let c = find(&d.status.conditions, types::DELETION_GUARD).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::True, "MassDeletionHeld")
        );
        assert!(!is_true(&d.status.conditions, types::COMPLETE));
        assert!(!is_true(&d.status.conditions, types::READY));
        let h = d.status.deletion_guard.clone().unwrap().held.unwrap();
        assert_eq!((h.deletes, h.percent.as_str()), (300, "30.0%"));
        assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
        assert!(d.notes[0].warning && d.notes[0].message.contains(&h.release_token));

        // Held, no release: nothing runs, however long it waits.
        s.status = Some(d.status.clone());
        assert!(settled(&s));
        let idle = desired(&s, opts, None, t(10_000));
        assert!(matches!(idle.action, Action::Nothing));
        assert_eq!(idle.status.phase, Phase::Held);

        // The token: a new run, allowed exactly those deletes, recorded once.
        s.metadata.annotations = Some(
            [(
                crate::api::automation::RELEASE_DELETIONS_ANNOTATION.to_string(),
                h.release_token.clone(),
            )]
            .into(),
        );
        assert!(!settled(&s));
        let go = desired(&s, opts, None, t(30));
        let Action::Start(job) = &go.action else {
            panic!("{:?}", go.action)
        };
        let Job::Copy { opts: o, .. } = &**job else {
            panic!()
        };
        assert_eq!(o.guard.allowance, Allowance::UpTo(300));
        assert_eq!(go.status.phase, Phase::Running);
        let dg = go.status.deletion_guard.clone().unwrap();
        assert_eq!(
            dg.last_released_token.as_deref(),
            Some(h.release_token.as_str())
        );
        assert!(go.notes.iter().any(|n| n.reason == Reason::DeletesReleased));
        // The same token once more does nothing.
        s.status = Some(SynchronizationStatus {
            phase: Phase::Held,
            ..go.status
        });
        assert!(matches!(
            desired(&s, opts, None, t(40)).action,
            Action::Nothing
        ));
    }

    #[test]
    fn success_and_verification_complete_the_sync() {
        let running = sync(Some(SynchronizationStatus {
            phase: Phase::Running,
            runs: 1,
            ..Default::default()
        }));
        let ok = RunOutcome {
            summary: SyncSummary::default(),
            report: Some(report(true)),
            snapshot: None,
        };
        let d = desired(&running, opts, Some(&finished(Ok(ok))), t(14));
        assert!(matches!(d.action, Action::Forget));
        assert_eq!(d.status.phase, Phase::Succeeded);
        assert!(is_true(&d.status.conditions, types::COMPLETE));
        assert!(is_true(&d.status.conditions, types::VERIFIED));
        assert!(is_true(&d.status.conditions, types::READY));
        assert_eq!(d.status.duration.as_deref(), Some("3.0s"));
        // Finished means finished: it never starts again.
        let again = desired(&sync(Some(d.status)), opts, None, t(100));
        assert!(matches!(again.action, Action::Nothing));
    }

    #[test]
    fn divergence_after_the_copy_is_not_ready() {
        let running = sync(Some(SynchronizationStatus {
            phase: Phase::Running,
            ..Default::default()
        }));
        let ok = RunOutcome {
            summary: SyncSummary::default(),
            report: Some(report(false)),
            snapshot: None,
        };
        let d = desired(&running, opts, Some(&finished(Ok(ok))), t(14));
        assert_eq!(d.status.phase, Phase::Succeeded);
        assert!(is_true(&d.status.conditions, types::COMPLETE));
        let v = find(&d.status.conditions, types::VERIFIED).unwrap();
        assert_eq!(
            (ConditionStatus::of(v), v.reason.as_str()),
            (ConditionStatus::False, "Diverged")
        );
        assert!(!is_true(&d.status.conditions, types::READY));
        assert_eq!(d.status.verification.unwrap().divergent_nodes, 1);
    }

    #[test]
    fn a_suspect_snapshot_succeeds_with_a_warning_and_its_reason_in_the_status() {
        let running = sync(Some(SynchronizationStatus {
            phase: Phase::Running,
            ..Default::default()
        }));
        let reason = "node count dropped from 1200 to 1 (\u{2212}99.9%) against snapshot db-1";
        let status = crate::runs::Snapshot {
            name: "db-2".into(),
            location: "file:///b".into(),
            nodes: 1,
            suspect: true,
            suspect_reason: Some(reason.into()),
            ..Default::default()
        };
        let ok = RunOutcome {
            summary: SyncSummary::default(),
            report: None,
            snapshot: Some(crate::runs::SnapshotOutcome {
                restore: false,
                status,
                verified: true,
                duration_seconds: 0.1,
                resumed: None,
            }),
        };
        let d = desired(&running, opts, Some(&finished(Ok(ok))), t(14));
        assert_eq!(d.status.phase, Phase::Succeeded);
        let snap = d.status.snapshot.as_ref().unwrap();
        assert!(snap.suspect);
        assert_eq!(snap.suspect_reason.as_deref(), Some(reason));
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert!(ready.message.contains(reason), "{}", ready.message);
        assert!(d
            .notes
            .iter()
            .any(|n| n.warning && n.message.contains(reason)));
        // Serialized, the flag is there; an ordinary snapshot's status has neither field.
        let json = serde_json::to_value(snap).unwrap();
        assert_eq!(json["suspect"], true);
        assert_eq!(json["suspectReason"], reason);
        let plain =
            serde_json::to_value(crate::api::automation::SnapshotStatus::default()).unwrap();
        assert!(plain.get("suspect").is_none() && plain.get("suspectReason").is_none());
    }

    #[test]
    fn failure_names_the_side() {
        let running = sync(Some(SynchronizationStatus {
            phase: Phase::Running,
            ..Default::default()
        }));
        let f = RunFailure {
            reason: Reason::Unreachable,
            message: "destination ensemble \"b:1\" is unreachable".into(),
            side: Some(verifier::Side::Destination),
        };
        let d = desired(&running, opts, Some(&finished(Err(f))), t(14));
        assert_eq!(d.status.phase, Phase::Failed);
        assert!(is_true(&d.status.conditions, types::FAILED));
        let r = find(&d.status.conditions, types::DESTINATION_REACHABLE).unwrap();
        assert_eq!(
            (ConditionStatus::of(r), r.reason.as_str()),
            (ConditionStatus::False, "Unreachable")
        );
        assert!(d.notes.iter().any(|n| n.warning));
    }
}
