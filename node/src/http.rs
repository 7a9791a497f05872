//! The node's HTTP API. Today: Prometheus remote-write 1.0 at `POST /api/v1/write`.
//!
//! The server refuses a body over the compressed limit before reading it whole, and a
//! `Content-Encoding` other than Snappy (415); `GET /metrics` is the node's self-metrics
//! (Prometheus text format 0.0.4, see `crate::metrics`). Everything else about a write request —
//! admission, tenant (`X-Scope-OrgID`), decoding, the write path, the status — is
//! [`crate::ingest`], shared with the gRPC `Write`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_raft::network::{Forwarder, Transport};
use strata_router::remote_write::RemoteWriteLimits;
use strata_router::write::Writer;
use tokio::sync::Semaphore;

use crate::ingest::{TENANT_HEADER, ingest};
use crate::metrics::NodeMetrics;

/// What the write front ends (HTTP and gRPC) share.
pub struct HttpState<T: Transport + Forwarder> {
    pub writer: Arc<Writer<T>>,
    pub limits: RemoteWriteLimits,
    /// Whether `X-Scope-OrgID` picks the tenant (else every write goes to the default tenant).
    pub multi_tenant: bool,
    /// Write requests being handled at once, at most.
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
    // axum has already read the body (at most the limit): its refusal answers first.
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
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"snappy")
    {
        m.request_rejected("unsupported_encoding");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?}: remote write 1.0 bodies are snappy"),
        );
    }
    let tenant = match headers.get(TENANT_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) if !state.multi_tenant => None,
        Some(Err(_)) => {
            m.request_rejected("invalid_tenant");
            return text(
                StatusCode::BAD_REQUEST,
                format!("{TENANT_HEADER} is not visible ASCII"),
            );
        }
    };
    let answer = ingest(state, tenant, &body).await.answer;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = text(status, answer.body);
    if let Some(secs) = answer.retry_after_s
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}
