//! Conformance of the two `Fs` implementations (CONVENTIONS.md 6), then `SimFs` crash semantics.
//!
//! `suite` holds the checks every `Fs` must pass; it runs once on `StdFs` in a fresh temporary
//! directory and once on `SimFs` (absolute and relative roots). The `sim_*` tests cover what only
//! the simulated disk can show: what a crash keeps (F1–F3 of `strata_shard::fs`), failpoints, and
//! a model-based property test of random operation sequences with crashes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_shard::fs::{Fs, FsFile, StdFs, write_file_atomic};
use strata_shard::sim_fs::SimFs;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Writes `data` as the whole content of `path`, without syncing.
fn put(fs: &dyn Fs, path: &Path, data: &[u8]) {
    let mut file = fs.open_append(path, true).unwrap();
    file.write_all(data).unwrap();
}

/// Writes `data` as the whole content of `path` and syncs the file (not its directory).
fn put_synced(fs: &dyn Fs, path: &Path, data: &[u8]) {
    let mut file = fs.open_append(path, true).unwrap();
    file.write_all(data).unwrap();
    file.sync().unwrap();
}

fn err_kind<T: Debug>(result: io::Result<T>) -> ErrorKind {
    result.expect_err("expected an io error").kind()
}

/// A fresh directory for one check of the suite.
fn subdir(fs: &dyn Fs, root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    fs.create_dir_all(&dir).unwrap();
    assert!(
        fs.list(&dir).unwrap().is_empty(),
        "{dir:?} must start empty"
    );
    dir
}

// ---------------------------------------------------------------------------------------------
// The suite every `Fs` must pass

fn suite(fs: &dyn Fs, root: &Path) {
    fs.create_dir_all(root).unwrap();
    create_dir_all_is_idempotent(fs, root);
    write_then_read(fs, root);
    read_at_bounds(fs, root);
    append_after_reopen_and_truncate(fs, root);
    set_len_then_append(fs, root);
    rename_replaces_target(fs, root);
    rename_directory(fs, root);
    handle_follows_rename(fs, root);
    list_is_sorted(fs, root);
    remove_file(fs, root);
    error_kinds(fs, root);
    write_file_atomic_publishes(fs, root);
    syncs_succeed(fs, root);
}

fn create_dir_all_is_idempotent(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "mkdir");
    let deep = dir.join("x/y/z");
    fs.create_dir_all(&deep).unwrap();
    fs.create_dir_all(&deep).unwrap();
    assert!(fs.exists(&deep));
    assert_eq!(fs.list(&dir).unwrap(), ["x"]);
    assert_eq!(fs.list(&dir.join("x")).unwrap(), ["y"]);
    assert!(fs.list(&deep).unwrap().is_empty());
}

fn write_then_read(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "write");
    let path = dir.join("f");
    assert!(!fs.exists(&path));
    let mut file = fs.open_append(&path, false).unwrap();
    assert!(fs.exists(&path), "open_append creates the file");
    assert!(file.is_empty().unwrap());
    file.write_all(b"hello").unwrap();
    assert_eq!(file.len().unwrap(), 5);
    file.write_all(b" world").unwrap();
    assert_eq!(file.len().unwrap(), 11);
    assert!(!file.is_empty().unwrap());
    // Reads see written bytes before any sync.
    assert_eq!(fs.read(&path).unwrap(), b"hello world");
    assert_eq!(fs.file_len(&path).unwrap(), 11);
    file.write_all(b"").unwrap();
    assert_eq!(fs.file_len(&path).unwrap(), 11);
}

