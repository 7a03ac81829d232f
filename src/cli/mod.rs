//! Command line: `sync` and `verify` against live ensembles, `run -f` (standalone), `crd`, and
//! `operator` (the Kubernetes controllers).

pub mod backup;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use verifier::{
    ConnectOptions, DigestAuth, EphemeralPolicy, HashOptions, VerifyOptions, WalkOptions,
};

use crate::engine::{self, SyncOptions, DEFAULT_JUTE_MAXBUFFER};

#[derive(Parser, Debug)]
#[command(
    name = "resiliency-operator",
    version,
    about = "Replicates Apache ZooKeeper trees and proves the copy is right"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make the destination subtree equal to the source subtree, once (or continuously with
    /// --continuous).
    Sync(Box<SyncArgs>),
    /// Compare two subtrees: exit 0 when equal, 1 when they diverge, 2 on error.
    Verify(VerifyArgs),
    /// Run the manifests in files (Secrets, Databases, Synchronizations, SynchronizationPlans,
    /// LiveSynchronizations) without Kubernetes: exit 0 when every Synchronization succeeded
    /// with equal trees and no LiveSynchronization failed or diverged. Plans and
    /// LiveSynchronizations run until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions, or write them to a directory (one file each plus
    /// crds.yaml).
    Crd(CrdArgs),
    /// Run the Kubernetes controllers (client config from KUBECONFIG or in-cluster).
    Operator(OperatorArgs),
    /// Snapshot a subtree to a directory, S3 or GCS (compressed, with a manifest holding its
    /// verifier root hash).
    Backup(backup::BackupArgs),
    /// Restore a snapshot into an absent or empty path, checked before anything is written
    /// and verified against the manifest after.
    Restore(backup::RestoreArgs),
    /// List the snapshots at a location.
    Snapshots(backup::SnapshotsArgs),
}

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Controllers to run, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "database,synchronization,synchronizationplan"
    )]
    pub controllers: Vec<crate::operator::ControllerGroup>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "RESILIENCY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Namespace of the leader-election Leases (one per controller).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "resiliency-operator",
        value_name = "NAMESPACE"
    )]
    pub leader_election_namespace: String,
    /// This replica's identity in the Leases (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Act without a Lease. Only safe when a single replica runs, e.g. on a laptop.
    #[arg(long)]
    pub no_leader_election: bool,
}

pub async fn run_operator(a: OperatorArgs) -> ExitCode {
    let metrics = match crate::metrics::install() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
            None
        }
    };
    let identity = a.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "resiliency-operator".into());
        format!("{host}-{}", std::process::id())
    });
    let mut controllers = a.controllers;
    controllers.dedup();
    let settings = crate::operator::Settings {
        controllers,
        listen: a.listen,
        lease_namespace: (!a.no_leader_election).then_some(a.leader_election_namespace),
        identity,
    };
    match crate::operator::run(settings, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(false, &e),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Manifest files or directories (YAML, several documents per file allowed).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

pub async fn run_standalone(a: RunArgs) -> ExitCode {
    let manifests = match crate::standalone::load(&a.files) {
        Ok(m) => m,
        Err(e) => return fail(false, &e),
    };
    match crate::standalone::run(manifests).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(false, &e),
    }
}

#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Write the files here (e.g. crds/) instead of printing one YAML stream.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

