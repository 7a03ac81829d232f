//! What follows a backup, in this order: read the stored snapshot back, compare its node count
//! with the last good snapshot (the deletion guard), record both in its manifest, and only
//! then apply retention. A good snapshot is never evicted by a bad one:
//!
//! - Only good snapshots (read back and checked, not suspect) count toward `keepLast`, so only
//!   they can push an older snapshot out. A snapshot is deleted by `keepLast` once `keepLast`
//!   good snapshots are newer than it.
//! - A snapshot whose node count dropped by more than [`GUARD_MIN_DROPPED_NODES`] nodes and more
//!   than [`GUARD_MIN_DROPPED_FRACTION`] against the last good one (an emptied source, a wrong
//!   root) is kept but suspect: it counts for nothing and evicts nothing.
//! - Legacy snapshots (manifests from before verification was recorded) and unverified ones
//!   count for nothing either, and go once `keepLast` good snapshots are newer.
//! - `maxAge` deletes by age, but never the newest snapshot nor the newest good one (with no
//!   good one, the newest legacy one).
//! - A snapshot that fails its read-back check deletes nothing.
//!
//! Retention is a function of the stored manifests, so every later run treats a snapshot the
//! same way.

use std::time::Duration;

use jiff::Timestamp;
use object_store::ObjectStoreExt;

use super::format::{self, Manifest, ReadBack, Standing, Suspect};
use super::{check, delete, list, BackupError, Location};

/// The deletion guard: a drop of more than this many nodes...
pub const GUARD_MIN_DROPPED_NODES: u64 = crate::engine::guard::DEFAULT_MAX_DELETES;
/// ...that is also more than this fraction of the last good snapshot's nodes makes a snapshot
/// suspect. Both must hold, so small trees and ordinary churn never trip it.
pub const GUARD_MIN_DROPPED_FRACTION: f64 =
    crate::engine::guard::DEFAULT_MAX_DELETE_PERCENT / 100.0;

/// How many snapshots to keep. Either limit may be off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many good snapshots (0 counts as 1).
    pub keep_last: Option<usize>,
    /// Delete snapshots older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some() || self.max_age.is_some()
    }
}

/// The snapshot a new one is compared with: the newest of `earlier` (oldest first) that is
/// good, or legacy (the old rules accepted those). Never a suspect or unverified one, so a
/// source that stays emptied keeps being flagged.
fn baseline(earlier: &[Manifest]) -> Option<&Manifest> {
    earlier
        .iter()
        .rfind(|m| matches!(m.standing(), Standing::Good | Standing::Legacy))
}

/// Whether `new` is suspect against `earlier` (the snapshots before it, oldest first): its node
/// count is more than `min_dropped_nodes` and more than `min_dropped_fraction` below the
/// baseline's.
pub fn suspect(
    earlier: &[Manifest],
    new: &Manifest,
    min_dropped_nodes: u64,
    min_dropped_fraction: f64,
) -> Option<Suspect> {
    let base = baseline(earlier)?;
    let dropped = base.nodes.checked_sub(new.nodes)?;
    let fraction = dropped as f64 / base.nodes as f64;
    if dropped <= min_dropped_nodes || fraction <= min_dropped_fraction {
        return None;
    }
    Some(Suspect {
        against: base.name.clone(),
        against_nodes: base.nodes,
        reason: format!(
            "node count dropped from {} to {} (\u{2212}{:.1}%) against snapshot {}",
            base.nodes,
            new.nodes,
            fraction * 100.0,
            base.name
        ),
    })
}

