//! ACLs already read, so that a repeated verification reads again only the ACLs that changed.
//!
//! getACL has no multi form: without a cache every verification costs one round trip per
//! node for its ACL, while data, stat and children come many nodes to a multi-read. The
//! multi-read returns each node's stat, and a node's ACL can change only when one of these
//! does:
//!
//! - `czxid` and `ctime`: a node deleted and created again is a new node, with the zxid and the
//!   leader's clock of its create; its `aversion` starts again at 0. `ctime` also tells apart a
//!   database rebuilt from scratch behind the same address, whose zxids start over.
//! - `aversion`: every setACL raises it.
//!
//! So an entry is keyed by the path and those three, and where the stat of the multi-read
//! matches it the cached ACL is the one getACL would return at that instant. A first
//! verification finds no entries and reads every ACL, as without a cache.
//!
//! One cache serves one side, one ensemble: the source and the destination are different
//! servers, whose zxids have nothing to do with each other ([`VerifyCache`] holds the pair). It
//! is owned by whoever runs the repeated verifications and passed in; nothing is global.
//!
//! Bounded memory: an entry costs [`ENTRY_BYTES`] (65 on 64-bit targets: the map slot with the
//! free buckets a map keeps) plus its path's heap block (the length plus 8, rounded up to 16,
//! at least 32), so about 100 to 120 bytes for paths of 20 to 40 bytes, 10 to 12 MB per 100k
//! nodes and side; the map's capacity grows by doubling, so [`AclCacheStats::memory_bytes`]
//! may show up to twice the slot part right after a growth. An ACL is held once however many
//! nodes share it. A walk marks each entry it looks up or fills; a complete walk then drops the
//! entries it did not mark (nodes gone, or outside the tree it walked), so the cache holds
//! what the last walk saw and does not grow as trees churn. An incomplete walk (a read error)
//! keeps what the walk before it saw too.
//!
//! Not covered: a database restored behind the same address to an older snapshot of itself,
//! then given another setACL, can bring a node back to a cached (czxid, ctime, aversion) with
//! another ACL. [`AclCache::clear`] after such a restore (a new process starts empty anyway).

use crate::side::Side;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use zookeeper_client::Stat;

use crate::model::AclEntry;
use crate::reader::is_redacted;

/// Bytes an entry costs besides its path: the map slot (boxed path, key, walk mark, shared
/// ACL) and its control byte, with the buckets a full map keeps free (one in eight).
pub const ENTRY_BYTES: usize = (std::mem::size_of::<(Box<str>, Entry)>() + 1) * 8 / 7;

/// Heap bytes of a path of `len` bytes, as glibc's malloc rounds a block.
fn path_heap(len: usize) -> usize {
    (len + 8).next_multiple_of(16).max(32)
}

/// The stat fields an ACL is cached under, besides the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    czxid: i64,
    ctime: i64,
    aversion: i32,
}

impl Key {
    fn of(s: &Stat) -> Key {
        Key {
            czxid: s.czxid,
            ctime: s.ctime,
            aversion: s.aversion,
        }
    }
}

/// The key's fields side by side with the walk mark, so the mark fills the padding.
struct Entry {
    czxid: i64,
    ctime: i64,
    aversion: i32,
    /// The last walk that saw the node.
    seen: u32,
    acl: Arc<[AclEntry]>,
}

impl Entry {
    fn key(&self) -> Key {
        Key {
            czxid: self.czxid,
            ctime: self.ctime,
            aversion: self.aversion,
        }
    }
}

#[derive(Default)]
struct State {
    /// Absolute path (as the session sees it) → its ACL.
    entries: HashMap<Box<str>, Entry>,
    /// Each distinct ACL once: most trees share a handful.
    acls: HashSet<Arc<[AclEntry]>>,
    path_bytes: usize,
    /// The number of the last walk begun.
    walk: u32,
}

struct Shared {
    side: Side,
    ensemble: String,
    state: Mutex<State>,
    hits: AtomicU64,
    reads: AtomicU64,
}

