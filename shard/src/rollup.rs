//! Rollup tiers: per-window aggregates of one series, and range functions evaluated over them.
//!
//! ## Windows
//! A tier of window length `w` cuts time into LEFT-OPEN windows `(e - w, e]` with `e` a multiple
//! of `w` (floored with `div_euclid`, so negative timestamps land in the right window). This is
//! the shape of a Prometheus range: `(t - r, t]` with `t` and `r` multiples of `w` is exactly the
//! union of the `r / w` windows ending at `t - r + w, …, t`. A [`RollupRecord`] exists only for a
//! window that holds at least one sample; stale markers ([`is_stale_marker`]) are never samples
//! of a range, so they are skipped.
//!
//! ## What a record keeps, and why
//! Prometheus' `extrapolatedRate` (rate, increase, delta) needs, over the whole range: the number
//! of samples, the first and last sample (timestamp and value), and the reset-corrected
//! difference `last - first + Σ prev` over every decrease `prev → cur`. A decrease either lies
//! inside one window (kept in [`RollupRecord::reset_correction`] / `resets`) or straddles a window
//! boundary, which [`eval`] sees from `prev.last` and `next.first`. The same split works for
//! `changes` (kept in `changes`). `min`/`max`/`sum`/`count` cover the `*_over_time` family.
//!
//! ## Exactness
//! When [`exact_for`] holds, [`eval`] equals Prometheus over the raw samples:
//! - bit for bit for `count_over_time`, `present_over_time`, `last_over_time`, `min_over_time`,
//!   `max_over_time`, `resets`, `changes`;
//! - for `rate`, `increase`, `delta` the inputs of the extrapolation (count, first, last) are the
//!   same, but the reset corrections are summed per window first and then across windows, so
//!   the float additions are grouped differently than Prometheus' one left-to-right loop: equal
//!   whenever those sums are exact (e.g. integer counters below 2^53), otherwise within a few ulps;
//! - `sum_over_time` and `avg_over_time` Kahan-sum the per-window (Kahan) sums instead of the
//!   samples: equal within float rounding (about 1e-15 relative to `Σ|value|`). When the total
//!   sum overflows, Prometheus' `avg_over_time` switches to an incremental mean; here the
//!   fallback averages the per-window sums, which stays finite unless one window's sum overflows.
//!
//! Not supported from rollups (they need sample-level detail the records drop): `irate`,
//! `idelta` (the last two samples), `stddev_over_time`, `stdvar_over_time`,
//! `quantile_over_time`.
//!
//! ## Encoding (version 2) of one series' records, sorted by `window_end_ms`
//! Column-wise: each field of all the records together, predicted from what is already known,
//! so that mostly small residuals are stored. A byte header, then one bit stream (least
//! significant bit first, zero-padded to a whole byte):
//! ```text
//! u8      version = 2
//! uvarint record count N
//! N > 0:
//!   uvarint unit: the gcd of the gaps between consecutive window ends (1 if N = 1)
//!   varint  window_end_ms of the first record (zigzag)
//!   bits:
//!     packed  window_end gap / unit - 1, between consecutive records (N - 1 values)
//!     ints    window_end_ms - first.ts_ms; last.ts_ms - first.ts_ms; count - 1 (as u64)
//!     best    changes: raw, or zigzag(count - 1 - changes)
//!     ints    resets
//!     packed  min source, max source (N values each): 0 = the lower (for max the higher) of
//!             first.value and last.value, 1 = the next value of the explicit column, 2 = the
//!             other one of first.value and last.value (only NaN makes that happen)
//!     1 bit   value mode: 0 = decimal, then 4 bits of scale e <= 15; 1 = XOR
//!     value columns: last, first, explicit min, explicit max, sum, reset_correction
//!             (the explicit columns hold only the records whose source is 1), each:
//!       decimal: values as integers k, worth `k as f64 / 10^e` (one f64 division);
//!                `best` of the zigzagged residuals k - prediction, one per candidate
//!       XOR:     2 bits: the candidate; then per value Gorilla's XOR of its bits with the
//!                prediction's (0 | 10 bits inside the previous window | 11, 6 bits leading
//!                zeros, 6 bits length - 1, bits)
//!       patches: count (small int), then per value whose bits differ from what the mode
//!                gives: gap to the previous patched index + 1 and zigzag(bits difference) - 1,
//!                both as gamma codes
//! ```
//! - packed: groups of 16 values, each as wide as its widest value: `0` if the width is the
//!   previous group's (0 before the first group), else `1` and the zigzagged width change as a
//!   gamma code; then the values.
//! - best: 2 bits naming the candidate sequence written, its first value as a small int, the
//!   rest packed. ints: best of the raw values and the zigzagged deltas to the previous value.
//! - small int: `0`, or `1`, 6 bits of bit length - 1 and the bits below the top one.
//!   gamma: Elias gamma code of the value + 1.
//! - Candidate predictions (see `value_columns`) use only earlier columns and earlier values of
//!   the same column: last from the previous last (gauges) or that plus the mean step so far
//!   (counters); first from the previous last, or that plus one step towards this last; an
//!   explicit min/max from the nearer end or the previous explicit one; sum from count times
//!   the middle of first and last, or first + last + (count - 2) times the middle of min and
//!   max, or the previous sum; reset_correction from resets times the middle of first and last
//!   or of min and max, or the previous one. Decimal predictions use wrapping integer
//!   arithmetic, XOR predictions f64.
//!
//! The encoder picks the decimal scale from the values (2 for the usual two-decimal gauges and
//! counters); a value that is no short decimal (NaN, ±Inf, a sum an ulp off the decimal) takes
//! its prediction as `k` plus a patch, so every f64 round-trips bit for bit (NaN payloads,
//! -0.0, subnormals). Data that is mostly not short decimals goes to the XOR mode. On
//! node_exporter-like 1m rollups this is about 6 bytes per record (v1: 54).
//!
//! [`decode`] checks every bound and returns [`Error::Corrupt`] instead of panicking; it refuses
//! a record count above 16 per byte left (every encoding spends at least that), so a crafted
//! count cannot make it allocate more than that.

use crate::error::{Error, Result};
use crate::query::RangeFn;
use crate::rangefn::{self, kahan_inc};
use crate::series::{Sample, is_stale_marker};

/// A storage tier: raw samples or one of the rollup window lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Raw,
    Minute,
    Hour,
}

impl Tier {
    /// The rollup tiers, finest first.
    pub const ROLLUPS: [Tier; 2] = [Tier::Minute, Tier::Hour];

    /// Window length of a rollup tier; `None` for raw samples.
    pub fn window_ms(self) -> Option<i64> {
        match self {
            Tier::Raw => None,
            Tier::Minute => Some(60_000),
            Tier::Hour => Some(3_600_000),
        }
    }

    /// Short name used in file names and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }
}

/// Aggregates of the samples of one series in the left-open window
/// `(window_end_ms - w, window_end_ms]`. Only built by [`compute`] (or [`decode`]); `count >= 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollupRecord {
    pub window_end_ms: i64,
    /// Number of (non-stale) samples in the window.
    pub count: u64,
    /// Kahan (Neumaier) sum of the values, compensation folded in, as Prometheus' sum_over_time.
    pub sum: f64,
    /// Minimum / maximum with Prometheus' rule: NaN only when every value is NaN.
    pub min: f64,
    pub max: f64,
    pub first: Sample,
    pub last: Sample,
    /// Sum of the previous value at every counter reset (decrease) inside the window — what
    /// Prometheus adds to `last - first`.
    pub reset_correction: f64,
    /// Number of decreases inside the window.
    pub resets: u64,
    /// Number of value changes between consecutive samples inside the window (NaN to NaN is no
    /// change), as Prometheus' `changes`.
    pub changes: u64,
}

/// The end of the left-open window of length `window_ms` that holds `ts_ms`: the smallest
/// multiple of `window_ms` that is `>= ts_ms`. Saturates at `i64::MAX` for timestamps within one
/// window of it (such a window is never aligned, so never used for an exact answer).
pub fn window_end(ts_ms: i64, window_ms: i64) -> i64 {
    assert!(window_ms > 0, "rollup window must be positive");
    let rem = ts_ms.rem_euclid(window_ms);
    if rem == 0 {
        ts_ms
    } else {
        ts_ms.saturating_add(window_ms - rem)
    }
}

/// One record per window that holds at least one (non-stale) sample, in window order.
/// `samples` must be sorted by timestamp.
pub fn compute(samples: &[Sample], window_ms: i64) -> Vec<RollupRecord> {
    debug_assert!(
        samples.windows(2).all(|p| p[0].ts_ms <= p[1].ts_ms),
        "rollup::compute needs samples sorted by timestamp"
    );
    let mut out: Vec<RollupRecord> = Vec::new();
    // Kahan compensation of the record being built (folded into `sum` when it is finished).
    let mut comp = 0.0;
    for &s in samples.iter().filter(|s| !is_stale_marker(s.value)) {
        let end = window_end(s.ts_ms, window_ms);
        match out.last_mut() {
            Some(r) if r.window_end_ms == end => {
                let prev = r.last.value;
                if s.value < prev {
                    r.reset_correction += prev;
                    r.resets += 1;
                }
                if value_changed(prev, s.value) {
                    r.changes += 1;
                }
                r.count += 1;
                (r.sum, comp) = kahan_inc(s.value, r.sum, comp);
                r.min = fold_min(r.min, s.value);
                r.max = fold_max(r.max, s.value);
                r.last = s;
            }
            _ => {
                if let Some(r) = out.last_mut() {
                    r.sum = kahan_finish(r.sum, comp);
                }
                let (sum, c) = kahan_inc(s.value, 0.0, 0.0);
                comp = c;
                out.push(RollupRecord {
                    window_end_ms: end,
                    count: 1,
                    sum,
                    min: s.value,
                    max: s.value,
                    first: s,
                    last: s,
                    reset_correction: 0.0,
                    resets: 0,
                    changes: 0,
                });
            }
        }
    }
    if let Some(r) = out.last_mut() {
        r.sum = kahan_finish(r.sum, comp);
    }
    out
}

/// Whether `func` at `t_ms` over `range_ms` is computed exactly (as from the raw samples) from
/// windows of `window_ms`: `t` and the range are multiples of the window, and `func` is one the
/// records support (see the module doc).
pub fn exact_for(func: RangeFn, t_ms: i64, range_ms: i64, window_ms: i64) -> bool {
    window_ms > 0
        && range_ms > 0
        && t_ms.rem_euclid(window_ms) == 0
        && range_ms % window_ms == 0
        && supported(func)
}

/// Range functions [`eval`] computes from records.
fn supported(func: RangeFn) -> bool {
    matches!(
        func,
        RangeFn::Rate
            | RangeFn::Increase
            | RangeFn::Delta
            | RangeFn::Changes
            | RangeFn::Resets
            | RangeFn::AvgOverTime
            | RangeFn::MinOverTime
            | RangeFn::MaxOverTime
            | RangeFn::SumOverTime
            | RangeFn::CountOverTime
            | RangeFn::LastOverTime
            | RangeFn::PresentOverTime
    )
}

