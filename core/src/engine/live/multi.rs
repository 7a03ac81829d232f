//! Multi-writes that survive one odd path: ZooKeeper fails a whole transaction when one of
//! its operations fails, and says which one.

use verifier::Side;
use zookeeper_client::{Client, MultiWriteError, MultiWriter};

use super::ApplyError;

/// Times a transaction is tried again without the operation that failed before the rest is
/// handed back: a few odd paths cost a round trip each, a chunk full of them goes one by one.
const RETRIES: usize = 8;

/// Commits `items` in one multi-write, each added by `add`. An item whose operation fails is
/// set aside and the rest tried again. Returns the items committed and the ones set aside
/// (for the caller to apply one by one). `first` names the transaction in a request error.
pub(super) async fn commit_setting_aside<T>(
    dst: &Client,
    mut items: Vec<T>,
    first: &str,
    add: impl Fn(&mut MultiWriter<'_>, &T) -> Result<(), ApplyError>,
) -> Result<(Vec<T>, Vec<T>), ApplyError> {
    let mut aside = Vec::new();
    for _ in 0..RETRIES {
        if items.is_empty() {
            break;
        }
        let mut writer = dst.new_multi_writer();
        for item in &items {
            add(&mut writer, item)?;
        }
        match writer.commit().await {
            Ok(_) => return Ok((items, aside)),
            Err(MultiWriteError::OperationFailed { index, .. }) if index < items.len() => {
                aside.push(items.remove(index));
            }
            Err(MultiWriteError::OperationFailed { source, .. })
            | Err(MultiWriteError::RequestFailed { source }) => {
                return Err(ApplyError::on(Side::Destination, "multi", first)(source))
            }
        }
    }
    aside.append(&mut items);
    Ok((items, aside))
}
