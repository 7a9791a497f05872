//! Raft traffic between nodes: the seam between a node's groups and the wire.
//!
//! ## Types
//! - [`RaftHandler`]: the receiving side, implemented by a node's group registry: it finds the
//!   group named in a message and hands the message to that group's Raft.
//! - A transport implements openraft-multi's `GroupRouter<TypeConfig, GroupId>` with
//!   `SnapshotData = SnapshotFiles`, and openraft's `RaftNetworkFactory` for
//!   `GroupNetworkFactory<Transport, GroupId>`. Transports: [`local`] (in-process, for tests
//!   and benchmarks; links can be cut) and the tonic one (`proto/` wire types).
//! - Snapshots travel as a [`SnapshotHeader`] then file pieces of at most
//!   [`PIECE_BYTES_MAX`] bytes, in order; [`SnapshotReceiver`] writes them into a staging
//!   directory the handler names, and [`send_snapshot`] reads them on the sending side. Both
//!   transports use these two, so memory stays bounded by one piece whatever the shard's size.
//!
//! ## Invariants
//! - N1. Every message names its group; a node that hosts no replica of it answers
//!   [`HandlerError::NoSuchGroup`], which the sender treats as unreachable (it retries later:
//!   the replica may not be created yet).
//! - N2. A node never sends to itself (openraft does not ask it to; transports refuse).
//! - N3. Every RPC has a deadline (openraft's `RPCOption::hard_ttl`, or the snapshot timeout);
//!   a partitioned peer costs a timeout, never a hang.
//! - N4. A received snapshot is handed to Raft only once every file has arrived whole, with
//!   exactly the length the header announced, durable (fsynced, directory synced).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use openraft::RaftNetworkFactory;
use openraft::error::{NetworkError, RPCError, StreamingError, Unreachable};
use openraft::network::NetSnapshot;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use strata_shard::fs::create_dir_all_durable;
use strata_shard::partial::PartialResult;
use strata_shard::query::PartialQuery;
use strata_shard::{Error, Fs, FsFile};

use crate::registry::{Consistency, ProposeError, ReadError};
use crate::snapshot::{PIECE_BYTES_MAX, SnapshotFiles};
use crate::types::{Command, GroupId, NodeId, NodeInfo, Response, SnapshotMeta, TypeConfig, Vote};

pub mod grpc;
pub mod local;
#[cfg(feature = "turmoil")]
pub mod turmoil_net;
mod wire;

/// Sends a client proposal to another node (the router's half of a transport): what
/// `GrpcRouter::propose` and `LocalRouter::propose` do, behind one trait so the write path
/// works over either.
pub trait Forwarder: Clone + Send + Sync + 'static {
    fn forward(
        &self,
        to: NodeId,
        info: &NodeInfo,
        group: GroupId,
        command: Command,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<Response, ProposeError>>;
}

/// A transport as the registry uses it: per group, an openraft network factory whose clients
/// carry that group's id in every message (N1) and stream [`SnapshotFiles`].
pub trait Transport: Clone + Send + Sync + 'static {
    type Factory: RaftNetworkFactory<
            TypeConfig,
            Network: NetSnapshot<TypeConfig, SnapshotData = SnapshotFiles>,
        >;
    fn group_factory(&self, group: GroupId) -> Self::Factory;
}

/// A snapshot of one group as openraft hands it to the network.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFiles>;

/// Why a node could not handle a Raft message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    #[error("node {node} hosts no replica of group {group}")]
    NoSuchGroup { node: NodeId, group: GroupId },
    #[error("group {group} on node {node}: {message}")]
    Raft {
        node: NodeId,
        group: GroupId,
        message: String,
    },
    #[error("group {group} on node {node}: snapshot refused: {message}")]
    Snapshot {
        node: NodeId,
        group: GroupId,
        message: String,
    },
}

pub type HandlerResult<T> = Result<T, HandlerError>;

impl HandlerError {
    /// How a sender sees a receiver's refusal (N1): no replica there → unreachable (retry
    /// later, it may not be created yet); anything else → a network error.
    pub(crate) fn into_rpc_error(self) -> RPCError<TypeConfig> {
        match self {
            HandlerError::NoSuchGroup { .. } => RPCError::Unreachable(Unreachable::new(&self)),
            HandlerError::Raft { .. } | HandlerError::Snapshot { .. } => {
                RPCError::Network(NetworkError::new(&self))
            }
        }
    }
}

