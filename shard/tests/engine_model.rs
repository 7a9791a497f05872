//! Model-based test with crashes (CONVENTIONS.md 10).
//!
//! A reference `BTreeMap<(series, ts), value>` and the engine on a simulated disk receive the same
//! random operations: append, query, seal, compact, retention pass, checkpoint, clean reboot and
//! crash (which drops every unsynced write). After every step the engine must agree with the model:
//! the same per-sample outcomes, the same samples (bit for bit), and rollups equal to rollups
//! computed from the model's raw samples. After a crash it must equal the model as of the last
//! publishing operation (S4): synced data is always present, nothing else is invented.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use strata_shard::engine::{Engine, EngineConfig};
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::query::{PartialQuery, TimeGrid};
use strata_shard::rollup::window_end;
use strata_shard::rollup::{self, Tier};
use strata_shard::sim_fs::SimFs;
use strata_shard::{Labels, STALE_NAN_BITS, Sample, SeriesKey, Tenant};

const HOUR: i64 = 3_600_000;
const BLOCK: i64 = HOUR;
const RAW_RETENTION: i64 = 24 * HOUR;
const SERIES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Append {
        series: usize,
        points: Vec<(i64, u64)>,
    },
    Query,
    Seal,
    Compact,
    Retention {
        now_ms: i64,
    },
    Checkpoint,
    Reboot,
    Crash,
}

fn value_bits() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..5).prop_map(|v| (v as f64).to_bits()),
        Just(f64::NAN.to_bits()),
        Just(STALE_NAN_BITS),
        Just((-0.0f64).to_bits()),
        any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Timestamps over ~3 days, clustered so that duplicates and conflicts are common.
    let ts = prop_oneof![0i64..72 * HOUR, (0i64..400).prop_map(|i| i * 30_000)];
    prop_oneof![
        10 => (0..SERIES, prop::collection::vec((ts, value_bits()), 1..20))
            .prop_map(|(series, points)| Op::Append { series, points }),
        2 => Just(Op::Query),
        2 => Just(Op::Seal),
        1 => Just(Op::Compact),
        1 => (24 * HOUR..100 * HOUR).prop_map(|now_ms| Op::Retention { now_ms }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reboot),
        2 => Just(Op::Crash),
    ]
}

#[derive(Clone, Debug, Default)]
struct Model {
    samples: BTreeMap<(usize, i64), u64>,
    max_ts: BTreeMap<usize, i64>,
    raw_dropped_until: Option<i64>,
}

impl Model {
    /// Outcome of one sample: Some(true) stored, Some(false) duplicate, None refused.
    fn append(
        &mut self,
        series: usize,
        ts: i64,
        bits: u64,
        ooo_window: Option<i64>,
    ) -> Option<bool> {
        if self.raw_dropped_until.is_some_and(|d| ts <= d) {
            return None;
        }
        let max = self.max_ts.get(&series).copied();
        if max.is_none_or(|m| ts > m) {
            self.max_ts.insert(series, ts);
            self.samples.insert((series, ts), bits);
            return Some(true);
        }
        // D1 before the window: a retry of a stored sample is a duplicate however old.
        if let Some(&stored) = self.samples.get(&(series, ts)) {
            return (stored == bits).then_some(false);
        }
        if let (Some(w), Some(max)) = (ooo_window, max)
            && ts < max - w
        {
            return None;
        }
        self.samples.insert((series, ts), bits);
        Some(true)
    }

    fn series_samples(&self, series: usize) -> Vec<Sample> {
        self.samples
            .range((series, i64::MIN)..=(series, i64::MAX))
            .map(|(&(_, ts), &bits)| Sample::new(ts, f64::from_bits(bits)))
            .collect()
    }
}

fn key(series: usize) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("t").unwrap(),
        Labels::from_pairs(&[("__name__", "m"), ("s", &series.to_string())]).unwrap(),
    )
}

fn config(ooo_window: Option<i64>) -> EngineConfig {
    let mut cfg = EngineConfig::new("/shard");
    cfg.ooo_window_ms = ooo_window;
    cfg.block_ms = BLOCK;
    cfg.retention.raw_ms = RAW_RETENTION;
    cfg.retention.minute_ms = 30 * 24 * HOUR;
    cfg.retention.hour_ms = 60 * 24 * HOUR;
    cfg
}

fn check(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    for series in 0..SERIES {
        let want = model.series_samples(series);
        let got = engine
            .read_series(&key(series), i64::MIN, i64::MAX)
            .unwrap();
        prop_assert_eq!(&got, &want, "raw samples of series {}", series);
        check_instants(engine, series, &want)?;
        // Rollups must match rollups of the model's raw data where raw data still exists.
        let raw_floor = model.raw_dropped_until.unwrap_or(i64::MIN);
        for tier in Tier::ROLLUPS {
            let w = tier.window_ms().unwrap();
            let min_end = window_end(raw_floor.saturating_add(1), w).saturating_add(w);
            let got = engine
                .read_rollups(&key(series), tier, min_end, i64::MAX)
                .unwrap();
            let want: Vec<_> = rollup::compute(&want, w)
                .into_iter()
                .filter(|r| r.window_end_ms >= min_end)
                .collect();
            prop_assert_eq!(
                got.len(),
                want.len(),
                "{} rollups of series {}",
                tier.name(),
                series
            );
            for (g, w) in got.iter().zip(&want) {
                prop_assert!(
                    same_record(g, w),
                    "{} rollup {:?} != {:?}",
                    tier.name(),
                    g,
                    w
                );
            }
        }
    }
    Ok(())
}