fn read_at_bounds(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "read_at");
    let path = dir.join("f");
    put(fs, &path, b"0123456789");
    assert_eq!(fs.read_at(&path, 0, 10).unwrap(), b"0123456789");
    assert_eq!(fs.read_at(&path, 3, 4).unwrap(), b"3456");
    assert_eq!(fs.read_at(&path, 9, 1).unwrap(), b"9");
    assert_eq!(fs.read_at(&path, 10, 0).unwrap(), b"");
    assert_eq!(
        fs.read_at(&path, 7, 4).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(
        fs.read_at(&path, 0, 11).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(
        fs.read_at(&path, 100, 1).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    // Not checked: an offset above i64::MAX, where StdFs's seek fails with InvalidInput.
}

fn append_after_reopen_and_truncate(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "reopen");
    let path = dir.join("f");
    put(fs, &path, b"abc");
    {
        let mut file = fs.open_append(&path, false).unwrap();
        assert_eq!(file.len().unwrap(), 3, "reopen keeps the content");
        file.write_all(b"def").unwrap();
    }
    assert_eq!(fs.read(&path).unwrap(), b"abcdef");
    {
        let mut file = fs.open_append(&path, true).unwrap();
        assert!(file.is_empty().unwrap(), "truncate empties the file");
        file.write_all(b"X").unwrap();
    }
    assert_eq!(fs.read(&path).unwrap(), b"X");
}

fn set_len_then_append(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "set_len");
    let path = dir.join("f");
    let mut file = fs.open_append(&path, false).unwrap();
    file.write_all(b"abcdef").unwrap();
    file.set_len(3).unwrap();
    assert_eq!(file.len().unwrap(), 3);
    file.write_all(b"XY").unwrap();
    assert_eq!(
        fs.read(&path).unwrap(),
        b"abcXY",
        "writes resume at the cut"
    );
    // Growing pads with zeros, and writing resumes after the padding.
    file.set_len(7).unwrap();
    file.write_all(b"!").unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"abcXY\0\0!");
    file.set_len(0).unwrap();
    assert!(file.is_empty().unwrap());
    assert_eq!(fs.read(&path).unwrap(), b"");
}

fn rename_replaces_target(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "rename");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    put(fs, &a, b"new");
    put(fs, &b, b"old content, longer");
    fs.rename(&a, &b).unwrap();
    assert!(!fs.exists(&a));
    assert_eq!(fs.read(&b).unwrap(), b"new");
    assert_eq!(fs.list(&dir).unwrap(), ["b"]);
    // Onto a fresh name, and across directories.
    fs.rename(&b, &c).unwrap();
    assert_eq!(fs.list(&dir).unwrap(), ["c"]);
    let other = dir.join("sub");
    fs.create_dir_all(&other).unwrap();
    fs.rename(&c, &other.join("d")).unwrap();
    assert_eq!(fs.read(&other.join("d")).unwrap(), b"new");
    assert_eq!(fs.list(&dir).unwrap(), ["sub"]);
    // Renaming a name onto itself changes nothing.
    fs.rename(&other.join("d"), &other.join("d")).unwrap();
    assert_eq!(fs.read(&other.join("d")).unwrap(), b"new");
    assert_eq!(err_kind(fs.rename(&a, &c)), ErrorKind::NotFound);
    assert_eq!(
        err_kind(fs.rename(&other.join("d"), &dir.join("nodir/d"))),
        ErrorKind::NotFound
    );
    assert!(
        fs.exists(&other.join("d")),
        "a failed rename leaves the source"
    );
}

fn rename_directory(fs: &dyn Fs, root: &Path) {
    // Blocks are built under a temporary directory name and renamed into place.
    let dir = subdir(fs, root, "rename_dir");
    let (tmp, block) = (dir.join("block.tmp"), dir.join("block"));
    fs.create_dir_all(&tmp.join("chunks")).unwrap();
    put(fs, &tmp.join("chunks/000001"), b"chunk");
    fs.rename(&tmp, &block).unwrap();
    assert_eq!(fs.list(&dir).unwrap(), ["block"]);
    assert_eq!(fs.read(&block.join("chunks/000001")).unwrap(), b"chunk");
    assert!(!fs.exists(&tmp));
    assert!(fs.rename(&block, &block.join("chunks/inside")).is_err());
    assert!(
        fs.exists(&block.join("chunks/000001")),
        "a failed rename moves nothing"
    );
}

fn handle_follows_rename(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "handle");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let mut file = fs.open_append(&a, false).unwrap();
    file.write_all(b"1").unwrap();
    fs.rename(&a, &b).unwrap();
    // Handles name the file, not the path (POSIX).
    file.write_all(b"2").unwrap();
    file.sync().unwrap();
    assert_eq!(fs.read(&b).unwrap(), b"12");
    assert!(!fs.exists(&a));
    // A removed file still takes writes through an open handle; no name sees them.
    fs.remove_file(&b).unwrap();
    file.write_all(b"3").unwrap();
    assert_eq!(file.len().unwrap(), 3);
    drop(file);
    assert!(fs.list(&dir).unwrap().is_empty());
}

