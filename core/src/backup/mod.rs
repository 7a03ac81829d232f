//! Backups of a ZooKeeper tree to object storage, and restores from them. No Kubernetes here.
//!
//! A backup walks the source in tree order (the verifier's pipelined walk, keeping whole
//! nodes), streams each node as a record through zstd into a multipart upload, and computes
//! the verifier's Merkle root of what it captured. The manifest is written last, so a snapshot
//! that did not finish is never listed. Memory is bounded by the walk's read-ahead and one
//! compressed chunk, whatever the tree's size.
//!
//! A restore first downloads the snapshot to a temporary file while checking the compressed
//! bytes against the manifest, then decodes it all, checking the trailer and recomputing the
//! Merkle root. Only a snapshot that passes is written: a corrupt one is refused with nothing
//! written. It then creates the nodes (ACLs staged when they would lock the restore out,
//! sequential parents' cversion raised) and verifies the restored tree's root hash against
//! the manifest.
//!
//! ZooKeeper has no point-in-time read: like its own snapshots, a backup of a tree that is
//! being written is fuzzy. The manifest's `maxMzxid` says how far it reaches.

pub mod format;
pub mod retention;
pub mod store;

use std::io::{Seek, Write};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use jiff::Timestamp;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use verifier::hash::{hex, MerkleBuilder};
use verifier::model::{is_sequential_name, perms, Node, NodeKind};
use verifier::{path, ConnectOptions, EphemeralPolicy, HashOptions, NodeWalkEvent, WalkOptions};
use zookeeper_client::Error as ZkError;

use crate::engine::error::cause_chain;
use crate::engine::plan::{plan_acl, Identity};
use crate::engine::writer::{self, Op, Queued, WriterConfig};
use crate::engine::{Progress, SyncError};
use format::{encode_record, encode_trailer, Corrupt, Decoder, Item, KindCounts};
pub use format::{Manifest, Standing};
pub use retention::{seal, to_prune, Retention, Sealed};
pub use store::{Backend, Location};

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A bad root path; the message names the field.
    #[error(transparent)]
    Path(#[from] path::PathError),
    #[error("{location}: {op}: {source}")]
    Store {
        location: String,
        op: &'static str,
        #[source]
        source: object_store::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("source root {0} does not exist: nothing to back up")]
    SourceRootMissing(String),
    #[error("{location}: no snapshot {what}")]
    NoSnapshot { location: String, what: String },
    #[error("snapshot {snapshot} is corrupt and was not restored (nothing was written): {what}")]
    Corrupt { snapshot: String, what: String },
    #[error("destination root {path} is not empty ({children} children): restore into an empty or absent path, or delete it first")]
    DestinationNotEmpty { path: String, children: i32 },
    #[error("snapshot {snapshot}: the restored tree's root hash {got} differs from the manifest's {expected}: something wrote to {path} during the restore")]
    Mismatch {
        snapshot: String,
        path: String,
        expected: String,
        got: String,
    },
    #[error("snapshot {0} already exists")]
    Exists(String),
    /// The read-back check after a backup failed; retention did not run.
    #[error("snapshot {snapshot} failed its read-back check; no snapshot was deleted")]
    NotVerified {
        snapshot: String,
        #[source]
        source: Box<BackupError>,
    },
}

impl BackupError {
    fn store(location: &Location, op: &'static str) -> impl FnOnce(object_store::Error) -> Self {
        let location = location.describe();
        move |source| BackupError::Store {
            location,
            op,
            source,
        }
    }
}

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

impl BackupOptions {
    pub fn new(source: ConnectOptions, root: &str, location: Location, name: &str) -> Self {
        BackupOptions {
            source,
            root: root.to_string(),
            location,
            name: name.to_string(),
            acl_in_hash: true,
            ephemerals: EphemeralPolicy::Skip,
            window: 256,
            level: 3,
            type_rules: Vec::new(),
        }
    }
}

