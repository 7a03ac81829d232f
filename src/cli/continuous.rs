//! `sync --continuous`: streams until SIGINT or SIGTERM, printing state changes, every
//! `--progress` seconds the changes applied and their lag, and each verification's verdict.

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use super::flags::{seconds_or_zero, CliError};
use super::output::fail;
use super::sync::SyncArgs;
use crate::continuous::{Continuous, ContinuousOptions, HeartbeatOptions, Snapshot};
use crate::engine::live::{self, LiveOptions, Stats};
use crate::engine::{self, SyncOptions};

/// How often the stream's state is looked at.
const TICK: Duration = Duration::from_millis(200);
/// The progress interval when `--progress 0` turns the lines off (it still paces the loop).
const DEFAULT_PROGRESS: Duration = Duration::from_secs(2);
/// The shortest heartbeat interval: a faster one would only load the source.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

pub(super) async fn run_continuous(a: &SyncArgs, opts: SyncOptions) -> ExitCode {
    let json = a.endpoints.json;
    let co = match continuous_options(a, opts) {
        Ok(co) => co,
        Err(e) => return fail(json, e.as_ref()),
    };
    let stop_rx = stop_on_signal();
    if let Some(addr) = a.listen {
        if let Err(e) = serve_metrics(addr).await {
            return fail(json, e.as_ref());
        }
    }
    // Created after the recorder is installed, so the objective gauge lands in it.
    let live_metrics = Arc::new(crate::metrics::LiveMetrics::new("cli", &a.name, co.max_lag));
    let stats = Arc::new(Stats::default());
    let run = Continuous::start(co, vec![stats.clone()], Some(live_metrics));
    let failed = watch_stream(&run, &stats, a.progress, stop_rx).await;
    let result = run.stop().await;
    match (result, failed) {
        (Err(e), _) => fail(json, &e),
        (Ok(()), Some(why)) => fail(json, &CliError::Stream(why)),
        (Ok(()), None) => {
            let s = stats.snapshot();
            eprintln!(
                "continuous: stopped after {} changes applied and {} full syncs",
                s.applied_total, s.full_syncs
            );
            ExitCode::SUCCESS
        }
    }
}

/// The stream's options from the `sync` flags and its engine options.
pub(super) fn continuous_options(
    a: &SyncArgs,
    mut opts: SyncOptions,
) -> Result<ContinuousOptions, Box<dyn Error>> {
    // The full syncs inside the stream print no progress of their own.
    opts.progress_every = None;
    let f = LiveFlags::of(a)?;
    let mut lo = LiveOptions::new(opts);
    lo.resync_interval = (!f.resync.is_zero()).then_some(f.resync);
    lo = lo.with_apply_delay(f.apply_delay, live::DEFAULT_DELAY_MAX_BYTES);
    if f.delete_delay != live::DELETE_DELAY {
        lo = lo.with_delete_delay(f.delete_delay);
    }
    let mut co = ContinuousOptions::new(lo);
    co.verify_interval = (!f.verify.is_zero()).then_some(f.verify);
    co.repair = a.repair;
    // A delayed stream is behind by its delay on purpose: the objective counts on top of it.
    co.max_lag = f.max_lag + f.apply_delay;
    if let Some(path) = &a.heartbeat {
        verifier::path::validate_root("--heartbeat", path)?;
        if !verifier::path::is_within(&co.live.sync.source_root, path) {
            return Err(CliError::InvalidFlag {
                flag: "--heartbeat",
                message: format!(
                    "{path} is not under the source root {}: it would not be replicated",
                    co.live.sync.source_root
                ),
            }
            .into());
        }
        co.heartbeat = Some(HeartbeatOptions {
            path: path.clone(),
            interval: f.heartbeat,
        });
    }
    Ok(co)
}

/// The durations of `sync --continuous`, each checked once, naming its flag.
struct LiveFlags {
    resync: Duration,
    verify: Duration,
    max_lag: Duration,
    apply_delay: Duration,
    delete_delay: Duration,
    heartbeat: Duration,
}

impl LiveFlags {
    fn of(a: &SyncArgs) -> Result<LiveFlags, CliError> {
        Ok(LiveFlags {
            resync: seconds_or_zero("--resync-interval", a.resync_interval)?,
            verify: seconds_or_zero("--verify-interval", a.verify_interval)?,
            max_lag: seconds_or_zero("--max-lag", a.max_lag)?,
            apply_delay: seconds_or_zero("--apply-delay", a.apply_delay)?,
            delete_delay: seconds_or_zero("--delete-delay", a.guard.delete_delay)?,
            heartbeat: seconds_or_zero("--heartbeat-interval", a.heartbeat_interval)?
                .max(MIN_HEARTBEAT),
        })
    }
}

/// Turns true on SIGINT or SIGTERM.
pub(super) fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::serve::shutdown::termination().await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// The next delivery of a signal; never, when it could not be registered.
async fn next(s: Option<&mut Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// `--listen`: /metrics, /healthz and /readyz (ready at once) in the background.
async fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), Box<dyn Error>> {
    let handle = crate::metrics::install()?;
    let listener = crate::serve::http::bind(addr).await?;
    let health = Arc::new(crate::serve::http::Health::default());
    health.set_ready();
    crate::serve::http::spawn_upkeep(handle.clone());
    let router = crate::serve::http::router(health, Some(handle));
    tokio::spawn(crate::serve::http::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Ok(())
}

/// Reports on the stream until a stop signal (None) or its failure (why).
async fn watch_stream(
    run: &Continuous,
    stats: &Stats,
    progress: f64,
    mut stop_rx: watch::Receiver<bool>,
) -> Option<String> {
    // SIGUSR1 is the person's release of a hold: the deletes held at that instant go through.
    let mut usr1 = signal(SignalKind::user_defined1()).ok();
    // --progress was checked by sync_options.
    let quiet = progress <= 0.0;
    let every = if quiet {
        DEFAULT_PROGRESS
    } else {
        Duration::from_secs_f64(progress)
    };
    let mut seen = Seen::default();
    let mut tick = tokio::time::interval(TICK);
    let mut next_line = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop_rx.changed() => return None,
            _ = next(usr1.as_mut()) => release(run),
        }
        let snap = run.snapshot();
        seen.report_changes(&snap);
        if let Some((_, why)) = &snap.failed {
            return Some(why.clone());
        }
        if quiet || tokio::time::Instant::now() < next_line {
            continue;
        }
        next_line += every;
        seen.report_progress(&snap, stats);
    }
}

