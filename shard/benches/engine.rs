//! Engine benches: head append speed, select + aggregate over 10k series x 1h, and memory per
//! active series in the head.
//!
//! Memory is measured, not estimated: a counting global allocator reports the live heap before
//! and after the head is filled. The figure is printed before the criterion groups run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use strata_shard::engine::{Engine, EngineConfig};
use strata_shard::matcher::Matcher;
use strata_shard::query::{
    AggOp, Aggregation, Grouping, LOOKBACK_MS_DEFAULT, PartialQuery, RangeFn, RangeSpec, TimeGrid,
};
use strata_shard::sim_fs::SimFs;
use strata_shard::workload::NodeExporterLike;
use strata_shard::{Tenant, WriteBatch};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SCRAPE_MS: i64 = 15_000;

fn engine() -> Engine {
    Engine::open(Arc::new(SimFs::new()), EngineConfig::new("/bench")).unwrap()
}

/// `hosts` node_exporter-like hosts (26 series each), `scrapes` scrapes each, as batches.
fn scrapes(hosts: usize, scrapes: usize) -> Vec<WriteBatch> {
    let tenant = Tenant::new("bench").unwrap();
    let mut w = NodeExporterLike::new(&tenant, hosts, 7);
    (1..=scrapes as i64)
        .map(|i| w.scrape(i * SCRAPE_MS).into())
        .collect()
}

fn report_memory_per_series() {
    // 2 h of 15 s scrapes: a full head, as Prometheus holds before it cuts a block.
    let data = scrapes(1000, 480);
    let series = data[0].series_count();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut e = engine();
    for batch in &data {
        e.apply_batch(batch).unwrap();
    }
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    let measured = (after - before) as f64 / series as f64;
    let estimated = e.head_heap_bytes() as f64 / series as f64;
    println!(
        "memory per active series in the head ({series} series x 480 samples, 2 h at 15 s): \
         {measured:.0} bytes measured by the allocator ({estimated:.0} bytes by head_heap_bytes)"
    );
    drop(e);
}

fn bench_append(c: &mut Criterion) {
    let data = scrapes(100, 240);
    let samples: usize = data.iter().map(|b| b.sample_count()).sum();
    let mut g = c.benchmark_group("head_append");
    g.throughput(Throughput::Elements(samples as u64));
    g.sample_size(10);
    g.bench_function(
        format!("{} series x 240 scrapes, in order", data[0].series_count()),
        |b| {
            b.iter_batched(
                engine,
                |mut e| {
                    for batch in &data {
                        e.apply_batch(batch).unwrap();
                    }
                    e
                },
                BatchSize::PerIteration,
            )
        },
    );
    g.finish();
}

fn bench_select_aggregate(c: &mut Criterion) {
    // 10k series (385 hosts x 26) x 1 h at 15 s.
    let data = scrapes(385, 240);
    let mut e = engine();
    for batch in &data {
        e.apply_batch(batch).unwrap();
    }
    let series = data[0].series_count();
    let end = 240 * SCRAPE_MS;
    let tenant = Tenant::new("bench").unwrap();
    let base = PartialQuery {
        tenant,
        matchers: vec![Matcher::equal("job", "node")],
        grid: TimeGrid {
            start_ms: 5 * 60_000,
            end_ms: end,
            step_ms: 60_000,
        },
        lookback_ms: LOOKBACK_MS_DEFAULT,
        range: Some(RangeSpec {
            func: RangeFn::Rate,
            range_ms: 5 * 60_000,
        }),
        aggregation: Some(Aggregation {
            op: AggOp::Sum,
            grouping: Grouping::By(vec!["instance".into()]),
        }),
    };
    let mut g = c.benchmark_group("select_aggregate");
    g.throughput(Throughput::Elements((series * 240) as u64));
    g.sample_size(10);
    g.bench_function(
        format!("sum by (instance) (rate(x[5m])), {series} series x 1h, step 1m"),
        |b| {
            b.iter(|| {
                black_box(
                    e.query_tier(&base, strata_shard::rollup::Tier::Raw)
                        .unwrap(),
                )
            })
        },
    );
    let raw = PartialQuery {
        range: None,
        aggregation: None,
        ..base.clone()
    };
    g.bench_function(format!("select raw, {series} series x 1h, step 1m"), |b| {
        b.iter(|| black_box(e.query(&raw).unwrap()))
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    report_memory_per_series();
    bench_append(c);
    bench_select_aggregate(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
