//! The gRPC transport (`strata_raft::network::grpc`): real Raft groups replicating over
//! loopback TCP and over a turmoil-simulated network; snapshot streams (multi-piece, refused
//! when malformed); sends to self and to a dead peer fail within the deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{RPCError, StreamingError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::vote::RaftLeaderId;
use openraft::{Config, Raft};
use openraft_multi::{GroupNetworkFactory, GroupRouter};
use strata_proto::raft as pb;
use strata_proto::raft::raft_transport_client::RaftTransportClient;
use strata_raft::codec;
use strata_raft::log_store::SharedWal;
use strata_raft::network::grpc::{self, Dialer, GrpcConfig, GrpcNetwork, Io};
use strata_raft::network::{HandlerError, HandlerResult, RaftHandler, Snapshot};
use strata_raft::shard_sm::ShardStateMachine;
use strata_raft::snapshot::SnapshotFiles;
use strata_raft::types::{
    Command, GroupId, NodeId, NodeInfo, Runtime, SnapshotMeta, TypeConfig, Vote,
};
use strata_raft::wal::WalConfig;
use strata_shard::engine::EngineConfig;
use strata_shard::sim_fs::SimFs;
use strata_shard::{Fs, Labels, Sample, SeriesKey, Tenant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

type ShardRaft = Raft<TypeConfig, ShardStateMachine>;
type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

const GROUPS: [GroupId; 2] = [1, 2];

fn raft_config() -> Arc<Config> {
    Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 200,
            election_timeout_max: 400,
            ..Default::default()
        }
        .validate()
        .expect("valid config"),
    )
}

fn raft_error(node: NodeId, group: GroupId, e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Raft {
        node,
        group,
        message: e.to_string(),
    }
}

/// A node of the test: a few shard groups on one simulated disk and one shared WAL.
struct TestNode {
    id: NodeId,
    seed: u64,
    fs: Arc<SimFs>,
    wal: Arc<SharedWal>,
    groups: Mutex<BTreeMap<GroupId, (ShardRaft, ShardStateMachine)>>,
    staging: AtomicU64,
}

impl TestNode {
    /// Opens the node's WAL and starts its group-commit task; groups are added by `add_group`.
    fn new(id: NodeId, seed: u64) -> Arc<Self> {
        let fs = Arc::new(SimFs::new());
        let wal = SharedWal::open(
            Arc::clone(&fs) as Arc<dyn Fs>,
            "/node/wal",
            WalConfig::default(),
        )
        .expect("open WAL");
        tokio::spawn(Arc::clone(&wal).run_flusher());
        Arc::new(TestNode {
            id,
            seed,
            fs,
            wal,
            groups: Mutex::new(BTreeMap::new()),
            staging: AtomicU64::new(0),
        })
    }

    async fn add_group(&self, group: GroupId, net: &GrpcNetwork) {
        let sm = ShardStateMachine::open(
            Arc::clone(&self.fs) as Arc<dyn Fs>,
            &PathBuf::from(format!("/node/group-{group}")),
            EngineConfig::new("unused"),
        )
        .expect("open state machine");
        let factory = GroupNetworkFactory::new(net.router(self.id), group);
        let raft = Raft::new(
            self.id,
            raft_config(),
            factory,
            self.wal.group(group),
            sm.clone(),
        )
        .await
        .expect("start raft");
        self.groups.lock().unwrap().insert(group, (raft, sm));
    }

    fn raft(&self, group: GroupId) -> HandlerResult<ShardRaft> {
        self.groups
            .lock()
            .unwrap()
            .get(&group)
            .map(|(raft, _)| raft.clone())
            .ok_or(HandlerError::NoSuchGroup {
                node: self.id,
                group,
            })
    }

    fn sm(&self, group: GroupId) -> ShardStateMachine {
        self.groups.lock().unwrap()[&group].1.clone()
    }

    async fn shutdown(&self) {
        let rafts: Vec<ShardRaft> = self
            .groups
            .lock()
            .unwrap()
            .values()
            .map(|(r, _)| r.clone())
            .collect();
        for raft in rafts {
            raft.shutdown().await.expect("shutdown");
        }
    }
}

