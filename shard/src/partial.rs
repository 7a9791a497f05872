//! Partial aggregation: what one shard answers for a [`PartialQuery`], and how the router merges
//! the answers of many shards into the final result.
//!
//! ## Evaluation on a shard ([`evaluate`])
//! For every selected series and every grid instant `t`:
//! - without a range function (instant selector): the value is the latest sample in
//!   `(t - lookback, t]`; if that sample is a stale marker the series has no value at `t`;
//! - with a range function: the samples in `(t - range, t]` minus stale markers go to
//!   [`rangefn::eval`], which may yield no value.
//!
//! Without an aggregation the shard returns each series' values ([`PartialResult::Series`]),
//! labelled with the series' full labels — also after a range function that drops `__name__` in
//! PromQL: the router, which evaluates further, applies that drop (it has to check the resulting
//! label-set collisions across shards anyway).
//!
//! With an aggregation the shard folds the values into one [`AggState`] per group and instant
//! ([`PartialResult::Groups`]). The group key and the topk/bottomk labels are computed from the
//! range function's *output* labels, i.e. without `__name__` unless the function is
//! `last_over_time` ([`rangefn::drops_metric_name`]), as Prometheus does.
//! - `by (ls)`: key = only the labels `ls` (including `__name__` only if listed);
//! - `without (ls)`: key = all labels except `ls` and `__name__`.
//!
//! ## Merging ([`PartialResult::merge`]) and finalising ([`PartialResult::finalize`])
//! Merging is associative and commutative up to float rounding, so the final answer does not
//! depend on how the series were cut into shards nor on the order the answers arrive. The math
//! follows Prometheus 3.x `engine.go` (`aggregation`, `aggregationK`); folding single values one
//! by one on a shard gives bit-for-bit Prometheus' sequential result:
//! - `sum`: Kahan–Neumaier sum; merging adds the other sum and its compensation.
//! - `avg`: Kahan sum and count, divided at the end; once a sum would overflow, the state turns
//!   into an incremental (Kahan-compensated) mean, as Prometheus does. Two partial states merge
//!   as a count-weighted mean of their means. Deviation: Prometheus never merges means, so when
//!   the sum overflows the result may differ from Prometheus' in the last bits.
//! - `min`/`max`: NaN only if every value is NaN.
//! - `stddev`/`stdvar`: population statistics from (count, mean, M2) moments; a single value is
//!   added by Welford's update exactly as Prometheus does, partial moments merge by Chan et al.'s
//!   formula. A non-finite value makes M2 NaN, so the result is NaN whatever the order.
//! - `count`, `group` (always 1).
//! - `topk`/`bottomk`: per group and instant the k best `(value, full labels)` candidates. NaN
//!   ranks below every number for both (as in Prometheus' heaps). Ties — which Prometheus breaks
//!   by input order — are broken by the label set, ascending, so the choice does not depend on
//!   sharding. [`PartialResult::finalize`] returns the selected series with their own labels.
//!
//! ## Limits
//! A query is refused (`Error::InvalidRequest`) if its step is not positive, its end is before
//! its start, its grid has more than [`GRID_STEPS_MAX`] instants, its range or lookback is not
//! positive, or it asks for `topk`/`bottomk` with k = 0.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::query::{AggOp, Grouping, PartialQuery, RangeFn, TimeGrid};
use crate::rangefn;
use crate::series::{Label, Labels, METRIC_NAME_LABEL, Sample, TS_ABS_MAX_MS, is_stale_marker};

/// Most instants one query grid may have (Prometheus' limit of 11,000 points per series).
pub const GRID_STEPS_MAX: usize = 11_000;

/// A decomposable aggregation state for one group at one instant.
#[derive(Clone, Debug, PartialEq)]
pub enum AggState {
    /// Kahan–Neumaier sum: the value is `sum + c`.
    Sum {
        sum: f64,
        c: f64,
    },
    Count(f64),
    Min(f64),
    Max(f64),
    /// While `incremental` is false, `sum`/`c` are the Kahan sum of `count` values; once the sum
    /// would overflow they hold the running mean and its compensation instead.
    Avg {
        sum: f64,
        c: f64,
        count: f64,
        incremental: bool,
    },
    Group,
    /// Moments for stddev/stdvar: population variance = `m2 / count`.
    Moments {
        count: f64,
        mean: f64,
        m2: f64,
    },
    /// Up to k candidates, best first (highest value; NaN last; ties by labels).
    TopK(Vec<(f64, Labels)>),
    /// Up to k candidates, best first (lowest value; NaN last; ties by labels).
    BottomK(Vec<(f64, Labels)>),
}

impl AggState {
    /// The state of a group holding the single value `value` of the series `labels`.
    pub fn from_value(op: AggOp, value: f64, labels: &Labels) -> AggState {
        match op {
            AggOp::Sum => AggState::Sum { sum: value, c: 0.0 },
            AggOp::Count => AggState::Count(1.0),
            AggOp::Min => AggState::Min(value),
            AggOp::Max => AggState::Max(value),
            AggOp::Avg => AggState::Avg {
                sum: value,
                c: 0.0,
                count: 1.0,
                incremental: false,
            },
            AggOp::Group => AggState::Group,
            AggOp::Stddev | AggOp::Stdvar => AggState::Moments {
                count: 1.0,
                mean: value,
                // Prometheus starts the aggregate at NaN for a non-finite first value.
                m2: if value.is_finite() { 0.0 } else { f64::NAN },
            },
            AggOp::Topk(_) => AggState::TopK(vec![(value, labels.clone())]),
            AggOp::Bottomk(_) => AggState::BottomK(vec![(value, labels.clone())]),
        }
    }

