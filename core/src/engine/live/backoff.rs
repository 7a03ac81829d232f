//! How long the stream waits before it tries again: doubling over the failures in a row, from
//! a second to a minute, and starting over once an epoch has streamed for a healthy period.
//!
//! A failure is an epoch that ended in an error (a side unreachable, the tree claimed by another
//! writer) or one that ended in a restart before it was healthy (a source connection that keeps
//! dropping, a claim lost again and again): each restart re-walks both trees, so restarting at
//! once every time is a hot loop. A restart after a healthy epoch goes at once, so a single
//! blip costs no lag.

use std::time::Duration;

/// The wait after the first failure.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest wait, however many failures.
pub const CAP: Duration = Duration::from_secs(60);
/// An epoch that streamed this long was healthy: the count of failures starts over.
pub const HEALTHY: Duration = Duration::from_secs(60);

/// Failures in a row of one stream.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Counts one more failure; returns how many in a row and the wait before the next try.
    pub(super) fn failed(&mut self) -> (u32, Duration) {
        self.failures = self.failures.saturating_add(1);
        (self.failures, wait(self.failures, FIRST, CAP))
    }

    /// The epoch that just ended streamed for `streamed` (None: it never got past its full
    /// sync). A healthy one clears the count; returns whether it was.
    pub(super) fn ended(&mut self, streamed: Option<Duration>) -> bool {
        let healthy = streamed.is_some_and(|d| d >= HEALTHY);
        if healthy {
            self.failures = 0;
        }
        healthy
    }
}

/// The wait after `failures` in a row: `first`, doubled for each one after, at most `cap`.
pub(super) fn wait(failures: u32, first: Duration, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    first.saturating_mul(1u32 << doublings).min(cap)
}

/// A wait for people: 200ms, 4s, 1m, 1.5s.
pub fn human(d: Duration) -> String {
    match d.as_millis() {
        ms @ 0..=999 => format!("{ms}ms"),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{:.1}s", d.as_secs_f64()),
    }
}

/// What the stream says while it waits: "retrying in 4s after 3 failures: <why>".
pub(super) fn retrying(failures: u32, wait: Duration, why: &str) -> String {
    let s = if failures == 1 { "" } else { "s" };
    format!(
        "retrying in {} after {failures} failure{s}: {why}",
        human(wait)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_a_second_to_a_minute_and_a_healthy_epoch_starts_over() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.failed().1.as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        // Short epochs (or none that streamed) keep the count.
        assert!(!b.ended(None));
        assert!(!b.ended(Some(Duration::from_secs(59))));
        assert_eq!(b.failed(), (9, CAP));
        assert!(b.ended(Some(HEALTHY)));
        assert_eq!(b.failed(), (1, FIRST));
        assert_eq!(wait(u32::MAX, FIRST, CAP), CAP);
        assert_eq!(
            wait(3, Duration::from_millis(200), Duration::from_secs(5)),
            Duration::from_millis(800)
        );
    }

    #[test]
    fn the_wait_reads_like_people_write_it() {
        assert_eq!(
            retrying(3, Duration::from_secs(4), "destination busy"),
            "retrying in 4s after 3 failures: destination busy"
        );
        assert_eq!(
            retrying(1, Duration::from_millis(200), "x"),
            "retrying in 200ms after 1 failure: x"
        );
        assert_eq!(human(Duration::from_secs(60)), "1m");
        assert_eq!(human(Duration::from_millis(1600)), "1.6s");
    }
}
