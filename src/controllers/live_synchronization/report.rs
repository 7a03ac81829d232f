//! What a running stream says, in the status: one condition a step (reachability, streaming,
//! lag, the verifier's finding, Ready), the delayed apply, the counters, and the Events for
//! what users must hear about.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{human, Draft, Note};
use crate::api::automation::{DestinationDivergenceStatus, LivePhase, LiveSynchronizationStatus};
use crate::api::conditions::{find, types, ConditionStatus, Desired, Reason};
use verifier::Side;

use crate::continuous::{Reach, Snapshot, VerifyOutcome, VerifySummary};
use crate::engine::live::LiveState;

/// What the conditions are judged from: the run's snapshot and what follows from it at `now`.
struct Judged<'a> {
    snap: &'a Snapshot,
    /// Why the run stopped for good, if it did.
    failed: Option<&'a str>,
    lag: Duration,
    /// The objective, for people.
    objective: String,
    streaming: bool,
    heartbeat_late: bool,
    caught_up: bool,
}

/// Writes what the run says into the status.
pub(super) fn report(d: &mut Draft, snap: &Snapshot, max_lag: Duration, verify_on: bool) {
    let lag = snap.lag(d.now);
    let streaming = snap.streaming();
    let heartbeat_late = snap.heartbeat_late(d.now);
    let j = Judged {
        snap,
        failed: snap.failed.as_ref().map(|(_, why)| why.as_str()),
        lag,
        objective: human(max_lag),
        streaming,
        heartbeat_late,
        caught_up: streaming && lag <= max_lag && !heartbeat_late,
    };
    d.set(reachable(
        types::SOURCE_REACHABLE,
        Side::Source,
        &snap.source,
    ));
    d.set(reachable(
        types::DESTINATION_REACHABLE,
        Side::Destination,
        &snap.destination,
    ));
    d.set(streaming_condition(&j));
    d.set(caught_up(&j));
    if let Some(v) = &snap.last_verify {
        verification(&mut d.st, v);
    }
    let in_sync = in_sync(snap.last_verify.as_ref(), verify_on);
    let diverged = in_sync.reason == Reason::Diverged;
    d.set(in_sync);
    d.set(ready(&j, diverged));
    counters(&mut d.st, &j);
}

/// `SourceReachable` or `DestinationReachable`; Unknown until the run has tried.
fn reachable(type_: &'static str, side: Side, r: &Reach) -> Desired {
    match r {
        Reach::Connected => {
            Desired::new(type_, true, Reason::Connected, format!("{side} connected"))
        }
        Reach::Unreachable(why) => Desired::new(type_, false, Reason::Unreachable, why.clone()),
        Reach::Unknown => Desired::unknown(type_, Reason::Pending, "not connected yet"),
    }
}

/// `Streaming`: True only while watch events are applied (not re-walking, not retrying).
fn streaming_condition(j: &Judged) -> Desired {
    let (reason, why) = match (j.failed, j.snap.state) {
        (Some(why), _) => (Reason::CopyFailed, why),
        (None, Some(LiveState::Streaming)) => {
            return Desired::new(
                types::STREAMING,
                true,
                Reason::Streaming,
                "applying changes from a persistent recursive watch",
            )
        }
        (None, Some(LiveState::FullSync)) => (Reason::Syncing, j.snap.why.as_str()),
        (None, Some(LiveState::Retrying)) => (Reason::Retrying, j.snap.why.as_str()),
        (None, _) => (Reason::Pending, j.snap.why.as_str()),
    };
    Desired::new(types::STREAMING, false, reason, why)
}

/// `CaughtUp`: streaming, within the lag objective, with the heartbeat arriving.
fn caught_up(j: &Judged) -> Desired {
    let objective = &j.objective;
    if j.caught_up {
        return Desired::new(
            types::CAUGHT_UP,
            true,
            Reason::CaughtUp,
            format!("lag within the objective of {objective}"),
        );
    }
    let (reason, why) = if j.heartbeat_late {
        let why = j.snap.heartbeat_error.clone().unwrap_or_else(|| {
            "the heartbeat has not reached the destination for three intervals: the stream may be stalled".into()
        });
        (Reason::HeartbeatLate, why)
    } else if j.streaming {
        (
            Reason::LagAboveObjective,
            format!("lag above the objective of {objective}"),
        )
    } else {
        (
            Reason::Behind,
            "not streaming: the lag grows until the stream is back".into(),
        )
    };
    Desired::new(types::CAUGHT_UP, false, reason, why)
}

