//! `strata dev`: a three-node, three-zone cluster in one process, on loopback.
//!
//! [`Cluster::start_dev`] runs nodes 1, 2 and 3 (zones `zone-a`, `zone-b`, `zone-c`). Each is
//! a [`Registry`] over its own gRPC client ([`GrpcNetwork`]) and serves its Raft traffic on
//! `127.0.0.1` ([`grpc::serve_tcp`]); every group (the meta group 0 and shard groups
//! `1..=shards`) has one replica on each node. The nodes talk to each other over real TCP,
//! exactly as three processes would; only the process is shared.
//!
//! ## Layout under the data directory
//! `dev-cluster.addrs` the nodes' addresses (written once, before any group exists) ·
//! `node-N/` node N's registry root (`StdFs`: WAL, shard groups) ·
//! `node-N/meta-sled/` node N's meta state machine (sled).
//!
//! ## Start-up (the same steps on a first start and a restart)
//! 1. Addresses: from `dev-cluster.addrs` if present, so a restarted node listens where the
//!    Raft memberships say it does (they store addresses); else ports from `base_port` (0: the
//!    OS picks), then recorded durably.
//! 2. Open each node's registry (it restarts every group found on its disk) and serve it.
//! 3. The meta group: on a fresh start, created on nodes 2 and 3, then on node 1, which
//!    initializes it with all three.
//! 4. Through the meta leader (retried on `NotLeader`/`Timeout`, bounded): whatever the meta
//!    state lacks of `SetNode` × 3, `SetRing` (epoch 1) and a `SetPlacement` of every shard
//!    group on all three nodes. On a restart the state has all of it, so nothing is proposed
//!    and the ring stays at its epoch (the stored ring's shard count wins over `shards`).
//! 5. Shard groups no node hosts yet: created on every node, initialized on node
//!    `(s % 3) + 1` so leaders start spread.
//! 6. Wait until every group has a leader.
//!
//! Each step only adds what is missing, so a start interrupted half-way completes on the next.
//!
//! ## Invariants
//! - D1. Binds 127.0.0.1 only.
//! - D2. Bootstrap never proposes what the meta state already holds: restarting does not start
//!   a new ring epoch.
//! - D3. [`Cluster::shutdown`] stops every Raft group, then every server, and waits for both;
//!   what `start_dev` started, it stops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::http::HttpState;
use strata_raft::meta::{MetaCommand, MetaResponse, MetaState};
use strata_raft::network::grpc::{self, GrpcConfig, GrpcNetwork, GrpcRouter};
use strata_raft::registry::{
    Consistency, MetaStoreKind, ProposeError, ReadError, Registry, RegistryConfig,
};
use strata_raft::types::{Command, GroupId, META_GROUP, NodeId, NodeInfo, Response};
use strata_router::remote_write::RemoteWriteLimits;
use strata_router::ring::{ShardId, group_of};
use strata_router::write::{Writer, WriterConfig};
use strata_shard::fs::write_file_atomic;
use strata_shard::{Clock, StdFs, SystemClock};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Nodes of a dev cluster: ids `1..=NODES`.
pub const NODES: u64 = 3;
/// The zone of node `id` is `ZONES[id - 1]`.
pub const ZONES: [&str; NODES as usize] = ["zone-a", "zone-b", "zone-c"];
/// Shards of a fresh dev cluster's ring unless told otherwise.
pub const SHARDS_DEFAULT: u32 = 8;
/// Raft gRPC of node K on `BASE_PORT_DEFAULT + K - 1`, its HTTP API 100 ports higher: fixed
/// defaults, so a Prometheus config can name them.
pub const BASE_PORT_DEFAULT: u16 = 7001;
/// Virtual nodes per shard of the dev ring.
pub const VNODES_PER_SHARD: u32 = 256;
/// The file that records the nodes' addresses (see the module doc).
pub const ADDRS_FILE: &str = "dev-cluster.addrs";
/// Bound on each bootstrap step that waits for the cluster (a leader, a proposal).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between retries of a proposal or read that met no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Remote-write requests one node handles at once; more get 503 + Retry-After.
pub const HTTP_WRITES_IN_FLIGHT_MAX: usize = 64;
/// Bound on a server's graceful stop before it is aborted.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's registry.
pub type Node = Arc<Registry<GrpcRouter>>;

