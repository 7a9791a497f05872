//! The configuration of one node (`strata start`): a TOML file, command-line flags over it,
//! and defaults that make a bare `strata start` a single-node cluster (RF=1).
//!
//! Every key is documented in `docs/configuration.md`; `deploy/strata.toml` is a commented
//! example. Unknown keys are refused (a typo must not silently fall back to a default).
//!
//! ## Invariants
//! - C1. A [`NodeConfig`] that [`NodeConfig::validate`] accepted names a node id > 0, a zone,
//!   and addresses that parse as `host:port`; the node is in its own `peers` list (if that list
//!   is not empty) at its own `raft_addr`, and `peers` and `join` are not both set.
//! - C2. Cluster-wide keys (`shards`, `vnodes_per_shard`, `replication_factor`) are read from
//!   the configuration only when the cluster is first formed (the meta group stores the ring);
//!   later changes to them are ignored with a start-up line saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use strata_raft::types::NodeId;

/// A node of the initial cluster or a node to join through: `id@host:port` on the command
/// line and in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub raft_addr: String,
}

impl std::str::FromStr for Peer {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Peer> {
        let (id, addr) = s
            .split_once('@')
            .with_context(|| format!("peer {s:?}: expected ID@HOST:PORT, e.g. 2@10.0.0.2:7001"))?;
        let id: NodeId =
            id.parse().ok().filter(|id| *id > 0).with_context(|| {
                format!("peer {s:?}: {id:?} is not a node id (a whole number > 0)")
            })?;
        check_addr("peer address", addr)?;
        Ok(Peer {
            id,
            raft_addr: addr.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Peer, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// Raft timing of every group on the node (`[raft]` in the file).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long a write may wait for its shard to commit it before the sender is told to retry.
    pub propose_timeout_ms: u64,
    /// A group snapshots its state machine after this many log entries since its last one.
    pub snapshot_after_entries: u64,
    /// Log entries a group keeps behind its snapshot, so a follower that lags by fewer catches
    /// up from the log rather than by a snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            propose_timeout_ms: 5000,
            snapshot_after_entries: 10_000,
            keep_after_snapshot: 1000,
        }
    }
}

/// Guard rails of PromQL queries (`[query]` in the file): the defaults of every tenant, which
/// the meta group's per-tenant limits override.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySection {
    /// Longest a query may run; a request's `timeout` can only lower it (Prometheus'
    /// `--query.timeout`).
    pub timeout_ms: u64,
    /// Most series one query may fetch from the shards, 0 for no limit (Mimir's
    /// `max_fetched_series_per_query`).
    pub series_max: u64,
    /// Most points one query may fetch from the shards (Prometheus' `--query.max-samples`).
    pub samples_max: u64,
    /// Queries of one tenant running at once on this node; more wait, within their timeout
    /// (Prometheus' `--query.max-concurrency`).
    pub concurrent_max: u64,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            timeout_ms: 120_000,
            series_max: 0,
            samples_max: 50_000_000,
            concurrent_max: 20,
        }
    }
}

/// Which sample timestamps the node's router accepts (`[write]` in the file), relative to its
/// clock: Prometheus' head takes about the last 2 h; Mimir's `past_grace_period` and
/// `creation_grace_period` are the same two bounds. Raising `accept_past_ms` lets a backfill
/// (or a benchmark's dataset) of older data in; the engine's own checks (retention, the
/// out-of-order window behind each series' newest sample) still apply.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WriteSection {
    /// Oldest sample accepted, this many milliseconds before now.
    pub accept_past_ms: u64,
    /// Furthest-ahead sample accepted, this many milliseconds after now.
    pub accept_future_ms: u64,
}

impl Default for WriteSection {
    fn default() -> Self {
        let router = strata_router::write::WriterConfig::default();
        WriteSection {
            accept_past_ms: router.accept_past_ms.unsigned_abs(),
            accept_future_ms: router.accept_future_ms.unsigned_abs(),
        }
    }
}

/// One node's configuration (module doc; every field in `docs/configuration.md`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub zone: String,
    pub data_dir: PathBuf,
    /// Where the node serves Raft and the internal gRPC API; also the address other nodes dial
    /// (so it must be reachable from them: not 0.0.0.0).
    pub raft_addr: String,
    /// Where the node serves HTTP: remote write, `/metrics`.
    pub http_addr: String,
    /// The initial cluster, every member as `id@raft_addr`, the same list on every member.
    /// Empty: this node alone.
    pub peers: Vec<Peer>,
    /// Existing nodes (`id@raft_addr`) through which a new node joins a running cluster.
    pub join: Vec<Peer>,
    pub shards: u32,
    pub vnodes_per_shard: u32,
    pub replication_factor: usize,
    /// Whether `X-Scope-OrgID` selects the tenant (else every write goes to `anonymous`).
    pub multi_tenant: bool,
    pub raft: RaftSection,
    pub write: WriteSection,
    pub query: QuerySection,
}