pub fn run_crd(a: CrdArgs) -> ExitCode {
    match write_crds(a.output_dir.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_crds(dir: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
    let all = crate::api::crds_yaml()?;
    let Some(dir) = dir else {
        print!("{all}");
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    for crd in crate::api::all_crds() {
        let text = format!("---\n{}", serde_norway::to_string(&crd)?);
        std::fs::write(dir.join(crate::api::crd_file_name(&crd)), text)?;
    }
    std::fs::write(dir.join("crds.yaml"), all)?;
    // Lets deploy/kubernetes include the CRDs (kustomize loads no file outside a directory).
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - crds.yaml\n",
    )?;
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Source ensemble, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub source: String,
    /// Destination ensemble, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub destination: String,
    /// Root of the subtree on the source.
    #[arg(long, value_name = "PATH")]
    pub root_path: String,
    /// Root of the subtree on the destination [default: --root-path].
    #[arg(long, value_name = "PATH")]
    pub destination_root_path: Option<String>,
    /// Source digest credentials, user:password.
    #[arg(
        long,
        env = "RESILIENCY_SOURCE_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub source_auth: Option<String>,
    /// File holding the source user:password (keeps it out of shell history); wins over
    /// --source-auth and RESILIENCY_SOURCE_AUTH.
    #[arg(long, value_name = "FILE")]
    pub source_auth_file: Option<PathBuf>,
    /// Destination digest credentials, user:password.
    #[arg(
        long,
        env = "RESILIENCY_DESTINATION_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub destination_auth: Option<String>,
    /// File holding the destination user:password.
    #[arg(long, value_name = "FILE")]
    pub destination_auth_file: Option<PathBuf>,
    /// Seconds to wait for a session before calling an ensemble unreachable.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// ZooKeeper session timeout in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub session_timeout: f64,
    /// Do not compare or copy ACLs.
    #[arg(long)]
    pub no_acl: bool,
    /// What to do with ephemeral source nodes.
    #[arg(long, value_enum, default_value_t = Ephemerals::Skip)]
    pub ephemerals: Ephemerals,
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Nodes read concurrently from each ensemble.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub read_window: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemerals {
    /// Leave ephemeral nodes out.
    Skip,
    /// Copy them as persistent nodes.
    Persistent,
}

impl From<Ephemerals> for EphemeralPolicy {
    fn from(e: Ephemerals) -> Self {
        match e {
            Ephemerals::Skip => EphemeralPolicy::Skip,
            Ephemerals::Persistent => EphemeralPolicy::Persistent,
        }
    }
}

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

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Divergent paths to list (all are counted).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_paths: usize,
}

/// Errors of the command line itself (bad flags, unreadable files).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{flag}: {message}")]
    InvalidFlag { flag: &'static str, message: String },
    #[error("{0}")]
    Stream(String),
    #[error("{flag}: cannot read {path}: {source}")]
    AuthFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn auth(
    flag: &'static str,
    file_flag: &'static str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<DigestAuth>, CliError> {
    // An explicit file wins over the flag or its environment variable.
    let text = match (file, inline) {
        (Some(p), _) => std::fs::read_to_string(p).map_err(|source| CliError::AuthFile {
            flag: file_flag,
            path: p.clone(),
            source,
        })?,
        (None, Some(s)) => s.clone(),
        (None, None) => return Ok(None),
    };
    DigestAuth::parse(text.trim())
        .map(Some)
        .map_err(|message| CliError::InvalidFlag { flag, message })
}

/// A duration flag where 0 means "off" (or "at once"): refuses negative, non-finite and
/// absurd values with a message instead of a panic.
pub(crate) fn seconds_or_zero(flag: &'static str, v: f64) -> Result<Duration, CliError> {
    if v == 0.0 {
        Ok(Duration::ZERO)
    } else {
        seconds(flag, v).map_err(|_| CliError::InvalidFlag {
            flag,
            message: format!("{v} is not a number of seconds from 0 to ten years"),
        })
    }
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
                .max(Duration::from_millis(100)),
        })
    }
}

pub(crate) fn seconds(flag: &'static str, v: f64) -> Result<Duration, CliError> {
    // Ten years at most: Duration::from_secs_f64 panics on values past its range.
    if v.is_finite() && v > 0.0 && v < 3.2e8 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(CliError::InvalidFlag {
            flag,
            message: format!("{v} is not a positive number of seconds"),
        })
    }
}

impl Endpoints {
    fn connect_options(&self) -> Result<(ConnectOptions, ConnectOptions), CliError> {
        let connect = seconds("--connect-timeout", self.connect_timeout)?;
        let session = seconds("--session-timeout", self.session_timeout)?;
        let mk = |servers: &str, auth| ConnectOptions {
            servers: servers.to_string(),
            auth,
            session_timeout: session,
            connect_timeout: connect,
        };
        Ok((
            mk(
                &self.source,
                auth(
                    "--source-auth",
                    "--source-auth-file",
                    &self.source_auth,
                    &self.source_auth_file,
                )?,
            ),
            mk(
                &self.destination,
                auth(
                    "--destination-auth",
                    "--destination-auth-file",
                    &self.destination_auth,
                    &self.destination_auth_file,
                )?,
            ),
        ))
    }

