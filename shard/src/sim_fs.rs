//! `SimFs`: an in-memory [`Fs`] that remembers what was synced, so a simulated crash loses exactly
//! what the durability contract F1–F3 (see [`crate::fs`]) allows it to lose.
//!
//! Used by tests and by the deterministic simulator. It is checked against [`crate::fs::StdFs`] by
//! the conformance suite in `tests/fs_conformance.rs`.
//!
//! ## Model
//! The disk is a set of inodes, numbered from the root directory (inode 0, which always exists):
//! - a **file** has `data` (what reads see) and `synced` (what survives a crash);
//! - a **directory** has `entries` (visible names → inodes) and `durable` (the names a crash
//!   restores).
//!
//! Who changes what:
//! - `FsFile::write_all` and `set_len` change `data` only; `FsFile::sync` copies `data` → `synced`
//!   of that one file (F1).
//! - `open_append` (creating), `create_dir_all`, `rename` and `remove_file` change `entries` only;
//!   `Fs::sync_dir(dir)` copies `entries` → `durable` of that one directory (F2). A rename moves one
//!   entry, so every name always points to a whole file, old or new (F3).
//! - **Directory creation is not special**: a new directory is a new entry in its parent, durable
//!   only after `sync_dir(parent)`, exactly as the `Fs::create_dir_all` doc promises. Code that
//!   creates a data directory and expects it after a crash must sync every new directory's parent
//!   (real file systems do not promise more, and this strictness is what finds the missing fsync).
//! - [`SimFs::crash`] (power loss): every directory's `entries` := `durable`, every file's `data`
//!   := `synced`, inodes no longer reachable from the root disappear, and every open [`FsFile`]
//!   handle goes stale (a generation counter): later operations on it fail with an io error.
//!
//! Handles refer to inodes, not names, as in POSIX: after a rename the handle writes to the renamed
//! file; after `remove_file` it writes to a file no name reaches (kept alive until the handle is
//! dropped or the machine crashes).
//!
//! ## Paths
//! Paths are normalized lexically: `.` is skipped, `..` drops the previous component, and relative
//! paths resolve against `/` (the simulated machine has no working directory), so `a/b`, `./a/b`
//! and `/a/b` name the same file. There are no symlinks or hard links, so lexical `..` is exact
//! except that `file/..` is accepted where POSIX says `ENOTDIR`. Names must be UTF-8.
//!
//! ## Failpoints and counters
//! - [`SimFs::fail_syncs`]: while on, every `FsFile::sync` and `Fs::sync_dir` fails with
//!   `io::ErrorKind::Other` ("failpoint: sync") and makes nothing durable.
//! - [`SimFs::syncs_count`]: successful file syncs so far (for group-commit tests).
//! - [`SimFs::unsynced_bytes`]: bytes of file contents a crash would lose or revert right now.
//!
//! ## Not modelled
//! Torn writes (a crash keeps exactly the synced bytes; real disks may keep part of an unsynced
//! append, so torn-tail tests must write the torn bytes explicitly), permissions, timestamps,
//! free space, and directory removal (the `Fs` trait has none).
//!
//! Everything is ordered (`BTreeMap`), so a simulation replays identically from its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::{Fs, FsFile};

type Ino = u64;

/// The root directory's inode; it exists from the start and survives every crash.
const ROOT: Ino = 0;

/// An in-memory file system with simulated crashes. Clones share one disk, so a test can keep a
/// handle to crash the disk an engine is using.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

struct State {
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    /// Bumped by every crash; a handle opened in an older generation is stale.
    generation: u64,
    fail_syncs: bool,
    syncs: u64,
}

enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Default)]
struct FileNode {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// `data[..clean] == synced[..clean]`: only the bytes after it need copying on sync, which
    /// keeps syncing a growing log linear instead of quadratic.
    clean: usize,
    /// Open handles of the current generation; a file no name reaches lives while this is > 0.
    open_handles: u32,
}

#[derive(Default)]
struct DirNode {
    entries: BTreeMap<String, Ino>,
    durable: BTreeMap<String, Ino>,
}

impl Default for State {
    fn default() -> Self {
        State {
            nodes: BTreeMap::from([(ROOT, Node::Dir(DirNode::default()))]),
            next_ino: ROOT + 1,
            generation: 0,
            fail_syncs: false,
            syncs: 0,
        }
    }
}

fn error(kind: ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{what}: {}", path.display()))
}

fn failpoint_sync() -> io::Error {
    io::Error::other("failpoint: sync")
}

/// Normalizes a path into its names (see "Paths" in the module doc).
fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                names.pop();
            }
            Component::Normal(name) => match name.to_str() {
                Some(name) => names.push(name.to_owned()),
                None => return Err(error(ErrorKind::InvalidInput, "name is not UTF-8", path)),
            },
        }
    }
    Ok(names)
}

