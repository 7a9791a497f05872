//! The openraft type configuration shared by every group of a node, and the commands groups
//! replicate.

use std::collections::BTreeMap;
use std::fmt;

use openraft::rt::deterministic_rng::DeterministicRng;
use openraft_rt_tokio::TokioRuntime;
use strata_shard::engine::AppendOutcome;

use crate::meta::{MetaCommand, MetaResponse};

/// A node of the cluster, unique for its lifetime.
pub type NodeId = u64;
/// A Raft group: 0 is the meta group, every other id is a shard.
pub type GroupId = u64;
/// The meta group's id.
pub const META_GROUP: GroupId = 0;

/// How peers reach a node and where it runs (replicas of a shard live in distinct zones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `host:port` of the node's gRPC endpoint.
    pub addr: String,
    pub zone: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.zone)
    }
}

/// The samples of one write command, encoded once by the router and shared, immutable, from
/// there to every replica's engine (`strata_shard::batch`).
pub use strata_shard::WriteBatch;

/// What a shard group's log carries. Every command that changes the engine's state, including
/// what limits and retention count, goes through the log (S3 of `strata-shard`): time arrives
/// inside the command, from the proposer's clock, never from the applying replica's.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Samples of several series, applied with first-write-wins dedup. Shared, because
    /// openraft clones entries (replication, apply) and a batch is large.
    Write(WriteBatch),
    /// Persist what the head no longer needs in memory (`Engine::seal`).
    Seal,
    /// Drop expired blocks as of `now_ms` (`Engine::apply_retention`).
    Retention { now_ms: i64 },
    /// Merge blocks (`Engine::compact`).
    Compact,
    /// A command of the meta group (group 0); shard groups refuse it.
    Meta(MetaCommand),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write(batch) => write!(
                f,
                "write({} series, {} samples)",
                batch.series_count(),
                batch.sample_count()
            ),
            Command::Seal => f.write_str("seal"),
            Command::Retention { now_ms } => write!(f, "retention(now={now_ms})"),
            Command::Compact => f.write_str("compact"),
            Command::Meta(m) => write!(f, "meta: {m}"),
        }
    }
}

/// What applying an entry did, returned to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Response {
    /// Blank and membership entries, and commands with nothing to report (seal, retention,
    /// compaction).
    #[default]
    Done,
    /// What a `Command::Write` did.
    Write(WriteOutcome),
    /// What a `Command::Meta` did in the meta group.
    Meta(MetaResponse),
    /// The command belongs to another kind of group (a meta command sent to a shard group, or
    /// a shard command to the meta group); nothing was changed.
    Refused(String),
}

/// What applying a write did: counts per outcome and the first refusals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub appended: u64,
    pub duplicates: u64,
    /// Refused samples by reason (`strata_shard::Error::reason`).
    pub rejected: BTreeMap<String, u64>,
    /// The first refusals, as messages naming series, times or limits.
    pub errors: Vec<String>,
}

impl From<AppendOutcome> for WriteOutcome {
    fn from(o: AppendOutcome) -> Self {
        WriteOutcome {
            appended: o.appended,
            duplicates: o.duplicates,
            rejected: o
                .rejected
                .into_iter()
                .map(|(reason, n)| (reason.to_string(), n))
                .collect(),
            errors: o.errors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// openraft's tokio runtime with a seeded RNG: election timeouts replay from a simulator seed.
/// Every future that reaches openraft must run inside `Runtime::scope(seed, ..)`.
pub type Runtime = DeterministicRng<TokioRuntime>;

openraft::declare_raft_types!(
    /// The type configuration of every Strata Raft group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        AsyncRuntime = Runtime,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Payload = openraft::EntryPayload<Command, NodeId, NodeInfo>;
