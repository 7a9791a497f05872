//! # strata-raft: replication of shards and of cluster metadata
//!
//! Every shard is a Raft group (openraft `=0.10.0-alpha.37`); group 0 is the meta group. A node
//! hosts replicas of many groups, so everything per node is shared: one write-ahead log with
//! group commit, one connection per peer.
//!
//! ## Map (built so far)
//! - [`types`]: the openraft type configuration of every group ([`types::TypeConfig`]): node
//!   ids, [`types::NodeInfo`] (address + zone), the replicated [`types::Command`]s and their
//!   [`types::Response`]; the runtime is tokio with openraft's seeded RNG, so elections replay
//!   from a simulator seed.
//! - [`codec`]: our binary encoding of openraft values (log ids, votes, memberships, entries).
//! - [`wal`]: the segmented write-ahead log shared by all groups of a node (group commit,
//!   torn-tail recovery, segment reclaim; W1–W9); independent of openraft, payloads are opaque.
//! - [`log_store`]: openraft's `RaftLogStorage` per group on the shared WAL, and the group-commit
//!   loop that completes appends only after the fsync that covers them (L1–L3).
//! - [`shard_sm`]: a shard group's state machine, the `strata-shard` engine; snapshots are
//!   pinned engine checkpoints read in bounded pieces (R1–R4).
//!
//! ## Still to build (issue "Multi-Raft replication")
//! The meta group's state machine (sled outside the simulator), the tonic transport (one channel
//! per peer, group id in every message, deadlines, chunked snapshots), the group registry and
//! client API (`propose`, `read` with strong / leader / any), membership changes and leader
//! transfer, and the multi-node tests and commit benchmark.
//!
//! Must not depend on: `strata-router`, `strata-query-fanout`, PromQL, HTTP. It knows nothing
//! about labels beyond handing batches to the shard engine.

pub mod codec;
pub mod log_store;
pub mod shard_sm;
pub mod types;
pub mod wal;
