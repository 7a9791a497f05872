//! The evaluator over in-memory data: answers worked out by hand from Prometheus 3.x semantics,
//! the same answers from 1 and 16 shards (Q1), and clear errors (Q3).

use futures::executor::block_on;
use futures::future::BoxFuture;
use strata_query_fanout::TimeGrid;
use strata_query_fanout::eval::{QueryError, QueryOptions, Series, Value, query};
use strata_query_fanout::source::{Answer, MemorySource, Source, SourceError};
use strata_shard::query::PartialQuery;
use strata_shard::series::{Label, Labels, STALE_NAN_BITS, Sample, Tenant};

const S: i64 = 1000;
const MIN: i64 = 60 * S;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Vec<Label> = pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Labels::from_sorted_unchecked(v)
}

/// Samples every 10 s from 0 to 20 min (inclusive) of `f(t in seconds)`.
fn every_10s(f: impl Fn(f64) -> f64) -> Vec<Sample> {
    (0..=120)
        .map(|i| Sample::new(i * 10 * S, f((i * 10) as f64)))
        .collect()
}

/// Counters rising 1/s (api a, api b) and 2/s (web c); a gauge per instance; one histogram;
/// a series that goes stale at 10 min.
fn data() -> Vec<(Labels, Vec<Sample>)> {
    let mut out = vec![
        (
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", "a"),
            ]),
            every_10s(|t| t),
        ),
        (
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", "b"),
            ]),
            every_10s(|t| 100.0 + t),
        ),
        (
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "web"),
                ("instance", "c"),
            ]),
            every_10s(|t| 2.0 * t),
        ),
        (
            labels(&[("__name__", "cpu"), ("instance", "a")]),
            every_10s(|_| 0.5),
        ),
        (
            labels(&[("__name__", "cpu"), ("instance", "b")]),
            every_10s(|_| 0.25),
        ),
        (
            labels(&[("__name__", "cpu"), ("instance", "c")]),
            every_10s(|_| 1.0),
        ),
        (
            labels(&[("__name__", "mem"), ("instance", "a")]),
            every_10s(|_| 64.0),
        ),
    ];
    for (le, per_s) in [("0.1", 1.0), ("0.5", 3.0), ("+Inf", 4.0)] {
        out.push((
            labels(&[("__name__", "latency_bucket"), ("job", "api"), ("le", le)]),
            every_10s(move |t| per_s * t),
        ));
    }
    let mut stale: Vec<Sample> = every_10s(|_| 7.0)
        .into_iter()
        .filter(|s| s.ts_ms < 10 * MIN)
        .collect();
    stale.push(Sample::new(10 * MIN, f64::from_bits(STALE_NAN_BITS)));
    out.push((labels(&[("__name__", "flaky")]), stale));
    out
}

fn run(text: &str, grid: TimeGrid, shards: usize) -> Result<Value, QueryError> {
    let source = MemorySource::new(data(), shards);
    let options = QueryOptions::new(Tenant::new("anonymous").unwrap());
    block_on(query(&source, options, text, grid)).map(|e| e.value)
}

fn instant(text: &str, t_ms: i64) -> Vec<(Labels, f64)> {
    match run(text, TimeGrid::instant(t_ms), 4).unwrap_or_else(|e| panic!("{text}: {e}")) {
        Value::Vector(v) => v
            .into_iter()
            .map(|s| (s.labels, s.points[0].unwrap()))
            .collect(),
        Value::Scalar(v) => vec![(Labels::default(), v[0])],
        Value::String(s) => panic!("{text}: string {s}"),
    }
}

#[track_caller]
fn assert_values(text: &str, t_ms: i64, want: &[(&[(&str, &str)], f64)]) {
    let got = instant(text, t_ms);
    let want: Vec<(Labels, f64)> = want.iter().map(|(l, v)| (labels(l), *v)).collect();
    assert_eq!(got.len(), want.len(), "{text}: got {got:?}");
    for ((gl, gv), (wl, wv)) in got.iter().zip(&want) {
        assert_eq!(gl, wl, "{text}");
        assert!(
            (gv - wv).abs() <= 1e-9 * wv.abs().max(1.0),
            "{text}: {gl} = {gv}, want {wv}"
        );
    }
}

