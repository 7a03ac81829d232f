//! Restoring a snapshot: checked whole before anything is written, then created under a
//! claimed and marked destination root, then verified against the manifest.
//!
//! The root must be absent or empty, or hold what an interrupted restore of this same
//! snapshot left: the restore marks the root ([`super::marker`]) before it writes, so a
//! restore cut short by a crash or an operator restart is resumed by the next one (it
//! creates what is missing, puts right what differs, and verifies as usual), while a tree
//! it did not mark, or one marked by a restore of another snapshot, is refused.

mod plan;

use std::io::Seek;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use verifier::hash::{hex, MerkleBuilder};
use verifier::Side;
use verifier::{path, AclEntry, ConnectOptions, EphemeralPolicy, HashOptions, WalkOptions};
use zookeeper_client::{Client, Error as ZkError};

use super::check::{check_file, decode_all, download, Decoded, Sink};
use super::format::Limits;
use super::marker::{self, Mark, Start};
use super::{io_error, list, select, BackupError, Location, Manifest, Selector};
use crate::engine::claim::Claims;
use crate::engine::plan::Identity;
use crate::engine::writer::{self, Queued, WriterConfig};
use crate::engine::{Progress, SyncError};
use plan::{Planned, Planner};

/// What to restore and where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub location: Location,
    pub select: Selector,
    pub destination: ConnectOptions,
    /// Where the snapshot's root goes: an absent or empty node.
    pub destination_root: String,
    /// Its `jute_maxbuffer` is the destination's: node data over it is refused.
    pub writer: WriterConfig,
    pub memory_budget_bytes: usize,
    /// Who restores, for the writer claim and the mark, e.g. `Synchronization ns/name`.
    pub holder: String,
}

