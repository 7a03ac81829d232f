//! Continuous replication under a production-like mixed load, measured from outside.
//!
//! Three processes besides the two ZooKeeper servers: this bench (it builds the tree and
//! watches the destination), the replicator (`resiliency-operator sync --continuous`, the
//! release binary) and a light writer (this bench re-run as a child in writer mode, on its own
//! runtime and sessions, pipelining async requests). The tree is authenticated, 5,000 nodes
//! three levels deep, 1% with a restrictive ACL. The writer's mix: 40% creates of new nodes at
//! any depth, 40% setData, 15% deletes of leaves it created earlier, 5% sequential creates.
//!
//! Lag is destination watch event time minus the writer's acknowledgement time, per operation
//! kind. Deletes include the deletion guard's delete delay (2 s by default); the second run
//! sets `--delete-delay 0` to show the stream's own delete latency.
//!
//! `cargo bench --bench mixed` (`-- --seconds N` per rate, `-- --rates 1000,5000`,
//! `-- --delete-delays 0`).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use support::*;
use zookeeper_client::{
    Acl, Acls, AddWatchMode, AuthId, Client, CreateMode, EventType, Permission,
};

const AUTH: &str = "admin:secret";
const TREE: usize = 5_000;
/// Writer requests a tick is split into: light pacing, so the writer measures little of
/// itself.
const TICKS_PER_SECOND: u64 = 100;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name in parentheses: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn authed(servers: &str) -> Client {
    client_at(servers, Some(AUTH)).await
}

fn open_acl() -> Vec<Acl> {
    vec![Acl::new(Permission::ALL, AuthId::anyone())]
}

/// The tree: `root/dNN/dMM/leafK`, 1% of the leaves readable and writable only by `admin`.
async fn build(c: &Client, root: &str) -> Vec<String> {
    let digest = verifier::DigestAuth::parse(AUTH).unwrap().acl_id();
    let restricted = [Acl::new(Permission::ALL, AuthId::new("digest", &digest))];
    mk(c, root, b"root").await;
    let mut leaves = Vec::new();
    let mut n = 1;
    'outer: for a in 0..18 {
        let da = format!("{root}/d{a:02}");
        mk(c, &da, b"dir").await;
        n += 1;
        for b in 0..16 {
            let db = format!("{da}/d{b:02}");
            mk(c, &db, b"dir").await;
            n += 1;
            let mut w = c.new_multi_writer();
            for k in 0..16 {
                if n >= TREE {
                    w.commit().await.unwrap();
                    break 'outer;
                }
                let leaf = format!("{db}/leaf{k:02}");
                let acl: &[Acl] = if n % 100 == 0 {
                    &restricted
                } else {
                    &open_acl()
                };
                w.add_create(
                    &leaf,
                    b"0123456789abcdef0123456789abcdef",
                    &CreateMode::Persistent.with_acls(Acls::new(acl)),
                )
                .unwrap();
                leaves.push(leaf);
                n += 1;
            }
            w.commit().await.unwrap();
        }
    }
    leaves
}

/// One acknowledged write: its kind, path and when the source acknowledged it.
#[derive(Clone, Debug)]
struct Ack {
    kind: &'static str,
    path: String,
    at_ms: i64,
    /// When the request was sent: the stream may apply a change before its ack reaches the
    /// writer, so a destination event after this time may be the one of this write.
    sent_ms: i64,
}

