//! One run: a seed → a cluster, clients, a fault schedule, a history and the checkers' verdict.
//!
//! Timeline of every run (simulated time):
//! 1. `0` — the nodes start and form the cluster; clients start writing at 0.5–2 s (their first
//!    writes retry until the cluster is ready).
//! 2. [`FAULTS_FROM_MS`]..[`FAULTS_UNTIL_MS`] — the nemesis schedule (`nemesis.rs`) runs.
//! 3. [`HEAL_MS`] — every fault is undone and every crashed node restarted; clients start no
//!    new operation; one probe write through every node must be acknowledged within
//!    [`LIVENESS_BOUND_MS`] (C6).
//! 4. [`CHECK_AT_MS`] — after the quiet period, every replica's engine is read and the
//!    checkers (`check.rs`) judge it with the history.
//!
//! The driver (this module, outside turmoil's hosts) steps the simulation and applies the
//! schedule between steps: turmoil's network controls and host crash/restart are only
//! reachable from outside. Leadership transfers run inside the leader's host, through a
//! per-node command queue, because they are Raft calls.
//!
//! Determinism: everything a run does comes from its seed (turmoil's RNG, which seeds tokio's
//! under `--cfg tokio_unstable`; the schedule's and the clients' `StdRng`s; each node's Raft
//! seed). Maps are `BTreeMap`s. So [`RunResult::trace`] is a function of the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_node::server::{Node, NodeServer};
use strata_proto::api::{self as api, WriteRequest};
use strata_proto::prometheus as pb;
use strata_raft::faults::Faults;
use strata_raft::meta::{MetaCommand, MetaResponse};
use strata_raft::registry::Consistency;
use strata_raft::types::{Command, META_GROUP, Response};
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::sim_fs::SimFs;
use strata_shard::{Clock, SeriesKey, Tenant};
use tonic::Code;

use crate::check::{self, FinalState, Probe, ReplicaState};
use crate::history::{History, Outcome, Written, now_ms};
use crate::nemesis::{self, Episode, Fault, Kind};
use crate::{SimClock, client, host, incoming, node_config, node_env};

/// The nemesis starts after the cluster has formed.
pub const FAULTS_FROM_MS: u64 = 10_000;
/// Every episode ends by then.
pub const FAULTS_UNTIL_MS: u64 = 80_000;
/// Everything is healed; clients stop starting operations.
pub const HEAL_MS: u64 = 85_000;
/// C6: a write through any node is acknowledged this soon after healing.
pub const LIVENESS_BOUND_MS: u64 = 30_000;
/// The replicas are read and checked.
pub const CHECK_AT_MS: u64 = HEAL_MS + 50_000;
/// A client gives up on an operation this long after invoking it (its outcome is unknown).
const OP_DEADLINE_MS: u64 = 20_000;
/// One request's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Series each client writes (`series="c<client>-s<i>"`).
const SERIES_PER_CLIENT: u32 = 4;
/// The metric name of every simulated series.
const METRIC: &str = "sim_metric";

/// What one run does.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    /// Nodes, in three zones (`zone-1`, `zone-2`, `zone-3`, `zone-1`, …).
    pub nodes: u64,
    /// Writing clients.
    pub clients: u32,
    /// Clients reading the writers' series.
    pub readers: u32,
    /// How fresh those reads ask to be: `Strong` in a real run; `Any` is the negative control
    /// of C7 (a lagging replica answers stale reads).
    pub read_consistency: api::Consistency,
    /// Shards of the cluster (few, so groups see enough entries to snapshot).
    pub shards: u32,
    /// The fault kinds the schedule draws from; empty: no faults.
    pub kinds: Vec<Kind>,
    /// Deliberate bugs (negative controls); all off for a real run.
    pub faults: Faults,
}

