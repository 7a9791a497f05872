//! One running node: its registry of Raft replicas, its gRPC server (Raft traffic and the
//! public API of [`crate::grpc_api`]), its HTTP API and its control loop. `strata start` runs one per process; `strata dev` runs three in one.
//! Disk, meta store, clock and network come from a [`NodeEnv`]: the machine's
//! ([`NodeServer::start`]) or the simulator's ([`NodeServer::start_with`], `tests/sim`).
//!
//! ## The control loop (every [`TICK`], on every node)
//! Every step only adds what is missing and is safe to repeat, so a node that crashes
//! half-way through any of them completes it on a later tick; nothing blocks a tick for
//! longer than a proposal's timeout (learner catch-up runs in its own task).
//! 1. **Meta replica.** A member of the initial cluster that hosts no meta replica creates
//!    one; the lowest id of the initial cluster initializes the meta group with all of them
//!    as voters. A joining node creates an empty replica, which the meta leader adds as a
//!    learner (step 3): it then reads the cluster state locally like every other node.
//! 2. **Registration.** If the meta state does not hold this node's address and zone, the
//!    node proposes `SetNode` through the meta leader (or, before it knows one, through its
//!    peers / join targets, following `NotLeader` hints).
//! 3. **Controller (meta leader only).** The ring (`SetRing`) if there is none; once every
//!    member of the initial cluster is registered, the placements of `strata_router::placement`
//!    for every shard group of the ring, proposed where they differ; every registered node
//!    that is not in the meta group's membership is added as a meta learner.
//! 4. **Replicas.** Every shard group whose placement names this node and that it does not
//!    host is created: initialized (with the placement as voters) if this node is the
//!    placement's slot 0, else empty for the leader to fill. A hosted shard replica the
//!    placement no longer names is dropped (data deleted) once neither the latest nor the
//!    committed membership this replica knows counts it as a voter.
//! 5. **Leader duties** for every shard group this node leads: placement nodes missing from
//!    the membership are added (learner → catch-up → voter, one task per node); members the
//!    placement dropped are retired: a voter is demoted to learner (the leader keeps talking to
//!    learners, so the node learns of it), and the learner is removed once it has acknowledged
//!    a heartbeat sent after its demotion was committed (so it knows, and drops its replica,
//!    step 4); and leadership is handed to the preferred leader (slot 0)
//!    once it is a fully caught-up voter and this node has led for [`PREFERRED_LEADER_DELAY`],
//!    so leaders spread again after a failover.
//! 6. **Storage upkeep** of every hosted shard replica. The leader proposes `Seal` then
//!    `Compact` when the engine's head holds a block and a half past its sealed boundary
//!    (`Engine::seal_due`), and `Retention` with its clock's time when it starts leading and
//!    every [`RETENTION_EVERY`] after; one such task per group at a time. Every replica
//!    snapshots once a seal has moved its sealed boundary, so the log entries the blocks now
//!    hold are purged (up to `keep_after_snapshot` behind) instead of waiting for
//!    `snapshot_after_entries` more. Without this the head would grow without bound.
//! 7. **Log lines** when this node starts hosting a group or a hosted group's leader changes.
//!
//! ## Invariants
//! - S1. Only slot 0 of a placement initializes a shard group, and only if it hosts no
//!   replica of it (on disk or running); only the initial cluster's lowest id initializes
//!   the meta group. A restarted node finds its replicas on disk and initializes nothing.
//! - S2. Placement is decided by the meta leader alone (one writer of `SetPlacement`).
//! - S3. [`NodeServer::shutdown`] stops, in order: HTTP (no new writes; in-flight requests
//!   finish), the control loop and the self-metrics sampler, leadership (handed to another voter of every group this node
//!   leads, when asked, waited on briefly), the self-metrics sampler, the Raft groups, the
//!   gRPC server. What `start`
//!   started, `shutdown` stops.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures::Stream;
use strata_raft::meta::{MetaCommand, MetaResponse, MetaState};
use strata_raft::network::Forwarder;
use strata_raft::network::grpc::{self, Dialer, GrpcConfig, GrpcNetwork, GrpcRouter, TcpDialer};
use strata_raft::registry::{Consistency, MetaStoreKind, ProposeError, Registry, RegistryConfig};
use strata_raft::types::{
    Command, GroupId, META_GROUP, Membership, NodeId, NodeInfo, RaftMetrics, Response,
};
use strata_router::placement;
use strata_router::remote_write::RemoteWriteLimits;
use strata_router::ring::{ShardId, group_of};
use strata_router::write::{Writer, WriterConfig};
use strata_shard::{Clock, Fs, StdFs, SystemClock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::server::Connected;

use crate::config::{NodeConfig, Peer};
use crate::http::HttpState;

/// A node's registry.
pub type Node = Arc<Registry<GrpcRouter>>;

/// Interval of the control loop.
pub const TICK: Duration = Duration::from_millis(250);
/// How often the leader of a shard group applies retention (step 6); a block is 2 h, so an
/// hour late at most is well inside what retention promises.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How long the meta group's applied index must stay put before a node snapshots its meta
/// replica (step 6).
pub const META_SNAPSHOT_QUIET: Duration = Duration::from_secs(10);
/// Remote-write requests one node handles at once; more get 503 + Retry-After.
pub const HTTP_WRITES_IN_FLIGHT_MAX: usize = 64;
/// Bound on a server's graceful stop before it is aborted.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for leadership to move away.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);
/// A group's leadership is handed to its preferred leader at most this often.
const TRANSFER_COOLDOWN: Duration = Duration::from_secs(10);
/// A leader that is not the preferred one keeps leading at least this long before it hands
/// leadership back: an election or an operator's transfer is not undone at once, and a
/// preferred leader that just came back has time to prove it stays.
pub const PREFERRED_LEADER_DELAY: Duration = Duration::from_secs(5);

/// The cluster-wide part of a node's configuration the control loop needs.
#[derive(Clone, Debug)]
struct Settings {
    me: NodeId,
    info: NodeInfo,
    initial: Vec<Peer>,
    join: Vec<Peer>,
    shards: u32,
    vnodes_per_shard: u32,
    rf: usize,
    propose_timeout: Duration,
    /// Prefix of log lines.
    name: String,
}

/// A node's HTTP server: its address, its stop signal and its task.
struct HttpServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// What a node runs on: its disk, where the meta group's state lives, its clock and how it
/// reaches other nodes. [`NodeEnv::machine`] is the real machine; the simulator (`tests/sim`)
/// passes its simulated disk, an in-memory meta store, simulated time and network, so a seed
/// replays a run exactly.
#[derive(Clone)]
pub struct NodeEnv {
    pub fs: Arc<dyn Fs>,
    pub meta_store: MetaStoreKind,
    pub clock: Arc<dyn Clock>,
    pub dialer: Arc<dyn Dialer>,
    /// The simulator's negative controls (deliberate bugs); off unless it turns them on.
    #[cfg(feature = "fault-injection")]
    pub faults: strata_raft::faults::Faults,
}

impl NodeEnv {
    /// Real files under `config.data_dir` (the meta state in sled there), the system clock and
    /// TCP.
    pub fn machine(config: &NodeConfig) -> NodeEnv {
        NodeEnv {
            fs: Arc::new(StdFs),
            meta_store: MetaStoreKind::Sled(config.data_dir.join("meta-sled")),
            clock: Arc::new(SystemClock),
            dialer: Arc::new(TcpDialer),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
    }
}

/// One running node (module doc).
pub struct NodeServer {
    settings: Settings,
    registry: Node,
    router: GrpcRouter,
    /// What both write front ends (HTTP, gRPC) share.
    write_state: Arc<HttpState<GrpcRouter>>,
    /// The PromQL front end (`crate::query`).
    query: Arc<crate::query::QueryService>,
    /// Samples the node's Raft state for its `/metrics` page.
    sampler: crate::metrics::Sampler,
    root: PathBuf,
    raft_stop: oneshot::Sender<()>,
    raft_server: JoinHandle<Result<(), String>>,
    control_stop: watch::Sender<bool>,
    control: JoinHandle<()>,
    http: Option<HttpServer>,
}

impl NodeServer {
    /// Opens the node's registry under `config.data_dir` (restarting every replica on its
    /// disk), serves Raft gRPC on `raft_listener` and starts the control loop. Returns at
    /// once; [`NodeServer::wait_ready`] waits for the cluster.
    pub async fn start(
        config: &NodeConfig,
        raft_listener: tokio::net::TcpListener,
    ) -> anyhow::Result<NodeServer> {
        let env = NodeEnv::machine(config);
        Self::start_with(config, env, grpc::tcp_incoming(raft_listener)).await
    }

    /// [`Self::start`] on `env` (its disk, meta store, clock and network), serving Raft gRPC
    /// and the public API on the connections `incoming` yields: the simulator's entry.
    pub async fn start_with<I, IO, IE>(
        config: &NodeConfig,
        env: NodeEnv,
        incoming: I,
    ) -> anyhow::Result<NodeServer>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        config.validate()?;
        let id = config.node_id;
        let info = NodeInfo {
            addr: config.raft_addr.clone(),
            zone: config.zone.clone(),
        };
        let root = config.data_dir.clone();
        env.fs
            .create_dir_all(&root)
            .with_context(|| format!("create {}", root.display()))?;
        let mut registry_config = RegistryConfig::new(id, Arc::clone(&env.fs), &root);
        registry_config.meta_store = env.meta_store;
        #[cfg(feature = "fault-injection")]
        {
            registry_config.faults = env.faults;
        }
        registry_config.raft.heartbeat_ms = config.raft.heartbeat_ms;
        registry_config.raft.snapshot_after_entries = config.raft.snapshot_after_entries;
        registry_config.raft.keep_after_snapshot = config.raft.keep_after_snapshot;
        registry_config.raft.election_timeout_min_ms = config.raft.election_timeout_min_ms;
        registry_config.raft.election_timeout_max_ms = config.raft.election_timeout_max_ms;
        registry_config.propose_timeout = Duration::from_millis(config.raft.propose_timeout_ms);
        let net = GrpcNetwork::with_dialer(GrpcConfig::default(), env.dialer);
        let registry = Registry::open(registry_config, net.router(id))
            .await
            .with_context(|| format!("node {id}: open its data at {}", root.display()))?;
        let router = net.router(id);
        let writer = Writer::new(
            Arc::clone(&registry),
            router.clone(),
            WriterConfig {
                // C1 bounds both below a year, so they fit an i64.
                accept_past_ms: i64::try_from(config.write.accept_past_ms)?,
                accept_future_ms: i64::try_from(config.write.accept_future_ms)?,
                ..WriterConfig::default()
            },
            Arc::clone(&env.clock),
        );
        // One write state for both front ends: they share the in-flight bound.
        let write_state = Arc::new(HttpState {
            writer: Arc::new(writer),
            limits: RemoteWriteLimits::default(),
            multi_tenant: config.multi_tenant,
            in_flight: Arc::new(Semaphore::new(HTTP_WRITES_IN_FLIGHT_MAX)),
            metrics: crate::metrics::NodeMetrics::new(id),
        });
        let query = Arc::new(crate::query::QueryService {
            registry: Arc::clone(&registry),
            router: router.clone(),
            writer: Arc::clone(&write_state.writer),
            clock: Arc::clone(&env.clock),
            multi_tenant: config.multi_tenant,
            limits: config.query.clone(),
            running: Mutex::new(BTreeMap::new()),
        });
        let sampler = crate::metrics::spawn_sampler(Arc::clone(&registry));
        let (raft_stop, stopped) = oneshot::channel::<()>();
        let handler: Arc<dyn strata_raft::network::RaftHandler> = Arc::clone(&registry) as _;
        let routes = tonic::service::Routes::new(grpc::service(handler)).add_service(
            crate::grpc_api::service(
                Arc::clone(&write_state),
                Arc::clone(&registry),
                Arc::clone(&query),
            ),
        );
        let raft_server = tokio::spawn(async move {
            grpc::serve_routes(routes, incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        let settings = Settings {
            me: id,
            info,
            initial: config.initial_cluster(),
            join: config.join.clone(),
            shards: config.shards,
            vnodes_per_shard: config.vnodes_per_shard,
            rf: config.replication_factor,
            propose_timeout: Duration::from_millis(config.raft.propose_timeout_ms),
            name: format!("strata node {id}"),
        };
        let (control_stop, stop_rx) = watch::channel(false);
        let controller = Controller {
            s: settings.clone(),
            registry: Arc::clone(&registry),
            router: net.router(id),
            adding: Arc::new(Mutex::new(BTreeSet::new())),
            retiring: BTreeMap::new(),
            last_transfer: BTreeMap::new(),
            upkeeping: Arc::new(Mutex::new(BTreeSet::new())),
            last_retention: BTreeMap::new(),
            sealed_seen: BTreeMap::new(),
            meta_applied: None,
            meta_snapshot_asked: 0,
            leaders: BTreeMap::new(),
            last_error: BTreeMap::new(),
            said_ring: false,
            clock: env.clock,
        };
        let control = tokio::spawn(controller.run(stop_rx));
        Ok(NodeServer {
            settings,
            registry,
            router,
            write_state,
            query,
            sampler,
            root,
            raft_stop,
            raft_server,
            control_stop,
            control,
            http: None,
        })
    }

    pub fn id(&self) -> NodeId {
        self.settings.me
    }

    pub fn info(&self) -> &NodeInfo {
        &self.settings.info
    }

    pub fn registry(&self) -> &Node {
        &self.registry
    }

    /// The node's side of the gRPC transport (forwards proposals to other nodes).
    pub fn router(&self) -> &GrpcRouter {
        &self.router
    }

    /// The node's write path (what both write front ends call).
    pub fn writer(&self) -> &Writer<GrpcRouter> {
        &self.write_state.writer
    }

    /// The address of the HTTP API, once served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// Waits (at most `timeout`) until the node holds the ring and every shard group placed
    /// on it runs here with a known leader.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = self.not_ready().await;
            match missing {
                None => return Ok(()),
                Some(why) if Instant::now() >= deadline => {
                    anyhow::bail!("node {} not ready after {timeout:?}: {why}", self.id())
                }
                Some(_) => tokio::time::sleep(TICK).await,
            }
        }
    }

    /// Why the node is not ready yet, or `None` when it is.
    async fn not_ready(&self) -> Option<String> {
        let Ok(state) = self
            .registry
            .read_meta(Consistency::Any, MetaState::clone)
            .await
        else {
            return Some("no meta replica yet".into());
        };
        let Some((_, ring)) = state.ring() else {
            return Some("no ring yet".into());
        };
        for s in 0..ring.shards {
            let group = group_of(ShardId(s));
            let Some(placement) = state.placement(group) else {
                return Some(format!("group {group} is not placed yet"));
            };
            if placement.contains(&self.id()) {
                if !self.registry.groups().contains(&group) {
                    return Some(format!("group {group} does not run here yet"));
                }
                if self.registry.leader(group).is_none() {
                    return Some(format!("group {group} has no leader yet"));
                }
            }
        }
        if self.registry.leader(META_GROUP).is_none() {
            return Some("the meta group has no leader yet".into());
        }
        None
    }

    /// Serves the HTTP API (remote write, the PromQL query API) on `listener`.
    pub fn serve_http(&mut self, listener: tokio::net::TcpListener) -> anyhow::Result<SocketAddr> {
        anyhow::ensure!(
            self.http.is_none(),
            "node {} already serves HTTP",
            self.id()
        );
        let addr = listener.local_addr()?;
        let state = Arc::clone(&self.write_state);
        let (stop, stopped) = oneshot::channel::<()>();
        let app = crate::http::routes(state).merge(crate::query::routes(Arc::clone(&self.query)));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        self.http = Some(HttpServer { addr, stop, task });
        Ok(addr)
    }

    /// Start-up lines: where the node listens and keeps its data, the ring, which groups it
    /// hosts and who leads them.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        let name = &self.settings.name;
        let _ = writeln!(
            out,
            "{name} ({}): Raft gRPC on {}, data in {}",
            self.settings.info.zone,
            self.settings.info.addr,
            self.root.display()
        );
        if let Some(addr) = self.http_addr() {
            let _ = writeln!(out, "{name}: remote write at http://{addr}/api/v1/write");
        }
        if let Ok(Some((epoch, ring))) = self
            .registry
            .read_meta(Consistency::Any, |s| s.ring().map(|(e, r)| (e, *r)))
            .await
        {
            let _ = writeln!(
                out,
                "{name}: ring epoch {epoch}: {} shards, {} vnodes each",
                ring.shards, ring.vnodes_per_shard
            );
        }
        for group in self.registry.groups() {
            let leader = self
                .registry
                .leader(group)
                .map_or_else(|| "none yet".to_string(), |l| format!("node {l}"));
            let _ = writeln!(out, "{name}: hosts {}, leader {leader}", group_name(group));
        }
        out
    }

    /// Stops the node (S3). With `handoff`, every group this node leads is first handed to
    /// another voter, so writes move on without waiting for an election timeout.
    pub async fn shutdown(self, handoff: bool) {
        let name = self.settings.name.clone();
        if let Some(h) = self.http {
            let _ = h.stop.send(());
            match tokio::time::timeout(SERVER_STOP_TIMEOUT, h.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("{name}: HTTP server {} failed: {e}", h.addr),
                Ok(Err(e)) => eprintln!("{name}: HTTP server {} task failed: {e}", h.addr),
                Err(_) => eprintln!("{name}: HTTP server {} did not stop in time", h.addr),
            }
        }
        let _ = self.control_stop.send(true);
        let _ = self.control.await;
        self.sampler.stop().await;
        if handoff {
            hand_off_leadership(&self.registry, &name).await;
        }
        self.registry.shutdown().await;
        drop(self.registry);
        let _ = self.raft_stop.send(());
        let mut server = self.raft_server;
        match tokio::time::timeout(SERVER_STOP_TIMEOUT, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("{name}: gRPC server failed: {e}"),
            Ok(Err(e)) => eprintln!("{name}: gRPC server task failed: {e}"),
            Err(_) => {
                eprintln!("{name}: gRPC server did not stop within {SERVER_STOP_TIMEOUT:?}");
                server.abort();
                let _ = server.await;
            }
        }
    }
}

/// `strata start`: runs one node until Ctrl-C or SIGTERM, then stops it gracefully (S3, with
/// leadership handed to other nodes).
pub fn run(config: &NodeConfig) -> anyhow::Result<()> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let id = config.node_id;
        let raft = tokio::net::TcpListener::bind(&config.raft_addr)
            .await
            .with_context(|| format!("node {id}: bind raft_addr {}", config.raft_addr))?;
        let http = tokio::net::TcpListener::bind(&config.http_addr)
            .await
            .with_context(|| format!("node {id}: bind http_addr {}", config.http_addr))?;
        let mut node = NodeServer::start(config, raft).await?;
        let addr = node.serve_http(http)?;
        println!(
            "strata node {id} ({}): Raft gRPC on {}, remote write at http://{addr}/api/v1/write, \
             data in {}",
            config.zone,
            config.raft_addr,
            config.data_dir.display()
        );
        let initial: Vec<String> = config
            .initial_cluster()
            .iter()
            .map(|p| format!("{}@{}", p.id, p.raft_addr))
            .collect();
        if initial.is_empty() {
            let join: Vec<String> = config
                .join
                .iter()
                .map(|p| format!("{}@{}", p.id, p.raft_addr))
                .collect();
            println!(
                "strata node {id}: joining the cluster through {}",
                join.join(", ")
            );
        } else {
            println!("strata node {id}: initial cluster {}", initial.join(", "));
        }
        // Say where things stand once the node is ready, without holding up a stop signal.
        let signal = tokio::select! {
            s = wait_for_signal() => s,
            ready = node.wait_ready(Duration::from_secs(600)) => {
                match ready {
                    Ok(()) => print!("{}", node.describe().await),
                    Err(e) => eprintln!("strata node {id}: {e:#}"),
                }
                println!("strata node {id}: running; Ctrl-C or SIGTERM stops it");
                wait_for_signal().await
            }
        };
        println!("strata node {id}: {signal}: stopping writes, handing leadership away");
        node.shutdown(true).await;
        println!("strata node {id}: stopped");
        Ok(())
    })
}