/// Compressed bytes handed to the upload at a time.
const UPLOAD_CHUNK: usize = 4 << 20;

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
    match store.head(&manifest_path).await {
        Ok(_) => return Err(BackupError::Exists(name)),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(BackupError::store(&o.location, "head")(e)),
    }
    let pool = verifier::connect_pool("source", &o.source, verifier::zk::READ_SESSIONS)
        .await
        .map_err(SyncError::Connect)?;
    let mut walk = verifier::walk_nodes(
        pool,
        "source",
        o.root.clone(),
        WalkOptions {
            hash: HashOptions { acl: o.acl_in_hash },
            ephemerals: o.ephemerals,
            window: o.window,
        },
    );
    let data_path = o.location.path(&[&name, format::NODES]);
    let mut upload = BufWriter::new(store.clone(), data_path);
    let mut encoder =
        zstd::stream::write::Encoder::new(Vec::new(), o.level).map_err(|e| BackupError::Io {
            what: "starting zstd".into(),
            source: e,
        })?;
    let mut raw = blake3::Hasher::new();
    let mut object = blake3::Hasher::new();
    let mut object_bytes = 0u64;
    let mut merkle = MerkleBuilder::default();
    let mut kinds = KindCounts::default();
    let (mut nodes, mut data_bytes, mut max_mzxid) = (0u64, 0u64, 0i64);
    let mut record = Vec::with_capacity(4096);
    // The message is built only on error: `io(..)` is called once per node.
    let io = |what: &'static str| {
        move |e| BackupError::Io {
            what: format!("{}: {what}", o.location.describe()),
            source: e,
        }
    };
    record.extend_from_slice(format::MAGIC);
    let mut shut_down = false;
    let result: Result<(), BackupError> = async {
        loop {
            let ev = match walk.recv().await {
                Some(ev) => ev.map_err(|e| SyncError::from_read(e, "the backup"))?,
                None => break,
            };
            match ev {
                NodeWalkEvent::Nodes(batch) => {
                    for mut n in batch {
                        // The hash stays on what clients see, as the verifier does; the record
                        // keeps the kind to restore.
                        let abs = path::join(&o.root, &n.rel);
                        n.node.kind = crate::engine::kind_for(&o.type_rules, &abs, n.node.kind);
                        encode_record(&mut record, &n.rel, &n.node);
                        merkle.push(&n.rel, &n.digest.node);
                        kinds.add(n.node.kind);
                        nodes += 1;
                        data_bytes += n.node.data.len() as u64;
                        max_mzxid = max_mzxid.max(n.node.stat.mzxid);
                    }
                }
                NodeWalkEvent::Done(t) => {
                    if !t.root_exists {
                        return Err(BackupError::SourceRootMissing(o.root.clone()));
                    }
                    let sum = {
                        raw.update(&record);
                        *raw.finalize().as_bytes()
                    };
                    encoder.write_all(&record).map_err(io("compressing"))?;
                    record.clear();
                    encode_trailer(&mut record, nodes, &sum);
                }
            }
            raw.update(&record);
            encoder.write_all(&record).map_err(io("compressing"))?;
            record.clear();
            if encoder.get_ref().len() >= UPLOAD_CHUNK {
                let chunk = std::mem::take(encoder.get_mut());
                object.update(&chunk);
                object_bytes += chunk.len() as u64;
                upload.write_all(&chunk).await.map_err(io("uploading"))?;
            }
        }
        let rest = encoder.finish().map_err(io("compressing"))?;
        object.update(&rest);
        object_bytes += rest.len() as u64;
        upload.write_all(&rest).await.map_err(io("uploading"))?;
        shut_down = true;
        upload
            .shutdown()
            .await
            .map_err(io("finishing the upload"))?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // No manifest was written, so nothing lists this snapshot; drop what was uploaded.
        // A writer whose shutdown began cannot be aborted (object_store panics); the delete
        // below is the clean-up then.
        if !shut_down {
            let _ = upload.abort().await;
        }
        let _ = store
            .delete(&o.location.path(&[&name, format::NODES]))
            .await;
        return Err(e);
    }
    let manifest = Manifest {
        format: format::FORMAT.into(),
        name: name.clone(),
        created_at: now.to_string(),
        source_servers: o.source.servers.clone(),
        root_path: o.root.clone(),
        nodes,
        data_bytes,
        kinds,
        root_hash: hex(&merkle.finish()),
        acl_in_hash: o.acl_in_hash,
        max_mzxid,
        object: format::NODES.into(),
        object_bytes,
        object_blake3: hex(object.finalize().as_bytes()),
        duration_seconds: started.elapsed().as_secs_f64(),
        // Until `seal` reads the snapshot back and rewrites this.
        verified_at: format::ReadBack::Unverified,
        suspect: None,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Io {
        what: "encoding the manifest".into(),
        source: e.into(),
    })?;
    store
        .put(&manifest_path, body.into())
        .await
        .map_err(BackupError::store(&o.location, "put"))?;
    Ok(manifest)
}