impl State {
    fn alloc(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn dir(&self, ino: Ino) -> Option<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Option<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(file)) => Some(file),
            _ => None,
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        self.dir(ino).is_some()
    }

    /// Follows visible entries from the root.
    fn lookup(&self, names: &[String], path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for name in names {
            let dir = self
                .dir(ino)
                .ok_or_else(|| error(ErrorKind::NotADirectory, "not a directory", path))?;
            ino = *dir
                .entries
                .get(name)
                .ok_or_else(|| error(ErrorKind::NotFound, "no such file or directory", path))?;
        }
        Ok(ino)
    }

    /// The directory holding the last name of `path`, and that name.
    fn parent_of(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut names = components(path)?;
        let name = names
            .pop()
            .ok_or_else(|| error(ErrorKind::InvalidInput, "path names no entry", path))?;
        let parent = self.lookup(&names, path)?;
        if !self.is_dir(parent) {
            return Err(error(ErrorKind::NotADirectory, "not a directory", path));
        }
        Ok((parent, name))
    }

    fn entry(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.dir(dir).and_then(|d| d.entries.get(name).copied())
    }

    fn file_node(&self, path: &Path) -> io::Result<&FileNode> {
        let ino = self.lookup(&components(path)?, path)?;
        match self.nodes.get(&ino) {
            Some(Node::File(file)) => Ok(file),
            _ => Err(error(ErrorKind::IsADirectory, "is a directory", path)),
        }
    }

    /// Drops every inode that neither a name (visible or durable) nor an open handle reaches.
    fn collect_garbage(&mut self) {
        let mut live = BTreeSet::new();
        let mut stack = vec![ROOT];
        for (&ino, node) in &self.nodes {
            if matches!(node, Node::File(f) if f.open_handles > 0) {
                stack.push(ino);
            }
        }
        while let Some(ino) = stack.pop() {
            if !live.insert(ino) {
                continue;
            }
            if let Some(dir) = self.dir(ino) {
                stack.extend(dir.entries.values().chain(dir.durable.values()));
            }
        }
        self.nodes.retain(|ino, _| live.contains(ino));
    }
}

impl SimFs {
    /// An empty disk holding only the root directory `/`.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the state consistent before it can panic, so a poisoned lock
        // (a test assertion failed while holding it elsewhere) is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulates power loss: only synced file contents and synced directory entries survive, and
    /// every open handle goes stale.
    pub fn crash(&self) {
        let mut st = self.lock();
        st.generation += 1;
        for node in st.nodes.values_mut() {
            match node {
                Node::File(file) => {
                    file.data.clone_from(&file.synced);
                    file.clean = file.data.len();
                    file.open_handles = 0;
                }
                Node::Dir(dir) => dir.entries.clone_from(&dir.durable),
            }
        }
        st.collect_garbage();
    }

    /// While `on`, every file sync and directory sync fails and makes nothing durable.
    pub fn fail_syncs(&self, on: bool) {
        self.lock().fail_syncs = on;
    }

    /// The number of successful `FsFile::sync` calls since the disk was created.
    pub fn syncs_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Bytes of file contents a crash would lose or revert now (written or cut, not yet synced).
    pub fn unsynced_bytes(&self) -> u64 {
        let st = self.lock();
        let mut total = 0;
        for node in st.nodes.values() {
            if let Node::File(file) = node {
                // A cut below the synced length is also lost by a crash (the bytes come back).
                let dirty = file.data.len().max(file.synced.len()) - file.clean;
                total += dirty as u64;
            }
        }
        total
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimFs")
            .field("inodes", &st.nodes.len())
            .field("generation", &st.generation)
            .field("fail_syncs", &st.fail_syncs)
            .field("syncs", &st.syncs)
            .finish()
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let names = components(dir)?;
        let mut st = self.lock();
        let mut cur = ROOT;
        for (i, name) in names.iter().enumerate() {
            cur = match st.entry(cur, name) {
                Some(ino) if st.is_dir(ino) => ino,
                Some(_) if i + 1 == names.len() => {
                    return Err(error(ErrorKind::AlreadyExists, "file exists", dir));
                }
                Some(_) => return Err(error(ErrorKind::NotADirectory, "not a directory", dir)),
                None => {
                    let ino = st.alloc(Node::Dir(DirNode::default()));
                    let parent = st.dir_mut(cur).expect("cur is a directory");
                    parent.entries.insert(name.clone(), ino);
                    ino
                }
            };
        }
        Ok(())
    }

