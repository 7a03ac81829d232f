//! The replication engine: makes a destination subtree equal to a source subtree.
//!
//! It knows nothing of Kubernetes (its crate has no Kubernetes dependency): the CLI, the
//! standalone mode and the controllers all drive it through [`SyncOptions`] and [`sync`].

pub mod claim;
mod copy;
pub mod error;
pub mod guard;
pub mod judge;
pub mod live;
pub mod oversized;
pub mod plan;
pub mod progress;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use verifier::model::{is_sequential_name, NodeKind};
use verifier::Side;
use verifier::{ConnectOptions, EphemeralPolicy};

pub use error::SyncError;
pub use guard::{Allowance, DeletionGuard, Held, HoldReason};
pub use progress::Progress;
pub use writer::WriterConfig;

/// Dry runs list at most this many planned changes.
pub const MAX_LISTED_CHANGES: usize = 1000;

/// ZooKeeper's default jute.maxbuffer (0xfffff).
pub const DEFAULT_JUTE_MAXBUFFER: usize = 0xfffff;

/// Everything a copy needs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub source: ConnectOptions,
    pub destination: ConnectOptions,
    pub source_root: String,
    pub destination_root: String,
    /// Delete destination nodes that the source does not have.
    pub prune: bool,
    /// Copy ACLs exactly; when off, created nodes are open and existing ACLs are left alone.
    pub copy_acl: bool,
    pub ephemerals: EphemeralPolicy,
    /// Plan and report, write nothing.
    pub dry_run: bool,
    /// Nodes read concurrently.
    pub read_window: usize,
    pub writer: WriterConfig,
    /// Bytes of planned but unacknowledged writes held in memory.
    pub memory_budget_bytes: usize,
    /// New passes after a lost connection or session.
    pub retries: u32,
    /// Print a progress line to stderr this often.
    pub progress_every: Option<Duration>,
    /// Which source nodes are containers or TTL nodes. The server reports both as persistent
    /// to every client (it zeroes their ephemeralOwner), so the copier cannot see them.
    pub type_rules: Vec<TypeRule>,
    /// Mass deletions are held (see [`guard`]).
    pub guard: DeletionGuard,
    /// Who this copy is, in the writer claim other copies see (see [`claim`]).
    pub holder: String,
    /// The destination is an old primary a switchover fenced: every ACL written is the fenced
    /// form of the source's (see [`crate::switchover::fence`]), so it stays read-only for all
    /// but this digest identity (`user:hash`, the destination's credentials) while it is a
    /// replica. Verification compares the source's ACLs in that form.
    pub fence_destination: Option<String>,
    /// Nodes whose write would be longer than `writer.jute_maxbuffer` are left out and listed
    /// in the summary ([`SyncSummary::too_big`]) instead of failing the copy: a stream's full
    /// syncs and repairs, which must go on (see [`oversized`]).
    pub leave_out_too_big: bool,
    /// ACLs already read of both ensembles (a stream's verifier's, see
    /// [`verifier::VerifyCache`]): a pass asks for the ACL only of nodes whose stat shows it
    /// changed since. `None`: every ACL is read. Only for caches of these two ensembles.
    pub acl_cache: Option<verifier::VerifyCache>,
}

/// Creates source nodes whose absolute path matches `pattern` as `kind` on the destination.
#[derive(Clone, Debug)]
pub struct TypeRule {
    pub pattern: String,
    matcher: globset::GlobMatcher,
    pub kind: NodeKind,
}