struct DevNode {
    registry: Node,
    /// The node's side of the gRPC transport: forwards its router's writes to leaders.
    router: GrpcRouter,
    info: NodeInfo,
    root: PathBuf,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), String>>,
}

/// A node's HTTP server: its address, its stop signal and its task.
struct HttpServer {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    /// Samples the node's Raft state for its `/metrics` page.
    sampler: crate::metrics::Sampler,
}

/// A running dev cluster (module doc).
pub struct Cluster {
    nodes: Vec<DevNode>,
    http: Vec<HttpServer>,
    shards: u32,
    fresh: bool,
}

/// The node id, zone and registry root of each dev node.
fn layout(data_dir: &Path) -> Vec<(NodeId, &'static str, PathBuf)> {
    (1..=NODES)
        .map(|id| {
            (
                id,
                ZONES[id as usize - 1],
                data_dir.join(format!("node-{id}")),
            )
        })
        .collect()
}

/// Reads `dev-cluster.addrs`: lines of `<node id> <host:port>`.
fn read_addrs(path: &Path) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut addrs = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(addr), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{}: bad line {line:?}", path.display());
        };
        let id: NodeId = id
            .parse()
            .with_context(|| format!("{}: bad node id in {line:?}", path.display()))?;
        addrs.insert(id, addr.to_string());
    }
    for id in 1..=NODES {
        anyhow::ensure!(
            addrs.contains_key(&id),
            "{}: no address of node {id}",
            path.display()
        );
    }
    Ok(addrs)
}

impl Cluster {
    /// Starts (first time: bootstraps; afterwards: restarts from disk) the dev cluster under
    /// `data_dir` with a ring of `shards` shards, node N listening on `base_port + N - 1` of
    /// 127.0.0.1 (`base_port` 0: ports the OS picks). Returns once every group has a leader.
    pub async fn start_dev(data_dir: &Path, shards: u32, base_port: u16) -> anyhow::Result<Self> {
        anyhow::ensure!(shards > 0, "a ring needs at least one shard");
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        let addrs_path = data_dir.join(ADDRS_FILE);
        let recorded = if addrs_path.exists() {
            Some(read_addrs(&addrs_path)?)
        } else {
            None
        };
        let fresh = recorded.is_none();

        // Bind every listener before recording or using any address (D1).
        let mut listeners = Vec::new();
        for (id, _, _) in layout(data_dir) {
            let addr = match &recorded {
                Some(addrs) => addrs[&id].clone(),
                None if base_port == 0 => "127.0.0.1:0".to_string(),
                None => {
                    let port = u64::from(base_port) + id - 1;
                    anyhow::ensure!(port <= 65_535, "port {port} of node {id} is out of range");
                    format!("127.0.0.1:{port}")
                }
            };
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("node {id}: bind {addr}"))?;
            listeners.push(listener);
        }
        let mut addrs = BTreeMap::new();
        for ((id, _, _), listener) in layout(data_dir).iter().zip(&listeners) {
            addrs.insert(*id, listener.local_addr()?.to_string());
        }
        if fresh {
            let text: String = addrs.iter().map(|(id, a)| format!("{id} {a}\n")).collect();
            write_file_atomic(&StdFs, &addrs_path, text.as_bytes())
                .with_context(|| format!("write {}", addrs_path.display()))?;
        }

