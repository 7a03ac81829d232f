//! What a stream tells the world: the [`Observer`] trait, a [`Tee`] of several, and [`Stats`],
//! the observer that keeps counts and lag samples.

use std::sync::Arc;
use std::time::Duration;

use super::{DestinationDiff, LiveState};
use crate::engine::oversized::TooBig;
use crate::engine::{Held, SyncSummary};
use verifier::Side;

/// Receives what the stream does. Every method has a no-op default.
pub trait Observer: Send + Sync {
    fn state(&self, _state: LiveState, _why: &str) {}
    /// A full sync finished.
    fn full_sync(&self, _summary: &SyncSummary) {}
    /// One path applied; `lag` is apply time minus the source node's mtime (or, for a delete,
    /// minus when its event arrived).
    fn applied(&self, _path: &str, _lag: Duration) {}
    /// Nothing pending after a batch (true) or changes waiting (false).
    fn caught_up(&self, _caught_up: bool) {}
    /// A side ("source" or "destination") answered (true) or was lost (false), and why.
    fn reachable(&self, _side: Side, _reachable: bool, _why: &str) {}
    /// A watch event for a node arrived.
    fn watch_event(&self) {}
    /// A session to `side` was opened again after a gap (a new epoch, or a replaced
    /// destination session).
    fn reconnected(&self, _side: Side) {}
    /// The deletion guard started or stopped holding deletes, or holds more of them now.
    fn deletions_held(&self, _held: Option<&Held>) {}
    /// What the destination held that the full sync starting now changes or deletes
    /// (`LiveOptions::compare_before_sync`).
    fn destination_diff(&self, _diff: &DestinationDiff) {}
    /// A claim was refused (`writer_conflict`, `replication_loop`, `same_ensemble`): the
    /// stream waits and tries again, or stops.
    fn claim_refused(&self, _reason: &'static str) {}
    /// The nodes left out because their write would be longer than the destination takes
    /// (`limit`: that length, when a probe found it below the configured jute.maxbuffer);
    /// called whenever either changes.
    fn too_big(&self, _nodes: &[TooBig], _limit: Option<usize>) {}
    /// The stream failed `failures` times in a row and waits `wait` before it tries again (a
    /// new epoch, or a batch the destination refused); the next state says why.
    fn backoff(&self, _failures: u32, _wait: Duration) {}
    /// Delayed apply: changes recorded and waiting, the oldest's age, and the delay the byte
    /// bound cut it to (None: the full delay holds).
    fn delay_backlog(
        &self,
        _waiting: usize,
        _oldest: Option<Duration>,
        _shortened: Option<Duration>,
    ) {
    }
}

/// Hands every observation to each of several observers (e.g. stats for a status line and
/// metrics for Prometheus).
pub struct Tee(pub Vec<Arc<dyn Observer>>);

impl Observer for Tee {
    fn state(&self, state: LiveState, why: &str) {
        self.0.iter().for_each(|o| o.state(state, why));
    }
    fn full_sync(&self, summary: &SyncSummary) {
        self.0.iter().for_each(|o| o.full_sync(summary));
    }
    fn applied(&self, path: &str, lag: Duration) {
        self.0.iter().for_each(|o| o.applied(path, lag));
    }
    fn caught_up(&self, caught_up: bool) {
        self.0.iter().for_each(|o| o.caught_up(caught_up));
    }
    fn reachable(&self, side: Side, reachable: bool, why: &str) {
        self.0
            .iter()
            .for_each(|o| o.reachable(side, reachable, why));
    }
    fn watch_event(&self) {
        self.0.iter().for_each(|o| o.watch_event());
    }
    fn reconnected(&self, side: Side) {
        self.0.iter().for_each(|o| o.reconnected(side));
    }
    fn deletions_held(&self, held: Option<&Held>) {
        self.0.iter().for_each(|o| o.deletions_held(held));
    }
    fn destination_diff(&self, diff: &DestinationDiff) {
        self.0.iter().for_each(|o| o.destination_diff(diff));
    }
    fn claim_refused(&self, reason: &'static str) {
        self.0.iter().for_each(|o| o.claim_refused(reason));
    }
    fn backoff(&self, failures: u32, wait: Duration) {
        self.0.iter().for_each(|o| o.backoff(failures, wait));
    }
    fn too_big(&self, nodes: &[TooBig], limit: Option<usize>) {
        self.0.iter().for_each(|o| o.too_big(nodes, limit));
    }
    fn delay_backlog(&self, waiting: usize, oldest: Option<Duration>, shortened: Option<Duration>) {
        self.0
            .iter()
            .for_each(|o| o.delay_backlog(waiting, oldest, shortened));
    }
}

/// An observer that keeps counts and lag samples for a reader to take: the CLI's status lines,
/// benchmarks and tests.
#[derive(Default)]
pub struct Stats {
    inner: std::sync::Mutex<StatsInner>,
}

#[derive(Clone, Debug, Default)]
pub struct StatsInner {
    pub state: Option<LiveState>,
    pub why: String,
    pub applied_total: u64,
    pub full_syncs: u64,
    pub caught_up: bool,
    /// Lags since the last [`Stats::take_lags`].
    pub lags: Vec<Duration>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the counters (lags included).
    pub fn snapshot(&self) -> StatsInner {
        self.lock().clone()
    }

    /// The lag samples gathered since the last call.
    pub fn take_lags(&self) -> Vec<Duration> {
        std::mem::take(&mut self.lock().lags)
    }
}

impl Observer for Stats {
    fn state(&self, state: LiveState, why: &str) {
        let mut s = self.lock();
        s.state = Some(state);
        s.why = why.to_string();
    }
    fn full_sync(&self, _summary: &SyncSummary) {
        self.lock().full_syncs += 1;
    }
    fn applied(&self, _path: &str, lag: Duration) {
        let mut s = self.lock();
        s.applied_total += 1;
        // Bounded: a reader that never takes samples does not make memory grow.
        if s.lags.len() < 1_000_000 {
            s.lags.push(lag);
        }
    }
    fn caught_up(&self, caught_up: bool) {
        self.lock().caught_up = caught_up;
    }
}

/// The `q` quantile (0..=1) of `samples`, sorted in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    samples.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_lag_samples() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(Duration::from_millis(51)));
        assert_eq!(quantile(&mut v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
