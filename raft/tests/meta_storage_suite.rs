//! openraft's own storage test suite against the shared WAL and the meta group's state machine,
//! with both of its stores: in memory on the simulated file system (the simulator's set-up) and
//! sled on a real temporary directory (production's).

use std::path::PathBuf;
use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use strata_raft::log_store::{SharedWal, WalLogStore};
use strata_raft::meta_sm::MetaStateMachine;
use strata_raft::types::{META_GROUP, Runtime, TypeConfig};
use strata_raft::wal::WalConfig;
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

struct Builder {
    sled: bool,
}

impl StoreBuilder<TypeConfig, WalLogStore, MetaStateMachine, Guard> for Builder {
    async fn build(
        &self,
    ) -> Result<(Guard, WalLogStore, MetaStateMachine), StorageError<TypeConfig>> {
        let (fs, root, dir): (Arc<dyn Fs>, PathBuf, Option<PathBuf>) = if self.sled {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("strata-meta-suite-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            (Arc::new(StdFs), dir.clone(), Some(dir))
        } else {
            (Arc::new(SimFs::new()), PathBuf::from("/node"), None)
        };
        let wal = SharedWal::open(Arc::clone(&fs), root.join("wal"), WalConfig::default())
            .expect("open WAL");
        let flusher = tokio::spawn(Arc::clone(&wal).run_flusher());
        let group_dir = root.join("group-0");
        let sm = if self.sled {
            MetaStateMachine::open_sled(fs, &group_dir, &root.join("meta-sled"))
        } else {
            MetaStateMachine::open_in_memory(fs, &group_dir)
        }
        .expect("open state machine");
        Ok((Guard { flusher, dir }, wal.group(META_GROUP), sm))
    }
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_meta_in_memory_on_simulated_fs() {
    Runtime::scope(7, async {
        Suite::test_all(Builder { sled: false })
            .await
            .expect("suite");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_meta_on_sled() {
    Runtime::scope(7, async {
        Suite::test_all(Builder { sled: true })
            .await
            .expect("suite");
    })
    .await;
}