/// Every complete snapshot (one with a manifest) at `location`, oldest first.
pub async fn list(location: &Location) -> Result<Vec<Manifest>, BackupError> {
    let store = location.open(false)?;
    let prefix = (!location.prefix.is_empty()).then(|| location.path(&[]));
    let mut names = Vec::new();
    let mut objects = store.list(prefix.as_ref());
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(BackupError::store(location, "list"))?;
        if meta.location.filename() == Some(format::MANIFEST) {
            names.push(meta.location);
        }
    }
    let mut out = Vec::new();
    for p in names {
        let bytes = store
            .get(&p)
            .await
            .map_err(BackupError::store(location, "get"))?
            .bytes()
            .await
            .map_err(BackupError::store(location, "get"))?;
        // Anything else that happens to be called manifest.json is not ours.
        if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
            if m.format == format::FORMAT {
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    Ok(out)
}

/// Which snapshot to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Latest,
    /// The last one taken at or before this time.
    Before(Timestamp),
}

/// Picks a snapshot from `all` (oldest first).
pub fn select<'a>(all: &'a [Manifest], s: &Selector) -> Option<&'a Manifest> {
    match s {
        Selector::Name(n) => all.iter().find(|m| &m.name == n),
        Selector::Latest => all.last(),
        Selector::Before(t) => all
            .iter()
            .rfind(|m| m.created_at.parse::<Timestamp>().is_ok_and(|c| c <= *t)),
    }
}

/// Deletes snapshots: the manifest first, so a half-deleted one is never listed.
pub async fn delete(location: &Location, names: &[String]) -> Result<(), BackupError> {
    let store = location.open(false)?;
    for name in names {
        for object in [format::MANIFEST, format::NODES] {
            match store.delete(&location.path(&[name, object])).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BackupError::store(location, "delete")(e)),
            }
        }
    }
    Ok(())
}

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

/// Streams the snapshot object into a temporary file, checking size and checksum.
async fn download(
    store: &Arc<dyn ObjectStore>,
    location: &Location,
    m: &Manifest,
) -> Result<std::fs::File, BackupError> {
    let corrupt = |what: String| BackupError::Corrupt {
        snapshot: m.name.clone(),
        what,
    };
    let mut file = tempfile::tempfile().map_err(|e| BackupError::Io {
        what: "creating a temporary file".into(),
        source: e,
    })?;
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
        file.write_all(&chunk).map_err(|e| BackupError::Io {
            what: "writing a temporary file".into(),
            source: e,
        })?;
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
    file.rewind().map_err(|e| BackupError::Io {
        what: "reading a temporary file".into(),
        source: e,
    })?;
    Ok(file)
}

