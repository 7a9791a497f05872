//! The state machine of a shard group: the `strata-shard` engine, driven by the group's log.
//!
//! ## Layout on disk (under the group's root directory, through the `Fs` seam)
//! - `engine-<seq>/`: an engine directory (checkpoint + block files).
//! - `CURRENT`: the name of the live engine directory, replaced atomically. An installed
//!   snapshot goes into a fresh `engine-<seq+1>/` and becomes live by rewriting `CURRENT`, so a
//!   crash midway leaves the old state (R1).
//!
//! ## Invariants
//! - R1. The live engine is always a complete engine directory.
//! - R2. The engine's checkpoint carries the log id and membership of the last entry applied
//!   before it was published ([`Engine::set_applied`] is called right before every command or
//!   snapshot that publishes one, so a checkpoint published by a seal includes the seal). After a restart `applied_state` reports
//!   that position and openraft re-applies the log after it; entries are purged only up to a
//!   snapshot, and a snapshot is always a published checkpoint, so nothing between is lost.
//! - R3. Apply is deterministic: the engine reads no clock, and time reaches it in commands.
//! - R4. A snapshot being streamed pins its files (`strata_shard::engine::SnapshotPin`, held by
//!   the [`SnapshotFiles`]); compaction and retention defer deletions until it is dropped. A
//!   shard snapshot's files are the engine's blocks, then its checkpoint copy last.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use strata_shard::engine::{Engine, EngineConfig, SnapshotManifest, install_snapshot};
use strata_shard::fs::{create_dir_all_durable, write_file_atomic};
use strata_shard::{Error, Fs};

use crate::codec::{self, to_io};
use crate::snapshot::SnapshotFiles;
use crate::types::{Command, LogId, Payload, Response, SnapshotMeta, StoredMembership, TypeConfig};

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFiles>;

const CURRENT_FILE: &str = "CURRENT";

struct Inner {
    fs: Arc<dyn Fs>,
    root: PathBuf,
    /// Engine settings; `dir` is replaced by the live engine directory.
    template: EngineConfig,
    engine: Engine,
    engine_seq: u64,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Whether a snapshot exists (built, installed, or a checkpoint with applied entries).
    has_snapshot: bool,
}

/// A shard group's state machine; clones share it (one goes to openraft, one serves reads).
#[derive(Clone)]
pub struct ShardStateMachine {
    inner: Arc<Mutex<Inner>>,
}

fn engine_dir_name(seq: u64) -> String {
    format!("engine-{seq:016}")
}

