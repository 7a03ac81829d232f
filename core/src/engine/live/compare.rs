//! What the destination holds that a full sync is about to change, found by the verifier
//! before that sync writes anything (`LiveOptions::compare_before_sync`).
//!
//! A reverse stream (new primary to old) starts with a full sync of the old primary, which
//! overwrites whatever only the old primary has: the changes a failover lost, and writes
//! applications made there after the split. The sync must not destroy them silently, so the
//! stream first compares the two trees and reports, with paths and counts, what is only on the
//! destination (deleted, under the deletion guard) and what differs (overwritten with the
//! source's).

use verifier::{Divergence, DivergenceClass, Report};
use zookeeper_client::Client;

use crate::engine::judge;
use crate::engine::{SyncError, SyncOptions};

/// Paths kept in a [`DestinationDiff`].
pub const LISTED: usize = 20;
/// Divergent paths the verifier lists, to pick [`LISTED`] from.
const SCANNED: usize = 10_000;

/// What the destination held that the source does not, when the full sync began.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationDiff {
    pub source_nodes: u64,
    pub destination_nodes: u64,
    /// Nodes only on the destination: the sync deletes them (the deletion guard judges it).
    pub only_on_destination: u64,
    /// Nodes on both whose data, ACL or kind differ: the sync overwrites them.
    pub changed: u64,
    /// Nodes only on the source: the sync creates them (nothing of the destination is lost).
    pub only_on_source: u64,
    /// Some of the first two kinds, in tree order, relative to the roots.
    pub paths: Vec<Divergence>,
}

impl DestinationDiff {
    /// Whether the sync changes or deletes anything the destination had.
    pub fn loses_anything(&self) -> bool {
        self.only_on_destination + self.changed > 0
    }

    fn from_report(r: &Report) -> DestinationDiff {
        let c = &r.counts;
        DestinationDiff {
            source_nodes: r.source_nodes,
            destination_nodes: r.destination_nodes,
            only_on_destination: c.extra,
            changed: c.data_differs + c.acl_differs + c.kind_differs,
            only_on_source: c.missing,
            paths: r
                .divergences
                .iter()
                .filter(|d| d.class != DivergenceClass::Missing)
                .take(LISTED)
                .cloned()
                .collect(),
        }
    }
}

/// Compares the trees on the epoch's sessions (the destination seen as a stream that keeps it
/// fenced would write it). An error ends the epoch, like a failed full sync: the sync never
/// runs uncompared.
pub async fn compare(
    o: &SyncOptions,
    src: &Client,
    dst: &Client,
) -> Result<DestinationDiff, SyncError> {
    let sides = judge::Sides {
        source: std::slice::from_ref(src),
        destination: std::slice::from_ref(dst),
        // A stream's verifier caches (or a switchover's, handed to its reverse stream): only
        // the ACLs that changed since are read again.
        cache: o.acl_cache(),
    };
    // The counts are complete whatever the listing's cap; the cap leaves room for paths only
    // on the source ahead of the ones listed here.
    let report = judge::verify_sides(sides, o, SCANNED)
        .await
        .map_err(|e| match e {
            verifier::VerifyError::SourceRootMissing { path } => {
                SyncError::SourceRootMissing { path }
            }
            verifier::VerifyError::Read(r) => SyncError::Read(r),
        })?;
    Ok(DestinationDiff::from_report(&report))
}
