//! Backup and restore throughput for a 100k-znode tree against a real local ZooKeeper server,
//! to a local directory and to a real S3-protocol server (s3s-fs) on loopback.
//!
//! `cargo bench --bench backup` prints znodes/s, MB/s of payload, snapshot size and the CLI's
//! peak RSS for each. Every restore is verified against the manifest's root hash by the tool.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const PAYLOAD: usize = 100;
const FANOUT: usize = 100;

/// Runs the CLI; returns its wall time, peak RSS in MiB and stdout.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (Duration, f64, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                peak_kib = peak_kib.max(kib);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?} failed");
    (
        elapsed,
        peak_kib as f64 / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn main() {
    let opts = ZkOptions {
        heap_mib: 1024,
        ..ZkOptions::default()
    };
    let src = ZkServer::start(opts.clone());
    let dst = ZkServer::start(opts);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let n = 100_000;
        let root = "/backup-bench";
        build_tree(&client(&src).await, root, n, FANOUT, PAYLOAD).await;
        let total = (n + 1) as f64;
        let payload_mb = (n * PAYLOAD) as f64 / 1e6;
        let s3 = S3Server::start("bench").await;
        let dir = tempfile::tempdir().unwrap();
        let local = format!("file://{}", dir.path().display());
        let s3_url = "s3://bench/zk".to_string();
        let env = [
            ("AWS_ACCESS_KEY_ID", s3.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
        ];
        println!("tree of {} znodes, {PAYLOAD}-byte payloads, fanout {FANOUT}:", n + 1);
        for (label, url) in [("local directory", local.as_str()), ("S3 (s3s-fs)", s3_url.as_str())] {
            let (s, d) = (src.connect_string(), dst.connect_string());
            let (t, rss, out) = run_cli(
                &[
                    "backup", "--source", &s, "--root-path", root, "--to", url,
                    "--s3-endpoint", &s3.endpoint, "--json",
                ],
                &env,
            );
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            let size = doc["manifest"]["objectBytes"].as_f64().unwrap();
            let short = label.split(' ').next().unwrap();
            record("backup", &format!("{total} znodes backup to {short}"), total / t.as_secs_f64(), "znodes/s");
            println!(
                "  backup  to {label:<16} {:>8.0} znodes/s  {:>6.1} MB/s payload  ({:.2}s, snapshot {:.1} MB, peak RSS {rss:.0} MiB)",
                total / t.as_secs_f64(),
                payload_mb / t.as_secs_f64(),
                t.as_secs_f64(),
                size / 1e6
            );
            let target = format!("/restored-{}", label.split(' ').next().unwrap());
            let (t, rss, _) = run_cli(
                &[
                    "restore", "--from", url, "--destination", &d, "--root-path", &target,
                    "--s3-endpoint", &s3.endpoint, "--json",
                ],
                &env,
            );
            record("backup", &format!("{total} znodes restore from {short}"), total / t.as_secs_f64(), "znodes/s");
            println!(
                "  restore from {label:<14} {:>8.0} znodes/s  {:>6.1} MB/s payload  ({:.2}s incl. checks and verification, peak RSS {rss:.0} MiB)",
                total / t.as_secs_f64(),
                payload_mb / t.as_secs_f64(),
                t.as_secs_f64()
            );
        }
    });
}