/// Writer mode: `MIXED_WRITER=servers root rate seconds`. Prints one `kind path ack_ms sent_ms` line
/// per acknowledged write on stdout, then `cpu SECONDS`.
async fn writer_main(args: Vec<String>) {
    let (servers, root) = (&args[0], &args[1]);
    let rate: u64 = args[2].parse().unwrap();
    let secs: f64 = args[3].parse().unwrap();
    let clients = [authed(servers).await, authed(servers).await];
    // Existing leaves to update, and directories to create in.
    let mut dirs = vec![root.clone()];
    let mut leaves = Vec::new();
    for a in clients[0].list_children(root).await.unwrap() {
        let da = format!("{root}/{a}");
        dirs.push(da.clone());
        for b in clients[0].list_children(&da).await.unwrap() {
            let db = format!("{da}/{b}");
            dirs.push(db.clone());
            for l in clients[0].list_children(&db).await.unwrap() {
                leaves.push(format!("{db}/{l}"));
            }
        }
    }
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let per_tick = (rate / TICKS_PER_SECOND).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / TICKS_PER_SECOND));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut n: u64 = 0;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            n += 1;
            let c = clients[(n % 2) as usize].clone();
            let acks = acks.clone();
            let created = created.clone();
            let slot = n % 20;
            // Deletes take leaves this writer created at least a second ago.
            let victim = if (8..11).contains(&slot) {
                let mut v = created.lock().unwrap();
                (v.len() > (rate as usize) / 2).then(|| v.remove(0))
            } else {
                None
            };
            let dir = dirs[(n as usize * 7919) % dirs.len()].clone();
            let leaf = leaves[(n as usize * 104_729) % leaves.len()].clone();
            let value = n.to_le_bytes();
            pending.push(async move {
                let sent_ms = wall_ms();
                let (kind, path) = match (slot, victim) {
                    (8..=10, Some(v)) => {
                        c.delete(&v, None).await.unwrap();
                        ("delete", v)
                    }
                    (0..=7, _) => {
                        let p = format!("{dir}/w{rate}x{n}");
                        c.create(
                            &p,
                            &value,
                            &CreateMode::Persistent.with_acls(Acls::anyone_all()),
                        )
                        .await
                        .unwrap();
                        created.lock().unwrap().push(p.clone());
                        ("create", p)
                    }
                    (11, _) => {
                        let (_, seq) = c
                            .create(
                                &format!("{dir}/seq-"),
                                &value,
                                &CreateMode::PersistentSequential.with_acls(Acls::anyone_all()),
                            )
                            .await
                            .unwrap();
                        ("sequential", format!("{dir}/seq-{seq}"))
                    }
                    _ => {
                        c.set_data(&leaf, &value, None).await.unwrap();
                        ("setData", leaf)
                    }
                };
                acks.lock().unwrap().push(Ack {
                    kind,
                    path,
                    at_ms: wall_ms(),
                    sent_ms,
                });
            });
        }
        while let Some(Some(())) = futures::FutureExt::now_or_never(pending.next()) {}
    }
    while pending.next().await.is_some() {}
    let out = std::io::stdout();
    let mut out = out.lock();
    for a in acks.lock().unwrap().iter() {
        writeln!(out, "{} {} {} {}", a.kind, a.path, a.at_ms, a.sent_ms).unwrap();
    }
    writeln!(out, "cpu {}", cpu_seconds(std::process::id())).unwrap();
}

/// Destination events by (path, kind) with their wall times, gathered by a recursive watch.
type Seen = Arc<Mutex<HashMap<(String, &'static str), Vec<i64>>>>;

/// Watches the destination until the returned task is aborted (before its server stops: the
/// client's watch stream panics once its session is gone).
async fn watch_destination(
    c: Client,
    root: String,
    dst_root_prefix: String,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let mut w = c
        .watch(&root, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _keep = c;
        loop {
            let ev = w.changed().await;
            let kind = match ev.event_type {
                EventType::NodeCreated => "created",
                EventType::NodeDataChanged => "changed",
                EventType::NodeDeleted => "deleted",
                _ => continue,
            };
            let path = ev.path.replacen(&dst_root_prefix, "", 1);
            sink.lock()
                .unwrap()
                .entry((path, kind))
                .or_default()
                .push(wall_ms());
        }
    });
    (seen, task)
}

