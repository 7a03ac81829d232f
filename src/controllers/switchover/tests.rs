use std::time::Duration;

use super::*;
use crate::api::automation::SwitchoverStep;
use crate::api::conditions::{find, is_true, ConditionStatus};
use crate::engine::SyncOptions;
use crate::switchover::{fence, DataLoss, Failure, FenceMode, LossWindow, Mode, Outcome, Step};
use verifier::ConnectOptions;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn sw(name: &str, spec: serde_json::Value) -> Switchover {
    let mut s: Switchover = serde_json::from_value(serde_json::json!({
        "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Switchover",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    }))
    .unwrap();
    s.metadata.generation = Some(1);
    s
}

fn planned() -> Switchover {
    sw(
        "to-dr",
        serde_json::json!({"liveSynchronizationName": "live", "reverse": true}),
    )
}

fn live(suspend: bool) -> LiveSynchronization {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
        "metadata": {"name": "live", "namespace": "ns", "uid": "uid-live"},
        "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                 "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/x"},
                 "suspend": suspend}
    }))
    .unwrap()
}

fn opts() -> SwitchoverOptions {
    SwitchoverOptions {
        sync: SyncOptions::new(
            ConnectOptions::new("127.0.0.1:1"),
            "/x",
            ConnectOptions::new("127.0.0.1:2"),
            "/x",
        ),
        mode: Mode::Planned,
        fence: FenceMode::None,
        reverse: true,
        timeout: Duration::from_secs(120),
        holder: "Switchover ns/to-dr".into(),
    }
}

fn decide(s: &Switchover, seen: Observed<'_>) -> SwitchoverDecision {
    desired(s, seen, |_| Ok(opts()), at(1000))
}

fn reason<'a>(st: &'a SwitchoverStatus, t: &str) -> (&'a str, &'a str) {
    let c = find(&st.conditions, t).unwrap();
    (c.status.as_str(), c.reason.as_str())
}

/// Fails the test unless the decision refused with `why`, changing nothing.
fn refused(d: &SwitchoverDecision, why: Reason) -> String {
    assert_eq!(d.status.phase, SwitchoverPhase::Failed);
    assert_eq!(reason(&d.status, types::FAILED), ("True", why.as_str()));
    assert_eq!(reason(&d.status, types::COMPLETE), ("False", why.as_str()));
    assert_eq!(d.notes.len(), 1);
    assert!(d.notes[0].warning);
    match &d.action {
        SwitchoverAction::Fail { reason, message } => {
            assert_eq!(*reason, why);
            message.clone()
        }
        a => panic!("expected Fail, got {a:?}"),
    }
}

#[test]
fn a_switchover_of_a_streaming_live_synchronization_starts() {
    let l = live(false);
    let d = decide(
        &planned(),
        Observed {
            live: Some(&l),
            ..Observed::default()
        },
    );
    assert!(matches!(d.action, SwitchoverAction::Start(_)));
    assert_eq!(d.status.phase, SwitchoverPhase::Running);
    assert_eq!(d.status.start_time, Some(Time(at(1000))));
    assert_eq!(d.status.old_primary.as_deref(), Some("a"));
    assert_eq!(d.status.new_primary.as_deref(), Some("b"));
    assert_eq!(reason(&d.status, types::COMPLETE), ("False", "Running"));
    assert_eq!(d.requeue, Some(POLL));
    assert!(d.notes.is_empty());
}

