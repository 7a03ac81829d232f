//! LiveSynchronization: a continuous sync with its verifier. Pure decisions here
//! ([`desired`], [`status_due`]); the kube glue lives in
//! [`crate::operator::live_synchronization`] and the standalone driver in [`crate::standalone`].
//!
//! One file per job: `start` (a stream starts, waits for what it needs, or is suspended),
//! `report` (what a running stream says, as conditions and counters), `guard` (the
//! deletion guard and its releases). Each writes into a [`Draft`](crate::controllers::draft::Draft) of the status.

mod guard;
mod report;
mod start;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{parse_duration, LiveSynchronization, LiveSynchronizationStatus};
use crate::continuous::{ContinuousOptions, Snapshot};
use crate::controllers::draft;
use crate::controllers::note::Note;
use crate::resolve::ResolveError;
pub use guard::released;

#[derive(Debug)]
pub enum LiveAction {
    Nothing,
    /// Start the stream (replacing a run of an older generation).
    Start(Box<ContinuousOptions>),
    /// Stop the run: it can no longer be right (its spec or endpoints are gone).
    Stop,
    /// A person released the held deletes with this token, covering this many; the driver
    /// hands it to the run and records it with [`released`].
    Release {
        token: String,
        deletes: u64,
    },
}

pub type LiveDecision = draft::Decision<LiveSynchronizationStatus, LiveAction>;
type Draft = draft::Draft<LiveSynchronizationStatus>;

/// A stream stopped by an error no retry could fix (refused credentials, say) is started
/// again this long after, so a fixed Secret is picked up without touching the resource.
pub const RESTART_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// How often a LiveSynchronization waiting for a Database or Secret looks again.
pub const WAITING_RECHECK: Duration = Duration::from_secs(60);

/// Counters and the lag change all the time: they are written at most this often, while a
/// change of phase, condition or verification is written at once.
pub const STATUS_REFRESH: Duration = Duration::from_secs(15);

/// The CRD's default maxLag, for a spec whose maxLag cannot be read.
const DEFAULT_MAX_LAG: Duration = Duration::from_secs(30);

/// The lag objective: the spec's maxLag (validated when the run started; the default if
/// unreadable) on top of its applyDelay, since a delayed copy is behind by the delay on purpose.
pub fn max_lag(ls: &LiveSynchronization) -> Duration {
    let delay = parse_duration("spec.applyDelay", &ls.spec.apply_delay).unwrap_or_default();
    parse_duration("spec.maxLag", &ls.spec.max_lag).unwrap_or(DEFAULT_MAX_LAG) + delay
}

/// Decides the next step from the spec and status, the engine settings (resolved only when a
/// run must start), the run of this process (its generation and snapshot) and `now`.
pub fn desired(
    ls: &LiveSynchronization,
    resolve: impl FnOnce() -> Result<ContinuousOptions, ResolveError>,
    run: Option<(Option<i64>, &Snapshot)>,
    now: Timestamp,
) -> LiveDecision {
    let old = ls.status.clone().unwrap_or_default();
    let mut d = Draft::new(ls.status.as_ref(), ls.metadata.generation, now);
    if ls.spec.suspend {
        let running = run.is_some();
        start::suspended(&mut d, &old);
        return d.decide(
            if running {
                LiveAction::Stop
            } else {
                LiveAction::Nothing
            },
            None,
        );
    }
    if let Some(snap) = current(run, ls.metadata.generation, now) {
        return running(d, ls, &old, snap);
    }
    match resolve() {
        Err(e) => {
            let requeue = start::waiting(&mut d, &old, &e);
            let action = if run.is_some() {
                LiveAction::Stop
            } else {
                LiveAction::Nothing
            };
            d.decide(action, requeue)
        }
        Ok(opts) => {
            start::start(&mut d, ls, run.map(|(_, snap)| snap));
            d.decide(LiveAction::Start(Box::new(opts)), None)
        }
    }
}

