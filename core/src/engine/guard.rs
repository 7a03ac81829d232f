//! The deletion guard: a pass or a live window that would delete a large part of the
//! destination deletes nothing until a person releases it.
//!
//! A DR copy exists for the day the source is damaged. An emptied tree, a `deleteall` or a
//! wrong root path at the source looks to a replicator like ordinary deletes; without this
//! guard it would carry the damage to the copy within seconds. Creates and updates still go
//! through: only deletes are held.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Default absolute limit: more deletes than this (and more than the percentage) are held.
pub const DEFAULT_MAX_DELETES: u64 = 100;
/// Default relative limit, in percent of the destination tree.
pub const DEFAULT_MAX_DELETE_PERCENT: f64 = 10.0;
/// A source root holding at most this fraction of the destination's nodes is "near-empty":
/// the pass is held before anything is written.
pub const NEAR_EMPTY_FRACTION: f64 = 0.01;
/// Paths of held deletes kept as a sample for status, Events and messages.
pub const SAMPLE_PATHS: usize = 10;

/// Which deletes a person let through, once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Allowance {
    /// Nothing released: the limits apply.
    #[default]
    None,
    /// Up to this many deletes (the count shown when they were held).
    UpTo(u64),
    /// Every delete (`--allow-mass-delete`).
    Unlimited,
}

impl Allowance {
    fn covers(self, deletes: u64) -> bool {
        match self {
            Allowance::None => false,
            Allowance::UpTo(n) => deletes <= n,
            Allowance::Unlimited => true,
        }
    }
}

/// The limits. A limit of 0 is off; with both off there is no guard.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletionGuard {
    pub max_deletes: u64,
    pub max_delete_percent: f64,
    pub allowance: Allowance,
    /// Hold every delete whatever the limits (a live stream that is already holding runs its
    /// full syncs like this, so a re-walk cannot bypass the hold).
    #[serde(skip)]
    pub hold_all: bool,
}

impl Default for DeletionGuard {
    fn default() -> Self {
        DeletionGuard {
            max_deletes: DEFAULT_MAX_DELETES,
            max_delete_percent: DEFAULT_MAX_DELETE_PERCENT,
            allowance: Allowance::None,
            hold_all: false,
        }
    }
}

/// Why deletes were held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HoldReason {
    /// More deletes than the limits allow.
    MassDeletion,
    /// The source root is empty or near-empty against a populated destination: held before
    /// any write (a wrong root path or ensemble looks like this too).
    SourceEmpty,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::MassDeletion => "MassDeletionHeld",
            HoldReason::SourceEmpty => "SourceEmptyHeld",
        }
    }
}

/// Deletes that were not applied, with the numbers a person needs to judge them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub reason: HoldReason,
    /// Destination nodes that would have been deleted.
    pub deletes: u64,
    /// Destination nodes under the root when it was decided.
    pub destination_nodes: u64,
    pub source_nodes: u64,
    /// The limits that were exceeded.
    pub max_deletes: u64,
    pub max_delete_percent: f64,
    /// Some of the paths, in the order they were found.
    pub sample: Vec<String>,
}

impl Held {
    /// Share of the destination that would go, in percent.
    pub fn percent(&self) -> f64 {
        percent(self.deletes, self.destination_nodes)
    }

    /// The share as text, rounded down: 2000 of 2001 is 99.9%, never 100%.
    pub fn percent_text(&self) -> String {
        format!("{:.1}%", (self.percent() * 10.0).floor() / 10.0)
    }

