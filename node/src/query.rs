//! PromQL on a node: the cluster [`Source`] the evaluator (`strata_query_fanout`) selects
//! through, and Prometheus' HTTP query API on top of it.
//!
//! ## Fan-out ([`ClusterSource`])
//! A partial query goes to every shard the query's time range may touch (every shard of every
//! ring epoch it meets, [`Writer::shards_for_query`]), all at once, each under the request's
//! deadline. A shard is asked on this node if it hosts a replica, else (or when the local
//! replica cannot serve the consistency asked, e.g. it is not the leader for a strong read)
//! on the nodes of its placement in turn, over the Raft transport's `Query` RPC. The answers
//! merge with `PartialResult::merge` (associative, so arrival order does not matter).
//! - F1. A malformed query (refused by a shard) fails the whole request at once.
//! - F2. A shard that cannot answer fails the request, naming the shard and why, unless the
//!   request accepts a partial answer (`partial_response=true`): then the answer leaves the
//!   shard out and carries a warning naming it.
//! - F3. A shard has three quarters of the request's `timeout` (default 2 min) to answer, so a
//!   missing shard is reported as such (F2) before the whole request times out.
//!
//! ## Guard rails (per tenant: the node's `[query]` defaults, overridden by the meta group)
//! - G1. A query runs at most `timeout_ms`; a request's `timeout` can only lower it.
//! - G2. A query fetches at most `series_max` series (0: no limit) and `samples_max` points
//!   (series × instants of every selection, groups for pushed-down aggregations) from the
//!   shards; past either it fails with 422 `execution` naming the limit and the tenant.
//! - G3. At most `concurrent_max` queries of one tenant run at once on a node; more wait,
//!   within their timeout, then fail with 503 naming the limit.
//!
//! ## HTTP API (Prometheus' `/api/v1/query`, `/api/v1/query_range`, `series`, `labels`,
//! `label/<name>/values`, `status/buildinfo`)
//! Parameters come from the URL and, for POST, a form-encoded body, as Prometheus takes
//! them; times are RFC 3339 or Unix seconds, durations Prometheus durations or seconds.
//! Extra parameters: `consistency` (`strong`, the default; `leader`; `any`) and
//! `partial_response`. The metadata endpoints select with a one-instant partial query of
//! `present_over_time` over `[start, end]` (default: 1970 until now). Errors are Prometheus' JSON (`status`, `errorType`, `error`) with its
//! status codes: 400 `bad_data` (the request or the query text), 422 `execution`, 503
//! `unavailable` (shards did not answer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{BoxFuture, join_all};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Value as Json, json};
use strata_query_fanout::TimeGrid;
use strata_query_fanout::eval::{QueryError, QueryOptions, Series, Value, query};
use strata_query_fanout::source::{Answer, Source, SourceError};
use strata_raft::network::RaftHandler;
use strata_raft::network::grpc::GrpcRouter;
use strata_raft::registry::{Consistency, ReadError};
use strata_raft::types::{GroupId, NodeId, NodeInfo};
use strata_router::ring::group_of;
use strata_router::write::Writer;
use strata_shard::partial::{self, GRID_STEPS_MAX, PartialResult};
use strata_shard::query::PartialQuery;
use strata_shard::{Clock, Tenant};
use tokio::sync::Semaphore;

use crate::config::QuerySection;
use crate::ingest::TENANT_HEADER;
use crate::server::Node;

/// Longest a query may run when the request names no `timeout` (Prometheus' default).
pub const QUERY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);

/// What the query front end needs of its node.
pub struct QueryService {
    pub registry: Node,
    pub router: GrpcRouter,
    pub writer: Arc<Writer<GrpcRouter>>,
    pub clock: Arc<dyn Clock>,
    pub multi_tenant: bool,
    /// Every tenant's guard rails unless the meta group overrides them (G1–G3).
    pub limits: QuerySection,
    /// Per tenant: its concurrency limit and the semaphore enforcing it.
    pub running: Mutex<BTreeMap<Tenant, (u64, Arc<Semaphore>)>>,
}

