//! The hot path of a stream: a batch of dirty paths applied with as few round trips as the
//! protocol allows (multi-reads, pipelined ACL reads, multi-writes), parents before children.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use verifier::model::{canonical_acl, is_sequential_name, AclEntry, NodeKind};
use verifier::path;
use zookeeper_client::{Acl, Acls, Client, Error as ZkError, MultiReadResult};

use super::cversion::raise_cversions;
use super::multi::commit_setting_aside;
use super::{
    apply_data, apply_path, create_mode, dst_path, since_mtime, write_state, Applied, ApplyError,
    LiveOptions, Observer, Pending, SourceState, DATA_CHANGED,
};
use crate::engine::kind_for;
use crate::engine::plan::{desired_kind, Identity};

pub(super) fn depth(p: &str) -> usize {
    p.bytes().filter(|b| *b == b'/').count()
}

/// Applies a batch: creates and deletes shallower paths first, each depth concurrently, and
/// data changes alongside; then raises the cversion of parents that received sequential
/// children.
pub(super) async fn apply_batch(
    src: &Client,
    dst: &Client,
    opts: &LiveOptions,
    me: &Identity,
    batch: &BTreeMap<String, Pending>,
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    // Creates and deletes first, parents before children; owned, so the futures below are
    // Send without higher-ranked lifetimes.
    let mut by_depth: BTreeMap<usize, Vec<(String, Pending)>> = BTreeMap::new();
    let mut data_only: Vec<(String, Pending)> = Vec::new();
    for (p, t) in batch {
        if t.kinds == DATA_CHANGED {
            data_only.push((p.clone(), *t));
        } else {
            by_depth.entry(depth(p)).or_default().push((p.clone(), *t));
        }
    }
    // Data-only paths existed before this batch: they go alongside the creates.
    let creates = async {
        for (_, paths) in by_depth {
            let chunks: Vec<Vec<(String, Pending)>> =
                paths.chunks(DATA_CHUNK).map(<[_]>::to_vec).collect();
            let results: Vec<Result<(), ApplyError>> = futures::stream::iter(chunks)
                .map(|chunk| async move {
                    apply_created_chunk(src, dst, opts, me, &chunk, observer).await
                })
                .buffer_unordered(CHUNKS_IN_FLIGHT)
                .collect()
                .await;
            results.into_iter().collect::<Result<(), _>>()?;
        }
        Ok::<(), ApplyError>(())
    };
    // Data changes, many per request: one multi-read per side, one multi-write per chunk.
    let data = async {
        let chunks: Vec<Vec<(String, Pending)>> =
            data_only.chunks(DATA_CHUNK).map(<[_]>::to_vec).collect();
        let results: Vec<Result<(), ApplyError>> = futures::stream::iter(chunks)
            .map(
                |chunk| async move { apply_data_chunk(src, dst, opts, me, &chunk, observer).await },
            )
            .buffer_unordered(CHUNKS_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()
    };
    let (created, written) = tokio::join!(creates, data);
    created?;
    written?;
    // Sequential names come from the parent's cversion: keep it at least the source's.
    let mut seq_parents: Vec<&str> = batch
        .keys()
        .filter(|p| is_sequential_name(p.rsplit('/').next().unwrap_or_default()))
        .filter_map(|p| path::parent(p))
        .collect();
    seq_parents.sort_unstable();
    seq_parents.dedup();
    if !seq_parents.is_empty() {
        raise_cversions(src, dst, &opts.sync, &seq_parents).await?;
    }
    Ok(())
}

/// A create of the fast path: the dirty entry, the data read, the source mtime, the kind.
type Create<'a> = (&'a (String, Pending), Vec<u8>, i64, NodeKind);

/// A data write of the fast path: the dirty entry, the data read, the source mtime.
type Write<'a> = (&'a (String, Pending), Vec<u8>, i64);

/// Data and stat of every path of `chunk` in one multi-read (errors such as NoNode per path).
async fn read_chunk(
    src: &Client,
    chunk: &[(String, Pending)],
) -> Result<Vec<zookeeper_client::MultiReadResult>, ApplyError> {
    let paths: Vec<String> = chunk.iter().map(|(p, _)| p.clone()).collect();
    read_paths(src, "source", &paths).await
}

