//! # strata-sim: whole clusters under faults, deterministically
//!
//! The simulator runs the real node code ([`strata_node::server::NodeServer`]) as turmoil
//! hosts, each on its own seams ([`NodeEnv`]): a [`SimFs`] disk, an in-memory meta store, the
//! simulated clock [`SimClock`], and turmoil's network ([`TurmoilDialer`], [`incoming`], from
//! `strata_raft::network::turmoil_net`).
//! Clients are turmoil hosts too, writing through the public gRPC `Write` API ([`client`]).
//!
//! ## Map
//! - [`run`]: one run of a seed: the cluster, the clients, the driver that applies the fault
//!   schedule, healing, the final read of every replica, the verdict ([`run::RunResult`]).
//! - [`nemesis`]: the fault kinds and the schedule a seed draws.
//! - [`history`]: every client operation (invoke, completion, outcome) and nemesis action, as
//!   the checkers' input and as the trace the determinism test compares.
//! - [`check`]: the checkers C1–C7 (convergence, acknowledged ⇒ present, exactly once, nothing
//!   invented, one home per series, liveness after healing, linearizable strong reads).
//! - [`linearizable`]: the per-series linearizability checker (WGL) behind C7.
//! - `src/main.rs`: the soak runner, `cargo run -p strata-sim --release -- --seeds N`.
//! - `tests/`: the fixed seeds `cargo test` runs, the same-seed-twice determinism test and the
//!   negative controls (deliberate bugs from `strata_raft::faults` that the checkers must catch).
//!
//! Determinism: the workspace builds with `--cfg tokio_unstable` (`.cargo/config.toml`), so
//! turmoil seeds tokio's scheduler from the run's seed; openraft's elections draw from a seeded
//! RNG per group; everything here iterates `BTreeMap`s.
//!
//! Must not: touch real files, real threads, sled, `std::time`, or `HashMap` iteration order
//! inside a simulated host.

pub mod check;
pub mod history;
pub mod linearizable;
pub mod nemesis;
pub mod run;

use std::sync::Arc;

use futures::Stream;
use hyper_util::rt::TokioIo;
use strata_node::config::{NodeConfig, Peer};
use strata_node::server::NodeEnv;
use strata_proto::api::strata_client::StrataClient;
use strata_raft::network::grpc::Dialer;
use strata_raft::network::turmoil_net::{self, Accepted, TurmoilDialer};
use strata_raft::registry::MetaStoreKind;
use strata_shard::Clock;
use strata_shard::sim_fs::SimFs;
use tonic::transport::{Channel, Endpoint, Uri};

/// The port every simulated node serves Raft and the public gRPC API on.
pub const NODE_PORT: u16 = 7000;

/// Simulated wall-clock time at the start of every run (2026-01-01T00:00:00Z), so sample
/// timestamps look real and every run sees the same times.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// Wall-clock time in a simulation: [`EPOCH_MS`] plus the simulated time elapsed, the same on
/// every host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimClock;

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        EPOCH_MS + i64::try_from(elapsed.as_millis()).expect("a run lasts less than 2^63 ms")
    }
}

/// The turmoil host name of node `id`.
pub fn host(id: u64) -> String {
    format!("n{id}")
}

/// The configuration of node `id` of a cluster of `nodes` nodes, one zone each, RF=3.
pub fn node_config(id: u64, nodes: u64) -> NodeConfig {
    let addr = |n: u64| format!("{}:{NODE_PORT}", host(n));
    NodeConfig {
        node_id: id,
        zone: format!("zone-{id}"),
        data_dir: format!("/data/{}", host(id)).into(),
        raft_addr: addr(id),
        http_addr: format!("{}:9090", host(id)),
        peers: (1..=nodes)
            .map(|n| Peer {
                id: n,
                raft_addr: addr(n),
            })
            .collect(),
        replication_factor: 3,
        ..NodeConfig::default()
    }
}

/// A node's simulated seams, on `disk` (kept by the caller across a host's restarts).
pub fn node_env(disk: SimFs) -> NodeEnv {
    NodeEnv {
        fs: Arc::new(disk),
        meta_store: MetaStoreKind::Memory,
        clock: Arc::new(SimClock),
        dialer: Arc::new(TurmoilDialer),
        faults: Default::default(),
    }
}

/// The connections a simulated node accepts on [`NODE_PORT`].
pub async fn incoming()
-> std::io::Result<impl Stream<Item = std::io::Result<Accepted>> + Send + 'static> {
    turmoil_net::incoming(NODE_PORT).await
}

/// A gRPC client of the public API of node `id`, over turmoil (connects lazily).
pub fn client(id: u64) -> StrataClient<Channel> {
    let addr = format!("{}:{NODE_PORT}", host(id));
    let connector = tower::service_fn(move |_: Uri| {
        let dial = TurmoilDialer.dial(&addr);
        async move { dial.await.map(TokioIo::new) }
    });
    let channel = Endpoint::from_static("http://strata").connect_with_connector_lazy(connector);
    StrataClient::new(channel)
}