/// One request's view of the cluster (module doc, F1–F3, G2).
pub struct ClusterSource<'a> {
    service: &'a QueryService,
    tenant: Tenant,
    limits: QuerySection,
    /// Series and points fetched so far by this request (G2).
    fetched: Mutex<(u64, u64)>,
    consistency: Consistency,
    /// How long the whole request may take.
    deadline: Duration,
    /// How long one shard may take (F3).
    shard_deadline: Duration,
    partial_ok: bool,
}

impl Source for ClusterSource<'_> {
    fn select(&self, q: PartialQuery) -> BoxFuture<'_, Result<Answer, SourceError>> {
        Box::pin(async move {
            partial::validate(&q)?;
            let s = self.service;
            let shards = s
                .writer
                .shards_for_query(q.window_start_ms(), q.grid.end_ms)
                .await
                .map_err(|e| SourceError::Unavailable(format!("cannot route the query: {e}")))?;
            let (placements, nodes) = s
                .registry
                .read_meta(Consistency::Any, |m| {
                    (m.placements().clone(), m.nodes().clone())
                })
                .await
                .map_err(|e| {
                    SourceError::Unavailable(format!("cannot read the placements: {e}"))
                })?;
            let asks = shards.iter().map(|shard| {
                let group = group_of(*shard);
                let targets: Vec<(NodeId, NodeInfo)> = placements
                    .get(&group)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| nodes.get(n).map(|i| (*n, i.clone())))
                    .collect();
                let ask = self.ask(group, &q, targets);
                async move {
                    (
                        shard.0,
                        tokio::time::timeout(self.shard_deadline, ask).await,
                    )
                }
            });
            let mut merged: Option<PartialResult> = None;
            let mut failures = Vec::new();
            for (shard, answer) in join_all(asks).await {
                match answer {
                    Ok(Ok(result)) => match &mut merged {
                        None => merged = Some(result),
                        Some(acc) => acc.merge(result)?,
                    },
                    Ok(Err(ReadError::Invalid { reason, .. })) => {
                        return Err(SourceError::Invalid(format!("shard {shard}: {reason}")));
                    }
                    Ok(Err(e)) => failures.push(format!("shard {shard}: {e}")),
                    Err(_) => failures.push(format!(
                        "shard {shard}: no answer within {:?}",
                        self.shard_deadline
                    )),
                }
            }
            if !failures.is_empty() && !self.partial_ok {
                return Err(SourceError::Unavailable(format!(
                    "{} of {} shards did not answer: {}",
                    failures.len(),
                    shards.len(),
                    failures.join("; ")
                )));
            }
            let result = merged.unwrap_or_else(|| empty_result(&q));
            self.count(&result)?;
            Ok(Answer {
                result,
                warnings: failures
                    .into_iter()
                    .map(|f| format!("partial result: {f}"))
                    .collect(),
            })
        })
    }
}

/// What a query selecting nothing answers (all shards failed, partial answers allowed).
fn empty_result(q: &PartialQuery) -> PartialResult {
    match &q.aggregation {
        None => PartialResult::Series(Vec::new()),
        Some(a) => PartialResult::Groups {
            op: a.op,
            grid: q.grid,
            groups: Vec::new(),
        },
    }
}

