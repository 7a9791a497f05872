//! The public gRPC API (`strata.api.v1.Strata`), served beside the Raft traffic on the node's
//! gRPC address. `Write` takes a remote-write body and goes through [`crate::ingest`] exactly
//! like `POST /api/v1/write`; its answer maps onto gRPC codes as HTTP statuses map for
//! remote-write senders (see `proto/proto/api.proto`), with the [`pb::WriteReply`] as the OK
//! message or, on an error status, encoded in the status details.
//!
//! `Query` evaluates PromQL through [`crate::query::QueryService`], as the HTTP query API
//! does.
//!
//! `ReadSeries` reads one series' raw samples from this node's replicas of the shards the
//! series was routed to ([`Writer::shards_for_series`]), as fresh as the request asks. It is
//! not forwarded: a node that does not host a shard, or is not its leader when the read must
//! be confirmed by one, answers UNAVAILABLE naming the leader it knows of. (The query fan-out
//! will reach every shard from any node.)

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use strata_proto::api as pb;
use strata_query_fanout::TimeGrid;
use strata_query_fanout::eval::Value;
use strata_raft::network::{Forwarder, Transport};
use strata_raft::registry::{Consistency, ReadError, Registry};
use strata_router::ring::{group_of, shard_of_group};
use strata_router::write::{ShardOutcome, Writer};
use strata_shard::{Label, Labels, SeriesKey};
use tonic::{Code, Request, Response, Status};

use crate::http::HttpState;
use crate::ingest::{Ingested, ingest};
use crate::query::{QueryService, Settings};

/// The `Strata` service over a node's write state, its replicas and its query front end.
pub struct Api<T: Transport + Forwarder> {
    state: Arc<HttpState<T>>,
    registry: Arc<Registry<T>>,
    query: Arc<QueryService>,
}

