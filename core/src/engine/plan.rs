//! Pure decisions of the copy: what to write for one node, given both sides. No I/O here, so
//! every rule is unit-tested without a server.

use verifier::model::{perms, AclEntry, NodeKind};
use verifier::DigestAuth;

/// Who the copier is on the destination, for reading ACLs.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// `user:base64(sha1(user:password))` when the destination session authenticated.
    pub digest_id: Option<String>,
}

impl Identity {
    pub fn new(auth: Option<&DigestAuth>) -> Identity {
        Identity {
            digest_id: auth.map(DigestAuth::acl_id),
        }
    }

    /// Permission bits `acl` gives this identity. `ip` and custom schemes are not judged here
    /// (counted as granting nothing), which only ever costs an extra staging step.
    pub fn granted(&self, acl: &[AclEntry]) -> i32 {
        acl.iter()
            .filter(|e| match e.scheme.as_str() {
                "world" => e.id == "anyone",
                "digest" => self.digest_id.as_deref() == Some(e.id.as_str()),
                _ => false,
            })
            .fold(0, |acc, e| acc | e.perms)
    }

    pub fn grants(&self, acl: &[AclEntry], required: i32) -> bool {
        self.granted(acl) & required == required
    }

    /// ACL a node carries while the copier still has work to do under it.
    pub fn staging_acl(&self) -> Vec<AclEntry> {
        match &self.digest_id {
            Some(id) => vec![AclEntry::new(perms::ALL, "digest", id)],
            None => vec![AclEntry::open()],
        }
    }
}

/// How one node's ACL is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclPlan {
    /// ACL to create the node with (new nodes only).
    pub create_with: Option<Vec<AclEntry>>,
    /// ACL to set before touching the node's data or children.
    pub set_before: Option<Vec<AclEntry>>,
    /// ACL to set after the node's data and children are done.
    pub set_after: Option<Vec<AclEntry>>,
    /// ACL to set once the whole copy is written (children exist, cversion raised).
    pub set_at_end: Option<Vec<AclEntry>>,
}

/// Plans the ACL of one node.
///
/// `target` is the source ACL when ACLs are copied, `None` when they are not. `current` is the
/// destination ACL, `None` when the node is created. `required` are the permissions the copier
/// needs on this node while copying (WRITE for data, CREATE/DELETE for children).
pub fn plan_acl(
    me: &Identity,
    target: Option<&[AclEntry]>,
    current: Option<&[AclEntry]>,
    required: i32,
) -> AclPlan {
    let mut plan = AclPlan {
        create_with: None,
        set_before: None,
        set_after: None,
        set_at_end: None,
    };
    match current {
        None => {
            // Data goes in with the create, so only child operations matter.
            let create = plan_create_acl(me, target, required & (perms::CREATE | perms::DELETE));
            plan.create_with = Some(create.create_with);
            plan.set_at_end = create.set_at_end;
        }
        Some(current) => {
            let differs = target.is_some_and(|t| t != current);
            if me.grants(current, required) {
                if differs {
                    let t = target.map(<[AclEntry]>::to_vec).unwrap_or_default();
                    if me.grants(&t, required & (perms::CREATE | perms::DELETE)) {
                        plan.set_after = Some(t);
                    } else {
                        plan.set_at_end = Some(t);
                    }
                }
            } else {
                // Locked out of work that must be done: open it for us (needs ADMIN) and put
                // the right ACL back at the end.
                plan.set_before = Some(me.staging_acl());
                plan.set_at_end = Some(target.unwrap_or(current).to_vec());
            }
        }
    }
    plan
}

/// The ACLs of a node about to be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatePlan {
    pub create_with: Vec<AclEntry>,
    /// The final ACL, set once the copier is done with the node (None: created with it).
    pub set_at_end: Option<Vec<AclEntry>>,
}

/// Plans the ACL of a new node: its final ACL (`target`, open when ACLs are not copied) at
/// once when that grants the copier `needed`, else the staging ACL, and the final one after.
pub fn plan_create_acl(me: &Identity, target: Option<&[AclEntry]>, needed: i32) -> CreatePlan {
    let final_acl = target
        .map(<[AclEntry]>::to_vec)
        .unwrap_or_else(|| vec![AclEntry::open()]);
    if me.grants(&final_acl, needed) {
        CreatePlan {
            create_with: final_acl,
            set_at_end: None,
        }
    } else {
        CreatePlan {
            create_with: me.staging_acl(),
            set_at_end: Some(final_acl),
        }
    }
}

/// Kind of node the destination should have for a source node, or `None` when the node is
/// not replicated.
pub fn desired_kind(source: NodeKind, ephemerals: verifier::EphemeralPolicy) -> Option<NodeKind> {
    match (source, ephemerals) {
        (NodeKind::Ephemeral, verifier::EphemeralPolicy::Skip) => None,
        (NodeKind::Ephemeral, verifier::EphemeralPolicy::Persistent) => Some(NodeKind::Persistent),
        (k, _) => Some(k),
    }
}

/// Child creates and deletes needed on the destination parent so that its `cversion` reaches
/// at least `source_cversion` (each create/delete pair adds 2). Sequential names come from the
/// parent's cversion, so after a failover new sequential nodes never reuse or go below the
/// source's numbers.
pub fn cversion_bump_pairs(source_cversion: i32, predicted_destination: i64) -> u64 {
    let gap = i64::from(source_cversion) - predicted_destination;
    if gap <= 0 {
        0
    } else {
        (gap as u64).div_ceil(2)
    }
}

