//! `backup`, `restore` and `snapshots`: snapshots of a tree in a local directory, S3 (or an
//! S3-compatible store) or Google Cloud Storage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use verifier::ConnectOptions;

use super::{auth, fail, seconds, CliError, Ephemerals};
use crate::api::automation::parse_duration;
use crate::backup::{self, store, BackupError, BackupOptions, Location, RestoreOptions, Selector};

/// Where snapshots are kept, and the credentials to get there.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// An S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS). Keys come from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Google service account key (JSON) for gs:// locations.
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS", value_name = "FILE")]
    pub gcs_service_account: Option<PathBuf>,
    /// A GCS-compatible endpoint, e.g. a fake-gcs-server (default: Google).
    #[arg(long, value_name = "URL")]
    pub gcs_endpoint: Option<String>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl StoreArgs {
    pub fn location(&self, flag: &'static str, url: &str) -> Result<Location, BackupError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        store::parse_url(
            flag,
            url,
            |bucket| {
                let missing = |k: &str| BackupError::Invalid {
                    field: flag.to_string(),
                    message: format!("{url}: set {k} in the environment"),
                };
                Ok(store::S3 {
                    bucket,
                    region: self.s3_region.clone(),
                    endpoint: self.s3_endpoint.clone(),
                    access_key_id: env("AWS_ACCESS_KEY_ID")
                        .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
                    secret_access_key: env("AWS_SECRET_ACCESS_KEY")
                        .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
                    session_token: env("AWS_SESSION_TOKEN"),
                })
            },
            |bucket| {
                let file =
                    self.gcs_service_account
                        .clone()
                        .ok_or_else(|| BackupError::Invalid {
                            field: "--gcs-service-account".into(),
                            message: format!("{url} needs a service account key file"),
                        })?;
                let key = std::fs::read_to_string(&file).map_err(|e| BackupError::Io {
                    what: format!("--gcs-service-account: reading {}", file.display()),
                    source: e,
                })?;
                Ok(store::Gcs {
                    bucket,
                    service_account_key: key,
                    endpoint: self.gcs_endpoint.clone(),
                })
            },
        )
    }
}

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
    /// Digest credentials, user:password.
    #[arg(
        long,
        env = "RESILIENCY_SOURCE_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub source_auth: Option<String>,
    /// File holding user:password.
    #[arg(long, value_name = "FILE")]
    pub source_auth_file: Option<PathBuf>,
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
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Where the snapshots are: /dir, file:///dir, s3://bucket[/prefix] or gs://bucket[/prefix].
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Snapshot name, or `latest`.
    #[arg(long, default_value = "latest", conflicts_with = "before")]
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
    #[arg(
        long,
        env = "RESILIENCY_DESTINATION_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub destination_auth: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub destination_auth_file: Option<PathBuf>,
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Where the snapshots are.
    #[arg(long, value_name = "URL")]
    pub from: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn connect(
    servers: &str,
    auth: Option<verifier::DigestAuth>,
    timeout: f64,
) -> Result<ConnectOptions, CliError> {
    let mut c = ConnectOptions::new(servers);
    c.auth = auth;
    c.connect_timeout = seconds("--connect-timeout", timeout)?;
    Ok(c)
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn run_backup(a: BackupArgs) -> ExitCode {
    let json = a.store.json;
    let prepared = (|| -> Result<_, Box<dyn std::error::Error>> {
        let auth = auth(
            "--source-auth",
            "--source-auth-file",
            &a.source_auth,
            &a.source_auth_file,
        )?;
        let source = connect(&a.source, auth, a.connect_timeout)?;
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
        Ok((o, max_age))
    })();
    let (o, max_age) = match prepared {
        Ok(p) => p,
        Err(e) => return fail(json, &*e),
    };
    let m = match backup::backup(&o).await {
        Ok(m) => m,
        Err(e) => return fail(json, &e),
    };
    // Read back first, retention after: a snapshot that fails the check deletes nothing.
    let retention = backup::Retention {
        keep_last: a.keep_last,
        max_age,
    };
    let sealed = match backup::seal(&o.location, m, !a.no_verify, retention).await {
        Ok(s) => s,
        Err(e) => return fail(json, &e),
    };
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
            o.location.describe(),
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
    ExitCode::SUCCESS
}

pub async fn run_restore(a: RestoreArgs) -> ExitCode {
    let json = a.store.json;
    let prepared = (|| -> Result<RestoreOptions, Box<dyn std::error::Error>> {
        let auth = auth(
            "--destination-auth",
            "--destination-auth-file",
            &a.destination_auth,
            &a.destination_auth_file,
        )?;
        let destination = connect(&a.destination, auth, a.connect_timeout)?;
        let location = a.store.location("--from", &a.from)?;
        let select = match &a.before {
            Some(t) => {
                Selector::Before(t.parse::<Timestamp>().map_err(|e| CliError::InvalidFlag {
                    flag: "--before",
                    message: format!("{t:?} is not an RFC 3339 time: {e}"),
                })?)
            }
            None if a.snapshot == "latest" => Selector::Latest,
            None => Selector::Name(a.snapshot.clone()),
        };
        Ok(RestoreOptions::new(
            location,
            select,
            destination,
            &a.root_path,
        ))
    })();
    let o = match prepared {
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

pub async fn run_snapshots(a: SnapshotsArgs) -> ExitCode {
    let json = a.store.json;
    let location = match a.store.location("--from", &a.from) {
        Ok(l) => l,
        Err(e) => return fail(json, &e),
    };
    match backup::list(&location).await {
        Ok(all) => {
            if json {
                print_json(&all);
            } else {
                for m in &all {
                    println!(
                        "{}  {}  {} nodes  {} bytes  {}  root {}  {}",
                        m.name,
                        m.created_at,
                        m.nodes,
                        m.object_bytes,
                        m.root_path,
                        verifier::short_hash(&m.root_hash),
                        match &m.suspect {
                            Some(s) => format!("SUSPECT: {}", s.reason),
                            None => m.standing().as_str().to_string(),
                        }
                    );
                }
                if all.is_empty() {
                    println!("no snapshots at {}", location.describe());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(json, &e),
    }
}
