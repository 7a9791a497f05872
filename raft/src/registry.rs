//! A node's Raft groups: the replicas it hosts, created, started, stopped and dropped at
//! runtime, and the client API the router uses.
//!
//! ## Types
//! - [`RegistryConfig`]: the node's identity, where its data lives, and the Raft tuning.
//! - [`Registry`]: the groups of one node on one shared WAL and one [`Transport`]; it is the
//!   node's [`RaftHandler`] (what the network delivers to).
//! - [`Consistency`]: how fresh a read must be.
//! - [`ProposeError`], [`ReadError`], [`AdminError`]: what the caller can do next, not just
//!   what went wrong (follow a leader hint, back off, retry with the same payload).
//!
//! ## Layout (through the `Fs` seam)
//! `<root>/wal/` the shared WAL · `<root>/groups/<group>/` a shard's state machine ·
//! `<root>/staging/<group>-<n>/` a snapshot being received (removed once installed or
//! abandoned, and on open).
//!
//! ## Invariants
//! - G1. A proposal is answered `Ok` only once its entry is committed by a quorum and applied
//!   on this node (openraft's `client_write`); every other answer says whether retrying may
//!   duplicate (`OutcomeUnknown`, `Timeout`: the entry may still commit — retry with the same
//!   payload, which first-write-wins dedup makes safe) or not (`NotLeader`, `Busy`,
//!   `NoSuchGroup`: nothing was appended).
//! - G2. In-flight proposals per group are bounded ([`RegistryConfig::in_flight_max`]); past
//!   the bound a proposal is refused at once with `Busy`, never queued without bound.
//! - G3. Heartbeat intervals differ per group (a deterministic jitter from the group id), so
//!   the heartbeats of many groups do not fire in lockstep.
//! - G4. Every group's randomness (election timeouts) derives from the node's seed and the
//!   group id, so a simulator seed replays elections.
//! - G5. A replica is dropped only after its Raft has stopped; then its WAL records are
//!   removed durably and its files deleted. A stopped replica keeps its data and restarts
//!   from it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ReadPolicy, SnapshotResponse,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::rt::watch::WatchReceiver;
use openraft::{ChangeMembers, Raft, RaftMetrics, ServerState};
use strata_shard::Fs;
use strata_shard::engine::{Engine, EngineConfig};
use strata_shard::fs::create_dir_all_durable;
use strata_shard::partial::PartialResult;
use strata_shard::query::PartialQuery;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::log_store::{DECODED_CACHE_BYTES_DEFAULT, SharedWal};
use crate::meta::MetaState;
use crate::meta_sm::MetaStateMachine;
use crate::network::{HandlerError, HandlerResult, RaftHandler, Snapshot, Transport};
use crate::shard_sm::ShardStateMachine;
use crate::types::{
    Command, GroupId, META_GROUP, NodeId, NodeInfo, Response, Runtime, TypeConfig, Vote,
};
use crate::wal::WalConfig;

/// The Raft handle of a shard replica.
pub type ShardRaft = Raft<TypeConfig, ShardStateMachine>;
/// The Raft handle of the meta group's replica.
pub type MetaRaft = Raft<TypeConfig, MetaStateMachine>;

/// Where the meta group keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaStoreKind {
    /// In memory, rebuilt from the latest snapshot + the log on start: the simulator's choice
    /// (sled does real file IO outside the `Fs` seam).
    Memory,
    /// In sled at this real directory (production).
    Sled(PathBuf),
}

/// Raft timing shared by every group of a node (milliseconds).
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// Base heartbeat interval; each group adds up to a fifth of it (G3).
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log after a snapshot, so a slightly lagging follower catches up by
    /// log rather than by snapshot.
    pub keep_after_snapshot: u64,
    /// Deadline of sending and installing a snapshot.
    pub snapshot_timeout_ms: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_after_entries: 10_000,
            keep_after_snapshot: 1000,
            snapshot_timeout_ms: 60_000,
        }
    }
}

/// Everything a node's registry needs.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub node: NodeId,
    pub fs: Arc<dyn Fs>,
    pub root: PathBuf,
    pub wal: WalConfig,
    /// Budget of the decoded copies of recent log entries (all groups).
    pub decoded_cache_bytes_max: usize,
    /// Engine settings of every shard (`dir` is set per group).
    pub engine: EngineConfig,
    pub raft: RaftTuning,
    /// In-flight proposals per group before `Busy` (G2).
    pub in_flight_max: usize,
    /// How long a proposal may wait for commit and apply before `Timeout`.
    pub propose_timeout: Duration,
    /// Seed of every group's randomness (G4).
    pub seed: u64,
    /// The meta group's store.
    pub meta_store: MetaStoreKind,
    /// Deliberate bugs for the simulator's negative controls; all off by default.
    #[cfg(feature = "fault-injection")]
    pub faults: crate::faults::Faults,
}

