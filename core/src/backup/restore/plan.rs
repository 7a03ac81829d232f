//! Pass 2's planning: each decoded node becomes the writes that put it in place, in tree
//! order. A fresh restore creates every node. A resumed one first reads the destination, a
//! batch of nodes per multi-read, and writes only what is missing or differs: the nodes its
//! interrupted run created stay, their data and ACLs put right where they are not the
//! snapshot's (an ACL staged to keep the restore in, a root whose data was still to come).

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use verifier::model::{is_sequential_name, perms, Node, NodeKind};
use verifier::reader::{fetch_many, Fetched};
use verifier::{path, AclEntry, Side};
use zookeeper_client::Client;

use super::super::check::Decoded;
use super::super::marker::Start;
use super::super::{is_under, BackupError};
use crate::engine::plan::{plan_acl, Identity};
use crate::engine::writer::{Op, Queued};
use crate::engine::SyncError;

/// Nodes looked up on the destination in one multi-read when resuming.
const RESUME_BATCH: usize = 256;
/// Snapshot bytes gathered for one lookup at most: the nodes read back are about as large.
const RESUME_BATCH_BYTES: usize = 4 << 20;

/// What pass 2 wrote, and what is left for after it.
pub(super) struct Planned {
    /// ACLs to set once everything is written: they would lock the restore out.
    pub at_end: Vec<(String, Vec<AclEntry>)>,
    /// Parents of sequential nodes, with the cversion to raise them to.
    pub bumps: Vec<(String, i32)>,
    pub nodes: u64,
    pub data_bytes: u64,
    /// Nodes a resumed restore found in place (their data or ACL set again where they
    /// differed).
    pub existing: u64,
}

/// Turns decoded nodes into writes; each write keeps its node's share of the memory budget
/// until the writer has it acknowledged.
pub(super) struct Planner<'a> {
    pub me: Identity,
    /// The destination root.
    pub root: &'a str,
    pub start: Start,
    /// Sessions to read the destination with (resuming only).
    pub pool: Vec<Client>,
    pub op_tx: mpsc::Sender<Queued>,
}

