//! The in-process transport: nodes of one process call each other's [`RaftHandler`]s
//! directly. Tests and benchmarks use it to run several nodes in one runtime (paused time
//! works), and to cut links one way or both. Snapshots still go piece by piece through a
//! [`SnapshotReceiver`] into the receiver's own file system, as over the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use openraft::RaftNetworkFactory;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};

use super::{
    Forwarder, HandlerError, RaftHandler, Snapshot, SnapshotReceiver, Transport, send_snapshot,
    streaming_error,
};
use crate::registry::ProposeError;
use crate::snapshot::SnapshotFiles;
use crate::types::{Command, GroupId, NodeId, NodeInfo, Response, TypeConfig, Vote};

#[derive(Default)]
struct Links {
    nodes: BTreeMap<NodeId, Weak<dyn RaftHandler>>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The in-process network all nodes of a test share.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    links: Arc<Mutex<Links>>,
}

impl LocalNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `handler` reachable under its node id (held weakly: a dropped node is
    /// unreachable).
    pub fn register(&self, handler: &Arc<dyn RaftHandler>) {
        self.lock()
            .nodes
            .insert(handler.node_id(), Arc::downgrade(handler));
    }

    pub fn unregister(&self, node: NodeId) {
        self.lock().nodes.remove(&node);
    }

    /// Drops every message from `from` to `to` (one way).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: NodeId) {
        let mut links = self.lock();
        let others: Vec<NodeId> = links.nodes.keys().copied().filter(|n| *n != node).collect();
        for other in others {
            links.cut.insert((node, other));
            links.cut.insert((other, node));
        }
    }

    pub fn heal_all(&self) {
        self.lock().cut.clear();
    }

    /// The sending side for node `from`.
    pub fn router(&self, from: NodeId) -> LocalRouter {
        LocalRouter {
            net: self.clone(),
            from,
        }
    }
}

/// Node `from`'s view of the [`LocalNetwork`]: openraft-multi's `GroupRouter`.
#[derive(Clone)]
pub struct LocalRouter {
    net: LocalNetwork,
    from: NodeId,
}

impl LocalRouter {
    /// The target's handler, or why it cannot be reached (a cut request link, N2).
    fn target(&self, to: NodeId) -> Result<Arc<dyn RaftHandler>, Unreachable<TypeConfig>> {
        if to == self.from {
            return Err(Unreachable::from_string(format!(
                "node {to} does not send Raft messages to itself"
            )));
        }
        let links = self.net.lock();
        if links.cut.contains(&(self.from, to)) {
            return Err(Unreachable::from_string(format!(
                "link {}->{to} is cut",
                self.from
            )));
        }
        links
            .nodes
            .get(&to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| Unreachable::from_string(format!("node {to} is down")))
    }

    /// A reply over a cut return link is lost: the request took effect, the sender never knows.
    fn reply_lost(&self, to: NodeId) -> bool {
        self.net.lock().cut.contains(&(to, self.from))
    }

    async fn call<T>(
        &self,
        to: NodeId,
        action: RPCTypes,
        ttl: Duration,
        send: impl FnOnce(
            Arc<dyn RaftHandler>,
        ) -> futures::future::BoxFuture<'static, Result<T, HandlerError>>,
    ) -> Result<T, RPCError<TypeConfig>> {
        let handler = self.target(to)?;
        let timeout = Timeout {
            action,
            id: self.from,
            target: to,
            timeout: ttl,
        };
        let reply = tokio::time::timeout(ttl, send(handler))
            .await
            .map_err(|_| RPCError::Timeout(timeout))?;
        if self.reply_lost(to) {
            return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "link {to}->{} is cut",
                self.from
            ))));
        }
        reply.map_err(HandlerError::into_rpc_error)
    }
}

impl LocalRouter {
    /// Forwards a client proposal to node `to` (see `GrpcRouter::propose`).
    pub async fn propose(
        &self,
        to: NodeId,
        group: GroupId,
        command: Command,
    ) -> Result<Response, ProposeError> {
        let handler = self.target(to).map_err(|e| ProposeError::Unreachable {
            node: to,
            group,
            reason: e.to_string(),
        })?;
        let reply = handler.propose(group, command).await;
        if self.reply_lost(to) {
            // The proposal reached the leader; its answer did not come back.
            return Err(ProposeError::OutcomeUnknown {
                group,
                leader_hint: None,
            });
        }
        reply
    }
}

impl Forwarder for LocalRouter {
    fn forward(
        &self,
        to: NodeId,
        _info: &NodeInfo,
        group: GroupId,
        command: Command,
        ttl: Duration,
    ) -> futures::future::BoxFuture<'static, Result<Response, ProposeError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::time::timeout(ttl, this.propose(to, group, command))
                .await
                .unwrap_or(Err(ProposeError::Timeout {
                    group,
                    timeout: ttl,
                }))
        })
    }
}

impl GroupRouter<TypeConfig, GroupId> for LocalRouter {
    type SnapshotData = SnapshotFiles;

    fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>> + Send
    {
        let action = RPCTypes::AppendEntries;
        self.call(target, action, option.hard_ttl(), move |h| {
            h.append_entries(group, rpc)
        })
    }

    fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>>> + Send {
        self.call(target, RPCTypes::Vote, option.hard_ttl(), move |h| {
            h.vote(group, rpc)
        })
    }

    fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>>> + Send {
        self.call(target, RPCTypes::Vote, option.hard_ttl(), move |h| {
            h.pre_vote(group, rpc)
        })
    }

    fn transfer_leader(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>>> + Send
    {
        let action = RPCTypes::TransferLeader;
        self.call(target, action, option.hard_ttl(), move |h| {
            h.transfer_leader(group, rpc)
        })
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
            let handler = this.target(target)?;
            let ttl = option.hard_ttl();
            let transfer = async {
                let (header, pieces) = send_snapshot(group, vote, &snapshot);
                let mut receiver = SnapshotReceiver::begin(&*handler, header)?;
                for piece in pieces {
                    let piece = piece.map_err(|e| HandlerError::Snapshot {
                        node: this.from,
                        group,
                        message: format!("read local snapshot: {e}"),
                    })?;
                    receiver.piece(piece)?;
                    // Yield between pieces, as a real transfer would.
                    tokio::task::yield_now().await;
                }
                let (vote, snapshot) = receiver.finish()?;
                handler.install_snapshot(group, vote, snapshot).await
            };
            let timeout = Timeout {
                action: RPCTypes::InstallSnapshot,
                id: this.from,
                target,
                timeout: ttl,
            };
            let reply = tokio::select! {
                closed = cancel => return Err(StreamingError::Closed(closed)),
                r = tokio::time::timeout(ttl, transfer) => r.map_err(|_| StreamingError::Timeout(timeout))?,
            };
            if this.reply_lost(target) {
                return Err(StreamingError::Unreachable(Unreachable::from_string(
                    format!("link {target}->{} is cut", this.from),
                )));
            }
            reply.map_err(|e| streaming_error(e.into_rpc_error()))
        }
    }
}

impl Transport for LocalRouter {
    type Factory = GroupNetworkFactory<LocalRouter, GroupId>;

    fn group_factory(&self, group: GroupId) -> Self::Factory {
        GroupNetworkFactory::new(self.clone(), group)
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory<LocalRouter, GroupId> {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, LocalRouter>;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> Self::Network {
        GroupNetworkAdapter::new(self.factory.clone(), target, self.group_id)
    }
}