#[test]
fn bad_input_fails_and_names_what_is_wrong() {
    let s = planned();
    let m = refused(
        &decide(&s, Observed::default()),
        Reason::LiveSynchronizationNotFound,
    );
    assert!(
        m.contains(
            "spec.liveSynchronizationName: LiveSynchronization live not found in namespace ns"
        ),
        "{m}"
    );

    let l = live(true);
    let m = refused(
        &decide(
            &s,
            Observed {
                live: Some(&l),
                ..Observed::default()
            },
        ),
        Reason::Suspended,
    );
    assert!(
        m.contains("is suspended") && m.contains("no stream to switch over"),
        "{m}"
    );
    assert!(m.contains("mode: planned needs it streaming"), "{m}");

    let l = live(false);
    let seen = Observed {
        live: Some(&l),
        blocking: Some("earlier"),
        run: None,
    };
    let m = refused(&decide(&s, seen), Reason::SwitchoverRunning);
    assert!(m.contains("Switchover earlier is already under way"), "{m}");

    let bad = sw(
        "t",
        serde_json::json!({"liveSynchronizationName": "live", "timeout": "soon"}),
    );
    let m = refused(
        &decide(
            &bad,
            Observed {
                live: Some(&l),
                ..Observed::default()
            },
        ),
        Reason::InvalidSpec,
    );
    assert!(m.starts_with("spec.timeout:"), "{m}");
    let zero = sw(
        "t",
        serde_json::json!({"liveSynchronizationName": "live", "timeout": "0s"}),
    );
    let m = refused(
        &decide(
            &zero,
            Observed {
                live: Some(&l),
                ..Observed::default()
            },
        ),
        Reason::InvalidSpec,
    );
    assert!(m.starts_with("spec.timeout: must be above 0s"), "{m}");

    // The Databases do not resolve: the resolver's reason and message.
    let d = desired(
        &s,
        Observed {
            live: Some(&l),
            ..Observed::default()
        },
        |_| {
            Err(ResolveError::DatabaseNotFound {
                namespace: "ns".into(),
                name: "a".into(),
            })
        },
        at(1000),
    );
    let m = refused(&d, Reason::DatabaseNotFound);
    assert_eq!(m, "Database a not found in namespace ns");
}

#[test]
fn a_finished_switchover_is_left_alone() {
    let mut s = planned();
    s.status = Some(SwitchoverStatus {
        phase: SwitchoverPhase::Complete,
        ..SwitchoverStatus::default()
    });
    let d = decide(&s, Observed::default());
    assert!(matches!(d.action, SwitchoverAction::Nothing));
    assert_eq!(d.requeue, None);
    assert!(d.notes.is_empty());
}

fn step(name: StepName, state: StepState) -> Step {
    Step {
        name,
        state,
        started: at(1000),
        finished: (state != StepState::Running).then_some(at(1001)),
        message: format!("{name} message"),
    }
}

fn stored_step(name: StepName, state: StepState) -> SwitchoverStep {
    super::report::step_status(&step(name, state))
}

#[test]
fn a_running_switchover_without_its_run_is_interrupted_and_says_what_it_left() {
    let mut s = planned();
    s.status = Some(SwitchoverStatus {
        phase: SwitchoverPhase::Running,
        steps: vec![
            stored_step(StepName::Preflight, StepState::Succeeded),
            stored_step(StepName::Fence, StepState::Succeeded),
            stored_step(StepName::CatchUp, StepState::Succeeded),
            stored_step(StepName::StopStream, StepState::Succeeded),
            stored_step(StepName::Verify, StepState::Running),
        ],
        ..SwitchoverStatus::default()
    });
    let l = live(true);
    let d = decide(
        &s,
        Observed {
            live: Some(&l),
            ..Observed::default()
        },
    );
    let m = refused(&d, Reason::Interrupted);
    assert!(m.contains("during step Verify"), "{m}");
    assert!(m.contains(&fence::record_path("/x")), "{m}");
    assert!(
        m.contains("resiliency-operator unfence --servers <servers of Database a> --root-path /x"),
        "{m}"
    );
    assert!(m.contains("live stays suspended"), "{m}");
    let last = d.status.steps.last().unwrap();
    assert_eq!(
        (last.state.as_str(), last.message.as_str()),
        ("Failed", "interrupted")
    );

    // Rolled back: nothing is left behind.
    let mut s = s.clone();
    let st = s.status.as_mut().unwrap();
    st.steps
        .push(stored_step(StepName::Rollback, StepState::Succeeded));
    st.steps[4] = stored_step(StepName::Verify, StepState::Failed);
    let m = refused(
        &decide(
            &s,
            Observed {
                live: Some(&l),
                ..Observed::default()
            },
        ),
        Reason::Interrupted,
    );
    assert!(m.contains("during step Rollback"), "{m}");
    assert!(!m.contains("fence") && !m.contains("suspended"), "{m}");
}

