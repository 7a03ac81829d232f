//! Pipelined reads of ZooKeeper trees.
//!
//! The client writes each request to the socket when the call is made and resolves the reply
//! later, so keeping many calls in flight turns round trips into throughput.

use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use thiserror::Error;
use zookeeper_client::{Client, Error as ZkError, MultiReadResult};

use crate::hash::{digest_node, DigestTree, HashOptions};
use crate::model::{canonical_acl, AclEntry, Node, NodeKind, NodeStat};
use crate::path;

/// A read that failed, with the path and the call.
#[derive(Debug, Error)]
#[error("{side}: {op} {path}: {source}")]
pub struct ReadError {
    pub side: &'static str,
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: ZkError,
}

impl ReadError {
    pub fn is_transient(&self) -> bool {
        crate::zk::is_transient(&self.source)
    }
}

/// A node and the names of its children.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub node: Node,
    pub children: Vec<String>,
}

/// Reads data, stat, ACL (when `acl`) and children of one node. `Ok(None)` when it does not
/// exist (also when it vanished between the calls).
pub async fn fetch_node(
    client: &Client,
    side: &'static str,
    path: &str,
    acl: bool,
) -> Result<Option<Fetched>, ReadError> {
    let found = fetch_many(std::slice::from_ref(client), side, &[path.to_string()], acl).await?;
    Ok(found.into_iter().next().flatten())
}

/// Reads many nodes at once: data and children of all of them in one multi-read request (one
/// request costs the server about as much as one plain read), ACLs spread over `pool`, since
/// getACL has no multi form. `pool[0]` carries the multi-read. `None` for absent nodes.
pub async fn fetch_many(
    pool: &[Client],
    side: &'static str,
    paths: &[String],
    acl: bool,
) -> Result<Vec<Option<Fetched>>, ReadError> {
    let Some(main) = pool.first() else {
        return Ok(Vec::new());
    };
    let err = |op, path: &str, source| ReadError {
        side,
        op,
        path: path.to_string(),
        source,
    };
    let mut reader = main.new_multi_reader();
    for p in paths {
        reader
            .add_get_data(p)
            .and_then(|_| reader.add_get_children(p))
            .map_err(|e| err("multiRead", p, e))?;
    }
    // All requests leave now; replies are awaited below.
    let data_call = reader.commit();
    let acl_calls: Vec<_> = if acl {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| pool[i % pool.len()].get_acl(p))
            .collect()
    } else {
        Vec::new()
    };
    let first = paths.first().map(String::as_str).unwrap_or("/");
    let results = data_call.await.map_err(|e| err("multiRead", first, e))?;
    let acls = futures::future::join_all(acl_calls).await;
    let mut out = Vec::with_capacity(paths.len());
    let mut results = results.into_iter();
    for (i, p) in paths.iter().enumerate() {
        let (Some(d), Some(c)) = (results.next(), results.next()) else {
            return Err(err(
                "multiRead",
                p,
                ZkError::UnexpectedError("short multi-read reply".into()),
            ));
        };
        let (data, stat) = match d {
            MultiReadResult::Data { data, stat } => (data, stat),
            MultiReadResult::Error {
                err: ZkError::NoNode,
            } => {
                out.push(None);
                continue;
            }
            MultiReadResult::Error { err: e } => return Err(err("getData", p, e)),
            _ => {
                return Err(err(
                    "getData",
                    p,
                    ZkError::UnexpectedError("unexpected reply".into()),
                ))
            }
        };
        let children = match c {
            MultiReadResult::Children { children } => children,
            MultiReadResult::Error {
                err: ZkError::NoNode,
            } => {
                out.push(None);
                continue;
            }
            MultiReadResult::Error { err: e } => return Err(err("getChildren", p, e)),
            _ => {
                return Err(err(
                    "getChildren",
                    p,
                    ZkError::UnexpectedError("unexpected reply".into()),
                ))
            }
        };
        let acl = match acls.get(i) {
            None => Vec::new(),
            Some(Ok((acl, _))) => {
                let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
                if acl.iter().any(is_redacted) {
                    return Err(err(
                        "read the ACL (digest hashes are hidden without ADMIN permission) of",
                        p,
                        ZkError::NoAuth,
                    ));
                }
                canonical_acl(acl)
            }
            Some(Err(ZkError::NoNode)) => {
                out.push(None);
                continue;
            }
            Some(Err(e)) => return Err(err("getACL", p, e.clone())),
        };
        let stat = NodeStat::from(&stat);
        out.push(Some(Fetched {
            node: Node {
                data,
                acl,
                kind: NodeKind::from_ephemeral_owner(stat.ephemeral_owner),
                stat,
            },
            children,
        }));
    }
    Ok(out)
}

/// Nodes per multi-read request.
pub const BATCH: usize = 64;

/// A digest ACL entry whose hash the server replaced with "x".
pub fn is_redacted(e: &AclEntry) -> bool {
    e.scheme == "digest" && e.id.ends_with(":x")
}

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

/// A walked tree.
#[derive(Debug, Default)]
pub struct Walked {
    pub tree: DigestTree,
    /// False when the root path does not exist.
    pub root_exists: bool,
    pub bytes: u64,
    /// Highest mzxid seen: the tree reflects the server at least up to here.
    pub max_mzxid: i64,
}

type BatchFuture<'a> = Pin<
    Box<dyn Future<Output = (Vec<String>, Result<Vec<Option<Fetched>>, ReadError>)> + Send + 'a>,
>;

/// Reads the whole tree under `root` into digests, `window` nodes at a time, in multi-read
/// batches. `/zookeeper` is never read. `pool` as in [`fetch_many`].
pub async fn walk(
    pool: &[Client],
    side: &'static str,
    root: &str,
    opts: WalkOptions,
) -> Result<Walked, ReadError> {
    let mut out = Walked::default();
    let mut stack: Vec<String> = vec![String::new()];
    let mut in_flight: FuturesUnordered<BatchFuture<'_>> = FuturesUnordered::new();
    let batches = opts.window.div_ceil(BATCH).max(1);
    loop {
        while in_flight.len() < batches && !stack.is_empty() {
            let take = stack.len().min(BATCH);
            let rels: Vec<String> = stack.split_off(stack.len() - take);
            let abs: Vec<String> = rels.iter().map(|r| path::join(root, r)).collect();
            in_flight.push(Box::pin(async move {
                let r = fetch_many(pool, side, &abs, opts.hash.acl).await;
                (rels, r)
            }));
        }
        let Some((rels, result)) = in_flight.next().await else {
            break;
        };
        for (rel, fetched) in rels.into_iter().zip(result?) {
            // None: deleted while we walked, so simply not part of the tree.
            let Some(mut fetched) = fetched else { continue };
            if rel.is_empty() {
                out.root_exists = true;
            }
            if fetched.node.kind == NodeKind::Ephemeral {
                match opts.ephemerals {
                    EphemeralPolicy::Skip => continue,
                    EphemeralPolicy::Persistent => fetched.node.kind = NodeKind::Persistent,
                }
            }
            out.bytes += fetched.node.data.len() as u64;
            out.max_mzxid = out.max_mzxid.max(fetched.node.stat.mzxid);
            for name in &fetched.children {
                let child = path::child(&rel, name);
                if !path::is_reserved(&path::join(root, &child)) {
                    stack.push(child);
                }
            }
            out.tree
                .insert(rel.clone(), digest_node(&rel, &fetched.node, opts.hash));
        }
    }
    Ok(out)
}
