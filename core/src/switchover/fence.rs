//! `fence: acl`: the old primary's tree made read-only for everyone but the operator, with the
//! ACLs it replaced recorded so they can be put back exactly.
//!
//! - **Fenced ACL** of a node: every entry that could read keeps READ only, and the operator's
//!   digest identity gets ALL. Creates need CREATE on the parent, deletes DELETE on the
//!   parent, setData WRITE on the node: with every node fenced nothing under the root changes
//!   except by the operator.
//! - **Top down**: a level's nodes are fenced before their children are listed, so a child
//!   created meanwhile is under a fenced parent already, or listed.
//! - **Write-ahead record**: each chunk's original ACLs are written to the ensemble, under
//!   the reserved `/.resiliency-operator/fences/<key>`, before any of them is changed. A crash
//!   half way leaves a record of every node it changed.
//! - **Lifting** puts back the recorded ACL on every node still carrying exactly the fence;
//!   a node whose ACL someone changed since keeps it. Then the record goes.
//! - **[`FenceView`]** shows a fenced node with its recorded ACL, so a verification compares
//!   what the user set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;

use serde::{Deserialize, Serialize};
use verifier::model::{canonical_acl, perms};
use verifier::{path, AclCache, AclEntry, AclView};
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, MultiReadResult};

/// Where fence records live on an ensemble (reserved: never copied, verified or backed up).
pub const FENCES: &str = "/.resiliency-operator/fences";

/// Nodes per round of reads and ACL writes.
const CHUNK: usize = 512;
/// Rounds of one level in flight at once (setACL has no multi form: throughput comes from
/// many requests in flight over several sessions).
const CHUNKS_IN_FLIGHT: usize = 8;
/// Tries of one node's setACL when its ACL changes under us (BadVersion) before giving up.
const VERSION_TRIES: usize = 5;
/// A record chunk stays well under the default jute.maxbuffer (1 MiB).
const MAX_CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("fence: acl needs credentials (a digest user) on the Database fenced: without them the operator's identity is everyone's, and nobody could be kept out")]
    NoCredentials,
    #[error("fence: acl needs ADMIN permission on every node for the operator's identity; it lacks it on {path}")]
    NoAdmin { path: String },
    #[error("{op} {path}: {source}")]
    Zk {
        op: &'static str,
        path: String,
        #[source]
        source: ZkError,
    },
    #[error("the fence record {path} cannot be read: {why}")]
    BadRecord { path: String, why: String },
    #[error("{0}")]
    Connect(String),
    #[error("{path} changed its ACL {VERSION_TRIES} times while it was being fenced")]
    Busy { path: String },
}

impl FenceError {
    fn zk<'a>(op: &'static str, path: &'a str) -> impl FnOnce(ZkError) -> FenceError + 'a {
        move |source| match source {
            ZkError::NoAuth => FenceError::NoAdmin {
                path: path.to_string(),
            },
            source => FenceError::Zk {
                op,
                path: path.to_string(),
                source,
            },
        }
    }
}

/// The record's head znode: what is fenced, by whom, and whether the fence is complete.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FenceHeader {
    /// The absolute root fenced.
    pub root: String,
    /// Who fenced it, e.g. `Switchover prod/to-dr`.
    pub holder: String,
    /// The digest identity (`user:hash`) that keeps ALL.
    pub identity: String,
    pub since_ms: i64,
    /// False while the fence is being applied (or was interrupted doing so).
    pub complete: bool,
    pub nodes: u64,
}

/// A loaded record: the original ACL of every fenced node, by path relative to the root.
#[derive(Clone, Debug)]
pub struct FenceRecord {
    pub header: FenceHeader,
    /// The record's znode.
    pub path: String,
    pub originals: HashMap<String, Vec<AclEntry>>,
}

/// What fencing did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    pub nodes: u64,
    /// The record's znode on the fenced ensemble.
    pub record: String,
}

/// What lifting did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lifted {
    /// Nodes given their recorded ACL back.
    pub restored: u64,
    /// Nodes whose ACL someone changed since the fence: left as they are.
    pub changed_since: u64,
    /// Recorded nodes deleted since.
    pub gone: u64,
}