fn list_is_sorted(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "list");
    for name in ["b", "a.tmp", "C", "a", "10", "9"] {
        put(fs, &dir.join(name), name.as_bytes());
    }
    fs.create_dir_all(&dir.join("m")).unwrap();
    assert_eq!(
        fs.list(&dir).unwrap(),
        ["10", "9", "C", "a", "a.tmp", "b", "m"]
    );
    assert_eq!(fs.list(&dir.join("m")).unwrap(), Vec::<String>::new());
}

fn remove_file(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "remove");
    let path = dir.join("f");
    put(fs, &path, b"x");
    put(fs, &dir.join("g"), b"y");
    fs.remove_file(&path).unwrap();
    assert!(!fs.exists(&path));
    assert_eq!(err_kind(fs.read(&path)), ErrorKind::NotFound);
    assert_eq!(err_kind(fs.remove_file(&path)), ErrorKind::NotFound);
    assert_eq!(fs.list(&dir).unwrap(), ["g"]);
    // The name can be used again, for a new empty file.
    let file = fs.open_append(&path, false).unwrap();
    assert!(file.is_empty().unwrap());
}

fn error_kinds(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "errors");
    let missing = dir.join("missing");
    assert!(!fs.exists(&missing));
    assert_eq!(err_kind(fs.read(&missing)), ErrorKind::NotFound);
    assert_eq!(err_kind(fs.read_at(&missing, 0, 0)), ErrorKind::NotFound);
    assert_eq!(err_kind(fs.file_len(&missing)), ErrorKind::NotFound);
    assert_eq!(err_kind(fs.list(&missing)), ErrorKind::NotFound);
    assert_eq!(err_kind(fs.remove_file(&missing)), ErrorKind::NotFound);
    assert_eq!(
        err_kind(fs.rename(&missing, &dir.join("x"))),
        ErrorKind::NotFound
    );
    assert_eq!(err_kind(fs.sync_dir(&missing)), ErrorKind::NotFound);
    assert_eq!(
        err_kind(fs.open_append(&missing.join("f"), false)),
        ErrorKind::NotFound
    );
    assert!(!fs.exists(&missing), "failed operations create nothing");
    // A file used as a directory.
    let file = dir.join("file");
    put(fs, &file, b"x");
    assert_eq!(
        err_kind(fs.open_append(&file.join("f"), false)),
        ErrorKind::NotADirectory
    );
    assert!(!fs.exists(&file.join("f")));
    assert_eq!(fs.read(&file).unwrap(), b"x");
}

fn write_file_atomic_publishes(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "atomic");
    let path = dir.join("manifest");
    write_file_atomic(fs, &path, b"version 1").unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"version 1");
    write_file_atomic(fs, &path, b"v2").unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"v2");
    assert_eq!(
        fs.list(&dir).unwrap(),
        ["manifest"],
        "no temporary file is left"
    );
    assert_eq!(
        err_kind(write_file_atomic(fs, &dir.join("nodir/manifest"), b"x")),
        ErrorKind::NotFound
    );
}

fn syncs_succeed(fs: &dyn Fs, root: &Path) {
    let dir = subdir(fs, root, "sync");
    let mut file = fs.open_append(&dir.join("f"), false).unwrap();
    file.sync().unwrap();
    file.write_all(b"abc").unwrap();
    file.sync().unwrap();
    file.sync().unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.sync_dir(root).unwrap();
    assert_eq!(fs.read(&dir.join("f")).unwrap(), b"abc");
}

/// A directory under the system temp dir, unique per test and process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "strata-fs-conformance-{test}-{}",
            std::process::id()
        ));
        // Left over only if an earlier process with the same id was killed mid-test.
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn std_fs_conforms() {
    let tmp = TempDir::new("std_fs_conforms");
    suite(&StdFs, &tmp.0);
}

#[test]
fn sim_fs_conforms() {
    suite(&SimFs::new(), Path::new("/conformance"));
    suite(&SimFs::new(), Path::new("relative/root"));
}

// ---------------------------------------------------------------------------------------------
// SimFs only: paths, crashes, failpoints