/// What `strata dev --config FILE` reads from a file: the sections its three nodes share.
/// Each node's identity (id, zone, addresses, data directory) and the cluster's shape
/// (shards, replication) are `strata dev`'s own, so a file naming them is refused as an
/// unknown key rather than silently ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedSections {
    pub multi_tenant: bool,
    pub raft: RaftSection,
    pub write: WriteSection,
    pub query: QuerySection,
}

impl SharedSections {
    /// Reads a TOML file; every key is optional (defaults as in [`NodeConfig`]).
    pub fn from_file(path: &Path) -> anyhow::Result<SharedSections> {
        read_toml(path)
    }

    /// `config` with these sections in place of its own.
    pub fn apply_to(&self, config: NodeConfig) -> NodeConfig {
        NodeConfig {
            multi_tenant: self.multi_tenant,
            raft: self.raft.clone(),
            write: self.write.clone(),
            query: self.query.clone(),
            ..config
        }
    }
}

/// Bound on `[write]`'s two windows: a year either way is more than any backfill needs, and
/// keeps `now ± window` far from overflowing.
pub const WRITE_WINDOW_MAX_MS: u64 = 366 * 24 * 3_600_000;

/// Shards of a new cluster unless configured.
pub const SHARDS_DEFAULT: u32 = 8;
/// Virtual nodes per shard of a new ring (see router::ring's spread figures).
pub const VNODES_PER_SHARD_DEFAULT: u32 = 256;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            zone: "zone-a".into(),
            data_dir: PathBuf::from("./strata-data"),
            raft_addr: "127.0.0.1:7001".into(),
            http_addr: "127.0.0.1:7101".into(),
            peers: Vec::new(),
            join: Vec::new(),
            shards: SHARDS_DEFAULT,
            vnodes_per_shard: VNODES_PER_SHARD_DEFAULT,
            replication_factor: 3,
            multi_tenant: false,
            raft: RaftSection::default(),
            write: WriteSection::default(),
            query: QuerySection::default(),
        }
    }
}

/// A TOML file as `T`; an error names the file and, from serde, the key and line.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn check_addr(what: &str, addr: &str) -> anyhow::Result<()> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{what} {addr:?}: expected HOST:PORT"))?;
    ensure!(!host.is_empty(), "{what} {addr:?}: the host is empty");
    port.parse::<u16>()
        .with_context(|| format!("{what} {addr:?}: {port:?} is not a port (0..=65535)"))?;
    Ok(())
}

impl NodeConfig {
    /// Reads a TOML file; every key is optional (defaults above).
    pub fn from_file(path: &Path) -> anyhow::Result<NodeConfig> {
        read_toml(path)
    }

    /// Applies `strata start` flags (`--key value`, the file's key with `-` for `_`) over
    /// this configuration.
    pub fn apply_flags(&mut self, flags: &BTreeMap<String, String>) -> anyhow::Result<()> {
        for (flag, value) in flags {
            let number = |what: &str| -> anyhow::Result<u64> {
                value
                    .parse()
                    .with_context(|| format!("--{flag} needs {what}, got {value:?}"))
            };
            match flag.as_str() {
                "node-id" => self.node_id = number("a node id")?,
                "zone" => self.zone.clone_from(value),
                "data-dir" => self.data_dir = PathBuf::from(value),
                "raft-addr" => self.raft_addr.clone_from(value),
                "http-addr" => self.http_addr.clone_from(value),
                "peers" => self.peers = parse_list(value)?,
                "join" => self.join = parse_list(value)?,
                "shards" => self.shards = u32::try_from(number("a shard count")?)?,
                "replication-factor" => {
                    self.replication_factor = usize::try_from(number("a replica count")?)?;
                }
                "multi-tenant" => {
                    self.multi_tenant = value
                        .parse()
                        .with_context(|| format!("--{flag} needs true or false, got {value:?}"))?;
                }
                other => bail!("unknown flag --{other}"),
            }
        }
        Ok(())
    }