/// The record's znode for `root`: one fence per tree and ensemble.
pub fn record_path(root: &str) -> String {
    let key = blake3::hash(root.as_bytes()).to_hex();
    format!("{FENCES}/{}", &key[..16])
}

/// The ACL a fenced node carries in place of `original`.
pub fn fenced_acl(original: &[AclEntry], identity: &str) -> Vec<AclEntry> {
    let mut out: Vec<AclEntry> = original
        .iter()
        .filter(|e| e.perms & perms::READ != 0 && !(e.scheme == "digest" && e.id == identity))
        .map(|e| AclEntry::new(perms::READ, &e.scheme, &e.id))
        .collect();
    out.push(AclEntry::new(perms::ALL, "digest", identity));
    out.dedup();
    canonical_acl(out)
}

/// Shows each node that still carries exactly its fence with the ACL the fence replaced.
pub struct FenceView {
    identity: String,
    originals: HashMap<String, Vec<AclEntry>>,
}

impl FenceView {
    pub fn new(record: &FenceRecord) -> Arc<FenceView> {
        Arc::new(FenceView {
            identity: record.header.identity.clone(),
            originals: record.originals.clone(),
        })
    }
}

impl AclView for FenceView {
    fn original(&self, rel: &str, acl: &[AclEntry]) -> Option<Vec<AclEntry>> {
        let original = self.originals.get(rel)?;
        (canonical_acl(acl.to_vec()) == fenced_acl(original, &self.identity))
            .then(|| original.clone())
    }
}

/// Shows every node with its fenced ACL: the source of a stream into a fenced old primary,
/// compared as that replica must be. Over `inner`, the source's own fence seen through first.
pub struct Fencing {
    identity: String,
    inner: Option<Arc<dyn AclView>>,
}

impl Fencing {
    pub fn view(identity: &str) -> Arc<dyn AclView> {
        Fencing::over(identity, None)
    }

    pub fn over(identity: &str, inner: Option<Arc<dyn AclView>>) -> Arc<dyn AclView> {
        Arc::new(Fencing {
            identity: identity.to_string(),
            inner,
        })
    }
}

