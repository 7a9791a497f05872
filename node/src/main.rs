//! The `strata` binary: one process per node in production; `strata dev` runs three in one.
//!
//! - `strata demo` runs the storage engine of one shard on real files ([`strata_node::demo`]).
//! - `strata dev` runs a three-node, three-zone cluster in one process on loopback until
//!   Ctrl-C or SIGTERM ([`strata_node::cluster`]); started again on the same data directory it
//!   resumes the same cluster.
//!
//! - `strata start` runs one node of a cluster per process ([`strata_node::server`]),
//!   configured by a TOML file ([`strata_node::config`]) and flags; bare, a single-node cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_node::config::{NodeConfig, SharedSections};

/// mimalloc rather than glibc malloc: ingest spends a quarter of its CPU allocating and
/// freeing small buffers across tokio's worker threads (docs/BENCHMARKS.md, "Ingest").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use strata_node::{cluster, demo, server};

const USAGE: &str = "\
usage: strata start [--config FILE] [--node-id N] [--zone Z] [--data-dir DIR]
                    [--raft-addr HOST:PORT] [--http-addr HOST:PORT]
                    [--peers ID@HOST:PORT,...] [--join ID@HOST:PORT,...]
                    [--shards N] [--replication-factor R] [--multi-tenant true|false]
       strata dev [--config FILE] [--data-dir DIR] [--shards N] [--base-port P]
       strata demo [--data-dir DIR] [--hosts N] [--hours H]

  start  run one node of a cluster until Ctrl-C or SIGTERM (then: stop taking writes,
         finish in-flight ones, hand leadership to other nodes, stop). Flags override the
         TOML file's keys of the same name (docs/configuration.md; deploy/strata.toml is an
         example). With neither --peers nor --join the node is a cluster of its own (RF=1);
         --peers lists the initial cluster (the same list on every member, this node
         included); --join adds a new node to a running cluster through existing nodes
         (defaults: node 1 in zone-a, data in ./strata-data, Raft gRPC on 127.0.0.1:7001,
         remote write at http://127.0.0.1:7101/api/v1/write)

  demo   ingest generated node_exporter-like data into one shard engine under DIR,
         seal it into block files, and print a query result and bytes per sample
         (defaults: --data-dir ./strata-data --hosts 100 --hours 6)

  dev    run a 3-node, 3-zone cluster (nodes 1..3 in zone-a..c) in this process on
         127.0.0.1 until Ctrl-C or SIGTERM: the meta group and N shard groups, each
         replicated on all three nodes; node K serves Raft gRPC on port P+K-1 and
         Prometheus remote write at http://127.0.0.1:(P+100+K-1)/api/v1/write (P = 0:
         ports the OS picks, printed). Data goes under DIR/node-K; started again on the
         same DIR, it resumes that cluster (its ring and ports) instead of making a new one.
         --config FILE: a TOML file of the sections all three nodes share (multi_tenant,
         [raft], [write], [query]; docs/configuration.md)
         (defaults: --data-dir ./strata-dev --shards 8 --base-port 7001)";

fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("start") => {
            let mut file = None;
            let mut flags = BTreeMap::new();
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                if matches!(flag.as_str(), "-h" | "--help") {
                    println!("{USAGE}");
                    return Ok(());
                }
                let Some(name) = flag.strip_prefix("--") else {
                    anyhow::bail!("unexpected argument {flag:?}\n\n{USAGE}");
                };
                let value = rest
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n\n{USAGE}"))?;
                if name == "config" {
                    file = Some(PathBuf::from(value));
                } else {
                    flags.insert(name.to_string(), value.clone());
                }
            }
            let mut config = match &file {
                Some(path) => NodeConfig::from_file(path)?,
                None => NodeConfig::default(),
            };
            config
                .apply_flags(&flags)
                .map_err(|e| anyhow::anyhow!("{e:#}\n\n{USAGE}"))?;
            config.validate()?;
            server::run(&config)
        }
        Some("demo") => {
            let mut opts = demo::Options {
                data_dir: PathBuf::from("./strata-data"),
                hosts: 100,
                hours: 6,
            };
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let mut value = || {
                    rest.next()
                        .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n\n{USAGE}"))
                };
                match flag.as_str() {
                    "-h" | "--help" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    "--data-dir" => opts.data_dir = PathBuf::from(value()?),
                    "--hosts" => opts.hosts = parse_positive(flag, value()?)?,
                    "--hours" => opts.hours = parse_positive(flag, value()?)?,
                    other => anyhow::bail!("unknown flag {other:?}\n\n{USAGE}"),
                }
            }
            demo::run(&opts)
        }
        Some("dev") => {
            let mut opts = cluster::Options {
                data_dir: PathBuf::from("./strata-dev"),
                shards: cluster::SHARDS_DEFAULT,
                base_port: cluster::BASE_PORT_DEFAULT,
                sections: SharedSections::default(),
            };
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let mut value = || {
                    rest.next()
                        .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n\n{USAGE}"))
                };
                match flag.as_str() {
                    "-h" | "--help" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    "--config" => opts.sections = SharedSections::from_file(Path::new(value()?))?,
                    "--data-dir" => opts.data_dir = PathBuf::from(value()?),
                    "--shards" => {
                        let v = value()?;
                        opts.shards = u32::try_from(parse_positive(flag, v)?)
                            .map_err(|_| anyhow::anyhow!("{flag}: {v} is too large"))?;
                    }
                    "--base-port" => {
                        let v = value()?;
                        opts.base_port = v.parse().map_err(|_| {
                            anyhow::anyhow!("{flag} needs a port (0..=65535), got {v:?}")
                        })?;
                    }
                    other => anyhow::bail!("unknown flag {other:?}\n\n{USAGE}"),
                }
            }
            cluster::run(&opts)
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
        None => anyhow::bail!("a command is required\n\n{USAGE}"),
    }
}

fn parse_positive(flag: &str, value: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!("{flag} needs a positive whole number, got {value:?}"),
    }
}

/// Transparent huge pages off for this process, before the allocator has touched much:
/// mimalloc madvises its arenas for them, and with 2 MiB pages every sparsely used part of an
/// arena is resident in full. Measured (docs/BENCHMARKS.md, "Comparison"): an idle node 130 →
/// 41 MiB of RSS, 100 000 active series 374 → 276 MiB, ingest throughput within noise.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    // A kernel that refuses it leaves huge pages on, which costs memory, not correctness.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
