//! One path at a time: the current source state of a node read, and the destination made
//! equal to it (create with ACL staging, update of data and ACL, delete through the guard).

use std::time::Instant;

use verifier::model::{canonical_acl, AclEntry, NodeKind};
use verifier::path;
use zookeeper_client::{Acl, Client, Error as ZkError};

use super::{dst_path, Applied, ApplyError, LiveOptions, STREAM_NEEDS};
use crate::engine::plan::{desired_kind, plan_create_acl, Identity};
use crate::engine::writer::create_options;
use crate::engine::{kind_for, observable, SyncOptions};

/// Only the data of `p` changed (no create or delete event): copy it with one read and one
/// write. ACLs fire no event and kinds cannot change without a delete, so neither is compared
/// here; anything unexpected falls back to [`apply_path`].
pub(super) async fn apply_data(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
) -> Result<Applied, ApplyError> {
    let o = &lo.sync;
    let (data, stat) = match src.get_data(p).await {
        Ok(v) => v,
        Err(ZkError::NoNode) => return apply_path(src, dst, lo, me, p).await,
        Err(e) => return Err(ApplyError::on("source", "getData", p)(e)),
    };
    let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    if desired_kind(kind_for(&o.type_rules, p, reported), o.ephemerals).is_none() {
        return Ok(Applied::Unchanged);
    }
    let dp = dst_path(o, p);
    match dst.set_data(&dp, &data, None).await {
        Ok(_) => Ok(Applied::Written {
            mtime_ms: stat.mtime,
        }),
        Err(ZkError::NoNode) => apply_path(src, dst, lo, me, p).await,
        Err(e) => Err(ApplyError::on("destination", "setData", &dp)(e)),
    }
}

/// Makes the destination node of `p` equal to the source node as it is now.
pub(super) async fn apply_path(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
) -> Result<Applied, ApplyError> {
    let state = read_source(src, &lo.sync, p).await?;
    write_state(src, dst, lo, me, p, state).await
}

/// What the source holds at a path, as the copy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SourceState {
    Absent,
    /// An ephemeral the policy leaves out.
    Skipped,
    Node(SourceNode),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SourceNode {
    pub(super) data: Vec<u8>,
    pub(super) mtime_ms: i64,
    pub(super) kind: NodeKind,
    /// Canonical, when ACLs are copied.
    pub(super) acl: Option<Vec<AclEntry>>,
}

impl SourceState {
    /// Bytes it keeps in memory, for the delay queue's bound.
    pub(super) fn size(&self) -> usize {
        match self {
            SourceState::Node(n) => {
                n.data.len()
                    + n.acl
                        .as_ref()
                        .map_or(0, |a| a.iter().map(|e| e.id.len() + 16).sum())
            }
            _ => 0,
        }
    }
}

/// Reads the node at `p` with its ACL.
pub(super) async fn read_source(
    src: &Client,
    o: &SyncOptions,
    p: &str,
) -> Result<SourceState, ApplyError> {
    let (data, stat) = match src.get_data(p).await {
        Ok(v) => v,
        Err(ZkError::NoNode) => return Ok(SourceState::Absent),
        Err(e) => return Err(ApplyError::on("source", "getData", p)(e)),
    };
    let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    let Some(kind) = desired_kind(kind_for(&o.type_rules, p, reported), o.ephemerals) else {
        return Ok(SourceState::Skipped);
    };
    let acl: Option<Vec<AclEntry>> = if o.copy_acl {
        let (acl, _) = match src.get_acl(p).await {
            Ok(v) => v,
            Err(ZkError::NoNode) => return Ok(SourceState::Absent),
            Err(e) => return Err(ApplyError::on("source", "getACL", p)(e)),
        };
        let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
        if acl.iter().any(verifier::reader::is_redacted) {
            // Needs ADMIN on the source; the full pass reports it with the fix.
            return Err(ApplyError::on("source", "getACL", p)(ZkError::NoAuth));
        }
        Some(canonical_acl(acl))
    } else {
        None
    };
    Ok(SourceState::Node(SourceNode {
        data,
        mtime_ms: stat.mtime,
        kind,
        acl,
    }))
}

