//! Deletes on the destination: the ones the deletion guard lets through, and whole subtrees
//! (repairs). A round of deletes costs a few round trips whatever its size: the source is
//! asked about every path at once (pipelined), the destination subtrees are listed a level at
//! a time (pipelined) and deleted children first by multi-writes.

use std::sync::Arc;
use std::time::Instant;

use verifier::{path, Side};
use zookeeper_client::{Client, Error as ZkError, MultiReadResult};

use super::multi::commit_setting_aside;
use super::{apply_path, child_of, dst_path, ApplyError, LiveOptions, Observer};
use crate::engine::plan::Identity;
use crate::engine::SyncError;

/// Deletes per multi-write: well under the default jute.maxbuffer (1 MiB) for paths of any
/// sane length, and one transaction in the server's log.
const DELETES_PER_MULTI: usize = 1_000;

/// Paths per multi-read while subtrees are listed or paths looked at.
const PER_READ: usize = 256;

/// Multi-reads in flight at once: enough to fill the pipe, few enough to bound the replies
/// held at once.
const READS_IN_FLIGHT: usize = 8;

/// Single requests in flight at once (paths that came back, streamed as changes).
const PIPELINE: usize = 64;

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
    let started = Instant::now();
    let mut gone = Vec::new();
    let mut back = Vec::new();
    for (p, exists) in paths.iter().zip(exist(src, paths).await?) {
        if exists {
            back.push(p);
        } else {
            gone.push(p);
        }
    }
    let me = Identity::new(o.destination.auth.as_ref());
    for chunk in back.chunks(PIPELINE) {
        let applied =
            futures::future::join_all(chunk.iter().map(|p| apply_path(src, dst, opts, &me, p)))
                .await;
        for (p, applied) in chunk.iter().zip(applied) {
            if applied?.counts() {
                observer.applied(p, started.elapsed());
            }
        }
    }
    for p in &gone {
        // Nothing under a node gone from the source is left out for its size any more.
        opts.oversized.gone(p);
    }
    let tops: Vec<String> = gone.iter().map(|p| dst_path(o, p)).collect();
    let n = delete_subtrees(dst, &tops).await?;
    opts.gate.deleted(Instant::now(), n);
    let lag = opts.gate.delay() + started.elapsed();
    for p in gone {
        observer.applied(p, lag);
    }
    Ok(())
}

/// Deletes `top` and everything under it on the destination (for the judge's repair).
pub async fn delete_destination_subtree(dst: &Client, top: &str) -> Result<(), SyncError> {
    delete_subtrees(dst, &[top.to_string()])
        .await
        .map(|_| ())
        .map_err(ApplyError::into_sync)
}

/// Deletes each of `tops` and everything under it on the destination, children first.
/// Returns the nodes deleted.
pub(super) async fn delete_subtrees(dst: &Client, tops: &[String]) -> Result<u64, ApplyError> {
    let order = list_subtrees(dst, tops).await?;
    let mut deleted = 0;
    // Parents are listed before their children: reversed, every child goes in the same or an
    // earlier transaction than its parent.
    let deepest_first: Vec<&String> = order.iter().rev().collect();
    for chunk in deepest_first.chunks(DELETES_PER_MULTI) {
        deleted += delete_chunk(dst, chunk).await?;
    }
    Ok(deleted)
}

/// Whether each of `paths` exists on the source: multi-reads of getChildren (a path the
/// copier may not read is asked about with exists instead).
async fn exist(src: &Client, paths: &[String]) -> Result<Vec<bool>, ApplyError> {
    let mut out = Vec::with_capacity(paths.len());
    for (chunk, listed) in paths
        .chunks(PER_READ)
        .zip(list(src, Side::Source, paths).await?)
    {
        for (p, children) in chunk.iter().zip(listed) {
            out.push(match children {
                Listed::Children(_) => true,
                Listed::Gone => false,
                Listed::Unreadable => src
                    .check_stat(p)
                    .await
                    .map_err(ApplyError::on(Side::Source, "exists", p))?
                    .is_some(),
            });
        }
    }
    Ok(out)
}

/// What a multi-read of getChildren said of one path.
enum Listed {
    Children(Vec<String>),
    Gone,
    /// Any other error of that path (NoAuth): the caller asks again in another way.
    Unreadable,
}

