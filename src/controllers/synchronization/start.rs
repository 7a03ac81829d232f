//! A run begins (after a release of held deletes, or again after an operator restart), runs,
//! or waits for a Database or Secret it needs.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{held, Draft, Note, WAITING_RECHECK};
use crate::api::automation::{Phase, SynchronizationStatus};
use crate::api::conditions::{find, types, ConditionStatus, Reason};
use crate::resolve::ResolveError;
use crate::runs::Job;

/// Ready's message (and Progressing's, if none was kept) while a copy runs.
const COPY_IN_PROGRESS: &str = "copy in progress";

/// A run of this process is under way.
pub(super) fn running(d: &mut Draft, started: Timestamp) {
    d.st.phase = Phase::Running;
    // A status read before this run's start was stored still counts it.
    d.st.runs = d.st.runs.max(1);
    d.st.start_time.get_or_insert(Time(started));
    // Keep the message written when the run started (it names the paths): rewriting
    // it would cost a status write on every look at a running copy.
    let started_msg = find(&d.st.conditions, types::PROGRESSING)
        .filter(|c| {
            ConditionStatus::of(c) == ConditionStatus::True && c.reason == Reason::Running.as_str()
        })
        .map(|c| c.message.clone());
    d.condition(
        types::PROGRESSING,
        true,
        Reason::Running,
        started_msg.unwrap_or_else(|| COPY_IN_PROGRESS.into()),
    );
    d.condition(types::READY, false, Reason::Running, COPY_IN_PROGRESS);
}

/// Waiting for a Database or Secret, or a spec only a user can fix: one Event per new reason
/// (or when a run was lost waiting). Returns when to look again (`None`: after a fix).
pub(super) fn waiting(
    d: &mut Draft,
    old: &SynchronizationStatus,
    e: &ResolveError,
) -> Option<Duration> {
    let (reason, message) = (e.reason(), e.to_string());
    d.st.phase = Phase::Pending;
    d.condition(types::READY, false, reason, message.clone());
    d.condition(types::PROGRESSING, false, reason, message.clone());
    let changed = find(&old.conditions, types::READY)
        .is_none_or(|c| c.reason != reason.as_str() || c.message != message);
    if changed || old.phase == Phase::Running {
        d.notes.push(Note::warning(reason, message));
    }
    (!e.is_permanent()).then_some(WAITING_RECHECK)
}

/// A new run of `job`, counted; `release` (the token and its deletes) lets held deletes
/// through. A status still Running means the previous run was lost with the operator.
pub(super) fn start(
    d: &mut Draft,
    old: &SynchronizationStatus,
    mut job: Job,
    release: Option<(String, u64)>,
) -> Job {
    if let Some((token, deletes)) = &release {
        held::release(d, &mut job, token, *deletes);
    }
    let restarted = old.phase == Phase::Running;
    d.st.phase = Phase::Running;
    d.st.runs = old.runs.saturating_add(1);
    d.st.start_time.get_or_insert(Time(d.now));
    let msg = if restarted {
        format!(
            "run {} started: the previous one was interrupted (operator restart)",
            d.st.runs
        )
    } else {
        job.describe()
    };
    d.condition(types::PROGRESSING, true, Reason::Running, msg.clone());
    d.condition(types::READY, false, Reason::Running, COPY_IN_PROGRESS);
    d.notes.push(if restarted {
        Note::warning(Reason::Interrupted, msg)
    } else {
        Note::normal(Reason::Running, msg)
    });
    job
}