impl RegistryConfig {
    pub fn new(node: NodeId, fs: Arc<dyn Fs>, root: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            node,
            fs,
            root: root.into(),
            wal: WalConfig::default(),
            decoded_cache_bytes_max: DECODED_CACHE_BYTES_DEFAULT,
            engine: EngineConfig::new("per-group"),
            raft: RaftTuning::default(),
            in_flight_max: 256,
            propose_timeout: Duration::from_secs(10),
            seed: node,
            meta_store: MetaStoreKind::Memory,
            #[cfg(feature = "fault-injection")]
            faults: crate::faults::Faults::default(),
        }
    }

    /// openraft's configuration of `group`, with its heartbeat jitter (G3).
    fn openraft_config(&self, group: GroupId) -> Result<Arc<openraft::Config>, AdminError> {
        let t = &self.raft;
        let jitter = mix(self.seed ^ group) % (t.heartbeat_ms / 5).max(1);
        let config = openraft::Config {
            cluster_name: format!("strata-group-{group}"),
            heartbeat_interval: t.heartbeat_ms + jitter,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            install_snapshot_timeout: t.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries),
            // The meta group's log is short and its snapshots small, so it keeps nothing
            // behind a snapshot: a live meta entry pins its whole WAL segment, shard entries
            // and all (W5), and the meta group would rarely reach `keep_after_snapshot`.
            max_in_snapshot_log_to_keep: if group == META_GROUP {
                0
            } else {
                t.keep_after_snapshot
            },
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| AdminError::Invalid {
                group,
                reason: format!("raft tuning: {e}"),
            })
    }
}

/// SplitMix64: a fixed mixer for per-group jitter and seeds.
fn mix(x: u64) -> u64 {
    let z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the leader confirms its leadership with a quorum (read index) and the
    /// local state machine has applied up to that point.
    Strong,
    /// Served by the leader on its lease, without a quorum round trip (may be stale only if
    /// clocks drift more than the lease allows).
    Leader,
    /// Whatever this replica has applied; may be stale.
    Any,
}

/// Why a proposal was not applied (G1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("node {node} hosts no replica of group {group}")]
    NoSuchGroup { node: NodeId, group: GroupId },
    #[error("group {group}: node {node} is not the leader (leader: {leader_hint:?})")]
    NotLeader {
        node: NodeId,
        group: GroupId,
        leader_hint: Option<(NodeId, NodeInfo)>,
    },
    #[error("group {group}: {in_flight} proposals in flight, the limit; retry later")]
    Busy { group: GroupId, in_flight: usize },
    #[error(
        "group {group}: the entry was appended but leadership changed; it may still commit \
         (leader: {leader_hint:?})"
    )]
    OutcomeUnknown {
        group: GroupId,
        leader_hint: Option<(NodeId, NodeInfo)>,
    },
    #[error("group {group}: not applied within {timeout:?}; it may still commit")]
    Timeout { group: GroupId, timeout: Duration },
    #[error("group {group} on node {node} has stopped: {reason}")]
    Stopped {
        node: NodeId,
        group: GroupId,
        reason: String,
    },
    /// A forwarded proposal did not reach node `node` (no connection): nothing was appended.
    #[error("group {group}: node {node} is unreachable: {reason}")]
    Unreachable {
        node: NodeId,
        group: GroupId,
        reason: String,
    },
}

/// Why a read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("node {node} hosts no replica of group {group}")]
    NoSuchGroup { node: NodeId, group: GroupId },
    #[error("group {group}: node {node} is not the leader (leader: {leader_hint:?})")]
    NotLeader {
        node: NodeId,
        group: GroupId,
        leader_hint: Option<(NodeId, NodeInfo)>,
    },
    #[error("group {group}: no quorum to confirm leadership: {reason}")]
    NoQuorum { group: GroupId, reason: String },
    #[error("group {group}: {reason}")]
    WrongKind { group: GroupId, reason: String },
    #[error("group {group}: read not ready within {timeout:?}")]
    Timeout { group: GroupId, timeout: Duration },
    #[error("group {group} on node {node} has stopped: {reason}")]
    Stopped {
        node: NodeId,
        group: GroupId,
        reason: String,
    },
    /// The read itself is malformed (a partial query the shard refuses): do not retry.
    #[error("group {group}: {reason}")]
    Invalid { group: GroupId, reason: String },
    /// Another node could not be asked.
    #[error("group {group}: node {node} could not be reached: {reason}")]
    Unreachable {
        node: NodeId,
        group: GroupId,
        reason: String,
    },
}

