//! Writer claims: one writer per destination tree, and no replication loops, however the
//! ensembles are named.
//!
//! Every copy registers an ephemeral `writer-<id>` znode under [`CLAIMS`] on the destination
//! ensemble (the tree it writes and who it is), and, where the source lets it, a
//! `reader-<id>` on the source (the tree it reads). The znodes live as long as the copier's
//! session: a crashed holder's claim goes when its session expires, so it blocks nobody for
//! longer than the session timeout, across operator restarts, in standalone mode and on the
//! command line alike. From them:
//!
//! - **Same ensemble**: the source session looks for the writer claim just made through the
//!   destination session. Found, the two are one ensemble, whatever their server strings
//!   say, and overlapping roots are refused.
//! - **One writer**: of two writer claims on overlapping trees the older (lower czxid) wins;
//!   the newer one is withdrawn and refused, naming the holder.
//! - **Reverse stream**: a writer into this copy's source tree whose own reader claim sits on
//!   this copy's destination over an overlapping tree is a stream the other way: this one, the
//!   newer, is refused.
//!
//! The claim znodes are reserved ([`verifier::path::is_reserved`]): never copied, verified or
//! backed up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use verifier::{path, Side};
use zookeeper_client::{Acl, Acls, AuthId, Client, CreateMode, Error as ZkError, Permission};

use super::{SyncError, SyncOptions};

/// Where claims live on every ensemble the tool touches.
pub const CLAIMS: &str = "/.resiliency-operator/claims";
const CLAIMS_PARENT: &str = "/.resiliency-operator";

/// What a claim znode holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimInfo {
    /// The tree written (writer) or read (reader).
    pub root: String,
    /// Who holds it, e.g. `LiveSynchronization prod/kafka` or `cli sync (pid 42 on host)`.
    pub holder: String,
    /// The id shared by this copy's writer and reader claims.
    pub id: String,
    /// Unix milliseconds when it was made.
    pub since_ms: i64,
}

/// The claims of one running copy. Dropping it closes the sessions, and the server removes
/// the ephemeral znodes at once.
pub struct Claims {
    dst: Client,
    /// None for a restore, which has no source ensemble.
    src: Option<Client>,
    writer: String,
    reader: Option<String>,
    /// Why loop detection from this copy's side is partial (the source refused the reader
    /// claim), if it is.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("writer", &self.writer)
            .finish()
    }
}

impl Claims {
    /// Withdraws the claims now. A process that exits without this leaves them until its
    /// session expires (the server does not see a closed socket as a closed session).
    pub async fn release(self) {
        let _ = self.dst.delete(&self.writer, None).await;
        if let (Some(r), Some(src)) = (&self.reader, &self.src) {
            let _ = src.delete(r, None).await;
        }
    }

