//! The hot path of a stream: a batch of dirty paths applied with as few round trips as the
//! protocol allows, parents before children.
//!
//! Paths with creates or deletes are read ahead (a multi-read of data and stat per chunk,
//! then their ACLs, spread over a few sessions) while the writes of shallower paths are still
//! going in; a depth's writes (multi-writes of creates) start once every shallower one is
//! done. Data-only changes go alongside: one multi-read per side and a multi-write of
//! setData per chunk.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use verifier::model::{canonical_acl, is_sequential_name, AclEntry, NodeKind};
use verifier::path;
use verifier::Side;
use zookeeper_client::{
    Acl, Client, Error as ZkError, MultiReadResult, MultiWriteError, MultiWriteResult, MultiWriter,
};

use super::apply::copied_kind;
use super::cversion::raise_cversions;
use super::multi::commit_setting_aside;
use super::readers::{ReadSet, Readers};
use super::{
    apply_data, apply_path, dst_path, since_mtime, write_state, Applied, ApplyError, LiveOptions,
    Observer, Pending, SourceState, DATA_CHANGED, STREAM_NEEDS,
};
use crate::engine::plan::Identity;
use crate::engine::writer::{create_options, create_size, set_data_size};
use crate::engine::SyncOptions;

pub(super) fn depth(p: &str) -> usize {
    p.bytes().filter(|b| *b == b'/').count()
}

/// Changed paths read (and written) per request.
const DATA_CHUNK: usize = 256;

/// Bytes an operation adds to a transaction besides its path and data (header, ACL, stat),
/// an upper bound used to keep a multi-write under the batch byte limit.
const OP_OVERHEAD: usize = 64;

/// Paths of one chunk applied one by one at the same time when the fast path cannot take
/// them.
const SLOW_IN_FLIGHT: usize = 32;

/// Chunks read ahead, and chunks being written, at once: enough to keep both servers busy,
/// few enough to bound what is held in memory (a few chunks of data).
const CHUNKS_IN_FLIGHT: usize = 8;

