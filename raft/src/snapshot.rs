//! [`SnapshotFiles`]: what every group's snapshot is, for shards and for the meta group alike —
//! a set of immutable files in one directory, read in bounded pieces. One type for all groups
//! lets one network stream every snapshot the same way.
//!
//! ## Invariants
//! - P1. The files do not change while a `SnapshotFiles` that names them is alive: the sender
//!   holds a pin (for shards, `strata_shard::engine::SnapshotPin`, which defers deletions) and
//!   the receiver owns its staging directory.
//! - P2. `read_piece` reads only files the snapshot names, so a peer cannot make a node read
//!   any other file.
//! - P3. Memory is bounded by the piece size, never by the snapshot's size: nothing reads a
//!   whole file.

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_shard::{Error, Fs};

/// Largest piece read or sent at once (the network sends pieces of at most this size).
pub const PIECE_BYTES_MAX: usize = strata_shard::engine::SNAPSHOT_PIECE_BYTES_MAX;

/// A snapshot as files. `id` and the file order are the state machine's business (for a shard:
/// the engine generation, the blocks, then the checkpoint last); the network copies them as
/// they are.
#[derive(Clone)]
pub struct SnapshotFiles {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    id: u64,
    /// (file name, length in bytes), in sending order.
    files: Vec<(String, u64)>,
    /// Keeps the files from being deleted while the snapshot is read (P1).
    _pin: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for SnapshotFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotFiles")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .field("files", &self.files)
            .finish()
    }
}

impl SnapshotFiles {
    /// Files in `dir` on the sending side, kept alive by `pin`.
    pub fn pinned(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        id: u64,
        files: Vec<(String, u64)>,
        pin: impl Any + Send + Sync,
    ) -> Self {
        SnapshotFiles {
            fs,
            dir,
            id,
            files,
            _pin: Some(Arc::new(pin)),
        }
    }

    /// Files the network has received into `dir` (a staging directory the receiver owns).
    pub fn received(fs: Arc<dyn Fs>, dir: PathBuf, id: u64, files: Vec<(String, u64)>) -> Self {
        SnapshotFiles {
            fs,
            dir,
            id,
            files,
            _pin: None,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn files(&self) -> &[(String, u64)] {
        &self.files
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, len)| len).sum()
    }

    /// `len` bytes at `offset` of file `name` (P2, P3: `len` is capped by the caller).
    pub fn read_piece(&self, name: &str, offset: u64, len: usize) -> strata_shard::Result<Vec<u8>> {
        if !self.files.iter().any(|(n, _)| n == name) {
            return Err(Error::InvalidRequest {
                reason: format!("{name:?} is not a file of snapshot {}", self.id),
            });
        }
        let path = self.dir.join(name);
        self.fs
            .read_at(&path, offset, len)
            .map_err(|e| Error::io("read snapshot file", &path, e))
    }
}
