//! The meta state machine under a real (single-voter) openraft group: responses reach the
//! proposer, and after a restart the in-memory store is rebuilt from the latest snapshot plus
//! openraft's replay of the log after it, as in the simulator.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use openraft::async_runtime::WatchReceiver;
use strata_raft::log_store::SharedWal;
use strata_raft::meta::{LeaseState, MetaCommand, MetaResponse, MetaState};
use strata_raft::meta_sm::MetaStateMachine;
use strata_raft::network::Transport;
use strata_raft::network::local::LocalNetwork;
use strata_raft::types::{Command, META_GROUP, NodeInfo, Response, Runtime, TypeConfig};
use strata_raft::wal::WalConfig;
use strata_shard::Fs;
use strata_shard::sim_fs::SimFs;

type MetaRaft = Raft<TypeConfig, MetaStateMachine>;

struct Node {
    raft: MetaRaft,
    sm: MetaStateMachine,
    flusher: tokio::task::JoinHandle<()>,
}

async fn start(fs: &Arc<SimFs>, net: &LocalNetwork) -> Node {
    let fs: Arc<dyn Fs> = fs.clone();
    let root = Path::new("/node-1");
    let wal = SharedWal::open(Arc::clone(&fs), root.join("wal"), WalConfig::default()).unwrap();
    let flusher = tokio::spawn(Arc::clone(&wal).run_flusher());
    let sm = MetaStateMachine::open_in_memory(fs, &root.join("group-0")).unwrap();
    let config = openraft::Config {
        cluster_name: "meta-test".into(),
        // Purge the log up to every snapshot, so a restart must start from the snapshot.
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    let raft = Raft::new(
        1,
        Arc::new(config.validate().unwrap()),
        net.router(1).group_factory(META_GROUP),
        wal.group(META_GROUP),
        sm.clone(),
    )
    .await
    .unwrap();
    Node { raft, sm, flusher }
}

async fn propose(node: &Node, cmd: MetaCommand) -> MetaResponse {
    match node
        .raft
        .client_write(Command::Meta(cmd))
        .await
        .unwrap()
        .data
    {
        Response::Meta(r) => r,
        other => panic!("not a meta response: {other:?}"),
    }
}

fn acquire(holder: u64, now_ms: i64) -> MetaCommand {
    MetaCommand::AcquireLease {
        slot: "rules-7".into(),
        holder,
        now_ms,
        ttl_ms: 10_000,
    }
}

#[tokio::test(start_paused = true)]
async fn meta_group_answers_proposers_and_rebuilds_from_snapshot_and_log_after_restart() {
    Runtime::scope(11, async {
        let fs = Arc::new(SimFs::new());
        let net = LocalNetwork::new();
        let node = start(&fs, &net).await;
        let info = NodeInfo {
            addr: "node-1:7000".into(),
            zone: "z1".into(),
        };
        node.raft
            .initialize(BTreeMap::from([(1, info.clone())]))
            .await
            .unwrap();
        node.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leader")
            .await
            .unwrap();

        let set_node = MetaCommand::SetNode { id: 1, info };
        assert_eq!(propose(&node, set_node).await, MetaResponse::Done);
        let lease = LeaseState {
            holder: 1,
            epoch: 1,
            expires_ms: 11_000,
        };
        assert_eq!(
            propose(&node, acquire(1, 1_000)).await,
            MetaResponse::Lease(lease)
        );
        // A shard command sent to the meta group is answered, and the group goes on.
        let r = node.raft.client_write(Command::Compact).await.unwrap().data;
        assert!(matches!(r, Response::Refused(_)), "{r:?}");

        node.raft.trigger().snapshot().await.unwrap();
        // (Read the metrics first: a borrow held across the wait would block openraft.)
        let applied = node.raft.metrics().borrow_watched().last_applied.unwrap();
        node.raft
            .wait(Some(Duration::from_secs(10)))
            .snapshot(applied, "snapshot")
            .await
            .unwrap();
        // The log before the snapshot is gone.
        node.raft
            .wait(Some(Duration::from_secs(10)))
            .purged(Some(applied), "purged")
            .await
            .unwrap();
        // After the snapshot: only in the log.
        let ring = MetaCommand::SetRing {
            shards: 8,
            vnodes_per_shard: 16,
            now_ms: 2_000,
        };
        assert_eq!(propose(&node, ring).await, MetaResponse::RingEpoch(1));
        assert_eq!(
            propose(&node, acquire(2, 3_000)).await,
            MetaResponse::Held(lease)
        );
        let expected: MetaState = node.sm.read(MetaState::clone);
        let last = node.raft.metrics().borrow_watched().last_applied;

        node.raft.shutdown().await.unwrap();
        node.flusher.abort();
        drop(node);
        fs.crash();

        let node = start(&fs, &net).await;
        node.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index(last.map(|l| l.index), "replayed")
            .await
            .unwrap();
        assert_eq!(node.sm.read(MetaState::clone), expected);
        node.raft.shutdown().await.unwrap();
        node.flusher.abort();
    })
    .await;
}
