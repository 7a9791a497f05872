//! Real remote-write clients into `strata dev`'s cluster: Debian's `vmagent` (package
//! `victoria-metrics`) and `prometheus` run as child processes on loopback and remote-write
//! into the cluster's HTTP API; every sample they sent must be stored, with the same timestamp
//! and value bits, on every replica of its shard, and nothing else for those series.
//!
//! - vmagent: the test pushes a known set of samples (Prometheus text with explicit millisecond
//!   timestamps) into vmagent's import API; vmagent forwards them with Prometheus remote write
//!   (Snappy protobuf). The stored series must be exactly the pushed ones: vmagent 1.79 adds no
//!   label of its own to imported samples.
//! - Prometheus: it scrapes itself every second and remote-writes everything (samples, and
//!   metadata in separate requests). Prometheus' own answer to `{job="prometheus"}[5m]` at a
//!   fixed instant (raw samples, stale markers left out) must equal what the cluster stores for
//!   those series up to that instant, stale markers left out.
//!
//! When a binary is missing the test prints a loud skip notice and passes, unless `CI=true`
//! (`.ci/run` installs both packages), where it fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use strata_node::cluster::Cluster;
use strata_raft::registry::Consistency;
use strata_raft::types::{META_GROUP, NodeId};
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::series::is_stale_marker;
use strata_shard::{Clock, Labels, SeriesKey, SystemClock, Tenant};

mod common;
use common::TempDir;
use common::prom::{
    ClientProcess, assert_same_instant, assert_same_range, client_binary, free_port, http,
    json_point, start_prometheus, url_encode,
};

/// How long the stored samples may take to match what a client sent.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls.
const POLL_PAUSE: Duration = Duration::from_millis(250);

