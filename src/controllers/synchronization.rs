//! Synchronization: one copy, run like a Job. Pure decisions here ([`desired`]); the kube glue
//! lives in [`crate::operator::synchronization`] and the standalone driver in [`crate::standalone`].

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{
    Phase, SyncCounters, Synchronization, SynchronizationStatus, Verification,
};
use crate::api::conditions::{set_condition, types, ConditionStatus, Desired, Reason};
use crate::controllers::deletion_guard;
/// Kept at its old path for the drivers.
pub use crate::controllers::note::Note;
use crate::engine::Allowance;
use crate::resolve::ResolveError;
use crate::runs::{Job, RunOutcome, RunState};

/// What the driver must do after a decision.
#[derive(Debug)]
pub enum Action {
    Nothing,
    /// Start the job (copy, backup or restore) in the background.
    Start(Box<Job>),
    /// The outcome is in the status: the run's entry can go.
    Forget,
}

#[derive(Debug)]
pub struct Decision {
    pub status: SynchronizationStatus,
    pub action: Action,
    /// Look again after this long even without a change (None: wait for one).
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

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
    let generation = sync.metadata.generation;
    let mut st = old.clone();
    st.observed_generation = generation;
    let mut notes = Vec::new();
    let mut set = |st: &mut SynchronizationStatus, d: Desired| {
        set_condition(&mut st.conditions, d, generation, now)
    };

    // Held deletes wait for a person: only the release annotation starts the copy again. A
    // token names this object, so one present at the first run (standalone mode, whose
    // manifests keep no status) was shown for it by an earlier run.
    let release = deletion_guard::requested_release(&sync.metadata, old.deletion_guard.as_ref());
    if old.phase == Phase::Held && run.is_none() && release.is_none() {
        return Decision {
            status: st,
            action: Action::Nothing,
            requeue: None,
            notes,
        };
    }
    if old.phase.is_finished() {
        // A finished Synchronization never runs again; a run entry left over can go.
        let action = if run.is_some() {
            Action::Forget
        } else {
            Action::Nothing
        };
        return Decision {
            status: st,
            action,
            requeue: None,
            notes,
        };
    }
    match run {
        Some(RunState::Running { started }) => {
            st.phase = Phase::Running;
            // A status read before this run's start was stored still counts it.
            st.runs = st.runs.max(1);
            st.start_time.get_or_insert(Time(*started));
            // Keep the message written when the run started (it names the paths): rewriting
            // it would cost a status write on every look at a running copy.
            let started_msg = crate::api::conditions::find(&st.conditions, types::PROGRESSING)
                .filter(|c| {
                    ConditionStatus::of(c) == ConditionStatus::True
                        && c.reason == Reason::Running.as_str()
                })
                .map(|c| c.message.clone());
            set(
                &mut st,
                Desired::new(
                    types::PROGRESSING,
                    true,
                    Reason::Running,
                    started_msg.unwrap_or_else(|| "copy in progress".into()),
                ),
            );
            set(
                &mut st,
                Desired::new(types::READY, false, Reason::Running, "copy in progress"),
            );
            Decision {
                status: st,
                action: Action::Nothing,
                requeue: None,
                notes,
            }
        }
        Some(RunState::Finished {
            started,
            finished,
            result,
        }) => {
            st.start_time.get_or_insert(Time(*started));
            st.completion_time = Some(Time(*finished));
            let secs = finished.duration_since(*started).as_secs_f64().max(0.0);
            st.duration = Some(format!("{secs:.1}s"));
            set(
                &mut st,
                Desired::new(types::PROGRESSING, false, Reason::Pending, "not running"),
            );
            match result {
                Ok(outcome) => {
                    succeeded(&mut st, outcome, &mut set, &mut notes);
                    if outcome.snapshot.is_none() {
                        deletes_held(sync, &mut st, outcome, now, &mut set, &mut notes);
                    }
                }
                Err(f) => {
                    st.phase = Phase::Failed;
                    set(
                        &mut st,
                        Desired::new(types::FAILED, true, f.reason, f.message.clone()),
                    );
                    set(
                        &mut st,
                        Desired::new(types::COMPLETE, false, f.reason, "the copy did not finish"),
                    );
                    set(
                        &mut st,
                        Desired::new(types::READY, false, f.reason, f.message.clone()),
                    );
                    if f.reason == Reason::Unreachable || f.reason == Reason::AuthFailed {
                        let t = if f.source_side == Some(true) {
                            types::SOURCE_REACHABLE
                        } else {
                            types::DESTINATION_REACHABLE
                        };
                        set(&mut st, Desired::new(t, false, f.reason, f.message.clone()));
                    }
                    notes.push(Note::warning(f.reason, f.message.clone()));
                }
            }
            Decision {
                status: st,
                action: Action::Forget,
                requeue: None,
                notes,
            }
        }
        None => match resolve() {
            Err(e) => {
                // Waiting for a Database or Secret, or a spec only a user can fix.
                let was_running = old.phase == Phase::Running;
                st.phase = Phase::Pending;
                set(
                    &mut st,
                    Desired::new(types::READY, false, e.reason(), e.to_string()),
                );
                set(
                    &mut st,
                    Desired::new(types::PROGRESSING, false, e.reason(), e.to_string()),
                );
                let changed = crate::api::conditions::find(&old.conditions, types::READY)
                    .is_none_or(|c| c.reason != e.reason().as_str() || c.message != e.to_string());
                if changed || was_running {
                    notes.push(Note::warning(e.reason(), e.to_string()));
                }
                let requeue = (!e.is_permanent()).then_some(WAITING_RECHECK);
                Decision {
                    status: st,
                    action: Action::Nothing,
                    requeue,
                    notes,
                }
            }
            Ok(mut opts) => {
                if let Some((token, deletes)) = &release {
                    if let Job::Copy { opts, .. } = &mut opts {
                        opts.guard.allowance = Allowance::UpTo(*deletes);
                    }
                    let dg = st.deletion_guard.get_or_insert_with(Default::default);
                    dg.last_released_token = Some(token.clone());
                    dg.last_released_time = Some(Time(now));
                    set(
                        &mut st,
                        Desired::new(
                            types::DELETION_GUARD,
                            false,
                            Reason::DeletesReleased,
                            format!(
                                "{deletes} held deletes released (token {token}); copying again"
                            ),
                        ),
                    );
                    notes.push(Note::normal(Reason::DeletesReleased, format!(
                            "{deletes} held deletes released with token {token}: copying again, deleting them"
                        )));
                }
                let restarted = old.phase == Phase::Running;
                st.phase = Phase::Running;
                st.runs = old.runs.saturating_add(1);
                st.start_time.get_or_insert(Time(now));
                let msg = if restarted {
                    format!(
                        "run {} started: the previous one was interrupted (operator restart)",
                        st.runs
                    )
                } else {
                    opts.describe()
                };
                set(
                    &mut st,
                    Desired::new(types::PROGRESSING, true, Reason::Running, msg.clone()),
                );
                set(
                    &mut st,
                    Desired::new(types::READY, false, Reason::Running, "copy in progress"),
                );
                notes.push(Note {
                    warning: restarted,
                    reason: if restarted {
                        Reason::Interrupted
                    } else {
                        Reason::Running
                    },
                    message: msg,
                });
                Decision {
                    status: st,
                    action: Action::Start(Box::new(opts)),
                    requeue: None,
                    notes,
                }
            }
        },
    }
}

