//! # strata-query-fanout: PromQL over many shards
//!
//! Parses PromQL with `promql-parser`, pushes selectors, range functions and decomposable
//! aggregations down to the shards as [`strata_shard::query::PartialQuery`], merges the
//! shards' [`strata_shard::partial::PartialResult`]s and evaluates the rest here, with
//! Prometheus 3.x semantics.
//!
//! ## Types
//! - [`eval::Value`]: what an expression evaluates to over a whole [`TimeGrid`] at once (a
//!   range query is a grid of instants; an instant query a grid of one): a scalar per
//!   instant, a vector (series with an optional value per instant) or a string. Range vectors
//!   exist only as the argument of a range function, which [`eval`] turns into a vector.
//! - [`source::Source`]: where selections go. It answers one `PartialQuery` for the whole
//!   cluster (or one test engine) with one merged `PartialResult` plus warnings (shards that
//!   did not answer, when the request allows a partial result). [`source::MemorySource`] is
//!   the in-memory one used by tests and by the differential checks of the evaluator.
//! - [`eval::Evaluator`]: walks the AST. Pushdown happens where the AST allows it:
//!   - a vector selector → a `PartialQuery` without range (lookback window);
//!   - `f(selector[r])` for a range function the shard knows → a `PartialQuery` with a range;
//!   - `agg by/without (…) (x)` where `x` is one of the two above and `agg` decomposes (sum,
//!     count, min, max, avg, group, stddev, stdvar, topk, bottomk) → the aggregation too, so
//!     each shard returns one partial state per group and instant;
//!   - everything else (binary operators, other functions, aggregations over computed
//!     vectors, subqueries) is evaluated here over the fetched vectors.
//!
//! ## Invariants
//! - Q1. The answer does not depend on how series are spread over shards: pushed-down
//!   aggregations merge associatively (`strata_shard::partial`), and aggregations evaluated
//!   here fold the same states in label order.
//! - Q2. Windows are left-open, as in Prometheus 3.x: an instant selector at `t` sees
//!   `(t - lookback, t]`, a range `[r]` sees `(t - r, t]`; `offset` shifts and `@` pins the
//!   instants a selector is evaluated at, never the output's timestamps.
//! - Q3. Bad input is an [`eval::QueryError`] naming what was wrong (the function, the
//!   argument, the label, the limit), never a panic and never a silently different answer.
//!
//! Must not depend on: the Raft internals (only its client API), HTTP server code.

pub mod eval;
pub mod functions;
pub mod source;

pub use strata_shard::query::TimeGrid;
