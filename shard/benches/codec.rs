//! Gorilla chunk codec: compression (bytes/sample) and encode/decode throughput.
//!
//! Datasets are generated deterministically with `workload::SplitMix64` (no `rand`):
//! - (a) `regular`: exact 10 s scrapes. Gauges hold an integer value in 0..1000 and step to a new
//!   one with probability 1/120 per scrape (about once per 20 minutes). Counters are integers
//!   that grow by 0..=9 (uniform) each scrape.
//! - (b) `node`: exact 15 s scrapes (Prometheus snaps scrape timestamps that are within 2 ms of
//!   the interval onto it, so real scrape series mostly have a delta-of-delta of 0). Counters are
//!   `*_seconds_total`-like: they grow by 10.00 ± 1.00 s each scrape, in hundredths, i.e. the
//!   value is the f64 nearest to a 2-decimal number, as node_exporter's text renders it. Gauges
//!   wander with 2 decimals: half temperature-like (20.00..100.00, steps of ±0.50), half
//!   memory-in-MiB-like (100.00..10000.00, steps of ±5.00).
//! - (b') `node-jitter`: (b) with every timestamp moved by a uniform -10..=10 ms, as when the
//!   jitter exceeds Prometheus' tolerance; reported for bytes/sample only.
//!
//! Every series is cut into chunks of `CHUNK_SAMPLES_MAX` samples. Bytes/sample is the total
//! size of the finished chunks (2-byte header included) over the samples they hold.
//!
//! `rollup/node`: the 1m rollup records of 6 h of `workload::NodeExporterLike` (20 hosts, 520
//! series, 15 s scrapes, as in `strata demo`), one `rollup::encode` per series as in a block.
//! Bytes/record is the encoded size over the records; throughput counts records.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_shard::Tenant;
use strata_shard::chunk::{self, CHUNK_SAMPLES_MAX, ChunkEncoder};
use strata_shard::rollup::{self, RollupRecord};
use strata_shard::series::Sample;
use strata_shard::workload::{NodeExporterLike, SplitMix64};

const SERIES_PER_KIND: usize = 200;
const SAMPLES_PER_SERIES: usize = 10 * CHUNK_SAMPLES_MAX;
const START_MS: i64 = 1_700_000_000_000;

type Rng = SplitMix64;

type Series = Vec<Sample>;

/// Scrape timestamps of one series: a per-series offset inside the interval (targets are spread
/// across it), plus optional jitter.
fn timestamps(rng: &mut Rng, interval_ms: i64, jitter_ms: i64) -> Vec<i64> {
    let offset = rng.range(0, interval_ms - 1);
    (0..SAMPLES_PER_SERIES as i64)
        .map(|i| START_MS + offset + i * interval_ms + rng.range(-jitter_ms, jitter_ms))
        .collect()
}

fn regular_gauge(rng: &mut Rng) -> Series {
    let mut v = rng.range(0, 999) as f64;
    timestamps(rng, 10_000, 0)
        .into_iter()
        .map(|t| {
            if rng.range(0, 119) == 0 {
                v = rng.range(0, 999) as f64;
            }
            Sample::new(t, v)
        })
        .collect()
}

fn regular_counter(rng: &mut Rng) -> Series {
    let mut c = rng.range(0, 1_000_000);
    timestamps(rng, 10_000, 0)
        .into_iter()
        .map(|t| {
            c += rng.range(0, 9);
            Sample::new(t, c as f64)
        })
        .collect()
}

/// Values in hundredths become the f64 nearest to the 2-decimal number.
fn hundredths(c: i64) -> f64 {
    c as f64 / 100.0
}

fn node_counter(rng: &mut Rng, jitter_ms: i64) -> Series {
    let mut c = rng.range(0, 100_000_000);
    timestamps(rng, 15_000, jitter_ms)
        .into_iter()
        .map(|t| {
            c += 1_000 + rng.range(-100, 100);
            Sample::new(t, hundredths(c))
        })
        .collect()
}

fn node_gauge(rng: &mut Rng, jitter_ms: i64, temperature: bool) -> Series {
    let (lo, hi, step) = if temperature {
        (2_000, 10_000, 50)
    } else {
        (10_000, 1_000_000, 500)
    };
    let mut c = rng.range(lo, hi);
    timestamps(rng, 15_000, jitter_ms)
        .into_iter()
        .map(|t| {
            c = (c + rng.range(-step, step)).clamp(lo, hi);
            Sample::new(t, hundredths(c))
        })
        .collect()
}

struct Dataset {
    name: &'static str,
    gauges: Vec<Series>,
    counters: Vec<Series>,
}

