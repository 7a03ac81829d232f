//! A [`Stream`] run in this process: what the CLI and standalone mode switch over.

use std::sync::Mutex;

use crate::continuous::{Continuous, ContinuousOptions, Snapshot};
use crate::engine::live::LiveOptions;
use crate::engine::SyncOptions;

use super::Stream;

/// A continuous sync owned here, and the reverse one once started.
pub struct Local {
    opts: ContinuousOptions,
    running: Mutex<Option<Continuous>>,
    reverse: Mutex<Option<Continuous>>,
    reverse_holder: String,
    /// The stream's ACL caches: the reverse stream starts from them.
    cache: verifier::VerifyCache,
}

impl Local {
    /// Takes over a running stream started from `opts`.
    pub fn new(opts: ContinuousOptions, running: Continuous, reverse_holder: &str) -> Local {
        Local {
            opts,
            cache: running.verify_cache(),
            running: Mutex::new(Some(running)),
            reverse: Mutex::new(None),
            reverse_holder: reverse_holder.to_string(),
        }
    }

    /// The reverse stream, once started: the caller keeps it running (or drops it).
    pub fn take_reverse(&self) -> Option<Continuous> {
        lock(&self.reverse).take()
    }

    /// Whether the forward stream runs (not stopped, or resumed).
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// The forward stream, if it still runs (a failed switchover resumed it).
    pub fn take_running(&self) -> Option<Continuous> {
        lock(&self.running).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stream for Local {
    fn snapshot(&self) -> Option<Snapshot> {
        lock(&self.running).as_ref().map(Continuous::snapshot)
    }

    fn verify_cache(&self) -> Option<verifier::VerifyCache> {
        lock(&self.running).as_ref().map(Continuous::verify_cache)
    }

    async fn stop(&self) -> Result<(), String> {
        let Some(c) = lock(&self.running).take() else {
            return Ok(());
        };
        // The stream withdraws its writer claim as it stops.
        c.stop().await.map_err(|e| e.to_string())
    }

    async fn resume(&self) -> Result<(), String> {
        let c = Continuous::start(self.opts.clone(), Vec::new(), None);
        *lock(&self.running) = Some(c);
        Ok(())
    }

    async fn start_reverse(&self, keep_fenced: Option<String>) -> Result<String, String> {
        let mut o = reversed(&self.opts, &self.reverse_holder);
        // Fenced and then proven equal, the old primary cannot hold writes the new one
        // lacks: nothing to compare before the first full sync.
        o.live.compare_before_sync = keep_fenced.is_none();
        o.live.sync.fence_destination = keep_fenced;
        // What the switchover read (and the fence wrote) of both sides is read again only
        // where it changed: the reverse stream's first full sync is mostly multi-reads.
        o.live.sync.acl_cache = Some(self.cache.reversed());
        let name = format!(
            "{} {} -> {} {}",
            o.live.sync.source.servers,
            o.live.sync.source_root,
            o.live.sync.destination.servers,
            o.live.sync.destination_root
        );
        *lock(&self.reverse) = Some(Continuous::start(o, Vec::new(), None));
        Ok(name)
    }
}

/// The stream the other way: the destination becomes the source. The same checks, guard,
/// verification and re-walks; no delayed apply and no heartbeat (its znode is the old
/// primary's).
pub fn reversed(o: &ContinuousOptions, holder: &str) -> ContinuousOptions {
    let s = &o.live.sync;
    let sync = SyncOptions {
        source: s.destination.clone(),
        destination: s.source.clone(),
        source_root: s.destination_root.clone(),
        destination_root: s.source_root.clone(),
        holder: holder.to_string(),
        fence_destination: None,
        ..s.clone()
    };
    let mut live = LiveOptions::new(sync);
    live.batch_window = o.live.batch_window;
    live.max_pending = o.live.max_pending;
    live.resync_interval = o.live.resync_interval;
    // The old primary may hold writes nobody else has: reported before they are lost.
    live.compare_before_sync = true;
    ContinuousOptions {
        live,
        verify_interval: o.verify_interval,
        repair: o.repair,
        max_lag: o.max_lag,
        heartbeat: None,
    }
}
