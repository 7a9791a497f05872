//! The write path on three in-process nodes (paused time, simulated disks): series reach the
//! shard the ring names on every replica, whichever node the write enters; a shard whose
//! leader dies is retried on the new leader; a shard without quorum fails only its own samples.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use strata_raft::meta::MetaCommand;
use strata_raft::network::RaftHandler;
use strata_raft::network::local::{LocalNetwork, LocalRouter};
use strata_raft::registry::{Consistency, ProposeError, Registry, RegistryConfig};
use strata_raft::types::{Command, GroupId, META_GROUP, NodeId, NodeInfo};
use strata_router::ring::{Ring, ShardId, group_of};
use strata_router::write::{ShardOutcome, Writer, WriterConfig};
use strata_shard::sim_fs::SimFs;
use strata_shard::{Clock, Labels, ManualClock, Sample, SeriesKey, Tenant};

const SHARDS: u32 = 4;
const VNODES: u32 = 64;

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        addr: format!("node-{id}"),
        zone: format!("zone-{id}"),
    }
}

fn key(i: u64) -> SeriesKey {
    let instance = format!("host-{i}");
    SeriesKey::new(
        Tenant::new("t").unwrap(),
        Labels::from_pairs(&[("__name__", "up"), ("instance", instance.as_str())]).unwrap(),
    )
}

fn series(from: u64, to: u64, ts: i64) -> Vec<(SeriesKey, Vec<Sample>)> {
    (from..to)
        .map(|i| (key(i), vec![Sample::new(ts, i as f64)]))
        .collect()
}

struct Cluster {
    net: LocalNetwork,
    /// The routers' clock: 10 s after the epoch, so the tests' sample times are recent.
    clock: Arc<ManualClock>,
    nodes: BTreeMap<NodeId, Arc<Registry<LocalRouter>>>,
}

