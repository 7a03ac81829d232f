//! One path at a time: the current source state of a node read, and the destination made
//! equal to it (create with ACL staging, update of data and ACL, delete through the guard).

use std::time::Instant;

use verifier::model::{canonical_acl, AclEntry, NodeKind};
use verifier::path;
use verifier::Side;
use zookeeper_client::{Acl, Client, Error as ZkError, Stat};

use super::{dst_path, left_out, Applied, ApplyError, LiveOptions, STREAM_NEEDS};
use crate::engine::oversized::REQUEST_FRAME;
use crate::engine::plan::{desired_kind, plan_create_acl, Identity};
use crate::engine::writer::{create_options, create_size, set_data_size};
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
    if left_out(o, p) {
        return Ok(Applied::Unchanged);
    }
    let (data, stat) = match read_data(src, o, p).await? {
        None => return apply_path(src, dst, lo, me, p).await,
        Some((_, _, None)) => return Ok(Applied::Unchanged),
        Some((data, stat, Some(_))) => (data, stat),
    };
    let dp = dst_path(o, p);
    if set_data_size(&dp, data.len()) + REQUEST_FRAME > lo.limits().0 {
        // Too big: the full path finds out whether the destination has the node at all.
        return apply_path(src, dst, lo, me, p).await;
    }
    match dst.set_data(&dp, &data, None).await {
        Ok(_) => {
            lo.oversized.written(p);
            Ok(Applied::Written {
                mtime_ms: stat.mtime,
            })
        }
        Err(ZkError::NoNode) => apply_path(src, dst, lo, me, p).await,
        Err(e) => Err(ApplyError::on(Side::Destination, "setData", &dp)(e)),
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

/// Bytes of an ACL entry besides its id (scheme, permissions, slot), for the delay bound.
const ACL_ENTRY_OVERHEAD: usize = 16;

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
                    + n.acl.as_ref().map_or(0, |a| {
                        a.iter().map(|e| e.id.len() + ACL_ENTRY_OVERHEAD).sum()
                    })
            }
            _ => 0,
        }
    }
}

/// The data and stat of the source node at `p` (None: no such node), with the kind the copy
/// gives it (None: an ephemeral the policy leaves out).
async fn read_data(
    src: &Client,
    o: &SyncOptions,
    p: &str,
) -> Result<Option<(Vec<u8>, Stat, Option<NodeKind>)>, ApplyError> {
    match src.get_data(p).await {
        Ok((data, stat)) => {
            let kind = copied_kind(o, p, &stat);
            Ok(Some((data, stat, kind)))
        }
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(ApplyError::on(Side::Source, "getData", p)(e)),
    }
}

/// The kind the copy gives the source node at `p` read with `stat` (type rules, ephemeral
/// policy); None when it is not copied.
pub(super) fn copied_kind(o: &SyncOptions, p: &str, stat: &Stat) -> Option<NodeKind> {
    let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    desired_kind(kind_for(&o.type_rules, p, reported), o.ephemerals)
}

