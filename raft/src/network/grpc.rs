//! The gRPC transport (tonic): Raft traffic between nodes over `strata.raft.v1.RaftTransport`
//! (`strata-proto`). Another implementation of the same `GroupRouter` as [`super::local`].
//!
//! ## Sending side
//! - [`GrpcNetwork`]: one node's client side. It holds ONE tonic `Channel` (one HTTP/2
//!   connection) per peer node, shared by every group; the channel is created lazily from the
//!   address openraft hands to `new_client` and re-created when that address changes. Bytes
//!   reach the peer through a [`Dialer`]: real TCP by default ([`TcpDialer`]); tests plug in a
//!   simulated network (turmoil). HTTP/2 keepalive ([`GrpcConfig::keepalive_interval`]) closes
//!   a connection whose PINGs go unanswered, so one that silently stopped delivering is
//!   replaced by the next RPC (the simulator's `DropPartition` seeds are its regression).
//! - [`GrpcRouter`] (`GrpcNetwork::router(from)`): openraft-multi's `GroupRouter`, and through
//!   `GroupNetworkFactory<GrpcRouter, GroupId>` openraft's `RaftNetworkFactory`.
//!
//! ## Receiving side
//! - [`service`]: the tonic service over a node's [`RaftHandler`]; [`serve_routes`] runs it
//!   (with whatever services the node adds beside it) on any stream of accepted connections
//!   (`serve_with_incoming`), [`serve_tcp_routes`] and [`serve_tcp`] on a tokio listener.
//!   A snapshot stream goes through a [`SnapshotReceiver`] into the handler's staging
//!   directory, then to `RaftHandler::install_snapshot` (N4).
//!
//! ## Limits
//! - [`MESSAGE_BYTES_MAX`] (64 MiB) is set on both sides, encoding and decoding, instead of
//!   tonic's 4 MiB default: openraft sends up to `max_payload_entries` entries in one
//!   AppendEntries and knows nothing about bytes, so a batch of big writes would exceed 4 MiB
//!   and fail forever. On top of that the client keeps every AppendEntries under
//!   [`GrpcConfig::append_bytes_max`] (16 MiB by default): it sends the prefix of openraft's
//!   batch that fits and reports `PartialSuccess` up to its last entry, which openraft documents
//!   for exactly this; openraft sends the rest next. Only a single entry larger than
//!   `MESSAGE_BYTES_MAX` cannot be sent (a loud `Network` error); proposals must stay below it.
//!   Snapshot pieces are at most [`PIECE_BYTES_MAX`](crate::snapshot::PIECE_BYTES_MAX) (1 MiB), far below the limit.
//!
//! ## Deadlines and errors (N2, N3)
//! - Every unary RPC runs under `RPCOption::hard_ttl` (client-side timeout, also sent as
//!   `grpc-timeout` so the server gives up too); a snapshot transfer under `hard_ttl` as well,
//!   and it stops as soon as openraft's `cancel` future fires. Connecting is bounded by
//!   [`GrpcConfig::connect_timeout`].
//! - Mapping, as in `local`: the peer hosts no replica of the group → `Unreachable` (N1);
//!   connect / transport failures → `Unreachable`; a deadline → `Timeout`; a refusal by the
//!   peer's Raft or snapshot receiver, or a payload that does not decode → `Network`.
//! - A node never sends to itself (N2): the router refuses, and no channel is made for it.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use openraft::RaftNetworkFactory;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};
use strata_proto::raft as pb;
use strata_proto::raft::raft_error::Kind;
use strata_proto::raft::raft_transport_client::RaftTransportClient;
use strata_proto::raft::raft_transport_server::{RaftTransport, RaftTransportServer};
use strata_shard::partial::PartialResult;
use strata_shard::query::PartialQuery;
use strata_shard::query_wire;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request, Response, Status, Streaming};

use super::{
    Forwarder, HandlerError, HandlerResult, RaftHandler, Snapshot, SnapshotHeader, SnapshotPiece,
    SnapshotReceiver, Transport, send_snapshot, streaming_error, wire,
};
use crate::codec::{self, put_entry, put_log_id, put_option};
use crate::registry::{Consistency, ProposeError, ReadError};
use crate::snapshot::SnapshotFiles;
use crate::types::{Command, GroupId, NodeId, NodeInfo, TypeConfig, Vote};

