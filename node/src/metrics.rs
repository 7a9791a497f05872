//! Self-metrics: what a node records about itself, in Prometheus' text format at `GET /metrics`
//! on its HTTP server (`crate::http`).
//!
//! Code records through the `metrics` facade (`metrics::counter!` and friends); this module
//! installs the one recorder of the process (`metrics-exporter-prometheus`, without its own
//! listener or push gateway: our axum route renders it) and samples what Raft knows.
//!
//! ## Exported
//! - [`install`]: the process-wide recorder, installed on the first call; every call returns a
//!   handle to the same one. Tests and `strata dev` run several nodes in one process.
//! - [`NodeMetrics`]: one node's side: its `node` label, what the HTTP handlers record, and
//!   [`NodeMetrics::render`], the page `GET /metrics` serves.
//! - [`spawn_sampler`] → [`Sampler`]: once per [`SAMPLE_PERIOD`], reads a registry's groups and
//!   their openraft `RaftMetrics` and sets the Raft gauges and leader-change counters below;
//!   it also runs the recorder's upkeep (histogram buckets are drained there). `strata dev`
//!   runs one per node, started and stopped with the node's HTTP server.
//!
//! ## Metrics
//! Every series has a `node` label (the node id); `group` is a Raft group id (`0` = meta,
//! shard `s` = group `s + 1`).
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `strata_remote_write_requests_total` | counter | node, code | remote-write requests answered, by HTTP status |
//! | `strata_remote_write_requests_rejected_total` | counter | node, reason | requests refused whole (nothing written): `too_many_in_flight`, `invalid_tenant`, `unsupported_encoding`, `body_too_large`, `body_unreadable`, `body_decompressed_too_large`, `not_snappy`, `not_protobuf`, `route_failed` |
//! | `strata_samples_accepted_total` | counter | node, outcome | samples applied by their shard: `appended` or `duplicate` (router `write.rs`) |
//! | `strata_samples_rejected_total` | counter | node, reason | samples refused: at decode (`invalid_label`, `invalid_series`, `label_limit`, `timestamp_out_of_range`, `unreported` = refused beyond the errors a request keeps in full), `route_failed`, and in the write path (`outside_window`, `shard_busy`, `shard_failed`, engine reasons such as `sample_too_old`) |
//! | `strata_shard_commit_duration_seconds` | histogram | node, group, outcome | a shard batch from the router to applied (`applied`) or given up (`failed`), all attempts |
//! | `strata_raft_is_leader` | gauge | node, group | 1 if this node's replica leads the group, else 0 |
//! | `strata_raft_term` | gauge | node, group | the replica's current term (every election raises it) |
//! | `strata_raft_leader_changes_total` | counter | node, group | new leaderships this replica has seen |
//! | `strata_raft_replica_lag_entries` | gauge | node, group, follower | on the group's leader only: log entries the leader has that `follower` is not known to have |
//!
//! ## Invariants
//! - SM1. Every series has a `node` label; the recorder adds no global labels.
//! - SM2. One recorder per process: [`install`] is idempotent. If some other recorder was
//!   installed first, ours still renders but records nothing (the facade has one global slot);
//!   that is reported once on stderr, never a panic.
//! - SM3. A node's `/metrics` page holds only series whose `node` is that node, so scraping the
//!   three nodes of `strata dev` (one process, one recorder) yields each series once.
//! - SM4. Gauges are set by a sampler only, and a gauge not set for [`GAUGE_IDLE`] is dropped
//!   from the page: a group no longer led loses its lag series, a stopped node its gauges.
//!   Counters and histograms are never dropped (`rate()` needs them monotonic).
//! - SM5. A leader change is counted when the replica sees a leader for a (term, leader) pair
//!   other than the last one it saw, the first leader seen included (like etcd's
//!   `leader_changes_seen`). It is sampled, so a leadership shorter than [`SAMPLE_PERIOD`] can
//!   be missed; `strata_raft_term` still shows the elections.
//! - SM6. What starts a sampler stops it: [`Sampler::stop`] ends the task and waits for it
//!   (it then no longer holds the registry); dropping a [`Sampler`] aborts the task.
//! - SM7. No wall-clock reads (CONVENTIONS.md 5): the sampler ticks on tokio's clock.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use strata_raft::network::Transport;
use strata_raft::registry::Registry;
use strata_raft::types::{GroupId, NodeId};
use strata_router::write::{SAMPLES_ACCEPTED, SAMPLES_REJECTED, SHARD_COMMIT_SECONDS};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Counter `{node, code}`: remote-write requests answered, by HTTP status.
pub const REMOTE_WRITE_REQUESTS: &str = "strata_remote_write_requests_total";
/// Counter `{node, reason}`: remote-write requests refused whole.
pub const REMOTE_WRITE_REQUESTS_REJECTED: &str = "strata_remote_write_requests_rejected_total";
/// Gauge `{node, group}`: 1 if this node leads the group.
pub const RAFT_IS_LEADER: &str = "strata_raft_is_leader";
/// Gauge `{node, group}`: the replica's current term.
pub const RAFT_TERM: &str = "strata_raft_term";
/// Counter `{node, group}`: new leaderships seen (SM5).
pub const RAFT_LEADER_CHANGES: &str = "strata_raft_leader_changes_total";
/// Gauge `{node, group, follower}`: entries a follower is behind its leader.
pub const RAFT_REPLICA_LAG: &str = "strata_raft_replica_lag_entries";