fn report(steps: Vec<Step>, outcome: Option<Result<Outcome, Failure>>) -> Report {
    Report {
        mode: Mode::Planned,
        started: at(1000),
        finished: outcome.as_ref().map(|_| at(1005)),
        steps,
        outcome,
    }
}

#[test]
fn a_run_under_way_shows_its_steps() {
    let r = report(
        vec![
            step(StepName::Preflight, StepState::Succeeded),
            step(StepName::Fence, StepState::Skipped),
            step(StepName::CatchUp, StepState::Running),
        ],
        None,
    );
    let l = live(false);
    let d = decide(
        &planned(),
        Observed {
            live: Some(&l),
            run: Some(&r),
            blocking: None,
        },
    );
    assert!(matches!(d.action, SwitchoverAction::Nothing));
    assert_eq!(d.requeue, Some(POLL));
    let st = &d.status;
    assert_eq!(st.phase, SwitchoverPhase::Running);
    assert_eq!(st.steps.len(), 3);
    assert_eq!(st.steps[2].name, "CatchUp");
    assert_eq!(st.steps[2].state, "Running");
    assert_eq!(st.steps[2].end_time, None);
    assert_eq!(st.steps[0].end_time, Some(Time(at(1001))));
    assert!(find(&st.conditions, types::COMPLETE)
        .unwrap()
        .message
        .contains("CatchUp"));
    assert!(st.data_loss.is_none() && st.rto.is_none());
    // Events for the ended step only; skipped ones are in the status alone.
    let notes = run_notes(&r);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, 0);
}

fn verification(equal: bool) -> crate::switchover::Verification {
    crate::switchover::Verification {
        equal,
        source_root_hash: "aa".into(),
        destination_root_hash: "aa".into(),
        source_nodes: 201,
        destination_nodes: 201,
        divergent_nodes: 0,
        divergent_paths: vec![],
        source_max_mzxid: 0x1234,
    }
}

#[test]
fn a_planned_switchover_reports_zero_loss_only_as_proven() {
    let outcome = Outcome {
        rto: Duration::from_millis(4200),
        data_loss: DataLoss::None {
            source_zxid: 0x1234,
        },
        verification: Some(verification(true)),
        fence: None,
        lifted: None,
        reverse: Some("live-reverse".into()),
        reverse_error: None,
    };
    let r = report(
        vec![
            step(StepName::Verify, StepState::Succeeded),
            step(StepName::Promote, StepState::Succeeded),
        ],
        Some(Ok(outcome)),
    );
    let l = live(true);
    let d = decide(
        &planned(),
        Observed {
            live: Some(&l),
            run: Some(&r),
            blocking: None,
        },
    );
    let st = &d.status;
    assert_eq!(st.phase, SwitchoverPhase::Complete);
    assert!(is_true(&st.conditions, types::COMPLETE));
    assert_eq!(reason(st, types::COMPLETE).1, "Promoted");
    assert_eq!(
        ConditionStatus::of(find(&st.conditions, types::FAILED).unwrap()),
        ConditionStatus::False
    );
    assert_eq!(st.rto.as_deref(), Some("4.2s"));
    assert_eq!(st.rto_seconds, Some(4.2));
    let loss = st.data_loss.as_ref().unwrap();
    assert!(loss.proven);
    assert_eq!(loss.changes_lost, Some(0));
    assert_eq!(loss.summary, "0 (verified)");
    assert_eq!(loss.source_zxid.as_deref(), Some("0x1234"));
    assert_eq!(st.verification.as_ref().unwrap().result, "Equal");
    assert_eq!(
        st.reverse_live_synchronization_name.as_deref(),
        Some("live-reverse")
    );
    assert_eq!(st.completion_time, Some(Time(at(1005))));
    // Still polled until the stored status shows the end.
    assert_eq!(d.requeue, Some(POLL));
    let notes = run_notes(&r);
    let reasons: Vec<_> = notes.iter().map(|(k, n)| (*k, n.reason)).collect();
    assert_eq!(
        reasons,
        vec![
            (0, Reason::Equal),
            (1, Reason::Promoted),
            (report::END, Reason::Promoted)
        ]
    );
}

