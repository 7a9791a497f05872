//! Growing a cluster: a single node (RF=3 asked, one zone so far) takes writes; two nodes in
//! two other zones join through it. The meta leader fills every shard group's placement up to
//! three zones, the joiners create empty replicas, and each shard leader adds them (learner →
//! catch-up → voter): afterwards every group has three voters and the new replicas hold the
//! samples written before they existed.

use std::time::Duration;

use strata_node::config::{NodeConfig, Peer};
use strata_node::server::NodeServer;
use strata_raft::registry::Consistency;
use strata_raft::types::{GroupId, META_GROUP, NodeId};
use strata_router::ring::{ShardId, group_of};
use strata_shard::{Clock, Labels, Sample, SeriesKey, SystemClock, Tenant};

mod common;
use common::TempDir;

const SHARDS: u32 = 3;

fn config(dir: &TempDir, id: NodeId, zone: &str, raft_addr: String, join: Vec<Peer>) -> NodeConfig {
    NodeConfig {
        node_id: id,
        zone: zone.into(),
        data_dir: dir.0.join(format!("node-{id}")),
        raft_addr,
        http_addr: "127.0.0.1:0".into(),
        join,
        shards: SHARDS,
        replication_factor: 3,
        ..NodeConfig::default()
    }
}

async fn start(config: &NodeConfig) -> NodeServer {
    let listener = tokio::net::TcpListener::bind(&config.raft_addr)
        .await
        .unwrap();
    NodeServer::start(config, listener).await.unwrap()
}

async fn free_addr() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

fn key(i: usize) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("anonymous").unwrap(),
        Labels::from_pairs(&[("__name__", "join_test"), ("i", &i.to_string())]).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_fill_every_group_up_to_the_replication_factor() {
    let dir = TempDir::new("join");
    let first = config(&dir, 1, "zone-a", free_addr().await, Vec::new());
    let n1 = start(&first).await;
    n1.wait_ready(Duration::from_secs(60)).await.unwrap();
    let groups: Vec<GroupId> = (0..SHARDS).map(|s| group_of(ShardId(s))).collect();
    for &g in &groups {
        let voters: Vec<NodeId> = n1
            .registry()
            .metrics(g)
            .unwrap()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        assert_eq!(voters, vec![1], "group {g} starts on the single node");
    }

    // Writes before anyone joins, straight through node 1's writer path (HTTP is tested
    // elsewhere): 30 series with two samples each.
    let now = SystemClock.now_ms();
    let series: Vec<(SeriesKey, Vec<Sample>)> = (0..30)
        .map(|i| {
            (
                key(i),
                vec![
                    Sample {
                        ts_ms: now - 2000,
                        value: i as f64,
                    },
                    Sample {
                        ts_ms: now - 1000,
                        value: 1.0,
                    },
                ],
            )
        })
        .collect();
    let report = n1.writer().write(series).await.unwrap();
    assert_eq!(report.appended(), 60, "{report:?}");

    let join = vec![Peer {
        id: 1,
        raft_addr: first.raft_addr.clone(),
    }];
    let n2 = start(&config(&dir, 2, "zone-b", free_addr().await, join.clone())).await;
    let n3 = start(&config(&dir, 3, "zone-c", free_addr().await, join)).await;

    // Every shard group reaches three voters (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let full = groups.iter().all(|g| {
            n1.registry()
                .leader(*g)
                .and_then(|l| {
                    [&n1, &n2, &n3]
                        .into_iter()
                        .find(|n| n.id() == l)
                        .and_then(|n| n.registry().metrics(*g))
                })
                .is_some_and(|m| m.membership_config.membership().voter_ids().count() == 3)
        });
        if full {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "groups did not reach 3 voters in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The joiners are meta learners (they read the cluster state locally), not meta voters.
    let meta = n1.registry().metrics(META_GROUP).unwrap();
    let meta_voters: Vec<NodeId> = meta.membership_config.membership().voter_ids().collect();
    let meta_learners: Vec<NodeId> = meta.membership_config.membership().learner_ids().collect();
    assert_eq!((meta_voters, meta_learners), (vec![1], vec![2, 3]));

    // The new replicas hold what was written before they existed.
    for node in [&n2, &n3] {
        for i in 0..30 {
            let k = key(i);
            let mut found = 0;
            for &g in &groups {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let n = node
                        .registry()
                        .read(g, Consistency::Any, |e| e.read_series(&k, 0, i64::MAX / 4))
                        .await
                        .unwrap()
                        .unwrap()
                        .len();
                    // Only the series' own shard holds it; poll that one until caught up.
                    if n == 2 || tokio::time::Instant::now() >= deadline {
                        found += n;
                        break;
                    }
                    if n == 0
                        && n1
                            .registry()
                            .read(g, Consistency::Any, |e| e.read_series(&k, 0, i64::MAX / 4))
                            .await
                            .unwrap()
                            .unwrap()
                            .is_empty()
                    {
                        break; // Not this series' shard.
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            assert_eq!(found, 2, "series {i} on node {}", node.id());
        }
    }
    for n in [n3, n2, n1] {
        n.shutdown(false).await;
    }
}