impl ShardStateMachine {
    /// Opens (or creates) the state machine under `root`, recovering the live engine.
    pub fn open(
        fs: Arc<dyn Fs>,
        root: &Path,
        template: EngineConfig,
    ) -> strata_shard::Result<Self> {
        create_dir_all_durable(&*fs, root).map_err(|e| Error::io("create group dir", root, e))?;
        let current = root.join(CURRENT_FILE);
        let name = if fs.exists(&current) {
            let bytes = fs
                .read(&current)
                .map_err(|e| Error::io("read CURRENT", &current, e))?;
            String::from_utf8(bytes)
                .ok()
                .filter(|n| n.starts_with("engine-"))
                .ok_or_else(|| {
                    Error::corrupt(
                        current.display().to_string(),
                        "not an engine directory name",
                    )
                })?
        } else {
            let name = engine_dir_name(0);
            create_dir_all_durable(&*fs, &root.join(&name))
                .map_err(|e| Error::io("create engine dir", root, e))?;
            write_file_atomic(&*fs, &current, name.as_bytes())
                .map_err(|e| Error::io("write CURRENT", &current, e))?;
            name
        };
        let engine_seq = name["engine-".len()..].parse().map_err(|_| {
            Error::corrupt(current.display().to_string(), format!("bad name {name:?}"))
        })?;
        let mut cfg = template.clone();
        cfg.dir = root.join(&name);
        let engine = Engine::open(Arc::clone(&fs), cfg)?;
        let (last_applied, membership) = decode_applied(engine.applied())?;
        let inner = Inner {
            fs,
            root: root.to_path_buf(),
            template,
            engine,
            engine_seq,
            has_snapshot: last_applied.is_some(),
            last_applied,
            membership,
        };
        inner.delete_stale_engine_dirs()?;
        Ok(ShardStateMachine {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the engine (local reads: queries, stats).
    pub fn with_engine<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.lock().engine)
    }
}

/// A shard snapshot's files: the blocks, then the checkpoint copy last.
fn manifest_files(m: &SnapshotManifest) -> Vec<(String, u64)> {
    let mut files = m.blocks.clone();
    files.push(m.checkpoint.clone());
    files
}

/// The engine manifest of received shard snapshot files (inverse of [`manifest_files`]).
fn files_manifest(snap: &SnapshotFiles) -> strata_shard::Result<SnapshotManifest> {
    let (checkpoint, blocks) = snap.files().split_last().ok_or_else(|| {
        Error::corrupt(
            format!("snapshot {}", snap.id()),
            "no files: a shard snapshot ends with its checkpoint",
        )
    })?;
    Ok(SnapshotManifest {
        generation: snap.id(),
        blocks: blocks.to_vec(),
        checkpoint: checkpoint.clone(),
    })
}

fn encode_applied(last: Option<&LogId>, membership: &StoredMembership) -> Vec<u8> {
    let mut b = Vec::new();
    codec::put_option(&mut b, last, codec::put_log_id);
    codec::put_stored_membership(&mut b, membership);
    b
}

fn decode_applied(bytes: &[u8]) -> strata_shard::Result<(Option<LogId>, StoredMembership)> {
    if bytes.is_empty() {
        return Ok((None, StoredMembership::default()));
    }
    codec::decode(bytes, "applied position", |r| {
        Ok((
            codec::get_option(r, codec::get_log_id)?,
            codec::get_stored_membership(r)?,
        ))
    })
}

impl Inner {
    fn apply_one(&mut self, log_id: LogId, payload: Payload) -> strata_shard::Result<Response> {
        if let EntryPayload::Membership(m) = &payload {
            self.membership = StoredMembership::new(Some(log_id), m.clone());
        }
        self.last_applied = Some(log_id);
        let EntryPayload::Normal(command) = payload else {
            return Ok(Response::Done);
        };
        if !matches!(command, Command::Write(_) | Command::Meta(_)) {
            // R2: every other command publishes a checkpoint, which must carry this position.
            self.record_applied();
        }
        match command {
            Command::Write(batch) => Ok(Response::Write(self.engine.apply_batch(&batch)?.into())),
            Command::Seal => self.engine.seal().map(|()| Response::Done),
            Command::Retention { now_ms } => {
                self.engine.apply_retention(now_ms).map(|()| Response::Done)
            }
            Command::Compact => self.engine.compact().map(|()| Response::Done),
            // Apply stays total: a misrouted command is answered, not an error that would
            // stop the group.
            Command::Meta(m) => Ok(Response::Refused(format!(
                "a shard group cannot apply the meta command {m}"
            ))),
        }
    }

    /// Hands the applied position to the engine; called only right before the engine publishes
    /// a checkpoint (R2), which keeps encoding off the write path.
    fn record_applied(&mut self) {
        self.engine
            .set_applied(encode_applied(self.last_applied.as_ref(), &self.membership));
    }

