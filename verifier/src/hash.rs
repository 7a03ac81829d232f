//! blake3 digests of znodes and Merkle hashes of trees.
//!
//! Stable encoding (changing it changes every published root hash):
//! - node hash = blake3("zkn1" ‖ len+relative path ‖ kind tag ‖ ttl i64 ‖ len+data ‖ acl hash)
//! - ACL hash = blake3("zka1" ‖ count ‖ for each entry in canonical order: perms ‖ len+scheme ‖ len+id)
//! - subtree hash = blake3("zkt2" ‖ node hash ‖ for each child by name: len+name ‖ subtree hash ‖
//!   child count)
//!
//! Lengths are u64 little endian, so no two different inputs share an encoding. The child count
//! comes last so that a subtree hash can be computed while its children stream past, holding
//! only the open ancestors: verification needs memory for the tree's depth and fan-out, not its
//! size.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{AclEntry, Node, NodeKind};
use crate::path::tree_order;

pub type Hash = [u8; 32];

/// What the comparison covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashOptions {
    /// Compare ACLs (off when a sync was told not to copy them).
    pub acl: bool,
}

impl Default for HashOptions {
    fn default() -> Self {
        HashOptions { acl: true }
    }
}

/// Everything the verifier keeps of a node: enough to classify a difference without the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    pub kind: NodeKind,
    pub data: Hash,
    pub acl: Hash,
    pub node: Hash,
    /// Zxid of the last data change, so callers can judge only settled nodes.
    pub mzxid: i64,
}

fn put_bytes(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

pub fn hash_acl(acl: &[AclEntry]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"zka1");
    h.update(&(acl.len() as u64).to_le_bytes());
    for e in acl {
        h.update(&e.perms.to_le_bytes());
        put_bytes(&mut h, e.scheme.as_bytes());
        put_bytes(&mut h, e.id.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// Digest of one node at `rel` (relative to the compared root: "" for the root, else "/a/b").
/// `node.acl` must be in canonical order.
pub fn digest_node(rel: &str, node: &Node, opts: HashOptions) -> Digest {
    let acl = if opts.acl {
        hash_acl(&node.acl)
    } else {
        hash_acl(&[])
    };
    let data = *blake3::hash(&node.data).as_bytes();
    let mut h = blake3::Hasher::new();
    h.update(b"zkn1");
    put_bytes(&mut h, rel.as_bytes());
    h.update(&[node.kind.tag()]);
    let ttl = match node.kind {
        NodeKind::Ttl { ttl_ms } => ttl_ms,
        _ => 0,
    };
    h.update(&ttl.to_le_bytes());
    put_bytes(&mut h, &node.data);
    h.update(&acl);
    Digest {
        kind: node.kind,
        data,
        acl,
        node: *h.finalize().as_bytes(),
        mzxid: node.stat.mzxid,
    }
}

/// Relative path ordered so that a parent comes right before its subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeKey(pub String);

impl Ord for TreeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        tree_order(&self.0, &other.0)
    }
}

impl PartialOrd for TreeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A tree of digests keyed by relative path. About 150 bytes a node, whatever the data size.
#[derive(Clone, Debug, Default)]
pub struct DigestTree {
    nodes: BTreeMap<TreeKey, Digest>,
}

impl DigestTree {
    pub fn new() -> DigestTree {
        DigestTree::default()
    }

    /// Builds a tree from plain nodes, e.g. in unit tests: `[("", root), ("/a", a)]`.
    pub fn from_nodes<'a>(
        nodes: impl IntoIterator<Item = (&'a str, &'a Node)>,
        opts: HashOptions,
    ) -> DigestTree {
        let mut t = DigestTree::new();
        for (rel, node) in nodes {
            t.insert(rel.to_string(), digest_node(rel, node, opts));
        }
        t
    }

    pub fn insert(&mut self, rel: String, digest: Digest) {
        self.nodes.insert(TreeKey(rel), digest);
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, rel: &str) -> Option<&Digest> {
        self.nodes.get(&TreeKey(rel.to_string()))
    }

    /// Nodes in tree order (parent first, siblings by name).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Digest)> {
        self.nodes.iter().map(|(k, v)| (k.0.as_str(), v))
    }

    /// Merkle root over the whole tree; the hash of an empty tree when there is no root node.
    pub fn root_hash(&self) -> Hash {
        let mut m = MerkleBuilder::default();
        for (rel, digest) in self.iter() {
            m.push(rel, &digest.node);
        }
        m.finish()
    }
}

/// Hash of a tree without a root node.
pub fn empty_tree_hash() -> Hash {
    *blake3::hash(b"zkt2-empty").as_bytes()
}

/// Relative path of the parent of `rel` ("" for top-level nodes), `None` for the root.
fn rel_parent(rel: &str) -> Option<&str> {
    rel.rfind('/').map(|i| &rel[..i])
}

