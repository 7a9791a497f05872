//! # strata-node: the `strata` binary's library half
//!
//! Its job, per DESIGN.md: config, wiring, HTTP and gRPC servers, admin API, CLI,
//! self-metrics. What exists today:
//! - [`demo`]: `strata demo`, the storage engine of one shard on real files.
//! - [`config`]: one node's configuration (TOML file, flags over it, single-node defaults).
//! - [`server`]: one running node ([`server::NodeServer`]): registry, Raft gRPC server, HTTP
//!   API and the control loop that forms the cluster, registers the node, places shard
//!   replicas (meta leader), creates them, keeps memberships equal to placements and hands
//!   leadership to preferred leaders. `strata start` runs one per process.
//! - [`ingest`]: one write request, whichever front end it came over ([`http`]: remote write
//!   at `POST /api/v1/write`; [`grpc_api`]: the gRPC `Write`).
//! - [`cluster`]: `strata dev`, three `NodeServer`s in three zones in one process on loopback,
//!   formed once and restarted from disk afterwards.
//! - [`metrics`]: self-metrics: the process's Prometheus recorder, a node's `/metrics` page,
//!   the sampler of Raft's state (leaders, terms, replica lag).
//!
//! Invariants: the node binds loopback only in `strata dev` (D1 of [`cluster`]); every wall
//! clock read goes through `strata_shard::Clock`; what a command starts, it stops.
//!
//! It is the only crate allowed to depend on every other; nothing depends on it.

pub mod cluster;
pub mod config;
pub mod demo;
pub mod grpc_api;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod server;