impl Cluster {
    /// Three nodes with the meta group, a 4-shard ring and every shard on all three nodes.
    async fn bootstrap() -> Cluster {
        let net = LocalNetwork::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            let config = RegistryConfig::new(id, Arc::new(SimFs::new()), "/node");
            let node = Registry::open(config, net.router(id)).await.unwrap();
            let handler: Arc<dyn RaftHandler> = node.clone();
            net.register(&handler);
            nodes.insert(id, node);
        }
        let clock = Arc::new(ManualClock::new(10_000));
        let c = Cluster { net, clock, nodes };
        let members: BTreeMap<NodeId, NodeInfo> = (1..=3).map(|n| (n, info(n))).collect();
        let groups: Vec<GroupId> = std::iter::once(META_GROUP)
            .chain((0..SHARDS).map(|s| group_of(ShardId(s))))
            .collect();
        for &g in &groups {
            for (&id, node) in &c.nodes {
                let init = (id == g % 3 + 1).then(|| members.clone());
                node.create_group(g, init).await.unwrap();
            }
        }
        let mut setup = vec![MetaCommand::SetRing {
            shards: SHARDS,
            vnodes_per_shard: VNODES,
            now_ms: 1_000,
        }];
        setup.extend((1..=3).map(|id| MetaCommand::SetNode { id, info: info(id) }));
        setup.extend((0..SHARDS).map(|s| MetaCommand::SetPlacement {
            group: group_of(ShardId(s)),
            replicas: vec![1, 2, 3],
        }));
        for cmd in setup {
            c.propose(META_GROUP, Command::Meta(cmd)).await;
        }
        for &g in &groups {
            c.leader(g).await;
        }
        // Every node's meta replica knows the ring before writers read it.
        for node in c.nodes.values() {
            for _ in 0..200 {
                let has_ring = node
                    .read_meta(Consistency::Any, |m| {
                        m.placement(group_of(ShardId(SHARDS - 1))).is_some()
                    })
                    .await
                    .unwrap();
                if has_ring {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        c
    }

    async fn leader(&self, group: GroupId) -> NodeId {
        for _ in 0..600 {
            if let Some((&id, _)) = self.nodes.iter().find(|(_, n)| n.is_leader(group)) {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader of group {group}");
    }

    async fn propose(&self, group: GroupId, command: Command) {
        for _ in 0..100 {
            let leader = self.leader(group).await;
            match self.nodes[&leader].propose(group, command.clone()).await {
                Ok(_) => return,
                Err(ProposeError::NotLeader { .. } | ProposeError::Timeout { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("group {group}: proposal never applied");
    }

    fn writer(&self, node: NodeId) -> Writer<LocalRouter> {
        let config = WriterConfig {
            attempt_timeout: Duration::from_secs(3),
            ..WriterConfig::default()
        };
        Writer::new(
            Arc::clone(&self.nodes[&node]),
            self.net.router(node),
            config,
            Arc::clone(&self.clock) as Arc<dyn Clock>,
        )
    }

    /// The values of series `i` stored on `node`'s replica of `group` (after replicas caught
    /// up: polls until they agree with the leader's count).
    async fn stored(&self, node: NodeId, group: GroupId, i: u64) -> Vec<f64> {
        let read = self.nodes[&node].read(group, Consistency::Any, |e| {
            e.read_series(&key(i), i64::MIN / 4, i64::MAX / 4)
        });
        read.await
            .unwrap()
            .unwrap()
            .iter()
            .map(|s| s.value)
            .collect()
    }

    async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn series_reach_their_ring_shard_on_every_replica_from_any_entry_node() {
    let c = Cluster::bootstrap().await;
    let ring = Ring::new(SHARDS, VNODES).unwrap();
    for (entry, range) in [(1, 0..100u64), (2, 100..200), (3, 200..300)] {
        let report = c
            .writer(entry)
            .write(series(range.start, range.end, 5_000))
            .await
            .unwrap();
        assert_eq!(report.ring_epoch, 1);
        assert_eq!(report.failures().count(), 0, "{report:?}");
        assert_eq!(report.appended(), 100, "{report:?}");
        // The batches went to more than one shard.
        assert!(report.shards.len() > 1, "{report:?}");
    }
    c.settle().await;
    for i in (0..300).step_by(7) {
        let home = group_of(ring.shard_of(key(i).id()));
        for n in 1..=3 {
            assert_eq!(
                c.stored(n, home, i).await,
                vec![i as f64],
                "series {i} on node {n}"
            );
            for other in (0..SHARDS)
                .map(|s| group_of(ShardId(s)))
                .filter(|g| *g != home)
            {
                assert!(
                    c.stored(n, other, i).await.is_empty(),
                    "series {i} also in {other}"
                );
            }
        }
    }
    // The same request again: every sample is a duplicate, nothing is stored twice (W2).
    let report = c.writer(2).write(series(0, 100, 5_000)).await.unwrap();
    assert_eq!((report.appended(), report.duplicates()), (0, 100));
}

#[tokio::test(start_paused = true)]
async fn a_shard_whose_leader_dies_is_retried_on_the_new_leader() {
    let mut c = Cluster::bootstrap().await;
    let victim_group = group_of(ShardId(0));
    let victim = c.leader(victim_group).await;
    let entry = [1, 2, 3].into_iter().find(|&n| n != victim).unwrap();
    // The victim's node stops (its other groups' leaders move too).
    let node = c.nodes.remove(&victim).unwrap();
    c.net.unregister(victim);
    node.shutdown().await;
    let report = c.writer(entry).write(series(0, 200, 6_000)).await.unwrap();
    assert_eq!(report.failures().count(), 0, "{report:?}");
    assert_eq!(report.appended(), 200);
    assert!(report.shards.contains_key(&victim_group));
}

#[tokio::test(start_paused = true)]
async fn a_shard_without_quorum_fails_only_its_own_samples() {
    let c = Cluster::bootstrap().await;
    // Cut nodes 2 and 3 off from each other and from node 1, then write through node 1:
    // every shard has lost quorum as seen from node 1, so all fail, named, as retryable.
    // Then heal and check the write goes through.
    let entry = 1;
    c.net.isolate(2);
    c.net.isolate(3);
    let report = c.writer(entry).write(series(0, 50, 7_000)).await.unwrap();
    assert!(report.failures().count() >= 1, "{report:?}");
    for (group, outcome) in report.failures() {
        match outcome {
            ShardOutcome::Failed {
                samples,
                retryable,
                reason,
                ..
            } => {
                assert!(*retryable, "group {group}: {reason}");
                assert!(*samples > 0);
            }
            ShardOutcome::Applied { .. } => unreachable!(),
        }
    }
    // Only the failed shards' samples are missing from the count.
    let failed: u64 = report
        .failures()
        .map(|(_, o)| match o {
            ShardOutcome::Failed { samples, .. } => *samples,
            ShardOutcome::Applied { .. } => 0,
        })
        .sum();
    assert_eq!(report.appended() + failed, 50);
    c.net.heal_all();
    c.settle().await;
    let report = c.writer(entry).write(series(0, 50, 7_000)).await.unwrap();
    assert_eq!(report.failures().count(), 0, "{report:?}");
    assert_eq!(report.appended() + report.duplicates(), 50);
}

#[tokio::test(start_paused = true)]
async fn samples_outside_the_accepted_window_are_refused_by_name_and_the_rest_written() {
    let c = Cluster::bootstrap().await;
    c.clock.set_ms(10 * 3_600_000);
    let now = c.clock.now_ms();
    let mut batch = series(0, 10, now - 60_000);
    batch[3].1.push(Sample::new(now - 3 * 3_600_000, 1.0)); // 3 h old: past the 2 h window
    batch[4].1 = vec![Sample::new(now + 3_600_000, 2.0)]; // an hour ahead: past 10 min
    let report = c.writer(1).write(batch).await.unwrap();
    assert_eq!(report.outside_window, 2);
    assert_eq!(report.appended(), 9);
    let first = &report.outside_window_errors[0];
    assert!(
        first.contains("host-3") && first.contains("older"),
        "{first}"
    );
    assert!(report.outside_window_errors[1].contains("newer"));
}

/// The ring history a writer routes reads by is cached between calls, and a new epoch is seen
/// by the next call (a stale cache would leave the new shards out of every query).
#[tokio::test(start_paused = true)]
async fn reads_route_by_a_new_ring_epoch_as_soon_as_it_is_applied() {
    let c = Cluster::bootstrap().await;
    let w = c.writer(1);
    let old: BTreeSet<ShardId> = (0..SHARDS).map(ShardId).collect();
    assert_eq!(w.shards_for_query(0, 20_000).await.unwrap(), old);
    assert_eq!(w.shards_for_query(0, 20_000).await.unwrap(), old, "cached");
    c.propose(
        META_GROUP,
        Command::Meta(MetaCommand::SetRing {
            shards: 2 * SHARDS,
            vnodes_per_shard: VNODES,
            now_ms: 5_000,
        }),
    )
    .await;
    c.settle().await;
    let both: BTreeSet<ShardId> = (0..2 * SHARDS).map(ShardId).collect();
    assert_eq!(w.shards_for_query(0, 20_000).await.unwrap(), both);
}
