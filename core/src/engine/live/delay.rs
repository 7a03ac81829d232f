//! Delayed apply: a stream that keeps the copy deliberately behind, like a MySQL delayed
//! replica (`SOURCE_DELAY`) or PostgreSQL's `recovery_min_apply_delay`, so a destructive change
//! at the source can be stopped (suspend or delete the stream) before it reaches the copy.
//!
//! ZooKeeper keeps no history, so the stream records each changed node as it is when its
//! event arrives (data, ACL, kind, or gone) and applies that record once it is `delay` old, in
//! the order recorded. The records are bounded in bytes: past the bound the oldest are applied
//! early, and the effective delay is reported, never hidden; nothing is dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use zookeeper_client::Client;

use super::stream::report_backlog;
use super::{
    read_source, since_mtime, write_state, Applied, ApplyError, LiveOptions, Observer, Pending,
    SourceState,
};
use crate::engine::plan::Identity;

/// Source nodes read at once when a batch is recorded.
const READ_CONCURRENCY: usize = 64;

/// Bytes of recorded changes kept by default.
pub const DEFAULT_MAX_BYTES: usize = 256 << 20;

/// Bookkeeping per record on top of its data (path, ACL, queue slot).
const RECORD_OVERHEAD: usize = 128;

/// One recorded change.
#[derive(Debug)]
pub(super) struct Recorded {
    /// Source path.
    pub(super) path: String,
    pub(super) state: SourceState,
    /// When the change was recorded (its event arrived).
    pub(super) seen: Instant,
}

impl Recorded {
    fn bytes(&self) -> usize {
        self.path.len() + self.state.size() + RECORD_OVERHEAD
    }
}

/// The recorded changes of a delayed stream, shared with its verifier (a path waiting here is
/// lag, not divergence) and its driver (what to report).
#[derive(Debug)]
pub struct DelayQueue {
    pub delay: Duration,
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Recorded>,
    bytes: usize,
    max_bytes: usize,
    /// Records per path, for [`DelayQueue::pending`].
    paths: HashMap<String, usize>,
    /// The age of the last record applied early to stay within the bound.
    shortened_to: Option<Duration>,
}

