//! One pass of the copy: walk source and destination side by side, plan each node, stream the
//! changes to the writer.
//!
//! Memory stays bounded by the read window and the write budget, not by tree size: nodes are
//! forgotten once planned. Only subtrees being deleted, deferred ACLs and cversion targets are
//! kept, all small next to the tree.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use verifier::model::{AclEntry, NodeKind};
use verifier::reader::{fetch_node, Fetched};
use verifier::Side;
use verifier::{path, ReadError};
use zookeeper_client::Client;

use super::error::SyncError;
use super::plan::{
    cversion_bump_pairs, desired_kind, plan_acl, AclPlan, Identity, CVERSION_BUMP_CHILD,
};
use super::writer::{self, Op, Queued};

mod walk;
use super::{PlannedChange, SyncOptions, SyncSummary};
use verifier::model::perms;
use walk::walk;

/// Ops planned and not yet taken by the writer: enough to fill its transactions; the memory
/// budget, not this, bounds the bytes held.
const PLANNED_OPS: usize = 4096;

/// Work for the walk.
enum Task {
    /// Compare the node at `rel` on both sides. `dst_absent`: its destination parent was just
    /// created, so there is nothing to read there.
    Visit { rel: String, dst_absent: bool },
    /// Delete the destination subtree at `rel`, then create `replace_with` there if set.
    /// `visited`: its top node was already counted as a destination node.
    Remove {
        rel: String,
        replace_with: Option<Box<(Fetched, NodeKind)>>,
        visited: bool,
    },
}

// Visits dominate; boxing them would cost an allocation per node.
#[allow(clippy::large_enum_variant)]
enum Done {
    Visited {
        rel: String,
        src: Option<Fetched>,
        dst: Option<Fetched>,
    },
    Collected {
        rel: String,
        /// Destination subtree, parents before children.
        nodes: Vec<(String, NodeKind)>,
        replace_with: Option<Box<(Fetched, NodeKind)>>,
        visited: bool,
    },
}

/// Permissions the copier needs on an existing node: WRITE for new data, CREATE for new
/// children, DELETE for pruned ones, both to raise the cversion.
fn update_needs(data: bool, creates: bool, deletes: bool, raise_cversion: bool) -> i32 {
    let mut required = 0;
    if data {
        required |= perms::WRITE;
    }
    if creates {
        required |= perms::CREATE;
    }
    if deletes {
        required |= perms::DELETE;
    }
    if raise_cversion {
        required |= perms::CREATE | perms::DELETE;
    }
    required
}

/// What a destination parent's cversion must reach.
struct CversionTarget {
    source: i32,
    /// Destination cversion once the emitted ops are applied.
    predicted: i64,
    /// Children the node will have; an empty container must not be touched, or the server reaps it.
    children: i64,
    container: bool,
}

struct Planner<'a> {
    opts: &'a SyncOptions,
    me: &'a Identity,
    tx: Option<mpsc::Sender<Queued>>,
    budget: Arc<Semaphore>,
    summary: SyncSummary,
    deferred_acls: Vec<(String, Vec<AclEntry>)>,
    cversion: HashMap<String, CversionTarget>,
    progress: Arc<super::Progress>,
    /// Destination-only subtrees (relative top, nodes parents first), deleted only once the
    /// whole pass is known and the deletion guard lets them through.
    deferred_deletes: Vec<(String, Vec<(String, NodeKind)>)>,
    deferred_count: u64,
    /// Destination nodes seen under the root.
    destination_nodes: u64,
}

fn parent_rel(rel: &str) -> Option<&str> {
    rel.rfind('/').map(|i| &rel[..i])
}

fn name_of<'p>(rel: &'p str, root: &'p str) -> &'p str {
    let p = if rel.is_empty() { root } else { rel };
    p.rsplit('/').next().unwrap_or(p)
}

