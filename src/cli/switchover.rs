//! `switchover`: makes the destination the primary, the same steps as a Switchover resource.
//! The stream it takes over runs in this process: it is started from the same flags as
//! `sync --continuous`, waited for until it streams and has caught up, and then switched over
//! ([`crate::local_switchover`], shared with standalone mode). With `--reverse` the reverse
//! stream runs here until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::continuous::{continuous_options, stop_on_signal};
use super::flags::{seconds, CliError};
use super::output::fail;
use super::sync::{sync_options, SyncArgs};
use crate::continuous::Continuous;
use crate::local_switchover::{diff_line, report_json, switch_over};
use crate::switchover::local::Local;
use crate::switchover::{FenceMode, Mode, SwitchoverOptions};

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
    /// How long the stream may take to finish its first full sync and catch up before the
    /// switchover begins (planned: it then fails, changing nothing; unplanned: it goes on),
    /// and how long a planned switchover waits to catch up and verify before it rolls back.
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
    let say = |line: &str| eprintln!("switchover: {line}");
    let ended = switch_over(&so, &local, &say, stop.clone()).await;
    if json {
        println!("{}", report_json(&ended.report));
    }
    if ended.result.is_err() {
        if let Some(c) = local.take_running() {
            let _ = c.stop().await;
        }
        return ExitCode::from(EXIT_FAILED);
    }
    if let Some(rev) = local.take_reverse() {
        eprintln!("switchover: the reverse stream runs until SIGINT or SIGTERM");
        let mut stop = stop;
        let mut said = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if let Some(line) = diff_line(&mut said, &rev.snapshot()) {
                say(&line);
            }
        }
        let _ = rev.stop().await;
    }
    ExitCode::SUCCESS
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