/// Data and stat of each of `paths` on `side` in one multi-read.
pub(super) async fn read_paths(
    c: &Client,
    side: &'static str,
    paths: &[String],
) -> Result<Vec<zookeeper_client::MultiReadResult>, ApplyError> {
    let mut reader = c.new_multi_reader();
    for p in paths {
        reader
            .add_get_data(p)
            .map_err(ApplyError::on(side, "getData", p))?;
    }
    let first = paths.first().map(String::as_str).unwrap_or_default();
    reader
        .commit()
        .await
        .map_err(ApplyError::on(side, "multi-read", first))
}

/// Changed paths read (and written) per request.
const DATA_CHUNK: usize = 256;

/// Bytes an operation adds to a transaction besides its path and data (header, ACL, stat),
/// an upper bound used to keep a multi-write under the batch byte limit.
const OP_OVERHEAD: usize = 64;

/// Paths of one chunk applied one by one at the same time when the fast path cannot take
/// them.
const SLOW_IN_FLIGHT: usize = 32;

/// Chunks of one depth (or of data changes) in flight at once.
const CHUNKS_IN_FLIGHT: usize = 8;

pub(super) fn lag_of(applied: &Applied, t: &Pending) -> Duration {
    match applied {
        Applied::Written { mtime_ms } => since_mtime(*mtime_ms),
        Applied::Queued | Applied::Unchanged => t.since.elapsed(),
    }
}

/// Copies the data of paths that only had data changes: one multi-read on the source and one
/// on the destination, then multi-writes of setData (split to stay under the batch byte
/// limit). Anything unusual (a node gone on either side, an ephemeral) goes through
/// [`apply_data`].
async fn apply_data_chunk(
    src: &Client,
    dst: &Client,
    opts: &LiveOptions,
    me: &Identity,
    chunk: &[(String, Pending)],
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    let o = &opts.sync;
    let first = chunk.first().map(|(p, _)| p.as_str()).unwrap_or_default();
    // What the destination holds: equal data is not written again, so a change that comes
    // back (a stream the other way that escaped detection) dies out after one round.
    let dst_paths: Vec<String> = chunk.iter().map(|(p, _)| dst_path(o, p)).collect();
    let (results, current) = tokio::join!(
        read_chunk(src, chunk),
        read_paths(dst, "destination", &dst_paths)
    );
    let mut slow: Vec<&(String, Pending)> = Vec::new();
    // Writes in groups that fit one transaction.
    let mut groups: Vec<Vec<Write<'_>>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for ((entry, r), now) in chunk.iter().zip(results?).zip(current?) {
        match r {
            MultiReadResult::Data { data, stat }
                if stat.ephemeral_owner == 0
                    && matches!(&now, MultiReadResult::Data { data: d, .. } if *d == data) =>
            {
                observer.applied(&entry.0, since_mtime(stat.mtime));
            }
            MultiReadResult::Data { data, stat } if stat.ephemeral_owner == 0 => {
                let size = data.len() + entry.0.len() + OP_OVERHEAD;
                if bytes + size > o.writer.max_batch_bytes {
                    groups.push(Vec::new());
                    bytes = 0;
                }
                bytes += size;
                if let Some(g) = groups.last_mut() {
                    g.push((entry, data, stat.mtime));
                }
            }
            _ => slow.push(entry),
        }
    }
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        // A node missing on the destination fails the transaction: it is set aside.
        let (written, aside) = commit_setting_aside(dst, group, first, |w, ((p, _), data, _)| {
            let dp = dst_path(o, p);
            w.add_set_data(&dp, data, None)
                .map_err(ApplyError::on("destination", "setData", &dp))
        })
        .await?;
        for ((p, _), _, mtime_ms) in written {
            observer.applied(p, since_mtime(mtime_ms));
        }
        slow.extend(aside.into_iter().map(|(e, ..)| e));
    }
    one_by_one(&slow, observer, |p| apply_data(src, dst, opts, me, p)).await
}

