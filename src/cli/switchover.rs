//! `switchover`: makes the destination the primary, the same steps as a Switchover resource.
//! The stream it takes over runs in this process: it is started from the same flags as
//! `sync --continuous`, caught up, and then switched over. With `--reverse` the reverse stream
//! runs here until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::continuous::{continuous_options, stop_on_signal};
use super::flags::{seconds, CliError};
use super::output::fail;
use super::sync::{sync_options, SyncArgs};
use crate::continuous::Continuous;
use crate::engine::live::DestinationDiff;
use crate::switchover::local::Local;
use crate::switchover::{self, DataLoss, FenceMode, Mode, Progress, Report, SwitchoverOptions};

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub sync: SyncArgs,
    /// planned: the source answers, zero data loss is proven or nothing changes; unplanned:
    /// the source is lost, the data-loss window is reported.
    #[arg(long, value_enum, default_value_t = ModeArg::Planned)]
    pub mode: ModeArg,
    /// planned only: acl makes the source tree read-only for all but the source credentials
    /// (recording the ACLs it replaces); none leaves stopping the writers to you.
    #[arg(long, value_enum, default_value_t = FenceArg::None)]
    pub fence: FenceArg,
    /// Then stream the new primary back to the old one until SIGINT or SIGTERM.
    #[arg(long)]
    pub reverse: bool,
    /// How long a planned switchover waits to catch up and verify before it rolls back.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Planned,
    Unplanned,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FenceArg {
    None,
    Acl,
}

/// The exit code of a switchover that failed (refused or rolled back).
const EXIT_FAILED: u8 = 1;
/// How often the steps are printed as they end.
const TICK: Duration = Duration::from_millis(100);

pub async fn run_switchover(a: SwitchoverArgs) -> ExitCode {
    let json = a.sync.endpoints.json;
    let so = match options(&a) {
        Ok(so) => so,
        Err(e) => return fail(json, &e),
    };
    let co = match continuous_options(&a.sync, so.sync.clone()) {
        Ok(co) => co,
        Err(e) => return fail(json, e.as_ref()),
    };
    let stop = stop_on_signal();
    let local = Local::new(
        co.clone(),
        Continuous::start(co, Vec::new(), None),
        "cli reverse",
    );
    let progress = Progress::new(so.mode, jiff::Timestamp::now());
    let printer = tokio::spawn(print_steps(progress.clone()));
    let result = switchover::run(&so, &local, &progress).await;
    // The printer prints what is left, then ends.
    tokio::time::sleep(TICK * 2).await;
    printer.abort();
    let report = progress.report();
    if json {
        println!("{}", report_json(&report));
    }
    match result {
        Ok(out) => {
            eprintln!(
                "switchover: complete in {:.2}s; data loss: {}",
                out.rto.as_secs_f64(),
                loss_line(&out.data_loss)
            );
            if let Some(e) = &out.reverse_error {
                eprintln!("switchover: {e}");
            }
            if let Some(rev) = local.take_reverse() {
                eprintln!("switchover: the reverse stream runs until SIGINT or SIGTERM");
                let mut stop = stop;
                let mut said = None;
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(TICK) => {}
                    }
                    if let Some((at, d)) = rev.snapshot().destination_diff {
                        if said.replace(at) != Some(at) {
                            eprintln!("switchover: {}", diff_line(&d));
                        }
                    }
                }
                let _ = rev.stop().await;
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!(
                "switchover: failed at {}: {}{}",
                f.step,
                f.message,
                if f.rolled_back {
                    " (rolled back: the old primary serves as before)"
                } else {
                    ""
                }
            );
            if let Some(c) = local.take_running() {
                let _ = c.stop().await;
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn options(a: &SwitchoverArgs) -> Result<SwitchoverOptions, CliError> {
    let mut sync = sync_options(&a.sync)?;
    sync.holder = format!("cli switchover (pid {})", std::process::id());
    let mode = match a.mode {
        ModeArg::Planned => Mode::Planned,
        ModeArg::Unplanned => Mode::Unplanned,
    };
    let fence = match (a.fence, mode) {
        (FenceArg::None, _) => FenceMode::None,
        (FenceArg::Acl, Mode::Planned) => FenceMode::Acl,
        (FenceArg::Acl, Mode::Unplanned) => return Err(CliError::InvalidFlag {
            flag: "--fence",
            message:
                "acl applies to a planned switchover only: an unplanned one cannot reach the source"
                    .into(),
        }),
    };
    Ok(SwitchoverOptions {
        sync,
        mode,
        fence,
        reverse: a.reverse,
        timeout: seconds("--timeout", a.timeout)?,
        holder: format!("cli switchover (pid {})", std::process::id()),
    })
}

/// Prints each step to stderr as it ends.
async fn print_steps(progress: Progress) {
    let mut printed = 0;
    loop {
        let r = progress.report();
        for s in r.steps.iter().skip(printed) {
            if s.finished.is_none() {
                break;
            }
            eprintln!(
                "switchover: {:<10} {:<9} {}",
                s.name.to_string(),
                s.state.to_string(),
                s.message
            );
            printed += 1;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// What the reverse stream found on the old primary before its first full sync.
fn diff_line(d: &DestinationDiff) -> String {
    if !d.loses_anything() {
        return format!(
            "the reverse stream compared the trees: the old primary holds nothing the new one lacks ({} nodes to create there)",
            d.only_on_source
        );
    }
    let paths: Vec<String> = d
        .paths
        .iter()
        .map(|p| format!("{} ({})", p.path, p.class.label()))
        .collect();
    format!("the old primary held {} nodes the new one does not have and {} that differ, e.g. {}: the differing ones are overwritten; deletes of the others go through the deletion guard", d.only_on_destination, d.changed, paths.join(", "))
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

fn ts(t: Option<jiff::Timestamp>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| t.to_string().into())
}

/// The report as one JSON object.
fn report_json(r: &Report) -> serde_json::Value {
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
