//! The operator's memory under the load one Deployment carries: the real binary against the
//! in-memory API server (tests/fake_api) and two real ZooKeeper servers. Phase by phase, it
//! prints the operator process's resident set (VmRSS, sampled every 100 ms: the highest seen
//! and the last) and, at the end, its high-water mark (VmHWM). The Deployments' memory
//! requests and limits in deploy/kubernetes/deployments.yaml come from these numbers.
//!
//! 1. idle: all controllers started, two Databases, nothing to copy;
//! 2. a LiveSynchronization of an N-node tree: its full sync and first verification;
//! 3. the stream under a light write load (setData on 1,000 nodes), verified every 10 s;
//! 4. one-shot Synchronization of a second N-node tree, the stream still running;
//! 5. a verified backup of that tree to a local Bucket, the stream still running.
//!
//! `cargo bench --bench operator` (`-- --nodes N`, `-- --payload BYTES`, `-- --rate R`,
//! `-- --stream-seconds S`).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/fake_api/mod.rs"]
mod fake_api;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_api::*;
use serde_json::{json, Value};
use support::*;

const NS: &str = "resiliency-operator";
const HOT: usize = 1000;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}"))
        })
        .unwrap_or(default)
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples the operator's VmRSS every 100 ms; `take` returns the highest since the last take
/// and the latest.
struct Sampler {
    peak: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
}