impl<'a> Planner<'a> {
    async fn emit(&mut self, op: Op) -> Result<(), SyncError> {
        self.progress.ops_planned.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = &self.tx else {
            if self.summary.changes.len() < super::MAX_LISTED_CHANGES {
                self.summary.changes.push(PlannedChange {
                    op: op.name(),
                    path: op.path().to_string(),
                });
            }
            return Ok(());
        };
        let want = op.wire_size().min(self.opts.memory_budget_bytes).max(1) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| SyncError::WriterStopped)?;
        tx.send(Queued { op, permit })
            .await
            .map_err(|_| SyncError::WriterStopped)
    }

    /// Whether `op` (for the node at `rel`) fits the destination's jute.maxbuffer. Only a copy
    /// that leaves such nodes out asks: one that does not sends it, and the writer fails the
    /// copy naming it. A node left out is listed in the summary; `missing`: not on the
    /// destination at all.
    fn fits(&mut self, rel: &str, op: &Op, missing: bool) -> bool {
        if !self.opts.leave_out_too_big {
            return true;
        }
        let src = path::join(&self.opts.source_root, rel);
        let size = op.wire_size() + super::oversized::REQUEST_FRAME;
        if size <= self.opts.writer.jute_maxbuffer {
            return true;
        }
        tracing::warn!(path = %src, size, limit = self.opts.writer.jute_maxbuffer,
            "left out: too big for the destination");
        self.summary.too_big.push(super::oversized::TooBig {
            path: src,
            size,
            missing,
        });
        false
    }

    /// Records a child create or delete under `parent` for its cversion prediction.
    fn child_changed(&mut self, rel: &str, created: bool) {
        if let Some(t) = parent_rel(rel).and_then(|p| self.cversion.get_mut(p)) {
            t.predicted += 1;
            t.children += if created { 1 } else { -1 };
        }
    }

    fn dst_path(&self, rel: &str) -> String {
        path::join(&self.opts.destination_root, rel)
    }

    /// The names of the children of `f` (at `rel` on `side`) the copy compares. Never one whose
    /// destination path is reserved (ZooKeeper's own `/zookeeper`, the writer claims): with a
    /// destination root of `/`, a source child called `zookeeper` is left out, as the verifier
    /// keeps showing, rather than written onto the server's own tree.
    fn child_names(&mut self, rel: &str, f: &Fetched, side: Side) -> HashSet<String> {
        let mut names = HashSet::with_capacity(f.children.len());
        for n in &f.children {
            let child = path::child(rel, n);
            let dst = path::join(&self.opts.destination_root, &child);
            let reserved_here = side == Side::Source
                && path::is_reserved(&path::join(&self.opts.source_root, &child));
            if reserved_here {
                continue;
            }
            if path::is_reserved(&dst) {
                if side == Side::Source {
                    let src = path::join(&self.opts.source_root, &child);
                    tracing::warn!(source = %src, destination = %dst,
                        "left out: its destination path is reserved (ZooKeeper's own tree)");
                    self.summary.reserved += 1;
                }
                continue;
            }
            names.insert(n.clone());
        }
        names
    }

    async fn visit(
        &mut self,
        rel: String,
        src: Option<Fetched>,
        dst: Option<Fetched>,
        stack: &mut Vec<Task>,
    ) -> Result<(), SyncError> {
        self.progress.nodes_read.fetch_add(1, Ordering::Relaxed);
        if dst.is_some() {
            self.destination_nodes += 1;
            self.progress
                .destination_read
                .fetch_add(1, Ordering::Relaxed);
        }
        let Some(src) = src else {
            if rel.is_empty() {
                return Err(SyncError::SourceRootMissing {
                    path: self.opts.source_root.clone(),
                });
            }
            // Deleted at the source after its parent was listed.
            if self.opts.prune && dst.is_some() {
                stack.push(Task::Remove {
                    rel,
                    replace_with: None,
                    visited: true,
                });
            }
            return Ok(());
        };
        self.summary.source_nodes += 1;
        let name = name_of(&rel, &self.opts.source_root).to_string();
        let Some(reported) = desired_kind(src.node.kind, self.opts.ephemerals) else {
            self.summary.skipped.add(src.node.kind, &name);
            // The destination holds something here that the source only has as ephemeral.
            if let Some(d) = &dst {
                if self.opts.prune && d.node.kind != NodeKind::Ephemeral && !rel.is_empty() {
                    stack.push(Task::Remove {
                        rel,
                        replace_with: None,
                        visited: true,
                    });
                }
            }
            return Ok(());
        };
        let src_abs = path::join(&self.opts.source_root, &rel);
        let kind = super::kind_for(&self.opts.type_rules, &src_abs, reported);
        match dst {
            None => self.create(rel, src, kind, stack).await,
            // Only what a client can see is compared: containers and TTL nodes read as persistent.
            Some(d) if d.node.kind != super::observable(kind) => {
                if self.opts.prune {
                    stack.push(Task::Remove {
                        rel,
                        replace_with: Some(Box::new((src, kind))),
                        visited: true,
                    });
                    Ok(())
                } else {
                    // Replacing would delete destination-only children that --no-prune keeps.
                    tracing::warn!(path = %self.dst_path(&rel), source_kind = %kind, destination_kind = %d.node.kind,
                        "node kind differs; not replaced because pruning is off");
                    self.summary.kind_conflicts += 1;
                    self.update(rel, src, d, kind, stack).await
                }
            }
            Some(d) => self.update(rel, src, d, kind, stack).await,
        }
    }

    async fn create(
        &mut self,
        rel: String,
        mut src: Fetched,
        kind: NodeKind,
        stack: &mut Vec<Task>,
    ) -> Result<(), SyncError> {
        let mut required = 0;
        if !src.children.is_empty() {
            required |= perms::CREATE;
        }
        if src.node.stat.cversion > 0 {
            required |= perms::CREATE | perms::DELETE;
        }
        let fenced = self
            .opts
            .copy_acl
            .then(|| self.opts.destination_acl(src.node.acl.clone()));
        let acl = plan_acl(self.me, fenced.as_deref(), None, required);
        let name = name_of(&rel, &self.opts.source_root).to_string();
        let dst_abs = self.dst_path(&rel);
        let op = Op::Create {
            path: dst_abs.clone(),
            data: std::mem::take(&mut src.node.data),
            acl: acl.create_with.unwrap_or_else(|| vec![AclEntry::open()]),
            kind,
        };
        if !self.fits(&rel, &op, true) {
            // Nothing under it can be created either: its subtree is left out with it.
            return Ok(());
        }
        let children = self.child_names(&rel, &src, Side::Source);
        self.emit(op).await?;
        self.summary.created.add(kind, &name);
        self.child_changed(&rel, true);
        if let Some(final_acl) = acl.set_at_end {
            self.summary.acl_updated += 1;
            self.deferred_acls.push((dst_abs, final_acl));
        }
        if src.node.stat.cversion > 0 {
            self.track_cversion(&rel, src.node.stat.cversion, 0, 0, kind);
        }
        for child in children {
            stack.push(Task::Visit {
                rel: path::child(&rel, &child),
                dst_absent: true,
            });
        }
        Ok(())
    }

    async fn update(
        &mut self,
        rel: String,
        src: Fetched,
        dst: Fetched,
        kind: NodeKind,
        stack: &mut Vec<Task>,
    ) -> Result<(), SyncError> {
        let name = name_of(&rel, &self.opts.source_root).to_string();
        let dst_abs = self.dst_path(&rel);
        let src_names = self.child_names(&rel, &src, Side::Source);
        let dst_names = self.child_names(&rel, &dst, Side::Destination);
        let to_delete: Vec<&String> = if self.opts.prune {
            dst_names.difference(&src_names).collect()
        } else {
            Vec::new()
        };
        let data = (src.node.data != dst.node.data).then_some(src.node.data);
        let raise_cversion = src.node.stat.cversion > dst.node.stat.cversion;
        let required = update_needs(
            data.is_some(),
            src_names.iter().any(|n| !dst_names.contains(n)),
            !to_delete.is_empty(),
            raise_cversion,
        );
        let fenced = self
            .opts
            .copy_acl
            .then(|| self.opts.destination_acl(src.node.acl.clone()));
        let acl = plan_acl(self.me, fenced.as_deref(), Some(&dst.node.acl), required);
        self.emit_update(&rel, dst_abs, &name, kind, acl, data, &dst.node.acl)
            .await?;
        if raise_cversion {
            let children = (dst_names.len() - to_delete.len()) as i64;
            let predicted = i64::from(dst.node.stat.cversion);
            self.track_cversion(&rel, src.node.stat.cversion, predicted, children, kind);
        }
        for child in to_delete {
            stack.push(Task::Remove {
                rel: path::child(&rel, child),
                replace_with: None,
                visited: false,
            });
        }
        for child in &src_names {
            stack.push(Task::Visit {
                rel: path::child(&rel, child),
                dst_absent: !dst_names.contains(child),
            });
        }
        Ok(())
    }

    /// Emits the writes of an existing node in the order its ACL plan needs: the staging ACL,
    /// the new data, the final ACL (now, or deferred to the end of the copy).
    #[allow(clippy::too_many_arguments)]
    async fn emit_update(
        &mut self,
        rel: &str,
        dst_abs: String,
        name: &str,
        kind: NodeKind,
        acl: AclPlan,
        data: Option<Vec<u8>>,
        current_acl: &[AclEntry],
    ) -> Result<(), SyncError> {
        if let Some(staging) = acl.set_before {
            self.emit(Op::SetAcl {
                path: dst_abs.clone(),
                acl: staging,
            })
            .await?;
        }
        if let Some(data) = data {
            let op = Op::SetData {
                path: dst_abs.clone(),
                data,
            };
            // Too big: the node keeps its older data, its ACL and children are still copied.
            if self.fits(rel, &op, false) {
                self.emit(op).await?;
                self.summary.updated.add(kind, name);
            }
        }
        if let Some(final_acl) = acl.set_after {
            self.emit(Op::SetAcl {
                path: dst_abs.clone(),
                acl: final_acl,
            })
            .await?;
            self.summary.acl_updated += 1;
        }
        if let Some(final_acl) = acl.set_at_end {
            if final_acl != current_acl {
                self.summary.acl_updated += 1;
            }
            self.deferred_acls.push((dst_abs, final_acl));
        }
        Ok(())
    }

    /// Remembers that the cversion of `rel` must reach the source's `source`.
    fn track_cversion(
        &mut self,
        rel: &str,
        source: i32,
        predicted: i64,
        children: i64,
        kind: NodeKind,
    ) {
        let target = CversionTarget {
            source,
            predicted,
            children,
            container: kind == NodeKind::Container,
        };
        self.cversion.insert(rel.to_string(), target);
    }

    async fn remove(
        &mut self,
        rel: String,
        nodes: Vec<(String, NodeKind)>,
        replace_with: Option<Box<(Fetched, NodeKind)>>,
        visited: bool,
        stack: &mut Vec<Task>,
    ) -> Result<(), SyncError> {
        self.destination_nodes += (nodes.len() as u64).saturating_sub(u64::from(visited));
        // A destination-only ephemeral belongs to a live session there: leave it.
        let leave = replace_with.is_none()
            && nodes
                .first()
                .is_some_and(|(_, k)| *k == NodeKind::Ephemeral);
        if !leave && !nodes.is_empty() {
            if replace_with.is_none() {
                // Judged with the whole pass (the deletion guard), after creates and updates.
                self.deferred_count += nodes.len() as u64;
                self.deferred_deletes.push((rel.clone(), nodes));
            } else {
                // A kind change: the source has this node, so the subtree is recreated from it.
                self.delete_nodes(&rel, &nodes).await?;
            }
        }
        if let Some(b) = replace_with {
            let (src, kind) = *b;
            self.summary.replaced += 1;
            self.create(rel, src, kind, stack).await?;
        }
        Ok(())
    }

    async fn delete_nodes(
        &mut self,
        rel: &str,
        nodes: &[(String, NodeKind)],
    ) -> Result<(), SyncError> {
        for (abs, kind) in nodes.iter().rev() {
            self.emit(Op::Delete { path: abs.clone() }).await?;
            let name = abs.rsplit('/').next().unwrap_or(abs);
            self.summary.deleted.add(*kind, name);
        }
        self.child_changed(rel, false);
        Ok(())
    }

    /// Applies the deferred deletes, or holds them all when the guard trips.
    async fn judge_deletes(&mut self) -> Result<(), SyncError> {
        let deferred = std::mem::take(&mut self.deferred_deletes);
        let sample: Vec<String> = deferred
            .iter()
            .take(super::guard::SAMPLE_PATHS)
            .map(|(rel, _)| self.dst_path(rel))
            .collect();
        self.summary.held = self.opts.guard.judge(
            self.deferred_count,
            self.destination_nodes,
            self.summary.source_nodes,
            &sample,
        );
        if let Some(h) = &self.summary.held {
            tracing::warn!(deletes = h.deletes, destination_nodes = h.destination_nodes,
                root = %self.opts.destination_root, "deletion guard: {}", h.describe());
            if self.opts.dry_run {
                // A dry run still lists what would be deleted.
                for (rel, nodes) in &deferred {
                    self.delete_nodes(rel, nodes).await?;
                }
                self.summary.deleted = Default::default();
            }
            return Ok(());
        }
        for (rel, nodes) in &deferred {
            self.delete_nodes(rel, nodes).await?;
        }
        Ok(())
    }

    /// Raises cversions, then puts the final ACLs on nodes that were staged open.
    async fn finish(&mut self) -> Result<(), SyncError> {
        let mut targets: Vec<(String, i64, bool)> = self
            .cversion
            .drain()
            .map(|(rel, t)| {
                let pairs = cversion_bump_pairs(t.source, t.predicted) as i64;
                (rel, pairs, t.container && t.children <= 0)
            })
            .filter(|(_, pairs, _)| *pairs > 0)
            .collect();
        targets.sort_by(|a, b| path::tree_order(&a.0, &b.0));
        for (rel, pairs, empty_container) in targets {
            if empty_container {
                continue;
            }
            // Joined to the root, so the bump child of `/` is `/name`, not `//name`.
            let bump = self.dst_path(&path::child(&rel, CVERSION_BUMP_CHILD));
            for _ in 0..pairs {
                self.emit(Op::Create {
                    path: bump.clone(),
                    data: Vec::new(),
                    acl: vec![AclEntry::open()],
                    kind: NodeKind::Persistent,
                })
                .await?;
                self.emit(Op::Delete { path: bump.clone() }).await?;
            }
            self.summary.cversion_raised += 1;
        }
        let deferred = std::mem::take(&mut self.deferred_acls);
        for (abs, acl) in deferred.into_iter().rev() {
            self.emit(Op::SetAcl { path: abs, acl }).await?;
        }
        Ok(())
    }
}