/// Evaluates `func` at `t_ms` over `(t_ms - range_ms, t_ms]` from the records whose windows lie
/// inside that range (callers pass exactly those, sorted). Gives the same result as evaluating
/// over the raw samples when [`exact_for`] holds (see the module doc for float rounding).
/// `None` where Prometheus gives no value (no samples; fewer than two for rate/increase/delta),
/// and for functions the records do not support (a caller bug: check [`exact_for`] first).
pub fn eval(func: RangeFn, records: &[RollupRecord], t_ms: i64, range_ms: i64) -> Option<f64> {
    debug_assert!(
        records
            .windows(2)
            .all(|p| p[0].window_end_ms < p[1].window_end_ms),
        "rollup::eval needs records sorted by window"
    );
    debug_assert!(
        records
            .iter()
            .all(|r| r.first.ts_ms > t_ms.wrapping_sub(range_ms) && r.last.ts_ms <= t_ms),
        "rollup::eval got a record with samples outside the range"
    );
    debug_assert!(
        supported(func),
        "rollup::eval cannot compute {} from rollups",
        func.name()
    );
    let first = records.first()?;
    let last = records.last()?;
    let count: u64 = records.iter().map(|r| r.count).sum();
    if count == 0 {
        return None;
    }
    // Consecutive windows: the last sample of one and the first of the next are neighbours.
    let boundaries = || {
        records
            .windows(2)
            .map(|p| (p[0].last.value, p[1].first.value))
    };
    match func {
        RangeFn::Rate => extrapolated_rate(records, count, t_ms, range_ms, true, true),
        RangeFn::Increase => extrapolated_rate(records, count, t_ms, range_ms, true, false),
        RangeFn::Delta => extrapolated_rate(records, count, t_ms, range_ms, false, false),
        RangeFn::Resets => {
            let inside: u64 = records.iter().map(|r| r.resets).sum();
            let across = boundaries().filter(|(prev, cur)| cur < prev).count() as u64;
            Some((inside + across) as f64)
        }
        RangeFn::Changes => {
            let inside: u64 = records.iter().map(|r| r.changes).sum();
            let across = boundaries()
                .filter(|&(prev, cur)| value_changed(prev, cur))
                .count() as u64;
            Some((inside + across) as f64)
        }
        RangeFn::MinOverTime => Some(records.iter().fold(first.min, |m, r| fold_min(m, r.min))),
        RangeFn::MaxOverTime => Some(records.iter().fold(first.max, |m, r| fold_max(m, r.max))),
        RangeFn::SumOverTime => {
            let (sum, c) = kahan_sum(records.iter().map(|r| r.sum));
            Some(kahan_finish(sum, c))
        }
        RangeFn::AvgOverTime => {
            let n = count as f64;
            let (sum, c) = kahan_sum(records.iter().map(|r| r.sum));
            if sum.is_infinite() && records.iter().all(|r| r.sum.is_finite()) {
                // The total overflowed although every window's sum is finite: average the
                // scaled window sums instead (Prometheus switches to an incremental mean here).
                let (mean, c) = kahan_sum(records.iter().map(|r| r.sum / n));
                return Some(mean + c);
            }
            Some(sum / n + c / n)
        }
        RangeFn::CountOverTime => Some(count as f64),
        RangeFn::LastOverTime => Some(last.last.value),
        RangeFn::PresentOverTime => Some(1.0),
        RangeFn::Irate
        | RangeFn::Idelta
        | RangeFn::StddevOverTime
        | RangeFn::StdvarOverTime
        | RangeFn::QuantileOverTime(_)
        | RangeFn::Deriv
        | RangeFn::PredictLinear(_)
        | RangeFn::Timestamp => None,
    }
}

/// Prometheus' `extrapolatedRate` (promql/functions.go) for floats, fed from records: the first
/// and last sample, the sample count and the reset correction are all it reads of the samples.
fn extrapolated_rate(
    records: &[RollupRecord],
    count: u64,
    t_ms: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if count < 2 {
        return None;
    }
    let first = records.first()?.first;
    let last = records.last()?.last;
    let mut result = last.value - first.value;
    if is_counter {
        // Add in time order, as Prometheus' loop does, to keep the float rounding close.
        // Only add when there is something to add, so `-0.0` results stay `-0.0`.
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                let prev = records[i - 1].last.value;
                if r.first.value < prev {
                    result += prev;
                }
            }
            if r.resets > 0 {
                result += r.reset_correction;
            }
        }
    }
    Some(rangefn::extrapolate(
        result, first, last, count, t_ms, range_ms, is_counter, is_rate,
    ))
}

/// Prometheus' `changes` test: NaN to NaN is no change.
fn value_changed(prev: f64, cur: f64) -> bool {
    cur != prev && !(cur.is_nan() && prev.is_nan())
}

/// Prometheus' min_over_time step: a NaN accumulator is replaced by anything.
fn fold_min(acc: f64, v: f64) -> f64 {
    if v < acc || acc.is_nan() { v } else { acc }
}

fn fold_max(acc: f64, v: f64) -> f64 {
    if v > acc || acc.is_nan() { v } else { acc }
}

fn kahan_sum(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((0.0, 0.0), |(s, c), v| kahan_inc(v, s, c))
}

/// Folds the compensation in, as Prometheus' sum_over_time does (not when the sum overflowed).
fn kahan_finish(sum: f64, c: f64) -> f64 {
    if sum.is_infinite() { sum } else { sum + c }
}

const FORMAT_VERSION: u8 = 2;
const WHAT: &str = "rollup records";
/// Values per bit-packed group: every group is as wide as its widest value.
const GROUP: usize = 16;
/// Largest decimal scale `e` of the decimal value mode (values `k / 10^e`).
const MAX_SCALE: usize = 15;
const POW10: [f64; MAX_SCALE + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
const MODE_DECIMAL: u64 = 0;
const MODE_XOR: u64 = 1;
/// Where a record's min (max) comes from: the lower (higher) of its first and last value, the
/// explicit min (max) column, or (only with NaN about) the other one of first and last.
const SRC_NEAR: u64 = 0;
const SRC_EXPLICIT: u64 = 1;
const SRC_FAR: u64 = 2;
/// Packed columns of `N - 1` or more values that every encoding has (window gaps, the two
/// timestamp offsets, count, changes, resets, min and max sources). Each spends at least a bit
/// on every group of [`GROUP`] values, so `N - 1 <= bits * GROUP / ALWAYS_PACKED_COLUMNS`:
/// at most 16 records per byte, which bounds what a decoder allocates.
const ALWAYS_PACKED_COLUMNS: usize = 8;

/// The column-wise encoding (see the module doc) of one series' records, sorted by window.
/// Appends to `out`. Records must be as [`compute`] makes them: `count >= 1` and
/// `first.ts_ms <= last.ts_ms <= window_end_ms` ([`decode`] refuses anything else).
pub fn encode(records: &[RollupRecord], out: &mut Vec<u8>) {
    debug_assert!(
        records
            .windows(2)
            .all(|p| p[0].window_end_ms < p[1].window_end_ms),
        "rollup::encode needs records sorted by window"
    );
    debug_assert!(
        records.iter().all(|r| r.count >= 1
            && r.first.ts_ms <= r.last.ts_ms
            && r.last.ts_ms <= r.window_end_ms),
        "rollup::encode got a record compute() cannot make"
    );
    out.push(FORMAT_VERSION);
    put_uvarint(out, records.len() as u64);
    let Some(head) = records.first() else {
        return;
    };
    // Gaps as u64: exact for sorted i64s even when the span exceeds i64::MAX.
    let gap =
        |p: &[RollupRecord]| (p[1].window_end_ms as u64).wrapping_sub(p[0].window_end_ms as u64);
    let unit = records
        .windows(2)
        .map(gap)
        .fold(0, |g, x| if x == g { g } else { gcd(g, x) })
        .max(1);
    put_uvarint(out, unit);
    put_varint(out, head.window_end_ms);

    let mut w = BitWriter::default();
    let col = |f: fn(&RollupRecord) -> u64| records.iter().map(f).collect::<Vec<u64>>();
    let gaps: Vec<u64> = records.windows(2).map(|p| gap(p) / unit - 1).collect();
    put_packed(&mut w, &gaps);
    put_ints(
        &mut w,
        &col(|r| (r.window_end_ms as u64).wrapping_sub(r.first.ts_ms as u64)),
    );
    put_ints(
        &mut w,
        &col(|r| (r.last.ts_ms as u64).wrapping_sub(r.first.ts_ms as u64)),
    );
    let count = col(|r| r.count);
    put_ints(
        &mut w,
        &count.iter().map(|c| c.wrapping_sub(1)).collect::<Vec<_>>(),
    );
    let changes = col(|r| r.changes);
    let unchanged = changes
        .iter()
        .zip(&count)
        .map(|(&ch, &c)| zigzag(c.wrapping_sub(1).wrapping_sub(ch) as i64))
        .collect();
    put_best(&mut w, &[changes, unchanged]);
    let resets = col(|r| r.resets);
    put_ints(&mut w, &resets);

    let cols = ValueCols::of(records);
    put_packed(&mut w, &cols.min_src);
    put_packed(&mut w, &cols.max_src);
    // Decimal when the values are short decimals (most are, in practice). XOR when they are
    // not, or when the decimal form needs many patches and XOR turns out shorter.
    let decimal = decimal_scale(&cols).map(|s| put_values(Decimal(s), &cols, &count, &resets));
    let values = match decimal {
        Some((bits, patches)) if patches * 8 <= cols.value_count() => bits,
        decimal => {
            let (xor, _) = put_values(Xor, &cols, &count, &resets);
            match decimal {
                Some((bits, _)) if bits.bit_len() <= xor.bit_len() => bits,
                _ => xor,
            }
        }
    };
    w.append(&values);
    out.extend_from_slice(&w.finish());
}

/// The f64 columns of records as bit patterns; the explicit min/max columns only hold the
/// records whose min/max is neither their first nor their last value.
struct ValueCols {
    first: Vec<u64>,
    last: Vec<u64>,
    sum: Vec<u64>,
    reset_correction: Vec<u64>,
    min_src: Vec<u64>,
    max_src: Vec<u64>,
    min: Vec<u64>,
    max: Vec<u64>,
}

impl ValueCols {
    fn of(records: &[RollupRecord]) -> Self {
        let bits = |f: fn(&RollupRecord) -> f64| {
            records.iter().map(|r| f(r).to_bits()).collect::<Vec<u64>>()
        };
        let (first, last) = (bits(|r| r.first.value), bits(|r| r.last.value));
        let (mut min_src, mut max_src, mut min, mut max) = (vec![], vec![], vec![], vec![]);
        for r in records {
            let (lo, hi) = ends(r.first.value, r.last.value);
            let src = |v: f64, near: f64, far: f64, explicit: &mut Vec<u64>| {
                if v.to_bits() == near.to_bits() {
                    SRC_NEAR
                } else if v.to_bits() == far.to_bits() {
                    SRC_FAR
                } else {
                    explicit.push(v.to_bits());
                    SRC_EXPLICIT
                }
            };
            min_src.push(src(r.min, lo, hi, &mut min));
            max_src.push(src(r.max, hi, lo, &mut max));
        }
        ValueCols {
            first,
            last,
            sum: bits(|r| r.sum),
            reset_correction: bits(|r| r.reset_correction),
            min_src,
            max_src,
            min,
            max,
        }
    }

    fn value_count(&self) -> usize {
        4 * self.first.len() + self.min.len() + self.max.len()
    }

    fn all_values(&self) -> impl Iterator<Item = u64> + '_ {
        [
            &self.first,
            &self.last,
            &self.sum,
            &self.reset_correction,
            &self.min,
            &self.max,
        ]
        .into_iter()
        .flatten()
        .copied()
    }
}

