//! The hot path of a stream: a batch of dirty paths applied with as few round trips as the
//! protocol allows (multi-reads, pipelined ACL reads, multi-writes), parents before children.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use verifier::model::{canonical_acl, is_sequential_name, AclEntry, NodeKind};
use verifier::path;
use zookeeper_client::{Acl, Acls, Client, Error as ZkError};

use super::cversion::raise_cversion;
use super::{
    apply_data, apply_path, create_mode, dst_path, since_mtime, Applied, ApplyError, LiveOptions,
    Observer, Pending, DATA_CHANGED,
};
use crate::engine::kind_for;
use crate::engine::plan::{desired_kind, Identity};

pub(super) fn depth(p: &str) -> usize {
    p.bytes().filter(|b| *b == b'/').count()
}

/// Applies a batch: shallower paths first, each depth concurrently; then raises the cversion
/// of parents that received sequential children.
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
    for (_, paths) in by_depth {
        let chunks: Vec<Vec<(String, Pending)>> =
            paths.chunks(DATA_CHUNK).map(<[_]>::to_vec).collect();
        let results: Vec<Result<(), ApplyError>> =
            futures::stream::iter(chunks)
                .map(|chunk| async move {
                    apply_created_chunk(src, dst, opts, me, &chunk, observer).await
                })
                .buffer_unordered(8)
                .collect()
                .await;
        results.into_iter().collect::<Result<(), _>>()?;
    }
    // Then data changes, many per request: one multi-read, one multi-write per chunk.
    let chunks: Vec<Vec<(String, Pending)>> =
        data_only.chunks(DATA_CHUNK).map(<[_]>::to_vec).collect();
    let results: Vec<Result<(), ApplyError>> = futures::stream::iter(chunks)
        .map(|chunk| async move { apply_data_chunk(src, dst, opts, me, &chunk, observer).await })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    // Sequential names come from the parent's cversion: keep it at least the source's.
    let seq_parents: HashSet<&str> = batch
        .keys()
        .filter(|p| is_sequential_name(p.rsplit('/').next().unwrap_or_default()))
        .filter_map(|p| path::parent(p))
        .collect();
    for parent in seq_parents {
        raise_cversion(src, dst, &opts.sync, parent).await?;
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

/// Data-only changes read and written per request.
const DATA_CHUNK: usize = 256;

pub(super) fn lag_of(applied: &Applied, t: &Pending) -> Duration {
    match applied {
        Applied::Written { mtime_ms } => since_mtime(*mtime_ms),
        Applied::Queued | Applied::Unchanged => t.since.elapsed(),
    }
}

/// Copies the data of paths that only had data changes: one multi-read on the source, then
/// multi-writes of setData on the destination (split to stay under the batch byte limit).
/// Anything unusual (a node gone on either side, an ephemeral) goes through [`apply_data`].
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
    let results = read_chunk(src, chunk).await?;
    // What the destination holds: equal data is not written again, so a change that comes
    // back (a stream the other way that escaped detection) dies out after one round.
    let dst_paths: Vec<String> = chunk.iter().map(|(p, _)| dst_path(o, p)).collect();
    let current = read_paths(dst, "destination", &dst_paths).await?;
    let mut slow: Vec<&(String, Pending)> = Vec::new();
    // (path, pending, mtime) of each write, in groups that fit one transaction.
    let mut groups: Vec<Vec<Write<'_>>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for ((entry, r), now) in chunk.iter().zip(results).zip(current) {
        match r {
            zookeeper_client::MultiReadResult::Data { data, stat }
                if stat.ephemeral_owner == 0
                    && matches!(&now, zookeeper_client::MultiReadResult::Data { data: d, .. } if *d == data) =>
            {
                let applied = Applied::Written {
                    mtime_ms: stat.mtime,
                };
                observer.applied(&entry.0, lag_of(&applied, &entry.1));
            }
            zookeeper_client::MultiReadResult::Data { data, stat } if stat.ephemeral_owner == 0 => {
                let size = data.len() + entry.0.len() + 64;
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
        let mut writer = dst.new_multi_writer();
        for ((p, _), data, _) in &group {
            let dp = dst_path(o, p);
            writer
                .add_set_data(&dp, data, None)
                .map_err(ApplyError::on("destination", "setData", &dp))?;
        }
        let written: Vec<_> = group.iter().map(|(e, _, mtime)| (*e, *mtime)).collect();
        // One node missing on the destination fails the whole transaction: go one by one.
        if !commit_fast(writer, &written, first, observer).await? {
            slow.extend(written.iter().map(|(e, _)| *e));
        }
    }
    for (p, t) in slow {
        let applied = apply_data(src, dst, opts, me, p).await?;
        if !matches!(applied, Applied::Queued) {
            observer.applied(p, lag_of(&applied, t));
        }
    }
    Ok(())
}

/// Commits one multi-write of the batched paths (entry and source mtime of each) and reports
/// them applied. `Ok(false)`: one operation failed, so nothing was written and the caller
/// applies the paths one by one.
async fn commit_fast(
    mut writer: zookeeper_client::MultiWriter<'_>,
    written: &[(&(String, Pending), i64)],
    first: &str,
    observer: &Arc<dyn Observer>,
) -> Result<bool, ApplyError> {
    match writer.commit().await {
        Ok(_) => {
            for ((p, t), mtime_ms) in written {
                let applied = Applied::Written {
                    mtime_ms: *mtime_ms,
                };
                observer.applied(p, lag_of(&applied, t));
            }
            Ok(true)
        }
        Err(zookeeper_client::MultiWriteError::OperationFailed { .. }) => Ok(false),
        Err(zookeeper_client::MultiWriteError::RequestFailed { source }) => {
            Err(ApplyError::on("destination", "multi", first)(source))
        }
    }
}

/// Paths of one depth that had creates or deletes. The common case, nodes new on the source,
/// takes one multi-read, the ACL reads pipelined, and one multi-write of creates. Anything
/// else (a delete, a node already on the destination, an ACL that would lock the copier out)
/// goes through [`apply_path`] one by one.
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
            zookeeper_client::MultiReadResult::Data { data, stat } => {
                let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
                match desired_kind(kind_for(&o.type_rules, &entry.0, reported), o.ephemerals) {
                    Some(kind) => fast.push((entry, data, stat.mtime, kind)),
                    None => slow.push(entry),
                }
            }
            _ => slow.push(entry),
        }
    }
    // ACLs have no multi form: read them pipelined on the one session.
    let acls: Vec<Option<Vec<AclEntry>>> = if o.copy_acl {
        let reads = fast.iter().map(|(e, ..)| src.get_acl(&e.0));
        let mut out = Vec::with_capacity(fast.len());
        for (r, (e, ..)) in futures::future::join_all(reads)
            .await
            .into_iter()
            .zip(&fast)
        {
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
        out
    } else {
        fast.iter().map(|_| Some(vec![AclEntry::open()])).collect()
    };
    let mut writer = dst.new_multi_writer();
    let mut written: Vec<(&(String, Pending), i64)> = Vec::new();
    let mut bytes = 0usize;
    for ((entry, data, mtime, kind), acl) in fast.iter().zip(acls) {
        let Some(acl) = acl.filter(|_| bytes + data.len() < o.writer.max_batch_bytes) else {
            slow.push(entry);
            continue;
        };
        bytes += data.len() + entry.0.len() + 64;
        let zk_acl: Vec<Acl> = acl.iter().map(AclEntry::to_zk).collect();
        let mut options = create_mode(*kind).with_acls(Acls::new(&zk_acl));
        if let NodeKind::Ttl { ttl_ms } = kind {
            options = options.with_ttl(Duration::from_millis((*ttl_ms).max(1) as u64));
        }
        let dp = dst_path(o, &entry.0);
        writer
            .add_create(&dp, data, &options)
            .map_err(ApplyError::on("destination", "create", &dp))?;
        written.push((entry, *mtime));
    }
    // Some node exists already (or its parent is missing): one by one.
    if !written.is_empty() {
        if commit_fast(writer, &written, first, observer).await? {
            opts.gate.created(Instant::now(), written.len() as u64);
        } else {
            slow.extend(written.iter().map(|(e, _)| *e));
        }
    }
    for (p, t) in slow {
        let applied = apply_path(src, dst, opts, me, p).await?;
        if !matches!(applied, Applied::Queued) {
            observer.applied(p, lag_of(&applied, t));
        }
    }
    Ok(())
}
