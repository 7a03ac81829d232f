//! Taking a snapshot: the source walked in tree order, each node a record streamed through
//! zstd into a multipart upload, the manifest written last.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use verifier::hash::{hex, MerkleBuilder};
use verifier::Side;
use verifier::{
    path, ConnectOptions, EphemeralPolicy, HashOptions, NodeWalkEvent, ReadError, WalkOptions,
    WalkedNode,
};

use super::format::{self, encode_record, encode_trailer, KindCounts, Manifest};
use super::{BackupError, Location};
use crate::engine::SyncError;

/// What to back up and where.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub source: ConnectOptions,
    pub root: String,
    pub location: Location,
    /// Snapshot names are `<name>-<UTC time>`.
    pub name: String,
    /// Include ACLs in the manifest's root hash (they are stored either way).
    pub acl_in_hash: bool,
    pub ephemerals: EphemeralPolicy,
    /// Nodes read concurrently.
    pub window: usize,
    /// zstd level.
    pub level: i32,
    /// ZooKeeper shows containers and TTL nodes to clients as persistent nodes: these rules
    /// (as on a sync) say which paths to restore as such.
    pub type_rules: Vec<crate::engine::TypeRule>,
}

/// Nodes a backup reads concurrently by default.
const DEFAULT_WINDOW: usize = 256;
/// zstd's own default level: fast, and most of the gain on znode data.
const DEFAULT_LEVEL: i32 = 3;

impl BackupOptions {
    pub fn new(source: ConnectOptions, root: &str, location: Location, name: &str) -> Self {
        BackupOptions {
            source,
            root: root.to_string(),
            location,
            name: name.to_string(),
            acl_in_hash: true,
            ephemerals: EphemeralPolicy::Skip,
            window: DEFAULT_WINDOW,
            level: DEFAULT_LEVEL,
            type_rules: Vec::new(),
        }
    }
}

/// Compressed bytes handed to the upload at a time.
const UPLOAD_CHUNK: usize = 4 << 20;
/// Room for one typical record before the buffer grows.
const RECORD_CAPACITY: usize = 4096;

/// `<name>-YYYYMMDDTHHMMSSZ`.
pub fn snapshot_name(name: &str, at: Timestamp) -> String {
    format!("{name}-{}", at.strftime("%Y%m%dT%H%M%SZ"))
}

/// Backs the tree up; returns its manifest.
pub async fn backup(o: &BackupOptions) -> Result<Manifest, BackupError> {
    path::validate_root("root path", &o.root)?;
    let started = Instant::now();
    let now = Timestamp::now();
    let name = snapshot_name(&o.name, now);
    let store = o.location.open(true)?;
    let manifest_path = o.location.path(&[&name, format::MANIFEST]);
    refuse_existing(&store, &o.location, &manifest_path, &name).await?;
    let walk = start_walk(o).await?;
    let out = Compressor::new(o)?;
    let data_path = o.location.path(&[&name, format::NODES]);
    let (tally, object) = match upload(o, &store, data_path.clone(), walk, out).await {
        Ok(done) => done,
        Err(e) => {
            // No manifest was written, so nothing lists this snapshot; drop what was uploaded.
            let _ = store.delete(&data_path).await;
            return Err(e);
        }
    };
    let manifest = Manifest {
        format: format::FORMAT.into(),
        name,
        created_at: now.to_string(),
        source_servers: o.source.servers.clone(),
        root_path: o.root.clone(),
        nodes: tally.nodes,
        data_bytes: tally.data_bytes,
        max_data_bytes: tally.max_data_bytes,
        kinds: tally.kinds,
        root_hash: hex(&tally.merkle.finish()),
        acl_in_hash: o.acl_in_hash,
        max_mzxid: tally.max_mzxid,
        object: format::NODES.into(),
        object_bytes: object.bytes,
        object_blake3: object.blake3,
        duration_seconds: started.elapsed().as_secs_f64(),
        // Until `seal` reads the snapshot back and rewrites this.
        verified_at: format::ReadBack::Unverified,
        suspect: None,
    };
    put_manifest(&store, &o.location, &manifest_path, &manifest).await?;
    Ok(manifest)
}