impl AclView for Fencing {
    fn original(&self, rel: &str, acl: &[AclEntry]) -> Option<Vec<AclEntry>> {
        let original = self.inner.as_ref().and_then(|v| v.original(rel, acl));
        Some(fenced_acl(
            original.as_deref().unwrap_or(acl),
            &self.identity,
        ))
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The record's header for `root`, when there is one and it can be read.
pub async fn header(client: &Client, root: &str) -> Option<FenceHeader> {
    let (data, _) = client.get_data(&record_path(root)).await.ok()?;
    serde_json::from_slice(&data).ok()
}

/// Reads the fence record of `root`, if the ensemble has one.
pub async fn load(client: &Client, root: &str) -> Result<Option<FenceRecord>, FenceError> {
    let head = record_path(root);
    let bad = |why: String| FenceError::BadRecord {
        path: head.clone(),
        why,
    };
    let data = match client.get_data(&head).await {
        Ok((data, _)) => data,
        Err(ZkError::NoNode) => return Ok(None),
        Err(e) => return Err(FenceError::zk("getData", &head)(e)),
    };
    let header: FenceHeader = serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?;
    let (mut chunks, _) = client
        .get_children(&head)
        .await
        .map_err(FenceError::zk("getChildren", &head))?;
    // Zero-padded names: later chunks (a node fenced again after a BadVersion) win.
    chunks.sort();
    let mut originals = HashMap::new();
    for c in chunks {
        let p = path::child(&head, &c);
        let (bytes, _) = client
            .get_data(&p)
            .await
            .map_err(FenceError::zk("getData", &p))?;
        let json = zstd::decode_all(&bytes[..]).map_err(|e| bad(format!("{c}: {e}")))?;
        let entries: Vec<(String, Vec<AclEntry>)> =
            serde_json::from_slice(&json).map_err(|e| bad(format!("{c}: {e}")))?;
        originals.extend(entries);
    }
    Ok(Some(FenceRecord {
        header,
        path: head,
        originals,
    }))
}

/// Makes sure `path`'s parents exist (open to the operator only when it authenticates).
async fn ensure_parents(client: &Client, p: &str, acl: &Acls<'static>) -> Result<(), FenceError> {
    let mut at = String::new();
    for part in p.trim_start_matches('/').split('/') {
        at = format!("{at}/{part}");
        if at == p {
            break;
        }
        match client
            .create(&at, &[], &CreateMode::Persistent.with_acls(*acl))
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(FenceError::zk("create", &at)(e)),
        }
    }
    Ok(())
}

/// Writes the record's chunk `seq`, halving it until it fits a znode.
async fn write_chunk(
    client: &Client,
    head: &str,
    seq: &AtomicU64,
    entries: &[(String, Vec<AclEntry>)],
    acl: &Acls<'static>,
) -> Result<(), FenceError> {
    let json = serde_json::to_vec(entries).map_err(|e| FenceError::BadRecord {
        path: head.to_string(),
        why: e.to_string(),
    })?;
    let bytes = zstd::encode_all(&json[..], 3).map_err(|e| FenceError::BadRecord {
        path: head.to_string(),
        why: e.to_string(),
    })?;
    if bytes.len() > MAX_CHUNK_BYTES && entries.len() > 1 {
        let (a, b) = entries.split_at(entries.len() / 2);
        Box::pin(write_chunk(client, head, seq, a, acl)).await?;
        return Box::pin(write_chunk(client, head, seq, b, acl)).await;
    }
    let p = path::child(
        head,
        &format!("{:010}", seq.fetch_add(1, Ordering::Relaxed)),
    );
    client
        .create(&p, &bytes, &CreateMode::Persistent.with_acls(*acl))
        .await
        .map_err(FenceError::zk("create", &p))?;
    Ok(())
}

async fn write_header(client: &Client, head: &str, h: &FenceHeader) -> Result<(), FenceError> {
    let data = serde_json::to_vec(h).map_err(|e| FenceError::BadRecord {
        path: head.to_string(),
        why: e.to_string(),
    })?;
    client
        .set_data(head, &data, None)
        .await
        .map_err(FenceError::zk("setData", head))?;
    Ok(())
}

/// Fences the tree under `root`, recording the ACLs it replaces. A stale record of an earlier
/// fence of the same tree is read first, so a node still carrying that fence records its
/// true original, not the fence. `identity` is the digest id (`user:hash`) of `client`'s
/// credentials.
///
/// `cache`: ACLs already read of this ensemble (a stream's verifier's). A node whose stat
/// matches its entry is not asked for its ACL again; its setACL still names the aversion it
/// was read at, so an ACL changed since is refused (BadVersion) and read afresh. The fenced
/// ACLs go into the cache under the stats setACL returns, for the verification that follows.
pub async fn fence(
    pool: &[Client],
    root: &str,
    identity: &str,
    holder: &str,
    cache: Option<&AclCache>,
) -> Result<Fenced, FenceError> {
    let Some(client) = pool.first() else {
        return Err(FenceError::Connect("no session to fence with".into()));
    };
    let prior = load(client, root).await?;
    let prior_view = prior.as_ref().map(FenceView::new);
    let head = record_path(root);
    let acl = Acls::creator_all();
    ensure_parents(client, &head, &acl).await?;
    let mut header = FenceHeader {
        root: root.to_string(),
        holder: holder.to_string(),
        identity: identity.to_string(),
        since_ms: now_ms(),
        complete: false,
        nodes: 0,
    };
    let seq = match &prior {
        // Carry the old originals over: written first, so newer chunks win.
        Some(_) => {
            write_header(client, &head, &header).await?;
            let (chunks, _) = client
                .get_children(&head)
                .await
                .map_err(FenceError::zk("getChildren", &head))?;
            chunks.len() as u64
        }
        None => {
            let data = serde_json::to_vec(&header).unwrap_or_default();
            match client
                .create(&head, &data, &CreateMode::Persistent.with_acls(acl))
                .await
            {
                Ok(_) => 0,
                Err(e) => return Err(FenceError::zk("create", &head)(e)),
            }
        }
    };
    let seq = AtomicU64::new(seq);
    let mut level = vec![String::new()];
    while !level.is_empty() {
        let mut next = Vec::new();
        // The chunks of one level are independent: several in flight, over the sessions.
        let (seq, acl, prior) = (&seq, &acl, prior_view.as_deref());
        let head = head.as_str();
        let calls: Vec<_> = level
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| {
                let c = &pool[i % pool.len()];
                async move {
                    let fenced = FenceRun {
                        root,
                        identity,
                        prior,
                        head,
                        seq,
                        acl,
                        cache,
                    };
                    let done = fence_chunk(c, &fenced, chunk).await?;
                    let kids = children(c, root, &done.parents).await?;
                    Ok::<_, FenceError>((done.nodes, kids))
                }
            })
            .collect();
        let mut rounds = futures::stream::iter(calls).buffer_unordered(CHUNKS_IN_FLIGHT);
        while let Some(r) = rounds.next().await {
            let (n, kids) = r?;
            header.nodes += n;
            next.extend(kids);
        }
        drop(rounds);
        level = next;
    }
    header.complete = true;
    header.since_ms = now_ms();
    write_header(client, &head, &header).await?;
    Ok(Fenced {
        nodes: header.nodes,
        record: head,
    })
}

