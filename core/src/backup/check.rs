//! Reading a stored snapshot back: the download checked against the manifest, then the
//! decode checked record by record (limits, counts and sizes against the manifest, trailer,
//! tree order, Merkle root).
//!
//! The decode streams: one record at a time, each field read through `take` after its length
//! passed the [`Limits`], the running totals held to the manifest's figures as they grow. A
//! forged object of a few kilobytes that would decompress to gigabytes is refused at the
//! first field or total past its bound, having cost at most one record's worth of memory.

use std::io::{Seek, Write};
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use verifier::hash::{hex, MerkleBuilder};
use verifier::model::Node;
use verifier::{path, HashOptions};

use super::format::{Corrupt, Decoder, Item, Limits};
use super::{io_error, is_under, BackupError, Location, Manifest};

/// Reads a stored snapshot back and checks it as a restore would (object checksum, limits,
/// counts and sizes, trailer, tree order, Merkle root), writing nothing: proof that what is
/// in the bucket restores into servers that take `limits`.
pub async fn check(location: &Location, m: &Manifest, limits: Limits) -> Result<(), BackupError> {
    let store = location.open(false)?;
    let file = download(&store, location, m).await?;
    check_file(file, m, limits).await
}

/// Decodes a downloaded snapshot in a blocking thread, only checking it.
pub(super) async fn check_file(
    file: std::fs::File,
    m: &Manifest,
    limits: Limits,
) -> Result<(), BackupError> {
    let mc = m.clone();
    let corrupt = BackupError::corrupt(&m.name);
    tokio::task::spawn_blocking(move || decode_all(file, &mc, limits, None))
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(corrupt)
}

/// Streams the snapshot object into a temporary file, checking size and checksum.
pub(super) async fn download(
    store: &Arc<dyn ObjectStore>,
    location: &Location,
    m: &Manifest,
) -> Result<std::fs::File, BackupError> {
    let corrupt = BackupError::corrupt(&m.name);
    let mut file = staging_file()?;
    let p = location.path(&[&m.name, &m.object]);
    let mut stream = store
        .get(&p)
        .await
        .map_err(BackupError::store(location, "get"))?
        .into_stream();
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BackupError::store(location, "get"))?;
        h.update(&chunk);
        n += chunk.len() as u64;
        file.write_all(&chunk)
            .map_err(io_error("writing a temporary file"))?;
    }
    if n != m.object_bytes {
        return Err(corrupt(format!(
            "the object has {n} bytes, the manifest says {}",
            m.object_bytes
        )));
    }
    let got = hex(h.finalize().as_bytes());
    if got != m.object_blake3 {
        return Err(corrupt(format!(
            "the object's blake3 is {got}, the manifest says {}",
            m.object_blake3
        )));
    }
    file.rewind()
        .map_err(io_error("reading a temporary file"))?;
    Ok(file)
}

/// A decoded node on its way to the restore's planner, holding its share of the memory
/// budget until it is written.
pub(super) type Decoded = (String, Node, OwnedSemaphorePermit);

/// Where a restore's decode sends its nodes: each takes its bytes from `budget` before it is
/// queued, so the queue holds a bounded number of bytes, not of nodes.
pub(super) struct Sink {
    pub tx: mpsc::Sender<Decoded>,
    pub budget: Arc<Semaphore>,
    /// The budget's size: no node asks for more.
    pub budget_bytes: usize,
    pub runtime: tokio::runtime::Handle,
}

impl Sink {
    fn send(&self, rel: String, node: Node) -> Result<(), String> {
        let want = node_bytes(&rel, &node).min(self.budget_bytes).max(2) as u32;
        let permit = self
            .runtime
            .block_on(self.budget.clone().acquire_many_owned(want))
            .map_err(|_| "the writer stopped".to_string())?;
        self.tx
            .blocking_send((rel, node, permit))
            .map_err(|_| "the writer stopped".to_string())
    }
}

/// Memory one decoded node takes, roughly.
pub(super) fn node_bytes(rel: &str, node: &Node) -> usize {
    let acl: usize = node
        .acl
        .iter()
        .map(|e| 16 + e.scheme.len() + e.id.len())
        .sum();
    64 + rel.len() + node.data.len() + acl
}

