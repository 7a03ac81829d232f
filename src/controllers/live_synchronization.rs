//! LiveSynchronization: a continuous sync with its verifier. Pure decisions here
//! ([`desired`], [`status_due`]); the kube glue lives in
//! [`crate::operator::live_synchronization`] and the standalone driver in [`crate::standalone`].

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{
    parse_duration, LivePhase, LiveSynchronization, LiveSynchronizationStatus,
};
use crate::api::conditions::{find, set_condition, types, ConditionStatus, Desired, Reason};
use crate::continuous::{ContinuousOptions, Snapshot};
use crate::controllers::deletion_guard;
use crate::controllers::note::Note;
use crate::engine::live::LiveState;
use crate::resolve::ResolveError;

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

#[derive(Debug)]
pub struct LiveDecision {
    pub status: LiveSynchronizationStatus,
    pub action: LiveAction,
    /// Look again after this long even without a change (None: the driver polls the run).
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

/// A stream stopped by an error no retry could fix (refused credentials, say) is started
/// again this long after, so a fixed Secret is picked up without touching the resource.
pub const RESTART_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// How often a LiveSynchronization waiting for a Database or Secret looks again.
pub const WAITING_RECHECK: Duration = Duration::from_secs(60);

/// Counters and the lag change all the time: they are written at most this often, while a
/// change of phase, condition or verification is written at once.
pub const STATUS_REFRESH: Duration = Duration::from_secs(15);

/// The lag objective: the spec's maxLag (validated when the run started; 30 s if unreadable)
/// on top of its applyDelay, since a delayed copy is behind by the delay on purpose.
pub fn max_lag(ls: &LiveSynchronization) -> Duration {
    let delay = parse_duration("spec.applyDelay", &ls.spec.apply_delay).unwrap_or_default();
    parse_duration("spec.maxLag", &ls.spec.max_lag).unwrap_or(Duration::from_secs(30)) + delay
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
    let generation = ls.metadata.generation;
    let mut st = old.clone();
    st.observed_generation = generation;
    let mut notes = Vec::new();

    if ls.spec.suspend {
        return suspended(&old, st, run.is_some(), generation, now);
    }
    let current = run.filter(|(g, snap)| {
        *g == generation
            && !snap.failed.as_ref().is_some_and(|(at, _)| {
                now.duration_since(*at)
                    .try_into()
                    .is_ok_and(|d: Duration| d >= RESTART_AFTER_FAILURE)
            })
    });
    if let Some((_, snap)) = current {
        report(
            &mut st,
            snap,
            max_lag(ls),
            ls.spec.verify_interval_enabled(),
            generation,
            now,
        );
        let release = guard(ls, &old, &mut st, snap, now);
        delayed_apply(&mut st, snap, generation, now);
        transition_notes(&old, &st, &mut notes);
        let requeue = snap.failed.as_ref().map(|_| RESTART_AFTER_FAILURE);
        return LiveDecision {
            status: st,
            action: release.map_or(LiveAction::Nothing, |(token, deletes)| {
                LiveAction::Release { token, deletes }
            }),
            requeue,
            notes,
        };
    }
    let restarting = run.is_some();
    match resolve() {
        Err(e) => {
            let reason = e.reason();
            let message = e.to_string();
            st.phase = if e.is_permanent() {
                LivePhase::Failed
            } else {
                LivePhase::Pending
            };
            let set = |st: &mut LiveSynchronizationStatus, d| {
                set_condition(&mut st.conditions, d, generation, now)
            };
            set(
                &mut st,
                Desired::new(types::READY, false, reason, message.clone()),
            );
            set(
                &mut st,
                Desired::new(types::STREAMING, false, reason, "not started"),
            );
            if find(&old.conditions, types::READY).map(|c| c.reason.as_str())
                != Some(reason.as_str())
            {
                notes.push(Note::warning(reason, message));
            }
            LiveDecision {
                status: st,
                action: if restarting {
                    LiveAction::Stop
                } else {
                    LiveAction::Nothing
                },
                requeue: (!e.is_permanent()).then_some(WAITING_RECHECK),
                notes,
            }
        }
        Ok(opts) => {
            st.phase = LivePhase::Syncing;
            st.start_time = Some(Time(now));
            let why = match run {
                Some((_, s)) if s.failed.is_some() => "restarting after a failure",
                Some(_) => "the spec changed: restarting with a full sync",
                None => "starting: a full sync, then streaming",
            };
            set_condition(
                &mut st.conditions,
                Desired::new(types::READY, false, Reason::Syncing, why),
                generation,
                now,
            );
            set_condition(
                &mut st.conditions,
                Desired::new(types::STREAMING, false, Reason::Syncing, why),
                generation,
                now,
            );
            notes.push(Note::normal(
                Reason::Running,
                format!(
                    "{why} from {} to {}",
                    ls.spec.config.source_name, ls.spec.config.destination_name
                ),
            ));
            LiveDecision {
                status: st,
                action: LiveAction::Start(Box::new(opts)),
                requeue: None,
                notes,
            }
        }
    }
}

/// The deletion guard in the status: what the run holds, the `DeletionGuard` condition, and
/// Ready False while deletes wait for a person. Returns the release the annotation asks for.
fn guard(
    ls: &LiveSynchronization,
    old: &LiveSynchronizationStatus,
    st: &mut LiveSynchronizationStatus,
    snap: &Snapshot,
    now: Timestamp,
) -> Option<(String, u64)> {
    let held = snap.held.as_ref().map(|(_, h)| h);
    if held.is_none() && old.deletion_guard.is_none() {
        set_condition(
            &mut st.conditions,
            deletion_guard::condition(None),
            ls.metadata.generation,
            now,
        );
        return None;
    }
    let dg = deletion_guard::status(
        &ls.metadata,
        "livesynchronization",
        old.deletion_guard.as_ref(),
        held,
        now,
    );
    let shown = dg.held.clone();
    st.deletion_guard = Some(dg);
    let c = deletion_guard::condition(held.zip(shown.as_ref()));
    if held.is_some() && c.status == ConditionStatus::True {
        let ready = Desired::new(types::READY, false, c.reason, c.message.clone());
        set_condition(&mut st.conditions, ready, ls.metadata.generation, now);
    }
    set_condition(&mut st.conditions, c, ls.metadata.generation, now);
    held?;
    deletion_guard::requested_release(&ls.metadata, st.deletion_guard.as_ref())
}

/// Delayed apply in the status: the changes waiting, and whether the delay holds.
fn delayed_apply(
    st: &mut LiveSynchronizationStatus,
    snap: &Snapshot,
    generation: Option<i64>,
    now: Timestamp,
) {
    let Some(delay) = snap.apply_delay else {
        st.delayed_changes = None;
        return;
    };
    st.delayed_changes = Some(snap.delayed as u64);
    let c = match snap.delay_shortened_to {
        Some(cut) => Desired::new(
            types::DELAYED_APPLY,
            false,
            Reason::DelayShortened,
            format!(
                "the recorded changes outgrew their memory bound: the oldest were applied after {} instead of {}",
                human(cut),
                human(delay)
            ),
        ),
        None => Desired::new(
            types::DELAYED_APPLY,
            true,
            Reason::Delaying,
            format!(
                "each change reaches the copy {} after it was made (suspend to stop what waits)",
                human(delay)
            ),
        ),
    };
    set_condition(&mut st.conditions, c, generation, now);
}

/// What came of a release handed to the run (`None`: no run): an accepted one is recorded so
/// its token is not applied twice; one the hold outgrew is refused with the new count.
pub fn released(
    st: &mut LiveSynchronizationStatus,
    token: &str,
    deletes: u64,
    result: Option<Result<(), u64>>,
    now: Timestamp,
) -> Option<Note> {
    match result? {
        Ok(()) => {
            let dg = st.deletion_guard.get_or_insert_with(Default::default);
            dg.last_released_token = Some(token.to_string());
            dg.last_released_time = Some(Time(now));
            Some(Note::normal(Reason::DeletesReleased, format!("{deletes} held deletes released with token {token}: applying them")))
        }
        Err(now_held) => Some(Note::warning(Reason::MassDeletionHeld, format!(
                "token {token} releases {deletes} deletes, but {now_held} are held now: set the annotation to the new status.deletionGuard.held.releaseToken"
            ))),
    }
}

/// `spec.suspend`: the stream stops (the status and the destination stay as they are) until
/// it is resumed, which starts it again with a full sync.
fn suspended(
    old: &LiveSynchronizationStatus,
    mut st: LiveSynchronizationStatus,
    running: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> LiveDecision {
    let mut notes = Vec::new();
    st.phase = LivePhase::Suspended;
    let why = "suspended (spec.suspend): not streaming; the destination is left as it is, and resuming runs a full sync first";
    for t in [types::READY, types::STREAMING, types::CAUGHT_UP] {
        set_condition(
            &mut st.conditions,
            Desired::new(t, false, Reason::Suspended, why),
            generation,
            now,
        );
    }
    if old.phase != LivePhase::Suspended {
        notes.push(Note::normal(Reason::Suspended, why));
    }
    LiveDecision {
        status: st,
        action: if running {
            LiveAction::Stop
        } else {
            LiveAction::Nothing
        },
        requeue: None,
        notes,
    }
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

/// Writes what the run says into the status.
fn report(
    st: &mut LiveSynchronizationStatus,
    snap: &Snapshot,
    max_lag: Duration,
    verify_on: bool,
    generation: Option<i64>,
    now: Timestamp,
) {
    let mut set = |d: Desired| set_condition(&mut st.conditions, d, generation, now);
    let lag = snap.lag(now);
    let failed = snap.failed.as_ref().map(|(_, why)| why.clone());

    for (type_, side, r) in [
        (types::SOURCE_REACHABLE, "source", &snap.source),
        (
            types::DESTINATION_REACHABLE,
            "destination",
            &snap.destination,
        ),
    ] {
        set(match r.ok {
            Some(true) => Desired::new(type_, true, Reason::Connected, format!("{side} connected")),
            Some(false) => Desired::new(type_, false, Reason::Unreachable, r.why.clone()),
            None => Desired::unknown(type_, Reason::Pending, "not connected yet"),
        });
    }
    let streaming = snap.streaming();
    set(match (&failed, snap.state) {
        (Some(why), _) => Desired::new(types::STREAMING, false, Reason::CopyFailed, why.clone()),
        (None, Some(LiveState::Streaming)) => Desired::new(
            types::STREAMING,
            true,
            Reason::Streaming,
            "applying changes from a persistent recursive watch",
        ),
        (None, Some(LiveState::FullSync)) => {
            Desired::new(types::STREAMING, false, Reason::Syncing, snap.why.clone())
        }
        (None, Some(LiveState::Retrying)) => {
            Desired::new(types::STREAMING, false, Reason::Retrying, snap.why.clone())
        }
        (None, _) => Desired::new(types::STREAMING, false, Reason::Pending, snap.why.clone()),
    });
    let objective = human(max_lag);
    let heartbeat_late = snap.heartbeat_late(now);
    let caught_up = streaming && lag <= max_lag && !heartbeat_late;
    set(if caught_up {
        Desired::new(
            types::CAUGHT_UP,
            true,
            Reason::CaughtUp,
            format!("lag within the objective of {objective}"),
        )
    } else if heartbeat_late {
        let why = snap
            .heartbeat_error
            .clone()
            .unwrap_or_else(|| "the heartbeat has not reached the destination for three intervals: the stream may be stalled".into());
        Desired::new(types::CAUGHT_UP, false, Reason::HeartbeatLate, why)
    } else if streaming {
        Desired::new(
            types::CAUGHT_UP,
            false,
            Reason::LagAboveObjective,
            format!("lag above the objective of {objective}"),
        )
    } else {
        Desired::new(
            types::CAUGHT_UP,
            false,
            Reason::Behind,
            "not streaming: the lag grows until the stream is back",
        )
    });
    let mut diverged = false;
    match &snap.last_verify {
        None if verify_on => set(Desired::unknown(
            types::IN_SYNC,
            Reason::NotVerified,
            "no verification yet",
        )),
        None => set(Desired::unknown(
            types::IN_SYNC,
            Reason::VerifySkipped,
            "verifyInterval is 0s: the trees are not compared",
        )),
        Some(v) => {
            st.last_verified_time = Some(Time(v.at));
            match &v.result {
                Err(e) => set(Desired::unknown(
                    types::IN_SYNC,
                    Reason::VerifyFailed,
                    e.clone(),
                )),
                Ok(r) => {
                    st.divergent_nodes = Some(r.confirmed_count);
                    st.divergent_paths = r.confirmed.clone();
                    st.undecided_nodes = Some(r.undecided);
                    st.source_nodes = Some(r.source_nodes);
                    st.source_root_hash = Some(r.source_root_hash.clone());
                    st.destination_root_hash = Some(r.destination_root_hash.clone());
                    if r.in_sync {
                        set(Desired::new(
                            types::IN_SYNC,
                            true,
                            Reason::Equal,
                            format!(
                                "{} nodes equal (root hash {})",
                                r.source_nodes,
                                verifier::short_hash(&r.source_root_hash)
                            ),
                        ));
                    } else if r.confirmed_count > 0 {
                        diverged = true;
                        set(Desired::new(
                            types::IN_SYNC,
                            false,
                            Reason::Diverged,
                            format!(
                                "{} nodes confirmed divergent after the stream caught up: {}",
                                r.confirmed_count,
                                r.confirmed
                                    .iter()
                                    .map(|p| if p.is_empty() { "/" } else { p.as_str() })
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            ),
                        ));
                    } else {
                        set(Desired::unknown(
                            types::IN_SYNC,
                            Reason::Undecided,
                            format!(
                                "{} differences could not be judged: their source nodes kept changing",
                                r.undecided
                            ),
                        ));
                    }
                }
            }
        }
    }
    let src_down = snap.source.ok == Some(false);
    let dst_down = snap.destination.ok == Some(false);
    set(if let Some(why) = &failed {
        Desired::new(types::READY, false, Reason::CopyFailed, why.clone())
    } else if src_down {
        Desired::new(
            types::READY,
            false,
            Reason::Unreachable,
            format!("source: {}", snap.source.why),
        )
    } else if dst_down {
        Desired::new(
            types::READY,
            false,
            Reason::Unreachable,
            format!("destination: {}", snap.destination.why),
        )
    } else if !streaming {
        Desired::new(types::READY, false, Reason::Syncing, snap.why.clone())
    } else if diverged {
        Desired::new(
            types::READY,
            false,
            Reason::Diverged,
            "the verifier confirmed divergent nodes (see InSync)",
        )
    } else if !caught_up {
        let reason = if heartbeat_late {
            Reason::HeartbeatLate
        } else {
            Reason::LagAboveObjective
        };
        Desired::new(types::READY, false, reason, "see CaughtUp")
    } else {
        Desired::new(
            types::READY,
            true,
            Reason::Streaming,
            format!("streaming within the lag objective of {objective}"),
        )
    });

    st.phase = match (&failed, snap.state) {
        (Some(_), _) => LivePhase::Failed,
        (None, Some(LiveState::Streaming)) => LivePhase::Streaming,
        (None, Some(LiveState::Retrying)) => LivePhase::Retrying,
        (None, Some(_)) => LivePhase::Syncing,
        (None, None) => LivePhase::Pending,
    };
    st.start_time = Some(Time(snap.started));
    st.lag = Some(human(lag));
    st.lag_seconds = Some((lag.as_secs_f64() * 1000.0).round() / 1000.0);
    st.changes_applied = snap.applied_total;
    st.full_syncs = snap.full_syncs;
    st.last_full_sync_time = snap.last_full_sync.map(Time);
    st.repaired_paths = snap.repaired_total;
    if let Some(t) = snap.last_good_sync {
        st.last_good_sync_time = Some(Time(t));
    }
    st.last_heartbeat_time = snap.heartbeat_seen.map(Time);
}

/// Events for what users must hear about: Ready turning, divergence found.
fn transition_notes(
    old: &LiveSynchronizationStatus,
    new: &LiveSynchronizationStatus,
    notes: &mut Vec<Note>,
) {
    let get = |s: &LiveSynchronizationStatus, t| {
        find(&s.conditions, t)
            .map(|c| (ConditionStatus::of(c), c.reason.clone(), c.message.clone()))
    };
    if let (Some((status, reason, message)), before) =
        (get(new, types::READY), get(old, types::READY))
    {
        if before.as_ref().map(|b| (&b.0, &b.1)) != Some((&status, &reason)) {
            if let Some(r) = Reason::parse(&reason) {
                notes.push(Note {
                    warning: status != ConditionStatus::True,
                    reason: r,
                    message,
                });
            }
        }
    }
    if let Some((_, reason, message)) = get(new, types::IN_SYNC) {
        let was = get(old, types::IN_SYNC).map(|c| c.1);
        if reason == Reason::Diverged.as_str() && was.as_deref() != Some(&reason) {
            notes.push(Note::warning(Reason::Diverged, message));
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
    use crate::api::conditions::is_true;
    use crate::continuous::{VerifyOutcome, VerifySummary};
    use crate::engine::live::LiveOptions;
    use crate::engine::SyncOptions;
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
        for r in [&mut s.source, &mut s.destination] {
            r.ok = Some(true);
            r.why = "connected".into();
        }
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
        snap.destination.ok = Some(false);
        snap.destination.why = "connection refused".into();
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
        down.source.ok = Some(false);
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
