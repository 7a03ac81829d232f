//! Parents' cversions kept at least the source's, so sequential names on the copy go on from
//! where the source's are.

use verifier::model::AclEntry;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

use super::{child_of, dst_path, ApplyError};
use crate::engine::plan::{cversion_bump_pairs, CVERSION_BUMP_CHILD};
use crate::engine::SyncOptions;

/// Raises the destination parent's cversion to the source's, so sequential numbering goes on
/// from the same point after a failover.
pub(super) async fn raise_cversion(
    src: &Client,
    dst: &Client,
    o: &SyncOptions,
    parent: &str,
) -> Result<(), ApplyError> {
    let Some(s) = src
        .check_stat(parent)
        .await
        .map_err(ApplyError::on("source", "exists", parent))?
    else {
        return Ok(());
    };
    let dp = dst_path(o, parent);
    let Some(d) =
        dst.check_stat(&dp)
            .await
            .map_err(ApplyError::on("destination", "exists", &dp))?
    else {
        return Ok(());
    };
    raise_cversion_to(dst, &dp, s.cversion, d.cversion)
        .await
        .map_err(|e| ApplyError::on("destination", "multi", &dp)(e))?;
    Ok(())
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
    let bump = child_of(path, CVERSION_BUMP_CHILD);
    let open = [AclEntry::open().to_zk()];
    for _ in 0..pairs {
        let mut multi = dst.new_multi_writer();
        multi
            .add_create(
                &bump,
                &[],
                &CreateMode::Persistent.with_acls(Acls::new(&open)),
            )
            .and_then(|_| multi.add_delete(&bump, None))?;
        multi.commit().await.map_err(ZkError::from)?;
    }
    Ok(pairs)
}
