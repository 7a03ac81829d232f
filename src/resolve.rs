//! From resources to engine settings: the one place that turns a Database, its Secret and a
//! Synchronization spec into connection and copy options. The operator and the standalone mode
//! both call it, so they accept and reject exactly the same input.

use std::collections::BTreeMap;

use thiserror::Error;
use verifier::{ConnectOptions, DigestAuth, NodeKind};

use crate::api::assets::{Bucket, Database};
use crate::api::automation::{AclPolicy, EphemeralPolicy, SyncConfig};
use crate::api::conditions::Reason;
use crate::backup::{self, store, Backend, BackupOptions, Location, RestoreOptions, Selector};
use crate::engine::{SyncOptions, TypeRule};

/// Why a resource cannot be turned into engine settings yet.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResolveError {
    #[error("Database {name} not found in namespace {namespace}")]
    DatabaseNotFound { namespace: String, name: String },
    #[error("Secret {name} not found in namespace {namespace}: {needed_by}")]
    SecretNotFound {
        namespace: String,
        name: String,
        /// Who needs it, for what: "Database zk needs it for its credentials (…)".
        needed_by: String,
    },
    #[error("Secret {name}: {message}")]
    SecretInvalid { name: String, message: String },
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    #[error("Bucket {name} not found in namespace {namespace}")]
    BucketNotFound { namespace: String, name: String },
    #[error("KubernetesCluster {name} not found in namespace {namespace}: Database {database} runs in it (spec.kubernetesClusterName)")]
    KubernetesClusterNotFound {
        namespace: String,
        name: String,
        database: String,
    },
}

impl ResolveError {
    pub fn reason(&self) -> Reason {
        match self {
            ResolveError::DatabaseNotFound { .. } => Reason::DatabaseNotFound,
            ResolveError::SecretNotFound { .. } => Reason::SecretNotFound,
            ResolveError::SecretInvalid { .. } => Reason::SecretInvalid,
            ResolveError::InvalidSpec { .. } => Reason::InvalidSpec,
            ResolveError::BucketNotFound { .. } => Reason::BucketNotFound,
            ResolveError::KubernetesClusterNotFound { .. } => Reason::KubernetesClusterNotFound,
        }
    }