impl TypeRule {
    /// `pattern` is a glob over absolute source paths: `*` stays within one path component,
    /// `**` spans any number.
    pub fn new(pattern: &str, kind: NodeKind) -> Result<TypeRule, globset::Error> {
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()?
            .compile_matcher();
        Ok(TypeRule {
            pattern: pattern.to_string(),
            matcher,
            kind,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }
}

/// Kind a destination node must be created with: the first matching rule decides for nodes the
/// source reports as persistent.
pub fn kind_for(rules: &[TypeRule], source_path: &str, reported: NodeKind) -> NodeKind {
    if reported != NodeKind::Persistent {
        return reported;
    }
    rules
        .iter()
        .find(|r| r.matches(source_path))
        .map_or(reported, |r| r.kind)
}

/// What a client can see of a kind: containers and TTL nodes read as persistent.
pub fn observable(kind: NodeKind) -> NodeKind {
    match kind {
        NodeKind::Ephemeral => NodeKind::Ephemeral,
        _ => NodeKind::Persistent,
    }
}

impl SyncOptions {
    /// The ACL a destination node gets for a source node carrying `acl`: `acl` itself, or
    /// its fenced form when the destination is kept fenced.
    pub fn destination_acl(&self, acl: Vec<verifier::AclEntry>) -> Vec<verifier::AclEntry> {
        match &self.fence_destination {
            Some(id) => crate::switchover::fence::fenced_acl(&acl, id),
            None => acl,
        }
    }

    pub fn new(
        source: ConnectOptions,
        source_root: impl Into<String>,
        destination: ConnectOptions,
        destination_root: impl Into<String>,
    ) -> SyncOptions {
        SyncOptions {
            source,
            destination,
            source_root: source_root.into(),
            destination_root: destination_root.into(),
            prune: true,
            copy_acl: true,
            ephemerals: EphemeralPolicy::Skip,
            dry_run: false,
            read_window: 1024,
            writer: WriterConfig {
                max_batch_bytes: DEFAULT_JUTE_MAXBUFFER / 2,
                max_batch_ops: 1000,
                max_in_flight: 8,
                jute_maxbuffer: DEFAULT_JUTE_MAXBUFFER,
            },
            memory_budget_bytes: 64 << 20,
            retries: 5,
            progress_every: None,
            type_rules: Vec::new(),
            guard: DeletionGuard::default(),
            holder: default_holder(),
            fence_destination: None,
            leave_out_too_big: false,
            acl_cache: None,
        }
    }

    /// `acl_cache` if it is of these two ensembles.
    pub fn acl_cache(&self) -> Option<&verifier::VerifyCache> {
        self.acl_cache
            .as_ref()
            .filter(|c| c.is_of(&self.source.servers, &self.destination.servers))
    }

    pub(crate) fn source_identity(&self) -> String {
        identity(&self.source)
    }

    pub(crate) fn destination_identity(&self) -> String {
        identity(&self.destination)
    }
}

/// `resiliency-operator (pid N on HOST)`: enough for a person to find the process.
fn default_holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into());
    format!("resiliency-operator (pid {} on {host})", std::process::id())
}

fn identity(c: &ConnectOptions) -> String {
    match &c.auth {
        Some(a) => format!("digest user {:?}", a.user),
        None => "an unauthenticated client".to_string(),
    }
}

/// Nodes per kind. Sequential nodes are persistent nodes with a sequence suffix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    pub persistent: u64,
    pub sequential: u64,
    pub container: u64,
    pub ttl: u64,
    pub ephemeral: u64,
}