impl RunConfig {
    /// The standard run of `seed`: every fault kind; 3 nodes, or 5 for one seed in four.
    pub fn new(seed: u64) -> RunConfig {
        RunConfig {
            seed,
            nodes: if seed % 4 == 3 { 5 } else { 3 },
            clients: 3,
            readers: 2,
            read_consistency: api::Consistency::Strong,
            shards: 4,
            kinds: Kind::ALL.to_vec(),
            faults: Faults::default(),
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("cargo run -p strata-sim --release -- --seed {}", self.seed);
        if self.faults.skip_wal_fsync {
            cmd.push_str(" --skip-wal-fsync");
        }
        if self.faults.ack_before_quorum {
            cmd.push_str(" --ack-before-quorum");
        }
        if self.read_consistency != api::Consistency::Strong {
            let _ = write!(cmd, " --reads {}", self.read_consistency.as_str_name());
        }
        if self.kinds != Kind::ALL {
            let kinds: Vec<String> = self.kinds.iter().map(|k| format!("{k:?}")).collect();
            let _ = write!(cmd, " --kinds {}", kinds.join(","));
        }
        cmd
    }
}

/// What a run came to.
#[derive(Debug)]
pub struct RunResult {
    pub config: RunConfig,
    /// The history and the nemesis actions, as text: equal for equal configurations.
    pub trace: String,
    /// The checkers' findings, plus a failed simulation; empty: the run is correct.
    pub violations: Vec<String>,
    /// Operations by outcome, faults applied, samples stored.
    pub summary: String,
}

impl RunResult {
    /// The seed, the verdict, the violations and the command that replays the run.
    pub fn report(&self) -> String {
        let mut out = format!(
            "seed {}: {} ({})\n",
            self.config.seed,
            if self.violations.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            self.summary
        );
        for v in self.violations.iter().take(20) {
            let _ = writeln!(out, "  {v}");
        }
        if self.violations.len() > 20 {
            let _ = writeln!(out, "  … and {} more", self.violations.len() - 20);
        }
        if !self.violations.is_empty() {
            let _ = writeln!(out, "  replay: {}", self.config.replay_command());
        }
        out
    }
}

/// A Raft call a node's host runs for the nemesis, as the leader of `group`.
#[derive(Clone, Copy, Debug)]
enum LeaderCall {
    /// Hand leadership of the group to this node.
    Transfer { group: u64, to: u64 },
    /// Remove this voter from the group (the leader's control loop adds it back, since the
    /// placement still names it: a membership change out and in, with catch-up).
    RemoveVoter { group: u64, node: u64 },
    /// As the meta group's leader: swap `from` for `to` in the group's placement (a replica
    /// move; the group's leader and the two nodes' control loops carry it out).
    MoveReplica { group: u64, from: u64, to: u64 },
}

/// What the hosts, the clients and the driver share.
#[derive(Clone, Default)]
struct Shared {
    /// The running nodes' registries (a crash removes one; a restart puts the new one back).
    registries: Arc<Mutex<BTreeMap<u64, Node>>>,
    /// Leadership transfers for a node's host to run.
    commands: Arc<Mutex<BTreeMap<u64, Vec<LeaderCall>>>>,
    history: History,
    probes: Arc<Mutex<Vec<Probe>>>,
    final_state: Arc<Mutex<Option<FinalState>>>,
    /// Snapshots installed by the nodes, as counted at the end (since each one's last start).
    snapshots_installed: Arc<Mutex<u64>>,
    /// Replica moves the meta group accepted.
    moves: Arc<Mutex<u64>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `config` to the end and checks it.
pub fn run(config: &RunConfig) -> RunResult {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let episodes = if config.kinds.is_empty() {
        Vec::new()
    } else {
        nemesis::schedule(
            &mut rng,
            config.nodes,
            &config.kinds,
            FAULTS_FROM_MS,
            FAULTS_UNTIL_MS,
        )
    };
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(CHECK_AT_MS + 120_000))
        .tcp_capacity(1 << 20)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(BASE_LATENCY)
        .rng_seed(config.seed)
        .build();
    let shared = Shared::default();
    let mut disks = BTreeMap::new();
    for id in 1..=config.nodes {
        let disk = SimFs::new();
        disks.insert(id, disk.clone());
        let (shared, config) = (shared.clone(), config.clone());
        sim.host(host(id), move || {
            node_host(id, config.clone(), disk.clone(), shared.clone())
        });
    }
    for c in 0..config.clients {
        let seed = config.seed ^ (u64::from(c) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (shared, nodes) = (shared.clone(), config.nodes);
        sim.client(format!("c{c}"), async move {
            writer(c, seed, nodes, shared.history).await;
            Ok(())
        });
    }
    for r in 0..config.readers {
        let seed = config.seed ^ (u64::from(r) + 101).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (shared, nodes, clients) = (shared.clone(), config.nodes, config.clients);
        let consistency = config.read_consistency;
        sim.client(format!("r{r}"), async move {
            reader(r, seed, (nodes, clients), consistency, shared.history).await;
            Ok(())
        });
    }
    {
        let (shared, nodes) = (shared.clone(), config.nodes);
        sim.client("probe", async move {
            probe(nodes, shared).await;
            Ok(())
        });
    }
    {
        let shared = shared.clone();
        sim.client("checker", async move {
            tokio::time::sleep_until(at(CHECK_AT_MS)).await;
            let state = collect(&shared).await?;
            *locked(&shared.final_state) = Some(state);
            *locked(&shared.snapshots_installed) = locked(&shared.registries)
                .values()
                .map(|r| r.snapshots_installed())
                .sum();
            Ok(())
        });
    }

    let mut driver = Driver {
        config,
        rng,
        disks,
        shared: shared.clone(),
        crashed: BTreeSet::new(),
        flaky: BTreeMap::new(),
        applied: 0,
    };
    let mut violations = Vec::new();
    let mut events: Vec<(u64, bool, usize)> = episodes
        .iter()
        .enumerate()
        .flat_map(|(i, e)| [(e.start_ms, true, i), (e.end_ms, false, i)])
        .collect();
    // Ends before starts at one instant; otherwise in schedule order.
    events.sort_by_key(|&(t, start, i)| (t, start, i));
    let mut next = 0;
    let mut undo: BTreeMap<usize, Vec<Undo>> = BTreeMap::new();
    let mut healed = false;
    loop {
        let now = elapsed_ms(&sim);
        while next < events.len() && events[next].0 <= now {
            let (_, start, i) = events[next];
            next += 1;
            if start {
                let u = driver.start(&mut sim, &episodes[i], now);
                undo.insert(i, u);
            } else if let Some(u) = undo.remove(&i) {
                driver.undo(&mut sim, u, now);
            }
        }
        driver.flap(&mut sim, now);
        if !healed && now >= HEAL_MS {
            healed = true;
            for (_, u) in std::mem::take(&mut undo) {
                driver.undo(&mut sim, u, now);
            }
            driver.heal_all(&mut sim, now);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                violations.push(format!("the simulation failed at {now} ms: {e}"));
                break;
            }
        }
    }

