//! Continuous replication: a full sync, then every change streamed from a persistent recursive
//! watch on the source root.
//!
//! Each watch event only marks its path dirty. A batch reads the *current* source state of
//! each dirty path and applies it (create, update or delete), so bursts on a hot node coalesce
//! and the order of events does not matter. Parents go before children: paths are applied one
//! depth at a time, each depth concurrently.
//!
//! Events can be lost across a source reconnect (ZOOKEEPER-4698) and are lost with a session.
//! So after any source disconnection, and whenever the dirty set overflows, the engine runs a
//! full sync again (anti-entropy) before it reports being caught up. The watch is registered
//! before each full sync, so no change made during the sync is missed. A destination outage
//! keeps the dirty set, which is bounded, and retries.

//!
//! Files by job: [`stream`] the epoch loop, [`backoff`] its waits after failures, [`events`] the dirty set, [`batch`] the batched
//! fast path, [`apply`] one path at a time, [`deletes`] and [`cversion`] what they say,
//! [`delay`] delayed apply, [`observer`] what the stream reports.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use verifier::{path, Side};
use zookeeper_client::Error as ZkError;

mod apply;
pub mod backoff;
mod batch;
mod compare;
mod cversion;
mod delay;
mod deletes;
mod events;
mod multi;
mod observer;
mod readers;
mod stream;

use apply::{apply_data, apply_path, read_source, write_state, SourceState};
pub use compare::DestinationDiff;
pub use cversion::raise_cversion_to;
pub use delay::{DelayQueue, DEFAULT_MAX_BYTES as DEFAULT_DELAY_MAX_BYTES};
pub use deletes::delete_destination_subtree;
pub use observer::{quantile, Observer, Stats, StatsInner, Tee};
pub use stream::run;

use super::guard::{LiveGate, SharedGate};
use super::oversized::Oversized;
use super::{SyncError, SyncOptions};

/// What the stream needs on a node it creates to go on with it as events come (reading and
/// setting its data, creating and deleting its children), where a one-shot copy needs only the
/// child operations it still has to do: a node whose final ACL denies any of these is created
/// with the staging ACL, then locked (the stream holds no staging plan across batches).
const STREAM_NEEDS: i32 = verifier::model::perms::ALL & !verifier::model::perms::ADMIN;

/// Net deletes (deletes minus creates) are judged over this sliding window, so a `deleteall`
/// that removes a tree node by node counts as one burst, while queue churn never trips it.
pub const GUARD_WINDOW: Duration = Duration::from_secs(60);
/// Every delete waits this long before it is applied, so the whole burst is counted before
/// any of it reaches the copy. It adds this much to the lag of deletes only.
pub const DELETE_DELAY: Duration = Duration::from_secs(2);

/// Settings of a continuous sync.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub sync: SyncOptions,
    /// How long events are gathered before a batch is applied (coalesces bursts).
    pub batch_window: Duration,
    /// Dirty paths kept while the destination is away; beyond this a full sync is run instead.
    pub max_pending: usize,
    /// A full sync this often while streaming (None: only after gaps). ZooKeeper fires no
    /// watch event for an ACL change, so only a re-walk copies one.
    pub resync_interval: Option<Duration>,
    /// The deletion guard of the stream (built from `sync.guard`); whoever runs the stream
    /// keeps a clone to read the hold and to release it.
    pub gate: SharedGate,
    /// Delayed apply (None: changes are applied as soon as they are read).
    pub delay: Option<Arc<DelayQueue>>,
    /// Before the first full sync of each epoch (the stream's start, and after every gap),
    /// compare the trees and report what the destination holds that the sync will change or
    /// delete ([`compare`]): a reverse stream's old primary may hold writes nobody else has.
    pub compare_before_sync: bool,
    /// The destination's request limit as probed, and the nodes left out for their size (see
    /// [`crate::engine::oversized`]); whoever runs the stream keeps a clone to report them.
    pub oversized: Arc<Oversized>,
}