/// Makes the destination node of `p` what `state` says the source holds. A delete goes
/// through the deletion guard.
pub(super) async fn write_state(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
    state: SourceState,
) -> Result<Applied, ApplyError> {
    let o = &lo.sync;
    let dp = dst_path(o, p);
    let node = match state {
        SourceState::Skipped => return Ok(Applied::Unchanged),
        SourceState::Absent => {
            if p == o.source_root {
                // The whole source root is gone: stop here, as a one-shot sync would, rather
                // than wipe the destination copy (it may be the only one left).
                return Err(ApplyError::on("source", "getData", p)(ZkError::NoNode));
            }
            if !o.prune {
                return Ok(Applied::Unchanged);
            }
            // Through the deletion guard: applied after its delay, unless the burst is held.
            lo.gate.offer(p, Instant::now());
            return Ok(Applied::Queued);
        }
        SourceState::Node(n) => n,
    };
    let SourceNode {
        data,
        mtime_ms,
        kind,
        acl,
    } = node;
    let existing = match dst.get_data(&dp).await {
        Ok(v) => Some(v),
        Err(ZkError::NoNode) => None,
        Err(e) => return Err(ApplyError::on("destination", "getData", &dp)(e)),
    };
    match existing {
        None => {
            // A node whose ACL would lock the copier out is created open to it, then locked.
            let plan = plan_create_acl(me, acl.as_deref(), STREAM_NEEDS);
            let zk_acl: Vec<Acl> = plan.create_with.iter().map(AclEntry::to_zk).collect();
            let options = create_options(kind, &zk_acl);
            match dst.create(&dp, &data, &options).await {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(ZkError::NoNode) => {
                    // The parent is missing on the destination: bring it first, then retry.
                    if let Some(parent) =
                        path::parent(p).filter(|pp| pp.len() >= o.source_root.len())
                    {
                        Box::pin(apply_path(src, dst, lo, me, parent)).await?;
                    }
                    match dst.create(&dp, &data, &options).await {
                        Ok(_) | Err(ZkError::NodeExists) => {}
                        Err(e) => return Err(ApplyError::on("destination", "create", &dp)(e)),
                    }
                }
                Err(e) => return Err(ApplyError::on("destination", "create", &dp)(e)),
            }
            lo.gate.created(Instant::now(), 1);
            if let Some(target) = plan.set_at_end {
                let zk: Vec<Acl> = target.iter().map(AclEntry::to_zk).collect();
                dst.set_acl(&dp, &zk, None).await.map_err(ApplyError::on(
                    "destination",
                    "setACL",
                    &dp,
                ))?;
            }
            Ok(Applied::Written { mtime_ms })
        }
        Some((current, dstat)) => {
            let current_kind = NodeKind::from_ephemeral_owner(dstat.ephemeral_owner);
            if observable(current_kind) != observable(kind) {
                // A kind change needs the subtree recreated: the full pass does that.
                return Err(ApplyError::on("destination", "kind", &dp)(
                    ZkError::BadArguments(&"node kind differs"),
                ));
            }
            let mut wrote = false;
            if current != data {
                dst.set_data(&dp, &data, None)
                    .await
                    .map_err(ApplyError::on("destination", "setData", &dp))?;
                wrote = true;
            }
            if let Some(acl) = &acl {
                let (cur, _) =
                    dst.get_acl(&dp)
                        .await
                        .map_err(ApplyError::on("destination", "getACL", &dp))?;
                let cur = canonical_acl(cur.iter().map(AclEntry::from_zk).collect());
                if &cur != acl {
                    let zk: Vec<Acl> = acl.iter().map(AclEntry::to_zk).collect();
                    dst.set_acl(&dp, &zk, None).await.map_err(ApplyError::on(
                        "destination",
                        "setACL",
                        &dp,
                    ))?;
                    wrote = true;
                }
            }
            Ok(if wrote {
                Applied::Written { mtime_ms }
            } else {
                Applied::Unchanged
            })
        }
    }
}
