//! Three `strata start` processes on loopback in three zones. Writes flow while the process
//! that leads the most shards is killed with SIGKILL and started again; afterwards every
//! acknowledged sample is on every replica of its shard exactly once, with its value, and no
//! sample that was never sent is anywhere.
//!
//! How it reads what each replica holds: once writes stop and replication settles, the
//! processes stop (SIGTERM) and the test opens each node's data directory with the node's own
//! registry (no network), reading every shard replica's engine directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use strata_proto::prometheus as pb;
use strata_raft::network::grpc::{GrpcConfig, GrpcNetwork};
use strata_raft::registry::{Consistency, MetaStoreKind, Registry, RegistryConfig};
use strata_raft::types::{GroupId, META_GROUP, NodeId};
use strata_router::ring::{Ring, group_of};
use strata_shard::{Clock, Labels, SeriesKey, StdFs, SystemClock, Tenant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::TempDir;

const SHARDS: u32 = 4;
const SERIES: usize = 24;
/// Samples of a round are one second apart in time, whatever the real pace.
const STEP_MS: i64 = 1000;

/// One `strata start` process; killed (SIGKILL) and reaped on drop if still running.
struct Proc {
    id: NodeId,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn strata start");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = c.try_wait() {
                assert!(status.success(), "node {} exited with {status}", self.id);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("node {} did not stop within 15 s of SIGTERM", self.id);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn key(i: usize) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("anonymous").unwrap(),
        Labels::from_pairs(&[("__name__", "mp_test"), ("series", &i.to_string())]).unwrap(),
    )
}

/// Round `k`: every series gets one sample at `base + k * STEP_MS` with value `k`.
fn round_body(base: i64, k: i64) -> Vec<u8> {
    let timeseries = (0..SERIES)
        .map(|i| pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: "mp_test".into(),
                },
                pb::Label {
                    name: "series".into(),
                    value: i.to_string(),
                },
            ],
            samples: vec![pb::Sample {
                value: k as f64,
                timestamp: base + k * STEP_MS,
            }],
            ..Default::default()
        })
        .collect();
    let raw = pb::WriteRequest {
        timeseries,
        ..Default::default()
    }
    .encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