/// A value as compared: its bit pattern, except that every NaN other than the stale marker
/// counts as one (Go's `math.NaN()` and Rust's `f64::NAN` differ in payload, and the text and
/// JSON forms carry none).
fn value_bits(v: f64) -> u64 {
    if v.is_nan() && !is_stale_marker(v) {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// Series → `(timestamp ms, value bits)` in time order.
type SampleSet = BTreeMap<Labels, Vec<(i64, u64)>>;

/// What one node's replicas of every shard group store for the default tenant's series
/// matching `matchers`, samples with `min_ts <= ts <= max_ts`, stale markers left out; and how
/// many stale markers were left out.
async fn stored(
    cluster: &Cluster,
    matchers: &[Matcher],
    min_ts: i64,
    max_ts: i64,
) -> BTreeMap<NodeId, (SampleSet, usize)> {
    let tenant = Tenant::new("anonymous").unwrap();
    let groups = cluster.groups().await.unwrap();
    let mut out = BTreeMap::new();
    for node in cluster.nodes() {
        let mut set = SampleSet::new();
        let mut stale = 0;
        for &group in groups.iter().filter(|&&g| g != META_GROUP) {
            let in_group = node
                .read(group, Consistency::Any, |engine| {
                    let mut found = Vec::new();
                    for labels in engine.series(&tenant, matchers, min_ts, max_ts) {
                        let key = SeriesKey::new(tenant.clone(), labels.clone());
                        let samples = engine.read_series(&key, min_ts, max_ts).unwrap();
                        found.push((labels, samples));
                    }
                    found
                })
                .await
                .unwrap_or_else(|e| panic!("node {}: read group {group}: {e}", node.node()));
            for (labels, samples) in in_group {
                let kept: Vec<(i64, u64)> = samples
                    .iter()
                    .filter(|s| !is_stale_marker(s.value))
                    .map(|s| (s.ts_ms, value_bits(s.value)))
                    .collect();
                stale += samples.len() - kept.len();
                let previous = set.insert(labels.clone(), kept);
                assert!(
                    previous.is_none(),
                    "node {}: series {labels} is stored in two shard groups",
                    node.node()
                );
            }
        }
        out.insert(node.node(), (set, stale));
    }
    out
}

/// Empty when `actual` equals `expected`; else a report of the missing, extra and differing
/// samples and series (at most a few of each).
fn diff(expected: &SampleSet, actual: &SampleSet) -> String {
    const SHOWN_MAX: usize = 20;
    let mut lines = Vec::new();
    let mut push = |line: String| lines.push(line);
    for (labels, want) in expected {
        let got = actual.get(labels).map_or(&[][..], |v| v.as_slice());
        let got_map: BTreeMap<i64, u64> = got.iter().copied().collect();
        let want_map: BTreeMap<i64, u64> = want.iter().copied().collect();
        for (ts, bits) in &want_map {
            match got_map.get(ts) {
                None => push(format!(
                    "missing {labels} @{ts} = {}",
                    f64::from_bits(*bits)
                )),
                Some(b) if b != bits => push(format!(
                    "different {labels} @{ts}: sent {} ({bits:#x}), stored {} ({b:#x})",
                    f64::from_bits(*bits),
                    f64::from_bits(*b)
                )),
                Some(_) => {}
            }
        }
        for (ts, bits) in got_map.iter().filter(|(ts, _)| !want_map.contains_key(ts)) {
            push(format!("extra {labels} @{ts} = {}", f64::from_bits(*bits)));
        }
        if got.len() != got_map.len() {
            push(format!("{labels}: two samples with one timestamp"));
        }
    }
    for (labels, got) in actual.iter().filter(|(l, _)| !expected.contains_key(l)) {
        push(format!("extra series {labels} ({} samples)", got.len()));
    }
    let total = lines.len();
    lines.truncate(SHOWN_MAX);
    if total > SHOWN_MAX {
        lines.push(format!("... and {} more", total - SHOWN_MAX));
    }
    lines.join("\n")
}

/// Polls the cluster until every node stores exactly `expected` for the series matching
/// `matchers` (stale markers aside) in `[min_ts, max_ts]`, bounded by [`CONVERGE_TIMEOUT`].
/// `expected` is re-read on each poll. Returns the last `expected` and the stale markers
/// stored per node.
async fn wait_until_stored<F, Fut>(
    cluster: &Cluster,
    what: &str,
    matchers: &[Matcher],
    min_ts: i64,
    max_ts: i64,
    mut expected: F,
) -> (SampleSet, BTreeMap<NodeId, usize>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = SampleSet>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let want = expected().await;
        let stored = stored(cluster, matchers, min_ts, max_ts).await;
        let mismatches: Vec<String> = stored
            .iter()
            .filter_map(|(node, (got, _))| {
                let d = diff(&want, got);
                (!d.is_empty()).then(|| format!("node {node}:\n{d}"))
            })
            .collect();
        if mismatches.is_empty() {
            let stale = stored.into_iter().map(|(n, (_, stale))| (n, stale));
            return (want, stale.collect());
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{what}: the cluster does not store exactly what was sent after \
                 {CONVERGE_TIMEOUT:?} ({} series, {} samples sent):\n{}",
                want.len(),
                want.values().map(Vec::len).sum::<usize>(),
                mismatches.join("\n")
            );
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

/// The vmagent test's data: series × timestamps, with the exposition text that carries them.
fn vmagent_samples(base_ms: i64) -> (String, SampleSet) {
    // Gauge values as exposition text and as the float it denotes: decimals, extremes,
    // infinities and NaN. vmagent's text parser is not correctly rounded for every decimal:
    // it reads "1.013e3" as 1.013 × 1000 = 1012.9999999999999 and "1.23456789e5" one bit
    // low too (VictoriaMetrics documents that it may not keep a float's last bits), so the
    // text uses plain decimals, or an exponent that it parses exactly.
    const GAUGES: [(&str, f64); 12] = [
        ("0", 0.0),
        ("1", 1.0),
        ("-2.5", -2.5),
        ("0.1", 0.1),
        ("1e-9", 1e-9),
        ("123456.789", 123456.789),
        ("1.7976931348623157e308", f64::MAX),
        ("+Inf", f64::INFINITY),
        ("-Inf", f64::NEG_INFINITY),
        ("5e-324", 5e-324),
        ("0.6666666666666666", 2.0 / 3.0),
        ("NaN", f64::NAN),
    ];
    let mut text = String::new();
    let mut expected = SampleSet::new();
    for host in 0..4_i64 {
        for (metric, kind) in [
            ("compat_vmagent_requests_total", "counter"),
            ("compat_vmagent_temperature_celsius", "gauge"),
        ] {
            let instance = format!("host-{host}:9100");
            let labels = Labels::from_pairs(&[
                ("__name__", metric),
                ("instance", &instance),
                ("job", "compat"),
                ("kind", kind),
            ])
            .unwrap();
            let mut samples = Vec::new();
            for k in 0..6_i64 {
                // Millisecond offsets, so a client that rounds timestamps to seconds is caught.
                let ts = base_ms + k * 10_000 + host * 7 + 1;
                let (v_text, v) = match kind {
                    "counter" => {
                        let v = host * 1000 + k * k * 13;
                        (v.to_string(), v as f64)
                    }
                    _ => {
                        let (t, v) = GAUGES[(host * 6 + k) as usize % GAUGES.len()];
                        (t.to_string(), v)
                    }
                };
                text.push_str(&format!(
                    "{metric}{{instance=\"{instance}\",job=\"compat\",kind=\"{kind}\"}} \
                     {v_text} {ts}\n"
                ));
                samples.push((ts, value_bits(v)));
            }
            expected.insert(labels, samples);
        }
    }
    (text, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmagent_remote_write_stores_every_imported_sample() {
    let Some(vmagent) = client_binary("vmagent", "victoria-metrics") else {
        return;
    };
    let dir = TempDir::new("vmagent");
    let mut cluster = Cluster::start_dev(&dir.0.join("cluster"), 4, 0)
        .await
        .unwrap();
    let http_addrs = cluster.serve_http(0).await.unwrap();
    let strata = http_addrs[&2];

    let vm_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut client = ClientProcess::spawn(
        "vmagent",
        &vmagent,
        &[
            format!("-httpListenAddr={vm_addr}"),
            format!("-remoteWrite.url=http://{strata}/api/v1/write"),
            format!(
                "-remoteWrite.tmpDataPath={}",
                dir.0.join("vmagent-queue").display()
            ),
            "-remoteWrite.flushInterval=200ms".into(),
        ],
        dir.0.join("vmagent.log"),
    );
    client.wait_ready(vm_addr, "/health").await;

    // A minute old and older: inside what the write path accepts, and in the past.
    let base_ms = SystemClock.now_ms() / 1000 * 1000 - 90_000;
    let (text, expected) = vmagent_samples(base_ms);
    let (status, body) = http(
        vm_addr,
        "POST",
        "/api/v1/import/prometheus",
        text.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        status,
        204,
        "vmagent refused the import: {}",
        String::from_utf8_lossy(&body)
    );

    let matchers = [Matcher::new(MatchOp::RegexMatch, "__name__", "compat_vmagent_.*").unwrap()];
    let (_, stale) = wait_until_stored(&cluster, "vmagent", &matchers, 0, i64::MAX / 4, || {
        std::future::ready(expected.clone())
    })
    .await;
    assert!(
        stale.values().all(|&n| n == 0),
        "vmagent sent stale markers for imported samples: {stale:?}"
    );

    client.assert_running();
    drop(client);
    cluster.shutdown().await;
}

/// Prometheus' raw samples of the range selector `selector` at `at_ms` (stale markers are never
/// in a query answer).
async fn prometheus_samples(prom: SocketAddr, selector: &str, at_ms: i64) -> SampleSet {
    let target = format!(
        "/api/v1/query?query={}&time={}.{:03}",
        url_encode(selector),
        at_ms.div_euclid(1000),
        at_ms.rem_euclid(1000)
    );
    let (status, body) = http(prom, "GET", &target, &[]).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "Prometheus answered {target} with {text}");
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("Prometheus' answer to {target} is no JSON ({e}): {text}"));
    assert_eq!(answer["data"]["resultType"], "matrix", "{text}");
    let mut out = SampleSet::new();
    for series in answer["data"]["result"].as_array().unwrap() {
        let pairs: Vec<(&str, &str)> = series["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let labels = Labels::from_pairs(&pairs).unwrap();
        let samples = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                let (ts, v) = json_point(pair);
                (ts, value_bits(v))
            })
            .collect();
        out.insert(labels, samples);
    }
    out
}

/// Prometheus' `prometheus_remote_storage_*_total` counters from its own `/metrics`, summed
/// over their labels.
async fn prometheus_counters(prom: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http(prom, "GET", "/metrics", &[]).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "Prometheus' /metrics: {text}");
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("prometheus_remote_storage_"))
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (true, Some(v)) = (name.ends_with("_total"), value) {
            *out.entry(name.to_string()).or_default() += v;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_stores_every_scraped_sample() {
    let Some(prometheus) = client_binary("prometheus", "prometheus") else {
        return;
    };
    let dir = TempDir::new("prometheus");
    let mut cluster = Cluster::start_dev(&dir.0.join("cluster"), 4, 0)
        .await
        .unwrap();
    let http_addrs = cluster.serve_http(0).await.unwrap();
    let strata = http_addrs[&1];

    let (mut client, prom) = start_prometheus(
        &prometheus,
        &dir.0,
        |prom| {
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      \
                 - targets: ['{prom}']\n\
                 remote_write:\n  - url: http://{strata}/api/v1/write\n    queue_config:\n      \
                 batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n    \
                 metadata_config:\n      send_interval: 1s\n"
            )
        },
        &[],
    )
    .await;

    // A fixed instant a little in the past, so that no scrape at or before it is still being
    // committed by Prometheus (a scrape times out after 1 s), once Prometheus has scraped
    // itself a few times by then (its first scrape waits for target discovery, about 5 s).
    // Prometheus 2.x's range selector is closed, [at - 5m, at], like the cluster read below;
    // nothing is older than 5 minutes.
    // 16: the queries compared below need more than 10 s of scrapes before the instant they
    // are evaluated at (2 s before this one): `max_over_time(rate(…[10s])[30s:5s])` takes the
    // rate at the last multiple of 5 s, up to 5 s earlier still. With 8 scrapes Prometheus
    // sometimes had no such rate and answered nothing (a CI run of 2026-12-04).
    const SCRAPES_MIN: usize = 16;
    const SETTLE_MS: i64 = 3_000;
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    let at_ms = loop {
        client.assert_running();
        let at_ms = SystemClock.now_ms() - SETTLE_MS;
        let up = prometheus_samples(prom, "up[5m]", at_ms).await;
        let scrapes = up.values().map(Vec::len).sum::<usize>();
        if scrapes >= SCRAPES_MIN {
            break at_ms;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus scraped itself {scrapes} times in {CONVERGE_TIMEOUT:?}, want {SCRAPES_MIN}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let from_ms = at_ms - 5 * 60_000;
    let selector = "{job=\"prometheus\"}[5m]";
    let matchers = [Matcher::equal("job", "prometheus")];
    let (sent, stale) =
        wait_until_stored(&cluster, "Prometheus", &matchers, from_ms, at_ms, || {
            prometheus_samples(prom, selector, at_ms)
        })
        .await;

    // The comparison covered real data: Prometheus' own few hundred series, several scrapes.
    // (`up` may be 0 for a scrape that timed out on a loaded machine; its value was compared
    // above like any other.)
    let up = Labels::from_pairs(&[
        ("__name__", "up"),
        ("instance", &prom.to_string()),
        ("job", "prometheus"),
    ])
    .unwrap();
    let ups = &sent[&up];
    assert!(ups.len() >= SCRAPES_MIN, "{ups:?}");
    assert!(
        sent.len() > 100,
        "only {} series from Prometheus",
        sent.len()
    );
    // Prometheus' own account of its remote writes: nothing refused (a 4xx drops a batch),
    // and its metadata-only requests (sent every second here) accepted too.
    let counters = prometheus_counters(prom).await;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0.0);
    for failed in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_metadata_failed_total",
    ] {
        assert_eq!(counter(failed), 0.0, "{failed}: {counters:?}");
    }
    assert!(
        counter("prometheus_remote_storage_metadata_total") > 0.0,
        "Prometheus sent no metadata: {counters:?}"
    );
    eprintln!(
        "Prometheus: {} series, {} samples up to {at_ms} stored on every replica (stale \
         markers stored per node: {stale:?}); Prometheus sent {} samples ({} retried) and {} \
         metadata entries",
        sent.len(),
        sent.values().map(Vec::len).sum::<usize>(),
        counter("prometheus_remote_storage_samples_total"),
        counter("prometheus_remote_storage_samples_retried_total"),
        counter("prometheus_remote_storage_metadata_total"),
    );

    // The same PromQL on the same data, answered by Prometheus and by the cluster (any node).
    // The instant is half a second off the scrape phase, so no sample sits exactly on a
    // window's boundary: there Prometheus 2.42 (closed windows) and 3.x (left-open) differ.
    let phase = ups[0].0.rem_euclid(1000);
    let t_ms = (at_ms - 2_000).div_euclid(1000) * 1000 + (phase + 500) % 1000;
    let mut compared = 0;
    for q in DIFFERENTIAL_QUERIES {
        let strata = http_addrs[&(1 + compared as NodeId % 3)];
        let answered = assert_same_instant(prom, strata, q, t_ms, false).await;
        assert!(
            answered > 0,
            "{q}: Prometheus answered nothing, so this compares nothing"
        );
        compared += 1;
    }
    for q in DIFFERENTIAL_RANGE_QUERIES {
        let strata = http_addrs[&(1 + compared as NodeId % 3)];
        let answered = assert_same_range(prom, strata, q, (t_ms - 6_000, t_ms, 2_000)).await;
        assert!(answered > 0, "{q}: Prometheus answered nothing");
        compared += 1;
    }
    eprintln!("PromQL: {compared} queries answered alike by Prometheus and Strata at {t_ms}");

    // promtool, Prometheus' own query client, against the cluster.
    let promtool = client_binary("promtool", "prometheus").expect("promtool ships with prometheus");
    let server = format!("http://{strata}");
    let t = format!("{}.{:03}", t_ms / 1000, t_ms % 1000);
    let out = Command::new(&promtool)
        .args(["query", "instant", "--time", &t, &server, "count(up)"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("{} => 1 @["),
        "promtool query instant: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 20 s in 5 s steps; `up` exists only since Prometheus' first scrape, seconds ago, so the
    // steps before it answer 0 and the last one 1.
    let (start, end) = (format!("{}", t_ms / 1000 - 20), format!("{}", t_ms / 1000));
    let out = Command::new(&promtool)
        .args([
            "query",
            "range",
            "--start",
            &start,
            "--end",
            &end,
            "--step",
            "5s",
            &server,
            "count(up) or vector(0)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.ends_with(&format!("1 @[{end}]\n"))
            && text.matches(" @[").count() == 5,
        "promtool query range: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    client.assert_running();
    drop(client);
    cluster.shutdown().await;
}

/// Queries over Prometheus' own metrics that both must answer alike (functions 2.42 has).
/// Left out: `rate`/`increase` of counters that start near zero inside the window (here, most
/// of Prometheus' counters, all a few seconds old): 3.x applies the zero-point clamp after the
/// half-interval fallback and 2.42 before, so their extrapolations differ. Strata follows 3.x;
/// its own tests (`strata_shard::rangefn`) pin that. Also left out: `atan2`, which keeps the
/// metric name in 2.42 and drops it since 2.46 (prometheus/prometheus#12595), as Strata does
/// (`query-fanout/tests/eval.rs`).
const DIFFERENTIAL_QUERIES: &[&str] = &[
    "up",
    "count(up)",
    "sum by (job) (up)",
    "process_resident_memory_bytes / 1024 / 1024",
    "rate(process_cpu_seconds_total[30s]) * 100",
    "sum(irate(prometheus_http_requests_total[1m]))",
    "increase(process_cpu_seconds_total[1m])",
    "rate(go_memstats_alloc_bytes_total[30s])",
    "avg_over_time(go_goroutines[30s])",
    "max_over_time(go_memstats_alloc_bytes[1m]) > bool 0",
    "min_over_time(go_goroutines[1m]) <= go_goroutines",
    "count_over_time(up[1m])",
    "delta(go_goroutines[30s])",
    "changes(go_memstats_alloc_bytes[1m])",
    "resets(process_cpu_seconds_total[1m])",
    "irate(process_cpu_seconds_total[30s])",
    "deriv(process_resident_memory_bytes[1m])",
    "predict_linear(process_resident_memory_bytes[1m], 60)",
    "quantile_over_time(0.5, go_goroutines[1m])",
    "stddev_over_time(go_goroutines[1m])",
    "last_over_time(go_goroutines[1m])",
    "histogram_quantile(0.9, sum by (le) (prometheus_http_request_duration_seconds_bucket))",
    "sum by (quantile) (go_gc_duration_seconds)",
    "topk(3, go_memstats_alloc_bytes + go_goroutines)",
    "bottomk(2, prometheus_tsdb_head_series or up)",
    "quantile(0.5, go_goroutines)",
    "count_values(\"v\", up)",
    "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
    "go_goroutines and on(job) up",
    "up unless on(job) go_goroutines > 1e9",
    "go_goroutines * on(instance, job) group_left up",
    "max_over_time(rate(process_cpu_seconds_total[10s])[30s:5s])",
    "abs(delta(go_goroutines[30s])) + ceil(go_goroutines / 3) - floor(go_goroutines / 3)",
    "clamp(go_goroutines, 5, 10)",
    "absent(nonexistent_metric{job=\"x\"})",
    "scalar(count(up)) * vector(2)",
    "year(vector(time())) + minute(vector(time()))",
    "sum without (instance) (up)",
    "max by (job) (go_goroutines)",
    "min(go_goroutines)",
    "avg(go_memstats_heap_inuse_bytes)",
    "group by (job) (up)",
    "stdvar(go_goroutines)",
    "count by (le) (prometheus_http_request_duration_seconds_bucket)",
    "sum by (handler) (prometheus_http_requests_total)",
    "topk(5, prometheus_http_requests_total)",
    "bottomk(3, prometheus_http_requests_total)",
    "quantile(0.9, prometheus_http_requests_total)",
    "quantile(0, go_goroutines)",
    "count_values(\"x\", prometheus_http_requests_total)",
    "go_memstats_alloc_bytes / go_memstats_sys_bytes",
    "2 ^ 3 + go_goroutines % 7",
    "go_goroutines == bool go_goroutines",
    "go_goroutines != 5",
    "go_memstats_alloc_bytes > bool go_memstats_heap_alloc_bytes",
    "sum(go_goroutines) by (job) / on(job) count(up) by (job)",
    "up or go_goroutines",
    "go_goroutines unless on(job) up{job=\"x\"}",
    "prometheus_http_requests_total * on(instance, job) group_left(version) prometheus_build_info",
    "prometheus_build_info * on(instance, job) group_right prometheus_http_requests_total",
    "sqrt(go_goroutines)",
    "exp(up)",
    "ln(go_goroutines)",
    "log2(go_goroutines)",
    "log10(go_memstats_alloc_bytes)",
    "sgn(go_goroutines - 20)",
    "round(go_memstats_alloc_bytes / 1e6, 0.1)",
    "round(go_goroutines / 7)",
    "clamp_min(go_goroutines, 50)",
    "clamp_max(go_goroutines, 5)",
    "sort(go_goroutines)",
    "sort_desc(prometheus_http_requests_total)",
    "label_join(up, \"foo\", \",\", \"job\", \"instance\")",
    "day_of_week(vector(time())) + days_in_month(vector(time())) + month() + hour()",
    "absent_over_time(nonexistent[1m])",
    "present_over_time(up[30s])",
    "sum_over_time(up[30s])",
    "max_over_time(go_goroutines[20s])",
    "stdvar_over_time(go_goroutines[1m])",
    "count_over_time(prometheus_http_requests_total[1m])",
    "idelta(go_goroutines[30s])",
    "irate(go_memstats_alloc_bytes_total[30s])",
    "changes(up[1m])",
    "delta(go_memstats_alloc_bytes[20s])",
    "deriv(go_goroutines[30s])",
    "increase(go_memstats_mallocs_total[20s])",
    "rate(go_memstats_frees_total[30s])",
    "scalar(go_goroutines)",
    "avg_over_time(go_goroutines[30s:2s])",
    "min_over_time(sum(go_goroutines)[20s:5s])",
    "rate(go_memstats_alloc_bytes_total[10s:1s])",
    "go_goroutines offset 3s",
    "rate(process_cpu_seconds_total[20s] offset 2s)",
    "go_goroutines @ end()",
    "count(count by (__name__) ({job=\"prometheus\"}))",
    "sum(count_over_time(go_goroutines[5s]))",
    "{__name__=~\"go_gc.*\", job=\"prometheus\"}",
    "{job=~\"prom.*\", __name__!~\"go_.*|process_.*|prometheus_.*|net_.*|promhttp_.*\"}",
    "up{job!=\"x\", instance=~\".+\"}",
    "histogram_quantile(0.5, prometheus_http_request_duration_seconds_bucket)",
    "histogram_quantile(0.99, sum by (le, handler) (prometheus_http_response_size_bytes_bucket))",
    "-go_goroutines",
    "go_goroutines > 10 < 100000",
    "(go_goroutines + 1) * 2 / 3",
    "sum(up) == bool count(up)",
    "1 + 2 * 3",
    "time() - process_start_time_seconds",
    "max_over_time(deriv(go_goroutines[10s])[30s:3s])",
    "sum by (job) (rate(process_cpu_seconds_total[30s])) * 1000",
];

/// Range queries both must answer alike over the last seconds before the instant.
const DIFFERENTIAL_RANGE_QUERIES: &[&str] = &[
    "go_goroutines",
    "sum(go_memstats_alloc_bytes)",
    "rate(process_cpu_seconds_total[20s])",
    "max_over_time(go_goroutines[10s])",
    "count by (job) (up)",
    "go_goroutines / on(job) group_left count(up) by (job)",
    "avg_over_time(go_goroutines[10s:2s])",
    "time()",
];