/// A backup or restore finished: the snapshot in the status, Verified when it was read back
/// (backup) or the restored tree hashed to the manifest's root (restore).
fn snapshot_succeeded(
    st: &mut SynchronizationStatus,
    snap: &crate::runs::SnapshotOutcome,
    set: &mut impl FnMut(&mut SynchronizationStatus, Desired),
    notes: &mut Vec<Note>,
) {
    let s = &snap.status;
    st.phase = Phase::Succeeded;
    st.counters = Some(SyncCounters {
        source_nodes: s.nodes,
        created: if snap.restore { s.nodes } else { 0 },
        bytes_written: if snap.restore {
            s.data_bytes
        } else {
            s.size_bytes
        },
        attempts: 1,
        ..SyncCounters::default()
    });
    st.snapshot = Some(s.into());
    let done = if snap.restore {
        format!(
            "restored {} nodes of snapshot {} from {}",
            s.nodes, s.name, s.location
        )
    } else {
        format!(
            "snapshot {} of {} nodes ({} bytes compressed) written to {}{}{}",
            s.name,
            s.nodes,
            s.size_bytes,
            s.location,
            match &s.suspect_reason {
                Some(r) => format!("; suspect: {r}; kept, but retention does not count it"),
                None => String::new(),
            },
            if s.pruned.is_empty() {
                String::new()
            } else {
                format!("; {} old snapshots deleted", s.pruned.len())
            }
        )
    };
    for (t, ok, r, m) in [
        (types::COMPLETE, true, Reason::Succeeded, done.clone()),
        (types::FAILED, false, Reason::Succeeded, String::new()),
        (
            types::SOURCE_REACHABLE,
            true,
            Reason::Connected,
            String::new(),
        ),
        (
            types::DESTINATION_REACHABLE,
            true,
            Reason::Connected,
            String::new(),
        ),
        (types::READY, true, Reason::Succeeded, done.clone()),
    ] {
        set(st, Desired::new(t, ok, r, m));
    }
    let verified = if snap.restore {
        format!(
            "the restored tree's root hash equals the snapshot's ({})",
            s.root_hash
        )
    } else {
        format!(
            "the stored snapshot was read back and hashes to {}",
            s.root_hash
        )
    };
    set(
        st,
        if snap.verified {
            Desired::new(types::VERIFIED, true, Reason::Equal, verified)
        } else {
            Desired::new(
                types::VERIFIED,
                false,
                Reason::VerifySkipped,
                "verify is off",
            )
        },
    );
    // A suspect snapshot (an emptied source?) is worth a Warning Event.
    notes.push(Note {
        warning: s.suspect,
        reason: Reason::Succeeded,
        message: done,
    });
}