impl ClusterSource<'_> {
    /// Adds what a merged answer holds to what the request fetched, and refuses it past the
    /// tenant's limits (G2): series (groups, for a pushed-down aggregation) and points.
    fn count(&self, result: &PartialResult) -> Result<(), SourceError> {
        let (series, points) = match result {
            PartialResult::Series(v) => (v.len(), v.iter().map(|s| s.points.len()).sum::<usize>()),
            PartialResult::Groups { groups, .. } => (
                groups.len(),
                groups
                    .iter()
                    .map(|g| g.points.iter().flatten().count())
                    .sum(),
            ),
        };
        let mut fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        fetched.0 += series as u64;
        fetched.1 += points as u64;
        let (l, t) = (&self.limits, &self.tenant);
        if l.series_max > 0 && fetched.0 > l.series_max {
            return Err(SourceError::Limit(format!(
                "the query fetched {} series, more than the limit of {} for tenant {t} \
                 (query_series_max); select fewer series",
                fetched.0, l.series_max
            )));
        }
        if fetched.1 > l.samples_max {
            return Err(SourceError::Limit(format!(
                "the query fetched {} points, more than the limit of {} for tenant {t} \
                 (query_samples_max); shorten the range, raise the step or select fewer series",
                fetched.1, l.samples_max
            )));
        }
        Ok(())
    }

    /// Asks one shard group: here if this node hosts a replica, then the placement's nodes.
    async fn ask(
        &self,
        group: GroupId,
        q: &PartialQuery,
        targets: Vec<(NodeId, NodeInfo)>,
    ) -> Result<PartialResult, ReadError> {
        let s = self.service;
        let me = s.registry.node();
        let mut last = ReadError::NoSuchGroup { node: me, group };
        if s.registry.groups().contains(&group) {
            match RaftHandler::query(&*s.registry, group, self.consistency, q.clone()).await {
                Ok(r) => return Ok(r),
                Err(e @ ReadError::Invalid { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        for (node, info) in targets.into_iter().filter(|(n, _)| *n != me) {
            match s
                .router
                .query(node, &info, group, self.consistency, q, self.shard_deadline)
                .await
            {
                Ok(r) => return Ok(r),
                Err(e @ ReadError::Invalid { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The query API's routes.
pub fn routes(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/query", get(instant_query).post(instant_query))
        .route("/api/v1/query_range", get(range_query).post(range_query))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(label_names).post(label_names))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(service)
}

type Params = BTreeMap<String, String>;

/// The URL's parameters and a POST's form-encoded ones; the body wins, as Prometheus reads
/// Go's `r.FormValue`, which prefers it.
fn params(query: Option<String>, body: &Bytes) -> Result<Params, ApiError> {
    Ok(param_list(query, body)?.into_iter().collect())
}

/// A query that failed, as Prometheus reports it (HTTP status, `errorType`, `error`).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn bad_data(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message,
        }
    }

    fn internal(message: String) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let (status, kind) = match &e {
            QueryError::Parse(_) | QueryError::Source(SourceError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "bad_data")
            }
            QueryError::Execution(_) | QueryError::Source(SourceError::Limit(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "execution")
            }
            QueryError::Source(SourceError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        ApiError {
            status,
            kind,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        json_response(self.status, &body)
    }
}

/// A Prometheus time parameter: Unix seconds (fractions allowed) or RFC 3339.
fn time_param(p: &Params, name: &str, default_ms: Option<i64>) -> Result<i64, ApiError> {
    let Some(text) = p.get(name) else {
        return default_ms.ok_or_else(|| ApiError::bad_data(format!("missing parameter {name:?}")));
    };
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    parse_rfc3339_ms(text).ok_or_else(|| {
        ApiError::bad_data(format!(
            "invalid parameter {name:?}: cannot parse {text:?} to a valid timestamp"
        ))
    })
}

/// A Prometheus duration parameter: seconds (fractions allowed) or a duration like `1m30s`.
fn duration_param(p: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(text) = p.get(name) else {
        return Ok(None);
    };
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok(Some((secs * 1000.0).round() as i64));
    }
    parse_duration_ms(text).map(Some).ok_or_else(|| {
        ApiError::bad_data(format!(
            "invalid parameter {name:?}: cannot parse {text:?} to a valid duration"
        ))
    })
}

/// `1h30m`, `15s`, `500ms`, … (Prometheus' units: ms s m h d w y).
fn parse_duration_ms(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// RFC 3339 (`2026-12-03T17:00:00Z`, `…T17:00:00.5+01:00`) to Unix milliseconds.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let end = text[i + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(text.len(), |e| i + 1 + e);
        let frac = &text[i + 1..end];
        let padded = format!("{frac:0<3}");
        millis = padded.get(0..3)?.parse::<i64>().ok()?;
        i = end;
    }
    let offset_s = match text.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600
                + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second - offset_s) * 1000) + millis)
}

impl QueryService {
    /// The tenant's guard rails: the node's `[query]` defaults, overridden by the meta
    /// group's limits for the tenant where set.
    async fn limits_of(&self, tenant: &Tenant) -> QuerySection {
        let mut l = self.limits.clone();
        let overrides = self
            .registry
            .read_meta(Consistency::Any, |m| m.tenant_limits(tenant).copied())
            .await
            .ok()
            .flatten();
        if let Some(o) = overrides {
            l.timeout_ms = o.query_timeout_ms.unwrap_or(l.timeout_ms);
            l.series_max = o.query_series_max.unwrap_or(l.series_max);
            l.samples_max = o.query_samples_max.unwrap_or(l.samples_max);
            l.concurrent_max = o.concurrent_queries_max.unwrap_or(l.concurrent_max);
        }
        l
    }

    /// The semaphore bounding the tenant's running queries at `limit` (a new one when the
    /// limit changed; queries holding the old one finish under it).
    fn semaphore(&self, tenant: &Tenant, limit: u64) -> Arc<Semaphore> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match running.get(tenant) {
            Some((l, sem)) if *l == limit => Arc::clone(sem),
            _ => {
                let permits = usize::try_from(limit).unwrap_or(Semaphore::MAX_PERMITS);
                let sem = Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS)));
                running.insert(tenant.clone(), (limit, Arc::clone(&sem)));
                sem
            }
        }
    }
}