/// Snapshots to delete from `all` (oldest first) under `r`; see the module documentation.
pub fn to_prune(all: &[Manifest], r: Retention, now: Timestamp) -> Vec<String> {
    let standing: Vec<Standing> = all.iter().map(Manifest::standing).collect();
    let newest = all.len().checked_sub(1);
    let newest_good = standing.iter().rposition(|s| *s == Standing::Good);
    // Without a good snapshot, the newest legacy one is the best restore point there is.
    let anchor = newest_good.or_else(|| standing.iter().rposition(|s| *s == Standing::Legacy));
    let keep = r.keep_last.map(|k| k.max(1));
    let mut good_newer = 0;
    let mut out = Vec::new();
    for (i, m) in all.iter().enumerate().rev() {
        let too_many = keep.is_some_and(|k| good_newer >= k);
        let too_old = r.max_age.is_some_and(|age| {
            m.created_at
                .parse::<Timestamp>()
                .is_ok_and(|c| now.duration_since(c).as_secs_f64() > age.as_secs_f64())
        });
        if Some(i) != newest && Some(i) != anchor && (too_many || too_old) {
            out.push(m.name.clone());
        }
        if standing[i] == Standing::Good {
            good_newer += 1;
        }
    }
    out.reverse();
    out
}

/// A backup after [`seal`]: its manifest as now stored, and what retention deleted.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub manifest: Manifest,
    /// Read back and checked.
    pub verified: bool,
    pub pruned: Vec<String>,
}

