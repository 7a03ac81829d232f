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
//! Merkle root. The decode streams, each field held to [`format::Limits`] (node data to the
//! destination's jute.maxbuffer) and the running totals to the manifest's, so a forged
//! snapshot is refused with bounded memory. Only a snapshot that passes is written: a corrupt
//! one is refused with nothing written. It then marks the destination root ([`marker`]),
//! creates the nodes (ACLs staged when they would lock the restore out, sequential parents'
//! cversion raised) and verifies the restored tree's root hash against the manifest. A
//! restore interrupted after it marked the root is resumed by the next restore of the same
//! snapshot.
//!
//! ZooKeeper has no point-in-time read: like its own snapshots, a backup of a tree that is
//! being written is fuzzy. The manifest's `maxMzxid` says how far it reaches.

mod catalog;
mod check;
pub mod format;
pub mod marker;
mod restore;
pub mod retention;
pub mod store;
mod write;

use thiserror::Error;
use verifier::path;

use crate::engine::error::cause_chain;
use crate::engine::SyncError;
pub use catalog::{delete, list, probe, select, Selector};
pub use check::check;
pub use format::{Limits, Manifest, Standing};
pub use restore::{restore, tree_hash, RestoreOptions, RestoreSummary};
pub use retention::{seal, to_prune, Retention, Sealed};
pub use store::{Backend, Location};
pub use write::{backup, snapshot_name, BackupOptions};

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
    #[error("snapshot {snapshot} holds a node of {size} data bytes, over the destination's jute.maxbuffer of {limit} bytes (nothing was written): raise jute.maxbuffer on the destination's servers, then restore with --jute-maxbuffer {size} or more")]
    TooLarge {
        snapshot: String,
        size: u64,
        limit: usize,
    },
    #[error("destination root {path} is not empty ({children} children) and no restore marked it as its own: restore into an empty or absent path, or delete it first")]
    DestinationNotEmpty { path: String, children: i32 },
    /// The root holds what a restore of another snapshot left when it was interrupted.
    #[error(
        "destination root {path} ({children} children) holds an interrupted restore of snapshot {marked} from {location} (started {since}): restore {marked} again to finish it, or delete {path} to restore {wanted} there instead",
        marked = .mark.snapshot,
        location = .mark.location,
        since = .mark.since
    )]
    OtherRestore {
        path: String,
        children: i32,
        /// The mark found there (boxed: errors stay small).
        mark: Box<marker::Mark>,
        wanted: String,
    },
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
    /// A snapshot that fails a check, `what` saying how.
    fn corrupt(snapshot: &str) -> impl Fn(String) -> Self + '_ {
        move |what| BackupError::Corrupt {
            snapshot: snapshot.to_string(),
            what,
        }
    }

    fn store(location: &Location, op: &'static str) -> impl FnOnce(object_store::Error) -> Self {
        let location = location.describe();
        move |source| BackupError::Store {
            location,
            op,
            source,
        }
    }
}

/// The error and its causes on one line.
pub fn describe(e: &BackupError) -> String {
    cause_chain(e)
}

/// An I/O error on a temporary file or a stream, `what` saying which.
fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    move |source| BackupError::Io {
        what: what.into(),
        source,
    }
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