/// Facts about both roots, read before anything is written.
pub(super) struct Preflight {
    pub destination_root_exists: bool,
    /// Missing ancestors of the destination root, top first.
    pub missing_ancestors: Vec<String>,
}

pub(super) async fn preflight(
    src: &Client,
    dst: &Client,
    opts: &SyncOptions,
    who_src: &str,
    who_dst: &str,
) -> Result<Preflight, SyncError> {
    let src_root = fetch_node(src, Side::Source, &opts.source_root, opts.copy_acl)
        .await
        .map_err(|e| SyncError::from_read(e, who_src))?;
    if src_root.is_none() {
        return Err(SyncError::SourceRootMissing {
            path: opts.source_root.clone(),
        });
    }
    let dst_root = fetch_node(dst, Side::Destination, &opts.destination_root, true)
        .await
        .map_err(|e| SyncError::from_read(e, who_dst))?;
    let mut missing_ancestors = Vec::new();
    if dst_root.is_none() {
        let mut cur = path::parent(&opts.destination_root);
        while let Some(p) = cur.filter(|p| *p != "/") {
            match dst.check_stat(p).await {
                Ok(Some(_)) => break,
                Ok(None) => missing_ancestors.push(p.to_string()),
                Err(source) => {
                    return Err(SyncError::from_read(
                        ReadError {
                            side: Side::Destination,
                            op: "exists",
                            path: p.to_string(),
                            source,
                        },
                        who_dst,
                    ))
                }
            }
            cur = path::parent(p);
        }
        missing_ancestors.reverse();
    }
    Ok(Preflight {
        destination_root_exists: dst_root.is_some(),
        missing_ancestors,
    })
}

