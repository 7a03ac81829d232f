//! A run's [`Report`] as the Switchover's status, and the Events of its steps. Zero data loss
//! is written only when the core proved it ([`DataLoss::None`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Draft, UNFENCE_COMMAND};
use crate::api::automation::{
    DataLossStatus, FenceStatus, LiveSynchronization, SwitchoverPhase, SwitchoverStep,
    SwitchoverVerification,
};
use crate::api::conditions::{types, Reason};
use crate::controllers::live_synchronization::human;
use crate::controllers::note::Note;
use crate::switchover::{
    fence, DataLoss, Failure, LossWindow, Mode, Outcome, Report, Step, StepName, StepState,
    Verification,
};

/// The key [`run_notes`] gives the Event of the run's end (steps are keyed by their index).
pub const END: usize = usize::MAX;

/// Writes the run's report into the status: phase, times, steps and, once it ended, what it
/// achieved (or why not) in the conditions.
pub(super) fn report(d: &mut Draft, r: &Report, live: Option<&LiveSynchronization>) {
    d.st.start_time = Some(Time(r.started));
    d.st.completion_time = r.finished.map(Time);
    d.st.steps = r.steps.iter().map(step_status).collect();
    match &r.outcome {
        None => {
            d.st.phase = SwitchoverPhase::Running;
            let at = r.steps.last().map_or_else(
                || "starting".to_string(),
                |s| format!("{}: {}", s.name, s.message),
            );
            d.condition(types::COMPLETE, false, Reason::Running, at);
        }
        Some(Ok(o)) => {
            d.st.phase = SwitchoverPhase::Complete;
            d.st.rto = Some(human(o.rto));
            d.st.rto_seconds = Some(o.rto.as_secs_f64());
            let loss = data_loss(&o.data_loss);
            let message = complete_message(o, &loss, d.st.new_primary.as_deref());
            d.st.data_loss = Some(loss);
            d.st.verification = Some(verification(o.verification.as_ref()));
            d.st.fence = o.fence.as_ref().map(|f| fence_status(f, false));
            d.st.reverse_live_synchronization_name = o.reverse.clone();
            d.condition(types::COMPLETE, true, Reason::Promoted, message.clone());
            d.condition(types::FAILED, false, Reason::Promoted, message);
        }
        Some(Err(f)) => {
            d.st.phase = SwitchoverPhase::Failed;
            d.st.fence = f.fence.as_ref().map(|x| fence_status(x, f.fence_lifted));
            let message = failed_message(f, r, live);
            d.condition(types::FAILED, true, f.reason, message.clone());
            d.condition(types::COMPLETE, false, f.reason, message);
        }
    }
}

fn fence_status(f: &fence::Fenced, lifted: bool) -> FenceStatus {
    FenceStatus {
        nodes: f.nodes,
        record: f.record.clone(),
        lifted,
    }
}

pub(super) fn step_status(s: &Step) -> SwitchoverStep {
    SwitchoverStep {
        name: s.name.to_string(),
        state: s.state.to_string(),
        start_time: Time(s.started),
        end_time: s.finished.map(Time),
        message: s.message.clone(),
    }
}

fn complete_message(o: &Outcome, loss: &DataLossStatus, new: Option<&str>) -> String {
    let new = new.map_or("Promoted: the new primary takes writes".to_string(), |n| {
        format!("Database {n} is the primary")
    });
    let mut m = format!("{new}; RTO {}; data loss: {}", human(o.rto), loss.summary);
    if let Some(r) = &o.reverse {
        m.push_str(&format!(
            "; the reverse LiveSynchronization {r} streams back"
        ));
    }
    if let Some(e) = &o.reverse_error {
        m.push_str(&format!("; {e}"));
    }
    m
}

/// The failure, what was undone, and what a failed rollback left behind.
fn failed_message(f: &Failure, r: &Report, live: Option<&LiveSynchronization>) -> String {
    let mut m = format!("{} failed: {}", f.step, f.message);
    let done = |n: StepName| {
        r.steps
            .iter()
            .any(|s| s.name == n && s.state == StepState::Succeeded)
    };
    let rollback = r.steps.iter().rev().find(|s| s.name == StepName::Rollback);
    match rollback {
        Some(_) if f.rolled_back => {
            m.push_str(". Rolled back: the old primary serves as before and the stream runs again")
        }
        Some(s) => {
            m.push_str(&format!(". The rollback failed: {}", s.message));
            if done(StepName::Fence) {
                if let Some(l) = live {
                    let c = &l.spec.config;
                    m.push_str(&format!(". Lift the fence (recorded at {}) with `kubectl exec` into the operator pod: {UNFENCE_COMMAND} --servers <servers of Database {}> --root-path {} --auth <its user:password>", fence::record_path(&c.root_path), c.source_name, c.root_path));
                }
            }
        }
        None => m.push_str(". Nothing was changed"),
    }
    m
}

