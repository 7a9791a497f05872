//! Commit throughput and latency of Raft groups on 3 in-process nodes with real fsync.
//!
//! Each node has its own directory on the real disk (`StdFs`) and its own shared WAL; the
//! nodes talk over the in-process transport. For each configuration (groups × samples per
//! proposal) a fixed number of proposers per group propose `Command::Write` batches to the
//! group's leader for a fixed time after creating its series (each proposal: one sample for each of the proposer's
//! `batch` node_exporter-like series, as a scrape or remote-write request carries); every proposal is acknowledged only after a quorum has
//! fsynced it and the leader applied it. Reported: committed samples/s, proposal latency
//! p50/p99, fsyncs/s issued by all three nodes, and samples carried per fsync.
//!
//! `cargo bench -p strata-raft --bench commit` (env: `STRATA_BENCH_SECS`, default 5 per
//! configuration; `STRATA_BENCH_DIR`, default the system temp dir; `STRATA_BENCH_RUNS=16x1000`
//! keeps only the listed groups x batch configurations; `STRATA_BENCH_QUICK=1` runs one short
//! configuration, as a smoke test).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_raft::network::RaftHandler;
use strata_raft::network::local::{LocalNetwork, LocalRouter};
use strata_raft::registry::{ProposeError, Registry, RegistryConfig};
use strata_raft::types::{Command, GroupId, NodeId, NodeInfo, Response};
use strata_shard::{Fs, FsFile, Labels, Sample, SeriesKey, StdFs, Tenant};

/// `StdFs` that counts file syncs (fsync of WAL segments, checkpoints, blocks).
#[derive(Debug)]
struct CountingFs {
    syncs: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Box<dyn FsFile>,
    syncs: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl FsFile for CountingFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Fs for CountingFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn open_append(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(CountingFile {
            inner: StdFs.open_append(path, truncate)?,
            syncs: Arc::clone(&self.syncs),
            written: Arc::clone(&self.written),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        StdFs.read_at(path, offset, len)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        StdFs.file_len(path)
    }
    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        StdFs.sync_dir(dir)
    }
}

struct Run {
    groups: u64,
    batch: usize,
    proposers_per_group: usize,
}

struct Outcome {
    samples_per_s: f64,
    p50: Duration,
    p99: Duration,
    fsyncs_per_s: f64,
    samples_per_fsync: f64,
    /// Bytes written to files (all three nodes) per committed sample.
    bytes_per_sample: f64,
    errors: u64,
}

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        addr: format!("node-{id}"),
        zone: format!("zone-{id}"),
    }
}

/// One sample for each of the proposer's series at the next step: the shape of a scrape or a
/// remote-write request (many series, one sample each).
fn command(keys: &[SeriesKey], step: &mut i64) -> Command {
    let ts = *step * 10_000;
    let batch = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            // A counter-like value with a per-series rate and two decimals, as node_exporter's.
            let rate = (i % 97 + 1) as f64 * 0.37;
            let value = ((*step as f64 * rate) * 100.0).round() / 100.0;
            (k.clone(), vec![Sample::new(ts, value)])
        })
        .collect();
    *step += 1;
    Command::Write(batch)
}

/// node_exporter-like series: several labels, host names repeating every 8 CPUs × 8 modes.
fn series_key(g: u64, p: usize, s: usize) -> SeriesKey {
    const MODES: [&str; 8] = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    let instance = format!("host-g{g}-p{p}-{:04}.example.internal:9100", s / 64);
    let cpu = (s / 8 % 8).to_string();
    SeriesKey::new(
        Tenant::new("bench").unwrap(),
        Labels::from_pairs(&[
            ("__name__", "node_cpu_seconds_total"),
            ("cpu", cpu.as_str()),
            ("instance", instance.as_str()),
            ("job", "node"),
            ("mode", MODES[s % 8]),
        ])
        .unwrap(),
    )
}

