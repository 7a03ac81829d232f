//! Whole trees read in tree order: a walk pipelines multi-reads of the known nodes nearest
//! the next one to emit, and streams digests (or whole nodes) with bounded memory.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use zookeeper_client::Client;

use super::{fetch_many_cached, Fetched, ReadError, BATCH};
use crate::acl_cache::AclCache;
use crate::acl_view::AclView;
use crate::hash::{digest_node, Digest, HashOptions, TreeKey};
use crate::model::{Node, NodeKind};
use crate::path;
use crate::side::Side;

/// What to do with ephemeral nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EphemeralPolicy {
    /// Leave them out: they belong to live sessions of the cluster they are on.
    #[default]
    Skip,
    /// Treat them as persistent nodes (what a sync with the same policy creates).
    Persistent,
}

#[derive(Clone, Copy, Debug)]
pub struct WalkOptions {
    pub hash: HashOptions,
    pub ephemerals: EphemeralPolicy,
    /// Nodes read concurrently.
    pub window: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            hash: HashOptions::default(),
            ephemerals: EphemeralPolicy::Skip,
            window: 512,
        }
    }
}

/// What a walk sends: digests in tree order, a chunk at a time, then its totals.
#[derive(Debug)]
pub enum WalkEvent {
    Nodes(Vec<(String, Digest)>),
    Done(WalkTotals),
}

/// Totals of a finished walk.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkTotals {
    /// False when the root path does not exist.
    pub root_exists: bool,
    pub nodes: u64,
    /// Data bytes read.
    pub bytes: u64,
    /// Highest mzxid seen: the tree reflects the server at least up to here.
    pub max_mzxid: i64,
}

/// Digests sent per [`WalkEvent::Nodes`].
const CHUNK: usize = 256;

/// Nodes read ahead of the one to emit next, at most this many windows: they wait as digests,
/// so this bounds the walk's memory whatever the tree's size.
pub const LOOKAHEAD_WINDOWS: usize = 8;

/// A read node, reduced to what the walk keeps until its turn in tree order (the node itself
/// only for [`walk_nodes`]). `None`: nothing to emit (vanished, or a skipped ephemeral).
/// Boxed: the walk's maps shift their values on every insert and removal, and a pointer is
/// cheaper to shift than a digest.
type Read = Option<Box<(Digest, u64, Option<Node>)>>;

/// One node of a [`walk_nodes`] walk: its relative path, digest and content.
#[derive(Clone, Debug)]
pub struct WalkedNode {
    pub rel: String,
    pub digest: Digest,
    pub node: Node,
}

/// What [`walk_nodes`] sends: nodes in tree order, a chunk at a time, then its totals.
#[derive(Debug)]
pub enum NodeWalkEvent {
    Nodes(Vec<WalkedNode>),
    Done(WalkTotals),
}

/// Where a walk's chunks go: digests only, or whole nodes.
trait Sink {
    /// Whether whole nodes are kept until their turn.
    const KEEP_NODES: bool;
    /// False when the receiver is gone.
    fn chunk(
        &self,
        nodes: Vec<(String, Digest, Option<Node>)>,
    ) -> impl Future<Output = bool> + Send;
    fn done(&self, totals: WalkTotals) -> impl Future<Output = ()> + Send;
    fn fail(&self, e: ReadError) -> impl Future<Output = ()> + Send;
}

impl Sink for mpsc::Sender<Result<WalkEvent, ReadError>> {
    const KEEP_NODES: bool = false;
    async fn chunk(&self, nodes: Vec<(String, Digest, Option<Node>)>) -> bool {
        let nodes = nodes.into_iter().map(|(r, d, _)| (r, d)).collect();
        self.send(Ok(WalkEvent::Nodes(nodes))).await.is_ok()
    }
    async fn done(&self, totals: WalkTotals) {
        let _ = self.send(Ok(WalkEvent::Done(totals))).await;
    }
    async fn fail(&self, e: ReadError) {
        let _ = self.send(Err(e)).await;
    }
}