/// Creates `dir` and makes it durable, syncing every directory from `/` down (F2 applies to
/// directory entries too).
fn durable_dir(fs: &SimFs, dir: &str) -> PathBuf {
    fs.create_dir_all(Path::new(dir)).unwrap();
    let mut cur = PathBuf::from("/");
    fs.sync_dir(&cur).unwrap();
    for part in Path::new(dir).components().skip(1) {
        cur.push(part);
        fs.sync_dir(&cur).unwrap();
    }
    PathBuf::from(dir)
}

#[test]
fn sim_paths_are_normalized() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("a")).unwrap();
    put(&fs, Path::new("a/b"), b"1");
    for same in ["a/b", "./a/b", "/a/b", "a/./c/../b", "/../a//b", "a/b/"] {
        assert_eq!(fs.read(Path::new(same)).unwrap(), b"1", "{same}");
    }
    assert_eq!(fs.list(Path::new("/")).unwrap(), ["a"]);
    assert_eq!(fs.list(Path::new(".")).unwrap(), ["a"]);
    assert_eq!(fs.list(Path::new("")).unwrap(), ["a"]);
    assert_eq!(
        err_kind(fs.open_append(Path::new("/"), false)),
        ErrorKind::InvalidInput
    );
    assert_eq!(err_kind(fs.read(Path::new("/a"))), ErrorKind::IsADirectory);
    assert_eq!(
        err_kind(fs.open_append(Path::new("/a"), false)),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        err_kind(fs.remove_file(Path::new("/a"))),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        err_kind(fs.list(Path::new("/a/b"))),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        err_kind(fs.create_dir_all(Path::new("/a/b"))),
        ErrorKind::AlreadyExists
    );
}

#[test]
fn sim_unsynced_write_is_lost() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let path = dir.join("f");
    let mut file = fs.open_append(&path, false).unwrap();
    file.write_all(b"abc").unwrap();
    file.sync().unwrap();
    fs.sync_dir(&dir).unwrap();
    file.write_all(b"def").unwrap();
    assert_eq!(fs.unsynced_bytes(), 3);
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"abc");
    assert_eq!(fs.unsynced_bytes(), 0);
}

#[test]
fn sim_synced_write_is_kept() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d/e");
    put_synced(&fs, &dir.join("f"), b"kept");
    fs.sync_dir(&dir).unwrap();
    assert_eq!(fs.syncs_count(), 1);
    assert_eq!(fs.unsynced_bytes(), 0);
    fs.crash();
    assert_eq!(fs.read(&dir.join("f")).unwrap(), b"kept");
    // A second crash with nothing new changes nothing.
    fs.crash();
    assert_eq!(fs.read(&dir.join("f")).unwrap(), b"kept");
}

#[test]
fn sim_created_file_without_dir_sync_is_gone() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    put_synced(&fs, &dir.join("f"), b"data");
    fs.crash();
    assert!(!fs.exists(&dir.join("f")));
    assert!(fs.list(&dir).unwrap().is_empty());
}

#[test]
fn sim_new_directory_needs_its_parent_synced() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/x/y")).unwrap();
    put_synced(&fs, Path::new("/x/y/f"), b"data");
    fs.sync_dir(Path::new("/x/y")).unwrap();
    fs.sync_dir(Path::new("/x")).unwrap();
    // "/" was not synced: the entry "x" and everything under it is lost.
    fs.crash();
    assert!(!fs.exists(Path::new("/x")));
    assert!(fs.list(Path::new("/")).unwrap().is_empty());

    let dir = durable_dir(&fs, "/x/y");
    put_synced(&fs, &dir.join("f"), b"data");
    fs.sync_dir(&dir).unwrap();
    fs.crash();
    assert_eq!(fs.read(&dir.join("f")).unwrap(), b"data");
}

#[test]
fn sim_rename_without_dir_sync_keeps_old_name() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let (a, b) = (dir.join("a"), dir.join("b"));
    put_synced(&fs, &a, b"A");
    put_synced(&fs, &b, b"B");
    fs.sync_dir(&dir).unwrap();
    fs.rename(&a, &b).unwrap();
    assert_eq!(fs.list(&dir).unwrap(), ["b"]);
    fs.crash();
    assert_eq!(fs.read(&a).unwrap(), b"A");
    assert_eq!(
        fs.read(&b).unwrap(),
        b"B",
        "the replaced target comes back whole"
    );

    fs.rename(&a, &b).unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.crash();
    assert_eq!(fs.list(&dir).unwrap(), ["b"]);
    assert_eq!(fs.read(&b).unwrap(), b"A");
}