/// Runs one full pass. Returns what it planned; every planned op was acknowledged when it
/// returns `Ok` (in a dry run nothing is written).
pub(super) async fn pass(
    src: &[Client],
    dst: &[Client],
    opts: &SyncOptions,
    me: &Identity,
    pre: Preflight,
    progress: Arc<super::Progress>,
) -> Result<SyncSummary, SyncError> {
    let (tx, rx) = mpsc::channel::<Queued>(PLANNED_OPS);
    let mut planner = Planner {
        opts,
        me,
        tx: (!opts.dry_run).then_some(tx),
        budget: Arc::new(Semaphore::new(opts.memory_budget_bytes)),
        summary: SyncSummary::new(opts),
        deferred_acls: Vec::new(),
        cversion: HashMap::new(),
        progress: progress.clone(),
        deferred_deletes: Vec::new(),
        deferred_count: 0,
        destination_nodes: 0,
    };
    let plan = async {
        let planned = plan_all(&mut planner, src, dst, &pre).await;
        // Closing the channel lets the writer drain and stop, also after a failure.
        planner.tx = None;
        planned
    };
    let write = async {
        if opts.dry_run {
            drop(rx);
            Ok(())
        } else {
            writer::run(&dst[0], rx, opts.writer, progress.clone()).await
        }
    };
    let (planned, written) = tokio::join!(plan, write);
    // The writer's error is the cause when both failed (the planner then only saw it stop).
    written?;
    planned?;
    Ok(planner.summary)
}

async fn plan_all(
    planner: &mut Planner<'_>,
    src: &[Client],
    dst: &[Client],
    pre: &Preflight,
) -> Result<(), SyncError> {
    for a in &pre.missing_ancestors {
        planner
            .emit(Op::Create {
                path: a.clone(),
                data: Vec::new(),
                acl: vec![AclEntry::open()],
                kind: NodeKind::Persistent,
            })
            .await?;
        planner.summary.ancestors_created += 1;
    }
    walk(planner, src, dst, !pre.destination_root_exists).await?;
    planner.judge_deletes().await?;
    planner.finish().await
}