        let mut cluster = Cluster {
            nodes: Vec::new(),
            http: Vec::new(),
            shards,
            fresh,
        };
        for ((id, zone, root), listener) in layout(data_dir).into_iter().zip(listeners) {
            let info = NodeInfo {
                addr: addrs[&id].clone(),
                zone: zone.to_string(),
            };
            match Self::start_node(id, info, root, listener).await {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
            }
        }
        match cluster.bootstrap().await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.shutdown().await;
                Err(e)
            }
        }
    }

    /// Opens node `id`'s registry (restarting the groups on its disk) and serves it.
    async fn start_node(
        id: NodeId,
        info: NodeInfo,
        root: PathBuf,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<DevNode> {
        let mut config = RegistryConfig::new(id, Arc::new(StdFs), &root);
        config.meta_store = MetaStoreKind::Sled(root.join("meta-sled"));
        // Three nodes × (1 + shards) replicas share one process (and, in a debug build, a
        // heartbeat over gRPC costs a millisecond or two of CPU): beat less often than the
        // default so a loaded laptop does not let leader leases lapse.
        config.raft.heartbeat_ms = 250;
        config.raft.election_timeout_min_ms = 1500;
        config.raft.election_timeout_max_ms = 3000;
        config.propose_timeout = Duration::from_secs(5);
        let net = GrpcNetwork::new(GrpcConfig::default());
        let registry = Registry::open(config, net.router(id))
            .await
            .with_context(|| format!("node {id}: open registry at {}", root.display()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = registry.clone();
        let server = tokio::spawn(async move {
            grpc::serve_tcp(handler, listener, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        Ok(DevNode {
            router: net.router(id),
            registry,
            info,
            root,
            stop,
            server,
        })
    }

    /// Steps 3–6 of the module doc: adds whatever the cluster lacks.
    async fn bootstrap(&self) -> anyhow::Result<()> {
        let members = self.members();
        // The meta group: initialized by node 1.
        self.create_missing(META_GROUP, 1, &members).await?;
        self.wait_for_leader(META_GROUP).await?;

        let wanted: Vec<NodeId> = members.keys().copied().collect();
        let state = self.read_meta(MetaState::clone).await?;
        for (&id, info) in &members {
            if state.node(id) != Some(info) {
                self.propose_meta(MetaCommand::SetNode {
                    id,
                    info: info.clone(),
                })
                .await?;
            }
        }
        if state.ring().is_none() {
            self.propose_meta(MetaCommand::SetRing {
                shards: self.shards,
                vnodes_per_shard: VNODES_PER_SHARD,
                now_ms: SystemClock.now_ms(),
            })
            .await?;
        }
        let shards = self
            .read_meta(|s| s.ring().map(|(_, r)| r.shards))
            .await?
            .context("the meta state has no ring after SetRing")?;
        if shards != self.shards {
            println!(
                "strata dev: the stored ring has {shards} shards; ignoring the {} asked for \
                 (changing the ring of an existing cluster is not supported yet)",
                self.shards
            );
        }
        for s in 0..shards {
            let group = group_of(ShardId(s));
            if state.placement(group) != Some(wanted.as_slice()) {
                self.propose_meta(MetaCommand::SetPlacement {
                    group,
                    replicas: wanted.clone(),
                })
                .await?;
            }
        }

        // Shard groups: every replica that does not exist yet, the uninitialized ones first
        // (an election asking replicas that do not exist yet fails, and the next one comes an
        // election timeout later).
        let groups: Vec<GroupId> = (0..shards).map(|s| group_of(ShardId(s))).collect();
        for (&s, &group) in (0..shards).collect::<Vec<_>>().iter().zip(&groups) {
            let initializer = NodeId::from(s) % NODES + 1;
            self.create_missing(group, initializer, &members).await?;
        }
        for &group in &groups {
            self.wait_for_leader(group).await?;
        }
        Ok(())
    }

    /// Creates the replicas of `group` that do not exist: if no node hosts one, the group is
    /// new and `initializer` initializes it with `members` (after the others exist); else the
    /// missing replicas start empty and the leader fills them in.
    async fn create_missing(
        &self,
        group: GroupId,
        initializer: NodeId,
        members: &BTreeMap<NodeId, NodeInfo>,
    ) -> anyhow::Result<()> {
        let hosted = |n: &DevNode| n.registry.groups().contains(&group);
        let is_new = !self.nodes.iter().any(hosted);
        for node in self.nodes.iter().filter(|n| !hosted(n)) {
            let id = node.registry.node();
            if is_new && id == initializer {
                continue;
            }
            node.registry
                .create_group(group, None)
                .await
                .with_context(|| format!("node {id}: create group {group}"))?;
        }
        if is_new {
            self.node(initializer)
                .create_group(group, Some(members.clone()))
                .await
                .with_context(|| format!("node {initializer}: create and initialize {group}"))?;
        }
        Ok(())
    }

    /// Every node's id and address.
    pub fn members(&self) -> BTreeMap<NodeId, NodeInfo> {
        self.nodes
            .iter()
            .map(|n| (n.registry.node(), n.info.clone()))
            .collect()
    }

    /// Node `id`'s registry. Panics unless `1 <= id <= 3`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize - 1].registry
    }

    /// Every node's registry, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().map(|n| &n.registry)
    }

    /// Whether this start found no previous cluster in the data directory.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// The Raft groups: the meta group and the shard groups of the current ring.
    pub async fn groups(&self) -> anyhow::Result<Vec<GroupId>> {
        let shards = self
            .read_meta(|s| s.ring().map_or(0, |(_, r)| r.shards))
            .await?;
        Ok(std::iter::once(META_GROUP)
            .chain((0..shards).map(|s| group_of(ShardId(s))))
            .collect())
    }

    /// The node that leads `group` (as the leader itself knows), if any.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.nodes().find(|n| n.is_leader(group)).map(|n| n.node())
    }

    /// Waits (at most [`STEP_TIMEOUT`]) until `group` has a leader; returns it.
    pub async fn wait_for_leader(&self, group: GroupId) -> anyhow::Result<NodeId> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(leader) = self.leader_of(group) {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("group {group} has no leader after {STEP_TIMEOUT:?}");
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Runs `read` on the meta state, linearizably, on the meta leader (retried while
    /// leadership moves, at most [`STEP_TIMEOUT`]).
    pub async fn read_meta<R>(&self, read: impl Fn(&MetaState) -> R) -> anyhow::Result<R> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let leader = self.wait_for_leader(META_GROUP).await?;
            match self
                .node(leader)
                .read_meta(Consistency::Strong, &read)
                .await
            {
                Ok(r) => return Ok(r),
                Err(
                    ReadError::NotLeader { .. }
                    | ReadError::NoQuorum { .. }
                    | ReadError::Timeout { .. },
                ) if tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(e).context("read the meta state"),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Proposes `command` to the meta group through its leader, retrying (at most
    /// [`STEP_TIMEOUT`]) while there is none or the outcome is unknown: meta commands are
    /// idempotent (M8), so a retry cannot apply twice. A refusal is an error.
    pub async fn propose_meta(&self, command: MetaCommand) -> anyhow::Result<MetaResponse> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let what = command.to_string();
        let command = Command::Meta(command);
        loop {
            let leader = self.wait_for_leader(META_GROUP).await?;
            match self.node(leader).propose(META_GROUP, command.clone()).await {
                Ok(Response::Meta(MetaResponse::Refused(why))) => {
                    bail!("the meta group refused {what}: {why}")
                }
                Ok(Response::Meta(r)) => return Ok(r),
                Ok(other) => bail!("the meta group answered {what} with {other:?}"),
                Err(
                    e @ (ProposeError::NotLeader { .. }
                    | ProposeError::Timeout { .. }
                    | ProposeError::OutcomeUnknown { .. }
                    | ProposeError::Busy { .. }),
                ) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e).context(format!("propose {what}"));
                    }
                }
                Err(e) => return Err(e).context(format!("propose {what}")),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Start-up lines: where each node listens and keeps its data, which groups it hosts,
    /// and who leads each group.
    pub async fn describe(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        let (epoch, ring) = self
            .read_meta(|s| s.ring().map(|(e, r)| (e, *r)))
            .await?
            .context("the meta state has no ring")?;
        writeln!(
            out,
            "strata dev: {} cluster of {NODES} nodes, ring epoch {epoch} ({} shards, {} vnodes \
             each)",
            if self.fresh { "new" } else { "restarted" },
            ring.shards,
            ring.vnodes_per_shard
        )?;
        for n in &self.nodes {
            writeln!(
                out,
                "  node {} ({}) listens on {} (Raft gRPC), data in {}; hosts groups {:?}",
                n.registry.node(),
                n.info.zone,
                n.info.addr,
                n.root.display(),
                n.registry.groups()
            )?;
        }
        for group in self.groups().await? {
            let name = if group == META_GROUP {
                "meta".to_string()
            } else {
                format!("shard {}", group - 1)
            };
            let leader = self
                .leader_of(group)
                .map_or_else(|| "none yet".to_string(), |l| format!("node {l}"));
            writeln!(out, "  group {group} ({name}): leader {leader}")?;
        }
        Ok(out)
    }

    /// Starts each node's HTTP API (remote write) on 127.0.0.1: node N on `base_port + N - 1`,
    /// or ports the OS picks when `base_port` is 0. Returns the addresses, by node.
    pub async fn serve_http(
        &mut self,
        base_port: u16,
    ) -> anyhow::Result<BTreeMap<NodeId, std::net::SocketAddr>> {
        let mut addrs = BTreeMap::new();
        for node in &self.nodes {
            let id = node.registry.node();
            let port = if base_port == 0 {
                0
            } else {
                base_port
                    .checked_add(u16::try_from(id - 1)?)
                    .context("HTTP port out of range")?
            };
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("node {id}: bind HTTP on 127.0.0.1:{port}"))?;
            let addr = listener.local_addr()?;
            let writer = Writer::new(
                Arc::clone(&node.registry),
                node.router.clone(),
                WriterConfig::default(),
                Arc::new(SystemClock),
            );
            let state = Arc::new(HttpState {
                writer: Arc::new(writer),
                limits: RemoteWriteLimits::default(),
                multi_tenant: false,
                in_flight: Arc::new(Semaphore::new(HTTP_WRITES_IN_FLIGHT_MAX)),
                metrics: crate::metrics::NodeMetrics::new(id),
            });
            let sampler = crate::metrics::spawn_sampler(Arc::clone(&node.registry));
            let (stop, stopped) = oneshot::channel::<()>();
            let app = crate::http::routes(state);
            let task = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
            });
            addrs.insert(id, addr);
            self.http.push(HttpServer {
                addr,
                stop,
                task,
                sampler,
            });
        }
        Ok(addrs)
    }

    /// Stops the HTTP servers (no new writes), then every group of every node, then every
    /// Raft server (D3).
    pub async fn shutdown(self) {
        for h in self.http {
            let _ = h.stop.send(());
            match tokio::time::timeout(SERVER_STOP_TIMEOUT, h.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("strata dev: HTTP server {} failed: {e}", h.addr),
                Ok(Err(e)) => eprintln!("strata dev: HTTP server {} task failed: {e}", h.addr),
                Err(_) => eprintln!("strata dev: HTTP server {} did not stop in time", h.addr),
            }
            h.sampler.stop().await;
        }
        for n in &self.nodes {
            n.registry.shutdown().await;
        }
        for n in self.nodes {
            let id = n.registry.node();
            drop(n.registry);
            let _ = n.stop.send(());
            let mut server = n.server;
            match tokio::time::timeout(SERVER_STOP_TIMEOUT, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("strata dev: node {id}'s server failed: {e}"),
                Ok(Err(e)) => eprintln!("strata dev: node {id}'s server task failed: {e}"),
                Err(_) => {
                    eprintln!(
                        "strata dev: node {id}'s server did not stop within \
                         {SERVER_STOP_TIMEOUT:?}; aborting it"
                    );
                    server.abort();
                    let _ = server.await;
                }
            }
        }
    }
}

/// Options of `strata dev`.
pub struct Options {
    pub data_dir: PathBuf,
    pub shards: u32,
    pub base_port: u16,
}

/// `strata dev`: starts the cluster, prints where everything is, runs until Ctrl-C or
/// SIGTERM, then shuts down.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let mut cluster = Cluster::start_dev(&opts.data_dir, opts.shards, opts.base_port).await?;
        let http_base = if opts.base_port == 0 {
            0
        } else {
            opts.base_port + 100
        };
        let http = cluster.serve_http(http_base).await?;
        match cluster.describe().await {
            Ok(lines) => print!("{lines}"),
            Err(e) => eprintln!("strata dev: describing the cluster failed: {e:#}"),
        }
        for (id, addr) in &http {
            println!("node {id}: remote write at http://{addr}/api/v1/write");
        }
        println!("strata dev: running; Ctrl-C or SIGTERM stops it");
        let signal = wait_for_signal().await;
        println!("strata dev: {signal}, shutting down");
        cluster.shutdown().await;
        println!("strata dev: stopped");
        Ok(())
    })
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM; names which came.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "terminated",
            },
            Err(e) => {
                eprintln!("strata dev: cannot watch SIGTERM ({e}); Ctrl-C still works");
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
