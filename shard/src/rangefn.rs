//! Range functions over one series' float samples in a left-open window `(t - range, t]`.
//!
//! Every function mirrors Prometheus 3.x (`promql/functions.go`, `promql/quantile.go`,
//! `util/kahansum`) for float samples; native histograms are not modelled. The caller hands
//! [`eval`] exactly the samples of the window, sorted by timestamp, deduplicated and without stale
//! markers (a stale marker is never a sample of a range, see [`crate::query`]). Under that
//! contract, `eval` returns `None` exactly where Prometheus emits no output element:
//! - every function on an empty window;
//! - `rate`, `increase`, `delta` with fewer than two samples;
//! - `irate`, `idelta` with fewer than two samples or two samples at the same instant;
//! - `deriv`, `predict_linear` with fewer than two samples.
//!
//! Notable details carried over from Prometheus:
//! - `rate`/`increase`/`delta` extrapolate to a window boundary only when the first/last sample
//!   lies within 1.1 × the average sample interval of it, otherwise by half an interval; for
//!   counters the start is never extrapolated below zero (the "zero-point clamp"). `rate`
//!   divides by the full range in seconds.
//! - Counter resets (a value lower than its predecessor) add the predecessor to the increase.
//! - `sum_over_time` and `avg_over_time` use Kahan–Neumaier summation; `avg_over_time` switches
//!   to an incremental mean once the running sum would overflow.
//! - `stddev`/`stdvar_over_time` are population statistics (Welford with Kahan-compensated
//!   mean and M2).
//! - `min`/`max_over_time` return NaN only if every sample is NaN.
//!
//! Which functions keep `__name__` in their output is answered by [`drops_metric_name`].

use std::cmp::Ordering;

use crate::query::RangeFn;
use crate::series::{Sample, is_stale_marker};

/// Evaluates `func` at instant `t_ms` over `samples`, which are exactly the samples in
/// `(t_ms - range_ms, t_ms]`, sorted by ts, without stale markers. Returns `None` where
/// Prometheus returns no value (e.g. rate with fewer than 2 samples, irate with <2, empty input
/// for `*_over_time`).
pub fn eval(func: RangeFn, samples: &[Sample], t_ms: i64, range_ms: i64) -> Option<f64> {
    debug_assert!(
        samples.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms),
        "samples must be sorted by timestamp and deduplicated"
    );
    debug_assert!(
        samples
            .iter()
            .all(|s| s.ts_ms > t_ms - range_ms && s.ts_ms <= t_ms),
        "samples must lie in the window (t - range, t]"
    );
    let last = samples.last()?;
    match func {
        RangeFn::Rate => extrapolated_rate(samples, t_ms, range_ms, true, true),
        RangeFn::Increase => extrapolated_rate(samples, t_ms, range_ms, true, false),
        RangeFn::Delta => extrapolated_rate(samples, t_ms, range_ms, false, false),
        RangeFn::Irate => instant_value(samples, true),
        RangeFn::Idelta => instant_value(samples, false),
        RangeFn::Changes => Some(
            samples
                .windows(2)
                .filter(|w| {
                    let (prev, cur) = (w[0].value, w[1].value);
                    cur != prev && !(cur.is_nan() && prev.is_nan())
                })
                .count() as f64,
        ),
        RangeFn::Resets => Some(
            samples
                .windows(2)
                .filter(|w| w[1].value < w[0].value)
                .count() as f64,
        ),
        RangeFn::AvgOverTime => Some(avg_over_time(samples)),
        RangeFn::MinOverTime => Some(compare_over_time(samples, |cur, best| cur < best)),
        RangeFn::MaxOverTime => Some(compare_over_time(samples, |cur, best| cur > best)),
        RangeFn::SumOverTime => {
            let (sum, c) = samples
                .iter()
                .fold((0.0, 0.0), |(sum, c), s| kahan_inc(s.value, sum, c));
            // An infinite sum has a meaningless compensation (reset to 0 by kahan_inc anyway).
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        RangeFn::CountOverTime => Some(samples.len() as f64),
        RangeFn::LastOverTime => Some(last.value),
        RangeFn::Timestamp => (!is_stale_marker(last.value)).then(|| last.ts_ms as f64 / 1e3),
        RangeFn::PresentOverTime => Some(1.0),
        RangeFn::StddevOverTime => Some(variance_over_time(samples).sqrt()),
        RangeFn::StdvarOverTime => Some(variance_over_time(samples)),
        RangeFn::QuantileOverTime(q) => {
            let mut values: Vec<f64> = samples.iter().map(|s| s.value).collect();
            Some(quantile(q, &mut values))
        }
        RangeFn::Deriv => {
            if samples.len() < 2 {
                return None;
            }
            Some(linear_regression(samples, samples[0].ts_ms).0)
        }
        RangeFn::PredictLinear(seconds) => {
            if samples.len() < 2 {
                return None;
            }
            let (slope, intercept) = linear_regression(samples, t_ms);
            Some(slope * seconds + intercept)
        }
    }
}