/// How often a sampler reads Raft's state.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// A gauge not set for this long leaves the page (SM4): several sample periods, so a slow
/// sample never makes a live series flicker.
pub const GAUGE_IDLE: Duration = Duration::from_secs(10);
/// Bucket upper bounds of [`SHARD_COMMIT_SECONDS`]: a WAL fsync on a quorum (about a
/// millisecond on an SSD) up to the writer's 10 s deadline per batch.
pub const COMMIT_SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder (SM2); installed on the first call.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
                .set_buckets_for_metric(
                    Matcher::Full(SHARD_COMMIT_SECONDS.to_string()),
                    &COMMIT_SECONDS_BUCKETS,
                )
                .expect("COMMIT_SECONDS_BUCKETS is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                eprintln!("strata: self-metrics will stay empty, another recorder is set: {e}");
            }
            describe();
            handle
        })
        .clone()
}

/// The HELP lines of every metric (the units are already in the names).
fn describe() {
    describe_counter!(
        REMOTE_WRITE_REQUESTS,
        Unit::Count,
        "Remote-write requests answered, by HTTP status code."
    );
    describe_counter!(
        REMOTE_WRITE_REQUESTS_REJECTED,
        Unit::Count,
        "Remote-write requests refused whole (nothing written), by reason."
    );
    describe_counter!(
        SAMPLES_ACCEPTED,
        Unit::Count,
        "Samples applied by their shard: appended, or duplicates of stored samples."
    );
    describe_counter!(
        SAMPLES_REJECTED,
        Unit::Count,
        "Samples refused, by reason (decode, time window, shard batch failed, engine)."
    );
    describe_histogram!(
        SHARD_COMMIT_SECONDS,
        Unit::Seconds,
        "Time from handing a shard batch to its leader until applied or given up."
    );
    describe_gauge!(
        RAFT_IS_LEADER,
        "1 if this node's replica leads the Raft group, else 0."
    );
    describe_gauge!(
        RAFT_TERM,
        "The Raft term of this node's replica of the group."
    );
    describe_counter!(
        RAFT_LEADER_CHANGES,
        Unit::Count,
        "New leaderships (term, leader) this node's replica has seen."
    );
    describe_gauge!(
        RAFT_REPLICA_LAG,
        "On the group's leader: log entries the follower is not known to have."
    );
}

/// One node's self-metrics: its `node` label and the process's recorder.
#[derive(Clone)]
pub struct NodeMetrics {
    node: String,
    handle: PrometheusHandle,
}

impl NodeMetrics {
    /// Node `node`'s metrics; installs the recorder if no one has yet.
    pub fn new(node: NodeId) -> Self {
        NodeMetrics {
            node: node.to_string(),
            handle: install(),
        }
    }

    /// A remote-write request was answered with `code`.
    pub fn request_answered(&self, code: u16) {
        counter!(REMOTE_WRITE_REQUESTS, "node" => self.node.clone(), "code" => code.to_string())
            .increment(1);
    }

    /// A remote-write request was refused whole, for `reason`.
    pub fn request_rejected(&self, reason: &'static str) {
        counter!(REMOTE_WRITE_REQUESTS_REJECTED, "node" => self.node.clone(), "reason" => reason)
            .increment(1);
    }

    /// `samples` samples were refused for `reason` before the write path saw them.
    pub fn samples_rejected(&self, reason: &'static str, samples: u64) {
        counter!(SAMPLES_REJECTED, "node" => self.node.clone(), "reason" => reason)
            .increment(samples);
    }

    /// The `/metrics` page of this node: the process's metrics, this node's series only (SM3).
    pub fn render(&self) -> String {
        own_series(&self.handle.render(), &self.node)
    }
}

