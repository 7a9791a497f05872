//! Engine behaviour, one requirement per test. The model-based crash test is in engine_model.rs.

use std::sync::Arc;

use strata_shard::engine::{Engine, EngineConfig, SeriesLimits};
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::query::{
    AggOp, Aggregation, Grouping, PartialQuery, RangeFn, RangeSpec, TimeGrid,
};
use strata_shard::rollup::{self, Tier};
use strata_shard::sim_fs::SimFs;
use strata_shard::{Error, Labels, STALE_NAN_BITS, Sample, SeriesKey, Tenant};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn key(tenant: &str, pairs: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(
        Tenant::new(tenant).unwrap(),
        Labels::from_pairs(pairs).unwrap(),
    )
}

fn up(instance: &str) -> SeriesKey {
    key("t", &[("__name__", "up"), ("instance", instance)])
}

fn open(fs: &SimFs, cfg: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut c = EngineConfig::new("/shard");
    cfg(&mut c);
    Engine::open(Arc::new(fs.clone()), c).unwrap()
}

fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
    points.iter().map(|&(t, v)| Sample::new(t, v)).collect()
}

fn all(engine: &Engine, k: &SeriesKey) -> Vec<Sample> {
    engine.read_series(k, i64::MIN, i64::MAX).unwrap()
}

#[test]
fn in_order_appends_read_back_across_many_chunks() {
    let fs = SimFs::new();
    let mut e = open(&fs, |_| {});
    let k = up("a");
    let pts: Vec<Sample> = (0..1000)
        .map(|i| Sample::new(i * 10_000, i as f64))
        .collect();
    let out = e.append(&k, &pts).unwrap();
    assert_eq!(out.appended, 1000);
    assert_eq!(all(&e, &k), pts);
    assert_eq!(
        e.read_series(&k, 20_000, 40_000).unwrap(),
        pts[2..=4].to_vec()
    );
}

#[test]
fn out_of_order_inside_the_window_is_merged_and_older_is_refused_with_times() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| c.ooo_window_ms = Some(10 * MIN));
    let k = up("a");
    e.append(&k, &samples(&[(20 * MIN, 2.0), (30 * MIN, 3.0)]))
        .unwrap();
    let out = e
        .append(&k, &samples(&[(25 * MIN, 2.5), (5 * MIN, 0.5)]))
        .unwrap();
    assert_eq!(out.appended, 1);
    assert_eq!(out.rejected.get("sample_too_old"), Some(&1));
    match &out.errors[0] {
        Error::SampleTooOld {
            series,
            ts_ms,
            min_ts_ms,
            ..
        } => {
            assert_eq!(series, r#"up{instance="a"}@t"#);
            assert_eq!((*ts_ms, *min_ts_ms), (5 * MIN, 20 * MIN));
        }
        other => panic!("expected SampleTooOld, got {other:?}"),
    }
    let ts: Vec<i64> = all(&e, &k).iter().map(|s| s.ts_ms).collect();
    assert_eq!(ts, [20 * MIN, 25 * MIN, 30 * MIN]);
}

#[test]
fn unlimited_window_accepts_backfill() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| c.ooo_window_ms = None);
    let k = up("a");
    e.append(&k, &samples(&[(100 * HOUR, 1.0)])).unwrap();
    let out = e.append(&k, &samples(&[(HOUR, 0.5)])).unwrap();
    assert_eq!(out.appended, 1);
    assert_eq!(all(&e, &k).len(), 2);
}

