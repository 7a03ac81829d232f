//! Copy and verify throughput against two real local ZooKeeper servers.
//!
//! `cargo bench --bench copy` prints znodes/s for trees of 10k and 100k znodes (100-byte
//! payloads), the raw pipelined-create rate of the same destination for a ratio, and the
//! copier's peak RSS. Beside them, the source's own read ceiling: every node's data and
//! children by pipelined multi-reads, every node's ACL by pipelined getACL calls (ZooKeeper
//! has no bulk ACL read), both at once, and those reads while the destination takes as many
//! creates: what a copy does, without the copier. `COPY_EXTRA="--read-window 4096"` passes
//! extra flags to the copy. `cargo bench --bench copy -- --million` adds a 1M-znode copy.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use zookeeper_client::Client;

use support::*;

const PAYLOAD: usize = 100;
const FANOUT: usize = 100;

/// Runs the CLI, returning its wall time, peak RSS in MiB (sampled from /proc) and stdout.
fn run_cli(args: &[&str]) -> (Duration, f64, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            for key in ["VmHWM:", "VmRSS:"] {
                if let Some(v) = s.lines().find_map(|l| l.strip_prefix(key)) {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak_kib = peak_kib.max(kib);
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{args:?} failed"
    );
    (
        elapsed,
        peak_kib as f64 / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Paths per multi-read and requests in flight: the verifier's reader uses the same shape.
const READ_CHUNK: usize = 256;
const IN_FLIGHT: usize = 1024;
/// Sessions the getACL calls are spread over: as many as the copier reads with.
const ACL_SESSIONS: usize = verifier::zk::READ_SESSIONS;

/// Reads data and children of every path with pipelined multi-reads; returns the wall time.
async fn multi_read_all(c: &Client, paths: &[String]) -> Duration {
    let t = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for chunk in paths.chunks(READ_CHUNK) {
        let mut r = c.new_multi_reader();
        for p in chunk {
            r.add_get_data(p).unwrap();
            r.add_get_children(p).unwrap();
        }
        in_flight.push(r.commit());
        if in_flight.len() >= IN_FLIGHT / READ_CHUNK {
            in_flight.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = in_flight.next().await {
        r.unwrap();
    }
    t.elapsed()
}

/// Reads the ACL of every path with pipelined getACL calls over `sessions`.
async fn get_acl_all(sessions: &[Client], paths: &[String]) -> Duration {
    let t = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for (i, p) in paths.iter().enumerate() {
        in_flight.push(sessions[i % sessions.len()].get_acl(p));
        if in_flight.len() >= IN_FLIGHT {
            in_flight.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = in_flight.next().await {
        r.unwrap();
    }
    t.elapsed()
}

/// The rates an exact copy is bounded by, in znodes/s.
struct Ceiling {
    /// Data and children by multi-read alone.
    multi: f64,
    /// ACLs alone.
    acl: f64,
    /// Both at once: everything a copy reads.
    reads: f64,
    /// Those reads while the destination takes the same number of pipelined creates: the two
    /// servers share this machine's cores during a copy, so this is the copy's real ceiling.
    reads_and_creates: f64,
}

/// Measures [`Ceiling`] on the bench tree under `root`.
async fn ceiling(src: &ZkServer, dst: &ZkServer, root: &str, n: usize) -> Ceiling {
    let mut paths = vec![root.to_string()];
    paths.extend(tree_paths(root, n, FANOUT));
    let main = client(src).await;
    let mut sessions = Vec::new();
    for _ in 0..ACL_SESSIONS {
        sessions.push(client(src).await);
    }
    let rate = |d: Duration| paths.len() as f64 / d.as_secs_f64();
    let multi = rate(multi_read_all(&main, &paths).await);
    let acl = rate(get_acl_all(&sessions, &paths).await);
    let t = Instant::now();
    tokio::join!(
        multi_read_all(&main, &paths),
        get_acl_all(&sessions, &paths)
    );
    let reads = rate(t.elapsed());
    let dc = client(dst).await;
    let raw_root = format!("/raw-both-{n}");
    let t = Instant::now();
    tokio::join!(
        multi_read_all(&main, &paths),
        get_acl_all(&sessions, &paths),
        build_tree(&dc, &raw_root, n, FANOUT, PAYLOAD)
    );
    Ceiling {
        multi,
        acl,
        reads,
        reads_and_creates: rate(t.elapsed()),
    }
}

async fn bench_size(src: &ZkServer, dst: &ZkServer, n: usize) {
    let root = format!("/bench-{n}");
    let c = client(src).await;
    build_tree(&c, &root, n, FANOUT, PAYLOAD).await;
    let total = n + 1;

    // The destination's own ceiling: the same tree written with pipelined multi creates.
    let dc = client(dst).await;
    let t = Instant::now();
    build_tree(&dc, &format!("/raw-{n}"), n, FANOUT, PAYLOAD).await;
    let raw = total as f64 / t.elapsed().as_secs_f64();
    let ceil = ceiling(src, dst, &root, n).await;

    let (s, d) = (src.connect_string(), dst.connect_string());
    let common = ["--source", &s, "--destination", &d, "--root-path", &root];
    let mut sync_args = vec!["sync", "--progress", "0", "--json"];
    sync_args.extend(common);
    let extra = std::env::var("COPY_EXTRA").unwrap_or_default();
    sync_args.extend(extra.split_whitespace());
    let (copy_time, copy_rss, _) = run_cli(&sync_args);
    let copy_rate = total as f64 / copy_time.as_secs_f64();

    let (noop_time, _, out) = run_cli(&sync_args);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sync"]["writeOps"], 0, "re-run wrote");

    let mut verify_args = vec!["verify", "--json"];
    verify_args.extend(common);
    let (verify_time, verify_rss, out) = run_cli(&verify_args);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["equal"], true, "copy is not equal");
    // Without ACLs a node costs a share of one multi-read instead of a getACL call of its own.
    verify_args.push("--no-acl");
    let (verify_noacl_time, _, _) = run_cli(&verify_args);

    let at = format!("{total} znodes");
    record("copy", &format!("{at} raw multi-create"), raw, "znodes/s");
    record(
        "copy",
        &format!("{at} source multi-read"),
        ceil.multi,
        "znodes/s",
    );
    record("copy", &format!("{at} source getACL"), ceil.acl, "znodes/s");
    record(
        "copy",
        &format!("{at} source reads"),
        ceil.reads,
        "znodes/s",
    );
    record(
        "copy",
        &format!("{at} source reads + destination creates"),
        ceil.reads_and_creates,
        "znodes/s",
    );
    record("copy", &format!("{at} copy"), copy_rate, "znodes/s");
    record("copy", &format!("{at} copy peak RSS"), copy_rss, "MiB");
    record(
        "copy",
        &format!("{at} re-sync equal tree"),
        total as f64 / noop_time.as_secs_f64(),
        "znodes/s",
    );
    record(
        "copy",
        &format!("{at} verify"),
        total as f64 / verify_time.as_secs_f64(),
        "znodes/s per tree",
    );
    record(
        "copy",
        &format!("{at} verify --no-acl"),
        total as f64 / verify_noacl_time.as_secs_f64(),
        "znodes/s per tree",
    );
    println!("tree of {total} znodes, {PAYLOAD}-byte payloads, fanout {FANOUT}:");
    println!("  raw pipelined multi-create on the destination: {raw:>9.0} znodes/s");
    println!(
        "  source multi-read (data + children) alone:      {:>9.0} znodes/s",
        ceil.multi
    );
    println!(
        "  source getACL alone ({ACL_SESSIONS} sessions):               {:>9.0} znodes/s",
        ceil.acl
    );
    println!(
        "  source reads of an exact copy (both at once):   {:>9.0} znodes/s",
        ceil.reads
    );
    println!(
        "  those reads + as many creates, at once:         {:>9.0} znodes/s  (the copy's ceiling here)",
        ceil.reads_and_creates
    );
    println!(
        "  copy (CLI wall time, empty destination):        {copy_rate:>9.0} znodes/s  ({:.2}s, {:.0}% of raw create, {:.0}% of the ceiling, peak RSS {copy_rss:.0} MiB)",
        copy_time.as_secs_f64(),
        100.0 * copy_rate / raw,
        100.0 * copy_rate / ceil.reads_and_creates
    );
    println!(
        "  re-sync of an equal tree (reads only):          {:>9.0} znodes/s  ({:.2}s)",
        total as f64 / noop_time.as_secs_f64(),
        noop_time.as_secs_f64()
    );
    println!(
        "  verify (both trees walked at once):             {:>9.0} znodes/s per tree  ({:.2}s, peak RSS {verify_rss:.0} MiB)",
        total as f64 / verify_time.as_secs_f64(),
        verify_time.as_secs_f64()
    );
    println!(
        "  verify without ACLs (--no-acl):                 {:>9.0} znodes/s per tree  ({:.2}s)",
        total as f64 / verify_noacl_time.as_secs_f64(),
        verify_noacl_time.as_secs_f64()
    );
}

fn main() {
    let million = std::env::args().any(|a| a == "--million");
    let opts = ZkOptions {
        heap_mib: if million { 3072 } else { 1024 },
        ..ZkOptions::default()
    };
    let src = ZkServer::start(opts.clone());
    let dst = ZkServer::start(opts);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        bench_size(&src, &dst, 10_000).await;
        bench_size(&src, &dst, 100_000).await;
        if million {
            bench_size(&src, &dst, 1_000_000).await;
        }
    });
}