/// The gRPC server of the API, with the message limit the remote-write limits imply.
pub fn service<T: Transport + Forwarder>(
    state: Arc<HttpState<T>>,
    registry: Arc<Registry<T>>,
    query: Arc<QueryService>,
) -> pb::strata_server::StrataServer<Api<T>> {
    // The body limit plus room for the tenant and the framing.
    let max = state.limits.body_compressed_bytes_max + 4096;
    pb::strata_server::StrataServer::new(Api {
        state,
        registry,
        query,
    })
    .max_decoding_message_size(max)
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

/// The series a `ReadSeries` request names, or why it names none.
fn series_of<T: Transport + Forwarder>(
    request: &pb::ReadSeriesRequest,
    state: &HttpState<T>,
) -> Result<SeriesKey, Status> {
    let tenant = (!request.tenant.is_empty()).then_some(request.tenant.as_str());
    let tenant =
        crate::ingest::tenant(tenant, state.multi_tenant).map_err(Status::invalid_argument)?;
    let labels = request
        .labels
        .iter()
        .map(|l| Label::new(l.name.clone(), l.value.clone()))
        .collect();
    let labels = Labels::new(labels, &state.limits.labels)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if request.start_ms > request.end_ms {
        return Err(Status::invalid_argument(format!(
            "start_ms {} is after end_ms {}",
            request.start_ms, request.end_ms
        )));
    }
    Ok(SeriesKey::new(tenant, labels))
}

/// Reads `key` in `[start, end]` from this node's replicas of its shards.
async fn read_series<T: Transport + Forwarder>(
    writer: &Writer<T>,
    registry: &Registry<T>,
    key: &SeriesKey,
    (start, end): (i64, i64),
    consistency: Consistency,
) -> Result<Vec<pb::Sample>, Status> {
    let shards = writer
        .shards_for_series(key, start, end)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut samples = Vec::new();
    for shard in shards {
        let group = group_of(shard);
        let read = registry
            .read(group, consistency, |engine| {
                engine.read_series(key, start, end)
            })
            .await;
        let unavailable =
            |why: String| Status::unavailable(format!("series {key}: shard {}: {why}", shard.0));
        match read {
            Ok(Ok(found)) => samples.extend(found),
            Ok(Err(e)) => {
                return Err(Status::internal(format!(
                    "series {key}: shard {}: {e}",
                    shard.0
                )));
            }
            Err(ReadError::NotLeader { leader_hint, .. }) => {
                return Err(unavailable(match leader_hint {
                    Some((id, info)) => format!(
                        "this node is not its leader; read from node {id} at {}",
                        info.addr
                    ),
                    None => "this node is not its leader and knows of none".into(),
                }));
            }
            Err(ReadError::NoSuchGroup { .. }) => {
                let hint = registry.leader_info(group).map_or_else(
                    || "no replica here; read from a node that hosts one".to_owned(),
                    |(id, info)| format!("no replica here; read from node {id} at {}", info.addr),
                );
                return Err(unavailable(hint));
            }
            Err(e) => return Err(unavailable(e.to_string())),
        }
    }
    // Several epochs' shards may each hold a copy of a sample (a ring change): one per time.
    samples.sort_by_key(|s| s.ts_ms);
    samples.dedup_by_key(|s| s.ts_ms);
    Ok(samples
        .into_iter()
        .map(|s| pb::Sample {
            timestamp_ms: s.ts_ms,
            value: s.value,
        })
        .collect())
}

/// The answer of `Query` in its protobuf form.
fn query_reply(value: Value, grid: TimeGrid, warnings: Vec<String>) -> pb::QueryReply {
    let samples = |points: &[Option<f64>]| -> Vec<pb::Sample> {
        grid.steps()
            .zip(points)
            .filter_map(|(t, p)| {
                p.map(|value| pb::Sample {
                    timestamp_ms: t,
                    value,
                })
            })
            .collect()
    };
    let mut reply = pb::QueryReply {
        warnings,
        ..Default::default()
    };
    match value {
        Value::Scalar(v) => {
            reply.result_type = "scalar".into();
            let points: Vec<Option<f64>> = v.into_iter().map(Some).collect();
            reply.series.push(pb::QuerySeries {
                labels: Vec::new(),
                samples: samples(&points),
            });
        }
        Value::String(s) => {
            reply.result_type = "string".into();
            reply.string_value = s;
        }
        Value::Vector(series) => {
            reply.result_type = if grid.start_ms == grid.end_ms {
                "vector"
            } else {
                "matrix"
            }
            .into();
            reply.series = series
                .iter()
                .map(|s| pb::QuerySeries {
                    labels: s
                        .labels
                        .iter()
                        .map(|l| pb::Label {
                            name: l.name.clone(),
                            value: l.value.clone(),
                        })
                        .collect(),
                    samples: samples(&s.points),
                })
                .filter(|s| !s.samples.is_empty())
                .collect();
        }
    }
    reply
}

fn consistency_of(c: i32) -> Result<Consistency, Status> {
    match pb::Consistency::try_from(c) {
        Ok(pb::Consistency::Strong) => Ok(Consistency::Strong),
        Ok(pb::Consistency::Leader) => Ok(Consistency::Leader),
        Ok(pb::Consistency::Any) => Ok(Consistency::Any),
        Err(_) => Err(Status::invalid_argument(format!("unknown consistency {c}"))),
    }
}

#[tonic::async_trait]
impl<T: Transport + Forwarder> pb::strata_server::Strata for Api<T> {
    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryReply>, Status> {
        let r = request.into_inner();
        let grid = if r.start_ms == r.end_ms {
            TimeGrid::instant(r.start_ms)
        } else {
            TimeGrid {
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                step_ms: r.step_ms,
            }
        };
        let settings = Settings {
            tenant: (!r.tenant.is_empty()).then_some(r.tenant),
            consistency: consistency_of(r.consistency)?,
            partial_ok: r.partial_response,
            timeout: (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms as u64)),
        };
        match self.query.execute(&settings, &r.query, grid).await {
            Ok((value, warnings)) => Ok(Response::new(query_reply(value, grid, warnings))),
            Err(e) => Err(match e.kind {
                "timeout" => Status::deadline_exceeded(e.message),
                "unavailable" => Status::unavailable(e.message),
                _ => Status::invalid_argument(e.message),
            }),
        }
    }

    async fn read_series(
        &self,
        request: Request<pb::ReadSeriesRequest>,
    ) -> Result<Response<pb::ReadSeriesReply>, Status> {
        let request = request.into_inner();
        let key = series_of(&request, &self.state)?;
        let consistency = match request.consistency() {
            pb::Consistency::Strong => Consistency::Strong,
            pb::Consistency::Leader => Consistency::Leader,
            pb::Consistency::Any => Consistency::Any,
        };
        let samples = read_series(
            &self.state.writer,
            &self.registry,
            &key,
            (request.start_ms, request.end_ms),
            consistency,
        )
        .await?;
        Ok(Response::new(pb::ReadSeriesReply { samples }))
    }

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