/// Proven zero only for [`DataLoss::None`]; the window otherwise, never a count of changes.
pub(super) fn data_loss(d: &DataLoss) -> DataLossStatus {
    match d {
        DataLoss::None { source_zxid } => DataLossStatus {
            proven: true,
            changes_lost: Some(0),
            summary: "0 (verified)".into(),
            source_zxid: Some(format!("{source_zxid:#x}")),
            ..DataLossStatus::default()
        },
        DataLoss::Window(w) => window(w),
    }
}

fn window(w: &LossWindow) -> DataLossStatus {
    let mut summary = match w.window {
        Some(d) => format!("up to {} (unverified)", human(d)),
        None => "unknown (unverified)".to_string(),
    };
    if let Some(n) = w.divergent_nodes {
        // Nodes differing now are not changes lost: one node may hide many changes, or
        // differ for another reason.
        summary = format!("{summary}; {n} nodes differ");
    }
    DataLossStatus {
        proven: false,
        changes_lost: None,
        summary,
        source_zxid: None,
        verified_zxid: w.verified_zxid.map(|z| format!("{z:#x}")),
        verified_time: w.verified_at.map(Time),
        last_change_applied_time: w.last_change_applied.map(Time),
        caught_up_time: w.caught_up_at.map(Time),
        source_last_seen_time: w.source_last_seen.map(Time),
        window: w.window.map(human),
        window_seconds: w.window.map(|d| d.as_secs_f64()),
        divergent_nodes: w.divergent_nodes,
    }
}

fn verification(v: Option<&Verification>) -> SwitchoverVerification {
    let Some(v) = v else {
        return SwitchoverVerification {
            result: "NotRun".into(),
            ..SwitchoverVerification::default()
        };
    };
    SwitchoverVerification {
        result: if v.equal { "Equal" } else { "Diverged" }.into(),
        source_root_hash: Some(v.source_root_hash.clone()),
        destination_root_hash: Some(v.destination_root_hash.clone()),
        source_nodes: v.source_nodes,
        destination_nodes: v.destination_nodes,
        divergent_nodes: v.divergent_nodes,
        divergent_paths: v.divergent_paths.clone(),
    }
}

/// One Event per step that ended (skipped ones are only in the status), keyed by the step's
/// index, and one for the end of the run keyed [`END`]. The driver publishes each key once.
pub fn run_notes(r: &Report) -> Vec<(usize, Note)> {
    let failure = match &r.outcome {
        Some(Err(f)) => Some(f),
        _ => None,
    };
    let mut out: Vec<(usize, Note)> = r
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let text = format!("{}: {}", s.name, s.message);
            let note = match s.state {
                StepState::Running | StepState::Skipped => return None,
                StepState::Succeeded => Note::normal(succeeded_reason(r.mode, s.name), text),
                StepState::Failed => {
                    let reason = match failure {
                        Some(f) if f.step == s.name => f.reason,
                        _ if s.name == StepName::Rollback => Reason::Interrupted,
                        _ if s.name == StepName::Reverse => Reason::ReverseNotStarted,
                        _ => Reason::VerifyFailed,
                    };
                    Note::warning(reason, text)
                }
            };
            Some((i, note))
        })
        .collect();
    match &r.outcome {
        Some(Ok(o)) => {
            let loss = data_loss(&o.data_loss);
            let text = complete_message(o, &loss, None);
            let note = match o.reverse_error {
                Some(_) => Note::warning(Reason::ReverseNotStarted, text),
                None => Note::normal(Reason::Promoted, text),
            };
            out.push((END, note));
        }
        Some(Err(f)) => out.push((
            END,
            Note::warning(f.reason, format!("{} failed: {}", f.step, f.message)),
        )),
        None => {}
    }
    out
}

fn succeeded_reason(mode: Mode, step: StepName) -> Reason {
    match step {
        StepName::Verify if mode == Mode::Planned => Reason::Equal,
        StepName::Promote => Reason::Promoted,
        StepName::Rollback => Reason::RolledBack,
        _ => Reason::Succeeded,
    }
}