#[test]
fn retries_are_stored_once_and_conflicts_keep_the_first_value() {
    let fs = SimFs::new();
    let mut e = open(&fs, |_| {});
    let k = up("a");
    let stale = f64::from_bits(STALE_NAN_BITS);
    let batch = samples(&[(10_000, 1.0), (20_000, stale), (30_000, -0.0)]);
    assert_eq!(e.append(&k, &batch).unwrap().appended, 3);
    let again = e.append(&k, &batch).unwrap();
    assert_eq!((again.appended, again.duplicates), (0, 3));
    // Same timestamp, other bits (0.0 vs -0.0, NaN vs stale NaN): refused, first write kept.
    let conflict = e
        .append(&k, &samples(&[(30_000, 0.0), (20_000, f64::NAN)]))
        .unwrap();
    assert_eq!(conflict.rejected.get("duplicate_timestamp"), Some(&2));
    assert_eq!(all(&e, &k), batch);
    // The rule holds for data already persisted in blocks too.
    e.seal_until(2 * HOUR).unwrap();
    let after_seal = e
        .append(&k, &samples(&[(10_000, 1.0), (10_000, 2.0)]))
        .unwrap();
    assert_eq!(after_seal.duplicates, 1);
    assert_eq!(after_seal.rejected.get("duplicate_timestamp"), Some(&1));
    assert_eq!(all(&e, &k), batch);
}

#[test]
fn series_limits_name_tenant_metric_and_limit_and_spare_existing_series() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| {
        c.limits = SeriesLimits {
            series_per_tenant_max: Some(3),
            series_per_metric_max: Some(2),
        }
    });
    let one = samples(&[(1000, 1.0)]);
    assert_eq!(e.append(&up("a"), &one).unwrap().appended, 1);
    assert_eq!(e.append(&up("b"), &one).unwrap().appended, 1);
    let refused = e.append(&up("c"), &one).unwrap();
    match &refused.errors[0] {
        Error::TooManySeriesForMetric {
            tenant,
            metric,
            limit,
            ..
        } => {
            assert_eq!((tenant.as_str(), metric.as_str(), *limit), ("t", "up", 2));
        }
        other => panic!("expected TooManySeriesForMetric, got {other:?}"),
    }
    let other_metric = key("t", &[("__name__", "load")]);
    assert_eq!(e.append(&other_metric, &one).unwrap().appended, 1);
    let fourth = key("t", &[("__name__", "mem")]);
    match &e.append(&fourth, &one).unwrap().errors[0] {
        Error::TooManySeriesForTenant { tenant, limit, .. } => {
            assert_eq!((tenant.as_str(), *limit), ("t", 3));
        }
        other => panic!("expected TooManySeriesForTenant, got {other:?}"),
    }
    // Existing series keep being accepted; other tenants are not affected.
    assert_eq!(
        e.append(&up("a"), &samples(&[(2000, 2.0)]))
            .unwrap()
            .appended,
        1
    );
    let other_tenant = key("u", &[("__name__", "up")]);
    assert_eq!(e.append(&other_tenant, &one).unwrap().appended, 1);
    assert_eq!(e.active_series(&Tenant::new("t").unwrap()), 3);
}

#[test]
fn sealed_data_survives_reopen_and_crash_loses_only_what_no_checkpoint_covered() {
    let fs = SimFs::new();
    let k = up("a");
    let early: Vec<Sample> = (0..720)
        .map(|i| Sample::new(i * 10_000, i as f64))
        .collect();
    {
        let mut e = open(&fs, |_| {});
        e.append(&k, &early).unwrap();
        e.seal_until(2 * HOUR).unwrap();
        assert!(e.blocks().iter().any(|b| b.0 == Tier::Raw));
        // Written after the last checkpoint: lost by a crash.
        e.append(&k, &samples(&[(3 * HOUR, 9.0)])).unwrap();
    }
    fs.crash();
    let e = open(&fs, |_| {});
    assert_eq!(all(&e, &k), early);
}

