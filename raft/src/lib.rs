//! # strata-raft: replication of shards and of cluster metadata
//!
//! Not built yet (issue "Multi-Raft replication"). Its job, per DESIGN.md: openraft type config;
//! one segmented write-ahead log shared by all groups of a node, written through
//! `strata_shard::fs::Fs`; state machines for shard groups (the `strata-shard` engine) and for the
//! meta group (group 0, state in sled outside the simulator); one tonic connection per peer that
//! multiplexes every group; the group registry and the client API the router calls.
//!
//! ## Map
//! - [`wal`]: the segmented write-ahead log shared by all groups of a node (group commit, torn-tail
//!   recovery, segment reclaim); independent of openraft, payloads are opaque bytes.
//!
//! Must not depend on: `strata-router`, `strata-query-fanout`, PromQL, HTTP. It knows nothing
//! about labels beyond handing batches to the shard engine.

pub mod wal;