    let ops = shared.history.ops();
    let reads = shared.history.reads();
    let probes = locked(&shared.probes).clone();
    let state = locked(&shared.final_state).take();
    if let Some(state) = &state {
        violations.extend(check::check(
            &ops,
            &reads,
            state,
            &probes,
            LIVENESS_BOUND_MS,
        ));
    } else if violations.is_empty() {
        violations.push("the replicas were never read".into());
    }
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|o| f(&o.outcome)).count();
    let summary = format!(
        "{} nodes, {} ops: {} ok, {} unknown, {} failed, {} pending; {} of {} reads \
         answered; {} faults applied; {} replicas moved; {} snapshots installed; {}",
        config.nodes,
        ops.len(),
        count(|o| *o == Outcome::Ok),
        count(|o| matches!(o, Outcome::Unknown(_))),
        count(|o| matches!(o, Outcome::Failed(_))),
        count(|o| *o == Outcome::Pending),
        reads.iter().filter(|r| r.result.is_some()).count(),
        reads.len(),
        driver.applied,
        *locked(&shared.moves),
        *locked(&shared.snapshots_installed),
        state.as_ref().map_or("no final state".into(), digest),
    );
    let mut trace = shared.history.trace();
    let _ = writeln!(trace, "end: {summary}");
    RunResult {
        config: config.clone(),
        trace,
        violations,
        summary,
    }
}

/// Node `id`'s zone: three zones, round-robin.
fn zone(id: u64) -> String {
    format!("zone-{}", (id - 1) % 3 + 1)
}

/// Every node link's latency outside a `Slow` fault.
const BASE_LATENCY: Duration = Duration::from_millis(10);

fn elapsed_ms(sim: &turmoil::Sim<'_>) -> u64 {
    u64::try_from(sim.elapsed().as_millis()).expect("a run lasts less than 2^64 ms")
}

/// The tokio instant `ms` after the run started.
fn at(ms: u64) -> tokio::time::Instant {
    let now = now_ms();
    tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now))
}