/// Why a group could not be created, started, stopped, dropped or reconfigured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("node {node} already hosts a replica of group {group}")]
    Exists { node: NodeId, group: GroupId },
    #[error("node {node} hosts no replica of group {group}")]
    NoSuchGroup { node: NodeId, group: GroupId },
    #[error("group {group}: {reason}")]
    Invalid { group: GroupId, reason: String },
    #[error("group {group}: node {node} is not the leader (leader: {leader_hint:?})")]
    NotLeader {
        node: NodeId,
        group: GroupId,
        leader_hint: Option<(NodeId, NodeInfo)>,
    },
    #[error("group {group}: storage: {reason}")]
    Storage { group: GroupId, reason: String },
    #[error("node {node}: storage: {reason}")]
    NodeStorage { node: NodeId, reason: String },
    #[error("group {group} has stopped: {reason}")]
    Stopped { group: GroupId, reason: String },
}

/// A replica's Raft and state machine: a shard, or the meta group (group 0).
enum GroupRaft {
    Shard(ShardRaft, ShardStateMachine),
    Meta(MetaRaft, MetaStateMachine),
}

/// Runs the same expression on either kind of Raft handle (their types differ only in the
/// state machine).
macro_rules! on_raft {
    ($group:expr, $raft:ident => $body:expr) => {
        match $group {
            GroupRaft::Shard($raft, _) => $body,
            GroupRaft::Meta($raft, _) => $body,
        }
    };
}

struct Replica {
    raft: GroupRaft,
    in_flight: Arc<Semaphore>,
}

/// The groups of one node.
pub struct Registry<T: Transport> {
    config: RegistryConfig,
    wal: Arc<SharedWal>,
    transport: T,
    groups: Mutex<BTreeMap<GroupId, Arc<Replica>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    staging_seq: AtomicU64,
    /// Snapshots received from a leader and installed, since the node started.
    snapshots_installed: Arc<AtomicU64>,
}

fn group_dir(root: &Path, group: GroupId) -> PathBuf {
    root.join("groups").join(group.to_string())
}

/// Deletes every file under `dir`, depth first (the `Fs` seam has no directory removal; empty
/// directories cost nothing).
fn delete_tree(fs: &dyn Fs, dir: &Path) -> std::io::Result<()> {
    if !fs.exists(dir) {
        return Ok(());
    }
    for name in fs.list(dir)? {
        let path = dir.join(&name);
        if fs.remove_file(&path).is_err() {
            delete_tree(fs, &path)?;
        }
    }
    fs.sync_dir(dir)
}

impl<T: Transport> Registry<T> {
    /// Opens the node's WAL and starts every replica found on disk.
    pub async fn open(config: RegistryConfig, transport: T) -> Result<Arc<Self>, AdminError> {
        let node = config.node;
        let storage = |reason: String| AdminError::NodeStorage { node, reason };
        let fs = Arc::clone(&config.fs);
        let staging = config.root.join("staging");
        delete_tree(&*fs, &staging).map_err(|e| storage(format!("clear staging: {e}")))?;
        #[allow(unused_mut)]
        let mut wal_config = config.wal.clone();
        #[cfg(feature = "fault-injection")]
        {
            wal_config.skip_fsync |= config.faults.skip_wal_fsync;
        }
        let wal = SharedWal::open_with(
            Arc::clone(&fs),
            config.root.join("wal"),
            wal_config,
            config.decoded_cache_bytes_max,
        )
        .map_err(|e| storage(format!("open WAL: {e}")))?;
        let flusher = tokio::spawn(Arc::clone(&wal).run_flusher());
        let groups_dir = config.root.join("groups");
        create_dir_all_durable(&*fs, &groups_dir)
            .map_err(|e| storage(format!("create {}: {e}", groups_dir.display())))?;
        let on_disk: BTreeSet<GroupId> = fs
            .list(&groups_dir)
            .map_err(|e| storage(format!("list {}: {e}", groups_dir.display())))?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let registry = Arc::new(Registry {
            config,
            wal,
            transport,
            groups: Mutex::new(BTreeMap::new()),
            flusher: Mutex::new(Some(flusher)),
            staging_seq: AtomicU64::new(0),
            snapshots_installed: Arc::default(),
        });
        for group in on_disk {
            registry.start_group(group).await?;
        }
        Ok(registry)
    }

    /// Snapshots this node has received from a leader and installed since it started (a
    /// replica too far behind for the leader's log to catch it up).
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed.load(Ordering::Relaxed)
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<GroupId, Arc<Replica>>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replica(&self, group: GroupId) -> Option<Arc<Replica>> {
        self.lock().get(&group).cloned()
    }

