//! Switchover: make a LiveSynchronization's destination the primary, once, like a Job. Pure
//! decisions here ([`desired`], [`blocking`]); the run is [`crate::switchover::run`], the kube
//! glue [`crate::operator::switchover`].
//!
//! One file per job: this one decides whether a Switchover may start (its input) and what a
//! Switchover whose run this process lost becomes; `report` turns the run's
//! [`Report`](crate::switchover::Report) into the status and its Events.

mod report;
pub mod reverse;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{LiveSynchronization, Switchover, SwitchoverPhase, SwitchoverStatus};
use crate::api::conditions::{types, Reason};
use crate::controllers::draft;
use crate::controllers::note::Note;
use crate::resolve::{switchover_timeout, ResolveError};
use crate::switchover::{fence, Report, StepName, StepState, SwitchoverOptions};
pub use report::run_notes;

/// How often a running switchover's progress is written to its status.
pub const POLL: Duration = Duration::from_secs(1);

/// The CLI command that lifts a fence a switchover left behind (run inside the operator pod,
/// which has the Database credentials at hand).
pub const UNFENCE_COMMAND: &str = "resiliency-operator unfence";

#[derive(Debug)]
pub enum SwitchoverAction {
    Nothing,
    /// Start the run in the background.
    Start(Box<SwitchoverOptions>),
    /// Refused, or lost, before it could end: the status says Failed; the driver counts it as
    /// a failed run. Nothing else is changed.
    Fail {
        reason: Reason,
        message: String,
    },
}

pub type SwitchoverDecision = draft::Decision<SwitchoverStatus, SwitchoverAction>;
type Draft = draft::Draft<SwitchoverStatus>;

/// What the driver saw.
#[derive(Clone, Copy, Default)]
pub struct Observed<'a> {
    /// The LiveSynchronization named by spec.liveSynchronizationName.
    pub live: Option<&'a LiveSynchronization>,
    /// Another unfinished Switchover of the same LiveSynchronization that goes first (see
    /// [`blocking`]).
    pub blocking: Option<&'a str>,
    /// This Switchover's run in this process, if there is one.
    pub run: Option<&'a Report>,
}

/// Decides the status and what to do from the spec, the stored status, what the driver saw
/// and `now`. `resolve` (called only when the run is to start) gives the engine settings.
pub fn desired(
    sw: &Switchover,
    seen: Observed<'_>,
    resolve: impl FnOnce(&LiveSynchronization) -> Result<SwitchoverOptions, ResolveError>,
    now: Timestamp,
) -> SwitchoverDecision {
    let stored = sw.status.clone().unwrap_or_default();
    let mut d = Draft::new(sw.status.as_ref(), sw.metadata.generation, now);
    if let Some(live) = seen.live {
        primaries(&mut d.st, live);
    }
    if let Some(run) = seen.run {
        report::report(&mut d, run, seen.live);
        // Polled until the stored status shows the end, so the driver can let the run go.
        let requeue = (!stored.phase.is_finished()).then_some(POLL);
        return d.decide(SwitchoverAction::Nothing, requeue);
    }
    match stored.phase {
        SwitchoverPhase::Complete | SwitchoverPhase::Failed => {
            d.decide(SwitchoverAction::Nothing, None)
        }
        SwitchoverPhase::Running => {
            let message = interrupted(&mut d.st, seen.live, now);
            refuse(d, Reason::Interrupted, message)
        }
        SwitchoverPhase::Pending => match start(sw, seen) {
            Err((reason, message)) => refuse(d, reason, message),
            Ok(live) => match resolve(live) {
                Err(e) => refuse(d, e.reason(), e.to_string()),
                Ok(opts) => {
                    d.st.phase = SwitchoverPhase::Running;
                    d.st.start_time = Some(Time(now));
                    d.condition(
                        types::COMPLETE,
                        false,
                        Reason::Running,
                        "starting: preflight",
                    );
                    d.decide(SwitchoverAction::Start(Box::new(opts)), Some(POLL))
                }
            },
        },
    }
}

/// The checks before a run starts: the LiveSynchronization exists and streams, the timeout is
/// a duration, and no other Switchover of it goes first.
fn start<'a>(
    sw: &Switchover,
    seen: Observed<'a>,
) -> Result<&'a LiveSynchronization, (Reason, String)> {
    let name = &sw.spec.live_synchronization_name;
    let ns = sw.metadata.namespace.as_deref().unwrap_or_default();
    let live = match seen.live {
        Some(l) if l.metadata.deletion_timestamp.is_none() => l,
        Some(_) => {
            return Err((
                Reason::LiveSynchronizationNotFound,
                format!("spec.liveSynchronizationName: LiveSynchronization {name} is being deleted in namespace {ns}"),
            ))
        }
        None => {
            return Err((
                Reason::LiveSynchronizationNotFound,
                format!("spec.liveSynchronizationName: LiveSynchronization {name} not found in namespace {ns}"),
            ))
        }
    };
    switchover_timeout(sw).map_err(|e| (e.reason(), e.to_string()))?;
    if live.spec.suspend {
        return Err((
            Reason::Suspended,
            format!("LiveSynchronization {name} is suspended (spec.suspend: true), so there is no stream to switch over: resume it first (mode: planned needs it streaming)"),
        ));
    }
    if let Some(other) = seen.blocking {
        return Err((
            Reason::SwitchoverRunning,
            format!("Switchover {other} is already under way for LiveSynchronization {name}: one at a time; create this one again once it has finished"),
        ));
    }
    Ok(live)
}

