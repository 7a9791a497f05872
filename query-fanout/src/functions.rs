//! Element-wise PromQL functions and operators evaluated at the router, as in Prometheus 3.x
//! (`promql/functions.go`, `promql/engine.go`, `promql/quantile.go`). Range functions live in
//! `strata_shard::rangefn`, since the shards evaluate them.

use std::collections::BTreeMap;

use regex::Regex;
use strata_shard::series::{Label, Labels, METRIC_NAME_LABEL};

use crate::eval::Series;

/// An element-wise math function by PromQL name.
pub fn math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

/// `round(x, to_nearest)`: half up to the nearest multiple (Prometheus' `funcRound`).
pub fn round(x: f64, to_nearest: f64) -> f64 {
    let inverse = 1.0 / to_nearest;
    (x * inverse + 0.5).floor() / inverse
}

/// A date function by PromQL name, of a Unix time in seconds (UTC).
pub fn date(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "year" => |t| civil(t).map_or(f64::NAN, |c| c.year as f64),
        "month" => |t| civil(t).map_or(f64::NAN, |c| c.month as f64),
        "day_of_month" => |t| civil(t).map_or(f64::NAN, |c| c.day as f64),
        "day_of_year" => |t| civil(t).map_or(f64::NAN, |c| c.day_of_year as f64),
        "day_of_week" => |t| civil(t).map_or(f64::NAN, |c| c.weekday as f64),
        "days_in_month" => |t| civil(t).map_or(f64::NAN, |c| days_in_month(c.year, c.month) as f64),
        "hour" => |t| civil(t).map_or(f64::NAN, |c| c.hour as f64),
        "minute" => |t| civil(t).map_or(f64::NAN, |c| c.minute as f64),
        _ => return None,
    })
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    day_of_year: u32,
    /// 0 = Sunday.
    weekday: u32,
    hour: u32,
    minute: u32,
}