    /// Only a fix to the spec helps (as opposed to a resource that may still appear).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ResolveError::InvalidSpec { .. })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ResolveError {
    ResolveError::InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The bytes of a Secret: `data` (base64 in YAML, bytes here) wins over `stringData`, which
/// only exists in manifests that were never stored by an API server.
pub type SecretData = BTreeMap<String, Vec<u8>>;

pub fn secret_data(secret: &k8s_openapi::api::core::v1::Secret) -> SecretData {
    let mut out: SecretData = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// Digest credentials from a Database's Secret (keys `user` and `password`).
pub fn credentials(secret_name: &str, data: &SecretData) -> Result<DigestAuth, ResolveError> {
    let key = |k: &str| -> Result<String, ResolveError> {
        let v = data.get(k).ok_or_else(|| ResolveError::SecretInvalid {
            name: secret_name.to_string(),
            message: format!("key {k} is missing"),
        })?;
        let s = String::from_utf8(v.clone()).map_err(|_| ResolveError::SecretInvalid {
            name: secret_name.to_string(),
            message: format!("key {k} is not UTF-8"),
        })?;
        let s = s.trim_end_matches(['\n', '\r']).to_string();
        if s.is_empty() {
            return Err(ResolveError::SecretInvalid {
                name: secret_name.to_string(),
                message: format!("key {k} is empty"),
            });
        }
        Ok(s)
    };
    let user = key("user")?;
    if user.contains(':') {
        return Err(ResolveError::SecretInvalid {
            name: secret_name.to_string(),
            message: "key user must not contain ':' (ZooKeeper digest ids are user:password)"
                .into(),
        });
    }
    Ok(DigestAuth {
        user,
        password: key("password")?,
    })
}

/// Connection settings of a Database with its Secret's data (`None`: the Secret is missing).
pub fn connect_options(
    db: &Database,
    secret: Option<&SecretData>,
) -> Result<ConnectOptions, ResolveError> {
    let name = db.metadata.name.clone().unwrap_or_default();
    let namespace = db.metadata.namespace.clone().unwrap_or_default();
    if let Some(cluster) = &db.spec.kubernetes_cluster_name {
        // The operator routes such a Database through tunnels first (and clears the field);
        // its servers are names inside that cluster, never to be dialled from here.
        return Err(invalid(
            "spec.kubernetesClusterName",
            format!(
                "Database {name} runs in KubernetesCluster {cluster}, which only the operator \
                 reaches (standalone mode and the CLI connect to servers directly)"
            ),
        ));
    }
    let servers = db
        .spec
        .zookeeper
        .as_ref()
        .and_then(|z| z.client.as_ref())
        .map(|c| c.servers.clone())
        .unwrap_or_default();
    if servers.is_empty() {
        return Err(invalid(
            "spec.zookeeper.client.servers",
            "must list at least one HOST:PORT",
        ));
    }
    for s in &servers {
        let ok = s.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(invalid(
                "spec.zookeeper.client.servers",
                format!("{s:?} is not HOST:PORT"),
            ));
        }
    }
    let data = secret.ok_or_else(|| ResolveError::SecretNotFound {
        namespace,
        name: name.clone(),
        needed_by: format!("Database {name} needs it for its credentials (keys user and password)"),
    })?;
    let auth = credentials(&name, data)?;
    let mut o = ConnectOptions::new(servers.join(","));
    o.auth = Some(auth);
    Ok(o)
}

/// Copy settings of a Synchronization config, given both ensembles' connection settings.
pub fn sync_options(
    config: &SyncConfig,
    source: ConnectOptions,
    destination: ConnectOptions,
) -> Result<SyncOptions, ResolveError> {
    let dst_root = config
        .destination_root_path
        .clone()
        .unwrap_or_else(|| config.root_path.clone());
    verifier::path::validate_root("spec.config.rootPath", &config.root_path)
        .map_err(|e| invalid("spec.config.rootPath", e.to_string()))?;
    verifier::path::validate_root("spec.config.destinationRootPath", &dst_root)
        .map_err(|e| invalid("spec.config.destinationRootPath", e.to_string()))?;
    let mut o = SyncOptions::new(source, config.root_path.clone(), destination, dst_root);
    o.prune = config.prune;
    o.guard = deletion_guard(config.deletion_guard.as_ref())?;
    o.copy_acl = config.acl_policy == AclPolicy::Copy;
    o.ephemerals = ephemerals(config.ephemeral_policy);
    o.dry_run = config.dry_run;
    for (i, glob) in config.container_paths.iter().enumerate() {
        o.type_rules
            .push(TypeRule::new(glob, NodeKind::Container).map_err(|e| {
                invalid(
                    &format!("spec.config.containerPaths[{i}]"),
                    format!("{glob:?} is not a valid glob: {e}"),
                )
            })?);
    }
    for (i, rule) in config.ttl_paths.iter().enumerate() {
        if rule.seconds <= 0 {
            return Err(invalid(
                &format!("spec.config.ttlPaths[{i}].seconds"),
                "must be positive",
            ));
        }
        o.type_rules.push(
            TypeRule::new(
                &rule.path,
                NodeKind::Ttl {
                    ttl_ms: rule.seconds.saturating_mul(1000),
                },
            )
            .map_err(|e| {
                invalid(
                    &format!("spec.config.ttlPaths[{i}].path"),
                    format!("{:?} is not a valid glob: {e}", rule.path),
                )
            })?,
        );
    }
    crate::engine::validate(&o).map_err(|e| invalid("spec.config", e.to_string()))?;
    Ok(o)
}

/// The deletion guard's limits from the spec (the defaults when absent). The CRD's rules check
/// them at admission; standalone mode has no admission, so they are checked here again.
pub fn deletion_guard(
    spec: Option<&crate::api::automation::DeletionGuardSpec>,
) -> Result<crate::engine::DeletionGuard, ResolveError> {
    let Some(g) = spec else {
        return Ok(crate::engine::DeletionGuard::default());
    };
    if g.max_deletes < 0 {
        return Err(invalid(
            "spec.config.deletionGuard.maxDeletes",
            format!("{} must not be negative", g.max_deletes),
        ));
    }
    if !(0..=100).contains(&g.max_delete_percent) {
        return Err(invalid(
            "spec.config.deletionGuard.maxDeletePercent",
            format!("{} is not a percentage from 0 to 100", g.max_delete_percent),
        ));
    }
    Ok(crate::engine::DeletionGuard {
        max_deletes: g.max_deletes as u64,
        max_delete_percent: f64::from(g.max_delete_percent),
        ..crate::engine::DeletionGuard::default()
    })
}

/// Who a resource's copy is in its writer claim: `Kind namespace/name`.
fn holder(kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Engine settings of a Synchronization, given a lookup of a Database by name in the sync's
/// namespace and of the Secret of the same name. The operator fills the lookup from the API
/// server, standalone mode from files; both then decide alike.
pub fn resolve_sync(
    sync: &crate::api::automation::Synchronization,
    lookup: impl Fn(&str) -> Found,
) -> Result<SyncOptions, ResolveError> {
    let namespace = sync.metadata.namespace.clone().unwrap_or_default();
    let mut o = resolve_config(&namespace, &sync.spec.config, lookup)?;
    o.holder = holder("Synchronization", &sync.metadata);
    Ok(o)
}

/// The shortest heartbeat interval: each beat is a write to the source ensemble.
const MIN_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The heartbeat's znode under the root when the spec names none.
const DEFAULT_HEARTBEAT_NODE: &str = ".resiliency-heartbeat";

/// Engine settings of a LiveSynchronization: the copy settings as for a Synchronization, plus
/// its intervals, lag objective and heartbeat, each error naming its field.
pub fn resolve_live(
    ls: &crate::api::automation::LiveSynchronization,
    lookup: impl Fn(&str) -> Found,
) -> Result<crate::continuous::ContinuousOptions, ResolveError> {
    use crate::continuous::{ContinuousOptions, HeartbeatOptions};
    let spec = &ls.spec;
    let namespace = ls.metadata.namespace.clone().unwrap_or_default();
    if spec.config.dry_run {
        return Err(invalid(
            "spec.config.dryRun",
            "a LiveSynchronization cannot be a dry run: use a Synchronization with dryRun",
        ));
    }
    let verify_interval = duration("spec.verifyInterval", &spec.verify_interval)?;
    let max_lag = duration("spec.maxLag", &spec.max_lag)?;
    let resync = duration("spec.resyncInterval", &spec.resync_interval)?;
    let apply_delay = duration("spec.applyDelay", &spec.apply_delay)?;
    let mut sync = resolve_config(&namespace, &spec.config, lookup)?;
    sync.holder = holder("LiveSynchronization", &ls.metadata);
    let heartbeat = if spec.heartbeat.enabled {
        let interval = duration("spec.heartbeat.interval", &spec.heartbeat.interval)?;
        if interval < MIN_HEARTBEAT_INTERVAL {
            return Err(invalid(
                "spec.heartbeat.interval",
                format!("must be at least {}ms", MIN_HEARTBEAT_INTERVAL.as_millis()),
            ));
        }
        let path =
            spec.heartbeat.path.clone().unwrap_or_else(|| {
                verifier::path::child(&sync.source_root, DEFAULT_HEARTBEAT_NODE)
            });
        verifier::path::validate_root("spec.heartbeat.path", &path)
            .map_err(|e| invalid("spec.heartbeat.path", e.to_string()))?;
        if path == sync.source_root || !verifier::path::is_within(&sync.source_root, &path) {
            return Err(invalid(
                "spec.heartbeat.path",
                format!(
                    "{path} must be under spec.config.rootPath ({}) to be replicated",
                    sync.source_root
                ),
            ));
        }
        Some(HeartbeatOptions { path, interval })
    } else {
        None
    };
    let mut live = crate::engine::live::LiveOptions::new(sync);
    live.sync.progress_every = None;
    live.resync_interval = (!resync.is_zero()).then_some(resync);
    let mut live = live.with_apply_delay(apply_delay, crate::engine::live::DEFAULT_DELAY_MAX_BYTES);
    if let Some(d) = spec
        .config
        .deletion_guard
        .as_ref()
        .and_then(|g| g.delete_delay.as_deref())
    {
        live = live.with_delete_delay(duration("spec.config.deletionGuard.deleteDelay", d)?);
    }
    let mut o = ContinuousOptions::new(live);
    o.verify_interval = (!verify_interval.is_zero()).then_some(verify_interval);
    // A delayed copy is behind by its delay on purpose: the objective counts on top of it.
    o.max_lag = max_lag + apply_delay;
    o.repair = spec.repair;
    o.heartbeat = heartbeat;
    Ok(o)
}

/// A Database looked up by name, with the Secret of the same name; an error when it cannot be
/// used as found (its KubernetesCluster is missing, say).
pub type Found = Result<(Option<Database>, Option<SecretData>), ResolveError>;

/// Looks a Bucket up by name, with the Secret its spec names.
pub type BucketLookup<'a> = &'a dyn Fn(&str) -> (Option<Bucket>, Option<SecretData>);

/// The Secret a Bucket names, if any (local directories need none).
pub fn bucket_secret_name(b: &Bucket) -> Option<&str> {
    match (&b.spec.aws_s3, &b.spec.gcp_cloud_storage) {
        (Some(s3), _) => Some(s3.secret_name.as_str()),
        (None, Some(g)) => Some(g.secret_name.as_str()),
        (None, None) => None,
    }
}

fn secret_value(data: &SecretData, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| data.get(*k))
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Where a Bucket keeps snapshots under `prefix`, with the credentials of its Secret.
pub fn bucket_location(
    bucket: &Bucket,
    secret: Option<&SecretData>,
    prefix: &str,
) -> Result<Location, ResolveError> {
    let name = bucket.metadata.name.clone().unwrap_or_default();
    let namespace = bucket.metadata.namespace.clone().unwrap_or_default();
    let need_secret = |secret_name: &str| {
        secret.ok_or_else(|| ResolveError::SecretNotFound {
            namespace: namespace.clone(),
            name: secret_name.to_string(),
            needed_by: format!("Bucket {name} needs it for its credentials"),
        })
    };
    let backend = match (
        &bucket.spec.aws_s3,
        &bucket.spec.gcp_cloud_storage,
        &bucket.spec.local,
    ) {
        (Some(s3), _, _) => {
            let data = need_secret(&s3.secret_name)?;
            let key = |keys: &[&str]| {
                secret_value(data, keys).ok_or_else(|| ResolveError::SecretInvalid {
                    name: s3.secret_name.clone(),
                    message: format!("has no {} key", keys[0]),
                })
            };
            Backend::S3(store::S3 {
                bucket: s3.name.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                access_key_id: key(&["AWS_ACCESS_KEY_ID", "accessKeyId"])?,
                secret_access_key: key(&["AWS_SECRET_ACCESS_KEY", "secretAccessKey"])?,
                session_token: secret_value(data, &["AWS_SESSION_TOKEN", "sessionToken"]),
            })
        }
        (None, Some(g), _) => {
            let data = need_secret(&g.secret_name)?;
            let key = secret_value(data, &["credentials.json", "serviceAccountKey", "key.json"])
                .ok_or_else(|| ResolveError::SecretInvalid {
                    name: g.secret_name.clone(),
                    message: "has no credentials.json key (the service account key)".into(),
                })?;
            Backend::Gcs(store::Gcs {
                bucket: g.name.clone(),
                service_account_key: key,
                endpoint: g.endpoint.clone(),
            })
        }
        (None, None, Some(l)) => {
            if !l.path.starts_with('/') {
                return Err(invalid("spec.local.path", "must be an absolute path"));
            }
            Backend::Local(l.path.clone().into())
        }
        (None, None, None) => {
            return Err(ResolveError::InvalidSpec {
                field: format!("Bucket {name}: spec"),
                message: "names no storage: set awsS3, gcpCloudStorage or local".into(),
            })
        }
    };
    Ok(Location::new(backend, prefix))
}

/// What a Synchronization runs, by plugin: a copy, a backup or a restore.
pub fn resolve_job(
    sync: &crate::api::automation::Synchronization,
    databases: impl Fn(&str) -> Found,
    buckets: BucketLookup<'_>,
) -> Result<crate::runs::Job, ResolveError> {
    use crate::api::automation::Direction;
    use crate::runs::Job;
    let namespace = sync.metadata.namespace.clone().unwrap_or_default();
    let c = &sync.spec.config;
    match sync.spec.plugin.direction() {
        Direction::Copy => {
            let mut opts = resolve_config(&namespace, c, databases)?;
            opts.holder = holder("Synchronization", &sync.metadata);
            Ok(Job::Copy {
                opts: Box::new(opts),
                verify: c.verify,
            })
        }
        Direction::Backup => {
            let (opts, retention) = backup_job(&namespace, c, databases, buckets)?;
            Ok(Job::Backup {
                opts: Box::new(opts),
                retention,
                verify: c.verify,
            })
        }
        Direction::Restore => Ok(Job::Restore(Box::new(restore_job(
            &namespace, c, databases, buckets,
        )?))),
    }
}

/// A backup of the source Database into the destination Bucket, and what it keeps there.
fn backup_job(
    namespace: &str,
    c: &SyncConfig,
    databases: impl Fn(&str) -> Found,
    buckets: BucketLookup<'_>,
) -> Result<(BackupOptions, backup::Retention), ResolveError> {
    root_path(c)?;
    let source = database(namespace, &c.source_name, databases)?;
    let default_prefix = format!("{namespace}/{}", c.source_name);
    let location = bucket(
        namespace,
        &c.destination_name,
        &bucket_prefix(c, Some(default_prefix))?,
        buckets,
    )?;
    let mut o = BackupOptions::new(source, &c.root_path, location, &c.source_name);
    o.acl_in_hash = c.acl_policy == AclPolicy::Copy;
    o.ephemerals = ephemerals(c.ephemeral_policy);
    // The type rules are checked with a throw-away copy config.
    let (src, dst) = THROWAWAY_SERVERS;
    o.type_rules = sync_options(c, ConnectOptions::new(src), ConnectOptions::new(dst))?.type_rules;
    let retention = retention(c.retention.as_ref())?;
    // Retention counts only snapshots that were read back: without the check it could
    // never delete anything, which is better said than silently done.
    if retention.is_set() && !c.verify {
        return Err(invalid(
            "spec.config.verify",
            "must be on when spec.config.retention is set: retention counts only \
             snapshots that were read back and checked",
        ));
    }
    Ok((o, retention))
}

/// A restore of a snapshot in the source Bucket into the destination Database.
fn restore_job(
    namespace: &str,
    c: &SyncConfig,
    databases: impl Fn(&str) -> Found,
    buckets: BucketLookup<'_>,
) -> Result<RestoreOptions, ResolveError> {
    root_path(c)?;
    let location = bucket(namespace, &c.source_name, &bucket_prefix(c, None)?, buckets)?;
    let destination = database(namespace, &c.destination_name, databases)?;
    let select = match (&c.snapshot_before, c.snapshot.as_deref()) {
        (Some(t), _) => Selector::Before(t.0),
        (None, None | Some("latest")) => Selector::Latest,
        (None, Some(n)) => Selector::Name(n.to_string()),
    };
    let root = c
        .destination_root_path
        .clone()
        .unwrap_or_else(|| c.root_path.clone());
    Ok(RestoreOptions::new(location, select, destination, &root))
}

/// Type rules are validated through a copy config, which needs two distinct ensembles: these
/// are never dialled.
const THROWAWAY_SERVERS: (&str, &str) = ("x:1", "y:1");

/// `spec.config.rootPath`, checked.
fn root_path(c: &SyncConfig) -> Result<(), ResolveError> {
    verifier::path::validate_root("spec.config.rootPath", &c.root_path)
        .map_err(|e| invalid("spec.config.rootPath", e.to_string()))
}

/// The Database `name` in `namespace` as connection settings.
fn database(
    namespace: &str,
    name: &str,
    lookup: impl Fn(&str) -> Found,
) -> Result<ConnectOptions, ResolveError> {
    let (db, secret) = lookup(name)?;
    let db = db.ok_or_else(|| ResolveError::DatabaseNotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })?;
    connect_options(&db, secret.as_ref())
}

/// The Bucket `name` in `namespace`, at `prefix`.
fn bucket(
    namespace: &str,
    name: &str,
    prefix: &str,
    lookup: BucketLookup<'_>,
) -> Result<Location, ResolveError> {
    let (b, secret) = lookup(name);
    let b = b.ok_or_else(|| ResolveError::BucketNotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })?;
    bucket_location(&b, secret.as_ref(), prefix)
}

