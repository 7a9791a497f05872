//! Three real nodes in three zones as turmoil hosts: the cluster forms (meta group, ring,
//! placements, shard groups with leaders), takes writes through the public gRPC `Write` API
//! from a client host, and afterwards every replica holds every acknowledged sample exactly
//! once. The base the fault runs of the simulator build on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use strata_node::server::{Node, NodeServer};
use strata_proto::api::WriteRequest;
use strata_proto::prometheus as pb;
use strata_raft::registry::Consistency;
use strata_shard::sim_fs::SimFs;
use strata_shard::{Clock, Labels, Sample, SeriesKey, Tenant};
use strata_sim::{SimClock, client, host, incoming, node_config, node_env};
use tonic::Code;

const NODES: u64 = 3;
const SERIES: usize = 12;
const ROUNDS: usize = 20;

fn body(series: &[(String, i64, f64)]) -> Vec<u8> {
    let timeseries = series
        .iter()
        .map(|(name, ts, value)| pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: "sim_metric".into(),
                },
                pb::Label {
                    name: "series".into(),
                    value: name.clone(),
                },
            ],
            samples: vec![pb::Sample {
                value: *value,
                timestamp: *ts,
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

fn key(name: &str) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("anonymous").unwrap(),
        Labels::from_pairs(&[("__name__", "sim_metric"), ("series", name)]).unwrap(),
    )
}

#[test]
fn three_nodes_form_a_cluster_and_keep_every_acknowledged_sample() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .tcp_capacity(1 << 16)
        .build();
    let registries: Arc<Mutex<BTreeMap<u64, Node>>> = Arc::default();
    for id in 1..=NODES {
        let disk = SimFs::new();
        let registries = Arc::clone(&registries);
        sim.host(host(id), move || {
            let (disk, registries) = (disk.clone(), Arc::clone(&registries));
            async move {
                let config = node_config(id, NODES);
                let server =
                    NodeServer::start_with(&config, node_env(disk), incoming().await?).await?;
                registries
                    .lock()
                    .unwrap()
                    .insert(id, Arc::clone(server.registry()));
                futures::future::pending::<()>().await;
                drop(server);
                Ok(())
            }
        });
    }
    let check = Arc::clone(&registries);
    sim.client("writer", async move {
        let names: Vec<String> = (0..SERIES).map(|i| format!("s{i}")).collect();
        let mut acked: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for round in 0..ROUNDS {
            // Rounds are at least 500 ms apart: every round has its own timestamp.
            let ts = SimClock.now_ms();
            let batch: Vec<(String, i64, f64)> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), ts, (round * 100 + i) as f64))
                .collect();
            let request = WriteRequest {
                tenant: String::new(),
                snappy_write_request: body(&batch),
            };
            // Until the cluster is ready, and after any failure: the same request again, to
            // another node (idempotent retries).
            let mut attempt = 0u64;
            let reply = loop {
                let node = (round as u64 + attempt) % NODES + 1;
                match client(node).write(request.clone()).await {
                    Ok(r) => break r.into_inner(),
                    Err(status) => {
                        let retryable = matches!(
                            status.code(),
                            Code::Unavailable | Code::Unknown | Code::DeadlineExceeded
                        );
                        assert!(retryable, "round {round}: refused: {status}");
                        attempt += 1;
                        assert!(attempt < 600, "round {round}: never written: {status}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            assert_eq!(
                reply.appended + reply.duplicates,
                SERIES as u64,
                "round {round}: {reply:?}"
            );
            for (name, ts, value) in batch {
                acked.entry(name).or_default().push((ts, value));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A quiet period, then every replica must hold exactly what was acknowledged.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let registries: Vec<(u64, Node)> = check
            .lock()
            .unwrap()
            .iter()
            .map(|(id, r)| (*id, Arc::clone(r)))
            .collect();
        assert_eq!(registries.len(), NODES as usize);
        for (id, registry) in registries {
            for (name, want) in &acked {
                let k = key(name);
                let mut got: Vec<Sample> = Vec::new();
                for group in registry.groups().into_iter().filter(|g| *g != 0) {
                    let samples = registry
                        .read(group, Consistency::Any, |e| e.read_series(&k, 0, i64::MAX))
                        .await?;
                    got.extend(samples?);
                }
                let got: Vec<(i64, f64)> = got.iter().map(|s| (s.ts_ms, s.value)).collect();
                assert_eq!(&got, want, "node {id}, series {name}");
            }
        }
        Ok(())
    });
    sim.run().expect("simulation");
}