    /// The groups this node hosts a running replica of.
    pub fn groups(&self) -> Vec<GroupId> {
        self.lock().keys().copied().collect()
    }

    /// Creates a new, empty replica of `group`. With `members`, it also initializes the group
    /// with them as voters (do this on exactly one node of a new group); without, the replica
    /// waits for a leader to add it (as a learner, then a voter).
    pub async fn create_group(
        &self,
        group: GroupId,
        members: Option<BTreeMap<NodeId, NodeInfo>>,
    ) -> Result<(), AdminError> {
        let node = self.config.node;
        if self.lock().contains_key(&group)
            || self.config.fs.exists(&group_dir(&self.config.root, group))
        {
            return Err(AdminError::Exists { node, group });
        }
        self.start_group(group).await?;
        let Some(members) = members else {
            return Ok(());
        };
        let replica = self
            .replica(group)
            .ok_or(AdminError::NoSuchGroup { node, group })?;
        let init = async move { on_raft!(&replica.raft, raft => raft.initialize(members).await) };
        self.scoped(group, init)
            .await
            .map_err(|e| AdminError::Invalid {
                group,
                reason: format!("initialize: {e}"),
            })
    }

    /// Starts the replica of `group` from its data on disk (or empty).
    pub async fn start_group(&self, group: GroupId) -> Result<(), AdminError> {
        let node = self.config.node;
        if self.lock().contains_key(&group) {
            return Err(AdminError::Exists { node, group });
        }
        let storage = |reason: String| AdminError::Storage { group, reason };
        let dir = group_dir(&self.config.root, group);
        let fs = Arc::clone(&self.config.fs);
        let raft_config = self.config.openraft_config(group)?;
        let seed = mix(self.config.seed ^ group);
        let factory = self.transport.group_factory(group);
        let log = self.wal.group(group);
        let raft = if group == META_GROUP {
            let sm = match &self.config.meta_store {
                MetaStoreKind::Memory => MetaStateMachine::open_in_memory(fs, &dir),
                MetaStoreKind::Sled(path) => MetaStateMachine::open_sled(fs, &dir, path),
            }
            .map_err(|e| storage(format!("open meta state machine: {e}")))?;
            let raft = Runtime::scope(seed, Raft::new(node, raft_config, factory, log, sm.clone()))
                .await
                .map_err(|e| storage(format!("start raft: {e}")))?;
            GroupRaft::Meta(raft, sm)
        } else {
            let sm = ShardStateMachine::open(fs, &dir, self.config.engine.clone())
                .map_err(|e| storage(format!("open state machine: {e}")))?;
            let raft = Runtime::scope(seed, Raft::new(node, raft_config, factory, log, sm.clone()))
                .await
                .map_err(|e| storage(format!("start raft: {e}")))?;
            GroupRaft::Shard(raft, sm)
        };
        let replica = Arc::new(Replica {
            raft,
            in_flight: Arc::new(Semaphore::new(self.config.in_flight_max)),
        });
        let mut groups = self.lock();
        if groups.contains_key(&group) {
            return Err(AdminError::Exists { node, group });
        }
        groups.insert(group, replica);
        Ok(())
    }

    /// Stops the replica of `group`; its data stays and [`Registry::start_group`] resumes it.
    pub async fn stop_group(&self, group: GroupId) -> Result<(), AdminError> {
        let node = self.config.node;
        let replica = self
            .lock()
            .remove(&group)
            .ok_or(AdminError::NoSuchGroup { node, group })?;
        on_raft!(&replica.raft, raft => raft.shutdown().await).map_err(|e| AdminError::Stopped {
            group,
            reason: format!("shutdown: {e}"),
        })
    }

    /// Stops the replica of `group` and deletes its data (G5). Remove it from the group's
    /// membership first, or the group will keep sending to it.
    pub async fn drop_group(&self, group: GroupId) -> Result<(), AdminError> {
        self.stop_group(group).await?;
        let storage = |reason: String| AdminError::Storage { group, reason };
        self.wal
            .remove_group(group)
            .map_err(|e| storage(format!("remove WAL records: {e}")))?;
        let dir = group_dir(&self.config.root, group);
        delete_tree(&*self.config.fs, &dir).map_err(|e| storage(format!("delete files: {e}")))?;
        // The (empty) directory stays; rename it aside so `create_group` can reuse the id.
        let graveyard = self.config.root.join("dropped");
        create_dir_all_durable(&*self.config.fs, &graveyard)
            .map_err(|e| storage(format!("create {}: {e}", graveyard.display())))?;
        let seq = self.staging_seq.fetch_add(1, Ordering::Relaxed);
        let aside = graveyard.join(format!("{group}-{seq}"));
        self.config
            .fs
            .rename(&dir, &aside)
            .map_err(|e| storage(format!("move {} aside: {e}", dir.display())))
    }