/// What every chunk of one fence shares.
struct FenceRun<'a> {
    root: &'a str,
    identity: &'a str,
    prior: Option<&'a FenceView>,
    head: &'a str,
    seq: &'a AtomicU64,
    acl: &'a Acls<'static>,
    cache: Option<&'a AclCache>,
}

/// What fencing a chunk did.
struct ChunkDone {
    /// Nodes fenced.
    nodes: u64,
    /// Those of them that had children when fenced: only theirs are listed. A node fenced
    /// childless stays so, since only the operator may create under it now.
    parents: Vec<String>,
}

/// Records and fences one chunk of a level.
async fn fence_chunk(
    client: &Client,
    f: &FenceRun<'_>,
    rels: &[String],
) -> Result<ChunkDone, FenceError> {
    let abs: Vec<String> = rels.iter().map(|r| path::join(f.root, r)).collect();
    let mut current = read_acls_cached(client, &abs, f.cache).await?;
    let mut done = ChunkDone {
        nodes: 0,
        parents: Vec::new(),
    };
    for _ in 0..VERSION_TRIES {
        // The original of each node still to fence, recorded before it is changed.
        let mut todo = Vec::new();
        let mut entries = Vec::new();
        for (i, cur) in current.iter().enumerate() {
            let Some((acl_now, aversion)) = cur else {
                continue;
            };
            let original = f
                .prior
                .and_then(|v| v.original(&rels[i], acl_now))
                .unwrap_or_else(|| acl_now.clone());
            entries.push((rels[i].clone(), original.clone()));
            todo.push((i, fenced_acl(&original, f.identity), *aversion));
        }
        if todo.is_empty() {
            return Ok(done);
        }
        write_chunk(client, f.head, f.seq, &entries, f.acl).await?;
        let replies = futures::future::join_all(todo.iter().map(|(i, fenced, v)| {
            let zk: Vec<_> = fenced.iter().map(AclEntry::to_zk).collect();
            let p = abs[*i].clone();
            async move { client.set_acl(&p, &zk, Some(*v)).await }
        }))
        .await;
        let mut again = Vec::new();
        for ((i, fenced, _), r) in todo.into_iter().zip(replies) {
            match r {
                Ok(stat) => {
                    if let Some(c) = f.cache {
                        c.put(&abs[i], &stat, &fenced);
                    }
                    done.nodes += 1;
                    if stat.num_children > 0 {
                        done.parents.push(rels[i].clone());
                    }
                }
                Err(ZkError::NoNode) => {}
                Err(ZkError::BadVersion) => again.push(i),
                Err(e) => return Err(FenceError::zk("setACL", &abs[i])(e)),
            }
        }
        if again.is_empty() {
            return Ok(done);
        }
        // Someone changed these ACLs meanwhile: read them again and record the new ones.
        let paths: Vec<String> = again.iter().map(|&i| abs[i].clone()).collect();
        let reread = read_acls(client, &paths).await?;
        current = vec![None; abs.len()];
        for (i, r) in again.into_iter().zip(reread) {
            current[i] = r;
        }
    }
    let busy = current.iter().position(Option::is_some).unwrap_or(0);
    Err(FenceError::Busy {
        path: abs.get(busy).cloned().unwrap_or_default(),
    })
}