impl Planner<'_> {
    pub async fn run(self, mut node_rx: mpsc::Receiver<Decoded>) -> Result<Planned, BackupError> {
        let mut planned = Planned {
            at_end: Vec::new(),
            bumps: Vec::new(),
            nodes: 0,
            data_bytes: 0,
            existing: 0,
        };
        let mut sequential = SequentialParents::default();
        let mut batch = Vec::new();
        while let Some(first) = node_rx.recv().await {
            let mut bytes = first.2.num_permits();
            batch.push(first);
            // Only what is already decoded: a slow decode is never waited for.
            while self.start == Start::Resume
                && batch.len() < RESUME_BATCH
                && bytes < RESUME_BATCH_BYTES
            {
                match node_rx.try_recv() {
                    Ok(d) => {
                        bytes += d.2.num_permits();
                        batch.push(d);
                    }
                    Err(_) => break,
                }
            }
            let found = self.existing(&batch).await?;
            for ((rel, node, permit), current) in batch.drain(..).zip(found) {
                planned.nodes += 1;
                planned.data_bytes += node.data.len() as u64;
                sequential.see(self.root, &rel, node.stat.cversion, &mut planned.bumps);
                let ops = self.node_ops(&rel, node, current, &mut planned);
                self.send(ops, permit).await?;
            }
        }
        Ok(planned)
    }

    /// The destination's copy of each node of `batch`, read when resuming (`None`: absent,
    /// or not looked for).
    async fn existing(&self, batch: &[Decoded]) -> Result<Vec<Option<Fetched>>, BackupError> {
        if self.start != Start::Resume {
            return Ok(batch.iter().map(|_| None).collect());
        }
        let paths: Vec<String> = batch
            .iter()
            .map(|(rel, ..)| path::join(self.root, rel))
            .collect();
        fetch_many(&self.pool, Side::Destination, &paths, true)
            .await
            .map_err(|e| BackupError::Sync(SyncError::from_read(e, "the restore")))
    }

    /// The writes for one node: a create, or what makes an existing one the snapshot's.
    fn node_ops(
        &self,
        rel: &str,
        node: Node,
        current: Option<Fetched>,
        planned: &mut Planned,
    ) -> Vec<Op> {
        let dp = path::join(self.root, rel);
        if let Some(current) = current {
            planned.existing += 1;
            return update(&self.me, dp, node, &current.node, &mut planned.at_end);
        }
        if rel.is_empty() && self.start == (Start::Fresh { root_exists: true }) {
            // The empty destination root stays; it takes the snapshot's data and ACL.
            planned.at_end.push((dp.clone(), node.acl.clone()));
            return vec![Op::SetData {
                path: dp,
                data: node.data,
            }];
        }
        vec![create(&self.me, dp, node, &mut planned.at_end)]
    }

    /// Queues `ops`, splitting the node's permit among them (each node holds at least two).
    async fn send(&self, ops: Vec<Op>, permit: OwnedSemaphorePermit) -> Result<(), BackupError> {
        let mut permit = Some(permit);
        let last = ops.len().saturating_sub(1);
        for (i, op) in ops.into_iter().enumerate() {
            let share = if i == last {
                permit.take()
            } else {
                permit.as_mut().and_then(|p| p.split(1))
            };
            let Some(permit) = share else {
                return Err(SyncError::WriterStopped.into());
            };
            self.op_tx
                .send(Queued { op, permit })
                .await
                .map_err(|_| SyncError::WriterStopped)?;
        }
        Ok(())
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

/// What makes a node already at the destination the snapshot's: its data set when it
/// differs, its ACL opened first when it keeps the restore from that or from creating
/// children, and the snapshot's ACL set at the end when it differs.
fn update(
    me: &Identity,
    path: String,
    node: Node,
    current: &Node,
    at_end: &mut Vec<(String, Vec<AclEntry>)>,
) -> Vec<Op> {
    let data = node.data != current.data;
    let mut required = if data { perms::WRITE } else { 0 };
    if node.stat.num_children > 0 {
        required |= perms::CREATE;
    }
    let acl = plan_acl(me, Some(&node.acl), Some(&current.acl), required);
    let mut ops = Vec::new();
    if let Some(a) = acl.set_before {
        ops.push(Op::SetAcl {
            path: path.clone(),
            acl: a,
        });
    }
    // Final ACLs all go last, deepest first: the restore may still create below this node.
    if let Some(a) = acl.set_after.or(acl.set_at_end) {
        at_end.push((path.clone(), a));
    }
    if data {
        ops.push(Op::SetData {
            path,
            data: node.data,
        });
    }
    ops
}

/// The ancestors of the current node with their source cversion, to find the parents of
/// sequential nodes. Each ancestor is a prefix of the last node's path: kept as its length.
#[derive(Default)]
struct SequentialParents {
    last: String,
    ancestors: Vec<(usize, i32)>,
}

impl SequentialParents {
    /// Takes the next node in tree order; adds its parent to `bumps` (once) when its name is
    /// sequential.
    fn see(&mut self, root: &str, rel: &str, cversion: i32, bumps: &mut Vec<(String, i32)>) {
        while self
            .ancestors
            .last()
            .is_some_and(|&(n, _)| !is_under(&self.last[..n], rel))
        {
            self.ancestors.pop();
        }
        if let Some(&(n, cv)) = self.ancestors.last() {
            let name = rel.rsplit('/').next().unwrap_or_default();
            if is_sequential_name(name) {
                let pd = path::join(root, &self.last[..n]);
                if bumps.last().map(|b| &b.0) != Some(&pd) {
                    bumps.push((pd, cv));
                }
            }
        }
        self.ancestors.push((rel.len(), cversion));
        self.last.clear();
        self.last.push_str(rel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sequential_parents_are_found_once_through_a_deep_walk() {
        let mut s = SequentialParents::default();
        let mut bumps = Vec::new();
        for (rel, cv) in [
            ("", 1),
            ("/q", 9),
            ("/q/item-0000000001", 0),
            ("/q/item-0000000002", 0),
            ("/q/item-0000000002/x", 0),
            ("/r", 4),
            ("/r/s", 3),
            ("/r/s/job-0000000007", 0),
            ("/r/t-0000000001", 0),
        ] {
            s.see("/dst", rel, cv, &mut bumps);
        }
        assert_eq!(
            bumps,
            vec![
                ("/dst/q".to_string(), 9),
                ("/dst/r/s".to_string(), 3),
                ("/dst/r".to_string(), 4)
            ]
        );
    }

    #[test]
    fn an_existing_node_gets_only_what_differs() {
        let me = Identity::new(None);
        let want = Node::persistent(b"new".to_vec()).with_acl(vec![AclEntry::new(
            perms::READ,
            "world",
            "anyone",
        )]);
        let mut at_end = Vec::new();
        // Equal: nothing.
        assert!(update(&me, "/a".into(), want.clone(), &want, &mut at_end).is_empty());
        assert!(at_end.is_empty());
        // Staged open by the interrupted run, data still to come: the data now, the
        // snapshot's read-only ACL at the end.
        let staged = Node::persistent(b"old".to_vec()).with_acl(vec![AclEntry::open()]);
        let ops = update(&me, "/a".into(), want.clone(), &staged, &mut at_end);
        assert_eq!(
            ops,
            vec![Op::SetData {
                path: "/a".into(),
                data: b"new".to_vec()
            }]
        );
        assert_eq!(at_end, vec![("/a".to_string(), want.acl.clone())]);
        // Read-only already (its final ACL was set), data to write: opened first.
        let mut at_end = Vec::new();
        let locked = Node::persistent(b"old".to_vec()).with_acl(want.acl.clone());
        let ops = update(&me, "/a".into(), want.clone(), &locked, &mut at_end);
        assert!(
            matches!(&ops[..], [Op::SetAcl { .. }, Op::SetData { .. }]),
            "{ops:?}"
        );
        assert_eq!(at_end, vec![("/a".to_string(), want.acl.clone())]);
    }
}