/// The last verification's numbers in the status.
fn verification(st: &mut LiveSynchronizationStatus, v: &VerifyOutcome) {
    st.last_verified_time = Some(Time(v.at));
    if let Ok(r) = &v.result {
        st.divergent_nodes = Some(r.confirmed_count);
        st.divergent_paths = r.confirmed.clone();
        st.undecided_nodes = Some(r.undecided);
        st.source_nodes = Some(r.source_nodes);
        st.source_root_hash = Some(r.source_root_hash.clone());
        st.destination_root_hash = Some(r.destination_root_hash.clone());
    }
}

/// `InSync`: what the last lag-aware verification found; Unknown before one, when it failed,
/// or when it could not judge.
fn in_sync(last: Option<&VerifyOutcome>, verify_on: bool) -> Desired {
    match last.map(|v| &v.result) {
        None if verify_on => {
            Desired::unknown(types::IN_SYNC, Reason::NotVerified, "no verification yet")
        }
        None => Desired::unknown(
            types::IN_SYNC,
            Reason::VerifySkipped,
            "verifyInterval is 0s: the trees are not compared",
        ),
        Some(Err(e)) => Desired::unknown(types::IN_SYNC, Reason::VerifyFailed, e.clone()),
        Some(Ok(r)) => compared(r),
    }
}

/// `InSync` after a verification that ran: equal, confirmed divergent, or undecided.
fn compared(r: &VerifySummary) -> Desired {
    if r.in_sync {
        return Desired::new(
            types::IN_SYNC,
            true,
            Reason::Equal,
            format!(
                "{} nodes equal (root hash {})",
                r.source_nodes,
                verifier::short_hash(&r.source_root_hash)
            ),
        );
    }
    if r.confirmed_count == 0 {
        return Desired::unknown(
            types::IN_SYNC,
            Reason::Undecided,
            format!(
                "{} differences could not be judged: their source nodes kept changing",
                r.undecided
            ),
        );
    }
    let paths: Vec<&str> = r
        .confirmed
        .iter()
        .map(|p| if p.is_empty() { "/" } else { p.as_str() })
        .collect();
    Desired::new(
        types::IN_SYNC,
        false,
        Reason::Diverged,
        format!(
            "{} nodes confirmed divergent after the stream caught up: {}",
            r.confirmed_count,
            paths.join(" ")
        ),
    )
}

/// The first side that does not answer, and why.
fn unreachable_side(snap: &Snapshot) -> Option<(Side, &str)> {
    [
        (Side::Source, &snap.source),
        (Side::Destination, &snap.destination),
    ]
    .into_iter()
    .find_map(|(side, r)| match r {
        Reach::Unreachable(why) => Some((side, why.as_str())),
        _ => None,
    })
}

/// `Ready`: the first thing wrong, in order of what a user must fix first; True only when
/// streaming, caught up and not diverged.
fn ready(j: &Judged, diverged: bool) -> Desired {
    let snap = j.snap;
    let (reason, why) = if let Some(why) = j.failed {
        (Reason::CopyFailed, why.to_string())
    } else if let Some((side, why)) = unreachable_side(snap) {
        (Reason::Unreachable, format!("{side}: {why}"))
    } else if !j.streaming {
        (Reason::Syncing, snap.why.clone())
    } else if diverged {
        (
            Reason::Diverged,
            "the verifier confirmed divergent nodes (see InSync)".into(),
        )
    } else if !j.caught_up {
        let reason = if j.heartbeat_late {
            Reason::HeartbeatLate
        } else {
            Reason::LagAboveObjective
        };
        (reason, "see CaughtUp".into())
    } else {
        return Desired::new(
            types::READY,
            true,
            Reason::Streaming,
            format!("streaming within the lag objective of {}", j.objective),
        );
    };
    Desired::new(types::READY, false, reason, why)
}