    fn open_append(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.lock();
        let (parent, name) = st.parent_of(path)?;
        let ino = match st.entry(parent, &name) {
            Some(ino) => ino,
            None => {
                let ino = st.alloc(Node::File(FileNode::default()));
                let dir = st.dir_mut(parent).expect("parent_of returns a directory");
                dir.entries.insert(name, ino);
                ino
            }
        };
        let generation = st.generation;
        let file = st
            .file_mut(ino)
            .ok_or_else(|| error(ErrorKind::IsADirectory, "is a directory", path))?;
        if truncate {
            file.data.clear();
            file.clean = 0;
        }
        file.open_handles += 1;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            generation,
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lock().file_node(path)?.data.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let st = self.lock();
        let data = &st.file_node(path)?.data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(len) {
            Some(end) if end <= data.len() => Ok(data[start..end].to_vec()),
            _ => Err(error(
                ErrorKind::UnexpectedEof,
                "read past the end of",
                path,
            )),
        }
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.lock().file_node(path)?.data.len() as u64)
    }

    fn exists(&self, path: &Path) -> bool {
        components(path).is_ok_and(|names| self.lock().lookup(&names, path).is_ok())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        let ino = st.lookup(&components(dir)?, dir)?;
        let node = st
            .dir(ino)
            .ok_or_else(|| error(ErrorKind::NotADirectory, "not a directory", dir))?;
        // BTreeMap keys iterate in byte order, the same order as `sort` on the names.
        Ok(node.entries.keys().cloned().collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let (from_dir, from_name) = st.parent_of(from)?;
        let (to_dir, to_name) = st.parent_of(to)?;
        let src = st
            .entry(from_dir, &from_name)
            .ok_or_else(|| error(ErrorKind::NotFound, "no such file or directory", from))?;
        if (from_dir, from_name.as_str()) == (to_dir, to_name.as_str()) {
            return Ok(());
        }
        if let Some(target) = st.entry(to_dir, &to_name) {
            match (st.dir(src), st.dir(target)) {
                (None, Some(_)) => {
                    return Err(error(ErrorKind::IsADirectory, "is a directory", to));
                }
                (Some(_), None) => {
                    return Err(error(ErrorKind::NotADirectory, "not a directory", to));
                }
                (Some(_), Some(t)) if !t.entries.is_empty() => {
                    return Err(error(
                        ErrorKind::DirectoryNotEmpty,
                        "directory not empty",
                        to,
                    ));
                }
                _ => {}
            }
        }
        if st.is_dir(src) && components(to)?.starts_with(&components(from)?) {
            return Err(error(
                ErrorKind::InvalidInput,
                "cannot move a directory into itself",
                to,
            ));
        }
        st.dir_mut(from_dir)
            .expect("parent_of returns a directory")
            .entries
            .remove(&from_name);
        // One insert replaces the target: the name never points to nothing or to a mix (F3).
        st.dir_mut(to_dir)
            .expect("parent_of returns a directory")
            .entries
            .insert(to_name, src);
        st.collect_garbage();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let (parent, name) = st.parent_of(path)?;
        let ino = st
            .entry(parent, &name)
            .ok_or_else(|| error(ErrorKind::NotFound, "no such file or directory", path))?;
        if st.is_dir(ino) {
            return Err(error(ErrorKind::IsADirectory, "is a directory", path));
        }
        st.dir_mut(parent)
            .expect("parent_of returns a directory")
            .entries
            .remove(&name);
        st.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let ino = st.lookup(&components(dir)?, dir)?;
        if !st.is_dir(ino) {
            return Err(error(ErrorKind::NotADirectory, "not a directory", dir));
        }
        if st.fail_syncs {
            return Err(failpoint_sync());
        }
        let node = st.dir_mut(ino).expect("checked above");
        node.durable.clone_from(&node.entries);
        Ok(())
    }
}

/// A handle on one file inode, valid until the next crash.
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
    /// For error messages only: the file may have been renamed since.
    path: PathBuf,
}

impl SimFile {
    /// Runs `op` on this handle's file, or fails if a crash made the handle stale.
    fn with_file<R>(&self, op: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.generation != self.generation {
            return Err(error(
                ErrorKind::Other,
                "stale file handle (the simulated machine crashed)",
                &self.path,
            ));
        }
        op(&mut st)
    }
}

/// The handle's inode, which a live handle keeps alive (see `collect_garbage`).
fn handle_file(st: &mut State, ino: Ino) -> &mut FileNode {
    st.file_mut(ino).expect("an open handle keeps its file")
}

impl FsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with_file(|st| {
            handle_file(st, self.ino).data.extend_from_slice(buf);
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with_file(|st| {
            if st.fail_syncs {
                return Err(failpoint_sync());
            }
            let file = handle_file(st, self.ino);
            file.synced.truncate(file.clean);
            file.synced.extend_from_slice(&file.data[file.clean..]);
            file.clean = file.data.len();
            st.syncs += 1;
            Ok(())
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| error(ErrorKind::InvalidInput, "length too large", &self.path))?;
        self.with_file(|st| {
            let file = handle_file(st, self.ino);
            // Like ftruncate: cut, or extend with zeros.
            file.data.resize(len, 0);
            file.clean = file.clean.min(len);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_file(|st| Ok(handle_file(st, self.ino).data.len() as u64))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // A stale handle was already forgotten by the crash.
        if st.generation != self.generation {
            return;
        }
        // No panic here: a drop may run while a failed test unwinds.
        let Some(file) = st.file_mut(self.ino) else {
            return;
        };
        file.open_handles = file.open_handles.saturating_sub(1);
        if file.open_handles == 0 {
            st.collect_garbage();
        }
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("generation", &self.generation)
            .finish()
    }
}