    /// The destination session that holds the writer claim ended: another writer may claim
    /// the tree now, so this one must stop writing.
    pub fn lost(&self) -> bool {
        use zookeeper_client::SessionState as S;
        matches!(self.dst.state(), S::Expired | S::Closed | S::AuthFailed)
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A claim id no other process makes at the same instant.
fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&wall_ms().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// Everyone may read a claim (other copiers judge it); only its maker may change it.
fn claim_acl(authed: bool) -> Vec<Acl> {
    if authed {
        vec![
            Acl::new(Permission::READ, AuthId::anyone()),
            Acl::new(Permission::ALL, AuthId::authed()),
        ]
    } else {
        vec![Acl::new(Permission::ALL, AuthId::anyone())]
    }
}

async fn ensure_dirs(c: &Client) -> Result<(), ZkError> {
    for p in [CLAIMS_PARENT, CLAIMS] {
        match c
            .create(
                p,
                &[],
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every claim of `kind` ("writer" or "reader") on the ensemble, with its czxid.
async fn list(c: &Client, kind: &str) -> Result<Vec<(String, ClaimInfo, i64)>, ZkError> {
    let names = match c.list_children(CLAIMS).await {
        Ok(n) => n,
        Err(ZkError::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names.into_iter().filter(|n| n.starts_with(kind)) {
        match c.get_data(&format!("{CLAIMS}/{n}")).await {
            Ok((data, stat)) => {
                if let Ok(info) = serde_json::from_slice::<ClaimInfo>(&data) {
                    out.push((n, info, stat.czxid));
                }
            }
            // Its holder just went.
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn claim_error(side: Side, op: &'static str, path: &str) -> impl FnOnce(ZkError) -> SyncError {
    let path = path.to_string();
    move |source| match source {
        ZkError::NoAuth => SyncError::ClaimRefused { side, path },
        source if side == Side::Source => SyncError::Read(verifier::ReadError {
            side: Side::Source,
            op,
            path,
            source,
        }),
        source => SyncError::Write { op, path, source },
    }
}

/// Claims the destination tree of `opts` for `holder`, after checking that source and
/// destination are not one ensemble with overlapping trees, that no other copy writes an
/// overlapping tree, and that no stream runs the other way.
pub async fn acquire(opts: &SyncOptions, holder: &str) -> Result<Claims, SyncError> {
    let (dst, src) = tokio::join!(
        verifier::connect(Side::Destination, &opts.destination),
        verifier::connect(Side::Source, &opts.source)
    );
    claim(dst?, Some(src?), opts, holder).await
}

/// Claims `root` on `destination` for a writer with no source ensemble (a restore): only the
/// one-writer rule applies.
pub async fn acquire_destination(
    destination: &verifier::ConnectOptions,
    root: &str,
    holder: &str,
) -> Result<Claims, SyncError> {
    let dst = verifier::connect(Side::Destination, destination).await?;
    let opts = SyncOptions::new(
        verifier::ConnectOptions::new(""),
        root,
        destination.clone(),
        root,
    );
    claim(dst, None, &opts, holder).await
}

async fn claim(
    dst: Client,
    src: Option<Client>,
    opts: &SyncOptions,
    holder: &str,
) -> Result<Claims, SyncError> {
    ensure_dirs(&dst)
        .await
        .map_err(claim_error(Side::Destination, "create", CLAIMS))?;
    let id = new_id();
    let writer = format!("{CLAIMS}/writer-{id}");
    let info = |root: &str| ClaimInfo {
        root: root.to_string(),
        holder: holder.to_string(),
        id: id.clone(),
        since_ms: wall_ms(),
    };
    let mine = info(&opts.destination_root);
    let body = serde_json::to_vec(&mine).unwrap_or_default();
    let acl = claim_acl(opts.destination.auth.is_some());
    let (stat, _) = dst
        .create(
            &writer,
            &body,
            &CreateMode::Ephemeral.with_acls(Acls::new(&acl)),
        )
        .await
        .map_err(claim_error(Side::Destination, "create", &writer))?;
    let mut claims = Claims {
        dst,
        src,
        writer,
        reader: None,
        warnings: Vec::new(),
    };
    let checked = async {
        check_other_writers(&claims, opts, stat.czxid).await?;
        if claims.src.is_some() {
            check_source_unfenced(&claims, opts).await?;
            check_same_ensemble(&claims, opts).await?;
            register_reader(&mut claims, opts, info(&opts.source_root)).await;
            check_reverse_stream(&claims, opts, mine.since_ms).await?;
        }
        Ok(())
    }
    .await;
    match checked {
        Ok(()) => Ok(claims),
        Err(e) => {
            claims.release().await;
            Err(e)
        }
    }
}

/// A source tree a switchover fenced is an old primary: copying from it would overwrite the
/// new primary with what it held when it was fenced (a standalone manifest run again, a
/// resumed stream nobody told). Only the record's existence is needed (its ACL is the
/// fencer's); who fenced it and when are said when they can be read.
async fn check_source_unfenced(c: &Claims, opts: &SyncOptions) -> Result<(), SyncError> {
    let Some(src) = &c.src else { return Ok(()) };
    let record = crate::switchover::fence::record_path(&opts.source_root);
    let found =
        src.check_stat(&record)
            .await
            .map_err(claim_error(Side::Source, "exists", &record))?;
    if found.is_none() {
        return Ok(());
    }
    let by = match crate::switchover::fence::header(src, &opts.source_root).await {
        Some(h) => format!(
            "by {} at {}",
            h.holder,
            jiff::Timestamp::from_millisecond(h.since_ms)
                .map_or_else(|_| "an unknown time".to_string(), |t| t.to_string())
        ),
        None => "by a switchover".to_string(),
    };
    Err(SyncError::SourceFenced {
        root: opts.source_root.clone(),
        record,
        by,
    })
}

/// The probe: the writer claim, looked for through the source session.
async fn check_same_ensemble(c: &Claims, opts: &SyncOptions) -> Result<(), SyncError> {
    let Some(src) = &c.src else { return Ok(()) };
    let seen =
        src.check_stat(&c.writer)
            .await
            .map_err(claim_error(Side::Source, "exists", &c.writer))?;
    if seen.is_some() && path::overlaps(&opts.source_root, &opts.destination_root) {
        return Err(SyncError::Overlap {
            source_root: opts.source_root.clone(),
            destination_root: opts.destination_root.clone(),
        });
    }
    Ok(())
}

async fn check_other_writers(c: &Claims, opts: &SyncOptions, czxid: i64) -> Result<(), SyncError> {
    let ours = c.writer.rsplit('/').next().unwrap_or_default();
    let writers = list(&c.dst, "writer-").await.map_err(claim_error(
        Side::Destination,
        "getChildren",
        CLAIMS,
    ))?;
    let older = writers.into_iter().find(|(name, other, other_czxid)| {
        name != ours && *other_czxid < czxid && path::overlaps(&other.root, &opts.destination_root)
    });
    match older {
        Some((_, other, _)) => Err(SyncError::Busy {
            holder: other.holder,
            root: other.root,
            destination_root: opts.destination_root.clone(),
        }),
        None => Ok(()),
    }
}

/// The reader claim on the source, for streams the other way to find. A source that refuses
/// it (read-only credentials, a locked root) leaves loop detection to the other side.
async fn register_reader(c: &mut Claims, opts: &SyncOptions, info: ClaimInfo) {
    let reader = format!("{CLAIMS}/reader-{}", info.id);
    let body = serde_json::to_vec(&info).unwrap_or_default();
    let acl = claim_acl(opts.source.auth.is_some());
    let Some(src) = c.src.clone() else { return };
    let made = match ensure_dirs(&src).await {
        Ok(()) => src
            .create(
                &reader,
                &body,
                &CreateMode::Ephemeral.with_acls(Acls::new(&acl)),
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match made {
        Ok(()) => c.reader = Some(reader),
        Err(e) => {
            let w = format!(
            "the source refused the reader claim {reader} ({e}): a stream started the other way will not be detected from its side"
        );
            tracing::warn!("{w}");
            c.warnings.push(w);
        }
    }
}

async fn check_reverse_stream(
    c: &Claims,
    opts: &SyncOptions,
    since_ms: i64,
) -> Result<(), SyncError> {
    let Some(src) = &c.src else { return Ok(()) };
    let into_my_source =
        list(src, "writer-")
            .await
            .map_err(claim_error(Side::Source, "getChildren", CLAIMS))?;
    for (_, w, _) in into_my_source {
        if w.id == c.writer.rsplit('-').next().unwrap_or_default()
            || !path::overlaps(&w.root, &opts.source_root)
        {
            continue;
        }
        // Its reader claim on our destination says where it reads from.
        let reader = format!("{CLAIMS}/reader-{}", w.id);
        let Ok((data, _)) = c.dst.get_data(&reader).await else {
            continue;
        };
        let Ok(r) = serde_json::from_slice::<ClaimInfo>(&data) else {
            continue;
        };
        // The newer of the two streams gives way.
        if path::overlaps(&r.root, &opts.destination_root) && w.since_ms <= since_ms {
            return Err(SyncError::Loop {
                holder: w.holder,
                source_root: opts.source_root.clone(),
                destination_root: opts.destination_root.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_claims_are_reserved() {
        assert_ne!(new_id(), new_id());
        assert!(path::is_reserved(CLAIMS));
        assert!(path::is_reserved(&format!("{CLAIMS}/writer-1")));
        assert!(path::is_reserved(CLAIMS_PARENT));
    }

    #[test]
    fn a_claim_reads_back() {
        let i = ClaimInfo {
            root: "/kafka".into(),
            holder: "LiveSynchronization prod/kafka".into(),
            id: "abc".into(),
            since_ms: 5,
        };
        let v = serde_json::to_vec(&i).unwrap_or_default();
        assert_eq!(serde_json::from_slice::<ClaimInfo>(&v).ok(), Some(i));
    }
}
