//! Counting what happened and the final lines: one for people, one `RESULT key=value ...`
//! line for scripts (keys never contain spaces; values are numbers or `a:b,c:d` lists).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the workers counted. Merged at the end; no locks while running.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Samples in requests answered 2xx.
    pub samples_ok: u64,
    /// Samples in requests given up on (a 4xx other than 429, or retries exhausted).
    pub samples_failed: u64,
    /// Requests answered 2xx (after any retries).
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// HTTP attempts, first tries and retries.
    pub attempts: u64,
    pub retries: u64,
    /// Compressed body bytes of all attempts.
    pub bytes_sent: u64,
    /// Non-2xx answers by status code, plus `conn` (connect or IO error) and `timeout`.
    pub errors: BTreeMap<String, u64>,
    /// Round-trip time of every attempt, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        self.samples_ok += other.samples_ok;
        self.samples_failed += other.samples_failed;
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        self.attempts += other.attempts;
        self.retries += other.retries;
        self.bytes_sent += other.bytes_sent;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// `429:3,503:1`, or `none`.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        parts.join(",")
    }
}

/// Nearest-rank percentile `p` (0..=100) of sorted values; 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// [`percentile`] of sorted microseconds, in milliseconds; NaN when there are none.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    f64::from(percentile(sorted_us, p)) / 1000.0
}

/// The human line and the `RESULT` line of a run that took `secs` seconds.
pub fn final_lines(stats: &mut Stats, secs: f64) -> (String, String) {
    stats.latencies_us.sort_unstable();
    let ms = |p: f64| percentile(&stats.latencies_us, p) as f64 / 1000.0;
    let (p50, p90, p99) = (ms(50.0), ms(90.0), ms(99.0));
    let max = stats.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0;
    let rate = if secs > 0.0 {
        stats.samples_ok as f64 / secs
    } else {
        0.0
    };
    let mut human = format!(
        "strata-bench: {} samples acknowledged in {secs:.2} s = {rate:.0} samples/s; \
         {} requests ok, {} failed ({} samples), {} retries; errors: {}; \
         latency p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        stats.samples_ok,
        stats.requests_ok,
        stats.requests_failed,
        stats.samples_failed,
        stats.retries,
        stats.errors_text(),
    );
    if stats.attempts > 0 {
        let _ = write!(
            human,
            "; {:.0} bytes/request compressed",
            stats.bytes_sent as f64 / stats.attempts as f64
        );
    }
    let machine = format!(
        "RESULT samples={} secs={secs:.3} samples_per_s={rate:.0} requests={} failed_requests={} \
         failed_samples={} retries={} p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} \
         max_ms={max:.2} bytes_sent={} errors={}",
        stats.samples_ok,
        stats.requests_ok,
        stats.requests_failed,
        stats.samples_failed,
        stats.retries,
        stats.bytes_sent,
        stats.errors_text(),
    );
    (human, machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 90.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        let us = [1_000, 2_000, 3_000, 4_000, 50_000];
        assert_eq!(percentile_ms(&us, 50.0), 3.0);
        assert_eq!(percentile_ms(&us, 99.0), 50.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn the_result_line_is_one_line_of_key_values() {
        let mut s = Stats {
            samples_ok: 4_000,
            requests_ok: 2,
            attempts: 3,
            retries: 1,
            latencies_us: vec![2_000, 1_000, 3_000],
            ..Stats::default()
        };
        s.error("503");
        s.error("429");
        s.error("503");
        let (human, machine) = final_lines(&mut s, 2.0);
        assert!(human.contains("2000 samples/s"), "{human}");
        assert!(machine.starts_with("RESULT samples=4000 secs=2.000 samples_per_s=2000 "));
        assert!(machine.contains(" p50_ms=2.00 ") && machine.ends_with(" errors=429:1,503:2"));
        assert!(
            machine
                .split(' ')
                .skip(1)
                .all(|kv| kv.split_once('=').is_some())
        );
    }
}