/// `(lower, higher)` of a record's first and last value (first, last unless last < first).
fn ends(first: f64, last: f64) -> (f64, f64) {
    if last < first {
        (last, first)
    } else {
        (first, last)
    }
}

/// The value columns of records in encoding order, read or written through `io`, with the
/// candidate predictions of each from the columns before it. One schedule for both directions
/// and both value modes keeps encoder and decoder in step.
fn value_columns<Io: ColumnIo>(
    io: &mut Io,
    min_src: &[u64],
    max_src: &[u64],
    count: &[u64],
    resets: &[u64],
) -> Result<Values> {
    let n = count.len();
    let zero = Io::T::ZERO;
    // Gauges: the previous value; counters: the previous plus the mean step so far.
    let (last, last_v) = io.column(Col::Last, n, 2, |c, i, col| match (c, i) {
        (_, 0) => zero,
        (0, _) | (_, 1) => col[i - 1],
        _ => Io::T::add(
            col[i - 1],
            Io::T::div(Io::T::sub(col[i - 1], col[0]), (i - 1) as u64),
        ),
    })?;
    // The previous window's last; or for a steady counter, one step of this window after it.
    let (first, first_v) = io.column(Col::First, n, 2, |c, i, _| {
        let prev = prev_or(&last, i, last[0]);
        match c {
            0 => prev,
            _ => Io::T::add(prev, Io::T::div(Io::T::sub(last[i], prev), count[i])),
        }
    })?;
    // Per record, which of first and last is the lower: the near source of its min.
    let swap: Vec<bool> = first_v.iter().zip(&last_v).map(|(f, l)| l < f).collect();
    let (lo, hi) = ordered(&swap, &first, &last);
    let explicit = |src: &[u64], near: &[Io::T]| -> Vec<Io::T> {
        explicit_records(src).map(|i| near[i]).collect()
    };
    let (min_near, max_near) = (explicit(min_src, &lo), explicit(max_src, &hi));
    let (min_x, min_xv) = io.column(Col::Min, min_near.len(), 2, |c, j, col| match c {
        0 => min_near[j],
        _ => prev_or(col, j, min_near[0]),
    })?;
    let (max_x, max_xv) = io.column(Col::Max, max_near.len(), 2, |c, j, col| match c {
        0 => max_near[j],
        _ => prev_or(col, j, max_near[0]),
    })?;
    let min = resolve(min_src, &lo, &hi, &min_x);
    let max = resolve(max_src, &hi, &lo, &max_x);
    let (_, sum_v) = io.column(Col::Sum, n, 3, |c, i, col| match c {
        // Samples spread evenly between first and last (counters).
        0 => Io::T::mul(Io::T::mid(first[i], last[i]), count[i]),
        // First and last, and the others about the middle of min and max (gauges).
        1 => Io::T::add(
            Io::T::add(first[i], last[i]),
            Io::T::mul(Io::T::mid(min[i], max[i]), count[i].wrapping_sub(2)),
        ),
        _ => prev_or(col, i, zero),
    })?;
    // Each reset adds a value about the middle of first and last, or of min and max.
    let (_, rc_v) = io.column(Col::ResetCorrection, n, 3, |c, i, col| match c {
        0 => Io::T::mul(Io::T::mid(first[i], last[i]), resets[i]),
        1 => Io::T::mul(Io::T::mid(min[i], max[i]), resets[i]),
        _ => prev_or(col, i, zero),
    })?;
    let (lo_v, hi_v) = ordered(&swap, &first_v, &last_v);
    Ok(Values {
        min: resolve(min_src, &lo_v, &hi_v, &min_xv),
        max: resolve(max_src, &hi_v, &lo_v, &max_xv),
        first: first_v,
        last: last_v,
        sum: sum_v,
        reset_correction: rc_v,
    })
}

/// Per record, `(lower, higher)` of first and last: swapped where `swap` says last is lower.
fn ordered<T: Copy>(swap: &[bool], first: &[T], last: &[T]) -> (Vec<T>, Vec<T>) {
    (0..swap.len())
        .map(|i| {
            if swap[i] {
                (last[i], first[i])
            } else {
                (first[i], last[i])
            }
        })
        .unzip()
}

/// Each record's min (or max) from its source: `near`, `far` or the next explicit value.
fn resolve<T: Copy>(src: &[u64], near: &[T], far: &[T], explicit: &[T]) -> Vec<T> {
    let mut explicit = explicit.iter();
    src.iter()
        .enumerate()
        .map(|(i, &s)| match s {
            SRC_NEAR => near[i],
            SRC_FAR => far[i],
            _ => *explicit
                .next()
                .expect("one explicit value per SRC_EXPLICIT"),
        })
        .collect()
}

fn explicit_records(src: &[u64]) -> impl Iterator<Item = usize> + '_ {
    src.iter()
        .enumerate()
        .filter_map(|(i, &s)| (s == SRC_EXPLICIT).then_some(i))
}

fn prev_or<T: Copy>(col: &[T], i: usize, init: T) -> T {
    if i > 0 { col[i - 1] } else { init }
}

/// The arithmetic of predictions: wrapping on the scaled integers of the decimal mode, IEEE on
/// the floats of the XOR mode. Encoder and decoder compute the same predictions bit for bit.
trait Arith: Copy {
    const ZERO: Self;
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, by: u64) -> Self;
    fn div(a: Self, by: u64) -> Self;
    fn mid(a: Self, b: Self) -> Self;
}

impl Arith for i64 {
    const ZERO: i64 = 0;
    fn add(a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    fn sub(a: i64, b: i64) -> i64 {
        a.wrapping_sub(b)
    }
    fn mul(a: i64, by: u64) -> i64 {
        a.wrapping_mul(by as i64)
    }
    fn div(a: i64, by: u64) -> i64 {
        a / by.clamp(1, i64::MAX as u64) as i64
    }
    fn mid(a: i64, b: i64) -> i64 {
        // floor((a + b) / 2) without overflow.
        (a >> 1) + (b >> 1) + (a & b & 1)
    }
}

impl Arith for f64 {
    const ZERO: f64 = 0.0;
    fn add(a: f64, b: f64) -> f64 {
        a + b
    }
    fn sub(a: f64, b: f64) -> f64 {
        a - b
    }
    fn mul(a: f64, by: u64) -> f64 {
        a * by as f64
    }
    fn div(a: f64, by: u64) -> f64 {
        a / by as f64
    }
    fn mid(a: f64, b: f64) -> f64 {
        (a + b) * 0.5
    }
}

/// The value columns, in encoding order.
#[derive(Clone, Copy, Debug)]
enum Col {
    Last,
    First,
    Min,
    Max,
    Sum,
    ResetCorrection,
}

/// How the value columns are stored. Predictions and residuals work on `T`.
trait ValueMode: Copy {
    type T: Arith;
    /// The representation of the float with these bits, or `fallback` if it has none.
    fn repr(self, bits: u64, fallback: Self::T) -> Self::T;
    fn value(self, t: Self::T) -> f64;
    fn put_header(self, w: &mut BitWriter);
    /// Writes the values against the best of the candidate predictions (`preds[c][i]`), with
    /// the 2-bit index of that candidate first.
    fn put_col(self, w: &mut BitWriter, vals: &[Self::T], preds: &[Vec<Self::T>]);
    /// Reads `n` values; `pred(c, i, values so far)` is candidate `c`'s prediction of value `i`.
    fn get_col(
        self,
        r: &mut BitReader,
        n: usize,
        candidates: usize,
        pred: impl Fn(usize, usize, &[Self::T]) -> Self::T,
    ) -> Result<Vec<Self::T>>;
}

/// Scaled integers `k` with value `k / 10^scale`: residuals of predictions, bit-packed.
#[derive(Clone, Copy, Debug)]
struct Decimal(usize);

impl ValueMode for Decimal {
    type T = i64;

    fn repr(self, bits: u64, fallback: i64) -> i64 {
        to_scaled(f64::from_bits(bits), self.0).unwrap_or(fallback)
    }

    fn value(self, k: i64) -> f64 {
        from_scaled(k, self.0)
    }

    fn put_header(self, w: &mut BitWriter) {
        w.put(MODE_DECIMAL, 1);
        w.put(self.0 as u64, 4);
    }

    fn put_col(self, w: &mut BitWriter, vals: &[i64], preds: &[Vec<i64>]) {
        let candidates: Vec<Vec<u64>> = preds
            .iter()
            .map(|p| {
                vals.iter()
                    .zip(p)
                    .map(|(v, p)| zigzag(v.wrapping_sub(*p)))
                    .collect()
            })
            .collect();
        put_best(w, &candidates);
    }

    fn get_col(
        self,
        r: &mut BitReader,
        n: usize,
        candidates: usize,
        pred: impl Fn(usize, usize, &[i64]) -> i64,
    ) -> Result<Vec<i64>> {
        let (c, residuals) = get_best(r, n, candidates)?;
        let mut vals = Vec::with_capacity(n);
        for x in residuals {
            let p = pred(c, vals.len(), &vals);
            vals.push(p.wrapping_add(unzigzag(x)));
        }
        Ok(vals)
    }
}

/// Gorilla XOR of the float bits against a prediction.
#[derive(Clone, Copy, Debug)]
struct Xor;

impl ValueMode for Xor {
    type T = f64;

    fn repr(self, bits: u64, _: f64) -> f64 {
        f64::from_bits(bits)
    }

    fn value(self, v: f64) -> f64 {
        v
    }

    fn put_header(self, w: &mut BitWriter) {
        w.put(MODE_XOR, 1);
    }

    fn put_col(self, w: &mut BitWriter, vals: &[f64], preds: &[Vec<f64>]) {
        let mut best: Option<(usize, BitWriter)> = None;
        for (c, p) in preds.iter().enumerate() {
            let mut s = BitWriter::default();
            let mut window = XorWindow::default();
            for (v, p) in vals.iter().zip(p) {
                put_xor(&mut s, v.to_bits() ^ p.to_bits(), &mut window);
            }
            if best.as_ref().is_none_or(|(_, b)| s.bit_len() < b.bit_len()) {
                best = Some((c, s));
            }
        }
        let (c, s) = best.expect("at least one candidate");
        w.put(c as u64, 2);
        w.append(&s);
    }

    fn get_col(
        self,
        r: &mut BitReader,
        n: usize,
        candidates: usize,
        pred: impl Fn(usize, usize, &[f64]) -> f64,
    ) -> Result<Vec<f64>> {
        let c = r.get(2)? as usize;
        if c >= candidates {
            return Err(r.corrupt(format!("unknown predictor {c}")));
        }
        let mut vals = Vec::with_capacity(n);
        let mut window = XorWindow::default();
        for _ in 0..n {
            let x = get_xor(r, &mut window)?;
            let p = pred(c, vals.len(), &vals);
            vals.push(f64::from_bits(x ^ p.to_bits()));
        }
        Ok(vals)
    }
}

/// The value mode, as the stream names it: 1 bit, and for decimal the 4-bit scale.
enum Mode {
    Decimal(usize),
    Xor,
}

impl Mode {
    fn get(r: &mut BitReader) -> Result<Mode> {
        if r.get(1)? == MODE_XOR {
            return Ok(Mode::Xor);
        }
        let scale = r.get(4)? as usize;
        if scale > MAX_SCALE {
            return Err(r.corrupt(format!("decimal scale {scale}")));
        }
        Ok(Mode::Decimal(scale))
    }
}

/// Reads or writes one value column: gives back its representation (what later predictions
/// use) and its floats. `pred(c, i, column so far)` is candidate `c`'s prediction of value `i`.
trait ColumnIo {
    type T: Arith;
    fn column(
        &mut self,
        col: Col,
        n: usize,
        candidates: usize,
        pred: impl Fn(usize, usize, &[Self::T]) -> Self::T,
    ) -> Result<(Vec<Self::T>, Vec<f64>)>;
}

struct PutColumns<'a, M> {
    w: BitWriter,
    mode: M,
    cols: &'a ValueCols,
    /// Values whose bits the mode's representation does not give.
    patches: usize,
}

