//! Deletes on the destination: the ones the deletion guard lets through, and whole subtrees
//! (repairs, kind changes).

use std::sync::Arc;
use std::time::Instant;

use zookeeper_client::{Client, Error as ZkError};

use super::{apply_path, child_of, dst_path, Applied, ApplyError, LiveOptions, Observer};
use crate::engine::plan::Identity;
use crate::engine::SyncError;

/// Applies deletes the guard let through. Each source path is looked at again first: one
/// that came back is streamed as a change instead.
pub(super) async fn apply_deletes(
    src: &Client,
    dst: &Client,
    opts: &LiveOptions,
    paths: &[String],
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    let o = &opts.sync;
    let me = Identity::new(o.destination.auth.as_ref());
    for p in paths {
        let started = Instant::now();
        let exists = src
            .check_stat(p)
            .await
            .map_err(ApplyError::on("source", "exists", p))?;
        if exists.is_some() {
            let applied = apply_path(src, dst, opts, &me, p).await?;
            if !matches!(applied, Applied::Queued) {
                observer.applied(p, started.elapsed());
            }
            continue;
        }
        let n = delete_subtree(dst, &dst_path(o, p)).await?;
        opts.gate.deleted(Instant::now(), n);
        observer.applied(p, opts.gate.delay() + started.elapsed());
    }
    Ok(())
}

/// Deletes `top` and everything under it on the destination (for the judge's repair).
pub async fn delete_destination_subtree(dst: &Client, top: &str) -> Result<(), SyncError> {
    delete_subtree(dst, top)
        .await
        .map(|_| ())
        .map_err(|e| SyncError::Write {
            op: e.op,
            path: e.path,
            source: e.source,
        })
}

/// Deletes `top` and everything under it on the destination, children first. Returns the
/// nodes deleted.
pub(super) async fn delete_subtree(dst: &Client, top: &str) -> Result<u64, ApplyError> {
    let mut order = vec![top.to_string()];
    let mut i = 0;
    while i < order.len() {
        match dst.get_children(&order[i]).await {
            Ok((children, _)) => {
                let parent = order[i].clone();
                order.extend(children.iter().map(|c| child_of(&parent, c)));
            }
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(ApplyError::on("destination", "getChildren", &order[i])(e)),
        }
        i += 1;
    }
    let mut deleted = 0;
    for p in order.iter().rev() {
        match dst.delete(p, None).await {
            Ok(()) => deleted += 1,
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(ApplyError::on("destination", "delete", p)(e)),
        }
    }
    Ok(deleted)
}