fn pct(v: &mut [i64], q: f64) -> i64 {
    if v.is_empty() {
        return -1;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Phase {
    rate: u64,
    /// From the writer's last write until the trees were equal again.
    catch_up: Duration,
    achieved: f64,
    lags: HashMap<&'static str, Vec<i64>>,
    missing: usize,
    writer_cpu: f64,
    replicator_cpu: f64,
}

async fn phase(
    src: &ZkServer,
    o: &resiliency_operator::engine::SyncOptions,
    seen: &Seen,
    replicator: u32,
    rate: u64,
    secs: f64,
) -> Phase {
    let root = o.source_root.as_str();
    let cpu_before = cpu_seconds(replicator);
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .env("MIXED_WRITER", "1")
        .args([
            src.connect_string(),
            root.to_string(),
            rate.to_string(),
            secs.to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every lag is measured once the stream has caught up: the trees are equal again.
    let ended = Instant::now();
    // Quiet first (no destination event for a second), then one verification: polling the
    // verifier alone would load the machine the stream is catching up on.
    let events = || seen.lock().unwrap().values().map(Vec::len).sum::<usize>();
    let mut last = (events(), Instant::now());
    let mut catch_up = Duration::ZERO;
    while ended.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = events();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            if verify(o).await.equal {
                catch_up = last.1.duration_since(ended);
                break;
            }
            last.1 = Instant::now();
        }
    }
    let replicator_cpu = cpu_seconds(replicator) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lags: HashMap<&'static str, Vec<i64>> = HashMap::new();
    let (mut writes, mut missing, mut writer_cpu) = (0usize, 0usize, 0.0);
    let seen = seen.lock().unwrap();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] == "cpu" {
            writer_cpu = f[1].parse().unwrap_or(0.0);
            continue;
        }
        writes += 1;
        let (kind, event) = match f[0] {
            "create" => ("create", "created"),
            "sequential" => ("sequential", "created"),
            "delete" => ("delete", "deleted"),
            _ => ("setData", "changed"),
        };
        let at: i64 = f[2].parse().unwrap();
        let sent: i64 = f[3].parse().unwrap();
        // The first destination event of that kind on that path after the request was sent
        // (minus a little clock slack: both are this machine's wall clock), counted from the
        // ack (zero when the copy was quicker than the ack). Two writes applied by one
        // destination write share its event. Since this match is by time only, a write sent
        // just before the previous write on that path was copied can come out low.
        let key = (f[1].to_string(), event);
        match seen
            .get(&key)
            .and_then(|v| v.iter().find(|t| **t >= sent - 5))
        {
            Some(t) => lags.entry(kind).or_default().push((t - at).max(0)),
            None => missing += 1,
        }
    }
    Phase {
        rate,
        catch_up,
        achieved: writes as f64 / secs,
        lags,
        missing,
        writer_cpu,
        replicator_cpu,
    }
}

