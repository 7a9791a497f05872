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
//! ## Encoding (version 1) of one series' records, sorted by `window_end_ms`
//! ```text
//! u8      version = 1
//! uvarint record count N
//! N > 0:
//!   uvarint unit: the gcd of the gaps between consecutive window ends (1 if N = 1), so that
//!           consecutive windows cost one byte whatever the tier
//!   varint  window_end_ms of the first record (zigzag)
//! N times:
//!   u8      flags: bit 0 SINGLE, bit 1 HAS_RESETS (other bits must be 0)
//!   uvarint (not for the first record) gap to the previous window end / unit (>= 1)
//!   uvarint window_end_ms - first.ts_ms
//!   SINGLE (count 1, last == first, sum == min == max == first.value bitwise, no resets,
//!           no changes):
//!     f64   first.value
//!   otherwise:
//!     uvarint count (>= 1)
//!     uvarint last.ts_ms - first.ts_ms (and last.ts_ms <= window_end_ms)
//!     f64 × 5 first.value, last.value, sum, min, max
//!     uvarint changes
//!     HAS_RESETS: uvarint resets, f64 reset_correction
//!     (without it: resets = 0, reset_correction = +0.0)
//! ```
//! Varints are LEB128 (at most 10 bytes, no overlong final byte); f64 are little-endian IEEE-754
//! bits, so values round-trip bit for bit (NaN payloads, -0.0). [`decode`] checks every bound and
//! returns [`Error::Corrupt`] instead of panicking.

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
        | RangeFn::QuantileOverTime(_) => None,
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

const FORMAT_VERSION: u8 = 1;
const FLAG_SINGLE: u8 = 1;
const FLAG_HAS_RESETS: u8 = 2;
const WHAT: &str = "rollup records";

/// Whether a record is fully described by its window, first sample and nothing else.
fn is_single(r: &RollupRecord) -> bool {
    let v = r.first.value.to_bits();
    r.count == 1
        && r.last.bit_eq(&r.first)
        && r.sum.to_bits() == v
        && r.min.to_bits() == v
        && r.max.to_bits() == v
        && r.reset_correction.to_bits() == 0
        && r.resets == 0
        && r.changes == 0
}