impl RaftHandler for TestNode {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn append_entries(
        &self,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<AppendEntriesResponse<TypeConfig>>> {
        let (raft, node) = (self.raft(group), self.id);
        Box::pin(Runtime::scope(self.seed, async move {
            let r = raft?.append_entries(rpc).await;
            r.map_err(|e| raft_error(node, group, e))
        }))
    }

    fn vote(
        &self,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>> {
        let (raft, node) = (self.raft(group), self.id);
        Box::pin(Runtime::scope(self.seed, async move {
            let r = raft?.vote(rpc).await;
            r.map_err(|e| raft_error(node, group, e))
        }))
    }

    fn pre_vote(
        &self,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>> {
        let (raft, node) = (self.raft(group), self.id);
        Box::pin(Runtime::scope(self.seed, async move {
            let r = raft?.pre_vote(rpc).await;
            r.map_err(|e| raft_error(node, group, e))
        }))
    }

    fn transfer_leader(
        &self,
        group: GroupId,
        rpc: TransferLeaderRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<TransferLeaderResponse<TypeConfig>>> {
        let (raft, node) = (self.raft(group), self.id);
        Box::pin(Runtime::scope(self.seed, async move {
            let r = raft?.handle_transfer_leader(rpc).await;
            r.map_err(|e| raft_error(node, group, e))
        }))
    }

    fn snapshot_staging(&self, group: GroupId) -> HandlerResult<(Arc<dyn Fs>, PathBuf)> {
        let n = self.staging.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/node/staging/{group}-{n}"));
        Ok((Arc::clone(&self.fs) as Arc<dyn Fs>, dir))
    }

    fn install_snapshot(
        &self,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
    ) -> BoxFuture<'static, HandlerResult<SnapshotResponse<TypeConfig>>> {
        let (raft, node) = (self.raft(group), self.id);
        Box::pin(Runtime::scope(self.seed, async move {
            let r = raft?.install_full_snapshot(vote, snapshot).await;
            r.map_err(|e| raft_error(node, group, e))
        }))
    }
}

fn key(i: usize) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("t").unwrap(),
        Labels::from_pairs(&[("__name__", "up"), ("instance", &format!("i{i}"))]).unwrap(),
    )
}

fn batch(round: i64) -> Command {
    Command::Write(
        (0..4)
            .map(|i| (key(i), vec![Sample::new(1_000 * round, round as f64)]))
            .collect(),
    )
}

fn membership(addrs: &[(NodeId, String)]) -> BTreeMap<NodeId, NodeInfo> {
    addrs
        .iter()
        .map(|(id, addr)| {
            let info = NodeInfo {
                addr: addr.clone(),
                zone: format!("z{id}"),
            };
            (*id, info)
        })
        .collect()
}

/// Initializes every group on node 1, writes `rounds` batches through each group's leader and
/// checks that every replica applied them.
async fn replicate(nodes: &[Arc<TestNode>], addrs: &[(NodeId, String)], rounds: i64) {
    let timeout = Some(Duration::from_secs(20));
    for group in GROUPS {
        let first = nodes[0].raft(group).unwrap();
        first
            .initialize(membership(addrs))
            .await
            .expect("initialize");
        let metrics = first
            .wait(timeout)
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .expect("elected");
        let leader = metrics.current_leader.unwrap();
        let leader = nodes.iter().find(|n| n.id == leader).unwrap();
        let raft = leader.raft(group).unwrap();
        let mut last = 0;
        for round in 1..=rounds {
            // A new leader serves writes once a quorum has acknowledged it (its lease); until
            // then it answers ForwardToLeader, so the first write may be retried.
            let mut tries = 0;
            let resp = loop {
                match raft.client_write(batch(round)).await {
                    Ok(resp) => break resp,
                    Err(e) if tries < 100 && e.forward_to_leader().is_some() => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("group {group}: write: {e}"),
                }
            };
            last = resp.log_id.index;
        }
        for node in nodes {
            node.raft(group)
                .unwrap()
                .wait(timeout)
                .applied_index_at_least(Some(last), "applied everywhere")
                .await
                .expect("applied");
            let samples = node
                .sm(group)
                .with_engine(|e| e.read_series(&key(3), i64::MIN, i64::MAX))
                .unwrap();
            assert_eq!(
                samples.len() as i64,
                rounds,
                "node {} group {group}",
                node.id
            );
        }
    }
}

#[tokio::test]
async fn three_nodes_replicate_two_groups_over_loopback_tcp() {
    Runtime::scope(11, async {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for id in 1..=3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push((id, l.local_addr().unwrap().to_string()));
            listeners.push(l);
        }
        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let node = TestNode::new(id, 100 + id);
            let net = GrpcNetwork::new(GrpcConfig::default());
            for group in GROUPS {
                node.add_group(group, &net).await;
            }
            let (stop, stopped) = oneshot::channel::<()>();
            let handler: Arc<dyn RaftHandler> = node.clone();
            let server = tokio::spawn(grpc::serve_tcp(handler, listener, async {
                let _ = stopped.await;
            }));
            servers.push((stop, server));
            nodes.push(node);
        }
        replicate(&nodes, &addrs, 5).await;
        for node in &nodes {
            node.shutdown().await;
        }
        for (stop, server) in servers {
            let _ = stop.send(());
            server.await.unwrap().expect("server ran");
        }
    })
    .await;
}