fn print(p: &mut Phase, delete_delay: &str) {
    let total: usize = p.lags.values().map(Vec::len).sum();
    let mut all: Vec<i64> = p.lags.values().flatten().copied().collect();
    let non_delete: Vec<i64> = p
        .lags
        .iter()
        .filter(|(k, _)| **k != "delete")
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    println!(
        "  {:>7} {:>9.0} | all p50 {:>5} p99 {:>5} max {:>5} | w/o deletes p99 {:>5} | equal {:.1} s after the last write | replicator {:.2} CPU s per 1,000 changes, writer {:.2} CPU s | unmatched {}",
        p.rate,
        p.achieved,
        pct(&mut all.clone(), 0.5),
        pct(&mut all.clone(), 0.99),
        pct(&mut all, 1.0),
        pct(&mut non_delete.clone(), 0.99),
        p.catch_up.as_secs_f64(),
        p.replicator_cpu * 1000.0 / total.max(1) as f64,
        p.writer_cpu,
        p.missing
    );
    let at = format!("mixed {} w/s delete-delay {delete_delay}s", p.rate);
    record(
        "mixed",
        &format!("{at} p99 w/o deletes"),
        pct(&mut non_delete.clone(), 0.99) as f64,
        "ms",
    );
    record(
        "mixed",
        &format!("{at} equal after last write"),
        p.catch_up.as_secs_f64(),
        "s",
    );
    let mut kinds: Vec<_> = p.lags.keys().copied().collect();
    kinds.sort_unstable();
    for k in kinds {
        let v = p.lags.get_mut(k).unwrap();
        record("mixed", &format!("{at} {k} p50"), pct(v, 0.5) as f64, "ms");
        record("mixed", &format!("{at} {k} p99"), pct(v, 0.99) as f64, "ms");
        println!(
            "          {:<10} n={:<6} p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
            k,
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
}

async fn run_mix(rates: &[u64], secs: f64, delete_delay: &str) {
    let src = ZkServer::start(ZkOptions::default());
    let dst = ZkServer::start(ZkOptions::default());
    let root = "/mixed";
    let s = authed(&src.connect_string()).await;
    build(&s, root).await;
    let log = std::env::var_os("MIXED_LOG");
    let mut replicator = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--continuous",
            "--progress",
            "0",
            "--root-path",
            root,
        ])
        .args([
            "--source",
            &src.connect_string(),
            "--destination",
            &dst.connect_string(),
        ])
        .args(["--source-auth", AUTH, "--destination-auth", AUTH])
        .args(["--delete-delay", delete_delay])
        // MIXED_LOG=file keeps the replicator's debug log (one line per batch with timings).
        .env(
            "RUST_LOG",
            if log.is_some() {
                "resiliency_operator=debug"
            } else {
                "error"
            },
        )
        .stderr(match &log {
            Some(path) => std::process::Stdio::from(std::fs::File::create(path).unwrap()),
            None => std::process::Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = replicator.id().unwrap();
    let o = {
        let mut o = sync_opts(&src, root, &dst, root);
        o.source.auth = verifier::DigestAuth::parse(AUTH).ok();
        o.destination.auth = o.source.auth.clone();
        o
    };
    wait_for("the first copy", Duration::from_secs(120), || async {
        verify(&o).await.equal
    })
    .await;
    let d = authed(&dst.connect_string()).await;
    let (seen, watcher) = watch_destination(d, root.to_string(), String::new()).await;
    println!(
        "mixed load on an authenticated {TREE}-node tree (1% ACL'd), --delete-delay {delete_delay}: lag in ms from the source's ack to the destination's watch event"
    );
    let mut best = 0.0f64;
    for &rate in rates {
        let mut p = phase(&src, &o, &seen, pid, rate, secs).await;
        print(&mut p, delete_delay);
        let all: Vec<i64> = p
            .lags
            .iter()
            .filter(|(k, _)| **k != "delete")
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        if pct(&mut all.clone(), 0.99) < 1000 && p.catch_up < Duration::from_secs(5) {
            best = best.max(p.achieved);
        }
    }
    let r = verify(&o).await;
    record(
        "mixed",
        &format!("highest mixed rate sustained delete-delay {delete_delay}s"),
        best,
        "writes/s",
    );
    println!(
        "  highest mixed rate with p99 (creates, updates) under 1 s and caught up within 5 s: {best:.0} writes/s; trees {} ({} nodes)",
        if r.equal { "EQUAL" } else { "DIVERGED" },
        r.source_nodes
    );
    watcher.abort();
    replicator.start_kill().unwrap();
    let _ = replicator.wait().await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if std::env::var_os("MIXED_WRITER").is_some() {
            1
        } else {
            2
        })
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("MIXED_WRITER").is_some() {
        rt.block_on(writer_main(args));
        return;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: f64 = flag("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let rates: Vec<u64> = flag("--rates")
        .map(|r| r.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 5_000, 10_000]);
    let delays: Vec<String> = flag("--delete-delays")
        .map(|d| d.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["2".into(), "0".into()]);
    rt.block_on(async {
        for d in &delays {
            run_mix(&rates, secs, d).await;
        }
    });
}