#[test]
fn a_seal_is_due_once_the_head_is_a_block_and_a_half_past_the_sealed_boundary() {
    let fs = SimFs::new();
    let mut e = open(&fs, |_| {});
    assert!(!e.seal_due(), "an empty head has nothing to seal");
    let k = up("a");
    // Newest at 3 h: the cut is the block end at or after 3 h - 1 h, less a block: 0 h.
    e.append(&k, &samples(&[(1000, 1.0), (3 * HOUR, 2.0)]))
        .unwrap();
    assert!(
        e.seal_due(),
        "the head holds the first 2 h block (cut 0) and 1 h more"
    );
    e.seal().unwrap();
    assert!(!e.seal_due(), "sealed up to the cut; nothing more is due");
    assert_eq!(e.stats().sealed_until_ms, 0);
    // Newest at 4 h 59 m: the block end at or after 3 h 59 m is 4 h; less a block, 2 h.
    e.append(&k, &samples(&[(5 * HOUR - 60_000, 3.0)])).unwrap();
    assert!(e.seal_due());
    e.seal().unwrap();
    assert!(!e.seal_due());
    assert_eq!(e.stats().sealed_until_ms, 2 * HOUR);
}

#[test]
fn checkpoint_keeps_the_head_across_a_crash() {
    let fs = SimFs::new();
    let k = up("a");
    let pts = samples(&[(1000, 1.0), (2000, 2.0)]);
    {
        let mut e = open(&fs, |_| {});
        e.append(&k, &pts).unwrap();
        e.append(&k, &samples(&[(1500, 1.5)])).unwrap();
        e.set_applied(b"raft log id 42".to_vec());
        e.checkpoint().unwrap();
    }
    fs.crash();
    let e = open(&fs, |_| {});
    assert_eq!(e.applied(), b"raft log id 42");
    assert_eq!(
        all(&e, &k),
        samples(&[(1000, 1.0), (1500, 1.5), (2000, 2.0)])
    );
}

#[test]
fn rollups_are_recomputed_for_late_data_until_sealed_then_newer_block_wins() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| c.ooo_window_ms = None);
    let k = up("a");
    let pts: Vec<Sample> = (1..=360)
        .map(|i| Sample::new(i * 10_000, (i % 7) as f64))
        .collect();
    e.append(&k, &pts).unwrap();
    e.seal_until(2 * HOUR).unwrap();
    let check = |e: &Engine| {
        let raw = all(e, &k);
        for tier in Tier::ROLLUPS {
            let w = tier.window_ms().unwrap();
            let got = e.read_rollups(&k, tier, i64::MIN, i64::MAX).unwrap();
            assert_eq!(got, rollup::compute(&raw, w), "tier {}", tier.name());
        }
    };
    check(&e);
    // A late sample inside a sealed window: the window is dirty and recomputed on read.
    e.append(&k, &samples(&[(5_000, 100.0)])).unwrap();
    check(&e);
    e.seal().unwrap();
    check(&e);
    e.compact().unwrap();
    check(&e);
    let raw_blocks = e.blocks().iter().filter(|b| b.0 == Tier::Raw).count();
    assert_eq!(
        raw_blocks, 1,
        "compaction merges the late-data block into its bucket"
    );
}

#[test]
fn retention_drops_whole_blocks_per_tier_and_refuses_samples_behind_it() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| {
        c.ooo_window_ms = None;
        c.retention.raw_ms = 24 * HOUR;
        c.retention.minute_ms = 48 * HOUR;
    });
    let k = up("a");
    let pts: Vec<Sample> = (1..=72)
        .map(|h| Sample::new(h * HOUR - MIN, h as f64))
        .collect();
    e.append(&k, &pts).unwrap();
    e.seal_until(72 * HOUR).unwrap();
    let now = 73 * HOUR;
    e.apply_retention(now).unwrap();
    let raw = all(&e, &k);
    assert!(
        raw.iter().all(|s| s.ts_ms > now - 24 * HOUR - 2 * HOUR),
        "{:?}",
        raw.first()
    );
    assert!(raw.len() >= 24);
    for (tier, start, end, _) in e.blocks() {
        let keep = if tier == Tier::Minute {
            48 * HOUR
        } else {
            24 * HOUR
        };
        if tier != Tier::Hour {
            assert!(
                end > now - keep,
                "{} block ({start}, {end}] outlived retention",
                tier.name()
            );
        }
        assert!(start < end);
    }
    // The hour tier still answers for the whole range.
    let hours = e.read_rollups(&k, Tier::Hour, i64::MIN, i64::MAX).unwrap();
    assert_eq!(hours.len(), 72);
    let late = e.append(&k, &samples(&[(HOUR, 1.0)])).unwrap();
    assert_eq!(late.rejected.get("sample_too_old"), Some(&1));
}