#[test]
fn a_reverse_stream_that_did_not_start_leaves_the_switchover_complete_and_says_so() {
    let outcome = Outcome {
        rto: Duration::from_secs(2),
        data_loss: DataLoss::None { source_zxid: 0x9 },
        verification: Some(verification(true)),
        fence: Some(fence::Fenced {
            nodes: 201,
            record: "/.resiliency-operator/fences/ab".into(),
        }),
        lifted: None,
        reverse: None,
        reverse_error: Some("the reverse stream did not start: forbidden".into()),
    };
    let r = report(
        vec![
            step(StepName::Promote, StepState::Succeeded),
            step(StepName::Reverse, StepState::Failed),
        ],
        Some(Ok(outcome)),
    );
    let l = live(true);
    let d = decide(
        &planned(),
        Observed {
            live: Some(&l),
            run: Some(&r),
            blocking: None,
        },
    );
    let st = &d.status;
    // Promoted is never undone: Complete, with the reverse stream's failure in the message.
    assert_eq!(st.phase, SwitchoverPhase::Complete);
    let m = &find(&st.conditions, types::COMPLETE).unwrap().message;
    assert!(m.contains("did not start: forbidden"), "{m}");
    assert!(st.reverse_live_synchronization_name.is_none());
    let f = st.fence.as_ref().unwrap();
    assert_eq!((f.nodes, f.lifted), (201, false), "the fence stays");
    let notes: Vec<_> = run_notes(&r)
        .into_iter()
        .map(|(k, n)| (k, n.reason, n.warning))
        .collect();
    assert_eq!(
        notes,
        vec![
            (0, Reason::Promoted, false),
            (1, Reason::ReverseNotStarted, true),
            (report::END, Reason::ReverseNotStarted, true)
        ]
    );
}

#[test]
fn an_unplanned_failover_reports_the_window_never_a_count_of_changes() {
    let w = LossWindow {
        verified_zxid: Some(0x10),
        window: Some(Duration::from_secs(12)),
        divergent_nodes: Some(3),
        ..LossWindow::default()
    };
    let loss = report::data_loss(&DataLoss::Window(w));
    assert!(!loss.proven);
    assert_eq!(loss.changes_lost, None);
    assert_eq!(loss.summary, "up to 12.0s (unverified); 3 nodes differ");
    assert_eq!(loss.window_seconds, Some(12.0));
    assert_eq!(loss.verified_zxid.as_deref(), Some("0x10"));
    assert_eq!(loss.divergent_nodes, Some(3));
    let loss = report::data_loss(&DataLoss::Window(LossWindow::default()));
    assert_eq!(loss.summary, "unknown (unverified)");
    assert!(!loss.proven && loss.changes_lost.is_none());
}

#[test]
fn a_failed_run_is_failed_with_its_reason_and_says_whether_it_rolled_back() {
    let failure = Failure {
        step: StepName::CatchUp,
        reason: Reason::CatchUpTimeout,
        message: "the stream did not catch up".into(),
        rolled_back: true,
        fence: Some(fence::Fenced {
            nodes: 7,
            record: "/.resiliency-operator/fences/ab".into(),
        }),
        fence_lifted: true,
    };
    let r = report(
        vec![
            step(StepName::CatchUp, StepState::Failed),
            step(StepName::Rollback, StepState::Succeeded),
        ],
        Some(Err(failure)),
    );
    let l = live(false);
    let d = decide(
        &planned(),
        Observed {
            live: Some(&l),
            run: Some(&r),
            blocking: None,
        },
    );
    let st = &d.status;
    assert_eq!(st.phase, SwitchoverPhase::Failed);
    assert_eq!(reason(st, types::FAILED), ("True", "CatchUpTimeout"));
    let m = &find(&st.conditions, types::FAILED).unwrap().message;
    assert!(
        m.starts_with("CatchUp failed: the stream did not catch up. Rolled back"),
        "{m}"
    );
    assert!(st.data_loss.is_none());
    let f = st.fence.as_ref().unwrap();
    assert_eq!(
        (f.nodes, f.lifted),
        (7, true),
        "the fence the rollback lifted"
    );
    let notes = run_notes(&r);
    let reasons: Vec<_> = notes
        .iter()
        .map(|(k, n)| (*k, n.reason, n.warning))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, Reason::CatchUpTimeout, true),
            (1, Reason::RolledBack, false),
            (report::END, Reason::CatchUpTimeout, true)
        ]
    );
}

