//! Several nodes in one process (the in-process transport, a simulated disk per node, paused
//! tokio time: no real sleeps): replication, leader crash, catch-up by snapshot, membership
//! changes, leader transfer, back-pressure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use strata_raft::meta::{MetaCommand, MetaResponse};
use strata_raft::network::RaftHandler;
use strata_raft::network::local::{LocalNetwork, LocalRouter};
use strata_raft::registry::{
    AdminError, Consistency, ProposeError, ReadError, Registry, RegistryConfig,
};
use strata_raft::types::{Command, GroupId, META_GROUP, NodeId, NodeInfo, Response};
use strata_shard::sim_fs::SimFs;
use strata_shard::{Labels, Sample, SeriesKey, Tenant};

type Node = Arc<Registry<LocalRouter>>;

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        addr: format!("node-{id}:7000"),
        zone: format!("zone-{id}"),
    }
}

fn key(series: u64) -> SeriesKey {
    let name = format!("s{series}");
    SeriesKey::new(
        Tenant::new("t").unwrap(),
        Labels::from_pairs(&[("__name__", "m"), ("series", name.as_str())]).unwrap(),
    )
}

/// One sample of `series` at step `i` (distinct per (series, i)).
fn write(series: u64, i: u64) -> Command {
    Command::Write(
        vec![(
            key(series),
            vec![Sample::new(1_000_000 + i as i64 * 1000, i as f64)],
        )]
        .into(),
    )
}

struct Cluster {
    net: LocalNetwork,
    disks: BTreeMap<NodeId, Arc<SimFs>>,
    nodes: BTreeMap<NodeId, Node>,
    tune: fn(&mut RegistryConfig),
}

impl Cluster {
    async fn new(ids: &[NodeId], tune: fn(&mut RegistryConfig)) -> Cluster {
        let mut c = Cluster {
            net: LocalNetwork::new(),
            disks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tune,
        };
        for &id in ids {
            c.start(id).await;
        }
        c
    }

    /// Starts node `id` on its disk (a fresh one the first time).
    async fn start(&mut self, id: NodeId) {
        let fs = Arc::clone(
            self.disks
                .entry(id)
                .or_insert_with(|| Arc::new(SimFs::new())),
        );
        let mut config = RegistryConfig::new(id, fs, "/node");
        config.propose_timeout = Duration::from_secs(5);
        (self.tune)(&mut config);
        let node = Registry::open(config, self.net.router(id)).await.unwrap();
        let handler: Arc<dyn RaftHandler> = node.clone();
        self.net.register(&handler);
        self.nodes.insert(id, node);
    }