    /// Stops every replica and the WAL's flusher.
    pub async fn shutdown(&self) {
        let replicas: Vec<Arc<Replica>> = std::mem::take(&mut *self.lock()).into_values().collect();
        for r in replicas {
            let _ = on_raft!(&r.raft, raft => raft.shutdown().await);
        }
        if let Some(flusher) = self
            .flusher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            flusher.abort();
        }
    }

    /// The latest metrics of this replica of `group`.
    pub fn metrics(&self, group: GroupId) -> Option<RaftMetrics<TypeConfig>> {
        self.replica(group)
            .map(|r| on_raft!(&r.raft, raft => raft.metrics().borrow_watched().clone()))
    }

    /// How long ago this node, leading `group`, sent the latest heartbeat or append that
    /// `node` acknowledged; `None` if it does not lead `group` or `node` acknowledged none.
    pub fn acked_send_age(&self, group: GroupId, node: NodeId) -> Option<Duration> {
        let metrics = self.metrics(group)?;
        let sent = metrics.heartbeat?.get(&node).cloned().flatten()?;
        Some(openraft::Instant::elapsed(&*sent))
    }

    /// The leader of `group` as this replica knows it.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.metrics(group).and_then(|m| m.current_leader)
    }

    /// Whether this node leads `group`.
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.metrics(group)
            .is_some_and(|m| m.state == ServerState::Leader)
    }

    /// The leader of `group` this replica knows of, with how to reach it.
    pub fn leader_info(&self, group: GroupId) -> Option<(NodeId, NodeInfo)> {
        self.leader_hint(group, self.leader(group))
    }

    fn leader_hint(&self, group: GroupId, leader: Option<NodeId>) -> Option<(NodeId, NodeInfo)> {
        let leader = leader?;
        let metrics = self.metrics(group)?;
        let info = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, info))
    }

    /// Proposes `command` to `group`; answers once it is committed and applied here (G1).
    pub fn propose(
        &self,
        group: GroupId,
        command: Command,
    ) -> impl Future<Output = Result<Response, ProposeError>> + Send + 'static {
        // Look-up and admission now; the future owns what it needs, so the network can hand a
        // forwarded proposal to it without borrowing the registry.
        let node = self.config.node;
        let admitted = self
            .replica(group)
            .ok_or(ProposeError::NoSuchGroup { node, group })
            .and_then(|replica| {
                let permit = Arc::clone(&replica.in_flight)
                    .try_acquire_owned()
                    .map_err(|_| ProposeError::Busy {
                        group,
                        in_flight: self.config.in_flight_max,
                    })?;
                Ok((replica, permit))
            });
        let timeout = self.config.propose_timeout;
        let seed = mix(self.config.seed ^ group);
        #[cfg(feature = "fault-injection")]
        let ack_early = self.config.faults.ack_before_quorum && self.is_leader(group);
        async move {
            let (replica, _permit) = admitted?;
            #[cfg(feature = "fault-injection")]
            if ack_early
                && let (GroupRaft::Shard(raft, _), Command::Write(batch)) =
                    (&replica.raft, &command)
            {
                // The negative control: acknowledge what the leader has merely handed to
                // Raft, as if every sample were new.
                let appended = batch.sample_count() as u64;
                return match raft.client_write_ff(command, None).await {
                    Ok(()) => Ok(Response::Write(crate::types::WriteOutcome {
                        appended,
                        ..Default::default()
                    })),
                    Err(e) => Err(ProposeError::Stopped {
                        node,
                        group,
                        reason: e.to_string(),
                    }),
                };
            }
            let write = Runtime::scope(seed, async move {
                on_raft!(&replica.raft, raft => raft.client_write(command).await)
            });
            let written = tokio::time::timeout(timeout, write)
                .await
                .map_err(|_| ProposeError::Timeout { group, timeout })?;
            match written {
                Ok(reply) => Ok(reply.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ProposeError::NotLeader {
                        node,
                        group,
                        leader_hint: f.leader_id.zip(f.leader_node),
                    })
                }
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {
                    Err(ProposeError::OutcomeUnknown {
                        group,
                        leader_hint: f.leader_id.zip(f.leader_node),
                    })
                }
                Err(e) => Err(ProposeError::Stopped {
                    node,
                    group,
                    reason: e.to_string(),
                }),
            }
        }
    }

    /// Runs `read` on this replica's engine once it is as fresh as `consistency` asks.
    pub async fn read<R>(
        &self,
        group: GroupId,
        consistency: Consistency,
        read: impl FnOnce(&Engine) -> R,
    ) -> Result<R, ReadError> {
        let replica = self.fresh_replica(group, consistency).await?;
        match &replica.raft {
            GroupRaft::Shard(_, sm) => Ok(sm.with_engine(read)),
            GroupRaft::Meta(..) => Err(ReadError::WrongKind {
                group,
                reason: "the meta group has no engine; use read_meta".into(),
            }),
        }
    }

    /// Runs `read` on this node's copy of the meta state once it is as fresh as `consistency`
    /// asks.
    pub async fn read_meta<R>(
        &self,
        consistency: Consistency,
        read: impl FnOnce(&MetaState) -> R,
    ) -> Result<R, ReadError> {
        let replica = self.fresh_replica(META_GROUP, consistency).await?;
        match &replica.raft {
            GroupRaft::Meta(_, sm) => Ok(sm.read(read)),
            GroupRaft::Shard(..) => Err(ReadError::WrongKind {
                group: META_GROUP,
                reason: "group 0 is not the meta group on this node".into(),
            }),
        }
    }

    /// This node's replica of `group`, once it has applied as far as `consistency` asks.
    async fn fresh_replica(
        &self,
        group: GroupId,
        consistency: Consistency,
    ) -> Result<Arc<Replica>, ReadError> {
        let node = self.config.node;
        let replica = self
            .replica(group)
            .ok_or(ReadError::NoSuchGroup { node, group })?;
        let policy = match consistency {
            Consistency::Any => return Ok(replica),
            _ if self.sole_voter_caught_up(&replica) => return Ok(replica),
            Consistency::Strong => ReadPolicy::ReadIndex,
            Consistency::Leader => ReadPolicy::LeaseRead,
        };
        let timeout = self.config.propose_timeout;
        let waiting = Arc::clone(&replica);
        let ready = self.scoped(group, async move {
            on_raft!(&waiting.raft, raft => raft.ensure_linearizable(policy).await)
        });
        let ready = tokio::time::timeout(timeout, ready)
            .await
            .map_err(|_| ReadError::Timeout { group, timeout })?;
        match ready {
            Ok(_) => Ok(replica),
            Err(RaftError::APIError(e)) => match e {
                openraft::error::LinearizableReadError::ForwardToLeader(f) => {
                    Err(ReadError::NotLeader {
                        node,
                        group,
                        leader_hint: f.leader_id.zip(f.leader_node),
                    })
                }
                openraft::error::LinearizableReadError::QuorumNotEnough(q) => {
                    Err(ReadError::NoQuorum {
                        group,
                        reason: q.to_string(),
                    })
                }
            },
            Err(RaftError::Fatal(f)) => Err(ReadError::Stopped {
                node,
                group,
                reason: f.to_string(),
            }),
        }
    }

    /// Whether a strong read may skip the read-index round through the Raft core (about
    /// 0.08 ms a group, most of a small query's fixed cost at RF=1: docs/BENCHMARKS.md): this
    /// replica leads a group whose membership (joint ones included) has no other voter, so no
    /// other replica can be elected or commit, and it has applied an entry of its own term,
    /// so every entry committed before it became leader is applied too. Every write of this
    /// term was applied here before it was acknowledged (G1). So the state machine already
    /// holds every acknowledged write, as a read-index would have waited for.
    fn sole_voter_caught_up(&self, replica: &Replica) -> bool {
        on_raft!(&replica.raft, raft => {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.state == ServerState::Leader
                && m.membership_config.membership().voter_ids().eq([self.config.node])
                && m
                    .last_applied
                    .as_ref()
                    .is_some_and(|applied| applied.leader_id.term == m.current_term)
        })
    }

    fn leader_replica(&self, group: GroupId) -> Result<Arc<Replica>, AdminError> {
        let node = self.config.node;
        let replica = self
            .replica(group)
            .ok_or(AdminError::NoSuchGroup { node, group })?;
        let metrics = on_raft!(&replica.raft, raft => raft.metrics().borrow_watched().clone());
        if metrics.state != ServerState::Leader {
            return Err(AdminError::NotLeader {
                node,
                group,
                leader_hint: self.leader_hint(group, metrics.current_leader),
            });
        }
        Ok(replica)
    }

    fn membership_error<E: std::fmt::Display>(
        &self,
        group: GroupId,
        what: &str,
    ) -> impl Fn(RaftError<TypeConfig, E>) -> AdminError {
        let what = what.to_string();
        move |e| match e {
            RaftError::APIError(e) => AdminError::Invalid {
                group,
                reason: format!("{what}: {e}"),
            },
            RaftError::Fatal(f) => AdminError::Stopped {
                group,
                reason: f.to_string(),
            },
        }
    }

    /// Adds `node` to `group` (run on the leader): first as a learner, which catches up by log
    /// or snapshot (this waits for it), then as a voter.
    pub async fn add_replica(
        &self,
        group: GroupId,
        node: NodeId,
        info: NodeInfo,
    ) -> Result<(), AdminError> {
        self.add_learner(group, node, info, true).await?;
        let replica = self.leader_replica(group)?;
        let voters = ChangeMembers::AddVoterIds(BTreeSet::from([node]));
        on_raft!(&replica.raft, raft => raft.change_membership(voters, false).await)
            .map_err(self.membership_error(group, "promote learner"))?;
        Ok(())
    }

    /// Adds `node` to `group` as a learner only (run on the leader): it receives the log and
    /// can serve `Consistency::Any` reads but never votes. With `wait`, returns once the
    /// learner has caught up; without, once the membership change is committed.
    pub async fn add_learner(
        &self,
        group: GroupId,
        node: NodeId,
        info: NodeInfo,
        wait: bool,
    ) -> Result<(), AdminError> {
        let replica = self.leader_replica(group)?;
        on_raft!(&replica.raft, raft => raft.add_learner(node, info, wait).await)
            .map_err(self.membership_error(group, "add learner"))?;
        Ok(())
    }

    /// Removes `node` from `group`'s membership, voter or learner (run on the leader). The
    /// leader stops sending to it at once, so `node` may never learn it was removed: to retire
    /// a replica whose node should then drop it, [`Registry::demote_voter`] first.
    pub async fn remove_replica(&self, group: GroupId, node: NodeId) -> Result<(), AdminError> {
        let replica = self.leader_replica(group)?;
        let metrics = on_raft!(&replica.raft, raft => raft.metrics().borrow_watched().clone());
        let is_voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([node]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node]))
        };
        on_raft!(&replica.raft, raft => raft.change_membership(change, false).await)
            .map_err(self.membership_error(group, "remove replica"))?;
        Ok(())
    }

    /// Turns voter `node` of `group` into a learner (run on the leader). Unlike a removal, the
    /// leader keeps replicating to a learner, so `node` sees the change committed and knows
    /// its replica no longer counts towards any quorum.
    pub async fn demote_voter(&self, group: GroupId, node: NodeId) -> Result<(), AdminError> {
        let replica = self.leader_replica(group)?;
        let voters = ChangeMembers::RemoveVoters(BTreeSet::from([node]));
        on_raft!(&replica.raft, raft => raft.change_membership(voters, true).await)
            .map_err(self.membership_error(group, "demote voter"))?;
        Ok(())
    }

    /// Asks the leader of `group` (this node) to hand leadership to `to`; returns once asked,
    /// not once `to` leads (watch [`Registry::leader`]).
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), AdminError> {
        let replica = self.leader_replica(group)?;
        on_raft!(&replica.raft, raft => raft.trigger().transfer_leader(to).await).map_err(|e| {
            AdminError::Stopped {
                group,
                reason: e.to_string(),
            }
        })
    }

    /// Asks this node's replica of `group` to build a snapshot now (then purge its log up to it,
    /// less `keep_after_snapshot` entries); returns once asked, not once built.
    pub async fn trigger_snapshot(&self, group: GroupId) -> Result<(), AdminError> {
        let node = self.config.node;
        let replica = self
            .replica(group)
            .ok_or(AdminError::NoSuchGroup { node, group })?;
        on_raft!(&replica.raft, raft => raft.trigger().snapshot().await).map_err(|e| {
            AdminError::Stopped {
                group,
                reason: e.to_string(),
            }
        })
    }

    /// Runs `f` in `group`'s seeded randomness scope (G4): openraft draws from it when a call
    /// spawns a task or picks a timeout.
    fn scoped<F>(&self, group: GroupId, f: F) -> BoxFuture<'static, F::Output>
    where
        F: Future + Send + 'static,
    {
        Runtime::scope(mix(self.config.seed ^ group), f).boxed()
    }

    fn replica_for(&self, group: GroupId) -> HandlerResult<Arc<Replica>> {
        self.replica(group).ok_or(HandlerError::NoSuchGroup {
            node: self.config.node,
            group,
        })
    }
}

