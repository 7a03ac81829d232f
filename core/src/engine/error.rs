//! Errors of a copy. Each says which side, which path and what to do about it.

use thiserror::Error;
use verifier::path::PathError;
use verifier::Side;
use verifier::{ConnectError, ReadError};
use zookeeper_client::Error as ZkError;

#[derive(Debug, Error)]
pub enum SyncError {
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("source root {path} does not exist")]
    SourceRootMissing { path: String },
    #[error("{side}: not authorized to {op} {path} as {who}: check the {side} credentials and the node's ACL")]
    NotAuthorized {
        side: Side,
        op: &'static str,
        path: String,
        who: String,
    },
    #[error("source and destination are the same ensemble and {source_root} overlaps {destination_root}: the copy would feed on itself")]
    Overlap {
        source_root: String,
        destination_root: String,
    },
    #[error(transparent)]
    Read(ReadError),
    #[error("destination: {op} {path}: {source}")]
    Write {
        op: &'static str,
        path: String,
        #[source]
        source: ZkError,
    },
    #[error("destination: {path} is a TTL node but the destination does not accept TTL nodes: start it with zookeeper.extendedTypesEnabled=true")]
    TtlUnsupported { path: String },
    #[error("destination: {path} needs a {size}-byte request, over the destination's jute.maxbuffer of {limit} bytes: raise jute.maxbuffer on the destination (and --jute-maxbuffer)")]
    NodeTooBig {
        path: String,
        size: usize,
        limit: usize,
    },
    /// A logic error: the writer sends every setACL alone, as ZooKeeper has no multi form of it.
    #[error("destination: setACL {path}: bad arguments: setACL cannot be batched")]
    AclInMulti { path: String },
    #[error("destination: {path} is not of its source node's kind: a full sync recreates it")]
    KindDiffers { path: String },
    #[error("destination writer stopped before the copy was written")]
    WriterStopped,
    #[error("destination tree {destination_root} overlaps {root}, which {holder} is writing: one writer per destination tree (its claim goes when it stops, or within its session timeout if it crashed)")]
    Busy {
        holder: String,
        root: String,
        destination_root: String,
    },
    #[error("replication loop: {holder} already copies this copy's destination ({destination_root}) into its source ({source_root}); a stream the other way would feed on itself, so this one is refused: stop the other stream first (as a failback does)")]
    Loop {
        holder: String,
        source_root: String,
        destination_root: String,
    },
    #[error("source: {root} is fenced ({by}; its record is {record}): it is an old primary a switchover made read-only, and a copy from it would overwrite the new primary with what it held then. Copy the other way (the reverse stream, or a failback Switchover of it), or, if it really is the primary again, lift the fence first (resiliency-operator unfence)")]
    SourceFenced {
        root: String,
        record: String,
        by: String,
    },
    #[error("{side}: not authorized to create the writer claim {path}: grant create on / (or on /.resiliency-operator/claims) to the copier's identity")]
    ClaimRefused { side: Side, path: String },
    #[error("deletion guard: repair left {deletes} destination-only subtrees in place (e.g. {}): over the limits, or the stream is holding deletes; release the hold or delete them yourself", sample.join(", "))]
    RepairHeld { deletes: u64, sample: Vec<String> },
    #[error("destination: the session holding the writer claim ended: another writer may have claimed the tree, so this copy stopped writing")]
    ClaimLost,
    #[error("copy failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<SyncError>,
    },
}

impl SyncError {
    /// Whether a new pass on fresh sessions can succeed: lost connections and sessions, and
    /// conflicts with concurrent writers (a new pass re-reads both sides).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Read(e) => e.is_transient(),
            SyncError::Write { source, .. } => {
                verifier::zk::is_transient(source)
                    || matches!(
                        source,
                        ZkError::NodeExists
                            | ZkError::NoNode
                            | ZkError::NotEmpty
                            | ZkError::BadVersion
                    )
            }
            // Another copy holds the tree: wait for it to finish (or for its claim to expire).
            SyncError::Busy { .. } | SyncError::ClaimLost => true,
            _ => false,
        }
    }

    /// Why the copy was refused before it wrote, as a metric label, when that is what
    /// happened.
    pub fn claim_refusal(&self) -> Option<&'static str> {
        match self {
            SyncError::Busy { .. } => Some("writer_conflict"),
            SyncError::Loop { .. } => Some("replication_loop"),
            SyncError::Overlap { .. } => Some("same_ensemble"),
            SyncError::SourceFenced { .. } => Some("source_fenced"),
            SyncError::RetriesExhausted { last, .. } => last.claim_refusal(),
            _ => None,
        }
    }

    /// Which ensemble the error is about, or None (bad options).
    pub fn side(&self) -> Option<Side> {
        match self {
            SyncError::InvalidPath(_)
            | SyncError::Overlap { .. }
            | SyncError::Busy { .. }
            | SyncError::Loop { .. } => None,
            SyncError::ClaimRefused { side, .. } | SyncError::NotAuthorized { side, .. } => {
                Some(*side)
            }
            SyncError::Connect(ConnectError::Unreachable { role, .. })
            | SyncError::Connect(ConnectError::Refused { role, .. })
            | SyncError::Connect(ConnectError::InvalidServers { role, .. }) => role.side(),
            SyncError::SourceRootMissing { .. } | SyncError::SourceFenced { .. } => {
                Some(Side::Source)
            }
            SyncError::Read(e) => Some(e.side),
            SyncError::RetriesExhausted { last, .. } => last.side(),
            _ => Some(Side::Destination),
        }
    }

    /// Maps a failed read to the error a user can act on.
    pub fn from_read(e: ReadError, who: &str) -> SyncError {
        if e.source == ZkError::NoAuth {
            SyncError::NotAuthorized {
                side: e.side,
                op: if e.op.starts_with("read the ACL") {
                    e.op
                } else {
                    "read"
                },
                path: e.path,
                who: who.to_string(),
            }
        } else {
            SyncError::Read(e)
        }
    }

    /// Same for writes.
    pub fn with_identity(self, who: &str) -> SyncError {
        match self {
            SyncError::Write {
                op,
                path,
                source: ZkError::NoAuth,
            } => SyncError::NotAuthorized {
                side: Side::Destination,
                op,
                path,
                who: who.to_string(),
            },
            other => other,
        }
    }
}

/// The error and its sources on one line, each cause once.
pub fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let c_msg = c.to_string();
        if !msg.contains(&c_msg) {
            msg.push_str(": ");
            msg.push_str(&c_msg);
        }
        cause = c.source();
    }
    msg
}
