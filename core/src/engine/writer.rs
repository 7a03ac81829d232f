//! Destination writes: ops packed into multi transactions capped by bytes, several in flight.
//!
//! ZooKeeper applies the requests of one session in the order they were sent, so pipelined
//! batches keep the order the planner emitted (parents before children, children deleted
//! before parents, final ACLs last).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use verifier::model::{AclEntry, NodeKind};
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, CreateOptions, Error as ZkError, MultiWriteError, MultiWriter,
};

use super::error::SyncError;
use super::progress::Progress;

/// One destination change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Create {
        path: String,
        data: Vec<u8>,
        acl: Vec<AclEntry>,
        kind: NodeKind,
    },
    SetData {
        path: String,
        data: Vec<u8>,
    },
    SetAcl {
        path: String,
        acl: Vec<AclEntry>,
    },
    Delete {
        path: String,
    },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. }
            | Op::SetData { path, .. }
            | Op::SetAcl { path, .. }
            | Op::Delete { path } => path,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::SetData { .. } => "setData",
            Op::SetAcl { .. } => "setACL",
            Op::Delete { .. } => "delete",
        }
    }

    /// Bytes this op takes in a request, a little over the jute encoding.
    pub fn wire_size(&self) -> usize {
        match self {
            Op::Create {
                path, data, acl, ..
            } => create_size(path, data.len(), acl),
            Op::SetData { path, data } => set_data_size(path, data.len()),
            Op::SetAcl { path, acl } => OP_HEADER + path.len() + 4 + acl_size(acl),
            Op::Delete { path } => OP_HEADER + path.len() + 4,
        }
    }

    pub fn data_len(&self) -> usize {
        match self {
            Op::Create { data, .. } | Op::SetData { data, .. } => data.len(),
            _ => 0,
        }
    }
}

/// A multi op's header (type, done, err) plus the path's length prefix.
const OP_HEADER: usize = 16;

fn acl_size(acl: &[AclEntry]) -> usize {
    4 + acl
        .iter()
        .map(|e| 12 + e.scheme.len() + e.id.len())
        .sum::<usize>()
}

/// [`Op::wire_size`] of the create of `path` with `data` bytes and `acl`.
pub(crate) fn create_size(path: &str, data: usize, acl: &[AclEntry]) -> usize {
    OP_HEADER + path.len() + 4 + data + acl_size(acl) + 12
}

/// [`Op::wire_size`] of a setData of `data` bytes at `path`.
pub(crate) fn set_data_size(path: &str, data: usize) -> usize {
    OP_HEADER + path.len() + 8 + data
}

/// An op holding its share of the memory budget until it is acknowledged.
pub struct Queued {
    pub op: Op,
    pub permit: OwnedSemaphorePermit,
}

#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Bytes in one multi transaction.
    pub max_batch_bytes: usize,
    /// Ops in one multi transaction.
    pub max_batch_ops: usize,
    /// Transactions awaiting their reply.
    pub max_in_flight: usize,
    /// The destination's jute.maxbuffer: a single op above it cannot be sent.
    pub jute_maxbuffer: usize,
}

fn to_zk_acl(acl: &[AclEntry]) -> Vec<Acl> {
    acl.iter().map(AclEntry::to_zk).collect()
}

fn ttl_create_error(op: &Op, e: &ZkError) -> Option<SyncError> {
    match (op, e) {
        (
            Op::Create {
                kind: NodeKind::Ttl { .. },
                path,
                ..
            },
            ZkError::Unimplemented | ZkError::UnexpectedErrorCode(_) | ZkError::BadArguments(_),
        ) => Some(SyncError::TtlUnsupported { path: path.clone() }),
        _ => None,
    }
}

fn write_error(op: &Op, source: ZkError) -> SyncError {
    ttl_create_error(op, &source).unwrap_or_else(|| SyncError::Write {
        op: op.name(),
        path: op.path().to_string(),
        source,
    })
}

type Pending<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SyncError>> + Send + 'a>>;

/// How a node of `kind` is created with `acl`: containers as containers, TTL nodes as
/// persistent with their TTL, the rest (ephemerals copied as persistent) as persistent.
pub(crate) fn create_options(kind: NodeKind, acl: &[Acl]) -> CreateOptions<'_> {
    let mode = match kind {
        NodeKind::Container => CreateMode::Container,
        NodeKind::Ttl { .. } | NodeKind::Persistent | NodeKind::Ephemeral => CreateMode::Persistent,
    };
    let options = mode.with_acls(Acls::new(acl));
    match kind {
        // ZooKeeper refuses a TTL of zero; the source never has one, a type rule might.
        NodeKind::Ttl { ttl_ms } => options.with_ttl(Duration::from_millis(ttl_ms.max(1) as u64)),
        _ => options,
    }
}