fn raft_error(node: NodeId, group: GroupId) -> impl Fn(String) -> HandlerError {
    move |message| HandlerError::Raft {
        node,
        group,
        message,
    }
}

impl<T: Transport> RaftHandler for Registry<T> {
    fn node_id(&self) -> NodeId {
        self.config.node
    }

    fn append_entries(
        &self,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<AppendEntriesResponse<TypeConfig>>> {
        let replica = self.replica_for(group);
        let err = raft_error(self.config.node, group);
        async move {
            on_raft!(&replica?.raft, raft => raft.append_entries(rpc).await)
                .map_err(|e| err(e.to_string()))
        }
        .boxed()
    }

    fn vote(
        &self,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>> {
        let replica = self.replica_for(group);
        let err = raft_error(self.config.node, group);
        self.scoped(group, async move {
            on_raft!(&replica?.raft, raft => raft.vote(rpc).await).map_err(|e| err(e.to_string()))
        })
    }

    fn pre_vote(
        &self,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<VoteResponse<TypeConfig>>> {
        let replica = self.replica_for(group);
        let err = raft_error(self.config.node, group);
        self.scoped(group, async move {
            on_raft!(&replica?.raft, raft => raft.pre_vote(rpc).await)
                .map_err(|e| err(e.to_string()))
        })
    }

    fn transfer_leader(
        &self,
        group: GroupId,
        rpc: TransferLeaderRequest<TypeConfig>,
    ) -> BoxFuture<'static, HandlerResult<TransferLeaderResponse<TypeConfig>>> {
        let replica = self.replica_for(group);
        let err = raft_error(self.config.node, group);
        self.scoped(group, async move {
            on_raft!(&replica?.raft, raft => raft.handle_transfer_leader(rpc).await)
                .map_err(|e| err(e.to_string()))
        })
    }

    fn propose(
        &self,
        group: GroupId,
        command: Command,
    ) -> BoxFuture<'static, Result<Response, ProposeError>> {
        Registry::propose(self, group, command).boxed()
    }

    fn query(
        &self,
        group: GroupId,
        consistency: Consistency,
        query: PartialQuery,
    ) -> BoxFuture<'_, Result<PartialResult, ReadError>> {
        Box::pin(async move {
            self.read(group, consistency, |engine| engine.query(&query))
                .await?
                .map_err(|e| match e {
                    strata_shard::Error::InvalidRequest { reason } => {
                        ReadError::Invalid { group, reason }
                    }
                    other => ReadError::Stopped {
                        node: self.config.node,
                        group,
                        reason: other.to_string(),
                    },
                })
        })
    }

