//! # strata-node: the `strata` binary's library half
//!
//! Its job, per DESIGN.md: config, wiring, HTTP and gRPC servers, admin API, CLI,
//! self-metrics. What exists today:
//! - [`demo`]: `strata demo`, the storage engine of one shard on real files.
//! - [`cluster`]: `strata dev`, three nodes in three zones in one process on loopback: each a
//!   `strata_raft::registry::Registry` serving Raft over gRPC on 127.0.0.1, the meta group and
//!   the shard groups of the ring bootstrapped once and restarted from disk afterwards.
//! - [`http`]: each node's HTTP API (remote write, `/metrics`).
//! - [`metrics`]: self-metrics: the process's Prometheus recorder, a node's `/metrics` page,
//!   the sampler of Raft's state (leaders, terms, replica lag).
//!
//! Invariants: the node binds loopback only in `strata dev` (D1 of [`cluster`]); every wall
//! clock read goes through `strata_shard::Clock`; what a command starts, it stops.
//!
//! It is the only crate allowed to depend on every other; nothing depends on it.

pub mod cluster;
pub mod demo;
pub mod http;
pub mod metrics;