/// getChildren of each of `paths` on `side`, one multi-read per [`PER_READ`] paths, a few in
/// flight; the result has one vector per chunk.
async fn list(c: &Client, side: Side, paths: &[String]) -> Result<Vec<Vec<Listed>>, ApplyError> {
    let mut out = Vec::new();
    for wave in paths.chunks(PER_READ * READS_IN_FLIGHT) {
        let reads = wave.chunks(PER_READ).map(|chunk| async move {
            let mut reader = c.new_multi_reader();
            for p in chunk {
                reader
                    .add_get_children(p)
                    .map_err(ApplyError::on(side, "getChildren", p))?;
            }
            let first = chunk.first().map(String::as_str).unwrap_or_default();
            let results =
                reader
                    .commit()
                    .await
                    .map_err(ApplyError::on(side, "multi-read", first))?;
            Ok::<Vec<Listed>, ApplyError>(
                results
                    .into_iter()
                    .map(|r| match r {
                        MultiReadResult::Children { children } => Listed::Children(children),
                        MultiReadResult::Error {
                            err: ZkError::NoNode,
                        } => Listed::Gone,
                        _ => Listed::Unreadable,
                    })
                    .collect(),
            )
        });
        for r in futures::future::join_all(reads).await {
            out.push(r?);
        }
    }
    Ok(out)
}

/// `tops` (less those under another of them) and every node under them, a level at a time,
/// parents before children. Paths already gone are left out.
async fn list_subtrees(dst: &Client, tops: &[String]) -> Result<Vec<String>, ApplyError> {
    // The server's own tree is never deleted, whatever asks.
    let mut sorted: Vec<&String> = tops.iter().filter(|t| !path::is_reserved(t)).collect();
    sorted.sort_by(|a, b| path::tree_order(a, b));
    sorted.dedup();
    let mut level: Vec<String> = Vec::new();
    for t in sorted {
        if !level.last().is_some_and(|l| path::is_within(l, t)) {
            level.push(t.clone());
        }
    }
    let mut order = Vec::new();
    while !level.is_empty() {
        let mut next = Vec::new();
        for (chunk, listed) in level
            .chunks(PER_READ)
            .zip(list(dst, Side::Destination, &level).await?)
        {
            for (p, children) in chunk.iter().zip(listed) {
                let children = match children {
                    Listed::Children(c) => c,
                    Listed::Gone => continue,
                    Listed::Unreadable => match dst.get_children(p).await {
                        Ok((c, _)) => c,
                        Err(ZkError::NoNode) => continue,
                        Err(e) => {
                            return Err(ApplyError::on(Side::Destination, "getChildren", p)(e))
                        }
                    },
                };
                next.extend(
                    children
                        .iter()
                        .map(|c| child_of(p, c))
                        .filter(|c| !path::is_reserved(c)),
                );
                order.push(p.clone());
            }
        }
        level = next;
    }
    Ok(order)
}

/// Deletes `paths` (children before parents) in one multi-write. A path that fails (gone
/// already, or a child appeared meanwhile) is set aside and its subtree deleted one request at
/// a time after the rest.
async fn delete_chunk(dst: &Client, paths: &[&String]) -> Result<u64, ApplyError> {
    let first = paths.first().map(|p| p.as_str()).unwrap_or_default();
    let (deleted, aside) = commit_setting_aside(dst, paths.to_vec(), first, |w, p| {
        w.add_delete(p, None)
            .map_err(ApplyError::on(Side::Destination, "delete", p))
    })
    .await?;
    let mut n = deleted.len() as u64;
    for p in aside {
        n += delete_one_by_one(dst, p).await?;
    }
    Ok(n)
}

/// Deletes `top` and everything under it, one request at a time (the fallback).
async fn delete_one_by_one(dst: &Client, top: &str) -> Result<u64, ApplyError> {
    let mut order = vec![top.to_string()];
    let mut i = 0;
    while i < order.len() {
        match dst.get_children(&order[i]).await {
            Ok((children, _)) => {
                let parent = order[i].clone();
                order.extend(
                    children
                        .iter()
                        .map(|c| child_of(&parent, c))
                        .filter(|c| !path::is_reserved(c)),
                );
            }
            Err(ZkError::NoNode) => {}
            Err(e) => {
                return Err(ApplyError::on(Side::Destination, "getChildren", &order[i])(
                    e,
                ))
            }
        }
        i += 1;
    }
    let mut deleted = 0;
    for p in order.iter().rev() {
        match dst.delete(p, None).await {
            Ok(()) => deleted += 1,
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(ApplyError::on(Side::Destination, "delete", p)(e)),
        }
    }
    Ok(deleted)
}