#[test]
fn sim_cross_directory_rename_needs_both_dirs_synced() {
    let fs = SimFs::new();
    let (d1, d2) = (durable_dir(&fs, "/d1"), durable_dir(&fs, "/d2"));
    put_synced(&fs, &d1.join("f"), b"F");
    fs.sync_dir(&d1).unwrap();
    fs.rename(&d1.join("f"), &d2.join("f")).unwrap();
    fs.sync_dir(&d2).unwrap();
    // Only the new entry is durable: after a crash both names exist, one file.
    fs.crash();
    assert_eq!(fs.read(&d1.join("f")).unwrap(), b"F");
    assert_eq!(fs.read(&d2.join("f")).unwrap(), b"F");
}

#[test]
fn sim_directory_rename_is_durable_after_parent_sync() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/blocks");
    fs.create_dir_all(&dir.join("b.tmp")).unwrap();
    fs.sync_dir(&dir).unwrap();
    put_synced(&fs, &dir.join("b.tmp/index"), b"idx");
    fs.sync_dir(&dir.join("b.tmp")).unwrap();
    fs.rename(&dir.join("b.tmp"), &dir.join("b")).unwrap();
    fs.crash();
    assert_eq!(fs.list(&dir).unwrap(), ["b.tmp"]);
    assert_eq!(fs.read(&dir.join("b.tmp/index")).unwrap(), b"idx");
    fs.rename(&dir.join("b.tmp"), &dir.join("b")).unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.crash();
    assert_eq!(fs.list(&dir).unwrap(), ["b"]);
    assert_eq!(fs.read(&dir.join("b/index")).unwrap(), b"idx");
}

#[test]
fn sim_remove_without_dir_sync_comes_back() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    put_synced(&fs, &dir.join("f"), b"F");
    fs.sync_dir(&dir).unwrap();
    fs.remove_file(&dir.join("f")).unwrap();
    fs.crash();
    assert_eq!(fs.read(&dir.join("f")).unwrap(), b"F");
    fs.remove_file(&dir.join("f")).unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.crash();
    assert!(!fs.exists(&dir.join("f")));
}

#[test]
fn sim_set_len_is_durable_only_after_sync() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let path = dir.join("f");
    let mut file = fs.open_append(&path, false).unwrap();
    fs.sync_dir(&dir).unwrap();
    file.write_all(b"abcdef").unwrap();
    file.sync().unwrap();
    file.set_len(2).unwrap();
    assert_eq!(
        fs.unsynced_bytes(),
        4,
        "a crash would bring back the 4 cut bytes"
    );
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"abcdef");

    let mut file = fs.open_append(&path, false).unwrap();
    file.set_len(2).unwrap();
    file.write_all(b"Z").unwrap();
    file.sync().unwrap();
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"abZ");
}

#[test]
fn sim_handles_are_stale_after_crash() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let path = dir.join("f");
    let mut file = fs.open_append(&path, false).unwrap();
    file.write_all(b"a").unwrap();
    file.sync().unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.crash();
    assert!(file.write_all(b"b").is_err());
    assert!(file.sync().is_err());
    assert!(file.set_len(0).is_err());
    assert!(file.len().is_err());
    assert_eq!(
        fs.read(&path).unwrap(),
        b"a",
        "a stale handle changes nothing"
    );
    drop(file);
    let mut file = fs.open_append(&path, false).unwrap();
    file.write_all(b"b").unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"ab");
}

#[test]
fn sim_clones_share_one_disk() {
    let fs = SimFs::new();
    let other = fs.clone();
    let dir = durable_dir(&fs, "/d");
    put_synced(&other, &dir.join("f"), b"x");
    assert_eq!(fs.read(&dir.join("f")).unwrap(), b"x");
    other.crash();
    assert!(
        !fs.exists(&dir.join("f")),
        "a crash through one clone hits the shared disk"
    );
}

