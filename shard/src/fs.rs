//! The `Fs` seam: every file Strata writes goes through this trait (DESIGN.md, determinism seams).
//!
//! Two implementations:
//! - [`StdFs`], `std::fs` for production;
//! - [`SimFs`](crate::sim_fs::SimFs), an in-memory file system that keeps only what was synced,
//!   so a simulated crash loses exactly the writes an fsync did not cover.
//!
//! Durability contract (both implementations, checked by the conformance suite in
//! `tests/fs_conformance.rs`):
//! - F1. Bytes written to a file are durable only after [`FsFile::sync`] on that file.
//! - F2. A directory entry (a created, renamed or removed name) is durable only after
//!   [`Fs::sync_dir`] on the directory that holds it.
//! - F3. [`Fs::rename`] replaces the target atomically: after a crash the name points to either
//!   the old or the new file, never to a mix.
//!
//! So publishing a file is always: write → `sync` file → `rename` into place → `sync_dir` →
//! only then reclaim what it replaces.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A file system. Paths are absolute or relative to the process' working directory.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates a directory and its missing parents (durable after `sync_dir` of each parent).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for writing at its end, creating it if missing; `truncate` empties it first.
    fn open_append(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn FsFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; fails with `UnexpectedEof` if the file is shorter.
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The length of a file in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Whether a file or directory exists under this name.
    fn exists(&self, path: &Path) -> bool;
    /// The names of the entries of a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists (F3).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable (F2).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for appending.
pub trait FsFile: Send + fmt::Debug {
    /// Appends all of `buf` at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (F1). A failure is fatal for the caller: it must
    /// not retry (the kernel may have dropped the dirty pages), it must stop.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (used to drop a torn tail); later writes append after it.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The current length in bytes, synced or not.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Writes `data` to `path` durably and atomically: a temporary file is written and synced, renamed
/// over `path`, and the directory synced (F1–F3). Returns only when the new content is durable.
pub fn write_file_atomic(fs: &dyn Fs, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = fs.open_append(&tmp, true)?;
        file.write_all(data)?;
        file.sync()?;
    }
    fs.rename(&tmp, path)?;
    fs.sync_dir(dir)
}

/// Creates `dir` and its missing parents durably: after the directories exist, every parent up to
/// the root is synced so the new entries survive a crash (F2).
pub fn create_dir_all_durable(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    fs.create_dir_all(dir)?;
    let mut child = dir;
    while let Some(parent) = child.parent() {
        if parent.as_os_str().is_empty() {
            break;
        }
        fs.sync_dir(parent)?;
        child = parent;
    }
    Ok(())
}

/// The production file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile {
    file: std::fs::File,
}

impl FsFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        // Files are opened without O_APPEND so that this seek decides where writing resumes.
        self.file.seek(SeekFrom::Start(len)).map(|_| ())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn open_append(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn FsFile>> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(truncate)
            .open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Box::new(StdFile { file }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0; len];
        file.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}
