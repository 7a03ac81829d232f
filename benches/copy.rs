//! Copy and verify throughput against two real local ZooKeeper servers.
//!
//! `cargo bench --bench copy` prints znodes/s for trees of 10k and 100k znodes (100-byte
//! payloads), the raw pipelined-create rate of the same destination for a ratio, and the
//! copier's peak RSS. `cargo bench --bench copy -- --million` adds a 1M-znode copy.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

    let (s, d) = (src.connect_string(), dst.connect_string());
    let common = ["--source", &s, "--destination", &d, "--root-path", &root];
    let mut sync_args = vec!["sync", "--progress", "0", "--json"];
    sync_args.extend(common);
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
        "  copy (CLI wall time, empty destination):        {copy_rate:>9.0} znodes/s  ({:.2}s, {:.0}% of raw, peak RSS {copy_rss:.0} MiB)",
        copy_time.as_secs_f64(),
        100.0 * copy_rate / raw
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