/// The settings every query request shares: consistency, partial answers, deadline, tenant,
/// limits.
/// How one query request wants to be answered, however it arrived (HTTP or gRPC).
pub struct Settings {
    /// The tenant the request names (`X-Scope-OrgID`, the gRPC `tenant`), if any.
    pub tenant: Option<String>,
    pub consistency: Consistency,
    pub partial_ok: bool,
    /// The request's own timeout, which can only lower the tenant's (G1).
    pub timeout: Option<Duration>,
}

/// The HTTP request's [`Settings`]: `consistency`, `partial_response`, `timeout`, and the
/// tenant header.
fn http_settings(p: &Params, headers: &HeaderMap) -> Result<Settings, ApiError> {
    let consistency = match p.get("consistency").map(String::as_str) {
        None | Some("strong") => Consistency::Strong,
        Some("leader") => Consistency::Leader,
        Some("any") => Consistency::Any,
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"consistency\": {other:?} (use strong, leader or any)"
            )));
        }
    };
    let partial_ok = match p.get("partial_response").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"partial_response\": {other:?} (use true or false)"
            )));
        }
    };
    let tenant = headers
        .get(TENANT_HEADER)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_data(format!("{TENANT_HEADER} is not text")))?;
    let timeout = match duration_param(p, "timeout")? {
        Some(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
        Some(ms) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"timeout\": {ms} ms must be positive"
            )));
        }
        None => None,
    };
    Ok(Settings {
        tenant,
        consistency,
        partial_ok,
        timeout,
    })
}

