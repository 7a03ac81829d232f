//! Verification of a destination tree against its source, and the report users read.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;
use zookeeper_client::Client;

use tokio::sync::mpsc;

use crate::side::Side;

use crate::acl_cache::VerifyCache;
use crate::acl_view::AclView;
use crate::hash::{hex, Advance, Comparer, Digest, Divergence, DivergenceCounts};
use crate::reader::{
    walk_cached, walk_viewed_cached, ReadError, WalkEvent, WalkOptions, WalkTotals,
};

#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    pub walk: WalkOptions,
    /// Divergent paths listed in the report (all are counted).
    pub max_paths: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            walk: WalkOptions::default(),
            max_paths: 1000,
        }
    }
}

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("source root {path} does not exist")]
    SourceRootMissing { path: String },
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl VerifyError {
    pub fn is_transient(&self) -> bool {
        matches!(self, VerifyError::Read(e) if e.is_transient())
    }
}

/// Outcome of one verification.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub equal: bool,
    pub source_root: String,
    pub destination_root: String,
    pub source_root_hash: String,
    pub destination_root_hash: String,
    pub source_nodes: u64,
    pub destination_nodes: u64,
    pub destination_root_exists: bool,
    /// Nodes that differ in any way.
    pub divergent_nodes: u64,
    pub counts: DivergenceCounts,
    /// Divergent paths relative to the roots ("" is the root), in tree order.
    pub divergences: Vec<Divergence>,
    /// True when more divergences exist than are listed.
    pub truncated: bool,
    pub duration_seconds: f64,
    /// Highest source mzxid read: changes after it may not be reflected.
    pub source_max_mzxid: i64,
}

/// One side of a comparison: the digests of a walk as they arrive.
struct Walked {
    side: Side,
    rx: mpsc::Receiver<Result<WalkEvent, ReadError>>,
    chunk: std::vec::IntoIter<(String, Digest)>,
    head: Option<(String, Digest)>,
    totals: Option<WalkTotals>,
}

impl Walked {
    fn new(side: Side, rx: mpsc::Receiver<Result<WalkEvent, ReadError>>) -> Walked {
        Walked {
            side,
            rx,
            chunk: Vec::new().into_iter(),
            head: None,
            totals: None,
        }
    }

