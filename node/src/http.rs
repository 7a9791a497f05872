//! The node's HTTP API. Today: Prometheus remote-write 1.0 at `POST /api/v1/write`, and the
//! node's self-metrics at `GET /metrics` (Prometheus text format 0.0.4, see `crate::metrics`).
//!
//! A request is: tenant from `X-Scope-OrgID` (validated; the default tenant when multi-tenancy
//! is off) → admission (a bounded number of requests in flight, else 503 + `Retry-After`:
//! never unbounded buffering) → body size checked by the server before it is read whole, then
//! decoded and validated (`strata_router::remote_write`: sizes before and after Snappy) → the
//! write path (`strata_router::write::Writer`) → the status senders expect
//! (`strata_router::write::remote_write_answer`).
//!
//! Every answered remote-write request is counted by status; a request refused whole is also
//! counted by reason, and samples refused at decode by the series error's reason (the write
//! path counts the samples it sees itself).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_raft::network::{Forwarder, Transport};
use strata_router::remote_write::{
    DecodedWrite, RemoteWriteLimits, decode_write_request, http_status,
};
use strata_router::write::{Writer, remote_write_answer};
use strata_shard::Tenant;
use tokio::sync::Semaphore;

use crate::metrics::NodeMetrics;

/// The tenant header of Cortex, Mimir and Loki, which Prometheus and vmagent can set.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// The tenant of every request when multi-tenancy is off (Mimir's name for it).
pub const DEFAULT_TENANT: &str = "anonymous";

/// What the HTTP handlers share.
pub struct HttpState<T: Transport + Forwarder> {
    pub writer: Arc<Writer<T>>,
    pub limits: RemoteWriteLimits,
    /// Whether `X-Scope-OrgID` picks the tenant (else every write goes to [`DEFAULT_TENANT`]).
    pub multi_tenant: bool,
    /// Remote-write requests being handled at once, at most.
    pub in_flight: Arc<Semaphore>,
    /// This node's self-metrics: what the handlers count, and the `/metrics` page.
    pub metrics: NodeMetrics,
}

/// The content type of Prometheus' text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The HTTP routes of a node.
pub fn routes<T: Transport + Forwarder>(state: Arc<HttpState<T>>) -> Router {
    // The server refuses a larger body before reading it; the decoder checks again.
    let body_max = state.limits.body_compressed_bytes_max;
    Router::new()
        .route("/api/v1/write", post(remote_write::<T>))
        .route("/metrics", get(metrics_page::<T>))
        .layer(DefaultBodyLimit::max(body_max))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, body).into_response()
}

/// The tenant of a request, or why the header is refused.
fn tenant(headers: &HeaderMap, multi_tenant: bool) -> Result<Tenant, String> {
    let default = || Tenant::new(DEFAULT_TENANT).map_err(|e| e.to_string());
    if !multi_tenant {
        return default();
    }
    match headers.get(TENANT_HEADER) {
        None => Err(format!(
            "multi-tenancy is on: the {TENANT_HEADER} header must name the tenant"
        )),
        Some(v) => {
            let id = v
                .to_str()
                .map_err(|_| format!("{TENANT_HEADER} is not visible ASCII"))?;
            Tenant::new(id).map_err(|e| format!("{TENANT_HEADER}: {e}"))
        }
    }
}

async fn metrics_page<T: Transport + Forwarder>(
    State(state): State<Arc<HttpState<T>>>,
) -> Response {
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    r
}

/// `POST /api/v1/write`: [`write`], counted by status.
async fn remote_write<T: Transport + Forwarder>(
    State(state): State<Arc<HttpState<T>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = write(&state, &headers, body).await;
    state.metrics.request_answered(r.status().as_u16());
    r
}

async fn write<T: Transport + Forwarder>(
    state: &HttpState<T>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let m = &state.metrics;
    // axum has already read the body (at most the limit): its refusal answers first, as before.
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            m.request_rejected(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "body_unreadable"
            });
            return rejection.into_response();
        }
    };
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        m.request_rejected("too_many_in_flight");
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many remote-write requests in flight on this node, retry".into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let tenant = match tenant(headers, state.multi_tenant) {
        Ok(t) => t,
        Err(why) => {
            m.request_rejected("invalid_tenant");
            return text(StatusCode::BAD_REQUEST, why);
        }
    };
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"snappy")
    {
        m.request_rejected("unsupported_encoding");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?}: remote write 1.0 bodies are snappy"),
        );
    }
    let decoded = decode_write_request(&body, &state.limits, &tenant);
    let mut decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            m.request_rejected(e.reason());
            let status = StatusCode::from_u16(http_status(&Err(e.clone())))
                .unwrap_or(StatusCode::BAD_REQUEST);
            return text(status, e.to_string());
        }
    };
    count_decode_refusals(m, &decoded);
    // The series move into the write path; what the answer needs (errors, counts) stays.
    let series = std::mem::take(&mut decoded.series);
    let report = match state.writer.write(series).await {
        Ok(r) => r,
        Err(e) => {
            m.request_rejected("route_failed");
            m.samples_rejected("route_failed", decoded.samples_accepted as u64);
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
    };
    let answer = remote_write_answer(&decoded, &report);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = text(status, answer.body);
    if let Some(secs) = answer.retry_after_s
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Samples refused at decode, by reason. A request keeps only its first series errors in full
/// (`series_errors_reported_max`); the samples of the others are counted as `unreported`.
fn count_decode_refusals(m: &NodeMetrics, decoded: &DecodedWrite) {
    let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &decoded.rejected {
        *by_reason.entry(e.reason()).or_default() += e.samples_refused as u64;
    }
    let reported: u64 = by_reason.values().sum();
    let unreported = (decoded.samples_rejected as u64).saturating_sub(reported);
    if unreported > 0 {
        by_reason.insert("unreported", unreported);
    }
    for (reason, samples) in by_reason {
        m.samples_rejected(reason, samples);
    }
}