/// An RPC error as a snapshot stream reports it.
pub(crate) fn streaming_error(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        other => StreamingError::Network(NetworkError::new(&other)),
    }
}

/// The receiving side of Raft traffic on one node (implemented by the group registry).
pub trait RaftHandler: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    fn append_entries(
        &self,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<AppendEntriesResponse<TypeConfig>>>;
    fn vote(
        &self,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>>;
    fn pre_vote(
        &self,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>>;
    fn transfer_leader(
        &self,
        group: GroupId,
        rpc: TransferLeaderRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<TransferLeaderResponse<TypeConfig>>>;
    /// A fresh, empty directory on this node's file system to receive a snapshot of `group`
    /// into. The handler owns it and removes it once the snapshot is installed or abandoned.
    fn snapshot_staging(&self, group: GroupId) -> HandlerResult<(Arc<dyn Fs>, PathBuf)>;
    /// A client proposal forwarded by another node's router to this node, which it believes
    /// leads `group`; answered as [`crate::registry::Registry::propose`] answers.
    fn propose(
        &self,
        group: GroupId,
        command: Command,
    ) -> BoxFuture<'static, Result<Response, ProposeError>>;
    /// A partial query of `group`'s engine, from another node's query fan-out, read as fresh
    /// as `consistency` asks ([`crate::registry::Registry::read`]).
    fn query(
        &self,
        group: GroupId,
        consistency: Consistency,
        query: PartialQuery,
    ) -> BoxFuture<'_, Result<PartialResult, ReadError>>;
    /// Installs a snapshot whose files have all arrived (N4).
    fn install_snapshot(
        &self,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
    ) -> BoxFuture<'static, HandlerResult<SnapshotResponse<TypeConfig>>>;
}

/// What precedes a snapshot's file pieces.
#[derive(Clone, Debug)]
pub struct SnapshotHeader {
    pub group: GroupId,
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// [`SnapshotFiles::id`].
    pub id: u64,
    /// (file name, length), in sending order.
    pub files: Vec<(String, u64)>,
}

/// One piece of a snapshot file: `data` at `offset` of file number `file` of the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPiece {
    pub file: u32,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The header of `snapshot` and an iterator over its pieces, read lazily (bounded memory).
pub fn send_snapshot(
    group: GroupId,
    vote: Vote,
    snapshot: &Snapshot,
) -> (SnapshotHeader, SnapshotPieces) {
    let files = snapshot.snapshot.files().to_vec();
    let header = SnapshotHeader {
        group,
        vote,
        meta: snapshot.meta.clone(),
        id: snapshot.snapshot.id(),
        files,
    };
    let pieces = SnapshotPieces {
        snapshot: snapshot.snapshot.clone(),
        file: 0,
        offset: 0,
    };
    (header, pieces)
}

/// The pieces of a snapshot in sending order; each `next` reads one piece from disk.
pub struct SnapshotPieces {
    snapshot: SnapshotFiles,
    file: usize,
    offset: u64,
}

impl Iterator for SnapshotPieces {
    type Item = strata_shard::Result<SnapshotPiece>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (name, len) = self.snapshot.files().get(self.file)?.clone();
            if self.offset >= len {
                // An empty file still sends one empty piece, so the receiver creates it.
                let empty_first = len == 0 && self.offset == 0;
                self.file += 1;
                self.offset = 0;
                if empty_first {
                    return Some(Ok(SnapshotPiece {
                        file: (self.file - 1) as u32,
                        offset: 0,
                        data: Vec::new(),
                    }));
                }
                continue;
            }
            let want = (len - self.offset).min(PIECE_BYTES_MAX as u64) as usize;
            let piece = self
                .snapshot
                .read_piece(&name, self.offset, want)
                .and_then(|data| {
                    if data.len() == want {
                        Ok(data)
                    } else {
                        Err(Error::corrupt(
                            format!("snapshot file {name}"),
                            format!(
                                "short read at {}: {} of {want} bytes",
                                self.offset,
                                data.len()
                            ),
                        ))
                    }
                })
                .map(|data| SnapshotPiece {
                    file: self.file as u32,
                    offset: self.offset,
                    data,
                });
            self.offset += want as u64;
            return Some(piece);
        }
    }
}

/// Writes a snapshot's pieces, in order, into the staging directory of the receiving node.
pub struct SnapshotReceiver {
    header: SnapshotHeader,
    node: NodeId,
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// The file being written: its number and handle.
    open: Option<(u32, Box<dyn FsFile>)>,
    /// Files complete so far (they arrive in header order).
    done: u32,
    /// Bytes written to the open file.
    written: u64,
}

impl SnapshotReceiver {
    /// Checks the header and prepares the staging directory.
    pub fn begin(handler: &dyn RaftHandler, header: SnapshotHeader) -> HandlerResult<Self> {
        let node = handler.node_id();
        let refuse = |message: String| HandlerError::Snapshot {
            node,
            group: header.group,
            message,
        };
        for (name, _) in &header.files {
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains(['/', '\\', '\0']);
            if !plain {
                return Err(refuse(format!(
                    "file name {name:?} is not a plain file name"
                )));
            }
        }
        let (fs, dir) = handler.snapshot_staging(header.group)?;
        create_dir_all_durable(&*fs, &dir)
            .map_err(|e| refuse(format!("create staging dir {}: {e}", dir.display())))?;
        Ok(SnapshotReceiver {
            header,
            node,
            fs,
            dir,
            open: None,
            done: 0,
            written: 0,
        })
    }

    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    fn refuse(&self, message: String) -> HandlerError {
        HandlerError::Snapshot {
            node: self.node,
            group: self.header.group,
            message,
        }
    }

    /// Writes one piece; pieces must come in order, without gaps or overlaps.
    pub fn piece(&mut self, piece: SnapshotPiece) -> HandlerResult<()> {
        if piece.data.len() > PIECE_BYTES_MAX {
            return Err(self.refuse(format!(
                "piece of {} bytes, more than {PIECE_BYTES_MAX}",
                piece.data.len()
            )));
        }
        // Moving on to a later file completes the open one.
        if self.open.as_ref().is_some_and(|(f, _)| *f != piece.file) {
            self.close_file()?;
        }
        if self.open.is_none() {
            if piece.file != self.done || piece.file as usize >= self.header.files.len() {
                return Err(self.refuse(format!(
                    "piece of file {} arrived while file {} was expected",
                    piece.file, self.done
                )));
            }
            let path = self.dir.join(&self.header.files[piece.file as usize].0);
            let file = self
                .fs
                .open_append(&path, true)
                .map_err(|e| self.refuse(format!("create {}: {e}", path.display())))?;
            self.open = Some((piece.file, file));
            self.written = 0;
        }
        let (file_no, _) = self.open.as_ref().expect("opened above");
        let (name, len) = &self.header.files[*file_no as usize];
        if piece.offset != self.written || self.written + piece.data.len() as u64 > *len {
            return Err(self.refuse(format!(
                "piece at {}..{} of {name} ({len} bytes) after {} bytes received",
                piece.offset,
                piece.offset + piece.data.len() as u64,
                self.written
            )));
        }
        let (_, file) = self.open.as_mut().expect("opened above");
        file.write_all(&piece.data)
            .map_err(|e| HandlerError::Snapshot {
                node: self.node,
                group: self.header.group,
                message: format!("write {name}: {e}"),
            })?;
        self.written += piece.data.len() as u64;
        Ok(())
    }

    fn close_file(&mut self) -> HandlerResult<()> {
        let Some((file_no, mut file)) = self.open.take() else {
            return Ok(());
        };
        let (name, len) = self.header.files[file_no as usize].clone();
        if self.written != len {
            return Err(self.refuse(format!(
                "{name} ended after {} of {len} bytes",
                self.written
            )));
        }
        file.sync()
            .map_err(|e| self.refuse(format!("sync {name}: {e}")))?;
        self.done = file_no + 1;
        Ok(())
    }

    /// Completes the snapshot: every file arrived whole and durable (N4).
    pub fn finish(mut self) -> HandlerResult<(Vote, Snapshot)> {
        self.close_file()?;
        if self.done as usize != self.header.files.len() {
            return Err(self.refuse(format!(
                "stream ended after {} of {} files",
                self.done,
                self.header.files.len()
            )));
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| self.refuse(format!("sync {}: {e}", self.dir.display())))?;
        let files = SnapshotFiles::received(
            Arc::clone(&self.fs),
            self.dir.clone(),
            self.header.id,
            self.header.files.clone(),
        );
        Ok((
            self.header.vote,
            Snapshot {
                meta: self.header.meta.clone(),
                snapshot: files,
            },
        ))
    }
}
