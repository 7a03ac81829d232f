//! Plain data model of a znode, shared by the reader, the hasher and the replication engine.

use serde::{Deserialize, Serialize};

/// What kind of znode this is, as far as the server stores it.
///
/// Sequential nodes are not a kind: the server only uses the sequence flag to pick the name, so a
/// copied sequential node is a plain node with the same name (see [`is_sequential_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum NodeKind {
    Persistent,
    Ephemeral,
    Container,
    /// Persistent node with a time to live (needs `zookeeper.extendedTypesEnabled` on the server).
    Ttl {
        ttl_ms: i64,
    },
}

/// `ephemeralOwner` of container nodes (ZooKeeper's `EphemeralType.CONTAINER_EPHEMERAL_OWNER`).
const CONTAINER_OWNER: i64 = i64::MIN;
/// High byte 0xFF marks an extended type; the next two bytes are the type (0 = TTL).
const EXTENDED_MASK: u64 = 0xFF00_0000_0000_0000;
const EXTENDED_TYPE_MASK: u64 = 0x00FF_FF00_0000_0000;
const TTL_MASK: u64 = 0x0000_00FF_FFFF_FFFF;

impl NodeKind {
    /// Decodes the kind from `stat.ephemeralOwner` as ZooKeeper 3.5+ encodes it.
    pub fn from_ephemeral_owner(owner: i64) -> NodeKind {
        let raw = owner as u64;
        if owner == 0 {
            NodeKind::Persistent
        } else if owner == CONTAINER_OWNER {
            NodeKind::Container
        } else if raw & EXTENDED_MASK == EXTENDED_MASK && raw & EXTENDED_TYPE_MASK == 0 {
            NodeKind::Ttl {
                ttl_ms: (raw & TTL_MASK) as i64,
            }
        } else {
            NodeKind::Ephemeral
        }
    }

    /// Stable one-byte tag used in hashes.
    pub fn tag(self) -> u8 {
        match self {
            NodeKind::Persistent => 0,
            NodeKind::Ephemeral => 1,
            NodeKind::Container => 2,
            NodeKind::Ttl { .. } => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Persistent => "persistent",
            NodeKind::Ephemeral => "ephemeral",
            NodeKind::Container => "container",
            NodeKind::Ttl { .. } => "ttl",
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeKind::Ttl { ttl_ms } => write!(f, "ttl({ttl_ms}ms)"),
            other => f.write_str(other.name()),
        }
    }
}

/// True when a node name ends in the counter ZooKeeper appends to sequential nodes
/// (ten digits, or nineteen for 64-bit counters).
pub fn is_sequential_name(name: &str) -> bool {
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    digits == 10 || digits == 19
}

/// One ACL entry. Kept as plain strings so trees can be built without a server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    pub perms: i32,
    pub scheme: String,
    pub id: String,
}

impl AclEntry {
    pub fn new(perms: i32, scheme: &str, id: &str) -> AclEntry {
        AclEntry {
            perms,
            scheme: scheme.to_string(),
            id: id.to_string(),
        }
    }

    /// `world:anyone` with every permission, ZooKeeper's OPEN_ACL_UNSAFE.
    pub fn open() -> AclEntry {
        AclEntry::new(perms::ALL, "world", "anyone")
    }

    pub fn from_zk(acl: &zookeeper_client::Acl) -> AclEntry {
        AclEntry::new(perms_to_raw(acl.permission()), acl.scheme(), acl.id())
    }

    pub fn to_zk(&self) -> zookeeper_client::Acl {
        zookeeper_client::Acl::new(
            perms_from_raw(self.perms),
            zookeeper_client::AuthId::new(&self.scheme, &self.id),
        )
    }
}

impl std::fmt::Display for AclEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.scheme,
            self.id,
            perms::render(self.perms)
        )
    }
}