/// Keeps the sample lines of `text` (Prometheus text format) whose `node` label is `node`, and
/// the comment lines of each family that keeps at least one.
fn own_series(text: &str, node: &str) -> String {
    let first = format!("node=\"{node}\"");
    let later = format!(",{first}");
    let ours = |line: &str| {
        let labels = match (line.find('{'), line.rfind('}')) {
            (Some(open), Some(close)) if open < close => &line[open + 1..close],
            _ => return false,
        };
        // Label values are escaped, so `,node="` inside a value would be `\"`-quoted.
        labels.starts_with(&first) || labels.contains(&later)
    };
    let mut out = String::with_capacity(text.len());
    // The exporter writes each family as comments, then samples, then a blank line.
    for family in text.split("\n\n") {
        let mut comments = String::new();
        let mut samples = String::new();
        for line in family.lines() {
            if line.starts_with('#') {
                comments.push_str(line);
                comments.push('\n');
            } else if ours(line) {
                samples.push_str(line);
                samples.push('\n');
            }
        }
        if !samples.is_empty() {
            out.push_str(&comments);
            out.push_str(&samples);
            out.push('\n');
        }
    }
    out
}

/// A running sampler (module doc); see [`spawn_sampler`].
pub struct Sampler {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Stops the sampler and waits until its task has ended (SM6).
    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            // The task only ends by the signal; a panic in it is reported, not propagated.
            if let Err(e) = task.await {
                eprintln!("strata: a self-metrics sampler failed: {e}");
            }
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts sampling `registry`'s Raft groups once per [`SAMPLE_PERIOD`] (the first sample at
/// once) until the returned [`Sampler`] is stopped or dropped. Must run inside a tokio runtime.
pub fn spawn_sampler<T: Transport>(registry: Arc<Registry<T>>) -> Sampler {
    let handle = install();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut seen = BTreeMap::new();
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A sent signal or a dropped sender: either way, stop.
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            sample(&registry, &mut seen);
            handle.run_upkeep();
        }
    });
    Sampler {
        stop: Some(stop),
        task: Some(task),
    }
}

/// One sample of every group `registry` hosts. `seen` is, per group, the last (term, leader)
/// this replica saw (SM5).
fn sample<T: Transport>(registry: &Registry<T>, seen: &mut BTreeMap<GroupId, (u64, NodeId)>) {
    let node = registry.node().to_string();
    let groups = registry.groups();
    seen.retain(|g, _| groups.contains(g));
    for group in groups {
        let Some(m) = registry.metrics(group) else {
            continue;
        };
        let g = group.to_string();
        let leads = m.state.is_leader();
        gauge!(RAFT_IS_LEADER, "node" => node.clone(), "group" => g.clone()).set(if leads {
            1.0
        } else {
            0.0
        });
        gauge!(RAFT_TERM, "node" => node.clone(), "group" => g.clone()).set(m.current_term as f64);
        // Registered at 0 before any change, so `increase()` sees the first one.
        let changes = counter!(RAFT_LEADER_CHANGES, "node" => node.clone(), "group" => g.clone());
        if let Some(leader) = m.current_leader {
            let leadership = (m.current_term, leader);
            if seen.insert(group, leadership) != Some(leadership) {
                changes.increment(1);
            }
        }
        // `replication` is `Some` on the leader only; it lists the leader itself too.
        if let (true, Some(replication)) = (leads, &m.replication) {
            // Entries are counted by index, so "none" is one before index 0.
            let last = m.last_log_index.map_or(0, |i| i + 1);
            for (follower, matched) in replication.iter().filter(|(f, _)| **f != m.id) {
                let have = matched.as_ref().map_or(0, |l| l.index() + 1);
                gauge!(
                    RAFT_REPLICA_LAG,
                    "node" => node.clone(),
                    "group" => g.clone(),
                    "follower" => follower.to_string(),
                )
                .set(last.saturating_sub(have) as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::own_series;

    #[test]
    fn a_node_page_keeps_its_own_series_and_their_families_comments_only() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{node=\"1\",r=\"x\"} 3\n\
                    a_total{node=\"12\",r=\"x\"} 4\na_total{r=\"y\",node=\"1\"} 5\n\n\
                    # TYPE b gauge\nb{node=\"2\"} 1\n\n";
        assert_eq!(
            own_series(text, "1"),
            "# HELP a_total A.\n# TYPE a_total counter\na_total{node=\"1\",r=\"x\"} 3\n\
             a_total{r=\"y\",node=\"1\"} 5\n\n"
        );
        assert_eq!(own_series(text, "2"), "# TYPE b gauge\nb{node=\"2\"} 1\n\n");
        assert_eq!(own_series(text, "3"), "");
    }
}
