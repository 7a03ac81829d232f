//! Live counters of a copy, and the stderr progress line for long copies.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters shared by the walker, the writer and the reporter.
#[derive(Debug, Default)]
pub struct Progress {
    /// Source nodes read.
    pub nodes_read: AtomicU64,
    /// Destination nodes read.
    pub destination_read: AtomicU64,
    pub ops_planned: AtomicU64,
    pub ops_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub batches: AtomicU64,
    /// Nodes under the source root (from getAllChildrenNumber), 0 when unknown.
    pub source_total: AtomicU64,
}

impl Progress {
    /// One progress line: counts, rate and ETA.
    pub fn line(&self, elapsed: Duration) -> String {
        let read = self.nodes_read.load(Ordering::Relaxed);
        let total = self.source_total.load(Ordering::Relaxed);
        let written = self.ops_written.load(Ordering::Relaxed);
        let planned = self.ops_planned.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = read as f64 / secs;
        let eta = if total > read && rate > 0.0 {
            format!("{:.0}s", (total - read) as f64 / rate)
        } else {
            "-".to_string()
        };
        let of_total = if total > 0 {
            format!("/{total}")
        } else {
            String::new()
        };
        format!(
            "progress: read {read}{of_total} nodes ({rate:.0}/s), written {written}/{planned} ops, elapsed {secs:.0}s, eta {eta}"
        )
    }
}

/// Prints a progress line to stderr every `every` until dropped.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    pub fn start(progress: Arc<Progress>, every: Duration) -> Reporter {
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = progress.line(started.elapsed());
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        });
        Reporter { task }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_rate_and_eta() {
        let p = Progress::default();
        p.nodes_read.store(500, Ordering::Relaxed);
        p.source_total.store(1500, Ordering::Relaxed);
        let l = p.line(Duration::from_secs(1));
        assert!(l.contains("read 500/1500 nodes (500/s)"), "{l}");
        assert!(l.contains("eta 2s"), "{l}");
    }
}