/// Least-squares line through the samples, x in seconds since `intercept_ms`: (slope,
/// intercept). As Prometheus' `linearRegression`: Kahan sums, and a constant series gives slope
/// 0 (NaN for both if the constant is infinite).
fn linear_regression(samples: &[Sample], intercept_ms: i64) -> (f64, f64) {
    let first = samples[0].value;
    if samples.iter().all(|s| s.value == first) {
        return if first.is_infinite() {
            (f64::NAN, f64::NAN)
        } else {
            (0.0, first)
        };
    }
    let n = samples.len() as f64;
    let (mut x, mut y, mut xy, mut x2) = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0));
    for s in samples {
        let dx = (s.ts_ms - intercept_ms) as f64 / 1e3;
        x = kahan_inc(dx, x.0, x.1);
        y = kahan_inc(s.value, y.0, y.1);
        xy = kahan_inc(dx * s.value, xy.0, xy.1);
        x2 = kahan_inc(dx * dx, x2.0, x2.1);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (x.0 + x.1, y.0 + y.1, xy.0 + xy.1, x2.0 + x2.1);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    (slope, sum_y / n - slope * sum_x / n)
}

/// True if the function's output loses the input's `__name__` (every range function but
/// `last_over_time`, which acts like an offset; Prometheus `engine.go`: `dropName`).
pub fn drops_metric_name(func: RangeFn) -> bool {
    !matches!(func, RangeFn::LastOverTime)
}

