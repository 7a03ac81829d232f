//! Continuous replication against two real local ZooKeeper servers: replication lag (apply
//! time minus the source node's mtime) at a steady 1,000 writes/s, then the highest write
//! rate the stream keeps up with.
//!
//! `cargo bench --bench live` (add `-- --seconds N` to change each phase's length).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resiliency_operator::engine::live::{self, LiveOptions, Stats};
use support::*;

const KEYS: usize = 2_000;

/// Writes `rate` setData/s spread over the keys for `secs`; returns the rate achieved.
async fn write_at(clients: &[zookeeper_client::Client], root: &str, rate: u64, secs: f64) -> f64 {
    write_ops(clients, root, rate, secs, false).await
}

/// Like [`write_at`], with creates of new nodes instead when `create` is set.
async fn write_ops(
    clients: &[zookeeper_client::Client],
    root: &str,
    rate: u64,
    secs: f64,
    create: bool,
) -> f64 {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let ticks_per_s = 100u64;
    let per_tick = (rate / ticks_per_s).max(1) as usize;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / ticks_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0usize;
    let total_ticks = (secs * ticks_per_s as f64) as usize;
    let mut pending = futures::stream::FuturesUnordered::new();
    for _ in 0..total_ticks {
        tick.tick().await;
        for _ in 0..per_tick {
            let c = &clients[n % clients.len()];
            let path = format!("{root}/k{}", n % KEYS);
            let value = n.to_le_bytes();
            let done = done.clone();
            let new_path = format!("{root}/new-{}", CREATED.fetch_add(1, Ordering::Relaxed));
            pending.push(async move {
                if create {
                    c.create(
                        &new_path,
                        &value,
                        &zookeeper_client::CreateMode::Persistent
                            .with_acls(zookeeper_client::Acls::anyone_all()),
                    )
                    .await
                    .unwrap();
                } else {
                    c.set_data(&path, &value, None).await.unwrap();
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
            n += 1;
        }
        // Let completions run without waiting for all of them (keeps the pace).
        while futures::FutureExt::now_or_never(futures::StreamExt::next(&mut pending))
            .flatten()
            .is_some()
        {}
    }
    while futures::StreamExt::next(&mut pending).await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Waits until nothing is pending; returns how long that took.
async fn catch_up(stats: &Stats) -> Duration {
    let t = Instant::now();
    // The last batch may still be in flight just after the writer stops.
    tokio::time::sleep(Duration::from_millis(20)).await;
    while !stats.snapshot().caught_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if t.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    t.elapsed()
}

/// Runs one phase of writes, prints its table row, and returns the rate achieved and whether
/// the stream kept up: the lag stayed under a second and the backlog drained at once when the
/// writes stopped (lag was not growing).
async fn phase(
    stats: &Stats,
    what: &str,
    rate: u64,
    writes: impl std::future::Future<Output = f64>,
) -> (f64, bool) {
    stats.take_lags();
    let achieved = writes.await;
    let caught = catch_up(stats).await;
    let mut lags = stats.take_lags();
    let p50 = live::quantile(&mut lags, 0.5);
    let p99 = live::quantile(&mut lags, 0.99);
    let max = lags.iter().max().copied();
    let kept =
        p99.is_some_and(|p| p < Duration::from_secs(1)) && caught < Duration::from_millis(500);
    let ms_of = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    record("live", &format!("{what} {rate} w/s p50"), ms_of(p50), "ms");
    record("live", &format!("{what} {rate} w/s p99"), ms_of(p99), "ms");
    println!(
        "{:>12} {:>12.0} {:>9} {:>9} {:>9} {:>9.0}ms {:>9}",
        rate,
        achieved,
        ms(p50),
        ms(p99),
        ms(max),
        caught.as_secs_f64() * 1000.0,
        if kept { "yes" } else { "no" }
    );
    (achieved, kept)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let src = ZkServer::start(ZkOptions::default());
    let dst = ZkServer::start(ZkOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let root = "/live-bench";
        let c = client(&src).await;
        mk(&c, root, b"").await;
        for i in 0..KEYS {
            mk(&c, &format!("{root}/k{i}"), b"0").await;
        }
        let writers = vec![client(&src).await, client(&src).await];
        let o = sync_opts(&src, root, &dst, root);
        let mut lo = LiveOptions::new(o.clone());
        lo.resync_interval = None;
        let stats = Arc::new(Stats::default());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let observer: Arc<dyn live::Observer> = stats.clone();
        let task = tokio::spawn(async move { live::run(&lo, observer, rx).await });
        while stats.snapshot().state != Some(live::LiveState::Streaming) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Warm the JVMs up (JIT) before measuring.
        write_at(&writers, root, 2_000, 3.0).await;
        catch_up(&stats).await;
        println!("continuous replication, {KEYS} keys, setData of 8 bytes, both servers and the replicator on this machine");
        println!(
            "{:>12} {:>12} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "target w/s", "achieved w/s", "p50 ms", "p99 ms", "max ms", "catch-up", "kept up"
        );
        let mut best = 0u64;
        let mut writer_limited = false;
        for rate in [1_000u64, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 50_000] {
            let length = if rate == 1_000 { secs } else { secs / 2.0 };
            let (achieved, kept) = phase(&stats, "setData", rate, write_at(&writers, root, rate, length)).await;
            if kept {
                best = best.max(achieved as u64);
            }
            if !kept && rate > 1_000 {
                break;
            }
            if achieved < rate as f64 * 0.9 {
                writer_limited = true;
                break;
            }
        }
        record("live", "highest setData rate sustained", best as f64, "writes/s");
        println!(
            "highest write rate sustained without growing lag: {best} writes/s{}",
            if writer_limited {
                " (the writers could not go faster: the source server is the limit here)"
            } else {
                ""
            }
        );
        // Creates take the structural path (read the node and its ACL, create it).
        println!("creates of new nodes:");
        for rate in [1_000u64, 5_000, 10_000] {
            let writes = write_ops(&writers, root, rate, secs / 2.0, true);
            let (_, kept) = phase(&stats, "create", rate, writes).await;
            if !kept {
                break;
            }
        }
        // Converged once the writes stop: the verifier finds equal trees within seconds.
        let t = Instant::now();
        let report = loop {
            let r = verify(&o).await;
            if r.equal {
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "never converged:\n{}", r.render());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "destination verified equal to the source ({} nodes, verify took {:.1} s) {:.1} s after the last write",
            report.source_nodes,
            report.duration_seconds,
            t.elapsed().as_secs_f64()
        );
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
    });
}