    /// Folds `other` (a state of the same group and instant) into `self`.
    pub fn merge(&mut self, other: AggState, op: AggOp) -> Result<()> {
        match (self, other) {
            (AggState::Sum { sum, c }, AggState::Sum { sum: s2, c: c2 }) => {
                let (s, k) = rangefn::kahan_inc(s2, *sum, *c);
                *sum = s;
                *c = k + c2;
            }
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::Min(a), AggState::Min(b)) => {
                if *a > b || a.is_nan() {
                    *a = b;
                }
            }
            (AggState::Max(a), AggState::Max(b)) => {
                if *a < b || a.is_nan() {
                    *a = b;
                }
            }
            (a @ AggState::Avg { .. }, b @ AggState::Avg { .. }) => merge_avg(a, b),
            (AggState::Group, AggState::Group) => {}
            (
                AggState::Moments { count, mean, m2 },
                AggState::Moments {
                    count: n2,
                    mean: mean2,
                    m2: m2_2,
                },
            ) => {
                let n1 = *count;
                let n = n1 + n2;
                if n2 == 1.0 {
                    // Welford's update, exactly Prometheus' sequence of operations.
                    let delta = mean2 - *mean;
                    *mean += delta / n;
                    *m2 += delta * (mean2 - *mean);
                } else {
                    // Chan et al.: combine two partial moment sets.
                    let delta = mean2 - *mean;
                    *mean += delta * (n2 / n);
                    *m2 += m2_2 + delta * delta * (n1 * n2 / n);
                }
                *count = n;
            }
            (AggState::TopK(a), AggState::TopK(b)) => {
                let k = k_of(op)?;
                *a = merge_candidates(std::mem::take(a), b, k, true);
            }
            (AggState::BottomK(a), AggState::BottomK(b)) => {
                let k = k_of(op)?;
                *a = merge_candidates(std::mem::take(a), b, k, false);
            }
            (a, b) => return Err(mismatch(&format!("states {a:?} and {b:?} differ in kind"))),
        }
        Ok(())
    }

    /// The final value of a non-topk/bottomk state (`None` for topk/bottomk, whose output is the
    /// candidate series themselves).
    pub fn value(&self, op: AggOp) -> Option<f64> {
        Some(match self {
            AggState::Sum { sum, c } => sum + c,
            AggState::Count(n) => *n,
            AggState::Min(v) | AggState::Max(v) => *v,
            AggState::Avg {
                sum,
                c,
                count,
                incremental,
            } => {
                if *incremental {
                    sum + c
                } else {
                    sum / count + c / count
                }
            }
            AggState::Group => 1.0,
            AggState::Moments { count, m2, .. } => {
                let variance = m2 / count;
                if op == AggOp::Stddev {
                    variance.sqrt()
                } else {
                    variance
                }
            }
            AggState::TopK(_) | AggState::BottomK(_) => return None,
        })
    }
}

/// Merges two `Avg` states: Kahan sums while the sum stays finite, else weighted means.
fn merge_avg(a: &mut AggState, b: AggState) {
    let (
        AggState::Avg {
            sum: s1,
            c: c1,
            count: n1,
            incremental: inc1,
        },
        AggState::Avg {
            sum: s2,
            c: c2,
            count: n2,
            incremental: inc2,
        },
    ) = (&*a, b)
    else {
        unreachable!("merge_avg is only called with two Avg states");
    };
    let (s1, c1, n1, inc1) = (*s1, *c1, *n1, *inc1);
    let n = n1 + n2;
    if !inc1 && !inc2 {
        let (s, c) = rangefn::kahan_inc(s2, s1, c1);
        if !s.is_infinite() {
            *a = AggState::Avg {
                sum: s,
                c: c + c2,
                count: n,
                incremental: false,
            };
            return;
        }
    }
    // The sum would overflow (or already did): continue with means, as Prometheus does.
    let to_mean = |s: f64, c: f64, n: f64, inc: bool| if inc { (s, c) } else { (s / n, c / n) };
    let (m1, k1) = to_mean(s1, c1, n1, inc1);
    let (m2, k2) = to_mean(s2, c2, n2, inc2);
    let q1 = n1 / n;
    // For one added value this is Prometheus' `f / count` term verbatim.
    let term2 = if n2 == 1.0 { m2 / n } else { m2 * (n2 / n) };
    let (mean, c) = rangefn::kahan_inc(term2, q1 * m1, q1 * k1);
    *a = AggState::Avg {
        sum: mean,
        c: c + k2 * (n2 / n),
        count: n,
        incremental: true,
    };
}

fn k_of(op: AggOp) -> Result<usize> {
    match op {
        AggOp::Topk(k) | AggOp::Bottomk(k) => Ok(k),
        other => Err(mismatch(&format!(
            "topk/bottomk state merged under {other:?}"
        ))),
    }
}

/// Candidate order, best first: by value (descending for topk, ascending for bottomk), NaN
/// last, then by labels ascending so ties never depend on input order.
fn candidate_cmp(top: bool, a: &(f64, Labels), b: &(f64, Labels)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            let asc = a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal);
            if top { asc.reverse() } else { asc }
        }
    };
    by_value.then_with(|| a.1.cmp(&b.1))
}

