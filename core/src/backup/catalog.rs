//! The snapshots at a location: listing, picking one, deleting, and probing the location.

use futures::StreamExt;
use jiff::Timestamp;
use object_store::ObjectStoreExt;

use super::{format, BackupError, Location, Manifest};

/// Every complete snapshot (one with a manifest) at `location`, oldest first.
pub async fn list(location: &Location) -> Result<Vec<Manifest>, BackupError> {
    let store = location.open(false)?;
    let prefix = (!location.prefix.is_empty()).then(|| location.path(&[]));
    let mut names = Vec::new();
    let mut objects = store.list(prefix.as_ref());
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(BackupError::store(location, "list"))?;
        if meta.location.filename() == Some(format::MANIFEST) {
            names.push(meta.location);
        }
    }
    let mut out = Vec::new();
    for p in names {
        let bytes = store
            .get(&p)
            .await
            .map_err(BackupError::store(location, "get"))?
            .bytes()
            .await
            .map_err(BackupError::store(location, "get"))?;
        // Anything else that happens to be called manifest.json is not ours.
        if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
            if m.format == format::FORMAT {
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    Ok(out)
}

/// Which snapshot to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Latest,
    /// The last one taken at or before this time.
    Before(Timestamp),
}

impl Selector {
    /// What no snapshot matched, for [`BackupError::NoSnapshot`].
    pub(super) fn missing(&self) -> String {
        match self {
            Selector::Name(n) => format!("named {n}"),
            Selector::Latest => "at all".into(),
            Selector::Before(t) => format!("taken at or before {t}"),
        }
    }
}

/// Picks a snapshot from `all` (oldest first).
pub fn select<'a>(all: &'a [Manifest], s: &Selector) -> Option<&'a Manifest> {
    match s {
        Selector::Name(n) => all.iter().find(|m| &m.name == n),
        Selector::Latest => all.last(),
        Selector::Before(t) => all
            .iter()
            .rfind(|m| m.created_at.parse::<Timestamp>().is_ok_and(|c| c <= *t)),
    }
}

/// Deletes snapshots: the manifest first, so a half-deleted one is never listed.
pub async fn delete(location: &Location, names: &[String]) -> Result<(), BackupError> {
    let store = location.open(false)?;
    for name in names {
        for object in [format::MANIFEST, format::NODES] {
            match store.delete(&location.path(&[name, object])).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BackupError::store(location, "delete")(e)),
            }
        }
    }
    Ok(())
}

/// Whether the location answers with these credentials: lists at most one object under the
/// prefix. What a Bucket's Ready condition reports.
pub async fn probe(location: &Location) -> Result<(), BackupError> {
    let store = location.open(false)?;
    let prefix = (!location.prefix.is_empty()).then(|| location.path(&[]));
    let mut objects = store.list(prefix.as_ref());
    match objects.next().await {
        None | Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(BackupError::store(location, "list")(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_selected_by_name_latest_or_time() {
        let m = |name: &str, at: &str| Manifest {
            name: name.into(),
            created_at: at.into(),
            ..Manifest::empty()
        };
        let all = [
            m("a", "2026-11-01T00:00:00Z"),
            m("b", "2026-11-10T00:00:00Z"),
            m("c", "2026-11-20T00:00:00Z"),
        ];
        let before: Timestamp = "2026-11-15T00:00:00Z".parse().unwrap();
        assert_eq!(select(&all, &Selector::Before(before)).unwrap().name, "b");
        assert_eq!(select(&all, &Selector::Latest).unwrap().name, "c");
        assert_eq!(select(&all, &Selector::Name("a".into())).unwrap().name, "a");
    }
}
