//! # strata-shard: the storage engine of one shard
//!
//! A shard is a slice of the series space. This crate stores its samples and answers partial
//! queries over them. It is the state machine that the `raft` crate applies committed batches to,
//! so it is **pure**: it never opens a socket, never reads a clock (time arrives as an argument),
//! never draws random numbers, and touches files only through the [`fs::Fs`] seam. It knows
//! nothing about Raft, the ring, HTTP or PromQL text; it must not depend on any other Strata crate.
//!
//! ## Map
//! - [`series`]: tenant + labels, validation, the stable [`series::SeriesId`].
//! - [`batch`]: [`batch::WriteBatch`], the encoded form a write keeps from router to engine.
//! - [`chunk`]: Gorilla chunk codec (delta-of-delta timestamps, XOR floats).
//! - [`matcher`], [`index`]: label matchers and the inverted index (roaring postings).
//! - [`query`], [`rangefn`], [`partial`]: partial-aggregation requests, range functions, and the
//!   mergeable partial states the router combines across shards.
//! - [`rollup`]: 1m / 1h rollup records and range functions evaluated over them.
//! - [`engine`]: head, out-of-order buffer, dedup, limits, blocks, checkpoints, retention.
//! - [`fs`], [`sim_fs`], [`clock`]: the determinism seams.
//! - [`block`], [`codec`]: block file format and the byte helpers of our file formats.
//! - [`workload`]: deterministic synthetic scrape data (demo, benches, tests).
//!
//! ## Invariants (cited by number in assertion messages)
//! - S1. A series is identified by its full [`series::SeriesKey`]; the 64-bit id only narrows
//!   the lookup. Two keys with the same id are two series.
//! - S2. For one (series, timestamp) at most one value is stored. Rule D1: the first write wins;
//!   a later write of the same bits is an idempotent duplicate (accepted, stored once); a later
//!   write of different bits is refused with `DuplicateSampleForTimestamp`. Raft applies batches
//!   in the same order on every replica, so every replica keeps the same value.
//! - S3. Applying a batch depends only on the engine state and the batch: the result (state and
//!   per-sample outcome) is identical on every replica.
//! - S4. Everything covered by the last published checkpoint survives a crash; the Raft log
//!   re-applies what came after (re-applying is harmless by S2).
//! - S5. A file is published only after its bytes and its directory entry are synced; a file is
//!   deleted only after the manifest that stops referring to it is durable.
//! - S6. A chunk never spans a block boundary, so retention removes whole files.
//! - S7. Stored timestamps and query times lie within `±`[`series::TS_ABS_MAX_MS`]; samples and
//!   queries outside are refused with an error, so time arithmetic inside the crate cannot
//!   overflow.

pub mod batch;
pub mod block;
pub mod chunk;
pub mod clock;
pub mod codec;
pub mod engine;
pub mod error;
pub mod fs;
pub mod index;
pub mod matcher;
pub mod partial;
pub mod query;
pub mod query_wire;
pub mod rangefn;
pub mod rollup;
pub mod series;
pub mod sim_fs;
pub mod workload;

pub use batch::{BatchSeries, WriteBatch, WriteBatchBuilder};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use fs::{Fs, FsFile, StdFs};
pub use series::{
    Label, LabelLimits, Labels, STALE_NAN_BITS, Sample, SeriesId, SeriesKey, TS_ABS_MAX_MS, Tenant,
};
