//! # strata-raft: replication of shards and of cluster metadata
//!
//! Every shard is a Raft group (openraft `=0.10.0-alpha.37`); group 0 is the meta group. A node
//! hosts replicas of many groups, so everything per node is shared: one write-ahead log with
//! group commit, one connection per peer.
//!
//! ## Map
//! - [`types`]: the openraft type configuration of every group ([`types::TypeConfig`]): node
//!   ids, [`types::NodeInfo`] (address + zone), the replicated [`types::Command`]s and their
//!   [`types::Response`]; the runtime is tokio with openraft's seeded RNG, so elections replay
//!   from a simulator seed.
//! - [`codec`]: our binary encoding of openraft values (log ids, votes, memberships, entries).
//! - [`wal`]: the segmented write-ahead log shared by all groups of a node (group commit,
//!   torn-tail recovery, segment reclaim; W1–W9); independent of openraft, payloads are opaque.
//! - [`log_store`]: openraft's `RaftLogStorage` per group on the shared WAL, and the group-commit
//!   loop that completes appends only after the fsync that covers them, without holding the
//!   WAL during the fsync; recent entries are kept decoded for apply and replication (L1–L5).
//! - [`shard_sm`]: a shard group's state machine, the `strata-shard` engine; snapshots are
//!   pinned engine checkpoints (R1–R4).
//! - [`meta`]: the meta group's (group 0) commands and pure state: nodes and zones, shard
//!   placement, ring epochs with their history, tenant limits, and leases whose expiry comes
//!   only from proposer times carried in commands (M1–M8).
//! - [`meta_sm`]: the meta group's state machine: the state in sled outside the simulator, in
//!   memory (rebuilt from snapshot + log) inside it; a snapshot is one small file (M9–M13).
//! - [`snapshot`]: [`snapshot::SnapshotFiles`], the one snapshot type of every group: immutable
//!   files read in bounded pieces (P1–P3), so one transport streams every group's snapshots.
//! - [`network`]: the seam between groups and the wire (N1–N4): [`network::RaftHandler`]
//!   (the receiving side, implemented by the registry), the snapshot sender/receiver both
//!   transports use, [`network::local`], the in-process transport of tests and benches, and
//!   [`network::grpc`], the tonic transport between nodes (`strata-proto` wire types; one
//!   channel per peer, deadlines, chunked snapshots).
//!
//! - `faults` (feature `fault-injection`, the simulator's): deliberate bugs (skip the WAL's
//!   fsync, acknowledge before quorum) for the negative controls that prove the checkers work.
//! - [`registry`]: a node's replicas (create / start / stop / drop at runtime, the meta group
//!   included), the client API the router uses (`propose` → applied | `NotLeader{hint}` |
//!   `Busy` | `OutcomeUnknown` | `Timeout`; `read` / `read_meta` with strong / leader / any),
//!   membership (learner → voter, remove voter), leader transfer, per-group heartbeat jitter
//!   (G1–G5). It is the node's [`network::RaftHandler`].
//!
//! Must not depend on: `strata-router`, `strata-query-fanout`, PromQL, HTTP. It knows nothing
//! about labels beyond handing batches to the shard engine.

pub mod codec;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod log_store;
pub mod meta;
pub mod meta_sm;
pub mod network;
pub mod registry;
pub mod shard_sm;
pub mod snapshot;
pub mod types;
pub mod wal;