/// After a copy: the deletion guard's status and condition. Held deletes make the
/// Synchronization `Held`, not complete: Ready and Complete are False with the numbers and
/// the release command, and a Warning Event says the same.
fn deletes_held(
    sync: &Synchronization,
    st: &mut SynchronizationStatus,
    outcome: &RunOutcome,
    now: Timestamp,
    set: &mut impl FnMut(&mut SynchronizationStatus, Desired),
    notes: &mut Vec<Note>,
) {
    let held = outcome.summary.held.as_ref();
    let dg = deletion_guard::status(
        &sync.metadata,
        "synchronization",
        st.deletion_guard.as_ref(),
        held,
        now,
    );
    let shown = dg.held.clone();
    st.deletion_guard = Some(dg);
    let (Some(h), Some(shown)) = (held, shown) else {
        set(st, deletion_guard::condition(None));
        return;
    };
    let c = deletion_guard::condition(Some((h, &shown)));
    let (reason, message) = (c.reason, c.message.clone());
    set(st, c);
    if outcome.summary.dry_run {
        // A dry run only reports that the guard would trip.
        return;
    }
    st.phase = Phase::Held;
    // The held deletes explain the divergence: one Event says so, not a generic one.
    notes.retain(|n| n.reason != Reason::Diverged && n.reason != Reason::Succeeded);
    set(
        st,
        Desired::new(types::COMPLETE, false, reason, message.clone()),
    );
    set(
        st,
        Desired::new(types::READY, false, reason, message.clone()),
    );
    notes.push(Note::warning(reason, message));
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

fn succeeded(
    st: &mut SynchronizationStatus,
    outcome: &RunOutcome,
    set: &mut impl FnMut(&mut SynchronizationStatus, Desired),
    notes: &mut Vec<Note>,
) {
    if let Some(snap) = &outcome.snapshot {
        return snapshot_succeeded(st, snap, set, notes);
    }
    let s = &outcome.summary;
    st.phase = Phase::Succeeded;
    st.counters = Some(SyncCounters {
        source_nodes: s.source_nodes,
        created: s.created.total(),
        updated: s.updated.total(),
        deleted: s.deleted.total(),
        skipped: s.skipped.total(),
        bytes_written: s.bytes_written,
        write_ops: s.write_ops,
        attempts: s.attempts,
    });
    let done = format!(
        "{}{} source nodes: {} created, {} updated, {} deleted",
        if s.dry_run {
            "dry run, would change "
        } else {
            ""
        },
        s.source_nodes,
        s.created.total(),
        s.updated.total(),
        s.deleted.total()
    );
    set(
        st,
        Desired::new(types::COMPLETE, true, Reason::Succeeded, done.clone()),
    );
    set(
        st,
        Desired::new(types::FAILED, false, Reason::Succeeded, ""),
    );
    set(
        st,
        Desired::new(types::SOURCE_REACHABLE, true, Reason::Connected, ""),
    );
    set(
        st,
        Desired::new(types::DESTINATION_REACHABLE, true, Reason::Connected, ""),
    );
    match &outcome.report {
        Some(r) => {
            st.verification = Some(Verification {
                equal: r.equal,
                source_root_hash: r.source_root_hash.clone(),
                destination_root_hash: r.destination_root_hash.clone(),
                source_nodes: r.source_nodes,
                destination_nodes: r.destination_nodes,
                divergent_nodes: r.divergent_nodes,
                divergent_paths: r
                    .divergences
                    .iter()
                    .take(10)
                    .map(|d| {
                        format!(
                            "{} {}",
                            d.class.label(),
                            if d.path.is_empty() { "/" } else { &d.path }
                        )
                    })
                    .collect(),
                duration_seconds: r.duration_seconds,
            });
            if r.equal {
                let m = format!(
                    "source and destination root hashes are equal ({})",
                    r.source_root_hash
                );
                set(
                    st,
                    Desired::new(types::VERIFIED, true, Reason::Equal, m.clone()),
                );
                set(
                    st,
                    Desired::new(types::READY, true, Reason::Succeeded, done.clone()),
                );
                notes.push(Note::normal(Reason::Succeeded, format!("{done}; {m}")));
            } else {
                // The source may have changed during the copy; the next run converges it.
                let m = format!(
                    "{} nodes differ after the copy (the source may have changed meanwhile)",
                    r.divergent_nodes
                );
                set(
                    st,
                    Desired::new(types::VERIFIED, false, Reason::Diverged, m.clone()),
                );
                set(
                    st,
                    Desired::new(types::READY, false, Reason::Diverged, m.clone()),
                );
                notes.push(Note::warning(Reason::Diverged, m));
            }
        }
        None => {
            let why = if s.dry_run {
                "dry run: nothing was written"
            } else {
                "verify is off"
            };
            set(
                st,
                Desired::new(types::VERIFIED, false, Reason::VerifySkipped, why),
            );
            set(
                st,
                Desired::new(types::READY, true, Reason::Succeeded, done.clone()),
            );
            notes.push(Note::normal(Reason::Succeeded, done));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::automation::SynchronizationSpec;
    use crate::api::conditions::{find, is_true};
    use crate::engine::SyncSummary;
    use crate::runs::RunFailure;
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
            source_side: Some(false),
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
