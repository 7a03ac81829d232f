//! A run finished: a copy's counters and what the verifier found, or the failure and the side
//! it hit. Backups and restores finish in [`super::snapshot`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{held, snapshot, Draft, Note};
use crate::api::automation::{Phase, SyncCounters, Synchronization, Verification};
use crate::api::conditions::{types, Reason};
use crate::engine::SyncSummary;
use crate::runs::{RunFailure, RunOutcome};

/// The status lists at most this many divergent paths; `divergentNodes` counts them all.
const SHOWN_DIVERGENT_PATHS: usize = 10;

/// The run that started and finished at these times ended with `result`.
pub(super) fn finished(
    d: &mut Draft,
    sync: &Synchronization,
    (started, finished): (Timestamp, Timestamp),
    result: &Result<RunOutcome, RunFailure>,
) {
    d.st.start_time.get_or_insert(Time(started));
    d.st.completion_time = Some(Time(finished));
    let secs = finished.duration_since(started).as_secs_f64().max(0.0);
    d.st.duration = Some(format!("{secs:.1}s"));
    d.condition(types::PROGRESSING, false, Reason::Pending, "not running");
    match result {
        Ok(outcome) => match &outcome.snapshot {
            Some(snap) => snapshot::succeeded(d, snap),
            None => {
                succeeded(d, outcome);
                held::deletes_held(d, sync, outcome);
            }
        },
        Err(f) => failed(d, f),
    }
}

/// The run failed: Failed with its reason, and the side it could not reach or log in to.
fn failed(d: &mut Draft, f: &RunFailure) {
    d.st.phase = Phase::Failed;
    d.condition(types::FAILED, true, f.reason, f.message.clone());
    d.condition(types::COMPLETE, false, f.reason, "the copy did not finish");
    d.condition(types::READY, false, f.reason, f.message.clone());
    if matches!(f.reason, Reason::Unreachable | Reason::AuthFailed) {
        let t = if f.side == Some(verifier::Side::Source) {
            types::SOURCE_REACHABLE
        } else {
            types::DESTINATION_REACHABLE
        };
        d.condition(t, false, f.reason, f.message.clone());
    }
    d.notes.push(Note::warning(f.reason, f.message.clone()));
}

/// Any job that succeeded: Complete with what it did, not Failed, both sides reached.
pub(super) fn completed(d: &mut Draft, done: &str) {
    d.condition(types::COMPLETE, true, Reason::Succeeded, done);
    d.condition(types::FAILED, false, Reason::Succeeded, "");
    d.condition(types::SOURCE_REACHABLE, true, Reason::Connected, "");
    d.condition(types::DESTINATION_REACHABLE, true, Reason::Connected, "");
}

/// A copy succeeded: its counters, then Verified and Ready from the verifier's report.
fn succeeded(d: &mut Draft, outcome: &RunOutcome) {
    let s = &outcome.summary;
    d.st.phase = Phase::Succeeded;
    d.st.counters = Some(counters(s));
    let done = done_message(s);
    completed(d, &done);
    match &outcome.report {
        Some(r) => verified(d, r, done),
        None => {
            let why = if s.dry_run {
                "dry run: nothing was written"
            } else {
                "verify is off"
            };
            d.condition(types::VERIFIED, false, Reason::VerifySkipped, why);
            d.condition(types::READY, true, Reason::Succeeded, done.clone());
            d.notes.push(Note::normal(Reason::Succeeded, done));
        }
    }
}

fn counters(s: &SyncSummary) -> SyncCounters {
    SyncCounters {
        source_nodes: s.source_nodes,
        created: s.created.total(),
        updated: s.updated.total(),
        deleted: s.deleted.total(),
        skipped: s.skipped.total(),
        bytes_written: s.bytes_written,
        write_ops: s.write_ops,
        attempts: s.attempts,
    }
}

/// What a copy did, for Complete, Ready and its Event.
fn done_message(s: &SyncSummary) -> String {
    format!(
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
    )
}

/// The verifier compared both trees after the copy: Ready only when they are equal.
fn verified(d: &mut Draft, r: &verifier::Report, done: String) {
    d.st.verification = Some(verification(r));
    if r.equal {
        let m = format!(
            "source and destination root hashes are equal ({})",
            r.source_root_hash
        );
        d.condition(types::VERIFIED, true, Reason::Equal, m.clone());
        d.condition(types::READY, true, Reason::Succeeded, done.clone());
        d.notes
            .push(Note::normal(Reason::Succeeded, format!("{done}; {m}")));
    } else {
        // The source may have changed during the copy; the next run converges it.
        let m = format!(
            "{} nodes differ after the copy (the source may have changed meanwhile)",
            r.divergent_nodes
        );
        d.condition(types::VERIFIED, false, Reason::Diverged, m.clone());
        d.condition(types::READY, false, Reason::Diverged, m.clone());
        d.notes.push(Note::warning(Reason::Diverged, m));
    }
}

/// The verifier's report as the status shows it, with the first divergent paths.
fn verification(r: &verifier::Report) -> Verification {
    Verification {
        equal: r.equal,
        source_root_hash: r.source_root_hash.clone(),
        destination_root_hash: r.destination_root_hash.clone(),
        source_nodes: r.source_nodes,
        destination_nodes: r.destination_nodes,
        divergent_nodes: r.divergent_nodes,
        divergent_paths: r
            .divergences
            .iter()
            .take(SHOWN_DIVERGENT_PATHS)
            .map(|d| {
                format!(
                    "{} {}",
                    d.class.label(),
                    if d.path.is_empty() { "/" } else { &d.path }
                )
            })
            .collect(),
        duration_seconds: r.duration_seconds,
    }
}