/// Largest gRPC message encoded or decoded, on both sides (see the module doc).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Settings of a node's client side.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Bound on opening a connection to a peer (also bounded by each RPC's deadline).
    pub connect_timeout: Duration,
    /// Target size of one AppendEntries payload; longer batches are sent in prefixes.
    pub append_bytes_max: usize,
    /// HTTP/2 PING interval on every peer connection, idle or not, and how long an
    /// unanswered PING may wait before the connection is closed (the next RPC opens a new
    /// one). Without it, a connection that silently stops delivering (a middlebox that lost
    /// its state, a peer gone without a reset) is noticed only when the OS's TCP gives up,
    /// minutes later, and every RPC on it times out until then.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            connect_timeout: Duration::from_secs(1),
            append_bytes_max: 16 << 20,
            keepalive_interval: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(3),
        }
    }
}

/// A byte stream to a peer.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens byte streams to peer addresses (`NodeInfo::addr`): the seam between the transport
/// and the operating system's network (or a simulated one).
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>>;
}

/// Real TCP, with Nagle off (Raft messages are small and latency-bound).
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

type Client = RaftTransportClient<Channel>;

struct Peer {
    addr: String,
    /// The channel, or why none could be made from `addr`.
    client: Result<Client, String>,
}

struct NetInner {
    config: GrpcConfig,
    dialer: Arc<dyn Dialer>,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
}

/// One node's client side of the gRPC transport: a channel per peer, shared by all groups.
#[derive(Clone)]
pub struct GrpcNetwork {
    inner: Arc<NetInner>,
}

impl GrpcNetwork {
    /// Over real TCP.
    pub fn new(config: GrpcConfig) -> Self {
        Self::with_dialer(config, Arc::new(TcpDialer))
    }