fn with_status(mut s: Switchover, phase: SwitchoverPhase, created: &str) -> Switchover {
    s.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
    s.status = Some(SwitchoverStatus {
        phase,
        ..SwitchoverStatus::default()
    });
    s
}

#[test]
fn the_oldest_waiting_switchover_goes_first_and_a_running_one_always_does() {
    let spec = serde_json::json!({"liveSynchronizationName": "live"});
    let me = with_status(
        sw("b", spec.clone()),
        SwitchoverPhase::Pending,
        "2026-01-01T00:00:10Z",
    );
    let older = with_status(
        sw("c", spec.clone()),
        SwitchoverPhase::Pending,
        "2026-01-01T00:00:05Z",
    );
    let younger = with_status(
        sw("a", spec.clone()),
        SwitchoverPhase::Pending,
        "2026-01-01T00:00:20Z",
    );
    let done = with_status(
        sw("d", spec.clone()),
        SwitchoverPhase::Failed,
        "2026-01-01T00:00:01Z",
    );
    let other_ls = with_status(
        sw("e", serde_json::json!({"liveSynchronizationName": "other"})),
        SwitchoverPhase::Running,
        "2026-01-01T00:00:01Z",
    );
    let none = |_: &str| false;
    assert_eq!(blocking(&me, [&me, &younger, &done, &other_ls], none), None);
    assert_eq!(
        blocking(&me, [&me, &older, &younger], none).as_deref(),
        Some("c")
    );
    // Same second: by name.
    let twin = with_status(
        sw("a", spec.clone()),
        SwitchoverPhase::Pending,
        "2026-01-01T00:00:10Z",
    );
    assert_eq!(blocking(&me, [&twin], none).as_deref(), Some("a"));
    assert_eq!(blocking(&twin, [&me], none), None);
    // One that runs goes first whatever its age: here, or by its status.
    assert_eq!(
        blocking(&me, [&younger], |uid| uid == "uid-a").as_deref(),
        Some("a")
    );
    let running = with_status(
        sw("z", spec),
        SwitchoverPhase::Running,
        "2026-01-01T00:00:30Z",
    );
    assert_eq!(blocking(&me, [&running], none).as_deref(), Some("z"));
}

#[test]
fn a_failback_resumes_the_original_the_reverse_stream_copies_back() {
    let forward = live(false);
    let s = planned();
    assert_eq!(reverse::reverse_name(&s, &forward), "live-reverse");
    // The reverse stream names its original: switching it over resumes that one.
    let mut back = live(false);
    back.metadata.name = Some("live-reverse".into());
    let (_, annotations) = reverse::reverse_marks("live", "to-dr");
    back.metadata.annotations = Some(annotations);
    let f = sw(
        "back",
        serde_json::json!({"liveSynchronizationName": "live-reverse", "reverse": true}),
    );
    assert_eq!(reverse::reverse_name(&f, &back), "live");
    // spec.reverseName wins.
    let f = sw(
        "back",
        serde_json::json!({"liveSynchronizationName": "live-reverse", "reverse": true, "reverseName": "elsewhere"}),
    );
    assert_eq!(reverse::reverse_name(&f, &back), "elsewhere");
}
