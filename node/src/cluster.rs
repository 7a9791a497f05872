//! `strata dev`: a three-node, three-zone cluster in one process, on loopback.
//!
//! [`Cluster::start_dev`] runs nodes 1, 2 and 3 (zones `zone-a`, `zone-b`, `zone-c`) as three
//! [`NodeServer`]s, exactly the code `strata start` runs once per process, with the three as
//! the initial cluster and RF=3: every group (the meta group 0 and shard groups
//! `1..=shards`) has one replica on each node. The nodes talk to each other over real TCP on
//! 127.0.0.1; only the process is shared.
//!
//! ## Layout under the data directory
//! `dev-cluster.addrs` the nodes' addresses (written once, before any group exists) ·
//! `node-N/` node N's data directory (WAL, shard groups, `meta-sled/`).
//!
//! ## Start-up (the same steps on a first start and a restart)
//! 1. Addresses: from `dev-cluster.addrs` if present, so a restarted node listens where the
//!    Raft memberships say it does (they store addresses); else ports from `base_port` (0: the
//!    OS picks), then recorded durably.
//! 2. Start the three nodes; their control loops (`crate::server`) form the cluster on a first
//!    start and find it on disk afterwards.
//! 3. Wait until every node hosts its groups and every group has a leader.
//!
//! ## Invariants
//! - D1. Binds 127.0.0.1 only.
//! - D2. Restarting does not start a new ring epoch (the controller proposes a ring only when
//!   the meta state has none).
//! - D3. [`Cluster::shutdown`] stops every node (HTTP, control loop, Raft groups, gRPC server)
//!   and waits for each; what `start_dev` started, it stops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{NodeConfig, Peer, SharedSections};
use crate::server::{Node, NodeServer, group_name};
use strata_raft::meta::MetaState;
use strata_raft::registry::{Consistency, ReadError};
use strata_raft::types::{GroupId, META_GROUP, NodeId, NodeInfo};
use strata_router::ring::{ShardId, group_of};
use strata_shard::StdFs;
use strata_shard::fs::write_file_atomic;

/// Nodes of a dev cluster: ids `1..=NODES`.
pub const NODES: u64 = 3;
/// The zone of node `id` is `ZONES[id - 1]`.
pub const ZONES: [&str; NODES as usize] = ["zone-a", "zone-b", "zone-c"];
/// Shards of a fresh dev cluster's ring unless told otherwise.
pub const SHARDS_DEFAULT: u32 = crate::config::SHARDS_DEFAULT;
/// Raft gRPC of node K on `BASE_PORT_DEFAULT + K - 1`, its HTTP API 100 ports higher: fixed
/// defaults, so a Prometheus config can name them.
pub const BASE_PORT_DEFAULT: u16 = 7001;
/// Virtual nodes per shard of the dev ring.
pub const VNODES_PER_SHARD: u32 = crate::config::VNODES_PER_SHARD_DEFAULT;
/// The file that records the nodes' addresses (see the module doc).
pub const ADDRS_FILE: &str = "dev-cluster.addrs";
/// Bound on waiting for the cluster (a leader, a read).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between retries of a read that met no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A running dev cluster (module doc).
pub struct Cluster {
    nodes: Vec<NodeServer>,
    fresh: bool,
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
    /// Starts (first time: forms; afterwards: restarts from disk) the dev cluster under
    /// `data_dir` with a ring of `shards` shards, node N listening on `base_port + N - 1` of
    /// 127.0.0.1 (`base_port` 0: ports the OS picks). Returns once every group has a leader.
    pub async fn start_dev(data_dir: &Path, shards: u32, base_port: u16) -> anyhow::Result<Self> {
        Self::start_dev_with(data_dir, shards, base_port, &SharedSections::default()).await
    }