#[test]
fn sim_write_file_atomic_survives_crash_and_is_never_a_mix() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let path = dir.join("manifest");
    let tmp = dir.join("manifest.tmp");
    write_file_atomic(&fs, &path, b"old old old").unwrap();
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"old old old");

    // Crash after each step of write_file_atomic (open+write, sync, rename, sync_dir): the name
    // holds the whole old content until the final directory sync, then the whole new one.
    for steps in 0..=4 {
        if steps >= 1 {
            put(&fs, &tmp, b"new");
        }
        if steps >= 2 {
            fs.open_append(&tmp, false).unwrap().sync().unwrap();
        }
        if steps >= 3 {
            fs.rename(&tmp, &path).unwrap();
        }
        if steps >= 4 {
            fs.sync_dir(&dir).unwrap();
        }
        fs.crash();
        let expected: &[u8] = if steps == 4 { b"new" } else { b"old old old" };
        assert_eq!(
            fs.read(&path).unwrap(),
            expected,
            "crash after {steps} steps"
        );
        if steps < 4 {
            assert!(!fs.exists(&tmp), "the unsynced temporary entry is gone");
        }
        write_file_atomic(&fs, &path, b"old old old").unwrap();
    }

    write_file_atomic(&fs, &path, b"new").unwrap();
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"new");
    assert_eq!(fs.list(&dir).unwrap(), ["manifest"]);
}

#[test]
fn sim_failpoint_makes_syncs_fail_and_nothing_durable() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let path = dir.join("f");
    put_synced(&fs, &path, b"old");
    fs.sync_dir(&dir).unwrap();
    let synced_before = fs.syncs_count();

    fs.fail_syncs(true);
    let mut file = fs.open_append(&path, true).unwrap();
    file.write_all(b"new").unwrap();
    let err = file.sync().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
    assert_eq!(err.to_string(), "failpoint: sync");
    assert_eq!(err_kind(fs.sync_dir(&dir)), ErrorKind::Other);
    put(&fs, &dir.join("g"), b"g");
    assert_eq!(err_kind(fs.sync_dir(&dir)), ErrorKind::Other);
    let atomic = write_file_atomic(&fs, &dir.join("h"), b"h");
    assert_eq!(err_kind(atomic), ErrorKind::Other);
    assert_eq!(
        fs.syncs_count(),
        synced_before,
        "failed syncs are not counted"
    );
    assert_eq!(
        fs.read(&path).unwrap(),
        b"new",
        "reads still see the unsynced bytes"
    );
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"old");
    assert_eq!(fs.list(&dir).unwrap(), ["f"]);

    fs.fail_syncs(false);
    put_synced(&fs, &path, b"new");
    assert_eq!(fs.syncs_count(), synced_before + 1);
    fs.crash();
    assert_eq!(fs.read(&path).unwrap(), b"new");
}

#[test]
fn sim_removed_files_are_reclaimed() {
    let fs = SimFs::new();
    let dir = durable_dir(&fs, "/d");
    let path = dir.join("f");
    put(&fs, &path, &[7; 1000]);
    assert_eq!(fs.unsynced_bytes(), 1000);
    fs.remove_file(&path).unwrap();
    assert_eq!(
        fs.unsynced_bytes(),
        0,
        "an unreachable, closed file is dropped"
    );

    let mut file = fs.open_append(&path, false).unwrap();
    file.write_all(&[1; 10]).unwrap();
    fs.remove_file(&path).unwrap();
    assert_eq!(fs.unsynced_bytes(), 10, "an open handle keeps its file");
    drop(file);
    assert_eq!(fs.unsynced_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// Model-based property: random operations and crashes against a model of durable state

const DIRS: [&str; 2] = ["/p", "/p/q"];
const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone, Copy)]
struct FileRef {
    dir: usize,
    name: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: FileRef,
        bytes: Vec<u8>,
        truncate: bool,
    },
    Sync {
        file: FileRef,
    },
    SetLen {
        file: FileRef,
        len: usize,
    },
    Rename {
        from: FileRef,
        to: FileRef,
    },
    Remove {
        file: FileRef,
    },
    SyncDir {
        dir: usize,
    },
    Atomic {
        file: FileRef,
        bytes: Vec<u8>,
    },
    Crash,
    HandleOpen {
        file: FileRef,
    },
    HandleWrite {
        bytes: Vec<u8>,
    },
    HandleSync,
}

