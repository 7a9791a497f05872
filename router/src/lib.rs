//! # strata-router: where a write goes
//!
//! Its job, per DESIGN.md: the consistent-hash ring, replica placement across zones, and the
//! write path: validate with `strata_shard::series`, compute the `SeriesId`, group samples per
//! shard, send each batch to the shard leader, follow `NotLeader` hints, retry with the same
//! payload.
//!
//! ## Map of what is built
//! - [`ring`]: the consistent-hash ring (`hashring`, wrapped with our own virtual-node keys and a
//!   fixed xxh3 hasher, golden-tested: H1–H4), shard ↔ Raft group ids ([`ring::group_of`]:
//!   shard `s` is group `s + 1`, group 0 is meta), and [`ring::RingSet`], the rings of every
//!   epoch of the meta group's history: writes follow the newest epoch, queries ask the union
//!   of the shards of every epoch their time range (widened by the routing slack) touches
//!   (H5, H6).
//! - [`remote_write`]: Prometheus remote-write 1.0 bodies (Snappy block format + protobuf
//!   `prometheus.WriteRequest`) decoded and validated into `(SeriesKey, Vec<Sample>)` per series,
//!   with per-series errors and the HTTP status a sender expects. Pure (no IO, no clock, no HTTP
//!   types): the node binary serves `/api/v1/write` and calls it.
//!
//! - [`placement`]: which nodes hold each shard group's replicas ([`placement::plan`], pure:
//!   distinct zones, stable, spread; slot 0 is the preferred leader), run by the meta
//!   leader's controller in the node binary (P1–P4).
//!
//! Must not depend on: PromQL parsing (`strata-query-fanout`), the node binary.

pub mod placement;
pub mod remote_write;
pub mod ring;
pub mod write;