    /// [`Cluster::start_dev`] with `sections` (`strata dev --config`) on every node.
    pub async fn start_dev_with(
        data_dir: &Path,
        shards: u32,
        base_port: u16,
        sections: &SharedSections,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(shards > 0, "a ring needs at least one shard");
        sections.apply_to(NodeConfig::default()).validate()?;
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
        for id in 1..=NODES {
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
        for (id, listener) in (1..=NODES).zip(&listeners) {
            addrs.insert(id, listener.local_addr()?.to_string());
        }
        if fresh {
            let text: String = addrs.iter().map(|(id, a)| format!("{id} {a}\n")).collect();
            write_file_atomic(&StdFs, &addrs_path, text.as_bytes())
                .with_context(|| format!("write {}", addrs_path.display()))?;
        }
        let peers: Vec<Peer> = addrs
            .iter()
            .map(|(id, addr)| Peer {
                id: *id,
                raft_addr: addr.clone(),
            })
            .collect();

        let mut cluster = Cluster {
            nodes: Vec::new(),
            fresh,
        };
        for (id, listener) in (1..=NODES).zip(listeners) {
            let config = NodeConfig {
                node_id: id,
                zone: ZONES[id as usize - 1].to_string(),
                data_dir: data_dir.join(format!("node-{id}")),
                raft_addr: addrs[&id].clone(),
                http_addr: "127.0.0.1:0".into(),
                peers: peers.clone(),
                shards,
                vnodes_per_shard: VNODES_PER_SHARD,
                replication_factor: NODES as usize,
                ..sections.apply_to(NodeConfig::default())
            };
            match NodeServer::start(&config, listener).await {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
            }
        }
        for node in &cluster.nodes {
            if let Err(e) = node.wait_ready(STEP_TIMEOUT).await {
                cluster.shutdown().await;
                return Err(e);
            }
        }
        Ok(cluster)
    }

    /// Every node's id and address.
    pub fn members(&self) -> BTreeMap<NodeId, NodeInfo> {
        self.nodes
            .iter()
            .map(|n| (n.id(), n.info().clone()))
            .collect()
    }

    /// Node `id`'s registry. Panics unless node `id` is running.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .registry()
    }

    /// Stops node `id` (its HTTP API, control loop, groups and gRPC server), as if its process
    /// died: the others keep running, and its groups are down to their other replicas.
    pub async fn stop_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let at = self
            .nodes
            .iter()
            .position(|n| n.id() == id)
            .with_context(|| format!("node {id} is not running"))?;
        self.nodes.remove(at).shutdown(false).await;
        Ok(())
    }

    /// Every node's registry, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().map(NodeServer::registry)
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

    /// Start-up lines: where each node listens and keeps its data, the ring, which groups
    /// each hosts and who leads each group.
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
                "  node {} ({}) listens on {} (Raft gRPC){}; hosts groups {:?}",
                n.id(),
                n.info().zone,
                n.info().addr,
                n.http_addr()
                    .map(|a| format!(", remote write at http://{a}/api/v1/write"))
                    .unwrap_or_default(),
                n.registry().groups()
            )?;
        }
        for group in self.groups().await? {
            let leader = self
                .leader_of(group)
                .map_or_else(|| "none yet".to_string(), |l| format!("node {l}"));
            writeln!(out, "  {}: leader {leader}", group_name(group))?;
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
        for node in &mut self.nodes {
            let id = node.id();
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
            addrs.insert(id, node.serve_http(listener)?);
        }
        Ok(addrs)
    }

    /// Stops every node (D3). No leadership hand-off: all of them stop.
    pub async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown(false).await;
        }
    }
}

/// Options of `strata dev`.
pub struct Options {
    pub data_dir: PathBuf,
    pub shards: u32,
    pub base_port: u16,
    /// `--config FILE`'s sections, shared by the three nodes.
    pub sections: SharedSections,
}

/// `strata dev`: starts the cluster, prints where everything is, runs until Ctrl-C or
/// SIGTERM, then shuts down.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let mut cluster =
            Cluster::start_dev_with(&opts.data_dir, opts.shards, opts.base_port, &opts.sections)
                .await?;
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
        let signal = crate::server::wait_for_signal().await;
        println!("strata dev: {signal}, shutting down");
        cluster.shutdown().await;
        println!("strata dev: stopped");
        Ok(())
    })
}
