//! Parents' cversions kept at least the source's, so sequential names on the copy go on from
//! where the source's are.

use verifier::model::AclEntry;
use verifier::Side;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, MultiWriter, Stat};

use super::{child_of, dst_path, ApplyError};
use crate::engine::plan::{cversion_bump_pairs, CVERSION_BUMP_CHILD};
use crate::engine::SyncOptions;

/// Create+delete pairs per multi-write: 1,000 operations of a short path, well under the
/// default jute.maxbuffer.
const PAIRS_PER_MULTI: u64 = 500;

/// Parents looked at in flight on one session.
const PIPELINE: usize = 256;

/// Raises the destination cversion of each of `parents` (source paths) to the source's, so
/// sequential numbering goes on from the same point after a failover. Both sides are asked
/// about every parent at once (pipelined) and the bumps of all of them go in as few
/// multi-writes as their number allows.
pub(super) async fn raise_cversions(
    src: &Client,
    dst: &Client,
    o: &SyncOptions,
    parents: &[&str],
) -> Result<(), ApplyError> {
    let dst_paths: Vec<String> = parents.iter().map(|p| dst_path(o, p)).collect();
    let (s, d) = tokio::join!(
        stats(src, Side::Source, parents),
        stats(dst, Side::Destination, &dst_paths)
    );
    let mut bumps = Bumps::new(dst);
    for ((dp, s), d) in dst_paths.iter().zip(s?).zip(d?) {
        if let (Some(s), Some(d)) = (s, d) {
            bumps
                .add(dp, cversion_bump_pairs(s.cversion, i64::from(d.cversion)))
                .await
                .map_err(ApplyError::on(Side::Destination, "multi", dp))?;
        }
    }
    let first = dst_paths.first().map(String::as_str).unwrap_or_default();
    bumps
        .commit()
        .await
        .map_err(ApplyError::on(Side::Destination, "multi", first))
}

/// The stat of each of `paths` on `side` (None: no such node), pipelined.
async fn stats<P: AsRef<str>>(
    c: &Client,
    side: Side,
    paths: &[P],
) -> Result<Vec<Option<Stat>>, ApplyError> {
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(PIPELINE) {
        let stats = futures::future::join_all(chunk.iter().map(|p| c.check_stat(p.as_ref()))).await;
        for (p, stat) in chunk.iter().zip(stats) {
            out.push(stat.map_err(ApplyError::on(side, "exists", p.as_ref()))?);
        }
    }
    Ok(out)
}

/// Raises the cversion of `path` (now `current`) to at least `target` with create+delete
/// pairs of a throw-away child, so sequential names never go below the source's. Returns the
/// pairs written.
pub async fn raise_cversion_to(
    dst: &Client,
    path: &str,
    target: i32,
    current: i32,
) -> Result<u64, ZkError> {
    let pairs = cversion_bump_pairs(target, i64::from(current));
    let mut bumps = Bumps::new(dst);
    bumps.add(path, pairs).await?;
    bumps.commit().await?;
    Ok(pairs)
}

/// Create+delete pairs of throw-away children gathered into multi-writes of
/// [`PAIRS_PER_MULTI`], each committed when full.
struct Bumps<'a> {
    dst: &'a Client,
    writer: MultiWriter<'a>,
    pairs: u64,
}

impl<'a> Bumps<'a> {
    fn new(dst: &'a Client) -> Bumps<'a> {
        Bumps {
            dst,
            writer: dst.new_multi_writer(),
            pairs: 0,
        }
    }

    /// Adds `pairs` bumps of the cversion of `parent`.
    async fn add(&mut self, parent: &str, pairs: u64) -> Result<(), ZkError> {
        let bump = child_of(parent, CVERSION_BUMP_CHILD);
        let open = [AclEntry::open().to_zk()];
        let options = CreateMode::Persistent.with_acls(Acls::new(&open));
        for _ in 0..pairs {
            if self.pairs == PAIRS_PER_MULTI {
                self.commit().await?;
            }
            self.writer.add_create(&bump, &[], &options)?;
            self.writer.add_delete(&bump, None)?;
            self.pairs += 1;
        }
        Ok(())
    }

    /// Commits what is gathered (nothing to do when empty).
    async fn commit(&mut self) -> Result<(), ZkError> {
        if self.pairs > 0 {
            let mut writer = std::mem::replace(&mut self.writer, self.dst.new_multi_writer());
            self.pairs = 0;
            writer.commit().await.map_err(ZkError::from)?;
        }
        Ok(())
    }
}