impl QueryService {
    /// The request's view of the cluster under its tenant's limits.
    async fn source(
        &self,
        settings: &Settings,
    ) -> Result<(ClusterSource<'_>, QueryOptions), ApiError> {
        let tenant = crate::ingest::tenant(settings.tenant.as_deref(), self.multi_tenant)
            .map_err(ApiError::bad_data)?;
        let limits = self.limits_of(&tenant).await;
        let most = Duration::from_millis(limits.timeout_ms);
        let deadline = settings.timeout.map_or(most, |t| t.min(most));
        Ok((
            ClusterSource {
                service: self,
                tenant: tenant.clone(),
                limits,
                fetched: Mutex::new((0, 0)),
                consistency: settings.consistency,
                deadline,
                shard_deadline: deadline * 3 / 4,
                partial_ok: settings.partial_ok,
            },
            QueryOptions::new(tenant),
        ))
    }

    /// Evaluates `text` over `grid` for one request (G1–G3); the value and the warnings.
    pub async fn execute(
        &self,
        settings: &Settings,
        text: &str,
        grid: TimeGrid,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let (source, options) = self.source(settings).await?;
        let deadline = source.deadline;
        let started = tokio::time::Instant::now();
        let (tenant, limit) = (&source.tenant, source.limits.concurrent_max);
        let semaphore = self.semaphore(tenant, limit);
        let _permit = tokio::time::timeout(deadline, semaphore.acquire_owned())
            .await
            .map_err(|_| ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "unavailable",
                message: format!(
                    "tenant {tenant} already runs {limit} queries on this node \
                     (concurrent_queries_max); this one waited {deadline:?} for one to finish"
                ),
            })?
            .expect("the semaphore is never closed");
        let remaining = deadline.saturating_sub(started.elapsed());
        let evaluated = tokio::time::timeout(remaining, query(&source, options, text, grid))
            .await
            .map_err(|_| ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "timeout",
                message: format!("query timed out in expression evaluation after {deadline:?}"),
            })??;
        Ok((evaluated.value, evaluated.warnings))
    }
}

async fn run(
    service: &QueryService,
    p: &Params,
    headers: &HeaderMap,
    grid: TimeGrid,
) -> Result<(Value, Vec<String>), ApiError> {
    let text = p
        .get("query")
        .ok_or_else(|| ApiError::bad_data("missing parameter \"query\"".into()))?;
    service
        .execute(&http_settings(p, headers)?, text, grid)
        .await
}