/// Decodes the whole stream in a blocking thread, sending nodes in order (None: only check).
/// Holds every record to `limits`, the running record count and data bytes to the
/// manifest's as they grow, then checks the trailer, tree order and the Merkle root.
pub(super) fn decode_all(
    file: std::fs::File,
    m: &Manifest,
    limits: Limits,
    sink: Option<Sink>,
) -> Result<(), String> {
    let reader = zstd::stream::read::Decoder::new(file).map_err(|e| e.to_string())?;
    let mut d = Decoder::with_limits(reader, limits).map_err(|e: Corrupt| e.to_string())?;
    let mut merkle = MerkleBuilder::default();
    let mut order = TreeOrder::default();
    let mut totals = Totals::default();
    let opts = HashOptions { acl: m.acl_in_hash };
    loop {
        match d.next_item().map_err(|e| e.to_string())? {
            Item::Node(rel, mut node) => {
                order.admit(&rel)?;
                totals.admit(m, &rel, &node)?;
                // The hash is of what clients see; the node keeps the kind to restore.
                let kind = node.kind;
                node.kind = crate::engine::observable(kind);
                let digest = verifier::hash::digest_node(&rel, &node, opts);
                node.kind = kind;
                merkle.push(&rel, &digest.node);
                if let Some(sink) = &sink {
                    sink.send(rel, node)?;
                }
            }
            Item::Trailer {
                count: n,
                stored,
                computed,
            } => {
                if stored != computed {
                    return Err("the trailer checksum does not match the records".into());
                }
                let count = order.count;
                if n != count || n != m.nodes {
                    return Err(format!(
                        "{count} records, the trailer says {n}, the manifest {}",
                        m.nodes
                    ));
                }
                if totals.data_bytes != m.data_bytes {
                    return Err(format!(
                        "the records hold {} data bytes, the manifest says {}",
                        totals.data_bytes, m.data_bytes
                    ));
                }
                break;
            }
        }
    }
    d.finish().map_err(|e| e.to_string())?;
    let root = hex(&merkle.finish());
    if root != m.root_hash {
        return Err(format!(
            "the records hash to {root}, the manifest says {}",
            m.root_hash
        ));
    }
    Ok(())
}

/// The running totals of a decode, held to the manifest's figures as they grow: a stream
/// that holds more than its manifest declares is refused at the first record past it, not
/// after it was all decompressed.
#[derive(Default)]
struct Totals {
    records: u64,
    data_bytes: u64,
}

impl Totals {
    fn admit(&mut self, m: &Manifest, rel: &str, node: &Node) -> Result<(), String> {
        let len = node.data.len() as u64;
        self.records += 1;
        self.data_bytes += len;
        if self.records > m.nodes {
            return Err(format!(
                "record {} ({rel:?}) is past the manifest's {} nodes",
                self.records - 1,
                m.nodes
            ));
        }
        // Legacy manifests do not record the largest node.
        if m.max_data_bytes > 0 && len > m.max_data_bytes {
            return Err(format!(
                "node data at {rel:?} of {len} bytes is over the manifest's largest node of {} bytes",
                m.max_data_bytes
            ));
        }
        if self.data_bytes > m.data_bytes {
            return Err(format!(
                "the records up to {rel:?} hold {} data bytes, past the manifest's {}",
                self.data_bytes, m.data_bytes
            ));
        }
        Ok(())
    }
}

/// Strict tree order, and every node's parent right among the records before it: a restore
/// creates them in this order, so an orphan would fail mid-write.
#[derive(Default)]
struct TreeOrder {
    /// Records admitted so far.
    count: u64,
    last: Option<String>,
    /// The lengths of the open ancestors of the last record, itself included: each is a
    /// prefix of it, so a deep chain costs a few bytes a level, not a path.
    open: Vec<usize>,
}

impl TreeOrder {
    fn admit(&mut self, rel: &str) -> Result<(), String> {
        let last = self.last.as_deref().unwrap_or_default();
        let ordered = match &self.last {
            None => rel.is_empty(),
            Some(prev) => path::tree_order(prev, rel) == std::cmp::Ordering::Less,
        };
        while self
            .open
            .last()
            .is_some_and(|&n| !is_under(&last[..n], rel))
        {
            self.open.pop();
        }
        let parent_ok = match rel.rfind('/') {
            None => self.open.is_empty(),
            Some(i) => self.open.last().is_some_and(|&n| last[..n] == rel[..i]),
        };
        if !ordered || !parent_ok {
            return Err(format!(
                "record {} ({rel:?}) is out of tree order or has no parent before it",
                self.count
            ));
        }
        self.open.push(rel.len());
        self.count += 1;
        self.last = Some(rel.to_string());
        Ok(())
    }
}