#[test]
fn selectors_functions_and_aggregations_answer_as_prometheus() {
    let t = 15 * MIN + 1500; // off the sample grid
    assert_values(
        "sum by (job) (rate(http_requests_total[1m]))",
        t,
        &[(&[("job", "api")], 2.0), (&[("job", "web")], 2.0)],
    );
    assert_values("count(cpu)", t, &[(&[], 3.0)]);
    // `without` drops the metric name too.
    assert_values("avg without (instance) (cpu)", t, &[(&[], 1.75 / 3.0)]);
    // An offset reads the value from 1m earlier; @ pins the instant.
    assert_values(
        r#"http_requests_total{instance="a"} offset 1m"#,
        t,
        &[(
            &[
                ("__name__", "http_requests_total"),
                ("instance", "a"),
                ("job", "api"),
            ],
            840.0,
        )],
    );
    assert_values(
        r#"http_requests_total{instance="a"} @ 100"#,
        t,
        &[(
            &[
                ("__name__", "http_requests_total"),
                ("instance", "a"),
                ("job", "api"),
            ],
            100.0,
        )],
    );
    // Arithmetic drops the name; group_left copies nothing but matches many-to-one.
    assert_values(
        "rate(http_requests_total[1m]) * on(instance) group_left cpu",
        t,
        &[
            (&[("instance", "a"), ("job", "api")], 0.5),
            (&[("instance", "b"), ("job", "api")], 0.25),
            (&[("instance", "c"), ("job", "web")], 2.0),
        ],
    );
    // atan2 drops the name like the other arithmetic operators (Prometheus 2.46+).
    assert_values(
        r#"cpu{instance="c"} atan2 0"#,
        t,
        &[(&[("instance", "c")], std::f64::consts::FRAC_PI_2)],
    );
    assert_values(
        "cpu > 0.3",
        t,
        &[
            (&[("__name__", "cpu"), ("instance", "a")], 0.5),
            (&[("__name__", "cpu"), ("instance", "c")], 1.0),
        ],
    );
    assert_values(
        "cpu > bool 0.3",
        t,
        &[
            (&[("instance", "a")], 1.0),
            (&[("instance", "b")], 0.0),
            (&[("instance", "c")], 1.0),
        ],
    );
    assert_values(
        r#"cpu and on(instance) http_requests_total{job="web"}"#,
        t,
        &[(&[("__name__", "cpu"), ("instance", "c")], 1.0)],
    );
    assert_values(
        "topk(1, cpu)",
        t,
        &[(&[("__name__", "cpu"), ("instance", "c")], 1.0)],
    );
    assert_values("bottomk(1, -cpu)", t, &[(&[("instance", "c")], -1.0)]);
    assert_values("quantile(0.5, cpu)", t, &[(&[], 0.5)]);
    assert_values(
        "count_values(\"v\", cpu)",
        t,
        &[
            (&[("v", "0.25")], 1.0),
            (&[("v", "0.5")], 1.0),
            (&[("v", "1")], 1.0),
        ],
    );
    // Buckets rising 1, 3, 4 per second: the median is in the second bucket, 0.1 + 0.4 · (2 - 1) / 2.
    assert_values(
        "histogram_quantile(0.5, rate(latency_bucket[1m]))",
        t,
        &[(&[("job", "api")], 0.3)],
    );
    // A subquery of a rate: the max over 5m of a constant rate.
    assert_values(
        r#"max_over_time(rate(http_requests_total{instance="c"}[1m])[5m:30s])"#,
        t,
        &[(&[("instance", "c"), ("job", "web")], 2.0)],
    );
    assert_values(
        r#"deriv(http_requests_total{instance="b"}[2m])"#,
        t,
        &[(&[("instance", "b"), ("job", "api")], 1.0)],
    );
    assert_values(r#"absent(nothing{job="x"})"#, t, &[(&[("job", "x")], 1.0)]);
    // A label another matcher also constrains (a second `=`, or any other kind) is left out.
    assert_values(
        r#"absent(nothing{job="x", job="y", a="b"})"#,
        t,
        &[(&[("a", "b")], 1.0)],
    );
    assert_values(r#"absent(nothing{job=~"x.*", job="x"})"#, t, &[(&[], 1.0)]);
    assert_values("vector(pi())", t, &[(&[], std::f64::consts::PI)]);
    // A subquery range shorter than its step: a window may hold no step (nothing), or one.
    let q = r#"max_over_time(cpu{instance="a"}[30s:1m])"#;
    assert_values(q, 10 * MIN + 45_000, &[]);
    assert_values(q, 10 * MIN + 15_000, &[(&[("instance", "a")], 0.5)]);
    assert_values("vector(time())", t, &[(&[], t as f64 / 1e3)]);
    assert_values(
        r#"label_replace(cpu{instance="a"}, "host", "h-$1", "instance", "(.*)")"#,
        t,
        &[(
            &[("__name__", "cpu"), ("host", "h-a"), ("instance", "a")],
            0.5,
        )],
    );
    assert_values("scalar(sum(cpu)) * 2", t, &[(&[], 3.5)]);
    assert_values("minute(vector(3600 + 120))", t, &[(&[], 2.0)]);
}

#[test]
fn windows_are_left_open_and_stale_markers_end_a_series() {
    // The last sample (at 20m) exactly 5m before the instant is outside the lookback window.
    assert!(instant(r#"cpu{instance="a"}"#, 25 * MIN).is_empty());
    assert_values(
        r#"cpu{instance="a"}"#,
        25 * MIN - 1,
        &[(&[("__name__", "cpu"), ("instance", "a")], 0.5)],
    );
    assert_values("flaky", 10 * MIN - 1, &[(&[("__name__", "flaky")], 7.0)]);
    // After its stale marker the series has no value, though the last sample is within 5m.
    assert!(instant("flaky", 10 * MIN + 30 * S).is_empty());
    // [1m] at a sample's instant: the sample 60 s earlier is excluded, so 6 samples.
    assert_values(
        r#"count_over_time(cpu{instance="a"}[1m])"#,
        10 * MIN,
        &[(&[("instance", "a")], 6.0)],
    );
}

#[test]
fn one_shard_and_sixteen_shards_agree() {
    let grid = TimeGrid {
        start_ms: 5 * MIN + 1500,
        end_ms: 18 * MIN,
        step_ms: 45 * S,
    };
    for text in [
        "sum(rate(http_requests_total[2m]))",
        "avg by (job) (http_requests_total)",
        "stddev(cpu)",
        "topk(2, rate(http_requests_total[1m]))",
        "max without (instance) (cpu) + 1",
        "count(cpu > 0.3) by (instance)",
        "quantile(0.9, rate(http_requests_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(latency_bucket[5m])))",
        "sum_over_time(cpu[3m:1m])",
        "http_requests_total unless on(instance) cpu > 0.3",
    ] {
        let one = run(text, grid, 1).unwrap_or_else(|e| panic!("{text}: {e}"));
        let many = run(text, grid, 16).unwrap();
        assert_eq!(one, many, "{text}");
        assert!(
            matches!(&one, Value::Vector(v) if !v.is_empty()),
            "{text}: {one:?}"
        );
    }
}

#[test]
fn range_queries_fill_every_step() {
    let grid = TimeGrid {
        start_ms: 2 * MIN,
        end_ms: 4 * MIN,
        step_ms: 30 * S,
    };
    let Value::Vector(v) = run("sum(rate(http_requests_total[1m]))", grid, 3).unwrap() else {
        panic!()
    };
    assert_eq!(
        v,
        vec![Series {
            labels: Labels::default(),
            points: vec![Some(4.0); 5]
        }]
    );
}

#[test]
fn bad_queries_say_what_is_wrong() {
    let t = TimeGrid::instant(10 * MIN);
    let err = |q: &str| run(q, t, 2).unwrap_err().to_string();
    assert!(
        err("sum(").contains("unclosed left parenthesis"),
        "{}",
        err("sum(")
    );
    assert!(
        err("no_such_function(cpu)").contains("no_such_function"),
        "{}",
        err("no_such_function(cpu)")
    );
    assert!(
        err(r#"{__name__=~".*"}"#).contains("non-empty matcher"),
        "{}",
        err(r#"{__name__=~".*"}"#)
    );
    // Two series on the "one" side for one match group.
    let dup = err("cpu + on() http_requests_total");
    assert!(dup.contains("many-to-many matching not allowed"), "{dup}");
    // Negation drops the name: two metrics with equal other labels collide.
    let collide = err(r#"-{__name__=~"cpu|mem", instance="a"}"#);
    assert!(
        collide.contains("same labelset {instance=\"a\"}"),
        "{collide}"
    );
    // So does a range function, also under an aggregation the shards would otherwise compute
    // (Prometheus refuses the argument before aggregating it).
    for q in [
        r#"count_over_time({__name__=~"cpu|mem", instance="a"}[1m])"#,
        r#"sum(count_over_time({__name__=~"cpu|mem", instance="a"}[1m]))"#,
        r#"max by (instance) (rate({__name__=~"cpu|mem"}[1m]))"#,
    ] {
        let collide = err(q);
        assert!(collide.contains("same labelset"), "{q}: {collide}");
    }
    // `last_over_time` keeps the name, and one name cannot collide: both still aggregate.
    assert!(run(r#"sum(last_over_time({__name__=~"cpu|mem"}[1m]))"#, t, 2).is_ok());
    assert!(run(r#"sum(rate({__name__="cpu"}[1m]))"#, t, 2).is_ok());
}

/// A source that checks that every grid it is asked for ends on its last instant (a shard
/// answering a one-instant grid may read up to the grid's end), then answers from memory.
struct GridChecking(MemorySource);

impl Source for GridChecking {
    fn select(&self, query: PartialQuery) -> BoxFuture<'_, Result<Answer, SourceError>> {
        let g = query.grid;
        assert_eq!(
            g.end_ms,
            g.start_ms + (g.len() as i64 - 1) * g.step_ms,
            "the shards are asked for a grid that ends after its last instant: {g:?}"
        );
        self.0.select(query)
    }
}

#[test]
fn shards_see_grids_that_end_on_their_last_instant() {
    let source = GridChecking(MemorySource::new(data(), 2));
    let options = || QueryOptions::new(Tenant::new("anonymous").unwrap());
    // One step, the end 50 s after it; a subquery whose one inner step is 20.5 s before the
    // instant; an offset range query with an end off the step.
    let cases = [
        (
            "cpu",
            TimeGrid {
                start_ms: 10 * MIN,
                end_ms: 10 * MIN + 50 * S,
                step_ms: MIN,
            },
        ),
        (
            "max_over_time(cpu[30s:1m])",
            TimeGrid::instant(10 * MIN + 20_500),
        ),
        (
            "rate(http_requests_total[1m] offset 1m)",
            TimeGrid {
                start_ms: 5 * MIN,
                end_ms: 9 * MIN + 7 * S,
                step_ms: 2 * MIN,
            },
        ),
    ];
    for (q, grid) in cases {
        let value = block_on(query(&source, options(), q, grid)).unwrap().value;
        let Value::Vector(v) = value else {
            panic!("{q}: {value:?}")
        };
        assert!(
            !v.is_empty() && v.iter().all(|s| s.points.iter().all(Option::is_some)),
            "{q}: {v:?}"
        );
    }
}

#[test]
fn timestamp_is_the_picked_samples_time_or_the_evaluation_time() {
    let cpu_a: &[(&str, &str)] = &[("instance", "a")];
    // Of a selector: when the sample it picks was taken, in seconds, without the name.
    assert_values(
        r#"timestamp(cpu{instance="a"})"#,
        10 * MIN + 15 * S,
        &[(cpu_a, 610.0)],
    );
    assert_values(
        r#"timestamp(cpu{instance="a"} offset 1m)"#,
        10 * MIN + 15 * S,
        &[(cpu_a, 550.0)],
    );
    assert_values(
        r#"timestamp(cpu{instance="a"} @ 100)"#,
        10 * MIN + 15 * S,
        &[(cpu_a, 100.0)],
    );
    // The newest sample before a stale marker, and nothing once the marker is the newest.
    assert_values("timestamp(flaky)", 10 * MIN - 1, &[(&[], 590.0)]);
    assert!(instant("timestamp(flaky)", 10 * MIN + 30 * S).is_empty());
    // Of anything else: the evaluation time.
    assert_values(
        r#"timestamp(cpu{instance="a"} * 2)"#,
        10 * MIN + 15 * S,
        &[(cpu_a, 615.0)],
    );
    // Over a range query, the same at every step, on 1 shard as on 16.
    let grid = TimeGrid {
        start_ms: 5 * MIN + 5 * S,
        end_ms: 6 * MIN + 5 * S,
        step_ms: 30 * S,
    };
    let one = run(r#"timestamp(cpu{instance="b"})"#, grid, 1).unwrap();
    assert_eq!(
        one,
        run(r#"timestamp(cpu{instance="b"})"#, grid, 16).unwrap()
    );
    let Value::Vector(series) = one else {
        panic!("{one:?}")
    };
    assert_eq!(
        series[0].points,
        vec![Some(300.0), Some(330.0), Some(360.0)]
    );
}