/// Computes a Merkle root from node hashes that arrive in tree order (each parent right before
/// its subtree), keeping one open hasher per ancestor of the current node.
#[derive(Default)]
pub struct MerkleBuilder {
    open: Vec<Frame>,
    root: Option<Hash>,
}

struct Frame {
    rel: String,
    hasher: blake3::Hasher,
    children: u64,
}

impl MerkleBuilder {
    /// Adds the node at `rel`. A node whose parent was not pushed right before its subtree is
    /// not part of the tree and is ignored (walks never produce one).
    pub fn push(&mut self, rel: &str, node_hash: &Hash) {
        // Frames above the parent are finished subtrees: close them into their parents.
        let keep = match rel_parent(rel) {
            None if self.root.is_none() && self.open.is_empty() => 0,
            None => return,
            Some(p) => match self.open.iter().rposition(|f| f.rel == p) {
                Some(i) => i + 1,
                None => return,
            },
        };
        while self.open.len() > keep {
            self.close_top();
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"zkt2");
        hasher.update(node_hash);
        self.open.push(Frame {
            rel: rel.to_string(),
            hasher,
            children: 0,
        });
    }

    fn close_top(&mut self) {
        let Some(mut f) = self.open.pop() else { return };
        f.hasher.update(&f.children.to_le_bytes());
        let sub = *f.hasher.finalize().as_bytes();
        match self.open.last_mut() {
            Some(parent) => {
                let name = &f.rel[parent.rel.len() + 1..];
                put_bytes(&mut parent.hasher, name.as_bytes());
                parent.hasher.update(&sub);
                parent.children += 1;
            }
            None => self.root = Some(sub),
        }
    }

    /// The root hash; [`empty_tree_hash`] when no root node was pushed.
    pub fn finish(mut self) -> Hash {
        while !self.open.is_empty() {
            self.close_top();
        }
        self.root.unwrap_or_else(empty_tree_hash)
    }
}

/// Hex digits of a root hash shown where a full one is too long (a line of output, a
/// condition message): 64 bits, plenty to tell two trees apart by eye.
pub const SHORT_HASH_CHARS: usize = 16;

/// The first [`SHORT_HASH_CHARS`] of a hex hash (all of it when shorter).
pub fn short_hash(hex: &str) -> &str {
    hex.get(..SHORT_HASH_CHARS).unwrap_or(hex)
}

/// Lowercase hex of a hash, as reported.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a destination node differs from its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum DivergenceClass {
    /// In the source, not in the destination.
    Missing,
    /// In the destination, not in the source.
    Extra,
    DataDiffers,
    AclDiffers,
    KindDiffers,
}

impl DivergenceClass {
    pub fn label(self) -> &'static str {
        match self {
            DivergenceClass::Missing => "missing",
            DivergenceClass::Extra => "extra",
            DivergenceClass::DataDiffers => "data differs",
            DivergenceClass::AclDiffers => "ACL differs",
            DivergenceClass::KindDiffers => "kind differs",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Path relative to the compared roots ("" is the root itself).
    pub path: String,
    pub class: DivergenceClass,
}

/// Number of divergent nodes per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DivergenceCounts {
    pub missing: u64,
    pub extra: u64,
    pub data_differs: u64,
    pub acl_differs: u64,
    pub kind_differs: u64,
}

impl DivergenceCounts {
    pub fn total(&self) -> u64 {
        self.missing + self.extra + self.data_differs + self.acl_differs + self.kind_differs
    }

    fn add(&mut self, class: DivergenceClass) {
        match class {
            DivergenceClass::Missing => self.missing += 1,
            DivergenceClass::Extra => self.extra += 1,
            DivergenceClass::DataDiffers => self.data_differs += 1,
            DivergenceClass::AclDiffers => self.acl_differs += 1,
            DivergenceClass::KindDiffers => self.kind_differs += 1,
        }
    }
}

/// Result of comparing two digest trees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub counts: DivergenceCounts,
    /// The first `limit` divergences in tree order.
    pub divergences: Vec<Divergence>,
    /// Number of divergent nodes (a node differing in data and ACL counts once).
    pub divergent_nodes: u64,
}

/// Which side(s) a [`Comparer::step`] consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advance {
    Source,
    Destination,
    Both,
    Done,
}

/// Everything learnt by comparing two trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub diff: Diff,
    pub source_hash: Hash,
    pub destination_hash: Hash,
    pub source_nodes: u64,
    pub destination_nodes: u64,
}

