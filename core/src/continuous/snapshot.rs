//! What a driver reports of a continuous sync: the [`Snapshot`] of one instant, and the lag
//! and heartbeat judgements made from it.

use std::time::Duration;

use jiff::Timestamp;

use crate::engine::live::{DestinationDiff, LiveState};
use crate::engine::oversized::TooBig;
use crate::engine::Held;

/// Whether a side answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Before the first connection attempt.
    #[default]
    Unknown,
    Connected,
    /// Why, e.g. the connect error.
    Unreachable(String),
}

impl Reach {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Reach::Unreachable(_))
    }
}

/// What one lag-aware verification concluded.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifySummary {
    pub in_sync: bool,
    /// Confirmed divergent paths (relative to the roots), at most [`MAX_LISTED`].
    pub confirmed: Vec<String>,
    pub confirmed_count: u64,
    pub undecided: u64,
    /// Differences the full verification saw, including those cleared as lag.
    pub suspected: u64,
    pub source_nodes: u64,
    pub destination_nodes: u64,
    pub source_root_hash: String,
    pub destination_root_hash: String,
    pub duration_seconds: f64,
    /// Highest source mzxid the verification read: with `in_sync`, every source change up to
    /// it is proven on the copy.
    pub source_max_mzxid: i64,
}

/// Heartbeats missed before the heartbeat counts as late: one is a slow write, three a stall.
pub const HEARTBEAT_MISSES: u32 = 3;

/// Paths listed in a status.
pub const MAX_LISTED: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct VerifyOutcome {
    pub at: Timestamp,
    pub result: Result<VerifySummary, String>,
}

/// The stream waits before it tries again (see [`crate::engine::live::backoff`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Failures in a row.
    pub failures: u32,
    /// How long it waits after the last.
    pub wait: Duration,
    /// When it tries again.
    pub at: Timestamp,
}

/// Everything a driver needs to report, at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub started: Timestamp,
    pub state: Option<LiveState>,
    pub why: String,
    /// Nothing pending after the last batch.
    pub caught_up: bool,
    /// The last instant the stream was known caught up.
    pub caught_up_at: Option<Timestamp>,
    /// Lag of the last applied change.
    pub last_applied_lag: Option<Duration>,
    pub applied_total: u64,
    /// Source time (mtime) of the newest change applied, as far as the stream knows it.
    pub last_change_applied: Option<Timestamp>,
    /// The last instant the source answered the stream (a session opened, an event or a read).
    pub source_seen: Option<Timestamp>,
    pub full_syncs: u64,
    pub last_full_sync: Option<Timestamp>,
    pub source: Reach,
    pub destination: Reach,
    pub last_verify: Option<VerifyOutcome>,
    /// The last verification that found both trees equal.
    pub last_good_sync: Option<Timestamp>,
    /// The highest source zxid that verification read: every source change up to it is
    /// proven on the copy (kept when later verifications fail).
    pub last_good_zxid: Option<i64>,
    /// What the destination held that the last compared full sync changed or deletes, and
    /// when it was compared (`LiveOptions::compare_before_sync`).
    pub destination_diff: Option<(Timestamp, DestinationDiff)>,
    pub repaired_total: u64,
    pub last_repair_error: Option<String>,
    pub heartbeat_interval: Option<Duration>,
    /// When the last heartbeat reached the destination.
    pub heartbeat_seen: Option<Timestamp>,
    /// Why the heartbeat cannot be written, while it cannot.
    pub heartbeat_error: Option<String>,
    /// An error no retry can fix: the stream stopped.
    pub failed: Option<(Timestamp, String)>,
    /// While the stream waits to try again after failures (its state is Retrying).
    pub retry: Option<Retry>,
    /// Source nodes left out because their write would be longer than the destination takes,
    /// at most [`MAX_LISTED`] (the rest counted in `oversized_count`).
    pub oversized: Vec<TooBig>,
    pub oversized_count: usize,
    /// The longest request the destination takes, when a probe found it below the configured
    /// jute.maxbuffer.
    pub oversized_limit: Option<usize>,
    /// Deletes the deletion guard holds, and since when.
    pub held: Option<(Timestamp, Held)>,
    /// Delayed apply: the configured delay.
    pub apply_delay: Option<Duration>,
    /// Changes recorded and waiting their delay, and when the oldest of them was recorded.
    pub delayed: usize,
    pub delayed_since: Option<Timestamp>,
    /// The delay the record bound cut changes to, when it did.
    pub delay_shortened_to: Option<Duration>,
}

impl Snapshot {
    /// Nothing happened yet.
    pub fn new(started: Timestamp, heartbeat_interval: Option<Duration>) -> Snapshot {
        Snapshot {
            started,
            state: None,
            why: String::new(),
            caught_up: false,
            caught_up_at: None,
            last_applied_lag: None,
            applied_total: 0,
            last_change_applied: None,
            source_seen: None,
            full_syncs: 0,
            last_full_sync: None,
            source: Reach::default(),
            destination: Reach::default(),
            last_verify: None,
            last_good_sync: None,
            last_good_zxid: None,
            destination_diff: None,
            repaired_total: 0,
            last_repair_error: None,
            heartbeat_interval,
            heartbeat_seen: None,
            heartbeat_error: None,
            failed: None,
            retry: None,
            oversized: Vec::new(),
            oversized_count: 0,
            oversized_limit: None,
            held: None,
            apply_delay: None,
            delayed: 0,
            delayed_since: None,
            delay_shortened_to: None,
        }
    }

    /// The replication lag now. Streaming and caught up: zero, so the lag does not grow while
    /// the source is idle. Streaming with changes pending: the lag of the last applied change.
    /// Not streaming (a re-walk, a retry, an unreachable side): the time since the stream was
    /// last known caught up, a safe upper bound that grows until it is again. With the
    /// heartbeat on, also the time the next heartbeat is overdue, which shows a stalled stream
    /// that no event would reveal.
    pub fn lag(&self, now: Timestamp) -> Duration {
        let since = |t: Timestamp| -> Duration {
            now.duration_since(t).try_into().unwrap_or(Duration::ZERO)
        };
        let cut_off = self.source.is_unreachable() || self.destination.is_unreachable();
        let stream = match self.state {
            _ if self.failed.is_some() || cut_off => {
                since(self.caught_up_at.unwrap_or(self.started))
            }
            Some(LiveState::Streaming) if self.caught_up => Duration::ZERO,
            Some(LiveState::Streaming) => self.last_applied_lag.unwrap_or_default(),
            _ => since(self.caught_up_at.unwrap_or(self.started)),
        };
        // A delayed stream is as far behind as the oldest change still waiting.
        let delayed = self.delayed_since.map_or(Duration::ZERO, since);
        let heartbeat = match self.heartbeat_interval {
            Some(every) => {
                let seen = self.heartbeat_seen.unwrap_or(self.started);
                since(seen).saturating_sub(every)
            }
            None => Duration::ZERO,
        };
        stream.max(heartbeat).max(delayed)
    }

    /// The heartbeat is on and has not reached the destination for [`HEARTBEAT_MISSES`]
    /// intervals.
    pub fn heartbeat_late(&self, now: Timestamp) -> bool {
        self.heartbeat_interval.is_some_and(|every| {
            let seen = self.heartbeat_seen.unwrap_or(self.started);
            now.duration_since(seen)
                .try_into()
                .unwrap_or(Duration::ZERO)
                > every * HEARTBEAT_MISSES
        })
    }

    pub fn streaming(&self) -> bool {
        self.failed.is_none() && self.state == Some(LiveState::Streaming)
    }
}
