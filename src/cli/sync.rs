//! `sync`: make the destination subtree equal to the source's, once (or, with
//! `--continuous`, see [`super::continuous`]).

use std::process::ExitCode;

use clap::Args;

use super::endpoints::Endpoints;
use super::flags::{seconds_or_zero, CliError};
use super::output::{fail, EXIT_DIVERGED};
use super::verify::{verify_trees, DEFAULT_MAX_PATHS};
use crate::engine::{self, SyncOptions, DEFAULT_JUTE_MAXBUFFER};

#[derive(Args, Debug)]
pub struct SyncArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Keep destination nodes that the source does not have.
    #[arg(long)]
    pub no_prune: bool,
    /// Report what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the verifier after the copy; exit 1 if the trees differ.
    #[arg(long)]
    pub verify: bool,
    /// The destination's jute.maxbuffer in bytes: no request is built above it.
    #[arg(long, default_value_t = DEFAULT_JUTE_MAXBUFFER, value_name = "BYTES")]
    pub jute_maxbuffer: usize,
    /// Bytes per multi transaction [default: half of --jute-maxbuffer].
    #[arg(long, value_name = "BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// Operations per multi transaction.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_batch_ops: usize,
    /// Transactions in flight.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_in_flight: usize,
    /// New passes after a lost connection or session before giving up.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub retries: u32,
    /// Create source nodes matching this glob (absolute source path; `*` one component, `**`
    /// any) as container nodes. Repeatable. Needed because ZooKeeper reports containers as
    /// persistent nodes to every client.
    #[arg(long = "container", value_name = "GLOB")]
    pub containers: Vec<String>,
    /// Create source nodes matching GLOB as TTL nodes with this TTL, GLOB=SECONDS. Repeatable.
    /// ZooKeeper reports TTL nodes as persistent to every client.
    #[arg(long = "ttl", value_name = "GLOB=SECONDS")]
    pub ttls: Vec<String>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub progress: f64,
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Keep the destination in step: a full sync, then every source change streamed through a
    /// persistent recursive watch, until SIGINT or SIGTERM.
    #[arg(long)]
    pub continuous: bool,
    /// With --continuous: run a full anti-entropy sync this often (0: only after a gap). ACL
    /// changes fire no ZooKeeper watch event, so this is what copies them.
    #[arg(
        long,
        default_value_t = 600.0,
        value_name = "SECONDS",
        requires = "continuous"
    )]
    pub resync_interval: f64,
    /// With --continuous: verify this often (0: never). Lag-aware: a difference counts only
    /// when it is still there twice after the stream caught up, with the source unchanged.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "SECONDS",
        requires = "continuous"
    )]
    pub verify_interval: f64,
    /// With --verify-interval: re-sync the paths the verifier confirmed divergent.
    #[arg(long, requires = "verify_interval")]
    pub repair: bool,
    /// With --continuous: serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR", requires = "continuous")]
    pub listen: Option<std::net::SocketAddr>,
    /// With --listen: the `name` label of the metrics (the namespace label is `cli`).
    #[arg(long, default_value = "continuous", requires = "listen")]
    pub name: String,
    /// With --continuous: the lag objective (RPO) in seconds, exported as
    /// resiliency_sync_max_lag_seconds for the alert rules.
    #[arg(
        long,
        default_value_t = 60.0,
        value_name = "SECONDS",
        requires = "continuous"
    )]
    pub max_lag: f64,
    /// With --continuous: rewrite this source znode (under the root) with the time every
    /// --heartbeat-interval seconds, so lag is measured end to end even when idle.
    #[arg(long, value_name = "PATH", requires = "continuous")]
    pub heartbeat: Option<String>,
    /// With --continuous: apply each change only once it is this many seconds old at the
    /// source, so a destructive change can be stopped (stop the stream) before it reaches
    /// the copy. The lag objective becomes --max-lag plus this; there is no periodic re-walk.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "SECONDS",
        requires = "continuous"
    )]
    pub apply_delay: f64,
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "SECONDS",
        requires = "heartbeat"
    )]
    pub heartbeat_interval: f64,
}

/// The deletion guard's flags (`sync`, `sync --continuous`).
#[derive(Args, Debug, Clone)]
pub struct GuardArgs {
    /// Deletion guard: hold all deletes of a pass (or, with --continuous, of a sliding window)
    /// that would delete more than N destination nodes and more than --max-delete-percent of
    /// the destination tree. 0 turns this limit off.
    #[arg(long, default_value_t = engine::guard::DEFAULT_MAX_DELETES, value_name = "N")]
    pub max_deletes: u64,
    /// Deletion guard: the share of the destination tree, in percent. 0 turns this limit off
    /// (both 0: no guard).
    #[arg(long, default_value_t = engine::guard::DEFAULT_MAX_DELETE_PERCENT, value_name = "PERCENT")]
    pub max_delete_percent: f64,
    /// With --continuous: every delete waits this long, so a whole burst is counted before any
    /// of it lands (0: at once, letting up to the limits of a burst through).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub delete_delay: f64,
    /// Let every delete through, however many: the release of a hold after you checked that
    /// the source really lost those nodes on purpose. With --continuous it covers the first
    /// full sync and the first burst; a running stream is released with SIGUSR1.
    #[arg(long)]
    pub allow_mass_delete: bool,
}

impl GuardArgs {
    pub fn guard(&self) -> Result<engine::DeletionGuard, CliError> {
        let p = self.max_delete_percent;
        if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
            return Err(CliError::InvalidFlag {
                flag: "--max-delete-percent",
                message: format!("{p} is not a percentage from 0 to 100"),
            });
        }
        Ok(engine::DeletionGuard {
            max_deletes: self.max_deletes,
            max_delete_percent: p,
            allowance: if self.allow_mass_delete {
                engine::Allowance::Unlimited
            } else {
                engine::Allowance::None
            },
            hold_all: false,
        })
    }
}

