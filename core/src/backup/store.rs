//! Where snapshots live: a local directory, S3 (or an S3-compatible endpoint) or Google Cloud
//! Storage, all through the `object_store` crate.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::BackupError;

/// S3 settings; the keys come from a Secret (operator) or the environment (CLI).
#[derive(Clone, PartialEq, Eq)]
pub struct S3 {
    pub bucket: String,
    pub region: String,
    /// An S3-compatible endpoint, e.g. http://minio:9000 (default: AWS).
    pub endpoint: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Google Cloud Storage settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Gcs {
    pub bucket: String,
    /// The service account key (JSON).
    pub service_account_key: String,
    /// A GCS-compatible endpoint, e.g. a fake-gcs-server (default: Google).
    pub endpoint: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    Local(PathBuf),
    S3(S3),
    Gcs(Gcs),
}

// Never print credentials.
impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Backend {
    /// Where, without credentials: `file:///backups`, `s3://bucket`, `gs://bucket`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Local(dir) => format!("file://{}", dir.display()),
            Backend::S3(s) => match &s.endpoint {
                Some(e) => format!("s3://{} at {e}", s.bucket),
                None => format!("s3://{}", s.bucket),
            },
            Backend::Gcs(g) => format!("gs://{}", g.bucket),
        }
    }
}

/// A backend and a folder in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub backend: Backend,
    /// Folder of the snapshots ("" for the top), without leading or trailing slashes.
    pub prefix: String,
}

impl Location {
    pub fn new(backend: Backend, prefix: &str) -> Location {
        Location {
            backend,
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            self.backend.describe()
        } else {
            format!("{}/{}", self.backend.describe(), self.prefix)
        }
    }

    /// The object path of `parts` under the prefix.
    pub fn path(&self, parts: &[&str]) -> ObjectPath {
        let mut all: Vec<&str> = Vec::new();
        if !self.prefix.is_empty() {
            all.extend(self.prefix.split('/'));
        }
        all.extend_from_slice(parts);
        ObjectPath::from_iter(all)
    }

    /// Opens the store. A local directory is created when `create` (backups) and must exist
    /// otherwise (restores).
    pub fn open(&self, create: bool) -> Result<Arc<dyn ObjectStore>, BackupError> {
        let bad = |source: object_store::Error| BackupError::Store {
            location: self.describe(),
            op: "open",
            source,
        };
        Ok(match &self.backend {
            Backend::Local(dir) => {
                if create {
                    std::fs::create_dir_all(dir).map_err(|e| BackupError::Io {
                        what: format!("creating {}", dir.display()),
                        source: e,
                    })?;
                }
                Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(bad)?)
            }
            Backend::S3(s) => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(&s.secret_access_key);
                if let Some(t) = &s.session_token {
                    b = b.with_token(t);
                }
                if let Some(e) = &s.endpoint {
                    b = b
                        .with_endpoint(e)
                        .with_allow_http(e.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                Arc::new(b.build().map_err(bad)?)
            }
            Backend::Gcs(g) => {
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&g.bucket)
                    .with_service_account_key(&g.service_account_key);
                if let Some(e) = &g.endpoint {
                    // The base URL, not `with_url`: that one parses a gs:// location.
                    b = b.with_base_url(e).with_client_options(
                        object_store::ClientOptions::new()
                            .with_allow_http(e.starts_with("http://")),
                    );
                }
                Arc::new(b.build().map_err(bad)?)
            }
        })
    }
}

/// Parses `file:///dir`, a plain absolute path, `s3://bucket/prefix` or `gs://bucket/prefix`.
/// S3 and GCS settings besides the bucket come from `s3` and `gcs`.
pub fn parse_url(
    flag: &'static str,
    url: &str,
    s3: impl FnOnce(String) -> Result<S3, BackupError>,
    gcs: impl FnOnce(String) -> Result<Gcs, BackupError>,
) -> Result<Location, BackupError> {
    let bad = |m: &str| BackupError::Invalid {
        field: flag.to_string(),
        message: format!("{url:?}: {m}"),
    };
    let split = |rest: &str| -> (String, String) {
        match rest.split_once('/') {
            Some((b, p)) => (b.to_string(), p.to_string()),
            None => (rest.to_string(), String::new()),
        }
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = split(rest);
        if bucket.is_empty() {
            return Err(bad("names no bucket"));
        }
        return Ok(Location::new(Backend::S3(s3(bucket)?), &prefix));
    }
    if let Some(rest) = url.strip_prefix("gs://") {
        let (bucket, prefix) = split(rest);
        if bucket.is_empty() {
            return Err(bad("names no bucket"));
        }
        return Ok(Location::new(Backend::Gcs(gcs(bucket)?), &prefix));
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if !dir.starts_with('/') {
        return Err(bad(
            "must be an absolute directory, file:///dir, s3://bucket[/prefix] or gs://bucket[/prefix]",
        ));
    }
    Ok(Location::new(Backend::Local(PathBuf::from(dir)), ""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s3(bucket: String) -> Result<S3, BackupError> {
        Ok(S3 {
            bucket,
            region: "us-east-1".into(),
            endpoint: None,
            access_key_id: "AKIA".into(),
            secret_access_key: "very-secret".into(),
            session_token: None,
        })
    }

    fn gcs(bucket: String) -> Result<Gcs, BackupError> {
        Ok(Gcs {
            bucket,
            service_account_key: "{}".into(),
            endpoint: None,
        })
    }

    #[test]
    fn urls_name_the_backend_and_never_print_credentials() {
        let l = parse_url("--to", "s3://dr-backups/zk/prod/", s3, gcs).unwrap();
        assert_eq!(l.prefix, "zk/prod");
        assert_eq!(l.describe(), "s3://dr-backups/zk/prod");
        assert!(!format!("{l:?}").contains("very-secret"));
        assert_eq!(
            l.path(&["snap-1", "manifest.json"]).as_ref(),
            "zk/prod/snap-1/manifest.json"
        );
        let l = parse_url("--to", "gs://b", s3, gcs).unwrap();
        assert_eq!(l.describe(), "gs://b");
        let l = parse_url("--to", "file:///var/backups", s3, gcs).unwrap();
        assert_eq!(l.backend, Backend::Local("/var/backups".into()));
        assert_eq!(l.path(&["a"]).as_ref(), "a");
        for bad in ["backups", "s3://", "gs:///x"] {
            let e = parse_url("--to", bad, s3, gcs).unwrap_err();
            assert!(e.to_string().starts_with("--to:"), "{e}");
        }
    }
}
