//! A backup or restore finished: the snapshot in the status, Verified when it was read back
//! (backup) or the restored tree hashed to the manifest's root (restore).

use super::outcome::completed;
use super::{Draft, Note};
use crate::api::automation::{Phase, SyncCounters};
use crate::api::conditions::{types, Desired, Reason};
use crate::runs::SnapshotOutcome;

pub(super) fn succeeded(d: &mut Draft, snap: &SnapshotOutcome) {
    d.st.phase = Phase::Succeeded;
    d.st.counters = Some(counters(snap));
    d.st.snapshot = Some((&snap.status).into());
    let done = done_message(snap);
    completed(d, &done);
    d.condition(types::READY, true, Reason::Succeeded, done.clone());
    d.set(verified(snap));
    // A suspect snapshot (an emptied source?) is worth a Warning Event.
    d.notes.push(Note {
        warning: snap.status.suspect,
        reason: Reason::Succeeded,
        message: done,
    });
}

/// A backup reads every node and writes the compressed snapshot; a restore creates them all.
fn counters(snap: &SnapshotOutcome) -> SyncCounters {
    let s = &snap.status;
    SyncCounters {
        source_nodes: s.nodes,
        created: if snap.restore { s.nodes } else { 0 },
        bytes_written: if snap.restore {
            s.data_bytes
        } else {
            s.size_bytes
        },
        attempts: 1,
        ..SyncCounters::default()
    }
}

/// What the backup or restore did, for Complete, Ready and its Event.
fn done_message(snap: &SnapshotOutcome) -> String {
    let s = &snap.status;
    if snap.restore {
        return format!(
            "restored {} nodes of snapshot {} from {}{}",
            s.nodes,
            s.name,
            s.location,
            match snap.resumed {
                Some(n) => format!(
                    ", finishing a restore that was interrupted ({n} nodes were already in place)"
                ),
                None => String::new(),
            }
        );
    }
    format!(
        "snapshot {} of {} nodes ({} bytes compressed) written to {}{}{}",
        s.name,
        s.nodes,
        s.size_bytes,
        s.location,
        match &s.suspect_reason {
            Some(r) => format!("; suspect: {r}; kept, but retention does not count it"),
            None => String::new(),
        },
        if s.pruned.is_empty() {
            String::new()
        } else {
            format!("; {} old snapshots deleted", s.pruned.len())
        }
    )
}

/// Verified: the snapshot read back (backup) or the restored tree hashed to its root.
fn verified(snap: &SnapshotOutcome) -> Desired {
    let s = &snap.status;
    if !snap.verified {
        return Desired::new(
            types::VERIFIED,
            false,
            Reason::VerifySkipped,
            "verify is off",
        );
    }
    let how = if snap.restore {
        format!(
            "the restored tree's root hash equals the snapshot's ({})",
            s.root_hash
        )
    } else {
        format!(
            "the stored snapshot was read back and hashes to {}",
            s.root_hash
        )
    };
    Desired::new(types::VERIFIED, true, Reason::Equal, how)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::Snapshot;

    #[test]
    fn a_resumed_restore_says_it_finished_an_interrupted_one() {
        let mut snap = SnapshotOutcome {
            restore: true,
            status: Snapshot {
                name: "db-1".into(),
                location: "s3://b/ns/db".into(),
                nodes: 3000,
                ..Snapshot::default()
            },
            verified: true,
            duration_seconds: 1.0,
            resumed: None,
        };
        assert_eq!(
            done_message(&snap),
            "restored 3000 nodes of snapshot db-1 from s3://b/ns/db"
        );
        snap.resumed = Some(1200);
        assert_eq!(
            done_message(&snap),
            "restored 3000 nodes of snapshot db-1 from s3://b/ns/db, finishing a restore that \
             was interrupted (1200 nodes were already in place)"
        );
    }
}
