//! `strata dev`'s cluster ([`strata_node::cluster`]): three nodes on loopback gRPC, bootstrapped
//! on a first start and resumed from disk on the next, without a second bootstrap.

use std::collections::BTreeSet;

use strata_node::cluster::{Cluster, NODES, VNODES_PER_SHARD, ZONES};
use strata_raft::types::{GroupId, META_GROUP, NodeId};
use strata_router::ring::{ShardId, group_of};

mod common;
use common::TempDir;

const SHARDS: u32 = 4;

fn shard_groups() -> Vec<GroupId> {
    (0..SHARDS).map(|s| group_of(ShardId(s))).collect()
}

/// Every group has a leader, every node hosts every group, and each group's voters are the
/// three nodes.
async fn check_groups(c: &Cluster) {
    let all: Vec<NodeId> = (1..=NODES).collect();
    let mut groups = vec![META_GROUP];
    groups.extend(shard_groups());
    assert_eq!(c.groups().await.unwrap(), groups);
    for &group in &groups {
        let leader = c.wait_for_leader(group).await.unwrap();
        for node in c.nodes() {
            assert!(
                node.groups().contains(&group),
                "node {} lacks group {group}",
                node.node()
            );
        }
        let metrics = c.node(leader).metrics(group).unwrap();
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        assert_eq!(voters, all, "voters of group {group}");
    }
}

/// The meta state: three nodes in three zones at the cluster's addresses, ring epoch 1 with
/// `SHARDS` shards, every shard group placed on all three nodes.
async fn check_meta(c: &Cluster) {
    let members = c.members();
    let (nodes, ring, rings, placements) = c
        .read_meta(|s| {
            (
                s.nodes().clone(),
                s.ring().map(|(e, r)| (e, *r)),
                s.rings().len(),
                s.placements().clone(),
            )
        })
        .await
        .unwrap();
    assert_eq!(nodes, members);
    let zones: BTreeSet<&str> = nodes.values().map(|n| n.zone.as_str()).collect();
    assert_eq!(zones, ZONES.into_iter().collect());
    assert!(nodes.values().all(|n| n.addr.starts_with("127.0.0.1:")));
    let (epoch, ring) = ring.expect("a ring");
    assert_eq!((epoch, rings), (1, 1), "one ring epoch, the first");
    assert_eq!(
        (ring.shards, ring.vnodes_per_shard),
        (SHARDS, VNODES_PER_SHARD)
    );
    // Every shard group on all three nodes; slot 0 (the preferred leader) spread over them.
    let all: BTreeSet<NodeId> = (1..=NODES).collect();
    assert_eq!(
        placements.keys().copied().collect::<Vec<_>>(),
        shard_groups()
    );
    let mut preferred = BTreeSet::new();
    for (group, replicas) in &placements {
        let set: BTreeSet<NodeId> = replicas.iter().copied().collect();
        assert_eq!((set, replicas.len()), (all.clone(), 3), "group {group}");
        preferred.insert(replicas[0]);
    }
    assert_eq!(
        preferred.len(),
        3,
        "preferred leaders of 4 groups: {placements:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_cluster_bootstraps_once_and_restarts_from_its_data() {
    let dir = TempDir::new("dev-restart");

    let c = Cluster::start_dev(&dir.0, SHARDS, 0).await.expect("start");
    assert!(c.fresh());
    check_groups(&c).await;
    check_meta(&c).await;
    let described = c.describe().await.unwrap();
    assert!(described.contains("ring epoch 1"), "{described}");
    let addrs = c.members();
    c.shutdown().await;
    // Stopped means stopped: nobody listens on the nodes' ports any more.
    for info in addrs.values() {
        assert!(
            tokio::net::TcpStream::connect(&info.addr).await.is_err(),
            "{} still accepts connections after shutdown",
            info.addr
        );
    }

    // Again from the same directory; a different shard count is ignored: the stored ring wins.
    let c = Cluster::start_dev(&dir.0, SHARDS + 3, 0)
        .await
        .expect("restart");
    assert!(!c.fresh());
    assert_eq!(c.members(), addrs, "a restarted node listens where it did");
    check_groups(&c).await;
    check_meta(&c).await;
    c.shutdown().await;
}