#[test]
fn partial_query_sums_by_label_and_picks_a_rollup_tier_only_when_exact() {
    let fs = SimFs::new();
    let mut e = open(&fs, |_| {});
    for (inst, job) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let k = key(
            "t",
            &[("__name__", "reqs"), ("instance", inst), ("job", job)],
        );
        let pts: Vec<Sample> = (0..=360)
            .map(|i| Sample::new(i * 10_000, (i * 10) as f64))
            .collect();
        e.append(&k, &pts).unwrap();
    }
    let mut q = PartialQuery {
        tenant: Tenant::new("t").unwrap(),
        matchers: vec![Matcher::new(MatchOp::Equal, "__name__", "reqs").unwrap()],
        grid: TimeGrid {
            start_ms: 30 * MIN,
            end_ms: 60 * MIN,
            step_ms: 10 * MIN,
        },
        lookback_ms: 5 * MIN,
        range: Some(RangeSpec {
            func: RangeFn::Increase,
            range_ms: 10 * MIN,
        }),
        aggregation: Some(Aggregation {
            op: AggOp::Sum,
            grouping: Grouping::By(vec!["job".into()]),
        }),
    };
    assert_eq!(e.tier_for(&q), Tier::Minute);
    let from_rollups = e.query(&q).unwrap().finalize();
    let from_raw = e.query_tier(&q, Tier::Raw).unwrap().finalize();
    assert_eq!(from_rollups, from_raw);
    assert!(
        e.query_tier(&q, Tier::Hour).is_err(),
        "a 10 min range is not exact on 1 h windows"
    );
    // Label semantics agree too: after rate the name is gone from group keys and topk labels.
    for (op, grouping) in [
        (AggOp::Topk(2), Grouping::By(vec!["job".into()])),
        (AggOp::Sum, Grouping::By(vec!["__name__".into()])),
        (AggOp::Max, Grouping::Without(vec!["instance".into()])),
    ] {
        let q2 = PartialQuery {
            range: Some(RangeSpec {
                func: RangeFn::Rate,
                range_ms: 10 * MIN,
            }),
            aggregation: Some(Aggregation { op, grouping }),
            ..q.clone()
        };
        assert_eq!(e.tier_for(&q2), Tier::Minute);
        let rolled = e.query(&q2).unwrap().finalize();
        assert!(!rolled.is_empty());
        assert_eq!(
            rolled,
            e.query_tier(&q2, Tier::Raw).unwrap().finalize(),
            "{op:?}"
        );
    }
    q.grid.start_ms += 1;
    q.grid.end_ms += 1;
    assert_eq!(
        e.tier_for(&q),
        Tier::Raw,
        "unaligned instants are not exact on rollups"
    );
    assert_eq!(from_rollups.len(), 2);
    let x = &from_rollups[0];
    assert_eq!(
        x.labels,
        Labels::normalize(
            vec![strata_shard::Label::new("job", "x")],
            &Default::default()
        )
        .unwrap()
    );
    // increase over 10 min of a counter rising 10 per 10 s, two series: 2 * 600.
    for p in &x.points {
        assert!((p.value - 1200.0).abs() < 1e-9, "{p:?}");
    }
}

