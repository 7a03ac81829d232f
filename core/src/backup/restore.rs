//! Restoring a snapshot: checked whole before anything is written, then created under a
//! claimed, absent or empty destination root, then verified against the manifest.

use std::io::Seek;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Semaphore};
use verifier::hash::{hex, MerkleBuilder};
use verifier::model::{is_sequential_name, perms, Node, NodeKind};
use verifier::Side;
use verifier::{path, AclEntry, ConnectOptions, EphemeralPolicy, HashOptions, WalkOptions};
use zookeeper_client::{Client, Error as ZkError, Stat};

use super::check::{check_file, decode_all, download, Decoded, Sink};
use super::format::Limits;
use super::{io_error, is_under, list, select, BackupError, Location, Manifest, Selector};
use crate::engine::plan::{plan_acl, Identity};
use crate::engine::writer::{self, Op, Queued, WriterConfig};
use crate::engine::{Progress, SyncError};

/// What to restore and where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub location: Location,
    pub select: Selector,
    pub destination: ConnectOptions,
    /// Where the snapshot's root goes: an absent or empty node.
    pub destination_root: String,
    pub writer: WriterConfig,
    pub memory_budget_bytes: usize,
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
    let all = list(&o.location).await?;
    let m = select(&all, &o.select)
        .ok_or_else(|| BackupError::NoSnapshot {
            location: o.location.describe(),
            what: o.select.missing(),
        })?
        .clone();
    // A destination that cannot hold the snapshot's largest node is refused before the
    // download; a record larger than the manifest says is refused as forged by the decode.
    let limits = Limits::new(o.writer.jute_maxbuffer);
    if m.max_data_bytes > limits.data as u64 {
        return Err(BackupError::TooLarge {
            snapshot: m.name.clone(),
            size: m.max_data_bytes,
            limit: limits.data,
        });
    }
    let store = o.location.open(false)?;
    // Pass 1: everything checked before anything is written.
    let file = download(&store, &o.location, &m).await?;
    let check = file
        .try_clone()
        .map_err(io_error("reading a temporary file"))?;
    check_file(check, &m, limits).await?;
    // The clone shares the file position.
    let mut file = file;
    file.rewind()
        .map_err(io_error("reading a temporary file"))?;

    // One writer per destination tree: a restore claims it like a copy does.
    let claims = crate::engine::claim::acquire_destination(
        &o.destination,
        &o.destination_root,
        &format!("restore of {}", o.location.describe()),
    )
    .await?;
    let r = restore_claimed(o, file, m, limits, started).await;
    claims.release().await;
    r
}

