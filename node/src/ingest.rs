//! One write request, whatever it came over (HTTP remote write or the gRPC `Write`): admission,
//! tenant, decoding and validation, the write path, and the answer senders expect. The two
//! front ends only translate their transport into [`ingest`]'s arguments and its
//! [`Ingested`] back; the rules live here once.
//!
//! Order: admission (a bounded number of requests in flight, else 503 + `Retry-After`: never
//! unbounded buffering) → tenant (validated; the default tenant when multi-tenancy is off) →
//! decode and validate (`strata_router::remote_write`: sizes before and after Snappy) → the
//! write path (`strata_router::write::Writer`) → `remote_write_answer`. Requests refused whole
//! are counted by reason, samples refused at decode by the series error's reason
//! (`crate::metrics`; the write path counts the rest).

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_raft::network::{Forwarder, Transport};
use strata_router::remote_write::{DecodedWrite, decode_write_request, http_status};
use strata_router::write::{HttpAnswer, WriteReport, remote_write_answer};
use strata_shard::Tenant;

use crate::http::HttpState;
use crate::metrics::NodeMetrics;

/// The tenant header of Cortex, Mimir and Loki, which Prometheus and vmagent can set.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// The tenant of every request when multi-tenancy is off (Mimir's name for it).
pub const DEFAULT_TENANT: &str = "anonymous";

/// What a request came to: the answer, and what was decoded and written when it got that far.
pub struct Ingested {
    pub answer: HttpAnswer,
    pub decoded: Option<DecodedWrite>,
    pub report: Option<WriteReport>,
}

impl Ingested {
    fn refused(status: u16, retry_after_s: Option<u64>, body: String) -> Ingested {
        Ingested {
            answer: HttpAnswer {
                status,
                retry_after_s,
                body,
            },
            decoded: None,
            report: None,
        }
    }
}

/// The tenant of a request that named `requested` (`None`: it named none), or why not.
pub fn tenant(requested: Option<&str>, multi_tenant: bool) -> Result<Tenant, String> {
    if !multi_tenant {
        return Tenant::new(DEFAULT_TENANT).map_err(|e| e.to_string());
    }
    match requested {
        None => Err(format!(
            "multi-tenancy is on: the {TENANT_HEADER} header (gRPC: the tenant field) must name \
             the tenant"
        )),
        Some(id) => Tenant::new(id).map_err(|e| format!("{TENANT_HEADER}: {e}")),
    }
}

/// Handles one remote-write body (Snappy-compressed `prometheus.WriteRequest`) for `tenant`
/// (module doc).
pub async fn ingest<T: Transport + Forwarder>(
    state: &HttpState<T>,
    requested_tenant: Option<&str>,
    body: &[u8],
) -> Ingested {
    let m = &state.metrics;
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        m.request_rejected("too_many_in_flight");
        return Ingested::refused(
            503,
            Some(1),
            "too many write requests in flight on this node, retry".into(),
        );
    };
    let tenant = match tenant(requested_tenant, state.multi_tenant) {
        Ok(t) => t,
        Err(why) => {
            m.request_rejected("invalid_tenant");
            return Ingested::refused(400, None, why);
        }
    };
    let mut decoded = match decode_write_request(body, &state.limits, &tenant) {
        Ok(d) => d,
        Err(e) => {
            m.request_rejected(e.reason());
            let status = http_status(&Err(e.clone()));
            return Ingested::refused(status, None, e.to_string());
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
            return Ingested::refused(503, Some(5), e.to_string());
        }
    };
    Ingested {
        answer: remote_write_answer(&decoded, &report),
        decoded: Some(decoded),
        report: Some(report),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_comes_from_the_request_only_when_multi_tenancy_is_on() {
        assert_eq!(
            tenant(Some("team-a"), false).unwrap().as_str(),
            DEFAULT_TENANT
        );
        assert_eq!(tenant(None, false).unwrap().as_str(), DEFAULT_TENANT);
        assert_eq!(tenant(Some("team-a"), true).unwrap().as_str(), "team-a");
        let missing = tenant(None, true).unwrap_err();
        assert!(missing.contains("must name the tenant"), "{missing}");
        for bad in ["", ".", "..", "a/b", &"x".repeat(200)] {
            let e = tenant(Some(bad), true).unwrap_err();
            assert!(e.starts_with(TENANT_HEADER), "{bad:?}: {e}");
        }
    }
}