/// A snapshot name is taken once: a second backup in the same second is refused.
async fn refuse_existing(
    store: &Arc<dyn ObjectStore>,
    location: &Location,
    manifest_path: &ObjectPath,
    name: &str,
) -> Result<(), BackupError> {
    match store.head(manifest_path).await {
        Ok(_) => Err(BackupError::Exists(name.to_string())),
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(BackupError::store(location, "head")(e)),
    }
}

type Walk = mpsc::Receiver<Result<NodeWalkEvent, ReadError>>;

/// The source's pipelined walk, keeping whole nodes.
async fn start_walk(o: &BackupOptions) -> Result<Walk, BackupError> {
    let pool = verifier::connect_pool(Side::Source, &o.source, verifier::zk::READ_SESSIONS)
        .await
        .map_err(SyncError::Connect)?;
    Ok(verifier::walk_nodes(
        pool,
        Side::Source,
        o.root.clone(),
        WalkOptions {
            hash: HashOptions { acl: o.acl_in_hash },
            ephemerals: o.ephemerals,
            window: o.window,
        },
    ))
}

/// Streams the walk into the object at `data_path`. On an error the upload is aborted where it
/// still can be; the caller deletes what may have landed.
async fn upload(
    o: &BackupOptions,
    store: &Arc<dyn ObjectStore>,
    data_path: ObjectPath,
    walk: Walk,
    mut out: Compressor<'_>,
) -> Result<(Tally, Object), BackupError> {
    let mut upload = BufWriter::new(store.clone(), data_path);
    let streamed = async {
        let tally = stream_records(o, walk, &mut out, &mut upload).await?;
        let object = out.finish(&mut upload).await?;
        Ok::<_, BackupError>((tally, object))
    }
    .await;
    match streamed {
        Ok(done) => {
            // A writer whose shutdown began cannot be aborted (object_store panics); the
            // caller's delete is the clean-up then.
            upload
                .shutdown()
                .await
                .map_err(io(&o.location, "finishing the upload"))?;
            Ok(done)
        }
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

/// Writes every walked node as a record, then the trailer.
async fn stream_records(
    o: &BackupOptions,
    mut walk: Walk,
    out: &mut Compressor<'_>,
    upload: &mut BufWriter,
) -> Result<Tally, BackupError> {
    let mut tally = Tally::default();
    let mut record = Vec::with_capacity(RECORD_CAPACITY);
    record.extend_from_slice(format::MAGIC);
    while let Some(ev) = walk.recv().await {
        match ev.map_err(|e| SyncError::from_read(e, "the backup"))? {
            NodeWalkEvent::Nodes(batch) => {
                for mut n in batch {
                    // The hash stays on what clients see, as the verifier does; the record
                    // keeps the kind to restore.
                    let abs = path::join(&o.root, &n.rel);
                    n.node.kind = crate::engine::kind_for(&o.type_rules, &abs, n.node.kind);
                    encode_record(&mut record, &n.rel, &n.node);
                    tally.add(&n);
                }
            }
            NodeWalkEvent::Done(t) => {
                if !t.root_exists {
                    return Err(BackupError::SourceRootMissing(o.root.clone()));
                }
                out.write(&mut record)?;
                let sum = out.raw_checksum();
                encode_trailer(&mut record, tally.nodes, &sum);
            }
        }
        out.write(&mut record)?;
        out.ship(upload, UPLOAD_CHUNK).await?;
    }
    Ok(tally)
}

/// What the records add up to, for the manifest.
#[derive(Default)]
struct Tally {
    merkle: MerkleBuilder,
    kinds: KindCounts,
    nodes: u64,
    data_bytes: u64,
    max_data_bytes: u64,
    max_mzxid: i64,
}

impl Tally {
    fn add(&mut self, n: &WalkedNode) {
        self.merkle.push(&n.rel, &n.digest.node);
        self.kinds.add(n.node.kind);
        self.nodes += 1;
        self.data_bytes += n.node.data.len() as u64;
        self.max_data_bytes = self.max_data_bytes.max(n.node.data.len() as u64);
        self.max_mzxid = self.max_mzxid.max(n.node.stat.mzxid);
    }
}

/// The uploaded object, as the manifest describes it.
struct Object {
    bytes: u64,
    blake3: String,
}

/// The record stream on its way into the object, with the checksum of the raw stream (for
/// the trailer).
struct Compressor<'a> {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    raw: blake3::Hasher,
    sent: Sent<'a>,
}

impl<'a> Compressor<'a> {
    fn new(o: &'a BackupOptions) -> Result<Self, BackupError> {
        let encoder = zstd::stream::write::Encoder::new(Vec::new(), o.level).map_err(|e| {
            BackupError::Io {
                what: "starting zstd".into(),
                source: e,
            }
        })?;
        Ok(Compressor {
            encoder,
            raw: blake3::Hasher::new(),
            sent: Sent {
                object: blake3::Hasher::new(),
                bytes: 0,
                location: &o.location,
            },
        })
    }

    /// Compresses `record` and empties it.
    fn write(&mut self, record: &mut Vec<u8>) -> Result<(), BackupError> {
        self.raw.update(record);
        self.encoder
            .write_all(record)
            .map_err(io(self.sent.location, "compressing"))?;
        record.clear();
        Ok(())
    }

    /// The checksum of every raw byte written so far.
    fn raw_checksum(&self) -> [u8; 32] {
        *self.raw.finalize().as_bytes()
    }

    /// Uploads the compressed bytes once there are at least `at_least` of them.
    async fn ship(&mut self, upload: &mut BufWriter, at_least: usize) -> Result<(), BackupError> {
        if self.encoder.get_ref().len() < at_least {
            return Ok(());
        }
        let chunk = std::mem::take(self.encoder.get_mut());
        self.sent.send(upload, &chunk).await
    }

    /// Ends the zstd stream and uploads its rest.
    async fn finish(self, upload: &mut BufWriter) -> Result<Object, BackupError> {
        let Compressor {
            encoder, mut sent, ..
        } = self;
        let rest = encoder.finish().map_err(io(sent.location, "compressing"))?;
        sent.send(upload, &rest).await?;
        Ok(Object {
            bytes: sent.bytes,
            blake3: hex(sent.object.finalize().as_bytes()),
        })
    }
}

/// The compressed bytes uploaded so far, and their checksum (for the manifest).
struct Sent<'a> {
    object: blake3::Hasher,
    bytes: u64,
    location: &'a Location,
}

impl Sent<'_> {
    async fn send(&mut self, upload: &mut BufWriter, chunk: &[u8]) -> Result<(), BackupError> {
        self.object.update(chunk);
        self.bytes += chunk.len() as u64;
        upload
            .write_all(chunk)
            .await
            .map_err(io(self.location, "uploading"))
    }
}

/// An I/O error of the backup at `location`. The message is built only on error: this is
/// called once per walked batch.
fn io<'a>(
    location: &'a Location,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |e| BackupError::Io {
        what: format!("{}: {what}", location.describe()),
        source: e,
    }
}

async fn put_manifest(
    store: &Arc<dyn ObjectStore>,
    location: &Location,
    manifest_path: &ObjectPath,
    manifest: &Manifest,
) -> Result<(), BackupError> {
    let body = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Io {
        what: "encoding the manifest".into(),
        source: e.into(),
    })?;
    store
        .put(manifest_path, body.into())
        .await
        .map_err(BackupError::store(location, "put"))?;
    Ok(())
}
