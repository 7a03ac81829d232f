//! A switchover of a stream that runs in this process, as the CLI's `switchover` and
//! standalone mode's Switchover documents drive it: wait until the stream streams and has
//! caught up, run the core's steps over a [`Local`], say each step as it starts and as it
//! ends, then how it ended. The report as JSON is here too, so both print the same.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;

use crate::switchover::local::Local;
use crate::switchover::{
    self, DataLoss, Failure, Mode, Outcome, Progress, Report, Step, StepName, StepState, Stream,
    SwitchoverOptions,
};
use crate::Reason;

/// How often the steps are looked at while the switchover runs.
const TICK: Duration = Duration::from_millis(100);
/// How often the stream is looked at while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// A switchover that ended, one way or the other.
pub struct Ended {
    pub report: Report,
    pub result: Result<Outcome, Failure>,
    /// The RTO when complete, the time to fail otherwise (what the metrics record).
    pub seconds: f64,
}

/// Waits for the stream, then switches it over, passing each line to `say`. A planned
/// switchover does not begin (nothing is fenced) while the stream's first full sync runs: it
/// waits, up to the timeout, for the stream to stream with nothing pending, and fails
/// without changing anything when it does not. An unplanned one waits as long at most, and
/// not at all once the source is known unreachable; then it goes on anyway. `stop` turning
/// true (SIGINT or SIGTERM) while it waits ends it there, unbegun; once begun, it runs to
/// its end (a half-done switchover is worse than a late exit).
pub async fn switch_over(
    so: &SwitchoverOptions,
    local: &Local,
    say: &(dyn Fn(&str) + Sync),
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let started = Instant::now();
    let requested = Timestamp::now();
    say(&format!(
        "waiting for the stream to finish its first full sync and catch up (at most {})",
        crate::controllers::live_synchronization::human(so.timeout)
    ));
    let waited = tokio::select! {
        w = wait_caught_up(local, so.mode, so.timeout) => w,
        _ = stop.wait_for(|s| *s) => Err((Reason::Interrupted, "stopped by SIGINT or SIGTERM before it began".into())),
    };
    match waited {
        Ok(()) => say("the stream streams with nothing pending: switching over"),
        Err((reason, why)) if so.mode == Mode::Unplanned && reason != Reason::Interrupted => {
            say(&format!("{why}: failing over without it (mode: unplanned)"));
        }
        Err((reason, why)) => {
            let f = Failure {
                step: StepName::Preflight,
                reason,
                message: format!("{why}; nothing was changed"),
                // Nothing to undo: the old primary serves as before.
                rolled_back: true,
                fence: None,
                fence_lifted: false,
            };
            let report = not_begun(so.mode, requested, &f);
            for s in &report.steps {
                say(&step_line(s));
            }
            let result = Err(f);
            say(&end_line(&result));
            return Ended {
                report,
                result,
                seconds: started.elapsed().as_secs_f64(),
            };
        }
    }
    let progress = Progress::new(so.mode, Timestamp::now());
    let mut lines = StepLines::default();
    let run = switchover::run(so, local, &progress);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tokio::time::sleep(TICK) => {
                for l in lines.new_lines(&progress.report()) {
                    say(&l);
                }
            }
        }
    };
    let report = progress.report();
    for l in lines.new_lines(&report) {
        say(&l);
    }
    say(&end_line(&result));
    let seconds = match &result {
        Ok(o) => o.rto.as_secs_f64(),
        Err(_) => started.elapsed().as_secs_f64(),
    };
    Ended {
        report,
        result,
        seconds,
    }
}