fn dataset(name: &'static str, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let (gauges, counters) = match name {
        "regular" => (
            (0..SERIES_PER_KIND)
                .map(|_| regular_gauge(&mut rng))
                .collect(),
            (0..SERIES_PER_KIND)
                .map(|_| regular_counter(&mut rng))
                .collect(),
        ),
        "node" | "node-jitter" => {
            let jitter = if name == "node" { 0 } else { 10 };
            (
                (0..SERIES_PER_KIND)
                    .map(|i| node_gauge(&mut rng, jitter, i % 2 == 0))
                    .collect(),
                (0..SERIES_PER_KIND)
                    .map(|_| node_counter(&mut rng, jitter))
                    .collect(),
            )
        }
        _ => unreachable!("unknown dataset {name}"),
    };
    Dataset {
        name,
        gauges,
        counters,
    }
}

fn encode_chunks(series: &[Series]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    for s in series {
        for part in s.chunks(CHUNK_SAMPLES_MAX) {
            let mut enc = ChunkEncoder::new();
            for sample in part {
                enc.append(sample.ts_ms, sample.value);
            }
            chunks.push(enc.finish());
        }
    }
    chunks
}

fn bytes_per_sample(chunks: &[Vec<u8>]) -> (usize, usize) {
    let bytes = chunks.iter().map(Vec::len).sum();
    let samples = chunks.iter().map(|c| chunk::sample_count(c).unwrap()).sum();
    (bytes, samples)
}

fn report(d: &Dataset) {
    let ratio = |(b, s): (usize, usize)| b as f64 / s as f64;
    let g = bytes_per_sample(&encode_chunks(&d.gauges));
    let c = bytes_per_sample(&encode_chunks(&d.counters));
    let all = (g.0 + c.0, g.1 + c.1);
    // Diagnostic: the cost of the timestamps alone (values held constant: 1 bit each).
    let flat: Vec<Series> = d
        .gauges
        .iter()
        .chain(&d.counters)
        .map(|s| s.iter().map(|x| Sample::new(x.ts_ms, 0.0)).collect())
        .collect();
    let ts_only = bytes_per_sample(&encode_chunks(&flat));
    eprintln!(
        "{:<12} bytes/sample: gauges {:.3}, counters {:.3}, combined {:.3} ({} samples); \
         timestamps alone {:.3}",
        d.name,
        ratio(g),
        ratio(c),
        ratio(all),
        all.1,
        ratio(ts_only),
    );
}

fn codec(c: &mut Criterion) {
    let datasets = [dataset("regular", 1), dataset("node", 2)];
    for d in &datasets {
        report(d);
    }
    report(&dataset("node-jitter", 3));

    for d in &datasets {
        let series: Vec<Series> = d.gauges.iter().chain(&d.counters).cloned().collect();
        let chunks = encode_chunks(&series);
        let samples = series.iter().map(Vec::len).sum::<usize>();
        // The decoder must give back exactly what went in.
        let mut check = Vec::new();
        for chunk in &chunks {
            chunk::decode_into(chunk, &mut check).unwrap();
        }
        assert!(check.iter().eq(series.iter().flatten()));

        let mut group = c.benchmark_group(format!("codec/{}", d.name));
        group.throughput(Throughput::Elements(samples as u64));
        group.bench_function("encode", |b| {
            b.iter(|| black_box(encode_chunks(black_box(&series))))
        });
        let mut out = Vec::with_capacity(CHUNK_SAMPLES_MAX);
        group.bench_function("decode", |b| {
            b.iter(|| {
                for chunk in &chunks {
                    out.clear();
                    chunk::decode_into(black_box(chunk), &mut out).unwrap();
                    black_box(&out);
                }
            })
        });
        group.finish();
    }
}

/// Per series, the 1m rollups of `hours` of node_exporter-like scrapes.
fn node_rollups(hosts: usize, hours: i64) -> Vec<Vec<RollupRecord>> {
    let tenant = Tenant::new("bench").unwrap();
    let mut load = NodeExporterLike::new(&tenant, hosts, 7);
    let step = load.scrape_interval_ms;
    let mut samples = vec![Vec::new(); load.series.len()];
    for k in 1..=hours * 3_600_000 / step {
        for (series, (_, scraped)) in samples.iter_mut().zip(load.scrape(START_MS + k * step)) {
            series.extend(scraped);
        }
    }
    samples.iter().map(|s| rollup::compute(s, 60_000)).collect()
}

fn rollups(c: &mut Criterion) {
    let series = node_rollups(20, 6);
    let records: usize = series.iter().map(Vec::len).sum();
    let encoded: Vec<Vec<u8>> = series
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            rollup::encode(r, &mut out);
            out
        })
        .collect();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    eprintln!(
        "rollup/node  bytes/record: {:.3} ({records} 1m records of {} series)",
        bytes as f64 / records as f64,
        series.len()
    );
    for (e, r) in encoded.iter().zip(&series) {
        assert_eq!(&rollup::decode(e).unwrap(), r);
    }

    let mut group = c.benchmark_group("rollup/node");
    group.throughput(Throughput::Elements(records as u64));
    let mut out = Vec::new();
    group.bench_function("encode", |b| {
        b.iter(|| {
            for r in &series {
                out.clear();
                rollup::encode(black_box(r), &mut out);
                black_box(&out);
            }
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            for e in &encoded {
                black_box(rollup::decode(black_box(e)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec, rollups);
criterion_main!(benches);
