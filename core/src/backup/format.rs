//! The snapshot format: a zstd stream of node records in tree order (each parent right before
//! its subtree), closed by a trailer with the record count and a blake3 checksum of everything
//! before it, next to a JSON manifest written last.
//!
//! ```text
//! stream  := MAGIC record* trailer
//! record  := 0x01 path:str32 kind:u8 ttl_ms:i64 data:bytes32 acl_count:u32 acl*
//!            czxid:i64 mzxid:i64 mtime:i64 version:i32 cversion:i32 aversion:i32 children:i32
//! acl     := perms:i32 scheme:str16 id:str32
//! trailer := 0x00 count:u64 blake3:[u8; 32]
//! ```
//!
//! Integers are little-endian; `str32`/`bytes32` carry a u32 length, `str16` a u16 length. Every
//! length is checked against [`Limits`] before anything is read, and a field's buffer grows
//! only with the bytes actually decoded: a corrupted or forged stream fails with an error
//! naming the field and the limit, never with a huge allocation.

use std::io::Read as _;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use verifier::model::{AclEntry, Node, NodeKind, NodeStat};

pub const MAGIC: &[u8; 8] = b"ZKSNAP\x00\x01";
pub const FORMAT: &str = "resiliency-operator/zookeeper-snapshot/v1";
pub const MANIFEST: &str = "manifest.json";
pub const NODES: &str = "nodes.zst";

const RECORD: u8 = 1;
const TRAILER: u8 = 0;
/// Bytes reserved for a length-prefixed field before any of it is read: a declared length is
/// never trusted with an allocation, the buffer grows only with bytes actually decoded.
const PREALLOC: usize = 64 << 10;

/// What one record may hold: a stream over any of these is refused before the field is read,
/// so a few kilobytes of zstd declaring gigabytes never become an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Node data: the destination's jute.maxbuffer (ZooKeeper refuses a larger request, so a
    /// node never holds more; 0xfffff bytes by default).
    pub data: usize,
    /// A relative path.
    pub path: usize,
    /// ACL entries of one node.
    pub acl_entries: usize,
    /// An ACL scheme (`world`, `digest`, `sasl`, `x509`, ...).
    pub scheme: usize,
    /// An ACL id (`user:hash`, a principal, a DN, an address).
    pub acl_id: usize,
}

/// Linux's PATH_MAX: ZooKeeper itself bounds a path only by jute.maxbuffer, but no real tree
/// comes near, and a bounded path keeps the per-depth state of a decode (tree order, Merkle
/// frames) small: a chain of nested nodes is at most half this deep.
pub const MAX_PATH: usize = 4096;
/// ACL entries of one node: ZooKeeper has no limit but jute.maxbuffer; real ones hold a few.
pub const MAX_ACL_ENTRIES: usize = 1024;
/// ZooKeeper's schemes are a few letters; a custom authentication provider's name too.
pub const MAX_SCHEME: usize = 64;
/// Digest ids are ~40 bytes, principals and DNs a few hundred; room for a custom provider's.
pub const MAX_ACL_ID: usize = 4096;

impl Limits {
    /// The limits for a destination whose servers take requests up to `jute_maxbuffer` bytes.
    pub fn new(jute_maxbuffer: usize) -> Limits {
        Limits {
            data: jute_maxbuffer,
            path: MAX_PATH,
            acl_entries: MAX_ACL_ENTRIES,
            scheme: MAX_SCHEME,
            acl_id: MAX_ACL_ID,
        }
    }
}

/// The most node data a backup's own read-back check takes, whatever its largest node: the
/// old format bound, far above any jute.maxbuffer in use.
const MAX_OWN_DATA: usize = 256 << 20;

impl Limits {
    /// The limits a backup checks its own snapshot with, just written: its largest node may
    /// be over the default jute.maxbuffer when the source raised it. Never for a manifest read
    /// from a bucket, which anyone with write access there may have forged.
    pub fn for_own(m: &Manifest) -> Limits {
        let largest = usize::try_from(m.max_data_bytes).unwrap_or(usize::MAX);
        Limits::new(Limits::default().data.max(largest).min(MAX_OWN_DATA))
    }
}

impl Default for Limits {
    /// ZooKeeper's default jute.maxbuffer.
    fn default() -> Limits {
        Limits::new(crate::engine::DEFAULT_JUTE_MAXBUFFER)
    }
}