/// A learner added after the leader purged its log catches up from a real shard snapshot
/// (engine blocks + checkpoint) streamed over gRPC.
#[tokio::test]
async fn a_learner_catches_up_from_a_shard_snapshot_sent_over_grpc() {
    Runtime::scope(12, async {
        let timeout = Some(Duration::from_secs(20));
        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for id in 1..=2u64 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push((id, listener.local_addr().unwrap().to_string()));
            let node = TestNode::new(id, 100 + id);
            node.add_group(1, &GrpcNetwork::new(GrpcConfig::default()))
                .await;
            let (stop, stopped) = oneshot::channel::<()>();
            let handler: Arc<dyn RaftHandler> = node.clone();
            let server = tokio::spawn(grpc::serve_tcp(handler, listener, async {
                let _ = stopped.await;
            }));
            servers.push((stop, server));
            nodes.push(node);
        }
        let leader = nodes[0].raft(1).unwrap();
        leader.initialize(membership(&addrs[..1])).await.unwrap();
        leader
            .wait(timeout)
            .current_leader(1, "node 1 leads alone")
            .await
            .unwrap();
        for round in 1..=20 {
            leader.client_write(batch(round)).await.expect("write");
        }
        // Blocks on disk, so the snapshot has several files.
        let last = leader.client_write(Command::Seal).await.unwrap().log_id;
        leader.trigger().snapshot().await.unwrap();
        leader
            .wait(timeout)
            .snapshot(last, "snapshot built")
            .await
            .unwrap();
        leader.trigger().purge_log(last.index).await.unwrap();
        leader
            .wait(timeout)
            .purged(Some(last), "log purged")
            .await
            .unwrap();
        let (id, addr) = &addrs[1];
        let info = NodeInfo {
            addr: addr.clone(),
            zone: "z2".into(),
        };
        leader.add_learner(*id, info, true).await.expect("learner");
        let learner = nodes[1].raft(1).unwrap();
        learner
            .wait(timeout)
            .applied_index_at_least(Some(last.index), "caught up")
            .await
            .unwrap();
        // Installed from a snapshot (the leader's current state: it may include the learner's
        // membership entry), not replayed from the purged log.
        learner
            .wait(timeout)
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= last.index),
                "snapshot installed",
            )
            .await
            .unwrap();
        let samples = nodes[1]
            .sm(1)
            .with_engine(|e| e.read_series(&key(2), i64::MIN, i64::MAX))
            .unwrap();
        assert_eq!(samples.len(), 20);
        for node in &nodes {
            node.shutdown().await;
        }
        for (stop, server) in servers {
            let _ = stop.send(());
            server.await.unwrap().expect("server ran");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Snapshot streams, against a handler that only records what it installs.

/// What a sink installed: group, vote, metadata, and each file with its contents.
type Installed = (GroupId, Vote, SnapshotMeta, Vec<(String, Vec<u8>)>);

#[derive(Default)]
struct SnapshotSink {
    fs: Arc<SimFs>,
    staging: AtomicU64,
    installed: Mutex<Vec<Installed>>,
}

impl RaftHandler for SnapshotSink {
    fn node_id(&self) -> NodeId {
        2
    }
    fn append_entries(
        &self,
        group: GroupId,
        _: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<AppendEntriesResponse<TypeConfig>>> {
        Box::pin(async move { Err(HandlerError::NoSuchGroup { node: 2, group }) })
    }
    fn vote(
        &self,
        group: GroupId,
        _: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>> {
        Box::pin(async move { Err(HandlerError::NoSuchGroup { node: 2, group }) })
    }
    fn pre_vote(
        &self,
        group: GroupId,
        _: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>> {
        Box::pin(async move { Err(HandlerError::NoSuchGroup { node: 2, group }) })
    }
    fn transfer_leader(
        &self,
        group: GroupId,
        _: TransferLeaderRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<TransferLeaderResponse<TypeConfig>>> {
        Box::pin(async move { Err(HandlerError::NoSuchGroup { node: 2, group }) })
    }
    fn snapshot_staging(&self, group: GroupId) -> HandlerResult<(Arc<dyn Fs>, PathBuf)> {
        let n = self.staging.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/sink/staging/{group}-{n}"));
        Ok((Arc::clone(&self.fs) as Arc<dyn Fs>, dir))
    }
    fn install_snapshot(
        &self,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
    ) -> BoxFuture<'static, HandlerResult<SnapshotResponse<TypeConfig>>> {
        let files = snapshot
            .snapshot
            .files()
            .iter()
            .map(|(name, len)| {
                let data = snapshot
                    .snapshot
                    .read_piece(name, 0, *len as usize)
                    .unwrap();
                (name.clone(), data)
            })
            .collect();
        self.installed
            .lock()
            .unwrap()
            .push((group, vote, snapshot.meta.clone(), files));
        Box::pin(async move { Ok(SnapshotResponse::new(vote)) })
    }
}

fn vote(term: u64, node: NodeId) -> Vote {
    Vote {
        leader_id: LeaderId::new(term, node),
        committed: true,
    }
}

/// A test pattern that makes misplaced pieces visible.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

async fn start_sink() -> (
    Arc<SnapshotSink>,
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let sink = Arc::new(SnapshotSink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let handler: Arc<dyn RaftHandler> = sink.clone();
    let server = tokio::spawn(grpc::serve_tcp(handler, listener, async {
        let _ = stopped.await;
    }));
    (sink, addr, stop, server)
}

#[tokio::test]
async fn a_multi_piece_snapshot_streams_over_grpc_and_is_installed() {
    let (sink, addr, stop, server) = start_sink().await;
    // The sender's snapshot: a 2.5 MiB file (three pieces), an empty one, a small one.
    let fs = Arc::new(SimFs::new());
    let dir = Path::new("/sender/snap");
    let files = [
        ("blocks-1", pattern(2 * 1024 * 1024 + 512 * 1024, 1)),
        ("empty", Vec::new()),
        ("checkpoint", pattern(1000, 7)),
    ];
    strata_shard::fs::create_dir_all_durable(&*fs, dir).unwrap();
    for (name, data) in &files {
        let mut f = fs.open_append(&dir.join(name), true).unwrap();
        f.write_all(data).unwrap();
        f.sync().unwrap();
    }
    let listing: Vec<(String, u64)> = files
        .iter()
        .map(|(n, d)| (n.to_string(), d.len() as u64))
        .collect();
    let snapshot = Snapshot {
        meta: SnapshotMeta::default(),
        snapshot: SnapshotFiles::received(fs, dir.to_path_buf(), 42, listing),
    };

    let net = GrpcNetwork::new(GrpcConfig::default());
    net.set_peer_addr(2, &addr);
    let router = net.router(1);
    let resp = router
        .full_snapshot(
            2,
            9,
            vote(3, 1),
            snapshot,
            futures::future::pending(),
            RPCOption::new(Duration::from_secs(10)),
        )
        .await
        .expect("snapshot sent");
    assert_eq!(resp.vote, vote(3, 1));
    {
        let installed = sink.installed.lock().unwrap();
        assert_eq!(installed.len(), 1);
        let (group, v, _, got) = &installed[0];
        assert_eq!((*group, *v), (9, vote(3, 1)));
        let want: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        assert!(got == &want, "installed files differ from the sent ones");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn header(files: &[(&str, u64)]) -> pb::SnapshotChunk {
    let mut vote_meta = codec::encode(&vote(3, 1), codec::put_vote);
    codec::put_option(&mut vote_meta, None, codec::put_log_id);
    codec::put_stored_membership(&mut vote_meta, &Default::default());
    pb::SnapshotChunk {
        chunk: Some(pb::snapshot_chunk::Chunk::Header(pb::SnapshotHeader {
            group: 9,
            vote_meta,
            id: 1,
            files: files
                .iter()
                .map(|(name, len)| pb::SnapshotFile {
                    name: name.to_string(),
                    len: *len,
                })
                .collect(),
        })),
    }
}

fn piece(file: u32, offset: u64, len: usize) -> pb::SnapshotChunk {
    pb::SnapshotChunk {
        chunk: Some(pb::snapshot_chunk::Chunk::Piece(pb::SnapshotPiece {
            file,
            offset,
            data: vec![5; len],
        })),
    }
}

#[tokio::test]
async fn malformed_snapshot_streams_are_refused_with_a_clear_error() {
    let (sink, addr, stop, server) = start_sink().await;
    let mut client = RaftTransportClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let two = [("a", 10), ("b", 4)];
    let cases: Vec<(&str, Vec<pb::SnapshotChunk>, &str)> = vec![
        (
            "gap",
            vec![header(&two), piece(0, 0, 4), piece(0, 6, 4)],
            "after 4 bytes received",
        ),
        (
            "file too short",
            vec![header(&two), piece(0, 0, 4), piece(1, 0, 4)],
            "a ended after 4 of 10 bytes",
        ),
        (
            "file too long",
            vec![header(&two), piece(0, 0, 10), piece(0, 10, 1)],
            "(10 bytes) after 10 bytes received",
        ),
        (
            "unknown file",
            vec![header(&two), piece(0, 0, 10), piece(7, 0, 1)],
            "piece of file 7 arrived while file 1 was expected",
        ),
        (
            "missing file",
            vec![header(&two), piece(0, 0, 10)],
            "stream ended after 1 of 2 files",
        ),
        (
            "bad file name",
            vec![header(&[("../etc", 1)])],
            "is not a plain file name",
        ),
    ];
    for (case, chunks, want) in cases {
        let reply = client
            .install_snapshot(futures::stream::iter(chunks))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"))
            .into_inner();
        match reply.reply {
            Some(pb::raft_reply::Reply::Error(e)) => {
                assert_eq!(e.kind, pb::raft_error::Kind::Snapshot as i32, "{case}");
                assert!(e.message.contains(want), "{case}: {}", e.message);
            }
            other => panic!("{case}: accepted: {other:?}"),
        }
    }
    // Not starting with a header is a protocol error.
    let status = client
        .install_snapshot(futures::stream::iter(vec![piece(0, 0, 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(sink.installed.lock().unwrap().is_empty());
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Failures: self, a dead peer, a peer that accepts but never answers.

fn vote_request() -> VoteRequest<TypeConfig> {
    VoteRequest::new(vote(1, 1), None)
}

#[tokio::test]
async fn sends_to_self_and_to_dead_or_silent_peers_fail_within_the_deadline() {
    let config = GrpcConfig {
        connect_timeout: Duration::from_millis(500),
        ..GrpcConfig::default()
    };
    let net = GrpcNetwork::new(config);
    let router = net.router(1);
    let option = RPCOption::new(Duration::from_millis(300));
    let bound = Duration::from_secs(3);

    // N2: never to itself.
    net.set_peer_addr(1, "127.0.0.1:1");
    let e = router.vote(1, 1, vote_request(), option.clone()).await;
    assert!(matches!(e, Err(RPCError::Unreachable(_))), "{e:?}");

    // No address known yet.
    let e = router.vote(5, 1, vote_request(), option.clone()).await;
    assert!(matches!(e, Err(RPCError::Unreachable(_))), "{e:?}");

    // A dead peer: nothing listens on the port any more.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    net.set_peer_addr(2, &gone_addr);
    let e = tokio::time::timeout(bound, router.vote(2, 1, vote_request(), option.clone()))
        .await
        .expect("no hang");
    assert!(
        matches!(e, Err(RPCError::Unreachable(_)) | Err(RPCError::Timeout(_))),
        "{e:?}"
    );

    // A silent peer: the kernel accepts the connection, nobody ever speaks HTTP/2.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    net.set_peer_addr(3, &silent.local_addr().unwrap().to_string());
    let e = tokio::time::timeout(bound, router.vote(3, 1, vote_request(), option.clone()))
        .await
        .expect("no hang");
    assert!(matches!(e, Err(RPCError::Timeout(_))), "{e:?}");
    let snapshot = Snapshot {
        meta: SnapshotMeta::default(),
        snapshot: SnapshotFiles::received(
            Arc::new(SimFs::new()),
            PathBuf::from("/none"),
            1,
            vec![],
        ),
    };
    let e = tokio::time::timeout(
        bound,
        router.full_snapshot(
            3,
            1,
            vote(1, 1),
            snapshot,
            futures::future::pending(),
            option.clone(),
        ),
    )
    .await
    .expect("no hang");
    assert!(matches!(e, Err(StreamingError::Timeout(_))), "{e:?}");
    drop(silent);

    // A live node that hosts no replica of the group: unreachable (N1), retried later.
    let (_sink, addr, stop, server) = start_sink().await;
    net.set_peer_addr(2, &addr);
    let e = router.vote(2, 1, vote_request(), option.clone()).await;
    match e {
        Err(RPCError::Unreachable(u)) => {
            assert!(u.to_string().contains("hosts no replica"), "{u}")
        }
        other => panic!("{other:?}"),
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The same cluster over turmoil's simulated network.

/// turmoil's TCP as a [`Dialer`].
struct TurmoilDialer;

impl Dialer for TurmoilDialer {
    fn dial(&self, addr: &str) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// An accepted turmoil stream, with the `Connected` tonic's server wants.
struct Accepted(turmoil::net::TcpStream);

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

const TURMOIL_PORT: u16 = 7000;

#[test]
fn three_hosts_replicate_over_a_simulated_network() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .build();
    let nodes: Arc<Mutex<BTreeMap<NodeId, Arc<TestNode>>>> = Arc::default();
    let addrs: Vec<(NodeId, String)> = (1..=3u64)
        .map(|id| (id, format!("n{id}:{TURMOIL_PORT}")))
        .collect();
    for id in 1..=3u64 {
        let nodes = Arc::clone(&nodes);
        sim.host(format!("n{id}"), move || {
            let nodes = Arc::clone(&nodes);
            Runtime::scope(200 + id, async move {
                let node = TestNode::new(id, 200 + id);
                let net = GrpcNetwork::with_dialer(GrpcConfig::default(), Arc::new(TurmoilDialer));
                for group in GROUPS {
                    node.add_group(group, &net).await;
                }
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", TURMOIL_PORT)).await?;
                let incoming = futures::stream::unfold(listener, |l| async move {
                    let accepted = l.accept().await.map(|(s, _)| Accepted(s));
                    Some((accepted, l))
                });
                nodes.lock().unwrap().insert(id, Arc::clone(&node));
                let handler: Arc<dyn RaftHandler> = node;
                grpc::serve(handler, incoming, futures::future::pending()).await?;
                Ok(())
            })
        });
    }
    sim.client("driver", {
        let nodes = Arc::clone(&nodes);
        async move {
            // Hosts register once they listen.
            while nodes.lock().unwrap().len() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let list: Vec<Arc<TestNode>> = nodes.lock().unwrap().values().cloned().collect();
            Runtime::scope(300, replicate(&list, &addrs, 3)).await;
            Ok(())
        }
    });
    sim.run().expect("simulation");
}