/// Appends the compact encoding (see the module doc) of one series' records, sorted by window.
pub fn encode(records: &[RollupRecord], out: &mut Vec<u8>) {
    debug_assert!(
        records
            .windows(2)
            .all(|p| p[0].window_end_ms < p[1].window_end_ms),
        "rollup::encode needs records sorted by window"
    );
    out.push(FORMAT_VERSION);
    put_uvarint(out, records.len() as u64);
    let Some(head) = records.first() else {
        return;
    };
    // Gaps as u64: exact for sorted i64s even when the span exceeds i64::MAX.
    let gap =
        |p: &[RollupRecord]| (p[1].window_end_ms as u64).wrapping_sub(p[0].window_end_ms as u64);
    let unit = records.windows(2).map(gap).fold(0, gcd).max(1);
    put_uvarint(out, unit);
    put_varint(out, head.window_end_ms);
    for (i, r) in records.iter().enumerate() {
        let has_resets = r.resets != 0 || r.reset_correction.to_bits() != 0;
        let flags = if is_single(r) {
            FLAG_SINGLE
        } else if has_resets {
            FLAG_HAS_RESETS
        } else {
            0
        };
        out.push(flags);
        if i > 0 {
            put_uvarint(out, gap(&records[i - 1..=i]) / unit);
        }
        put_uvarint(out, r.window_end_ms.wrapping_sub(r.first.ts_ms) as u64);
        if flags & FLAG_SINGLE != 0 {
            put_f64(out, r.first.value);
            continue;
        }
        put_uvarint(out, r.count);
        put_uvarint(out, r.last.ts_ms.wrapping_sub(r.first.ts_ms) as u64);
        for v in [r.first.value, r.last.value, r.sum, r.min, r.max] {
            put_f64(out, v);
        }
        put_uvarint(out, r.changes);
        if has_resets {
            put_uvarint(out, r.resets);
            put_f64(out, r.reset_correction);
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
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
    // Every record takes at least 10 bytes (flags, a varint, an f64): bounds the allocation.
    if n > (bytes.len() / 10) as u64 {
        return Err(Error::corrupt(
            WHAT,
            format!(
                "record count {n} exceeds what {} bytes can hold",
                bytes.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    if n == 0 {
        return rd.finish(out);
    }
    let unit = rd.uvarint()?;
    if unit == 0 {
        return Err(Error::corrupt(WHAT, "window unit is zero"));
    }
    let mut window_end_ms = rd.varint()?;
    for i in 0..n {
        let bad = |reason: &str| Error::corrupt(WHAT, format!("record {i}: {reason}"));
        let flags = rd.u8()?;
        if flags & !(FLAG_SINGLE | FLAG_HAS_RESETS) != 0 || flags == FLAG_SINGLE | FLAG_HAS_RESETS {
            return Err(bad(&format!("unknown flags {flags:#04x}")));
        }
        if i > 0 {
            let units = rd.uvarint()?;
            if units == 0 {
                return Err(bad("window ends are not strictly increasing"));
            }
            window_end_ms = units
                .checked_mul(unit)
                .and_then(|gap| window_end_ms.checked_add_unsigned(gap))
                .ok_or_else(|| bad("window end overflows"))?;
        }
        let first_ts = i64::try_from(rd.uvarint()?)
            .ok()
            .and_then(|off| window_end_ms.checked_sub(off))
            .ok_or_else(|| bad("first timestamp out of range"))?;
        if flags & FLAG_SINGLE != 0 {
            let first = Sample::new(first_ts, rd.f64()?);
            out.push(RollupRecord {
                window_end_ms,
                count: 1,
                sum: first.value,
                min: first.value,
                max: first.value,
                first,
                last: first,
                reset_correction: 0.0,
                resets: 0,
                changes: 0,
            });
            continue;
        }
        let count = rd.uvarint()?;
        if count == 0 {
            return Err(bad("empty window"));
        }
        let last_ts = i64::try_from(rd.uvarint()?)
            .ok()
            .and_then(|off| first_ts.checked_add(off))
            .filter(|&ts| ts <= window_end_ms)
            .ok_or_else(|| bad("last timestamp out of range"))?;
        let [first_v, last_v, sum, min, max] =
            [rd.f64()?, rd.f64()?, rd.f64()?, rd.f64()?, rd.f64()?];
        let changes = rd.uvarint()?;
        let (resets, reset_correction) = if flags & FLAG_HAS_RESETS != 0 {
            (rd.uvarint()?, rd.f64()?)
        } else {
            (0, 0.0)
        };
        out.push(RollupRecord {
            window_end_ms,
            count,
            sum,
            min,
            max,
            first: Sample::new(first_ts, first_v),
            last: Sample::new(last_ts, last_v),
            reset_correction,
            resets,
            changes,
        });
    }
    rd.finish(out)
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// Bounds-checked cursor over encoded bytes.
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
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn f64(&mut self) -> Result<f64> {
        let end = self.pos.checked_add(8).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.truncated())?;
        let raw: [u8; 8] = self.bytes[self.pos..end]
            .try_into()
            .map_err(|_| self.truncated())?;
        self.pos = end;
        Ok(f64::from_bits(u64::from_le_bytes(raw)))
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

    #[test]
    fn encoding_is_compact_and_exact() {
        // One sample per window (1m tier at a 60 s scrape interval): 12 bytes per record
        // (flags, window gap, 2-byte offset of the sample, value) after a 6-byte header.
        let samples: Vec<_> = (0..10).map(|i| s(i * MIN - 5_000, i as f64)).collect();
        let records = compute(&samples, MIN);
        assert_eq!(records.len(), 10);
        let buf = round_trip(&records);
        assert_eq!(buf.len(), 6 + 11 + 9 * 12, "{buf:?}");
        // A -0.0 sums to +0.0, so it is not SINGLE, but still exact.
        let buf = round_trip(&compute(&[s(-3, -0.0)], MIN));
        assert_eq!(buf[4], 0, "flags");
        // Resets, NaN payloads and stale-looking bits survive.
        let mut r = compute(&[s(1, 5.0), s(2, 1.0), s(MIN + 1, f64::NAN)], MIN);
        r[1].min = f64::from_bits(STALE_NAN_BITS);
        r[1].reset_correction = -0.0;
        round_trip(&r);
        round_trip(&[]);
    }

    #[test]
    fn decode_refuses_malformed_input() {
        let mut good = Vec::new();
        encode(
            &compute(&[s(1, 5.0), s(2, 1.0), s(MIN + 1, 2.0)], MIN),
            &mut good,
        );
        let corrupt = |bytes: &[u8]| matches!(decode(bytes), Err(Error::Corrupt { .. }));
        assert!(corrupt(&[]));
        assert!(corrupt(&[2, 0]), "unknown version");
        assert!(corrupt(&[1, 0, 0]), "trailing byte");
        assert!(corrupt(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ]));
        for len in 0..good.len() {
            assert!(corrupt(&good[..len]), "truncated to {len}");
        }
        // Header: version, count 2, unit 60000 (3 bytes), first end 60000 (zigzag, 3 bytes).
        assert_eq!(good[8], FLAG_HAS_RESETS, "flags of the first record");
        let mut flags = good.clone();
        flags[8] = 0x80;
        assert!(corrupt(&flags), "unknown flag");
        flags[8] = FLAG_SINGLE | FLAG_HAS_RESETS;
        assert!(corrupt(&flags), "contradicting flags");
        let mut unit = good.clone();
        unit[2..5].copy_from_slice(&[0x80, 0x80, 0]);
        assert!(corrupt(&unit), "zero unit");
        // A second record whose window does not advance: flags, offset (3 bytes), value,
        // then the second record's flags and its gap in units.
        let mut twice = Vec::new();
        encode(&compute(&[s(1, 5.0), s(MIN + 1, 5.0)], MIN), &mut twice);
        assert_eq!((twice[20], twice[21]), (FLAG_SINGLE, 1));
        twice[21] = 0;
        assert!(corrupt(&twice), "repeated window");
        // A count of zero: header (1 + 1 + 1 + 3 bytes), flags, offset 59999 (3 bytes), count.
        let mut zero = Vec::new();
        encode(&compute(&[s(1, 5.0), s(2, 6.0)], MIN), &mut zero);
        assert_eq!(zero[10], 2, "count byte");
        zero[10] = 0;
        assert!(corrupt(&zero));
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
            raw in prop::collection::vec(
                (1i64..1 << 40, 0u64..1 << 20, 0i64..1 << 30, 0i64..1 << 30,
                 any::<[u64; 6]>(), any::<(u64, u64)>(), any::<bool>()),
                0..20),
            start in any::<i32>(),
        ) {
            let mut end = i64::from(start);
            let records: Vec<_> = raw.into_iter().map(|(gap, count, off, span, v, (resets, changes), single)| {
                end += gap;
                let f = v.map(f64::from_bits);
                let first = s(end - off - span, f[0]);
                if single {
                    return RollupRecord { window_end_ms: end, count: 1, sum: f[0], min: f[0], max: f[0], first, last: first, reset_correction: 0.0, resets: 0, changes: 0 };
                }
                RollupRecord {
                    window_end_ms: end, count: count + 1, sum: f[2], min: f[3], max: f[4],
                    first, last: s(end - off, f[1]), reset_correction: f[5], resets, changes,
                }
            }).collect();
            round_trip(&records);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let mut v = vec![FORMAT_VERSION];
            v.extend_from_slice(&bytes);
            let _ = decode(&v);
        }

        #[test]
        fn decode_never_panics_on_damaged_encodings(
            (_, samples) in series(MIN),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut buf = Vec::new();
            encode(&compute(&samples, MIN), &mut buf);
            for (ix, x) in flips {
                let i = ix.index(buf.len());
                buf[i] ^= x;
            }
            let _ = decode(&buf);
        }
    }
}
