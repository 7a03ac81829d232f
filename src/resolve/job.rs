//! What a Synchronization runs, by plugin: a copy, a backup or a restore.

use verifier::ConnectOptions;

use super::bucket::bucket;
use super::copy::holder;
use super::{
    database, duration, ephemerals, invalid, resolve_config, sync_options, BucketLookup, Found,
    ResolveError,
};
use crate::api::automation::{AclPolicy, SyncConfig};
use crate::backup::{self, BackupOptions, RestoreOptions, Selector};

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
        Direction::Restore => {
            let mut opts = restore_job(&namespace, c, databases, buckets)?;
            opts.holder = holder("Synchronization", &sync.metadata);
            Ok(Job::Restore(Box::new(opts)))
        }
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