impl Sampler {
    fn start(pid: u32, stop: Arc<AtomicBool>) -> Sampler {
        let peak = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let (p, l) = (peak.clone(), last.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    l.store(kib, Ordering::Relaxed);
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { peak, last }
    }

    fn take(&self) -> (u64, u64) {
        let last = self.last.load(Ordering::Relaxed);
        (self.peak.swap(last, Ordering::Relaxed), last)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn status(fake: &Fake, plural: &str, name: &str) -> Value {
    fake.get(plural, NS, name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition_true(st: &Value, t: &str) -> bool {
    st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .is_some_and(|c| c["status"] == "True")
}

fn copy_spec(plugin: &str, src: &str, dst: &str, root: &str) -> Value {
    json!({"plugin": plugin,
        "config": {"sourceName": src, "destinationName": dst, "rootPath": root}})
}

fn main() {
    let nodes: usize = arg("--nodes", 100_000);
    let payload: usize = arg("--payload", 100);
    let rate: u64 = arg("--rate", 200);
    let stream_seconds: u64 = arg("--stream-seconds", 30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(nodes, payload, rate, stream_seconds));
}

async fn run(nodes: usize, payload: usize, rate: u64, stream_seconds: u64) {
    let (src, dst) = shared_pair();
    let zs = client(src).await;
    let live_root = unique_root("bench-operator-live");
    let copy_root = unique_root("bench-operator-copy");
    let t = Instant::now();
    build_tree(&zs, &live_root, nodes, 10, payload).await;
    build_tree(&zs, &copy_root, nodes, 10, payload).await;
    for i in 0..HOT {
        mk(&zs, &format!("{live_root}/h{i}"), b"0").await;
    }
    eprintln!(
        "built two {nodes}-node trees ({payload}-byte data) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let fake = Fake::new();
    for (name, server) in [("zookeeper-source", src), ("zookeeper-destination", dst)] {
        fake.write(
            "secrets",
            NS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {"user": "YWRtaW4=", "password": "czNjcjN0LXZhbHVl"}}),
            "ADDED",
        );
        fake.write(
            "databases",
            NS,
            json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Database",
                "metadata": {"name": name},
                "spec": {"zookeeper": {"client": {"servers": [server.connect_string()]}}}}),
            "ADDED",
        );
    }
    let bucket_dir = tempfile::tempdir().unwrap();
    fake.write(
        "buckets",
        NS,
        json!({"apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "local-backups"},
            "spec": {"local": {"path": bucket_dir.path()}}}),
        "ADDED",
    );

    let (operator, _metrics, _dir, _) = start_operator(
        &fake,
        NS,
        "operator-bench-0",
        None,
        std::process::Stdio::inherit(),
    )
    .await;
    let pid = operator.id().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = Sampler::start(pid, stop.clone());
    let rows: Mutex<Vec<(String, f64, u64, u64)>> = Mutex::default();
    let phase = |name: &str, started: Instant| {
        let (peak, last) = sampler.take();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {secs:.1} s, peak {:.1} MiB, now {:.1} MiB",
            mib(peak),
            mib(last)
        );
        rows.lock()
            .unwrap()
            .push((name.to_string(), secs, peak, last));
    };

    // 1. Idle.
    let t = Instant::now();
    wait_for("the Databases Ready", Duration::from_secs(60), || async {
        ["zookeeper-source", "zookeeper-destination"]
            .iter()
            .all(|n| condition_true(&status(&fake, "databases", n), "Ready"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase("idle (2 Databases, 1 Bucket)", t);

    // 2. The stream's full sync and first verification.
    let t = Instant::now();
    let mut live = copy_spec(
        "zookeeper-to-zookeeper-nodes",
        "zookeeper-source",
        "zookeeper-destination",
        &live_root,
    );
    live["verifyInterval"] = json!("10s");
    fake.write(
        "livesynchronizations",
        NS,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "bench-live"}, "spec": live}),
        "ADDED",
    );
    wait_for(
        "the LiveSynchronization InSync",
        Duration::from_secs(600),
        || async {
            condition_true(
                &status(&fake, "livesynchronizations", "bench-live"),
                "InSync",
            )
        },
    )
    .await;
    phase(&format!("live: full sync + verify of {nodes} nodes"), t);

    // 3. Streaming under a light write load.
    let t = Instant::now();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let hot: Vec<String> = (0..HOT).map(|i| format!("{live_root}/h{i}")).collect();
    let writer = paced_writer(
        src.connect_string(),
        hot,
        rate,
        stop_writing.clone(),
        Arc::default(),
    );
    tokio::time::sleep(Duration::from_secs(stream_seconds)).await;
    phase(
        &format!("live: streaming {rate} writes/s, verified every 10 s"),
        t,
    );

    // 4. A one-shot copy of the second tree beside the stream.
    let t = Instant::now();
    fake.write(
        "synchronizations",
        NS,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "bench-copy"},
            "spec": copy_spec("zookeeper-to-zookeeper-nodes", "zookeeper-source",
                "zookeeper-destination", &copy_root)}),
        "ADDED",
    );
    wait_for("the Synchronization", Duration::from_secs(600), || async {
        let st = status(&fake, "synchronizations", "bench-copy");
        assert_ne!(st["phase"], "Failed", "{st}");
        st["phase"] == "Succeeded"
    })
    .await;
    phase(
        &format!("+ Synchronization of {nodes} nodes (copy + verify)"),
        t,
    );

    // 5. A verified backup of the second tree beside the stream.
    let t = Instant::now();
    fake.write(
        "synchronizations",
        NS,
        json!({"apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
            "metadata": {"name": "bench-backup"},
            "spec": copy_spec("zookeeper-to-bucket", "zookeeper-source", "local-backups",
                &copy_root)}),
        "ADDED",
    );
    wait_for("the backup", Duration::from_secs(600), || async {
        let st = status(&fake, "synchronizations", "bench-backup");
        assert_ne!(st["phase"], "Failed", "{st}");
        st["phase"] == "Succeeded"
    })
    .await;
    phase(&format!("+ verified backup of {nodes} nodes"), t);

    stop_writing.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let live_st = status(&fake, "livesynchronizations", "bench-live");

    println!("\noperator memory, {nodes}-node trees, {payload}-byte data (VmRSS of the operator process)\n");
    println!("| phase | seconds | peak RSS (MiB) | RSS after (MiB) |");
    println!("|---|---:|---:|---:|");
    for (name, secs, peak, last) in rows.lock().unwrap().iter() {
        println!(
            "| {name} | {secs:.1} | {:.1} | {:.1} |",
            mib(*peak),
            mib(*last)
        );
    }
    println!("\nhigh-water mark (VmHWM): {:.1} MiB", mib(hwm));
    println!(
        "stream at the end: InSync={}, lag {}",
        condition_true(&live_st, "InSync"),
        live_st["lag"]
    );
    drop(operator);
}
