//! The public gRPC API (`strata.api.v1.Strata`), served beside the Raft traffic on the node's
//! gRPC address. `Write` takes a remote-write body and goes through [`crate::ingest`] exactly
//! like `POST /api/v1/write`; its answer maps onto gRPC codes as HTTP statuses map for
//! remote-write senders (see `proto/proto/api.proto`), with the [`pb::WriteReply`] as the OK
//! message or, on an error status, encoded in the status details.

use std::sync::Arc;

use prost::Message;
use strata_proto::api as pb;
use strata_raft::network::{Forwarder, Transport};
use strata_router::ring::shard_of_group;
use strata_router::write::ShardOutcome;
use tonic::{Code, Request, Response, Status};

use crate::http::HttpState;
use crate::ingest::{Ingested, ingest};

/// The `Strata` service over a node's write state.
pub struct Api<T: Transport + Forwarder> {
    state: Arc<HttpState<T>>,
}

/// The gRPC server of the API, with the message limit the remote-write limits imply.
pub fn service<T: Transport + Forwarder>(
    state: Arc<HttpState<T>>,
) -> pb::strata_server::StrataServer<Api<T>> {
    // The body limit plus room for the tenant and the framing.
    let max = state.limits.body_compressed_bytes_max + 4096;
    pb::strata_server::StrataServer::new(Api { state }).max_decoding_message_size(max)
}

/// The reply describing what a request came to.
fn reply(ingested: &Ingested) -> pb::WriteReply {
    let mut r = pb::WriteReply::default();
    if let Some(d) = &ingested.decoded {
        r.rejected += d.samples_rejected as u64;
        r.errors.extend(d.rejected.iter().map(ToString::to_string));
    }
    if let Some(report) = &ingested.report {
        r.ring_epoch = report.ring_epoch;
        r.appended = report.appended();
        r.duplicates = report.duplicates();
        r.rejected += report.outside_window;
        r.errors
            .extend(report.outside_window_errors.iter().cloned());
        for (group, outcome) in &report.shards {
            match outcome {
                ShardOutcome::Applied {
                    rejected, errors, ..
                } => {
                    r.rejected += rejected.values().sum::<u64>();
                    r.errors.extend(errors.iter().cloned());
                }
                ShardOutcome::Failed {
                    samples, reason, ..
                } => r.failed_shards.push(pb::ShardFailure {
                    shard: shard_of_group(*group).map_or(u32::MAX, |s| s.0),
                    samples: *samples,
                    reason: reason.clone(),
                }),
            }
        }
    }
    r
}

fn code(http_status: u16) -> Code {
    match http_status {
        200..=299 => Code::Ok,
        400 | 413 | 415 => Code::InvalidArgument,
        429 => Code::ResourceExhausted,
        _ => Code::Unavailable,
    }
}

#[tonic::async_trait]
impl<T: Transport + Forwarder> pb::strata_server::Strata for Api<T> {
    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let pb::WriteRequest {
            tenant,
            snappy_write_request,
        } = request.into_inner();
        let tenant = (!tenant.is_empty()).then_some(tenant.as_str());
        let ingested = ingest(&self.state, tenant, &snappy_write_request).await;
        let reply = reply(&ingested);
        match code(ingested.answer.status) {
            Code::Ok => Ok(Response::new(reply)),
            c => Err(Status::with_details(
                c,
                ingested.answer.body,
                reply.encode_to_vec().into(),
            )),
        }
    }
}
