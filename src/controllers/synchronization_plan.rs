//! SynchronizationPlan: a CronJob for Synchronizations. Pure decisions here.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{
    ConcurrencyPolicy, Phase, Synchronization, SynchronizationPlan, SynchronizationPlanSpec,
    SynchronizationPlanStatus,
};
use crate::api::conditions::{set_condition, types, Desired, Reason};
use crate::controllers::note::Note;
use crate::schedule;

/// Label on each child naming its plan, and annotation holding its slot (RFC 3339).
pub const PLAN_LABEL: &str = "automation.astronetes.io/synchronization-plan";
pub const SLOT_ANNOTATION: &str = "automation.astronetes.io/scheduled-time";

/// What the plan knows of one of its Synchronizations.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub name: String,
    pub slot: Timestamp,
    pub phase: Phase,
    pub completion: Option<Timestamp>,
}

impl Child {
    /// What the plan needs of one of its Synchronizations. A child without a readable slot
    /// annotation (edited by hand) counts as scheduled `now`.
    pub fn of(s: &Synchronization, now: Timestamp) -> Child {
        let status = s.status.as_ref();
        Child {
            name: s.metadata.name.clone().unwrap_or_default(),
            slot: s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SLOT_ANNOTATION))
                .and_then(|a| a.parse().ok())
                .unwrap_or(now),
            phase: status.map(|st| st.phase).unwrap_or_default(),
            completion: status.and_then(|st| st.completion_time.as_ref().map(|t| t.0)),
        }
    }
}

