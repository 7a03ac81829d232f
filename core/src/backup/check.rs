//! Reading a stored snapshot back: the download checked against the manifest, then the
//! decode checked record by record (trailer, count, tree order, Merkle root).

use std::io::{Seek, Write};
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use verifier::hash::{hex, MerkleBuilder};
use verifier::model::Node;
use verifier::{path, HashOptions};

use super::format::{Corrupt, Decoder, Item};
use super::{io_error, is_under, BackupError, Location, Manifest};

/// Reads a stored snapshot back and checks it as a restore would (object checksum, trailer,
/// tree order, Merkle root), writing nothing: proof that what is in the bucket restores.
pub async fn check(location: &Location, m: &Manifest) -> Result<(), BackupError> {
    let store = location.open(false)?;
    let file = download(&store, location, m).await?;
    check_file(file, m).await
}

/// Decodes a downloaded snapshot in a blocking thread, only checking it.
pub(super) async fn check_file(file: std::fs::File, m: &Manifest) -> Result<(), BackupError> {
    let mc = m.clone();
    let corrupt = BackupError::corrupt(&m.name);
    tokio::task::spawn_blocking(move || decode_all(file, &mc, None))
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

/// Decodes the whole stream in a blocking thread, sending nodes in order (None: only check).
/// Checks the trailer, the count, tree order and the Merkle root against the manifest.
pub(super) fn decode_all(
    file: std::fs::File,
    m: &Manifest,
    tx: Option<mpsc::Sender<(String, Node)>>,
) -> Result<(), String> {
    let reader = zstd::stream::read::Decoder::new(file).map_err(|e| e.to_string())?;
    let mut d = Decoder::new(reader).map_err(|e: Corrupt| e.to_string())?;
    let mut merkle = MerkleBuilder::default();
    let mut order = TreeOrder::default();
    let opts = HashOptions { acl: m.acl_in_hash };
    loop {
        match d.next_item().map_err(|e| e.to_string())? {
            Item::Node(rel, mut node) => {
                order.admit(&rel)?;
                // The hash is of what clients see; the node keeps the kind to restore.
                let kind = node.kind;
                node.kind = crate::engine::observable(kind);
                let digest = verifier::hash::digest_node(&rel, &node, opts);
                node.kind = kind;
                merkle.push(&rel, &digest.node);
                if let Some(tx) = &tx {
                    if tx.blocking_send((rel, node)).is_err() {
                        return Err("the writer stopped".into());
                    }
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

/// Strict tree order, and every node's parent right among the records before it: a restore
/// creates them in this order, so an orphan would fail mid-write.
#[derive(Default)]
struct TreeOrder {
    /// Records admitted so far.
    count: u64,
    last: Option<String>,
    /// The ancestors of the current record.
    open: Vec<String>,
}

impl TreeOrder {
    fn admit(&mut self, rel: &str) -> Result<(), String> {
        let ordered = match &self.last {
            None => rel.is_empty(),
            Some(prev) => path::tree_order(prev, rel) == std::cmp::Ordering::Less,
        };
        while self.open.last().is_some_and(|a| !is_under(a, rel)) {
            self.open.pop();
        }
        let parent_ok = match rel.rfind('/') {
            None => self.open.is_empty(),
            Some(i) => self.open.last().is_some_and(|p| p.as_str() == &rel[..i]),
        };
        if !ordered || !parent_ok {
            return Err(format!(
                "record {} ({rel:?}) is out of tree order or has no parent before it",
                self.count
            ));
        }
        self.open.push(rel.to_string());
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

    /// A compressed stream of `rels` and a manifest that matches it (hash included), as a
    /// forger who controls both would write them.
    fn forged(rels: &[&str]) -> (std::fs::File, Manifest) {
        let mut raw = format::MAGIC.to_vec();
        let mut merkle = MerkleBuilder::default();
        for rel in rels {
            let node = Node::persistent(b"x".to_vec());
            encode_record(&mut raw, rel, &node);
            let d = verifier::hash::digest_node(rel, &node, HashOptions { acl: true });
            merkle.push(rel, &d.node);
        }
        let sum = *blake3::hash(&raw).as_bytes();
        encode_trailer(&mut raw, rels.len() as u64, &sum);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&zstd::encode_all(&raw[..], 3).unwrap())
            .unwrap();
        f.rewind().unwrap();
        let m = Manifest {
            nodes: rels.len() as u64,
            root_hash: hex(&merkle.finish()),
            ..Manifest::empty()
        };
        (f, m)
    }

    #[test]
    fn a_stream_in_tree_order_decodes_and_an_orphan_is_refused() {
        let (f, m) = forged(&["", "/a", "/a/b", "/c"]);
        decode_all(f, &m, None).unwrap();
        // /a/b without /a: the hash is consistent, but a restore would fail half-way.
        let (f, m) = forged(&["", "/a/b", "/c"]);
        let e = decode_all(f, &m, None).unwrap_err();
        assert!(e.contains("no parent"), "{e}");
        let (f, m) = forged(&["", "/c", "/a"]);
        let e = decode_all(f, &m, None).unwrap_err();
        assert!(e.contains("tree order"), "{e}");
    }
}