/// Decodes the whole stream in a blocking thread, sending nodes in order (None: only check).
/// Checks the trailer, the count, tree order and the Merkle root against the manifest.
fn decode_all(
    file: std::fs::File,
    m: &Manifest,
    tx: Option<mpsc::Sender<(String, Node)>>,
) -> Result<(), String> {
    let reader = zstd::stream::read::Decoder::new(file).map_err(|e| e.to_string())?;
    let mut d = Decoder::new(reader).map_err(|e: Corrupt| e.to_string())?;
    let mut merkle = MerkleBuilder::default();
    let mut count = 0u64;
    let mut last: Option<String> = None;
    // The ancestors of the current record.
    let mut open: Vec<String> = Vec::new();
    let opts = HashOptions { acl: m.acl_in_hash };
    loop {
        match d.next_item().map_err(|e| e.to_string())? {
            Item::Node(rel, node) => {
                // Strict tree order, and every node's parent right among the records before it:
                // a restore creates them in this order, so an orphan would fail mid-write.
                let ordered = match &last {
                    None => rel.is_empty(),
                    Some(prev) => path::tree_order(prev, &rel) == std::cmp::Ordering::Less,
                };
                while open.last().is_some_and(|a: &String| !is_under(a, &rel)) {
                    open.pop();
                }
                let parent_ok = match rel.rfind('/') {
                    None => open.is_empty(),
                    Some(i) => open.last().is_some_and(|p| p.as_str() == &rel[..i]),
                };
                if !ordered || !parent_ok {
                    return Err(format!(
                        "record {count} ({rel:?}) is out of tree order or has no parent before it"
                    ));
                }
                open.push(rel.clone());
                let kind = node.kind;
                let mut node = node;
                node.kind = crate::engine::observable(kind);
                let digest = verifier::hash::digest_node(&rel, &node, opts);
                node.kind = kind;
                merkle.push(&rel, &digest.node);
                count += 1;
                last = Some(rel.clone());
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

/// Whether the location answers with these credentials: lists at most one object under the
/// prefix. What a Bucket's Ready condition reports.
pub async fn probe(location: &Location) -> Result<(), BackupError> {
    let store = location.open(false)?;
    let prefix = (!location.prefix.is_empty()).then(|| location.path(&[]));
    let mut objects = store.list(prefix.as_ref());
    match objects.next().await {
        None | Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(BackupError::store(location, "list")(e)),
    }
}

/// Reads a stored snapshot back and checks it as a restore would (object checksum, trailer,
/// tree order, Merkle root), writing nothing: proof that what is in the bucket restores.
pub async fn check(location: &Location, m: &Manifest) -> Result<(), BackupError> {
    let store = location.open(false)?;
    let file = download(&store, location, m).await?;
    let mc = m.clone();
    let corrupt = |what: String| BackupError::Corrupt {
        snapshot: m.name.clone(),
        what,
    };
    tokio::task::spawn_blocking(move || decode_all(file, &mc, None))
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(corrupt)
}

/// Restores a snapshot; see the module documentation for the checks.
pub async fn restore(o: &RestoreOptions) -> Result<RestoreSummary, BackupError> {
    path::validate_root("destination root path", &o.destination_root)?;
    let started = Instant::now();
    let all = list(&o.location).await?;
    let m = select(&all, &o.select)
        .ok_or_else(|| BackupError::NoSnapshot {
            location: o.location.describe(),
            what: match &o.select {
                Selector::Name(n) => format!("named {n}"),
                Selector::Latest => "at all".into(),
                Selector::Before(t) => format!("taken at or before {t}"),
            },
        })?
        .clone();
    let store = o.location.open(false)?;
    let corrupt = |what: String| BackupError::Corrupt {
        snapshot: m.name.clone(),
        what,
    };
    // Pass 1: everything checked before anything is written.
    let file = download(&store, &o.location, &m).await?;
    let check = file.try_clone().map_err(|e| BackupError::Io {
        what: "reading a temporary file".into(),
        source: e,
    })?;
    let mc = m.clone();
    tokio::task::spawn_blocking(move || decode_all(check, &mc, None))
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(corrupt)?;
    // The clone shares the file position.
    let mut file = file;
    file.rewind().map_err(|e| BackupError::Io {
        what: "reading a temporary file".into(),
        source: e,
    })?;

    // One writer per destination tree: a restore claims it like a copy does.
    let claims = crate::engine::claim::acquire_destination(
        &o.destination,
        &o.destination_root,
        &format!("restore of {}", o.location.describe()),
    )
    .await?;
    let r = restore_claimed(o, file, m, started).await;
    claims.release().await;
    r
}

/// [`restore`] once the snapshot is checked and the destination tree is claimed.
async fn restore_claimed(
    o: &RestoreOptions,
    file: std::fs::File,
    m: Manifest,
    started: Instant,
) -> Result<RestoreSummary, BackupError> {
    let corrupt = |what: String| BackupError::Corrupt {
        snapshot: m.name.clone(),
        what,
    };
    // The destination root must be absent or empty: a restore never deletes data.
    let dst = verifier::connect("destination", &o.destination)
        .await
        .map_err(SyncError::Connect)?;
    let zk = |op: &'static str, p: &str| {
        let path = p.to_string();
        move |source: ZkError| {
            BackupError::Sync(
                SyncError::Write { op, path, source }.with_identity(
                    &o.destination
                        .auth
                        .as_ref()
                        .map(|a| a.user.clone())
                        .unwrap_or_default(),
                ),
            )
        }
    };
    let root = o.destination_root.clone();
    let existing = dst.check_stat(&root).await.map_err(zk("exists", &root))?;
    if let Some(st) = &existing {
        if st.num_children > 0 {
            return Err(BackupError::DestinationNotEmpty {
                path: root,
                children: st.num_children,
            });
        }
    }
    // Missing ancestors, top first, as plain open nodes (as a sync creates them).
    let mut ancestors = Vec::new();
    let mut p = path::parent(&root);
    while let Some(a) = p {
        if a == "/" || dst.check_stat(a).await.map_err(zk("exists", a))?.is_some() {
            break;
        }
        ancestors.push(a.to_string());
        p = path::parent(a);
    }
    let open = [verifier::AclEntry::open().to_zk()];
    for a in ancestors.iter().rev() {
        match dst
            .create(
                a,
                &[],
                &zookeeper_client::CreateMode::Persistent
                    .with_acls(zookeeper_client::Acls::new(&open)),
            )
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(zk("create", a)(e)),
        }
    }

    // Pass 2: write, from the checked file.
    let me = Identity::new(o.destination.auth.as_ref());
    let (node_tx, mut node_rx) = mpsc::channel::<(String, Node)>(1024);
    let mc = m.clone();
    let decoder = tokio::task::spawn_blocking(move || decode_all(file, &mc, Some(node_tx)));
    let (op_tx, op_rx) = mpsc::channel::<Queued>(1024);
    let progress = Arc::new(Progress::default());
    let budget = Arc::new(Semaphore::new(o.memory_budget_bytes));
    let writer_cfg = o.writer;
    let plan = async {
        let mut at_end: Vec<(String, Vec<verifier::AclEntry>)> = Vec::new();
        let mut ancestors: Vec<(String, i32)> = Vec::new();
        let mut bumps: Vec<(String, i32)> = Vec::new();
        let (mut nodes, mut bytes) = (0u64, 0u64);
        while let Some((rel, node)) = node_rx.recv().await {
            let dp = path::join(&root, &rel);
            nodes += 1;
            bytes += node.data.len() as u64;
            // Sequential names come from the parent's cversion: keep it at least the source's.
            while ancestors.last().is_some_and(|(a, _)| !is_under(a, &rel)) {
                ancestors.pop();
            }
            if let Some((parent, cv)) = ancestors.last() {
                let name = rel.rsplit('/').next().unwrap_or_default();
                let pd = path::join(&root, parent);
                if is_sequential_name(name) && bumps.last().map(|b| &b.0) != Some(&pd) {
                    bumps.push((pd, *cv));
                }
            }
            ancestors.push((rel.clone(), node.stat.cversion));
            let required = if node.stat.num_children > 0 {
                perms::CREATE
            } else {
                0
            };
            let ops = if rel.is_empty() && existing.is_some() {
                // The empty destination root stays; it takes the snapshot's data and ACL.
                at_end.push((dp.clone(), node.acl.clone()));
                vec![Op::SetData {
                    path: dp.clone(),
                    data: node.data,
                }]
            } else {
                let acl = plan_acl(&me, Some(&node.acl), None, required);
                if let Some(a) = acl.set_at_end {
                    at_end.push((dp.clone(), a));
                }
                let kind = match node.kind {
                    NodeKind::Ephemeral => NodeKind::Persistent,
                    k => k,
                };
                vec![Op::Create {
                    path: dp.clone(),
                    data: node.data,
                    acl: acl.create_with.unwrap_or(node.acl),
                    kind,
                }]
            };
            for op in ops {
                let want = op.wire_size().min(o.memory_budget_bytes).max(1) as u32;
                let permit = budget
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .map_err(|_| SyncError::WriterStopped)?;
                op_tx
                    .send(Queued { op, permit })
                    .await
                    .map_err(|_| SyncError::WriterStopped)?;
            }
        }
        drop(op_tx);
        Ok::<_, BackupError>((at_end, bumps, nodes, bytes))
    };
    let write = writer::run(&dst, op_rx, writer_cfg, progress.clone());
    let (planned, written) = tokio::join!(plan, write);
    let decoded = decoder.await.map_err(|e| corrupt(e.to_string()))?;
    written?;
    let (at_end, bumps, nodes, data_bytes) = planned?;
    decoded.map_err(corrupt)?;
    let mut cversion_raised = 0;
    for (p, target) in &bumps {
        let current = dst
            .check_stat(p)
            .await
            .map_err(zk("exists", p))?
            .map(|s| s.cversion)
            .unwrap_or(i32::MAX);
        crate::engine::live::raise_cversion_to(&dst, p, *target, current)
            .await
            .map_err(zk("create", p))?;
        cversion_raised += 1;
    }
    // Deepest first: a parent's final ACL may lock out work on its children.
    for (p, acl) in at_end.iter().rev() {
        let zk_acl: Vec<_> = acl.iter().map(verifier::AclEntry::to_zk).collect();
        dst.set_acl(p, &zk_acl, None)
            .await
            .map_err(zk("setACL", p))?;
    }
    // Proof: the restored tree hashes to the manifest's root.
    let pool = verifier::connect_pool("destination", &o.destination, verifier::zk::READ_SESSIONS)
        .await
        .map_err(SyncError::Connect)?;
    let got = tree_hash(pool, &root, m.acl_in_hash).await?;
    if got != m.root_hash {
        return Err(BackupError::Mismatch {
            snapshot: m.name.clone(),
            path: root,
            expected: m.root_hash.clone(),
            got,
        });
    }
    Ok(RestoreSummary {
        snapshot: m.name.clone(),
        destination_root: root,
        nodes,
        data_bytes,
        cversion_raised,
        root_hash: got,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The verifier's root hash of the tree at `root`.
pub async fn tree_hash(
    pool: Vec<zookeeper_client::Client>,
    root: &str,
    acl: bool,
) -> Result<String, BackupError> {
    let mut walk = verifier::walk(
        pool,
        "destination",
        root.to_string(),
        WalkOptions {
            hash: HashOptions { acl },
            ephemerals: EphemeralPolicy::Skip,
            window: 512,
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

/// The error and its causes on one line.
pub fn describe(e: &BackupError) -> String {
    cause_chain(e)
}

/// Whether `rel` is strictly under `ancestor` (relative paths, "" is the root).
fn is_under(ancestor: &str, rel: &str) -> bool {
    if ancestor.is_empty() {
        return !rel.is_empty();
    }
    rel.len() > ancestor.len()
        && rel.starts_with(ancestor)
        && rel.as_bytes()[ancestor.len()] == b'/'
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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

    #[test]
    fn snapshots_are_selected_by_name_latest_or_time() {
        let m = |name: &str, at: &str| Manifest {
            name: name.into(),
            created_at: at.into(),
            ..Manifest::empty()
        };
        let all = [
            m("a", "2026-11-01T00:00:00Z"),
            m("b", "2026-11-10T00:00:00Z"),
            m("c", "2026-11-20T00:00:00Z"),
        ];
        let before: Timestamp = "2026-11-15T00:00:00Z".parse().unwrap();
        assert_eq!(select(&all, &Selector::Before(before)).unwrap().name, "b");
        assert_eq!(select(&all, &Selector::Latest).unwrap().name, "c");
        assert_eq!(select(&all, &Selector::Name("a".into())).unwrap().name, "a");
    }
}