impl KindCounts {
    pub fn add(&mut self, kind: NodeKind, name: &str) {
        match kind {
            NodeKind::Persistent if is_sequential_name(name) => self.sequential += 1,
            NodeKind::Persistent => self.persistent += 1,
            NodeKind::Container => self.container += 1,
            NodeKind::Ttl { .. } => self.ttl += 1,
            NodeKind::Ephemeral => self.ephemeral += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.persistent + self.sequential + self.container + self.ttl + self.ephemeral
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    pub op: &'static str,
    pub path: String,
}

/// What a copy did (or, in a dry run, would do). Counts cover the final pass; write totals
/// cover all passes.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    pub source_root: String,
    pub destination_root: String,
    pub dry_run: bool,
    pub source_nodes: u64,
    pub created: KindCounts,
    pub updated: KindCounts,
    pub deleted: KindCounts,
    pub skipped: KindCounts,
    /// Nodes deleted and created again because their kind differed.
    pub replaced: u64,
    pub acl_updated: u64,
    /// Parents whose cversion was raised to the source's.
    pub cversion_raised: u64,
    pub ancestors_created: u64,
    /// Kind differences left alone because pruning is off.
    pub kind_conflicts: u64,
    /// Source subtrees left out because their destination path is reserved: a destination
    /// root of `/` never receives a source child called `zookeeper` (the server's own tree).
    pub reserved: u64,
    /// With [`SyncOptions::leave_out_too_big`]: nodes left out because their write would be
    /// longer than the destination takes (each is bigger than that limit, so there are few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub too_big: Vec<oversized::TooBig>,
    pub write_ops: u64,
    pub batches: u64,
    pub bytes_written: u64,
    pub attempts: u32,
    pub duration_seconds: f64,
    /// Deletes the guard held (nothing of them was written), when it tripped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Dry run only: the planned changes, in order (at most [`MAX_LISTED_CHANGES`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PlannedChange>,
}

impl SyncSummary {
    fn new(opts: &SyncOptions) -> SyncSummary {
        SyncSummary {
            source_root: opts.source_root.clone(),
            destination_root: opts.destination_root.clone(),
            dry_run: opts.dry_run,
            ..SyncSummary::default()
        }
    }

    /// True when the destination needed no change.
    pub fn unchanged(&self) -> bool {
        self.created.total() == 0
            && self.updated.total() == 0
            && self.deleted.total() == 0
            && self.acl_updated == 0
            && self.cversion_raised == 0
            && self.ancestors_created == 0
    }