/// [`read_acls`], taking from `cache` the ACL of each node whose stat (one multi-read of
/// the chunk) matches its entry; the rest are asked for.
async fn read_acls_cached(
    client: &Client,
    abs: &[String],
    cache: Option<&AclCache>,
) -> Result<Vec<Option<(Vec<AclEntry>, i32)>>, FenceError> {
    let Some(cache) = cache.filter(|c| !c.is_empty()) else {
        return read_acls(client, abs).await;
    };
    let mut out: Vec<Option<(Vec<AclEntry>, i32)>> = Vec::with_capacity(abs.len());
    let mut misses = Vec::new();
    for group in abs.chunks(verifier::reader::BATCH) {
        let mut reader = client.new_multi_reader();
        for p in group {
            reader
                .add_get_data(p)
                .map_err(FenceError::zk("getData", p))?;
        }
        let replies = reader
            .commit()
            .await
            .map_err(FenceError::zk("multiRead", &group[0]))?;
        for (p, reply) in group.iter().zip(replies) {
            match reply {
                MultiReadResult::Data { stat, .. } => match cache.get(p, &stat) {
                    Some(acl) => out.push(Some((acl, stat.aversion))),
                    None => {
                        misses.push(out.len());
                        out.push(None);
                    }
                },
                MultiReadResult::Error {
                    err: ZkError::NoNode,
                } => out.push(None),
                MultiReadResult::Error { err } => return Err(FenceError::zk("getData", p)(err)),
                _ => {
                    misses.push(out.len());
                    out.push(None);
                }
            }
        }
    }
    let paths: Vec<String> = misses.iter().map(|&i| abs[i].clone()).collect();
    for (i, r) in misses.into_iter().zip(read_acls(client, &paths).await?) {
        out[i] = r;
    }
    Ok(out)
}

/// Each path's canonical ACL and aversion; `None` when it does not exist.
async fn read_acls(
    client: &Client,
    abs: &[String],
) -> Result<Vec<Option<(Vec<AclEntry>, i32)>>, FenceError> {
    let replies = futures::future::join_all(abs.iter().map(|p| client.get_acl(p))).await;
    let mut out = Vec::with_capacity(abs.len());
    for (p, r) in abs.iter().zip(replies) {
        match r {
            Ok((acl, stat)) => {
                let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
                if acl.iter().any(verifier::reader::is_redacted) {
                    return Err(FenceError::NoAdmin { path: p.clone() });
                }
                out.push(Some((canonical_acl(acl), stat.aversion)));
            }
            Err(ZkError::NoNode) => out.push(None),
            Err(e) => return Err(FenceError::zk("getACL", p)(e)),
        }
    }
    Ok(out)
}

/// The children of `rels` (listed now, after their parents were fenced), as relative paths;
/// reserved trees and `/zookeeper` are left out.
async fn children(client: &Client, root: &str, rels: &[String]) -> Result<Vec<String>, FenceError> {
    let mut out = Vec::new();
    for group in rels.chunks(verifier::reader::BATCH) {
        let mut reader = client.new_multi_reader();
        for r in group {
            let p = path::join(root, r);
            reader
                .add_get_children(&p)
                .map_err(FenceError::zk("getChildren", &p))?;
        }
        let replies = reader
            .commit()
            .await
            .map_err(FenceError::zk("multiRead", root))?;
        for (r, reply) in group.iter().zip(replies) {
            let MultiReadResult::Children { children } = reply else {
                continue;
            };
            for name in children {
                let rel = path::child(r, &name);
                let abs = path::join(root, &rel);
                if !path::is_reserved(&abs) {
                    out.push(rel);
                }
            }
        }
    }
    Ok(out)
}

/// Lifts the fence of `root`: every node still carrying exactly its fence gets its recorded
/// ACL back, and the record goes. `Ok(None)` when there is no record.
pub async fn lift(client: &Client, root: &str) -> Result<Option<Lifted>, FenceError> {
    let Some(record) = load(client, root).await? else {
        return Ok(None);
    };
    let lifted = restore_recorded(client, root, &record).await?;
    remove_record(client, &record.path).await?;
    Ok(Some(lifted))
}

