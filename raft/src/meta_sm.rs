//! The meta group's state machine: [`MetaState`] (pure, [`crate::meta`]) kept in memory for
//! reads and persisted by a [`MetaStore`]:
//! - [`SledStore`] in production: one sled row per entity (see the key-value form in
//!   [`crate::meta`]) plus the applied position, changed by one atomic batch per entry.
//! - [`MemStore`] in the simulator, where sled must not run (it spawns threads and touches real
//!   files): it keeps nothing, and [`MetaStateMachine::open`] rebuilds the state from the latest
//!   snapshot file; openraft then re-applies the log after it.
//!
//! ## Layout on disk (the group's directory, through the `Fs` seam)
//! - `meta-<seq>.snap`: a snapshot, one immutable file (`seq` increases by one per snapshot
//!   built or installed): `magic "STRMETA\0" | version u32 | applied (option log id) |
//!   membership | state (crate::meta encoding) | crc32 u32 of all before`. Meta state is small
//!   (nodes, placements, ring epochs, tenants, leases: kilobytes to a few megabytes), so a
//!   snapshot is one file, read whole on open and bounded by [`META_SNAPSHOT_BYTES_MAX`]. P3
//!   of [`crate::snapshot`] still holds on the wire (pieces of at most 1 MiB); the receiver
//!   assembles the file in memory, where the state lives anyway.
//! - The sled database lives wherever [`SledStore::open`] is told (real files only).
//!
//! ## Invariants
//! - M9. A store changes the state, the applied log id and the membership together: one sled
//!   batch per applied entry, one batch replacing everything per installed snapshot.
//! - M10. A snapshot file is complete once its name exists (`write_file_atomic`); the newest is
//!   the current snapshot. An older one is deleted once a newer exists and no [`SnapshotFiles`]
//!   being sent pins it: the pin is an `Arc` of the file's guard, whose `Drop` deletes a
//!   superseded file. A file a crash left behind is deleted on the next open.
//! - M11. Applied state needs no fsync of its own: on open the state is the newer (by applied
//!   log id) of the store's and the latest snapshot's, and openraft re-applies the log after
//!   it. openraft purges the log only up to a snapshot, and a snapshot file is durable before
//!   openraft learns of it, so no applied entry is lost even when sled had not flushed. sled is
//!   still flushed before a snapshot is built or after one is installed, so that after a
//!   restart it is not behind its snapshot (which would cost a full rewrite).
//! - M12. A failed store write fails the apply: openraft then stops the group (a storage error
//!   is fatal), so memory never runs ahead of the store on a node that keeps serving.
//! - M13. Apply is total: a shard command reaching the meta group is answered with
//!   [`Response::Refused`], never an error.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use strata_shard::codec::{PutExt, Reader};
use strata_shard::fs::{create_dir_all_durable, write_file_atomic};
use strata_shard::{Error, Fs, Result};

use crate::codec::{self, to_io};
use crate::meta::{MetaKey, MetaState, get_meta_state, put_meta_state};
use crate::snapshot::{PIECE_BYTES_MAX, SnapshotFiles};
use crate::types::{Command, LogId, Payload, Response, SnapshotMeta, StoredMembership, TypeConfig};

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFiles>;

/// Largest meta snapshot accepted from a peer or read on open.
pub const META_SNAPSHOT_BYTES_MAX: u64 = 256 << 20;
/// sled's page cache (its default is 1 GiB; the meta state is far smaller, and openraft dropped
/// its sled store over memory growth).
pub const SLED_CACHE_BYTES_MAX: u64 = 64 << 20;

const SNAP_MAGIC: &[u8; 8] = b"STRMETA\0";
const SNAP_VERSION: u32 = 1;
const SNAP_PREFIX: &str = "meta-";
const SNAP_SUFFIX: &str = ".snap";