    fn snapshot_staging(&self, group: GroupId) -> HandlerResult<(Arc<dyn Fs>, PathBuf)> {
        self.replica_for(group)?;
        let seq = self.staging_seq.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .config
            .root
            .join("staging")
            .join(format!("{group}-{seq}"));
        Ok((Arc::clone(&self.config.fs), dir))
    }

    fn install_snapshot(
        &self,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
    ) -> BoxFuture<'static, HandlerResult<SnapshotResponse<TypeConfig>>> {
        let replica = self.replica_for(group);
        let err = raft_error(self.config.node, group);
        let fs = Arc::clone(&self.config.fs);
        let count = Arc::clone(&self.snapshots_installed);
        self.scoped(group, async move {
            let staging = snapshot.snapshot.dir().to_path_buf();
                        let installed = match replica {
                Ok(replica) => {
                    on_raft!(&replica.raft, raft => raft.install_full_snapshot(vote, snapshot).await)
                        .map_err(|e| err(e.to_string()))
                }
                Err(e) => Err(e),
            };
            if installed.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
            // The state machine copied what it needed; the staging copy goes either way.
            if let Err(e) = delete_tree(&*fs, &staging) {
                return Err(err(format!("delete staging {}: {e}", staging.display())));
            }
            installed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shard::sim_fs::SimFs;

    #[test]
    fn heartbeats_of_groups_are_spread_and_stable() {
        let config = RegistryConfig::new(1, Arc::new(SimFs::new()), "/n");
        let base = config.raft.heartbeat_ms;
        let intervals: Vec<u64> = (1..=64)
            .map(|g| config.openraft_config(g).unwrap().heartbeat_interval)
            .collect();
        assert!(
            intervals
                .iter()
                .all(|&i| (base..base + base / 5).contains(&i))
        );
        let distinct: BTreeSet<u64> = intervals.iter().copied().collect();
        assert!(distinct.len() >= 10, "heartbeats in lockstep: {distinct:?}");
        // The same group gets the same interval every time (replays from a seed).
        assert_eq!(
            config.openraft_config(7).unwrap().heartbeat_interval,
            intervals[6]
        );
    }

    #[test]
    fn a_bad_tuning_is_refused_with_the_group_named() {
        let mut config = RegistryConfig::new(1, Arc::new(SimFs::new()), "/n");
        config.raft.election_timeout_min_ms = 500;
        config.raft.election_timeout_max_ms = 400;
        let err = config.openraft_config(9).unwrap_err();
        assert!(matches!(err, AdminError::Invalid { group: 9, .. }), "{err}");
    }
}
