//! Repeated verification with an ACL cache against two real local ZooKeeper servers.
//!
//! `cargo bench --bench reverify` builds the same 100k-znode tree (100-byte payloads) on both
//! servers, then verifies it in-process: without a cache (the baseline, which also warms the
//! servers up), twice with one [`verifier::VerifyCache`] (the first reads every ACL, the second
//! only those that changed: none), and without ACLs (the multi-reads alone, the ceiling of a
//! cached run). It prints znodes/s per tree, this process's CPU time, how busy the machine was
//! (both servers and the verifier share its cores), the getACL requests each run sent and the
//! cache's memory, and appends the rates and the memory to `benches/results.csv`.
//! `-- --window N` reads N nodes at a time per tree instead of the default of
//! [`verifier::WalkOptions`], which the continuous verifier uses.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use support::*;
use verifier::{Report, VerifyCache, VerifyOptions};

const NODES: usize = 100_000;
const PAYLOAD: usize = 100;
const FANOUT: usize = 100;

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name (in parentheses) come the state and then fields 4..: utime and
    // stime are fields 14 and 15, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// Busy and total CPU time of the whole machine so far, in clock ticks.
fn machine_ticks() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let total: f64 = f.iter().sum();
    // idle and iowait
    (total - f[3] - f[4], total)
}

/// What one verification took.
struct Run {
    report: Report,
    secs: f64,
    cpu: f64,
    busy: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.report.source_nodes as f64 / self.secs
    }

    /// Prints the run and records its rate in `benches/results.csv` as `figure`.
    fn line(&self, label: &str, figure: &str, rest: &str) {
        record("reverify", figure, self.rate(), "znodes/s per tree");
        println!(
            "  {label:<36} {:>7.0} znodes/s per tree  ({:.2}s, verifier CPU {:.2}s, machine {:.0}% busy{rest})",
            self.rate(),
            self.secs,
            self.cpu,
            self.busy
        );
    }
}

/// One in-process verification of `root` on both servers, with fresh sessions as the
/// continuous verifier opens them each round.
async fn verify_once(
    src: &ZkServer,
    dst: &ZkServer,
    root: &str,
    opts: VerifyOptions,
    cache: Option<&VerifyCache>,
) -> Run {
    let n = verifier::zk::READ_SESSIONS;
    let so = verifier::ConnectOptions::new(src.connect_string());
    let d = verifier::ConnectOptions::new(dst.connect_string());
    let (sp, dp) = tokio::join!(
        verifier::connect_pool(verifier::Side::Source, &so, n),
        verifier::connect_pool(verifier::Side::Destination, &d, n)
    );
    let (sp, dp) = (sp.unwrap(), dp.unwrap());
    // Timed from the first read, without the connects.
    let (t, cpu, m) = (Instant::now(), cpu_seconds(), machine_ticks());
    let report = match cache {
        Some(c) => verifier::verify_cached(&sp, root, &dp, root, opts, c).await,
        None => verifier::verify(&sp, root, &dp, root, opts).await,
    }
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let m1 = machine_ticks();
    assert!(report.equal, "trees differ:\n{}", report.render());
    Run {
        report,
        secs,
        cpu: cpu_seconds() - cpu,
        busy: 100.0 * (m1.0 - m.0) / (m1.1 - m.1).max(1.0),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut opts = VerifyOptions::default();
    if let Some(i) = args.iter().position(|a| a == "--window") {
        opts.walk.window = args[i + 1].parse().expect("--window N");
    }
    let zk = ZkOptions {
        heap_mib: 1024,
        ..ZkOptions::default()
    };
    let (src, dst) = std::thread::scope(|s| {
        let a = s.spawn(|| ZkServer::start(zk.clone()));
        let b = s.spawn(|| ZkServer::start(zk.clone()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let root = "/reverify";
        let (c, dc) = (client(&src).await, client(&dst).await);
        tokio::join!(
            build_tree(&c, root, NODES, FANOUT, PAYLOAD),
            build_tree(&dc, root, NODES, FANOUT, PAYLOAD)
        );
        println!(
            "tree of {} znodes on each side, {PAYLOAD}-byte payloads, fanout {FANOUT}, {} read sessions per side, read window {}, {} cores:",
            NODES + 1,
            verifier::zk::READ_SESSIONS,
            opts.walk.window,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        // First without a cache: the servers' JIT warms up on it, and it is the baseline.
        let plain = verify_once(&src, &dst, root, opts, None).await;
        let at = format!("{} znodes window {}", NODES + 1, opts.walk.window);
        plain.line(
            "verify, no cache:",
            &format!("{at} no cache"),
            ", a getACL per node",
        );
        let hash = plain.report.source_root_hash.clone();

        let cache = VerifyCache::new(&src.connect_string(), &dst.connect_string());
        let mut reads = 0;
        let runs = [
            ("verify, first with an empty cache:", "first cached"),
            ("verify, second with the same cache:", "second cached"),
        ];
        for (label, figure) in runs {
            let run = verify_once(&src, &dst, root, opts, Some(&cache)).await;
            let (s, d) = cache.stats();
            let sent = s.reads + d.reads - reads;
            reads = s.reads + d.reads;
            assert_eq!(run.report.source_root_hash, hash, "the root hash moved");
            assert_eq!(run.report.destination_root_hash, hash);
            run.line(
                label,
                &format!("{at} {figure}"),
                &format!(", {sent} getACL requests"),
            );
        }

        // The ceiling of a cached run: the multi-reads alone.
        let mut no_acl = opts;
        no_acl.walk.hash.acl = false;
        verify_once(&src, &dst, root, no_acl, None)
            .await
            .line("verify without ACLs (ceiling):", &format!("{at} no ACLs"), "");

        let (s, d) = cache.stats();
        let bytes = (s.memory_bytes + d.memory_bytes) as f64;
        record("reverify", &format!("{at} ACL cache"), bytes / (1024.0 * 1024.0), "MiB");
        println!(
            "  ACL cache: {} + {} entries, {} + {} distinct ACLs, about {:.1} MiB ({:.0} bytes a node per side)",
            s.entries,
            d.entries,
            s.acls,
            d.acls,
            bytes / (1024.0 * 1024.0),
            bytes / (s.entries + d.entries) as f64
        );
    });
}