    fn snapshot(&mut self) -> strata_shard::Result<Snapshot> {
        self.record_applied();
        let (manifest, pin) = self.engine.pin_snapshot()?;
        self.has_snapshot = true;
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            snapshot: SnapshotFiles::pinned(
                Arc::clone(&self.fs),
                self.engine.dir().to_path_buf(),
                manifest.generation,
                manifest_files(&manifest),
                pin,
            ),
        })
    }

    /// Copies `snap` into a fresh engine directory and makes it live (R1).
    fn install(&mut self, meta: &SnapshotMeta, snap: &SnapshotFiles) -> strata_shard::Result<()> {
        let manifest = files_manifest(snap)?;
        let seq = self.engine_seq + 1;
        let name = engine_dir_name(seq);
        let dir = self.root.join(&name);
        // A crash during an earlier install may have left a partial copy here.
        self.delete_dir_files(&dir)?;
        install_snapshot(&*self.fs, &dir, &manifest, |file, offset, len| {
            snap.read_piece(file, offset, len)
        })?;
        let mut cfg = self.template.clone();
        cfg.dir = dir;
        let engine = Engine::open(Arc::clone(&self.fs), cfg)?;
        let (last_applied, _) = decode_applied(engine.applied())?;
        if last_applied != meta.last_log_id {
            return Err(Error::corrupt(
                format!("snapshot {}", manifest.generation),
                format!(
                    "its checkpoint was applied up to {last_applied:?}, its metadata says {:?}",
                    meta.last_log_id
                ),
            ));
        }
        let current = self.root.join(CURRENT_FILE);
        write_file_atomic(&*self.fs, &current, name.as_bytes())
            .map_err(|e| Error::io("write CURRENT", &current, e))?;
        self.engine = engine;
        self.engine_seq = seq;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.has_snapshot = true;
        self.delete_stale_engine_dirs()
    }

    fn delete_dir_files(&self, dir: &Path) -> strata_shard::Result<()> {
        if !self.fs.exists(dir) {
            return Ok(());
        }
        let names = self
            .fs
            .list(dir)
            .map_err(|e| Error::io("list engine dir", dir, e))?;
        for n in &names {
            let path = dir.join(n);
            self.fs
                .remove_file(&path)
                .map_err(|e| Error::io("delete stale engine file", &path, e))?;
        }
        if !names.is_empty() {
            self.fs
                .sync_dir(dir)
                .map_err(|e| Error::io("sync engine dir", dir, e))?;
        }
        Ok(())
    }

    /// Empties engine directories other than the live one (the `Fs` seam has no directory
    /// removal; an empty directory costs nothing).
    fn delete_stale_engine_dirs(&self) -> strata_shard::Result<()> {
        let live = engine_dir_name(self.engine_seq);
        let names = self
            .fs
            .list(&self.root)
            .map_err(|e| Error::io("list group dir", &self.root, e))?;
        for n in names
            .iter()
            .filter(|n| n.starts_with("engine-") && **n != live)
        {
            self.delete_dir_files(&self.root.join(n))?;
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ShardStateMachine {
    type SnapshotData = SnapshotFiles;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.lock().snapshot().map_err(to_io)
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotData = SnapshotFiles;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = self
                .lock()
                .apply_one(entry.log_id, entry.payload)
                .map_err(to_io)?;
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFiles,
    ) -> Result<(), io::Error> {
        self.lock().install(meta, &snapshot).map_err(to_io)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let mut inner = self.lock();
        if !inner.has_snapshot {
            return Ok(None);
        }
        inner.snapshot().map(Some).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;
    use strata_shard::sim_fs::SimFs;

    use super::*;
    use crate::meta::MetaCommand;

    #[test]
    fn a_meta_command_is_answered_with_a_refusal() {
        let sm = ShardStateMachine::open(
            Arc::new(SimFs::new()),
            Path::new("/g1"),
            EngineConfig::new("unused"),
        )
        .unwrap();
        let leader = openraft::type_config::alias::LeaderIdOf::<TypeConfig>::new(1, 1);
        let log_id = LogId::new(leader, 1);
        let cmd = MetaCommand::RemoveNode { id: 3 };
        let r = sm
            .inner
            .lock()
            .unwrap()
            .apply_one(log_id, EntryPayload::Normal(Command::Meta(cmd)))
            .unwrap();
        assert_eq!(
            r,
            Response::Refused("a shard group cannot apply the meta command remove node 3".into())
        );
        assert_eq!(sm.inner.lock().unwrap().last_applied, Some(log_id));
    }
}