/// The run to report on: one of this generation, unless it failed long enough ago to be
/// started again (see [`RESTART_AFTER_FAILURE`]).
fn current(
    run: Option<(Option<i64>, &Snapshot)>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<&Snapshot> {
    let (g, snap) = run?;
    let restart_due = snap.failed.as_ref().is_some_and(|(at, _)| {
        now.duration_since(*at)
            .try_into()
            .is_ok_and(|d: Duration| d >= RESTART_AFTER_FAILURE)
    });
    (g == generation && !restart_due).then_some(snap)
}

/// A run of this generation: its report, the deletion guard and the delay in the status, and
/// Events for what changed.
fn running(
    mut d: Draft,
    ls: &LiveSynchronization,
    old: &LiveSynchronizationStatus,
    snap: &Snapshot,
) -> LiveDecision {
    report::report(&mut d, snap, max_lag(ls), ls.spec.verify_interval_enabled());
    report::too_large(&mut d, snap);
    let release = guard::guard(&mut d, ls, old, snap);
    report::delayed_apply(&mut d, snap);
    report::destination_divergence(&mut d, old, snap);
    report::transition_notes(old, &mut d);
    let requeue = snap.failed.as_ref().map(|_| RESTART_AFTER_FAILURE);
    let action = release.map_or(LiveAction::Nothing, |(token, deletes)| {
        LiveAction::Release { token, deletes }
    });
    d.decide(action, requeue)
}

/// A lag for people: 0s, 12ms, 1.5s, 2m5s.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        1..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", d.as_secs_f64()),
        _ => {
            let s = d.as_secs();
            if s < 3600 {
                format!("{}m{}s", s / 60, s % 60)
            } else {
                format!("{}h{}m", s / 3600, (s % 3600) / 60)
            }
        }
    }
}