/// What a snapshot holds, written after its data: a snapshot without one is incomplete and
/// never listed or restored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The source's servers (never its credentials) and root.
    pub source_servers: String,
    pub root_path: String,
    pub nodes: u64,
    pub data_bytes: u64,
    /// The most data one node holds: a restore into servers whose jute.maxbuffer is smaller
    /// is refused before it writes, and a record holding more is refused as forged. 0 in
    /// manifests written before it was recorded.
    #[serde(default)]
    pub max_data_bytes: u64,
    pub kinds: KindCounts,
    /// The verifier's blake3 Merkle root of the captured tree; a restore is checked against it.
    pub root_hash: String,
    /// Whether ACLs are part of `root_hash` (they are always stored).
    pub acl_in_hash: bool,
    /// Highest mzxid captured: the snapshot reflects the source at least up to this zxid.
    pub max_mzxid: i64,
    pub object: String,
    pub object_bytes: u64,
    /// blake3 of the compressed object, checked before anything is decompressed.
    pub object_blake3: String,
    pub duration_seconds: f64,
    /// When the stored object was read back and checked (RFC 3339). A backup writes `null`;
    /// the manifest is rewritten with the time once the check passed. Absent from manifests
    /// written before the check was recorded: those are legacy.
    #[serde(default, skip_serializing_if = "ReadBack::is_legacy")]
    pub verified_at: ReadBack,
    /// Set when the node count dropped past the deletion guard: such a snapshot is kept, but
    /// retention neither counts it nor lets it cause a deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<Suspect>,
}

impl Manifest {
    /// A manifest with nothing in it, for building partial ones.
    pub fn empty() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: String::new(),
            created_at: String::new(),
            source_servers: String::new(),
            root_path: String::new(),
            nodes: 0,
            data_bytes: 0,
            max_data_bytes: 0,
            kinds: KindCounts::default(),
            root_hash: String::new(),
            acl_in_hash: true,
            max_mzxid: 0,
            object: NODES.into(),
            object_bytes: 0,
            object_blake3: String::new(),
            duration_seconds: 0.0,
            verified_at: ReadBack::Unverified,
            suspect: None,
        }
    }

    /// How far retention trusts this snapshot.
    pub fn standing(&self) -> Standing {
        match (&self.suspect, &self.verified_at) {
            (Some(_), _) => Standing::Suspect,
            (None, ReadBack::Verified(_)) => Standing::Good,
            (None, ReadBack::Unverified) => Standing::Unverified,
            (None, ReadBack::Legacy) => Standing::Legacy,
        }
    }
}

/// Whether a snapshot was read back and checked: the manifest's `verifiedAt`, which is
/// absent (legacy), `null` (unverified) or a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReadBack {
    /// Written before verification was recorded: it may or may not have been checked.
    #[default]
    Legacy,
    /// Never read back: verification was off, failed, or has not run yet.
    Unverified,
    /// Read back and checked at this time (RFC 3339).
    Verified(String),
}

impl ReadBack {
    fn is_legacy(&self) -> bool {
        *self == ReadBack::Legacy
    }
}

// By hand, because `null` and a missing field mean different things here.
impl Serialize for ReadBack {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReadBack::Verified(at) => s.serialize_some(at),
            ReadBack::Unverified | ReadBack::Legacy => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for ReadBack {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only reached when the field is present; a missing one is the default, Legacy.
        Ok(match Option::<String>::deserialize(d)? {
            Some(at) => ReadBack::Verified(at),
            None => ReadBack::Unverified,
        })
    }
}

/// Why a snapshot is suspect: it holds far fewer nodes than the snapshot it was compared with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspect {
    /// The snapshot compared with: the newest earlier one that was good (or legacy).
    pub against: String,
    pub against_nodes: u64,
    /// For people, e.g. "node count dropped from 1200 to 1 (−99.9%) against snapshot X".
    pub reason: String,
}

/// How retention treats a snapshot, from its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Read back and checked, and not suspect: the only kind that counts toward `keepLast`.
    Good,
    /// Its node count dropped past the deletion guard.
    Suspect,
    /// Never read back.
    Unverified,
    /// Written before verification was recorded.
    Legacy,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Good => "verified",
            Standing::Suspect => "SUSPECT",
            Standing::Unverified => "unverified",
            Standing::Legacy => "legacy",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindCounts {
    pub persistent: u64,
    pub ephemeral_as_persistent: u64,
    pub container: u64,
    pub ttl: u64,
}