impl RestoreOptions {
    pub fn new(
        location: Location,
        select: Selector,
        destination: ConnectOptions,
        root: &str,
    ) -> Self {
        let defaults = crate::engine::SyncOptions::new(
            ConnectOptions::new(""),
            "/",
            ConnectOptions::new(""),
            "/",
        );
        RestoreOptions {
            location,
            select,
            destination,
            destination_root: root.to_string(),
            writer: defaults.writer,
            memory_budget_bytes: defaults.memory_budget_bytes,
            holder: defaults.holder,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSummary {
    pub snapshot: String,
    pub destination_root: String,
    pub nodes: u64,
    pub data_bytes: u64,
    pub cversion_raised: u64,
    /// Whether this restore finished one that was interrupted.
    pub resumed: bool,
    /// Nodes a resumed restore found already in place.
    pub existing: u64,
    /// The restored tree's root hash, equal to the manifest's.
    pub root_hash: String,
    pub duration_seconds: f64,
}

/// Decoded nodes (and operations) queued between the decoder, the planner and the writer.
const QUEUE: usize = 1024;
/// Nodes read concurrently when hashing the restored tree.
const HASH_WINDOW: usize = 512;

/// Restores a snapshot; see the module documentation for the checks.
pub async fn restore(o: &RestoreOptions) -> Result<RestoreSummary, BackupError> {
    path::validate_root("destination root path", &o.destination_root)?;
    let started = Instant::now();
    let m = pick(o).await?;
    let limits = Limits::new(o.writer.jute_maxbuffer);
    let file = checked_download(o, &m, limits).await?;
    let dst = Destination {
        zk: verifier::connect(Side::Destination, &o.destination)
            .await
            .map_err(SyncError::Connect)?,
        o,
    };
    // A tree that cannot be taken is refused before claiming it; one this snapshot's
    // restore marked may still carry that restore's claim.
    let (_, own_mark) = dst.look(&m).await?;
    let claims = dst.claim(&m, own_mark).await?;
    let r = dst.restore_claimed(file, &m, limits, started).await;
    claims.release().await;
    r
}

/// The snapshot `o` selects, refused when a node of it cannot fit the destination.
async fn pick(o: &RestoreOptions) -> Result<Manifest, BackupError> {
    let all = list(&o.location).await?;
    let m = select(&all, &o.select)
        .ok_or_else(|| BackupError::NoSnapshot {
            location: o.location.describe(),
            what: o.select.missing(),
        })?
        .clone();
    // Refused before the download; a record larger than the manifest says is refused as
    // forged by the decode.
    if m.max_data_bytes > o.writer.jute_maxbuffer as u64 {
        return Err(BackupError::TooLarge {
            snapshot: m.name.clone(),
            size: m.max_data_bytes,
            limit: o.writer.jute_maxbuffer,
        });
    }
    Ok(m)
}

/// Pass 1: the snapshot downloaded and checked whole before anything is written; the file
/// rewound for pass 2.
async fn checked_download(
    o: &RestoreOptions,
    m: &Manifest,
    limits: Limits,
) -> Result<std::fs::File, BackupError> {
    let store = o.location.open(false)?;
    let mut file = download(&store, &o.location, m).await?;
    let check = file
        .try_clone()
        .map_err(io_error("reading a temporary file"))?;
    check_file(check, m, limits).await?;
    // The clone shares the file position.
    file.rewind()
        .map_err(io_error("reading a temporary file"))?;
    Ok(file)
}

/// How long a resuming restore waits for the claim of the run it resumes: a crashed holder's
/// claim goes when its session expires, within its session timeout, which is most likely
/// this one's.
fn stale_claim_wait(o: &RestoreOptions) -> Duration {
    o.destination.session_timeout * 2 + Duration::from_secs(2)
}

/// Between two tries at a claim that an interrupted restore still holds.
const CLAIM_RETRY: Duration = Duration::from_millis(500);

/// The destination a restore writes to, and the steps it takes there.
struct Destination<'a> {
    zk: Client,
    o: &'a RestoreOptions,
}

impl Destination<'_> {
    /// A write error at `path`, naming the identity that was refused.
    fn zk_error(&self, op: &'static str, path: &str) -> impl FnOnce(ZkError) -> BackupError + '_ {
        let path = path.to_string();
        move |source| {
            let user = self
                .o
                .destination
                .auth
                .as_ref()
                .map(|a| a.user.clone())
                .unwrap_or_default();
            BackupError::Sync(SyncError::Write { op, path, source }.with_identity(&user))
        }
    }

    /// How the restore of `m` starts on what is at the root now (refused when it cannot),
    /// and whether a restore of `m` marked the root.
    async fn look(&self, m: &Manifest) -> Result<(Start, bool), BackupError> {
        let root = &self.o.destination_root;
        let mark = marker::read(&self.zk, root)
            .await
            .map_err(self.zk_error("getData", &marker::path_for(root)))?;
        let stat = self
            .zk
            .check_stat(root)
            .await
            .map_err(self.zk_error("exists", root))?;
        let start = marker::decide(root, stat.map(|s| s.num_children), mark.as_ref(), m)?;
        let own = mark.is_some_and(|k| k.root == *root && k.is_of(m));
        Ok((start, own))
    }

    /// One writer per destination tree: a restore claims it like a copy does. When resuming,
    /// the interrupted run's claim may outlive it by a session timeout: waited for.
    async fn claim(&self, m: &Manifest, resuming: bool) -> Result<Claims, BackupError> {
        let o = self.o;
        let holder = format!(
            "{} restoring snapshot {} from {}",
            o.holder,
            m.name,
            o.location.describe()
        );
        let deadline = Instant::now() + stale_claim_wait(o);
        loop {
            let claimed = crate::engine::claim::acquire_destination(
                &o.destination,
                &o.destination_root,
                &holder,
            )
            .await;
            match claimed {
                Err(SyncError::Busy { holder: other, .. })
                    if resuming && Instant::now() < deadline =>
                {
                    tracing::info!(
                        root = %o.destination_root,
                        holder = %other,
                        "resuming an interrupted restore: waiting for its claim to expire"
                    );
                    tokio::time::sleep(CLAIM_RETRY).await;
                }
                r => return Ok(r?),
            }
        }
    }

    /// [`restore`] once the snapshot is checked and the destination tree is claimed: the
    /// root looked at again (under the claim now), marked, written, verified, unmarked.
    async fn restore_claimed(
        &self,
        file: std::fs::File,
        m: &Manifest,
        limits: Limits,
        started: Instant,
    ) -> Result<RestoreSummary, BackupError> {
        let o = self.o;
        let root = o.destination_root.clone();
        let (start, _) = self.look(m).await?;
        let mark = Mark::new(&root, m, &o.location.describe(), &o.holder);
        marker::write(&self.zk, &mark, o.destination.auth.is_some())
            .await
            .map_err(self.zk_error("create", &marker::path_for(&root)))?;
        self.create_ancestors(&root).await?;
        let planned = self.write(file, m, limits, start).await?;
        let cversion_raised = self.raise_cversions(&planned.bumps).await?;
        self.set_final_acls(&planned.at_end).await?;
        let got = self.check_hash(m).await?;
        // Verified: nothing is left to resume. A failure before this keeps the mark.
        marker::clear(&self.zk, &root)
            .await
            .map_err(self.zk_error("delete", &marker::path_for(&root)))?;
        Ok(RestoreSummary {
            snapshot: m.name.clone(),
            destination_root: root,
            nodes: planned.nodes,
            data_bytes: planned.data_bytes,
            cversion_raised,
            resumed: start == Start::Resume,
            existing: planned.existing,
            root_hash: got,
            duration_seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn exists(&self, path: &str) -> Result<bool, BackupError> {
        let stat = self.zk.check_stat(path).await;
        Ok(stat.map_err(self.zk_error("exists", path))?.is_some())
    }

    /// Missing ancestors, top first, as plain open nodes (as a sync creates them).
    async fn create_ancestors(&self, root: &str) -> Result<(), BackupError> {
        let mut ancestors = Vec::new();
        let mut p = path::parent(root);
        while let Some(a) = p {
            if a == "/" || self.exists(a).await? {
                break;
            }
            ancestors.push(a.to_string());
            p = path::parent(a);
        }
        let open = [AclEntry::open().to_zk()];
        let mode =
            zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::new(&open));
        for a in ancestors.iter().rev() {
            match self.zk.create(a, &[], &mode).await {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(e) => return Err(self.zk_error("create", a)(e)),
            }
        }
        Ok(())
    }

    /// Pass 2: decodes the checked file again and writes its nodes, the decoder, the planner
    /// and the writer running side by side. Every decoded node takes its bytes from the
    /// memory budget before it is queued and gives them back once written, so the nodes in
    /// flight stay within the budget however large each is.
    async fn write(
        &self,
        file: std::fs::File,
        m: &Manifest,
        limits: Limits,
        start: Start,
    ) -> Result<Planned, BackupError> {
        let (node_tx, node_rx) = mpsc::channel::<Decoded>(QUEUE);
        let budget_bytes = self.o.memory_budget_bytes.max(2);
        let sink = Sink {
            tx: node_tx,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            runtime: tokio::runtime::Handle::current(),
        };
        let mc = m.clone();
        let decoder =
            tokio::task::spawn_blocking(move || decode_all(file, &mc, limits, Some(sink)));
        let pool = if start == Start::Resume {
            verifier::connect_pool(
                Side::Destination,
                &self.o.destination,
                verifier::zk::READ_SESSIONS,
            )
            .await
            .map_err(SyncError::Connect)?
        } else {
            Vec::new()
        };
        let (op_tx, op_rx) = mpsc::channel::<Queued>(QUEUE);
        let planner = Planner {
            me: Identity::new(self.o.destination.auth.as_ref()),
            root: &self.o.destination_root,
            start,
            pool,
            op_tx,
        };
        let progress = Arc::new(Progress::default());
        let write = writer::run(&self.zk, op_rx, self.o.writer, progress);
        let (planned, written) = tokio::join!(planner.run(node_rx), write);
        let corrupt = BackupError::corrupt(&m.name);
        let decoded = decoder.await.map_err(|e| corrupt(e.to_string()))?;
        written?;
        let planned = planned?;
        decoded.map_err(corrupt)?;
        Ok(planned)
    }

    /// Sequential names come from the parent's cversion: each such parent is raised to at
    /// least the source's. Returns how many were.
    async fn raise_cversions(&self, bumps: &[(String, i32)]) -> Result<u64, BackupError> {
        let mut raised = 0;
        for (p, target) in bumps {
            let current = self
                .zk
                .check_stat(p)
                .await
                .map_err(self.zk_error("exists", p))?
                .map(|s| s.cversion)
                .unwrap_or(i32::MAX);
            crate::engine::live::raise_cversion_to(&self.zk, p, *target, current)
                .await
                .map_err(self.zk_error("create", p))?;
            raised += 1;
        }
        Ok(raised)
    }

    /// Deepest first: a parent's final ACL may lock out work on its children.
    async fn set_final_acls(&self, at_end: &[(String, Vec<AclEntry>)]) -> Result<(), BackupError> {
        for (p, acl) in at_end.iter().rev() {
            let zk_acl: Vec<_> = acl.iter().map(AclEntry::to_zk).collect();
            self.zk
                .set_acl(p, &zk_acl, None)
                .await
                .map_err(self.zk_error("setACL", p))?;
        }
        Ok(())
    }

    /// Proof: the restored tree hashes to the manifest's root. Returns that hash.
    async fn check_hash(&self, m: &Manifest) -> Result<String, BackupError> {
        let o = self.o;
        let pool = verifier::connect_pool(
            Side::Destination,
            &o.destination,
            verifier::zk::READ_SESSIONS,
        )
        .await
        .map_err(SyncError::Connect)?;
        let got = tree_hash(pool, &o.destination_root, m.acl_in_hash).await?;
        if got != m.root_hash {
            return Err(BackupError::Mismatch {
                snapshot: m.name.clone(),
                path: o.destination_root.clone(),
                expected: m.root_hash.clone(),
                got,
            });
        }
        Ok(got)
    }
}

/// The verifier's root hash of the tree at `root`.
pub async fn tree_hash(pool: Vec<Client>, root: &str, acl: bool) -> Result<String, BackupError> {
    let mut walk = verifier::walk(
        pool,
        Side::Destination,
        root.to_string(),
        WalkOptions {
            hash: HashOptions { acl },
            ephemerals: EphemeralPolicy::Skip,
            window: HASH_WINDOW,
        },
    );
    let mut merkle = MerkleBuilder::default();
    while let Some(ev) = walk.recv().await {
        match ev.map_err(|e| SyncError::from_read(e, "the restore"))? {
            verifier::WalkEvent::Nodes(n) => {
                for (rel, d) in n {
                    merkle.push(&rel, &d.node);
                }
            }
            verifier::WalkEvent::Done(_) => break,
        }
    }
    Ok(hex(&merkle.finish()))
}
