//! A LiveSynchronization's settings: a copy's, plus its intervals, lag objective and heartbeat.

use super::copy::holder;
use super::{duration, invalid, resolve_config, Found, ResolveError};

/// The shortest heartbeat interval: each beat is a write to the source ensemble.
const MIN_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The shortest verifier interval (0s turns it off): each run walks both trees.
const MIN_VERIFY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The shortest anti-entropy interval (0s turns it off): each is a full re-walk of both trees.
const MIN_RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// `d` unless it is above zero and under `min`: an interval so short it would only load the
/// ensembles.
fn off_or_at_least(
    field: &str,
    d: std::time::Duration,
    min: std::time::Duration,
) -> Result<std::time::Duration, ResolveError> {
    if !d.is_zero() && d < min {
        return Err(invalid(
            field,
            format!("must be 0s (off) or at least {}s", min.as_secs()),
        ));
    }
    Ok(d)
}

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
    let verify_interval = off_or_at_least(
        "spec.verifyInterval",
        duration("spec.verifyInterval", &spec.verify_interval)?,
        MIN_VERIFY_INTERVAL,
    )?;
    let max_lag = duration("spec.maxLag", &spec.max_lag)?;
    let resync = off_or_at_least(
        "spec.resyncInterval",
        duration("spec.resyncInterval", &spec.resync_interval)?,
        MIN_RESYNC_INTERVAL,
    )?;
    let apply_delay = duration("spec.applyDelay", &spec.apply_delay)?;
    let mut sync = resolve_config(&namespace, &spec.config, lookup)?;
    sync.holder = holder("LiveSynchronization", &ls.metadata);
    if spec.fence_destination {
        let Some(auth) = sync.destination.auth.as_ref() else {
            return Err(invalid(
                "spec.fenceDestination",
                "needs credentials on the destination Database: the fence keeps ALL for its digest user only",
            ));
        };
        sync.fence_destination = Some(auth.acl_id());
    }
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
    live.compare_before_sync = spec.compare_before_sync;
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
