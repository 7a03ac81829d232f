//! `backup`: snapshot a subtree, read it back, then apply retention.

use std::error::Error;
use std::process::ExitCode;

use clap::Args;

use super::flags::{CliError, Credentials, Ephemerals, Side, Wording, CONNECT_TIMEOUT, SOURCE};
use super::output::{fail, print_json};
use super::store::StoreArgs;
use crate::api::automation::parse_duration;
use crate::backup::{self, BackupOptions, Location};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Ensemble to back up, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub source: String,
    /// Root of the subtree to back up.
    #[arg(long, value_name = "PATH")]
    pub root_path: String,
    /// Where to write: /dir, file:///dir, s3://bucket[/prefix] or gs://bucket[/prefix].
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Snapshot names are NAME-YYYYMMDDTHHMMSSZ.
    #[arg(long, default_value = "zookeeper")]
    pub name: String,
    #[command(flatten)]
    pub source_auth: Credentials<BackupWording>,
    /// What to do with ephemeral nodes.
    #[arg(long, value_enum, default_value_t = Ephemerals::Skip)]
    pub ephemerals: Ephemerals,
    /// After the new snapshot was read back, keep only the newest N verified snapshots of this
    /// location (suspect and unverified ones do not count, and go once N verified ones are
    /// newer).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// After the new snapshot was read back, delete snapshots older than this (e.g. 30d is
    /// 720h); never the newest verified one.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Do not read the new snapshot back. Retention counts only verified snapshots, so this
    /// cannot go with --keep-last or --max-age.
    #[arg(long, conflicts_with_all = ["keep_last", "max_age"])]
    pub no_verify: bool,
    #[arg(long, default_value_t = CONNECT_TIMEOUT, value_name = "SECONDS")]
    pub connect_timeout: f64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Help texts are written as clap renders doc comments: no final period.
#[derive(Debug, Clone)]
pub struct BackupWording;

impl Wording for BackupWording {
    const SIDE: Side = SOURCE;
    const HELP: Option<&'static str> = Some("Digest credentials, user:password");
    const FILE_HELP: Option<&'static str> = Some("File holding user:password");
}

pub async fn run_backup(a: BackupArgs) -> ExitCode {
    let json = a.store.json;
    let (o, retention) = match options(&a) {
        Ok(p) => p,
        Err(e) => return fail(json, &*e),
    };
    let m = match backup::backup(&o).await {
        Ok(m) => m,
        Err(e) => return fail(json, &e),
    };
    // Read back first, retention after: a snapshot that fails the check deletes nothing.
    let sealed = match backup::seal(&o.location, m, !a.no_verify, retention).await {
        Ok(s) => s,
        Err(e) => return fail(json, &e),
    };
    report(&sealed, &o.location, json);
    ExitCode::SUCCESS
}

/// The backup and the retention after it, from the flags.
fn options(a: &BackupArgs) -> Result<(BackupOptions, backup::Retention), Box<dyn Error>> {
    let source = a.source_auth.connect(&a.source, a.connect_timeout)?;
    let location = a.store.location("--to", &a.to)?;
    let max_age = a
        .max_age
        .as_deref()
        .map(|v| parse_duration("--max-age", v))
        .transpose()
        .map_err(|message| CliError::InvalidFlag {
            flag: "--max-age",
            message,
        })?;
    let mut o = BackupOptions::new(source, &a.root_path, location, &a.name);
    o.ephemerals = a.ephemerals.into();
    let retention = backup::Retention {
        keep_last: a.keep_last,
        max_age,
    };
    Ok((o, retention))
}

/// What the backup wrote, on stdout; a suspect snapshot also warns on stderr.
fn report(sealed: &backup::Sealed, location: &Location, json: bool) {
    let m = &sealed.manifest;
    let suspect = m.suspect.as_ref().map(|s| s.reason.as_str());
    if json {
        print_json(&serde_json::json!({
            "ok": true,
            "manifest": m,
            "verified": sealed.verified,
            "suspect": suspect.is_some(),
            "suspectReason": suspect,
            "pruned": sealed.pruned,
        }));
    } else {
        println!(
            "backed up {} nodes ({} data bytes, {} compressed) of {} to {} as {} in {:.1}s",
            m.nodes,
            m.data_bytes,
            m.object_bytes,
            m.root_path,
            location.describe(),
            m.name,
            m.duration_seconds
        );
        println!("root hash {} (up to zxid {:#x})", m.root_hash, m.max_mzxid);
        if sealed.verified {
            println!("verified: read back and checked, its records hash to this root");
        } else {
            println!("not verified (--no-verify)");
        }
        if let Some(r) = suspect {
            println!("suspect: {r}; kept, but retention does not count it");
        }
        for n in &sealed.pruned {
            println!("deleted old snapshot {n}");
        }
    }
    if let Some(r) = suspect {
        eprintln!("warning: snapshot {} is suspect: {r}", m.name);
    }
}
