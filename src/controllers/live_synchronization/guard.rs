//! The deletion guard on a LiveSynchronization: what the run holds, in the status and the
//! `DeletionGuard` condition, and what came of a release a person asked for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Draft, Note};
use crate::api::automation::{LiveSynchronization, LiveSynchronizationStatus};
use crate::api::conditions::{types, ConditionStatus, Desired, Reason};
use crate::continuous::Snapshot;
use crate::controllers::deletion_guard;

/// The deletion guard in the status: what the run holds, the `DeletionGuard` condition, and
/// Ready False while deletes wait for a person. Returns the release the annotation asks for.
pub(super) fn guard(
    d: &mut Draft,
    ls: &LiveSynchronization,
    old: &LiveSynchronizationStatus,
    snap: &Snapshot,
) -> Option<(String, u64)> {
    let held = snap.held.as_ref().map(|(_, h)| h);
    if held.is_none() && old.deletion_guard.is_none() {
        d.set(deletion_guard::condition(None));
        return None;
    }
    let dg = deletion_guard::status(
        &ls.metadata,
        "livesynchronization",
        old.deletion_guard.as_ref(),
        held,
        d.now,
    );
    let shown = dg.held.clone();
    d.st.deletion_guard = Some(dg);
    let c = deletion_guard::condition(held.zip(shown.as_ref()));
    if held.is_some() && c.status == ConditionStatus::True {
        d.set(Desired::new(
            types::READY,
            false,
            c.reason,
            c.message.clone(),
        ));
    }
    d.set(c);
    held?;
    deletion_guard::requested_release(&ls.metadata, d.st.deletion_guard.as_ref())
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
            Some(Note::normal(
                Reason::DeletesReleased,
                format!("{deletes} held deletes released with token {token}: applying them"),
            ))
        }
        Err(now_held) => Some(Note::warning(
            Reason::MassDeletionHeld,
            format!(
                "token {token} releases {deletes} deletes, but {now_held} are held now: set the annotation to the new status.deletionGuard.held.releaseToken"
            ),
        )),
    }
}