fn file_ref() -> impl Strategy<Value = FileRef> {
    (0..DIRS.len(), 0..NAMES.len()).prop_map(|(dir, name)| FileRef { dir, name })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (file_ref(), bytes(), any::<bool>())
            .prop_map(|(file, bytes, truncate)| Op::Write { file, bytes, truncate }),
        3 => file_ref().prop_map(|file| Op::Sync { file }),
        1 => (file_ref(), 0..8usize).prop_map(|(file, len)| Op::SetLen { file, len }),
        3 => (file_ref(), file_ref()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => file_ref().prop_map(|file| Op::Remove { file }),
        3 => (0..DIRS.len()).prop_map(|dir| Op::SyncDir { dir }),
        2 => (file_ref(), bytes()).prop_map(|(file, bytes)| Op::Atomic { file, bytes }),
        2 => Just(Op::Crash),
        1 => file_ref().prop_map(|file| Op::HandleOpen { file }),
        2 => bytes().prop_map(|bytes| Op::HandleWrite { bytes }),
        1 => Just(Op::HandleSync),
    ]
}

type FileId = u64;

#[derive(Default)]
struct ModelFile {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Default, Clone)]
struct ModelDir {
    visible: BTreeMap<String, FileId>,
    durable: BTreeMap<String, FileId>,
}

/// What the disk must show: visible names and contents, and what a crash would keep.
#[derive(Default)]
struct Model {
    dirs: [ModelDir; 2],
    files: BTreeMap<FileId, ModelFile>,
    next_id: FileId,
    /// The file the open handle writes to, and whether a crash made the handle stale.
    handle: Option<(FileId, bool)>,
    syncs: u64,
}

impl Model {
    fn lookup(&self, dir: usize, name: &str) -> Option<FileId> {
        self.dirs[dir].visible.get(name).copied()
    }

    fn open(&mut self, dir: usize, name: &str, truncate: bool) -> FileId {
        let id = match self.lookup(dir, name) {
            Some(id) => id,
            None => {
                self.next_id += 1;
                self.files.insert(self.next_id, ModelFile::default());
                self.dirs[dir].visible.insert(name.to_owned(), self.next_id);
                self.next_id
            }
        };
        if truncate {
            self.files.get_mut(&id).unwrap().data.clear();
        }
        id
    }

    fn sync(&mut self, id: FileId) {
        let file = self.files.get_mut(&id).unwrap();
        file.synced = file.data.clone();
        self.syncs += 1;
    }

    fn rename(&mut self, from: (usize, &str), to: (usize, &str)) {
        if from != to {
            let id = self.dirs[from.0].visible.remove(from.1).unwrap();
            self.dirs[to.0].visible.insert(to.1.to_owned(), id);
        }
    }

    fn crash(&mut self) {
        for dir in &mut self.dirs {
            dir.visible = dir.durable.clone();
        }
        for file in self.files.values_mut() {
            file.data = file.synced.clone();
        }
        if let Some((_, stale)) = &mut self.handle {
            *stale = true;
        }
    }
}

fn path_of(file: FileRef) -> PathBuf {
    Path::new(DIRS[file.dir]).join(NAMES[file.name])
}

