//! A copy's settings: a sync config with both ensembles' connections, checked field by field.

use verifier::{ConnectOptions, NodeKind};

use super::{database, ephemerals, invalid, Found, ResolveError};
use crate::api::automation::{AclPolicy, SyncConfig};
use crate::engine::{SyncOptions, TypeRule};

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
pub(super) fn holder(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
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