impl Sink for mpsc::Sender<Result<NodeWalkEvent, ReadError>> {
    const KEEP_NODES: bool = true;
    async fn chunk(&self, nodes: Vec<(String, Digest, Option<Node>)>) -> bool {
        let nodes = nodes
            .into_iter()
            .filter_map(|(rel, digest, node)| node.map(|node| WalkedNode { rel, digest, node }))
            .collect();
        self.send(Ok(NodeWalkEvent::Nodes(nodes))).await.is_ok()
    }
    async fn done(&self, totals: WalkTotals) {
        let _ = self.send(Ok(NodeWalkEvent::Done(totals))).await;
    }
    async fn fail(&self, e: ReadError) {
        let _ = self.send(Err(e)).await;
    }
}

type BatchFuture =
    Pin<Box<dyn Future<Output = (Vec<TreeKey>, Result<Vec<Option<Fetched>>, ReadError>)> + Send>>;

/// Walks the tree under `root` in a background task and streams its digests in tree order
/// (each parent right before its subtree, siblings by name), so that two trees can be compared
/// while they are read. `/zookeeper` is never read. `pool` as in [`fetch_many`]. A read error
/// ends the stream.
///
/// Reads are pipelined in multi-read batches, `window` nodes in flight, always the known nodes
/// nearest in tree order to the next one to emit, so the children of nodes read ahead are read
/// ahead too. At most [`LOOKAHEAD_WINDOWS`] windows of nodes are read and not yet emitted: memory
/// is bounded by that, the tree's depth and its fan-out, never by its size.
pub fn walk(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
) -> mpsc::Receiver<Result<WalkEvent, ReadError>> {
    walk_cached(pool, side, root, opts, None)
}

/// [`walk`] for repeated walks of one side: ACLs come from `cache` where the node's stat
/// matches (see [`AclCache`]); once the walk ends, the cache holds what it saw.
pub fn walk_cached(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
    cache: Option<AclCache>,
) -> mpsc::Receiver<Result<WalkEvent, ReadError>> {
    let (tx, rx) = mpsc::channel(8);
    spawn_walk(pool, side, root, opts, cache, None, tx);
    rx
}

/// [`walk`], hashing each node with the ACL `view` shows for it (see [`AclView`]). ACLs are
/// read afresh: no cache.
pub fn walk_viewed(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
    view: Arc<dyn AclView>,
) -> mpsc::Receiver<Result<WalkEvent, ReadError>> {
    walk_viewed_cached(pool, side, root, opts, Some(view), None)
}

/// [`walk_cached`] with an optional `view`: the cache holds each node's ACL as the server
/// has it, and the view is applied after, so one cache serves viewed and plain walks alike.
pub fn walk_viewed_cached(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
    view: Option<Arc<dyn AclView>>,
    cache: Option<AclCache>,
) -> mpsc::Receiver<Result<WalkEvent, ReadError>> {
    let (tx, rx) = mpsc::channel(8);
    spawn_walk(pool, side, root, opts, cache, view, tx);
    rx
}

/// [`walk`], sending whole nodes (data, ACL, kind, stat) with their digests: what a backup
/// needs. The read-ahead holds whole nodes, so use a smaller `window` for trees of big nodes.
pub fn walk_nodes(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
) -> mpsc::Receiver<Result<NodeWalkEvent, ReadError>> {
    let (tx, rx) = mpsc::channel(8);
    spawn_walk(pool, side, root, opts, None, None, tx);
    rx
}

/// [`walk_nodes`], each node's ACL as `view` shows it (see [`AclView`]).
pub fn walk_nodes_viewed(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
    view: Option<Arc<dyn AclView>>,
) -> mpsc::Receiver<Result<NodeWalkEvent, ReadError>> {
    let (tx, rx) = mpsc::channel(8);
    spawn_walk(pool, side, root, opts, None, view, tx);
    rx
}