/// Until the stream streams, its first full sync done and nothing pending; the reason and
/// why not when it does not within `timeout` (at once when it failed, or, unplanned, when
/// the source is known unreachable).
async fn wait_caught_up<S: Stream>(
    stream: &S,
    mode: Mode,
    timeout: Duration,
) -> Result<(), (Reason, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(snap) = stream.snapshot() else {
            return Err((Reason::StreamNotRunning, "the stream does not run".into()));
        };
        if let Some((_, why)) = &snap.failed {
            return Err((
                Reason::StreamNotRunning,
                format!("the stream stopped on an error: {why}"),
            ));
        }
        if snap.streaming() && snap.full_syncs >= 1 && snap.caught_up {
            return Ok(());
        }
        if let (Mode::Unplanned, crate::continuous::Reach::Unreachable(why)) = (mode, &snap.source)
        {
            return Err((
                Reason::Unreachable,
                format!("the source does not answer ({why})"),
            ));
        }
        if Instant::now() >= deadline {
            return Err((
                Reason::CatchUpTimeout,
                format!(
                    "the stream did not finish its first full sync and catch up within {} ({:?}: {}); spec.timeout allows more",
                    crate::controllers::live_synchronization::human(timeout),
                    snap.state,
                    snap.why
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The report of a switchover that never began: its Preflight failed while waiting.
fn not_begun(mode: Mode, started: Timestamp, f: &Failure) -> Report {
    let now = Timestamp::now();
    Report {
        mode,
        started,
        finished: Some(now),
        steps: vec![Step {
            name: StepName::Preflight,
            state: StepState::Failed,
            started,
            finished: Some(now),
            message: f.message.clone(),
        }],
        outcome: Some(Err(f.clone())),
    }
}

/// Which lines of the steps were said: each step once as it starts (when it is seen
/// running) and once as it ends.
#[derive(Default)]
struct StepLines {
    /// Per step (by index; steps are only ever appended): whether its end was said.
    ended: Vec<bool>,
}

impl StepLines {
    fn new_lines(&mut self, r: &Report) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in r.steps.iter().enumerate() {
            if i == self.ended.len() {
                self.ended.push(false);
                if s.finished.is_none() {
                    out.push(step_line(s));
                    continue;
                }
            }
            if s.finished.is_some() && !self.ended[i] {
                self.ended[i] = true;
                out.push(step_line(s));
            }
        }
        out
    }
}

/// One step: its name, state and message, e.g. `Fence      Succeeded 1342 nodes read-only ...`.
pub fn step_line(s: &Step) -> String {
    format!(
        "{:<10} {:<9} {}",
        s.name.to_string(),
        s.state.to_string(),
        s.message
    )
}

/// How it ended: the RTO and the data loss, or the step that failed and whether it rolled
/// back.
pub fn end_line(r: &Result<Outcome, Failure>) -> String {
    match r {
        Ok(out) => format!(
            "complete in {:.2}s; data loss: {}{}",
            out.rto.as_secs_f64(),
            loss_line(&out.data_loss),
            out.reverse_error
                .as_ref()
                .map_or(String::new(), |e| format!("; {e}"))
        ),
        Err(f) => format!(
            "failed at {}: {}{}",
            f.step,
            f.message,
            if f.rolled_back {
                " (rolled back: the old primary serves as before)"
            } else {
                ""
            }
        ),
    }
}

/// What a reverse stream found on the old primary before its first full sync, once per
/// comparison: `said` keeps the time of the last one said.
pub fn diff_line(
    said: &mut Option<Timestamp>,
    snap: &crate::continuous::Snapshot,
) -> Option<String> {
    let (at, d) = snap.destination_diff.as_ref()?;
    if said.replace(*at) == Some(*at) {
        return None;
    }
    if !d.loses_anything() {
        return Some(format!(
            "the reverse stream compared the trees: the old primary holds nothing the new one lacks ({} nodes to create there)",
            d.only_on_source
        ));
    }
    let paths: Vec<String> = d
        .paths
        .iter()
        .map(|p| format!("{} ({})", p.path, p.class.label()))
        .collect();
    Some(format!("the old primary held {} nodes the new one does not have and {} that differ, e.g. {}: the differing ones are overwritten; deletes of the others go through the deletion guard", d.only_on_destination, d.changed, paths.join(", ")))
}

fn loss_line(d: &DataLoss) -> String {
    match d {
        DataLoss::None { source_zxid } => format!("0 changes (verified up to zxid {source_zxid:#x})"),
        DataLoss::Window(w) => match w.window {
            Some(win) => format!("unverified: changes in the last {:.1}s before the source was last seen may be missing", win.as_secs_f64()),
            None => "unknown (unverified): this process saw no stream before the failover".into(),
        },
    }
}

fn ts(t: Option<Timestamp>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| t.to_string().into())
}

/// The report as one JSON object.
pub fn report_json(r: &Report) -> serde_json::Value {
    use serde_json::json;
    let steps: Vec<_> = r
        .steps
        .iter()
        .map(|s| json!({"name": s.name.to_string(), "state": s.state.to_string(), "start": s.started.to_string(), "end": ts(s.finished), "message": s.message}))
        .collect();
    let mut out = json!({"mode": r.mode.to_string(), "start": r.started.to_string(), "end": ts(r.finished), "steps": steps});
    match &r.outcome {
        Some(Ok(o)) => {
            let loss = match &o.data_loss {
                DataLoss::None { source_zxid } => {
                    json!({"proven": true, "changesLost": 0, "sourceZxid": format!("{source_zxid:#x}")})
                }
                DataLoss::Window(w) => json!({
                    "proven": false, "changesLost": null,
                    "verifiedZxid": w.verified_zxid.map(|z| format!("{z:#x}")), "verifiedTime": ts(w.verified_at),
                    "lastChangeAppliedTime": ts(w.last_change_applied), "caughtUpTime": ts(w.caught_up_at),
                    "sourceLastSeenTime": ts(w.source_last_seen), "windowSeconds": w.window.map(|d| d.as_secs_f64()),
                    "divergentNodes": w.divergent_nodes,
                }),
            };
            out["ok"] = true.into();
            out["rtoSeconds"] = o.rto.as_secs_f64().into();
            out["dataLoss"] = loss;
            out["verification"] = o.verification.as_ref().map_or(serde_json::Value::Null, |v| json!({
                "equal": v.equal, "sourceRootHash": v.source_root_hash, "destinationRootHash": v.destination_root_hash,
                "sourceNodes": v.source_nodes, "destinationNodes": v.destination_nodes, "divergentNodes": v.divergent_nodes,
                "divergentPaths": v.divergent_paths,
            }));
            out["fence"] = o.fence.as_ref().map_or(
                serde_json::Value::Null,
                |f| json!({"nodes": f.nodes, "record": f.record}),
            );
            out["reverse"] = o.reverse.clone().into();
            out["reverseError"] = o.reverse_error.clone().into();
        }
        Some(Err(f)) => {
            out["ok"] = false.into();
            out["error"] = json!({"step": f.step.to_string(), "reason": f.reason.as_str(), "message": f.message, "rolledBack": f.rolled_back});
            out["fence"] = f.fence.as_ref().map_or(
                serde_json::Value::Null,
                |x| json!({"nodes": x.nodes, "record": x.record, "lifted": f.fence_lifted}),
            );
        }
        None => {}
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn step(name: StepName, state: StepState, finished: bool, message: &str) -> Step {
        let t = Timestamp::from_second(1_000).unwrap();
        Step {
            name,
            state,
            started: t,
            finished: finished.then_some(t),
            message: message.into(),
        }
    }

    #[test]
    fn each_step_is_said_as_it_starts_and_as_it_ends() {
        let mut r = not_begun(
            Mode::Planned,
            Timestamp::from_second(1_000).unwrap(),
            &Failure {
                step: StepName::Preflight,
                reason: Reason::CatchUpTimeout,
                message: "m".into(),
                rolled_back: true,
                fence: None,
                fence_lifted: false,
            },
        );
        r.steps = vec![step(
            StepName::Preflight,
            StepState::Running,
            false,
            "checking",
        )];
        let mut lines = StepLines::default();
        assert_eq!(
            lines.new_lines(&r),
            ["Preflight  Running   checking".to_string()]
        );
        assert!(lines.new_lines(&r).is_empty());
        r.steps[0] = step(StepName::Preflight, StepState::Succeeded, true, "ok");
        // A skipped step is appended ended: said once.
        r.steps.push(step(
            StepName::Fence,
            StepState::Skipped,
            true,
            "fence: none",
        ));
        r.steps.push(step(
            StepName::CatchUp,
            StepState::Running,
            false,
            "waiting",
        ));
        assert_eq!(
            lines.new_lines(&r),
            [
                "Preflight  Succeeded ok",
                "Fence      Skipped   fence: none",
                "CatchUp    Running   waiting"
            ]
        );
        assert!(lines.new_lines(&r).is_empty());
    }

    #[test]
    fn a_switchover_that_never_began_reports_a_failed_preflight() {
        let f = Failure {
            step: StepName::Preflight,
            reason: Reason::CatchUpTimeout,
            message: "the stream did not catch up; nothing was changed".into(),
            rolled_back: true,
            fence: None,
            fence_lifted: false,
        };
        let r = not_begun(Mode::Planned, Timestamp::now(), &f);
        let j = report_json(&r);
        assert_eq!(j["ok"], false);
        assert_eq!(j["error"]["reason"], "CatchUpTimeout");
        assert_eq!(j["steps"][0]["name"], "Preflight");
        assert_eq!(j["steps"][0]["state"], "Failed");
        assert!(end_line(&Err(f)).starts_with("failed at Preflight: the stream did not"));
    }
}