#[derive(Debug, Default)]
pub struct PlanDecision {
    pub status: SynchronizationPlanStatus,
    /// Create the child of this name for this slot (an existing one of that name is reused).
    pub create: Option<(String, Timestamp)>,
    /// Delete these children: old history, or active runs replaced by a new one.
    pub delete: Vec<String>,
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

/// Kubernetes object names are at most this long.
const MAX_NAME_LEN: usize = 253;
/// Room a child's name keeps for its suffix: a dash and the slot in Unix minutes (11 digits
/// until far beyond any real schedule).
const SLOT_SUFFIX_LEN: usize = 12;
/// Label values are at most this long, and each child carries the plan's name as one.
const MAX_LABEL_VALUE_LEN: usize = 63;
/// The plan wakes this long after its next slot, so that slot is due when it looks.
const WAKE_AFTER_SLOT: Duration = Duration::from_secs(1);

/// Name of the child for `slot`: the plan's name and the slot in Unix minutes, as a CronJob
/// names its Jobs, so a crash between creating it and recording it cannot duplicate a run.
pub fn child_name(plan: &str, slot: Timestamp) -> String {
    let minutes = slot.as_second().div_euclid(60);
    let base: String = plan.chars().take(MAX_NAME_LEN - SLOT_SUFFIX_LEN).collect();
    format!("{base}-{minutes}")
}

/// The Synchronization a plan creates for `slot`: the template, labelled with the plan's name
/// and annotated with the slot, so the plan finds its children and their slots again.
pub fn child(plan: &SynchronizationPlan, name: &str, slot: Timestamp) -> Synchronization {
    let mut s = Synchronization::new(name, plan.spec.template.spec.clone());
    let meta = plan.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(
        PLAN_LABEL.into(),
        plan.metadata.name.clone().unwrap_or_default(),
    );
    let mut annotations = meta.annotations;
    annotations.insert(SLOT_ANNOTATION.into(), slot.to_string());
    s.metadata.labels = Some(labels);
    s.metadata.annotations = Some(annotations);
    s.metadata.namespace = plan.metadata.namespace.clone();
    s
}

/// Decides the plan's next step from its spec and status, its children and `now`: the guard
/// and history first, then the schedule (invalid, suspended, or the slot due, if any).
pub fn desired(plan: &SynchronizationPlan, children: &[Child], now: Timestamp) -> PlanDecision {
    let generation = plan.metadata.generation;
    let set = |st: &mut SynchronizationPlanStatus, want| {
        set_condition(&mut st.conditions, want, generation, now)
    };
    let mut d = PlanDecision {
        status: plan.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    d.status.observed_generation = generation;
    let name = plan.metadata.name.clone().unwrap_or_default();
    let spec = &plan.spec;

    let mut active: Vec<&Child> = children.iter().filter(|c| !c.phase.is_finished()).collect();
    active.sort_by_key(|c| c.slot);
    set(&mut d.status, guard(&active));
    last_success(&mut d.status, children);
    d.delete = history_to_prune(
        children,
        spec.successful_history_limit,
        spec.failed_history_limit,
    );

    let sched = match validate(&name, spec) {
        Ok(s) => s,
        Err((field, message)) => {
            let msg = format!("{field}: {message}");
            set(
                &mut d.status,
                Desired::new(types::READY, false, Reason::InvalidSpec, msg.clone()),
            );
            d.notes.push(Note::warning(Reason::InvalidSpec, msg));
            return unscheduled(d, &active);
        }
    };
    if spec.suspend {
        set(
            &mut d.status,
            Desired::new(
                types::READY,
                true,
                Reason::Suspended,
                "suspended: no new Synchronizations are created",
            ),
        );
        return unscheduled(d, &active);
    }

    let since = counted_from(plan, children, &d.status, now);
    let waiting = sched
        .latest_due(since, now)
        .and_then(|(slot, _missed)| run_due(&mut d, spec, &name, slot, &mut active, now));
    set(
        &mut d.status,
        waiting.unwrap_or_else(|| next_run(&sched, now)),
    );
    scheduled(&mut d, &active, &sched, now);
    d
}

/// The `DeletionGuard` condition: a run whose deletes are held stays active (Forbid waits for
/// it) and is named here.
fn guard(active: &[&Child]) -> Desired {
    let held: Vec<&str> = active
        .iter()
        .filter(|c| c.phase == Phase::Held)
        .map(|c| c.name.as_str())
        .collect();
    if held.is_empty() {
        return Desired::new(
            types::DELETION_GUARD,
            false,
            Reason::NoDeletesHeld,
            "no run holds deletes",
        );
    }
    Desired::new(
        types::DELETION_GUARD,
        true,
        Reason::MassDeletionHeld,
        format!(
            "{} holds its deletes: see its status.deletionGuard, and release it with the token there",
            held.join(", ")
        ),
    )
}

/// `lastSuccessfulTime` moves to the newest completion of a succeeded child, never back.
fn last_success(st: &mut SynchronizationPlanStatus, children: &[Child]) {
    let Some(t) = children
        .iter()
        .filter(|c| c.phase == Phase::Succeeded)
        .filter_map(|c| c.completion)
        .max()
    else {
        return;
    };
    if st.last_successful_time.as_ref().is_none_or(|old| old.0 < t) {
        st.last_successful_time = Some(Time(t));
    }
}

/// The schedule, or the field that is wrong and why.
fn validate(
    name: &str,
    spec: &SynchronizationPlanSpec,
) -> Result<schedule::Schedule, (String, String)> {
    if name.len() > MAX_LABEL_VALUE_LEN {
        return Err((
            "metadata.name".to_string(),
            format!(
                "is {} characters; a SynchronizationPlan name must be at most \
                 {MAX_LABEL_VALUE_LEN} (its Synchronizations are labelled with it)",
                name.len()
            ),
        ));
    }
    schedule::parse(&spec.schedule, spec.time_zone.as_deref())
}

/// No slot comes (an invalid spec, or suspended): only the active runs are shown.
fn unscheduled(mut d: PlanDecision, active: &[&Child]) -> PlanDecision {
    d.status.next_schedule_time = None;
    finish_active(&mut d, active);
    d
}

/// Slots are counted from the last one scheduled, or from the plan's creation.
fn counted_from(
    plan: &SynchronizationPlan,
    children: &[Child],
    st: &SynchronizationPlanStatus,
    now: Timestamp,
) -> Timestamp {
    let last_slot = children
        .iter()
        .map(|c| c.slot)
        .chain(st.last_schedule_time.as_ref().map(|t| t.0))
        .max();
    let created = plan
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    last_slot.unwrap_or(created)
}

/// The slot due now: skipped past its deadline, waiting under Forbid (returns that Ready), or
/// a new child (replacing the active runs under Replace).
fn run_due(
    d: &mut PlanDecision,
    spec: &SynchronizationPlanSpec,
    name: &str,
    slot: Timestamp,
    active: &mut Vec<&Child>,
    now: Timestamp,
) -> Option<Desired> {
    let late = now.duration_since(slot).as_secs();
    if spec.starting_deadline_seconds.is_some_and(|dl| late > dl) {
        d.status.last_schedule_time = Some(Time(slot));
        d.notes.push(Note::warning(
            Reason::DeadlineMissed,
            format!("skipped the run due at {slot}: {late}s late, over startingDeadlineSeconds"),
        ));
        return None;
    }
    if !active.is_empty() && spec.concurrency_policy == ConcurrencyPolicy::Forbid {
        // The slot stays due: it starts when the active run ends (if still within the deadline).
        let msg = format!(
            "run due at {slot} waits: {} is still active and concurrencyPolicy is Forbid",
            active[0].name
        );
        return Some(Desired::new(
            types::READY,
            true,
            Reason::ConcurrencyForbidden,
            msg,
        ));
    }
    if spec.concurrency_policy == ConcurrencyPolicy::Replace {
        for c in active.iter() {
            d.delete.push(c.name.clone());
            d.notes.push(Note::normal(
                Reason::Active,
                format!("stopping {}: replaced by the run due at {slot}", c.name),
            ));
        }
        active.clear();
    }
    let child = child_name(name, slot);
    d.notes.push(Note::normal(
        Reason::Scheduled,
        format!("created {child} for the run due at {slot}"),
    ));
    d.status.last_schedule_time = Some(Time(slot));
    d.create = Some((child, slot));
    None
}

/// Ready with the next slot, when no slot waits.
fn next_run(sched: &schedule::Schedule, now: Timestamp) -> Desired {
    Desired::new(
        types::READY,
        true,
        Reason::Scheduled,
        format!(
            "next run at {}",
            sched
                .next_after(now)
                .map(|t| t.to_string())
                .unwrap_or_else(|| "never".into())
        ),
    )
}

/// The active runs (with the one created now), the next slot, and a wake-up just after it.
fn scheduled(d: &mut PlanDecision, active: &[&Child], sched: &schedule::Schedule, now: Timestamp) {
    let mut names: Vec<String> = active.iter().map(|c| c.name.clone()).collect();
    if let Some((c, _)) = &d.create {
        names.push(c.clone());
    }
    d.status.active_count = names.len() as u32;
    d.status.active = names;
    d.status.next_schedule_time = sched.next_after(now).map(Time);
    d.requeue = d.status.next_schedule_time.as_ref().map(|t| {
        Duration::from_secs_f64(t.0.duration_since(now).as_secs_f64().max(0.0)) + WAKE_AFTER_SLOT
    });
}

fn finish_active(d: &mut PlanDecision, active: &[&Child]) {
    d.status.active = active.iter().map(|c| c.name.clone()).collect();
    d.status.active_count = active.len() as u32;
}

/// Finished children beyond the history limits, oldest first.
pub fn history_to_prune(children: &[Child], keep_succeeded: u32, keep_failed: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (phase, keep) in [
        (Phase::Succeeded, keep_succeeded),
        (Phase::Failed, keep_failed),
    ] {
        let mut done: Vec<&Child> = children.iter().filter(|c| c.phase == phase).collect();
        done.sort_by_key(|c| std::cmp::Reverse(c.slot));
        out.extend(done.into_iter().skip(keep as usize).map(|c| c.name.clone()));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::automation::SynchronizationPlanSpec;
    use crate::api::conditions::ConditionStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(extra: serde_json::Value) -> SynchronizationPlan {
        let mut spec = serde_json::json!({
            "schedule": "10 * * * *",
            "template": {"spec": {"plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/test"}}}
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let spec: SynchronizationPlanSpec = serde_json::from_value(spec).unwrap();
        let mut p = SynchronizationPlan::new("nightly", spec);
        p.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        p.metadata.generation = Some(1);
        p
    }

    fn child(slot: &str, phase: Phase) -> Child {
        let slot = ts(slot);
        Child {
            name: child_name("nightly", slot),
            slot,
            phase,
            completion: phase.is_finished().then_some(slot),
        }
    }

    #[test]
    fn nothing_before_the_first_slot_then_one_child_per_slot() {
        let p = plan(serde_json::json!({}));
        let d = desired(&p, &[], ts("2026-01-01T00:05:00Z"));
        assert!(d.create.is_none());
        assert_eq!(
            d.status.next_schedule_time,
            Some(Time(ts("2026-01-01T00:10:00Z")))
        );
        assert_eq!(d.requeue, Some(Duration::from_secs(301)));
        let d = desired(&p, &[], ts("2026-01-01T00:10:01Z"));
        let (name, slot) = d.create.clone().unwrap();
        assert_eq!(slot, ts("2026-01-01T00:10:00Z"));
        assert_eq!(name, format!("nightly-{}", slot.as_second() / 60));
        assert_eq!(d.status.active, vec![name.clone()]);
        // Same slot again (e.g. after a crash before the status was written): same name.
        let again = desired(&p, &[], ts("2026-01-01T00:20:00Z"));
        assert_eq!(again.create.unwrap().0, name);
        // Once the child exists, that slot is done.
        let c = child("2026-01-01T00:10:00Z", Phase::Running);
        assert!(desired(&p, &[c], ts("2026-01-01T00:30:00Z"))
            .create
            .is_none());
    }

    #[test]
    fn a_run_holding_its_deletes_blocks_the_next_under_forbid_and_is_named() {
        let held = child("2026-01-01T00:10:00Z", Phase::Held);
        let d = desired(
            &plan(serde_json::json!({})),
            std::slice::from_ref(&held),
            ts("2026-01-01T01:10:05Z"),
        );
        assert!(d.create.is_none(), "the next slot must wait for a person");
        let c = crate::api::conditions::find(&d.status.conditions, types::DELETION_GUARD).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::True, "MassDeletionHeld")
        );
        assert!(c.message.contains(&held.name), "{}", c.message);
        let done = child("2026-01-01T00:10:00Z", Phase::Succeeded);
        let d = desired(
            &plan(serde_json::json!({})),
            &[done],
            ts("2026-01-01T00:30:00Z"),
        );
        let c = crate::api::conditions::find(&d.status.conditions, types::DELETION_GUARD).unwrap();
        assert_eq!(ConditionStatus::of(c), ConditionStatus::False);
    }

    #[test]
    fn forbid_waits_allow_runs_replace_stops() {
        let running = child("2026-01-01T00:10:00Z", Phase::Running);
        let now = ts("2026-01-01T01:10:05Z");
        let d = desired(
            &plan(serde_json::json!({})),
            std::slice::from_ref(&running),
            now,
        );
        assert!(d.create.is_none());
        assert_eq!(
            crate::api::conditions::find(&d.status.conditions, types::READY)
                .unwrap()
                .reason,
            "ConcurrencyForbidden"
        );
        let d = desired(
            &plan(serde_json::json!({"concurrencyPolicy": "Allow"})),
            std::slice::from_ref(&running),
            now,
        );
        assert!(d.create.is_some());
        assert_eq!(d.status.active_count, 2);
        let d = desired(
            &plan(serde_json::json!({"concurrencyPolicy": "Replace"})),
            std::slice::from_ref(&running),
            now,
        );
        assert!(d.create.is_some());
        assert_eq!(d.delete, vec![running.name]);
        assert_eq!(d.status.active_count, 1);
    }

    #[test]
    fn missed_slots_past_the_deadline_are_skipped() {
        let p = plan(serde_json::json!({"startingDeadlineSeconds": 60}));
        let d = desired(&p, &[], ts("2026-01-01T00:15:00Z"));
        assert!(d.create.is_none());
        assert!(d.notes.iter().any(|n| n.reason == Reason::DeadlineMissed));
        assert_eq!(
            d.status.last_schedule_time,
            Some(Time(ts("2026-01-01T00:10:00Z")))
        );
        let d = desired(&p, &[], ts("2026-01-01T00:10:30Z"));
        assert!(d.create.is_some());
    }

    #[test]
    fn suspend_and_bad_schedules_create_nothing() {
        let d = desired(
            &plan(serde_json::json!({"suspend": true})),
            &[],
            ts("2026-01-02T00:00:00Z"),
        );
        assert!(d.create.is_none() && d.requeue.is_none());
        let d = desired(
            &plan(serde_json::json!({"schedule": "61 * * * *"})),
            &[],
            ts("2026-01-02T00:00:00Z"),
        );
        assert!(d.create.is_none());
        let r = crate::api::conditions::find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(r.reason, "InvalidSpec");
        assert!(
            r.message.starts_with("spec.schedule: \"61 * * * *\""),
            "{}",
            r.message
        );
    }

    #[test]
    fn history_keeps_the_newest_of_each_outcome() {
        let kids = vec![
            child("2026-01-01T01:10:00Z", Phase::Succeeded),
            child("2026-01-01T02:10:00Z", Phase::Failed),
            child("2026-01-01T03:10:00Z", Phase::Succeeded),
            child("2026-01-01T04:10:00Z", Phase::Failed),
            child("2026-01-01T05:10:00Z", Phase::Succeeded),
            child("2026-01-01T06:10:00Z", Phase::Running),
        ];
        let pruned = history_to_prune(&kids, 1, 1);
        assert_eq!(
            pruned,
            vec![
                kids[2].name.clone(),
                kids[0].name.clone(),
                kids[1].name.clone()
            ]
        );
        let d = desired(
            &plan(serde_json::json!({})),
            &kids,
            ts("2026-01-01T06:20:00Z"),
        );
        assert_eq!(
            d.status.last_successful_time,
            Some(Time(ts("2026-01-01T05:10:00Z")))
        );
        // Default limits: 3 succeeded, 1 failed.
        assert_eq!(d.delete, vec![kids[1].name.clone()]);
    }

    #[test]
    fn a_name_too_long_for_a_label_is_refused_before_any_child() {
        let mut p = plan(serde_json::json!({}));
        p.metadata.name = Some("p".repeat(64));
        let d = desired(&p, &[], ts("2026-01-01T06:20:00Z"));
        assert!(d.create.is_none());
        let ready = crate::api::conditions::find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(ready.reason, "InvalidSpec");
        assert!(ready.message.starts_with("metadata.name: is 64 characters"));
    }

    #[test]
    fn a_child_reads_back_its_slot() {
        let p = plan(serde_json::json!({}));
        let slot = ts("2026-01-01T06:10:00Z");
        let s = super::child(&p, &child_name("nightly", slot), slot);
        let c = Child::of(&s, ts("2030-01-01T00:00:00Z"));
        assert_eq!(
            (c.slot, c.phase, c.completion),
            (slot, Phase::Pending, None)
        );
    }
}