/// What a store holds: the state and the position of the last entry applied to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub state: MetaState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Where the meta state machine persists its state between snapshots.
pub trait MetaStore: Send + 'static {
    /// What the store holds from before, or `None` (a new store, or one that keeps nothing).
    fn load(&mut self) -> Result<Option<Persisted>>;
    /// Records one applied entry atomically (M9): the `keys` of `state` (rewritten, or deleted
    /// where `state` has no such entity) and the applied position.
    fn commit(
        &mut self,
        state: &MetaState,
        keys: &[MetaKey],
        last_applied: Option<&LogId>,
        membership: &StoredMembership,
    ) -> Result<()>;
    /// Replaces everything with `p` atomically (an installed or newer snapshot).
    fn replace(&mut self, p: &Persisted) -> Result<()>;
    /// Makes everything committed so far durable.
    fn flush(&mut self) -> Result<()>;
}

/// The simulator's store: keeps nothing; the state is rebuilt from snapshot + log (M11).
#[derive(Debug, Default)]
pub struct MemStore;

impl MetaStore for MemStore {
    fn load(&mut self) -> Result<Option<Persisted>> {
        Ok(None)
    }
    fn commit(
        &mut self,
        _: &MetaState,
        _: &[MetaKey],
        _: Option<&LogId>,
        _: &StoredMembership,
    ) -> Result<()> {
        Ok(())
    }
    fn replace(&mut self, _: &Persisted) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// How long opening sled waits for a previous handle's lock to be released.
const SLED_LOCK_WAIT_MS_MAX: u64 = 5_000;
const SLED_LOCK_RETRY_MS: u64 = 10;

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Rows of the sled store that are not state entities (state keys never start with `_`).
const SLED_APPLIED_KEY: &[u8] = b"_applied";
const SLED_FORMAT_KEY: &[u8] = b"_format";
const SLED_FORMAT: u32 = 1;

/// The production store: a sled database holding one row per state entity.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SledStore {
    /// Opens (or creates) the sled database at `path` (a real directory: not the `Fs` seam).
    pub fn open(path: &Path) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES_MAX);
        // sled releases its file lock only when its background threads let go of the database,
        // a moment after the last handle is dropped: a group stopped and started again (or a
        // test reopening it) waits for that, boundedly.
        let mut waited_ms = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if waited_ms < SLED_LOCK_WAIT_MS_MAX && is_lock_error(&e) => {
                    std::thread::sleep(std::time::Duration::from_millis(SLED_LOCK_RETRY_MS));
                    waited_ms += SLED_LOCK_RETRY_MS;
                }
                Err(e) => return Err(Error::io("open sled", path, e.into())),
            }
        };
        let mut format = Vec::new();
        format.put_u32(SLED_FORMAT);
        // Only a new database lacks the row; an existing one is checked by `load`.
        db.compare_and_swap(SLED_FORMAT_KEY, None::<&[u8]>, Some(format))
            .map_err(|e| Error::io("write sled", path, e.into()))?
            .ok();
        Ok(SledStore {
            db,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, op: &'static str) -> impl Fn(sled::Error) -> Error + '_ {
        move |e| Error::io(op, &self.path, e.into())
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(format!("sled meta store {}", self.path.display()), reason)
    }
}

fn encode_applied(last: Option<&LogId>, membership: &StoredMembership) -> Vec<u8> {
    let mut b = Vec::new();
    codec::put_option(&mut b, last, codec::put_log_id);
    codec::put_stored_membership(&mut b, membership);
    b
}

fn get_applied(r: &mut Reader<'_>) -> Result<(Option<LogId>, StoredMembership)> {
    Ok((
        codec::get_option(r, codec::get_log_id)?,
        codec::get_stored_membership(r)?,
    ))
}

impl MetaStore for SledStore {
    fn load(&mut self) -> Result<Option<Persisted>> {
        let mut p = Persisted::default();
        let mut applied_seen = false;
        for row in self.db.iter() {
            let (k, v) = row.map_err(self.err("read sled"))?;
            match &*k {
                SLED_FORMAT_KEY => {
                    let format = codec::decode(&v, "sled format", |r| r.u32())?;
                    if format != SLED_FORMAT {
                        return Err(
                            self.corrupt(format!("format {format}, expected {SLED_FORMAT}"))
                        );
                    }
                }
                SLED_APPLIED_KEY => {
                    (p.last_applied, p.membership) =
                        codec::decode(&v, "sled applied position", get_applied)?;
                    applied_seen = true;
                }
                key => p.state.insert_entry(key, &v)?,
            }
        }
        Ok(applied_seen.then_some(p))
    }

    fn commit(
        &mut self,
        state: &MetaState,
        keys: &[MetaKey],
        last_applied: Option<&LogId>,
        membership: &StoredMembership,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in keys {
            match state.value(key) {
                Some(v) => batch.insert(key.encode(), v),
                None => batch.remove(key.encode()),
            }
        }
        batch.insert(SLED_APPLIED_KEY, encode_applied(last_applied, membership));
        self.db.apply_batch(batch).map_err(self.err("write sled"))
    }

    fn replace(&mut self, p: &Persisted) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.db.iter().keys() {
            batch.remove(key.map_err(self.err("read sled"))?);
        }
        for (k, v) in p.state.entries() {
            batch.insert(k, v);
        }
        let mut format = Vec::new();
        format.put_u32(SLED_FORMAT);
        batch.insert(SLED_FORMAT_KEY, format);
        batch.insert(
            SLED_APPLIED_KEY,
            encode_applied(p.last_applied.as_ref(), &p.membership),
        );
        self.db.apply_batch(batch).map_err(self.err("write sled"))
    }

    fn flush(&mut self) -> Result<()> {
        self.db.flush().map(drop).map_err(self.err("flush sled"))
    }
}