/// One step of Kahan–Neumaier summation: adds `inc` to `sum` with compensation `c`, returning
/// the new `(sum, c)`. The final value is `sum + c`. As in Prometheus (`kahansum.Inc`), the
/// compensation is reset to 0 once the sum is infinite so it never turns an infinity into NaN.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus' `quantile` (promql/quantile.go) over `values`, which it sorts in place:
/// NaN for no values or a NaN `q`, -Inf for `q < 0`, +Inf for `q > 1`, otherwise linear
/// interpolation between the two closest ranks. NaN values sort below every number, as
/// Prometheus' `vectorByValueHeap` orders them.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(nan_first_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Total order with NaN below everything (the order Prometheus sorts by for `quantile`).
fn nan_first_cmp(a: &f64, b: &f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// Prometheus' `extrapolatedRate` for floats (the non-anchored, non-smoothed path).
fn extrapolated_rate(
    samples: &[Sample],
    t_ms: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let first = samples[0];
    let last = samples[samples.len() - 1];
    let mut result = last.value - first.value;
    if is_counter {
        // A drop means the counter restarted from 0: the value before the drop was gained too.
        for w in samples.windows(2) {
            if w[1].value < w[0].value {
                result += w[0].value;
            }
        }
    }

    Some(extrapolate(
        result,
        first,
        last,
        samples.len() as u64,
        t_ms,
        range_ms,
        is_counter,
        is_rate,
    ))
}

/// The extrapolation step of Prometheus' `extrapolatedRate`, shared by raw samples and rollup
/// records: `result` is `last - first` plus counter-reset corrections over `count` samples whose
/// first and last are given; `count >= 2`.
#[allow(clippy::too_many_arguments)] // mirrors Prometheus' inputs one to one
pub fn extrapolate(
    result: f64,
    first: Sample,
    last: Sample,
    count: u64,
    t_ms: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> f64 {
    debug_assert!(count >= 2, "extrapolation needs two samples");
    let range_start = t_ms.wrapping_sub(range_ms);
    let mut duration_to_start = first.ts_ms.wrapping_sub(range_start) as f64 / 1000.0;
    let mut duration_to_end = t_ms.wrapping_sub(last.ts_ms) as f64 / 1000.0;
    let sampled_interval = last.ts_ms.wrapping_sub(first.ts_ms) as f64 / 1000.0;
    let average_between_samples = sampled_interval / (count - 1) as f64;

    // Extrapolate to a boundary only if a sample would be expected there; otherwise assume the
    // series starts/ends within the window and extrapolate by half an interval.
    let threshold = average_between_samples * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between_samples / 2.0;
    }
    if is_counter {
        // A counter cannot be negative: never extrapolate the start past its zero point.
        let mut duration_to_zero = duration_to_start;
        if result > 0.0 && first.value >= 0.0 {
            duration_to_zero = sampled_interval * (first.value / result);
        }
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between_samples / 2.0;
    }

    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    result * factor
}

/// Prometheus' `instantValue` (irate/idelta) on the last two samples.
fn instant_value(samples: &[Sample], is_rate: bool) -> Option<f64> {
    let [prev, cur] = samples.get(samples.len().checked_sub(2)?..)? else {
        return None;
    };
    let interval_ms = cur.ts_ms - prev.ts_ms;
    if interval_ms == 0 {
        return None;
    }
    // On a counter reset irate uses the last value as the increase (a NaN compares false, so
    // it is treated as "no reset" and propagates).
    let mut result = if is_rate && cur.value < prev.value {
        cur.value
    } else {
        cur.value - prev.value
    };
    if is_rate {
        result /= interval_ms as f64 / 1000.0;
    }
    Some(result)
}

/// Prometheus' `funcAvgOverTime` for floats: direct Kahan mean, incremental once the sum would
/// overflow. `samples` is not empty.
fn avg_over_time(samples: &[Sample]) -> f64 {
    let (mut sum, mut c) = (samples[0].value, 0.0);
    let mut mean = 0.0;
    let mut incremental = false;
    let mut count = 1.0;
    for (i, s) in samples[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (new_sum, new_c) = kahan_inc(s.value, sum, c);
            if !new_sum.is_infinite() {
                (sum, c) = (new_sum, new_c);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(s.value / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// Prometheus' `compareOverTime`: a NaN best value is replaced by any later value, so the
/// result is NaN only if every value is NaN. `samples` is not empty.
fn compare_over_time(samples: &[Sample], better: impl Fn(f64, f64) -> bool) -> f64 {
    samples.iter().fold(samples[0].value, |best, s| {
        if better(s.value, best) || best.is_nan() {
            s.value
        } else {
            best
        }
    })
}

/// Prometheus' `varianceOverTime`: population variance by Welford's method with Kahan
/// compensation of the mean and of M2. `samples` is not empty.
fn variance_over_time(samples: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in samples {
        count += 1.0;
        let delta = s.value - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (s.value - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Samples every `step_ms` starting at `start_ms` (Prometheus' `load <step>` notation).
    fn load(start_ms: i64, step_ms: i64, values: &[f64]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample::new(start_ms + i as i64 * step_ms, *v))
            .collect()
    }

    /// Prometheus' `a+bxn` expansion: a, a+b, …, a+n·b.
    fn series(a: f64, b: f64, n: usize) -> Vec<f64> {
        (0..=n).map(|i| a + b * i as f64).collect()
    }

    /// What the engine hands `eval`: the samples in (t - range, t] without stale markers.
    fn window(samples: &[Sample], t_ms: i64, range_ms: i64) -> Vec<Sample> {
        samples
            .iter()
            .copied()
            .filter(|s| s.ts_ms > t_ms - range_ms && s.ts_ms <= t_ms)
            .filter(|s| !is_stale_marker(s.value))
            .collect()
    }

    fn at(func: RangeFn, samples: &[Sample], t_ms: i64, range_ms: i64) -> Option<f64> {
        eval(func, &window(samples, t_ms, range_ms), t_ms, range_ms)
    }

    #[track_caller]
    fn assert_close(got: Option<f64>, want: Option<f64>) {
        match (got, want) {
            (None, None) => {}
            (Some(g), Some(w)) if g.is_nan() && w.is_nan() => {}
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) if (g - w).abs() <= 1e-9 * w.abs().max(1.0) => {}
            _ => panic!("got {got:?}, want {want:?}"),
        }
    }

    /// Hand-computed cases from the Prometheus algorithm. Each row: function, samples (ts in
    /// seconds, value), t in seconds, range in seconds, expected.
    #[test]
    fn table_of_hand_computed_cases() {
        let nan = f64::NAN;
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, RangeFn, &[(i64, f64)], i64, i64, Option<f64>)] = &[
            // Samples 10 s apart, both boundaries within 1.1 intervals: extrapolate to both.
            // raw 30 over 30 s sampled, window 40 s → 30 × (30 + 5 + 5)/30 = 40.
            (
                "increase extrapolates to both boundaries",
                RangeFn::Increase,
                &[(5, 10.0), (15, 20.0), (25, 30.0), (35, 40.0)],
                40,
                40,
                Some(40.0),
            ),
            (
                "rate is increase / range",
                RangeFn::Rate,
                &[(5, 10.0), (15, 20.0), (25, 30.0), (35, 40.0)],
                40,
                40,
                Some(1.0),
            ),
            // Counter reset 30 → 5: raw 15 - 10 + 30 = 35; sampled 30 s, avg 10 s; start 5 s
            // (zero point 30 × 10/35 = 8.57 s is farther), end 5 s → 35 × 40/30.
            (
                "increase across a counter reset",
                RangeFn::Increase,
                &[(5, 10.0), (15, 30.0), (25, 5.0), (35, 15.0)],
                40,
                40,
                Some(35.0 * 40.0 / 30.0),
            ),
            // delta ignores resets: 15 - 10 = 5, same extrapolation.
            (
                "delta ignores resets",
                RangeFn::Delta,
                &[(5, 10.0), (15, 30.0), (25, 5.0), (35, 15.0)],
                40,
                40,
                Some(5.0 * 40.0 / 30.0),
            ),
            // Series starts 40 s into a 100 s window: 40 > 1.1 × 10, so only half an interval
            // (5 s) is added at the start; the end is at the boundary. raw 30 over 30 s.
            (
                "extrapolation cut at series start",
                RangeFn::Increase,
                &[(70, 100.0), (80, 110.0), (90, 120.0), (100, 130.0)],
                100,
                100,
                Some(30.0 * 35.0 / 30.0),
            ),
            // Same shape but the series also ends 30 s before t: half an interval at both ends.
            (
                "not extrapolated when far from both boundaries",
                RangeFn::Delta,
                &[(40, 1.0), (50, 2.0), (60, 3.0), (70, 4.0)],
                100,
                100,
                Some(3.0 * 40.0 / 30.0),
            ),
            // Zero-point clamp: values 2, 12, 22 every 10 s, first sample 10 s after the start
            // (< 11 s threshold, would extrapolate 10 s) but the counter hits 0 after
            // 20 × 2/20 = 2 s: start extrapolation limited to 2 s. end 0. 20 × 22/20 = 22.
            (
                "zero-point clamp for counters",
                RangeFn::Increase,
                &[(10, 2.0), (20, 12.0), (30, 22.0)],
                30,
                30,
                Some(22.0),
            ),
            // delta is not a counter: no clamp, 20 × 30/20 = 30.
            (
                "no zero-point clamp for delta",
                RangeFn::Delta,
                &[(10, 2.0), (20, 12.0), (30, 22.0)],
                30,
                30,
                Some(30.0),
            ),
            (
                "rate needs two samples",
                RangeFn::Rate,
                &[(10, 2.0)],
                30,
                30,
                None,
            ),
            (
                "delta needs two samples",
                RangeFn::Delta,
                &[(10, 2.0)],
                30,
                30,
                None,
            ),
            ("rate of nothing", RangeFn::Rate, &[], 30, 30, None),
            // irate: last two samples only.
            (
                "irate",
                RangeFn::Irate,
                &[(0, 1.0), (10, 100.0), (20, 130.0)],
                20,
                30,
                Some(3.0),
            ),
            (
                "irate on reset uses last value",
                RangeFn::Irate,
                &[(10, 100.0), (20, 20.0)],
                20,
                30,
                Some(2.0),
            ),
            (
                "irate needs two",
                RangeFn::Irate,
                &[(20, 20.0)],
                20,
                30,
                None,
            ),
            (
                "idelta",
                RangeFn::Idelta,
                &[(10, 100.0), (20, 20.0)],
                20,
                30,
                Some(-80.0),
            ),
            (
                "changes",
                RangeFn::Changes,
                &[(1, 1.0), (2, 1.0), (3, 2.0), (4, nan), (5, nan), (6, 2.0)],
                6,
                10,
                Some(3.0),
            ),
            (
                "resets",
                RangeFn::Resets,
                &[(1, 5.0), (2, 1.0), (3, 2.0), (4, 0.0), (5, 0.0)],
                5,
                10,
                Some(2.0),
            ),
            (
                "changes of one sample",
                RangeFn::Changes,
                &[(1, 1.0)],
                5,
                10,
                Some(0.0),
            ),
            ("changes of nothing", RangeFn::Changes, &[], 5, 10, None),
            (
                "avg",
                RangeFn::AvgOverTime,
                &[(1, 1.0), (2, 2.0), (3, 6.0)],
                5,
                10,
                Some(3.0),
            ),
            (
                "sum",
                RangeFn::SumOverTime,
                &[(1, 1.0), (2, 2.0), (3, 6.0)],
                5,
                10,
                Some(9.0),
            ),
            (
                "count",
                RangeFn::CountOverTime,
                &[(1, 1.0), (2, nan)],
                5,
                10,
                Some(2.0),
            ),
            (
                "last",
                RangeFn::LastOverTime,
                &[(1, 1.0), (2, 7.0)],
                5,
                10,
                Some(7.0),
            ),
            (
                "present",
                RangeFn::PresentOverTime,
                &[(2, 7.0)],
                5,
                10,
                Some(1.0),
            ),
            (
                "present of nothing",
                RangeFn::PresentOverTime,
                &[],
                5,
                10,
                None,
            ),
            (
                "min skips NaN",
                RangeFn::MinOverTime,
                &[(1, nan), (2, 3.0), (3, 1.0)],
                5,
                10,
                Some(1.0),
            ),
            (
                "max skips NaN",
                RangeFn::MaxOverTime,
                &[(1, 2.0), (2, nan), (3, 1.0)],
                5,
                10,
                Some(2.0),
            ),
            (
                "max of all NaN",
                RangeFn::MaxOverTime,
                &[(1, nan), (2, nan)],
                5,
                10,
                Some(nan),
            ),
            ("min of nothing", RangeFn::MinOverTime, &[], 5, 10, None),
            // Population variance of 2, 4, 4, 4, 5, 5, 7, 9 is 4.
            (
                "stdvar",
                RangeFn::StdvarOverTime,
                &[
                    (1, 2.0),
                    (2, 4.0),
                    (3, 4.0),
                    (4, 4.0),
                    (5, 5.0),
                    (6, 5.0),
                    (7, 7.0),
                    (8, 9.0),
                ],
                8,
                10,
                Some(4.0),
            ),
            (
                "stddev",
                RangeFn::StddevOverTime,
                &[
                    (1, 2.0),
                    (2, 4.0),
                    (3, 4.0),
                    (4, 4.0),
                    (5, 5.0),
                    (6, 5.0),
                    (7, 7.0),
                    (8, 9.0),
                ],
                8,
                10,
                Some(2.0),
            ),
            (
                "stddev of one sample",
                RangeFn::StddevOverTime,
                &[(1, 3.0)],
                8,
                10,
                Some(0.0),
            ),
            // Sorted [0, 2, 4], rank 0.125 × 2 = 0.25 → 0 × 0.75 + 2 × 0.25.
            (
                "quantile interpolates",
                RangeFn::QuantileOverTime(0.125),
                &[(1, 4.0), (2, 0.0), (3, 2.0)],
                8,
                10,
                Some(0.5),
            ),
            (
                "quantile q<0",
                RangeFn::QuantileOverTime(-0.5),
                &[(1, 4.0)],
                8,
                10,
                Some(f64::NEG_INFINITY),
            ),
            (
                "quantile q>1",
                RangeFn::QuantileOverTime(1.5),
                &[(1, 4.0)],
                8,
                10,
                Some(f64::INFINITY),
            ),
            (
                "quantile q NaN",
                RangeFn::QuantileOverTime(nan),
                &[(1, 4.0)],
                8,
                10,
                Some(nan),
            ),
            // NaN sorts lowest: [NaN, 1, 3] → q=1 is 3, q=0 is NaN.
            (
                "quantile NaN sorts first",
                RangeFn::QuantileOverTime(1.0),
                &[(1, 3.0), (2, nan), (3, 1.0)],
                8,
                10,
                Some(3.0),
            ),
            (
                "quantile of nothing",
                RangeFn::QuantileOverTime(0.5),
                &[],
                8,
                10,
                None,
            ),
        ];
        for (name, func, pts, t_s, range_s, want) in cases {
            let samples: Vec<Sample> = pts.iter().map(|(t, v)| Sample::new(t * 1000, *v)).collect();
            let got = eval(*func, &samples, t_s * 1000, range_s * 1000);
            let ok = match (got, want) {
                (None, None) => true,
                (Some(g), Some(w)) => {
                    (g.is_nan() && w.is_nan())
                        || g == *w
                        || (g - w).abs() <= 1e-9 * w.abs().max(1.0)
                }
                _ => false,
            };
            assert!(ok, "case {name:?}: got {got:?}, want {want:?}");
        }
    }

    // ---- Cases from Prometheus' promql/promqltest/testdata/functions.test ----

    #[test]
    fn prometheus_increase_cases() {
        // load 5m: foo 0+10x10, bar 0+18x5 0+18x5, dings 10+10x10, bumms 1+10x10
        let foo = load(0, 5 * MIN, &series(0.0, 10.0, 10));
        let mut bar_vals = series(0.0, 18.0, 5);
        bar_vals.extend(series(0.0, 18.0, 5));
        let bar = load(0, 5 * MIN, &bar_vals);
        let dings = load(0, 5 * MIN, &series(10.0, 10.0, 10));
        let bumms = load(0, 5 * MIN, &series(1.0, 10.0, 10));
        let t = 50 * MIN;
        // eval instant at 50m increase(http_requests_total[50m])
        assert_close(at(RangeFn::Increase, &foo, t, 50 * MIN), Some(100.0));
        assert_close(at(RangeFn::Increase, &bar, t, 50 * MIN), Some(160.0));
        assert_close(at(RangeFn::Increase, &dings, t, 50 * MIN), Some(100.0));
        assert_close(at(RangeFn::Increase, &bumms, t, 50 * MIN), Some(100.0));
        // eval instant at 50m increase(http_requests_total[100m]): zero-point clamp cases.
        assert_close(at(RangeFn::Increase, &foo, t, 100 * MIN), Some(100.0));
        assert_close(at(RangeFn::Increase, &bar, t, 100 * MIN), Some(162.0));
        assert_close(at(RangeFn::Increase, &dings, t, 100 * MIN), Some(105.0));
        assert_close(at(RangeFn::Increase, &bumms, t, 100 * MIN), Some(101.0));

        // load 5m: 0 1 2 3 2 3 4; eval instant at 30m increase(...[30m]) → 7
        let reset = load(0, 5 * MIN, &[0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0]);
        assert_close(at(RangeFn::Increase, &reset, 30 * MIN, 30 * MIN), Some(7.0));
    }

    #[test]
    fn prometheus_rate_cases() {
        // testcounter_reset_middle_total 0+27x4 0+27x5: rate[50m] at 50m → 0.08
        let mut v = series(0.0, 27.0, 4);
        v.extend(series(0.0, 27.0, 5));
        let middle = load(0, 5 * MIN, &v);
        assert_close(at(RangeFn::Rate, &middle, 50 * MIN, 50 * MIN), Some(0.08));
        // testcounter_reset_end_total 0+10x9 0 10: [5m] → nothing, [6m] → 0
        let mut v = series(0.0, 10.0, 9);
        v.extend([0.0, 10.0]);
        let end = load(0, 5 * MIN, &v);
        assert_close(at(RangeFn::Rate, &end, 50 * MIN, 5 * MIN), None);
        assert_close(at(RangeFn::Rate, &end, 50 * MIN, 6 * MIN), Some(0.0));
        // calculate_rate_window_total 0+80x10: rate[50m] at 50m
        let window_total = load(0, 5 * MIN, &series(0.0, 80.0, 10));
        assert_close(
            at(RangeFn::Rate, &window_total, 50 * MIN, 50 * MIN),
            Some(0.8 / 3.0),
        );
        // load 4m testcounter_zero_cutoff_total{start="Nm"} (N·60)+240x10, rate[20m]
        let want_at_10m = [0.5, 0.55, 0.6, 0.6, 0.6, 0.6];
        for (n, want) in want_at_10m.iter().enumerate() {
            let s = load(0, 4 * MIN, &series(60.0 * n as f64, 240.0, 10));
            assert_close(at(RangeFn::Rate, &s, 10 * MIN, 20 * MIN), Some(*want));
            assert_close(at(RangeFn::Rate, &s, 50 * MIN, 20 * MIN), Some(0.6));
        }
    }

    #[test]
    fn prometheus_irate_idelta_delta_cases() {
        let foo = load(0, 5 * MIN, &series(0.0, 10.0, 10));
        let mut v = series(0.0, 10.0, 5);
        v.extend(series(0.0, 10.0, 5));
        let bar = load(0, 5 * MIN, &v);
        assert_close(
            at(RangeFn::Irate, &foo, 50 * MIN, 50 * MIN),
            Some(1.0 / 30.0),
        );
        assert_close(
            at(RangeFn::Irate, &bar, 50 * MIN, 50 * MIN),
            Some(1.0 / 30.0),
        );
        // Counter reset at 30m.
        assert_close(at(RangeFn::Irate, &bar, 30 * MIN, 50 * MIN), Some(0.0));
        // http_requests_nan 1 NaN NaN 5 11, irate/idelta [15m1s] from 0 to 20m step 5m.
        let nan = load(0, 5 * MIN, &[1.0, f64::NAN, f64::NAN, 5.0, 11.0]);
        let r = 15 * MIN + 1000;
        let irates: Vec<_> = (0..=4)
            .map(|i| at(RangeFn::Irate, &nan, i * 5 * MIN, r))
            .collect();
        assert_close(irates[0], None);
        for got in &irates[1..4] {
            assert!(got.unwrap().is_nan(), "{irates:?}");
        }
        assert_close(irates[4], Some(0.02));
        assert_close(at(RangeFn::Idelta, &nan, 20 * MIN, r), Some(6.0));
        // delta: 0 50 100 150 200 → 200; 200 150 100 50 0 → -200 at 20m over [20m].
        let up = load(0, 5 * MIN, &[0.0, 50.0, 100.0, 150.0, 200.0]);
        let down = load(0, 5 * MIN, &[200.0, 150.0, 100.0, 50.0, 0.0]);
        assert_close(at(RangeFn::Delta, &up, 20 * MIN, 20 * MIN), Some(200.0));
        assert_close(at(RangeFn::Delta, &down, 20 * MIN, 20 * MIN), Some(-200.0));
        // idelta: 0 50 100 50 → -50
        let bar = load(0, 5 * MIN, &[0.0, 50.0, 100.0, 50.0]);
        assert_close(at(RangeFn::Idelta, &bar, 20 * MIN, 20 * MIN), Some(-50.0));
    }

    #[test]
    fn prometheus_resets_changes_cases() {
        // load 5m; foo 1 2 3 0 1 0 0 1 2 0; bar 1 2 3 4 5 1 2 3 4 5; biz 0 0 0 0 0 1 1 1 1 1
        let foo = load(0, 5 * MIN, &[1., 2., 3., 0., 1., 0., 0., 1., 2., 0.]);
        let bar = load(0, 5 * MIN, &[1., 2., 3., 4., 5., 1., 2., 3., 4., 5.]);
        let biz = load(0, 5 * MIN, &[0., 0., 0., 0., 0., 1., 1., 1., 1., 1.]);
        let t = 50 * MIN;
        let resets = |s: &[Sample], r| at(RangeFn::Resets, s, t, r);
        // [5m] at 50m: the window (45m, 50m] is empty (left-open).
        assert_close(resets(&foo, 5 * MIN), None);
        for (range_min, want) in [(10, [0., 0., 0.]), (20, [1., 0., 0.]), (30, [1., 0., 0.])] {
            for (s, w) in [&foo, &bar, &biz].iter().zip(want) {
                assert_close(resets(s, range_min * MIN), Some(w));
            }
        }
        for (range_min, want) in [(32, [2., 1., 0.]), (50, [3., 1., 0.])] {
            for (s, w) in [&foo, &bar, &biz].iter().zip(want) {
                assert_close(resets(s, range_min * MIN), Some(w));
            }
        }
        let changes = |s: &[Sample], r| at(RangeFn::Changes, s, t, r);
        assert_close(changes(&foo, 5 * MIN), None);
        for (range_min, want) in [
            (6, [0., 0., 0.]),
            (20, [2., 2., 0.]),
            (30, [3., 4., 0.]),
            (50, [7., 8., 1.]),
        ] {
            for (s, w) in [&foo, &bar, &biz].iter().zip(want) {
                assert_close(changes(s, range_min * MIN), Some(w));
            }
        }
        // x{a="b"} NaN NaN NaN → 0; x{a="c"} 0 NaN 0 → 2 (at 15m over [20m]).
        let b = load(0, 5 * MIN, &[f64::NAN; 3]);
        let c = load(0, 5 * MIN, &[0.0, f64::NAN, 0.0]);
        assert_close(at(RangeFn::Changes, &b, 15 * MIN, 20 * MIN), Some(0.0));
        assert_close(at(RangeFn::Changes, &c, 15 * MIN, 20 * MIN), Some(2.0));
    }

    #[test]
    fn prometheus_over_time_cases() {
        let s10 = 10_000;
        let inf = f64::INFINITY;
        // avg_over_time block (load 10s), evaluated at 55s over [1m].
        let avg = |v: &[f64]| at(RangeFn::AvgOverTime, &load(0, s10, v), 55_000, MIN);
        assert_close(avg(&[1., 2., 3., 4., 5.]), Some(3.0));
        assert_close(
            at(
                RangeFn::AvgOverTime,
                &load(0, s10, &[1., 2., 3., 4., 5.]),
                55_000,
                20_000,
            ),
            Some(5.0),
        );
        assert_close(
            at(
                RangeFn::AvgOverTime,
                &load(0, s10, &[1., 2., 3., 4., 5.]),
                55_000,
                10_000,
            ),
            None,
        );
        assert_close(avg(&[1., 2., 3., 4., inf]), Some(inf));
        assert_close(avg(&[1., 2., 3., inf, -inf]), Some(f64::NAN));
        assert_close(avg(&[inf, 0., inf]), Some(inf));
        assert_close(avg(&[-inf, -inf, -inf, inf]), Some(f64::NAN));
        // Overflowing sums switch to the incremental mean.
        let big = 9.988_465_674_311_58e307;
        assert_close(avg(&[big, big]), Some(big));
        assert_close(avg(&[-big, -big, -big]), Some(-big));
        assert_close(avg(&[-big, big]), Some(0.0));
        assert_close(avg(&[1., 2., 3., f64::NAN, f64::NAN]), Some(f64::NAN));
        // Kahan: metric 1 1e100 1 -1e100 at 1m over [2m]: sum 2, avg 0.5.
        let kahan = load(0, s10, &[1.0, 1e100, 1.0, -1e100]);
        assert_close(at(RangeFn::SumOverTime, &kahan, MIN, 2 * MIN), Some(2.0));
        assert_close(at(RangeFn::AvgOverTime, &kahan, MIN, 2 * MIN), Some(0.5));
        // Exact equality for a constant series (direct mean, not incremental).
        let foo = load(0, s10, &[52.0; 101]);
        for r in [100_000, 110_000, 120_000, 130_000] {
            assert_eq!(at(RangeFn::AvgOverTime, &foo, 10 * MIN, r), Some(52.0));
        }
        // stdvar/stddev: metric 0 8 8 2 3 at 1m over [2m] → 10.56 / 3.249615…
        let m = load(0, s10, &[0., 8., 8., 2., 3.]);
        assert_close(at(RangeFn::StdvarOverTime, &m, MIN, 2 * MIN), Some(10.56));
        assert_close(
            at(RangeFn::StddevOverTime, &m, MIN, 2 * MIN),
            Some(10.56f64.sqrt()),
        );
        let same = load(0, s10, &[1.599_050_563_727_786_8; 3]);
        assert_eq!(at(RangeFn::StdvarOverTime, &same, 55_000, MIN), Some(0.0));
        // quantile_over_time: "uneven samples" 0 1 4 at 1m over [2m].
        let uneven = load(0, s10, &[0., 1., 4.]);
        for (q, want) in [(0.0, 0.0), (0.5, 1.0), (0.75, 2.5), (0.8, 2.8), (1.0, 4.0)] {
            assert_close(
                at(RangeFn::QuantileOverTime(q), &uneven, MIN, 2 * MIN),
                Some(want),
            );
        }
        assert_close(
            at(RangeFn::QuantileOverTime(-1.0), &uneven, MIN, 2 * MIN),
            Some(-inf),
        );
        assert_close(
            at(RangeFn::QuantileOverTime(2.0), &uneven, MIN, 2 * MIN),
            Some(inf),
        );
        // min/max_over_time NaN handling (load 10s, at 1m over [2m]).
        let nan = f64::NAN;
        for (v, min, max) in [
            ([2., 0., 3.], 0.0, 3.0),
            ([2., 0., nan], 0.0, 2.0),
            ([2., nan, 1.], 1.0, 2.0),
            ([nan, 0., 1.], 0.0, 1.0),
            ([nan, nan, nan], nan, nan),
        ] {
            let s = load(0, s10, &v);
            assert_close(at(RangeFn::MinOverTime, &s, MIN, 2 * MIN), Some(min));
            assert_close(at(RangeFn::MaxOverTime, &s, MIN, 2 * MIN), Some(max));
        }
    }

    #[test]
    fn window_is_left_open_and_stale_markers_are_not_samples() {
        let stale = f64::from_bits(crate::series::STALE_NAN_BITS);
        let s = load(0, 10_000, &[1.0, 2.0, stale, 4.0]);
        // (0, 30s]: the sample at 0 is outside, the stale marker is dropped → [2, 4].
        assert_eq!(at(RangeFn::CountOverTime, &s, 30_000, 30_000), Some(2.0));
        assert_eq!(at(RangeFn::SumOverTime, &s, 30_000, 30_000), Some(6.0));
        // (-1ms, 30s] includes the sample at 0.
        assert_eq!(at(RangeFn::CountOverTime, &s, 30_000, 30_001), Some(3.0));
    }

    #[test]
    fn kahan_keeps_small_terms_and_handles_infinity() {
        let (s, c) = [1.0, 1e100, 1.0, -1e100]
            .iter()
            .fold((0.0, 0.0), |(s, c), v| kahan_inc(*v, s, c));
        assert_eq!(s + c, 2.0);
        let (s, c) = kahan_inc(f64::INFINITY, 1.0, 0.5);
        assert_eq!((s, c), (f64::INFINITY, 0.0));
    }

    #[test]
    fn only_last_over_time_keeps_the_name() {
        assert!(!drops_metric_name(RangeFn::LastOverTime));
        assert!(drops_metric_name(RangeFn::Rate));
        assert!(drops_metric_name(RangeFn::MaxOverTime));
    }

    /// A line `0+10x10` every 5m: `deriv` is 10 per 300 s, and `predict_linear(…, 3600)` at
    /// 50m is the line's value an hour later.
    #[test]
    fn deriv_and_predict_linear_fit_a_line() {
        let line = load(0, 5 * MIN, &series(0.0, 10.0, 10));
        assert_close(
            at(RangeFn::Deriv, &line, 50 * MIN, 10 * MIN),
            Some(10.0 / 300.0),
        );
        // At t = 50m the line is at 100; an hour later at 100 + 12 · 10.
        assert_close(
            at(RangeFn::PredictLinear(3600.0), &line, 50 * MIN, 50 * MIN),
            Some(220.0),
        );
        // One sample: no value; a constant: slope 0, the constant predicted.
        assert_close(at(RangeFn::Deriv, &line, 0, MIN), None);
        let flat = load(0, MIN, &[3.0, 3.0, 3.0]);
        assert_close(at(RangeFn::Deriv, &flat, 2 * MIN, 5 * MIN), Some(0.0));
        assert_close(
            at(RangeFn::PredictLinear(60.0), &flat, 2 * MIN, 5 * MIN),
            Some(3.0),
        );
    }
}
