//! How a command ends when it fails, and its JSON documents.

use std::process::ExitCode;

/// Exit code when the work ran but the trees differ (for `run`: not every Synchronization
/// succeeded with equal trees); 0 is success.
pub const EXIT_DIVERGED: u8 = 1;
/// Exit code of a command that could not do its job.
pub const EXIT_ERROR: u8 = 2;

/// Reports `err` with its causes on stderr (and as a JSON document on stdout with `--json`):
/// [`EXIT_ERROR`].
pub(crate) fn fail(json: bool, err: &dyn std::error::Error) -> ExitCode {
    let msg = crate::runs::cause_chain(err);
    if json {
        println!("{}", serde_json::json!({ "ok": false, "error": msg }));
    }
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_ERROR)
}

pub(crate) fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