fn spawn_walk<S: Sink + Send + Sync + 'static>(
    pool: Vec<Client>,
    side: Side,
    root: String,
    opts: WalkOptions,
    cache: Option<AclCache>,
    view: Option<Arc<dyn AclView>>,
    tx: S,
) {
    let pool: Arc<[Client]> = pool.into();
    // Without ACLs in the hash no ACL is read, so there is nothing to keep or drop.
    let cache = cache.filter(|_| opts.hash.acl);
    tokio::spawn(async move {
        let mark = cache.as_ref().map(|c| (c, c.begin_walk()));
        let ended = |complete| {
            if let Some((c, m)) = mark {
                c.end_walk(m, complete);
            }
        };
        match walk_into(pool, side, &root, opts, cache.as_ref(), view, &tx).await {
            // The cache is trimmed before the totals leave, so it is settled when the caller
            // learns the walk is done.
            Ok(Some(totals)) => {
                ended(true);
                tx.done(totals).await;
            }
            Ok(None) => ended(false),
            Err(e) => {
                ended(false);
                // The receiver may be gone; then nobody needs the error.
                tx.fail(e).await;
            }
        }
    });
}

/// Reads and sends the tree; its totals once complete, `None` when the receiver went away.
async fn walk_into<S: Sink>(
    pool: Arc<[Client]>,
    side: Side,
    root: &str,
    opts: WalkOptions,
    cache: Option<&AclCache>,
    view: Option<Arc<dyn AclView>>,
    tx: &S,
) -> Result<Option<WalkTotals>, ReadError> {
    let mut w = Walk::new(pool, side, root, opts, cache);
    w.view = view;
    loop {
        if !w.emit_ready(tx).await {
            return Ok(None);
        }
        w.ask_more();
        // Hand over what is ready before waiting on the network.
        if !w.chunk.is_empty() && !send(tx, &mut w.chunk).await {
            return Ok(None);
        }
        let Some((rels, result)) = w.in_flight.next().await else {
            break;
        };
        w.take_reads(rels, result?, S::KEEP_NODES);
    }
    if !w.chunk.is_empty() && !send(tx, &mut w.chunk).await {
        return Ok(None);
    }
    Ok(Some(w.totals))
}

/// A walk under way: the known nodes not yet asked for, the asked ones not yet emitted, the
/// reads in flight and the chunk being filled.
struct Walk<'a> {
    pool: Arc<[Client]>,
    side: Side,
    root: &'a str,
    opts: WalkOptions,
    cache: Option<&'a AclCache>,
    /// Shows fenced nodes with the ACL the fence replaced.
    view: Option<Arc<dyn AclView>>,
    /// Multi-reads in flight at most.
    max_batches: usize,
    /// Nodes asked for and not yet emitted at most.
    lookahead: usize,
    totals: WalkTotals,
    unasked: BTreeSet<TreeKey>,
    /// `None` until read.
    asked: BTreeMap<TreeKey, Option<Read>>,
    in_flight: FuturesUnordered<BatchFuture>,
    chunk: Vec<(String, Digest, Option<Node>)>,
}