/// Long enough to coalesce a burst of writes to one node, short next to any lag objective.
const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Dirty paths held through a destination outage before a full sync replaces them.
const DEFAULT_MAX_PENDING: usize = 100_000;
/// How stale an ACL change (which fires no event) may get on the copy.
const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(600);

impl LiveOptions {
    pub fn new(sync: SyncOptions) -> LiveOptions {
        let max_pending = DEFAULT_MAX_PENDING;
        let gate = Arc::new(LiveGate::new(
            sync.guard,
            GUARD_WINDOW,
            DELETE_DELAY,
            max_pending,
        ));
        LiveOptions {
            sync,
            batch_window: DEFAULT_BATCH_WINDOW,
            max_pending,
            resync_interval: Some(DEFAULT_RESYNC_INTERVAL),
            gate,
            delay: None,
            compare_before_sync: false,
            oversized: Arc::default(),
        }
    }

    /// The longest request the stream builds and the bytes of one transaction: the configured
    /// ones, or less when the destination was found to take less.
    pub fn limits(&self) -> (usize, usize) {
        let w = &self.sync.writer;
        let limit = self.oversized.limit(w.jute_maxbuffer);
        (limit, w.max_batch_bytes.min(limit / 2))
    }

    /// Every delete waits `delay` (default [`DELETE_DELAY`]) before the deletion guard lets it
    /// through. Zero applies deletes at once, at the price of letting up to the guard's limits
    /// of a burst through before it trips.
    pub fn with_delete_delay(mut self, delay: Duration) -> LiveOptions {
        self.gate = Arc::new(LiveGate::new(
            self.sync.guard,
            GUARD_WINDOW,
            delay,
            self.max_pending,
        ));
        self
    }

    /// Applies every change only once it is `delay` old at the source, keeping at most
    /// `max_bytes` of recorded changes. A periodic re-walk would copy the source as it is now,
    /// so there is none; after a gap the stream waits `delay` before it re-walks.
    pub fn with_apply_delay(mut self, delay: Duration, max_bytes: usize) -> LiveOptions {
        if !delay.is_zero() {
            self.delay = Some(Arc::new(DelayQueue::new(delay, max_bytes)));
            self.resync_interval = None;
        }
        self
    }
}

/// Where the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveState {
    Connecting,
    /// Running a full sync (the first one, or anti-entropy after a gap).
    FullSync,
    /// Applying watch events; caught up when nothing is pending.
    Streaming,
    /// Waiting to retry after a failure.
    Retrying,
}

/// Why one path could not be applied.
#[derive(Debug)]
struct ApplyError {
    side: Side,
    op: &'static str,
    path: String,
    source: ApplyCause,
}

/// What went wrong with one path.
#[derive(Debug, thiserror::Error)]
enum ApplyCause {
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// The destination node is of another kind than the source's: only the full pass
    /// recreates a subtree. Worded as the ZooKeeper error it once travelled as.
    #[error("bad arguments: node kind differs")]
    KindDiffers,
}

impl ApplyError {
    fn on(side: Side, op: &'static str, path: &str) -> impl FnOnce(ZkError) -> ApplyError {
        let path = path.to_string();
        move |source| ApplyError {
            side,
            op,
            path,
            source: ApplyCause::Zk(source),
        }
    }

    /// The destination node `dp` is of another kind than its source.
    fn kind_differs(dp: &str) -> ApplyError {
        ApplyError {
            side: Side::Destination,
            op: "kind",
            path: dp.to_string(),
            source: ApplyCause::KindDiffers,
        }
    }

    /// The ZooKeeper error, when a request failed.
    fn zk(&self) -> Option<&ZkError> {
        match &self.source {
            ApplyCause::Zk(e) => Some(e),
            ApplyCause::KindDiffers => None,
        }
    }

    /// A lost connection or session: retry the same paths later.
    fn is_transient(&self) -> bool {
        self.zk().is_some_and(|e| {
            verifier::zk::is_transient(e)
                || matches!(
                    e,
                    ZkError::SessionExpired | ZkError::ConnectionLoss | ZkError::ClientClosed
                )
        })
    }

