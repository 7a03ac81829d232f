//! The mark a restore leaves on its destination ensemble before it writes anything: which
//! snapshot is going into which root. It outlives the restore's session (a persistent znode
//! under the reserved [`RESTORES`], never copied, verified or backed up), so a restore cut
//! short by a crash or an operator restart is known for what it is: the next restore of the
//! same snapshot resumes it, anything else is refused with a message saying how to proceed.
//! A restore that verified its tree removes its mark.

use serde::{Deserialize, Serialize};
use verifier::path::RESERVED_CLAIMS;
use zookeeper_client::{Acl, Acls, AuthId, Client, CreateMode, Error as ZkError, Permission};

use super::{BackupError, Manifest};

/// Where restores mark their destinations, one znode per destination root.
pub const RESTORES: &str = "/.resiliency-operator/restores";

/// What a mark holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// The destination root being restored.
    pub root: String,
    pub snapshot: String,
    /// The snapshot's root hash: a snapshot of the same name from another bucket is another.
    pub root_hash: String,
    /// Where the snapshot is, without credentials.
    pub location: String,
    /// Who started the restore, e.g. `resiliency-operator (pid 42 on host)`.
    pub holder: String,
    /// When the restore marked the tree (RFC 3339).
    pub since: String,
}

impl Mark {
    pub fn new(root: &str, m: &Manifest, location: &str, holder: &str) -> Mark {
        Mark {
            root: root.to_string(),
            snapshot: m.name.clone(),
            root_hash: m.root_hash.clone(),
            location: location.to_string(),
            holder: holder.to_string(),
            since: jiff::Timestamp::now().to_string(),
        }
    }

    /// Whether this mark is of a restore of `m`.
    pub fn is_of(&self, m: &Manifest) -> bool {
        self.snapshot == m.name && self.root_hash == m.root_hash
    }
}

/// The mark's znode for a destination root: named by a hash, since a root has slashes.
pub fn path_for(root: &str) -> String {
    let h = blake3::hash(root.as_bytes()).to_hex();
    format!("{RESTORES}/{}", &h[..16])
}

/// How a restore starts on what it found at its destination root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The root is absent (`root_exists` false) or has no children: a restore from scratch.
    Fresh { root_exists: bool },
    /// The root holds a restore of this very snapshot that did not finish: create what is
    /// missing, check what exists against the snapshot.
    Resume,
}

/// Decides how a restore of `m` into `root` starts, from the root's child count (`None`:
/// absent) and the mark found for it. A non-empty root is taken only when its mark is of
/// this snapshot: unmarked, or marked by another, it is refused.
pub fn decide(
    root: &str,
    children: Option<i32>,
    mark: Option<&Mark>,
    m: &Manifest,
) -> Result<Start, BackupError> {
    // A mark whose hash-named znode holds another root is not this root's.
    let mark = mark.filter(|k| k.root == root);
    match children {
        None => Ok(Start::Fresh { root_exists: false }),
        Some(0) => Ok(Start::Fresh { root_exists: true }),
        Some(n) => match mark {
            Some(k) if k.is_of(m) => Ok(Start::Resume),
            Some(k) => Err(BackupError::OtherRestore {
                path: root.to_string(),
                children: n,
                mark: Box::new(k.clone()),
                wanted: m.name.clone(),
            }),
            None => Err(BackupError::DestinationNotEmpty {
                path: root.to_string(),
                children: n,
            }),
        },
    }
}

/// The mark of `root`, if any. One that does not parse is no mark.
pub async fn read(zk: &Client, root: &str) -> Result<Option<Mark>, ZkError> {
    match zk.get_data(&path_for(root)).await {
        Ok((data, _)) => Ok(serde_json::from_slice(&data).ok()),
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Marks the destination: creates the mark or replaces the one there.
pub async fn write(zk: &Client, mark: &Mark, authed: bool) -> Result<(), ZkError> {
    for p in [RESERVED_CLAIMS, RESTORES] {
        match zk
            .create(
                p,
                &[],
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    let p = path_for(&mark.root);
    let body = serde_json::to_vec(mark).unwrap_or_default();
    // Everyone may read a mark (other restores judge it); only its maker's identity may
    // change it, as for claims.
    let acl = if authed {
        vec![
            Acl::new(Permission::READ, AuthId::anyone()),
            Acl::new(Permission::ALL, AuthId::authed()),
        ]
    } else {
        vec![Acl::new(Permission::ALL, AuthId::anyone())]
    };
    match zk
        .create(
            &p,
            &body,
            &CreateMode::Persistent.with_acls(Acls::new(&acl)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(ZkError::NodeExists) => zk.set_data(&p, &body, None).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Removes the mark of `root` (the restore verified its tree).
pub async fn clear(zk: &Client, root: &str) -> Result<(), ZkError> {
    match zk.delete(&path_for(root), None).await {
        Ok(()) | Err(ZkError::NoNode) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn snapshot(name: &str, hash: &str) -> Manifest {
        Manifest {
            name: name.into(),
            root_hash: hash.into(),
            ..Manifest::empty()
        }
    }

    #[test]
    fn a_non_empty_root_is_resumed_only_under_its_own_mark() {
        let a = snapshot("kafka-1", "aa");
        let mark = Mark::new("/kafka", &a, "file:///b", "me");
        // Absent or empty: from scratch, whatever mark is left.
        assert_eq!(
            decide("/kafka", None, Some(&mark), &a).unwrap(),
            Start::Fresh { root_exists: false }
        );
        assert_eq!(
            decide("/kafka", Some(0), None, &a).unwrap(),
            Start::Fresh { root_exists: true }
        );
        // Its own mark: resume.
        assert_eq!(
            decide("/kafka", Some(3), Some(&mark), &a).unwrap(),
            Start::Resume
        );
        // No mark: refused as before.
        let e = decide("/kafka", Some(3), None, &a).unwrap_err();
        assert!(matches!(e, BackupError::DestinationNotEmpty { .. }), "{e}");
        assert!(e.to_string().contains("delete it first"), "{e}");
        // Another snapshot's mark, or the same name with another hash: refused, saying how
        // to finish the other or start over.
        for other in [snapshot("kafka-2", "bb"), snapshot("kafka-1", "cc")] {
            let e = decide("/kafka", Some(3), Some(&mark), &other).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, BackupError::OtherRestore { .. }), "{e}");
            assert!(
                msg.contains("interrupted restore of snapshot kafka-1"),
                "{msg}"
            );
            assert!(msg.contains("restore kafka-1 again to finish it"), "{msg}");
            assert!(msg.contains("delete /kafka"), "{msg}");
        }
        // A mark for another root (a hash collision) is no mark.
        let elsewhere = Mark::new("/other", &a, "file:///b", "me");
        let e = decide("/kafka", Some(3), Some(&elsewhere), &a).unwrap_err();
        assert!(matches!(e, BackupError::DestinationNotEmpty { .. }), "{e}");
    }

    #[test]
    fn marks_are_reserved_and_read_back() {
        assert!(verifier::path::is_reserved(&path_for("/kafka")));
        assert_ne!(path_for("/a"), path_for("/b"));
        let m = Mark::new("/kafka", &snapshot("s", "h"), "s3://b", "me");
        let v = serde_json::to_vec(&m).unwrap();
        assert_eq!(serde_json::from_slice::<Mark>(&v).unwrap(), m);
    }
}
