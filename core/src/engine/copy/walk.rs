//! The reads of a pass: both trees walked side by side, a batch of visits per multi-read,
//! destination subtrees listed before they are deleted.

use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use verifier::reader::{fetch_many_cached, BATCH};
use verifier::{model::NodeKind, Side};
use verifier::{path, ReadError};
use zookeeper_client::{Client, Error as ZkError};

use super::{Done, Planner, Task};
use crate::engine::{SyncError, SyncOptions};

type TaskFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Done>, ReadError>> + Send + 'a>>;

/// Reads a batch of nodes from both sides (the destination only where it may exist).
async fn visit_batch(
    src: &[Client],
    dst: &[Client],
    opts: &SyncOptions,
    visits: Vec<(String, bool)>,
) -> Result<Vec<Done>, ReadError> {
    let src_paths: Vec<String> = visits
        .iter()
        .map(|(r, _)| path::join(&opts.source_root, r))
        .collect();
    let dst_paths: Vec<String> = visits
        .iter()
        .filter(|(_, absent)| !absent)
        .map(|(r, _)| path::join(&opts.destination_root, r))
        .collect();
    let cache = opts.acl_cache();
    let (s, d) = tokio::join!(
        fetch_many_cached(
            src,
            Side::Source,
            &src_paths,
            opts.copy_acl,
            cache.map(|c| &c.source)
        ),
        async {
            if dst_paths.is_empty() {
                Ok(Vec::new())
            } else {
                let cache = cache.map(|c| &c.destination);
                fetch_many_cached(dst, Side::Destination, &dst_paths, true, cache).await
            }
        }
    );
    let mut d = d?.into_iter();
    Ok(visits
        .into_iter()
        .zip(s?)
        .map(|((rel, absent), src)| Done::Visited {
            rel,
            src,
            dst: if absent { None } else { d.next().flatten() },
        })
        .collect())
}

/// Walks both trees side by side: `read_window` nodes read at once, each planned as its
/// reads come back; what it plans may push more work on the stack.
pub(super) async fn walk(
    planner: &mut Planner<'_>,
    src: &[Client],
    dst: &[Client],
    root_dst_absent: bool,
) -> Result<(), SyncError> {
    let opts = planner.opts;
    let mut stack = vec![Task::Visit {
        rel: String::new(),
        dst_absent: root_dst_absent,
    }];
    let mut in_flight: FuturesUnordered<TaskFuture<'_>> = FuturesUnordered::new();
    let who_src = opts.source_identity();
    let who_dst = opts.destination_identity();
    let batches = opts.read_window.div_ceil(BATCH).max(1);
    loop {
        while in_flight.len() < batches {
            let Some(task) = stack.pop() else { break };
            in_flight.push(start(task, &mut stack, src, dst, opts));
        }
        let Some(done) = in_flight.next().await else {
            break;
        };
        let done = done.map_err(|e| {
            let who = if e.side == Side::Source {
                &who_src
            } else {
                &who_dst
            };
            SyncError::from_read(e, who)
        })?;
        for d in done {
            plan_done(planner, d, &mut stack).await?;
        }
    }
    Ok(())
}

/// The reads of `task`: a visit takes the visits on top of the stack with it, one batch.
fn start<'a>(
    task: Task,
    stack: &mut Vec<Task>,
    src: &'a [Client],
    dst: &'a [Client],
    opts: &'a SyncOptions,
) -> TaskFuture<'a> {
    match task {
        Task::Visit { rel, dst_absent } => {
            let mut visits = vec![(rel, dst_absent)];
            while visits.len() < BATCH && matches!(stack.last(), Some(Task::Visit { .. })) {
                if let Some(Task::Visit { rel, dst_absent }) = stack.pop() {
                    visits.push((rel, dst_absent));
                }
            }
            Box::pin(visit_batch(src, dst, opts, visits))
        }
        Task::Remove {
            rel,
            replace_with,
            visited,
        } => {
            let dst_abs = path::join(&opts.destination_root, &rel);
            Box::pin(async move {
                let nodes = collect_subtree(&dst[0], &dst_abs).await?;
                Ok(vec![Done::Collected {
                    rel,
                    nodes,
                    replace_with,
                    visited,
                }])
            })
        }
    }
}

/// Plans what one read found.
async fn plan_done(
    planner: &mut Planner<'_>,
    done: Done,
    stack: &mut Vec<Task>,
) -> Result<(), SyncError> {
    match done {
        Done::Visited { rel, src, dst } => planner.visit(rel, src, dst, stack).await,
        Done::Collected {
            rel,
            nodes,
            replace_with,
            visited,
        } => {
            planner
                .remove(rel, nodes, replace_with, visited, stack)
                .await
        }
    }
}

/// Lists a destination subtree, parents before children, with each node's kind.
async fn collect_subtree(client: &Client, top: &str) -> Result<Vec<(String, NodeKind)>, ReadError> {
    let mut out = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let fetch = |p: String| async move {
        let r = client.get_children(&p).await;
        (p, r)
    };
    in_flight.push(fetch(top.to_string()));
    while let Some((p, r)) = in_flight.next().await {
        match r {
            Ok((children, stat)) => {
                for c in children {
                    in_flight.push(fetch(format!("{p}/{c}")));
                }
                out.push((p, NodeKind::from_ephemeral_owner(stat.ephemeral_owner)));
            }
            Err(ZkError::NoNode) => {}
            Err(source) => {
                return Err(ReadError {
                    side: Side::Destination,
                    op: "getChildren",
                    path: p,
                    source,
                })
            }
        }
    }
    Ok(out)
}