impl<M: ValueMode> ColumnIo for PutColumns<'_, M> {
    type T = M::T;

    fn column(
        &mut self,
        col: Col,
        n: usize,
        candidates: usize,
        pred: impl Fn(usize, usize, &[M::T]) -> M::T,
    ) -> Result<(Vec<M::T>, Vec<f64>)> {
        let bits = match col {
            Col::Last => &self.cols.last,
            Col::First => &self.cols.first,
            Col::Min => &self.cols.min,
            Col::Max => &self.cols.max,
            Col::Sum => &self.cols.sum,
            Col::ResetCorrection => &self.cols.reset_correction,
        };
        debug_assert_eq!(bits.len(), n);
        let mut vals = Vec::with_capacity(n);
        let mut preds = vec![Vec::with_capacity(n); candidates];
        for (i, &b) in bits.iter().enumerate() {
            for (c, p) in preds.iter_mut().enumerate() {
                p.push(pred(c, i, &vals));
            }
            // A value the mode cannot represent takes the first prediction, and a patch.
            vals.push(self.mode.repr(b, preds[0][i]));
        }
        self.mode.put_col(&mut self.w, &vals, &preds);
        let patches: Vec<(usize, u64)> = vals
            .iter()
            .zip(bits)
            .enumerate()
            .filter_map(|(i, (&v, &b))| {
                let d = b.wrapping_sub(self.mode.value(v).to_bits());
                (d != 0).then_some((i, zigzag(d as i64)))
            })
            .collect();
        self.patches += patches.len();
        put_patches(&mut self.w, &patches);
        Ok((vals, bits.iter().map(|&b| f64::from_bits(b)).collect()))
    }
}

struct GetColumns<'a, 'b, M> {
    r: &'b mut BitReader<'a>,
    mode: M,
}

impl<M: ValueMode> ColumnIo for GetColumns<'_, '_, M> {
    type T = M::T;

    fn column(
        &mut self,
        _: Col,
        n: usize,
        candidates: usize,
        pred: impl Fn(usize, usize, &[M::T]) -> M::T,
    ) -> Result<(Vec<M::T>, Vec<f64>)> {
        let vals = self.mode.get_col(self.r, n, candidates, pred)?;
        let mut floats: Vec<f64> = vals.iter().map(|&v| self.mode.value(v)).collect();
        get_patches(self.r, &mut floats)?;
        Ok((vals, floats))
    }
}

/// The value columns written in `mode`, and how many values needed a patch.
fn put_values<M: ValueMode>(
    mode: M,
    cols: &ValueCols,
    count: &[u64],
    resets: &[u64],
) -> (BitWriter, usize) {
    let mut io = PutColumns {
        w: BitWriter::default(),
        mode,
        cols,
        patches: 0,
    };
    mode.put_header(&mut io.w);
    value_columns(&mut io, &cols.min_src, &cols.max_src, count, resets)
        .expect("writing value columns cannot fail");
    (io.w, io.patches)
}

/// The decimal scale that makes the values cheapest, by an estimate: each digit of scale costs
/// about 3.3 bits in each value, each value that needs a longer scale about 12 bits of patch (a
/// sum a rounding away from a short decimal is exact only at a long one, and cheaper patched).
/// None when most values are not short decimals.
fn decimal_scale(cols: &ValueCols) -> Option<usize> {
    // A sample of a few hundred values tells as well as all of them.
    let stride = cols.value_count() / 256 + 1;
    let mut hist = [0usize; MAX_SCALE + 1];
    let mut total = 0;
    for v in cols.all_values().step_by(stride) {
        total += 1;
        if let Some(e) = min_scale(f64::from_bits(v)) {
            hist[e] += 1;
        }
    }
    let exact: usize = hist.iter().sum();
    if exact * 2 < total {
        return None;
    }
    let mut seen = 0;
    (0..=MAX_SCALE)
        .map(|e| {
            seen += hist[e];
            (e * total * 10 / 3 + (exact - seen) * 12, e)
        })
        .min()
        .map(|(_, e)| e)
}

/// An integer `k` with `k / 10^scale` about `v` (`None` if `v * 10^scale` is out of range).
fn to_scaled(v: f64, scale: usize) -> Option<i64> {
    let x = v * POW10[scale];
    // Rounds half away from zero; `as` truncates. No need to be exact: patches fix the rest.
    (x.abs() < 9.0e18).then(|| (x + 0.5f64.copysign(x)) as i64)
}

/// The smallest scale at which `v` is a short decimal, bit for bit.
fn min_scale(v: f64) -> Option<usize> {
    (0..=MAX_SCALE).find(|&e| {
        let x = v * POW10[e];
        // Cheap test first: `x` must be about an integer (it is within 2^-52 relative of one
        // when `v` is the float nearest to `k / 10^e`).
        to_scaled(v, e).is_some_and(|k| {
            (x - k as f64).abs() <= x.abs() * 1e-12 && from_scaled(k, e).to_bits() == v.to_bits()
        })
    })
}

fn from_scaled(k: i64, scale: usize) -> f64 {
    k as f64 / POW10[scale]
}

/// The meaningful bits of the previous non-zero XOR: `lead` leading zeros, then `len` bits.
#[derive(Default)]
struct XorWindow {
    lead: u32,
    len: u32,
}

/// Gorilla: `0` for an unchanged value; `10` and the bits inside the previous window; `11`,
/// 6 bits of leading zeros, 6 bits of length - 1 and the meaningful bits.
fn put_xor(w: &mut BitWriter, x: u64, window: &mut XorWindow) {
    if x == 0 {
        w.put(0, 1);
        return;
    }
    let (lead, trail) = (x.leading_zeros(), x.trailing_zeros());
    if window.len > 0 && lead >= window.lead && trail >= 64 - window.lead - window.len {
        w.put(0b01, 2);
        w.put(x >> (64 - window.lead - window.len), window.len);
    } else {
        let len = 64 - lead - trail;
        w.put(0b11, 2);
        w.put(u64::from(lead), 6);
        w.put(u64::from(len - 1), 6);
        w.put(x >> trail, len);
        *window = XorWindow { lead, len };
    }
}

fn get_xor(r: &mut BitReader, window: &mut XorWindow) -> Result<u64> {
    if r.get(1)? == 0 {
        return Ok(0);
    }
    if r.get(1)? == 0 {
        if window.len == 0 {
            return Err(r.corrupt("XOR refers to no previous window"));
        }
        return Ok(r.get(window.len)? << (64 - window.lead - window.len));
    }
    let lead = r.get(6)? as u32;
    let len = r.get(6)? as u32 + 1;
    if lead + len > 64 {
        return Err(r.corrupt("XOR window exceeds 64 bits"));
    }
    *window = XorWindow { lead, len };
    Ok(r.get(len)? << (64 - lead - len))
}

/// Sparse corrections `(index, zigzagged bit difference)` in index order: their count as a small
/// int, then per correction the gap to the previous index + 1 and the difference - 1, as gamma
/// codes.
fn put_patches(w: &mut BitWriter, diffs: &[(usize, u64)]) {
    put_small(w, diffs.len() as u64);
    let mut next = 0;
    for &(i, d) in diffs {
        put_gamma(w, (i - next) as u64);
        put_gamma(w, d - 1);
        next = i + 1;
    }
}

