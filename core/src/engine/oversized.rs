//! Nodes too big for the destination.
//!
//! ZooKeeper drops the connection of a request longer than its `jute.maxbuffer`: the client
//! sees a lost connection, not an error, and reconnects. A node whose data the destination
//! cannot take would fail every write that carries it, and every other write in flight with
//! it, for ever. So a stream learns the destination's limit with a read-only probe on a session
//! of its own ([`probe`]), leaves such a node out (a new one with its subtree, an existing one
//! keeps its old data), names it, and streams everything else. The verifier keeps showing it
//! divergent: the copy is never called in sync while one is left out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use verifier::path;
use zookeeper_client::{Client, Error as ZkError};

/// A source node left out because its write would be longer than the destination takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TooBig {
    /// The source path.
    pub path: String,
    /// Bytes of the request that would carry it.
    pub size: usize,
    /// The node is not on the destination (nor, then, its subtree); else it keeps older data.
    pub missing: bool,
}

/// Bytes a request adds around one operation of a multi-write (the request and operation
/// headers, the end marker): with [`crate::engine::writer::Op::wire_size`], an upper bound of the
/// request that carries the operation alone.
pub const REQUEST_FRAME: usize = 32;

/// What a stream knows of its destination's limit and the nodes it leaves out. Shared by the
/// stream's epochs, its full syncs and its driver (what to report).
#[derive(Debug, Default)]
pub struct Oversized {
    /// The longest request the destination took when last probed; 0 when it took the
    /// configured limit (or was never probed).
    probed: AtomicUsize,
    nodes: Mutex<BTreeMap<String, TooBig>>,
    /// Entries in `nodes`, read without the lock on the hot path.
    count: AtomicUsize,
    /// The set changed since it was last reported.
    changed: AtomicBool,
    /// A node left out with its subtree fits now: only a re-walk copies the subtree.
    rewalk: AtomicBool,
}

impl Oversized {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TooBig>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest request to build: the configured limit, or less if the probe found less.
    pub fn limit(&self, configured: usize) -> usize {
        match self.probed.load(Ordering::Relaxed) {
            0 => configured,
            p => p.min(configured),
        }
    }

    /// The probed limit when it is below `configured` (None: the configured one holds).
    pub fn probed_below(&self, configured: usize) -> Option<usize> {
        let limit = self.limit(configured);
        (limit < configured).then_some(limit)
    }