/// The ACL cache of one side: cheap to clone, clones share the entries.
#[derive(Clone)]
pub struct AclCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AclCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclCache")
            .field("side", &self.shared.side)
            .field("ensemble", &self.shared.ensemble)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a cache holds and what it saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AclCacheStats {
    pub entries: usize,
    /// Distinct ACLs held.
    pub acls: usize,
    /// ACLs taken from the cache instead of a getACL, since it was made.
    pub hits: u64,
    /// getACL requests sent by reads that use the cache, since it was made.
    pub reads: u64,
    /// Estimated heap bytes held.
    pub memory_bytes: usize,
}

/// An entry as a lookup found it.
pub(crate) struct Cached {
    key: Key,
    pub(crate) acl: Arc<[AclEntry]>,
}

impl Cached {
    /// The node read with `stat` is the one the entry was made for, with the same ACL.
    pub(crate) fn matches(&self, stat: &Stat) -> bool {
        self.key == Key::of(stat)
    }
}

/// Marks a walk, for dropping what it did not see when it ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkMark(u32);

/// `seen` is `mark` or later (walk numbers wrap).
fn since(seen: u32, mark: u32) -> bool {
    (seen.wrapping_sub(mark) as i32) >= 0
}

impl AclCache {
    /// An empty cache for the reads of `side` ("source" or "destination") from `ensemble`, its
    /// connection string with any chroot (paths are keyed as that session sees them).
    pub fn new(side: Side, ensemble: impl Into<String>) -> AclCache {
        AclCache {
            shared: Arc::new(Shared {
                side,
                ensemble: ensemble.into(),
                state: Mutex::new(State::default()),
                hits: AtomicU64::new(0),
                reads: AtomicU64::new(0),
            }),
        }
    }

    pub fn side(&self) -> Side {
        self.shared.side
    }