/// One remote-write POST; the status, or `None` when the connection failed.
async fn post(port: u16, body: &[u8]) -> Option<u16> {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let head = format!(
            "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: snappy\r\n\
             Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.ok()?;
        s.write_all(body).await.ok()?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.ok()?;
        String::from_utf8_lossy(&reply)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .ok()
        .flatten()
}

/// Which node leads each shard group, as node `observer`'s log last said.
fn leaders_seen_by(observer: &Proc) -> BTreeMap<GroupId, NodeId> {
    let mut leaders = BTreeMap::new();
    for line in observer.log_text().lines() {
        // "strata node 1: shard 0 (group 1) is led by node 2" / "... by this node"
        let Some((_, rest)) = line.split_once("(group ") else {
            continue;
        };
        let Some((group, rest)) = rest.split_once(") is led by ") else {
            continue;
        };
        let leader = if rest == "this node" {
            observer.id
        } else {
            rest.trim_start_matches("node ").parse().unwrap()
        };
        leaders.insert(group.parse().unwrap(), leader);
    }
    leaders
}

async fn wait_for_line(p: &Proc, needle: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !p.log_text().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} did not print {needle:?} within {timeout:?}; its log:\n{}",
            p.id,
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes round after round until `stop` says so; a round is retried (same payload: the
/// write path is idempotent) on the next node until one answers 204. Returns the rounds that
/// were acknowledged and those whose outcome is unknown (never acknowledged).
async fn write_rounds(
    http: Vec<u16>,
    base: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<i64>, Vec<i64>) {
    let (mut acked, mut unknown) = (Vec::new(), Vec::new());
    let mut k = 0i64;
    let mut next = 0usize;
    while !*stop.borrow() {
        let body = round_body(base, k);
        let mut ok = false;
        for _attempt in 0..60 {
            let port = http[next % http.len()];
            next += 1;
            if post(port, &body).await == Some(204) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if ok { &mut acked } else { &mut unknown }.push(k);
        k += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (acked, unknown)
}

/// Every sample of every shard replica on `node`'s disk: group → series index → (ts, value).
async fn read_replicas(
    node: NodeId,
    dir: &Path,
    ring: &Ring,
) -> BTreeMap<GroupId, BTreeMap<usize, Vec<(i64, f64)>>> {
    let mut config = RegistryConfig::new(node, Arc::new(StdFs), dir);
    config.meta_store = MetaStoreKind::Sled(dir.join("meta-sled"));
    // Offline: nobody listens; elections fail harmlessly while the test reads local state.
    config.raft.election_timeout_min_ms = 60_000;
    config.raft.election_timeout_max_ms = 120_000;
    config.raft.heartbeat_ms = 1000;
    let net = GrpcNetwork::new(GrpcConfig::default());
    let registry = Registry::open(config, net.router(node)).await.unwrap();
    // Committed entries are applied as the groups start; give them a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = BTreeMap::new();
    for group in registry.groups() {
        if group == META_GROUP {
            continue;
        }
        let mut series = BTreeMap::new();
        for i in 0..SERIES {
            let k = key(i);
            if group_of(ring.shard_of(k.id())) != group {
                continue;
            }
            let samples = registry
                .read(group, Consistency::Any, |e| {
                    e.read_series(&k, 0, i64::MAX / 4)
                })
                .await
                .unwrap()
                .unwrap();
            series.insert(i, samples.iter().map(|s| (s.ts_ms, s.value)).collect());
        }
        out.insert(group, series);
    }
    registry.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_busiest_leader_loses_no_acknowledged_sample() {
    let dir = TempDir::new("mp");
    std::fs::create_dir_all(&dir.0).unwrap();
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<String> = (0..3)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, raft[i]))
        .collect();
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| {
            let id = i as NodeId + 1;
            let args = [
                "start",
                "--node-id",
                &id.to_string(),
                "--zone",
                ["zone-a", "zone-b", "zone-c"][i],
                "--data-dir",
                &dir.0.join(format!("node-{id}")).display().to_string(),
                "--raft-addr",
                &format!("127.0.0.1:{}", raft[i]),
                "--http-addr",
                &format!("127.0.0.1:{}", http[i]),
                "--peers",
                &peers.join(","),
                "--shards",
                &SHARDS.to_string(),
            ]
            .map(String::from)
            .to_vec();
            Proc {
                id,
                args,
                log: dir.0.join(format!("node-{id}.log")),
                child: None,
            }
        })
        .collect();
    for p in &mut procs {
        p.spawn();
    }
    for p in &procs {
        wait_for_line(
            p,
            "running; Ctrl-C or SIGTERM stops it",
            Duration::from_secs(60),
        )
        .await;
    }

    let base = SystemClock.now_ms() - 3_600_000;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(write_rounds(http.clone(), base, stop_rx));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The process leading the most shard groups, as node 1 sees it (ties: the lower id).
    let leaders = leaders_seen_by(&procs[0]);
    let mut led: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (group, leader) in &leaders {
        if *group != META_GROUP {
            *led.entry(*leader).or_default() += 1;
        }
    }
    let victim = led
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .map(|(id, _)| *id)
        .expect("node 1 logged shard leaders");
    let v = victim as usize - 1;
    procs[v].kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    procs[v].spawn();
    wait_for_line(
        &procs[v],
        "running; Ctrl-C or SIGTERM stops it",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.send(true).unwrap();
    let (acked, unknown) = writer.await.unwrap();
    assert!(
        acked.len() >= 20,
        "too few acknowledged rounds: {}",
        acked.len()
    );

    // Let followers learn the last commits, then stop everything cleanly.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for p in &mut procs {
        p.terminate();
    }

    let ring = Ring::new(SHARDS, strata_node::config::VNODES_PER_SHARD_DEFAULT).unwrap();
    let mut replicas = BTreeMap::new();
    for p in &procs {
        let node_dir = dir.0.join(format!("node-{}", p.id));
        replicas.insert(p.id, read_replicas(p.id, &node_dir, &ring).await);
    }
    let sent = |k: i64| (base + k * STEP_MS, k as f64);
    for i in 0..SERIES {
        let group = group_of(ring.shard_of(key(i).id()));
        let mut first: Option<&Vec<(i64, f64)>> = None;
        for (node, groups) in &replicas {
            let stored = groups
                .get(&group)
                .and_then(|s| s.get(&i))
                .unwrap_or_else(|| panic!("node {node} has no replica of group {group}"));
            for &k in &acked {
                let n = stored.iter().filter(|s| **s == sent(k)).count();
                assert_eq!(
                    n, 1,
                    "series {i} (group {group}) on node {node}: acknowledged round {k} is \
                     there {n} times"
                );
            }
            for s in stored {
                let k = (s.0 - base) / STEP_MS;
                assert!(
                    s == &sent(k) && (acked.contains(&k) || unknown.contains(&k)),
                    "series {i} on node {node}: {s:?} was never sent"
                );
            }
            // An unknown outcome may go either way, but the same way on every replica.
            match first {
                None => first = Some(stored),
                Some(f) => assert_eq!(f, stored, "series {i}: replicas differ (node {node})"),
            }
        }
    }
    eprintln!(
        "victim node {victim} (led {:?}); {} rounds acknowledged, {} unknown",
        led,
        acked.len(),
        unknown.len()
    );
}
