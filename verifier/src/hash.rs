//! blake3 digests of znodes and Merkle hashes of trees.
//!
//! Stable encoding (changing it changes every published root hash):
//! - node hash = blake3("zkn1" ‖ len+relative path ‖ kind tag ‖ ttl i64 ‖ len+data ‖ acl hash)
//! - ACL hash = blake3("zka1" ‖ count ‖ for each entry in canonical order: perms ‖ len+scheme ‖ len+id)
//! - subtree hash = blake3("zkt1" ‖ node hash ‖ count ‖ for each child by name: len+name ‖ subtree hash)
//!
//! Lengths are u64 little endian, so no two different inputs share an encoding.

use std::collections::{BTreeMap, HashMap};

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
        // Reverse tree order meets every child before its parent.
        let mut pending: HashMap<&str, Vec<(&str, Hash)>> = HashMap::new();
        let mut root = None;
        for (key, digest) in self.nodes.iter().rev() {
            let rel = key.0.as_str();
            let mut children = pending.remove(rel).unwrap_or_default();
            children.reverse();
            let mut h = blake3::Hasher::new();
            h.update(b"zkt1");
            h.update(&digest.node);
            h.update(&(children.len() as u64).to_le_bytes());
            for (name, sub) in &children {
                put_bytes(&mut h, name.as_bytes());
                h.update(sub);
            }
            let sub = *h.finalize().as_bytes();
            match rel.rfind('/') {
                Some(i) => pending
                    .entry(&rel[..i])
                    .or_default()
                    .push((&rel[i + 1..], sub)),
                None => root = Some(sub),
            }
        }
        root.unwrap_or_else(|| *blake3::hash(b"zkt1-empty").as_bytes())
    }
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

/// Compares two digest trees node by node (a merge of two sorted maps). Every divergent node is
/// counted; only the first `limit` are listed.
pub fn diff(source: &DigestTree, destination: &DigestTree, limit: usize) -> Diff {
    let mut out = Diff::default();
    let record = |out: &mut Diff, path: &str, classes: &[DivergenceClass]| {
        if classes.is_empty() {
            return;
        }
        out.divergent_nodes += 1;
        for class in classes {
            out.counts.add(*class);
            if out.divergences.len() < limit {
                out.divergences.push(Divergence {
                    path: path.to_string(),
                    class: *class,
                });
            }
        }
    };
    let mut s = source.nodes.iter().peekable();
    let mut d = destination.nodes.iter().peekable();
    loop {
        match (s.peek(), d.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                record(&mut out, &k.0, &[DivergenceClass::Missing]);
                s.next();
            }
            (None, Some((k, _))) => {
                record(&mut out, &k.0, &[DivergenceClass::Extra]);
                d.next();
            }
            (Some((ks, vs)), Some((kd, vd))) => match ks.cmp(kd) {
                std::cmp::Ordering::Less => {
                    record(&mut out, &ks.0, &[DivergenceClass::Missing]);
                    s.next();
                }
                std::cmp::Ordering::Greater => {
                    record(&mut out, &kd.0, &[DivergenceClass::Extra]);
                    d.next();
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
                    record(&mut out, &ks.0, &classes);
                    s.next();
                    d.next();
                }
            },
        }
    }
    out
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
}