    pub fn ensemble(&self) -> &str {
        &self.shared.ensemble
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere poisons nothing.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when nothing is cached (a first walk has not ended, or the cache was cleared).
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    pub fn stats(&self) -> AclCacheStats {
        let s = self.lock();
        let acl_bytes: usize = s
            .acls
            .iter()
            .map(|a| {
                // Arc counts, the entries, their strings, and the set's slot.
                16 + 16
                    + a.iter()
                        .map(|e| std::mem::size_of::<AclEntry>() + e.scheme.len() + e.id.len())
                        .sum::<usize>()
            })
            .sum();
        AclCacheStats {
            entries: s.entries.len(),
            acls: s.acls.len(),
            hits: self.shared.hits.load(Ordering::Relaxed),
            reads: self.shared.reads.load(Ordering::Relaxed),
            memory_bytes: s.entries.capacity() * ENTRY_BYTES + s.path_bytes + acl_bytes,
        }
    }

    /// Forgets every entry (the counters stay).
    pub fn clear(&self) {
        let mut s = self.lock();
        let walk = s.walk;
        *s = State {
            walk,
            ..State::default()
        };
    }

    /// The entries of `paths`, looked up before their stats are known: the ACL of a path
    /// without one is asked for at once, the others wait for the stat to say whether the
    /// entry still holds (see [`Cached::matches`]). The entries found count as seen by the
    /// walk under way, whether or not they still hold (one that does not is replaced by the
    /// getACL that follows).
    pub(crate) fn lookup(&self, paths: &[String]) -> Vec<Option<Cached>> {
        let mut s = self.lock();
        let walk = s.walk;
        paths
            .iter()
            .map(|p| {
                let e = s.entries.get_mut(p.as_str())?;
                e.seen = walk;
                Some(Cached {
                    key: e.key(),
                    acl: e.acl.clone(),
                })
            })
            .collect()
    }

    /// The cached ACL of `path` when `stat` (read with its data) matches the entry's key.
    pub fn get(&self, path: &str, stat: &Stat) -> Option<Vec<AclEntry>> {
        let hit = self
            .lookup(&[path.to_string()])
            .pop()
            .flatten()
            .filter(|c| c.matches(stat))?;
        self.count_hits(1);
        Some(hit.acl.to_vec())
    }

    /// Counts ACLs taken from the cache.
    pub(crate) fn count_hits(&self, n: u64) {
        self.shared.hits.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts getACL requests sent for reads that use this cache.
    pub fn count_reads(&self, n: u64) {
        self.shared.reads.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the ACL getACL returned for `path` with its `stat` (the stat of that same reply,
    /// so key and ACL belong together). `acl` in canonical order. An ACL with hashes the
    /// server hid is never kept.
    pub fn put(&self, path: &str, stat: &Stat, acl: &[AclEntry]) {
        self.put_many(std::iter::once((path, stat, acl)));
    }

    /// [`AclCache::put`] for many nodes under one lock.
    pub(crate) fn put_many<'a>(
        &self,
        nodes: impl IntoIterator<Item = (&'a str, &'a Stat, &'a [AclEntry])>,
    ) {
        let mut s = self.lock();
        let walk = s.walk;
        for (p, stat, acl) in nodes {
            if acl.iter().any(is_redacted) {
                continue;
            }
            let acl = match s.acls.get(acl) {
                Some(a) => a.clone(),
                None => {
                    let a: Arc<[AclEntry]> = acl.into();
                    s.acls.insert(a.clone());
                    a
                }
            };
            let entry = Entry {
                czxid: stat.czxid,
                ctime: stat.ctime,
                aversion: stat.aversion,
                seen: walk,
                acl,
            };
            if let Some(e) = s.entries.get_mut(p) {
                *e = entry;
            } else {
                s.path_bytes += path_heap(p.len());
                s.entries.insert(p.into(), entry);
            }
        }
    }

    /// A walk begins: what it sees from now on is marked with it.
    pub(crate) fn begin_walk(&self) -> WalkMark {
        let mut s = self.lock();
        s.walk = s.walk.wrapping_add(1);
        WalkMark(s.walk)
    }

    /// The walk of `mark` ended. Complete: the entries it did not see are dropped (their nodes
    /// are gone, or outside the tree it walked). Incomplete: those of the walk before are kept
    /// too, since the walk may have stopped before reaching them.
    pub(crate) fn end_walk(&self, mark: WalkMark, complete: bool) {
        let keep_since = if complete {
            mark.0
        } else {
            mark.0.wrapping_sub(1)
        };
        let mut s = self.lock();
        let before = s.entries.len();
        let mut freed = 0;
        s.entries.retain(|p, e| {
            let keep = since(e.seen, keep_since);
            if !keep {
                freed += path_heap(p.len());
            }
            keep
        });
        s.path_bytes -= freed;
        if s.entries.len() < before {
            // ACLs no entry uses any more (the set holds the last reference).
            s.acls.retain(|a| Arc::strong_count(a) > 1);
            if s.entries.len() < s.entries.capacity() / 4 {
                s.entries.shrink_to_fit();
            }
        }
    }
}

/// The ACL caches of both sides of repeated verifications of one pair of trees.
#[derive(Clone, Debug)]
pub struct VerifyCache {
    pub source: AclCache,
    pub destination: AclCache,
}

impl VerifyCache {
    /// Empty caches for the source and destination ensembles (connection strings with any
    /// chroot).
    pub fn new(source_ensemble: &str, destination_ensemble: &str) -> VerifyCache {
        VerifyCache {
            source: AclCache::new(Side::Source, source_ensemble),
            destination: AclCache::new(Side::Destination, destination_ensemble),
        }
    }

    /// Both sides' stats: (source, destination).
    pub fn stats(&self) -> (AclCacheStats, AclCacheStats) {
        (self.source.stats(), self.destination.stats())
    }

    /// Whether these are the caches of a copy from `source` to `destination` (connect
    /// strings): only then may a copy or verification between them use them.
    pub fn is_of(&self, source: &str, destination: &str) -> bool {
        self.source.ensemble() == source && self.destination.ensemble() == destination
    }

    /// The same caches for the copy the other way (the destination's is the source's now):
    /// what a switchover hands its reverse stream. Entries are keyed by ensemble and stat,
    /// not by role, so they hold either way.
    pub fn reversed(&self) -> VerifyCache {
        VerifyCache {
            source: self.destination.clone(),
            destination: self.source.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::perms;

    fn stat(czxid: i64, ctime: i64, aversion: i32) -> Stat {
        Stat {
            czxid,
            mzxid: czxid,
            pzxid: czxid,
            ctime,
            mtime: ctime,
            version: 0,
            cversion: 0,
            aversion,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        }
    }

    fn open() -> Vec<AclEntry> {
        vec![AclEntry::open()]
    }

    #[test]
    fn a_hit_needs_the_same_creation_and_acl_version() {
        let c = AclCache::new(Side::Source, "zk:2181");
        let read_only = vec![AclEntry::new(perms::READ, "world", "anyone")];
        c.put("/a", &stat(10, 1000, 0), &open());
        assert_eq!(c.get("/a", &stat(10, 1000, 0)), Some(open()));
        // setACL
        assert_eq!(c.get("/a", &stat(10, 1000, 1)), None);
        // deleted and created again (aversion back to 0)
        assert_eq!(c.get("/a", &stat(12, 1000, 0)), None);
        // a rebuilt database at the same address, zxids started over
        assert_eq!(c.get("/a", &stat(10, 2000, 0)), None);
        assert_eq!(c.get("/b", &stat(10, 1000, 0)), None);
        c.put("/a", &stat(10, 1000, 1), &read_only);
        assert_eq!(c.get("/a", &stat(10, 1000, 1)), Some(read_only));
        assert_eq!(c.get("/a", &stat(10, 1000, 0)), None);
        let s = c.stats();
        assert_eq!((s.entries, s.hits), (1, 2));
    }

    #[test]
    fn hidden_digests_are_never_kept() {
        let c = AclCache::new(Side::Source, "zk:2181");
        let hidden = vec![AclEntry::new(perms::ALL, "digest", "admin:x")];
        c.put("/a", &stat(10, 1000, 0), &hidden);
        assert_eq!(c.get("/a", &stat(10, 1000, 0)), None);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn a_complete_walk_drops_what_it_did_not_see() {
        let c = AclCache::new(Side::Destination, "zk:2181");
        let w = c.begin_walk();
        c.put("/a", &stat(1, 1, 0), &open());
        c.put("/gone", &stat(2, 1, 0), &open());
        c.end_walk(w, true);
        assert_eq!(c.stats().entries, 2);
        let full = c.stats().memory_bytes;
        assert!(full >= 2 * (ENTRY_BYTES + 32), "{full}");

        let w = c.begin_walk();
        assert!(c.get("/a", &stat(1, 1, 0)).is_some());
        // A read that failed part way keeps the previous walk's entries.
        c.end_walk(w, false);
        assert_eq!(c.stats().entries, 2);

        let w = c.begin_walk();
        assert!(c.get("/a", &stat(1, 1, 0)).is_some());
        c.end_walk(w, true);
        assert_eq!(c.stats().entries, 1);
        let found = c.lookup(&["/a".into(), "/gone".into()]);
        assert_eq!(
            found.iter().map(Option::is_some).collect::<Vec<_>>(),
            vec![true, false]
        );
        drop(found);

        // Nothing seen: nothing kept, and no ACL either.
        let w = c.begin_walk();
        c.end_walk(w, true);
        let s = c.stats();
        assert_eq!((s.entries, s.acls), (0, 0));
    }

    #[test]
    fn nodes_share_one_copy_of_an_acl() {
        let c = AclCache::new(Side::Source, "zk:2181");
        for i in 0..100 {
            c.put(&format!("/n{i}"), &stat(i, 1, 0), &open());
        }
        let s = c.stats();
        assert_eq!((s.entries, s.acls), (100, 1));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_documented_entry_cost_holds() {
        assert_eq!(ENTRY_BYTES, 65);
    }

    #[test]
    fn walk_numbers_wrap() {
        assert!(since(5, 5));
        assert!(since(6, 5));
        assert!(!since(4, 5));
        assert!(since(0, u32::MAX));
        assert!(!since(u32::MAX, 0));
    }
}