/// Whether a computed status must be written now: at once when anything but the counters and
/// the lag changed, else (they did) once [`STATUS_REFRESH`] has passed since the last write.
pub fn status_due(
    old: Option<&LiveSynchronizationStatus>,
    new: &LiveSynchronizationStatus,
    since_last_write: Option<Duration>,
) -> bool {
    let Some(old) = old else { return true };
    if old == new {
        return false;
    }
    let steady = |s: &LiveSynchronizationStatus| LiveSynchronizationStatus {
        lag: None,
        lag_seconds: None,
        changes_applied: 0,
        last_heartbeat_time: None,
        delayed_changes: None,
        ..s.clone()
    };
    steady(old) != steady(new) || since_last_write.is_none_or(|d| d >= STATUS_REFRESH)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::automation::LivePhase;
    use crate::api::conditions::{find, is_true, types, ConditionStatus, Reason};
    use crate::continuous::{Reach, VerifyOutcome, VerifySummary};
    use crate::engine::live::LiveOptions;
    use crate::engine::live::LiveState;
    use crate::engine::SyncOptions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use verifier::ConnectOptions;

    fn ls(generation: i64) -> LiveSynchronization {
        let mut l: LiveSynchronization = serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "live", "namespace": "ns"},
            "spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                     "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/x"},
                     "maxLag": "5s"}
        }))
        .unwrap();
        l.metadata.generation = Some(generation);
        l
    }

    fn opts() -> ContinuousOptions {
        ContinuousOptions::new(LiveOptions::new(SyncOptions::new(
            ConnectOptions::new("127.0.0.1:1"),
            "/x",
            ConnectOptions::new("127.0.0.1:2"),
            "/x",
        )))
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn streaming(now: i64) -> Snapshot {
        let mut s = Snapshot::new(at(now - 100), None);
        s.state = Some(LiveState::Streaming);
        s.why = "streaming changes".into();
        s.caught_up = true;
        s.caught_up_at = Some(at(now));
        s.last_applied_lag = Some(Duration::from_millis(7));
        s.applied_total = 42;
        s.full_syncs = 1;
        s.last_full_sync = Some(at(now - 90));
        s.source = Reach::Connected;
        s.destination = Reach::Connected;
        s
    }

    fn cond<'a>(st: &'a LiveSynchronizationStatus, t: &str) -> (ConditionStatus, &'a str) {
        let c = find(&st.conditions, t).unwrap();
        (ConditionStatus::of(c), c.reason.as_str())
    }

    #[test]
    fn a_new_one_starts_and_says_so() {
        let d = desired(&ls(1), || Ok(opts()), None, at(1000));
        assert!(matches!(d.action, LiveAction::Start(_)));
        assert_eq!(d.status.phase, LivePhase::Syncing);
        assert_eq!(
            cond(&d.status, types::READY),
            (ConditionStatus::False, "Syncing")
        );
        assert_eq!(d.notes.len(), 1);
    }

    #[test]
    fn a_missing_database_waits_and_a_bad_spec_fails_naming_the_field() {
        let missing = ResolveError::DatabaseNotFound {
            namespace: "ns".into(),
            name: "a".into(),
        };
        let d = desired(&ls(1), || Err(missing), None, at(1000));
        assert!(matches!(d.action, LiveAction::Nothing));
        assert_eq!(d.status.phase, LivePhase::Pending);
        assert_eq!(d.requeue, Some(WAITING_RECHECK));
        assert_eq!(
            cond(&d.status, types::READY),
            (ConditionStatus::False, "DatabaseNotFound")
        );

        let bad = ResolveError::InvalidSpec {
            field: "spec.maxLag".into(),
            message: "\"soon\" is not a duration".into(),
        };
        let d = desired(&ls(1), || Err(bad), None, at(1000));
        assert_eq!(d.status.phase, LivePhase::Failed);
        assert_eq!(d.requeue, None);
        let c = find(&d.status.conditions, types::READY).unwrap();
        assert!(c.message.starts_with("spec.maxLag:"), "{}", c.message);
    }

    #[test]
    fn a_streaming_run_caught_up_is_ready_and_a_changed_spec_restarts_it() {
        let snap = streaming(1000);
        let d = desired(
            &ls(1),
            || panic!("not resolved while running"),
            Some((Some(1), &snap)),
            at(1000),
        );
        assert!(matches!(d.action, LiveAction::Nothing));
        let st = &d.status;
        assert_eq!(st.phase, LivePhase::Streaming);
        for t in [
            types::READY,
            types::STREAMING,
            types::CAUGHT_UP,
            types::SOURCE_REACHABLE,
            types::DESTINATION_REACHABLE,
        ] {
            assert!(is_true(&st.conditions, t), "{t}: {:?}", st.conditions);
        }
        assert_eq!(
            cond(st, types::IN_SYNC),
            (ConditionStatus::Unknown, "NotVerified")
        );
        assert_eq!(st.lag.as_deref(), Some("0s"));
        assert_eq!(st.changes_applied, 42);

        let d = desired(&ls(2), || Ok(opts()), Some((Some(1), &snap)), at(1000));
        assert!(matches!(d.action, LiveAction::Start(_)));
    }

    #[test]
    fn lag_above_the_objective_and_an_unreachable_destination_are_not_ready() {
        let mut snap = streaming(1000);
        snap.caught_up = false;
        snap.last_applied_lag = Some(Duration::from_secs(9));
        let d = desired(&ls(1), || unreachable!(), Some((Some(1), &snap)), at(1000));
        assert_eq!(
            cond(&d.status, types::CAUGHT_UP),
            (ConditionStatus::False, "LagAboveObjective")
        );
        assert_eq!(
            cond(&d.status, types::READY),
            (ConditionStatus::False, "LagAboveObjective")
        );
        assert_eq!(d.status.lag.as_deref(), Some("9.0s"));

        snap.state = Some(LiveState::Retrying);
        snap.destination = Reach::Unreachable("connection refused".into());
        let d = desired(&ls(1), || unreachable!(), Some((Some(1), &snap)), at(1100));
        assert_eq!(d.status.phase, LivePhase::Retrying);
        assert_eq!(
            cond(&d.status, types::DESTINATION_REACHABLE),
            (ConditionStatus::False, "Unreachable")
        );
        assert_eq!(
            cond(&d.status, types::READY),
            (ConditionStatus::False, "Unreachable")
        );
        assert_eq!(
            cond(&d.status, types::CAUGHT_UP),
            (ConditionStatus::False, "Behind")
        );
        // 100 s since it was last caught up.
        assert_eq!(d.status.lag.as_deref(), Some("1m40s"));
        assert!(d
            .notes
            .iter()
            .any(|n| n.warning && n.reason == Reason::Unreachable));
    }

    #[test]
    fn divergence_is_reported_with_paths_and_last_good_sync_only_moves_on_equal() {
        let mut snap = streaming(1000);
        let summary = VerifySummary {
            in_sync: true,
            confirmed: vec![],
            confirmed_count: 0,
            undecided: 0,
            suspected: 3,
            source_nodes: 10,
            destination_nodes: 10,
            source_root_hash: "ab".repeat(32),
            destination_root_hash: "ab".repeat(32),
            duration_seconds: 0.1,
            source_max_mzxid: 0,
        };
        snap.last_verify = Some(VerifyOutcome {
            at: at(990),
            result: Ok(summary.clone()),
        });
        snap.last_good_sync = Some(at(990));
        let d = desired(&ls(1), || unreachable!(), Some((Some(1), &snap)), at(1000));
        assert_eq!(
            cond(&d.status, types::IN_SYNC),
            (ConditionStatus::True, "Equal")
        );
        assert_eq!(d.status.last_good_sync_time, Some(Time(at(990))));
        assert_eq!(d.status.divergent_nodes, Some(0));

        let mut l = ls(1);
        l.status = Some(d.status);
        snap.last_verify = Some(VerifyOutcome {
            at: at(1100),
            result: Ok(VerifySummary {
                in_sync: false,
                confirmed: vec!["/b".into()],
                confirmed_count: 1,
                destination_root_hash: "cd".repeat(32),
                ..summary
            }),
        });
        let d = desired(&l, || unreachable!(), Some((Some(1), &snap)), at(1100));
        assert_eq!(
            cond(&d.status, types::IN_SYNC),
            (ConditionStatus::False, "Diverged")
        );
        assert_eq!(
            cond(&d.status, types::READY),
            (ConditionStatus::False, "Diverged")
        );
        assert_eq!(d.status.divergent_nodes, Some(1));
        assert_eq!(d.status.divergent_paths, vec!["/b".to_string()]);
        assert_eq!(d.status.last_good_sync_time, Some(Time(at(990))));
        assert_eq!(d.status.last_verified_time, Some(Time(at(1100))));
        assert!(d
            .notes
            .iter()
            .any(|n| n.warning && n.reason == Reason::Diverged));
    }

    #[test]
    fn what_a_compared_full_sync_found_on_the_destination_is_in_status_and_one_event() {
        use crate::engine::live::DestinationDiff;
        use verifier::{Divergence, DivergenceClass};
        let mut snap = streaming(1000);
        let diff = DestinationDiff {
            source_nodes: 202,
            destination_nodes: 351,
            only_on_destination: 150,
            changed: 1,
            only_on_source: 1,
            paths: vec![
                Divergence {
                    path: "/config".into(),
                    class: DivergenceClass::DataDiffers,
                },
                Divergence {
                    path: "/split-000".into(),
                    class: DivergenceClass::Extra,
                },
            ],
        };
        snap.destination_diff = Some((at(990), diff));
        let d = desired(
            &ls(1),
            || panic!("not resolved while running"),
            Some((Some(1), &snap)),
            at(1000),
        );
        let dd = d.status.destination_divergence.as_ref().unwrap();
        assert_eq!(
            (dd.only_on_destination, dd.changed, dd.only_on_source),
            (150, 1, 1)
        );
        assert_eq!(dd.time, Time(at(990)));
        assert_eq!(
            dd.paths,
            vec!["/config (data differs)", "/split-000 (extra)"]
        );
        let said: Vec<_> = d
            .notes
            .iter()
            .filter(|n| n.reason == Reason::DestinationDiverged)
            .collect();
        assert_eq!(said.len(), 1, "{:?}", d.notes);
        assert!(said[0].warning);
        assert!(
            said[0]
                .message
                .contains("150 nodes the source does not have and 1 that differ"),
            "{}",
            said[0].message
        );
        // Said once: with that status stored, the next reconcile says nothing more.
        let mut l = ls(1);
        l.status = Some(d.status.clone());
        let d = desired(
            &l,
            || panic!("not resolved while running"),
            Some((Some(1), &snap)),
            at(1001),
        );
        assert!(d
            .notes
            .iter()
            .all(|n| n.reason != Reason::DestinationDiverged));
        assert!(d.status.destination_divergence.is_some());
    }

    #[test]
    fn a_failed_run_reports_and_restarts_after_a_minute() {
        let mut snap = streaming(1000);
        snap.failed = Some((at(1000), "source: not authorized".into()));
        let d = desired(&ls(1), || unreachable!(), Some((Some(1), &snap)), at(1010));
        assert_eq!(d.status.phase, LivePhase::Failed);
        assert_eq!(
            cond(&d.status, types::READY),
            (ConditionStatus::False, "CopyFailed")
        );
        assert_eq!(d.requeue, Some(RESTART_AFTER_FAILURE));
        let d = desired(&ls(1), || Ok(opts()), Some((Some(1), &snap)), at(1060));
        assert!(matches!(d.action, LiveAction::Start(_)));
    }

    #[test]
    fn counters_alone_are_written_at_most_every_refresh() {
        let snap = streaming(1000);
        let a = desired(&ls(1), || unreachable!(), Some((Some(1), &snap)), at(1000)).status;
        let mut busier = snap.clone();
        busier.applied_total += 10;
        let b = desired(
            &ls(1),
            || unreachable!(),
            Some((Some(1), &busier)),
            at(1000),
        )
        .status;
        assert!(status_due(None, &a, None));
        assert!(!status_due(Some(&a), &a, Some(Duration::from_secs(60))));
        assert!(!status_due(Some(&a), &b, Some(Duration::from_secs(1))));
        assert!(status_due(Some(&a), &b, Some(STATUS_REFRESH)));
        let mut down = snap;
        down.source = Reach::Unreachable("connection refused".into());
        let c = desired(&ls(1), || unreachable!(), Some((Some(1), &down)), at(1000)).status;
        assert!(status_due(Some(&a), &c, Some(Duration::from_secs(1))));
    }

    #[test]
    fn lags_read_like_people_write_them() {
        assert_eq!(human(Duration::ZERO), "0s");
        assert_eq!(human(Duration::from_millis(12)), "12ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(125)), "2m5s");
        assert_eq!(human(Duration::from_secs(7300)), "2h1m");
    }
}