/// A Switchover that ends before its run started, or whose run this process lost: Failed, with
/// one Warning Event. Nothing else is changed.
fn refuse(mut d: Draft, reason: Reason, message: String) -> SwitchoverDecision {
    let now = d.now;
    d.st.phase = SwitchoverPhase::Failed;
    d.st.start_time.get_or_insert(Time(now));
    d.st.completion_time = Some(Time(now));
    d.condition(types::FAILED, true, reason, message.clone());
    d.condition(types::COMPLETE, false, reason, message.clone());
    d.notes.push(Note::warning(reason, message.clone()));
    d.decide(SwitchoverAction::Fail { reason, message }, None)
}

/// The old and the new primary: the stream's source and destination Databases.
fn primaries(st: &mut SwitchoverStatus, live: &LiveSynchronization) {
    st.old_primary = Some(live.spec.config.source_name.clone());
    st.new_primary = Some(live.spec.config.destination_name.clone());
}

/// The status says Running but no run of it is in this process (the operator restarted or
/// lost its Lease mid-run): the step it was at ends Failed, and the message says what was
/// left behind. Returns that message.
fn interrupted(
    st: &mut SwitchoverStatus,
    live: Option<&LiveSynchronization>,
    now: Timestamp,
) -> String {
    let succeeded = |n: StepName| {
        st.steps
            .iter()
            .any(|s| s.name == n.to_string() && s.state == StepState::Succeeded.to_string())
    };
    let rolled_back = succeeded(StepName::Rollback);
    let fenced = succeeded(StepName::Fence) && !rolled_back;
    let stopped = succeeded(StepName::StopStream) && !rolled_back;
    let at = st
        .steps
        .last()
        .map_or(StepName::Preflight.to_string(), |s| s.name.clone());
    let mut message = format!("the operator restarted or lost its Lease during step {at}: this switchover was interrupted and will not resume; create a new Switchover to try again");
    if fenced {
        let (record, db, root) = match live {
            Some(l) => (
                fence::record_path(&l.spec.config.root_path),
                l.spec.config.source_name.as_str(),
                l.spec.config.root_path.as_str(),
            ),
            None => (format!("{}/...", fence::FENCES), "the source", "<rootPath>"),
        };
        message.push_str(&format!(". The fence stays on the old primary: its original ACLs are recorded at {record} on {db} until lifted, with `kubectl exec` into the operator pod: {UNFENCE_COMMAND} --servers <servers of Database {db}> --root-path {root} --auth <its user:password>"));
    }
    if stopped && !succeeded(StepName::Promote) {
        let name = live.map_or("the LiveSynchronization", |l| {
            l.metadata.name.as_deref().unwrap_or_default()
        });
        message.push_str(&format!(". The stream was stopped: {name} stays suspended (spec.suspend: true) until you set it false"));
    }
    for s in st
        .steps
        .iter_mut()
        .filter(|s| s.state == StepState::Running.to_string())
    {
        s.state = StepState::Failed.to_string();
        s.end_time = Some(Time(now));
        s.message = "interrupted".into();
    }
    message
}

/// The other unfinished Switchover of the same LiveSynchronization that goes before `me`, by
/// name: one that runs (its status says so, or `running_here` knows its UID) always; else the
/// oldest waiting one (by creation time, then name).
pub fn blocking<'a>(
    me: &Switchover,
    others: impl IntoIterator<Item = &'a Switchover>,
    running_here: impl Fn(&str) -> bool,
) -> Option<String> {
    let ns = &me.metadata.namespace;
    let key = |s: &Switchover| {
        (
            s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            s.metadata.name.clone().unwrap_or_default(),
        )
    };
    let rivals: Vec<&Switchover> = others
        .into_iter()
        .filter(|s| s.metadata.uid != me.metadata.uid && &s.metadata.namespace == ns)
        .filter(|s| s.spec.live_synchronization_name == me.spec.live_synchronization_name)
        .filter(|s| !s.status.as_ref().is_some_and(|st| st.phase.is_finished()))
        .collect();
    let runs = |s: &&&Switchover| {
        s.status
            .as_ref()
            .is_some_and(|st| st.phase == SwitchoverPhase::Running)
            || s.metadata.uid.as_deref().is_some_and(&running_here)
    };
    rivals
        .iter()
        .find(runs)
        .or_else(|| {
            rivals
                .iter()
                .filter(|s| key(s) < key(me))
                .min_by_key(|s| key(s))
        })
        .and_then(|s| s.metadata.name.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
