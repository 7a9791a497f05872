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
//! - W5. Only samples within `[now - accept_past_ms, now + accept_future_ms]` of the router's
//!   clock (the `Clock` seam) are routed; the rest are refused per sample, named. The ring's
//!   routing slack must cover this window, or a query after a ring change could miss a late
//!   sample (ring H5, H6).
//! - W4. Attempts per shard are bounded in number and in time ([`WriterConfig::attempts_max`],
//!   [`WriterConfig::deadline`]) and each has a deadline; `Busy` is not retried here (the
//!   caller answers 503 with `Retry-After`). One shard failing fails only its own samples.
//!
//! ## Self-metrics
//! Recorded through the `metrics` facade (a no-op until the node installs a recorder), every
//! series labelled `node` (this registry's node id); names are the constants below.
//! - [`SAMPLES_ACCEPTED`] `{node, outcome}`: samples a shard applied, `outcome` = `appended`
//!   or `duplicate` (already stored with the same value, e.g. a sender's retry).
//! - [`SAMPLES_REJECTED`] `{node, reason}`: samples refused here: `outside_window` (W5),
//!   `shard_busy` / `shard_failed` (the shard's batch was not applied), or the engine's own
//!   reason (`strata_shard::Error::reason`, e.g. `sample_too_old`, `series_limit_tenant`).
//!   The node's HTTP handler adds the decode-time reasons to the same counter.
//! - [`SHARD_COMMIT_SECONDS`] `{node, group, outcome}`: time from handing a shard's batch to
//!   its leader until it is applied (`outcome="applied"`) or given up on (`"failed"`), all
//!   attempts together.
//!
//! Every sample handed to [`Writer::write`] is counted exactly once in one of the two sample
//! counters, unless routing fails as a whole (`Err`: nothing is counted here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strata_raft::meta::MetaState;
use strata_raft::network::{Forwarder, Transport};
use strata_raft::registry::{Consistency, ProposeError, ReadError, Registry};
use strata_raft::types::{Command, GroupId, NodeId, NodeInfo, Response, WriteBatch};
use strata_shard::series::series_id_of_canonical;
use strata_shard::{Clock, Sample, SeriesKey, WriteBatchBuilder};

use crate::ring::{Ring, RingError, RingSet, RoutingSlack, ShardId, group_of};

/// Counter `{node, outcome}`: samples applied by their shard (module doc, Self-metrics).
pub const SAMPLES_ACCEPTED: &str = "strata_samples_accepted_total";
/// Counter `{node, reason}`: samples refused, by reason (module doc, Self-metrics).
pub const SAMPLES_REJECTED: &str = "strata_samples_rejected_total";
/// Histogram `{node, group, outcome}`: seconds a shard batch took through Raft.
pub const SHARD_COMMIT_SECONDS: &str = "strata_shard_commit_duration_seconds";

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
    /// Oldest sample accepted, relative to the router's clock (W5).
    pub accept_past_ms: i64,
    /// Furthest-ahead sample accepted, relative to the router's clock (W5).
    pub accept_future_ms: i64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            attempts_max: 40,
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
            // What a Prometheus TSDB head takes (2 h), and Mimir's creation grace period.
            accept_past_ms: 2 * 3_600_000,
            accept_future_ms: 10 * 60_000,
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
    #[error("the ring history: {0}")]
    History(RingError),
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
    /// Samples refused before routing for being outside the accepted time window (W5).
    pub outside_window: u64,
    /// The first of those refusals, naming series, timestamp and window.
    pub outside_window_errors: Vec<String>,
}

/// How many time-window refusals a report keeps in full.
const WINDOW_ERRORS_KEPT: usize = 10;

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

/// The first and the last epoch of a ring history.
type EpochBounds = (u64, u64);

/// The write path of one node.
pub struct Writer<T: Transport + Forwarder> {
    registry: Arc<Registry<T>>,
    forwarder: T,
    config: WriterConfig,
    clock: Arc<dyn Clock>,
    /// The ring of the newest epoch, rebuilt when the epoch changes (W1).
    ring: Mutex<Option<(u64, Arc<Ring>)>>,
    /// The rings of the whole history that reads route by, keyed by the history's first and
    /// last epoch (M7 of `strata_raft::meta`: epochs only ever append, so equal bounds mean an
    /// equal history). Rebuilding it hashes every virtual node of every epoch: a fifth of the
    /// CPU of a small query when it was done per query.
    ring_set: Mutex<Option<(EpochBounds, Arc<RingSet>)>>,
}