/// Exit code of a `sync` whose deletes the guard held (0 success, 1 divergence, 2 error).
pub const EXIT_DELETES_HELD: u8 = 3;

/// What a person reads when the guard held deletes on the command line.
pub fn held_hint(held: &engine::Held) -> String {
    let done = match held.reason {
        engine::HoldReason::SourceEmpty => "Nothing was written",
        engine::HoldReason::MassDeletion => "Nothing was deleted; creates and updates were applied",
    };
    format!(
        "deletion guard: {}. {done}. If the source really lost these nodes on purpose, run again with --allow-mass-delete (or raise --max-deletes / --max-delete-percent).",
        held.describe()
    )
}

/// Below this no request fits, whatever the data.
pub(super) const MIN_JUTE_MAXBUFFER: usize = 1024;
/// ZooKeeper's largest TTL: 40 bits of milliseconds.
const MAX_TTL_MS: i64 = 0xFF_FFFF_FFFF;

/// Builds the engine options from `sync` flags.
pub fn sync_options(a: &SyncArgs) -> Result<SyncOptions, CliError> {
    let e = &a.endpoints;
    let (source, destination) = e.connect_options()?;
    let mut o = SyncOptions::new(
        source,
        e.root_path.clone(),
        destination,
        e.destination_root(),
    );
    o.prune = !a.no_prune;
    o.copy_acl = !e.no_acl;
    o.ephemerals = e.ephemerals.into();
    o.dry_run = a.dry_run;
    o.read_window = e.read_window.max(1);
    o.retries = a.retries;
    if a.jute_maxbuffer < MIN_JUTE_MAXBUFFER {
        return Err(CliError::InvalidFlag {
            flag: "--jute-maxbuffer",
            message: format!("{} bytes is too small for any request", a.jute_maxbuffer),
        });
    }
    o.writer.jute_maxbuffer = a.jute_maxbuffer;
    o.writer.max_batch_bytes = a.max_batch_bytes.unwrap_or(a.jute_maxbuffer / 2);
    if o.writer.max_batch_bytes >= a.jute_maxbuffer {
        return Err(CliError::InvalidFlag {
            flag: "--max-batch-bytes",
            message: format!(
                "{} must stay below --jute-maxbuffer ({})",
                o.writer.max_batch_bytes, a.jute_maxbuffer
            ),
        });
    }
    o.writer.max_batch_ops = a.max_batch_ops.max(1);
    o.writer.max_in_flight = a.max_in_flight.max(1);
    let progress = seconds_or_zero("--progress", a.progress)?;
    o.progress_every = (!progress.is_zero()).then_some(progress);
    o.guard = a.guard.guard()?;
    o.type_rules = type_rules(a)?;
    Ok(o)
}

/// `--container` rules, then `--ttl` ones.
fn type_rules(a: &SyncArgs) -> Result<Vec<engine::TypeRule>, CliError> {
    let mut rules = Vec::new();
    for glob in &a.containers {
        rules.push(
            engine::TypeRule::new(glob, verifier::NodeKind::Container).map_err(|e| {
                CliError::InvalidFlag {
                    flag: "--container",
                    message: format!("{glob:?} is not a valid glob: {e}"),
                }
            })?,
        );
    }
    for spec in &a.ttls {
        rules.push(ttl_rule(spec)?);
    }
    Ok(rules)
}

/// One `--ttl GLOB=SECONDS`.
fn ttl_rule(spec: &str) -> Result<engine::TypeRule, CliError> {
    let bad = |message: String| CliError::InvalidFlag {
        flag: "--ttl",
        message,
    };
    let (glob, secs) = spec
        .rsplit_once('=')
        .ok_or_else(|| bad(format!("{spec:?} must be GLOB=SECONDS")))?;
    let secs: f64 = secs
        .parse()
        .map_err(|_| bad(format!("{secs:?} in {spec:?} is not a number of seconds")))?;
    let ttl_ms = (secs * 1000.0).round() as i64;
    if !(1..=MAX_TTL_MS).contains(&ttl_ms) {
        return Err(bad(format!("TTL {secs}s in {spec:?} is out of range")));
    }
    engine::TypeRule::new(glob, verifier::NodeKind::Ttl { ttl_ms })
        .map_err(|e| bad(format!("{glob:?} is not a valid glob: {e}")))
}

pub async fn run_sync(a: SyncArgs) -> ExitCode {
    let json = a.endpoints.json;
    let opts = match sync_options(&a) {
        Ok(o) => o,
        Err(e) => return fail(json, &e),
    };
    if a.continuous {
        return super::continuous::run_continuous(&a, opts).await;
    }
    let summary = match engine::sync(&opts).await {
        Ok(s) => s,
        Err(e) => return fail(json, &e),
    };
    let report = if a.verify && !a.dry_run {
        match verify_trees(&a.endpoints, DEFAULT_MAX_PATHS).await {
            Ok(r) => Some(r),
            Err(e) => return fail(json, e.as_ref()),
        }
    } else {
        None
    };
    if json {
        let doc = serde_json::json!({ "ok": true, "sync": summary, "verify": report });
        println!("{doc}");
    } else {
        print!("{}", summary.render());
        if let Some(r) = &report {
            print!("{}", r.render());
        }
    }
    if let Some(h) = &summary.held {
        eprintln!("{}", held_hint(h));
        // A dry run exits the same way, so a script learns the guard would trip.
        return ExitCode::from(EXIT_DELETES_HELD);
    }
    match report {
        Some(r) if !r.equal => ExitCode::from(EXIT_DIVERGED),
        _ => ExitCode::SUCCESS,
    }
}