/// The phase, times and counters of the run.
fn counters(st: &mut LiveSynchronizationStatus, j: &Judged) {
    let snap = j.snap;
    st.phase = match (j.failed, snap.state) {
        (Some(_), _) => LivePhase::Failed,
        (None, Some(LiveState::Streaming)) => LivePhase::Streaming,
        (None, Some(LiveState::Retrying)) => LivePhase::Retrying,
        (None, Some(_)) => LivePhase::Syncing,
        (None, None) => LivePhase::Pending,
    };
    st.start_time = Some(Time(snap.started));
    st.lag = Some(human(j.lag));
    st.lag_seconds = Some(to_the_millisecond(j.lag));
    st.changes_applied = snap.applied_total;
    st.full_syncs = snap.full_syncs;
    st.last_full_sync_time = snap.last_full_sync.map(Time);
    st.repaired_paths = snap.repaired_total;
    if let Some(t) = snap.last_good_sync {
        st.last_good_sync_time = Some(Time(t));
    }
    st.last_heartbeat_time = snap.heartbeat_seen.map(Time);
}

/// Seconds rounded to the millisecond: finer digits are noise a reader does not need.
fn to_the_millisecond(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Nodes the stream leaves out because the destination cannot take them: the
/// `NodesTooLarge` condition naming each with its size, and Ready False while there are any
/// (the copy is incomplete until the destination's jute.maxbuffer is raised).
pub(super) fn too_large(d: &mut Draft, snap: &Snapshot) {
    if snap.oversized_count == 0 {
        d.set(Desired::new(
            types::NODES_TOO_LARGE,
            false,
            Reason::NodesFit,
            "every source node fits the destination",
        ));
        return;
    }
    let limit = match snap.oversized_limit {
        Some(n) => format!("takes requests of at most {n} bytes"),
        None => "takes no request longer than the configured jute.maxbuffer".into(),
    };
    let named: Vec<String> = snap
        .oversized
        .iter()
        .map(|n| format!("{} ({} bytes)", n.path, n.size))
        .collect();
    let more = snap.oversized_count.saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let message = format!(
        "{} source nodes are left out of the copy: the destination {limit}: {}{more}; raise jute.maxbuffer on the destination (or make them smaller)",
        snap.oversized_count,
        named.join(", ")
    );
    d.set(Desired::new(
        types::NODES_TOO_LARGE,
        true,
        Reason::NodeTooLarge,
        message.clone(),
    ));
    // Before a divergence (which these nodes cause) or the lag, after what stops the stream.
    let outranked = find(&d.st.conditions, types::READY).is_some_and(|c| {
        ConditionStatus::of(c) != ConditionStatus::True
            && ![
                Reason::Diverged,
                Reason::LagAboveObjective,
                Reason::HeartbeatLate,
            ]
            .iter()
            .any(|r| r.as_str() == c.reason)
    });
    if !outranked {
        d.set(Desired::new(
            types::READY,
            false,
            Reason::NodeTooLarge,
            message,
        ));
    }
}

/// Delayed apply in the status: the changes waiting, and whether the delay holds.
pub(super) fn delayed_apply(d: &mut Draft, snap: &Snapshot) {
    let Some(delay) = snap.apply_delay else {
        d.st.delayed_changes = None;
        return;
    };
    d.st.delayed_changes = Some(snap.delayed as u64);
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
    d.set(c);
}

/// `compareBeforeSync`: what the destination held that the last compared full sync deleted
/// or overwrote, in the status, and a warning Event the first time each comparison is seen
/// when the destination lost anything.
pub(super) fn destination_divergence(
    d: &mut Draft,
    old: &LiveSynchronizationStatus,
    snap: &Snapshot,
) {
    let Some((at, diff)) = &snap.destination_diff else {
        return;
    };
    let st = DestinationDivergenceStatus {
        time: Time(*at),
        source_nodes: diff.source_nodes,
        destination_nodes: diff.destination_nodes,
        only_on_destination: diff.only_on_destination,
        changed: diff.changed,
        only_on_source: diff.only_on_source,
        paths: diff
            .paths
            .iter()
            .map(|p| format!("{} ({})", shown(&p.path), p.class.label()))
            .collect(),
    };
    let seen = old
        .destination_divergence
        .as_ref()
        .is_some_and(|o| o.time == st.time);
    if !seen && diff.loses_anything() {
        let e = if st.paths.is_empty() {
            String::new()
        } else {
            format!(", e.g. {}", st.paths.join(", "))
        };
        d.notes.push(Note::warning(Reason::DestinationDiverged, format!("before the full sync, the destination held {} nodes the source does not have and {} that differ{e}: the differing ones are overwritten with the source's; deletes of the others go through the deletion guard (status.deletionGuard). If they are writes made on an old primary after a failover, copy them out before releasing any hold", diff.only_on_destination, diff.changed)));
    }
    d.st.destination_divergence = Some(st);
}

/// A relative path for people: the root is "/".
fn shown(rel: &str) -> &str {
    if rel.is_empty() {
        "/"
    } else {
        rel
    }
}

/// Events for what users must hear about: Ready turning, divergence found.
pub(super) fn transition_notes(old: &LiveSynchronizationStatus, d: &mut Draft) {
    let get = |s: &LiveSynchronizationStatus, t| {
        find(&s.conditions, t)
            .map(|c| (ConditionStatus::of(c), c.reason.clone(), c.message.clone()))
    };
    let (new, notes) = (&d.st, &mut d.notes);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nodes_left_out_for_their_size_are_named_and_keep_ready_false() {
        use crate::engine::oversized::TooBig;
        let now = k8s_openapi::jiff::Timestamp::from_second(1000).unwrap();
        let mut snap = Snapshot::new(now, None);
        snap.state = Some(LiveState::Streaming);
        snap.caught_up = true;
        snap.source = Reach::Connected;
        snap.destination = Reach::Connected;
        let mut d = Draft::new(None, Some(1), now);
        report(&mut d, &snap, Duration::from_secs(30), false);
        too_large(&mut d, &snap);
        let c = find(&d.st.conditions, types::NODES_TOO_LARGE).unwrap();
        assert_eq!(c.reason, "NodesFit");
        assert_eq!(
            ConditionStatus::of(find(&d.st.conditions, types::READY).unwrap()),
            ConditionStatus::True
        );

        snap.oversized = vec![TooBig {
            path: "/app/big".into(),
            size: 409_632,
            missing: true,
        }];
        snap.oversized_count = 3;
        snap.oversized_limit = Some(262_144);
        let mut d = Draft::new(None, Some(1), now);
        report(&mut d, &snap, Duration::from_secs(30), false);
        too_large(&mut d, &snap);
        let c = find(&d.st.conditions, types::NODES_TOO_LARGE).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::True, "NodeTooLarge")
        );
        assert!(
            c.message.contains("/app/big (409632 bytes)")
                && c.message.contains("and 2 more")
                && c.message.contains("at most 262144 bytes"),
            "{}",
            c.message
        );
        let r = find(&d.st.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(r), r.reason.as_str()),
            (ConditionStatus::False, "NodeTooLarge")
        );

        // An unreachable destination comes first.
        snap.destination = Reach::Unreachable("connection refused".into());
        let mut d = Draft::new(None, Some(1), now);
        report(&mut d, &snap, Duration::from_secs(30), false);
        too_large(&mut d, &snap);
        assert_eq!(
            find(&d.st.conditions, types::READY).unwrap().reason,
            "Unreachable"
        );
    }

    #[test]
    fn a_side_not_tried_yet_is_unknown() {
        let c = reachable(types::SOURCE_REACHABLE, Side::Source, &Reach::default());
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::Unknown, Reason::Pending)
        );
    }

    #[test]
    fn differences_nobody_could_judge_leave_in_sync_unknown() {
        let r = VerifySummary {
            in_sync: false,
            confirmed: vec![],
            confirmed_count: 0,
            undecided: 2,
            suspected: 2,
            source_nodes: 10,
            destination_nodes: 10,
            source_root_hash: "ab".repeat(32),
            destination_root_hash: "cd".repeat(32),
            duration_seconds: 0.1,
            source_max_mzxid: 0,
        };
        let c = compared(&r);
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::Unknown, Reason::Undecided)
        );
        let c = compared(&VerifySummary {
            confirmed: vec![String::new()],
            confirmed_count: 1,
            ..r
        });
        assert_eq!(c.reason, Reason::Diverged);
        assert!(c.message.ends_with(": /"), "{}", c.message);
    }
}