impl<T: Transport + Forwarder> Writer<T> {
    pub fn new(
        registry: Arc<Registry<T>>,
        forwarder: T,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Writer {
            registry,
            forwarder,
            config,
            clock,
            ring: Mutex::new(None),
            ring_set: Mutex::new(None),
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

    /// The shards that may hold samples of `key` in `[from_ms, to_ms]`: its shard under every
    /// ring epoch whose time, widened by the window this writer accepts samples in (W5),
    /// meets the range (H6). What a read of one series must ask.
    pub async fn shards_for_series(
        &self,
        key: &SeriesKey,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<BTreeSet<ShardId>, RouteError> {
        let rings = self.ring_set().await?;
        Ok(rings.shards_for_series(key.id(), from_ms, to_ms))
    }

    /// The shards that may hold samples of any series in `[from_ms, to_ms]`: every shard of
    /// every ring epoch that range meets (widened as for [`Writer::shards_for_series`]). What
    /// a query must ask.
    pub async fn shards_for_query(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<BTreeSet<ShardId>, RouteError> {
        Ok(self.ring_set().await?.shards_for_query(from_ms, to_ms))
    }

    async fn ring_set(&self) -> Result<Arc<RingSet>, RouteError> {
        let slack = RoutingSlack {
            late_ms: self.config.accept_past_ms,
            early_ms: self.config.accept_future_ms,
        };
        let cached = self
            .ring_set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (bounds, set) = self
            .registry
            .read_meta(Consistency::Any, |m: &MetaState| {
                let rings = m.rings();
                let bounds = rings.keys().next().zip(rings.keys().next_back());
                let bounds = bounds.map(|(first, last)| (*first, *last));
                match (&cached, bounds) {
                    (Some((b, set)), Some(now)) if *b == now => Ok((now, Arc::clone(set))),
                    _ => RingSet::from_meta(m, slack)
                        .map(|set| (bounds.unwrap_or_default(), Arc::new(set))),
                }
            })
            .await
            .map_err(RouteError::Meta)?
            .map_err(|e| match e {
                RingError::NoRing => RouteError::NoRing,
                e => RouteError::History(e),
            })?;
        *self.ring_set.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((bounds, Arc::clone(&set)));
        Ok(set)
    }

    /// Writes validated series: one batch per shard, sent concurrently (W1–W4).
    pub async fn write(
        &self,
        series: Vec<(SeriesKey, Vec<Sample>)>,
    ) -> Result<WriteReport, RouteError> {
        let (epoch, ring, nodes) = self.routing().await?;
        let now = self.clock.now_ms();
        let (oldest, newest) = (
            now.saturating_sub(self.config.accept_past_ms),
            now.saturating_add(self.config.accept_future_ms),
        );
        let mut outside_window = 0;
        let mut outside_window_errors = Vec::new();
        let mut per_group: BTreeMap<GroupId, WriteBatchBuilder> = BTreeMap::new();
        // The key's canonical bytes are built once: hashed for the route, then copied into the
        // shard's encoded batch, which every replica reads without decoding labels.
        let mut canonical = Vec::new();
        for (key, mut samples) in series {
            samples.retain(|s| {
                let inside = (oldest..=newest).contains(&s.ts_ms);
                if !inside {
                    outside_window += 1;
                    if outside_window_errors.len() < WINDOW_ERRORS_KEPT {
                        let side = if s.ts_ms < oldest { "older" } else { "newer" };
                        outside_window_errors.push(format!(
                            "series {key}: sample at {} is {side} than the accepted window \
                             {oldest}..={newest} (now {now}, {} ms back, {} ms ahead)",
                            s.ts_ms, self.config.accept_past_ms, self.config.accept_future_ms
                        ));
                    }
                }
                inside
            });
            if samples.is_empty() {
                continue;
            }
            canonical.clear();
            key.put_canonical(&mut canonical);
            let group = group_of(ring.shard_of(series_id_of_canonical(&canonical)));
            per_group
                .entry(group)
                .or_default()
                .push_canonical(&canonical, &samples);
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
            let samples = batch.sample_count() as u64;
            let batch = batch.finish();
            async move {
                // A latency, not a timestamp: tokio's clock (paused in tests), not the Clock seam.
                let started = tokio::time::Instant::now();
                let outcome = self.send(group, batch, &replicas).await;
                let outcome_label = if outcome.is_ok() { "applied" } else { "failed" };
                metrics::histogram!(
                    SHARD_COMMIT_SECONDS,
                    "node" => self.registry.node().to_string(),
                    "group" => group.to_string(),
                    "outcome" => outcome_label,
                )
                .record(started.elapsed().as_secs_f64());
                (group, outcome.unwrap_or_else(|e| failed(samples, &e)))
            }
        });
        let shards = futures::future::join_all(sends).await.into_iter().collect();
        let report = WriteReport {
            ring_epoch: epoch,
            shards,
            outside_window,
            outside_window_errors,
        };
        self.count_samples(&report);
        Ok(report)
    }

    /// Adds a write's samples to the sample counters (module doc, Self-metrics).
    fn count_samples(&self, report: &WriteReport) {
        let node = self.registry.node().to_string();
        let accepted = |outcome: &'static str, n: u64| {
            metrics::counter!(SAMPLES_ACCEPTED, "node" => node.clone(), "outcome" => outcome)
                .increment(n);
        };
        let rejected = |reason: String, n: u64| {
            metrics::counter!(SAMPLES_REJECTED, "node" => node.clone(), "reason" => reason)
                .increment(n);
        };
        // Registered even at zero, so a rate over them exists from the first write on.
        accepted("appended", report.appended());
        accepted("duplicate", report.duplicates());
        if report.outside_window > 0 {
            rejected("outside_window".into(), report.outside_window);
        }
        for outcome in report.shards.values() {
            match outcome {
                ShardOutcome::Applied { rejected: by, .. } => {
                    for (reason, n) in by {
                        rejected(reason.clone(), *n);
                    }
                }
                ShardOutcome::Failed { samples, busy, .. } => {
                    let reason = if *busy { "shard_busy" } else { "shard_failed" };
                    rejected(reason.into(), *samples);
                }
            }
        }
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
            let command = Command::Write(batch.clone());
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

/// What a remote-write sender is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u64>,
    /// The message (Prometheus senders log it).
    pub body: String,
}

/// Engine refusal reasons that are limits a later retry can pass (the sender should back off
/// and retry: 429), as opposed to bad data (400).
const LIMIT_REASONS: [&str; 2] = ["series_limit_tenant", "series_limit_metric"];

/// The answer to a decoded remote-write request and what writing it did, as senders expect:
/// - 503 with `Retry-After` when a shard's batch failed for a reason a retry can fix (no quorum,
///   leader moving, busy): the sender retries the whole request, and samples already written
///   come back as duplicates (W2). The body names the failed shards and their sample counts.
/// - 429 when the engine refused samples for a series limit (a retry can pass once series go
///   inactive).
/// - 400 when series or samples were refused as bad data (invalid labels, too old, a different
///   value at a stored timestamp): the first error, and that the other samples were written.
/// - 204 when everything was stored (duplicates of stored samples included).
pub fn remote_write_answer(
    decoded: &crate::remote_write::DecodedWrite,
    report: &WriteReport,
) -> HttpAnswer {
    let failures: Vec<String> = report
        .failures()
        .filter_map(|(group, o)| match o {
            ShardOutcome::Failed {
                samples, reason, ..
            } => Some(format!("shard group {group} ({samples} samples): {reason}")),
            ShardOutcome::Applied { .. } => None,
        })
        .collect();
    if !failures.is_empty() {
        let busy = report
            .failures()
            .any(|(_, o)| matches!(o, ShardOutcome::Failed { busy: true, .. }));
        return HttpAnswer {
            status: 503,
            retry_after_s: Some(if busy { 1 } else { 2 }),
            body: format!(
                "{} of {} shard batches were not written, retry: {}",
                failures.len(),
                report.shards.len(),
                failures.join("; ")
            ),
        };
    }
    let mut engine_refusals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut first_engine_error = None;
    for outcome in report.shards.values() {
        if let ShardOutcome::Applied {
            rejected, errors, ..
        } = outcome
        {
            for (reason, n) in rejected {
                *engine_refusals.entry(reason.as_str()).or_default() += n;
            }
            first_engine_error = first_engine_error.or(errors.first());
        }
    }
    let refused: u64 = engine_refusals.values().sum();
    if engine_refusals.keys().any(|r| LIMIT_REASONS.contains(r)) {
        return HttpAnswer {
            status: 429,
            retry_after_s: Some(30),
            body: format!(
                "{refused} samples refused by per-tenant series limits ({}), the other samples \
                 were written: {}",
                summary(&engine_refusals),
                first_engine_error.map_or("", String::as_str)
            ),
        };
    }
    if report.outside_window > 0 {
        return HttpAnswer {
            status: 400,
            retry_after_s: None,
            body: format!(
                "{}; {} samples outside the accepted time window, the other samples were written",
                report
                    .outside_window_errors
                    .first()
                    .map_or("", String::as_str),
                report.outside_window
            ),
        };
    }
    if let Some(message) = decoded.error_message() {
        return HttpAnswer {
            status: 400,
            retry_after_s: None,
            body: message,
        };
    }
    if refused > 0 {
        return HttpAnswer {
            status: 400,
            retry_after_s: None,
            body: format!(
                "{}; {refused} samples refused ({}), the other samples were written",
                first_engine_error.map_or("samples refused", String::as_str),
                summary(&engine_refusals)
            ),
        };
    }
    HttpAnswer {
        status: 204,
        retry_after_s: None,
        body: String::new(),
    }
}

fn summary(counts: &BTreeMap<&str, u64>) -> String {
    counts
        .iter()
        .map(|(reason, n)| format!("{reason}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::DecodedWrite;

    fn applied(appended: u64, rejected: &[(&str, u64)], errors: &[&str]) -> ShardOutcome {
        ShardOutcome::Applied {
            appended,
            duplicates: 0,
            rejected: rejected.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            errors: errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn report(shards: Vec<(GroupId, ShardOutcome)>) -> WriteReport {
        WriteReport {
            ring_epoch: 1,
            shards: shards.into_iter().collect(),
            ..WriteReport::default()
        }
    }

    #[test]
    fn senders_get_the_status_that_makes_them_do_the_right_thing() {
        let clean = DecodedWrite::default();
        let ok = report(vec![(1, applied(10, &[], &[])), (2, applied(5, &[], &[]))]);
        assert_eq!(remote_write_answer(&clean, &ok).status, 204);

        let no_quorum = report(vec![
            (1, applied(10, &[], &[])),
            (
                2,
                ShardOutcome::Failed {
                    samples: 5,
                    reason: "group 2: not applied within 5s".into(),
                    retryable: true,
                    busy: false,
                },
            ),
        ]);
        let a = remote_write_answer(&clean, &no_quorum);
        assert_eq!((a.status, a.retry_after_s), (503, Some(2)));
        assert!(a.body.contains("shard group 2 (5 samples)"), "{}", a.body);

        let limited = report(vec![(
            1,
            applied(3, &[("series_limit_tenant", 2)], &["tenant t: 1000 series"]),
        )]);
        let a = remote_write_answer(&clean, &limited);
        assert_eq!(a.status, 429);
        assert!(a.body.contains("series_limit_tenant: 2"), "{}", a.body);

        let too_old = report(vec![(
            1,
            applied(
                3,
                &[("sample_too_old", 2)],
                &["series up: sample at 5 is too old"],
            ),
        )]);
        let a = remote_write_answer(&clean, &too_old);
        assert_eq!(a.status, 400);
        assert!(
            a.body.starts_with("series up: sample at 5 is too old"),
            "{}",
            a.body
        );
        assert!(
            a.body.contains("the other samples were written"),
            "{}",
            a.body
        );
    }
}
