//! `restore`: a snapshot into an absent or empty path.

use std::error::Error;
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::jiff::Timestamp;

use super::flags::{CliError, Credentials, Side, Wording, CONNECT_TIMEOUT, DESTINATION};
use super::output::{fail, print_json};
use super::store::StoreArgs;
use crate::backup::{self, RestoreOptions, Selector};

/// The `--snapshot` that picks the newest one.
const LATEST: &str = "latest";

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Where the snapshots are: /dir, file:///dir, s3://bucket[/prefix] or gs://bucket[/prefix].
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Snapshot name, or `latest`.
    #[arg(long, default_value = LATEST, conflicts_with = "before")]
    pub snapshot: String,
    /// The last snapshot taken at or before this time (RFC 3339, e.g. 2026-11-24T06:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Ensemble to restore into, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub destination: String,
    /// Where the snapshot's root goes: an absent or empty node.
    #[arg(long, value_name = "PATH")]
    pub root_path: String,
    #[command(flatten)]
    pub destination_auth: Credentials<RestoreWording>,
    #[arg(long, default_value_t = CONNECT_TIMEOUT, value_name = "SECONDS")]
    pub connect_timeout: f64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone)]
pub struct RestoreWording;

impl Wording for RestoreWording {
    const SIDE: Side = DESTINATION;
    const HELP: Option<&'static str> = None;
    const FILE_HELP: Option<&'static str> = None;
}

pub async fn run_restore(a: RestoreArgs) -> ExitCode {
    let json = a.store.json;
    let o = match options(&a) {
        Ok(o) => o,
        Err(e) => return fail(json, &*e),
    };
    match backup::restore(&o).await {
        Ok(s) => {
            if json {
                print_json(&serde_json::json!({"ok": true, "restore": s}));
            } else {
                println!(
                    "restored {} nodes ({} data bytes) of {} into {} in {:.1}s",
                    s.nodes, s.data_bytes, s.snapshot, s.destination_root, s.duration_seconds
                );
                println!("verified: root hash {} equals the manifest's", s.root_hash);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(json, &e),
    }
}

fn options(a: &RestoreArgs) -> Result<RestoreOptions, Box<dyn Error>> {
    let destination = a
        .destination_auth
        .connect(&a.destination, a.connect_timeout)?;
    let location = a.store.location("--from", &a.from)?;
    Ok(RestoreOptions::new(
        location,
        selector(a)?,
        destination,
        &a.root_path,
    ))
}

/// `--before`, or `--snapshot` by name or `latest`.
fn selector(a: &RestoreArgs) -> Result<Selector, CliError> {
    Ok(match &a.before {
        Some(t) => Selector::Before(t.parse::<Timestamp>().map_err(|e| CliError::InvalidFlag {
            flag: "--before",
            message: format!("{t:?} is not an RFC 3339 time: {e}"),
        })?),
        None if a.snapshot == LATEST => Selector::Latest,
        None => Selector::Name(a.snapshot.clone()),
    })
}