/// A temporary file in TMPDIR for a snapshot object being checked or restored: the only path
/// this binary writes. The error names TMPDIR, since a read-only root filesystem is the usual
/// cause (the shipped Deployment mounts an emptyDir there).
fn staging_file() -> Result<std::fs::File, BackupError> {
    let dir = std::env::temp_dir();
    tempfile::tempfile_in(&dir).map_err(io_error(format!(
        "creating a temporary file in TMPDIR ({}); set TMPDIR to a writable directory",
        dir.display()
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::format::{self, encode_record, encode_trailer};
    use super::*;

    /// A compressed stream of `nodes` and a manifest that matches it (counts and hash
    /// included), as a forger who controls both would write them.
    fn forged_with(nodes: &[(&str, Vec<u8>)]) -> (std::fs::File, Manifest) {
        let mut raw = format::MAGIC.to_vec();
        let mut merkle = MerkleBuilder::default();
        let mut m = Manifest::empty();
        for (rel, data) in nodes {
            let node = Node::persistent(data.clone());
            encode_record(&mut raw, rel, &node);
            let d = verifier::hash::digest_node(rel, &node, HashOptions { acl: true });
            merkle.push(rel, &d.node);
            m.nodes += 1;
            m.data_bytes += data.len() as u64;
            m.max_data_bytes = m.max_data_bytes.max(data.len() as u64);
        }
        let sum = *blake3::hash(&raw).as_bytes();
        encode_trailer(&mut raw, nodes.len() as u64, &sum);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&zstd::encode_all(&raw[..], 3).unwrap())
            .unwrap();
        f.rewind().unwrap();
        m.root_hash = hex(&merkle.finish());
        (f, m)
    }

    fn forged(rels: &[&str]) -> (std::fs::File, Manifest) {
        let nodes: Vec<_> = rels.iter().map(|r| (*r, b"x".to_vec())).collect();
        forged_with(&nodes)
    }

    fn reopen(f: &std::fs::File) -> std::fs::File {
        let mut f = f.try_clone().unwrap();
        f.rewind().unwrap();
        f
    }

    #[test]
    fn a_stream_holding_more_than_its_manifest_declares_is_refused_as_it_grows() {
        let nodes = [
            ("", vec![]),
            ("/a", vec![1; 100]),
            ("/a/b", vec![2; 300]),
            ("/c", vec![3; 10]),
        ];
        let (f, m) = forged_with(&nodes);
        decode_all(reopen(&f), &m, Limits::default(), None).unwrap();
        // Fewer nodes declared: refused at the first record past them, not at the trailer.
        let fewer = Manifest {
            nodes: 2,
            ..m.clone()
        };
        let e = decode_all(reopen(&f), &fewer, Limits::default(), None).unwrap_err();
        assert_eq!(e, "record 2 (\"/a/b\") is past the manifest's 2 nodes");
        // Fewer data bytes declared: refused at the record that crosses the figure.
        let less = Manifest {
            data_bytes: 150,
            ..m.clone()
        };
        let e = decode_all(reopen(&f), &less, Limits::default(), None).unwrap_err();
        assert_eq!(
            e,
            "the records up to \"/a/b\" hold 400 data bytes, past the manifest's 150"
        );
        // More declared than the records hold: refused at the trailer.
        let more = Manifest {
            data_bytes: 999,
            ..m.clone()
        };
        let e = decode_all(reopen(&f), &more, Limits::default(), None).unwrap_err();
        assert_eq!(e, "the records hold 410 data bytes, the manifest says 999");
        // A node larger than the manifest's largest.
        let smaller = Manifest {
            max_data_bytes: 200,
            ..m.clone()
        };
        let e = decode_all(reopen(&f), &smaller, Limits::default(), None).unwrap_err();
        assert!(e.contains("node data at \"/a/b\" of 300 bytes is over the manifest's largest node of 200 bytes"), "{e}");
        // Legacy manifests have no largest node: only the limits apply.
        let legacy = Manifest {
            max_data_bytes: 0,
            ..m.clone()
        };
        decode_all(reopen(&f), &legacy, Limits::default(), None).unwrap();
        // And the limits: a destination taking 200 bytes refuses the 300-byte node.
        let e = decode_all(reopen(&f), &m, Limits::new(200), None).unwrap_err();
        assert!(e.contains("node data at \"/a/b\" of 300 bytes is over the limit of 200 (the destination's jute.maxbuffer"), "{e}");
    }

    #[test]
    fn a_deep_chain_and_its_siblings_are_in_tree_order() {
        let mut rels = vec![String::new()];
        let mut p = String::new();
        for _ in 0..500 {
            p.push_str("/d");
            rels.push(p.clone());
        }
        rels.extend(["/d/e".to_string(), "/f".into(), "/f/g".into()]);
        let refs: Vec<_> = rels.iter().map(String::as_str).collect();
        let (f, m) = forged(&refs);
        decode_all(f, &m, Limits::default(), None).unwrap();
        // A sibling's child whose parent is only a prefix of an open node's name.
        let (f, m) = forged(&["", "/a", "/a/b", "/ab/c"]);
        let e = decode_all(f, &m, Limits::default(), None).unwrap_err();
        assert!(e.contains("no parent"), "{e}");
    }

    #[test]
    fn a_stream_in_tree_order_decodes_and_an_orphan_is_refused() {
        let (f, m) = forged(&["", "/a", "/a/b", "/c"]);
        decode_all(f, &m, Limits::default(), None).unwrap();
        // /a/b without /a: the hash is consistent, but a restore would fail half-way.
        let (f, m) = forged(&["", "/a/b", "/c"]);
        let e = decode_all(f, &m, Limits::default(), None).unwrap_err();
        assert!(e.contains("no parent"), "{e}");
        let (f, m) = forged(&["", "/c", "/a"]);
        let e = decode_all(f, &m, Limits::default(), None).unwrap_err();
        assert!(e.contains("tree order"), "{e}");
    }
}