#[test]
fn corrupt_checkpoint_is_an_error_not_an_empty_shard() {
    let fs = SimFs::new();
    {
        let mut e = open(&fs, |_| {});
        e.append(&up("a"), &samples(&[(1000, 1.0)])).unwrap();
        e.checkpoint().unwrap();
    }
    use strata_shard::fs::Fs;
    let path = std::path::Path::new("/shard/checkpoint");
    let mut bytes = fs.read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let mut f = fs.open_append(path, true).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync().unwrap();
    let err = Engine::open(Arc::new(fs.clone()), EngineConfig::new("/shard")).unwrap_err();
    assert!(err.to_string().contains("corrupt checkpoint"), "{err}");
}

#[test]
fn a_failed_fsync_during_seal_leaves_the_last_checkpoint_and_no_orphans_after_restart() {
    use strata_shard::fs::Fs;
    let fs = SimFs::new();
    let k = up("a");
    let early = samples(&[(1000, 1.0), (2000, 2.0)]);
    {
        let mut e = open(&fs, |_| {});
        e.append(&k, &early).unwrap();
        e.checkpoint().unwrap();
        e.append(&k, &samples(&[(3 * HOUR, 3.0)])).unwrap();
        fs.fail_syncs(true);
        let err = e.seal_until(2 * HOUR).unwrap_err();
        assert!(err.to_string().contains("failpoint"), "{err}");
        // A failed fsync is fatal: the engine is dropped, never retried (CONVENTIONS.md 9).
    }
    fs.fail_syncs(false);
    fs.crash();
    // Files a crash can leave behind durably: a block written but never published, and a
    // temporary file. Opening deletes both (S5).
    for name in ["raw-7200000-0000000000000009.blk", "checkpoint.tmp"] {
        strata_shard::fs::write_file_atomic(&fs, &std::path::Path::new("/shard").join(name), b"x")
            .unwrap();
    }
    let e = open(&fs, |_| {});
    assert_eq!(all(&e, &k), early);
    let files = fs.list(std::path::Path::new("/shard")).unwrap();
    assert_eq!(
        files,
        ["checkpoint"],
        "no orphan block or temporary file survives reopen"
    );
}

#[test]
fn an_idle_series_leaves_the_limit_count_at_seal_and_comes_back_through_the_limit() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| {
        c.ooo_window_ms = None;
        c.limits.series_per_tenant_max = Some(1);
    });
    assert_eq!(
        e.append(&up("a"), &samples(&[(1000, 1.0)]))
            .unwrap()
            .appended,
        1
    );
    assert_eq!(
        e.append(&up("b"), &samples(&[(1000, 1.0)]))
            .unwrap()
            .rejected_total(),
        1
    );
    // Sealing persists a's only sample: a is no longer active, b now fits.
    e.seal_until(2 * HOUR).unwrap();
    let tenant = Tenant::new("t").unwrap();
    assert_eq!(e.active_series(&tenant), 0);
    assert_eq!(
        e.append(&up("b"), &samples(&[(3 * HOUR, 1.0)]))
            .unwrap()
            .appended,
        1
    );
    // a is still stored and queryable, but writing to it again must pass the limit.
    assert_eq!(all(&e, &up("a")).len(), 1);
    let again = e.append(&up("a"), &samples(&[(3 * HOUR, 2.0)])).unwrap();
    assert_eq!(again.rejected.get("series_limit_tenant"), Some(&1));
}