/// Applies each of `slow` with `apply` (a few round trips each), [`SLOW_IN_FLIGHT`] at a
/// time; they are paths of one depth, so none depends on another.
async fn one_by_one<'p, F, Fut>(
    slow: &[&'p (String, Pending)],
    observer: &Arc<dyn Observer>,
    apply: F,
) -> Result<(), ApplyError>
where
    F: Fn(&'p str) -> Fut,
    Fut: std::future::Future<Output = Result<Applied, ApplyError>>,
{
    for group in slow.chunks(SLOW_IN_FLIGHT) {
        let applied = futures::future::join_all(group.iter().map(|(p, _)| apply(p))).await;
        for ((p, t), applied) in group.iter().zip(applied) {
            let applied = applied?;
            if !matches!(applied, Applied::Queued) {
                observer.applied(p, lag_of(&applied, t));
            }
        }
    }
    Ok(())
}

/// Paths of one depth that had creates or deletes. The common case, nodes new on the source,
/// takes one multi-read, the ACL reads pipelined, and one multi-write of creates; a path gone
/// from the source goes to the deletion guard without another read. Anything else (a node
/// already on the destination, an ACL that would lock the copier out) goes through
/// [`apply_path`], several at a time.
async fn apply_created_chunk(
    src: &Client,
    dst: &Client,
    opts: &LiveOptions,
    me: &Identity,
    chunk: &[(String, Pending)],
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    let o = &opts.sync;
    let first = chunk.first().map(|(p, _)| p.as_str()).unwrap_or_default();
    let results = read_chunk(src, chunk).await?;
    let mut slow: Vec<&(String, Pending)> = Vec::new();
    let mut fast: Vec<Create<'_>> = Vec::new();
    for (entry, r) in chunk.iter().zip(results) {
        match r {
            MultiReadResult::Data { data, stat } => {
                let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
                match desired_kind(kind_for(&o.type_rules, &entry.0, reported), o.ephemerals) {
                    Some(kind) => fast.push((entry, data, stat.mtime, kind)),
                    None => slow.push(entry),
                }
            }
            MultiReadResult::Error {
                err: ZkError::NoNode,
            } => {
                let applied =
                    write_state(src, dst, opts, me, &entry.0, SourceState::Absent).await?;
                if !matches!(applied, Applied::Queued) {
                    observer.applied(&entry.0, lag_of(&applied, &entry.1));
                }
            }
            _ => slow.push(entry),
        }
    }
    let acls = read_acls(src, me, o.copy_acl, &fast).await?;
    let mut creates = Vec::with_capacity(fast.len());
    let mut bytes = 0usize;
    for ((entry, data, mtime, kind), acl) in fast.into_iter().zip(acls) {
        match acl.filter(|_| bytes + data.len() < o.writer.max_batch_bytes) {
            Some(acl) => {
                bytes += data.len() + entry.0.len() + OP_OVERHEAD;
                creates.push((entry, data, mtime, kind, acl));
            }
            None => slow.push(entry),
        }
    }
    // A node that exists already (or whose parent is missing) is set aside.
    let (written, aside) =
        commit_setting_aside(dst, creates, first, |w, (entry, data, _, kind, acl)| {
            let zk_acl: Vec<Acl> = acl.iter().map(AclEntry::to_zk).collect();
            let mut options = create_mode(*kind).with_acls(Acls::new(&zk_acl));
            if let NodeKind::Ttl { ttl_ms } = kind {
                options = options.with_ttl(Duration::from_millis((*ttl_ms).max(1) as u64));
            }
            let dp = dst_path(o, &entry.0);
            w.add_create(&dp, data, &options)
                .map_err(ApplyError::on("destination", "create", &dp))
        })
        .await?;
    if !written.is_empty() {
        opts.gate.created(Instant::now(), written.len() as u64);
    }
    for ((p, _), _, mtime_ms, ..) in written {
        observer.applied(p, since_mtime(mtime_ms));
    }
    slow.extend(aside.into_iter().map(|(e, ..)| e));
    one_by_one(&slow, observer, |p| apply_path(src, dst, opts, me, p)).await
}

/// The ACL each new node is created with, read pipelined on the one session (ACLs have no
/// multi-read form). None: the node goes the slow way (its ACL would lock the copier out, or
/// it is gone).
async fn read_acls(
    src: &Client,
    me: &Identity,
    copy_acl: bool,
    fast: &[Create<'_>],
) -> Result<Vec<Option<Vec<AclEntry>>>, ApplyError> {
    if !copy_acl {
        return Ok(fast.iter().map(|_| Some(vec![AclEntry::open()])).collect());
    }
    let reads = fast.iter().map(|(e, ..)| src.get_acl(&e.0));
    let mut out = Vec::with_capacity(fast.len());
    for (r, (e, ..)) in futures::future::join_all(reads).await.into_iter().zip(fast) {
        match r {
            Ok((acl, _)) => {
                let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
                let usable = !acl.iter().any(verifier::reader::is_redacted)
                    && me.grants(
                        &acl,
                        verifier::model::perms::ALL & !verifier::model::perms::ADMIN,
                    );
                out.push(usable.then(|| canonical_acl(acl)));
            }
            Err(ZkError::NoNode) => out.push(None),
            Err(err) => return Err(ApplyError::on("source", "getACL", &e.0)(err)),
        }
    }
    Ok(out)
}
