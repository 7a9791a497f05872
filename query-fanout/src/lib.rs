//! # strata-query-fanout: PromQL over many shards
//!
//! Not built yet (issue "Query fan-out"). Its job, per DESIGN.md: parse PromQL with
//! `promql-parser`, push selectors, range functions and decomposable aggregations down to shards
//! as `strata_shard::query::PartialQuery`, merge the returned `strata_shard::partial` states,
//! evaluate the rest at the router with Prometheus 3.x semantics.
//!
//! Must not depend on: the Raft internals (only its client API), HTTP server code.