/// A node's host: the real node on its disk, plus the queue of leadership transfers.
async fn node_host(id: u64, config: RunConfig, disk: SimFs, shared: Shared) -> turmoil::Result {
    let mut node = node_config(id, config.nodes);
    node.zone = zone(id);
    node.shards = config.shards;
    // Snapshots every 10 entries, so a node down for long finds the log it missed purged and
    // catches up by snapshot (at every 40 it mostly caught up from the log).
    node.raft.snapshot_after_entries = 10;
    node.raft.keep_after_snapshot = 2;
    let mut env = node_env(disk);
    env.faults = config.faults;
    let server = NodeServer::start_with(&node, env, incoming().await?).await?;
    let registry = Arc::clone(server.registry());
    locked(&shared.registries).insert(id, Arc::clone(&registry));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let todo = locked(&shared.commands).remove(&id).unwrap_or_default();
        for call in todo {
            let outcome = match call {
                LeaderCall::Transfer { group, to } => registry
                    .transfer_leader(group, to)
                    .await
                    .map_err(|e| e.to_string()),
                LeaderCall::RemoveVoter { group, node } => registry
                    .remove_replica(group, node)
                    .await
                    .map_err(|e| e.to_string()),
                LeaderCall::MoveReplica { group, from, to } => {
                    let moved = move_replica(&registry, group, from, to).await;
                    if moved.is_ok() {
                        *locked(&shared.moves) += 1;
                    }
                    moved
                }
            };
            shared
                .history
                .note(now_ms(), format!("node {id}: {call:?}: {outcome:?}"));
        }
    }
}

/// Proposes `group`'s placement with `to` in `from`'s slot, through this node (the meta
/// leader); the outcome as the history notes it.
async fn move_replica(registry: &Node, group: u64, from: u64, to: u64) -> Result<(), String> {
    let placement = registry
        .read_meta(Consistency::Strong, |m| {
            m.placement(group).map(<[u64]>::to_vec)
        })
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no placement")?;
    if !placement.contains(&from) || placement.contains(&to) {
        return Err(format!("the placement {placement:?} changed meanwhile"));
    }
    let replicas = placement
        .iter()
        .map(|&n| if n == from { to } else { n })
        .collect();
    let command = Command::Meta(MetaCommand::SetPlacement { group, replicas });
    match registry.propose(META_GROUP, command).await {
        Ok(Response::Meta(MetaResponse::Done)) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// One writing client: operations of 1–4 of its series, one sample each, until healing.
async fn writer(client: u32, seed: u64, nodes: u64, history: History) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format!("c{client}");
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
    let mut last_ts = 0;
    let mut seq = 0u64;
    while now_ms() < HEAL_MS {
        let ts = SimClock.now_ms().max(last_ts + 1);
        last_ts = ts;
        seq += 1;
        let samples: Vec<Written> = (0..SERIES_PER_CLIENT)
            .filter(|_| rng.random_bool(0.6))
            .map(|i| Written {
                series: format!("{name}-s{i}"),
                ts,
                // Unique per client and operation: a stored value names its write.
                value: (u64::from(client) * 1_000_000 + seq) as f64,
            })
            .collect();
        if samples.is_empty() {
            continue;
        }
        let first = rng.random_range(1..=nodes);
        let id = history.invoke(&name, samples.clone());
        let outcome = write(&history, id, &samples, first, nodes, &mut rng).await;
        history.complete(id, outcome);
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
    }
}

/// Sends one operation's request until it is acknowledged, refused, or [`OP_DEADLINE_MS`]
/// passes; a retry goes to the next node (`nodes == 1`: the same one). Retries are safe:
/// writes are idempotent per series and timestamp.
async fn write(
    history: &History,
    id: u64,
    samples: &[Written],
    first: u64,
    nodes: u64,
    rng: &mut StdRng,
) -> Outcome {
    let request = WriteRequest {
        tenant: String::new(),
        snappy_write_request: body(samples),
    };
    let deadline = now_ms() + OP_DEADLINE_MS;
    let mut node = first;
    loop {
        let mut api = client(node);
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, api.write(request.clone())).await;
        let last = match answer {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                history.attempt(
                    id,
                    node,
                    &format!(
                        "ok appended={} duplicates={}",
                        reply.appended, reply.duplicates
                    ),
                );
                if reply.rejected > 0 || !reply.failed_shards.is_empty() {
                    return Outcome::Failed(format!("OK with refusals: {reply:?}"));
                }
                return Outcome::Ok;
            }
            Ok(Err(status)) => {
                let text = format!("{:?}: {}", status.code(), status.message());
                history.attempt(id, node, &text);
                let retryable = matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::DeadlineExceeded
                        | Code::ResourceExhausted
                        | Code::Cancelled
                );
                if !retryable {
                    return Outcome::Failed(text);
                }
                text
            }
            Err(_) => {
                history.attempt(id, node, "timed out");
                "timed out".to_owned()
            }
        };
        if now_ms() >= deadline {
            return Outcome::Unknown(last);
        }
        node = node % nodes + 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
    }
}