fn get_patches(r: &mut BitReader, values: &mut [f64]) -> Result<()> {
    let m = r.get_small()?;
    let mut next = 0u64;
    for _ in 0..m {
        let i = next
            .checked_add(r.get_gamma()?)
            .filter(|&i| i < values.len() as u64)
            .ok_or_else(|| r.corrupt("patch index out of range"))?;
        let d = unzigzag(r.get_gamma()?.wrapping_add(1)) as u64;
        let v = &mut values[i as usize];
        *v = f64::from_bits(v.to_bits().wrapping_add(d));
        next = i + 1;
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    (u >> 1) as i64 ^ -((u & 1) as i64)
}

/// An integer column as raw values or as deltas, whichever is shorter.
fn put_ints(w: &mut BitWriter, col: &[u64]) {
    let delta = col
        .iter()
        .enumerate()
        .map(|(i, &x)| zigzag(x.wrapping_sub(prev_or(col, i, 0)) as i64))
        .collect();
    put_best(w, &[col.to_vec(), delta]);
}

fn get_ints(r: &mut BitReader, n: usize) -> Result<Vec<u64>> {
    let (c, mut col) = get_best(r, n, 2)?;
    if c == 1 {
        let mut prev = 0u64;
        for x in &mut col {
            prev = prev.wrapping_add(unzigzag(*x) as u64);
            *x = prev;
        }
    }
    Ok(col)
}

/// Writes the shortest of the candidate residual columns: its index (2 bits), its first value
/// as a small int (it is often far larger than the rest), then the rest bit-packed.
fn put_best(w: &mut BitWriter, candidates: &[Vec<u64>]) {
    debug_assert!((1..=4).contains(&candidates.len()));
    let cost = |c: &Vec<u64>| match c.split_first() {
        Some((head, rest)) => small_bits(*head) + packed_bits(rest),
        None => 0,
    };
    let (ix, best) = candidates
        .iter()
        .enumerate()
        .min_by_key(|(_, c)| cost(c))
        .expect("at least one candidate");
    w.put(ix as u64, 2);
    if let Some((head, rest)) = best.split_first() {
        put_small(w, *head);
        put_packed(w, rest);
    }
}

/// Reads what [`put_best`] wrote: the candidate index (checked `< candidates`) and residuals.
fn get_best(r: &mut BitReader, n: usize, candidates: usize) -> Result<(usize, Vec<u64>)> {
    let c = r.get(2)? as usize;
    if c >= candidates {
        return Err(r.corrupt(format!("unknown predictor {c}")));
    }
    let mut col = Vec::with_capacity(n);
    if n > 0 {
        col.push(r.get_small()?);
        get_packed(r, n - 1, &mut col)?;
    }
    Ok((c, col))
}

fn width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Groups of [`GROUP`] values, each as wide as its widest value: `0` if the width is the previous
/// group's (0 before the first group), else `1` and the zigzagged change of width as a gamma
/// code; then the values.
fn put_packed(w: &mut BitWriter, col: &[u64]) {
    let mut prev = 0;
    for g in col.chunks(GROUP) {
        let bits = width(g.iter().fold(0, |a, &v| a | v));
        if bits == prev {
            w.put(0, 1);
        } else {
            w.put(1, 1);
            put_gamma(w, width_change(prev, bits) - 1);
            prev = bits;
        }
        for &v in g {
            w.put(v, bits);
        }
    }
}

/// How a group's width differs from the previous group's, zigzagged (`>= 1` when it does).
fn width_change(prev: u32, bits: u32) -> u64 {
    zigzag(i64::from(bits) - i64::from(prev))
}

fn packed_bits(col: &[u64]) -> usize {
    let mut prev = 0;
    let mut total = 0;
    for g in col.chunks(GROUP) {
        let bits = width(g.iter().fold(0, |a, &v| a | v));
        total += bits as usize * g.len() + 1;
        if bits != prev {
            total += gamma_bits(width_change(prev, bits) - 1);
        }
        prev = bits;
    }
    total
}

fn get_packed(r: &mut BitReader, n: usize, out: &mut Vec<u64>) -> Result<()> {
    let mut bits = 0u32;
    let mut left = n;
    while left > 0 {
        if r.get(1)? == 1 {
            let change = unzigzag(r.get_gamma()?.wrapping_add(1));
            bits = i64::from(bits)
                .checked_add(change)
                .and_then(|b| u32::try_from(b).ok())
                .filter(|&b| b <= 64)
                .ok_or_else(|| r.corrupt("bit width out of range"))?;
        }
        let g = left.min(GROUP);
        if bits == 0 {
            out.resize(out.len() + g, 0);
        } else {
            r.need(g * bits as usize)?;
            for _ in 0..g {
                out.push(r.get_unchecked(bits));
            }
        }
        left -= g;
    }
    Ok(())
}

/// Small unsigned ints: `0`, or `1`, 6 bits of (bit length - 1) and the bits below the top one.
fn put_small(w: &mut BitWriter, v: u64) {
    if v == 0 {
        w.put(0, 1);
    } else {
        let len = width(v);
        w.put(1, 1);
        w.put(u64::from(len - 1), 6);
        w.put(v & !(1 << (len - 1)), len - 1);
    }
}

/// Elias gamma code of `v + 1`, for ints that are mostly tiny: `v = 0` takes 1 bit, `1..=2`
/// take 3, `3..=6` take 5, `u64::MAX` 129.
fn put_gamma(w: &mut BitWriter, v: u64) {
    let v1 = u128::from(v) + 1;
    let len = 128 - v1.leading_zeros();
    w.put(0, len - 1);
    w.put(1, 1);
    let low = v1 & !(1 << (len - 1));
    w.put(low as u64, len - 1);
}

fn gamma_bits(v: u64) -> usize {
    let v1 = u128::from(v) + 1;
    2 * (128 - v1.leading_zeros() as usize) - 1
}

fn small_bits(v: u64) -> usize {
    if v == 0 { 1 } else { 6 + width(v) as usize }
}

/// Decodes what [`encode`] wrote. Never panics: any malformed input is `Error::Corrupt`.
pub fn decode(bytes: &[u8]) -> Result<Vec<RollupRecord>> {
    let mut rd = Reader { bytes, pos: 0 };
    let version = rd.u8()?;
    if version != FORMAT_VERSION {
        return Err(Error::corrupt(
            WHAT,
            format!("unknown format version {version} (expected {FORMAT_VERSION})"),
        ));
    }
    let n = rd.uvarint()?;
    if n == 0 {
        return rd.finish(Vec::new());
    }
    let unit = rd.uvarint()?;
    if unit == 0 {
        return Err(Error::corrupt(WHAT, "window unit is zero"));
    }
    let first_end = rd.varint()?;
    let left = (bytes.len() - rd.pos) as u64;
    if n - 1 > left.saturating_mul((8 * GROUP / ALWAYS_PACKED_COLUMNS) as u64) {
        return Err(Error::corrupt(
            WHAT,
            format!("record count {n} exceeds what {left} bytes can hold"),
        ));
    }
    let n = n as usize;
    let mut r = BitReader {
        bytes: &bytes[rd.pos..],
        pos: 0,
    };
    let mut gaps = Vec::with_capacity(n - 1);
    get_packed(&mut r, n - 1, &mut gaps)?;
    let first_off = get_ints(&mut r, n)?;
    let span = get_ints(&mut r, n)?;
    let count: Vec<u64> = get_ints(&mut r, n)?
        .iter()
        .map(|c| c.wrapping_add(1))
        .collect();
    let (c, mut changes) = get_best(&mut r, n, 2)?;
    if c == 1 {
        for (ch, &cnt) in changes.iter_mut().zip(&count) {
            *ch = cnt.wrapping_sub(1).wrapping_sub(unzigzag(*ch) as u64);
        }
    }
    let resets = get_ints(&mut r, n)?;
    let mut min_src = Vec::with_capacity(n);
    get_packed(&mut r, n, &mut min_src)?;
    let mut max_src = Vec::with_capacity(n);
    get_packed(&mut r, n, &mut max_src)?;
    if min_src.iter().chain(&max_src).any(|&s| s > SRC_FAR) {
        return Err(r.corrupt("unknown min/max source"));
    }
    let v = match Mode::get(&mut r)? {
        Mode::Decimal(scale) => {
            let mut io = GetColumns {
                r: &mut r,
                mode: Decimal(scale),
            };
            value_columns(&mut io, &min_src, &max_src, &count, &resets)?
        }
        Mode::Xor => {
            let mut io = GetColumns {
                r: &mut r,
                mode: Xor,
            };
            value_columns(&mut io, &min_src, &max_src, &count, &resets)?
        }
    };
    r.finish()?;

    let mut out = Vec::with_capacity(n);
    let mut window_end_ms = first_end;
    for i in 0..n {
        let bad = |reason: &str| Error::corrupt(WHAT, format!("record {i}: {reason}"));
        if i > 0 {
            window_end_ms = gaps[i - 1]
                .checked_add(1)
                .and_then(|units| units.checked_mul(unit))
                .and_then(|gap| window_end_ms.checked_add_unsigned(gap))
                .ok_or_else(|| bad("window end overflows"))?;
        }
        let first_ts = window_end_ms
            .checked_sub_unsigned(first_off[i])
            .ok_or_else(|| bad("first timestamp out of range"))?;
        let last_ts = first_ts
            .checked_add_unsigned(span[i])
            .filter(|&ts| ts <= window_end_ms)
            .ok_or_else(|| bad("last timestamp out of range"))?;
        if count[i] == 0 {
            return Err(bad("empty window"));
        }
        out.push(RollupRecord {
            window_end_ms,
            count: count[i],
            sum: v.sum[i],
            min: v.min[i],
            max: v.max[i],
            first: Sample::new(first_ts, v.first[i]),
            last: Sample::new(last_ts, v.last[i]),
            reset_correction: v.reset_correction[i],
            resets: resets[i],
            changes: changes[i],
        });
    }
    Ok(out)
}

/// Decoded value columns, one entry per record.
struct Values {
    first: Vec<f64>,
    last: Vec<f64>,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    reset_correction: Vec<f64>,
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Appends bits least significant first into little-endian bytes.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    /// Bits used in `acc` (< 64).
    fill: u32,
}

impl BitWriter {
    /// Appends the low `n` bits of `v` (`n <= 64`; the bits above must be zero).
    fn put(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64 && (n == 64 || v >> n == 0), "{v:#x} in {n} bits");
        if n == 0 {
            return;
        }
        self.acc |= v << self.fill;
        let room = 64 - self.fill;
        if n >= room {
            self.bytes.extend_from_slice(&self.acc.to_le_bytes());
            self.acc = if room == 64 { 0 } else { v >> room };
            self.fill = n - room;
        } else {
            self.fill += n;
        }
    }

    fn bit_len(&self) -> usize {
        self.bytes.len() * 8 + self.fill as usize
    }

    fn append(&mut self, other: &BitWriter) {
        for word in other.bytes.chunks_exact(8) {
            self.put(u64::from_le_bytes(word.try_into().expect("8 bytes")), 64);
        }
        self.put(other.acc, other.fill);
    }

    fn finish(mut self) -> Vec<u8> {
        let tail = self.fill.div_ceil(8) as usize;
        self.bytes
            .extend_from_slice(&self.acc.to_le_bytes()[..tail]);
        self.bytes
    }
}

/// Bounds-checked reader of what [`BitWriter`] wrote.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// In bits.
    pos: usize,
}

impl BitReader<'_> {
    fn corrupt(&self, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(WHAT, format!("{reason} (at bit {})", self.pos))
    }

    /// Fails unless `bits` more bits are left.
    fn need(&self, bits: usize) -> Result<()> {
        if self.bytes.len() * 8 - self.pos < bits {
            return Err(self.corrupt("truncated"));
        }
        Ok(())
    }

    /// The next `n <= 64` bits.
    fn get(&mut self, n: u32) -> Result<u64> {
        self.need(n as usize)?;
        Ok(self.get_unchecked(n))
    }

    /// The next `n <= 64` bits, after [`Self::need`] made sure there are: reading past the end
    /// gives zeros (never a panic).
    fn get_unchecked(&mut self, n: u32) -> u64 {
        if n > 56 {
            let lo = self.get_unchecked(32);
            return lo | self.get_unchecked(n - 32) << 32;
        }
        let i = self.pos / 8;
        let word = match self.bytes.get(i..i + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
            None => {
                let mut w = [0u8; 8];
                let tail = self.bytes.get(i..).unwrap_or_default();
                w[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(w)
            }
        };
        let shift = self.pos % 8;
        self.pos += n as usize;
        (word >> shift) & ((1u64 << n) - 1)
    }

    fn get_gamma(&mut self) -> Result<u64> {
        // Count the leading zeros of the code up to 56 at a time (the stream is LSB first).
        let mut zeros = 0;
        loop {
            let avail = (self.bytes.len() * 8 - self.pos).min(56) as u32;
            if avail == 0 {
                return Err(self.corrupt("truncated"));
            }
            let word = self.get_unchecked(avail);
            if word != 0 {
                let tz = word.trailing_zeros();
                zeros += tz;
                // Give back what follows the terminating one.
                self.pos -= (avail - tz - 1) as usize;
                break;
            }
            zeros += avail;
            if zeros > 64 {
                break;
            }
        }
        if zeros > 64 {
            return Err(self.corrupt("gamma code longer than 129 bits"));
        }
        let v1 = (1u128 << zeros) | u128::from(self.get(zeros)?);
        u64::try_from(v1 - 1).map_err(|_| self.corrupt("gamma code overflows 64 bits"))
    }

    fn get_small(&mut self) -> Result<u64> {
        if self.get(1)? == 0 {
            return Ok(0);
        }
        let len = self.get(6)? as u32 + 1;
        Ok(1 << (len - 1) | self.get(len - 1)?)
    }

    /// Only zero padding may follow the last value, and less than a byte of it.
    fn finish(&self) -> Result<()> {
        let end = self.pos.div_ceil(8);
        if end != self.bytes.len() {
            return Err(self.corrupt(format!("{} trailing bytes", self.bytes.len() - end)));
        }
        if !self.pos.is_multiple_of(8) && self.bytes[end - 1] >> (self.pos % 8) != 0 {
            return Err(self.corrupt("non-zero padding"));
        }
        Ok(())
    }
}