/// Completes a backup whose manifest `m` was just written: reads the snapshot back (`verify`),
/// applies the deletion guard, rewrites the manifest with `verifiedAt` and `suspect`, then
/// applies retention. Retention runs only after a check that passed: a snapshot that fails it,
/// or one never read back, deletes nothing.
pub async fn seal(
    location: &Location,
    mut m: Manifest,
    verify: bool,
    retention: Retention,
) -> Result<Sealed, BackupError> {
    if verify {
        // The manifest is the one this backup just wrote, not one read from the bucket.
        check(location, &m, format::Limits::for_own(&m))
            .await
            .map_err(|e| BackupError::NotVerified {
                snapshot: m.name.clone(),
                source: Box::new(e),
            })?;
        m.verified_at = ReadBack::Verified(Timestamp::now().to_string());
    }
    let mut all = list(location).await?;
    let at = match all.iter().position(|x| x.name == m.name) {
        Some(i) => i,
        // Not listed yet (a store with lagging listings): it is the newest anyway.
        None => {
            all.push(m.clone());
            all.len() - 1
        }
    };
    m.suspect = suspect(
        &all[..at],
        &m,
        GUARD_MIN_DROPPED_NODES,
        GUARD_MIN_DROPPED_FRACTION,
    );
    if m.verified_at != ReadBack::Unverified || m.suspect.is_some() {
        let body = serde_json::to_vec_pretty(&m).map_err(|e| BackupError::Io {
            what: "encoding the manifest".into(),
            source: e.into(),
        })?;
        location
            .open(false)?
            .put(&location.path(&[&m.name, format::MANIFEST]), body.into())
            .await
            .map_err(BackupError::store(location, "put"))?;
    }
    all[at] = m.clone();
    let mut pruned = Vec::new();
    if verify && retention.is_set() {
        pruned = to_prune(&all, retention, Timestamp::now());
        delete(location, &pruned).await?;
    }
    Ok(Sealed {
        manifest: m,
        verified: verify,
        pruned,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: u64 = 86400;

    fn now() -> Timestamp {
        "2026-11-21T00:00:00Z".parse().unwrap()
    }

    /// A snapshot taken `days_ago`, with `nodes`, of this standing.
    fn snap(name: &str, days_ago: u64, nodes: u64, standing: Standing) -> Manifest {
        let created = now() - std::time::Duration::from_secs(days_ago * DAY);
        let mut m = Manifest {
            name: name.into(),
            created_at: created.to_string(),
            nodes,
            ..Manifest::empty()
        };
        match standing {
            Standing::Good => m.verified_at = ReadBack::Verified(created.to_string()),
            Standing::Unverified => m.verified_at = ReadBack::Unverified,
            Standing::Legacy => m.verified_at = ReadBack::Legacy,
            Standing::Suspect => {
                m.verified_at = ReadBack::Verified(created.to_string());
                m.suspect = Some(Suspect {
                    against: "x".into(),
                    against_nodes: nodes * 100,
                    reason: "test".into(),
                });
            }
        }
        m
    }

    fn keep(k: usize) -> Retention {
        Retention {
            keep_last: Some(k),
            max_age: None,
        }
    }

    fn older_than(days: u64) -> Retention {
        Retention {
            keep_last: None,
            max_age: Some(Duration::from_secs(days * DAY)),
        }
    }

    use Standing::{Good, Legacy, Suspect as Bad, Unverified};

    #[test]
    fn keep_last_counts_good_snapshots_and_keeps_the_newest() {
        let all = [
            snap("a", 20, 500, Good),
            snap("b", 10, 500, Good),
            snap("c", 1, 500, Good),
        ];
        assert_eq!(to_prune(&all, keep(2), now()), vec!["a"]);
        assert_eq!(to_prune(&all, keep(1), now()), vec!["a", "b"]);
        // 0 is read as 1: the newest stays.
        assert_eq!(to_prune(&all, keep(0), now()), vec!["a", "b"]);
        assert!(to_prune(&all, keep(3), now()).is_empty());
        assert!(to_prune(&all, Retention::default(), now()).is_empty());
        assert!(to_prune(&[], keep(1), now()).is_empty());
    }

    #[test]
    fn an_unverified_snapshot_never_evicts_a_verified_one() {
        let all = [
            snap("a", 20, 500, Good),
            snap("b", 10, 500, Good),
            snap("c", 2, 500, Unverified),
            snap("d", 1, 500, Unverified),
        ];
        assert!(to_prune(&all, keep(2), now()).is_empty());
        // The newest good snapshot survives even keepLast 1 among unverified newer ones.
        assert_eq!(to_prune(&all, keep(1), now()), vec!["a"]);
        // Unverified ones go once enough good snapshots are newer.
        let mut more = all.to_vec();
        more.push(snap("e", 0, 500, Good));
        more.push(snap("f", 0, 500, Good));
        assert_eq!(to_prune(&more, keep(2), now()), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn a_suspect_snapshot_is_kept_but_evicts_nothing() {
        let all = [
            snap("a", 3, 500, Good),
            snap("b", 2, 500, Good),
            snap("c", 1, 5, Bad),
        ];
        assert!(to_prune(&all, keep(2), now()).is_empty());
        // A source that stays emptied: the suspects pile up, the good ones stay.
        let mut later = all.to_vec();
        later.push(snap("d", 0, 5, Bad));
        assert!(to_prune(&later, keep(2), now()).is_empty());
        assert_eq!(to_prune(&later, keep(1), now()), vec!["a"]);
        // Once the tree is back, good snapshots push the suspects out like any other.
        later.push(snap("e", 0, 500, Good));
        later.push(snap("f", 0, 500, Good));
        assert_eq!(to_prune(&later, keep(2), now()), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn legacy_snapshots_count_for_nothing_and_go_after_keep_last_good_ones() {
        let all = [
            snap("old1", 30, 500, Legacy),
            snap("old2", 20, 500, Legacy),
            snap("new1", 2, 500, Good),
        ];
        // After an upgrade: nothing goes until keepLast good snapshots exist.
        assert!(to_prune(&all, keep(2), now()).is_empty());
        let mut more = all.to_vec();
        more.push(snap("new2", 1, 500, Good));
        assert_eq!(to_prune(&more, keep(2), now()), vec!["old1", "old2"]);
        // Only two good ones: keepLast 3 deletes nothing (the old rules would have taken old1).
        assert!(to_prune(&more, keep(3), now()).is_empty());
    }

    #[test]
    fn max_age_never_deletes_the_newest_nor_the_newest_good_snapshot() {
        let all = [
            snap("a", 30, 500, Good),
            snap("b", 20, 500, Good),
            snap("c", 10, 5, Bad),
            snap("d", 9, 5, Unverified),
        ];
        assert_eq!(to_prune(&all, older_than(7), now()), vec!["a", "c"]);
        assert_eq!(to_prune(&all, older_than(25), now()), vec!["a"]);
        assert!(to_prune(&all, older_than(60), now()).is_empty());
        // No good snapshot at all: the newest legacy one stands in for it.
        let legacy = [
            snap("l1", 30, 500, Legacy),
            snap("l2", 20, 500, Legacy),
            snap("s", 10, 5, Bad),
        ];
        assert_eq!(to_prune(&legacy, older_than(7), now()), vec!["l1"]);
        // Both limits: the union of what each deletes. The suspect c is newer than the newest
        // good snapshot, so keepLast 1 keeps it.
        let both = Retention {
            keep_last: Some(1),
            max_age: Some(Duration::from_secs(25 * DAY)),
        };
        assert_eq!(to_prune(&all, both, now()), vec!["a"]);
        let both = Retention {
            keep_last: Some(1),
            max_age: Some(Duration::from_secs(7 * DAY)),
        };
        assert_eq!(to_prune(&all, both, now()), vec!["a", "c"]);
    }

    #[test]
    fn the_guard_flags_a_large_drop_against_the_last_good_snapshot() {
        let (n, f) = (GUARD_MIN_DROPPED_NODES, GUARD_MIN_DROPPED_FRACTION);
        let earlier = [snap("a", 3, 1000, Good), snap("b", 2, 1200, Good)];
        let s = suspect(&earlier, &snap("c", 1, 1, Unverified), n, f).unwrap();
        assert_eq!(s.against, "b");
        assert_eq!(s.against_nodes, 1200);
        assert_eq!(
            s.reason,
            "node count dropped from 1200 to 1 (\u{2212}99.9%) against snapshot b"
        );
        // Both thresholds must be passed: 101 nodes but under 10%, or 20% but only 100 nodes.
        let big = [snap("a", 2, 2000, Good)];
        assert!(suspect(&big, &snap("c", 1, 1899, Good), n, f).is_none());
        assert!(suspect(&big, &snap("c", 1, 1799, Good), n, f).is_some());
        let small = [snap("a", 2, 500, Good)];
        assert!(suspect(&small, &snap("c", 1, 400, Good), n, f).is_none());
        assert!(suspect(&small, &snap("c", 1, 399, Good), n, f).is_some());
        // Growth, no history, or only untrusted history: nothing to flag.
        assert!(suspect(&small, &snap("c", 1, 5000, Good), n, f).is_none());
        assert!(suspect(&[], &snap("c", 1, 0, Good), n, f).is_none());
        let untrusted = [snap("u", 2, 5000, Unverified)];
        assert!(suspect(&untrusted, &snap("c", 1, 1, Good), n, f).is_none());
        // The thresholds are parameters.
        assert!(suspect(&small, &snap("c", 1, 499, Good), 0, 0.0).is_some());
    }

    #[test]
    fn the_guard_skips_suspects_so_a_source_that_stays_emptied_stays_flagged() {
        let (n, f) = (GUARD_MIN_DROPPED_NODES, GUARD_MIN_DROPPED_FRACTION);
        let earlier = [
            snap("good", 3, 1000, Good),
            snap("s1", 2, 1, Bad),
            snap("u", 1, 1, Unverified),
        ];
        let s = suspect(&earlier, &snap("s2", 0, 1, Unverified), n, f).unwrap();
        assert_eq!(s.against, "good");
        // Legacy snapshots are a baseline too: an upgrade opens no window.
        let legacy = [snap("l", 2, 1000, Legacy)];
        let s = suspect(&legacy, &snap("c", 1, 3, Unverified), n, f).unwrap();
        assert_eq!(s.against, "l");
    }
}
