//! `Index::select` over 100k series of one tenant.
//!
//! Shape (deterministic, no randomness): 100 metric names × 1000 series each; `job` has 10
//! values, `instance` 1000, `pod` is unique per series (the high-cardinality label that makes a
//! regex scan expensive). Run with `cargo bench -p strata-shard --bench index`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_shard::index::Index;
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::{Labels, Tenant};

const SERIES: u32 = 100_000;

fn build() -> (Index, Tenant) {
    let tenant = Tenant::new("bench").unwrap();
    let mut idx = Index::new();
    for r in 0..SERIES {
        let metric = format!("metric_{}", r % 100);
        let job = format!("job_{}", (r / 100) % 10);
        let instance = format!("inst_{}", (r / 100) % 1000);
        let pod = format!("pod-{r}");
        let labels = Labels::from_pairs(&[
            ("__name__", &metric),
            ("instance", &instance),
            ("job", &job),
            ("pod", &pod),
        ])
        .unwrap();
        idx.insert(r, &tenant, &labels);
    }
    (idx, tenant)
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).unwrap()
}

fn select(c: &mut Criterion) {
    let (idx, tenant) = build();
    eprintln!(
        "index: {SERIES} series, ~{} heap bytes ({} per series)",
        idx.heap_bytes(),
        idx.heap_bytes() / SERIES as usize
    );
    let cases: Vec<(&str, Vec<Matcher>)> = vec![
        ("name", vec![Matcher::equal("__name__", "metric_7")]),
        (
            "name_and_job",
            vec![
                Matcher::equal("__name__", "metric_7"),
                Matcher::equal("job", "job_3"),
            ],
        ),
        (
            "name_and_not_job",
            vec![
                Matcher::equal("__name__", "metric_7"),
                m(MatchOp::NotEqual, "job", "job_3"),
            ],
        ),
        (
            "literal_alternation",
            vec![m(MatchOp::RegexMatch, "job", "job_1|job_2|job_9")],
        ),
        (
            "name_and_instance_regex",
            vec![
                Matcher::equal("__name__", "metric_7"),
                m(MatchOp::RegexMatch, "instance", "inst_1.*"),
            ],
        ),
        (
            "high_cardinality_regex",
            vec![m(MatchOp::RegexMatch, "pod", "pod-.*7")],
        ),
        (
            "unknown_name_skips_scan",
            vec![
                Matcher::equal("__name__", "nope"),
                m(MatchOp::RegexMatch, "pod", "pod-.*7"),
            ],
        ),
        ("all", vec![m(MatchOp::RegexMatch, "job", ".*")]),
    ];
    let mut group = c.benchmark_group("index_select_100k");
    for (name, matchers) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| idx.select(black_box(&tenant), black_box(matchers)))
        });
    }
    group.finish();

    let within = idx.select(&tenant, &[Matcher::equal("__name__", "metric_7")]);
    c.bench_function("index_label_values_within_100k", |b| {
        b.iter(|| idx.label_values(black_box(&tenant), "instance", Some(black_box(&within))))
    });
}

criterion_group!(benches, select);
criterion_main!(benches);