/// Applies `op` to the disk and the model, checking the disk's answer.
fn apply(fs: &SimFs, model: &mut Model, handle: &mut Option<Box<dyn FsFile>>, op: &Op) {
    match op {
        Op::Write {
            file,
            bytes,
            truncate,
        } => {
            let mut real = fs.open_append(&path_of(*file), *truncate).unwrap();
            real.write_all(bytes).unwrap();
            let id = model.open(file.dir, NAMES[file.name], *truncate);
            model
                .files
                .get_mut(&id)
                .unwrap()
                .data
                .extend_from_slice(bytes);
        }
        Op::Sync { file } => {
            if let Some(id) = model.lookup(file.dir, NAMES[file.name]) {
                fs.open_append(&path_of(*file), false)
                    .unwrap()
                    .sync()
                    .unwrap();
                model.sync(id);
            }
        }
        Op::SetLen { file, len } => {
            if let Some(id) = model.lookup(file.dir, NAMES[file.name]) {
                let mut real = fs.open_append(&path_of(*file), false).unwrap();
                real.set_len(*len as u64).unwrap();
                model.files.get_mut(&id).unwrap().data.resize(*len, 0);
            }
        }
        Op::Rename { from, to } => {
            let result = fs.rename(&path_of(*from), &path_of(*to));
            if model.lookup(from.dir, NAMES[from.name]).is_some() {
                result.unwrap();
                model.rename((from.dir, NAMES[from.name]), (to.dir, NAMES[to.name]));
            } else {
                assert_eq!(err_kind(result), ErrorKind::NotFound);
            }
        }
        Op::Remove { file } => {
            let result = fs.remove_file(&path_of(*file));
            if model.dirs[file.dir]
                .visible
                .remove(NAMES[file.name])
                .is_some()
            {
                result.unwrap();
            } else {
                assert_eq!(err_kind(result), ErrorKind::NotFound);
            }
        }
        Op::SyncDir { dir } => {
            fs.sync_dir(Path::new(DIRS[*dir])).unwrap();
            let dir = &mut model.dirs[*dir];
            dir.durable = dir.visible.clone();
        }
        Op::Atomic { file, bytes } => {
            write_file_atomic(fs, &path_of(*file), bytes).unwrap();
            // The model spells out write_file_atomic's steps.
            let name = NAMES[file.name];
            let tmp = format!("{name}.tmp");
            let id = model.open(file.dir, &tmp, true);
            model
                .files
                .get_mut(&id)
                .unwrap()
                .data
                .extend_from_slice(bytes);
            model.sync(id);
            model.rename((file.dir, &tmp), (file.dir, name));
            let dir = &mut model.dirs[file.dir];
            dir.durable = dir.visible.clone();
        }
        Op::Crash => {
            fs.crash();
            model.crash();
            assert_eq!(fs.unsynced_bytes(), 0);
        }
        Op::HandleOpen { file } => {
            *handle = Some(fs.open_append(&path_of(*file), false).unwrap());
            model.handle = Some((model.open(file.dir, NAMES[file.name], false), false));
        }
        Op::HandleWrite { bytes } => {
            if let (Some(real), Some((id, stale))) = (handle.as_mut(), model.handle) {
                let result = real.write_all(bytes);
                if stale {
                    assert!(result.is_err(), "a stale handle must fail");
                } else {
                    result.unwrap();
                    model
                        .files
                        .get_mut(&id)
                        .unwrap()
                        .data
                        .extend_from_slice(bytes);
                }
            }
        }
        Op::HandleSync => {
            if let (Some(real), Some((id, stale))) = (handle.as_mut(), model.handle) {
                let result = real.sync();
                if stale {
                    assert!(result.is_err(), "a stale handle must fail");
                } else {
                    result.unwrap();
                    model.sync(id);
                }
            }
        }
    }
}

/// The disk shows exactly the model's visible names and contents.
fn check(fs: &SimFs, model: &Model, after: &Op) {
    for (i, dir) in DIRS.iter().enumerate() {
        let mut expected: Vec<String> = model.dirs[i].visible.keys().cloned().collect();
        if i == 0 {
            expected.push("q".to_owned());
            expected.sort();
        }
        assert_eq!(
            fs.list(Path::new(dir)).unwrap(),
            expected,
            "{dir} after {after:?}"
        );
        for (name, id) in &model.dirs[i].visible {
            let path = Path::new(dir).join(name);
            let data = &model.files[id].data;
            assert_eq!(&fs.read(&path).unwrap(), data, "{path:?} after {after:?}");
            assert_eq!(fs.file_len(&path).unwrap(), data.len() as u64);
        }
    }
    assert_eq!(fs.syncs_count(), model.syncs, "after {after:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sim_crashes_keep_exactly_the_durable_state(ops in prop::collection::vec(op(), 1..60)) {
        let fs = SimFs::new();
        durable_dir(&fs, DIRS[1]);
        let mut model = Model::default();
        let mut handle = None;
        for op in &ops {
            apply(&fs, &mut model, &mut handle, op);
            check(&fs, &model, op);
        }
        // However the run ended, a final crash leaves exactly the durable state.
        fs.crash();
        model.crash();
        check(&fs, &model, &Op::Crash);
    }
}