    /// C1: refuses a configuration a node cannot start with, saying which key is wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.node_id > 0, "node_id must be > 0");
        ensure!(
            !self.zone.is_empty() && self.zone.len() <= 256,
            "zone must be 1..=256 bytes"
        );
        check_addr("raft_addr", &self.raft_addr)?;
        check_addr("http_addr", &self.http_addr)?;
        ensure!(
            !self.raft_addr.starts_with("0.0.0.0:"),
            "raft_addr {:?}: other nodes dial this address, so it must be one they can reach \
             (not 0.0.0.0)",
            self.raft_addr
        );
        ensure!(
            self.peers.is_empty() || self.join.is_empty(),
            "peers (the initial cluster) and join (an existing cluster) exclude each other"
        );
        if !self.peers.is_empty() {
            let me = self.peers.iter().find(|p| p.id == self.node_id);
            match me {
                None => bail!(
                    "peers lists the initial cluster but not this node ({}); add {}@{}",
                    self.node_id,
                    self.node_id,
                    self.raft_addr
                ),
                Some(p) => ensure!(
                    p.raft_addr == self.raft_addr,
                    "peers says node {} is at {}, but raft_addr is {}",
                    self.node_id,
                    p.raft_addr,
                    self.raft_addr
                ),
            }
            let mut ids: Vec<NodeId> = self.peers.iter().map(|p| p.id).collect();
            ids.sort_unstable();
            ids.dedup();
            ensure!(ids.len() == self.peers.len(), "peers names a node id twice");
        }
        ensure!(
            self.join.iter().all(|p| p.id != self.node_id),
            "join lists this node ({}) itself",
            self.node_id
        );
        ensure!(self.shards > 0, "shards must be > 0");
        ensure!(self.vnodes_per_shard > 0, "vnodes_per_shard must be > 0");
        ensure!(
            (1..=strata_raft::meta::REPLICAS_MAX).contains(&self.replication_factor),
            "replication_factor must be 1..={}",
            strata_raft::meta::REPLICAS_MAX
        );
        let r = &self.raft;
        ensure!(
            r.heartbeat_ms > 0 && r.heartbeat_ms < r.election_timeout_min_ms,
            "raft.heartbeat_ms must be > 0 and below raft.election_timeout_min_ms"
        );
        ensure!(
            r.election_timeout_min_ms < r.election_timeout_max_ms,
            "raft.election_timeout_min_ms must be below raft.election_timeout_max_ms"
        );
        ensure!(
            r.snapshot_after_entries > 0,
            "raft.snapshot_after_entries must be > 0"
        );
        ensure!(
            r.propose_timeout_ms > 0,
            "raft.propose_timeout_ms must be > 0"
        );
        let w = &self.write;
        for (key, ms) in [
            ("write.accept_past_ms", w.accept_past_ms),
            ("write.accept_future_ms", w.accept_future_ms),
        ] {
            ensure!(
                ms <= WRITE_WINDOW_MAX_MS,
                "{key} = {ms} is over a year ({WRITE_WINDOW_MAX_MS} ms)"
            );
        }
        let q = &self.query;
        ensure!(q.timeout_ms > 0, "query.timeout_ms must be > 0");
        ensure!(q.samples_max > 0, "query.samples_max must be > 0");
        ensure!(q.concurrent_max > 0, "query.concurrent_max must be > 0");
        Ok(())
    }

    /// The initial cluster: `peers`, or this node alone when `peers` and `join` are empty.
    /// Empty for a node that joins.
    pub fn initial_cluster(&self) -> Vec<Peer> {
        if !self.peers.is_empty() {
            return self.peers.clone();
        }
        if self.join.is_empty() {
            return vec![Peer {
                id: self.node_id,
                raft_addr: self.raft_addr.clone(),
            }];
        }
        Vec::new()
    }
}

fn parse_list(value: &str) -> anyhow::Result<Vec<Peer>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/strata.toml");
        let c = NodeConfig::from_file(&path).unwrap();
        c.validate().unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.replication_factor, 3);
    }

    #[test]
    fn bare_defaults_are_a_single_node() {
        let c = NodeConfig::default();
        c.validate().unwrap();
        assert_eq!(c.initial_cluster().len(), 1);
    }

    #[test]
    fn bad_input_names_the_key() {
        let e = toml::from_str::<NodeConfig>("shard = 4").unwrap_err();
        assert!(e.to_string().contains("unknown field `shard`"), "{e}");
        let e = toml::from_str::<NodeConfig>("peers = [\"x@1.2.3.4:7001\"]").unwrap_err();
        assert!(e.to_string().contains("not a node id"), "{e}");
        let mut c = NodeConfig {
            peers: "2@127.0.0.1:7002".parse::<Peer>().into_iter().collect(),
            ..NodeConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("not this node (1)"), "{e}");
        c.apply_flags(&BTreeMap::from([(
            "peers".to_string(),
            "1@127.0.0.1:7001, 2@127.0.0.1:7002".to_string(),
        )]))
        .unwrap();
        c.validate().unwrap();
        let e = c
            .apply_flags(&BTreeMap::from([("shard".into(), "3".into())]))
            .unwrap_err();
        assert!(e.to_string().contains("unknown flag --shard"), "{e}");
    }

    #[test]
    fn the_write_window_is_configurable_and_bounded() {
        assert_eq!(NodeConfig::default().write.accept_past_ms, 2 * 3_600_000);
        let mut c = toml::from_str::<NodeConfig>("[write]\naccept_past_ms = 46800000").unwrap();
        c.validate().unwrap();
        assert_eq!(c.write.accept_past_ms, 13 * 3_600_000);
        assert_eq!(c.write.accept_future_ms, 10 * 60_000);
        c.write.accept_future_ms = WRITE_WINDOW_MAX_MS + 1;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("write.accept_future_ms"), "{e}");
    }

    #[test]
    fn dev_takes_the_shared_sections_and_refuses_identity_keys() {
        let s = toml::from_str::<SharedSections>("[write]\naccept_past_ms = 46800000").unwrap();
        let c = s.apply_to(NodeConfig {
            node_id: 2,
            ..NodeConfig::default()
        });
        assert_eq!((c.node_id, c.write.accept_past_ms), (2, 13 * 3_600_000));
        for key in ["zone = \"z\"", "shards = 4", "node_id = 2"] {
            let e = toml::from_str::<SharedSections>(key).unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{key}: {e}");
        }
    }
}
