//! `restore`: a snapshot into an absent or empty path, or into what an interrupted restore of
//! the same snapshot left there (resumed).

use std::error::Error;
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::jiff::Timestamp;

use super::flags::{seconds, CliError, Credentials, Side, Wording, CONNECT_TIMEOUT, DESTINATION};
use super::output::{fail, print_json};
use super::store::StoreArgs;
use super::sync::MIN_JUTE_MAXBUFFER;
use crate::backup::{self, RestoreOptions, Selector};
use crate::engine::DEFAULT_JUTE_MAXBUFFER;

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
    /// Where the snapshot's root goes: an absent or empty node (or one an interrupted restore
    /// of the same snapshot left, which is resumed).
    #[arg(long, value_name = "PATH")]
    pub root_path: String,
    #[command(flatten)]
    pub destination_auth: Credentials<RestoreWording>,
    #[arg(long, default_value_t = CONNECT_TIMEOUT, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// ZooKeeper session timeout in seconds. A restore that resumes an interrupted one waits
    /// up to twice this for the claim the interrupted one left.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub session_timeout: f64,
    /// The destination's jute.maxbuffer in bytes: a snapshot with larger node data is refused.
    #[arg(long, default_value_t = DEFAULT_JUTE_MAXBUFFER, value_name = "BYTES")]
    pub jute_maxbuffer: usize,
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
                if s.resumed {
                    println!(
                        "resumed an interrupted restore of {} into {}: {} of its {} nodes were already there",
                        s.snapshot, s.destination_root, s.existing, s.nodes
                    );
                }
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
    let mut destination = a
        .destination_auth
        .connect(&a.destination, a.connect_timeout)?;
    destination.session_timeout = seconds("--session-timeout", a.session_timeout)?;
    let location = a.store.location("--from", &a.from)?;
    let mut o = RestoreOptions::new(location, selector(a)?, destination, &a.root_path);
    if a.jute_maxbuffer < MIN_JUTE_MAXBUFFER {
        return Err(CliError::InvalidFlag {
            flag: "--jute-maxbuffer",
            message: format!("{} bytes is too small for any request", a.jute_maxbuffer),
        }
        .into());
    }
    // Batches stay at half of it, as a sync's do.
    o.writer.jute_maxbuffer = a.jute_maxbuffer;
    o.writer.max_batch_bytes = a.jute_maxbuffer / 2;
    Ok(o)
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