    fn destination_root(&self) -> String {
        self.destination_root_path
            .clone()
            .unwrap_or_else(|| self.root_path.clone())
    }

    fn verify_options(&self, max_paths: usize) -> VerifyOptions {
        VerifyOptions {
            walk: WalkOptions {
                hash: HashOptions { acl: !self.no_acl },
                ephemerals: self.ephemerals.into(),
                window: self.read_window,
            },
            max_paths,
        }
    }
}

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
    if a.jute_maxbuffer < 1024 {
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
    for glob in &a.containers {
        o.type_rules.push(
            engine::TypeRule::new(glob, verifier::NodeKind::Container).map_err(|e| {
                CliError::InvalidFlag {
                    flag: "--container",
                    message: format!("{glob:?} is not a valid glob: {e}"),
                }
            })?,
        );
    }
    for spec in &a.ttls {
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
        if !(1..=0xFF_FFFF_FFFF).contains(&ttl_ms) {
            return Err(bad(format!("TTL {secs}s in {spec:?} is out of range")));
        }
        o.type_rules.push(
            engine::TypeRule::new(glob, verifier::NodeKind::Ttl { ttl_ms })
                .map_err(|e| bad(format!("{glob:?} is not a valid glob: {e}")))?,
        );
    }
    Ok(o)
}