/// Compares two trees that stream past in tree order, one step at a time: the caller shows the
/// next node of each side (`None` once a side is exhausted) and advances what the step consumed.
/// Both Merkle roots are built on the way, so nothing of the trees is kept.
pub struct Comparer {
    diff: Diff,
    limit: usize,
    source: MerkleBuilder,
    destination: MerkleBuilder,
    source_nodes: u64,
    destination_nodes: u64,
}

impl Comparer {
    /// `limit`: how many divergences are listed (all are counted).
    pub fn new(limit: usize) -> Comparer {
        Comparer {
            diff: Diff::default(),
            limit,
            source: MerkleBuilder::default(),
            destination: MerkleBuilder::default(),
            source_nodes: 0,
            destination_nodes: 0,
        }
    }

    fn record(&mut self, path: &str, classes: &[DivergenceClass]) {
        if classes.is_empty() {
            return;
        }
        self.diff.divergent_nodes += 1;
        for class in classes {
            self.diff.counts.add(*class);
            if self.diff.divergences.len() < self.limit {
                self.diff.divergences.push(Divergence {
                    path: path.to_string(),
                    class: *class,
                });
            }
        }
    }

    fn take_source(&mut self, rel: &str, d: &Digest) {
        self.source.push(rel, &d.node);
        self.source_nodes += 1;
    }

    fn take_destination(&mut self, rel: &str, d: &Digest) {
        self.destination.push(rel, &d.node);
        self.destination_nodes += 1;
    }

    pub fn step(
        &mut self,
        source: Option<(&str, &Digest)>,
        destination: Option<(&str, &Digest)>,
    ) -> Advance {
        match (source, destination) {
            (None, None) => Advance::Done,
            (Some((ks, vs)), None) => {
                self.record(ks, &[DivergenceClass::Missing]);
                self.take_source(ks, vs);
                Advance::Source
            }
            (None, Some((kd, vd))) => {
                self.record(kd, &[DivergenceClass::Extra]);
                self.take_destination(kd, vd);
                Advance::Destination
            }
            (Some((ks, vs)), Some((kd, vd))) => match tree_order(ks, kd) {
                std::cmp::Ordering::Less => {
                    self.record(ks, &[DivergenceClass::Missing]);
                    self.take_source(ks, vs);
                    Advance::Source
                }
                std::cmp::Ordering::Greater => {
                    self.record(kd, &[DivergenceClass::Extra]);
                    self.take_destination(kd, vd);
                    Advance::Destination
                }
                std::cmp::Ordering::Equal => {
                    let mut classes = Vec::new();
                    if vs.kind != vd.kind {
                        classes.push(DivergenceClass::KindDiffers);
                    }
                    if vs.data != vd.data {
                        classes.push(DivergenceClass::DataDiffers);
                    }
                    if vs.acl != vd.acl {
                        classes.push(DivergenceClass::AclDiffers);
                    }
                    self.record(ks, &classes);
                    self.take_source(ks, vs);
                    self.take_destination(kd, vd);
                    Advance::Both
                }
            },
        }
    }

    pub fn finish(self) -> Comparison {
        Comparison {
            diff: self.diff,
            source_hash: self.source.finish(),
            destination_hash: self.destination.finish(),
            source_nodes: self.source_nodes,
            destination_nodes: self.destination_nodes,
        }
    }
}

/// Compares two in-memory digest trees with the same [`Comparer`] live verification uses.
pub fn compare(source: &DigestTree, destination: &DigestTree, limit: usize) -> Comparison {
    let mut c = Comparer::new(limit);
    let mut s = source.iter().peekable();
    let mut d = destination.iter().peekable();
    loop {
        match c.step(s.peek().copied(), d.peek().copied()) {
            Advance::Done => break,
            Advance::Source => {
                s.next();
            }
            Advance::Destination => {
                d.next();
            }
            Advance::Both => {
                s.next();
                d.next();
            }
        }
    }
    c.finish()
}

