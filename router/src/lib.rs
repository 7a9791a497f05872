//! # strata-router: where a write goes
//!
//! Not built yet (issue "node and router"). Its job, per DESIGN.md: the consistent-hash ring
//! (`hashring`, wrapped with a stable hasher and our own vnode keys, golden-tested), replica
//! placement across zones, and the write path: validate with `strata_shard::series`, compute the
//! `SeriesId`, group samples per shard, send each batch to the shard leader, follow `NotLeader`
//! hints, retry with the same payload.
//!
//! Must not depend on: PromQL parsing (`strata-query-fanout`), the node binary.
