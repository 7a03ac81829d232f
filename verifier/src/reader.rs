//! Pipelined reads of ZooKeeper trees.
//!
//! The client writes each request to the socket when the call is made and resolves the reply
//! later, so keeping many calls in flight turns round trips into throughput.

use crate::side::Side;
use std::future::Future;

use thiserror::Error;
use zookeeper_client::{Acl, Client, Error as ZkError, MultiReadResult, Stat};

use crate::acl_cache::{AclCache, Cached};
use crate::model::{canonical_acl, AclEntry, Node, NodeKind, NodeStat};

mod walk;
pub use walk::{
    walk, walk_cached, walk_nodes, walk_nodes_viewed, walk_viewed, walk_viewed_cached,
    EphemeralPolicy, NodeWalkEvent, WalkEvent, WalkOptions, WalkTotals, WalkedNode,
    LOOKAHEAD_WINDOWS,
};

/// A read that failed, with the path and the call.
#[derive(Debug, Error)]
#[error("{side}: {op} {path}: {source}")]
pub struct ReadError {
    pub side: Side,
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
    side: Side,
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
    side: Side,
    paths: &[String],
    acl: bool,
) -> Result<Vec<Option<Fetched>>, ReadError> {
    fetch_many_cached(pool, side, paths, acl, None).await
}

/// A node's data, stat and children from a multi-read; `None` when it does not exist.
type DataRead = Option<(Vec<u8>, Stat, Vec<String>)>;

/// [`fetch_many`], taking from `cache` the ACLs of nodes whose stat matches an entry (see
/// [`AclCache`]) and recording those it reads. The ACLs of paths the cache has no entry for
/// are asked for alongside the multi-read, as without a cache; those with an entry wait for
/// the multi-read's stat and are asked for only when it does not match.
pub async fn fetch_many_cached(
    pool: &[Client],
    side: Side,
    paths: &[String],
    acl: bool,
    cache: Option<&AclCache>,
) -> Result<Vec<Option<Fetched>>, ReadError> {
    let Some(main) = pool.first() else {
        return Ok(Vec::new());
    };
    // All requests leave now; replies are awaited below.
    let data_call = multi_read(main, side, paths)?;
    let cache = cache.filter(|_| acl);
    let mut held = match cache {
        Some(c) => c.lookup(paths),
        None => paths.iter().map(|_| None).collect(),
    };
    let acl_call = |i: usize| pool[i % pool.len()].get_acl(&paths[i]);
    let mut acl_calls: Vec<_> = (0..paths.len())
        .map(|i| (acl && held[i].is_none()).then(|| acl_call(i)))
        .collect();
    let first = paths.first().map(String::as_str).unwrap_or("/");
    let results = data_call
        .await
        .map_err(|e| read_error(side, "multiRead", first, e))?;
    let reads = data_reads(side, paths, results)?;
    let cached = match cache {
        Some(c) => {
            let cached = take_cached(&mut held, &reads, &mut acl_calls, acl_call);
            c.count_hits(cached.iter().filter(|a| a.is_some()).count() as u64);
            c.count_reads(acl_calls.iter().filter(|a| a.is_some()).count() as u64);
            cached
        }
        None => vec![None; paths.len()],
    };
    let acls = futures::future::join_all(acl_calls.into_iter().map(|call| async move {
        match call {
            Some(call) => Some(call.await),
            None => None,
        }
    }))
    .await;
    let (out, fresh) = assemble(side, paths, reads, cached, acls, cache.is_some())?;
    if let Some(c) = cache {
        // Keyed by the stat of each getACL reply itself, which goes with its ACL.
        c.put_many(fresh.iter().map(|(p, s, a)| (*p, s, a.as_slice())));
    }
    Ok(out)
}

fn read_error(side: Side, op: &'static str, path: &str, source: ZkError) -> ReadError {
    ReadError {
        side,
        op,
        path: path.to_string(),
        source,
    }
}

/// Sends one multi-read of data and children of every path; the reply comes with the future.
fn multi_read<'a>(
    main: &'a Client,
    side: Side,
    paths: &[String],
) -> Result<impl Future<Output = Result<Vec<MultiReadResult>, ZkError>> + 'a, ReadError> {
    let mut reader = main.new_multi_reader();
    for p in paths {
        reader
            .add_get_data(p)
            .and_then(|_| reader.add_get_children(p))
            .map_err(|e| read_error(side, "multiRead", p, e))?;
    }
    Ok(reader.commit())
}