    /// Records what [`probe`] found (None: the destination takes `configured`).
    pub fn set_probed(&self, found: Option<usize>) {
        let before = self.probed.swap(found.unwrap_or(0), Ordering::Relaxed);
        if before != found.unwrap_or(0) {
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a write of `size` bytes (the operation's wire size) for the source node `path`
    /// fits `limit`. If not, the node is recorded as left out and false returned.
    pub fn admit(&self, path: &str, size: usize, limit: usize, missing: bool) -> bool {
        let size = size + REQUEST_FRAME;
        if size <= limit {
            return true;
        }
        let node = TooBig {
            path: path.to_string(),
            size,
            missing,
        };
        let mut nodes = self.lock();
        if nodes.get(path) != Some(&node) {
            tracing::warn!(
                path,
                size,
                limit,
                missing,
                "left out: too big for the destination"
            );
            nodes.insert(path.to_string(), node);
            self.count.store(nodes.len(), Ordering::Relaxed);
            self.changed.store(true, Ordering::Relaxed);
        }
        false
    }

    /// The source node `path` was written to the destination after all (it shrank, or the
    /// limit grew): it is no longer left out. One left out with its subtree asks for a
    /// re-walk.
    pub fn written(&self, path: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut nodes = self.lock();
        if let Some(n) = nodes.remove(path) {
            self.count.store(nodes.len(), Ordering::Relaxed);
            self.changed.store(true, Ordering::Relaxed);
            if n.missing {
                self.rewalk.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The source node `path` is gone: neither it nor anything under it is left out now.
    pub fn gone(&self, path: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut nodes = self.lock();
        let before = nodes.len();
        nodes.retain(|p, _| !path::is_within(path, p));
        if nodes.len() != before {
            self.count.store(nodes.len(), Ordering::Relaxed);
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the source node `path` is left out, itself or as part of a subtree left out
    /// (its top missing on the destination, so nothing under it can be created).
    pub fn covers(&self, path: &str) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let nodes = self.lock();
        let mut at = Some(path);
        let mut own = true;
        while let Some(p) = at {
            if let Some(n) = nodes.get(p) {
                if own || n.missing {
                    return true;
                }
            }
            own = false;
            at = path::parent(p);
        }
        false
    }

    /// Whether the source node `path` is under a node left out with its subtree.
    pub fn under_missing(&self, path: &str) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let nodes = self.lock();
        let mut at = path::parent(path);
        while let Some(p) = at {
            if nodes.get(p).is_some_and(|n| n.missing) {
                return true;
            }
            at = path::parent(p);
        }
        false
    }

    /// What a full sync left out: it re-read every node, so this replaces the set.
    pub fn replace(&self, left_out: &[TooBig]) {
        let mut nodes = self.lock();
        let new: BTreeMap<String, TooBig> = left_out
            .iter()
            .map(|n| (n.path.clone(), n.clone()))
            .collect();
        if *nodes != new {
            *nodes = new;
            self.count.store(nodes.len(), Ordering::Relaxed);
            self.changed.store(true, Ordering::Relaxed);
        }
        self.rewalk.store(false, Ordering::Relaxed);
    }

    /// Every node left out, in path order.
    pub fn list(&self) -> Vec<TooBig> {
        self.lock().values().cloned().collect()
    }

    /// Whether the set (or the probed limit) changed since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Whether a re-walk is due since the last call (see [`Oversized::written`]).
    pub fn take_rewalk(&self) -> bool {
        self.rewalk.swap(false, Ordering::Relaxed)
    }
}

/// Bytes of an `exists` request besides its path: xid, operation, the path's length, the
/// watch flag.
const EXISTS_OVERHEAD: usize = 13;

/// Where the probe looks: never a node, inside the reserved tree, so a probe of any length
/// reads nothing and writes nothing (an `exists` of a path that is not there).
const PROBE_PATH: &str = "/.resiliency-operator/request-size-probe-";

/// The shortest request probed: below it a drop is not taken for the limit.
const PROBE_MIN: usize = 1024;

/// Whether the destination takes a request of `len` bytes. A drop is told from a lost
/// connection by a small request right after (the client reconnects at once), and counted
/// only when it happens twice.
async fn takes(c: &Client, len: usize) -> Result<bool, ZkError> {
    let pad = len.saturating_sub(EXISTS_OVERHEAD + PROBE_PATH.len());
    let probe = format!("{PROBE_PATH}{}", "x".repeat(pad));
    for _ in 0..2 {
        match c.check_stat(&probe).await {
            Ok(_) => return Ok(true),
            Err(ZkError::ConnectionLoss) => {
                c.check_stat("/").await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The longest request the destination takes, when it is shorter than `configured` (None: it
/// takes `configured`). Binary search over `exists` requests of growing paths on `c`, a
/// session of its own: each request the server drops for its length closes that session's
/// connection, which the client opens again.
pub async fn probe(c: &Client, configured: usize) -> Result<Option<usize>, ZkError> {
    if takes(c, configured).await? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (PROBE_MIN, configured);
    if !takes(c, lo).await? {
        // Even a small request dropped twice: not a limit this probe can measure.
        return Ok(None);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if takes(c, mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_big_nodes_are_recorded_until_written_or_gone() {
        let o = Oversized::default();
        assert_eq!(o.limit(1000), 1000);
        o.set_probed(Some(500));
        assert_eq!(o.limit(1000), 500);
        assert_eq!(o.probed_below(1000), Some(500));
        assert!(o.take_changed());
        assert!(o.admit("/a/small", 100, 500, true));
        assert!(!o.admit("/a/big", 600, 500, true));
        assert!(!o.admit("/a/stale", 700, 500, false));
        assert!(o.take_changed());
        // Again, unchanged: nothing new to report.
        assert!(!o.admit("/a/big", 600, 500, true));
        assert!(!o.take_changed());
        assert!(o.covers("/a/big") && o.covers("/a/big/child") && o.covers("/a/stale"));
        assert!(!o.covers("/a/stale/child") && !o.covers("/a"));
        assert!(o.under_missing("/a/big/child/deeper"));
        assert!(!o.under_missing("/a/big") && !o.under_missing("/a/stale/child"));
        assert_eq!(o.list().len(), 2);
        assert_eq!(o.list()[0].size, 600 + REQUEST_FRAME);

        o.written("/a/stale");
        assert!(!o.take_rewalk(), "its subtree was copied all along");
        o.written("/a/big");
        assert!(o.take_rewalk(), "its subtree is still to be copied");
        assert!(o.list().is_empty());
        assert!(!o.admit("/a/big", 600, 500, true));
        o.gone("/a");
        assert!(o.list().is_empty());
        o.replace(&[TooBig {
            path: "/b".into(),
            size: 9,
            missing: false,
        }]);
        assert_eq!(o.list().len(), 1);
        o.set_probed(None);
        assert_eq!(o.limit(1000), 1000);
    }
}
