//! openraft's own storage test suite against Strata's log store (the shared WAL) and the shard
//! state machine (the engine), on the simulated and on the real file system.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use strata_raft::log_store::{SharedWal, WalLogStore};
use strata_raft::shard_sm::ShardStateMachine;
use strata_raft::types::{Runtime, TypeConfig};
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

struct Builder {
    real_fs: bool,
}

impl StoreBuilder<TypeConfig, WalLogStore, ShardStateMachine, Guard> for Builder {
    async fn build(
        &self,
    ) -> Result<(Guard, WalLogStore, ShardStateMachine), StorageError<TypeConfig>> {
        let (fs, root, dir): (Arc<dyn Fs>, PathBuf, Option<PathBuf>) = if self.real_fs {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("strata-suite-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            (Arc::new(StdFs), dir.clone(), Some(dir))
        } else {
            (Arc::new(SimFs::new()), PathBuf::from("/node"), None)
        };
        let wal = SharedWal::open(Arc::clone(&fs), root.join("wal"), WalConfig::default())
            .expect("open WAL");
        let flusher = tokio::spawn(Arc::clone(&wal).run_flusher());
        let sm = ShardStateMachine::open(fs, &root.join("group-1"), EngineConfig::new("unused"))
            .expect("open state machine");
        Ok((Guard { flusher, dir }, wal.group(1), sm))
    }
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_on_simulated_fs() {
    Runtime::scope(7, async {
        Suite::test_all(Builder { real_fs: false })
            .await
            .expect("suite");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn openraft_storage_suite_on_real_fs() {
    Runtime::scope(7, async {
        Suite::test_all(Builder { real_fs: true })
            .await
            .expect("suite");
    })
    .await;
}