    /// One line for logs, CLI output, conditions and Events (without the release hint, which
    /// depends on the driver).
    pub fn describe(&self) -> String {
        let what = match self.reason {
            HoldReason::MassDeletion => "mass deletion held",
            HoldReason::SourceEmpty => "source root is empty or near-empty; nothing written",
        };
        let sample = if self.sample.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", self.sample.join(", "))
        };
        format!(
            "{what}: {} of {} destination nodes ({}) would be deleted, over the limits of {} nodes and {}% (source has {} nodes){sample}",
            self.deletes,
            self.destination_nodes,
            self.percent_text(),
            self.max_deletes,
            self.max_delete_percent,
            self.source_nodes,
        )
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl DeletionGuard {
    /// No guard at all.
    pub fn off() -> DeletionGuard {
        DeletionGuard {
            max_deletes: 0,
            max_delete_percent: 0.0,
            ..DeletionGuard::default()
        }
    }

    pub fn is_off(&self) -> bool {
        self.max_deletes == 0 && self.max_delete_percent <= 0.0 && !self.hold_all
    }

    /// Whether `deletes` of a destination of `destination_nodes` nodes must be held.
    pub fn trips(&self, deletes: u64, destination_nodes: u64) -> bool {
        if deletes == 0 || self.allowance.covers(deletes) {
            return false;
        }
        if self.hold_all {
            return true;
        }
        if self.is_off() {
            return false;
        }
        let over_count = self.max_deletes == 0 || deletes > self.max_deletes;
        let over_share = self.max_delete_percent <= 0.0
            || percent(deletes, destination_nodes) > self.max_delete_percent;
        over_count && over_share
    }

    /// Before any write: is the source empty or near-empty against a destination the guard
    /// protects? `Some` holds the whole pass.
    pub fn precheck(&self, source_nodes: u64, destination_nodes: u64) -> Option<Held> {
        let drop = destination_nodes.saturating_sub(source_nodes);
        let near_empty = source_nodes <= 1
            || (source_nodes as f64) <= destination_nodes as f64 * NEAR_EMPTY_FRACTION;
        (near_empty && self.trips(drop, destination_nodes)).then(|| Held {
            reason: HoldReason::SourceEmpty,
            deletes: drop,
            destination_nodes,
            source_nodes,
            max_deletes: self.max_deletes,
            max_delete_percent: self.max_delete_percent,
            sample: Vec::new(),
        })
    }

    /// The hold of a pass that found `deletes` (with `sample`), if the guard trips.
    pub fn judge(
        &self,
        deletes: u64,
        destination_nodes: u64,
        source_nodes: u64,
        sample: &[String],
    ) -> Option<Held> {
        self.trips(deletes, destination_nodes).then(|| Held {
            reason: HoldReason::MassDeletion,
            deletes,
            destination_nodes,
            source_nodes,
            max_deletes: self.max_deletes,
            max_delete_percent: self.max_delete_percent,
            sample: sample.iter().take(SAMPLE_PATHS).cloned().collect(),
        })
    }
}

/// The live stream's guard: deletes wait `delay` before they are applied, and the net
/// number of deletes (deletes minus creates) over a sliding `window` is judged, so a
/// `deleteall` that removes nodes one by one over a few seconds counts as one burst. Queue
/// churn (a create for every delete) never trips it.
#[derive(Debug)]
pub struct LiveGate {
    inner: Mutex<GateState>,
    /// Wakes the stream when a person releases the hold.
    pub released: tokio::sync::Notify,
}

#[derive(Debug)]
struct GateState {
    guard: DeletionGuard,
    window: Duration,
    delay: Duration,
    /// Deletes waiting: the source path and when it was seen gone.
    queue: VecDeque<(String, Instant)>,
    /// Bound of the queue; past it deletes are only counted, and the release runs a full sync.
    max_queue: usize,
    overflowed: u64,
    /// Applied deletes and creates, per whole second of the window.
    buckets: VecDeque<(Instant, u64, u64)>,
    destination_nodes: u64,
    held: Option<Held>,
    /// A release that came while nothing was held applies to the next burst of at most that
    /// many deletes; a release of an overflowed queue, to the full sync that applies it.
    allowance: Allowance,
    /// Released deletes, for the stream to apply at once.
    ready: Vec<String>,
    /// Released, but some deletes were only counted: a full sync applies them.
    resync: bool,
    /// The hold came from a full sync, whose deletes are not in the queue.
    held_by_full_sync: bool,
}

/// What the stream does with its queued deletes now.
#[derive(Debug, Default, PartialEq)]
pub struct Due {
    /// Source paths to delete on the destination now (each re-checked at the source first).
    pub paths: Vec<String>,
    /// The hold was released but some deletes were only counted: run a full sync with this
    /// allowance.
    pub full_sync: Option<Allowance>,
}

impl LiveGate {
    pub fn new(guard: DeletionGuard, window: Duration, delay: Duration, max_queue: usize) -> Self {
        LiveGate {
            inner: Mutex::new(GateState {
                guard,
                window,
                delay,
                queue: VecDeque::new(),
                max_queue,
                overflowed: 0,
                buckets: VecDeque::new(),
                destination_nodes: 0,
                held: None,
                allowance: guard.allowance,
                ready: Vec::new(),
                resync: false,
                held_by_full_sync: false,
            }),
            released: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay every delete waits; zero when the guard is off.
    pub fn delay(&self) -> Duration {
        let s = self.lock();
        if s.guard.is_off() {
            Duration::ZERO
        } else {
            s.delay
        }
    }

    /// A full sync left the destination with this many nodes under the root.
    pub fn set_destination_nodes(&self, n: u64) {
        self.lock().destination_nodes = n;
    }

    /// A node was created on the destination.
    pub fn created(&self, now: Instant, n: u64) {
        let mut s = self.lock();
        s.destination_nodes += n;
        bucket(&mut s, now).2 += n;
    }

    /// The source node of `path` is gone: queue its delete.
    pub fn offer(&self, path: &str, now: Instant) {
        let mut s = self.lock();
        if s.queue.iter().any(|(p, _)| p == path) {
            return;
        }
        if s.queue.len() >= s.max_queue {
            s.overflowed += 1;
        } else {
            s.queue.push_back((path.to_string(), now));
        }
        if let Some(h) = &mut s.held {
            h.deletes += 1;
            if h.sample.len() < SAMPLE_PATHS {
                h.sample.push(path.to_string());
            }
        }
    }

    /// Deletes held now, if any.
    pub fn held(&self) -> Option<Held> {
        self.lock().held.clone()
    }

    /// Deletes queued (held or waiting their delay).
    pub fn queued(&self) -> usize {
        let s = self.lock();
        s.queue.len() + s.overflowed as usize
    }

    /// When the oldest queued delete is due, if one waits and nothing is held.
    pub fn next_due(&self) -> Option<Instant> {
        let s = self.lock();
        if !s.ready.is_empty() || s.resync {
            return Some(Instant::now());
        }
        if s.held.is_some() {
            return None;
        }
        s.queue.front().map(|(_, t)| *t + s.delay)
    }

    /// Takes the deletes that may be applied at `now`, or starts holding them all.
    pub fn take_due(&self, now: Instant) -> Due {
        let mut s = self.lock();
        if !s.ready.is_empty() || s.resync {
            let resync = std::mem::take(&mut s.resync);
            return Due {
                paths: std::mem::take(&mut s.ready),
                full_sync: resync.then_some(s.allowance),
            };
        }
        if s.held.is_some() {
            return Due::default();
        }
        let window = s.window;
        s.buckets
            .retain(|(t, _, _)| now.saturating_duration_since(*t) < window);
        let deleted: u64 = s.buckets.iter().map(|b| b.1).sum();
        let created: u64 = s.buckets.iter().map(|b| b.2).sum();
        let queued = s.queue.len() as u64 + s.overflowed;
        let net = (deleted + queued).saturating_sub(created);
        let guard = DeletionGuard {
            allowance: s.allowance,
            ..s.guard
        };
        if guard.trips(net, s.destination_nodes.max(1)) {
            let sample = s
                .queue
                .iter()
                .take(SAMPLE_PATHS)
                .map(|(p, _)| p.clone())
                .collect();
            s.held = Some(Held {
                reason: HoldReason::MassDeletion,
                deletes: queued,
                destination_nodes: s.destination_nodes,
                source_nodes: s.destination_nodes.saturating_sub(net),
                max_deletes: s.guard.max_deletes,
                max_delete_percent: s.guard.max_delete_percent,
                sample,
            });
            return Due::default();
        }
        let delay = if s.guard.is_off() {
            Duration::ZERO
        } else {
            s.delay
        };
        let mut paths = Vec::new();
        while s
            .queue
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= delay)
        {
            if let Some((p, _)) = s.queue.pop_front() {
                paths.push(p);
            }
        }
        if !paths.is_empty() {
            // An allowance covers one burst.
            s.allowance = Allowance::None;
        }
        Due {
            paths,
            full_sync: None,
        }
    }

    /// The deletes were applied.
    pub fn deleted(&self, now: Instant, n: u64) {
        let mut s = self.lock();
        s.destination_nodes = s.destination_nodes.saturating_sub(n);
        bucket(&mut s, now).1 += n;
    }

    /// A person released the hold: every queued delete becomes due at once (the stream is
    /// woken), and a full sync applies those that were only counted. `Err` with the held
    /// count when the release covers fewer deletes than are held now (they grew since the
    /// count was shown).
    pub fn release(&self, allowance: Allowance) -> Result<(), u64> {
        let mut s = self.lock();
        let Some(held) = s.held.clone() else {
            s.allowance = allowance;
            return Ok(());
        };
        if !allowance.covers(held.deletes) {
            return Err(held.deletes);
        }
        s.held = None;
        s.buckets.clear();
        let released: Vec<String> = s.queue.drain(..).map(|(p, _)| p).collect();
        s.ready.extend(released);
        s.resync = std::mem::take(&mut s.overflowed) > 0 || s.held_by_full_sync;
        // Kept for the full sync that applies the counted ones; consumed by it.
        s.allowance = if s.resync { allowance } else { Allowance::None };
        drop(s);
        self.released.notify_one();
        Ok(())
    }

    /// A full sync after a gap replaces what the queue knew: it re-reads both trees and
    /// applies (or holds) the deletes itself.
    pub fn reset_queue(&self) {
        let mut s = self.lock();
        s.queue.clear();
        s.overflowed = 0;
    }

    /// A full sync finished, holding `held` (the stream then holds too, until released) or
    /// nothing; it leaves `destination_nodes` under the root and consumed any allowance.
    pub fn after_full_sync(&self, held: Option<Held>, destination_nodes: u64) {
        let mut s = self.lock();
        s.destination_nodes = destination_nodes;
        if s.resync || !s.ready.is_empty() {
            // Released while this sync ran (it still held): the next full sync, with the
            // release's allowance, applies them.
            return;
        }
        s.held_by_full_sync = held.is_some();
        s.held = held;
        s.allowance = Allowance::None;
        s.destination_nodes = destination_nodes;
        s.buckets.clear();
    }

    /// The guard for full syncs run by the stream: while holding, every delete is held.
    pub fn full_sync_guard(&self) -> DeletionGuard {
        let s = self.lock();
        DeletionGuard {
            hold_all: s.held.is_some(),
            allowance: s.allowance,
            ..s.guard
        }
    }
}

/// The window is counted in buckets of this: its sum costs a few dozen additions, and a
/// second is as fine as a burst is judged.
const BUCKET: Duration = Duration::from_secs(1);

fn bucket(s: &mut GateState, now: Instant) -> &mut (Instant, u64, u64) {
    let fresh = s
        .buckets
        .back()
        .is_none_or(|(t, _, _)| now.saturating_duration_since(*t) >= BUCKET);
    if fresh {
        s.buckets.push_back((now, 0, 0));
    }
    let last = s.buckets.len() - 1;
    &mut s.buckets[last]
}

/// A shared gate, for the stream and whoever releases it.
pub type SharedGate = Arc<LiveGate>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_limits_must_be_exceeded() {
        let g = DeletionGuard::default();
        assert!(!g.trips(100, 200), "at the count limit");
        assert!(!g.trips(150, 2000), "over the count, under 10%");
        assert!(g.trips(201, 2000));
        assert!(!g.trips(0, 0));
        assert!(g.trips(2000, 2001));
    }