/// The cached ACLs of the nodes whose stat matches their entry in `held`; for those that
/// changed since, a getACL goes out now (`acl_call`) into `acl_calls`.
fn take_cached<F>(
    held: &mut [Option<Cached>],
    reads: &[DataRead],
    acl_calls: &mut [Option<F>],
    acl_call: impl Fn(usize) -> F,
) -> Vec<Option<Vec<AclEntry>>> {
    let mut cached: Vec<Option<Vec<AclEntry>>> = vec![None; reads.len()];
    for (i, read) in reads.iter().enumerate() {
        let (Some(entry), Some((_, stat, _))) = (held[i].take(), read) else {
            continue;
        };
        if entry.matches(stat) {
            cached[i] = Some(entry.acl.to_vec());
        } else {
            // Changed since it was cached: read it now.
            acl_calls[i] = Some(acl_call(i));
        }
    }
    cached
}

/// A getACL reply.
type AclReply = Result<(Vec<Acl>, Stat), ZkError>;

/// An ACL read for the cache: the path, the stat of its getACL reply and the ACL.
type FreshAcl<'p> = (&'p str, Stat, Vec<AclEntry>);

/// The nodes out of their data reads and their ACLs (cached, or getACL replies); also the
/// ACLs read, for the cache when `caching`.
fn assemble<'p>(
    side: Side,
    paths: &'p [String],
    reads: Vec<DataRead>,
    cached: Vec<Option<Vec<AclEntry>>>,
    acls: Vec<Option<AclReply>>,
    caching: bool,
) -> Result<(Vec<Option<Fetched>>, Vec<FreshAcl<'p>>), ReadError> {
    let mut out = Vec::with_capacity(paths.len());
    let mut fresh = Vec::new();
    let parts = paths.iter().zip(reads).zip(cached).zip(acls);
    for (((p, read), cached), reply) in parts {
        let Some((data, stat, children)) = read else {
            out.push(None);
            continue;
        };
        let acl = match (cached, reply) {
            (Some(hit), _) => hit,
            (None, None) => Vec::new(),
            (None, Some(reply)) => match read_acl(side, p, reply)? {
                Some((acl, acl_stat)) => {
                    if caching {
                        fresh.push((p.as_str(), acl_stat, acl.clone()));
                    }
                    acl
                }
                // Deleted between the reads.
                None => {
                    out.push(None);
                    continue;
                }
            },
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
    Ok((out, fresh))
}

/// A getACL reply as a canonical ACL with the reply's stat; `None` when the node is gone.
fn read_acl(
    side: Side,
    p: &str,
    reply: AclReply,
) -> Result<Option<(Vec<AclEntry>, Stat)>, ReadError> {
    let err = |op, source| read_error(side, op, p, source);
    match reply {
        Ok((acl, stat)) => {
            let acl: Vec<AclEntry> = acl.iter().map(AclEntry::from_zk).collect();
            if acl.iter().any(is_redacted) {
                return Err(err(
                    "read the ACL (digest hashes are hidden without ADMIN permission) of",
                    ZkError::NoAuth,
                ));
            }
            Ok(Some((canonical_acl(acl), stat)))
        }
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(err("getACL", e)),
    }
}

/// Splits a multi-read reply (getData, getChildren for each path) into nodes.
fn data_reads(
    side: Side,
    paths: &[String],
    results: Vec<MultiReadResult>,
) -> Result<Vec<DataRead>, ReadError> {
    let err = |op, path: &str, source| read_error(side, op, path, source);
    let unexpected = |op, p: &str| err(op, p, ZkError::UnexpectedError("unexpected reply".into()));
    let mut results = results.into_iter();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
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
            _ => return Err(unexpected("getData", p)),
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
            _ => return Err(unexpected("getChildren", p)),
        };
        out.push(Some((data, stat, children)));
    }
    Ok(out)
}

/// Nodes per multi-read request.
pub const BATCH: usize = 64;

/// A digest ACL entry whose hash the server replaced with "x".
pub fn is_redacted(e: &AclEntry) -> bool {
    e.scheme == "digest" && e.id.ends_with(":x")
}
