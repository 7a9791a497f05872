//! TSBS devops query types as PromQL, over the `tsbs-cpu` shape's series, and a summary of an
//! answer so that systems can be compared on what they returned, not only how fast.
//!
//! The PromQL is TSBS' own for the types its VictoriaMetrics generator has
//! (`cmd/tsbs_generate_queries/databases/victoriametrics/devops.go`: single-groupby,
//! double-groupby, cpu-max-all). TSBS has no PromQL for `high-cpu` and `lastpoint`; here they
//! are the plain PromQL reading of TSBS' description (readings of `usage_user` over 90 for
//! one host / all hosts over 12 h; the latest reading of every cpu series).
//!
//! One PromQL string goes to every system. TSBS' `max(max_over_time({__name__=~"a|b"}[1m]))
//! by (__name__)` is not valid PromQL over several metrics: a range function drops the metric
//! name, so the series of two metrics with the same labels collide and Prometheus refuses
//! the query ("vector cannot contain metrics with the same labelset"). Over several metrics a
//! query is therefore one aggregation per metric, each labelled `metric="<field>"` with
//! `label_replace` and joined with `or`: the same series and samples read, the same answer
//! TSBS means (one series per metric, or per metric and host).
//!
//! Invariants:
//! - Q1. A query is a pure function of (type, seed, run, dataset hosts and time span): every
//!   system gets the same sequence.
//! - Q2. A window lies inside the dataset's time span whenever the span is long enough (else
//!   it is the whole span's end).

use crate::shape::{TSBS_CPU_FIELDS, XorShift64, mix64};

/// The query types, in the order they are run and reported.
pub const TYPES: [&str; 9] = [
    "single-groupby-1-1-1",
    "single-groupby-1-1-12",
    "single-groupby-5-8-1",
    "cpu-max-all-8",
    "double-groupby-1",
    "double-groupby-all",
    "high-cpu-1",
    "high-cpu-all",
    "lastpoint",
];