    #[test]
    fn zero_turns_a_limit_off_and_both_zero_the_guard() {
        let only_share = DeletionGuard {
            max_deletes: 0,
            ..DeletionGuard::default()
        };
        assert!(only_share.trips(5, 20));
        let only_count = DeletionGuard {
            max_delete_percent: 0.0,
            ..DeletionGuard::default()
        };
        assert!(only_count.trips(101, 1_000_000));
        assert!(!DeletionGuard::off().trips(1_000_000, 1_000_000));
    }

    #[test]
    fn an_allowance_covers_up_to_its_count() {
        let g = DeletionGuard {
            allowance: Allowance::UpTo(2000),
            ..DeletionGuard::default()
        };
        assert!(!g.trips(2000, 2001));
        assert!(g.trips(2001, 2002), "more than was released is held again");
        let all = DeletionGuard {
            allowance: Allowance::Unlimited,
            ..DeletionGuard::default()
        };
        assert!(!all.trips(u64::MAX, 1));
        let hold_all = DeletionGuard {
            hold_all: true,
            ..DeletionGuard::off()
        };
        assert!(hold_all.trips(1, 1_000_000));
    }

    #[test]
    fn an_empty_source_is_held_before_any_write() {
        let g = DeletionGuard::default();
        let h = g.precheck(1, 2001).expect("held");
        assert_eq!(h.reason, HoldReason::SourceEmpty);
        assert_eq!(h.deletes, 2000);
        assert!(h.describe().contains("2000 of 2001"), "{}", h.describe());
        assert!(g.precheck(1500, 2001).is_none(), "not near-empty");
        assert!(
            g.precheck(1, 50).is_none(),
            "a small tree is under the count limit"
        );
        assert!(DeletionGuard::off().precheck(1, 2001).is_none());
    }