pub(crate) fn fail(json: bool, err: &dyn std::error::Error) -> ExitCode {
    let msg = crate::runs::cause_chain(err);
    if json {
        println!("{}", serde_json::json!({ "ok": false, "error": msg }));
    }
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

pub async fn run_sync(a: SyncArgs) -> ExitCode {
    let json = a.endpoints.json;
    let opts = match sync_options(&a) {
        Ok(o) => o,
        Err(e) => return fail(json, &e),
    };
    if a.continuous {
        return run_continuous(&a, opts).await;
    }
    let summary = match engine::sync(&opts).await {
        Ok(s) => s,
        Err(e) => return fail(json, &e),
    };
    let report = if a.verify && !a.dry_run {
        match verify_trees(&a.endpoints, 1000).await {
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
        Some(r) if !r.equal => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

async fn verify_trees(
    e: &Endpoints,
    max_paths: usize,
) -> Result<verifier::Report, Box<dyn std::error::Error>> {
    let root = e.root_path.clone();
    let dst_root = e.destination_root();
    verifier::path::validate_root("--root-path", &root)?;
    verifier::path::validate_root("--destination-root-path", &dst_root)?;
    let (s, d) = e.connect_options()?;
    let n = verifier::zk::READ_SESSIONS;
    let (src, dst) = tokio::join!(
        verifier::connect_pool("source", &s, n),
        verifier::connect_pool("destination", &d, n)
    );
    let (src, dst) = (src?, dst?);
    Ok(verifier::verify(&src, &root, &dst, &dst_root, e.verify_options(max_paths)).await?)
}

pub async fn run_verify(a: VerifyArgs) -> ExitCode {
    let json = a.endpoints.json;
    match verify_trees(&a.endpoints, a.max_paths).await {
        Err(e) => fail(json, e.as_ref()),
        Ok(r) => {
            if json {
                println!("{}", serde_json::json!(r));
            } else {
                print!("{}", r.render());
            }
            if r.equal {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `sync --continuous`: streams until SIGINT or SIGTERM, printing state changes, every
/// `--progress` seconds the changes applied and their lag, and each verification's verdict.
async fn run_continuous(a: &SyncArgs, mut opts: SyncOptions) -> ExitCode {
    use crate::continuous::{Continuous, ContinuousOptions, HeartbeatOptions};
    use crate::engine::live::{self, LiveOptions, Stats};
    use std::sync::Arc;
    // The full syncs inside the stream print no progress of their own.
    opts.progress_every = None;
    let f = match LiveFlags::of(a) {
        Ok(f) => f,
        Err(e) => return fail(a.endpoints.json, &e),
    };
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
        if let Err(e) = verifier::path::validate_root("--heartbeat", path) {
            return fail(a.endpoints.json, &e);
        }
        if !verifier::path::is_within(&co.live.sync.source_root, path) {
            let e = CliError::InvalidFlag {
                flag: "--heartbeat",
                message: format!(
                    "{path} is not under the source root {}: it would not be replicated",
                    co.live.sync.source_root
                ),
            };
            return fail(a.endpoints.json, &e);
        }
        co.heartbeat = Some(HeartbeatOptions {
            path: path.clone(),
            interval: f.heartbeat,
        });
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        let _ = stop_tx.send(true);
    });
    if let Some(addr) = a.listen {
        let handle = match crate::metrics::install() {
            Ok(h) => h,
            Err(e) => return fail(a.endpoints.json, &e),
        };
        let listener = match crate::serve::http::bind(addr).await {
            Ok(l) => l,
            Err(e) => return fail(a.endpoints.json, &e),
        };
        let health = Arc::new(crate::serve::http::Health::default());
        health.set_ready();
        let upkeep = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
        let router = crate::serve::http::router(health, Some(handle));
        tokio::spawn(crate::serve::http::serve(
            listener,
            router,
            std::future::pending(),
        ));
    }
    // Created after the recorder is installed, so the objective gauge lands in it.
    let live_metrics = Arc::new(crate::metrics::LiveMetrics::new("cli", &a.name, co.max_lag));
    let stats = Arc::new(Stats::default());
    let run = Continuous::start(co, vec![stats.clone()], Some(live_metrics));
    // SIGUSR1 is the person's release of a hold: the deletes held at that instant go through.
    let mut usr1 =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    let mut last_held: Option<u64> = None;
    // --progress was checked by sync_options.
    let every = Duration::from_secs_f64(if a.progress > 0.0 { a.progress } else { 2.0 });
    let quiet = a.progress <= 0.0;
    let mut last_state = None;
    let mut last_total = 0;
    let mut last_verify = None;
    let mut last_repaired = 0;
    let mut failed = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut next_line = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop_rx.changed() => break,
            _ = async { match usr1.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                match run.snapshot().held {
                    Some((_, h)) => match run.release(engine::Allowance::UpTo(h.deletes)) {
                        Ok(()) => eprintln!("continuous: deletion guard released by SIGUSR1: applying {} deletes", h.deletes),
                        Err(n) => eprintln!("continuous: deletion guard: {n} deletes are held now, more than the {} released; send SIGUSR1 again", h.deletes),
                    },
                    None => eprintln!("continuous: SIGUSR1: no deletes are held"),
                }
            }
        }
        let snap = run.snapshot();
        let held_now = snap.held.as_ref().map(|(_, h)| h.deletes);
        if held_now != last_held {
            match &snap.held {
                Some((_, h)) if last_held.is_none() => eprintln!(
                    "continuous: DELETES HELD: {}. Nothing of them was deleted; creates and updates go on. If the source really lost these nodes on purpose, release them with `kill -USR1 {}` (or restart with --allow-mass-delete).",
                    h.describe(),
                    std::process::id()
                ),
                Some((_, h)) => eprintln!("continuous: deletion guard: {} deletes held now", h.deletes),
                None => eprintln!("continuous: deletion guard: nothing held"),
            }
            last_held = held_now;
        }
        if snap.state != last_state {
            if let Some(st) = snap.state {
                eprintln!("continuous: {st:?}: {}", snap.why);
            }
            last_state = snap.state;
        }
        if snap.last_verify != last_verify {
            if let Some(v) = &snap.last_verify {
                eprintln!("{}", verify_line(v));
            }
            last_verify = snap.last_verify.clone();
        }
        if snap.repaired_total != last_repaired {
            eprintln!(
                "verify: repaired {} divergent subtrees",
                snap.repaired_total - last_repaired
            );
            last_repaired = snap.repaired_total;
        }
        if let Some((_, why)) = &snap.failed {
            failed = Some(why.clone());
            break;
        }
        if quiet || tokio::time::Instant::now() < next_line {
            continue;
        }
        next_line += every;
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
            snap.applied_total - last_total,
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
        last_total = snap.applied_total;
    }
    let result = run.stop().await;
    match (result, failed) {
        (Err(e), _) => fail(a.endpoints.json, &e),
        (Ok(()), Some(why)) => fail(a.endpoints.json, &CliError::Stream(why)),
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