    /// Makes `head` the next node, or leaves it `None` when the walk is over.
    async fn fill(&mut self) -> Result<(), ReadError> {
        while self.head.is_none() && self.totals.is_none() {
            if let Some(next) = self.chunk.next() {
                self.head = Some(next);
                continue;
            }
            match self.rx.recv().await {
                Some(Ok(WalkEvent::Nodes(nodes))) => self.chunk = nodes.into_iter(),
                Some(Ok(WalkEvent::Done(t))) => self.totals = Some(t),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(ReadError {
                        side: self.side,
                        op: "walk",
                        path: String::new(),
                        source: zookeeper_client::Error::UnexpectedError(
                            "walk ended without totals".into(),
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    fn head(&self) -> Option<(&str, &Digest)> {
        self.head.as_ref().map(|(p, d)| (p.as_str(), d))
    }
}

/// Walks both trees at once and compares them as they stream past in tree order: memory is
/// bounded by the read windows and the trees' shape, not their size.
pub async fn verify(
    source: &[Client],
    source_root: &str,
    destination: &[Client],
    destination_root: &str,
    opts: VerifyOptions,
) -> Result<Report, VerifyError> {
    verify_with(
        source,
        source_root,
        destination,
        destination_root,
        opts,
        None,
    )
    .await
}

/// [`verify`] for repeated verifications of the same trees: each side takes the ACLs of
/// nodes unchanged since they were cached from `cache` instead of a getACL per node, and
/// leaves in it what it read. The first verification with an empty cache reads every ACL.
pub async fn verify_cached(
    source: &[Client],
    source_root: &str,
    destination: &[Client],
    destination_root: &str,
    opts: VerifyOptions,
    cache: &VerifyCache,
) -> Result<Report, VerifyError> {
    verify_with(
        source,
        source_root,
        destination,
        destination_root,
        opts,
        Some(cache),
    )
    .await
}

/// How each side's ACLs are seen by [`verify_viewed`]: `None` as they are.
#[derive(Clone, Default)]
pub struct Views {
    pub source: Option<Arc<dyn AclView>>,
    pub destination: Option<Arc<dyn AclView>>,
    /// ACLs already read of each side (see [`VerifyCache`]): held as the servers have them,
    /// the views applied after.
    pub cache: Option<VerifyCache>,
}

/// [`verify`], each side's ACLs seen through its view (see [`AclView`]): how a switchover
/// proves a fenced tree equal to its copy.
pub async fn verify_viewed(
    source: &[Client],
    source_root: &str,
    destination: &[Client],
    destination_root: &str,
    opts: VerifyOptions,
    views: Views,
) -> Result<Report, VerifyError> {
    let side = |pool: &[Client], side, root: &str, view, cache| {
        walk_viewed_cached(
            pool.to_vec(),
            side,
            root.to_string(),
            opts.walk,
            view,
            cache,
        )
    };
    let (source_cache, destination_cache) = match views.cache {
        Some(c) => (Some(c.source), Some(c.destination)),
        None => (None, None),
    };
    let src = side(
        source,
        Side::Source,
        source_root,
        views.source,
        source_cache,
    );
    let dst = side(
        destination,
        Side::Destination,
        destination_root,
        views.destination,
        destination_cache,
    );
    compare_walks(src, source_root, dst, destination_root, opts).await
}

async fn verify_with(
    source: &[Client],
    source_root: &str,
    destination: &[Client],
    destination_root: &str,
    opts: VerifyOptions,
    cache: Option<&VerifyCache>,
) -> Result<Report, VerifyError> {
    let src = walk_cached(
        source.to_vec(),
        Side::Source,
        source_root.to_string(),
        opts.walk,
        cache.map(|c| c.source.clone()),
    );
    let dst = walk_cached(
        destination.to_vec(),
        Side::Destination,
        destination_root.to_string(),
        opts.walk,
        cache.map(|c| c.destination.clone()),
    );
    compare_walks(src, source_root, dst, destination_root, opts).await
}

type WalkRx = mpsc::Receiver<Result<WalkEvent, ReadError>>;

/// Compares two walks under way as their digests arrive.
async fn compare_walks(
    src: WalkRx,
    source_root: &str,
    dst: WalkRx,
    destination_root: &str,
    opts: VerifyOptions,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let mut src = Walked::new(Side::Source, src);
    let mut dst = Walked::new(Side::Destination, dst);
    let mut cmp = Comparer::new(opts.max_paths);
    loop {
        let (s, d) = tokio::join!(src.fill(), dst.fill());
        s?;
        d?;
        match cmp.step(src.head(), dst.head()) {
            Advance::Done => break,
            Advance::Source => src.head = None,
            Advance::Destination => dst.head = None,
            Advance::Both => {
                src.head = None;
                dst.head = None;
            }
        }
    }
    let (s, d) = (
        src.totals.unwrap_or_default(),
        dst.totals.unwrap_or_default(),
    );
    if !s.root_exists {
        return Err(VerifyError::SourceRootMissing {
            path: source_root.to_string(),
        });
    }
    let c = cmp.finish();
    let divergences = c.diff.divergences;
    Ok(Report {
        equal: c.diff.divergent_nodes == 0 && c.source_hash == c.destination_hash,
        source_root: source_root.to_string(),
        destination_root: destination_root.to_string(),
        source_root_hash: hex(&c.source_hash),
        destination_root_hash: hex(&c.destination_hash),
        source_nodes: c.source_nodes,
        destination_nodes: c.destination_nodes,
        destination_root_exists: d.root_exists,
        divergent_nodes: c.diff.divergent_nodes,
        truncated: (divergences.len() as u64) < c.diff.counts.total(),
        counts: c.diff.counts,
        divergences,
        duration_seconds: started.elapsed().as_secs_f64(),
        source_max_mzxid: s.max_mzxid,
    })
}

impl Report {
    /// Human-readable summary, one fact per line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let verdict = if self.equal { "EQUAL" } else { "DIVERGED" };
        s.push_str(&format!(
            "verdict: {verdict}\nsource:      {} ({} nodes) root hash {}\ndestination: {} ({} nodes) root hash {}\n",
            self.source_root,
            self.source_nodes,
            self.source_root_hash,
            self.destination_root,
            self.destination_nodes,
            self.destination_root_hash
        ));
        if !self.equal {
            let c = &self.counts;
            s.push_str(&format!(
                "divergent nodes: {} (missing {}, extra {}, data differs {}, ACL differs {}, kind differs {})\n",
                self.divergent_nodes, c.missing, c.extra, c.data_differs, c.acl_differs, c.kind_differs
            ));
            for d in &self.divergences {
                let p = if d.path.is_empty() { "/" } else { &d.path };
                s.push_str(&format!("  {:<13} {p}\n", d.class.label()));
            }
            if self.truncated {
                s.push_str("  ... (list truncated; counts above are complete)\n");
            }
        }
        s.push_str(&format!(
            "duration: {:.3}s ({:.0} nodes/s per tree)\n",
            self.duration_seconds,
            self.source_nodes.max(self.destination_nodes) as f64 / self.duration_seconds.max(1e-9)
        ));
        s
    }
}