/// [`restore`] once the snapshot is checked and the destination tree is claimed.
async fn restore_claimed(
    o: &RestoreOptions,
    file: std::fs::File,
    m: Manifest,
    limits: Limits,
    started: Instant,
) -> Result<RestoreSummary, BackupError> {
    let dst = Destination {
        zk: verifier::connect(Side::Destination, &o.destination)
            .await
            .map_err(SyncError::Connect)?,
        o,
    };
    let root = o.destination_root.clone();
    let existing = dst.empty_root(&root).await?;
    dst.create_ancestors(&root).await?;
    let planned = dst.write(file, &m, limits, existing.is_some()).await?;
    let cversion_raised = dst.raise_cversions(&planned.bumps).await?;
    dst.set_final_acls(&planned.at_end).await?;
    let got = dst.check_hash(&m).await?;
    Ok(RestoreSummary {
        snapshot: m.name.clone(),
        destination_root: root,
        nodes: planned.nodes,
        data_bytes: planned.data_bytes,
        cversion_raised,
        root_hash: got,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The destination a restore writes to, and the steps it takes there.
struct Destination<'a> {
    zk: Client,
    o: &'a RestoreOptions,
}

/// What pass 2 wrote, and what is left for after it.
struct Planned {
    /// ACLs to set once everything is written: they would lock the restore out.
    at_end: Vec<(String, Vec<AclEntry>)>,
    /// Parents of sequential nodes, with the cversion to raise them to.
    bumps: Vec<(String, i32)>,
    nodes: u64,
    data_bytes: u64,
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

    /// The destination root must be absent or empty: a restore never deletes data. Its stat
    /// when it exists.
    async fn empty_root(&self, root: &str) -> Result<Option<Stat>, BackupError> {
        let existing = self
            .zk
            .check_stat(root)
            .await
            .map_err(self.zk_error("exists", root))?;
        match &existing {
            Some(st) if st.num_children > 0 => Err(BackupError::DestinationNotEmpty {
                path: root.to_string(),
                children: st.num_children,
            }),
            _ => Ok(existing),
        }
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
        root_exists: bool,
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
        let (op_tx, op_rx) = mpsc::channel::<Queued>(QUEUE);
        let progress = Arc::new(Progress::default());
        let plan = self.plan(node_rx, op_tx, root_exists);
        let write = writer::run(&self.zk, op_rx, self.o.writer, progress);
        let (planned, written) = tokio::join!(plan, write);
        let corrupt = BackupError::corrupt(&m.name);
        let decoded = decoder.await.map_err(|e| corrupt(e.to_string()))?;
        written?;
        let planned = planned?;
        decoded.map_err(corrupt)?;
        Ok(planned)
    }

    /// Turns each decoded node into its operation, which keeps the node's share of the budget.
    async fn plan(
        &self,
        mut node_rx: mpsc::Receiver<Decoded>,
        op_tx: mpsc::Sender<Queued>,
        root_exists: bool,
    ) -> Result<Planned, BackupError> {
        let root = &self.o.destination_root;
        let me = Identity::new(self.o.destination.auth.as_ref());
        let mut planned = Planned {
            at_end: Vec::new(),
            bumps: Vec::new(),
            nodes: 0,
            data_bytes: 0,
        };
        let mut sequential = SequentialParents::default();
        while let Some((rel, node, permit)) = node_rx.recv().await {
            let dp = path::join(root, &rel);
            planned.nodes += 1;
            planned.data_bytes += node.data.len() as u64;
            sequential.see(root, &rel, node.stat.cversion, &mut planned.bumps);
            let op = if rel.is_empty() && root_exists {
                // The empty destination root stays; it takes the snapshot's data and ACL.
                planned.at_end.push((dp.clone(), node.acl.clone()));
                Op::SetData {
                    path: dp,
                    data: node.data,
                }
            } else {
                create(&me, dp, node, &mut planned.at_end)
            };
            op_tx
                .send(Queued { op, permit })
                .await
                .map_err(|_| SyncError::WriterStopped)?;
        }
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

/// The create of a restored node: its ACL staged when it would lock the restore out, an
/// ephemeral one made persistent (its session is gone).
fn create(
    me: &Identity,
    path: String,
    node: Node,
    at_end: &mut Vec<(String, Vec<AclEntry>)>,
) -> Op {
    let required = if node.stat.num_children > 0 {
        perms::CREATE
    } else {
        0
    };
    let acl = plan_acl(me, Some(&node.acl), None, required);
    if let Some(a) = acl.set_at_end {
        at_end.push((path.clone(), a));
    }
    let kind = match node.kind {
        NodeKind::Ephemeral => NodeKind::Persistent,
        k => k,
    };
    Op::Create {
        path,
        data: node.data,
        acl: acl.create_with.unwrap_or(node.acl),
        kind,
    }
}

/// The ancestors of the current node with their source cversion, to find the parents of
/// sequential nodes.
#[derive(Default)]
struct SequentialParents {
    ancestors: Vec<(String, i32)>,
}

impl SequentialParents {
    /// Takes the next node in tree order; adds its parent to `bumps` (once) when its name is
    /// sequential.
    fn see(&mut self, root: &str, rel: &str, cversion: i32, bumps: &mut Vec<(String, i32)>) {
        while self
            .ancestors
            .last()
            .is_some_and(|(a, _)| !is_under(a, rel))
        {
            self.ancestors.pop();
        }
        if let Some((parent, cv)) = self.ancestors.last() {
            let name = rel.rsplit('/').next().unwrap_or_default();
            let pd = path::join(root, parent);
            if is_sequential_name(name) && bumps.last().map(|b| &b.0) != Some(&pd) {
                bumps.push((pd, *cv));
            }
        }
        self.ancestors.push((rel.to_string(), cversion));
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
