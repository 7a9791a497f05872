//! `strata demo`: the storage engine of one shard doing real work on real files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use strata_shard::engine::{Engine, EngineConfig};
use strata_shard::matcher::Matcher;
use strata_shard::query::{
    AggOp, Aggregation, Grouping, LOOKBACK_MS_DEFAULT, PartialQuery, RangeFn, RangeSpec, TimeGrid,
};
use strata_shard::rollup::Tier;
use strata_shard::rollup::window_end;
use strata_shard::workload::NodeExporterLike;
use strata_shard::{Clock, Fs, StdFs, SystemClock, Tenant};

pub struct Options {
    pub data_dir: PathBuf,
    pub hosts: usize,
    pub hours: usize,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let dir = opts.data_dir.join("demo-shard");
    if dir.exists() {
        println!("removing the previous demo shard at {}", dir.display());
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let fs: Arc<dyn Fs> = Arc::new(StdFs);
    let mut cfg = EngineConfig::new(&dir);
    cfg.ooo_window_ms = None;
    let block_ms = cfg.block_ms;
    let mut engine = Engine::open(fs.clone(), cfg)?;

    let tenant = Tenant::new("demo")?;
    let mut workload = NodeExporterLike::new(&tenant, opts.hosts, 42);
    let step = workload.scrape_interval_ms;
    // End on a block boundary in the recent past so every sample can be sealed into blocks.
    let end = window_end(SystemClock.now_ms(), block_ms) - block_ms;
    let start = end - opts.hours as i64 * 3_600_000;
    println!(
        "ingesting {} series ({} node_exporter-like hosts), one scrape every {} s for {} h into {}",
        workload.series.len(),
        opts.hosts,
        step / 1000,
        opts.hours,
        dir.display()
    );
    #[allow(clippy::disallowed_methods)] // measuring the demo's own speed, not engine state
    let started = std::time::Instant::now();
    let mut samples = 0u64;
    let mut ts = start + step;
    while ts <= end {
        let out = engine.apply_batch(&workload.scrape(ts).into())?;
        anyhow::ensure!(
            out.rejected_total() == 0,
            "refused samples: {:?}",
            out.errors
        );
        samples += out.appended;
        if (ts - start) % 3_600_000 == 0 {
            engine.seal()?;
        }
        ts += step;
    }
    engine.seal_until(end)?;
    engine.compact()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingested {samples} samples in {secs:.1} s ({:.0} samples/s, including sealing to disk)",
        samples as f64 / secs
    );

    let mut raw_bytes = 0u64;
    let mut rollup_bytes = 0u64;
    for name in fs.list(&dir)? {
        let len = fs.file_len(&dir.join(&name))?;
        if name.starts_with("raw-") {
            raw_bytes += len;
        } else if name.ends_with(".blk") {
            rollup_bytes += len;
        }
    }
    println!(
        "on disk: raw blocks {raw_bytes} bytes = {:.2} bytes/sample (chunks, labels and index); rollup blocks {rollup_bytes} bytes",
        raw_bytes as f64 / samples as f64
    );

    let query = PartialQuery {
        tenant: tenant.clone(),
        matchers: vec![Matcher::equal("__name__", "node_cpu_seconds_total")],
        grid: TimeGrid::instant(end),
        lookback_ms: LOOKBACK_MS_DEFAULT,
        range: Some(RangeSpec {
            func: RangeFn::Rate,
            range_ms: 5 * 60_000,
        }),
        aggregation: Some(Aggregation {
            op: AggOp::Sum,
            grouping: Grouping::By(vec!["mode".into()]),
        }),
    };
    let tier = engine.tier_for(&query);
    println!(
        "\nsum by (mode) (rate(node_cpu_seconds_total[5m])) at the last scrape ({} tier):",
        tier.name()
    );
    for series in engine.query(&query)?.finalize() {
        for p in &series.points {
            println!("  {}  {:.4}", series.labels, p.value);
        }
    }
    let hourly = PartialQuery {
        matchers: vec![Matcher::equal("__name__", "node_hwmon_temp_celsius")],
        range: Some(RangeSpec {
            func: RangeFn::MaxOverTime,
            range_ms: 3_600_000,
        }),
        aggregation: Some(Aggregation {
            op: AggOp::Max,
            grouping: Grouping::By(vec![]),
        }),
        ..query
    };
    let tier = engine.tier_for(&hourly);
    assert_eq!(
        tier,
        Tier::Hour,
        "an aligned 1h max_over_time is answered from 1h rollups"
    );
    for series in engine.query(&hourly)?.finalize() {
        for p in &series.points {
            println!(
                "\nmax(max_over_time(node_hwmon_temp_celsius[1h])) from the {} rollup tier: {:.2}",
                tier.name(),
                p.value
            );
        }
    }
    let stats = engine.stats();
    println!(
        "\n{} series, {} blocks, checkpoint generation {}",
        stats.series, stats.blocks, stats.generation
    );
    Ok(())
}
