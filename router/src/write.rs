//! The write path: validated series → their shard under the current ring epoch → one batch per
//! shard → the shard's leader (here, or forwarded to the node that leads it) → retried until
//! applied, refused, or out of attempts.
//!
//! ## Types
//! - [`Writer`]: one per node, over the node's [`Registry`] and a [`Forwarder`] (the gRPC
//!   transport between nodes, or the in-process one in tests).
//! - [`WriteReport`]: what happened to every shard's batch: applied (with the engine's counts
//!   and per-sample refusals) or failed (with why, and whether a retry can help).
//!
//! ## Invariants
//! - W1. Writes follow the newest ring epoch (`RingSet::write_ring`'s epoch); the ring is
//!   rebuilt only when the meta group's epoch changes.
//! - W2. A shard's batch is retried with the same payload only: after `OutcomeUnknown` or
//!   `Timeout` it may already be applied, and the engine's first-write-wins dedup makes the
//!   retry a no-op for what was stored (it reports those samples as duplicates).
//! - W3. A retry goes to the same shard it was first routed to, never re-routed under a newer
//!   epoch (that could store a sample in two shards).
//! - W4. Attempts per shard are bounded in number and in time ([`WriterConfig::attempts_max`],
//!   [`WriterConfig::deadline`]) and each has a deadline; `Busy` is not retried here (the
//!   caller answers 503 with `Retry-After`). One shard failing fails only its own samples.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strata_raft::meta::MetaState;
use strata_raft::network::{Forwarder, Transport};
use strata_raft::registry::{Consistency, ProposeError, ReadError, Registry};
use strata_raft::types::{Command, GroupId, NodeId, NodeInfo, Response, WriteBatch};
use strata_shard::{Sample, SeriesKey};

use crate::ring::{Ring, RingError, group_of};

/// How hard the writer tries.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Attempts per shard batch (leader changes, lost replies).
    pub attempts_max: u32,
    /// Time per shard batch, all attempts together: long enough to ride out an election
    /// (the Raft election timeout), short enough for a sender's own timeout.
    pub deadline: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// Pause before a retry that is not a first redirect to a named leader.
    pub backoff: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            attempts_max: 40,
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
        }
    }
}

/// Why a write could not even be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the cluster has no ring yet (the meta group holds no SetRing)")]
    NoRing,
    #[error("ring epoch {epoch}: {source}")]
    Ring { epoch: u64, source: RingError },
    #[error("cannot read the meta state: {0}")]
    Meta(ReadError),
}

/// What happened to one shard's batch.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardOutcome {
    /// Applied by the shard's leader: the engine's counts and refusals.
    Applied {
        appended: u64,
        duplicates: u64,
        rejected: BTreeMap<String, u64>,
        errors: Vec<String>,
    },
    /// Not applied (or not known to be): `retryable` says whether sending the same request
    /// again may succeed (no quorum, leader moving, busy) or not.
    Failed {
        samples: u64,
        reason: String,
        retryable: bool,
        busy: bool,
    },
}

/// What happened to a write, per shard group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    pub ring_epoch: u64,
    pub shards: BTreeMap<GroupId, ShardOutcome>,
}

impl WriteReport {
    pub fn appended(&self) -> u64 {
        self.applied().map(|(a, _)| a).sum()
    }

    pub fn duplicates(&self) -> u64 {
        self.applied().map(|(_, d)| d).sum()
    }

    fn applied(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.shards.values().filter_map(|o| match o {
            ShardOutcome::Applied {
                appended,
                duplicates,
                ..
            } => Some((*appended, *duplicates)),
            ShardOutcome::Failed { .. } => None,
        })
    }

    /// The shards whose batches failed, with why.
    pub fn failures(&self) -> impl Iterator<Item = (GroupId, &ShardOutcome)> {
        self.shards
            .iter()
            .filter(|(_, o)| matches!(o, ShardOutcome::Failed { .. }))
            .map(|(g, o)| (*g, o))
    }
}

/// The write path of one node.
pub struct Writer<T: Transport + Forwarder> {
    registry: Arc<Registry<T>>,
    forwarder: T,
    config: WriterConfig,
    /// The ring of the newest epoch, rebuilt when the epoch changes (W1).
    ring: Mutex<Option<(u64, Arc<Ring>)>>,
}

impl<T: Transport + Forwarder> Writer<T> {
    pub fn new(registry: Arc<Registry<T>>, forwarder: T, config: WriterConfig) -> Self {
        Writer {
            registry,
            forwarder,
            config,
            ring: Mutex::new(None),
        }
    }

    /// The current epoch's ring and, per shard group, where its replicas are.
    async fn routing(&self) -> Result<(u64, Arc<Ring>, BTreeMap<NodeId, NodeInfo>), RouteError> {
        let snapshot = self
            .registry
            .read_meta(Consistency::Any, |m: &MetaState| {
                (m.ring().map(|(e, c)| (e, *c)), m.nodes().clone())
            })
            .await
            .map_err(RouteError::Meta)?;
        let ((epoch, config), nodes) = match snapshot {
            (Some(ring), nodes) => (ring, nodes),
            (None, _) => return Err(RouteError::NoRing),
        };
        let mut cached = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((e, ring)) = cached.as_ref()
            && *e == epoch
        {
            return Ok((epoch, Arc::clone(ring), nodes));
        }
        let ring = Arc::new(
            Ring::from_config(&config).map_err(|source| RouteError::Ring { epoch, source })?,
        );
        *cached = Some((epoch, Arc::clone(&ring)));
        Ok((epoch, ring, nodes))
    }