impl KindCounts {
    pub fn add(&mut self, kind: NodeKind) {
        match kind {
            NodeKind::Persistent => self.persistent += 1,
            NodeKind::Ephemeral => self.ephemeral_as_persistent += 1,
            NodeKind::Container => self.container += 1,
            NodeKind::Ttl { .. } => self.ttl += 1,
        }
    }
}

/// Appends one record.
pub fn encode_record(out: &mut Vec<u8>, rel: &str, node: &Node) {
    out.push(RECORD);
    put_bytes32(out, rel.as_bytes());
    let ttl = match node.kind {
        NodeKind::Ttl { ttl_ms } => ttl_ms,
        _ => 0,
    };
    out.push(node.kind.tag());
    out.extend_from_slice(&ttl.to_le_bytes());
    put_bytes32(out, &node.data);
    out.extend_from_slice(&(node.acl.len() as u32).to_le_bytes());
    for e in &node.acl {
        out.extend_from_slice(&e.perms.to_le_bytes());
        out.extend_from_slice(&(e.scheme.len() as u16).to_le_bytes());
        out.extend_from_slice(e.scheme.as_bytes());
        put_bytes32(out, e.id.as_bytes());
    }
    let s = &node.stat;
    for v in [s.czxid, s.mzxid, s.mtime] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [s.version, s.cversion, s.aversion, s.num_children] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends the trailer: `count` records, `checksum` of every byte before the trailer.
pub fn encode_trailer(out: &mut Vec<u8>, count: u64, checksum: &[u8; 32]) {
    out.push(TRAILER);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(checksum);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// What a decoder found next.
#[derive(Debug, PartialEq)]
pub enum Item {
    Node(String, Node),
    /// `stored` is the trailer's checksum, `computed` the one of the bytes actually read.
    Trailer {
        count: u64,
        stored: [u8; 32],
        computed: [u8; 32],
    },
}

/// Why a stream does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("snapshot stream is corrupt at byte {offset}: {what}")]
pub struct Corrupt {
    pub offset: u64,
    pub what: String,
}

/// Reads records from any `Read`, keeping a running checksum of what it consumed.
pub struct Decoder<R> {
    inner: R,
    offset: u64,
    hasher: blake3::Hasher,
    limits: Limits,
}

impl<R: std::io::Read> Decoder<R> {
    /// Checks the magic bytes; records are held to the default [`Limits`].
    pub fn new(inner: R) -> Result<Decoder<R>, Corrupt> {
        Decoder::with_limits(inner, Limits::default())
    }

    /// Checks the magic bytes; records are held to `limits`.
    pub fn with_limits(mut inner: R, limits: Limits) -> Result<Decoder<R>, Corrupt> {
        let mut magic = [0u8; MAGIC.len()];
        inner.read_exact(&mut magic).map_err(|e| Corrupt {
            offset: 0,
            what: format!("cannot read the header: {e}"),
        })?;
        if &magic != MAGIC {
            return Err(Corrupt {
                offset: 0,
                what: "not a snapshot stream (wrong magic bytes)".into(),
            });
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&magic);
        Ok(Decoder {
            inner,
            offset: MAGIC.len() as u64,
            hasher,
            limits,
        })
    }

    fn fill(&mut self, buf: &mut [u8], what: &str, hash: bool) -> Result<(), Corrupt> {
        self.inner.read_exact(buf).map_err(|e| Corrupt {
            offset: self.offset,
            what: format!("reading {what}: {e}"),
        })?;
        if hash {
            self.hasher.update(buf);
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Corrupt> {
        let mut b = [0u8; N];
        self.fill(&mut b, what, true)?;
        Ok(b)
    }

    /// A field of `len` bytes, refused when over `max` (`limit` says what that is). Read
    /// through `take`: the buffer grows with the bytes the stream really holds, so a length
    /// the stream does not back costs no memory.
    fn vec(&mut self, len: usize, max: usize, what: &str, limit: &str) -> Result<Vec<u8>, Corrupt> {
        if len > max {
            return Err(Corrupt {
                offset: self.offset,
                what: format!("{what} of {len} bytes is over the limit of {max} ({limit})"),
            });
        }
        let mut v = Vec::with_capacity(len.min(PREALLOC));
        let got = std::io::Read::take(&mut self.inner, len as u64)
            .read_to_end(&mut v)
            .map_err(|e| Corrupt {
                offset: self.offset,
                what: format!("reading {what}: {e}"),
            })?;
        if got < len {
            return Err(Corrupt {
                offset: self.offset + got as u64,
                what: format!("reading {what}: the stream ends {got} bytes into its {len}"),
            });
        }
        self.hasher.update(&v);
        self.offset += len as u64;
        Ok(v)
    }

    fn string(
        &mut self,
        len: usize,
        max: usize,
        what: &str,
        limit: &str,
    ) -> Result<String, Corrupt> {
        let offset = self.offset;
        String::from_utf8(self.vec(len, max, what, limit)?).map_err(|_| Corrupt {
            offset,
            what: format!("{what} is not UTF-8"),
        })
    }

    /// The next record or the trailer. After the trailer, call [`Decoder::finish`].
    pub fn next_item(&mut self) -> Result<Item, Corrupt> {
        let mut tag = [0u8; 1];
        self.fill(&mut tag, "a record tag", false)?;
        match tag[0] {
            RECORD => {
                self.hasher.update(&tag);
                self.record()
            }
            TRAILER => self.trailer(),
            t => Err(Corrupt {
                offset: self.offset - 1,
                what: format!("unknown record tag {t}"),
            }),
        }
    }

    /// The trailer, after its tag.
    fn trailer(&mut self) -> Result<Item, Corrupt> {
        // The checksum covers every byte before the trailer.
        let computed = *self.hasher.finalize().as_bytes();
        let mut count = [0u8; 8];
        self.fill(&mut count, "the trailer", false)?;
        let mut stored = [0u8; 32];
        self.fill(&mut stored, "the trailer checksum", false)?;
        Ok(Item::Trailer {
            count: u64::from_le_bytes(count),
            stored,
            computed,
        })
    }

    /// A node record, after its tag.
    fn record(&mut self) -> Result<Item, Corrupt> {
        let len = u32::from_le_bytes(self.array("a path length")?) as usize;
        let rel = self.string(len, self.limits.path, "a path", "no real tree comes near")?;
        let kind = self.kind(&rel)?;
        let len = u32::from_le_bytes(self.array("a data length")?) as usize;
        let data = self.vec(
            len,
            self.limits.data,
            &format!("node data at {rel:?}"),
            "the destination's jute.maxbuffer: ZooKeeper would refuse the node",
        )?;
        let acl = self.acl(&rel)?;
        let stat = self.stat(data.len())?;
        Ok(Item::Node(
            rel,
            Node {
                data,
                acl,
                kind,
                stat,
            },
        ))
    }

    fn kind(&mut self, rel: &str) -> Result<NodeKind, Corrupt> {
        let [kind] = self.array::<1>("a node kind")?;
        let ttl_ms = i64::from_le_bytes(self.array("a TTL")?);
        Ok(match kind {
            0 => NodeKind::Persistent,
            1 => NodeKind::Ephemeral,
            2 => NodeKind::Container,
            3 => NodeKind::Ttl { ttl_ms },
            k => {
                return Err(Corrupt {
                    offset: self.offset,
                    what: format!("unknown node kind {k} at {rel:?}"),
                })
            }
        })
    }

    fn acl(&mut self, rel: &str) -> Result<Vec<AclEntry>, Corrupt> {
        let n = u32::from_le_bytes(self.array("an ACL count")?) as usize;
        if n > self.limits.acl_entries {
            return Err(Corrupt {
                offset: self.offset,
                what: format!(
                    "{n} ACL entries at {rel:?} are over the limit of {}",
                    self.limits.acl_entries
                ),
            });
        }
        let mut acl = Vec::with_capacity(n.min(16));
        for _ in 0..n {
            let perms = i32::from_le_bytes(self.array("ACL permissions")?);
            let len = u16::from_le_bytes(self.array("an ACL scheme length")?) as usize;
            let what = format!("an ACL scheme at {rel:?}");
            let scheme = self.string(len, self.limits.scheme, &what, "schemes are short names")?;
            let len = u32::from_le_bytes(self.array("an ACL id length")?) as usize;
            let what = format!("an ACL id at {rel:?}");
            let id = self.string(len, self.limits.acl_id, &what, "ids are names or hashes")?;
            acl.push(AclEntry::new(perms, &scheme, &id));
        }
        Ok(acl)
    }

    /// The stored stat; the data length is the data's.
    fn stat(&mut self, data_length: usize) -> Result<NodeStat, Corrupt> {
        let czxid = i64::from_le_bytes(self.array("a stat")?);
        let mzxid = i64::from_le_bytes(self.array("a stat")?);
        let mtime = i64::from_le_bytes(self.array("a stat")?);
        let version = i32::from_le_bytes(self.array("a stat")?);
        let cversion = i32::from_le_bytes(self.array("a stat")?);
        let aversion = i32::from_le_bytes(self.array("a stat")?);
        let num_children = i32::from_le_bytes(self.array("a stat")?);
        Ok(NodeStat {
            czxid,
            mzxid,
            mtime,
            version,
            cversion,
            aversion,
            ephemeral_owner: 0,
            data_length: data_length as i32,
            num_children,
        })
    }

    /// Fails when anything follows the trailer.
    pub fn finish(mut self) -> Result<(), Corrupt> {
        let mut b = [0u8; 1];
        match self.inner.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Corrupt {
                offset: self.offset,
                what: "data after the trailer".into(),
            }),
            Err(e) => Err(Corrupt {
                offset: self.offset,
                what: format!("reading past the trailer: {e}"),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Node)> {
        let mut n = Node::persistent(b"hello".to_vec()).with_acl(vec![
            AclEntry::new(31, "digest", "admin:x"),
            AclEntry::open(),
        ]);
        n.stat.cversion = 7;
        n.stat.num_children = 2;
        vec![
            ("".into(), Node::persistent(Vec::new())),
            ("/a".into(), n),
            (
                "/a/ttl".into(),
                Node::persistent(vec![0, 255, 1]).with_kind(NodeKind::Ttl { ttl_ms: 5000 }),
            ),
            (
                "/a/ä".into(),
                Node::persistent(Vec::new()).with_kind(NodeKind::Container),
            ),
        ]
    }

    fn stream(nodes: &[(String, Node)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (rel, n) in nodes {
            encode_record(&mut out, rel, n);
        }
        let sum = *blake3::hash(&out).as_bytes();
        encode_trailer(&mut out, nodes.len() as u64, &sum);
        out
    }

    #[test]
    fn records_round_trip_with_kinds_acls_and_stats() {
        let nodes = sample();
        let bytes = stream(&nodes);
        let mut d = Decoder::new(&bytes[..]).unwrap();
        for (rel, n) in &nodes {
            match d.next_item().unwrap() {
                Item::Node(r, got) => {
                    assert_eq!(&r, rel);
                    assert_eq!(got.data, n.data);
                    assert_eq!(got.acl, n.acl);
                    assert_eq!(got.kind, n.kind);
                    assert_eq!(got.stat.cversion, n.stat.cversion);
                    assert_eq!(got.stat.num_children, n.stat.num_children);
                }
                other => panic!("{other:?}"),
            }
        }
        match d.next_item().unwrap() {
            Item::Trailer {
                count,
                stored,
                computed,
            } => {
                assert_eq!(count, 4);
                assert_eq!(stored, computed);
            }
            other => panic!("{other:?}"),
        }
        d.finish().unwrap();
    }

    #[test]
    fn corruption_is_an_error_never_a_huge_allocation() {
        let bytes = stream(&sample());
        assert!(Decoder::new(&b"NOTASNAP"[..]).is_err());
        // A path length of 4 GiB.
        let mut bad = bytes.clone();
        bad[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = Decoder::new(&bad[..]).unwrap();
        let e = d.next_item().unwrap_err();
        assert!(e.what.contains("over the limit"), "{e}");
        // Truncated.
        let mut d = Decoder::new(&bytes[..bytes.len() / 2]).unwrap();
        let mut failed = false;
        for _ in 0..10 {
            if d.next_item().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    /// The first record's error, decoding `raw` (a magic and records) with `limits`.
    fn first_error(raw: &[u8], limits: Limits) -> Corrupt {
        let mut d = Decoder::with_limits(raw, limits).unwrap();
        d.next_item().unwrap_err()
    }

    fn one(rel: &str, node: &Node) -> Vec<u8> {
        let mut raw = MAGIC.to_vec();
        encode_record(&mut raw, rel, node);
        raw
    }

    #[test]
    fn each_field_is_held_to_its_limit_and_the_error_names_it() {
        // Data: the destination's jute.maxbuffer, by default 0xfffff bytes.
        let at_limit = Node::persistent(vec![7; 0xfffff]);
        let raw = one("/big", &at_limit);
        let mut d = Decoder::new(&raw[..]).unwrap();
        assert!(matches!(d.next_item().unwrap(), Item::Node(_, n) if n.data.len() == 0xfffff));
        let over = Node::persistent(vec![7; 0x100000]);
        let e = first_error(&one("/big", &over), Limits::default());
        assert!(
            e.what
                .contains("node data at \"/big\" of 1048576 bytes is over the limit of 1048575"),
            "{e}"
        );
        assert!(e.what.contains("jute.maxbuffer"), "{e}");
        // A destination that raised it takes more.
        let raw = one("/big", &over);
        let mut d = Decoder::with_limits(&raw[..], Limits::new(2 << 20)).unwrap();
        assert!(d.next_item().is_ok());

        let long = format!("/{}", "p".repeat(MAX_PATH));
        let e = first_error(&one(&long, &Node::persistent(vec![])), Limits::default());
        assert!(
            e.what.contains(&format!(
                "a path of {} bytes is over the limit of {MAX_PATH}",
                MAX_PATH + 1
            )),
            "{e}"
        );

        let entries = (0..=MAX_ACL_ENTRIES)
            .map(|i| AclEntry::new(1, "ip", &format!("10.0.{}.{}", i / 256, i % 256)))
            .collect();
        let many = Node::persistent(vec![]).with_acl(entries);
        let e = first_error(&one("/acl", &many), Limits::default());
        assert!(
            e.what
                .contains("1025 ACL entries at \"/acl\" are over the limit of 1024"),
            "{e}"
        );

        let scheme = Node::persistent(vec![]).with_acl(vec![AclEntry::new(
            1,
            &"s".repeat(MAX_SCHEME + 1),
            "x",
        )]);
        let e = first_error(&one("/s", &scheme), Limits::default());
        assert!(
            e.what
                .contains("an ACL scheme at \"/s\" of 65 bytes is over the limit of 64"),
            "{e}"
        );

        let id = Node::persistent(vec![]).with_acl(vec![AclEntry::new(
            1,
            "digest",
            &"i".repeat(MAX_ACL_ID + 1),
        )]);
        let e = first_error(&one("/i", &id), Limits::default());
        assert!(
            e.what
                .contains("an ACL id at \"/i\" of 4097 bytes is over the limit of 4096"),
            "{e}"
        );
    }

    /// Counts the bytes handed out, to show what a decode really allocated.
    struct Counting<'a>(&'a [u8], usize);

    impl std::io::Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 = self.1.max(buf.len());
            Ok(n)
        }
    }

    #[test]
    fn a_declared_length_the_stream_does_not_back_costs_no_memory() {
        // A record declaring 1 MiB of data followed by 10 bytes: refused as truncated, and the
        // decoder never asked for a buffer near the declared size.
        let mut raw = MAGIC.to_vec();
        raw.push(RECORD);
        put_bytes32(&mut raw, b"/x");
        raw.push(0);
        raw.extend_from_slice(&0i64.to_le_bytes());
        raw.extend_from_slice(&(0xfffffu32).to_le_bytes());
        raw.extend_from_slice(&[1; 10]);
        let mut src = Counting(&raw, 0);
        let mut d = Decoder::new(&mut src).unwrap();
        let e = d.next_item().unwrap_err();
        assert!(
            e.what.contains("the stream ends 10 bytes into its 1048575"),
            "{e}"
        );
        assert!(src.1 <= PREALLOC, "read into a {}-byte buffer", src.1);
    }

    #[test]
    fn verified_at_tells_legacy_unverified_and_verified_manifests_apart() {
        let mut m = Manifest::empty();
        let json = serde_json::to_value(&m).unwrap();
        // A new manifest says it is not verified; one from before lacks the field.
        assert_eq!(json["verifiedAt"], serde_json::Value::Null);
        assert!(json.as_object().unwrap().contains_key("verifiedAt"));
        assert!(!json.as_object().unwrap().contains_key("suspect"));
        assert_eq!(m.standing(), Standing::Unverified);
        let mut legacy = json.clone();
        legacy.as_object_mut().unwrap().remove("verifiedAt");
        let old: Manifest = serde_json::from_value(legacy).unwrap();
        assert_eq!(old.verified_at, ReadBack::Legacy);
        assert_eq!(old.standing(), Standing::Legacy);
        // Round trips, including legacy (the field stays absent).
        assert_eq!(
            serde_json::from_value::<Manifest>(serde_json::to_value(&old).unwrap()).unwrap(),
            old
        );
        m.verified_at = ReadBack::Verified("2026-11-21T00:00:00Z".into());
        let back: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.standing(), Standing::Good);
        m.suspect = Some(Suspect {
            against: "a".into(),
            against_nodes: 1000,
            reason: "r".into(),
        });
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["suspect"]["againstNodes"], 1000);
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back.standing(), Standing::Suspect);
    }
}