/// One reading client: reads (strong in a real run) of a random writer's series through a
/// random node, until healing. A node that is not the shard's leader names it; the read
/// follows (twice at most).
async fn reader(
    reader: u32,
    seed: u64,
    (nodes, clients): (u64, u32),
    consistency: api::Consistency,
    history: History,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format!("r{reader}");
    while now_ms() < HEAL_MS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        let series = format!(
            "c{}-s{}",
            rng.random_range(0..clients),
            rng.random_range(0..SERIES_PER_CLIENT)
        );
        let request = api::ReadSeriesRequest {
            tenant: String::new(),
            labels: [("__name__", METRIC), ("series", series.as_str())]
                .iter()
                .map(|(name, value)| api::Label {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            start_ms: 0,
            end_ms: i64::MAX,
            consistency: consistency.into(),
        };
        let id = history.invoke_read(&name, &series);
        let mut node = rng.random_range(1..=nodes);
        let mut result = Err(String::new());
        for _ in 0..3 {
            let mut api = client(node);
            let answer =
                tokio::time::timeout(ATTEMPT_TIMEOUT, api.read_series(request.clone())).await;
            result = match answer {
                Ok(Ok(reply)) => Ok(reply
                    .into_inner()
                    .samples
                    .iter()
                    .map(|s| (s.timestamp_ms, s.value.to_bits()))
                    .collect()),
                Ok(Err(status)) => Err(format!(
                    "node {node}: {:?}: {}",
                    status.code(),
                    status.message()
                )),
                Err(_) => Err(format!("node {node}: timed out")),
            };
            let Err(why) = &result else { break };
            // "… read from node 3 at n3:7000": follow the hint.
            match why
                .split("read from node ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|id| id.parse().ok())
            {
                Some(leader) => node = leader,
                None => break,
            }
        }
        history.complete_read(id, result);
    }
}

/// C6's probes: at healing, one write through every node, each retried on its own node.
async fn probe(nodes: u64, shared: Shared) {
    tokio::time::sleep_until(at(HEAL_MS)).await;
    let tasks: Vec<_> = (1..=nodes)
        .map(|node| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let samples = vec![Written {
                    series: format!("probe-n{node}"),
                    ts: SimClock.now_ms(),
                    value: node as f64,
                }];
                let request = WriteRequest {
                    tenant: String::new(),
                    snappy_write_request: body(&samples),
                };
                let id = shared.history.invoke(&format!("probe{node}"), samples);
                let give_up = HEAL_MS + LIVENESS_BOUND_MS + 10_000;
                let outcome = loop {
                    let mut api = client(node);
                    let answer =
                        tokio::time::timeout(ATTEMPT_TIMEOUT, api.write(request.clone())).await;
                    let text = match answer {
                        Ok(Ok(_)) => break Outcome::Ok,
                        Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                        Err(_) => "timed out".to_owned(),
                    };
                    shared.history.attempt(id, node, &text);
                    if now_ms() >= give_up {
                        break Outcome::Unknown(text);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                let acked_after_ms = (outcome == Outcome::Ok).then(|| now_ms() - HEAL_MS);
                shared.history.complete(id, outcome);
                locked(&shared.probes).push(Probe {
                    node,
                    acked_after_ms,
                });
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    locked(&shared.probes).sort_by_key(|p| p.node);
}

/// Reads every replica of every shard group on every running node.
async fn collect(shared: &Shared) -> anyhow::Result<FinalState> {
    let registries: Vec<(u64, Node)> = locked(&shared.registries)
        .iter()
        .map(|(id, r)| (*id, Arc::clone(r)))
        .collect();
    let tenant = Tenant::new("anonymous")?;
    let metric = Matcher::new(MatchOp::Equal, "__name__", METRIC)?;
    let mut state = FinalState::default();
    let meta_leader = registries
        .iter()
        .find(|(_, r)| r.is_leader(META_GROUP))
        .context("no meta leader")?;
    state.placements = meta_leader
        .1
        .read_meta(Consistency::Strong, |m| {
            m.placements()
                .iter()
                .map(|(g, nodes)| (*g, nodes.iter().copied().collect()))
                .collect()
        })
        .await?;
    for (node, registry) in registries {
        for group in registry.groups().into_iter().filter(|g| *g != 0) {
            if let Some(m) = registry.metrics(group) {
                state
                    .voters
                    .entry(group)
                    .or_default()
                    .extend(m.membership_config.membership().voter_ids());
            }
            let replica = registry
                .read(group, Consistency::Any, |engine| {
                    let mut replica = ReplicaState::new();
                    for labels in
                        engine.series(&tenant, std::slice::from_ref(&metric), i64::MIN, i64::MAX)
                    {
                        let name = labels.get("series").unwrap_or_default().to_owned();
                        let key = SeriesKey::new(tenant.clone(), labels);
                        let samples = engine.read_series(&key, i64::MIN, i64::MAX)?;
                        replica.insert(
                            name,
                            samples
                                .iter()
                                .map(|s| (s.ts_ms, s.value.to_bits()))
                                .collect(),
                        );
                    }
                    anyhow::Ok(replica)
                })
                .await??;
            state.replicas.insert((group, node), replica);
        }
    }
    Ok(state)
}

/// Per replica: series and samples held (in the trace, so determinism covers the end state).
fn digest(state: &FinalState) -> String {
    let mut out = String::from("replicas");
    for ((group, node), replica) in &state.replicas {
        let samples: usize = replica.values().map(Vec::len).sum();
        let _ = write!(out, " g{group}/n{node}:{}s/{samples}", replica.len());
    }
    out
}

/// The remote-write body of `samples` (one series per sample).
fn body(samples: &[Written]) -> Vec<u8> {
    let timeseries = samples
        .iter()
        .map(|s| pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: METRIC.into(),
                },
                pb::Label {
                    name: "series".into(),
                    value: s.series.clone(),
                },
            ],
            samples: vec![pb::Sample {
                value: s.value,
                timestamp: s.ts,
            }],
            ..Default::default()
        })
        .collect();
    let raw = pb::WriteRequest {
        timeseries,
        ..Default::default()
    }
    .encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any buffer")
}

/// How to undo one applied fault.
enum Undo {
    /// Repair the node's dropped links to every other node.
    Repair(u64),
    /// Release the node's links to every other node.
    Release(u64),
    /// Release the link between two nodes.
    ReleasePair(u64, u64),
    /// End the node's message loss and latency.
    Steady(u64),
    Restart(Vec<u64>),
}

/// Applies the schedule to the simulation (module doc).
struct Driver<'a> {
    config: &'a RunConfig,
    rng: StdRng,
    disks: BTreeMap<u64, SimFs>,
    shared: Shared,
    crashed: BTreeSet<u64>,
    /// Flaky nodes: when their links next toggle, and whether they are held now.
    flaky: BTreeMap<u64, (u64, bool)>,
    applied: usize,
}

impl Driver<'_> {
    fn note(&self, at: u64, line: String) {
        self.shared.history.note(at, format!("nemesis: {line}"));
    }

    fn others(&self, node: u64) -> impl Iterator<Item = u64> + use<> {
        (1..=self.config.nodes).filter(move |n| *n != node)
    }

    /// A shard group a running node hosts, picked at random, with its leader and voters as
    /// that node sees them.
    fn pick_group(&mut self) -> Option<(u64, Option<u64>, Vec<u64>)> {
        let registries = locked(&self.shared.registries).clone();
        let (_, registry) = registries.iter().next()?;
        let groups: Vec<u64> = registry.groups().into_iter().filter(|g| *g != 0).collect();
        if groups.is_empty() {
            return None;
        }
        let group = groups[self.rng.random_range(0..groups.len())];
        let metrics = registry.metrics(group)?;
        let voters = metrics.membership_config.membership().voter_ids().collect();
        let leader = registries
            .values()
            .find_map(|r| r.is_leader(group).then(|| r.node()));
        Some((group, leader, voters))
    }

    fn start(&mut self, sim: &mut turmoil::Sim<'_>, episode: &Episode, now: u64) -> Vec<Undo> {
        self.applied += 1;
        match &episode.fault {
            Fault::PartitionNode(node) => self.partition(sim, *node, now),
            Fault::DropPartition(node) => {
                self.note(
                    now,
                    format!("cut node {node} off, dropping what is in flight"),
                );
                for m in self.others(*node) {
                    sim.partition(host(*node), host(m));
                }
                vec![Undo::Repair(*node)]
            }
            Fault::IsolateLeader => match self.pick_group() {
                Some((group, Some(leader), _)) => {
                    self.note(now, format!("leader of group {group} is node {leader}"));
                    self.partition(sim, leader, now)
                }
                _ => {
                    self.note(now, "isolate leader: no leader known, skipped".into());
                    Vec::new()
                }
            },
            Fault::OneWay { from, to } => {
                self.note(now, format!("cut the link node {from} - node {to}"));
                sim.hold(host(*from), host(*to));
                vec![Undo::ReleasePair(*from, *to)]
            }
            Fault::Flaky(node) => {
                self.note(now, format!("node {node}'s links lose messages in bursts"));
                self.flaky.insert(*node, (now, false));
                vec![Undo::Steady(*node)]
            }
            Fault::Slow {
                node,
                max_latency_ms,
            } => {
                self.note(
                    now,
                    format!("node {node}'s links slow, up to {max_latency_ms} ms"),
                );
                for m in self.others(*node) {
                    sim.set_link_max_message_latency(
                        host(*node),
                        host(m),
                        Duration::from_millis(*max_latency_ms),
                    );
                }
                vec![Undo::Steady(*node)]
            }
            Fault::Crash(node) => vec![Undo::Restart(self.crash(sim, &[*node], now))],
            Fault::CrashMajority => match self.pick_group() {
                Some((group, _, mut voters)) if voters.len() >= 2 => {
                    let first = voters.remove(self.rng.random_range(0..voters.len()));
                    let second = voters[self.rng.random_range(0..voters.len())];
                    self.note(now, format!("crash a majority of group {group}"));
                    vec![Undo::Restart(self.crash(sim, &[first, second], now))]
                }
                _ => {
                    self.note(now, "crash majority: no group known, skipped".into());
                    Vec::new()
                }
            },
            Fault::CrashAll => {
                let all: Vec<u64> = (1..=self.config.nodes).collect();
                vec![Undo::Restart(self.crash(sim, &all, now))]
            }
            Fault::TransferLeader => {
                self.leader_call(now, 2, |group, leader, to| {
                    let line = format!("transfer group {group}: node {leader} -> node {to}");
                    (line, LeaderCall::Transfer { group, to })
                });
                Vec::new()
            }
            Fault::RemoveVoter => {
                self.leader_call(now, 3, |group, leader, node| {
                    let line = format!("remove node {node} from group {group} (leader {leader})");
                    (line, LeaderCall::RemoveVoter { group, node })
                });
                Vec::new()
            }
            Fault::MoveReplica => {
                self.move_replica(now);
                Vec::new()
            }
        }
    }

    /// Queues a call for the leader of a random group with at least `min_voters` voters, about
    /// another voter picked at random: `call(group, leader, voter)` names it and says what.
    fn leader_call(
        &mut self,
        now: u64,
        min_voters: usize,
        call: impl FnOnce(u64, u64, u64) -> (String, LeaderCall),
    ) {
        match self.pick_group() {
            Some((group, Some(leader), voters)) if voters.len() >= min_voters => {
                let others: Vec<u64> = voters.into_iter().filter(|v| *v != leader).collect();
                let voter = others[self.rng.random_range(0..others.len())];
                let (line, call) = call(group, leader, voter);
                self.note(now, line);
                locked(&self.shared.commands)
                    .entry(leader)
                    .or_default()
                    .push(call);
            }
            _ => self.note(
                now,
                format!("no leader of a group with {min_voters} voters known: skipped"),
            ),
        }
    }

    /// Queues, for the meta leader, a move of one replica of a random group to a node of the
    /// same zone that holds none.
    fn move_replica(&mut self, now: u64) {
        let meta_leader = locked(&self.shared.registries)
            .values()
            .find_map(|r| r.is_leader(META_GROUP).then(|| r.node()));
        let (Some(meta_leader), Some((group, _, voters))) = (meta_leader, self.pick_group()) else {
            self.note(
                now,
                "move replica: no meta leader or group known, skipped".into(),
            );
            return;
        };
        let moves: Vec<(u64, u64)> = voters
            .iter()
            .flat_map(|&from| (1..=self.config.nodes).map(move |to| (from, to)))
            .filter(|&(from, to)| zone(from) == zone(to) && !voters.contains(&to))
            .collect();
        if moves.is_empty() {
            self.note(
                now,
                format!("move replica: no spare node in a zone of group {group}, skipped"),
            );
            return;
        }
        let (from, to) = moves[self.rng.random_range(0..moves.len())];
        self.note(
            now,
            format!("move group {group}'s replica from node {from} to node {to}"),
        );
        locked(&self.shared.commands)
            .entry(meta_leader)
            .or_default()
            .push(LeaderCall::MoveReplica { group, from, to });
    }

    fn partition(&mut self, sim: &mut turmoil::Sim<'_>, node: u64, now: u64) -> Vec<Undo> {
        self.note(now, format!("partition node {node} from the other nodes"));
        for m in self.others(node) {
            sim.hold(host(node), host(m));
        }
        vec![Undo::Release(node)]
    }

    /// Message loss on TCP is retransmission delay: a flaky node's links stall for 50–800 ms
    /// at a time, every so often, until its episode ends.
    fn flap(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let nodes: Vec<u64> = self.flaky.keys().copied().collect();
        for node in nodes {
            let (next, held) = self.flaky[&node];
            if now < next {
                continue;
            }
            for m in self.others(node) {
                if held {
                    sim.release(host(node), host(m));
                } else {
                    sim.hold(host(node), host(m));
                }
            }
            let wait = if held {
                self.rng.random_range(100..1_500)
            } else {
                self.rng.random_range(50..800)
            };
            self.flaky.insert(node, (now + wait, !held));
        }
    }

    /// Crashes the running ones of `nodes` (their disks lose unsynced writes); returns them.
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, nodes: &[u64], now: u64) -> Vec<u64> {
        let mut crashed = Vec::new();
        for &node in nodes {
            if !self.crashed.insert(node) {
                continue;
            }
            self.note(now, format!("crash node {node}"));
            locked(&self.shared.registries).remove(&node);
            sim.crash(host(node));
            self.disks[&node].crash();
            crashed.push(node);
        }
        crashed
    }

    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, undo: Vec<Undo>, now: u64) {
        for u in undo {
            match u {
                Undo::Repair(node) => {
                    self.note(now, format!("repair node {node}'s links"));
                    for m in self.others(node) {
                        sim.repair(host(node), host(m));
                    }
                }
                Undo::Release(node) => {
                    self.note(now, format!("release node {node}'s links"));
                    for m in self.others(node) {
                        sim.release(host(node), host(m));
                    }
                }
                Undo::ReleasePair(a, b) => {
                    self.note(now, format!("release the link node {a} - node {b}"));
                    sim.release(host(a), host(b));
                }
                Undo::Steady(node) => {
                    self.note(now, format!("node {node}'s links steady again"));
                    if self.flaky.remove(&node).is_some_and(|(_, held)| held) {
                        for m in self.others(node) {
                            sim.release(host(node), host(m));
                        }
                    }
                    for m in self.others(node) {
                        sim.set_link_max_message_latency(host(node), host(m), BASE_LATENCY);
                    }
                }
                Undo::Restart(nodes) => {
                    for node in nodes {
                        if self.crashed.remove(&node) {
                            self.note(now, format!("restart node {node}"));
                            sim.bounce(host(node));
                        }
                    }
                }
            }
        }
    }

    /// Healing: every link repaired and steady, every crashed node restarted.
    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        self.note(now, "heal everything".into());
        self.flaky.clear();
        for a in 1..=self.config.nodes {
            for b in self.others(a) {
                sim.repair(host(a), host(b));
                sim.release(host(a), host(b));
                sim.set_link_max_message_latency(host(a), host(b), BASE_LATENCY);
            }
        }
        let crashed: Vec<u64> = self.crashed.iter().copied().collect();
        self.undo(sim, vec![Undo::Restart(crashed)], now);
    }
}