    /// Writes validated series: one batch per shard, sent concurrently (W1–W4).
    pub async fn write(
        &self,
        series: Vec<(SeriesKey, Vec<Sample>)>,
    ) -> Result<WriteReport, RouteError> {
        let (epoch, ring, nodes) = self.routing().await?;
        let mut per_group: BTreeMap<GroupId, Vec<(SeriesKey, Vec<Sample>)>> = BTreeMap::new();
        for (key, samples) in series {
            let group = group_of(ring.shard_of(key.id()));
            per_group.entry(group).or_default().push((key, samples));
        }
        let placements: BTreeMap<GroupId, Vec<NodeId>> = self
            .registry
            .read_meta(Consistency::Any, |m| {
                per_group
                    .keys()
                    .filter_map(|g| m.placement(*g).map(|p| (*g, p.to_vec())))
                    .collect()
            })
            .await
            .map_err(RouteError::Meta)?;
        let sends = per_group.into_iter().map(|(group, batch)| {
            let replicas: Vec<(NodeId, NodeInfo)> = placements
                .get(&group)
                .into_iter()
                .flatten()
                .filter_map(|n| nodes.get(n).map(|i| (*n, i.clone())))
                .collect();
            let samples = batch.iter().map(|(_, s)| s.len() as u64).sum();
            let batch: WriteBatch = batch.into();
            async move {
                let outcome = self.send(group, batch, &replicas).await;
                (group, outcome.unwrap_or_else(|e| failed(samples, &e)))
            }
        });
        let shards = futures::future::join_all(sends).await.into_iter().collect();
        Ok(WriteReport {
            ring_epoch: epoch,
            shards,
        })
    }

    /// Sends one shard's batch until it is applied or attempts run out (W2–W4).
    async fn send(
        &self,
        group: GroupId,
        batch: WriteBatch,
        replicas: &[(NodeId, NodeInfo)],
    ) -> Result<ShardOutcome, ProposeError> {
        let me = self.registry.node();
        // Start where the leader is believed to be: here, the local replica's view, or the
        // first replica of the placement (it will redirect).
        let mut target: Option<(NodeId, NodeInfo)> = if self.registry.is_leader(group) {
            None
        } else {
            self.registry
                .leader_info(group)
                .or_else(|| replicas.first().cloned())
        };
        let mut next_replica = 0;
        let mut last = None;
        let give_up = tokio::time::Instant::now() + self.config.deadline;
        for attempt in 0..self.config.attempts_max {
            // A first redirect to a named leader goes at once; anything else (an election,
            // a lost reply, two replicas naming each other) waits a moment.
            let redirect = attempt == 1 && last.as_ref().is_some_and(is_named_redirect);
            if attempt > 0 && !redirect {
                if tokio::time::Instant::now() + self.config.backoff > give_up {
                    break;
                }
                tokio::time::sleep(self.config.backoff).await;
            }
            let command = Command::Write(Arc::clone(&batch));
            let reply = match &target {
                Some((node, info)) if *node != me => {
                    self.forwarder
                        .forward(*node, info, group, command, self.config.attempt_timeout)
                        .await
                }
                _ => self.registry.propose(group, command).await,
            };
            let e = match reply {
                Ok(Response::Write(w)) => {
                    return Ok(ShardOutcome::Applied {
                        appended: w.appended,
                        duplicates: w.duplicates,
                        rejected: w.rejected,
                        errors: w.errors,
                    });
                }
                Ok(other) => {
                    return Err(ProposeError::Stopped {
                        node: target.as_ref().map_or(me, |(n, _)| *n),
                        group,
                        reason: format!("a write was answered with {other:?}"),
                    });
                }
                Err(e) => e,
            };
            target = match &e {
                ProposeError::Busy { .. } => return Err(e),
                ProposeError::NotLeader {
                    leader_hint: Some(hint),
                    ..
                }
                | ProposeError::OutcomeUnknown {
                    leader_hint: Some(hint),
                    ..
                } => Some(hint.clone()),
                // No hint, no replica there, or unreachable: the leader this node's replica now
                // knows of, if it names another one, else the placement's next replica.
                _ => {
                    let failed = target.as_ref().map(|(n, _)| *n);
                    match self.registry.leader_info(group) {
                        Some(known) if Some(known.0) != failed => Some(known),
                        _ => {
                            next_replica += 1;
                            replicas.get(next_replica % replicas.len().max(1)).cloned()
                        }
                    }
                }
            };
            // Here, `None` means this node: it leads, or it is the hint.
            if target.as_ref().is_some_and(|(n, _)| *n == me) {
                target = None;
            }
            last = Some(e);
        }
        Err(last.expect("attempts_max >= 1"))
    }
}

/// A refusal that names the leader to go to.
fn is_named_redirect(e: &ProposeError) -> bool {
    matches!(
        e,
        ProposeError::NotLeader {
            leader_hint: Some(_),
            ..
        }
    )
}

fn failed(samples: u64, e: &ProposeError) -> ShardOutcome {
    ShardOutcome::Failed {
        samples,
        reason: e.to_string(),
        retryable: !matches!(e, ProposeError::NoSuchGroup { .. }),
        busy: matches!(e, ProposeError::Busy { .. }),
    }
}