    fn gate() -> LiveGate {
        let g = LiveGate::new(
            DeletionGuard::default(),
            Duration::from_secs(60),
            Duration::from_secs(2),
            1000,
        );
        g.set_destination_nodes(2001);
        g
    }

    #[test]
    fn a_burst_of_deletes_is_held_before_any_is_applied() {
        let g = gate();
        let t0 = Instant::now();
        for i in 0..300 {
            g.offer(&format!("/app/n{i}"), t0);
        }
        assert_eq!(g.take_due(t0), Due::default(), "waiting their delay");
        let due = g.take_due(t0 + Duration::from_secs(3));
        assert!(due.paths.is_empty());
        let held = g.held().expect("held");
        assert_eq!(held.deletes, 300);
        assert_eq!(held.sample.len(), SAMPLE_PATHS);
        // More arrive while held: counted, still held.
        g.offer("/app/late", t0 + Duration::from_secs(4));
        assert_eq!(g.held().map(|h| h.deletes), Some(301));
        assert_eq!(g.release(Allowance::UpTo(300)), Err(301));
        g.release(Allowance::UpTo(301)).expect("released");
        assert!(g.held().is_none());
        assert!(g.next_due().is_some());
        let due = g.take_due(t0 + Duration::from_secs(5));
        assert_eq!(due.paths.len(), 301);
        assert_eq!(due.full_sync, None);
    }

