//! # strata-bench: the remote-write ingest load generator
//!
//! Sends Prometheus remote-write 1.0 requests (Snappy-compressed protobuf) built from
//! deterministic synthetic series to one or more URLs, and reports samples/s, errors by HTTP
//! status and latency percentiles. `bench/ingest.sh` runs it against Strata and
//! VictoriaMetrics; docs/BENCHMARKS.md has the method.
//!
//! - [`shape`]: the series (labels and how values move) of the `node_exporter` and `tsbs-cpu`
//!   shapes, each a pure function of the seed and the series index.
//! - [`payload`]: encodes a request for a slice of series and a run of scrape timestamps.
//! - [`schedule`]: which (series slice, scrape round) is sent next, so that a series' sample
//!   `i + 1` is never sent before its sample `i` was acknowledged.
//! - [`report`]: latency percentiles and the final lines.
//! - [`tsbs`]: the TSBS devops query types as PromQL (`strata-bench query`), and a summary of
//!   an answer (series, points, sum) to compare systems by.
//!
//! Invariants:
//! - B1. The same flags and seed give the same requests, byte for byte (timestamps included
//!   when `--end-ms` is given); nothing here reads a clock or ambient randomness. Only the
//!   binary's `clock` module reads the wall clock.
//! - B2. Per series, samples are sent in time order, and a sample is sent only after every
//!   earlier sample of its series was answered (acknowledged, refused or given up on).
//!
//! Must not depend on: any Strata crate outside tests (it is a client of the wire protocol,
//! and must measure other systems by the same yardstick).

pub mod payload;
pub mod report;
pub mod schedule;
pub mod shape;
pub mod tsbs;