/// Name of the throw-away child used to raise a parent's cversion. Created and deleted in the
/// same transaction; a leftover from a crash is pruned by the next run.
pub const CVERSION_BUMP_CHILD: &str = ".resiliency-operator-cversion-bump";

#[cfg(test)]
mod tests {
    use super::*;
    use verifier::EphemeralPolicy;

    fn me() -> Identity {
        Identity {
            digest_id: Some("copier:hash=".to_string()),
        }
    }

    fn digest(perms: i32, id: &str) -> AclEntry {
        AclEntry::new(perms, "digest", id)
    }

    #[test]
    fn identity_reads_world_and_own_digest_entries() {
        let acl = vec![
            AclEntry::new(perms::READ, "world", "anyone"),
            digest(perms::WRITE, "copier:hash="),
            digest(perms::ALL, "someone:else="),
            AclEntry::new(perms::ALL, "ip", "127.0.0.1"),
        ];
        assert_eq!(me().granted(&acl), perms::READ | perms::WRITE);
        assert_eq!(Identity::default().granted(&acl), perms::READ);
    }

    #[test]
    fn new_open_node_is_created_with_its_final_acl() {
        let src = vec![AclEntry::open()];
        let p = plan_acl(&me(), Some(&src), None, perms::CREATE);
        assert_eq!(p.create_with, Some(src));
        assert_eq!(p.set_at_end, None);
    }

    #[test]
    fn new_read_only_parent_is_staged_and_locked_at_the_end() {
        let src = vec![AclEntry::new(perms::READ, "world", "anyone")];
        let p = plan_acl(&me(), Some(&src), None, perms::CREATE);
        assert_eq!(
            p.create_with,
            Some(vec![digest(perms::ALL, "copier:hash=")])
        );
        assert_eq!(p.set_at_end, Some(src.clone()));
        // A read-only leaf needs nothing after its create.
        let leaf = plan_acl(&me(), Some(&src), None, 0);
        assert_eq!(leaf.create_with, Some(src));
        assert_eq!(leaf.set_at_end, None);
    }

    #[test]
    fn a_new_node_is_staged_only_when_its_acl_denies_what_is_needed() {
        let src = vec![AclEntry::new(
            perms::READ | perms::CREATE,
            "world",
            "anyone",
        )];
        let ok = plan_create_acl(&me(), Some(&src), perms::CREATE);
        assert_eq!((ok.create_with, ok.set_at_end), (src.clone(), None));
        let staged = plan_create_acl(&me(), Some(&src), perms::ALL & !perms::ADMIN);
        assert_eq!(staged.create_with, me().staging_acl());
        assert_eq!(staged.set_at_end, Some(src));
    }

    #[test]
    fn existing_node_with_other_acl_gets_it_after_the_work() {
        let cur = vec![AclEntry::open()];
        let src = vec![digest(perms::ALL, "copier:hash=")];
        let p = plan_acl(&me(), Some(&src), Some(&cur), perms::WRITE);
        assert_eq!(p.set_after, Some(src));
        assert_eq!(p.set_before, None);
    }

    #[test]
    fn existing_node_that_locks_us_out_is_opened_first() {
        let cur = vec![AclEntry::new(perms::READ | perms::ADMIN, "world", "anyone")];
        let p = plan_acl(&me(), Some(&cur), Some(&cur), perms::CREATE);
        assert_eq!(p.set_before, Some(me().staging_acl()));
        assert_eq!(p.set_at_end, Some(cur));
    }

    #[test]
    fn equal_acl_and_nothing_to_do_plans_nothing() {
        let cur = vec![AclEntry::new(perms::READ, "world", "anyone")];
        let p = plan_acl(&me(), Some(&cur), Some(&cur), 0);
        assert_eq!(
            p,
            AclPlan {
                create_with: None,
                set_before: None,
                set_after: None,
                set_at_end: None
            }
        );
    }

    #[test]
    fn acl_copy_off_leaves_existing_acls_alone() {
        let cur = vec![digest(perms::READ, "x:y=")];
        let p = plan_acl(&me(), None, Some(&cur), 0);
        assert_eq!(p.set_after, None);
        assert_eq!(p.set_at_end, None);
        let created = plan_acl(&me(), None, None, perms::CREATE);
        assert_eq!(created.create_with, Some(vec![AclEntry::open()]));
    }

    #[test]
    fn ephemeral_policy() {
        assert_eq!(
            desired_kind(NodeKind::Ephemeral, EphemeralPolicy::Skip),
            None
        );
        assert_eq!(
            desired_kind(NodeKind::Ephemeral, EphemeralPolicy::Persistent),
            Some(NodeKind::Persistent)
        );
        assert_eq!(
            desired_kind(NodeKind::Container, EphemeralPolicy::Skip),
            Some(NodeKind::Container)
        );
    }

    #[test]
    fn cversion_pairs() {
        assert_eq!(cversion_bump_pairs(10, 10), 0);
        assert_eq!(cversion_bump_pairs(10, 12), 0);
        assert_eq!(cversion_bump_pairs(11, 10), 1);
        assert_eq!(cversion_bump_pairs(12, 10), 1);
        assert_eq!(cversion_bump_pairs(13, 10), 2);
    }
}