async fn instant_query(
    State(service): State<Arc<QueryService>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let answer = async {
        let p = params(raw, &body)?;
        let t = time_param(&p, "time", Some(service.clock.now_ms()))?;
        let (value, warnings) = run(&service, &p, &headers, TimeGrid::instant(t)).await?;
        let data = match value {
            Value::Scalar(v) => json!({"resultType": "scalar", "result": point(t, v[0])}),
            Value::String(s) => json!({"resultType": "string", "result": [t as f64 / 1e3, s]}),
            Value::Vector(series) => {
                return Ok(success(
                    ResultJson {
                        result_type: "vector",
                        result: VectorResult { t, series: &series },
                    },
                    warnings,
                ));
            }
        };
        Ok::<_, ApiError>(success(data, warnings))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn range_query(
    State(service): State<Arc<QueryService>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let answer = async {
        let p = params(raw, &body)?;
        let start = time_param(&p, "start", None)?;
        let end = time_param(&p, "end", None)?;
        let step = duration_param(&p, "step")?
            .ok_or_else(|| ApiError::bad_data("missing parameter \"step\"".into()))?;
        if end < start {
            return Err(ApiError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time".into(),
            ));
        }
        if step <= 0 {
            return Err(ApiError::bad_data(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if (end - start) / step >= GRID_STEPS_MAX as i64 {
            return Err(ApiError::bad_data(format!(
                "exceeded maximum resolution of {GRID_STEPS_MAX} points per timeseries. Try decreasing the query resolution (?step=XX)"
            )));
        }
        let grid = TimeGrid {
            start_ms: start,
            end_ms: end,
            step_ms: step,
        };
        let (value, warnings) = run(&service, &p, &headers, grid).await?;
        let series = match value {
            // A scalar's range answer is one series without labels.
            Value::Scalar(v) => vec![Series {
                labels: strata_shard::Labels::default(),
                points: v.into_iter().map(Some).collect(),
            }],
            Value::Vector(series) => series,
            Value::String(_) => {
                return Err(ApiError::bad_data(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
        };
        Ok::<_, ApiError>(success(
            ResultJson {
                result_type: "matrix",
                result: MatrixResult {
                    grid,
                    series: &series,
                },
            },
            warnings,
        ))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The label sets of the series that match any `match[]` selector (or every series, when
/// `required` is false and none is given) and have a sample in `[start, end]` (default: since
/// 1970 until now): a one-instant partial query of `present_over_time` over that range.
async fn matching_series(
    service: &QueryService,
    p: &[(String, String)],
    headers: &HeaderMap,
    required: bool,
) -> Result<(Vec<strata_shard::Labels>, Vec<String>), ApiError> {
    let map: Params = p.iter().cloned().collect();
    let end = time_param(&map, "end", Some(service.clock.now_ms()))?;
    let start = time_param(&map, "start", Some(0))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    let mut selectors: Vec<&str> = p
        .iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if selectors.is_empty() {
        if required {
            return Err(ApiError::bad_data("no match[] parameter provided".into()));
        }
        selectors.push(r#"{__name__=~".+"}"#);
    }
    let (source, options) = service.source(&http_settings(&map, headers)?).await?;
    let mut found = std::collections::BTreeSet::new();
    let mut warnings = Vec::new();
    for text in selectors {
        let matchers =
            strata_query_fanout::eval::selector_matchers(text).map_err(ApiError::from)?;
        let q = PartialQuery {
            tenant: options.tenant.clone(),
            matchers,
            grid: TimeGrid::instant(end),
            lookback_ms: options.lookback_ms,
            range: Some(strata_shard::query::RangeSpec {
                func: strata_shard::query::RangeFn::PresentOverTime,
                range_ms: end - start + 1,
            }),
            aggregation: None,
        };
        let answer = source
            .select(q)
            .await
            .map_err(|e| ApiError::from(QueryError::Source(e)))?;
        warnings.extend(answer.warnings);
        found.extend(answer.result.finalize().into_iter().map(|s| s.labels));
    }
    Ok((found.into_iter().collect(), warnings))
}

/// The parameters as a list: `match[]` may repeat.
fn param_list(query: Option<String>, body: &Bytes) -> Result<Vec<(String, String)>, ApiError> {
    let parse = |text: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(text)
            .map_err(|e| ApiError::bad_data(format!("cannot parse the parameters: {e}")))
    };
    let body = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_data("the form body is not UTF-8".into()))?;
    let mut out = parse(query.as_deref().unwrap_or(""))?;
    out.extend(parse(body)?);
    Ok(out)
}

async fn series(
    State(service): State<Arc<QueryService>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let answer = async {
        let p = param_list(raw, &body)?;
        let (found, warnings) = matching_series(&service, &p, &headers, true).await?;
        Ok::<_, ApiError>(success(
            json!(found.iter().map(metric).collect::<Vec<_>>()),
            warnings,
        ))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn label_names(
    State(service): State<Arc<QueryService>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let answer = async {
        let p = param_list(raw, &body)?;
        let (found, warnings) = matching_series(&service, &p, &headers, false).await?;
        let names: std::collections::BTreeSet<&str> = found
            .iter()
            .flat_map(|l| l.iter().map(|l| l.name.as_str()))
            .collect();
        Ok::<_, ApiError>(success(json!(names), warnings))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn label_values(
    State(service): State<Arc<QueryService>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let answer = async {
        let p = param_list(raw, &Bytes::new())?;
        let (found, warnings) = matching_series(&service, &p, &headers, false).await?;
        let values: std::collections::BTreeSet<&str> =
            found.iter().filter_map(|l| l.get(&name)).collect();
        Ok::<_, ApiError>(success(json!(values), warnings))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn buildinfo() -> Response {
    success(
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        }),
        Vec::new(),
    )
}

/// `{"status":"success","data":…,"warnings":[…]}` (warnings only when there are some).
fn success(data: impl Serialize, warnings: Vec<String>) -> Response {
    #[derive(Serialize)]
    struct Body<T> {
        status: &'static str,
        data: T,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    }
    let body = Body {
        status: "success",
        data,
        warnings,
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => json_bytes(StatusCode::OK, bytes),
        Err(e) => ApiError::internal(format!("encode the answer: {e}")).into_response(),
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    json_bytes(status, body.to_string().into_bytes())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let headers = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (status, headers, body).into_response()
}

// Query answers are serialized straight from the evaluator's series into the body: building a
// `serde_json::Value` per label and point first was most of the CPU of a large answer (10 000
// series: ~130 ms, `lastpoint` in docs/BENCHMARKS.md).

/// `{"resultType": …, "result": …}`.
#[derive(Serialize)]
struct ResultJson<T> {
    #[serde(rename = "resultType")]
    result_type: &'static str,
    result: T,
}

/// An instant vector at `t`: `[{"metric": {…}, "value": [t, "v"]}, …]`, series without a
/// value at `t` left out.
struct VectorResult<'a> {
    t: i64,
    series: &'a [Series],
}

impl Serialize for VectorResult<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(None)?;
        for s in self.series {
            if let Some(v) = s.points[0] {
                seq.serialize_element(&SeriesJson {
                    metric: Metric(&s.labels),
                    value: Point(self.t, v),
                })?;
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct SeriesJson<'a, V> {
    metric: Metric<'a>,
    value: V,
}

#[derive(Serialize)]
struct MatrixJson<'a, V> {
    metric: Metric<'a>,
    values: V,
}

/// A range answer: `[{"metric": {…}, "values": [[t, "v"], …]}, …]`, only the instants that
/// have a value.
struct MatrixResult<'a> {
    grid: TimeGrid,
    series: &'a [Series],
}

impl Serialize for MatrixResult<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.series.len()))?;
        for s in self.series {
            seq.serialize_element(&MatrixJson {
                metric: Metric(&s.labels),
                values: Points {
                    grid: self.grid,
                    points: &s.points,
                },
            })?;
        }
        seq.end()
    }
}

struct Points<'a> {
    grid: TimeGrid,
    points: &'a [Option<f64>],
}

impl Serialize for Points<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(None)?;
        for (t, p) in self.grid.steps().zip(self.points) {
            if let Some(v) = p {
                seq.serialize_element(&Point(t, *v))?;
            }
        }
        seq.end()
    }
}

/// A label set as a JSON object, in label order.
struct Metric<'a>(&'a strata_shard::Labels);

impl Serialize for Metric<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(None)?;
        for l in self.0.iter() {
            map.serialize_entry(&l.name, &l.value)?;
        }
        map.end()
    }
}

/// `[unix seconds, "value"]`, the value formatted as Go's `FormatFloat(v, 'f', -1, 64)`.
struct Point(i64, f64);

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(2))?;
        seq.serialize_element(&(self.0 as f64 / 1e3))?;
        seq.serialize_element(&strata_query_fanout::functions::format_value(self.1))?;
        seq.end()
    }
}

fn metric(labels: &strata_shard::Labels) -> Json {
    serde_json::to_value(Metric(labels)).expect("labels are strings")
}

fn point(t_ms: i64, v: f64) -> Json {
    serde_json::to_value(Point(t_ms, v)).expect("a point is a number and a string")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse_as_prometheus_takes_them() {
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("5x"), None);
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-12-03T17:00:00.25Z"),
            Some(1_796_317_200_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-03T18:00:00+01:00"),
            Some(1_796_317_200_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-13-03T18:00:00Z"), None);
    }
}