/// The hosts and time span the dataset covers (`strata-bench --shape tsbs-cpu`: host `i` is
/// `host_i`; samples at `[start_ms, end_ms]`).
#[derive(Clone, Copy, Debug)]
pub struct Dataset {
    pub hosts: usize,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// When a query is evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eval {
    /// `/api/v1/query` at this instant.
    Instant { at_ms: i64 },
    /// `/api/v1/query_range` over `[start_ms, end_ms]` every `step_s` seconds.
    Range {
        start_ms: i64,
        end_ms: i64,
        step_s: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub promql: String,
    pub eval: Eval,
}

impl Query {
    /// The HTTP API path and its form-encoded body.
    pub fn request(&self) -> (&'static str, String) {
        let q = format!("query={}", form_encode(&self.promql));
        match self.eval {
            Eval::Instant { at_ms } => ("/api/v1/query", format!("{q}&time={}", secs(at_ms))),
            Eval::Range {
                start_ms,
                end_ms,
                step_s,
            } => (
                "/api/v1/query_range",
                format!(
                    "{q}&start={}&end={}&step={step_s}",
                    secs(start_ms),
                    secs(end_ms)
                ),
            ),
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The `run`-th query of type `name` (one of [`TYPES`]), or `None` for an unknown type.
pub fn query(name: &str, seed: u64, run: u64, data: Dataset) -> Option<Query> {
    let index = TYPES.iter().position(|t| *t == name)?;
    let mut rng = XorShift64::new(seed ^ mix64(((index as u64) << 32) ^ run));
    let all = TSBS_CPU_FIELDS.len();
    let q = match name {
        "single-groupby-1-1-1" => group_by_time(&mut rng, data, 1, 1, 1),
        "single-groupby-1-1-12" => group_by_time(&mut rng, data, 1, 1, 12),
        "single-groupby-5-8-1" => group_by_time(&mut rng, data, 5, 8, 1),
        "cpu-max-all-8" => {
            let hosts = random_hosts(&mut rng, data.hosts, 8);
            Query {
                promql: per_metric(all, |m| {
                    format!("max(max_over_time({}[1h]))", selector(m, &hosts))
                }),
                eval: window(&mut rng, data, 8 * HOUR_MS, 3600),
            }
        }
        "double-groupby-1" | "double-groupby-all" => {
            let metrics = if name == "double-groupby-1" { 1 } else { all };
            Query {
                promql: per_metric(metrics, |m| {
                    format!("avg(avg_over_time({}[1h])) by (hostname)", selector(m, &[]))
                }),
                eval: window(&mut rng, data, 12 * HOUR_MS, 3600),
            }
        }
        "high-cpu-1" | "high-cpu-all" => {
            let hosts = if name == "high-cpu-1" {
                random_hosts(&mut rng, data.hosts, 1)
            } else {
                Vec::new()
            };
            Query {
                promql: format!("{} > 90", selector(TSBS_CPU_FIELDS[0], &hosts)),
                eval: window(&mut rng, data, 12 * HOUR_MS, 10),
            }
        }
        "lastpoint" => Query {
            promql: "{__name__=~'cpu_.+'}".to_string(),
            eval: Eval::Instant {
                at_ms: data.end_ms + OFF_GRID_MS,
            },
        },
        _ => unreachable!("every name of TYPES has a query"),
    };
    Some(q)
}

/// TSBS' GroupByTime: the max of `metrics` cpu metrics of `hosts` random hosts per minute over
/// `hours` hours.
fn group_by_time(
    rng: &mut XorShift64,
    data: Dataset,
    metrics: usize,
    hosts: usize,
    hours: i64,
) -> Query {
    let hosts = random_hosts(rng, data.hosts, hosts);
    Query {
        promql: per_metric(metrics, |m| {
            format!("max(max_over_time({}[1m]))", selector(m, &hosts))
        }),
        eval: window(rng, data, hours * HOUR_MS, 60),
    }
}

/// `query(field)` for the first `metrics` cpu fields: alone for one, else each labelled
/// `metric="<field>"` and joined with `or` (module doc: why not `by (__name__)`).
fn per_metric(metrics: usize, query: impl Fn(&str) -> String) -> String {
    if metrics == 1 {
        return query(TSBS_CPU_FIELDS[0]);
    }
    TSBS_CPU_FIELDS[..metrics]
        .iter()
        .map(|m| format!("label_replace({}, 'metric', '{m}', '', '')", query(m)))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The `cpu_<field>` series of `hosts` (all hosts when empty).
fn selector(field: &str, hosts: &[usize]) -> String {
    let host_clause = match hosts {
        [] => String::new(),
        [h] => format!("hostname='host_{h}'"),
        hs => format!(
            "hostname=~'{}'",
            hs.iter()
                .map(|h| format!("host_{h}"))
                .collect::<Vec<_>>()
                .join("|")
        ),
    };
    if host_clause.is_empty() {
        format!("cpu_{field}")
    } else {
        format!("cpu_{field}{{{host_clause}}}")
    }
}

/// `n` distinct hosts of `0..hosts`, in the order drawn (all of them when `n >= hosts`).
fn random_hosts(rng: &mut XorShift64, hosts: usize, n: usize) -> Vec<usize> {
    let mut picked = Vec::with_capacity(n.min(hosts));
    while picked.len() < n.min(hosts) {
        let h = rng.below(hosts);
        if !picked.contains(&h) {
            picked.push(h);
        }
    }
    picked
}

/// Evaluation instants are this far past a whole second, so that no window boundary falls
/// on a sample of the dataset (written on whole 10 s): there Prometheus 2.x (closed windows)
/// and 3.x, VictoriaMetrics and Strata (left-open) differ, and the answers could not be
/// compared.
const OFF_GRID_MS: i64 = 500;

/// A range evaluation of `duration_ms` starting at a random instant of the dataset, half a
/// second past a whole second (Q2).
fn window(rng: &mut XorShift64, data: Dataset, duration_ms: i64, step_s: u64) -> Eval {
    let latest_start = data.end_ms - duration_ms - OFF_GRID_MS;
    let start_ms = if latest_start <= data.start_ms {
        latest_start
    } else {
        let slack_s = (latest_start - data.start_ms) / 1000;
        data.start_ms + (rng.next_u64() % (slack_s as u64 + 1)) as i64 * 1000 + OFF_GRID_MS
    };
    Eval::Range {
        start_ms,
        end_ms: start_ms + duration_ms,
        step_s,
    }
}

/// Milliseconds as the API's decimal seconds.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What an answer held: enough to see that two systems returned the same thing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub series: u64,
    pub points: u64,
    /// Sum of every finite value returned.
    pub sum: f64,
}

impl Summary {
    pub fn add(&mut self, other: Summary) {
        self.series += other.series;
        self.points += other.points;
        self.sum += other.sum;
    }
}

/// Summarises a Prometheus API answer (`{"status":"success","data":{"resultType":…}}`);
/// an error answer or anything else is an error naming what was wrong.
pub fn summarize(body: &[u8]) -> anyhow::Result<Summary> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| anyhow::anyhow!("the answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        anyhow::bail!(
            "the answer is not a success: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let point = |p: &serde_json::Value| -> f64 {
        p[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .unwrap_or(0.0)
    };
    let mut s = Summary::default();
    let result = &v["data"]["result"];
    let series = result
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("data.result is not a list of series"))?;
    for one in series {
        s.series += 1;
        if let Some(values) = one["values"].as_array() {
            s.points += values.len() as u64;
            s.sum += values.iter().map(point).sum::<f64>();
        } else if one["value"].is_array() {
            s.points += 1;
            s.sum += point(&one["value"]);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: Dataset = Dataset {
        hosts: 1000,
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_000_000 + 13 * HOUR_MS,
    };

    #[test]
    fn queries_are_tsbs_shaped_and_repeatable() {
        for name in TYPES {
            let a = query(name, 7, 3, DATA).unwrap();
            assert_eq!(Some(a.clone()), query(name, 7, 3, DATA), "Q1: {name}");
            if let Eval::Range {
                start_ms, end_ms, ..
            } = a.eval
            {
                assert!(
                    start_ms >= DATA.start_ms && end_ms <= DATA.end_ms,
                    "Q2: {a:?}"
                );
            }
        }
        let q = query("single-groupby-5-8-1", 1, 0, DATA).unwrap();
        assert!(
            q.promql
                .starts_with("label_replace(max(max_over_time(cpu_usage_user{hostname=~'host_"),
            "{}",
            q.promql
        );
        assert_eq!(q.promql.matches(" or ").count(), 4);
        assert!(
            q.promql
                .ends_with("[1m])), 'metric', 'usage_iowait', '', '')")
        );
        assert_eq!(q.promql.matches("host_").count(), 5 * 8);
        let q = query("single-groupby-1-1-1", 1, 0, DATA).unwrap();
        assert!(
            q.promql
                .starts_with("max(max_over_time(cpu_usage_user{hostname='host_")
        );
        assert!(
            matches!(q.eval, Eval::Range { start_ms, end_ms, step_s: 60 } if end_ms - start_ms == HOUR_MS)
        );
        assert!(query("nope", 1, 0, DATA).is_none());
        assert_ne!(
            query("high-cpu-1", 1, 0, DATA),
            query("high-cpu-1", 1, 1, DATA),
            "runs differ"
        );
    }

    #[test]
    fn requests_are_form_encoded() {
        let q = Query {
            promql: "max(x{a=~'b|c'}) > 9".into(),
            eval: Eval::Range {
                start_ms: 1_500,
                end_ms: 3_000,
                step_s: 60,
            },
        };
        assert_eq!(
            q.request(),
            (
                "/api/v1/query_range",
                "query=max%28x%7Ba%3D%7E%27b%7Cc%27%7D%29+%3E+9&start=1.500&end=3.000&step=60"
                    .to_string()
            )
        );
    }

    #[test]
    fn answers_are_summarized_or_refused() {
        let s = summarize(
            br#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{},"values":[[1,"2"],[2,"NaN"]]},{"metric":{"a":"b"},"values":[[1,"3.5"]]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Summary {
                series: 2,
                points: 3,
                sum: 5.5
            }
        );
        let s = summarize(
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"4"]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Summary {
                series: 1,
                points: 1,
                sum: 4.0
            }
        );
        let e = summarize(br#"{"status":"error","errorType":"bad_data","error":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("bad_data"), "{e}");
    }
}
