//! The deletion guard on a Synchronization: deletes held after a copy make it `Held` until a
//! person releases them with the token shown; the next run may then delete exactly those.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Draft, Note};
use crate::api::automation::{Phase, Synchronization};
use crate::api::conditions::{types, Reason};
use crate::controllers::deletion_guard;
use crate::engine::Allowance;
use crate::runs::{Job, RunOutcome};

/// A person released `deletes` held deletes with `token`: the copy may delete that many, and
/// the token is recorded so it is applied once.
pub(super) fn release(d: &mut Draft, job: &mut Job, token: &str, deletes: u64) {
    if let Job::Copy { opts, .. } = job {
        opts.guard.allowance = Allowance::UpTo(deletes);
    }
    let dg = d.st.deletion_guard.get_or_insert_with(Default::default);
    dg.last_released_token = Some(token.to_string());
    dg.last_released_time = Some(Time(d.now));
    d.condition(
        types::DELETION_GUARD,
        false,
        Reason::DeletesReleased,
        format!("{deletes} held deletes released (token {token}); copying again"),
    );
    d.notes.push(Note::normal(
        Reason::DeletesReleased,
        format!("{deletes} held deletes released with token {token}: copying again, deleting them"),
    ));
}

/// After a copy: the deletion guard's status and condition. Held deletes make the
/// Synchronization `Held`, not complete: Ready and Complete are False with the numbers and
/// the release command, and a Warning Event says the same.
pub(super) fn deletes_held(d: &mut Draft, sync: &Synchronization, outcome: &RunOutcome) {
    let held = outcome.summary.held.as_ref();
    let dg = deletion_guard::status(
        &sync.metadata,
        "synchronization",
        d.st.deletion_guard.as_ref(),
        held,
        d.now,
    );
    let shown = dg.held.clone();
    d.st.deletion_guard = Some(dg);
    let (Some(h), Some(shown)) = (held, shown) else {
        d.set(deletion_guard::condition(None));
        return;
    };
    let c = deletion_guard::condition(Some((h, &shown)));
    let (reason, message) = (c.reason, c.message.clone());
    d.set(c);
    if outcome.summary.dry_run {
        // A dry run only reports that the guard would trip.
        return;
    }
    d.st.phase = Phase::Held;
    // The held deletes explain the divergence: one Event says so, not a generic one.
    d.notes
        .retain(|n| n.reason != Reason::Diverged && n.reason != Reason::Succeeded);
    d.condition(types::COMPLETE, false, reason, message.clone());
    d.condition(types::READY, false, reason, message.clone());
    d.notes.push(Note::warning(reason, message));
}
