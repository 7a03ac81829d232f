//! A planned switchover of a 100k-node tree under a steady write load, timed step by step:
//! from the request to the new primary verified (the RTO), and on to the reverse stream
//! streaming.
//!
//! The stream and the switchover run in this process (as in `resiliency-operator switchover`
//! and standalone mode). The writer is a light load generator on its own thread and runtime:
//! 1,000 setData per second on 1,000 nodes, paced in ticks of 10 requests, pipelined. It keeps
//! writing through the switchover; the fence refuses it from the moment its node is fenced.
//!
//! `cargo bench --bench switchover` (`-- --nodes N`, `-- --rate R`, `-- --fence none`,
//! `-- --cold`: before the stream's verifier has run, so every ACL is read afresh).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resiliency_operator::continuous::{Continuous, ContinuousOptions};
use resiliency_operator::engine::live::LiveOptions;
use resiliency_operator::engine::SyncOptions;
use resiliency_operator::switchover::local::Local;
use resiliency_operator::switchover::{self, FenceMode, Mode, Progress, SwitchoverOptions};
use support::*;

const OP: &str = "op:op-secret";
const HOT: usize = 1000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let nodes: usize = arg("--nodes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let rate: u64 = arg("--rate").and_then(|n| n.parse().ok()).unwrap_or(1000);
    let fence = match arg("--fence").as_deref() {
        Some("none") => FenceMode::None,
        _ => FenceMode::Acl,
    };
    // Switch over before the stream's verifier has run once (its ACL caches empty).
    let cold = std::env::args().any(|a| a == "--cold");
    let tag = format!("{nodes}{}", if cold { " cold" } else { "" });
    let opts = ZkOptions {
        heap_mib: 1024,
        ..ZkOptions::default()
    };
    let (a, b) = (ZkServer::start(opts.clone()), ZkServer::start(opts));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let root = "/bench-switchover".to_string();
        let zs = client(&a).await;
        println!("building {nodes} nodes (+{HOT} hot ones) on the source…");
        build_tree(&zs, &root, nodes, 50, 32).await;
        mk(&zs, &format!("{root}/hot"), b"").await;
        for i in 0..HOT {
            mk(&zs, &format!("{root}/hot/h{i}"), b"0").await;
        }
        let auth = verifier::DigestAuth::parse(OP).ok();
        let mut o = SyncOptions::new(
            verifier::ConnectOptions::new(a.connect_string()).with_auth(auth.clone()),
            &root,
            verifier::ConnectOptions::new(b.connect_string()).with_auth(auth),
            &root,
        );
        o.holder = "bench switchover".into();
        let mut co = ContinuousOptions::new(LiveOptions::new(o.clone()));
        // As a LiveSynchronization is: verified now and then (its ACL caches are what the
        // fence and the switchover's verification start from).
        co.verify_interval = Some(Duration::from_secs(5));
        let started = Instant::now();
        let c = Continuous::start(co.clone(), Vec::new(), None);
        wait_for("the first full sync", Duration::from_secs(600), || async {
            let s = c.snapshot();
            s.streaming() && s.caught_up
        })
        .await;
        println!(
            "stream: first full sync and caught up in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if cold {
            println!("--cold: switching over before the stream's first verification");
        } else {
            wait_for("a first good verification", Duration::from_secs(600), || async {
                c.snapshot().last_good_sync.is_some()
            })
            .await;
            println!(
                "stream: verified equal {:.1}s after it started",
                started.elapsed().as_secs_f64()
            );
        }

        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(WriterCounts::default());
        let hot: Vec<String> = (0..HOT).map(|i| format!("{root}/hot/h{i}")).collect();
        let w = paced_writer(a.connect_string(), hot, rate, stop.clone(), counts.clone());
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "writer: {} writes acknowledged in the first 3 s",
            counts.acked.load(Ordering::Relaxed)
        );

        let mut w = Some(w);
        if fence == FenceMode::None {
            // Nothing keeps a writer out: as the runbook says, the applications stop first.
            stop.store(true, Ordering::Relaxed);
            w.take().unwrap().join().unwrap();
            println!("fence: none: the writer stopped before the switchover");
        }
        let cache = c.verify_cache();
        let cache_line = |when: &str| {
            let (s, d) = cache.stats();
            println!(
                "ACL caches {when}: source {} entries, {} hits, {} reads; destination {} entries, {} hits, {} reads",
                s.entries, s.hits, s.reads, d.entries, d.hits, d.reads
            );
        };
        cache_line("before");
        let local = Local::new(co, c, "bench reverse");
        let so = SwitchoverOptions {
            sync: o,
            mode: Mode::Planned,
            fence,
            reverse: true,
            timeout: Duration::from_secs(120),
            holder: "bench switchover".into(),
        };
        let progress = Progress::new(so.mode, jiff::Timestamp::now());
        let asked = Instant::now();
        let r = switchover::run(&so, &local, &progress).await;
        let promoted = asked.elapsed();
        let out = r.unwrap_or_else(|f| panic!("switchover failed: {f:?}"));
        let rev = local.take_reverse().unwrap();
        wait_for("the reverse stream", Duration::from_secs(600), || async {
            let s = rev.snapshot();
            s.streaming() && s.full_syncs >= 1
        })
        .await;
        let reverse_streaming = asked.elapsed();
        cache_line("after");
        stop.store(true, Ordering::Relaxed);
        if let Some(w) = w {
            w.join().unwrap();
        }

        println!();
        println!("| step | seconds | |");
        println!("|---|---|---|");
        for s in progress.report().steps {
            let secs = s
                .finished
                .map(|f| f.duration_since(s.started).as_secs_f64())
                .unwrap_or_default();
            println!("| {} | {secs:.3} | {} |", s.name, s.message);
            record(
                "switchover",
                &format!("{tag} {} step seconds", s.name),
                secs,
                "s",
            );
        }
        println!(
            "| request to promoted (RTO) | {:.3} | data loss {:?} |",
            out.rto.as_secs_f64(),
            out.data_loss
        );
        println!(
            "| request to reverse streaming | {:.3} | |",
            reverse_streaming.as_secs_f64()
        );
        println!(
            "writer: {} acknowledged, {} refused by the fence, at {rate}/s",
            counts.acked.load(Ordering::Relaxed),
            counts.refused.load(Ordering::Relaxed)
        );
        assert!(promoted >= out.rto);
        record(
            "switchover",
            &format!("{tag} rto"),
            out.rto.as_secs_f64(),
            "s",
        );
        record(
            "switchover",
            &format!("{tag} to reverse streaming"),
            reverse_streaming.as_secs_f64(),
            "s",
        );
        rev.stop().await.unwrap();
    });
}