impl DelayQueue {
    pub fn new(delay: Duration, max_bytes: usize) -> DelayQueue {
        DelayQueue {
            delay,
            inner: Mutex::new(State {
                max_bytes: max_bytes.max(1),
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change. Returns the records that must be applied now, early, to stay within
    /// the byte bound (oldest first).
    pub(super) fn push(&self, r: Recorded) -> Vec<Recorded> {
        let mut s = self.lock();
        s.bytes += r.bytes();
        *s.paths.entry(r.path.clone()).or_default() += 1;
        s.entries.push_back(r);
        let mut early = Vec::new();
        while s.bytes > s.max_bytes && s.entries.len() > 1 {
            if let Some(old) = pop(&mut s) {
                s.shortened_to = Some(old.seen.elapsed());
                early.push(old);
            }
        }
        early
    }

    /// The records that are `delay` old at `now`, in order.
    pub(super) fn take_due(&self, now: Instant) -> Vec<Recorded> {
        let mut s = self.lock();
        let mut due = Vec::new();
        while s
            .entries
            .front()
            .is_some_and(|r| now.saturating_duration_since(r.seen) >= self.delay)
        {
            if let Some(r) = pop(&mut s) {
                due.push(r);
            }
        }
        due
    }

    /// When the oldest record is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().entries.front().map(|r| r.seen + self.delay)
    }

    /// A change of this source path waits here.
    pub fn pending(&self, path: &str) -> bool {
        self.lock().paths.contains_key(path)
    }

    /// Records waiting, and how old the oldest is.
    pub fn backlog(&self) -> (usize, Option<Duration>) {
        let s = self.lock();
        (s.entries.len(), s.entries.front().map(|r| r.seen.elapsed()))
    }

    /// Whether the byte bound cut the delay short, and to what.
    pub fn shortened_to(&self) -> Option<Duration> {
        self.lock().shortened_to
    }

    /// Puts records that could not be applied back at the front, in their order.
    pub(super) fn requeue_front(&self, records: Vec<Recorded>) {
        let mut s = self.lock();
        for r in records.into_iter().rev() {
            s.bytes += r.bytes();
            *s.paths.entry(r.path.clone()).or_default() += 1;
            s.entries.push_front(r);
        }
    }

    /// A full sync copies the source as it is now, which supersedes every record.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.entries.clear();
        s.paths.clear();
        s.bytes = 0;
    }
}

/// Records the current source state of every path of `batch`, to be applied once it is
/// `delay` old. Records pushed out early by the byte bound are applied now.
pub(super) async fn record_batch(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    q: &DelayQueue,
    batch: &BTreeMap<String, Pending>,
    observer: &Arc<dyn Observer>,
) -> Result<(), ApplyError> {
    let o = &lo.sync;
    // Owned, so the futures are Send without higher-ranked lifetimes.
    let paths: Vec<(String, Instant)> = batch.iter().map(|(p, t)| (p.clone(), t.since)).collect();
    let read: Vec<(String, Instant, Result<SourceState, ApplyError>)> =
        futures::stream::iter(paths)
            .map(|(p, since)| async move {
                let state = read_source(src, o, &p).await;
                (p, since, state)
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
    for (path, seen, state) in read {
        let early = q.push(Recorded {
            path,
            state: state?,
            seen,
        });
        if !early.is_empty() {
            tracing::warn!(
                early = early.len(),
                "delayed apply: the record bound is full; applying the oldest changes early"
            );
            apply_records(src, dst, lo, me, early, observer)
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    report_backlog(q, observer);
    Ok(())
}

/// Applies records in order. On a failure, the error and the records not applied (the
/// failed one first), for the caller to put back.
pub(super) async fn apply_records(
    src: &Client,
    dst: &Client,
    lo: &LiveOptions,
    me: &Identity,
    records: Vec<Recorded>,
    observer: &Arc<dyn Observer>,
) -> Result<(), (ApplyError, Vec<Recorded>)> {
    let mut it = records.into_iter();
    while let Some(r) = it.next() {
        match write_state(src, dst, lo, me, &r.path, r.state.clone()).await {
            Ok(Applied::Written { mtime_ms }) => {
                observer.applied(&r.path, since_mtime(mtime_ms));
            }
            Ok(Applied::Unchanged) => observer.applied(&r.path, r.seen.elapsed()),
            // A delete: reported when the deletion guard applies it.
            Ok(Applied::Queued | Applied::LeftOut) => {}
            Err(e) => {
                let mut rest = vec![r];
                rest.extend(it);
                return Err((e, rest));
            }
        }
    }
    Ok(())
}

fn pop(s: &mut State) -> Option<Recorded> {
    let r = s.entries.pop_front()?;
    s.bytes = s.bytes.saturating_sub(r.bytes());
    if let Some(n) = s.paths.get_mut(&r.path) {
        *n -= 1;
        if *n == 0 {
            s.paths.remove(&r.path);
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::super::apply::SourceNode;
    use super::*;
    use verifier::model::NodeKind;

    fn node(path: &str, data: usize, seen: Instant) -> Recorded {
        Recorded {
            path: path.into(),
            state: SourceState::Node(SourceNode {
                data: vec![0; data],
                mtime_ms: 0,
                kind: NodeKind::Persistent,
                acl: None,
            }),
            seen,
        }
    }

    #[test]
    fn records_come_out_in_order_once_they_are_old_enough() {
        let q = DelayQueue::new(Duration::from_secs(600), DEFAULT_MAX_BYTES);
        let t0 = Instant::now();
        assert!(q.push(node("/a", 1, t0)).is_empty());
        assert!(q
            .push(node("/b", 1, t0 + Duration::from_secs(1)))
            .is_empty());
        let gone = Recorded {
            path: "/a".into(),
            state: SourceState::Absent,
            seen: t0 + Duration::from_secs(2),
        };
        assert!(q.push(gone).is_empty());
        assert!(q.pending("/a") && q.pending("/b") && !q.pending("/c"));
        assert!(q.take_due(t0 + Duration::from_secs(599)).is_empty());
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(600)));
        let due = q.take_due(t0 + Duration::from_secs(601));
        let paths: Vec<&str> = due.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert!(q.pending("/a"), "the delete of /a still waits");
        assert_eq!(q.backlog().0, 1);
        let due = q.take_due(t0 + Duration::from_secs(602));
        assert_eq!(due[0].state, SourceState::Absent);
        assert!(!q.pending("/a"));
        assert_eq!(q.shortened_to(), None);
    }

    #[test]
    fn past_the_bound_the_oldest_go_early_and_it_says_so() {
        let q = DelayQueue::new(Duration::from_secs(600), 3 * (1000 + 2 + RECORD_OVERHEAD));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(q.push(node(&format!("/{i}"), 1000, t0)).is_empty());
        }
        let early = q.push(node("/3", 1000, t0));
        assert_eq!(early.len(), 1);
        assert_eq!(early[0].path, "/0");
        assert!(q.shortened_to().is_some());
        assert_eq!(q.backlog().0, 3);
        q.clear();
        assert_eq!(q.backlog(), (0, None));
        assert!(!q.pending("/1"));
    }
}