/// `meta` or `shard N (group G)`.
pub fn group_name(group: GroupId) -> String {
    if group == META_GROUP {
        "the meta group".to_string()
    } else {
        format!("shard {} (group {group})", group - 1)
    }
}

/// Hands every group `registry` leads to the most caught-up other voter and waits (bounded)
/// until none is led here.
async fn hand_off_leadership(registry: &Node, name: &str) {
    let me = registry.node();
    let led: Vec<GroupId> = registry
        .groups()
        .into_iter()
        .filter(|g| registry.is_leader(*g))
        .collect();
    let mut asked = Vec::new();
    for &group in &led {
        let Some(metrics) = registry.metrics(group) else {
            continue;
        };
        let best = metrics.replication.as_ref().and_then(|r| {
            let voters: BTreeSet<NodeId> =
                metrics.membership_config.membership().voter_ids().collect();
            r.iter()
                .filter(|(n, _)| **n != me && voters.contains(n))
                .max_by_key(|(n, m)| (m.map(|l| l.index), std::cmp::Reverse(**n)))
                .map(|(n, _)| *n)
        });
        let Some(to) = best else {
            continue; // No other voter: nobody to hand it to.
        };
        match registry.transfer_leader(group, to).await {
            Ok(()) => asked.push(group),
            Err(e) => eprintln!(
                "{name}: handing {} to node {to} failed: {e}",
                group_name(group)
            ),
        }
    }
    let deadline = Instant::now() + HANDOFF_TIMEOUT;
    while Instant::now() < deadline && asked.iter().any(|g| registry.is_leader(*g)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !asked.is_empty() {
        let kept = asked.iter().filter(|g| registry.is_leader(**g)).count();
        println!(
            "{name}: handed leadership of {} of {} groups to other nodes",
            asked.len() - kept,
            asked.len()
        );
    }
}

/// The control loop's state (module doc).
struct Controller {
    s: Settings,
    registry: Node,
    router: GrpcRouter,
    /// `(group, node)` additions in flight (learner catch-up can take a while).
    adding: Arc<Mutex<BTreeSet<(GroupId, NodeId)>>>,
    /// `(group, learner)` the placement dropped → when this leader first saw the learner's
    /// demotion committed (step 5, [`Controller::retire`]).
    retiring: BTreeMap<(GroupId, NodeId), Instant>,
    last_transfer: BTreeMap<GroupId, Instant>,
    /// Shard groups with upkeep commands in flight from this node (step 6).
    upkeeping: Arc<Mutex<BTreeSet<GroupId>>>,
    /// When this node last proposed `Retention` for a group it leads (step 6).
    last_retention: BTreeMap<GroupId, Instant>,
    /// Each hosted shard replica's sealed boundary at the last tick (step 6).
    sealed_seen: BTreeMap<GroupId, i64>,
    /// The meta replica's applied index at the last tick and since when it has been so.
    meta_applied: Option<(u64, Instant)>,
    /// The meta applied index this node last asked a snapshot at.
    meta_snapshot_asked: u64,
    /// The leader of each hosted group at the last tick and since when this node has seen it
    /// lead, for log lines and [`PREFERRED_LEADER_DELAY`].
    leaders: BTreeMap<GroupId, (Option<NodeId>, Instant)>,
    /// The last error logged per topic: an error is logged when it changes, not every tick.
    last_error: BTreeMap<String, String>,
    said_ring: bool,
    /// Wall-clock time for what the meta group records (the ring's epoch start).
    clock: Arc<dyn Clock>,
}

impl Controller {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            self.tick().await;
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn report(&mut self, topic: &str, result: anyhow::Result<()>) {
        match result {
            Ok(()) => {
                self.last_error.remove(topic);
            }
            Err(e) => {
                let text = format!("{e:#}");
                if self.last_error.get(topic) != Some(&text) {
                    eprintln!("{}: {topic}: {text} (retrying)", self.s.name);
                    self.last_error.insert(topic.to_string(), text);
                }
            }
        }
    }

    async fn tick(&mut self) {
        let r = self.ensure_meta_replica().await;
        self.report("meta replica", r);
        let Ok(state) = self
            .registry
            .read_meta(Consistency::Any, MetaState::clone)
            .await
        else {
            return;
        };
        if state.node(self.s.me) != Some(&self.s.info) {
            let cmd = MetaCommand::SetNode {
                id: self.s.me,
                info: self.s.info.clone(),
            };
            let r = self.propose_meta(cmd).await.map(drop);
            self.report("register with the meta group", r);
        }
        if self.registry.is_leader(META_GROUP) {
            let r = self.control(&state).await;
            self.report("controller", r);
        }
        if !self.said_ring
            && let Some((epoch, ring)) = state.ring()
        {
            self.said_ring = true;
            if (ring.shards, ring.vnodes_per_shard) != (self.s.shards, self.s.vnodes_per_shard) {
                println!(
                    "{}: the cluster's ring (epoch {epoch}) has {} shards × {} vnodes; the \
                     configured shards = {}, vnodes_per_shard = {} apply only to a new cluster",
                    self.s.name,
                    ring.shards,
                    ring.vnodes_per_shard,
                    self.s.shards,
                    self.s.vnodes_per_shard
                );
            }
        }
        let r = self.ensure_replicas(&state).await;
        self.report("create replicas", r);
        let r = self.drop_retired(&state).await;
        self.report("drop retired replicas", r);
        self.lead(&state).await;
        self.upkeep().await;
        self.log_leaders();
    }

    /// Step 6: storage upkeep of every hosted replica.
    async fn upkeep(&mut self) {
        self.snapshot_meta_when_quiet().await;
        for group in self.registry.groups() {
            if group == META_GROUP {
                continue;
            }
            let Ok((sealed_until, seal_due)) = self
                .registry
                .read(group, Consistency::Any, |e| {
                    (e.sealed_until_ms(), e.seal_due())
                })
                .await
            else {
                continue;
            };
            // Every replica: once a seal moved the boundary, snapshot, so the log entries the
            // seal made redundant can be purged (else they wait for `snapshot_after_entries`).
            let before = self.sealed_seen.insert(group, sealed_until);
            if before.is_some_and(|b| b < sealed_until)
                && let Err(e) = self.registry.trigger_snapshot(group).await
            {
                eprintln!(
                    "{}: snapshot of {} after a seal: {e}",
                    self.s.name,
                    group_name(group)
                );
            }
            if !self.registry.is_leader(group) {
                continue;
            }
            let mut commands = Vec::new();
            if seal_due {
                commands.extend([Command::Seal, Command::Compact]);
            }
            if self
                .last_retention
                .get(&group)
                .is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
            {
                commands.push(Command::Retention {
                    now_ms: self.clock.now_ms(),
                });
            }
            if commands.is_empty()
                || !self
                    .upkeeping
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(group)
            {
                continue;
            }
            if commands
                .iter()
                .any(|c| matches!(c, Command::Retention { .. }))
            {
                self.last_retention.insert(group, Instant::now());
            }
            let (registry, upkeeping, name) = (
                Arc::clone(&self.registry),
                Arc::clone(&self.upkeeping),
                self.s.name.clone(),
            );
            // Its own task: a seal of a large head takes longer than a tick.
            tokio::spawn(async move {
                for command in commands {
                    let what = command.to_string();
                    if let Err(e) = registry.propose(group, command).await {
                        eprintln!("{name}: {what} of {} failed: {e}", group_name(group));
                        break;
                    }
                }
                upkeeping
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&group);
            });
        }
    }

    /// Step 1.
    async fn ensure_meta_replica(&self) -> anyhow::Result<()> {
        if self.registry.groups().contains(&META_GROUP) {
            return Ok(());
        }
        let initializer = self.s.initial.iter().map(|p| p.id).min();
        let members = (initializer == Some(self.s.me)).then(|| {
            self.s
                .initial
                .iter()
                .map(|p| {
                    let zone = if p.id == self.s.me {
                        self.s.info.zone.clone()
                    } else {
                        String::new() // The meta state has it once the node registers.
                    };
                    (
                        p.id,
                        NodeInfo {
                            addr: p.raft_addr.clone(),
                            zone,
                        },
                    )
                })
                .collect()
        });
        let initializing = members.is_some();
        self.registry
            .create_group(META_GROUP, members)
            .await
            .context("create the meta replica")?;
        println!(
            "{}: created its meta replica{}",
            self.s.name,
            if initializing {
                " and initialized the meta group with the initial cluster"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// Proposes a meta command through the meta leader: this node, the leader it knows, or
    /// else its peers and join targets in turn, following one `NotLeader` hint each.
    async fn propose_meta(&self, cmd: MetaCommand) -> anyhow::Result<MetaResponse> {
        let what = cmd.to_string();
        let command = Command::Meta(cmd);
        let mut targets: Vec<(NodeId, NodeInfo)> = Vec::new();
        if let Some(leader) = self.registry.leader_info(META_GROUP) {
            targets.push(leader);
        }
        for p in self.s.initial.iter().chain(&self.s.join) {
            if p.id != self.s.me && !targets.iter().any(|(id, _)| *id == p.id) {
                targets.push((
                    p.id,
                    NodeInfo {
                        addr: p.raft_addr.clone(),
                        zone: String::new(),
                    },
                ));
            }
        }
        let mut last = None;
        for (mut to, mut info) in targets {
            for _ in 0..2 {
                let result = if to == self.s.me {
                    self.registry.propose(META_GROUP, command.clone()).await
                } else {
                    self.router
                        .forward(
                            to,
                            &info,
                            META_GROUP,
                            command.clone(),
                            self.s.propose_timeout,
                        )
                        .await
                };
                match result {
                    Ok(Response::Meta(MetaResponse::Refused(why))) => {
                        anyhow::bail!("the meta group refused {what}: {why}")
                    }
                    Ok(Response::Meta(r)) => return Ok(r),
                    Ok(other) => anyhow::bail!("the meta group answered {what} with {other:?}"),
                    Err(ProposeError::NotLeader {
                        leader_hint: Some((id, hint)),
                        ..
                    }) => {
                        (to, info) = (id, hint);
                    }
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        match last {
            Some(e) => Err(e).with_context(|| format!("propose {what}")),
            None => anyhow::bail!("propose {what}: no meta leader known yet"),
        }
    }

    /// Step 3 (this node leads the meta group).
    async fn control(&self, state: &MetaState) -> anyhow::Result<()> {
        if state.ring().is_none() {
            self.propose_meta(MetaCommand::SetRing {
                shards: self.s.shards,
                vnodes_per_shard: self.s.vnodes_per_shard,
                now_ms: self.clock.now_ms(),
            })
            .await?;
            return Ok(()); // Placements next tick, from the state with the ring.
        }
        // Meta learners: every registered node outside the meta membership.
        if let Some(metrics) = self.registry.metrics(META_GROUP) {
            let membership = metrics.membership_config.membership();
            let members: BTreeSet<NodeId> = membership
                .voter_ids()
                .chain(membership.learner_ids())
                .collect();
            for (id, info) in state.nodes() {
                if !members.contains(id) {
                    self.registry
                        .add_learner(META_GROUP, *id, info.clone(), false)
                        .await
                        .with_context(|| format!("add node {id} to the meta group as a learner"))?;
                    println!(
                        "{}: node {id} ({info}) joined the meta group as a learner",
                        self.s.name
                    );
                }
            }
        }
        let waiting: Vec<NodeId> = self
            .s
            .initial
            .iter()
            .map(|p| p.id)
            .filter(|id| state.node(*id).is_none())
            .collect();
        if !waiting.is_empty() {
            anyhow::bail!("placement waits for initial nodes {waiting:?} to register");
        }
        let Some((_, ring)) = state.ring() else {
            return Ok(());
        };
        let groups: Vec<GroupId> = (0..ring.shards).map(|s| group_of(ShardId(s))).collect();
        let wanted = placement::plan(state.nodes(), state.placements(), &groups, self.s.rf);
        for (group, replicas) in wanted {
            if replicas.is_empty() || state.placement(group) == Some(replicas.as_slice()) {
                continue;
            }
            self.propose_meta(MetaCommand::SetPlacement {
                group,
                replicas: replicas.clone(),
            })
            .await?;
            println!(
                "{}: placed {} on nodes {replicas:?}",
                self.s.name,
                group_name(group)
            );
        }
        Ok(())
    }

    /// Step 4.
    async fn ensure_replicas(&self, state: &MetaState) -> anyhow::Result<()> {
        let hosted: BTreeSet<GroupId> = self.registry.groups().into_iter().collect();
        for (&group, replicas) in state.placements() {
            if hosted.contains(&group) || !replicas.contains(&self.s.me) {
                continue;
            }
            let members = if replicas[0] == self.s.me {
                let members: Option<BTreeMap<NodeId, NodeInfo>> = replicas
                    .iter()
                    .map(|n| state.node(*n).map(|i| (*n, i.clone())))
                    .collect();
                Some(members.context("a placement names an unregistered node")?)
            } else {
                None
            };
            let initialized = members.is_some();
            self.registry
                .create_group(group, members)
                .await
                .with_context(|| format!("create {}", group_name(group)))?;
            println!(
                "{}: now hosts {}{}",
                self.s.name,
                group_name(group),
                if initialized {
                    format!(" (initialized with nodes {replicas:?})")
                } else {
                    String::new()
                }
            );
        }
        Ok(())
    }

    /// Step 4, the other way: drops this node's replica of every shard group whose placement
    /// no longer names it, once neither its latest nor its committed membership counts it as a
    /// voter (the leader demotes before it removes, [`Controller::retire`]). Until then the
    /// replica may still be needed for a quorum, so it stays.
    async fn drop_retired(&self, state: &MetaState) -> anyhow::Result<()> {
        for group in self.registry.groups() {
            let Some(placement) = state.placement(group) else {
                continue;
            };
            let Some(metrics) = self.registry.metrics(group) else {
                continue;
            };
            let me = self.s.me;
            let voter = |m: &Membership| m.voter_ids().any(|v| v == me);
            if group == META_GROUP
                || placement.contains(&me)
                || voter(metrics.membership_config.membership())
                || voter(metrics.committed_membership_config.membership())
            {
                continue;
            }
            self.registry
                .drop_group(group)
                .await
                .with_context(|| format!("drop the retired replica of {}", group_name(group)))?;
            println!(
                "{}: dropped its replica of {} (the placement moved it to nodes {placement:?})",
                self.s.name,
                group_name(group)
            );
        }
        Ok(())
    }

    /// Step 5.
    async fn lead(&mut self, state: &MetaState) {
        for group in self.registry.groups() {
            if group == META_GROUP || !self.registry.is_leader(group) {
                continue;
            }
            let (Some(metrics), Some(wanted)) =
                (self.registry.metrics(group), state.placement(group))
            else {
                continue;
            };
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            for &node in wanted.iter().filter(|n| !voters.contains(n)) {
                let Some(info) = state.node(node).cloned() else {
                    continue;
                };
                if !self
                    .adding
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((group, node))
                {
                    continue;
                }
                let (registry, adding, name) = (
                    Arc::clone(&self.registry),
                    Arc::clone(&self.adding),
                    self.s.name.clone(),
                );
                tokio::spawn(async move {
                    println!("{name}: adding node {node} to {}", group_name(group));
                    match registry.add_replica(group, node, info).await {
                        Ok(()) => {
                            println!("{name}: node {node} is a voter of {}", group_name(group))
                        }
                        Err(e) => eprintln!(
                            "{name}: adding node {node} to {} failed: {e} (retrying)",
                            group_name(group)
                        ),
                    }
                    adding
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&(group, node));
                });
            }
            self.retire(group, &metrics, wanted).await;
            // Hand leadership back to the preferred leader once it is a caught-up voter.
            let preferred = wanted[0];
            let caught_up = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&preferred).copied().flatten())
                .map(|m| Some(m.index) >= metrics.last_log_index)
                .unwrap_or(false);
            let cooled = self
                .last_transfer
                .get(&group)
                .is_none_or(|t| t.elapsed() >= TRANSFER_COOLDOWN)
                && self.leaders.get(&group).is_some_and(|(l, since)| {
                    *l == Some(self.s.me) && since.elapsed() >= PREFERRED_LEADER_DELAY
                });
            if preferred != self.s.me && voters.contains(&preferred) && caught_up && cooled {
                self.last_transfer.insert(group, Instant::now());
                if let Err(e) = self.registry.transfer_leader(group, preferred).await {
                    eprintln!(
                        "{}: handing {} to its preferred leader {preferred} failed: {e}",
                        self.s.name,
                        group_name(group)
                    );
                }
            }
        }
    }

    /// Step 6 for the meta replica: snapshot it once its applied index has not moved for
    /// [`META_SNAPSHOT_QUIET`] and lies past its last snapshot, so its log is purged (it keeps
    /// no entries behind a snapshot) and stops pinning old WAL segments.
    async fn snapshot_meta_when_quiet(&mut self) {
        let Some(metrics) = self.registry.metrics(META_GROUP) else {
            return;
        };
        let applied = metrics.last_applied.map_or(0, |l| l.index);
        let snapshot = metrics.snapshot.map_or(0, |l| l.index);
        let since = match self.meta_applied {
            Some((index, since)) if index == applied => since,
            _ => {
                self.meta_applied = Some((applied, Instant::now()));
                return;
            }
        };
        // Once per applied index: a snapshot under way does not show in the metrics yet.
        if applied > snapshot.max(self.meta_snapshot_asked)
            && since.elapsed() >= META_SNAPSHOT_QUIET
        {
            self.meta_snapshot_asked = applied;
            if let Err(e) = self.registry.trigger_snapshot(META_GROUP).await {
                eprintln!("{}: snapshot of the meta group: {e}", self.s.name);
            }
        }
    }

    /// Step 5, members the placement dropped (this node leads `group`): a voter is demoted to
    /// learner; a learner is removed once it has acknowledged a heartbeat sent after this node
    /// saw it committed as a learner. That heartbeat carried a commit index past the demotion,
    /// so the retired node knows it no longer counts towards a quorum and drops its replica
    /// (step 4, [`Controller::drop_retired`]) instead of waiting forever for a leader that has
    /// stopped talking to it.
    async fn retire(&mut self, group: GroupId, metrics: &RaftMetrics, wanted: &[NodeId]) {
        let membership = metrics.membership_config.membership();
        let committed = metrics.committed_membership_config.membership();
        let group_name = group_name(group);
        let mut changes = Vec::new();
        for node in membership.voter_ids().filter(|n| !wanted.contains(n)) {
            let r = self.registry.demote_voter(group, node).await;
            changes.push((format!("demote node {node} to learner in {group_name}"), r));
        }
        let now = Instant::now();
        self.retiring
            .retain(|(g, n), _| *g != group || !wanted.contains(n));
        for node in membership.learner_ids().filter(|n| !wanted.contains(n)) {
            if committed.voter_ids().any(|v| v == node) {
                continue; // The demotion is not committed yet.
            }
            let since = *self.retiring.entry((group, node)).or_insert(now);
            let acked_after = self
                .registry
                .acked_send_age(group, node)
                .is_some_and(|age| age < since.elapsed());
            if acked_after {
                self.retiring.remove(&(group, node));
                let r = self.registry.remove_replica(group, node).await;
                changes.push((format!("remove learner {node} from {group_name}"), r));
            }
        }
        for (what, r) in changes {
            if r.is_ok() {
                println!("{}: {what}: done", self.s.name);
            }
            let r = r.with_context(|| what.clone());
            self.report(&format!("membership of group {group}"), r);
        }
    }

    /// Step 6.
    fn log_leaders(&mut self) {
        for group in self.registry.groups() {
            let leader = self.registry.leader(group);
            if self.leaders.get(&group).is_some_and(|(l, _)| *l == leader) {
                continue;
            }
            self.leaders.insert(group, (leader, Instant::now()));
            if let Some(l) = leader {
                let who = if l == self.s.me {
                    "this node".to_string()
                } else {
                    format!("node {l}")
                };
                println!("{}: {} is led by {who}", self.s.name, group_name(group));
            }
        }
    }
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM; names which came.
pub(crate) async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "terminated",
            },
            Err(e) => {
                eprintln!("strata: cannot watch SIGTERM ({e}); Ctrl-C still works");
                let _ = tokio::signal::ctrl_c().await;
                "interrupted"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}
