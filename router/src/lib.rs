//! # strata-router: where a write goes
//!
//! Not built yet (issue "node and router"). Its job, per DESIGN.md: the consistent-hash ring
//! (`hashring`, wrapped with a stable hasher and our own vnode keys, golden-tested), replica
//! placement across zones, and the write path: validate with `strata_shard::series`, compute the
//! `SeriesId`, group samples per shard, send each batch to the shard leader, follow `NotLeader`
//! hints, retry with the same payload.
//!
//! ## Map
//! - [`remote_write`]: Prometheus remote-write 1.0 bodies (Snappy block format + protobuf
//!   `prometheus.WriteRequest`) decoded and validated into `(SeriesKey, Vec<Sample>)` per series,
//!   with per-series errors and the HTTP status a sender expects. Pure (no IO, no clock, no HTTP
//!   types): the node binary serves `/api/v1/write` and calls it.
//!
//! Must not depend on: PromQL parsing (`strata-query-fanout`), the node binary.

pub mod remote_write;