/// Bounds-checked cursor over the byte-aligned header.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Refuses trailing bytes: they mean the length or the format was misread.
    fn finish(&self, records: Vec<RollupRecord>) -> Result<Vec<RollupRecord>> {
        if self.pos != self.bytes.len() {
            return Err(Error::corrupt(
                WHAT,
                format!("{} trailing bytes", self.bytes.len() - self.pos),
            ));
        }
        Ok(records)
    }

    fn truncated(&self) -> Error {
        Error::corrupt(WHAT, format!("truncated at byte {}", self.pos))
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            // The 10th byte may only carry the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(Error::corrupt(WHAT, "varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        unreachable!("the 10th byte either ends the varint or is refused")
    }

    fn varint(&mut self) -> Result<i64> {
        Ok(unzigzag(self.uvarint()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::STALE_NAN_BITS;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    fn s(ts_ms: i64, value: f64) -> Sample {
        Sample::new(ts_ms, value)
    }

    fn stale(ts_ms: i64) -> Sample {
        s(ts_ms, f64::from_bits(STALE_NAN_BITS))
    }

    /// The records of the windows inside `(t - range, t]`, as the engine passes them.
    fn in_range(records: &[RollupRecord], t: i64, range: i64) -> Vec<RollupRecord> {
        records
            .iter()
            .filter(|r| r.window_end_ms > t - range && r.window_end_ms <= t)
            .copied()
            .collect()
    }

    /// Hand-computed expectations group the float operations differently than the code.
    fn approx(got: Option<f64>, want: f64) {
        let got = got.expect("a value");
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} != {want}");
    }

    fn eval_at(func: RangeFn, samples: &[Sample], w: i64, t: i64, range: i64) -> Option<f64> {
        assert!(exact_for(func, t, range, w));
        eval(func, &in_range(&compute(samples, w), t, range), t, range)
    }

    #[test]
    fn tiers() {
        assert_eq!(Tier::Raw.window_ms(), None);
        assert_eq!(Tier::Minute.window_ms(), Some(60_000));
        assert_eq!(Tier::Hour.window_ms(), Some(3_600_000));
        let names: Vec<_> = [Tier::Raw, Tier::Minute, Tier::Hour]
            .iter()
            .map(|t| t.name())
            .collect();
        assert_eq!(names, ["raw", "1m", "1h"]);
        assert_eq!(Tier::ROLLUPS, [Tier::Minute, Tier::Hour]);
    }

    #[test]
    fn window_end_is_left_open_and_floors_negatives() {
        assert_eq!(window_end(0, MIN), 0);
        assert_eq!(window_end(1, MIN), MIN);
        assert_eq!(window_end(MIN, MIN), MIN);
        assert_eq!(window_end(MIN + 1, MIN), 2 * MIN);
        assert_eq!(window_end(-1, MIN), 0);
        assert_eq!(window_end(-MIN, MIN), -MIN);
        assert_eq!(window_end(-MIN - 1, MIN), -MIN);
        assert_eq!(window_end(-MIN + 1, MIN), 0);
        assert_eq!(window_end(i64::MAX - 5, MIN), i64::MAX);
    }

    #[test]
    fn compute_groups_by_window_and_skips_empty_ones() {
        let samples = [
            s(-MIN - 1, 1.0),    // window -60000
            s(-1, 2.0),          // window 0
            s(0, 3.0),           // window 0
            s(1, 4.0),           // window 60000
            s(MIN, 5.0),         // window 60000
            s(3 * MIN + 7, 6.0), // windows 120000 and 180000 are empty
        ];
        let r = compute(&samples, MIN);
        let ends: Vec<_> = r.iter().map(|r| r.window_end_ms).collect();
        assert_eq!(ends, [-MIN, 0, MIN, 4 * MIN]);
        let counts: Vec<_> = r.iter().map(|r| r.count).collect();
        assert_eq!(counts, [1, 2, 2, 1]);
        assert_eq!(r[1].first, s(-1, 2.0));
        assert_eq!(r[1].last, s(0, 3.0));
        assert_eq!((r[2].sum, r[2].min, r[2].max), (9.0, 4.0, 5.0));
        assert!(compute(&[], MIN).is_empty());
    }

    #[test]
    fn compute_skips_stale_markers() {
        // A window holding only a stale marker has no record; a stale marker between two
        // samples is not a sample, so 10 -> 4 is still one reset.
        let samples = [s(1000, 10.0), stale(2000), s(3000, 4.0), stale(MIN + 1)];
        let r = compute(&samples, MIN);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].count, 2);
        assert_eq!((r[0].resets, r[0].reset_correction), (1, 10.0));
        assert_eq!(r[0].last, s(3000, 4.0));
        assert!(compute(&[stale(5)], MIN).is_empty());
    }

    #[test]
    fn counter_reset_inside_a_window() {
        // 15 s scrapes; 20 -> 5 resets inside the first window.
        let samples = [
            s(15_000, 10.0),
            s(30_000, 20.0),
            s(45_000, 5.0),
            s(60_000, 8.0),
            s(75_000, 12.0),
            s(90_000, 14.0),
            s(105_000, 15.0),
            s(120_000, 20.0),
        ];
        let r = compute(&samples, MIN);
        assert_eq!((r[0].resets, r[0].reset_correction), (1, 20.0));
        assert_eq!((r[1].resets, r[1].reset_correction), (0, 0.0));
        // increase = (20 - 10 + 20) * (105 s + 15 s extrapolated to the start) / 105 s
        let want = 30.0 * 120.0 / 105.0;
        approx(
            eval_at(RangeFn::Increase, &samples, MIN, 2 * MIN, 2 * MIN),
            want,
        );
        approx(
            eval_at(RangeFn::Rate, &samples, MIN, 2 * MIN, 2 * MIN),
            want / 120.0,
        );
        assert_eq!(
            eval_at(RangeFn::Resets, &samples, MIN, 2 * MIN, 2 * MIN),
            Some(1.0)
        );
        // delta ignores resets: (20 - 10) * 120 / 105.
        approx(
            eval_at(RangeFn::Delta, &samples, MIN, 2 * MIN, 2 * MIN),
            10.0 * 120.0 / 105.0,
        );
    }

    #[test]
    fn counter_reset_across_a_window_boundary() {
        let samples = [
            s(15_000, 10.0),
            s(30_000, 20.0),
            s(45_000, 30.0),
            s(60_000, 40.0),
            s(75_000, 5.0), // reset at the boundary: 40 -> 5
            s(90_000, 15.0),
            s(105_000, 25.0),
            s(120_000, 35.0),
        ];
        let r = compute(&samples, MIN);
        assert!(r.iter().all(|r| r.resets == 0));
        // 35 - 10 + 40 = 65; the zero point (105 s * 10 / 65 = 16.2 s) is past the 15 s start.
        let want = 65.0 * 120.0 / 105.0;
        let inc = eval_at(RangeFn::Increase, &samples, MIN, 2 * MIN, 2 * MIN);
        approx(inc, want);
        assert_eq!(
            eval_at(RangeFn::Resets, &samples, MIN, 2 * MIN, 2 * MIN),
            Some(1.0)
        );
        // Only the second window: 35 - 5 over 45 s, extrapolated by the zero-point clamp
        // (45 s * 5 / 30 = 7.5 s < 15 s) at the start and 0 s at the end.
        approx(
            eval_at(RangeFn::Increase, &samples, MIN, 2 * MIN, MIN),
            30.0 * (45.0 + 7.5) / 45.0,
        );
    }

    #[test]
    fn counter_starting_at_zero_is_not_extrapolated_before_its_start() {
        // The zero point is the first sample itself: no extrapolation towards the range start.
        let samples = [
            s(15_000, 0.0),
            s(30_000, 10.0),
            s(45_000, 20.0),
            s(60_000, 30.0),
        ];
        assert_eq!(
            eval_at(RangeFn::Increase, &samples, MIN, MIN, MIN),
            Some(30.0)
        );
        // delta has no such clamp: 30 * (45 + 15) / 45.
        approx(eval_at(RangeFn::Delta, &samples, MIN, MIN, MIN), 40.0);
    }

    #[test]
    fn rate_needs_two_samples_and_gaps_extrapolate_by_half_an_interval() {
        let samples = [s(30_000, 1.0), s(150_000, 3.0), s(170_000, 4.0)];
        assert_eq!(eval_at(RangeFn::Rate, &samples, MIN, MIN, MIN), None);
        assert_eq!(eval_at(RangeFn::Rate, &samples, MIN, 10 * MIN, MIN), None);
        assert_eq!(
            eval_at(RangeFn::SumOverTime, &samples, MIN, 10 * MIN, MIN),
            None
        );
        // Over (0, 240000]: interval 140 s, average 70 s; start is 30 s away (extrapolated
        // fully, but the zero point at 140 * 1/3 = 46.7 s is farther), end 70 s away
        // (>= 77 s? no: 70 < 77, extrapolated fully).
        let got = eval_at(RangeFn::Increase, &samples, MIN, 4 * MIN, 4 * MIN);
        approx(got, 3.0 * (140.0 + 30.0 + 70.0) / 140.0);
        // Over (0, 300000]: end is 130 s away (>= 77 s), so only 35 s (half the average).
        let got = eval_at(RangeFn::Increase, &samples, MIN, 5 * MIN, 5 * MIN);
        approx(got, 3.0 * (140.0 + 30.0 + 35.0) / 140.0);
    }

    #[test]
    fn over_time_functions() {
        let samples = [
            s(-90_000, 4.0),
            s(-70_000, f64::NAN),
            s(-30_000, -2.0),
            s(10_000, 7.0),
            s(50_000, 7.0),
        ];
        let at = |f| eval_at(f, &samples, MIN, MIN, 3 * MIN);
        assert_eq!(at(RangeFn::MinOverTime), Some(-2.0));
        assert_eq!(at(RangeFn::MaxOverTime), Some(7.0));
        assert_eq!(at(RangeFn::CountOverTime), Some(5.0));
        assert_eq!(at(RangeFn::LastOverTime), Some(7.0));
        assert_eq!(at(RangeFn::PresentOverTime), Some(1.0));
        assert!(at(RangeFn::SumOverTime).unwrap().is_nan());
        // 4 -> NaN -> -2 -> 7 -> 7: three changes (NaN differs from both neighbours).
        assert_eq!(at(RangeFn::Changes), Some(3.0));
        let finite = [s(-90_000, 4.0), s(-30_000, -2.0), s(10_000, 7.0)];
        let at = |f| eval_at(f, &finite, MIN, MIN, 3 * MIN);
        assert_eq!(at(RangeFn::SumOverTime), Some(9.0));
        assert_eq!(at(RangeFn::AvgOverTime), Some(3.0));
        // Nothing in range.
        assert_eq!(
            eval_at(RangeFn::CountOverTime, &finite, MIN, 10 * MIN, MIN),
            None
        );
    }

    #[test]
    fn avg_survives_an_overflowing_total() {
        // Each window's sum is finite, the total is not: the mean still is.
        let samples = [s(1, 1.5e308), s(MIN + 1, 1.5e308), s(MIN + 2, -1.0e308)];
        let got = eval_at(RangeFn::AvgOverTime, &samples, MIN, 2 * MIN, 2 * MIN);
        let raw = crate::rangefn::eval(RangeFn::AvgOverTime, &samples, 2 * MIN, 2 * MIN);
        approx(got, 2.0 / 3.0 * 1.0e308);
        approx(raw, 2.0 / 3.0 * 1.0e308);
        let got = eval_at(RangeFn::SumOverTime, &samples, MIN, 2 * MIN, 2 * MIN);
        assert_eq!(got, Some(f64::INFINITY));
    }

    #[test]
    fn min_max_skip_nan_like_prometheus() {
        // First window only NaN: the range minimum comes from the second window.
        let samples = [s(1, f64::NAN), s(MIN + 1, 3.0), s(MIN + 2, 1.0)];
        assert_eq!(
            eval_at(RangeFn::MinOverTime, &samples, MIN, 2 * MIN, 2 * MIN),
            Some(1.0)
        );
        assert_eq!(
            eval_at(RangeFn::MaxOverTime, &samples, MIN, 2 * MIN, 2 * MIN),
            Some(3.0)
        );
        let nan_only = [s(1, f64::NAN), s(2, f64::NAN)];
        let min = eval_at(RangeFn::MinOverTime, &nan_only, MIN, MIN, MIN).unwrap();
        assert!(min.is_nan());
        // NaN -> NaN is not a change, across a boundary either.
        let nans = [s(1, f64::NAN), s(MIN + 1, f64::NAN)];
        assert_eq!(
            eval_at(RangeFn::Changes, &nans, MIN, 2 * MIN, 2 * MIN),
            Some(0.0)
        );
    }

    #[test]
    fn changes_across_window_boundaries() {
        let samples = [
            s(10, 1.0),
            s(20, 1.0),
            s(30, 2.0),
            s(MIN + 1, 2.0),
            s(MIN + 2, 3.0),
        ];
        assert_eq!(
            eval_at(RangeFn::Changes, &samples, MIN, 2 * MIN, 2 * MIN),
            Some(2.0)
        );
        let samples = [
            s(10, 1.0),
            s(MIN + 1, 2.0),
            s(3 * MIN, 2.0),
            s(3 * MIN + 1, 1.0),
        ];
        assert_eq!(
            eval_at(RangeFn::Changes, &samples, MIN, 4 * MIN, 4 * MIN),
            Some(2.0)
        );
        assert_eq!(
            eval_at(RangeFn::Resets, &samples, MIN, 4 * MIN, 4 * MIN),
            Some(1.0)
        );
    }

    #[test]
    fn exact_for_requires_alignment_and_a_supported_function() {
        assert!(exact_for(RangeFn::Rate, 10 * MIN, 5 * MIN, MIN));
        assert!(exact_for(RangeFn::Rate, -10 * MIN, MIN, MIN));
        assert!(exact_for(RangeFn::Changes, 0, 3_600_000, 3_600_000));
        assert!(!exact_for(RangeFn::Rate, 10 * MIN + 1, 5 * MIN, MIN));
        assert!(!exact_for(RangeFn::Rate, -10 * MIN - 1, 5 * MIN, MIN));
        assert!(!exact_for(RangeFn::Rate, 10 * MIN, 5 * MIN + 1, MIN));
        assert!(!exact_for(RangeFn::Rate, 10 * MIN, 30_000, MIN));
        assert!(!exact_for(RangeFn::Rate, 10 * MIN, 0, MIN));
        assert!(!exact_for(RangeFn::Rate, 10 * MIN, MIN, 0));
        assert!(!exact_for(RangeFn::Rate, 2 * 3_600_000, MIN, 3_600_000));
        for f in [
            RangeFn::Irate,
            RangeFn::Idelta,
            RangeFn::StddevOverTime,
            RangeFn::StdvarOverTime,
            RangeFn::QuantileOverTime(0.5),
        ] {
            assert!(!exact_for(f, 10 * MIN, 5 * MIN, MIN), "{}", f.name());
        }
    }

    fn bits(r: &RollupRecord) -> impl PartialEq + std::fmt::Debug {
        (
            r.window_end_ms,
            r.count,
            [r.sum, r.min, r.max, r.reset_correction].map(f64::to_bits),
            (r.first.ts_ms, r.first.value.to_bits()),
            (r.last.ts_ms, r.last.value.to_bits()),
            r.resets,
            r.changes,
        )
    }

    fn round_trip(records: &[RollupRecord]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(records, &mut buf);
        let back = decode(&buf).expect("decodes what encode wrote");
        assert_eq!(
            back.iter().map(bits).collect::<Vec<_>>(),
            records.iter().map(bits).collect::<Vec<_>>()
        );
        buf
    }

    fn encoded(records: &[RollupRecord]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(records, &mut buf);
        buf
    }

    fn corrupt(bytes: &[u8]) -> bool {
        matches!(decode(bytes), Err(Error::Corrupt { .. }))
    }

    /// Per series, the rollups of `hours` of node_exporter-like scrapes (15 s, as in the demo).
    fn node_exporter_rollups(hosts: usize, hours: i64, w: i64) -> Vec<Vec<RollupRecord>> {
        let tenant = crate::series::Tenant::new("t").unwrap();
        let mut load = crate::workload::NodeExporterLike::new(&tenant, hosts, 42);
        let step = load.scrape_interval_ms;
        let start = 1_795_320_000_000;
        let mut samples = vec![Vec::new(); load.series.len()];
        for k in 1..=hours * 3_600_000 / step {
            for (series, (_, scraped)) in samples.iter_mut().zip(load.scrape(start + k * step)) {
                series.extend(scraped);
            }
        }
        samples.iter().map(|s| compute(s, w)).collect()
    }

    /// Round-trips every series; encoded bytes per record over all of them.
    fn bytes_per_record(series: &[Vec<RollupRecord>]) -> f64 {
        let bytes: usize = series.iter().map(|r| round_trip(r).len()).sum();
        let records: usize = series.iter().map(Vec::len).sum();
        bytes as f64 / records as f64
    }

    #[test]
    fn node_exporter_rollups_are_compact() {
        // Measured: 5.71 bytes per 1m record (v1: 54), 14.9 per 1h record (6 per series, so
        // the per-series header weighs more). Bounds leave ~15 % headroom.
        let minute = bytes_per_record(&node_exporter_rollups(4, 6, MIN));
        let hour = bytes_per_record(&node_exporter_rollups(4, 6, 60 * MIN));
        eprintln!(
            "node_exporter-like rollups: {minute:.3} bytes/1m record, {hour:.3} bytes/1h record"
        );
        assert!(minute < 6.6, "1m: {minute:.2} bytes/record");
        assert!(hour < 17.0, "1h: {hour:.2} bytes/record");
    }

    #[test]
    fn encoding_is_exact_for_special_values() {
        let specials = [
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(STALE_NAN_BITS),
            f64::from_bits(0x7ff8_dead_beef_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 4.0,
            -f64::from_bits(1),
            f64::MAX,
            f64::MIN,
            9.3e18,
            0.1,
            1.0 / 3.0,
            12345.67,
        ];
        // Every special in every field, among short decimals: decimal mode with patches.
        for (i, &x) in specials.iter().enumerate() {
            let samples: Vec<_> = (0..40)
                .map(|t| s(t * 20_000 + 1, (t % 7) as f64 * 0.25))
                .collect();
            let mut records = compute(&samples, MIN);
            for (j, r) in records.iter_mut().enumerate() {
                let y = specials[(i + j) % specials.len()];
                match j % 7 {
                    0 => r.first.value = x,
                    1 => r.last.value = x,
                    2 => r.min = x,
                    3 => r.max = y,
                    4 => r.sum = x,
                    5 => r.reset_correction = y,
                    _ => (r.min, r.max, r.sum) = (x, y, x),
                }
            }
            round_trip(&records);
        }
        // Nothing but specials: XOR mode.
        let records: Vec<_> = (0..specials.len())
            .map(|i| {
                let v = |k: usize| specials[(i + k) % specials.len()];
                let mut r = compute(&[s(i as i64 * MIN, 1.0)], MIN)[0];
                (r.first.value, r.last.value, r.min, r.max) = (v(0), v(1), v(2), v(3));
                (r.sum, r.reset_correction) = (v(4), v(5));
                r
            })
            .collect();
        round_trip(&records);
        // Extreme timestamps: windows and samples at both ends of i64.
        let at = |end: i64, first: i64, last: i64| RollupRecord {
            window_end_ms: end,
            count: u64::MAX,
            sum: 1.0,
            min: -0.0,
            max: f64::NAN,
            first: s(first, 1.0),
            last: s(last, 2.0),
            reset_correction: 0.0,
            resets: u64::MAX,
            changes: u64::MAX,
        };
        round_trip(&[
            at(i64::MIN, i64::MIN, i64::MIN),
            at(i64::MAX, i64::MIN, i64::MAX),
        ]);
        round_trip(&[
            at(i64::MIN + 1, i64::MIN, i64::MIN),
            at(0, -5, 0),
            at(i64::MAX, i64::MAX, i64::MAX),
        ]);
        round_trip(&[at(i64::MAX, i64::MIN, i64::MIN)]);
        round_trip(&[]);
    }

    /// What a single-record encoding holds (see the module doc); `craft` writes it.
    struct Craft {
        end: i64,
        first_off: u64,
        span: u64,
        count_minus_1: u64,
        /// Candidate index of the first timestamp column (2 candidates).
        predictor: u64,
        min_src: u64,
        /// Bits of the XOR value columns instead of the decimal ones.
        xor: Option<(u64, u32)>,
        /// Bits after the last column.
        tail: (u64, u32),
    }

    const CRAFT: Craft = Craft {
        end: 0,
        first_off: 0,
        span: 0,
        count_minus_1: 0,
        predictor: 0,
        min_src: SRC_NEAR,
        xor: None,
        tail: (0, 0),
    };

    fn craft(c: &Craft) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION, 1, 1];
        put_varint(&mut out, c.end);
        let mut w = BitWriter::default();
        let raw = |w: &mut BitWriter, ix: u64, v: u64| {
            w.put(ix, 2);
            put_small(w, v);
        };
        raw(&mut w, c.predictor, c.first_off);
        raw(&mut w, 0, c.span);
        raw(&mut w, 0, c.count_minus_1);
        raw(&mut w, 0, 0); // changes
        raw(&mut w, 0, 0); // resets
        put_packed(&mut w, &[c.min_src]);
        put_packed(&mut w, &[SRC_NEAR]);
        match c.xor {
            Some((bits, n)) => {
                w.put(MODE_XOR, 1);
                w.put(bits, n);
            }
            None => {
                w.put(MODE_DECIMAL, 1);
                w.put(1, 4);
                for k in [15, 0] {
                    raw(&mut w, 0, zigzag(k)); // last = 15 / 10^1, first = last
                    put_small(&mut w, 0); // no patches
                }
                for _ in 0..2 {
                    w.put(0, 2); // no explicit min or max
                    put_small(&mut w, 0);
                }
                for _ in 0..2 {
                    raw(&mut w, 0, 0); // sum = 1.5, reset_correction = 0
                    put_small(&mut w, 0);
                }
            }
        }
        w.put(c.tail.0, c.tail.1);
        out.extend_from_slice(&w.finish());
        out
    }

    #[test]
    fn decode_refuses_malformed_input() {
        let good = decode(&craft(&CRAFT)).expect("the crafted record is valid");
        assert_eq!(good, compute(&[s(0, 1.5)], MIN));
        assert_eq!(craft(&CRAFT), encoded(&good));
        assert!(corrupt(&[]));
        assert!(corrupt(&[1, 0]), "version 1");
        assert!(corrupt(&[3, 0]), "unknown version");
        assert!(corrupt(&[FORMAT_VERSION, 0, 0]), "trailing byte");
        assert!(corrupt(&[
            FORMAT_VERSION,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x7f
        ]));
        let bytes = craft(&CRAFT);
        for len in 0..bytes.len() {
            assert!(corrupt(&bytes[..len]), "truncated to {len}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(corrupt(&extra), "trailing byte");
        let mut unit = bytes.clone();
        unit[2] = 0;
        assert!(corrupt(&unit), "zero unit");
        let bad = |c: Craft, why: &str| assert!(corrupt(&craft(&c)), "{why}");
        bad(
            Craft {
                tail: (1, 1),
                ..CRAFT
            },
            "non-zero padding",
        );
        bad(
            Craft {
                tail: (0, 8),
                ..CRAFT
            },
            "a trailing zero byte",
        );
        bad(
            Craft {
                predictor: 2,
                ..CRAFT
            },
            "unknown predictor",
        );
        bad(
            Craft {
                min_src: 3,
                ..CRAFT
            },
            "unknown min source",
        );
        bad(
            Craft {
                count_minus_1: u64::MAX,
                ..CRAFT
            },
            "count 0",
        );
        bad(
            Craft { span: 1, ..CRAFT },
            "last sample after the window end",
        );
        bad(
            Craft {
                end: i64::MIN,
                first_off: 1,
                ..CRAFT
            },
            "first sample before i64::MIN",
        );
        let ok = Craft {
            end: i64::MAX,
            first_off: u64::MAX,
            span: u64::MAX,
            ..CRAFT
        };
        assert!(decode(&craft(&ok)).is_ok(), "the widest offsets");
        // XOR: `10` reuses a window there is none of; `11` with 63 leading zeros and 2 bits.
        bad(
            Craft {
                xor: Some((0b01 << 2, 4)),
                ..CRAFT
            },
            "XOR without a window",
        );
        bad(
            Craft {
                xor: Some((0b11 << 2 | 63 << 4 | 1 << 10, 16)),
                ..CRAFT
            },
            "XOR past 64 bits",
        );
        // A record count the bytes cannot hold is refused before anything is allocated.
        let mut many = vec![FORMAT_VERSION];
        put_uvarint(&mut many, 1 << 40);
        many.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        assert!(corrupt(&many), "record count");
    }

    #[test]
    fn the_record_count_bound_admits_every_encoding() {
        // The most compressible series there is: identical records in consecutive windows.
        for n in [1, 2, 15, 16, 17, 100, 1000, 10_000, 100_000] {
            let records: Vec<_> = (0..n)
                .map(|i| compute(&[s(i * MIN, 1.0)], MIN)[0])
                .collect();
            let buf = round_trip(&records);
            let bits = (buf.len() - 8) * 8;
            assert!(
                n as usize - 1 <= bits * GROUP / ALWAYS_PACKED_COLUMNS,
                "{n} records in {bits} bits"
            );
        }
    }

    // ---- properties ----

    /// What a generated series looks like: counters (integer steps, resets) or gauges.
    #[derive(Clone, Copy, Debug)]
    enum Shape {
        Counter,
        Gauge,
    }

    /// A sorted series with gaps from a few ms to several windows, occasional stale markers,
    /// and, for gauges, occasional NaN and -0.0.
    fn series(w: i64) -> impl Strategy<Value = (Shape, Vec<Sample>)> {
        let shape = prop_oneof![Just(Shape::Counter), Just(Shape::Gauge)];
        let steps = prop::collection::vec(
            (
                prop_oneof![8 => 1..=w / 3, 2 => w / 3..=3 * w],
                0u32..100,
                -1000.0..1000.0f64,
            ),
            0..60,
        );
        (shape, -20 * w..20 * w, steps).prop_map(|(shape, start, steps)| {
            let mut ts = start;
            let mut counter = 0.0;
            let mut out = Vec::with_capacity(steps.len());
            for (gap, dice, x) in steps {
                ts += gap;
                let value = match (shape, dice) {
                    (_, 0..=2) => f64::from_bits(STALE_NAN_BITS),
                    (Shape::Counter, 3..=7) => {
                        counter = f64::from(dice % 4);
                        counter
                    }
                    (Shape::Counter, _) => {
                        counter += f64::from(dice);
                        counter
                    }
                    (Shape::Gauge, 3) => f64::NAN,
                    (Shape::Gauge, 4) => -0.0,
                    (Shape::Gauge, 5..=30) => x.round(),
                    (Shape::Gauge, _) => x,
                };
                out.push(s(ts, value));
            }
            (shape, out)
        })
    }

    const FUNCS: [RangeFn; 12] = [
        RangeFn::Rate,
        RangeFn::Increase,
        RangeFn::Delta,
        RangeFn::Changes,
        RangeFn::Resets,
        RangeFn::AvgOverTime,
        RangeFn::MinOverTime,
        RangeFn::MaxOverTime,
        RangeFn::SumOverTime,
        RangeFn::CountOverTime,
        RangeFn::LastOverTime,
        RangeFn::PresentOverTime,
    ];

    /// Equal, both NaN, or within 1e-9 relative to `scale` (at least the larger magnitude).
    fn close(a: Option<f64>, b: Option<f64>, scale: f64) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a == b
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= 1e-9 * scale.max(a.abs()).max(b.abs())
            }
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The contract: over aligned ranges, rollups answer what Prometheus' range functions
        /// (`rangefn::eval`) answer over the raw samples.
        #[test]
        fn rollups_equal_raw_evaluation(
            w in prop_oneof![Just(10i64), Just(1000), Just(MIN)],
            (shape, samples) in series(MIN).no_shrink(),
            t_windows in -25i64..25,
            range_windows in 1i64..=10,
            func_ix in 0..FUNCS.len(),
        ) {
            let func = FUNCS[func_ix];
            let mut samples: Vec<_> = samples.iter().map(|x| s(x.ts_ms * w / MIN, x.value)).collect();
            samples.dedup_by_key(|x| x.ts_ms);
            let (t, range) = (t_windows * w, range_windows * w);
            prop_assert!(exact_for(func, t, range, w));
            let raw: Vec<_> = samples
                .iter()
                .filter(|x| x.ts_ms > t - range && x.ts_ms <= t && !is_stale_marker(x.value))
                .copied()
                .collect();
            let want = crate::rangefn::eval(func, &raw, t, range);
            let got = eval(func, &in_range(&compute(&samples, w), t, range), t, range);
            // Integer counters sum exactly; gauge sums may round differently (see module doc):
            // bound the error by the magnitudes involved (rate divides by range seconds).
            let scale = match shape {
                Shape::Counter => 0.0,
                Shape::Gauge => raw.iter().map(|x| x.value.abs()).filter(|v| v.is_finite()).sum::<f64>() * 1000.0,
            };
            prop_assert!(close(got, want, scale), "{func:?} t={t} range={range}: rollup {got:?} vs raw {want:?}");
        }

        #[test]
        fn unaligned_is_never_exact(
            w in prop_oneof![Just(MIN), Just(3_600_000i64)],
            t in any::<i64>(),
            range in 1i64..100_000_000,
            func_ix in 0..FUNCS.len(),
        ) {
            let func = FUNCS[func_ix];
            let aligned = t.rem_euclid(w) == 0 && range % w == 0;
            prop_assert_eq!(exact_for(func, t, range, w), aligned);
            prop_assert!(!exact_for(func, t - t.rem_euclid(w) + 1, w, w));
            prop_assert!(!exact_for(func, t - t.rem_euclid(w), w + 1 + range % (w - 1), w));
        }

        #[test]
        fn encode_decode_round_trips_computed_records(
            w in prop_oneof![Just(10i64), Just(MIN)],
            (_, samples) in series(MIN),
        ) {
            round_trip(&compute(&samples, w));
        }

        #[test]
        fn encode_decode_round_trips_arbitrary_records(
            records in prop_oneof![
                arbitrary_records(short_decimals_mostly().boxed()),
                arbitrary_records(any::<u64>().prop_map(f64::from_bits).boxed()),
            ],
        ) {
            round_trip(&records);
        }
    }

    /// Floats as rollups hold them: mostly short decimals, and anything else.
    fn short_decimals_mostly() -> impl Strategy<Value = f64> {
        prop_oneof![
            6 => (-10_000_000_000i64..10_000_000_000).prop_map(|k| k as f64 / 100.0),
            1 => any::<i32>().prop_map(f64::from),
            1 => any::<u64>().prop_map(f64::from_bits),
            2 => prop::sample::select(vec![
                0.0,
                -0.0,
                f64::NAN,
                -f64::NAN,
                f64::from_bits(STALE_NAN_BITS),
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MIN_POSITIVE / 3.0,
                f64::from_bits(1),
                f64::MAX,
                f64::MIN,
                0.1 + 0.2,
            ]),
        ]
    }

    /// Records with any window spacing, any timestamps in `(-inf, window_end]`, any counts and
    /// values from `value`; min and max often equal first or last, as when computed.
    fn arbitrary_records(value: BoxedStrategy<f64>) -> impl Strategy<Value = Vec<RollupRecord>> {
        let gap = prop_oneof![4 => Just(MIN as u64), 2 => 1u64..200_000, 1 => 1u64..=u64::MAX];
        let offset = prop_oneof![3 => 0u64..60_000, 1 => any::<u64>()];
        let int = prop_oneof![3 => 0u64..10, 1 => any::<u64>()];
        let record = (
            gap,
            (offset.clone(), offset),
            (int.clone(), int.clone(), int),
            prop::array::uniform6(value),
            0u8..9,
        );
        let start = prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX - 1),
            any::<i64>(),
            -(1i64 << 45)..1 << 45
        ];
        (start, prop::collection::vec(record, 0..40)).prop_map(|(start, raw)| {
            let mut out: Vec<RollupRecord> = Vec::new();
            let mut end = start;
            for (gap, (off, span), (count, resets, changes), v, source) in raw {
                if !out.is_empty() {
                    match end.checked_add_unsigned(gap) {
                        Some(e) => end = e,
                        None => break,
                    }
                }
                let last = s(end.saturating_sub_unsigned(off), v[1]);
                let first = s(last.ts_ms.saturating_sub_unsigned(span), v[0]);
                out.push(RollupRecord {
                    window_end_ms: end,
                    count: count.max(1),
                    sum: v[4],
                    min: [first.value, last.value, v[2]][usize::from(source % 3)],
                    max: [last.value, first.value, v[3]][usize::from(source / 3)],
                    first,
                    last,
                    reset_correction: v[5],
                    resets,
                    changes,
                });
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn decode_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            n in 1u64..300,
            unit in 1u64..1 << 40,
            end in any::<i64>(),
        ) {
            let _ = decode(&bytes);
            // Past a valid header, into the bit stream.
            let mut v = vec![FORMAT_VERSION];
            put_uvarint(&mut v, n);
            put_uvarint(&mut v, unit);
            put_varint(&mut v, end);
            v.extend_from_slice(&bytes);
            if let Ok(records) = decode(&v) {
                prop_assert_eq!(records.len() as u64, n);
            }
        }

        #[test]
        fn decode_never_panics_on_damaged_encodings(
            records in prop_oneof![
                series(MIN).prop_map(|(_, samples)| compute(&samples, MIN)),
                arbitrary_records(short_decimals_mostly().boxed()),
                arbitrary_records(any::<u64>().prop_map(f64::from_bits).boxed()),
            ],
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
        ) {
            let mut buf = encoded(&records);
            for (ix, x, how) in damage {
                if buf.is_empty() {
                    break;
                }
                let i = ix.index(buf.len());
                match how {
                    0 => buf[i] ^= 1 << (x % 8),
                    1 => buf[i] ^= x,
                    2 => buf.truncate(i),
                    _ => buf.insert(i, x),
                }
            }
            let _ = decode(&buf);
        }
    }
}