    pub fn with_dialer(config: GrpcConfig, dialer: Arc<dyn Dialer>) -> Self {
        GrpcNetwork {
            inner: Arc::new(NetInner {
                config,
                dialer,
                peers: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The sending side of node `from`.
    pub fn router(&self, from: NodeId) -> GrpcRouter {
        GrpcRouter {
            net: self.clone(),
            from,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `node` listens on `addr`; a changed address replaces the peer's channel.
    /// Must run inside a tokio runtime (the channel spawns its worker task).
    pub fn set_peer_addr(&self, node: NodeId, addr: &str) {
        let mut peers = self.lock();
        if peers.get(&node).is_some_and(|p| p.addr == addr) {
            return;
        }
        let client = self.client_for(addr);
        peers.insert(
            node,
            Peer {
                addr: addr.to_string(),
                client,
            },
        );
    }

    /// A lazily connecting channel to `addr`: nothing happens on the network until the first
    /// RPC, and a broken connection is re-opened by the next one.
    fn client_for(&self, addr: &str) -> Result<Client, String> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(self.inner.config.connect_timeout)
            .http2_keep_alive_interval(self.inner.config.keepalive_interval)
            .keep_alive_timeout(self.inner.config.keepalive_timeout)
            .keep_alive_while_idle(true);
        let dialer = Arc::clone(&self.inner.dialer);
        let addr = addr.to_string();
        // The dialer gets the address as openraft gave it (the URI only names the authority
        // for HTTP/2), so simulated hosts need no DNS.
        let connector = tower::service_fn(move |_: Uri| {
            let dial = dialer.dial(&addr);
            async move { dial.await.map(TokioIo::new) }
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    fn client(&self, node: NodeId) -> Result<Client, Unreachable<TypeConfig>> {
        match self.lock().get(&node) {
            None => Err(Unreachable::from_string(format!(
                "no address known for node {node}"
            ))),
            Some(Peer {
                client: Ok(client), ..
            }) => Ok(client.clone()),
            Some(Peer {
                client: Err(why), ..
            }) => Err(Unreachable::from_string(why)),
        }
    }
}

/// Node `from`'s view of the [`GrpcNetwork`]: openraft-multi's `GroupRouter`.
#[derive(Clone)]
pub struct GrpcRouter {
    net: GrpcNetwork,
    from: NodeId,
}

#[derive(Clone, Copy)]
enum Unary {
    AppendEntries,
    Vote,
    PreVote,
    TransferLeader,
}

impl Unary {
    fn action(self) -> RPCTypes {
        match self {
            Unary::AppendEntries => RPCTypes::AppendEntries,
            Unary::Vote | Unary::PreVote => RPCTypes::Vote,
            Unary::TransferLeader => RPCTypes::TransferLeader,
        }
    }
}

impl GrpcRouter {
    pub fn node_id(&self) -> NodeId {
        self.from
    }

    /// The channel to `to`, refusing to send to this node itself (N2).
    fn target(&self, to: NodeId) -> Result<Client, Unreachable<TypeConfig>> {
        if to == self.from {
            return Err(Unreachable::from_string(format!(
                "node {to} does not send Raft messages to itself"
            )));
        }
        self.net.client(to)
    }

    fn timeout(&self, to: NodeId, action: RPCTypes, ttl: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.from,
            target: to,
            timeout: ttl,
        }
    }

    /// One unary RPC under the deadline `ttl` (N3); the encoded response on success.
    async fn unary(
        &self,
        to: NodeId,
        method: Unary,
        ttl: Duration,
        group: GroupId,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RPCError<TypeConfig>> {
        let mut client = self.target(to)?;
        let mut request = Request::new(pb::RaftRequest { group, payload });
        request.set_timeout(ttl);
        let call = async move {
            match method {
                Unary::AppendEntries => client.append_entries(request).await,
                Unary::Vote => client.vote(request).await,
                Unary::PreVote => client.pre_vote(request).await,
                Unary::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let timeout = self.timeout(to, method.action(), ttl);
        let reply = tokio::time::timeout(ttl, call)
            .await
            .map_err(|_| RPCError::Timeout(timeout.clone()))?
            .map_err(|status| status_error(status, timeout))?;
        reply_payload(reply.into_inner())
    }
}

impl GrpcRouter {
    /// Forwards a client proposal to node `to` at `info.addr` (the leader as far as the caller
    /// knows), under the deadline `ttl`. A connection failure is `Unreachable` (nothing was
    /// appended); a deadline is `Timeout` (the entry may still commit).
    pub async fn propose(
        &self,
        to: NodeId,
        info: &NodeInfo,
        group: GroupId,
        command: &Command,
        ttl: Duration,
    ) -> Result<crate::types::Response, ProposeError> {
        let unreachable = |reason: String| ProposeError::Unreachable {
            node: to,
            group,
            reason,
        };
        if to == self.from {
            return Err(unreachable(
                "a node does not forward proposals to itself".into(),
            ));
        }
        self.net.set_peer_addr(to, &info.addr);
        let mut client = self
            .net
            .client(to)
            .map_err(|e| unreachable(e.to_string()))?;
        let payload = codec::encode(command, codec::put_command);
        let mut request = Request::new(pb::RaftRequest { group, payload });
        request.set_timeout(ttl);
        let reply = tokio::time::timeout(ttl, client.propose(request))
            .await
            .map_err(|_| ProposeError::Timeout {
                group,
                timeout: ttl,
            })?;
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(match status.code() {
                    Code::Unavailable => unreachable(status.message().to_string()),
                    Code::DeadlineExceeded | Code::Cancelled => ProposeError::Timeout {
                        group,
                        timeout: ttl,
                    },
                    _ => ProposeError::Stopped {
                        node: to,
                        group,
                        reason: status.to_string(),
                    },
                });
            }
        };
        match reply.reply {
            Some(pb::propose_reply::Reply::Ok(bytes)) => {
                codec::decode(&bytes, "proposal response", wire::get_response).map_err(|e| {
                    ProposeError::Stopped {
                        node: to,
                        group,
                        reason: format!("undecodable response: {e}"),
                    }
                })
            }
            Some(pb::propose_reply::Reply::Error(e)) => Err(propose_error_from_pb(e)),
            None => Err(ProposeError::Stopped {
                node: to,
                group,
                reason: "reply carries neither a response nor an error".into(),
            }),
        }
    }
}

impl GrpcRouter {
    /// Asks node `to` (at `info.addr`) for a partial query of `group`, as fresh as
    /// `consistency` asks, under the deadline `ttl`. A node that is not the leader (when one is
    /// needed) or hosts no replica answers so, and the caller asks another.
    pub async fn query(
        &self,
        to: NodeId,
        info: &NodeInfo,
        group: GroupId,
        consistency: Consistency,
        query: &PartialQuery,
        ttl: Duration,
    ) -> Result<PartialResult, ReadError> {
        let unreachable = |reason: String| ReadError::Unreachable {
            node: to,
            group,
            reason,
        };
        self.net.set_peer_addr(to, &info.addr);
        let mut client = self.target(to).map_err(|e| unreachable(e.to_string()))?;
        let mut payload = vec![match consistency {
            Consistency::Strong => 0,
            Consistency::Leader => 1,
            Consistency::Any => 2,
        }];
        payload.extend(query_wire::encode_query(query));
        let mut request = Request::new(pb::RaftRequest { group, payload });
        request.set_timeout(ttl);
        let reply = tokio::time::timeout(ttl, client.query(request))
            .await
            .map_err(|_| ReadError::Timeout {
                group,
                timeout: ttl,
            })?;
        match reply {
            Ok(r) => query_wire::decode_result(&r.into_inner().result)
                .map_err(|e| unreachable(format!("undecodable answer: {e}"))),
            Err(status) => Err(match status.code() {
                Code::InvalidArgument => ReadError::Invalid {
                    group,
                    reason: status.message().to_string(),
                },
                Code::FailedPrecondition => ReadError::NotLeader {
                    node: to,
                    group,
                    leader_hint: None,
                },
                Code::NotFound => ReadError::NoSuchGroup { node: to, group },
                _ => unreachable(status.message().to_string()),
            }),
        }
    }
}

/// The consistency byte and the query of a `Query` request's payload.
fn decode_query_request(
    payload: &[u8],
) -> Result<(Consistency, PartialQuery), strata_shard::Error> {
    let corrupt = |reason: &str| strata_shard::Error::Corrupt {
        what: "query request".into(),
        reason: reason.into(),
    };
    let (&tag, rest) = payload
        .split_first()
        .ok_or_else(|| corrupt("empty payload"))?;
    let consistency = match tag {
        0 => Consistency::Strong,
        1 => Consistency::Leader,
        2 => Consistency::Any,
        _ => return Err(corrupt("unknown consistency")),
    };
    Ok((consistency, query_wire::decode_query(rest)?))
}

impl Forwarder for GrpcRouter {
    fn forward(
        &self,
        to: NodeId,
        info: &NodeInfo,
        group: GroupId,
        command: Command,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<crate::types::Response, ProposeError>> {
        let (this, info) = (self.clone(), info.clone());
        Box::pin(async move { this.propose(to, &info, group, &command, ttl).await })
    }
}

fn hint_to_pb(e: &mut pb::ProposeError, hint: &Option<(NodeId, NodeInfo)>) {
    if let Some((id, info)) = hint {
        e.leader_id = Some(*id);
        e.leader_addr.clone_from(&info.addr);
        e.leader_zone.clone_from(&info.zone);
    }
}

fn propose_error_to_pb(err: &ProposeError) -> pb::ProposeError {
    use pb::propose_error::Kind as K;
    let mut e = pb::ProposeError {
        message: err.to_string(),
        ..Default::default()
    };
    let (kind, node, group) = match err {
        ProposeError::NoSuchGroup { node, group } => (K::NoSuchGroup, *node, *group),
        ProposeError::NotLeader {
            node,
            group,
            leader_hint,
        } => {
            hint_to_pb(&mut e, leader_hint);
            (K::NotLeader, *node, *group)
        }
        ProposeError::Busy { group, in_flight } => {
            e.limit = *in_flight as u64;
            (K::Busy, 0, *group)
        }
        ProposeError::OutcomeUnknown { group, leader_hint } => {
            hint_to_pb(&mut e, leader_hint);
            (K::OutcomeUnknown, 0, *group)
        }
        ProposeError::Timeout { group, timeout } => {
            e.limit = timeout.as_millis() as u64;
            (K::Timeout, 0, *group)
        }
        ProposeError::Stopped { node, group, .. }
        | ProposeError::Unreachable { node, group, .. } => (K::Stopped, *node, *group),
    };
    e.kind = kind as i32;
    e.node = node;
    e.group = group;
    e
}

fn propose_error_from_pb(e: pb::ProposeError) -> ProposeError {
    use pb::propose_error::Kind as K;
    let hint = e.leader_id.map(|id| {
        let info = NodeInfo {
            addr: e.leader_addr.clone(),
            zone: e.leader_zone.clone(),
        };
        (id, info)
    });
    let (node, group) = (e.node, e.group);
    match K::try_from(e.kind) {
        Ok(K::NoSuchGroup) => ProposeError::NoSuchGroup { node, group },
        Ok(K::NotLeader) => ProposeError::NotLeader {
            node,
            group,
            leader_hint: hint,
        },
        Ok(K::Busy) => ProposeError::Busy {
            group,
            in_flight: e.limit as usize,
        },
        Ok(K::OutcomeUnknown) => ProposeError::OutcomeUnknown {
            group,
            leader_hint: hint,
        },
        Ok(K::Timeout) => ProposeError::Timeout {
            group,
            timeout: Duration::from_millis(e.limit),
        },
        _ => ProposeError::Stopped {
            node,
            group,
            reason: e.message,
        },
    }
}

/// A gRPC failure: no connection → unreachable, a deadline → timeout, the rest → network.
fn status_error(status: Status, timeout: Timeout<TypeConfig>) -> RPCError<TypeConfig> {
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(timeout),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

/// The encoded response of a reply, or the peer's refusal as the sender sees it.
fn reply_payload(reply: pb::RaftReply) -> Result<Vec<u8>, RPCError<TypeConfig>> {
    match reply.reply {
        Some(pb::raft_reply::Reply::Ok(bytes)) => Ok(bytes),
        Some(pb::raft_reply::Reply::Error(e)) => {
            let (node, group, message) = (e.node, e.group, e.message);
            Err(match Kind::try_from(e.kind) {
                Ok(Kind::NoSuchGroup) => HandlerError::NoSuchGroup { node, group },
                Ok(Kind::Snapshot) => HandlerError::Snapshot {
                    node,
                    group,
                    message,
                },
                _ => HandlerError::Raft {
                    node,
                    group,
                    message,
                },
            }
            .into_rpc_error())
        }
        None => Err(RPCError::Network(NetworkError::from_string(
            "reply carries neither a response nor an error",
        ))),
    }
}

fn decode_reply<T>(
    bytes: &[u8],
    what: &str,
    get: impl Fn(&mut strata_shard::codec::Reader<'_>) -> strata_shard::Result<T>,
) -> Result<T, RPCError<TypeConfig>> {
    codec::decode(bytes, what, get).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

/// An encoded AppendEntries of at most `bytes_max` bytes where possible: the longest prefix of
/// the entries that fits (at least one). Returns the payload and, when entries were left out,
/// the log id of the last one sent.
fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    bytes_max: usize,
) -> Result<(Vec<u8>, Option<crate::types::LogId>), String> {
    let mut head = Vec::new();
    wire::put_append_head(&mut head, rpc, 0);
    let mut body = Vec::new();
    let mut sent = 0;
    for e in &rpc.entries {
        let before = body.len();
        put_entry(&mut body, e);
        if sent > 0 && head.len() + body.len() + 25 > bytes_max {
            body.truncate(before);
            break;
        }
        sent += 1;
    }
    let last_sent = (sent < rpc.entries.len()).then(|| rpc.entries[sent - 1].log_id);
    // A follower commits no further than what it holds; cap the commit at the prefix anyway so
    // the message states nothing the follower cannot check.
    let commit = match last_sent {
        Some(last) => rpc.leader_commit.min(Some(last)),
        None => rpc.leader_commit,
    };
    let mut b = Vec::with_capacity(head.len() + body.len() + 25);
    wire::put_append_head(&mut b, rpc, sent as u32);
    b.extend_from_slice(&body);
    put_option(&mut b, commit.as_ref(), put_log_id);
    // Headroom for the protobuf framing around the payload.
    if b.len() + 64 > MESSAGE_BYTES_MAX {
        return Err(format!(
            "an AppendEntries of {} bytes (entry {:?}) exceeds the {MESSAGE_BYTES_MAX}-byte \
             message limit: proposals must be smaller",
            b.len(),
            rpc.entries.first().map(|e| e.log_id),
        ));
    }
    Ok((b, last_sent))
}

impl GroupRouter<TypeConfig, GroupId> for GrpcRouter {
    type SnapshotData = SnapshotFiles;

    fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>> + Send
    {
        let this = self.clone();
        async move {
            let bytes_max = this.net.inner.config.append_bytes_max;
            let (payload, last_sent) = encode_append(&rpc, bytes_max)
                .map_err(|m| RPCError::Network(NetworkError::from_string(m)))?;
            drop(rpc);
            let reply = this
                .unary(
                    target,
                    Unary::AppendEntries,
                    option.hard_ttl(),
                    group,
                    payload,
                )
                .await?;
            let resp = decode_reply(&reply, "append response", wire::get_append_response)?;
            Ok(match (resp, last_sent) {
                (AppendEntriesResponse::Success, Some(last)) => {
                    AppendEntriesResponse::PartialSuccess(Some(last))
                }
                (resp, _) => resp,
            })
        }
    }

    fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>>> + Send {
        let this = self.clone();
        async move {
            let payload = codec::encode(&rpc, wire::put_vote_request);
            let ttl = option.hard_ttl();
            let reply = this.unary(target, Unary::Vote, ttl, group, payload).await?;
            decode_reply(&reply, "vote response", wire::get_vote_response)
        }
    }

    fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>>> + Send {
        let this = self.clone();
        async move {
            let payload = codec::encode(&rpc, wire::put_vote_request);
            let ttl = option.hard_ttl();
            let reply = this
                .unary(target, Unary::PreVote, ttl, group, payload)
                .await?;
            decode_reply(&reply, "pre-vote response", wire::get_vote_response)
        }
    }

    fn transfer_leader(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>>> + Send
    {
        let this = self.clone();
        async move {
            let payload = codec::encode(&rpc, wire::put_transfer_request);
            let ttl = option.hard_ttl();
            let reply = this
                .unary(target, Unary::TransferLeader, ttl, group, payload)
                .await?;
            decode_reply(&reply, "transfer response", wire::get_transfer_response)
        }
    }

    fn full_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>>> + Send
    {
        let this = self.clone();
        async move {
            let mut client = this.target(target)?;
            let ttl = option.hard_ttl();
            let timeout = this.timeout(target, RPCTypes::InstallSnapshot, ttl);
            let (header, pieces) = send_snapshot(group, vote, &snapshot);
            // A local read error ends the stream early (the receiver then refuses it: files
            // are incomplete) and is reported instead of the receiver's refusal.
            let read_error: Arc<Mutex<Option<String>>> = Arc::default();
            let chunks = snapshot_chunks(header, pieces, Arc::clone(&read_error));
            let mut request = Request::new(chunks);
            request.set_timeout(ttl);
            let call = async move { client.install_snapshot(request).await };
            let reply = tokio::select! {
                closed = cancel => return Err(StreamingError::Closed(closed)),
                r = tokio::time::timeout(ttl, call) => {
                    r.map_err(|_| StreamingError::Timeout(timeout.clone()))?
                }
            };
            if let Some(message) = read_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                return Err(StreamingError::Network(NetworkError::from_string(format!(
                    "group {group}: read local snapshot: {message}"
                ))));
            }
            let reply = reply.map_err(|status| streaming_error(status_error(status, timeout)))?;
            let bytes = reply_payload(reply.into_inner()).map_err(streaming_error)?;
            decode_reply(&bytes, "snapshot response", wire::get_snapshot_response)
                .map_err(streaming_error)
        }
    }
}

/// The chunks of a snapshot stream: the header, then the pieces, read from disk one at a time
/// as the stream is polled (memory bounded by a piece, P3).
fn snapshot_chunks(
    header: SnapshotHeader,
    pieces: super::SnapshotPieces,
    read_error: Arc<Mutex<Option<String>>>,
) -> impl Stream<Item = pb::SnapshotChunk> + Send + 'static {
    let head = pb::SnapshotChunk {
        chunk: Some(pb::snapshot_chunk::Chunk::Header(header_to_pb(&header))),
    };
    let pieces = futures::stream::iter(pieces)
        .map(move |piece| match piece {
            Ok(p) => Some(pb::SnapshotChunk {
                chunk: Some(pb::snapshot_chunk::Chunk::Piece(pb::SnapshotPiece {
                    file: p.file,
                    offset: p.offset,
                    data: p.data,
                })),
            }),
            Err(e) => {
                *read_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                None
            }
        })
        .take_while(|c| futures::future::ready(c.is_some()))
        .filter_map(futures::future::ready);
    futures::stream::once(futures::future::ready(head)).chain(pieces)
}

fn header_to_pb(h: &SnapshotHeader) -> pb::SnapshotHeader {
    pb::SnapshotHeader {
        group: h.group,
        vote_meta: codec::encode(&(h.vote, h.meta.clone()), wire::put_vote_meta),
        id: h.id,
        files: h
            .files
            .iter()
            .map(|(name, len)| pb::SnapshotFile {
                name: name.clone(),
                len: *len,
            })
            .collect(),
    }
}

fn header_from_pb(h: pb::SnapshotHeader) -> strata_shard::Result<SnapshotHeader> {
    let (vote, meta) = codec::decode(&h.vote_meta, "snapshot vote and meta", wire::get_vote_meta)?;
    Ok(SnapshotHeader {
        group: h.group,
        vote,
        meta,
        id: h.id,
        files: h.files.into_iter().map(|f| (f.name, f.len)).collect(),
    })
}

impl Transport for GrpcRouter {
    type Factory = GroupNetworkFactory<GrpcRouter, GroupId>;

    fn group_factory(&self, group: GroupId) -> Self::Factory {
        GroupNetworkFactory::new(self.clone(), group)
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory<GrpcRouter, GroupId> {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, GrpcRouter>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        // No channel to this node itself (N2); the router refuses such sends.
        if target != self.factory.from {
            self.factory.net.set_peer_addr(target, &node.addr);
        }
        GroupNetworkAdapter::new(self.factory.clone(), target, self.group_id)
    }
}

// ---------------------------------------------------------------------------------------------
// Receiving side.

/// The tonic service answering Raft traffic for one node's [`RaftHandler`].
pub struct RaftService {
    handler: Arc<dyn RaftHandler>,
}

/// The service for `handler`, with the message limits of the module doc.
pub fn service(handler: Arc<dyn RaftHandler>) -> RaftTransportServer<RaftService> {
    RaftTransportServer::new(RaftService { handler })
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// Serves `handler` on a bound tokio TCP listener until `shutdown` completes.
pub async fn serve_tcp(
    handler: Arc<dyn RaftHandler>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_tcp_routes(Routes::new(service(handler)), listener, shutdown).await
}

/// Serves `routes` (the Raft service of [`service`] and whatever the node adds beside it, such
/// as its public API) on a bound tokio TCP listener until `shutdown` completes.
pub async fn serve_tcp_routes(
    routes: Routes,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_routes(routes, tcp_incoming(listener), shutdown).await
}

/// The connections `listener` accepts, with Nagle off.
pub fn tcp_incoming(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = io::Result<tokio::net::TcpStream>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            // Best effort: a socket without TCP_NODELAY still works, only slower.
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// Serves `routes` on any stream of accepted connections (TCP, or a simulated network's)
/// until `shutdown` completes.
pub async fn serve_routes<I, IO, IE>(
    routes: Routes,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

fn ok_reply<T>(v: &T, put: impl Fn(&mut Vec<u8>, &T)) -> pb::RaftReply {
    pb::RaftReply {
        reply: Some(pb::raft_reply::Reply::Ok(codec::encode(v, put))),
    }
}

/// The one place a [`HandlerError`] becomes wire (CONVENTIONS.md 9).
fn error_reply(e: HandlerError) -> pb::RaftReply {
    let (kind, node, group, message) = match e {
        HandlerError::NoSuchGroup { node, group } => {
            (Kind::NoSuchGroup, node, group, String::new())
        }
        HandlerError::Raft {
            node,
            group,
            message,
        } => (Kind::Raft, node, group, message),
        HandlerError::Snapshot {
            node,
            group,
            message,
        } => (Kind::Snapshot, node, group, message),
    };
    pb::RaftReply {
        reply: Some(pb::raft_reply::Reply::Error(pb::RaftError {
            kind: kind as i32,
            node,
            group,
            message,
        })),
    }
}

fn reply_of<T>(r: HandlerResult<T>, put: impl Fn(&mut Vec<u8>, &T)) -> Response<pb::RaftReply> {
    Response::new(match r {
        Ok(v) => ok_reply(&v, put),
        Err(e) => error_reply(e),
    })
}

/// A request whose payload does not decode is the sender's bug, not the group's refusal.
fn bad_request(e: strata_shard::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let pb::RaftRequest { group, payload } = request.into_inner();
        let rpc = codec::decode(&payload, "append request", wire::get_append_request)
            .map_err(bad_request)?;
        drop(payload);
        let r = self.handler.append_entries(group, rpc).await;
        Ok(reply_of(r, wire::put_append_response))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let pb::RaftRequest { group, payload } = request.into_inner();
        let rpc =
            codec::decode(&payload, "vote request", wire::get_vote_request).map_err(bad_request)?;
        let r = self.handler.vote(group, rpc).await;
        Ok(reply_of(r, wire::put_vote_response))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let pb::RaftRequest { group, payload } = request.into_inner();
        let rpc = codec::decode(&payload, "pre-vote request", wire::get_vote_request)
            .map_err(bad_request)?;
        let r = self.handler.pre_vote(group, rpc).await;
        Ok(reply_of(r, wire::put_vote_response))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let pb::RaftRequest { group, payload } = request.into_inner();
        let rpc = codec::decode(&payload, "transfer request", wire::get_transfer_request)
            .map_err(bad_request)?;
        let r = self.handler.transfer_leader(group, rpc).await;
        Ok(reply_of(r, wire::put_transfer_response))
    }

    async fn propose(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        let pb::RaftRequest { group, payload } = request.into_inner();
        let command =
            codec::decode(&payload, "proposal", codec::get_command).map_err(bad_request)?;
        drop(payload);
        let reply = match self.handler.propose(group, command).await {
            Ok(response) => {
                pb::propose_reply::Reply::Ok(codec::encode(&response, wire::put_response))
            }
            Err(e) => pb::propose_reply::Reply::Error(propose_error_to_pb(&e)),
        };
        Ok(Response::new(pb::ProposeReply { reply: Some(reply) }))
    }

    async fn query(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::QueryReply>, Status> {
        let pb::RaftRequest { group, payload } = request.into_inner();
        let (consistency, query) = decode_query_request(&payload).map_err(bad_request)?;
        match self.handler.query(group, consistency, query).await {
            Ok(result) => Ok(Response::new(pb::QueryReply {
                result: query_wire::encode_result(&result),
            })),
            Err(e) => Err(match e {
                ReadError::Invalid { .. } => Status::invalid_argument(e.to_string()),
                ReadError::NotLeader { .. } => Status::failed_precondition(e.to_string()),
                ReadError::NoSuchGroup { .. } => Status::not_found(e.to_string()),
                _ => Status::unavailable(e.to_string()),
            }),
        }
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let r = receive_snapshot(&*self.handler, request.into_inner()).await?;
        Ok(reply_of(r, wire::put_snapshot_response))
    }
}

/// Receives one snapshot stream into the handler's staging directory and installs it (N4).
/// A malformed stream (no header first, a second header, an empty chunk) is a bad request; a
/// refused piece (gap, overlap, wrong length, unknown file) is the receiver's refusal, answered
/// at once: the sender's remaining pieces are dropped with the stream.
async fn receive_snapshot(
    handler: &dyn RaftHandler,
    mut stream: Streaming<pb::SnapshotChunk>,
) -> Result<HandlerResult<SnapshotResponse<TypeConfig>>, Status> {
    let header = match stream.message().await? {
        Some(pb::SnapshotChunk {
            chunk: Some(pb::snapshot_chunk::Chunk::Header(h)),
        }) => header_from_pb(h).map_err(bad_request)?,
        Some(_) => {
            return Err(Status::invalid_argument(
                "a snapshot stream must start with its header",
            ));
        }
        None => return Err(Status::invalid_argument("empty snapshot stream")),
    };
    let group = header.group;
    let mut receiver = match SnapshotReceiver::begin(handler, header) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    while let Some(chunk) = stream.message().await? {
        let piece = match chunk.chunk {
            Some(pb::snapshot_chunk::Chunk::Piece(p)) => SnapshotPiece {
                file: p.file,
                offset: p.offset,
                data: p.data,
            },
            _ => {
                return Err(Status::invalid_argument(format!(
                    "group {group}: snapshot chunk after the header is not a piece"
                )));
            }
        };
        if let Err(e) = receiver.piece(piece) {
            return Ok(Err(e));
        }
    }
    let (vote, snapshot) = match receiver.finish() {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    Ok(handler.install_snapshot(group, vote, snapshot).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::PIECE_BYTES_MAX;
    use crate::types::{Entry, LogId};
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderId;

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn log_id(index: u64) -> LogId {
        LogId::new(LeaderId::new(2, 1), index)
    }

    #[test]
    fn long_appends_are_sent_in_prefixes_that_fit() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote {
                leader_id: LeaderId::new(2, 1),
                committed: true,
            },
            prev_log_id: Some(log_id(4)),
            entries: (5..15)
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: Some(log_id(12)),
        };
        // Everything fits: sent whole.
        let (bytes, last) = encode_append(&rpc, 1 << 20).unwrap();
        assert_eq!(last, None);
        let back = codec::decode(&bytes, "append", wire::get_append_request).unwrap();
        assert_eq!(back.entries, rpc.entries);
        assert_eq!(back.leader_commit, rpc.leader_commit);
        // A tight limit: a prefix, the commit capped to its last entry.
        let (bytes, last) = encode_append(&rpc, 120).unwrap();
        assert!(bytes.len() <= 120, "{} bytes", bytes.len());
        let back = codec::decode(&bytes, "append", wire::get_append_request).unwrap();
        let n = back.entries.len();
        assert!(n >= 1 && n < rpc.entries.len());
        assert_eq!(back.entries[..], rpc.entries[..n]);
        assert_eq!(last, Some(rpc.entries[n - 1].log_id));
        assert_eq!(back.leader_commit, last.min(rpc.leader_commit));
        // A limit below one entry still sends one.
        let (bytes, last) = encode_append(&rpc, 1).unwrap();
        let back = codec::decode(&bytes, "append", wire::get_append_request).unwrap();
        assert_eq!(back.entries.len(), 1);
        assert_eq!(last, Some(log_id(5)));
        // PIECE_BYTES_MAX keeps snapshot chunks far below the message limit.
        const { assert!(PIECE_BYTES_MAX + 1024 < MESSAGE_BYTES_MAX) };
    }

    #[test]
    fn empty_heartbeats_carry_no_entries_and_keep_the_commit() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote {
                leader_id: LeaderId::new(2, 1),
                committed: true,
            },
            prev_log_id: None,
            entries: vec![],
            leader_commit: Some(log_id(3)),
        };
        let (bytes, last) = encode_append(&rpc, 1).unwrap();
        assert_eq!(last, None);
        let back = codec::decode(&bytes, "append", wire::get_append_request).unwrap();
        assert_eq!(back.leader_commit, Some(log_id(3)));
    }
}