/// The UTC calendar fields of Unix time `t` (seconds; the fraction is dropped, as Go's
/// `time.Unix(int64(t), 0)` does); `None` for NaN or out-of-range times.
fn civil(t: f64) -> Option<Civil> {
    if !t.is_finite() || t.abs() > 1e15 {
        return None;
    }
    let secs = t as i64;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = is_leap(year);
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year = cumulative[(month - 1) as usize] + day + u32::from(leap && month > 2);
    Some(Civil {
        year,
        month,
        day,
        day_of_year,
        weekday: (days + 4).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
        hour: (of_day / 3600) as u32,
        minute: (of_day % 3600 / 60) as u32,
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

pub fn is_set_operator(op: &str) -> bool {
    matches!(op, "and" | "or" | "unless")
}

/// Prometheus' `vectorElemBinop`: the value and, for comparisons, whether it holds.
pub fn binop(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// A label name a function may write; Prometheus 3 accepts any non-empty UTF-8 name.
pub fn check_label_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("invalid label name \"\": a label name must not be empty".into())
    } else {
        Ok(())
    }
}

/// `labels` with `name` set to `value`, or removed if `value` is empty.
pub fn with_label(labels: &Labels, name: &str, value: &str) -> Labels {
    let mut out: Vec<Label> = labels.iter().filter(|l| l.name != name).cloned().collect();
    if !value.is_empty() {
        out.push(Label::new(name, value));
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Labels::from_sorted_unchecked(out)
}

/// A float as Go's `strconv.FormatFloat(f, 'f', -1, 64)` prints it (`count_values`).
pub fn format_value(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{x}")
    }
}

/// `label_replace(v, dst, replacement, src, regex)`.
pub struct LabelReplace {
    dst: String,
    replacement: String,
    src: String,
    regex: Regex,
}

impl LabelReplace {
    pub fn new(
        dst: &str,
        replacement: &str,
        src: &str,
        regex: &str,
    ) -> Result<LabelReplace, String> {
        check_label_name(dst)?;
        let regex = Regex::new(&format!("^(?s:{regex})$")).map_err(|e| {
            format!("invalid regular expression in label_replace(): {regex:?}: {e}")
        })?;
        Ok(LabelReplace {
            dst: dst.into(),
            replacement: replacement.into(),
            src: src.into(),
            regex,
        })
    }

    pub fn apply(&self, labels: &Labels) -> Labels {
        let value = labels.get(&self.src).unwrap_or("");
        match self.regex.captures(value) {
            None => labels.clone(),
            Some(caps) => {
                let mut out = String::new();
                caps.expand(&self.replacement, &mut out);
                with_label(labels, &self.dst, &out)
            }
        }
    }
}

/// `label_join(v, dst, separator, src...)`.
pub fn label_join(labels: &Labels, dst: &str, separator: &str, sources: &[String]) -> Labels {
    let joined: Vec<&str> = sources
        .iter()
        .map(|s| labels.get(s).unwrap_or(""))
        .collect();
    with_label(labels, dst, &joined.join(separator))
}

/// `histogram_quantile(φ, buckets)` over classic `le` buckets, per instant, grouped by the
/// labels other than `le` (and `__name__`, which the output drops). Returns the series and any
/// warnings.
#[allow(clippy::type_complexity)]
pub fn histogram_quantile(
    phi: &[f64],
    input: &[Series],
) -> (Vec<(Labels, Vec<Option<f64>>)>, Vec<String>) {
    let n = phi.len();
    let mut groups: BTreeMap<Labels, Vec<Vec<(f64, f64)>>> = BTreeMap::new();
    let mut warnings = Vec::new();
    for s in input {
        let Some(le) = s.labels.get("le") else {
            continue;
        };
        let Some(upper) = parse_le(le) else {
            warnings.push(format!("bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {:?}", s.labels.metric_name().unwrap_or("")));
            continue;
        };
        let key = strata_shard::partial::filter_labels(&s.labels, |name| {
            name != "le" && name != METRIC_NAME_LABEL
        });
        let buckets = groups.entry(key).or_insert_with(|| vec![Vec::new(); n]);
        for (i, p) in s.points.iter().enumerate() {
            if let Some(count) = p {
                buckets[i].push((upper, *count));
            }
        }
    }
    let out = groups
        .into_iter()
        .map(|(key, mut per_instant)| {
            let points = per_instant
                .iter_mut()
                .enumerate()
                .map(|(i, buckets)| (!buckets.is_empty()).then(|| bucket_quantile(phi[i], buckets)))
                .collect();
            (key, points)
        })
        .collect();
    (out, warnings)
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Prometheus 3.x `bucketQuantile` for (upper bound, cumulative count) buckets.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(upper, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    // Force monotonic counts, ignoring float noise (Prometheus' tolerance 1e-12).
    let mut prev = merged[0].1;
    for b in merged.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) || curr < prev {
            b.1 = prev;
            continue;
        }
        prev = curr;
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Go's `almost.Equal`.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a == b {
        return true;
    }
    let min_normal = f64::MIN_POSITIVE;
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < epsilon * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        // 2024-02-29T13:45:00Z, a Thursday.
        let t = 1_709_214_300.0;
        let get = |name| date(name).unwrap()(t);
        assert_eq!(
            [
                get("year"),
                get("month"),
                get("day_of_month"),
                get("day_of_year")
            ],
            [2024.0, 2.0, 29.0, 60.0]
        );
        assert_eq!(
            [
                get("day_of_week"),
                get("hour"),
                get("minute"),
                get("days_in_month")
            ],
            [4.0, 13.0, 45.0, 29.0]
        );
        // Before 1970: 1969-12-31T23:59:59Z, a Wednesday.
        assert_eq!(date("day_of_week").unwrap()(-1.0), 3.0);
        assert_eq!(date("year").unwrap()(-1.0), 1969.0);
        assert!(date("year").unwrap()(f64::NAN).is_nan());
    }

    #[test]
    fn bucket_quantile_interpolates_like_prometheus() {
        // Prometheus histograms.test: buckets 0.1:50, 0.2:70, +Inf:100 (cumulative).
        let mut b = vec![(0.1, 50.0), (0.2, 70.0), (f64::INFINITY, 100.0)];
        assert!((bucket_quantile(0.5, &mut b.clone()) - 0.1).abs() < 1e-12);
        assert!((bucket_quantile(0.6, &mut b.clone()) - 0.15).abs() < 1e-12);
        // The rank falls in the +Inf bucket: the highest finite bound.
        assert_eq!(bucket_quantile(0.9, &mut b.clone()), 0.2);
        assert_eq!(bucket_quantile(-1.0, &mut b.clone()), f64::NEG_INFINITY);
        // No +Inf bucket: NaN.
        b.pop();
        assert!(bucket_quantile(0.5, &mut b).is_nan());
    }

    #[test]
    fn label_replace_expands_captures_and_deletes_empty_results() {
        let labels = Labels::from_pairs(&[("__name__", "up"), ("src", "a-b")]).unwrap();
        // As in Go, `$1_` would name a group "1_"; braces end the name.
        let r = LabelReplace::new("dst", "${1}_$2", "src", "(.*)-(.*)").unwrap();
        assert_eq!(r.apply(&labels).get("dst"), Some("a_b"));
        let gone = LabelReplace::new("src", "", "src", ".*").unwrap();
        assert_eq!(gone.apply(&labels).get("src"), None);
        let unmatched = LabelReplace::new("dst", "x", "src", "zzz").unwrap();
        assert_eq!(unmatched.apply(&labels), labels);
        assert!(LabelReplace::new("dst", "x", "src", "(").is_err());
    }
}
