//! # strata-proto: the gRPC wire of Strata
//!
//! Types and service stubs generated from `proto/*.proto` by `build.rs` (protox + tonic, no
//! system `protoc`). `proto/prompb/` holds Prometheus' remote-write 1.0 messages with their
//! upstream field numbers (the contract with every sender; never renumber them). This crate holds no logic: encoding of openraft values lives in
//! `strata-raft` (`network/wire.rs`), the server and client in `strata-raft::network::grpc`.
//!
//! Must not depend on: any other Strata crate (the schema is the boundary, not a Rust type).

/// Raft traffic between nodes: package `strata.raft.v1`.
pub mod raft {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.raft.v1");
}

/// The public API (remote-write-shaped `Write`): package `strata.api.v1`, served by the node.
pub mod api {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.api.v1");
}

/// Prometheus remote-write 1.0 messages: package `prometheus` (upstream `prompb`), messages only.
/// Decoded by `strata-router`'s `remote_write` module.
pub mod prometheus {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("prometheus");
}
