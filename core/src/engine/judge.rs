//! The lag-aware verifier of a continuous sync: tells real divergence from replication lag.
//!
//! A full verification of a tree that is being written finds differences that are only lag.
//! So every divergent path it lists is first *suspected*. Once the stream has caught up, each
//! suspect is compared again node by node, twice, a settle interval apart. A path is
//! *confirmed* divergent only when both comparisons still find a difference and its source
//! node did not change between them (same mzxid): a node still being written is never blamed.

use std::time::{Duration, Instant};

use verifier::model::{canonical_acl, AclEntry, NodeKind};
use verifier::Side;
use verifier::{path, AclCache, Report, VerifyCache, VerifyError, VerifyOptions};
use zookeeper_client::{Client, Error as ZkError};

use super::{kind_for, observable, SyncOptions};

/// The outcome of one lag-aware verification.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The full verification (its divergences are the suspects).
    pub report: Report,
    /// Paths (relative to the roots, "" is the root) still different after the stream caught
    /// up, twice, with their source unchanged. Real divergence.
    pub confirmed: Vec<String>,
    /// Suspects that could not be judged: the stream did not catch up in time, the source
    /// node kept changing, or more were divergent than the report lists.
    pub undecided: u64,
}

impl Verdict {
    /// The trees are known equal (no suspect at all, or every suspect was lag).
    pub fn in_sync(&self) -> bool {
        self.confirmed.is_empty() && self.undecided == 0
    }
}

/// What one side holds at a path, for a node-by-node comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeState {
    data: Vec<u8>,
    acl: Option<Vec<AclEntry>>,
    kind: NodeKind,
    mzxid: i64,
}

/// The trees a verification reads: each side's sessions, and the ACL caches of repeated
/// verifications (see [`VerifyCache`]).
#[derive(Clone, Copy)]
pub struct Sides<'a> {
    pub source: &'a [Client],
    pub destination: &'a [Client],
    pub cache: Option<&'a VerifyCache>,
}