/// ZooKeeper permission bits.
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;

    /// zkCli style: `cdrwa`.
    pub fn render(bits: i32) -> String {
        [
            (CREATE, 'c'),
            (DELETE, 'd'),
            (READ, 'r'),
            (WRITE, 'w'),
            (ADMIN, 'a'),
        ]
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, c)| *c)
        .collect()
    }
}

// zookeeper-client keeps the raw bits private; rebuild them from the public constants.
const PERMISSION_BITS: [(zookeeper_client::Permission, i32); 5] = {
    use zookeeper_client::Permission as P;
    [
        (P::READ, perms::READ),
        (P::WRITE, perms::WRITE),
        (P::CREATE, perms::CREATE),
        (P::DELETE, perms::DELETE),
        (P::ADMIN, perms::ADMIN),
    ]
};

fn perms_to_raw(p: zookeeper_client::Permission) -> i32 {
    PERMISSION_BITS
        .iter()
        .filter(|(p2, _)| p.has(*p2))
        .map(|(_, bit)| bit)
        .sum()
}

fn perms_from_raw(bits: i32) -> zookeeper_client::Permission {
    PERMISSION_BITS
        .iter()
        .filter(|(_, bit)| bits & bit != 0)
        .fold(zookeeper_client::Permission::NONE, |acc, (p, _)| acc | *p)
}

/// Sorts an ACL into the canonical order used for comparison and hashing. The server keeps
/// the order a client gave, which carries no meaning.
pub fn canonical_acl(mut acl: Vec<AclEntry>) -> Vec<AclEntry> {
    acl.sort();
    acl.dedup();
    acl
}

/// The parts of `Stat` the engine and verifier use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
}

impl From<&zookeeper_client::Stat> for NodeStat {
    fn from(s: &zookeeper_client::Stat) -> NodeStat {
        NodeStat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}

/// A znode as read from a server (or built by a test): everything that is replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub data: Vec<u8>,
    /// Canonical order (see [`canonical_acl`]). Empty when ACLs were not read.
    pub acl: Vec<AclEntry>,
    pub kind: NodeKind,
    pub stat: NodeStat,
}

impl Node {
    /// A persistent node with `world:anyone` ACL, for tests and fixtures.
    pub fn persistent(data: impl Into<Vec<u8>>) -> Node {
        Node {
            data: data.into(),
            acl: vec![AclEntry::open()],
            kind: NodeKind::Persistent,
            stat: NodeStat::default(),
        }
    }

    pub fn with_acl(mut self, acl: Vec<AclEntry>) -> Node {
        self.acl = canonical_acl(acl);
        self
    }

    pub fn with_kind(mut self, kind: NodeKind) -> Node {
        self.kind = kind;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_ephemeral_owner_encoding() {
        assert_eq!(NodeKind::from_ephemeral_owner(0), NodeKind::Persistent);
        assert_eq!(
            NodeKind::from_ephemeral_owner(i64::MIN),
            NodeKind::Container
        );
        let ttl = (0xFF00_0000_0000_0000u64 | 60_000) as i64;
        assert_eq!(
            NodeKind::from_ephemeral_owner(ttl),
            NodeKind::Ttl { ttl_ms: 60_000 }
        );
        // A session id of server 1.
        assert_eq!(
            NodeKind::from_ephemeral_owner(0x0100_0123_4567_0001),
            NodeKind::Ephemeral
        );
    }

    #[test]
    fn sequential_names() {
        assert!(is_sequential_name("lock-0000000042"));
        assert!(is_sequential_name("0000000000"));
        assert!(is_sequential_name("x0000000000000000042"));
        assert!(!is_sequential_name("broker-1"));
        assert!(!is_sequential_name("n00000000001"));
    }

    #[test]
    fn permissions_round_trip_through_the_client_type() {
        for bits in 0..=perms::ALL {
            assert_eq!(perms_to_raw(perms_from_raw(bits)), bits);
        }
        assert_eq!(perms::render(perms::ALL), "cdrwa");
        assert_eq!(perms::render(perms::READ | perms::ADMIN), "ra");
    }
}