/// Reads the node at `p` with its ACL.
pub(super) async fn read_source(
    src: &Client,
    o: &SyncOptions,
    p: &str,
) -> Result<SourceState, ApplyError> {
    let (data, stat, kind) = match read_data(src, o, p).await? {
        None => return Ok(SourceState::Absent),
        Some((_, _, None)) => return Ok(SourceState::Skipped),
        Some((data, stat, Some(kind))) => (data, stat, kind),
    };
    let acl: Option<Vec<AclEntry>> = if o.copy_acl {
        let (acl, _) = match src.get_acl(p).await {
            Ok(v) => v,
            Err(ZkError::NoNode) => return Ok(SourceState::Absent),
            Err(e) => return Err(ApplyError::on(Side::Source, "getACL", p)(e)),
        };
        let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
        if acl.iter().any(verifier::reader::is_redacted) {
            // Needs ADMIN on the source; the full pass reports it with the fix.
            return Err(ApplyError::on(Side::Source, "getACL", p)(ZkError::NoAuth));
        }
        Some(o.destination_acl(canonical_acl(acl)))
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
    if left_out(o, p) {
        // Events there are dropped; this holds the line for any other way in.
        return Ok(Applied::Unchanged);
    }
    let node = match state {
        SourceState::Skipped => return Ok(Applied::Unchanged),
        SourceState::Absent => return offer_delete(lo, p),
        // Its top is left out for its size: nothing under it can be created.
        SourceState::Node(_) if lo.oversized.under_missing(p) => return Ok(Applied::LeftOut),
        SourceState::Node(n) => n,
    };
    let dp = dst_path(o, p);
    match dst.get_data(&dp).await {
        Ok((current, stat)) => update_node(dst, lo, p, &dp, node, &current, &stat).await,
        Err(ZkError::NoNode) => create_node(src, dst, lo, me, p, &dp, node).await,
        Err(e) => Err(ApplyError::on(Side::Destination, "getData", &dp)(e)),
    }
}

/// The source node at `p` is gone: its delete goes through the deletion guard, applied after
/// its delay unless the burst is held.
fn offer_delete(lo: &LiveOptions, p: &str) -> Result<Applied, ApplyError> {
    let o = &lo.sync;
    if p == o.source_root {
        // The whole source root is gone: stop here, as a one-shot sync would, rather than
        // wipe the destination copy (it may be the only one left).
        return Err(ApplyError::on(Side::Source, "getData", p)(ZkError::NoNode));
    }
    if !o.prune {
        return Ok(Applied::Unchanged);
    }
    lo.gate.offer(p, Instant::now());
    Ok(Applied::Queued)
}

/// Creates the destination node `dp` of the source path `p` (its missing parents first), then
/// locks it with its final ACL when it had to be created with the staging one.
async fn create_node(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    p: &str,
    dp: &str,
    node: SourceNode,
) -> Result<Applied, ApplyError> {
    // A node whose ACL would lock the copier out is created open to it, then locked.
    let plan = plan_create_acl(me, node.acl.as_deref(), STREAM_NEEDS);
    let size = create_size(dp, node.data.len(), &plan.create_with);
    if !lo.oversized.admit(p, size, lo.limits().0, true) {
        return Ok(Applied::LeftOut);
    }
    let zk_acl: Vec<Acl> = plan.create_with.iter().map(AclEntry::to_zk).collect();
    let options = create_options(node.kind, &zk_acl);
    let create = || async {
        match dst.create(dp, &node.data, &options).await {
            Ok(_) | Err(ZkError::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
    };
    match create().await {
        Ok(()) => {}
        Err(ZkError::NoNode) => {
            // The parent is missing on the destination: bring it first, then retry.
            if let Some(parent) = path::parent(p).filter(|pp| pp.len() >= lo.sync.source_root.len())
            {
                let parent = Box::pin(apply_path(src, dst, lo, me, parent)).await?;
                if matches!(parent, Applied::LeftOut) {
                    return Ok(Applied::LeftOut);
                }
            }
            create()
                .await
                .map_err(ApplyError::on(Side::Destination, "create", dp))?;
        }
        Err(e) => return Err(ApplyError::on(Side::Destination, "create", dp)(e)),
    }
    lo.gate.created(Instant::now(), 1);
    lo.oversized.written(p);
    if let Some(target) = plan.set_at_end {
        set_acl(dst, dp, &target).await?;
    }
    Ok(Applied::Written {
        mtime_ms: node.mtime_ms,
    })
}

/// Makes the existing destination node `dp` (holding `current`) of the source path `p` equal
/// to `node`: its data (unless too big for the destination: it keeps its older data), and its
/// ACL when ACLs are copied.
async fn update_node(
    dst: &Client,
    lo: &LiveOptions,
    p: &str,
    dp: &str,
    node: SourceNode,
    current: &[u8],
    stat: &Stat,
) -> Result<Applied, ApplyError> {
    let current_kind = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    if observable(current_kind) != observable(node.kind) {
        // A kind change needs the subtree recreated: the full pass does that.
        return Err(ApplyError::kind_differs(dp));
    }
    let mut wrote = false;
    let mut left_out = false;
    if current == node.data {
        lo.oversized.written(p);
    } else if !lo
        .oversized
        .admit(p, set_data_size(dp, node.data.len()), lo.limits().0, false)
    {
        left_out = true;
    } else {
        dst.set_data(dp, &node.data, None)
            .await
            .map_err(ApplyError::on(Side::Destination, "setData", dp))?;
        lo.oversized.written(p);
        wrote = true;
    }
    if let Some(acl) = &node.acl {
        let (cur, _) =
            dst.get_acl(dp)
                .await
                .map_err(ApplyError::on(Side::Destination, "getACL", dp))?;
        if canonical_acl(cur.iter().map(AclEntry::from_zk).collect()) != *acl {
            set_acl(dst, dp, acl).await?;
            wrote = true;
        }
    }
    Ok(if left_out {
        Applied::LeftOut
    } else if wrote {
        Applied::Written {
            mtime_ms: node.mtime_ms,
        }
    } else {
        Applied::Unchanged
    })
}

async fn set_acl(dst: &Client, dp: &str, acl: &[AclEntry]) -> Result<(), ApplyError> {
    let zk: Vec<Acl> = acl.iter().map(AclEntry::to_zk).collect();
    dst.set_acl(dp, &zk, None)
        .await
        .map(|_| ())
        .map_err(ApplyError::on(Side::Destination, "setACL", dp))
}
