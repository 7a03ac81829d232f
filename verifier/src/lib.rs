//! Proves that a ZooKeeper tree copy is right: reads both trees with pipelined calls, hashes
//! every node with blake3 into a Merkle tree and lists the exact paths that differ.
//!
//! Nothing here knows about Kubernetes. [`hash`] and [`hash::diff`] work on plain in-memory
//! trees, so most tests need no server.

pub mod acl_cache;
pub mod acl_view;
pub mod hash;
pub mod model;
pub mod path;
pub mod reader;
pub mod report;
pub mod side;
pub mod zk;

pub use acl_cache::{AclCache, AclCacheStats, VerifyCache};
pub use acl_view::AclView;
pub use hash::{
    compare, diff, short_hash, Comparer, Comparison, DigestTree, Divergence, DivergenceClass,
    DivergenceCounts, HashOptions, MerkleBuilder,
};
pub use model::{AclEntry, Node, NodeKind, NodeStat};
pub use reader::{
    fetch_many, fetch_many_cached, fetch_node, walk, walk_cached, walk_nodes, walk_nodes_viewed,
    walk_viewed, walk_viewed_cached, EphemeralPolicy, Fetched, NodeWalkEvent, ReadError, WalkEvent,
    WalkOptions, WalkTotals, WalkedNode,
};
pub use report::{verify, verify_cached, verify_viewed, Report, VerifyError, VerifyOptions, Views};
pub use side::{Role, Side};
pub use zk::{connect, connect_pool, ConnectError, ConnectOptions, DigestAuth};
