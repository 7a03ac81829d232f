//! A stream starts (or starts again: a changed spec, a failure), waits for a Database or
//! Secret it needs, or is suspended.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

use super::{Draft, Note, WAITING_RECHECK};
use crate::api::automation::{LivePhase, LiveSynchronization, LiveSynchronizationStatus};
use crate::api::conditions::{find, types, Reason};
use crate::continuous::Snapshot;
use crate::resolve::ResolveError;

/// `spec.suspend`: the stream stops (the status and the destination stay as they are) until
/// it is resumed, which starts it again with a full sync.
pub(super) fn suspended(d: &mut Draft, old: &LiveSynchronizationStatus) {
    d.st.phase = LivePhase::Suspended;
    let why = "suspended (spec.suspend): not streaming; the destination is left as it is, and resuming runs a full sync first";
    for t in [types::READY, types::STREAMING, types::CAUGHT_UP] {
        d.condition(t, false, Reason::Suspended, why);
    }
    if old.phase != LivePhase::Suspended {
        d.notes.push(Note::normal(Reason::Suspended, why));
    }
}

/// Waiting for a Database or Secret (Pending), or a spec only a user can fix (Failed): one
/// Event per new reason. Returns when to look again (`None`: after a fix).
pub(super) fn waiting(
    d: &mut Draft,
    old: &LiveSynchronizationStatus,
    e: &ResolveError,
) -> Option<Duration> {
    let (reason, message) = (e.reason(), e.to_string());
    d.st.phase = if e.is_permanent() {
        LivePhase::Failed
    } else {
        LivePhase::Pending
    };
    d.condition(types::READY, false, reason, message.clone());
    d.condition(types::STREAMING, false, reason, "not started");
    if find(&old.conditions, types::READY).map(|c| c.reason.as_str()) != Some(reason.as_str()) {
        d.notes.push(Note::warning(reason, message));
    }
    (!e.is_permanent()).then_some(WAITING_RECHECK)
}

/// A stream starts with a full sync; `previous` is the run it replaces, if any.
pub(super) fn start(d: &mut Draft, ls: &LiveSynchronization, previous: Option<&Snapshot>) {
    d.st.phase = LivePhase::Syncing;
    d.st.start_time = Some(Time(d.now));
    let why = match previous {
        Some(s) if s.failed.is_some() => "restarting after a failure",
        Some(_) => "the spec changed: restarting with a full sync",
        None => "starting: a full sync, then streaming",
    };
    d.condition(types::READY, false, Reason::Syncing, why);
    d.condition(types::STREAMING, false, Reason::Syncing, why);
    d.notes.push(Note::normal(
        Reason::Running,
        format!(
            "{why} from {} to {}",
            ls.spec.config.source_name, ls.spec.config.destination_name
        ),
    ));
}
