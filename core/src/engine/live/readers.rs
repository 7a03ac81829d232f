//! Source sessions for the reads that have no multi form. ZooKeeper reads ACLs one request
//! each (no multi-read of getACL), and one session serves its requests in order: a burst of
//! new nodes waits on a queue of single reads. A few sessions spread that queue.

use verifier::ConnectOptions;
use verifier::Side;
use zookeeper_client::Client;

use super::ApplyError;
use crate::engine::SyncError;

/// Sessions ACL reads are spread over, the main one included. Measured on a 2-core machine
/// under 10,000 writes/s: 1,000 getACL took 50–240 ms on one session and 40–80 ms on four.
const SESSIONS: usize = 4;

/// The main source session and a few more for single reads.
pub(super) struct Readers {
    sessions: Vec<Client>,
}

impl Readers {
    /// `main` and [`SESSIONS`] − 1 new sessions to the same ensemble.
    pub(super) async fn open(main: &Client, source: &ConnectOptions) -> Result<Readers, SyncError> {
        let mut sessions = vec![main.clone()];
        if SESSIONS > 1 {
            sessions.extend(
                verifier::zk::connect_pool(Side::Source, source, SESSIONS - 1)
                    .await
                    .map_err(SyncError::Connect)?,
            );
        }
        Ok(Readers { sessions })
    }

    /// The sessions for the reads of one batch of `paths` changed paths. A small batch reads
    /// on the main session alone; a bigger one first brings every extra session's server up
    /// to the leader, so reads there see at least what the main session has seen (in an
    /// ensemble, or behind a load-balanced address, they may be served by other servers).
    /// Call after the batch's events arrived.
    pub(super) async fn for_batch(&self, paths: usize) -> Result<ReadSet<'_>, ApplyError> {
        if paths <= ONE_SESSION_READS {
            return Ok(ReadSet {
                sessions: &self.sessions[..1],
            });
        }
        let synced =
            futures::future::join_all(self.sessions.iter().skip(1).map(|c| c.sync("/"))).await;
        for r in synced {
            r.map_err(ApplyError::on(Side::Source, "sync", "/"))?;
        }
        Ok(ReadSet {
            sessions: &self.sessions,
        })
    }
}

/// Up to this many changed paths a batch reads on the main session only: the sync of the
/// extra sessions would cost more than their help.
const ONE_SESSION_READS: usize = 64;

/// The sessions one batch reads on.
pub(super) struct ReadSet<'a> {
    sessions: &'a [Client],
}

impl ReadSet<'_> {
    /// The session for the `i`-th read of a burst (0: the main session).
    pub(super) fn session(&self, i: usize) -> &Client {
        &self.sessions[i % self.sessions.len()]
    }
}