/// Sends one batch now (the request leaves when this returns) and gives the reply future.
fn send_batch<'a>(client: &'a Client, batch: Vec<Queued>, progress: Arc<Progress>) -> Pending<'a> {
    if let [Queued {
        op: Op::SetAcl { path, acl },
        ..
    }] = batch.as_slice()
    {
        let reply = client.set_acl(path, &to_zk_acl(acl), None);
        return Box::pin(async move {
            reply.await.map_err(|e| write_error(&batch[0].op, e))?;
            progress.ops_written.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
    }
    let mut multi = client.new_multi_writer();
    let added = batch
        .iter()
        .try_for_each(|q| add_to_multi(&mut multi, &q.op));
    let reply = multi.commit();
    Box::pin(async move {
        added?;
        match reply.await {
            Ok(_) => {
                count_written(&progress, &batch);
                Ok(())
            }
            Err(MultiWriteError::OperationFailed { index, source }) => {
                let op = &batch.get(index).unwrap_or(&batch[0]).op;
                Err(write_error(op, source))
            }
            Err(MultiWriteError::RequestFailed { source }) => {
                Err(write_error(&batch[0].op, source))
            }
        }
    })
}

/// Adds `op` to a transaction. setACL has no multi form: [`Batcher::accept`] sends it alone.
fn add_to_multi(multi: &mut MultiWriter<'_>, op: &Op) -> Result<(), SyncError> {
    let r = match op {
        Op::Create {
            path,
            data,
            acl,
            kind,
        } => multi.add_create(path, data, &create_options(*kind, &to_zk_acl(acl))),
        Op::SetData { path, data } => multi.add_set_data(path, data, None),
        Op::Delete { path } => multi.add_delete(path, None),
        Op::SetAcl { path, .. } => return Err(SyncError::AclInMulti { path: path.clone() }),
    };
    r.map_err(|e| write_error(op, e))
}

/// Counts a committed transaction in the progress figures.
fn count_written(progress: &Progress, batch: &[Queued]) {
    let bytes: usize = batch.iter().map(|q| q.op.data_len()).sum();
    progress
        .ops_written
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    progress
        .bytes_written
        .fetch_add(bytes as u64, Ordering::Relaxed);
    progress.batches.fetch_add(1, Ordering::Relaxed);
}

/// Ops waiting to be sent and transactions waiting for their reply.
struct Batcher<'a> {
    client: &'a Client,
    cfg: WriterConfig,
    progress: Arc<Progress>,
    batch: Vec<Queued>,
    batch_bytes: usize,
    in_flight: FuturesOrdered<Pending<'a>>,
}

impl<'a> Batcher<'a> {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let full = std::mem::take(&mut self.batch);
            self.batch_bytes = 0;
            self.in_flight
                .push_back(send_batch(self.client, full, self.progress.clone()));
        }
    }

    fn accept(&mut self, q: Queued) -> Result<(), SyncError> {
        let size = q.op.wire_size();
        if size > self.cfg.jute_maxbuffer {
            return Err(SyncError::NodeTooBig {
                path: q.op.path().to_string(),
                size,
                limit: self.cfg.jute_maxbuffer,
            });
        }
        // setACL has no multi form; oversized ops travel alone.
        let alone = matches!(q.op, Op::SetAcl { .. }) || size > self.cfg.max_batch_bytes;
        if alone
            || self.batch_bytes + size > self.cfg.max_batch_bytes
            || self.batch.len() >= self.cfg.max_batch_ops
        {
            self.flush();
        }
        if alone {
            self.in_flight
                .push_back(send_batch(self.client, vec![q], self.progress.clone()));
        } else {
            self.batch_bytes += size;
            self.batch.push(q);
        }
        Ok(())
    }
}

/// Drains `rx` into the destination until the sender is dropped. Returns the first failure.
pub async fn run(
    client: &Client,
    mut rx: mpsc::Receiver<Queued>,
    cfg: WriterConfig,
    progress: Arc<Progress>,
) -> Result<(), SyncError> {
    let mut b = Batcher {
        client,
        cfg,
        progress,
        batch: Vec::new(),
        batch_bytes: 0,
        in_flight: FuturesOrdered::new(),
    };
    let mut closed = false;
    loop {
        // Take what is queued without waiting.
        while !closed && b.in_flight.len() < cfg.max_in_flight {
            match rx.try_recv() {
                Ok(q) => b.accept(q)?,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        // Send a partial batch when the server would otherwise sit idle.
        if b.in_flight.is_empty() || closed {
            b.flush();
        }
        if closed && b.in_flight.is_empty() {
            return Ok(());
        }
        if closed || b.in_flight.len() >= cfg.max_in_flight {
            if let Some(r) = b.in_flight.next().await {
                r?;
            }
            continue;
        }
        tokio::select! {
            biased;
            Some(r) = b.in_flight.next(), if !b.in_flight.is_empty() => r?,
            q = rx.recv() => match q {
                Some(q) => b.accept(q)?,
                None => closed = true,
            },
        }
    }
}