/// Instant selections of one series (what the shard answers from the head's last sample when
/// it can, else by decoding) at instants around its samples: the newest sample in the lookback
/// window `(t - 5 min, t]`, nothing when that is a stale marker or there is none.
fn check_instants(engine: &Engine, series: usize, samples: &[Sample]) -> Result<(), TestCaseError> {
    const LOOKBACK: i64 = 5 * 60_000;
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok(());
    };
    let middle = samples[samples.len() / 2].ts_ms;
    let instants = [
        first.ts_ms - 1,
        first.ts_ms,
        middle,
        middle + 1,
        last.ts_ms - 1,
        last.ts_ms,
        last.ts_ms + 1,
        last.ts_ms + LOOKBACK - 1,
        last.ts_ms + LOOKBACK,
    ];
    for t in instants {
        let q = PartialQuery {
            tenant: Tenant::new("t").unwrap(),
            matchers: vec![Matcher::new(MatchOp::Equal, "s", series.to_string()).unwrap()],
            grid: TimeGrid::instant(t),
            lookback_ms: LOOKBACK,
            range: None,
            aggregation: None,
        };
        let got: Vec<u64> = engine
            .query(&q)
            .unwrap()
            .finalize()
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.value.to_bits()))
            .collect();
        let want: Vec<u64> = samples
            .iter()
            .rev()
            .find(|s| s.ts_ms <= t && s.ts_ms > t - LOOKBACK)
            .map(|s| s.value.to_bits())
            .filter(|bits| *bits != STALE_NAN_BITS)
            .into_iter()
            .collect();
        prop_assert_eq!(
            &got,
            &want,
            "instant selection of series {} at {}",
            series,
            t
        );
        // A grid of one instant whose end lies after it (a range query shorter than its step)
        // selects at the instant, not at the end.
        let one_step = PartialQuery {
            grid: TimeGrid {
                start_ms: t,
                end_ms: t + LOOKBACK,
                step_ms: 2 * LOOKBACK,
            },
            ..q
        };
        let got_one_step: Vec<u64> = engine
            .query(&one_step)
            .unwrap()
            .finalize()
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.value.to_bits()))
            .collect();
        prop_assert_eq!(
            got_one_step,
            want,
            "one-step grid of series {} at {}",
            series,
            t
        );
    }
    Ok(())
}

fn same_float(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_nan() && b.is_nan())
        || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same_record(a: &rollup::RollupRecord, b: &rollup::RollupRecord) -> bool {
    a.window_end_ms == b.window_end_ms
        && a.count == b.count
        && same_float(a.sum, b.sum)
        && same_float(a.min, b.min)
        && same_float(a.max, b.max)
        && a.first.bit_eq(&b.first)
        && a.last.bit_eq(&b.last)
        && same_float(a.reset_correction, b.reset_correction)
        && a.resets == b.resets
}

fn run(ops: Vec<Op>, ooo_window: Option<i64>) -> Result<(), TestCaseError> {
    let fs = SimFs::new();
    let open = || Engine::open(Arc::new(fs.clone()), config(ooo_window)).unwrap();
    let mut engine = open();
    let mut model = Model::default();
    let mut durable = model.clone();
    for op in ops {
        let publishes = !matches!(op, Op::Append { .. } | Op::Query | Op::Crash);
        match op {
            Op::Append { series, points } => {
                let samples: Vec<Sample> = points
                    .iter()
                    .map(|&(t, b)| Sample::new(t, f64::from_bits(b)))
                    .collect();
                let out = engine.append(&key(series), &samples).unwrap();
                let (mut stored, mut dups, mut refused) = (0, 0, 0);
                for &(ts, bits) in &points {
                    match model.append(series, ts, bits, ooo_window) {
                        Some(true) => stored += 1,
                        Some(false) => dups += 1,
                        None => refused += 1,
                    }
                }
                prop_assert_eq!(
                    (out.appended, out.duplicates, out.rejected_total()),
                    (stored, dups, refused),
                    "outcome of {:?}: {:?}",
                    points,
                    out.errors
                );
            }
            Op::Query => check(&engine, &model)?,
            Op::Seal => engine.seal().unwrap(),
            Op::Compact => engine.compact().unwrap(),
            Op::Retention { now_ms } => {
                engine.apply_retention(now_ms).unwrap();
                let horizon = now_ms - RAW_RETENTION;
                let cut = window_end(horizon, BLOCK);
                let cut = if cut > horizon { cut - BLOCK } else { cut };
                let dropped = model.raw_dropped_until.map_or(cut, |d| d.max(cut));
                model.raw_dropped_until = Some(dropped);
                model.samples.retain(|&(_, ts), _| ts > dropped);
            }
            Op::Checkpoint => {}
            Op::Reboot => {
                engine.checkpoint().unwrap();
                durable = model.clone();
                drop(engine);
                engine = open();
            }
            Op::Crash => {
                drop(engine);
                fs.crash();
                engine = open();
                model = durable.clone();
            }
        }
        // Every operation but Append, Query and Crash ends with a checkpoint, so the model knows
        // exactly what is durable.
        if publishes {
            engine.checkpoint().unwrap();
            durable = model.clone();
        }
        check(&engine, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_model_through_crashes(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, Some(6 * HOUR))?;
    }

    #[test]
    fn engine_agrees_with_model_with_unlimited_backfill(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, None)?;
    }
}