/// SIGUSR1: lets the deletes held now through.
fn release(run: &Continuous) {
    match run.snapshot().held {
        Some((_, h)) => match run.release(engine::Allowance::UpTo(h.deletes)) {
            Ok(()) => eprintln!(
                "continuous: deletion guard released by SIGUSR1: applying {} deletes",
                h.deletes
            ),
            Err(n) => eprintln!(
                "continuous: deletion guard: {n} deletes are held now, more than the {} released; send SIGUSR1 again",
                h.deletes
            ),
        },
        None => eprintln!("continuous: SIGUSR1: no deletes are held"),
    }
}

/// What was last reported, so that only changes are.
#[derive(Default)]
struct Seen {
    held: Option<u64>,
    state: Option<live::LiveState>,
    verify: Option<crate::continuous::VerifyOutcome>,
    repaired: u64,
    applied: u64,
    oversized: (usize, Vec<crate::engine::oversized::TooBig>),
}

impl Seen {
    /// A line for each change of hold, state, verification and repairs.
    fn report_changes(&mut self, snap: &Snapshot) {
        let held_now = snap.held.as_ref().map(|(_, h)| h.deletes);
        if held_now != self.held {
            match &snap.held {
                Some((_, h)) if self.held.is_none() => eprintln!(
                    "continuous: DELETES HELD: {}. Nothing of them was deleted; creates and updates go on. If the source really lost these nodes on purpose, release them with `kill -USR1 {}` (or restart with --allow-mass-delete).",
                    h.describe(),
                    std::process::id()
                ),
                Some((_, h)) => eprintln!("continuous: deletion guard: {} deletes held now", h.deletes),
                None => eprintln!("continuous: deletion guard: nothing held"),
            }
            self.held = held_now;
        }
        let oversized = (snap.oversized_count, snap.oversized.clone());
        if oversized != self.oversized {
            let named: Vec<String> = snap
                .oversized
                .iter()
                .map(|n| format!("{} ({} bytes)", n.path, n.size))
                .collect();
            match snap.oversized_limit {
                _ if snap.oversized_count == 0 => {
                    eprintln!("continuous: every source node fits the destination")
                }
                Some(limit) => eprintln!(
                    "continuous: LEFT OUT, too big for the destination (it takes requests of at most {limit} bytes; raise its jute.maxbuffer): {} nodes: {}",
                    snap.oversized_count,
                    named.join(", ")
                ),
                None => eprintln!(
                    "continuous: LEFT OUT, too big for --jute-maxbuffer: {} nodes: {}",
                    snap.oversized_count,
                    named.join(", ")
                ),
            }
            self.oversized = oversized;
        }
        if snap.state != self.state {
            if let Some(st) = snap.state {
                eprintln!("continuous: {st:?}: {}", snap.why);
            }
            self.state = snap.state;
        }
        if snap.last_verify != self.verify {
            if let Some(v) = &snap.last_verify {
                eprintln!("{}", verify_line(v));
            }
            self.verify = snap.last_verify.clone();
        }
        if snap.repaired_total != self.repaired {
            eprintln!(
                "verify: repaired {} divergent subtrees",
                snap.repaired_total - self.repaired
            );
            self.repaired = snap.repaired_total;
        }
    }

    /// The `--progress` line: changes applied and their lag since the last one.
    fn report_progress(&mut self, snap: &Snapshot, stats: &Stats) {
        let mut lags = stats.take_lags();
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        let p50 = live::quantile(&mut lags, 0.5);
        let p99 = live::quantile(&mut lags, 0.99);
        eprintln!(
            "continuous: applied {} (+{}), lag p50 {} p99 {}, now {}, full syncs {}, {}",
            snap.applied_total,
            snap.applied_total - self.applied,
            ms(p50),
            ms(p99),
            ms(Some(snap.lag(k8s_openapi::jiff::Timestamp::now()))),
            snap.full_syncs,
            if snap.caught_up {
                "caught up"
            } else {
                "catching up"
            }
        );
        self.applied = snap.applied_total;
    }
}

/// One line per lag-aware verification.
fn verify_line(v: &crate::continuous::VerifyOutcome) -> String {
    match &v.result {
        Err(e) => format!("verify: failed: {e}"),
        Ok(v) if v.in_sync => format!(
            "verify: IN SYNC ({} nodes, root hash {}, {} suspected and cleared as lag)",
            v.source_nodes,
            verifier::short_hash(&v.source_root_hash),
            v.suspected
        ),
        Ok(v) => format!(
            "verify: DIVERGED: {} confirmed, {} undecided{}{}",
            v.confirmed_count,
            v.undecided,
            if v.confirmed.is_empty() { "" } else { ": " },
            v.confirmed
                .iter()
                .map(|p| if p.is_empty() { "/" } else { p.as_str() })
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}
