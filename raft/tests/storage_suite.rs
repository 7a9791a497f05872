//! openraft's own storage test suite against Strata's log store (the shared WAL) and each state
//! machine: the shard engine on the simulated and on the real file system, and the meta group
//! with both of its stores (in memory on the simulated file system, as in the simulator; sled
//! on a real temporary directory, as in production).

use std::path::PathBuf;
use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use strata_raft::log_store::{SharedWal, WalLogStore};
use strata_raft::meta_sm::MetaStateMachine;
use strata_raft::shard_sm::ShardStateMachine;
use strata_raft::types::{META_GROUP, Runtime, TypeConfig};
use strata_raft::wal::WalConfig;
use strata_shard::engine::EngineConfig;
use strata_shard::sim_fs::SimFs;
use strata_shard::{Fs, StdFs};

/// Stops the group-commit task (and removes a real directory) when a suite case ends.
struct Guard {
    flusher: tokio::task::JoinHandle<()>,
    dir: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.flusher.abort();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh node root (a unique temporary directory on the real disk, or `/node` on a new
/// simulated disk) with its WAL open and its group-commit task running.
fn open_node(real_fs: bool) -> (Guard, Arc<dyn Fs>, PathBuf, Arc<SharedWal>) {
    let (fs, root, dir): (Arc<dyn Fs>, PathBuf, Option<PathBuf>) = if real_fs {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("strata-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Arc::new(StdFs), dir.clone(), Some(dir))
    } else {
        (Arc::new(SimFs::new()), PathBuf::from("/node"), None)
    };
    let wal =
        SharedWal::open(Arc::clone(&fs), root.join("wal"), WalConfig::default()).expect("open WAL");
    let flusher = tokio::spawn(Arc::clone(&wal).run_flusher());
    (Guard { flusher, dir }, fs, root, wal)
}

struct ShardBuilder {
    real_fs: bool,
}

impl StoreBuilder<TypeConfig, WalLogStore, ShardStateMachine, Guard> for ShardBuilder {
    async fn build(
        &self,
    ) -> Result<(Guard, WalLogStore, ShardStateMachine), StorageError<TypeConfig>> {
        let (guard, fs, root, wal) = open_node(self.real_fs);
        let sm = ShardStateMachine::open(fs, &root.join("group-1"), EngineConfig::new("unused"))
            .expect("open state machine");
        Ok((guard, wal.group(1), sm))
    }
}

struct MetaBuilder {
    sled: bool,
}

impl StoreBuilder<TypeConfig, WalLogStore, MetaStateMachine, Guard> for MetaBuilder {
    async fn build(
        &self,
    ) -> Result<(Guard, WalLogStore, MetaStateMachine), StorageError<TypeConfig>> {
        let (guard, fs, root, wal) = open_node(self.sled);
        let group_dir = root.join("group-0");
        let sm = if self.sled {
            MetaStateMachine::open_sled(fs, &group_dir, &root.join("meta-sled"))
        } else {
            MetaStateMachine::open_in_memory(fs, &group_dir)
        }
        .expect("open state machine");
        Ok((guard, wal.group(META_GROUP), sm))
    }
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_on_simulated_fs() {
    Runtime::scope(7, Suite::test_all(ShardBuilder { real_fs: false }))
        .await
        .expect("suite");
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_on_real_fs() {
    Runtime::scope(7, Suite::test_all(ShardBuilder { real_fs: true }))
        .await
        .expect("suite");
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_meta_in_memory_on_simulated_fs() {
    Runtime::scope(7, Suite::test_all(MetaBuilder { sled: false }))
        .await
        .expect("suite");
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_meta_on_sled() {
    Runtime::scope(7, Suite::test_all(MetaBuilder { sled: true }))
        .await
        .expect("suite");
}
