//! What a router asks a shard for: the partial-aggregation request types.
//!
//! A [`PartialQuery`] names series by matchers, a time grid, an optional range function and an
//! optional decomposable aggregation. The shard answers with a
//! [`PartialResult`](crate::partial::PartialResult) that the router merges across shards and then
//! finalises; merging is associative and commutative, so the answer does not depend on how the
//! series space was cut into shards.
//!
//! Semantics follow Prometheus 3.x:
//! - Every window is left-open: an instant selector at `t` looks at `(t - lookback, t]`, a range
//!   selector `[r]` at `(t - r, t]`.
//! - A stale marker ([`STALE_NAN_BITS`](crate::series::STALE_NAN_BITS)) ends a series for
//!   instant selection and is never a sample of a range.

use crate::matcher::Matcher;
use crate::series::Tenant;

/// Default lookback delta of instant selectors (Prometheus' `--query.lookback-delta`).
pub const LOOKBACK_MS_DEFAULT: i64 = 5 * 60 * 1000;

/// The evaluation instants `start, start + step, …` up to and including `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeGrid {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Must be > 0. An instant query is a grid with `start_ms == end_ms` (any positive step).
    pub step_ms: i64,
}

impl TimeGrid {
    pub fn instant(t_ms: i64) -> TimeGrid {
        TimeGrid {
            start_ms: t_ms,
            end_ms: t_ms,
            step_ms: 1,
        }
    }

    /// The instants of the grid, in order.
    pub fn steps(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len() as i64).map(move |i| self.start_ms + i * self.step_ms)
    }

    /// Number of instants (0 if `end < start`).
    pub fn len(&self) -> usize {
        if self.end_ms < self.start_ms || self.step_ms <= 0 {
            0
        } else {
            // i128: `end - start` may not fit an i64 for unvalidated grids.
            let n = (self.end_ms as i128 - self.start_ms as i128) / self.step_ms as i128 + 1;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Range functions a shard evaluates over `(t - range, t]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Changes,
    Resets,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    PresentOverTime,
    StddevOverTime,
    StdvarOverTime,
    /// `quantile_over_time(q, …)`; `q` outside [0, 1] gives ±Inf as in Prometheus.
    QuantileOverTime(f64),
    /// Slope per second of the least-squares line through the samples.
    Deriv,
    /// `predict_linear(…, s)`: the least-squares line's value `s` seconds after `t`.
    PredictLinear(f64),
    /// `timestamp(selector)`: the timestamp, in seconds, of the sample an instant selector
    /// with lookback `range_ms` picks (the newest in the window; none when that is a stale
    /// marker). Unlike every other range function it sees stale markers.
    Timestamp,
}

impl RangeFn {
    /// The PromQL name of the function.
    pub fn name(&self) -> &'static str {
        match self {
            RangeFn::Rate => "rate",
            RangeFn::Increase => "increase",
            RangeFn::Delta => "delta",
            RangeFn::Irate => "irate",
            RangeFn::Idelta => "idelta",
            RangeFn::Changes => "changes",
            RangeFn::Resets => "resets",
            RangeFn::AvgOverTime => "avg_over_time",
            RangeFn::MinOverTime => "min_over_time",
            RangeFn::MaxOverTime => "max_over_time",
            RangeFn::SumOverTime => "sum_over_time",
            RangeFn::CountOverTime => "count_over_time",
            RangeFn::LastOverTime => "last_over_time",
            RangeFn::PresentOverTime => "present_over_time",
            RangeFn::StddevOverTime => "stddev_over_time",
            RangeFn::StdvarOverTime => "stdvar_over_time",
            RangeFn::QuantileOverTime(_) => "quantile_over_time",
            RangeFn::Deriv => "deriv",
            RangeFn::PredictLinear(_) => "predict_linear",
            RangeFn::Timestamp => "timestamp",
        }
    }
}

/// A range function with its range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RangeSpec {
    pub func: RangeFn,
    /// Length of the left-open window `(t - range_ms, t]`; must be > 0.
    pub range_ms: i64,
}

/// Aggregations that decompose into mergeable partial states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Count,
    Min,
    Max,
    /// Merged as sum + count.
    Avg,
    Group,
    /// Merged as (count, mean, M2) moments.
    Stddev,
    Stdvar,
    /// Every shard returns its k best candidates per group and instant; the router keeps k.
    Topk(usize),
    Bottomk(usize),
}

/// `by (...)` or `without (...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Group key = only these labels. `by ()` puts every series in one group.
    By(Vec<String>),
    /// Group key = all labels but these and `__name__`.
    Without(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Aggregation {
    pub op: AggOp,
    pub grouping: Grouping,
}

/// A request to one shard.
#[derive(Clone, Debug)]
pub struct PartialQuery {
    pub tenant: Tenant,
    pub matchers: Vec<Matcher>,
    pub grid: TimeGrid,
    /// Lookback of an instant selector (used when `range` is `None`).
    pub lookback_ms: i64,
    pub range: Option<RangeSpec>,
    /// `None`: return every selected series' values on the grid (the router evaluates further).
    pub aggregation: Option<Aggregation>,
}

impl PartialQuery {
    /// The oldest timestamp (exclusive) any grid instant can look at.
    pub fn window_start_ms(&self) -> i64 {
        let reach = self.range.map_or(self.lookback_ms, |r| r.range_ms);
        self.grid.start_ms.saturating_sub(reach)
    }
}
