//! Verification of a destination tree against its source, and the report users read.

use std::time::Instant;

use serde::Serialize;
use thiserror::Error;
use zookeeper_client::Client;

use crate::hash::{diff, hex, Divergence, DivergenceCounts};
use crate::reader::{walk, ReadError, WalkOptions};

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

/// Walks both trees at once and compares them.
pub async fn verify(
    source: &[Client],
    source_root: &str,
    destination: &[Client],
    destination_root: &str,
    opts: VerifyOptions,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let (src, dst) = tokio::join!(
        walk(source, "source", source_root, opts.walk),
        walk(destination, "destination", destination_root, opts.walk)
    );
    let (src, dst) = (src?, dst?);
    if !src.root_exists {
        return Err(VerifyError::SourceRootMissing {
            path: source_root.to_string(),
        });
    }
    let d = diff(&src.tree, &dst.tree, opts.max_paths);
    let (src_hash, dst_hash) = (src.tree.root_hash(), dst.tree.root_hash());
    Ok(Report {
        equal: d.divergent_nodes == 0 && src_hash == dst_hash,
        source_root: source_root.to_string(),
        destination_root: destination_root.to_string(),
        source_root_hash: hex(&src_hash),
        destination_root_hash: hex(&dst_hash),
        source_nodes: src.tree.len() as u64,
        destination_nodes: dst.tree.len() as u64,
        destination_root_exists: dst.root_exists,
        divergent_nodes: d.divergent_nodes,
        truncated: (d.divergences.len() as u64) < d.counts.total(),
        counts: d.counts,
        divergences: d.divergences,
        duration_seconds: started.elapsed().as_secs_f64(),
        source_max_mzxid: src.max_mzxid,
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