/// Compares two digest trees node by node. Every divergent node is counted; only the first
/// `limit` are listed.
pub fn diff(source: &DigestTree, destination: &DigestTree, limit: usize) -> Diff {
    compare(source, destination, limit).diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{perms, AclEntry};

    fn tree(nodes: &[(&str, Node)]) -> DigestTree {
        DigestTree::from_nodes(nodes.iter().map(|(p, n)| (*p, n)), HashOptions::default())
    }

    fn sample() -> Vec<(&'static str, Node)> {
        vec![
            ("", Node::persistent("root")),
            ("/a", Node::persistent(vec![0u8, 255, 7])),
            ("/a/x", Node::persistent("")),
            ("/a-b", Node::persistent("sibling sorting before /a/x")),
            ("/c", Node::persistent("c").with_kind(NodeKind::Container)),
        ]
    }

    #[test]
    fn equal_trees_have_equal_roots_and_no_divergence() {
        let a = tree(&sample());
        let b = tree(&sample());
        assert_eq!(a.root_hash(), b.root_hash());
        let d = diff(&a, &b, 10);
        assert_eq!(d.counts.total(), 0);
        assert!(d.divergences.is_empty());
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut nodes = sample();
        let a = tree(&nodes);
        nodes.reverse();
        assert_eq!(a.root_hash(), tree(&nodes).root_hash());
    }

    #[test]
    fn every_class_is_detected() {
        let src = tree(&sample());
        let mut other = sample();
        other.retain(|(p, _)| *p != "/a/x"); // missing
        other.push(("/extra", Node::persistent("e"))); // extra
        other[1].1.data = b"changed".to_vec(); // /a data differs
        other[2].1 = Node::persistent("sibling sorting before /a/x").with_acl(vec![AclEntry::new(
            perms::READ,
            "world",
            "anyone",
        )]); // ACL differs
        other[0].1 = Node::persistent("root").with_kind(NodeKind::Ttl { ttl_ms: 5000 }); // kind
        let dst = tree(&other);
        assert_ne!(src.root_hash(), dst.root_hash());
        let d = diff(&src, &dst, 100);
        assert_eq!(
            d.counts,
            DivergenceCounts {
                missing: 1,
                extra: 1,
                data_differs: 1,
                acl_differs: 1,
                kind_differs: 1
            }
        );
        let got: Vec<(&str, DivergenceClass)> = d
            .divergences
            .iter()
            .map(|x| (x.path.as_str(), x.class))
            .collect();
        assert_eq!(
            got,
            vec![
                ("", DivergenceClass::KindDiffers),
                ("/a", DivergenceClass::DataDiffers),
                ("/a/x", DivergenceClass::Missing),
                ("/a-b", DivergenceClass::AclDiffers),
                ("/extra", DivergenceClass::Extra),
            ]
        );
    }

    #[test]
    fn ttl_value_is_part_of_the_kind() {
        let a = tree(&[(
            "",
            Node::persistent("").with_kind(NodeKind::Ttl { ttl_ms: 1 }),
        )]);
        let b = tree(&[(
            "",
            Node::persistent("").with_kind(NodeKind::Ttl { ttl_ms: 2 }),
        )]);
        assert_ne!(a.root_hash(), b.root_hash());
    }

    #[test]
    fn acl_can_be_left_out() {
        let open = [("", Node::persistent("x"))];
        let closed = [(
            "",
            Node::persistent("x").with_acl(vec![AclEntry::new(perms::READ, "digest", "u:h")]),
        )];
        let no_acl = HashOptions { acl: false };
        let a = DigestTree::from_nodes(open.iter().map(|(p, n)| (*p, n)), no_acl);
        let b = DigestTree::from_nodes(closed.iter().map(|(p, n)| (*p, n)), no_acl);
        assert_eq!(a.root_hash(), b.root_hash());
        assert_eq!(diff(&a, &b, 10).counts.total(), 0);
    }

    #[test]
    fn subtree_hash_depends_on_structure_not_just_node_set() {
        // Same node digests cannot move: the relative path is inside each node hash.
        let a = tree(&[("", Node::persistent("")), ("/a", Node::persistent("1"))]);
        let b = tree(&[("", Node::persistent("")), ("/b", Node::persistent("1"))]);
        assert_ne!(a.root_hash(), b.root_hash());
    }

    #[test]
    fn limit_caps_the_list_not_the_counts() {
        let src = tree(&[("", Node::persistent(""))]);
        let mut nodes = vec![("", Node::persistent(""))];
        let names: Vec<String> = (0..50).map(|i| format!("/n{i}")).collect();
        for n in &names {
            nodes.push((n.as_str(), Node::persistent("")));
        }
        let dst =
            DigestTree::from_nodes(nodes.iter().map(|(p, n)| (*p, n)), HashOptions::default());
        let d = diff(&src, &dst, 5);
        assert_eq!(d.counts.extra, 50);
        assert_eq!(d.divergences.len(), 5);
    }

    #[test]
    fn a_node_without_its_parent_is_not_part_of_the_tree() {
        let whole = tree(&[
            ("", Node::persistent("")),
            ("/a", Node::persistent("1")),
            ("/z", Node::persistent("2")),
        ]);
        let with_orphan = tree(&[
            ("", Node::persistent("")),
            ("/a", Node::persistent("1")),
            ("/m/orphan", Node::persistent("3")),
            ("/z", Node::persistent("2")),
        ]);
        assert_eq!(whole.root_hash(), with_orphan.root_hash());
    }

    #[test]
    fn empty_tree_has_its_own_hash() {
        assert_eq!(DigestTree::new().root_hash(), empty_tree_hash());
        assert_ne!(
            tree(&[("", Node::persistent(""))]).root_hash(),
            empty_tree_hash()
        );
    }
}