async fn read_node(
    c: &Client,
    p: &str,
    acl: bool,
    o: &SyncOptions,
    source_path: Option<&str>,
    cache: Option<&AclCache>,
) -> Result<Option<NodeState>, ZkError> {
    let (data, stat) = match c.get_data(p).await {
        Ok(v) => v,
        Err(ZkError::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    let reported = NodeKind::from_ephemeral_owner(stat.ephemeral_owner);
    let kind = match source_path {
        // The source's kind as the copy would create it (rules, ephemeral policy).
        Some(sp) => {
            match super::plan::desired_kind(kind_for(&o.type_rules, sp, reported), o.ephemerals) {
                Some(k) => observable(k),
                // Skipped ephemerals count as absent, as in the verifier.
                None => return Ok(None),
            }
        }
        None => observable(reported),
    };
    let acl = if !acl {
        None
    } else if let Some(hit) = cache.and_then(|c| c.get(p, &stat)) {
        // Unchanged since it was read (same czxid, ctime and aversion as the cached one).
        Some(hit)
    } else {
        if let Some(c) = cache {
            c.count_reads(1);
        }
        match c.get_acl(p).await {
            Ok((a, acl_stat)) => {
                let a = canonical_acl(a.iter().map(AclEntry::from_zk).collect());
                if let Some(c) = cache {
                    c.put(p, &acl_stat, &a);
                }
                Some(a)
            }
            Err(ZkError::NoNode) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    // A fenced destination is compared with the source's ACLs in their fenced form.
    let acl = match source_path {
        Some(_) => acl.map(|a| o.destination_acl(a)),
        None => acl,
    };
    Ok(Some(NodeState {
        data,
        acl,
        kind,
        mzxid: stat.mzxid,
    }))
}

/// Compares one relative path on both sides: None when equal, else the source's mzxid (0 when
/// the source has no such node).
async fn differs(
    src: &Client,
    dst: &Client,
    cache: Option<&VerifyCache>,
    o: &SyncOptions,
    rel: &str,
) -> Result<Option<i64>, (Side, ZkError)> {
    let sp = path::join(&o.source_root, rel);
    let dp = path::join(&o.destination_root, rel);
    let (sc, dc) = (cache.map(|c| &c.source), cache.map(|c| &c.destination));
    let s = read_node(src, &sp, o.copy_acl, o, Some(&sp), sc)
        .await
        .map_err(|e| (Side::Source, e))?;
    let d = read_node(dst, &dp, o.copy_acl, o, None, dc)
        .await
        .map_err(|e| (Side::Destination, e))?;
    let same = match (&s, &d) {
        (None, None) => true,
        (Some(a), Some(b)) => a.data == b.data && a.acl == b.acl && a.kind == b.kind,
        _ => false,
    };
    Ok((!same).then(|| s.map(|n| n.mzxid).unwrap_or(0)))
}

/// Runs a full verification, then judges its suspects once `caught_up` says the stream has
/// nothing pending. `settle` separates the two rechecks (a few batch windows).
pub async fn judge(
    src: &[Client],
    dst: &[Client],
    o: &SyncOptions,
    max_paths: usize,
    settle: Duration,
    caught_up: impl Fn() -> bool,
) -> Result<Verdict, VerifyError> {
    let sides = Sides {
        source: src,
        destination: dst,
        cache: None,
    };
    judge_delayed(sides, o, max_paths, settle, caught_up, |_| false).await
}

/// [`judge`] for a stream that applies changes late on purpose: a suspect whose source path
/// has a change still waiting its delay (`delayed`) is lag, whatever the rechecks find. With
/// `sides.cache`, the verification and the rechecks read only the ACLs that changed since the
/// cache last saw them.
pub async fn judge_delayed(
    sides: Sides<'_>,
    o: &SyncOptions,
    max_paths: usize,
    settle: Duration,
    caught_up: impl Fn() -> bool,
    delayed: impl Fn(&str) -> bool,
) -> Result<Verdict, VerifyError> {
    let report = verify_sides(sides, o, max_paths).await?;
    let mut verdict = Verdict {
        undecided: report
            .divergent_nodes
            .saturating_sub(report.divergences.len() as u64),
        confirmed: Vec::new(),
        report,
    };
    if verdict.report.equal {
        return Ok(verdict);
    }
    let suspects = suspects(&verdict.report, o, &delayed);
    // Two rechecks, each after the stream has caught up; the source must hold still between.
    if !wait_caught_up(&caught_up, settle).await {
        verdict.undecided += suspects.len() as u64;
        return Ok(verdict);
    }
    let first = still_differing(sides, o, suspects).await?;
    if first.is_empty() {
        return Ok(verdict);
    }
    tokio::time::sleep(settle).await;
    if !wait_caught_up(&caught_up, settle).await {
        verdict.undecided += first.len() as u64;
        return Ok(verdict);
    }
    for (rel, zxid) in first {
        if delayed(&path::join(&o.source_root, &rel)) {
            continue;
        }
        match recheck(sides, o, &rel).await? {
            Some(z) if z == zxid => verdict.confirmed.push(rel),
            // Changed on the source meanwhile: still in flight, judged next time.
            Some(_) => verdict.undecided += 1,
            None => {}
        }
    }
    Ok(verdict)
}

/// The full verification of both trees, as the copy would compare them.
pub(crate) async fn verify_sides(
    sides: Sides<'_>,
    o: &SyncOptions,
    max_paths: usize,
) -> Result<Report, VerifyError> {
    let mut v = VerifyOptions::default();
    v.walk.hash.acl = o.copy_acl;
    v.walk.ephemerals = o.ephemerals;
    // The same reads in flight as the copy itself makes of these ensembles.
    v.walk.window = o.read_window;
    v.max_paths = max_paths;
    let (src, dst) = (sides.source, sides.destination);
    let (sr, dr) = (&o.source_root, &o.destination_root);
    if let Some(id) = &o.fence_destination {
        let views = verifier::Views {
            source: Some(crate::switchover::fence::Fencing::view(id)),
            destination: None,
            cache: sides.cache.cloned(),
        };
        return verifier::verify_viewed(src, sr, dst, dr, v, views).await;
    }
    match sides.cache {
        Some(c) => verifier::verify_cached(src, sr, dst, dr, v, c).await,
        None => verifier::verify(src, sr, dst, dr, v).await,
    }
}

/// The divergent paths of `report`, each once, less those a delayed change explains.
fn suspects(report: &Report, o: &SyncOptions, delayed: &impl Fn(&str) -> bool) -> Vec<String> {
    let mut suspects: Vec<String> = report.divergences.iter().map(|d| d.path.clone()).collect();
    suspects.dedup();
    suspects.retain(|rel| !delayed(&path::join(&o.source_root, rel)));
    suspects
}

/// The suspects that still differ, with their source mzxid.
async fn still_differing(
    sides: Sides<'_>,
    o: &SyncOptions,
    suspects: Vec<String>,
) -> Result<Vec<(String, i64)>, VerifyError> {
    let mut differing = Vec::new();
    for rel in suspects {
        if let Some(z) = recheck(sides, o, &rel).await? {
            differing.push((rel, z));
        }
    }
    Ok(differing)
}

/// [`differs`] on the first session of each side.
async fn recheck(sides: Sides<'_>, o: &SyncOptions, rel: &str) -> Result<Option<i64>, VerifyError> {
    let (s, d) = (&sides.source[0], &sides.destination[0]);
    differs(s, d, sides.cache, o, rel)
        .await
        .map_err(|(side, e)| {
            VerifyError::Read(verifier::reader::ReadError {
                side,
                op: "getData",
                path: rel.to_string(),
                source: e,
            })
        })
}

/// How long the rechecks wait for the stream to catch up before they give up (undecided).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the rechecks look whether the stream caught up: a few batch windows.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// Waits (up to [`CATCH_UP_TIMEOUT`]) until the stream has nothing pending, then one more
/// settle interval.
async fn wait_caught_up(caught_up: &impl Fn() -> bool, settle: Duration) -> bool {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while !caught_up() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
    tokio::time::sleep(settle).await;
    true
}

/// Re-syncs each confirmed divergent path (relative to the roots): the subtree is copied again
/// when the source has it, and deleted from the destination when it does not (and `prune` is
/// on). Returns how many paths were repaired.
///
/// Repair deletes go through the deletion guard like any other (`guard`, of a destination of
/// `destination_nodes`): held deletes show as divergence, and repair must not apply them
/// behind the hold. When the guard trips nothing is deleted and the error says so.
pub async fn repair(
    o: &SyncOptions,
    confirmed: &[String],
    guard: super::DeletionGuard,
    destination_nodes: u64,
) -> Result<usize, super::SyncError> {
    let src = verifier::connect(Side::Source, &o.source).await?;
    let dst = verifier::connect(Side::Destination, &o.destination).await?;
    // Which confirmed paths the source still has: those are copied again, the rest deleted.
    let mut present = Vec::with_capacity(confirmed.len());
    // A source node mapped onto the destination's own /zookeeper (a destination root of `/`)
    // stays divergent: nothing may be written or deleted there.
    let repairable = confirmed
        .iter()
        .filter(|rel| !path::is_reserved(&path::join(&o.destination_root, rel)));
    for rel in repairable {
        let sp = path::join(&o.source_root, rel);
        let exists = src
            .check_stat(&sp)
            .await
            .map_err(|e| super::SyncError::Write {
                op: "exists",
                path: sp.clone(),
                source: e,
            })?
            .is_some();
        present.push((rel, sp, exists));
    }
    let gone: Vec<String> = present
        .iter()
        .filter(|(_, _, exists)| !exists)
        .map(|(rel, _, _)| path::join(&o.destination_root, rel))
        .collect();
    let deletes_allowed = !o.prune || !guard.trips(gone.len() as u64, destination_nodes);
    let mut done = 0;
    for (rel, sp, exists) in present {
        let dp = path::join(&o.destination_root, rel);
        if exists {
            let mut sub = o.clone();
            sub.source_root = sp;
            sub.destination_root = dp;
            sub.guard = guard;
            // The stream this repairs holds the claim on the tree.
            super::sync_with(&sub, super::Claiming::Held).await?;
        } else if o.prune && deletes_allowed {
            super::live::delete_destination_subtree(&dst, &dp).await?;
        } else {
            continue;
        }
        done += 1;
    }
    if !deletes_allowed {
        return Err(super::SyncError::RepairHeld {
            deletes: gone.len() as u64,
            sample: gone.into_iter().take(super::guard::SAMPLE_PATHS).collect(),
        });
    }
    Ok(done)
}