    /// Power loss on node `id`: its groups stop and its disk keeps only what was synced.
    async fn crash(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        self.net.unregister(id);
        node.shutdown().await;
        drop(node);
        self.disks[&id].crash();
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Creates `group` on `members` and initializes it on the first.
    async fn create_group(&self, group: GroupId, members: &[NodeId]) {
        let all: BTreeMap<NodeId, NodeInfo> = members.iter().map(|&m| (m, info(m))).collect();
        for (i, &m) in members.iter().enumerate() {
            let init = (i == 0).then(|| all.clone());
            self.node(m).create_group(group, init).await.unwrap();
        }
    }

    /// Waits (in simulated time) until a live node leads `group`, and returns it.
    async fn leader(&self, group: GroupId) -> NodeId {
        for _ in 0..600 {
            for (&id, node) in &self.nodes {
                if node.is_leader(group) {
                    return id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader of group {group} within 30 s");
    }

    /// Proposes through whichever node leads, following hints and retrying (the router's job).
    async fn propose(&self, group: GroupId, command: Command) -> Response {
        for _ in 0..200 {
            let leader = self.leader(group).await;
            match self.node(leader).propose(group, command.clone()).await {
                Ok(r) => return r,
                Err(
                    ProposeError::NotLeader { .. }
                    | ProposeError::OutcomeUnknown { .. }
                    | ProposeError::Timeout { .. },
                ) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("propose to group {group}: {e}"),
            }
        }
        panic!("group {group}: no proposal succeeded");
    }

    /// Waits until every live replica of `group` has applied as far as the leader committed.
    async fn converge(&self, group: GroupId) {
        let leader = self.leader(group).await;
        let target = self.node(leader).metrics(group).unwrap().cluster_committed;
        for _ in 0..600 {
            let behind = self
                .nodes
                .values()
                .filter_map(|n| n.metrics(group))
                .any(|m| m.last_applied < target);
            if !behind {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("group {group}: replicas did not catch up to {target:?}");
    }

    /// The steps of `series` stored on node `id`'s replica of `group`.
    async fn steps(&self, id: NodeId, group: GroupId, series: u64) -> BTreeSet<u64> {
        self.node(id)
            .read(group, Consistency::Any, |e| {
                e.read_series(&key(series), i64::MIN / 4, i64::MAX / 4)
            })
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|s| s.value as u64)
            .collect()
    }
}

fn appended(r: &Response) -> u64 {
    match r {
        Response::Write(w) => w.appended + w.duplicates,
        other => panic!("not a write response: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn sixteen_groups_on_three_nodes_make_progress_together() {
    let c = Cluster::new(&[1, 2, 3], |_| {}).await;
    for g in 1..=16u64 {
        // Spread the initializing node so leaders start spread over nodes.
        let first = (g % 3) + 1;
        let mut members = vec![first];
        members.extend([1, 2, 3].into_iter().filter(|&m| m != first));
        c.create_group(g, &members).await;
    }
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for g in 1..=16u64 {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                assert_eq!(appended(&c.propose(g, write(g, i)).await), 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut leaders = BTreeSet::new();
    for g in 1..=16u64 {
        leaders.insert(c.leader(g).await);
        c.converge(g).await;
        for n in 1..=3 {
            assert_eq!(
                c.steps(n, g, g).await,
                (0..20).collect(),
                "group {g} on node {n}"
            );
        }
    }
    assert!(
        leaders.len() > 1,
        "all 16 groups are led by one node: {leaders:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn leader_crash_with_writes_in_flight_loses_no_acknowledged_entry() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {}).await;
    c.create_group(1, &[1, 2, 3]).await;
    let old_leader = c.leader(1).await;
    // Writes in flight on every node; each records what was acknowledged.
    let mut in_flight = Vec::new();
    for n in 1..=3u64 {
        let node = Arc::clone(c.node(n));
        in_flight.push(tokio::spawn(async move {
            let mut acked = BTreeSet::new();
            for i in 0..200u64 {
                let step = n * 1000 + i;
                if node.propose(1, write(7, step)).await.is_ok() {
                    acked.insert(step);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.crash(old_leader).await;
    let mut acked = BTreeSet::new();
    for t in in_flight {
        acked.extend(t.await.unwrap());
    }
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the crash"
    );
    let new_leader = c.leader(1).await;
    assert_ne!(new_leader, old_leader);
    // More writes after the failover, then the crashed node comes back and catches up.
    for i in 0..10 {
        c.propose(1, write(7, 9000 + i)).await;
        acked.insert(9000 + i);
    }
    c.start(old_leader).await;
    c.converge(1).await;
    for n in 1..=3 {
        let stored = c.steps(n, 1, 7).await;
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "node {n} lost acknowledged steps {lost:?}");
    }
    let reference = c.steps(1, 1, 7).await;
    for n in 2..=3 {
        assert_eq!(
            c.steps(n, 1, 7).await,
            reference,
            "replicas differ on node {n}"
        );
    }
}

fn snapshot_often(c: &mut RegistryConfig) {
    c.raft.snapshot_after_entries = 20;
    c.raft.keep_after_snapshot = 5;
}

#[tokio::test(start_paused = true)]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    let c = Cluster::new(&[1, 2, 3], snapshot_often).await;
    c.create_group(1, &[1, 2, 3]).await;
    let leader = c.leader(1).await;
    let behind = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    c.net.isolate(behind);
    for i in 0..150 {
        c.propose(1, write(3, i)).await;
    }
    // The leader snapshots and purges the log the follower would need.
    let leader = c.leader(1).await;
    let mut purged = None;
    for _ in 0..100 {
        purged = c.node(leader).metrics(1).unwrap().purged;
        if purged.is_some_and(|p| p.index > 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = c.node(leader).metrics(1).unwrap();
    assert!(
        purged.is_some_and(|p| p.index > 20),
        "leader did not purge: purged {purged:?}, snapshot {:?}, applied {:?}",
        m.snapshot,
        m.last_applied
    );
    c.net.heal_all();
    c.converge(1).await;
    let m = c.node(behind).metrics(1).unwrap();
    assert!(
        m.snapshot.is_some(),
        "node {behind} caught up without a snapshot"
    );
    assert_eq!(c.steps(behind, 1, 3).await, (0..150).collect());
    // It keeps up by log afterwards.
    c.propose(1, write(3, 150)).await;
    c.converge(1).await;
    assert!(c.steps(behind, 1, 3).await.contains(&150));
}

#[tokio::test(start_paused = true)]
async fn a_new_replica_joins_as_learner_then_voter_and_a_voter_leaves() {
    let mut c = Cluster::new(&[1, 2, 3], snapshot_often).await;
    c.create_group(1, &[1, 2, 3]).await;
    for i in 0..60 {
        c.propose(1, write(4, i)).await;
    }
    c.start(4).await;
    c.node(4).create_group(1, None).await.unwrap();
    let leader = c.leader(1).await;
    c.node(leader).add_replica(1, 4, info(4)).await.unwrap();
    let voters: BTreeSet<NodeId> = c
        .node(leader)
        .metrics(1)
        .unwrap()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4]));
    c.converge(1).await;
    assert_eq!(c.steps(4, 1, 4).await, (0..60).collect());

    // Remove a follower; the group still commits with the rest.
    let leader = c.leader(1).await;
    let gone = [1, 2, 3, 4].into_iter().find(|&n| n != leader).unwrap();
    c.node(leader).remove_replica(1, gone).await.unwrap();
    let voters: BTreeSet<NodeId> = c
        .node(leader)
        .metrics(1)
        .unwrap()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert!(!voters.contains(&gone) && voters.len() == 3, "{voters:?}");
    c.node(gone).drop_group(1).await.unwrap();
    assert!(c.node(gone).groups().is_empty());
    c.propose(1, write(4, 60)).await;
}

#[tokio::test(start_paused = true)]
async fn leadership_moves_on_request() {
    let c = Cluster::new(&[1, 2, 3], |_| {}).await;
    c.create_group(5, &[1, 2, 3]).await;
    c.propose(5, write(1, 0)).await;
    let leader = c.leader(5).await;
    let target = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    c.node(leader).transfer_leader(5, target).await.unwrap();
    let mut moved = false;
    for _ in 0..100 {
        if c.node(target).is_leader(5) {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "leadership did not move from {leader} to {target}");
    // A follower refuses admin work with a hint to the new leader.
    match c.node(leader).transfer_leader(5, leader).await {
        Err(AdminError::NotLeader { leader_hint, .. }) => {
            assert_eq!(leader_hint.map(|(id, _)| id), Some(target));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    c.propose(5, write(1, 1)).await;
}

#[tokio::test(start_paused = true)]
async fn followers_redirect_and_a_leader_without_quorum_pushes_back() {
    let c = Cluster::new(&[1, 2, 3], |cfg| cfg.in_flight_max = 1).await;
    c.create_group(1, &[1, 2, 3]).await;
    c.propose(1, write(1, 0)).await;
    let leader = c.leader(1).await;
    let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    match c.node(follower).propose(1, write(1, 1)).await {
        Err(ProposeError::NotLeader { leader_hint, .. }) => {
            assert_eq!(leader_hint, Some((leader, info(leader))));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    match c.node(follower).read(1, Consistency::Strong, |_| ()).await {
        Err(ReadError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert_eq!(
        c.node(leader).propose(42, write(1, 1)).await,
        Err(ProposeError::NoSuchGroup {
            node: leader,
            group: 42
        })
    );
    // Cut off from its followers, the leader cannot commit: the first proposal waits, the
    // next finds the in-flight bound full and is refused at once.
    c.net.isolate(leader);
    let stuck = {
        let node = Arc::clone(c.node(leader));
        tokio::spawn(async move { node.propose(1, write(1, 2)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(matches!(
        c.node(leader).propose(1, write(1, 3)).await,
        Err(ProposeError::Busy { group: 1, .. })
    ));
    match stuck.await.unwrap() {
        Err(
            ProposeError::Timeout { .. }
            | ProposeError::OutcomeUnknown { .. }
            | ProposeError::NotLeader { .. },
        ) => {}
        other => panic!("an isolated leader answered {other:?}"),
    }
    c.net.heal_all();
    c.propose(1, write(1, 4)).await;
}

#[tokio::test(start_paused = true)]
async fn a_stopped_replica_restarts_from_its_data() {
    let c = Cluster::new(&[1, 2, 3], |_| {}).await;
    c.create_group(2, &[1, 2, 3]).await;
    for i in 0..10 {
        c.propose(2, write(2, i)).await;
    }
    c.converge(2).await;
    let leader = c.leader(2).await;
    let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    c.node(follower).stop_group(2).await.unwrap();
    assert!(matches!(
        c.node(follower).read(2, Consistency::Any, |_| ()).await,
        Err(ReadError::NoSuchGroup { .. })
    ));
    for i in 10..20 {
        c.propose(2, write(2, i)).await;
    }
    c.node(follower).start_group(2).await.unwrap();
    c.converge(2).await;
    assert_eq!(c.steps(follower, 2, 2).await, (0..20).collect());
    assert!(matches!(
        c.node(follower).create_group(2, None).await,
        Err(AdminError::Exists { .. })
    ));
}

/// Rewrites file `path` of `fs` with `edit` applied to its bytes, durably.
fn rewrite(fs: &SimFs, path: &std::path::Path, edit: impl FnOnce(&mut Vec<u8>)) {
    use strata_shard::Fs;
    let mut bytes = fs.read(path).unwrap();
    edit(&mut bytes);
    let mut f = fs.open_append(path, true).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync().unwrap();
}

/// The WAL segment files of a node, oldest first.
fn segments(fs: &SimFs) -> Vec<std::path::PathBuf> {
    use strata_shard::Fs;
    let dir = std::path::Path::new("/node/wal");
    let mut names = fs.list(dir).unwrap();
    names.retain(|n| n.ends_with(".wal"));
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_torn_wal_tail_is_cut_and_caught_up_but_a_corrupt_middle_record_stops_the_node() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {}).await;
    c.create_group(1, &[1, 2, 3]).await;
    for i in 0..30 {
        c.propose(1, write(9, i)).await;
    }
    c.converge(1).await;
    let leader = c.leader(1).await;
    let [a, b] = <[NodeId; 2]>::try_from(
        [1, 2, 3]
            .into_iter()
            .filter(|&n| n != leader)
            .collect::<Vec<_>>(),
    )
    .unwrap();

    // Node a: its last record torn (a write cut short by power loss).
    c.crash(a).await;
    let fs = Arc::clone(&c.disks[&a]);
    let last = segments(&fs).pop().unwrap();
    rewrite(&fs, &last, |bytes| bytes.truncate(bytes.len() - 7));
    c.start(a).await;
    for i in 30..40 {
        c.propose(1, write(9, i)).await;
    }
    c.converge(1).await;
    assert_eq!(c.steps(a, 1, 9).await, (0..40).collect());

    // Node b: a damaged record with valid records after it: the node refuses to start rather
    // than silently drop committed entries.
    c.crash(b).await;
    let fs = Arc::clone(&c.disks[&b]);
    let first = segments(&fs).remove(0);
    rewrite(&fs, &first, |bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
    });
    let mut config = RegistryConfig::new(b, fs, "/node");
    config.propose_timeout = Duration::from_secs(5);
    let refused = Registry::open(config, c.net.router(b)).await.err();
    let message = refused.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("corrupt") && message.contains(".wal"),
        "a corrupt WAL record did not stop the node: {message:?}"
    );
    // The group goes on with the two healthy replicas.
    c.propose(1, write(9, 40)).await;
}

fn meta(command: MetaCommand) -> Command {
    Command::Meta(command)
}

fn lease(r: &Response) -> MetaResponse {
    match r {
        Response::Meta(m) => m.clone(),
        other => panic!("not a meta response: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_meta_group_keeps_placement_and_leases_across_a_leader_crash() {
    let mut c = Cluster::new(&[1, 2, 3], snapshot_often).await;
    c.create_group(META_GROUP, &[1, 2, 3]).await;
    for n in 1..=3 {
        let r = c
            .propose(
                META_GROUP,
                meta(MetaCommand::SetNode {
                    id: n,
                    info: info(n),
                }),
            )
            .await;
        assert_eq!(lease(&r), MetaResponse::Done);
    }
    let placed = c
        .propose(
            META_GROUP,
            meta(MetaCommand::SetPlacement {
                group: 7,
                replicas: vec![1, 2, 3],
            }),
        )
        .await;
    assert_eq!(lease(&placed), MetaResponse::Done);
    // Node 2 takes the rule slot; node 3 is refused while the lease lives.
    let acquire = |holder, now_ms| {
        meta(MetaCommand::AcquireLease {
            slot: "rules-0".into(),
            holder,
            now_ms,
            ttl_ms: 10_000,
        })
    };
    let granted = match lease(&c.propose(META_GROUP, acquire(2, 1_000)).await) {
        MetaResponse::Lease(l) => l,
        other => panic!("node 2 was not granted the lease: {other:?}"),
    };
    assert!(matches!(
        lease(&c.propose(META_GROUP, acquire(3, 2_000)).await),
        MetaResponse::Held(l) if l.holder == 2
    ));
    // Enough entries for snapshots; then the leader crashes and comes back (its in-memory
    // meta state is rebuilt from its snapshot + log).
    for i in 0..40 {
        c.propose(META_GROUP, acquire(2, 1_000 + i)).await;
    }
    let leader = c.leader(META_GROUP).await;
    c.crash(leader).await;
    c.start(leader).await;
    c.converge(META_GROUP).await;
    for n in 1..=3u64 {
        let (placement, held) = c
            .node(n)
            .read_meta(Consistency::Any, |m| {
                (
                    m.placement(7).map(<[NodeId]>::to_vec),
                    m.lease("rules-0").cloned(),
                )
            })
            .await
            .unwrap();
        assert_eq!(placement, Some(vec![1, 2, 3]), "node {n}");
        assert_eq!(
            held.map(|l| (l.holder, l.epoch)),
            Some((2, granted.epoch)),
            "node {n}"
        );
    }
    // After expiry (time from the proposer), node 3 takes over with a new fencing epoch.
    match lease(&c.propose(META_GROUP, acquire(3, 60_000)).await) {
        MetaResponse::Lease(l) => assert!(l.holder == 3 && l.epoch > granted.epoch, "{l:?}"),
        other => panic!("node 3 did not take over: {other:?}"),
    }
    // Strong reads of the meta state go through the leader.
    let leader = c.leader(META_GROUP).await;
    let holder = c
        .node(leader)
        .read_meta(Consistency::Strong, |m| {
            m.lease("rules-0").map(|l| l.holder)
        })
        .await
        .unwrap();
    assert_eq!(holder, Some(3));
    assert!(matches!(
        c.node(leader)
            .read(META_GROUP, Consistency::Any, |_| ())
            .await,
        Err(ReadError::WrongKind { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_router_forwards_proposals_to_the_leader_and_a_lost_reply_is_an_unknown_outcome() {
    let c = Cluster::new(&[1, 2, 3], |_| {}).await;
    c.create_group(1, &[1, 2, 3]).await;
    let leader = c.leader(1).await;
    let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    let router = c.net.router(follower);
    match router.propose(leader, 1, write(6, 0)).await {
        Ok(Response::Write(w)) => assert_eq!(w.appended, 1),
        other => panic!("forwarded proposal: {other:?}"),
    }
    // The leader's answer is lost: the outcome is unknown, and the retry with the same
    // payload is a duplicate, not a second sample.
    c.net.cut(leader, follower);
    assert!(matches!(
        router.propose(leader, 1, write(6, 1)).await,
        Err(ProposeError::OutcomeUnknown { .. })
    ));
    c.net.heal_all();
    match router.propose(leader, 1, write(6, 1)).await {
        Ok(Response::Write(w)) => assert_eq!((w.appended, w.duplicates), (0, 1)),
        other => panic!("retried proposal: {other:?}"),
    }
    c.converge(1).await;
    assert_eq!(c.steps(follower, 1, 6).await, BTreeSet::from([0, 1]));
    // A cut request link: nothing was sent.
    c.net.cut(follower, leader);
    assert!(matches!(
        router.propose(leader, 1, write(6, 2)).await,
        Err(ProposeError::Unreachable { .. })
    ));
}

/// A strong read of a group whose only voter is this node skips the read-index round
/// (`Registry::sole_voter_caught_up`); it must still see every acknowledged write, also right
/// after the replica restarts, when it must first apply an entry of its new term.
#[tokio::test(start_paused = true)]
async fn strong_reads_of_a_single_voter_group_see_every_acknowledged_write() {
    let c = Cluster::new(&[1], |_| {}).await;
    c.create_group(3, &[1]).await;
    let read_all = || async {
        c.node(1)
            .read(3, Consistency::Strong, |e| {
                e.read_series(&key(3), i64::MIN / 4, i64::MAX / 4)
                    .unwrap()
                    .len()
            })
            .await
    };
    for i in 0..10 {
        c.propose(3, write(3, i)).await;
        assert_eq!(read_all().await.unwrap(), i as usize + 1);
    }
    c.node(1).stop_group(3).await.unwrap();
    c.node(1).start_group(3).await.unwrap();
    let mut answered = 0;
    for _ in 0..400 {
        match read_all().await {
            Ok(n) => {
                assert_eq!(n, 10, "a strong read after the restart missed writes");
                answered += 1;
            }
            Err(ReadError::NotLeader { .. } | ReadError::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        answered > 0,
        "the restarted single voter never answered a strong read"
    );
}