fn snap_name(seq: u64) -> String {
    format!("{SNAP_PREFIX}{seq:020}{SNAP_SUFFIX}")
}

fn parse_snap_name(name: &str) -> Option<u64> {
    name.strip_prefix(SNAP_PREFIX)?
        .strip_suffix(SNAP_SUFFIX)?
        .parse()
        .ok()
}

fn encode_snapshot(p: &Persisted) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(SNAP_MAGIC);
    b.put_u32(SNAP_VERSION);
    codec::put_option(&mut b, p.last_applied.as_ref(), codec::put_log_id);
    codec::put_stored_membership(&mut b, &p.membership);
    put_meta_state(&mut b, &p.state);
    let crc = crc32fast::hash(&b);
    b.put_u32(crc);
    b
}

fn decode_snapshot(bytes: &[u8], what: &str) -> Result<Persisted> {
    let bad = |reason: &str| Error::corrupt(what, reason);
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or_else(|| bad("shorter than its checksum"))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(bad("checksum mismatch"));
    }
    codec::decode(body, what, |r| {
        if r.take(SNAP_MAGIC.len())? != SNAP_MAGIC {
            return Err(r.corrupt("not a meta snapshot (bad magic)"));
        }
        let version = r.u32()?;
        if version != SNAP_VERSION {
            return Err(r.corrupt(format!("version {version}, expected {SNAP_VERSION}")));
        }
        let (last_applied, membership) = get_applied(r)?;
        Ok(Persisted {
            state: get_meta_state(r)?,
            last_applied,
            membership,
        })
    })
}

/// A snapshot file; the `Arc` of it is the pin a [`SnapshotFiles`] holds (M10).
struct SnapFile {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    superseded: AtomicBool,
}

impl Drop for SnapFile {
    fn drop(&mut self) {
        if *self.superseded.get_mut() {
            // A failure leaves a stale file that the next open deletes (M10).
            let _ = self.fs.remove_file(&self.path);
        }
    }
}

struct Current {
    seq: u64,
    len: u64,
    meta: SnapshotMeta,
    file: Arc<SnapFile>,
}

struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    store: Box<dyn MetaStore>,
    state: MetaState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    current: Option<Current>,
    next_seq: u64,
}

/// The meta group's state machine; clones share it (one goes to openraft, one serves reads).
#[derive(Clone)]
pub struct MetaStateMachine {
    inner: Arc<Mutex<Inner>>,
}

impl MetaStateMachine {
    /// Opens the state machine with its snapshots in `dir` (through `fs`) and its state in
    /// `store`, taking the newer of the store's state and the latest snapshot (M11).
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, mut store: Box<dyn MetaStore>) -> Result<Self> {
        create_dir_all_durable(&*fs, dir).map_err(|e| Error::io("create group dir", dir, e))?;
        let names = fs
            .list(dir)
            .map_err(|e| Error::io("list group dir", dir, e))?;
        let mut snaps: Vec<u64> = names.iter().filter_map(|n| parse_snap_name(n)).collect();
        snaps.sort_unstable();
        let latest = snaps.pop();
        // Leftovers of a crash: older snapshots (M10) and unfinished atomic writes.
        let stale = snaps.into_iter().map(snap_name).chain(
            names
                .iter()
                .filter(|n| n.starts_with(SNAP_PREFIX) && n.ends_with(".tmp"))
                .cloned(),
        );
        for name in stale {
            let path = dir.join(name);
            fs.remove_file(&path)
                .map_err(|e| Error::io("delete stale meta snapshot", &path, e))?;
        }

        let mut current = None;
        let mut from_snapshot = None;
        if let Some(seq) = latest {
            let path = dir.join(snap_name(seq));
            let len = fs
                .file_len(&path)
                .map_err(|e| Error::io("stat meta snapshot", &path, e))?;
            if len > META_SNAPSHOT_BYTES_MAX {
                return Err(Error::corrupt(
                    path.display().to_string(),
                    format!("{len} bytes, more than {META_SNAPSHOT_BYTES_MAX}"),
                ));
            }
            let bytes = fs
                .read(&path)
                .map_err(|e| Error::io("read meta snapshot", &path, e))?;
            let p = decode_snapshot(&bytes, &path.display().to_string())?;
            current = Some(Current {
                seq,
                len,
                meta: SnapshotMeta {
                    last_log_id: p.last_applied,
                    last_membership: p.membership.clone(),
                },
                file: Arc::new(SnapFile {
                    fs: Arc::clone(&fs),
                    path,
                    superseded: AtomicBool::new(false),
                }),
            });
            from_snapshot = Some(p);
        }
        let p = match (store.load()?, from_snapshot) {
            (Some(stored), Some(snap)) if stored.last_applied >= snap.last_applied => stored,
            (_, Some(snap)) => {
                // The store is behind its snapshot (new, in memory, or a crash during install).
                store.replace(&snap)?;
                store.flush()?;
                snap
            }
            (stored, None) => stored.unwrap_or_default(),
        };
        let inner = Inner {
            fs,
            dir: dir.to_path_buf(),
            store,
            state: p.state,
            last_applied: p.last_applied,
            membership: p.membership,
            next_seq: latest.map_or(0, |s| s + 1),
            current,
        };
        Ok(MetaStateMachine {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The simulator's state machine: state in memory, rebuilt from the latest snapshot.
    pub fn open_in_memory(fs: Arc<dyn Fs>, dir: &Path) -> Result<Self> {
        Self::open(fs, dir, Box::new(MemStore))
    }

    /// The production state machine: state in sled at `sled_path` (a real directory).
    pub fn open_sled(fs: Arc<dyn Fs>, dir: &Path, sled_path: &Path) -> Result<Self> {
        Self::open(fs, dir, Box::new(SledStore::open(sled_path)?))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the applied state (local reads; for linearizable ones, read-index first).
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.lock().state)
    }
}

impl Inner {
    fn apply_one(&mut self, log_id: LogId, payload: &Payload) -> Result<Response> {
        let (response, keys) = match payload {
            EntryPayload::Blank => (Response::Done, Vec::new()),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(log_id), m.clone());
                (Response::Done, Vec::new())
            }
            EntryPayload::Normal(Command::Meta(cmd)) => {
                let response = self.state.apply(cmd);
                (Response::Meta(response), self.state.touched(cmd))
            }
            // M13
            EntryPayload::Normal(other) => (
                Response::Refused(format!(
                    "the meta group cannot apply the shard command {other}"
                )),
                Vec::new(),
            ),
        };
        self.last_applied = Some(log_id);
        // M12: an error here stops the group.
        self.store.commit(
            &self.state,
            &keys,
            self.last_applied.as_ref(),
            &self.membership,
        )?;
        Ok(response)
    }

    fn current_snapshot(&self) -> Option<Snapshot> {
        let c = self.current.as_ref()?;
        Some(Snapshot {
            meta: c.meta.clone(),
            snapshot: SnapshotFiles::pinned(
                Arc::clone(&self.fs),
                self.dir.clone(),
                c.seq,
                vec![(snap_name(c.seq), c.len)],
                Arc::clone(&c.file),
            ),
        })
    }

    /// Writes `bytes` as the next snapshot file and makes it current (M10).
    fn publish(&mut self, bytes: &[u8], meta: SnapshotMeta) -> Result<()> {
        let seq = self.next_seq;
        let path = self.dir.join(snap_name(seq));
        write_file_atomic(&*self.fs, &path, bytes)
            .map_err(|e| Error::io("write meta snapshot", &path, e))?;
        self.next_seq = seq + 1;
        let file = Arc::new(SnapFile {
            fs: Arc::clone(&self.fs),
            path,
            superseded: AtomicBool::new(false),
        });
        let new = Current {
            seq,
            len: bytes.len() as u64,
            meta,
            file,
        };
        if let Some(old) = self.current.replace(new) {
            // Deleted now, or when the last snapshot being sent from it is dropped.
            old.file.superseded.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn build_snapshot(&mut self) -> Result<Snapshot> {
        // M11: not needed for safety; keeps sled from lagging its snapshot.
        self.store.flush()?;
        let up_to_date = self
            .current
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id == self.last_applied);
        if !up_to_date {
            let p = Persisted {
                state: self.state.clone(),
                last_applied: self.last_applied,
                membership: self.membership.clone(),
            };
            let meta = SnapshotMeta {
                last_log_id: p.last_applied,
                last_membership: p.membership.clone(),
            };
            self.publish(&encode_snapshot(&p), meta)?;
        }
        Ok(self
            .current_snapshot()
            .expect("a snapshot was just published"))
    }

    fn install(&mut self, meta: &SnapshotMeta, snap: &SnapshotFiles) -> Result<()> {
        let what = format!("meta snapshot {}", snap.id());
        let [(name, len)] = snap.files() else {
            return Err(Error::corrupt(
                what,
                format!("{} files; a meta snapshot is one file", snap.files().len()),
            ));
        };
        if *len > META_SNAPSHOT_BYTES_MAX {
            return Err(Error::corrupt(
                what,
                format!("{len} bytes, more than {META_SNAPSHOT_BYTES_MAX}"),
            ));
        }
        let mut bytes = Vec::with_capacity(*len as usize);
        while (bytes.len() as u64) < *len {
            let want = (*len - bytes.len() as u64).min(PIECE_BYTES_MAX as u64) as usize;
            let piece = snap.read_piece(name, bytes.len() as u64, want)?;
            if piece.len() != want {
                return Err(Error::corrupt(
                    what,
                    format!("short read at byte {} of {len}", bytes.len()),
                ));
            }
            bytes.extend_from_slice(&piece);
        }
        let p = decode_snapshot(&bytes, &what)?;
        if p.last_applied != meta.last_log_id || p.membership != meta.last_membership {
            return Err(Error::corrupt(
                what,
                format!(
                    "its contents were applied up to {:?}, its metadata says {:?}",
                    p.last_applied, meta.last_log_id
                ),
            ));
        }
        // The file first: a crash before the store is replaced leaves the store behind its
        // snapshot, which open repairs (M11).
        self.publish(&bytes, meta.clone())?;
        self.store.replace(&p)?;
        self.store.flush()?;
        self.state = p.state;
        self.last_applied = p.last_applied;
        self.membership = p.membership;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStateMachine {
    type SnapshotData = SnapshotFiles;

    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot, io::Error> {
        self.lock().build_snapshot().map_err(to_io)
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotData = SnapshotFiles;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> std::result::Result<(), io::Error>
    where
        S: Stream<Item = std::result::Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = self
                .lock()
                .apply_one(entry.log_id, &entry.payload)
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
    ) -> std::result::Result<(), io::Error> {
        self.lock().install(meta, &snapshot).map_err(to_io)
    }

    async fn get_current_snapshot(&mut self) -> std::result::Result<Option<Snapshot>, io::Error> {
        Ok(self.lock().current_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::vote::RaftLeaderId;
    use strata_shard::StdFs;
    use strata_shard::sim_fs::SimFs;

    use super::*;
    use crate::meta::{MetaCommand, MetaResponse};
    use crate::types::{Membership, NodeInfo};

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(LeaderId::new(term, 1), index)
    }

    fn lease_cmd(holder: u64, now_ms: i64) -> Payload {
        EntryPayload::Normal(Command::Meta(MetaCommand::AcquireLease {
            slot: "slot-1".into(),
            holder,
            now_ms,
            ttl_ms: 1_000,
        }))
    }

    fn node_cmd(id: u64, zone: &str) -> Payload {
        EntryPayload::Normal(Command::Meta(MetaCommand::SetNode {
            id,
            info: NodeInfo {
                addr: format!("n{id}:7000"),
                zone: zone.into(),
            },
        }))
    }

    fn membership() -> Payload {
        let nodes: BTreeMap<u64, NodeInfo> = [(1, NodeInfo::default())].into();
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes).unwrap())
    }

    /// Applies `payloads` at indexes `first..`, returning the responses.
    fn apply(sm: &MetaStateMachine, first: u64, payloads: Vec<Payload>) -> Vec<Response> {
        let mut inner = sm.lock();
        payloads
            .iter()
            .zip(first..)
            .map(|(p, index)| inner.apply_one(log_id(1, index), p).unwrap())
            .collect()
    }

    fn applied(sm: &MetaStateMachine) -> (Option<LogId>, StoredMembership, MetaState) {
        let inner = sm.lock();
        (
            inner.last_applied,
            inner.membership.clone(),
            inner.state.clone(),
        )
    }

    fn snap_files(fs: &dyn Fs, dir: &Path) -> Vec<String> {
        let mut names = fs.list(dir).unwrap();
        names.retain(|n| n.ends_with(SNAP_SUFFIX));
        names
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sled_store_reopens_with_what_was_applied_without_any_snapshot() {
        let tmp = TempDir::new("meta-sled-reopen");
        let (group, sled) = (tmp.0.join("group-0"), tmp.0.join("sled"));
        let open = || MetaStateMachine::open_sled(Arc::new(StdFs), &group, &sled).unwrap();
        let sm = open();
        let responses = apply(
            &sm,
            1,
            vec![membership(), node_cmd(1, "a"), lease_cmd(1, 10)],
        );
        assert!(matches!(
            responses[2],
            Response::Meta(MetaResponse::Lease(_))
        ));
        let before = applied(&sm);
        assert_eq!(before.0, Some(log_id(1, 3)));
        drop(sm);
        let sm = open();
        assert_eq!(applied(&sm), before);
        // The reopened state goes on from where it was: the lease is still held by node 1.
        let r = apply(&sm, 4, vec![lease_cmd(2, 20)]);
        assert!(matches!(&r[0], Response::Meta(MetaResponse::Held(l)) if l.holder == 1));
    }

    #[test]
    fn memory_store_rebuilds_from_the_latest_snapshot_even_after_a_crash() {
        let sim = Arc::new(SimFs::new());
        let fs: Arc<dyn Fs> = sim.clone();
        let dir = PathBuf::from("/node/group-0");
        let sm = MetaStateMachine::open_in_memory(Arc::clone(&fs), &dir).unwrap();
        apply(&sm, 1, vec![membership(), node_cmd(1, "a")]);
        let snap = sm.lock().build_snapshot().unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));
        let at_snapshot = applied(&sm);
        apply(&sm, 3, vec![node_cmd(2, "b")]);
        drop((sm, snap));
        sim.crash();
        // Only the snapshot survives; openraft would re-apply entry 3 from the log.
        let sm = MetaStateMachine::open_in_memory(Arc::clone(&fs), &dir).unwrap();
        assert_eq!(applied(&sm), at_snapshot);
        assert!(sm.read(|s| s.node(1).is_some() && s.node(2).is_none()));
        // Its current snapshot is the one on disk.
        let cur = sm.lock().current_snapshot().unwrap();
        assert_eq!(cur.meta.last_log_id, Some(log_id(1, 2)));
        // A fresh in-memory machine starts empty.
        let empty = MetaStateMachine::open_in_memory(fs, Path::new("/other")).unwrap();
        assert_eq!(
            applied(&empty),
            (None, StoredMembership::default(), MetaState::default())
        );
    }

    #[test]
    fn open_takes_the_snapshot_when_the_store_is_behind_it_and_fills_the_store() {
        let tmp = TempDir::new("meta-sled-behind");
        let group = tmp.0.join("group-0");
        let fs: Arc<dyn Fs> = Arc::new(StdFs);
        let sm =
            MetaStateMachine::open_sled(Arc::clone(&fs), &group, &tmp.0.join("sled-a")).unwrap();
        apply(
            &sm,
            1,
            vec![membership(), node_cmd(1, "a"), lease_cmd(1, 5)],
        );
        sm.lock().build_snapshot().unwrap();
        let expected = applied(&sm);
        drop(sm);
        // As after a crash between writing an installed snapshot and replacing the store: a
        // store (here a new one) behind the snapshot file.
        let sm =
            MetaStateMachine::open_sled(Arc::clone(&fs), &group, &tmp.0.join("sled-b")).unwrap();
        assert_eq!(applied(&sm), expected);
        drop(sm);
        let mut store = SledStore::open(&tmp.0.join("sled-b")).unwrap();
        let p = store.load().unwrap().unwrap();
        assert_eq!((p.last_applied, p.membership, p.state), expected);
    }

    #[test]
    fn a_superseded_snapshot_file_is_deleted_once_nothing_sends_it() {
        let fs: Arc<dyn Fs> = Arc::new(SimFs::new());
        let dir = PathBuf::from("/g0");
        let sm = MetaStateMachine::open_in_memory(Arc::clone(&fs), &dir).unwrap();
        apply(&sm, 1, vec![node_cmd(1, "a")]);
        let first = sm.lock().build_snapshot().unwrap();
        // Nothing applied since: the same snapshot again, not a new file.
        let again = sm.lock().build_snapshot().unwrap();
        assert_eq!(again.snapshot.id(), first.snapshot.id());
        drop(again);
        apply(&sm, 2, vec![node_cmd(2, "b")]);
        let second = sm.lock().build_snapshot().unwrap();
        assert_ne!(second.snapshot.id(), first.snapshot.id());
        // The first is still being "sent": its file stays readable (P1).
        assert_eq!(snap_files(&*fs, &dir).len(), 2);
        let (name, len) = first.snapshot.files()[0].clone();
        assert_eq!(
            first
                .snapshot
                .read_piece(&name, 0, len as usize)
                .unwrap()
                .len() as u64,
            len
        );
        drop(first);
        assert_eq!(
            snap_files(&*fs, &dir),
            [second.snapshot.files()[0].0.clone()]
        );
        // A superseded file left by a crash is deleted on open.
        let stale = dir.join(snap_name(0));
        write_file_atomic(&*fs, &stale, b"old").unwrap();
        drop(sm);
        MetaStateMachine::open_in_memory(Arc::clone(&fs), &dir).unwrap();
        assert!(!fs.exists(&stale));
    }

    #[test]
    fn install_checks_the_received_file_and_replaces_the_state() {
        let leader_fs: Arc<dyn Fs> = Arc::new(SimFs::new());
        let leader =
            MetaStateMachine::open_in_memory(Arc::clone(&leader_fs), Path::new("/l")).unwrap();
        apply(
            &leader,
            1,
            vec![membership(), node_cmd(1, "a"), lease_cmd(3, 7)],
        );
        let snap = leader.lock().build_snapshot().unwrap();

        let tmp = TempDir::new("meta-install");
        let follower =
            MetaStateMachine::open_sled(Arc::new(StdFs), &tmp.0.join("g"), &tmp.0.join("sled"))
                .unwrap();
        apply(&follower, 1, vec![node_cmd(9, "z")]);
        let follower_before = applied(&follower);

        // Metadata that does not match the contents is refused, and nothing changes.
        let mut wrong = snap.meta.clone();
        wrong.last_log_id = Some(log_id(1, 2));
        let err = follower.lock().install(&wrong, &snap.snapshot).unwrap_err();
        assert!(err.to_string().contains("metadata says"), "{err}");
        // So is a damaged file.
        let (name, len) = snap.snapshot.files()[0].clone();
        let mut bytes = snap.snapshot.read_piece(&name, 0, len as usize).unwrap();
        bytes[20] ^= 1;
        let staging = PathBuf::from("/staging");
        leader_fs.create_dir_all(&staging).unwrap();
        write_file_atomic(&*leader_fs, &staging.join(&name), &bytes).unwrap();
        let damaged = SnapshotFiles::received(
            Arc::clone(&leader_fs),
            staging,
            snap.snapshot.id(),
            vec![(name, len)],
        );
        let err = follower.lock().install(&snap.meta, &damaged).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(applied(&follower), follower_before);

        follower.lock().install(&snap.meta, &snap.snapshot).unwrap();
        assert_eq!(applied(&follower), applied(&leader));
        assert!(follower.read(|s| s.node(9).is_none() && s.lease("slot-1").is_some()));
        let cur = follower.lock().current_snapshot().unwrap();
        assert_eq!(cur.meta, snap.meta);
        // The replaced store survives a restart.
        drop((cur, follower));
        let reopened =
            MetaStateMachine::open_sled(Arc::new(StdFs), &tmp.0.join("g"), &tmp.0.join("sled"))
                .unwrap();
        assert_eq!(applied(&reopened), applied(&leader));
    }

    #[test]
    fn shard_commands_are_answered_with_a_refusal_and_change_nothing_but_the_position() {
        let sm = MetaStateMachine::open_in_memory(Arc::new(SimFs::new()), Path::new("/g")).unwrap();
        apply(&sm, 1, vec![node_cmd(1, "a")]);
        let state = sm.read(MetaState::clone);
        let r = apply(&sm, 2, vec![EntryPayload::Normal(Command::Seal)]);
        assert_eq!(
            r,
            [Response::Refused(
                "the meta group cannot apply the shard command seal".into()
            )]
        );
        assert_eq!(applied(&sm).0, Some(log_id(1, 2)));
        assert_eq!(sm.read(MetaState::clone), state);
    }
}