/// Puts the recorded ACL back on every node of `record` still carrying exactly its fence,
/// under `root` of `client`: the fenced tree itself, or a copy a stream gave fenced ACLs
/// while the fence stood.
pub async fn restore_recorded(
    client: &Client,
    root: &str,
    record: &FenceRecord,
) -> Result<Lifted, FenceError> {
    let view = FenceView::new(record);
    let mut lifted = Lifted::default();
    let rels: Vec<&String> = record.originals.keys().collect();
    for chunk in rels.chunks(CHUNK) {
        let abs: Vec<String> = chunk.iter().map(|r| path::join(root, r)).collect();
        let mut todo: Vec<usize> = (0..chunk.len()).collect();
        for _ in 0..VERSION_TRIES {
            let paths: Vec<String> = todo.iter().map(|&i| abs[i].clone()).collect();
            let current = read_acls(client, &paths).await?;
            let mut sets = Vec::new();
            for (&i, cur) in todo.iter().zip(current) {
                match cur {
                    None => lifted.gone += 1,
                    Some((acl, v)) => match view.original(chunk[i], &acl) {
                        Some(original) => sets.push((i, original, v)),
                        None => lifted.changed_since += 1,
                    },
                }
            }
            let replies = futures::future::join_all(sets.iter().map(|(i, a, v)| {
                let zk: Vec<_> = a.iter().map(AclEntry::to_zk).collect();
                let p = abs[*i].clone();
                async move { client.set_acl(&p, &zk, Some(*v)).await }
            }))
            .await;
            todo.clear();
            for ((i, _, _), r) in sets.into_iter().zip(replies) {
                match r {
                    Ok(_) => lifted.restored += 1,
                    Err(ZkError::NoNode) => lifted.gone += 1,
                    Err(ZkError::BadVersion) => todo.push(i),
                    Err(e) => return Err(FenceError::zk("setACL", &abs[i])(e)),
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        if let Some(&i) = todo.first() {
            return Err(FenceError::Busy {
                path: abs[i].clone(),
            });
        }
    }
    Ok(lifted)
}

/// Promotes a replica a stream kept fenced (`SyncOptions::fence_destination`), or one a
/// switchover fenced when it was the primary: every node of `o`'s destination that carries
/// exactly the fence of its source node's ACL gets that ACL (the source seen through its own
/// fence, if it has one), and the destination's record goes. A node whose ACL someone changed
/// is left. `Ok(None)`: the destination has no fence record, so nothing is fenced.
pub async fn unfence_from(
    o: &crate::engine::SyncOptions,
    dst: &Client,
) -> Result<Option<Lifted>, FenceError> {
    let Some(record) = load(dst, &o.destination_root).await? else {
        return Ok(None);
    };
    let identity = record.header.identity.clone();
    let src = verifier::connect(verifier::Side::Source, &o.source)
        .await
        .map_err(|e| FenceError::Connect(e.to_string()))?;
    let source_view = load(&src, &o.source_root)
        .await?
        .map(|r| FenceView::new(&r) as Arc<dyn AclView>);
    let mut walk = verifier::walk_nodes_viewed(
        vec![src],
        verifier::Side::Source,
        o.source_root.clone(),
        verifier::WalkOptions::default(),
        source_view,
    );
    let mut lifted = Lifted::default();
    let mut seen = std::collections::HashSet::new();
    while let Some(ev) = walk.recv().await {
        let nodes = match ev {
            Ok(verifier::NodeWalkEvent::Nodes(n)) => n,
            Ok(verifier::NodeWalkEvent::Done(_)) => break,
            Err(e) => {
                return Err(FenceError::Zk {
                    op: e.op,
                    path: e.path,
                    source: e.source,
                })
            }
        };
        for chunk in nodes.chunks(CHUNK) {
            let abs: Vec<String> = chunk
                .iter()
                .map(|n| path::join(&o.destination_root, &n.rel))
                .collect();
            let current = read_acls(dst, &abs).await?;
            let mut sets = Vec::new();
            for ((n, p), cur) in chunk.iter().zip(&abs).zip(current) {
                seen.insert(n.rel.clone());
                match cur {
                    None => lifted.gone += 1,
                    Some((acl, v)) if acl == fenced_acl(&n.node.acl, &identity) => {
                        sets.push((p.clone(), n.node.acl.clone(), v))
                    }
                    // Already the source's: nothing to lift.
                    Some((acl, _)) if acl == n.node.acl => {}
                    Some(_) => lifted.changed_since += 1,
                }
            }
            let replies = futures::future::join_all(sets.iter().map(|(p, a, v)| {
                let zk: Vec<_> = a.iter().map(AclEntry::to_zk).collect();
                async move { dst.set_acl(p, &zk, Some(*v)).await }
            }))
            .await;
            for ((p, _, _), r) in sets.iter().zip(replies) {
                match r {
                    Ok(_) => lifted.restored += 1,
                    Err(ZkError::NoNode) => lifted.gone += 1,
                    // Changed by someone meanwhile: theirs stands.
                    Err(ZkError::BadVersion) => lifted.changed_since += 1,
                    Err(e) => return Err(FenceError::zk("setACL", p)(e)),
                }
            }
        }
    }
    // Recorded nodes the source no longer has: given their own recorded ACL back.
    let leftover = FenceRecord {
        originals: record
            .originals
            .iter()
            .filter(|(rel, _)| !seen.contains(*rel))
            .map(|(r, a)| (r.clone(), a.clone()))
            .collect(),
        ..record.clone()
    };
    let back = restore_recorded(dst, &o.destination_root, &leftover).await?;
    lifted.restored += back.restored;
    remove_record(dst, &record.path).await?;
    Ok(Some(lifted))
}

/// Deletes a record: its chunks, then its head.
async fn remove_record(client: &Client, head: &str) -> Result<(), FenceError> {
    let (chunks, _) = match client.get_children(head).await {
        Ok(c) => c,
        Err(ZkError::NoNode) => return Ok(()),
        Err(e) => return Err(FenceError::zk("getChildren", head)(e)),
    };
    for c in chunks {
        let p = path::child(head, &c);
        match client.delete(&p, None).await {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => return Err(FenceError::zk("delete", &p)(e)),
        }
    }
    match client.delete(head, None).await {
        Ok(()) | Err(ZkError::NoNode) => Ok(()),
        Err(e) => Err(FenceError::zk("delete", head)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(perms: i32, scheme: &str, id: &str) -> AclEntry {
        AclEntry::new(perms, scheme, id)
    }

    #[test]
    fn a_fence_keeps_read_for_readers_and_all_for_the_operator_only() {
        let me = "op:hash";
        let original = vec![
            e(perms::ALL, "world", "anyone"),
            e(perms::WRITE, "digest", "w:x1"),
        ];
        assert_eq!(
            fenced_acl(&original, me),
            canonical_acl(vec![
                e(perms::ALL, "digest", me),
                e(perms::READ, "world", "anyone")
            ])
        );
        // The operator's own entry is not doubled.
        let mine = vec![e(perms::READ, "digest", me)];
        assert_eq!(fenced_acl(&mine, me), vec![e(perms::ALL, "digest", me)]);
    }

    #[test]
    fn the_view_shows_the_original_only_while_the_node_carries_exactly_its_fence() {
        let me = "op:hash";
        let original = vec![e(perms::ALL, "world", "anyone")];
        let record = FenceRecord {
            header: FenceHeader {
                root: "/a".into(),
                holder: "t".into(),
                identity: me.into(),
                since_ms: 0,
                complete: true,
                nodes: 1,
            },
            path: record_path("/a"),
            originals: HashMap::from([("/x".to_string(), original.clone())]),
        };
        let v = FenceView::new(&record);
        assert_eq!(
            v.original("/x", &fenced_acl(&original, me)),
            Some(original.clone())
        );
        // Changed since the fence: compared as it is.
        assert_eq!(v.original("/x", &[e(perms::READ, "world", "anyone")]), None);
        // Not recorded.
        assert_eq!(v.original("/y", &fenced_acl(&original, me)), None);
        assert!(record_path("/a").starts_with(FENCES));
        assert_ne!(record_path("/a"), record_path("/b"));
    }
}
