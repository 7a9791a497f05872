//! Engine behaviour at the edges: damaged files, settings it cannot honour, extreme times, and
//! writes that are refused or repeated. Each test failed before the fix it pins.

use std::path::Path;
use std::sync::Arc;

use strata_shard::engine::{Engine, EngineConfig, SeriesLimits};
use strata_shard::fs::write_file_atomic;
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::query::{PartialQuery, RangeFn, RangeSpec, TimeGrid};
use strata_shard::rollup::Tier;
use strata_shard::sim_fs::SimFs;
use strata_shard::{Error, Fs, Labels, Sample, SeriesKey, TS_ABS_MAX_MS, Tenant};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn up(instance: &str) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("t").unwrap(),
        Labels::from_pairs(&[("__name__", "up"), ("instance", instance)]).unwrap(),
    )
}

fn config(cfg: impl FnOnce(&mut EngineConfig)) -> EngineConfig {
    let mut c = EngineConfig::new("/shard");
    cfg(&mut c);
    c
}

fn open(fs: &SimFs, cfg: impl FnOnce(&mut EngineConfig)) -> Engine {
    Engine::open(Arc::new(fs.clone()), config(cfg)).unwrap()
}

fn invalid_request(result: Result<Engine, Error>) -> String {
    match result {
        Err(Error::InvalidRequest { reason }) => reason,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

fn rate_query(start_ms: i64, end_ms: i64, step_ms: i64, range_ms: i64) -> PartialQuery {
    PartialQuery {
        tenant: Tenant::new("t").unwrap(),
        matchers: vec![Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()],
        grid: TimeGrid {
            start_ms,
            end_ms,
            step_ms,
        },
        lookback_ms: 5 * MIN,
        range: Some(RangeSpec {
            func: RangeFn::Rate,
            range_ms,
        }),
        aggregation: None,
    }
}

#[test]
fn a_flipped_bit_in_a_block_header_is_corruption_not_a_missing_block() {
    let fs = SimFs::new();
    {
        let mut e = open(&fs, |_| {});
        e.append(&up("a"), &[Sample::new(MIN, 1.0)]).unwrap();
        e.seal_until(2 * HOUR).unwrap();
    }
    let dir = Path::new("/shard");
    let name = fs
        .list(dir)
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("raw-"))
        .expect("a raw block");
    let path = dir.join(&name);
    let mut bytes = fs.read(&path).unwrap();
    // The top byte of end_ms: the block would claim a bucket far in the future, which queries
    // skip and retention deletes.
    bytes[8 + 1 + 1 + 8 + 7] ^= 0x01;
    write_file_atomic(&fs, &path, &bytes).unwrap();
    match Engine::open(Arc::new(fs.clone()), config(|_| {})) {
        Err(Error::Corrupt { what, reason }) => {
            assert!(what.contains(&name), "{what}");
            assert!(reason.contains("header"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn settings_the_engine_cannot_honour_are_refused_at_open() {
    let fs = SimFs::new();
    // 90 minutes divides a day, but a 1h rollup window would span two blocks.
    let reason = invalid_request(Engine::open(
        Arc::new(fs.clone()),
        config(|c| c.block_ms = 90 * MIN),
    ));
    assert!(reason.contains("block_ms 5400000"), "{reason}");
    let reason = invalid_request(Engine::open(
        Arc::new(fs.clone()),
        config(|c| c.block_ms = 5 * HOUR),
    ));
    assert!(reason.contains("divides a day"), "{reason}");
    // A 1m tier that expires before raw would be picked for queries it no longer answers.
    let reason = invalid_request(Engine::open(
        Arc::new(fs.clone()),
        config(|c| {
            c.retention.raw_ms = 10 * 24 * HOUR;
            c.retention.minute_ms = 5 * 24 * HOUR;
        }),
    ));
    assert!(
        reason.contains("raw (864000000) <= 1m (432000000)"),
        "{reason}"
    );
    let reason = invalid_request(Engine::open(
        Arc::new(fs),
        config(|c| c.ooo_window_ms = Some(-1)),
    ));
    assert!(reason.contains("ooo_window_ms -1"), "{reason}");
}

#[test]
fn extreme_timestamps_are_refused_or_stored_without_overflow() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| c.ooo_window_ms = None);
    let k = up("a");
    let edge = [
        Sample::new(-TS_ABS_MAX_MS, 1.0),
        Sample::new(0, 2.0),
        Sample::new(TS_ABS_MAX_MS, 3.0),
    ];
    let out = e
        .append(
            &k,
            &[
                Sample::new(i64::MIN, 0.0),
                edge[0],
                edge[1],
                edge[2],
                Sample::new(TS_ABS_MAX_MS + 1, 0.0),
                Sample::new(i64::MAX, 0.0),
            ],
        )
        .unwrap();
    assert_eq!(out.appended, 3);
    assert_eq!(out.rejected.get("timestamp_out_of_range"), Some(&3));
    assert!(
        out.errors[0]
            .to_string()
            .contains(&format!("at {} ms is out of range", i64::MIN)),
        "{}",
        out.errors[0]
    );
    e.seal().unwrap();
    e.compact().unwrap();
    assert_eq!(e.read_series(&k, i64::MIN, i64::MAX).unwrap(), edge);
    for tier in Tier::ROLLUPS {
        let records = e.read_rollups(&k, tier, i64::MIN, i64::MAX).unwrap();
        assert_eq!(records.len(), 3, "tier {}", tier.name());
    }
    // Queries at the edges of the range are answered; beyond it they are refused.
    let grid_edge = -TS_ABS_MAX_MS - (-TS_ABS_MAX_MS).rem_euclid(HOUR) + HOUR;
    for q in [
        rate_query(grid_edge, grid_edge + HOUR, HOUR, TS_ABS_MAX_MS),
        rate_query(TS_ABS_MAX_MS - HOUR, TS_ABS_MAX_MS, HOUR, HOUR),
        rate_query(-TS_ABS_MAX_MS, TS_ABS_MAX_MS, TS_ABS_MAX_MS, 5 * MIN),
    ] {
        e.query(&q).unwrap();
    }
    for q in [
        rate_query(i64::MIN, i64::MIN, 1, HOUR),
        rate_query(0, i64::MAX, i64::MAX, HOUR),
        rate_query(0, 0, 1, i64::MAX),
    ] {
        match e.query(&q) {
            Err(Error::InvalidRequest { reason }) => assert!(
                reason.contains("at most") || reason.contains("out of range"),
                "{reason}"
            ),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }
    // Retention with `now` at either end of i64, and with retention longer than all time.
    e.apply_retention(i64::MIN).unwrap();
    assert_eq!(e.read_series(&k, i64::MIN, i64::MAX).unwrap(), edge);
    drop(e);
    let mut forever = open(&fs, |c| {
        c.retention.raw_ms = i64::MAX;
        c.retention.minute_ms = i64::MAX;
        c.retention.hour_ms = i64::MAX;
    });
    forever.apply_retention(i64::MAX).unwrap();
    assert_eq!(forever.read_series(&k, i64::MIN, i64::MAX).unwrap(), edge);
    drop(forever);
    // `now` beyond the range counts as its end: only the sample there is young enough.
    let mut e = open(&fs, |_| {});
    e.apply_retention(i64::MAX).unwrap();
    assert_eq!(e.read_series(&k, i64::MIN, i64::MAX).unwrap(), edge[2..]);
}

#[test]
fn recomputed_rollups_are_whole_windows_inside_the_asked_bounds() {
    let fs = SimFs::new();
    let mut e = open(&fs, |_| {});
    let k = up("a");
    let pts: Vec<Sample> = (1..=40)
        .map(|i| Sample::new(i * 15_000, i as f64))
        .collect();
    e.append(&k, &pts).unwrap();
    // Everything is in the head, so every window is recomputed from raw samples.
    let got = e
        .read_rollups(&k, Tier::Minute, 5 * MIN + 30_000, 7 * MIN + 30_000)
        .unwrap();
    let ends: Vec<i64> = got.iter().map(|r| r.window_end_ms).collect();
    assert_eq!(ends, [6 * MIN, 7 * MIN]);
    assert!(got.iter().all(|r| r.count == 4), "{got:?}");
}

#[test]
fn a_series_whose_samples_are_all_refused_leaves_no_trace() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| {
        c.limits = SeriesLimits {
            series_per_tenant_max: Some(1),
            series_per_metric_max: None,
        }
    });
    let tenant = Tenant::new("t").unwrap();
    let out = e
        .append(&up("phantom"), &[Sample::new(i64::MAX, 1.0)])
        .unwrap();
    assert_eq!(out.rejected_total(), 1);
    assert_eq!(e.stats().series, 0);
    assert_eq!(e.active_series(&tenant), 0);
    assert!(e.label_values(&tenant, "instance", &[]).is_empty());
    // The refused series took no room under the limit.
    assert_eq!(
        e.append(&up("real"), &[Sample::new(MIN, 1.0)])
            .unwrap()
            .appended,
        1
    );
    assert_eq!(e.label_values(&tenant, "instance", &[]), ["real"]);
}

#[test]
fn a_retry_is_a_duplicate_even_for_an_idle_series_at_the_limit_or_behind_the_window() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| {
        c.ooo_window_ms = Some(10 * MIN);
        c.limits = SeriesLimits {
            series_per_tenant_max: Some(1),
            series_per_metric_max: None,
        }
    });
    let (a, b) = (up("a"), up("b"));
    let first = [Sample::new(MIN, 1.0)];
    assert_eq!(e.append(&a, &first).unwrap().appended, 1);
    assert_eq!(
        e.append(&a, &[Sample::new(4 * HOUR, 2.0)])
            .unwrap()
            .appended,
        1
    );
    e.seal().unwrap();
    // The retry of `first` lies behind the out-of-order window: still a duplicate.
    let retry = e.append(&a, &first).unwrap();
    assert_eq!((retry.duplicates, retry.rejected_total()), (1, 0));
    let conflict = e.append(&a, &[Sample::new(MIN, 9.0)]).unwrap();
    assert_eq!(conflict.rejected.get("duplicate_timestamp"), Some(&1));
    let old = e.append(&a, &[Sample::new(2 * MIN, 9.0)]).unwrap();
    assert_eq!(old.rejected.get("sample_too_old"), Some(&1));
    // `a` goes idle at a seal that persists all of it; `b` takes the tenant's only slot.
    e.seal_until(6 * HOUR).unwrap();
    assert_eq!(e.active_series(&Tenant::new("t").unwrap()), 0);
    assert_eq!(
        e.append(&b, &[Sample::new(5 * HOUR, 1.0)])
            .unwrap()
            .appended,
        1
    );
    let retry = e.append(&a, &first).unwrap();
    assert_eq!(
        (retry.duplicates, retry.rejected_total()),
        (1, 0),
        "{retry:?}"
    );
    let new_sample = e.append(&a, &[Sample::new(5 * HOUR, 3.0)]).unwrap();
    assert_eq!(new_sample.rejected.get("series_limit_tenant"), Some(&1));
}