#[test]
fn retention_forgets_series_whose_data_is_gone_from_every_tier() {
    let fs = SimFs::new();
    let mut e = open(&fs, |c| {
        c.retention.raw_ms = 24 * HOUR;
        c.retention.minute_ms = 24 * HOUR;
        c.retention.hour_ms = 48 * HOUR;
    });
    e.append(&up("old"), &samples(&[(HOUR, 1.0)])).unwrap();
    e.append(&up("new"), &samples(&[(100 * HOUR, 1.0)]))
        .unwrap();
    let tenant = Tenant::new("t").unwrap();
    let everything = [Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()];
    e.apply_retention(30 * HOUR).unwrap();
    assert_eq!(
        e.series(&tenant, &everything, i64::MIN, i64::MAX).len(),
        2,
        "1h tier still holds old"
    );
    e.apply_retention(100 * HOUR).unwrap();
    let left = e.series(&tenant, &everything, i64::MIN, i64::MAX);
    assert_eq!(left, vec![up("new").labels]);
    drop(e);
    let e = open(&fs, |_| {});
    assert_eq!(e.stats().series, 1, "forgetting is durable");
}

#[test]
fn a_snapshot_streams_in_bounded_pieces_and_installs_into_an_equal_shard() {
    use strata_shard::engine::{SNAPSHOT_PIECE_BYTES_MAX, install_snapshot};
    use strata_shard::fs::Fs;
    let source_fs = SimFs::new();
    let mut source = open(&source_fs, |c| c.ooo_window_ms = None);
    let keys: Vec<SeriesKey> = (0..50).map(|i| up(&i.to_string())).collect();
    for (i, k) in keys.iter().enumerate() {
        let pts: Vec<Sample> = (1..=2000)
            .map(|j| Sample::new(j * 10_000, (i as i64 * j) as f64))
            .collect();
        source.append(k, &pts).unwrap();
    }
    source.seal_until(4 * HOUR).unwrap();
    source.append(&keys[0], &samples(&[(5, 0.5)])).unwrap(); // late data in the head
    let (manifest, pin) = source.pin_snapshot().unwrap();
    assert!(manifest.blocks.len() > 3);
    let expected: Vec<Vec<Sample>> = keys.iter().map(|k| all(&source, k)).collect();
    let expected_stats = source.stats();
    // While the snapshot is pinned, compaction and retention replace and drop its blocks, and
    // the source moves on, but the snapshot's files stay readable.
    source.append(&keys[1], &samples(&[(7, 0.7)])).unwrap();
    source.seal().unwrap();
    source.compact().unwrap();
    source.apply_retention(410 * 24 * HOUR).unwrap();
    assert_eq!(source.stats().blocks, 0);

    let target_fs = SimFs::new();
    let mut largest_piece = 0;
    let dir = std::path::Path::new("/other");
    install_snapshot(&target_fs, dir, &manifest, |name, offset, len| {
        largest_piece = largest_piece.max(len);
        Ok(source_fs
            .read_at(&std::path::Path::new("/shard").join(name), offset, len)
            .unwrap())
    })
    .unwrap();
    assert!(largest_piece <= SNAPSHOT_PIECE_BYTES_MAX);
    target_fs.crash(); // the installed snapshot is durable
    let mut cfg = EngineConfig::new(dir);
    cfg.ooo_window_ms = None;
    let target = Engine::open(Arc::new(target_fs.clone()), cfg).unwrap();
    for (k, want) in keys.iter().zip(&expected) {
        assert_eq!(&all(&target, k), want);
    }
    // Everything but allocation capacities (which depend on how the head grew) is equal.
    let without_heap =
        |stats: strata_shard::engine::EngineStats| strata_shard::engine::EngineStats {
            head_heap_bytes: 0,
            ..stats
        };
    assert_eq!(without_heap(target.stats()), without_heap(expected_stats));
    // Once the pin is gone, the next pass deletes what was deferred.
    drop(pin);
    source.apply_retention(411 * 24 * HOUR).unwrap();
    source.compact().unwrap();
    let left = source_fs.list(std::path::Path::new("/shard")).unwrap();
    assert!(left.iter().all(|n| !n.ends_with(".blk")), "{left:?}");
    // Installing over an existing shard is refused.
    let again = install_snapshot(&target_fs, dir, &manifest, |_, _, _| unreachable!());
    assert!(again.is_err());
}