    pub fn render(&self) -> String {
        let k = |c: &KindCounts| {
            format!(
                "{} (persistent {}, sequential {}, container {}, ttl {}, ephemeral {})",
                c.total(),
                c.persistent,
                c.sequential,
                c.container,
                c.ttl,
                c.ephemeral
            )
        };
        let mut s = String::new();
        if self.dry_run {
            s.push_str("DRY RUN: nothing was written; this is what a sync would do\n");
        }
        s.push_str(&format!(
            "{} -> {}: {} source nodes in {:.3}s ({:.0} nodes/s)\n",
            self.source_root,
            self.destination_root,
            self.source_nodes,
            self.duration_seconds,
            self.source_nodes as f64 / self.duration_seconds.max(1e-9)
        ));
        s.push_str(&format!("  created: {}\n", k(&self.created)));
        s.push_str(&format!("  updated: {}\n", k(&self.updated)));
        s.push_str(&format!("  deleted: {}\n", k(&self.deleted)));
        s.push_str(&format!("  skipped: {}\n", k(&self.skipped)));
        s.push_str(&format!(
            "  ACLs set: {}, kinds replaced: {}, cversions raised: {}, ancestors created: {}\n",
            self.acl_updated, self.replaced, self.cversion_raised, self.ancestors_created
        ));
        if self.kind_conflicts > 0 {
            s.push_str(&format!(
                "  WARNING: {} nodes differ in kind and were not replaced (pruning is off)\n",
                self.kind_conflicts
            ));
        }
        if !self.too_big.is_empty() {
            s.push_str(&format!(
                "  WARNING: {} nodes left out: too big for the destination's jute.maxbuffer ({})\n",
                self.too_big.len(),
                self.too_big
                    .iter()
                    .take(10)
                    .map(|n| format!("{} {} bytes", n.path, n.size))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.reserved > 0 {
            s.push_str(&format!(
                "  WARNING: {} source subtrees left out: their destination path is ZooKeeper's own /zookeeper\n",
                self.reserved
            ));
        }
        s.push_str(&format!(
            "  writes: {} ops in {} transactions, {} data bytes, {} attempt(s)\n",
            self.write_ops, self.batches, self.bytes_written, self.attempts
        ));
        if let Some(h) = &self.held {
            let verb = if self.dry_run {
                "would be HELD"
            } else {
                "HELD"
            };
            s.push_str(&format!("  DELETES {verb}: {}\n", h.describe()));
        }
        for c in &self.changes {
            s.push_str(&format!("  would {} {}\n", c.op, c.path));
        }
        s
    }
}

/// Checks what can be checked without a server.
pub fn validate(opts: &SyncOptions) -> Result<(), SyncError> {
    verifier::path::validate_root("source root path", &opts.source_root)?;
    verifier::path::validate_root("destination root path", &opts.destination_root)?;
    let norm = |s: &str| {
        let mut v: Vec<String> = s.split(',').map(|x| x.trim().to_lowercase()).collect();
        v.sort();
        v
    };
    if norm(&opts.source.servers) == norm(&opts.destination.servers)
        && verifier::path::overlaps(&opts.source_root, &opts.destination_root)
    {
        return Err(SyncError::Overlap {
            source_root: opts.source_root.clone(),
            destination_root: opts.destination_root.clone(),
        });
    }
    Ok(())
}

/// Makes the destination subtree equal to the source subtree.
///
/// Nothing is written before both roots were read with the given credentials. A lost
/// connection or session starts a new pass on fresh sessions (a pass only converges, so
/// repeating one is safe), up to `opts.retries` times; then the copy fails. It never reports
/// success for a copy that was not fully acknowledged.
pub async fn sync(opts: &SyncOptions) -> Result<SyncSummary, SyncError> {
    sync_with(opts, Claiming::Claim).await
}

/// Whether a copy claims its destination tree (see [`claim`]) or runs under a claim its
/// caller holds (a live stream's full syncs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claiming {
    Claim,
    Held,
}

pub(crate) async fn sync_with(
    opts: &SyncOptions,
    claiming: Claiming,
) -> Result<SyncSummary, SyncError> {
    validate(opts)?;
    // A dry run writes nothing, so it needs no claim.
    let claim = claiming == Claiming::Claim && !opts.dry_run;
    let mut claims: Option<claim::Claims> = None;
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let _reporter = opts
        .progress_every
        .map(|every| progress::Reporter::start(progress.clone(), every));
    let me = plan::Identity::new(opts.destination.auth.as_ref());
    let result = attempts(opts, &me, progress, started, claim, &mut claims).await;
    if let Some(c) = claims {
        c.release().await;
    }
    result
}

/// The passes of a copy, each on fresh sessions, under the claim (taken on the first).
/// A failed pass waits this long before the next, doubled after each failure up to
/// [`PASS_RETRY_DOUBLINGS`] times (8 s): a blip costs little, a long outage few passes.
const PASS_RETRY_BASE: Duration = Duration::from_millis(500);
const PASS_RETRY_DOUBLINGS: u32 = 4;

async fn attempts(
    opts: &SyncOptions,
    me: &plan::Identity,
    progress: Arc<Progress>,
    started: Instant,
    claim: bool,
    claims: &mut Option<claim::Claims>,
) -> Result<SyncSummary, SyncError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if claims.as_ref().is_some_and(claim::Claims::lost) {
            *claims = None;
        }
        let result = async {
            if claim && claims.is_none() {
                *claims = Some(claim::acquire(opts, &opts.holder).await?);
            }
            let r = attempt_once(opts, me, progress.clone(), attempt == 1).await;
            // Writes after the claim was lost may have raced another writer: not a success.
            match &*claims {
                Some(c) if c.lost() => Err(SyncError::ClaimLost),
                _ => r,
            }
        }
        .await;
        match result {
            Ok(mut summary) => {
                summary.attempts = attempt;
                summary.duration_seconds = started.elapsed().as_secs_f64();
                summary.write_ops = progress
                    .ops_written
                    .load(std::sync::atomic::Ordering::Relaxed);
                summary.batches = progress.batches.load(std::sync::atomic::Ordering::Relaxed);
                summary.bytes_written = progress
                    .bytes_written
                    .load(std::sync::atomic::Ordering::Relaxed);
                return Ok(summary);
            }
            Err(e) if e.is_transient() && attempt <= opts.retries => {
                let wait = PASS_RETRY_BASE * (1u32 << (attempt - 1).min(PASS_RETRY_DOUBLINGS));
                tracing::warn!(attempt, error = %e, retry_in = ?wait, "copy pass failed; starting a new pass");
                tokio::time::sleep(wait).await;
            }
            Err(e) if attempt > 1 && e.is_transient() => {
                return Err(SyncError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(e),
                })
            }
            Err(e) => return Err(e),
        }
    }
}