/// The snapshots' folder in the bucket: `spec.config.bucketPath`, else `default` (a restore
/// has none: it must say where to read).
fn bucket_prefix(c: &SyncConfig, default: Option<String>) -> Result<String, ResolveError> {
    c.bucket_path
        .clone()
        .or(default)
        .map(|p| p.trim_matches('/').to_string())
        .ok_or_else(|| {
            invalid(
                "spec.config.bucketPath",
                "required to restore: the folder of the snapshots in the bucket",
            )
        })
}

/// How many snapshots a backup keeps (all, without `spec.config.retention`).
fn retention(
    spec: Option<&crate::api::automation::Retention>,
) -> Result<backup::Retention, ResolveError> {
    let Some(r) = spec else {
        return Ok(backup::Retention::default());
    };
    Ok(backup::Retention {
        keep_last: r.keep_last.map(|k| k as usize),
        max_age: r
            .max_age
            .as_deref()
            .map(|v| duration("spec.config.retention.maxAge", v))
            .transpose()?,
    })
}

/// A duration field of the spec, its error naming the field once.
fn duration(field: &str, v: &str) -> Result<std::time::Duration, ResolveError> {
    crate::api::automation::parse_duration(field, v).map_err(|m| ResolveError::InvalidSpec {
        field: field.to_string(),
        message: m
            .strip_prefix(&format!("{field}: "))
            .unwrap_or(&m)
            .to_string(),
    })
}

