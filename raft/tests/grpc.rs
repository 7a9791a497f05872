//! The gRPC transport (`strata_raft::network::grpc`) under the group registry: registries
//! replicating over loopback TCP (2 and 16 groups on 3 nodes, a learner caught up by a shard
//! snapshot) and over a turmoil-simulated network; and the transport alone: snapshot streams
//! (multi-piece, refused when malformed), sends to self and to dead or silent peers failing
//! within the deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{RPCError, StreamingError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::vote::RaftLeaderId;
use openraft_multi::GroupRouter;
use strata_proto::raft as pb;
use strata_proto::raft::raft_transport_client::RaftTransportClient;
use strata_raft::codec;
use strata_raft::network::grpc::{self, GrpcConfig, GrpcNetwork, GrpcRouter};
use strata_raft::network::turmoil_net::{self, TurmoilDialer};
use strata_raft::network::{HandlerError, HandlerResult, RaftHandler, Snapshot};
use strata_raft::registry::{Consistency, ProposeError, ReadError, Registry, RegistryConfig};
use strata_raft::snapshot::SnapshotFiles;
use strata_raft::types::{Command, GroupId, NodeId, NodeInfo, SnapshotMeta, TypeConfig, Vote};
use strata_shard::partial::PartialResult;
use strata_shard::query::PartialQuery;
use strata_shard::sim_fs::SimFs;
use strata_shard::{Fs, Labels, Sample, SeriesKey, Tenant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;
type Node = Arc<Registry<GrpcRouter>>;
type Server = JoinHandle<Result<(), tonic::transport::Error>>;

// ---------------------------------------------------------------------------------------------
// Registries replicating over gRPC.

/// A node's registry settings: a fresh simulated disk, and heartbeats rarer than the default:
/// in a debug build a heartbeat over gRPC costs a millisecond or two of CPU, and 48 replicas
/// beating every 100 ms keep half a core busy; on a loaded machine leader leases then lapse
/// and groups stop taking writes. (Writes replicate at once, not on the next heartbeat.)
fn config(id: NodeId, tune: fn(&mut RegistryConfig)) -> RegistryConfig {
    let mut config = RegistryConfig::new(id, Arc::new(SimFs::new()), "/node");
    config.raft.heartbeat_ms = 250;
    config.raft.election_timeout_min_ms = 1500;
    config.raft.election_timeout_max_ms = 3000;
    config.propose_timeout = Duration::from_secs(5);
    tune(&mut config);
    config
}

fn info(id: NodeId, addr: String) -> NodeInfo {
    NodeInfo {
        addr,
        zone: format!("z{id}"),
    }
}

fn key(series: u64) -> SeriesKey {
    let name = format!("s{series}");
    SeriesKey::new(
        Tenant::new("t").unwrap(),
        Labels::from_pairs(&[("__name__", "m"), ("series", name.as_str())]).unwrap(),
    )
}

/// One sample of `series` at step `i`.
fn write(series: u64, i: u64) -> Command {
    Command::Write(vec![(key(series), vec![Sample::new(1_000 * i as i64, i as f64)])].into())
}

/// Creates `node`'s replicas of `groups`: with `init`, of those it initializes (a group's first
/// member, spread over the members so leaders start spread, initializes it with all of
/// `members`), else of the others. Create the others first: an election asking replicas that
/// do not exist yet fails, and the next one comes an election timeout later.
async fn create_groups(
    node: &Node,
    groups: &[GroupId],
    members: &BTreeMap<NodeId, NodeInfo>,
    init: bool,
) {
    for &group in groups {
        let first = members.keys().nth(group as usize % members.len()).copied();
        if (first == Some(node.node())) == init {
            let members = init.then(|| members.clone());
            node.create_group(group, members)
                .await
                .expect("create group");
        }
    }
}

/// Polls (25 ms apart, at most 20 s) until `done` holds.
async fn poll(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..800 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not within 20 s: {what}");
}

/// The node leading `group`, once there is one.
async fn leader(nodes: &[Node], group: GroupId) -> &Node {
    poll(&format!("a leader of group {group}"), || {
        nodes.iter().any(|n| n.is_leader(group))
    })
    .await;
    nodes.iter().find(|n| n.is_leader(group)).unwrap()
}

/// Proposes through whichever node leads, retrying (at most 30 s) until it is applied there
/// (the router's job; retrying the same write is safe: first-write-wins dedup).
async fn propose(nodes: &[Node], group: GroupId, command: Command) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = match leader(nodes, group)
            .await
            .propose(group, command.clone())
            .await
        {
            Ok(_) => return,
            Err(
                e @ (ProposeError::NotLeader { .. }
                | ProposeError::OutcomeUnknown { .. }
                | ProposeError::Timeout { .. }),
            ) => e,
            Err(e) => panic!("propose to group {group}: {e}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group}: no proposal succeeded within 30 s, the last: {e}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every replica of `group` has applied what the leader committed.
async fn converge(nodes: &[Node], group: GroupId) {
    let leader = leader(nodes, group).await;
    let target = leader.metrics(group).unwrap().cluster_committed;
    poll(&format!("group {group} applied to {target:?}"), || {
        nodes
            .iter()
            .filter_map(|n| n.metrics(group))
            .all(|m| m.last_applied >= target)
    })
    .await;
}

/// The steps of `series` that `node`'s replica of `group` stores.
async fn steps(node: &Node, group: GroupId, series: u64) -> BTreeSet<u64> {
    node.read(group, Consistency::Any, |e| {
        e.read_series(&key(series), i64::MIN / 4, i64::MAX / 4)
    })
    .await
    .unwrap()
    .unwrap()
    .iter()
    .map(|s| s.value as u64)
    .collect()
}

/// Writes steps `0..writes` of series `g` to each group `g` (the groups concurrently) and
/// checks that every replica applied all of them.
async fn replicate(nodes: &[Node], groups: &[GroupId], writes: u64) {
    let tasks: Vec<_> = groups
        .iter()
        .map(|&group| {
            let nodes = nodes.to_vec();
            tokio::spawn(async move {
                for i in 0..writes {
                    propose(&nodes, group, write(group, i)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for &group in groups {
        converge(nodes, group).await;
        for node in nodes {
            assert_eq!(
                steps(node, group, group).await,
                (0..writes).collect(),
                "group {group} on node {}",
                node.node()
            );
        }
    }
}

/// Registries on loopback TCP, each with its own gRPC network and server.
struct Loopback {
    nodes: Vec<Node>,
    members: BTreeMap<NodeId, NodeInfo>,
    servers: Vec<(oneshot::Sender<()>, Server)>,
}

impl Loopback {
    /// Starts nodes `1..=n`, each serving on a port of 127.0.0.1 the kernel picks.
    async fn start(n: u64, tune: fn(&mut RegistryConfig)) -> Loopback {
        let mut c = Loopback {
            nodes: Vec::new(),
            members: BTreeMap::new(),
            servers: Vec::new(),
        };
        for id in 1..=n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            c.members.insert(id, info(id, addr));
            let net = GrpcNetwork::new(GrpcConfig::default());
            let node = Registry::open(config(id, tune), net.router(id))
                .await
                .expect("open registry");
            c.servers.push(serve(node.clone(), listener));
            c.nodes.push(node);
        }
        c
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize - 1]
    }

    /// Creates `groups` on every node.
    async fn create_groups(&self, groups: &[GroupId]) {
        for init in [false, true] {
            for node in &self.nodes {
                create_groups(node, groups, &self.members, init).await;
            }
        }
    }

    /// Stops every group, then every server.
    async fn stop(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
        for (stop, server) in self.servers {
            let _ = stop.send(());
            server.await.unwrap().expect("server ran");
        }
    }
}

/// Serves `handler` on `listener` until the returned sender fires (or is dropped).
fn serve(
    handler: Arc<dyn RaftHandler>,
    listener: tokio::net::TcpListener,
) -> (oneshot::Sender<()>, Server) {
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(grpc::serve_tcp(handler, listener, async {
        let _ = stopped.await;
    }));
    (stop, server)
}

#[tokio::test]
async fn three_nodes_replicate_two_groups_over_loopback_tcp() {
    let c = Loopback::start(3, |_| {}).await;
    c.create_groups(&[1, 2]).await;
    replicate(&c.nodes, &[1, 2], 5).await;
    // A follower redirects to the leader's gRPC address; the leader serves linearizable reads
    // (a quorum round trip over gRPC).
    let leader = leader(&c.nodes, 1).await.node();
    let follower = c.nodes.iter().find(|n| n.node() != leader).unwrap();
    match follower.propose(1, write(1, 9)).await {
        Err(ProposeError::NotLeader { leader_hint, .. }) => {
            assert_eq!(leader_hint, Some((leader, c.members[&leader].clone())));
        }
        other => panic!("a follower answered {other:?}"),
    }
    assert!(matches!(
        follower.read(1, Consistency::Strong, |_| ()).await,
        Err(ReadError::NotLeader { .. })
    ));
    // The follower's router forwards the proposal to the hinted leader over gRPC; asking the
    // follower itself gives the hint back across the wire; an unknown group is named.
    let router = GrpcNetwork::new(GrpcConfig::default()).router(follower.node());
    let ttl = Duration::from_secs(10);
    let forwarded = router
        .propose(leader, &c.members[&leader], 1, &write(1, 9), ttl)
        .await;
    match forwarded {
        Ok(strata_raft::types::Response::Write(w)) => assert_eq!(w.appended, 1),
        other => panic!("a forwarded proposal answered {other:?}"),
    }
    let other = c
        .nodes
        .iter()
        .find(|n| n.node() != leader && n.node() != follower.node())
        .unwrap()
        .node();
    match router
        .propose(other, &c.members[&other], 1, &write(1, 10), ttl)
        .await
    {
        Err(ProposeError::NotLeader { leader_hint, .. }) => {
            assert_eq!(leader_hint, Some((leader, c.members[&leader].clone())));
        }
        res => panic!("a follower answered a forwarded proposal with {res:?}"),
    }
    assert!(matches!(
        router
            .propose(leader, &c.members[&leader], 77, &write(1, 11), ttl)
            .await,
        Err(ProposeError::NoSuchGroup { group: 77, .. })
    ));
    let read = c.node(leader).read(1, Consistency::Strong, |e| {
        e.read_series(&key(1), i64::MIN / 4, i64::MAX / 4)
    });
    assert_eq!(read.await.unwrap().unwrap().len(), 6);
    c.stop().await;
}

#[tokio::test]
async fn proposals_in_sixteen_groups_on_three_nodes_all_commit_over_grpc() {
    let c = Loopback::start(3, |_| {}).await;
    let groups: Vec<GroupId> = (1..=16).collect();
    c.create_groups(&groups).await;
    replicate(&c.nodes, &groups, 5).await;
    c.stop().await;
}

/// A learner added after the leader purged its log catches up from a real shard snapshot
/// (engine blocks + checkpoint) streamed over gRPC.
#[tokio::test]
async fn a_learner_catches_up_from_a_shard_snapshot_sent_over_grpc() {
    let c = Loopback::start(2, |config| {
        config.raft.snapshot_after_entries = 10;
        config.raft.keep_after_snapshot = 2;
    })
    .await;
    let first = &c.nodes[..1];
    let alone = BTreeMap::from([(1, c.members[&1].clone())]);
    c.node(1).create_group(1, Some(alone)).await.unwrap();
    for i in 0..20 {
        propose(first, 1, write(1, i)).await;
    }
    // Blocks on disk, so the snapshot has several files.
    propose(first, 1, Command::Seal).await;
    let sealed = c.node(1).metrics(1).unwrap().last_applied.unwrap().index;
    for i in 20..30 {
        propose(first, 1, write(1, i)).await;
    }
    // The leader snapshots past the seal and purges the log a new replica would need.
    poll("the leader purged its log past the seal", || {
        let m = c.node(1).metrics(1).unwrap();
        m.purged.is_some_and(|p| p.index >= sealed)
    })
    .await;
    let purged = c.node(1).metrics(1).unwrap().purged.unwrap().index;
    c.node(2).create_group(1, None).await.unwrap();
    c.node(1)
        .add_replica(1, 2, c.members[&2].clone())
        .await
        .expect("add replica");
    converge(&c.nodes, 1).await;
    // Installed from a snapshot (the log it would need is gone), not replayed.
    let m = c.node(2).metrics(1).unwrap();
    assert!(
        m.snapshot.is_some_and(|s| s.index >= purged),
        "node 2 has snapshot {:?}, the leader purged up to {purged}",
        m.snapshot
    );
    assert_eq!(steps(c.node(2), 1, 1).await, (0..30).collect());
    c.stop().await;
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
    fn query(
        &self,
        group: GroupId,
        _: Consistency,
        _: PartialQuery,
    ) -> BoxFuture<'_, Result<PartialResult, ReadError>> {
        Box::pin(async move { Err(ReadError::NoSuchGroup { node: 2, group }) })
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
    fn propose(
        &self,
        group: GroupId,
        _: Command,
    ) -> BoxFuture<'static, Result<strata_raft::types::Response, ProposeError>> {
        Box::pin(async move { Err(ProposeError::NoSuchGroup { node: 2, group }) })
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

async fn start_sink() -> (Arc<SnapshotSink>, String, oneshot::Sender<()>, Server) {
    let sink = Arc::new(SnapshotSink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, server) = serve(sink.clone(), listener);
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

const TURMOIL_PORT: u16 = 7000;

#[test]
fn three_hosts_replicate_over_a_simulated_network() {
    const GROUPS: [GroupId; 2] = [1, 2];
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .build();
    let nodes: Arc<Mutex<BTreeMap<NodeId, Node>>> = Arc::default();
    let members: BTreeMap<NodeId, NodeInfo> = (1..=3u64)
        .map(|id| (id, info(id, format!("n{id}:{TURMOIL_PORT}"))))
        .collect();
    for id in 1..=3u64 {
        let (nodes, members) = (Arc::clone(&nodes), members.clone());
        sim.host(format!("n{id}"), move || {
            let (nodes, members) = (Arc::clone(&nodes), members.clone());
            async move {
                // Groups are created here, so their Raft tasks run on this host.
                let net = GrpcNetwork::with_dialer(GrpcConfig::default(), Arc::new(TurmoilDialer));
                let node = Registry::open(config(id, |_| {}), net.router(id)).await?;
                for init in [false, true] {
                    create_groups(&node, &GROUPS, &members, init).await;
                }
                let incoming = turmoil_net::incoming(TURMOIL_PORT).await?;
                nodes.lock().unwrap().insert(id, Arc::clone(&node));
                let routes = tonic::service::Routes::new(grpc::service(node));
                grpc::serve_routes(routes, incoming, futures::future::pending()).await?;
                Ok(())
            }
        });
    }
    sim.client("driver", async move {
        // Hosts register once they listen.
        while nodes.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let list: Vec<Node> = nodes.lock().unwrap().values().cloned().collect();
        replicate(&list, &GROUPS, 3).await;
        Ok(())
    });
    sim.run().expect("simulation");
}