    /// The error as a one-shot copy reports it.
    fn into_sync(self) -> SyncError {
        match self.source {
            ApplyCause::Zk(source) => SyncError::Write {
                op: self.op,
                path: self.path,
                source,
            },
            ApplyCause::KindDiffers => SyncError::KindDiffers { path: self.path },
        }
    }
}

/// A dirty path: when its first pending event arrived and which kinds of event it had.
#[derive(Clone, Copy, Debug)]
struct Pending {
    since: Instant,
    kinds: u8,
}

const DATA_CHANGED: u8 = 1;
const CREATED_OR_DELETED: u8 = 2;

/// How a stream epoch ended.
enum Epoch {
    Stopped,
    /// Reconnect (new sessions) and run a full sync again.
    Restart(String),
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Now minus a source node's mtime: the lag of a change written to the destination.
fn since_mtime(mtime_ms: i64) -> Duration {
    Duration::from_millis((wall_ms() - mtime_ms).max(0) as u64)
}

/// What applying one path did.
enum Applied {
    Written {
        mtime_ms: i64,
    },
    Unchanged,
    /// A delete handed to the deletion guard; reported when it is applied.
    Queued,
    /// Left out: too big for the destination, or under a node that is (reported as such).
    LeftOut,
}

impl Applied {
    /// Whether the path counts as applied now (a queued delete counts when applied, a node
    /// left out never).
    fn counts(&self) -> bool {
        matches!(self, Applied::Written { .. } | Applied::Unchanged)
    }
}

fn dst_path(o: &SyncOptions, src_path: &str) -> String {
    // Relative to the source root: "" for the root itself, else starting with '/'.
    let rel = if o.source_root == "/" {
        if src_path == "/" {
            ""
        } else {
            src_path
        }
    } else {
        src_path
            .strip_prefix(o.source_root.as_str())
            .unwrap_or_default()
    };
    path::join(&o.destination_root, rel)
}

/// Whether the source path `p` is never streamed: reserved on the source, or mapped onto a
/// reserved destination path (a destination root of `/` and a source child called
/// `zookeeper`: the server's own tree is never written or deleted).
fn left_out(o: &SyncOptions, p: &str) -> bool {
    path::is_reserved(p) || path::is_reserved(&dst_path(o, p))
}

/// Absolute path of the child `name` of the absolute path `parent`.
fn child_of(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        path::child(parent, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verifier::ConnectOptions;

    #[test]
    fn destination_paths_follow_the_root_mapping() {
        let mut o = SyncOptions::new(
            ConnectOptions::new("a:1"),
            "/kafka",
            ConnectOptions::new("b:1"),
            "/dr/kafka",
        );
        assert_eq!(dst_path(&o, "/kafka"), "/dr/kafka");
        assert_eq!(
            dst_path(&o, "/kafka/brokers/ids/1"),
            "/dr/kafka/brokers/ids/1"
        );
        o.source_root = "/".into();
        o.destination_root = "/".into();
        assert_eq!(dst_path(&o, "/a/b"), "/a/b");
        assert_eq!(dst_path(&o, "/"), "/");
        o.destination_root = "/dr".into();
        assert_eq!(dst_path(&o, "/a/b"), "/dr/a/b");
        assert_eq!(child_of("/", "x"), "/x");
        // Onto `/`, a source child called zookeeper would land on the server's own tree.
        o.source_root = "/tenant".into();
        o.destination_root = "/".into();
        assert!(left_out(&o, "/tenant/zookeeper"));
        assert!(left_out(&o, "/tenant/zookeeper/config"));
        assert!(left_out(&o, "/tenant/.resiliency-operator/claims"));
        assert!(!left_out(&o, "/tenant/zookeeper-app"));
        assert!(!left_out(&o, "/tenant/a/zookeeper"));
        o.source_root = "/".into();
        assert!(left_out(&o, "/zookeeper/quota"));
        assert!(!left_out(&o, "/app"));
        assert_eq!(child_of("/a", "x"), "/a/x");
    }
}