/// The engine's policy for ephemeral nodes.
fn ephemerals(p: EphemeralPolicy) -> verifier::EphemeralPolicy {
    match p {
        EphemeralPolicy::Skip => verifier::EphemeralPolicy::Skip,
        EphemeralPolicy::Persistent => verifier::EphemeralPolicy::Persistent,
    }
}

/// Copy settings of a sync config in `namespace`, looking its Databases up by name.
pub fn resolve_config(
    namespace: &str,
    c: &SyncConfig,
    lookup: impl Fn(&str) -> Found,
) -> Result<SyncOptions, ResolveError> {
    sync_options(
        c,
        database(namespace, &c.source_name, &lookup)?,
        database(namespace, &c.destination_name, &lookup)?,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::assets::{DatabaseSpec, Zookeeper, ZookeeperClient};

    fn db(servers: &[&str]) -> Database {
        let mut d = Database::new(
            "zk",
            DatabaseSpec {
                zookeeper: Some(Zookeeper {
                    admin: None,
                    client: Some(ZookeeperClient {
                        servers: servers.iter().map(|s| s.to_string()).collect(),
                    }),
                }),
                kubernetes_cluster_name: None,
            },
        );
        d.metadata.namespace = Some("ns".into());
        d
    }

    fn secret(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_database_with_its_secret_resolves() {
        let o = connect_options(
            &db(&["a:2181", "b:2182"]),
            Some(&secret(&[("user", "admin"), ("password", "pw\n")])),
        )
        .unwrap();
        assert_eq!(o.servers, "a:2181,b:2182");
        let auth = o.auth.unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("admin", "pw")
        );
    }

    #[test]
    fn each_bad_input_names_what_is_wrong() {
        let ok = secret(&[("user", "u"), ("password", "p")]);
        assert_eq!(
            connect_options(&db(&["a:2181"]), None)
                .unwrap_err()
                .reason(),
            Reason::SecretNotFound
        );
        let e = connect_options(&db(&["a:2181"]), Some(&secret(&[("user", "u")]))).unwrap_err();
        assert_eq!(e.to_string(), "Secret zk: key password is missing");
        let e = connect_options(&db(&["a"]), Some(&ok)).unwrap_err();
        assert!(
            e.to_string().starts_with("spec.zookeeper.client.servers:"),
            "{e}"
        );
        let e = connect_options(&db(&[]), Some(&ok)).unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidSpec);
        // Names inside another cluster are never dialled directly (only the operator routes).
        let mut remote = db(&["zk-client.zk:2181"]);
        remote.spec.kubernetes_cluster_name = Some("east".into());
        let e = connect_options(&remote, Some(&ok)).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "spec.kubernetesClusterName: Database zk runs in KubernetesCluster east"
            ),
            "{e}"
        );
        let e = connect_options(
            &db(&["a:2181"]),
            Some(&secret(&[("user", "a:b"), ("password", "p")])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("must not contain ':'"), "{e}");
    }

    fn config(root: &str, dst: Option<&str>) -> SyncConfig {
        serde_json::from_value(serde_json::json!({
            "sourceName": "a", "destinationName": "b", "rootPath": root, "destinationRootPath": dst
        }))
        .unwrap()
    }

    #[test]
    fn sync_options_apply_defaults_and_policies() {
        let c = config("/app", None);
        assert!(c.prune && c.verify && !c.dry_run);
        let o = sync_options(&c, ConnectOptions::new("a:1"), ConnectOptions::new("b:1")).unwrap();
        assert_eq!(
            (o.source_root.as_str(), o.destination_root.as_str()),
            ("/app", "/app")
        );
        assert!(o.prune && o.copy_acl);
        let mut c = config("/app", Some("/dr/app"));
        c.acl_policy = AclPolicy::Ignore;
        c.ephemeral_policy = EphemeralPolicy::Persistent;
        c.container_paths = vec!["/app/locks/*".into()];
        let o = sync_options(&c, ConnectOptions::new("a:1"), ConnectOptions::new("b:1")).unwrap();
        assert_eq!(o.destination_root, "/dr/app");
        assert!(!o.copy_acl);
        assert_eq!(o.ephemerals, verifier::EphemeralPolicy::Persistent);
        assert_eq!(o.type_rules.len(), 1);
    }

    #[test]
    fn bad_paths_are_refused_naming_the_field() {
        for (root, dst, field) in [
            ("app", None, "spec.config.rootPath"),
            ("/zookeeper", None, "spec.config.rootPath"),
            (
                "/app",
                Some("/zookeeper/x"),
                "spec.config.destinationRootPath",
            ),
        ] {
            let e = sync_options(
                &config(root, dst),
                ConnectOptions::new("a:1"),
                ConnectOptions::new("b:1"),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with(field), "{root} {dst:?}: {e}");
        }
        let mut c = config("/app", None);
        c.container_paths = vec!["/app/[".into()];
        let e =
            sync_options(&c, ConnectOptions::new("a:1"), ConnectOptions::new("b:1")).unwrap_err();
        assert!(
            e.to_string().starts_with("spec.config.containerPaths[0]"),
            "{e}"
        );
    }

    fn live(spec: serde_json::Value) -> crate::api::automation::LiveSynchronization {
        let mut base = serde_json::json!({"plugin": "zookeeper-to-zookeeper-nodes",
            "config": {"sourceName": "zk", "destinationName": "zk2", "rootPath": "/app"}});
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "l", "namespace": "ns"}, "spec": base
        }))
        .unwrap()
    }

    fn resolve(
        l: &crate::api::automation::LiveSynchronization,
    ) -> Result<crate::continuous::ContinuousOptions, ResolveError> {
        resolve_live(l, |name| {
            Ok((
                Some(db(&[if name == "zk" { "a:1" } else { "b:1" }])),
                Some(secret(&[("user", "u"), ("password", "p")])),
            ))
        })
    }

    #[test]
    fn a_live_synchronization_resolves_with_its_intervals_and_heartbeat() {
        let o = resolve(&live(
            serde_json::json!({"verifyInterval": "1m30s", "maxLag": "250ms",
            "resyncInterval": "0s", "repair": true, "heartbeat": {"enabled": true}}),
        ))
        .unwrap();
        assert_eq!(o.verify_interval, Some(std::time::Duration::from_secs(90)));
        assert_eq!(o.max_lag, std::time::Duration::from_millis(250));
        assert_eq!(o.live.resync_interval, None);
        assert!(o.repair);
        let h = o.heartbeat.unwrap();
        assert_eq!(h.path, "/app/.resiliency-heartbeat");
        assert_eq!(h.interval, std::time::Duration::from_secs(10));
        // Defaults: verify every 5 minutes, 30 s objective, a re-walk every 10 minutes.
        let o = resolve(&live(serde_json::json!({}))).unwrap();
        assert_eq!(o.verify_interval, Some(std::time::Duration::from_secs(300)));
        assert_eq!(o.max_lag, std::time::Duration::from_secs(30));
        assert_eq!(
            o.live.resync_interval,
            Some(std::time::Duration::from_secs(600))
        );
        assert!(o.heartbeat.is_none());
        assert!(o.live.delay.is_none());
        assert_eq!(o.live.gate.delay(), crate::engine::live::DELETE_DELAY);
        assert_eq!(o.live.sync.holder, "LiveSynchronization ns/l");
    }

    #[test]
    fn the_guard_limits_the_delete_delay_and_the_apply_delay_resolve() {
        let o = resolve(&live(serde_json::json!({
            "config": {"sourceName": "zk", "destinationName": "zk2", "rootPath": "/app",
                "deletionGuard": {"maxDeletes": 5, "maxDeletePercent": 0, "deleteDelay": "500ms"}},
            "applyDelay": "10m", "maxLag": "30s"})))
        .unwrap();
        let g = o.live.sync.guard;
        assert_eq!((g.max_deletes, g.max_delete_percent), (5, 0.0));
        assert_eq!(o.live.gate.delay(), std::time::Duration::from_millis(500));
        let delay = o.live.delay.as_ref().map(|q| q.delay);
        assert_eq!(delay, Some(std::time::Duration::from_secs(600)));
        // The objective counts on top of the delay, and there is no periodic re-walk.
        assert_eq!(o.max_lag, std::time::Duration::from_secs(630));
        assert_eq!(o.live.resync_interval, None);
    }

    #[test]
    fn bad_live_settings_are_refused_naming_the_field() {
        for (spec, field) in [
            (serde_json::json!({"maxLag": "soon"}), "spec.maxLag"),
            (
                serde_json::json!({"verifyInterval": "5"}),
                "spec.verifyInterval",
            ),
            (
                serde_json::json!({"resyncInterval": "1d"}),
                "spec.resyncInterval",
            ),
            (
                serde_json::json!({"heartbeat": {"enabled": true, "path": "/elsewhere/hb"}}),
                "spec.heartbeat.path",
            ),
            (
                serde_json::json!({"heartbeat": {"enabled": true, "path": "/app"}}),
                "spec.heartbeat.path",
            ),
            (
                serde_json::json!({"heartbeat": {"enabled": true, "interval": "1ms"}}),
                "spec.heartbeat.interval",
            ),
            (
                serde_json::json!({"config": {"sourceName": "zk", "destinationName": "zk2",
                    "rootPath": "/app", "dryRun": true}}),
                "spec.config.dryRun",
            ),
            (
                serde_json::json!({"applyDelay": "later"}),
                "spec.applyDelay",
            ),
            (
                serde_json::json!({"config": {"sourceName": "zk", "destinationName": "zk2",
                    "rootPath": "/app", "deletionGuard": {"deleteDelay": "2"}}}),
                "spec.config.deletionGuard.deleteDelay",
            ),
            (
                serde_json::json!({"config": {"sourceName": "zk", "destinationName": "zk2",
                    "rootPath": "/app", "deletionGuard": {"maxDeletePercent": 101}}}),
                "spec.config.deletionGuard.maxDeletePercent",
            ),
        ] {
            let e = resolve(&live(spec.clone())).unwrap_err();
            assert!(e.to_string().starts_with(field), "{spec}: {e}");
            assert!(e.is_permanent());
        }
    }

    fn backup_job(config: serde_json::Value) -> Result<crate::runs::Job, ResolveError> {
        let mut c = serde_json::json!({"sourceName": "zk", "destinationName": "store",
            "rootPath": "/app"});
        for (k, v) in config.as_object().unwrap() {
            c[k] = v.clone();
        }
        let sync: crate::api::automation::Synchronization =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
                "metadata": {"name": "b", "namespace": "ns"},
                "spec": {"plugin": "zookeeper-to-bucket", "config": c}
            }))
            .unwrap();
        let bucket: Bucket = serde_json::from_value(serde_json::json!({
            "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "store", "namespace": "ns"},
            "spec": {"local": {"path": "/backups"}}
        }))
        .unwrap();
        resolve_job(
            &sync,
            |_| {
                Ok((
                    Some(db(&["a:1"])),
                    Some(secret(&[("user", "u"), ("password", "p")])),
                ))
            },
            &|_| (Some(bucket.clone()), None),
        )
    }

    #[test]
    fn retention_needs_the_read_back_check() {
        let job = backup_job(serde_json::json!({"retention": {"keepLast": 3, "maxAge": "1h"}}));
        match job.unwrap() {
            crate::runs::Job::Backup {
                retention, verify, ..
            } => {
                assert!(verify);
                assert_eq!(retention.keep_last, Some(3));
                assert_eq!(
                    retention.max_age,
                    Some(std::time::Duration::from_secs(3600))
                );
            }
            other => panic!("{other:?}"),
        }
        // Unverified snapshots never count, so this retention could never delete anything.
        let e = backup_job(serde_json::json!({"retention": {"keepLast": 3}, "verify": false}))
            .unwrap_err();
        assert!(e.to_string().starts_with("spec.config.verify:"), "{e}");
        assert_eq!(e.reason(), Reason::InvalidSpec);
        // Without retention, verify may be off.
        assert!(backup_job(serde_json::json!({"verify": false})).is_ok());
    }
}