#[allow(clippy::disallowed_methods)] // a benchmark measures real elapsed time
async fn run(dir: &Path, r: &Run, secs: u64) -> Outcome {
    let net = LocalNetwork::new();
    let syncs = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let mut nodes: BTreeMap<NodeId, Arc<Registry<LocalRouter>>> = BTreeMap::new();
    for id in 1..=3u64 {
        let fs = Arc::new(CountingFs {
            syncs: Arc::clone(&syncs),
            written: Arc::clone(&written),
        });
        let mut config = RegistryConfig::new(id, fs, dir.join(format!("node-{id}")));
        config.in_flight_max = 1024;
        let node = Registry::open(config, net.router(id)).await.unwrap();
        let handler: Arc<dyn RaftHandler> = node.clone();
        net.register(&handler);
        nodes.insert(id, node);
    }
    let members: BTreeMap<NodeId, NodeInfo> = (1..=3).map(|m| (m, info(m))).collect();
    for g in 1..=r.groups {
        let first = g % 3 + 1;
        for (&id, node) in &nodes {
            let init = (id == first).then(|| members.clone());
            node.create_group(g, init).await.unwrap();
        }
    }
    let leader_of = |g: GroupId| nodes.values().find(|n| n.is_leader(g)).cloned();
    for g in 1..=r.groups {
        while leader_of(g).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Every proposer first creates its series (two untimed proposals), then all start together:
    // the figures are steady-state commit throughput, not series creation.
    let proposers = r.groups as usize * r.proposers_per_group;
    let ready = Arc::new(tokio::sync::Barrier::new(proposers + 1));
    let mut tasks = Vec::new();
    for g in 1..=r.groups {
        for p in 0..r.proposers_per_group {
            let nodes = nodes.clone();
            let batch = r.batch;
            let ready = Arc::clone(&ready);
            tasks.push(tokio::spawn(async move {
                let keys: Vec<SeriesKey> = (0..batch).map(|s| series_key(g, p, s)).collect();
                let mut step = 0i64;
                let mut warm = 0;
                while warm < 2 {
                    let Some(leader) = nodes.values().find(|n| n.is_leader(g)).cloned() else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    if leader.propose(g, command(&keys, &mut step)).await.is_ok() {
                        warm += 1;
                    }
                }
                ready.wait().await;
                let deadline = Instant::now() + Duration::from_secs(secs);
                let mut latencies = Vec::new();
                let mut samples = 0u64;
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let Some(leader) = nodes.values().find(|n| n.is_leader(g)).cloned() else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let cmd = command(&keys, &mut step);
                    let t0 = Instant::now();
                    match leader.propose(g, cmd).await {
                        Ok(Response::Write(w)) => {
                            latencies.push(t0.elapsed());
                            samples += w.appended;
                            if w.appended != batch as u64 {
                                panic!("not every sample was appended: {w:?}");
                            }
                        }
                        Ok(other) => panic!("a write answered {other:?}"),
                        Err(ProposeError::Busy { .. }) => errors += 1,
                        Err(_) => errors += 1,
                    }
                }
                (latencies, samples, errors)
            }));
        }
    }
    ready.wait().await;
    let start_syncs = syncs.load(Ordering::Relaxed);
    let start_written = written.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut samples = 0;
    let mut errors = 0;
    for t in tasks {
        let (l, s, e) = t.await.unwrap();
        latencies.extend(l);
        samples += s;
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let fsyncs = syncs.load(Ordering::Relaxed) - start_syncs;
    let bytes = written.load(Ordering::Relaxed) - start_written;
    for node in nodes.values() {
        node.shutdown().await;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        samples_per_s: samples as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
        fsyncs_per_s: fsyncs as f64 / elapsed,
        // Every committed sample is fsynced on all three replicas.
        samples_per_fsync: (samples * 3) as f64 / fsyncs.max(1) as f64,
        bytes_per_sample: bytes as f64 / samples.max(1) as f64,
        errors,
    }
}

fn main() {
    let secs: u64 = std::env::var("STRATA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let quick = std::env::var("STRATA_BENCH_QUICK").is_ok_and(|v| v == "1");
    let base: PathBuf = std::env::var("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let runs: Vec<Run> = if quick {
        vec![Run {
            groups: 16,
            batch: 1000,
            proposers_per_group: 2,
        }]
    } else {
        let mut runs = Vec::new();
        for (groups, proposers_per_group) in [(1, 32), (16, 2)] {
            for batch in [10, 100, 1000, 5000] {
                runs.push(Run {
                    groups,
                    batch,
                    proposers_per_group,
                });
            }
        }
        // `STRATA_BENCH_RUNS=16x1000,1x100` keeps only those (groups x samples per proposal).
        if let Ok(only) = std::env::var("STRATA_BENCH_RUNS") {
            let keep: Vec<&str> = only.split(',').collect();
            runs.retain(|r| keep.contains(&format!("{}x{}", r.groups, r.batch).as_str()));
        }
        runs
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| groups | samples/proposal | proposers | samples/s committed | p50 | p99 | fsyncs/s | samples/fsync | bytes written/sample | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let dir = base.join(format!("strata-commit-bench-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let o = rt.block_on(run(&dir, r, if quick { 1 } else { secs }));
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.0} | {:.0} | {} |",
            r.groups,
            r.batch,
            r.groups as usize * r.proposers_per_group,
            o.samples_per_s,
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.fsyncs_per_s,
            o.samples_per_fsync,
            o.bytes_per_sample,
            o.errors
        );
    }
}
