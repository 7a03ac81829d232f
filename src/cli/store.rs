//! Where `backup`, `restore` and `snapshots` keep snapshots: a local directory, S3 (or an
//! S3-compatible store) or Google Cloud Storage, and the credentials to get there.

use std::path::PathBuf;

use clap::Args;

use crate::backup::{store, BackupError, Location};

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