impl<'a> Walk<'a> {
    fn new(
        pool: Arc<[Client]>,
        side: Side,
        root: &'a str,
        opts: WalkOptions,
        cache: Option<&'a AclCache>,
    ) -> Walk<'a> {
        let window = opts.window.max(1);
        Walk {
            pool,
            side,
            root,
            opts,
            cache,
            view: None,
            max_batches: window.div_ceil(BATCH).max(1),
            lookahead: window * LOOKAHEAD_WINDOWS,
            totals: WalkTotals::default(),
            unasked: BTreeSet::from([TreeKey(String::new())]),
            asked: BTreeMap::new(),
            in_flight: FuturesUnordered::new(),
            chunk: Vec::with_capacity(CHUNK),
        }
    }

    /// Emits, in tree order, every node whose read is back and that nothing unread precedes.
    /// False when the receiver is gone.
    async fn emit_ready<S: Sink>(&mut self, tx: &S) -> bool {
        while let Some(entry) = self.asked.first_entry() {
            if entry.get().is_none() || self.unasked.first().is_some_and(|u| u < entry.key()) {
                break;
            }
            let (TreeKey(rel), read) = entry.remove_entry();
            let Some(Some(read)) = read else {
                continue;
            };
            let (digest, bytes, node) = *read;
            let t = &mut self.totals;
            t.root_exists |= rel.is_empty();
            t.nodes += 1;
            t.bytes += bytes;
            t.max_mzxid = t.max_mzxid.max(digest.mzxid);
            self.chunk.push((rel, digest, node));
            if self.chunk.len() == CHUNK && !send(tx, &mut self.chunk).await {
                return false;
            }
        }
        true
    }

    /// Asks for more, nearest first. The next node to emit is always asked for, whatever the
    /// lookahead, or the walk would wait on itself.
    fn ask_more(&mut self) {
        while self.in_flight.len() < self.max_batches && !self.unasked.is_empty() {
            let front_unasked = match (self.unasked.first(), self.asked.first_key_value()) {
                (Some(u), Some((a, _))) => u < a,
                (Some(_), None) => true,
                _ => false,
            };
            if self.asked.len() >= self.lookahead && !front_unasked {
                break;
            }
            let mut rels = Vec::with_capacity(BATCH);
            while rels.len() < BATCH {
                let Some(k) = self.unasked.pop_first() else {
                    break;
                };
                self.asked.insert(k.clone(), None);
                rels.push(k);
            }
            let abs: Vec<String> = rels.iter().map(|r| path::join(self.root, &r.0)).collect();
            let (pool, side, acl) = (self.pool.clone(), self.side, self.opts.hash.acl);
            let cache = self.cache.cloned();
            self.in_flight.push(Box::pin(async move {
                let r = fetch_many_cached(&pool, side, &abs, acl, cache.as_ref()).await;
                (rels, r)
            }));
        }
    }

    /// Records the nodes of one multi-read; their children become known.
    fn take_reads(&mut self, rels: Vec<TreeKey>, fetched: Vec<Option<Fetched>>, keep: bool) {
        for (key, fetched) in rels.into_iter().zip(fetched) {
            // None: deleted while we walked, so simply not part of the tree.
            let read = fetched.and_then(|f| self.read(&key, f, keep));
            self.asked.insert(key, Some(read));
        }
    }

    /// What the walk keeps of a node read at `key` (None: a skipped ephemeral); its children
    /// are added to the nodes to ask for.
    fn read(&mut self, key: &TreeKey, mut f: Fetched, keep_node: bool) -> Read {
        match (f.node.kind, self.opts.ephemerals) {
            (NodeKind::Ephemeral, EphemeralPolicy::Skip) => return None,
            (NodeKind::Ephemeral, EphemeralPolicy::Persistent) => {
                f.node.kind = NodeKind::Persistent;
            }
            _ => {}
        }
        for name in &f.children {
            let child = path::child(&key.0, name);
            if !path::is_reserved(&path::join(self.root, &child)) {
                self.unasked.insert(TreeKey(child));
            }
        }
        if let Some(acl) = self
            .view
            .as_ref()
            .and_then(|v| v.original(&key.0, &f.node.acl))
        {
            f.node.acl = crate::model::canonical_acl(acl);
        }
        let digest = digest_node(&key.0, &f.node, self.opts.hash);
        let bytes = f.node.data.len() as u64;
        Some(Box::new((digest, bytes, keep_node.then_some(f.node))))
    }
}

/// Sends the chunk; false when the receiver is gone (the comparison ended early).
async fn send<S: Sink>(tx: &S, chunk: &mut Vec<(String, Digest, Option<Node>)>) -> bool {
    let nodes = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
    tx.chunk(nodes).await
}