/// Merges two best-first candidate lists and keeps the k best.
fn merge_candidates(
    a: Vec<(f64, Labels)>,
    b: Vec<(f64, Labels)>,
    k: usize,
    top: bool,
) -> Vec<(f64, Labels)> {
    let mut out = Vec::with_capacity(k.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < k {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => candidate_cmp(top, x, y) != Ordering::Greater,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}

fn mismatch(reason: &str) -> Error {
    Error::InvalidRequest {
        reason: format!("cannot merge partial results: {reason}"),
    }
}

/// One series' values on the grid (no aggregation asked).
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPoints {
    pub labels: Labels,
    /// Only instants that have a value, in time order.
    pub points: Vec<Sample>,
}

/// One group's partial states: `points[i]` belongs to grid instant i (None where no series of the
/// group had a value).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPartial {
    pub key: Labels,
    pub points: Vec<Option<AggState>>,
}

/// What a shard answers; see the module doc.
#[derive(Clone, Debug, PartialEq)]
pub enum PartialResult {
    Series(Vec<SeriesPoints>),
    /// Groups sorted by key; every group has exactly `grid.len()` points.
    Groups {
        op: AggOp,
        grid: TimeGrid,
        groups: Vec<GroupPartial>,
    },
}

/// Refuses a malformed query with a reason the client can act on.
pub fn validate(q: &PartialQuery) -> Result<()> {
    let refuse = |reason: String| Err(Error::InvalidRequest { reason });
    let g = q.grid;
    if g.step_ms <= 0 {
        return refuse(format!("step must be positive (got {} ms)", g.step_ms));
    }
    for (what, t) in [("start", g.start_ms), ("end", g.end_ms)] {
        if !(-TS_ABS_MAX_MS..=TS_ABS_MAX_MS).contains(&t) {
            return refuse(format!(
                "{what} ({t} ms) is out of range: query times must lie within ±{TS_ABS_MAX_MS} ms"
            ));
        }
    }
    if g.end_ms < g.start_ms {
        return refuse(format!(
            "end ({} ms) is before start ({} ms)",
            g.end_ms, g.start_ms
        ));
    }
    // i128: end - start may not fit an i64 for hostile timestamps.
    let steps = (g.end_ms as i128 - g.start_ms as i128) / g.step_ms as i128 + 1;
    if steps > GRID_STEPS_MAX as i128 {
        return refuse(format!(
            "the grid has {steps} instants, more than the limit of {GRID_STEPS_MAX}; \
             increase the step or shorten the range"
        ));
    }
    match q.range {
        Some(r) if r.range_ms <= 0 || r.range_ms > TS_ABS_MAX_MS => {
            return refuse(format!(
                "range of {} must be positive and at most {TS_ABS_MAX_MS} ms (got {} ms)",
                r.func.name(),
                r.range_ms
            ));
        }
        None if q.lookback_ms <= 0 || q.lookback_ms > TS_ABS_MAX_MS => {
            return refuse(format!(
                "lookback must be positive and at most {TS_ABS_MAX_MS} ms (got {} ms)",
                q.lookback_ms
            ));
        }
        _ => {}
    }
    if let Some(agg) = &q.aggregation
        && let AggOp::Topk(0) | AggOp::Bottomk(0) = agg.op
    {
        return refuse("topk/bottomk need k >= 1 (got k = 0)".to_string());
    }
    Ok(())
}

/// Evaluates a partial query over the selected series of one shard. Each item: a series' full
/// labels and its samples sorted by ts, deduplicated, covering at least
/// `(q.window_start_ms(), q.grid.end_ms]` (it may contain samples outside that window; they are
/// ignored), stale markers included.
pub fn evaluate<'a>(
    q: &PartialQuery,
    series: impl IntoIterator<Item = (&'a Labels, &'a [Sample])>,
) -> Result<PartialResult> {
    validate(q)?;
    let n = q.grid.len();
    let Some(agg) = &q.aggregation else {
        let mut out: Vec<SeriesPoints> = series
            .into_iter()
            .filter_map(|(labels, samples)| {
                let points: Vec<Sample> = series_values(q, samples)
                    .into_iter()
                    .map(|(i, v)| Sample::new(instant(&q.grid, i), v))
                    .collect();
                (!points.is_empty()).then(|| SeriesPoints {
                    labels: labels.clone(),
                    points,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        return Ok(PartialResult::Series(out));
    };

    let mut groups: BTreeMap<Labels, Vec<Option<AggState>>> = BTreeMap::new();
    for (labels, samples) in series {
        let values = series_values(q, samples);
        if values.is_empty() {
            continue;
        }
        let out_labels = output_labels(q, labels);
        let points = groups
            .entry(group_key(&out_labels, &agg.grouping))
            .or_insert_with(|| vec![None; n]);
        for (i, v) in values {
            let state = AggState::from_value(agg.op, v, &out_labels);
            match &mut points[i] {
                Some(acc) => acc.merge(state, agg.op)?,
                slot @ None => *slot = Some(state),
            }
        }
    }
    Ok(PartialResult::Groups {
        op: agg.op,
        grid: q.grid,
        groups: groups
            .into_iter()
            .map(|(key, points)| GroupPartial { key, points })
            .collect(),
    })
}

fn instant(grid: &TimeGrid, i: usize) -> i64 {
    grid.start_ms + i as i64 * grid.step_ms
}

/// The (grid index, value) pairs of one series, in grid order.
fn series_values(q: &PartialQuery, samples: &[Sample]) -> Vec<(usize, f64)> {
    debug_assert!(
        samples.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms),
        "series samples must be sorted by timestamp and deduplicated"
    );
    let mut out = Vec::new();
    match q.range {
        None => {
            // `seen` counts the samples at or before t; it only grows because t does.
            let mut seen = 0;
            for (i, t) in q.grid.steps().enumerate() {
                while seen < samples.len() && samples[seen].ts_ms <= t {
                    seen += 1;
                }
                let Some(latest) = seen.checked_sub(1).map(|j| samples[j]) else {
                    continue;
                };
                if latest.ts_ms > t.saturating_sub(q.lookback_ms) && !is_stale_marker(latest.value)
                {
                    out.push((i, latest.value));
                }
            }
        }
        Some(spec) => {
            // A stale marker is never a sample of a range: drop them once for all windows
            // (`timestamp` reads what an instant selector reads, stale markers included).
            let clean: Vec<Sample> = samples
                .iter()
                .copied()
                .filter(|s| spec.func == RangeFn::Timestamp || !is_stale_marker(s.value))
                .collect();
            for (i, t) in q.grid.steps().enumerate() {
                let start = t.saturating_sub(spec.range_ms);
                let lo = clean.partition_point(|s| s.ts_ms <= start);
                let hi = clean.partition_point(|s| s.ts_ms <= t);
                if let Some(v) = rangefn::eval(spec.func, &clean[lo..hi], t, spec.range_ms) {
                    out.push((i, v));
                }
            }
        }
    }
    out
}

/// The labels of the selector's output: the range function may drop `__name__`.
pub fn output_labels(q: &PartialQuery, labels: &Labels) -> Labels {
    match q.range {
        Some(spec) if rangefn::drops_metric_name(spec.func) => {
            filter_labels(labels, |name| name != METRIC_NAME_LABEL)
        }
        _ => labels.clone(),
    }
}

/// The group a series with `labels` falls in under `grouping` (`by`: only those labels; `without`:
/// all others but `__name__`).
pub fn group_key(labels: &Labels, grouping: &Grouping) -> Labels {
    match grouping {
        Grouping::By(names) => filter_labels(labels, |name| names.iter().any(|n| n == name)),
        Grouping::Without(names) => filter_labels(labels, |name| {
            name != METRIC_NAME_LABEL && !names.iter().any(|n| n == name)
        }),
    }
}

/// A subset of a sorted label set is still sorted, unique and non-empty-valued.
pub fn filter_labels(labels: &Labels, keep: impl Fn(&str) -> bool) -> Labels {
    Labels::from_sorted_unchecked(
        labels
            .iter()
            .filter(|l| keep(&l.name))
            .cloned()
            .collect::<Vec<Label>>(),
    )
}

impl PartialResult {
    /// Merges another shard's partial result for the SAME query. Associative and commutative
    /// (up to float rounding). Err(InvalidRequest) on mismatched shapes.
    pub fn merge(&mut self, other: PartialResult) -> Result<()> {
        match (self, other) {
            (PartialResult::Series(a), PartialResult::Series(b)) => {
                a.extend(b);
                Ok(())
            }
            (
                PartialResult::Groups { op, grid, groups },
                PartialResult::Groups {
                    op: op2,
                    grid: grid2,
                    groups: groups2,
                },
            ) => {
                if *op != op2 {
                    return Err(mismatch(&format!("aggregations {op:?} and {op2:?} differ")));
                }
                if *grid != grid2 {
                    return Err(mismatch(&format!("grids {grid:?} and {grid2:?} differ")));
                }
                let n = grid.len();
                let mut merged: BTreeMap<Labels, Vec<Option<AggState>>> = BTreeMap::new();
                for g in std::mem::take(groups).into_iter().chain(groups2) {
                    if g.points.len() != n {
                        return Err(mismatch(&format!(
                            "group {} has {} points for a grid of {n}",
                            g.key,
                            g.points.len()
                        )));
                    }
                    match merged.get_mut(&g.key) {
                        None => {
                            merged.insert(g.key, g.points);
                        }
                        Some(acc) => {
                            for (slot, p) in acc.iter_mut().zip(g.points) {
                                match (slot.as_mut(), p) {
                                    (_, None) => {}
                                    (None, p) => *slot = p,
                                    (Some(a), Some(b)) => a.merge(b, *op)?,
                                }
                            }
                        }
                    }
                }
                *groups = merged
                    .into_iter()
                    .map(|(key, points)| GroupPartial { key, points })
                    .collect();
                Ok(())
            }
            (a, b) => Err(mismatch(&format!("{} and {} results", a.kind(), b.kind()))),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            PartialResult::Series(_) => "series",
            PartialResult::Groups { .. } => "aggregated",
        }
    }

    /// Final values: one SeriesPoints per group (labels = group key; for topk/bottomk: the
    /// selected series with their own full labels, as Prometheus does), sorted by labels.
    /// Series or groups without any point are left out.
    pub fn finalize(self) -> Vec<SeriesPoints> {
        match self {
            PartialResult::Series(mut v) => {
                v.sort_by(|a, b| a.labels.cmp(&b.labels));
                v
            }
            PartialResult::Groups {
                op: op @ (AggOp::Topk(_) | AggOp::Bottomk(_)),
                grid,
                groups,
            } => {
                let mut by_series: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
                for g in groups {
                    for (i, p) in g.points.into_iter().enumerate() {
                        let (Some(AggState::TopK(cands)) | Some(AggState::BottomK(cands))) = p
                        else {
                            debug_assert!(p.is_none(), "{op:?} group holds {p:?}");
                            continue;
                        };
                        let t = instant(&grid, i);
                        for (v, labels) in cands {
                            by_series.entry(labels).or_default().push(Sample::new(t, v));
                        }
                    }
                }
                by_series
                    .into_iter()
                    .map(|(labels, points)| SeriesPoints { labels, points })
                    .collect()
            }
            PartialResult::Groups { op, grid, groups } => groups
                .into_iter()
                .filter_map(|g| {
                    let points: Vec<Sample> = g
                        .points
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| {
                            let v = p.as_ref()?.value(op)?;
                            Some(Sample::new(instant(&grid, i), v))
                        })
                        .collect();
                    (!points.is_empty()).then_some(SeriesPoints {
                        labels: g.key,
                        points,
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{Aggregation, RangeFn, RangeSpec};
    use crate::series::{STALE_NAN_BITS, Tenant};

    fn stale() -> f64 {
        f64::from_bits(STALE_NAN_BITS)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs).unwrap()
    }

    fn key(pairs: &[(&str, &str)]) -> Labels {
        Labels::normalize(
            pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            &Default::default(),
        )
        .unwrap()
    }

    fn query(
        grid: TimeGrid,
        range: Option<RangeSpec>,
        agg: Option<(AggOp, Grouping)>,
    ) -> PartialQuery {
        PartialQuery {
            tenant: Tenant::new("t").unwrap(),
            matchers: vec![],
            grid,
            lookback_ms: 5_000,
            range,
            aggregation: agg.map(|(op, grouping)| Aggregation { op, grouping }),
        }
    }

    fn run(q: &PartialQuery, data: &[(Labels, Vec<Sample>)]) -> Vec<SeriesPoints> {
        evaluate(q, data.iter().map(|(l, s)| (l, s.as_slice())))
            .unwrap()
            .finalize()
    }

    /// Four series `m{i="0".."3", g=a|b}` with one sample each at t=10 s.
    fn instant_data(values: &[f64]) -> Vec<(Labels, Vec<Sample>)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let g = if i % 2 == 0 { "a" } else { "b" };
                (
                    labels(&[("__name__", "m"), ("i", &i.to_string()), ("g", g)]),
                    vec![Sample::new(10_000, *v)],
                )
            })
            .collect()
    }

    /// Aggregates `values` at the instant t=10 s into one group and returns its value.
    fn aggregate_one(op: AggOp, values: &[f64]) -> f64 {
        let q = query(
            TimeGrid::instant(10_000),
            None,
            Some((op, Grouping::By(vec![]))),
        );
        let out = run(&q, &instant_data(values));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].labels, key(&[]));
        assert_eq!(out[0].points.len(), 1);
        assert_eq!(out[0].points[0].ts_ms, 10_000);
        out[0].points[0].value
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan())
            || a == b
            || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn sum_is_kahan_compensated() {
        assert_eq!(aggregate_one(AggOp::Sum, &[1.0, 1e100, 1.0, -1e100]), 2.0);
        assert_eq!(aggregate_one(AggOp::Sum, &[1.5, 2.5]), 4.0);
        assert!(aggregate_one(AggOp::Sum, &[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        // Each shard's compensation survives the merge: {1, 1e100} + {1, -1e100} = 2.
        let shard = |vals: [f64; 2]| {
            let mut s = AggState::from_value(AggOp::Sum, vals[0], &key(&[]));
            s.merge(
                AggState::from_value(AggOp::Sum, vals[1], &key(&[])),
                AggOp::Sum,
            )
            .unwrap();
            s
        };
        let mut a = shard([1.0, 1e100]);
        a.merge(shard([1.0, -1e100]), AggOp::Sum).unwrap();
        assert_eq!(a.value(AggOp::Sum), Some(2.0));
    }

    #[test]
    fn count_group_min_max() {
        let nan = f64::NAN;
        assert_eq!(aggregate_one(AggOp::Count, &[1.0, nan, 3.0]), 3.0);
        assert_eq!(aggregate_one(AggOp::Group, &[7.0, 9.0]), 1.0);
        assert_eq!(aggregate_one(AggOp::Min, &[nan, 3.0, -1.0, nan]), -1.0);
        assert_eq!(aggregate_one(AggOp::Max, &[nan, 3.0, -1.0, nan]), 3.0);
        assert!(aggregate_one(AggOp::Min, &[nan, nan]).is_nan());
        assert!(aggregate_one(AggOp::Max, &[nan]).is_nan());
    }

    #[test]
    fn avg_is_direct_and_switches_to_incremental_on_overflow() {
        assert_eq!(aggregate_one(AggOp::Avg, &[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(aggregate_one(AggOp::Avg, &[1.0, 1e100, 1.0, -1e100]), 0.5);
        let big = 9.988_465_674_311_58e307;
        assert_eq!(aggregate_one(AggOp::Avg, &[big, big, big]), big);
        assert_eq!(aggregate_one(AggOp::Avg, &[-big, big]), 0.0);
        assert_eq!(
            aggregate_one(AggOp::Avg, &[1.0, f64::INFINITY]),
            f64::INFINITY
        );
        // Merging two shards whose sums overflow together still gives the mean.
        let mut a = AggState::from_value(AggOp::Avg, big, &key(&[]));
        a.merge(AggState::from_value(AggOp::Avg, big, &key(&[])), AggOp::Avg)
            .unwrap();
        let mut b = AggState::from_value(AggOp::Avg, big, &key(&[]));
        b.merge(AggState::from_value(AggOp::Avg, 0.0, &key(&[])), AggOp::Avg)
            .unwrap();
        a.merge(b, AggOp::Avg).unwrap();
        assert!(same(a.value(AggOp::Avg).unwrap(), big * 0.75));
    }

    #[test]
    fn stddev_and_stdvar_are_population_statistics() {
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let q = |op| {
            let data: Vec<_> = v
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    (
                        labels(&[("__name__", "m"), ("i", &i.to_string())]),
                        vec![Sample::new(10_000, *x)],
                    )
                })
                .collect();
            let q = query(
                TimeGrid::instant(10_000),
                None,
                Some((op, Grouping::By(vec![]))),
            );
            run(&q, &data)[0].points[0].value
        };
        assert_eq!(q(AggOp::Stdvar), 4.0);
        assert_eq!(q(AggOp::Stddev), 2.0);
        assert_eq!(aggregate_one(AggOp::Stddev, &[3.0]), 0.0);
        assert!(aggregate_one(AggOp::Stdvar, &[f64::INFINITY]).is_nan());
        assert!(aggregate_one(AggOp::Stdvar, &[1.0, f64::INFINITY, 2.0]).is_nan());
        assert!(aggregate_one(AggOp::Stdvar, &[1.0, f64::NAN]).is_nan());
        // Chan's merge of two partial moment sets equals the sequential result.
        let mut a = AggState::from_value(AggOp::Stdvar, 2.0, &key(&[]));
        let mut b = AggState::from_value(AggOp::Stdvar, 7.0, &key(&[]));
        for x in [4.0, 4.0, 4.0] {
            a.merge(
                AggState::from_value(AggOp::Stdvar, x, &key(&[])),
                AggOp::Stdvar,
            )
            .unwrap();
        }
        for x in [5.0, 5.0, 9.0] {
            b.merge(
                AggState::from_value(AggOp::Stdvar, x, &key(&[])),
                AggOp::Stdvar,
            )
            .unwrap();
        }
        a.merge(b, AggOp::Stdvar).unwrap();
        assert!(same(a.value(AggOp::Stdvar).unwrap(), 4.0));
    }

    #[test]
    fn grouping_by_and_without() {
        let data = instant_data(&[1.0, 2.0, 3.0, 4.0]);
        let by = query(
            TimeGrid::instant(10_000),
            None,
            Some((AggOp::Sum, Grouping::By(vec!["g".into()]))),
        );
        let out = run(&by, &data);
        let got: Vec<_> = out
            .iter()
            .map(|s| (s.labels.clone(), s.points[0].value))
            .collect();
        assert_eq!(
            got,
            vec![(key(&[("g", "a")]), 4.0), (key(&[("g", "b")]), 6.0)]
        );
        // without (i): drops i and __name__, keeps g.
        let without = query(
            TimeGrid::instant(10_000),
            None,
            Some((AggOp::Sum, Grouping::Without(vec!["i".into()]))),
        );
        assert_eq!(run(&without, &data), out);
        // by (__name__) keeps the name only when listed.
        let by_name = query(
            TimeGrid::instant(10_000),
            None,
            Some((AggOp::Count, Grouping::By(vec!["__name__".into()]))),
        );
        let out = run(&by_name, &data);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels, key(&[("__name__", "m")]));
        assert_eq!(out[0].points[0].value, 4.0);
    }

    #[test]
    fn range_functions_drop_the_name_before_grouping_except_last_over_time() {
        let data = vec![
            (
                labels(&[("__name__", "a"), ("j", "x")]),
                vec![Sample::new(1_000, 1.0), Sample::new(2_000, 2.0)],
            ),
            (
                labels(&[("__name__", "b"), ("j", "x")]),
                vec![Sample::new(1_000, 5.0)],
            ),
        ];
        let grid = TimeGrid::instant(2_000);
        let by_name = || {
            Some((
                AggOp::Sum,
                Grouping::By(vec!["__name__".into(), "j".into()]),
            ))
        };
        let sum_over = query(
            grid,
            Some(RangeSpec {
                func: RangeFn::SumOverTime,
                range_ms: 10_000,
            }),
            by_name(),
        );
        let out = run(&sum_over, &data);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels, key(&[("j", "x")]));
        assert_eq!(out[0].points[0].value, 8.0);
        let last = query(
            grid,
            Some(RangeSpec {
                func: RangeFn::LastOverTime,
                range_ms: 10_000,
            }),
            by_name(),
        );
        let out = run(&last, &data);
        let got: Vec<_> = out
            .iter()
            .map(|s| (s.labels.clone(), s.points[0].value))
            .collect();
        assert_eq!(
            got,
            vec![
                (key(&[("__name__", "a"), ("j", "x")]), 2.0),
                (key(&[("__name__", "b"), ("j", "x")]), 5.0)
            ]
        );
    }

    #[test]
    fn topk_and_bottomk_keep_full_labels_rank_nan_last_and_break_ties_by_labels() {
        let nan = f64::NAN;
        // i=0 a 5, i=1 b NaN, i=2 a 5, i=3 b 1
        let data = instant_data(&[5.0, nan, 5.0, 1.0]);
        let q = |op| {
            query(
                TimeGrid::instant(10_000),
                None,
                Some((op, Grouping::By(vec![]))),
            )
        };
        let picked = |op| -> Vec<(String, f64)> {
            run(&q(op), &data)
                .into_iter()
                .map(|s| (s.labels.get("i").unwrap().to_string(), s.points[0].value))
                .collect()
        };
        // Tie between i=0 and i=2 at 5: the smaller label set (i="0") wins.
        assert_eq!(picked(AggOp::Topk(1)), vec![("0".to_string(), 5.0)]);
        assert_eq!(
            picked(AggOp::Topk(3)),
            vec![("0".into(), 5.0), ("2".into(), 5.0), ("3".into(), 1.0)]
        );
        assert_eq!(
            picked(AggOp::Bottomk(2)),
            vec![("0".into(), 5.0), ("3".into(), 1.0)]
        );
        // NaN is chosen only when nothing else is left.
        let all = picked(AggOp::Bottomk(4));
        assert_eq!(all.len(), 4);
        assert!(all.iter().any(|(i, v)| i == "1" && v.is_nan()));
        // Full labels, __name__ included, as Prometheus returns for topk.
        let out = run(&q(AggOp::Topk(1)), &data);
        assert_eq!(
            out[0].labels,
            labels(&[("__name__", "m"), ("i", "0"), ("g", "a")])
        );
        // Per group: by (g) picks the best of each group.
        let by_g = query(
            TimeGrid::instant(10_000),
            None,
            Some((AggOp::Topk(1), Grouping::By(vec!["g".into()]))),
        );
        let ids: Vec<_> = run(&by_g, &data)
            .iter()
            .map(|s| s.labels.get("i").unwrap().to_string())
            .collect();
        assert_eq!(ids, ["0", "3"]);
    }

    #[test]
    fn topk_over_a_range_grid_returns_each_series_where_it_was_selected() {
        let data = vec![
            (
                labels(&[("__name__", "m"), ("s", "x")]),
                vec![Sample::new(0, 1.0), Sample::new(10, 5.0)],
            ),
            (
                labels(&[("__name__", "m"), ("s", "y")]),
                vec![Sample::new(0, 3.0), Sample::new(10, 2.0)],
            ),
        ];
        let grid = TimeGrid {
            start_ms: 0,
            end_ms: 10,
            step_ms: 10,
        };
        let out = run(
            &query(grid, None, Some((AggOp::Topk(1), Grouping::By(vec![])))),
            &data,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels.get("s"), Some("x"));
        assert_eq!(out[0].points, vec![Sample::new(10, 5.0)]);
        assert_eq!(out[1].points, vec![Sample::new(0, 3.0)]);
    }

    #[test]
    fn instant_lookback_is_left_open_and_stale_marker_hides_the_series() {
        let grid = TimeGrid {
            start_ms: 10_000,
            end_ms: 20_000,
            step_ms: 5_000,
        };
        let q = query(grid, None, None); // lookback 5 s
        let l = labels(&[("__name__", "m")]);
        // Lookback 5 s. t = 10 s: the sample at 5 s is exactly t - lookback, not seen.
        // t = 15 s: the sample at t is seen. t = 20 s: 15 s is exactly t - lookback again.
        let data = vec![(
            l.clone(),
            vec![Sample::new(5_000, 1.0), Sample::new(15_000, 2.0)],
        )];
        let out = run(&q, &data);
        assert_eq!(
            out,
            vec![SeriesPoints {
                labels: l.clone(),
                points: vec![Sample::new(15_000, 2.0)]
            }]
        );
        // One ms later the boundary sample is inside the window.
        let data = vec![(l.clone(), vec![Sample::new(5_001, 1.0)])];
        assert_eq!(run(&q, &data)[0].points, vec![Sample::new(10_000, 1.0)]);
        // A stale marker after a value hides the series until a new sample arrives.
        let data = vec![(
            l.clone(),
            vec![
                Sample::new(9_000, 1.0),
                Sample::new(12_000, stale()),
                Sample::new(20_000, 3.0),
            ],
        )];
        assert_eq!(
            run(&q, &data)[0].points,
            vec![Sample::new(10_000, 1.0), Sample::new(20_000, 3.0)]
        );
        // A series whose only sample is stale is absent altogether.
        let data = vec![(l, vec![Sample::new(10_000, stale())])];
        assert!(run(&q, &data).is_empty());
    }

    #[test]
    fn range_function_skips_stale_markers_and_ignores_samples_outside_the_window() {
        let grid = TimeGrid {
            start_ms: 20,
            end_ms: 30,
            step_ms: 10,
        };
        let q = query(
            grid,
            Some(RangeSpec {
                func: RangeFn::CountOverTime,
                range_ms: 10,
            }),
            None,
        );
        let l = labels(&[("__name__", "m")]);
        let data = vec![(
            l,
            vec![
                Sample::new(0, 1.0),
                Sample::new(10, 1.0),
                Sample::new(15, stale()),
                Sample::new(20, 1.0),
                Sample::new(25, f64::NAN),
                Sample::new(99, 1.0),
            ],
        )];
        // t=20: (10, 20] → 20 (stale at 15 skipped) = 1; t=30: (20, 30] → NaN at 25 = 1.
        assert_eq!(
            run(&q, &data)[0].points,
            vec![Sample::new(20, 1.0), Sample::new(30, 1.0)]
        );
    }

    #[test]
    fn invalid_queries_are_refused_with_a_reason() {
        let ok = query(
            TimeGrid {
                start_ms: 0,
                end_ms: 100,
                step_ms: 10,
            },
            None,
            None,
        );
        assert!(validate(&ok).is_ok());
        let reason = |q: &PartialQuery| match validate(q) {
            Err(Error::InvalidRequest { reason }) => reason,
            other => panic!("expected InvalidRequest, got {other:?}"),
        };
        let mut q = ok.clone();
        q.grid.step_ms = 0;
        assert!(reason(&q).contains("step"));
        let mut q = ok.clone();
        q.grid.end_ms = -1;
        assert!(reason(&q).contains("before start"));
        let mut q = ok.clone();
        q.grid = TimeGrid {
            start_ms: 0,
            end_ms: GRID_STEPS_MAX as i64,
            step_ms: 1,
        };
        assert!(reason(&q).contains("11000"), "{}", reason(&q));
        q.grid.end_ms -= 1;
        assert!(validate(&q).is_ok(), "exactly the limit is fine");
        let mut q = ok.clone();
        q.grid = TimeGrid {
            start_ms: -TS_ABS_MAX_MS,
            end_ms: TS_ABS_MAX_MS,
            step_ms: 1,
        };
        assert!(reason(&q).contains("limit"));
        q.grid.start_ms = i64::MIN;
        assert!(reason(&q).contains("start (-9223372036854775808 ms) is out of range"));
        let mut q = ok.clone();
        q.range = Some(RangeSpec {
            func: RangeFn::Rate,
            range_ms: 0,
        });
        assert!(reason(&q).contains("rate"));
        let mut q = ok.clone();
        q.lookback_ms = 0;
        assert!(reason(&q).contains("lookback"));
        for op in [AggOp::Topk(0), AggOp::Bottomk(0)] {
            let mut q = ok.clone();
            q.aggregation = Some(Aggregation {
                op,
                grouping: Grouping::By(vec![]),
            });
            assert!(reason(&q).contains("k = 0"));
            let empty: [(&Labels, &[Sample]); 0] = [];
            assert!(evaluate(&q, empty).is_err());
        }
    }

    #[test]
    fn merging_mismatched_results_is_refused() {
        let grid = TimeGrid::instant(10);
        let groups = |op| PartialResult::Groups {
            op,
            grid,
            groups: vec![],
        };
        let mut a = groups(AggOp::Sum);
        assert!(a.merge(groups(AggOp::Count)).is_err());
        assert!(a.merge(PartialResult::Series(vec![])).is_err());
        let other_grid = PartialResult::Groups {
            op: AggOp::Sum,
            grid: TimeGrid::instant(20),
            groups: vec![],
        };
        assert!(a.merge(other_grid).is_err());
        let mut t = groups(AggOp::Topk(2));
        assert!(t.merge(groups(AggOp::Topk(3))).is_err());
        // A group with the wrong number of points.
        let bad = PartialResult::Groups {
            op: AggOp::Sum,
            grid,
            groups: vec![GroupPartial {
                key: key(&[]),
                points: vec![None, None],
            }],
        };
        assert!(a.merge(bad).is_err());
        // States of different kinds under the same key.
        let mut s = AggState::Sum { sum: 1.0, c: 0.0 };
        assert!(s.merge(AggState::Count(1.0), AggOp::Sum).is_err());
        assert!(a.merge(groups(AggOp::Sum)).is_ok());
    }

    mod fan_out {
        //! The key property for fan-out: evaluating parts of the series set on different shards
        //! and merging in any order equals evaluating everything on one shard.
        use super::*;
        use proptest::prelude::*;

        fn op_strategy() -> impl Strategy<Value = AggOp> {
            prop_oneof![
                Just(AggOp::Sum),
                Just(AggOp::Count),
                Just(AggOp::Min),
                Just(AggOp::Max),
                Just(AggOp::Avg),
                Just(AggOp::Group),
                Just(AggOp::Stddev),
                Just(AggOp::Stdvar),
                (1usize..4).prop_map(AggOp::Topk),
                (1usize..4).prop_map(AggOp::Bottomk),
            ]
        }

        fn range_strategy() -> impl Strategy<Value = Option<RangeSpec>> {
            let func = prop_oneof![
                Just(RangeFn::Rate),
                Just(RangeFn::Increase),
                Just(RangeFn::Delta),
                Just(RangeFn::Irate),
                Just(RangeFn::Idelta),
                Just(RangeFn::Changes),
                Just(RangeFn::Resets),
                Just(RangeFn::AvgOverTime),
                Just(RangeFn::MinOverTime),
                Just(RangeFn::MaxOverTime),
                Just(RangeFn::SumOverTime),
                Just(RangeFn::CountOverTime),
                Just(RangeFn::LastOverTime),
                Just(RangeFn::Timestamp),
                Just(RangeFn::PresentOverTime),
                Just(RangeFn::StddevOverTime),
                Just(RangeFn::StdvarOverTime),
                Just(RangeFn::QuantileOverTime(0.3)),
            ];
            proptest::option::of(
                (func, 1i64..40).prop_map(|(func, range_ms)| RangeSpec { func, range_ms }),
            )
        }

        fn grouping_strategy() -> impl Strategy<Value = Grouping> {
            let names = proptest::sample::subsequence(vec!["__name__", "a", "b"], 0..=3)
                .prop_map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            prop_oneof![
                names.clone().prop_map(Grouping::By),
                names.prop_map(Grouping::Without)
            ]
        }

        fn value_strategy() -> impl Strategy<Value = f64> {
            prop_oneof![
                8 => (-20i32..20).prop_map(f64::from),
                4 => (-2000i32..2000).prop_map(|x| f64::from(x) / 7.0),
                1 => Just(f64::NAN),
                1 => Just(f64::from_bits(STALE_NAN_BITS)),
                1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
            ]
        }

        /// Series with distinct label sets over a small alphabet, each with sorted unique samples.
        fn series_strategy() -> impl Strategy<Value = Vec<(Labels, Vec<Sample>)>> {
            let one = (
                0usize..2,
                0usize..3,
                0usize..3,
                proptest::collection::btree_map(0i64..80, value_strategy(), 0..25),
            );
            proptest::collection::vec(one, 0..14).prop_map(|raw| {
                let mut by_labels: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
                for (name, a, b, samples) in raw {
                    let mut pairs = vec![("__name__", ["m1", "m2"][name])];
                    pairs.push(("a", ["", "x", "y"][a]));
                    pairs.push(("b", ["", "p", "q"][b]));
                    let l = labels(&pairs);
                    let s = samples
                        .into_iter()
                        .map(|(t, v)| Sample::new(t, v))
                        .collect();
                    by_labels.insert(l, s);
                }
                by_labels.into_iter().collect()
            })
        }

        fn assert_same(got: &[SeriesPoints], want: &[SeriesPoints]) {
            assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.labels, w.labels);
                assert_eq!(
                    g.points.len(),
                    w.points.len(),
                    "{} got {:?} want {:?}",
                    g.labels,
                    g.points,
                    w.points
                );
                for (gp, wp) in g.points.iter().zip(&w.points) {
                    assert_eq!(gp.ts_ms, wp.ts_ms);
                    assert!(
                        same(gp.value, wp.value),
                        "{} at {}: got {} want {}",
                        g.labels,
                        gp.ts_ms,
                        gp.value,
                        wp.value
                    );
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1500))]
            #[test]
            fn split_evaluate_merge_equals_evaluate_all(
                data in series_strategy(),
                op in proptest::option::weighted(0.85, op_strategy()),
                grouping in grouping_strategy(),
                range in prop_oneof![2 => Just(None), 3 => range_strategy()],
                start in 0i64..60,
                len in 0i64..40,
                step in 1i64..9,
                lookback in 1i64..30,
                shard_of in proptest::collection::vec(0usize..4, 14),
                shards in 1usize..=4,
                merge_picks in proptest::collection::vec(any::<prop::sample::Index>(), 8),
            ) {
                let mut q = query(TimeGrid { start_ms: start, end_ms: start + len, step_ms: step }, range, op.map(|op| (op, grouping)));
                q.lookback_ms = lookback;
                let all = evaluate(&q, data.iter().map(|(l, s)| (l, s.as_slice()))).unwrap();
                let want = all.finalize();

                let mut parts: Vec<PartialResult> = (0..shards)
                    .map(|shard| {
                        let mine = data.iter().enumerate().filter(|(i, _)| shard_of[*i] % shards == shard);
                        evaluate(&q, mine.map(|(_, (l, s))| (l, s.as_slice()))).unwrap()
                    })
                    .collect();
                // Merge random pairs until one result is left: random order and association.
                let mut picks = merge_picks.iter();
                while parts.len() > 1 {
                    let i = picks.next().map_or(0, |p| p.index(parts.len()));
                    let a = parts.swap_remove(i);
                    let j = picks.next().map_or(0, |p| p.index(parts.len()));
                    parts[j].merge(a).unwrap();
                }
                let got = parts.pop().unwrap().finalize();
                assert_same(&got, &want);
            }
        }
    }
}
