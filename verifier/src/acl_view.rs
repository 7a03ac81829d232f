//! A node's ACL as the user set it, behind a change the tool made itself.
//!
//! A planned switchover fences the old primary by making every node read-only (see the
//! switchover's fence record). Compared as it is then, every fenced node would differ from
//! its copy in ACL alone. A verification that must prove the copy equal to what the user
//! wrote hashes each fenced node with the ACL the fence replaced, and only while the node
//! still carries exactly the fence: an ACL changed since is compared as it is.

use crate::model::AclEntry;

pub trait AclView: Send + Sync {
    /// The ACL to compare for the node at `rel` (relative to the walked root: "" is the root)
    /// that carries `acl` now; `None`: `acl` itself.
    fn original(&self, rel: &str, acl: &[AclEntry]) -> Option<Vec<AclEntry>>;
}