async fn attempt_once(
    opts: &SyncOptions,
    me: &plan::Identity,
    progress: Arc<Progress>,
    first: bool,
) -> Result<SyncSummary, SyncError> {
    let connect = |role, c| async move {
        verifier::connect_pool(role, c, verifier::zk::READ_SESSIONS)
            .await
            .map_err(|e| {
                // An ensemble that was reachable a moment ago may be restarting: worth a new pass.
                if first {
                    SyncError::Connect(e)
                } else {
                    SyncError::Write {
                        op: "connect",
                        path: String::new(),
                        source: zookeeper_client::Error::ConnectionLoss,
                    }
                }
            })
    };
    let (src, dst) = tokio::join!(
        connect(Side::Source, &opts.source),
        connect(Side::Destination, &opts.destination)
    );
    let (src, dst) = (src?, dst?);
    let pre = copy::preflight(
        &src[0],
        &dst[0],
        opts,
        &opts.source_identity(),
        &opts.destination_identity(),
    )
    .await?;
    let source_nodes = src[0]
        .count_descendants_number(&opts.source_root)
        .await
        .ok()
        .map(|n| n as u64 + 1);
    if let Some(n) = source_nodes {
        progress
            .source_total
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(held) = precheck(&dst[0], opts, &pre, source_nodes).await {
        tracing::warn!(root = %opts.destination_root, "deletion guard: {}", held.describe());
        return Ok(SyncSummary {
            source_nodes: held.source_nodes,
            held: Some(held),
            ..SyncSummary::new(opts)
        });
    }
    progress
        .nodes_read
        .store(0, std::sync::atomic::Ordering::Relaxed);
    copy::pass(&src, &dst, opts, me, pre, progress)
        .await
        .map_err(|e| e.with_identity(&opts.destination_identity()))
}

/// An empty or near-empty source against a populated destination, judged from the servers'
/// node counts before anything is written. Counts that cannot be read (servers before 3.6)
/// leave the judgement to the pass, which holds the deletes all the same.
async fn precheck(
    dst: &zookeeper_client::Client,
    opts: &SyncOptions,
    pre: &copy::Preflight,
    source_nodes: Option<u64>,
) -> Option<Held> {
    if !opts.prune || opts.guard.is_off() || !pre.destination_root_exists {
        return None;
    }
    let source_nodes = source_nodes?;
    let destination_nodes = dst
        .count_descendants_number(&opts.destination_root)
        .await
        .ok()? as u64
        + 1;
    opts.guard.precheck(source_nodes, destination_nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_rules_apply_to_persistent_nodes_only() {
        let rules = vec![
            TypeRule::new("/app/locks/*", NodeKind::Container).expect("glob"),
            TypeRule::new("/app/**/session-*", NodeKind::Ttl { ttl_ms: 60_000 }).expect("glob"),
        ];
        assert_eq!(
            kind_for(&rules, "/app/locks/a", NodeKind::Persistent),
            NodeKind::Container
        );
        assert_eq!(
            kind_for(&rules, "/app/locks/a/b", NodeKind::Persistent),
            NodeKind::Persistent
        );
        assert_eq!(
            kind_for(&rules, "/app/x/y/session-1", NodeKind::Persistent),
            NodeKind::Ttl { ttl_ms: 60_000 }
        );
        assert_eq!(
            kind_for(&rules, "/app/locks/a", NodeKind::Ephemeral),
            NodeKind::Ephemeral
        );
        assert_eq!(observable(NodeKind::Container), NodeKind::Persistent);
        assert_eq!(
            observable(NodeKind::Ttl { ttl_ms: 1 }),
            NodeKind::Persistent
        );
    }
}