    #[test]
    fn a_few_deletes_pass_after_their_delay_and_churn_never_trips() {
        let g = gate();
        let t0 = Instant::now();
        g.offer("/app/a", t0);
        g.offer("/app/a", t0);
        assert!(g.take_due(t0 + Duration::from_secs(1)).paths.is_empty());
        let due = g.take_due(t0 + Duration::from_secs(2));
        assert_eq!(due.paths, vec!["/app/a".to_string()]);
        g.deleted(t0 + Duration::from_secs(2), 1);
        // A queue: one create for every delete, 1000 of each within the window.
        let mut t = t0 + Duration::from_secs(3);
        for i in 0..1000 {
            g.created(t, 1);
            g.offer(&format!("/app/q{i}"), t);
            let due = g.take_due(t + Duration::from_secs(2));
            g.deleted(t + Duration::from_secs(2), due.paths.len() as u64);
            t += Duration::from_millis(20);
        }
        assert!(g.held().is_none());
    }

    #[test]
    fn an_overflowed_queue_is_released_through_a_full_sync() {
        let g = LiveGate::new(
            DeletionGuard::default(),
            Duration::from_secs(60),
            Duration::ZERO,
            10,
        );
        g.set_destination_nodes(1000);
        let t0 = Instant::now();
        for i in 0..500 {
            g.offer(&format!("/n{i}"), t0);
        }
        assert!(g.take_due(t0).paths.is_empty());
        assert_eq!(g.queued(), 500);
        g.release(Allowance::Unlimited).expect("released");
        let due = g.take_due(t0);
        assert_eq!(due.paths.len(), 10);
        assert_eq!(due.full_sync, Some(Allowance::Unlimited));
        assert_eq!(
            g.full_sync_guard().allowance,
            Allowance::Unlimited,
            "the full sync applies the rest"
        );
        g.after_full_sync(None, 500);
        assert_eq!(g.full_sync_guard().allowance, Allowance::None);
    }

    #[test]
    fn a_release_during_a_full_sync_is_kept_for_the_next_one() {
        let g = gate();
        let held = || Held {
            reason: HoldReason::SourceEmpty,
            deletes: 2000,
            destination_nodes: 2001,
            source_nodes: 1,
            max_deletes: 100,
            max_delete_percent: 10.0,
            sample: vec![],
        };
        g.after_full_sync(Some(held()), 2001);
        // A full sync starts (holding everything), and the person releases meanwhile.
        assert!(g.full_sync_guard().hold_all);
        g.release(Allowance::UpTo(2000)).expect("released");
        g.after_full_sync(Some(held()), 2001);
        assert!(
            g.held().is_none(),
            "the release must survive the sync that was running"
        );
        let due = g.take_due(Instant::now());
        assert_eq!(due.full_sync, Some(Allowance::UpTo(2000)));
        let guard = g.full_sync_guard();
        assert!(!guard.hold_all);
        assert!(!guard.trips(2000, 2001));
    }
}