/// Applies a batch: creates and deletes parents first, read ahead of the writes; data
/// changes alongside; then raises the cversion of parents that received sequential
/// children.
pub(super) async fn apply_batch(
    readers: &Readers,
    dst: &Client,
    opts: &LiveOptions,
    me: &Identity,
    batch: &BTreeMap<String, Pending>,
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    let changed = batch.values().filter(|t| t.kinds != DATA_CHANGED).count();
    let readers = &readers.for_batch(changed).await?;
    let src = readers.session(0);
    // Owned, so the futures below are Send without higher-ranked lifetimes.
    let mut by_depth: BTreeMap<usize, Vec<(String, Pending)>> = BTreeMap::new();
    let mut data_only: Vec<(String, Pending)> = Vec::new();
    for (p, t) in batch {
        if t.kinds == DATA_CHANGED {
            data_only.push((p.clone(), *t));
        } else {
            by_depth.entry(depth(p)).or_default().push((p.clone(), *t));
        }
    }
    let started = Instant::now();
    let creates = async {
        let chunks: Vec<(usize, Vec<(String, Pending)>)> = by_depth
            .into_iter()
            .flat_map(|(d, paths)| {
                paths
                    .chunks(DATA_CHUNK)
                    .map(|c| (d, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !chunks.is_empty() {
            apply_created(readers, dst, opts, me, chunks, observer).await?;
        }
        Ok::<Duration, ApplyError>(started.elapsed())
    };
    // Data-only paths existed before this batch: they go alongside the creates.
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
        results.into_iter().collect::<Result<(), _>>()?;
        Ok::<Duration, ApplyError>(started.elapsed())
    };
    let (created, written) = tokio::join!(creates, data);
    tracing::debug!(
        changed,
        data = data_only.len(),
        creates_ms = created.as_ref().map_or(0, |d| d.as_millis()),
        data_ms = written.as_ref().map_or(0, |d| d.as_millis()),
        "batch applied"
    );
    created?;
    written?;
    // Sequential names come from the parent's cversion: keep it at least the source's.
    let seq_parents = sequential_parents(batch);
    if !seq_parents.is_empty() {
        raise_cversions(src, dst, &opts.sync, &seq_parents).await?;
    }
    Ok(())
}

/// The parents of the sequential nodes among `batch`, each once.
fn sequential_parents(batch: &BTreeMap<String, Pending>) -> Vec<&str> {
    let mut parents: Vec<&str> = batch
        .keys()
        .filter(|p| is_sequential_name(p.rsplit('/').next().unwrap_or_default()))
        .filter_map(|p| path::parent(p))
        .collect();
    parents.sort_unstable();
    parents.dedup();
    parents
}

/// What a read-ahead found at a path with a create or delete event.
enum Found {
    /// New on the source, ready for the fast path.
    Create {
        data: Vec<u8>,
        mtime_ms: i64,
        kind: NodeKind,
        acl: Vec<AclEntry>,
    },
    /// Gone from the source: a delete for the deletion guard.
    Gone,
    /// Anything else (an ephemeral left out, an ACL that would lock the copier out, an
    /// unusual error): applied by [`apply_path`].
    Slow,
}

/// Applies the chunks (in depth order) with creates or deletes. Reads run
/// [`CHUNKS_IN_FLIGHT`] ahead. A session's requests are applied in the order sent, and a
/// commit is sent when it is called, so the transactions of new nodes go out as soon as
/// their chunk is read, parents first, without waiting for the shallower ones to be
/// acknowledged. A transaction that fails is tried again in order once all are answered
/// (its children's transactions may have failed for want of a parent); what still fails, and
/// what the fast path cannot take, goes through [`apply_path`], shallower paths first.
async fn apply_created(
    readers: &ReadSet<'_>,
    dst: &Client,
    opts: &LiveOptions,
    me: &Identity,
    chunks: Vec<(usize, Vec<(String, Pending)>)>,
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    let o = &opts.sync;
    let src = readers.session(0);
    let mut reads = futures::stream::iter(chunks)
        .map(|(d, chunk)| async move {
            read_created_chunk(readers, me, o, chunk)
                .await
                .map(|found| (d, found))
        })
        .buffered(CHUNKS_IN_FLIGHT);
    let mut creates = Creates::new(dst, opts, observer);
    let mut slow: BTreeMap<usize, Vec<(String, Pending)>> = BTreeMap::new();
    let (limit, batch_bytes) = opts.limits();
    while let Some(read) = reads.next().await {
        let (d, found) = read?;
        let mut groups = Packer::new(batch_bytes);
        for (entry, f) in found {
            match f {
                Found::Gone => {
                    let applied =
                        write_state(src, dst, opts, me, &entry.0, SourceState::Absent).await?;
                    if applied.counts() {
                        observer.applied(&entry.0, lag_of(&applied, &entry.1));
                    }
                }
                Found::Slow => slow.entry(d).or_default().push(entry),
                Found::Create {
                    data,
                    mtime_ms,
                    kind,
                    acl,
                } => {
                    let wire = create_size(&dst_path(o, &entry.0), data.len(), &acl);
                    // Too big for the destination, or under a node that is: left out (and
                    // named), the rest of the batch goes on.
                    let oversized = &opts.oversized;
                    if oversized.under_missing(&entry.0)
                        || !oversized.admit(&entry.0, wire, limit, true)
                    {
                        continue;
                    }
                    let size = data.len() + entry.0.len() + OP_OVERHEAD;
                    let node = NewNode {
                        entry,
                        data,
                        mtime_ms,
                        kind,
                        acl,
                    };
                    groups.push(size, node);
                }
            }
        }
        for group in groups.into_groups() {
            creates.send(group).await?;
        }
    }
    for n in creates.finish().await? {
        slow.entry(depth(&n.entry.0)).or_default().push(n.entry);
    }
    for (_, paths) in slow {
        let paths: Vec<&(String, Pending)> = paths.iter().collect();
        one_by_one(&paths, observer, |p| apply_path(src, dst, opts, me, p)).await?;
    }
    Ok(())
}

/// Items packed in order into transactions of at most `max` bytes (one over it goes alone).
struct Packer<T> {
    groups: Vec<Vec<T>>,
    bytes: usize,
    max: usize,
}

impl<T> Packer<T> {
    fn new(max: usize) -> Packer<T> {
        Packer {
            groups: vec![Vec::new()],
            bytes: 0,
            max,
        }
    }

    fn push(&mut self, size: usize, item: T) {
        if self.bytes + size > self.max {
            self.groups.push(Vec::new());
            self.bytes = 0;
        }
        self.bytes += size;
        if let Some(g) = self.groups.last_mut() {
            g.push(item);
        }
    }

    fn into_groups(self) -> impl Iterator<Item = Vec<T>> {
        self.groups.into_iter().filter(|g| !g.is_empty())
    }
}

/// Transactions of creates sent and not yet answered, oldest first, and those that failed.
struct Creates<'a> {
    dst: &'a Client,
    opts: &'a LiveOptions,
    observer: &'a Arc<dyn Observer>,
    sent: VecDeque<(Vec<NewNode>, futures::future::BoxFuture<'a, Reply>)>,
    failed: Vec<Vec<NewNode>>,
}

impl<'a> Creates<'a> {
    fn new(dst: &'a Client, opts: &'a LiveOptions, observer: &'a Arc<dyn Observer>) -> Self {
        Creates {
            dst,
            opts,
            observer,
            sent: VecDeque::new(),
            failed: Vec::new(),
        }
    }

    /// Sends one transaction of creates now; waits first for the oldest answer when
    /// [`WRITES_IN_FLIGHT`] are out.
    async fn send(&mut self, group: Vec<NewNode>) -> Result<(), ApplyError> {
        // Bounded: what is in flight is held twice (here and in the request).
        if self.sent.len() >= WRITES_IN_FLIGHT {
            if let Some((g, reply)) = self.sent.pop_front() {
                self.settle(g, reply).await?;
            }
        }
        let mut writer = self.dst.new_multi_writer();
        for n in &group {
            add_create(&mut writer, &self.opts.sync, n)?;
        }
        let commit = writer.commit();
        self.sent
            .push_back((group, futures::FutureExt::boxed(commit)));
        Ok(())
    }

    /// Waits for every answer, then tries the failed transactions again in order, setting
    /// aside what still fails. Returns the nodes set aside.
    async fn finish(mut self) -> Result<Vec<NewNode>, ApplyError> {
        while let Some((g, reply)) = self.sent.pop_front() {
            self.settle(g, reply).await?;
        }
        let o = &self.opts.sync;
        let mut aside = Vec::new();
        for group in std::mem::take(&mut self.failed) {
            let first = group.first().map(|n| n.entry.0.clone()).unwrap_or_default();
            let (written, left) =
                commit_setting_aside(self.dst, group, &first, |w, n| add_create(w, o, n)).await?;
            report_created(self.opts, self.observer, written);
            aside.extend(left);
        }
        Ok(aside)
    }

    /// Waits for one transaction: reports it applied, or keeps it to be tried again.
    async fn settle(
        &mut self,
        group: Vec<NewNode>,
        reply: futures::future::BoxFuture<'_, Reply>,
    ) -> Result<(), ApplyError> {
        match reply.await {
            Ok(_) => report_created(self.opts, self.observer, group),
            Err(MultiWriteError::OperationFailed { .. }) => self.failed.push(group),
            Err(MultiWriteError::RequestFailed { source }) => {
                let first = group
                    .first()
                    .map(|n| n.entry.0.as_str())
                    .unwrap_or_default();
                return Err(ApplyError::on(Side::Destination, "multi", first)(source));
            }
        }
        Ok(())
    }
}

/// Transactions of new nodes sent and not yet answered, at most: enough to keep the
/// destination's log busy, few enough to bound the data held.
const WRITES_IN_FLIGHT: usize = 16;

/// The reply to one transaction of creates.
type Reply = Result<Vec<MultiWriteResult>, MultiWriteError>;

/// Tells the guard and the observer about new nodes written.
fn report_created(opts: &LiveOptions, observer: &Arc<dyn Observer>, written: Vec<NewNode>) {
    if !written.is_empty() {
        opts.gate.created(Instant::now(), written.len() as u64);
    }
    for n in written {
        opts.oversized.written(&n.entry.0);
        observer.applied(&n.entry.0, since_mtime(n.mtime_ms));
    }
}

/// Adds the create of a new node to a transaction.
fn add_create(w: &mut MultiWriter<'_>, o: &SyncOptions, n: &NewNode) -> Result<(), ApplyError> {
    let zk_acl: Vec<Acl> = n.acl.iter().map(AclEntry::to_zk).collect();
    let dp = dst_path(o, &n.entry.0);
    w.add_create(&dp, &n.data, &create_options(n.kind, &zk_acl))
        .map_err(ApplyError::on(Side::Destination, "create", &dp))
}

/// Reads a chunk of paths with creates or deletes: data and stat in one multi-read, then the
/// ACLs of the new nodes, spread over the reader sessions.
async fn read_created_chunk(
    readers: &ReadSet<'_>,
    me: &Identity,
    o: &SyncOptions,
    chunk: Vec<(String, Pending)>,
) -> Result<Vec<((String, Pending), Found)>, ApplyError> {
    let results = read_chunk(readers.session(0), &chunk).await?;
    let mut found = Vec::with_capacity(chunk.len());
    let mut new = Vec::new();
    for (entry, r) in chunk.into_iter().zip(results) {
        match r {
            MultiReadResult::Data { data, stat } => match copied_kind(o, &entry.0, &stat) {
                Some(kind) => new.push((entry, data, stat.mtime, kind)),
                None => found.push((entry, Found::Slow)),
            },
            MultiReadResult::Error {
                err: ZkError::NoNode,
            } => found.push((entry, Found::Gone)),
            _ => found.push((entry, Found::Slow)),
        }
    }
    let acls = read_acls(readers, me, o, &new).await?;
    for ((entry, data, mtime_ms, kind), acl) in new.into_iter().zip(acls) {
        found.push(match acl {
            Some(acl) => (
                entry,
                Found::Create {
                    data,
                    mtime_ms,
                    kind,
                    acl,
                },
            ),
            None => (entry, Found::Slow),
        });
    }
    Ok(found)
}

/// A node new on the source, as the fast path creates it.
struct NewNode {
    entry: (String, Pending),
    data: Vec<u8>,
    mtime_ms: i64,
    kind: NodeKind,
    acl: Vec<AclEntry>,
}

/// The ACL each new node is created with, read on the reader sessions (ACLs have no
/// multi-read form). None: the node goes the slow way (its ACL would lock the copier out, or
/// it is gone).
async fn read_acls(
    readers: &ReadSet<'_>,
    me: &Identity,
    o: &SyncOptions,
    new: &[Create],
) -> Result<Vec<Option<Vec<AclEntry>>>, ApplyError> {
    if !o.copy_acl {
        return Ok(new.iter().map(|_| Some(vec![AclEntry::open()])).collect());
    }
    let reads = new
        .iter()
        .enumerate()
        .map(|(i, (e, ..))| readers.session(i).get_acl(&e.0));
    let mut out = Vec::with_capacity(new.len());
    for (r, (e, ..)) in futures::future::join_all(reads).await.into_iter().zip(new) {
        match r {
            Ok((acl, _)) => {
                let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
                if acl.iter().any(verifier::reader::is_redacted) {
                    out.push(None);
                    continue;
                }
                let acl = o.destination_acl(canonical_acl(acl));
                out.push(me.grants(&acl, STREAM_NEEDS).then_some(acl));
            }
            Err(ZkError::NoNode) => out.push(None),
            Err(err) => return Err(ApplyError::on(Side::Source, "getACL", &e.0)(err)),
        }
    }
    Ok(out)
}

/// A node read as new: the dirty entry, the data read, the source mtime, the kind.
type Create = ((String, Pending), Vec<u8>, i64, NodeKind);

/// A data write of the fast path: the dirty entry, the data read, the source mtime.
type Write<'a> = (&'a (String, Pending), Vec<u8>, i64);

/// Data and stat of every path of `chunk` in one multi-read (errors such as NoNode per path).
async fn read_chunk(
    src: &Client,
    chunk: &[(String, Pending)],
) -> Result<Vec<zookeeper_client::MultiReadResult>, ApplyError> {
    let paths: Vec<String> = chunk.iter().map(|(p, _)| p.clone()).collect();
    read_paths(src, Side::Source, &paths).await
}

/// Data and stat of each of `paths` on `side` in one multi-read.
pub(super) async fn read_paths(
    c: &Client,
    side: Side,
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

pub(super) fn lag_of(applied: &Applied, t: &Pending) -> Duration {
    match applied {
        Applied::Written { mtime_ms } => since_mtime(*mtime_ms),
        Applied::Queued | Applied::Unchanged | Applied::LeftOut => t.since.elapsed(),
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
        read_paths(dst, Side::Destination, &dst_paths)
    );
    let mut slow: Vec<&(String, Pending)> = Vec::new();
    let (limit, batch_bytes) = opts.limits();
    let oversized = &opts.oversized;
    // Writes in groups that fit one transaction.
    let mut groups: Packer<Write<'_>> = Packer::new(batch_bytes);
    for ((entry, r), now) in chunk.iter().zip(results?).zip(current?) {
        match r {
            MultiReadResult::Data { data, stat }
                if stat.ephemeral_owner == 0
                    && matches!(&now, MultiReadResult::Data { data: d, .. } if *d == data) =>
            {
                oversized.written(&entry.0);
                observer.applied(&entry.0, since_mtime(stat.mtime));
            }
            // Under a node left out for its size: not on the destination either.
            MultiReadResult::Data { .. } if oversized.under_missing(&entry.0) => {}
            MultiReadResult::Data { data, stat }
                if stat.ephemeral_owner == 0
                    && !oversized.admit(
                        &entry.0,
                        set_data_size(&dst_path(o, &entry.0), data.len()),
                        limit,
                        !matches!(now, MultiReadResult::Data { .. }),
                    ) => {}
            MultiReadResult::Data { data, stat } if stat.ephemeral_owner == 0 => {
                let size = data.len() + entry.0.len() + OP_OVERHEAD;
                groups.push(size, (entry, data, stat.mtime));
            }
            _ => slow.push(entry),
        }
    }
    for group in groups.into_groups() {
        // A node missing on the destination fails the transaction: it is set aside.
        let (written, aside) = commit_setting_aside(dst, group, first, |w, ((p, _), data, _)| {
            let dp = dst_path(o, p);
            w.add_set_data(&dp, data, None).map_err(ApplyError::on(
                Side::Destination,
                "setData",
                &dp,
            ))
        })
        .await?;
        for ((p, _), _, mtime_ms) in written {
            oversized.written(p);
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
            if applied.counts() {
                observer.applied(p, lag_of(&applied, t));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_packed_in_order_under_the_byte_limit() {
        let mut p = Packer::new(10);
        for (size, item) in [(4, 'a'), (6, 'b'), (1, 'c'), (20, 'd'), (2, 'e')] {
            p.push(size, item);
        }
        let groups: Vec<Vec<char>> = p.into_groups().collect();
        assert_eq!(groups, [vec!['a', 'b'], vec!['c'], vec!['d'], vec!['e']]);
    }
}
