//! The WAL through its public API, on `SimFs` (which can crash) and, where the body needs no
//! crash, on `StdFs` in a fresh temporary directory: model-based random operations, group commit,
//! torn tails versus corruption, segment reclaim, durability of votes and purge points, and
//! failed fsyncs. Tests that need failpoints live with the code, in `src/wal/tests.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use strata_raft::wal::{LogState, Purged, Seq, Wal, WalConfig, WalError, segment_path};
use strata_shard::fs::{Fs, StdFs};
use strata_shard::sim_fs::SimFs;

#[path = "../src/wal/model.rs"]
mod model;

use model::{History, Model, Op, read_wal};

// ---------------------------------------------------------------------------------------------
// Disks

/// A directory under the system temp dir, unique per process and call, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("strata-wal-{test}-{}-{n}", std::process::id()));
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

/// A disk for a test body: `SimFs`, or `StdFs` in a temporary directory.
struct Disk {
    fs: Arc<dyn Fs>,
    sim: Option<SimFs>,
    dir: PathBuf,
    _tmp: Option<TempDir>,
}

impl Disk {
    fn sim() -> Disk {
        let sim = SimFs::new();
        Disk {
            fs: Arc::new(sim.clone()),
            sim: Some(sim),
            dir: PathBuf::from("/node/wal"),
            _tmp: None,
        }
    }

    fn std(test: &str) -> Disk {
        let tmp = TempDir::new(test);
        Disk {
            fs: Arc::new(StdFs),
            sim: None,
            dir: tmp.0.join("wal"),
            _tmp: Some(tmp),
        }
    }

    fn sim_fs(&self) -> &SimFs {
        self.sim.as_ref().expect("a SimFs disk")
    }

    fn try_open(&self, config: &WalConfig) -> Result<Wal, WalError> {
        Wal::open(Arc::clone(&self.fs), &self.dir, config.clone())
    }

    fn open(&self, config: &WalConfig) -> Wal {
        self.try_open(config).expect("open")
    }

    /// Power loss on `SimFs`; on `StdFs` only a restart of the process (nothing is lost).
    fn crash(&self) {
        if let Some(sim) = &self.sim {
            sim.crash();
        }
    }

    fn segment(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    fn read(&self, id: u64) -> Vec<u8> {
        self.fs.read(&self.segment(id)).unwrap()
    }

    /// Replaces the content of a segment file, durably.
    fn rewrite(&self, id: u64, data: &[u8]) {
        let mut file = self.fs.open_append(&self.segment(id), true).unwrap();
        file.write_all(data).unwrap();
        file.sync().unwrap();
    }

    /// The segment ids present in the directory.
    fn wal_files(&self) -> Vec<u64> {
        self.fs
            .list(&self.dir)
            .unwrap()
            .iter()
            .filter_map(|name| name.strip_suffix(".wal")?.parse().ok())
            .collect()
    }
}

/// Runs `body` on `SimFs` and on `StdFs`.
fn on_both_disks(test: &str, body: impl Fn(&Disk)) {
    body(&Disk::sim());
    body(&Disk::std(test));
}

/// Offsets of the record frames of a segment, read with the documented layout: a 24-byte
/// header, then frames of `12 + body_len` bytes, `body_len` in the first 4 bytes.
fn frame_offsets(data: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = 24;
    while offset + 12 <= data.len() {
        offsets.push(offset);
        let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        offset += 12 + len;
    }
    offsets
}

fn small() -> WalConfig {
    WalConfig {
        segment_bytes_target: 512,
        cache_bytes_max: 300,
        record_bytes_max: 128,
        ..WalConfig::default()
    }
}

/// A payload unique to `(tag, k)`.
fn payload(tag: u64, k: usize, len: usize) -> Vec<u8> {
    let mut p = tag.to_le_bytes().to_vec();
    p.extend(std::iter::repeat_n(k as u8, len));
    p
}

fn entries_of(wal: &Wal, group: u64) -> Vec<(u64, Vec<u8>)> {
    wal.entries(group, ..).unwrap()
}

fn indexes(wal: &Wal, group: u64) -> Vec<u64> {
    entries_of(wal, group).into_iter().map(|(i, _)| i).collect()
}

/// W5 after a flush or an open: every segment but the tail holds a live entry, the directory
/// holds exactly the known segments, and the live counts add up to the live entries.
fn check_reclaimed(disk: &Disk, wal: &Wal, model: &Model) {
    let segments = wal.segments();
    let (_tail, rest) = segments.split_last().expect("a tail segment");
    for s in rest {
        assert!(s.live_entries > 0, "W5: dead segment kept: {segments:?}");
    }
    let ids: Vec<u64> = segments.iter().map(|s| s.id).collect();
    assert_eq!(disk.wal_files(), ids);
    let live: u64 = segments.iter().map(|s| s.live_entries).sum();
    let entries: usize = model.groups.values().map(|g| g.entries.len()).sum();
    assert_eq!(live, entries as u64);
}

// ---------------------------------------------------------------------------------------------
// Model-based random operations

const GROUPS: [u64; 3] = [0, 7, 1 << 40];

#[derive(Clone, Debug)]
enum TestOp {
    Append {
        g: usize,
        n: usize,
        len: usize,
        fresh: u64,
        bad: bool,
    },
    Vote {
        g: usize,
        b: u8,
    },
    Committed {
        g: usize,
        b: u8,
    },
    Truncate {
        g: usize,
        back: u64,
    },
    Purge {
        g: usize,
        ahead: u64,
        b: u8,
    },
    Remove {
        g: usize,
    },
    Flush,
    /// A flush whose fsync fails (`SimFs::fail_syncs`), then a reopen, after a crash or not.
    FailFlush {
        crash: bool,
    },
    Crash,
    Reopen,
}

fn test_op() -> impl Strategy<Value = TestOp> {
    prop_oneof![
        14 => (0..3usize, 1..5usize, 0..40usize, 0..3u64, prop::bool::weighted(0.05))
            .prop_map(|(g, n, len, fresh, bad)| TestOp::Append { g, n, len, fresh, bad }),
        2 => (0..3usize, any::<u8>()).prop_map(|(g, b)| TestOp::Vote { g, b }),
        1 => (0..3usize, any::<u8>()).prop_map(|(g, b)| TestOp::Committed { g, b }),
        3 => (0..3usize, 0..6u64).prop_map(|(g, back)| TestOp::Truncate { g, back }),
        3 => (0..3usize, 0..7u64, any::<u8>())
            .prop_map(|(g, ahead, b)| TestOp::Purge { g, ahead, b }),
        1 => (0..3usize).prop_map(|g| TestOp::Remove { g }),
        5 => Just(TestOp::Flush),
        1 => any::<bool>().prop_map(|crash| TestOp::FailFlush { crash }),
        2 => Just(TestOp::Crash),
        1 => Just(TestOp::Reopen),
    ]
}

/// The mutation a test op stands for, given the model's state (mostly valid, sometimes not).
fn mutation(m: &Model, op: &TestOp, tag: u64) -> Option<Op> {
    Some(match *op {
        TestOp::Append {
            g,
            n,
            len,
            fresh,
            bad,
        } => {
            let group = GROUPS[g];
            let first = match m.next_index(group) {
                Some(next) if bad => next + 1,
                Some(next) => next,
                None => fresh * 5,
            };
            let entries = (0..n).map(|k| payload(tag, k, len)).collect();
            Op::Append {
                group,
                first,
                entries,
            }
        }
        TestOp::Vote { g, b } => Op::Vote {
            group: GROUPS[g],
            vote: vec![b; usize::from(b % 5) + 1],
        },
        TestOp::Committed { g, b } => Op::Committed {
            group: GROUPS[g],
            committed: vec![b; usize::from(b % 3)],
        },
        TestOp::Truncate { g, back } => {
            let group = GROUPS[g];
            let next = m.next_index(group).unwrap_or(0);
            Op::Truncate {
                group,
                index: next.saturating_sub(back),
            }
        }
        TestOp::Purge { g, ahead, b } => {
            let group = GROUPS[g];
            let base = m
                .purged_index(group)
                .or(m.first_index(group).map(|f| f.saturating_sub(1)))
                .unwrap_or(0);
            Op::Purge {
                group,
                index: base + ahead,
                payload: vec![b; 3],
            }
        }
        TestOp::Remove { g } => Op::RemoveGroup { group: GROUPS[g] },
        TestOp::Flush | TestOp::FailFlush { .. } | TestOp::Crash | TestOp::Reopen => return None,
    })
}

fn run_model(disk: &Disk, ops: &[TestOp]) -> Result<(), TestCaseError> {
    let config = small();
    let mut wal = disk.open(&config);
    let mut h = History::default();
    for (tag, op) in ops.iter().enumerate() {
        if let Some(mutation) = mutation(h.current(), op, tag as u64) {
            h.run(&mut wal, mutation);
        }
        match *op {
            TestOp::Flush => {
                let seq = wal.flush().unwrap();
                prop_assert_eq!(seq, wal.pending_seq());
                prop_assert_eq!(wal.durable_seq(), seq);
                prop_assert!(!wal.has_pending());
                prop_assert_eq!(wal.pending_bytes(), 0);
                h.flushed();
                check_reclaimed(disk, &wal, h.current());
            }
            TestOp::FailFlush { crash } if disk.sim.is_some() && wal.has_pending() => {
                let sim = disk.sim_fs();
                sim.fail_syncs(true);
                let err = wal.flush().unwrap_err();
                prop_assert!(matches!(err, WalError::Io { .. }), "{}", err);
                let after = wal.append(GROUPS[0], 0, &[b"x"]);
                prop_assert!(
                    matches!(after, Err(WalError::Poisoned { .. })),
                    "W3: {:?}",
                    after
                );
                let after = wal.flush();
                prop_assert!(
                    matches!(after, Err(WalError::Poisoned { .. })),
                    "W3: {:?}",
                    after
                );
                sim.fail_syncs(false);
                drop(wal);
                if crash {
                    sim.crash();
                }
                wal = disk.open(&config);
                let pending = h.pending_len();
                let survived = h.recovered(&read_wal(&wal));
                prop_assert!(survived <= pending);
                if crash {
                    prop_assert_eq!(survived, 0, "nothing of a failed flush is durable");
                }
                check_reclaimed(disk, &wal, h.current());
            }
            TestOp::FailFlush { .. } | TestOp::Crash | TestOp::Reopen => {
                drop(wal);
                if matches!(op, TestOp::Crash) {
                    disk.crash();
                }
                wal = disk.open(&config);
                // Unflushed operations are gone, flushed ones all there (W2).
                prop_assert_eq!(h.recovered(&read_wal(&wal)), 0);
                check_reclaimed(disk, &wal, h.current());
            }
            _ => {}
        }
        prop_assert_eq!(&read_wal(&wal), h.current());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_on_sim_fs(ops in prop::collection::vec(test_op(), 1..80)) {
        run_model(&Disk::sim(), &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn model_on_std_fs(ops in prop::collection::vec(test_op(), 1..60)) {
        run_model(&Disk::std("model"), &ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Group commit

#[test]
fn one_fsync_covers_every_group() {
    let disk = Disk::sim();
    let sim = disk.sim_fs();
    let mut wal = disk.open(&WalConfig::default());
    let before = sim.syncs_count();
    let mut seqs = Vec::new();
    for group in 0..16u64 {
        seqs.push(wal.save_vote(group, b"term 1").unwrap());
        seqs.push(
            wal.append(group, 1, &[payload(group, 0, 10), payload(group, 1, 10)])
                .unwrap(),
        );
    }
    assert!(wal.has_pending());
    assert_eq!(wal.durable_seq(), Seq(0));
    assert_eq!(wal.pending_seq(), Seq(32));
    // Readable before they are durable.
    assert_eq!(indexes(&wal, 3), [1, 2]);
    let durable = wal.flush().unwrap();
    assert_eq!(sim.syncs_count(), before + 1, "one fsync for 16 groups");
    assert_eq!(durable, Seq(32));
    assert!(seqs.iter().all(|&seq| seq <= wal.durable_seq()));
    // Nothing buffered: no fsync.
    assert_eq!(wal.flush().unwrap(), durable);
    assert_eq!(sim.syncs_count(), before + 1);
}

#[test]
fn a_batch_spilling_into_a_new_segment_syncs_both_and_the_directory() {
    let disk = Disk::sim();
    let sim = disk.sim_fs();
    let config = WalConfig {
        segment_bytes_target: 1000,
        ..WalConfig::default()
    };
    let mut wal = disk.open(&config);
    wal.append(1, 1, &[payload(0, 0, 100)]).unwrap();
    wal.flush().unwrap();
    let tail = wal.segments().last().unwrap().id;
    let before = sim.syncs_count();
    let mut next = 2;
    while wal.segments().last().unwrap().id == tail {
        wal.append(2, next, &[payload(next, 0, 100)]).unwrap();
        next += 1;
    }
    wal.flush().unwrap();
    assert_eq!(
        sim.syncs_count(),
        before + 2,
        "the old tail and the new segment"
    );
    // The new segment's directory entry is durable (W2).
    drop(wal);
    sim.crash();
    let wal = disk.open(&config);
    assert_eq!(indexes(&wal, 2), (2..next).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Torn tails and corruption

/// Writes group 1 entries 1..=3, flushes, then entry 4 alone, flushes, and closes. Returns the
/// segment holding them (the last one) and the offset of entry 4's record.
fn two_flushes(disk: &Disk) -> (u64, usize) {
    let mut wal = disk.open(&small());
    wal.save_vote(1, b"v1").unwrap();
    wal.append(1, 1, &[&b"one"[..], b"two", b"three"]).unwrap();
    wal.flush().unwrap();
    wal.append(1, 4, &[b"four"]).unwrap();
    wal.flush().unwrap();
    let id = wal.segments().last().unwrap().id;
    drop(wal);
    let offsets = frame_offsets(&disk.read(id));
    assert_eq!(offsets.len(), 4, "head, vote, entries 1..=3, entry 4");
    (id, offsets[3])
}

/// Opens a WAL whose last segment got a torn tail: it must come back with entries 1..=3, the
/// file cut at `cut`, and take new appends that survive a reopen.
fn check_torn_tail_recovered(disk: &Disk, id: u64, cut: usize) {
    let mut wal = disk.open(&small());
    assert_eq!(indexes(&wal, 1), [1, 2, 3]);
    assert_eq!(wal.log_state(1).unwrap().vote, Some(b"v1".to_vec()));
    assert_eq!(disk.read(id).len(), cut, "torn tail cut");
    wal.append(1, 4, &[b"FOUR"]).unwrap();
    wal.flush().unwrap();
    drop(wal);
    disk.crash();
    let wal = disk.open(&small());
    assert_eq!(
        entries_of(&wal, 1),
        [
            (1, b"one".to_vec()),
            (2, b"two".to_vec()),
            (3, b"three".to_vec()),
            (4, b"FOUR".to_vec())
        ]
    );
}

#[test]
fn torn_tail_record_cut_short_is_dropped() {
    // Inside the frame header, right after it, and one byte short of the end.
    for cut in [3, 12, 1] {
        on_both_disks("torn_short", |disk| {
            let (id, last) = two_flushes(disk);
            let data = disk.read(id);
            let keep = if cut == 1 { data.len() - 1 } else { last + cut };
            disk.rewrite(id, &data[..keep]);
            check_torn_tail_recovered(disk, id, last);
        });
    }
}

#[test]
fn torn_tail_with_bad_crc_or_zeros_is_dropped() {
    on_both_disks("torn_crc", |disk| {
        let (id, last) = two_flushes(disk);
        let mut data = disk.read(id);
        // A flipped byte in the body of the last record.
        let n = data.len();
        data[n - 2] ^= 0x01;
        disk.rewrite(id, &data);
        check_torn_tail_recovered(disk, id, last);
    });
    on_both_disks("torn_zeros", |disk| {
        let (id, _) = two_flushes(disk);
        let mut data = disk.read(id);
        let len = data.len();
        // The file grew but the bytes never arrived: zeros after the last record.
        data.extend_from_slice(&[0; 100]);
        disk.rewrite(id, &data);
        check_torn_tail_recovered_keeping_four(disk, id, len);
    });
}

/// Like `check_torn_tail_recovered`, when the torn part came after entry 4.
fn check_torn_tail_recovered_keeping_four(disk: &Disk, id: u64, cut: usize) {
    let wal = disk.open(&small());
    assert_eq!(indexes(&wal, 1), [1, 2, 3, 4]);
    assert_eq!(disk.read(id).len(), cut);
}

#[test]
fn damaged_record_followed_by_a_valid_one_is_corruption() {
    on_both_disks("corrupt_middle", |disk| {
        let (id, _) = two_flushes(disk);
        let mut data = disk.read(id);
        let offsets = frame_offsets(&data);
        // The body of the record holding entries 1..=3, which entry 4's record follows.
        data[offsets[2] + 20] ^= 0x10;
        disk.rewrite(id, &data);
        match disk.try_open(&small()) {
            Err(WalError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, disk.segment(id));
                assert_eq!(offset, offsets[2] as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        let message = disk.try_open(&small()).unwrap_err().to_string();
        assert!(
            message.contains(&format!("{:020}.wal", id))
                && message.contains(&format!("offset {}", offsets[2])),
            "{message}"
        );
        // Never cut: the file is untouched.
        assert_eq!(disk.read(id), data);
    });
}

#[test]
fn any_damage_in_a_segment_that_is_not_the_last_is_corruption() {
    on_both_disks("corrupt_not_last", |disk| {
        let (id, last) = two_flushes(disk);
        // A reopen starts a new tail: segment `id` is no longer the last.
        drop(disk.open(&small()));
        let data = disk.read(id);
        let mut flipped = data.clone();
        let n = flipped.len();
        flipped[n - 1] ^= 0x01;
        for (what, bad) in [
            ("bad CRC in the last record", flipped),
            ("last record cut short", data[..data.len() - 2].to_vec()),
            ("head record damaged", {
                let mut d = data.clone();
                d[24 + 14] ^= 0x01;
                d
            }),
        ] {
            disk.rewrite(id, &bad);
            match disk.try_open(&small()) {
                Err(WalError::Corrupt {
                    segment, offset, ..
                }) => {
                    assert_eq!(segment, disk.segment(id), "{what}");
                    if what != "head record damaged" {
                        assert_eq!(offset, last as u64, "{what}");
                    }
                }
                other => panic!("{what}: expected corruption, got {other:?}"),
            }
        }
        disk.rewrite(id, &data);
        assert_eq!(indexes(&disk.open(&small()), 1), [1, 2, 3, 4]);
    });
}

#[test]
fn a_segment_whose_header_names_another_id_is_refused() {
    on_both_disks("wrong_id", |disk| {
        let (id, _) = two_flushes(disk);
        let data = disk.read(id);
        let mut wal = disk.open(&small());
        wal.append(2, 1, &[b"x"]).unwrap();
        wal.flush().unwrap();
        drop(wal);
        // A copy of an old segment under a newer name.
        let wrong = disk.wal_files().last().unwrap() + 1;
        disk.rewrite(wrong, &data);
        let err = disk.try_open(&small()).unwrap_err();
        let names_the_copy = matches!(
            &err,
            WalError::Corrupt { segment, offset: 0, .. } if *segment == disk.segment(wrong)
        );
        assert!(names_the_copy, "{err}");
    });
}

#[test]
fn torn_segment_header_or_head_record_is_replaced() {
    // Inside the segment header, inside the Head's frame header, one byte short of the Head.
    for cut in [10, 30, 1] {
        on_both_disks("torn_header", |disk| {
            let (id, _) = two_flushes(disk);
            drop(disk.open(&small()));
            let tail = disk.wal_files().last().copied().unwrap();
            assert!(tail > id);
            // The tail's file exists, but its header and Head never fully arrived.
            let head = disk.read(tail);
            assert_eq!(frame_offsets(&head), [24], "only the Head");
            let keep = if cut == 1 { head.len() - 1 } else { cut };
            disk.rewrite(tail, &head[..keep]);
            let wal = disk.open(&small());
            assert_eq!(indexes(&wal, 1), [1, 2, 3, 4]);
            assert_eq!(wal.log_state(1).unwrap().vote, Some(b"v1".to_vec()));
            assert_eq!(
                wal.segments().last().unwrap().id,
                tail,
                "replaced under its own name"
            );
            drop(wal);
            disk.crash();
            assert_eq!(indexes(&disk.open(&small()), 1), [1, 2, 3, 4]);
        });
    }
}

#[test]
fn a_corrupt_payload_is_detected_on_read() {
    on_both_disks("corrupt_payload", |disk| {
        let config = WalConfig {
            cache_bytes_max: 0,
            ..small()
        };
        let mut wal = disk.open(&config);
        wal.append(1, 1, &[&b"alpha"[..], b"beta"]).unwrap();
        wal.flush().unwrap();
        let id = wal.segments().last().unwrap().id;
        let mut data = disk.read(id);
        let at = data.windows(4).position(|w| w == b"beta").unwrap();
        data[at] = b'B';
        // Rewritten in place while the WAL is open (it replayed the good bytes).
        disk.rewrite(id, &data);
        assert_eq!(wal.entries(1, 1..2).unwrap(), [(1, b"alpha".to_vec())]);
        match wal.entries(1, ..) {
            Err(WalError::Corrupt { segment, .. }) => assert_eq!(segment, disk.segment(id)),
            other => panic!("expected corruption, got {other:?}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Reclaim, votes and purge points

#[test]
fn purge_deletes_whole_segments_only_when_no_group_needs_them() {
    on_both_disks("purge", |disk| {
        let mut wal = disk.open(&small());
        // Group 2 lags: its only entry is in the first segment.
        wal.append(2, 1, &[b"laggard"]).unwrap();
        let mut last = 0;
        while wal.segments().len() < 6 {
            last += 1;
            wal.append(1, last, &[payload(last, 0, 60)]).unwrap();
        }
        wal.flush().unwrap();
        let before = disk.wal_files();
        assert_eq!(before.len(), 6);
        let first_segment = before[0];
        // Purge group 1 up to the middle of the third segment.
        let in_third = wal
            .segments()
            .iter()
            .take(3)
            .map(|s| s.live_entries)
            .sum::<u64>()
            - 2;
        wal.purge(1, in_third, b"mid").unwrap();
        assert_eq!(
            disk.wal_files(),
            before,
            "nothing is deleted before the flush"
        );
        wal.flush().unwrap();
        assert_eq!(
            disk.wal_files(),
            [before[0], before[2], before[3], before[4], before[5]],
            "only the second segment was dead"
        );
        // All of group 1: only the laggard's segment and the tail stay.
        wal.purge(1, last, b"all").unwrap();
        wal.flush().unwrap();
        let tail = wal.segments().last().unwrap().id;
        assert_eq!(disk.wal_files(), [first_segment, tail]);
        assert_eq!(indexes(&wal, 2), [1]);
        // Then the laggard: only the tail, which is never deleted.
        wal.purge(2, 1, b"done").unwrap();
        wal.flush().unwrap();
        assert_eq!(disk.wal_files(), [tail]);
        drop(wal);
        disk.crash();
        let wal = disk.open(&small());
        assert!(indexes(&wal, 1).is_empty() && indexes(&wal, 2).is_empty());
        assert_eq!(
            wal.log_state(1).unwrap().last_purged,
            Some(Purged {
                index: last,
                payload: b"all".to_vec()
            })
        );
    });
}

#[test]
fn votes_and_purge_points_survive_deletion_of_their_segment_and_a_crash() {
    let disk = Disk::sim();
    let mut wal = disk.open(&small());
    // In the first segment: group 5's vote, commit point and purge point, and group 6, removed.
    wal.save_vote(5, b"term 3, node 2").unwrap();
    wal.save_committed(5, b"log id 3-10").unwrap();
    wal.append(5, 1, &[b"a", b"b"]).unwrap();
    wal.purge(5, 10, b"log id 3-10").unwrap();
    wal.save_vote(6, b"gone").unwrap();
    wal.remove_group(6).unwrap();
    let first = wal.segments()[0].id;
    // Group 1 fills later segments, then is purged: the first segment is dead.
    let mut last = 0;
    while wal.segments().len() < 4 {
        last += 1;
        wal.append(1, last, &[payload(last, 0, 50)]).unwrap();
    }
    wal.flush().unwrap();
    wal.purge(1, last - 1, b"p").unwrap();
    wal.flush().unwrap();
    assert!(
        !disk.wal_files().contains(&first),
        "the first segment is deleted"
    );
    drop(wal);
    disk.crash();
    let mut wal = disk.open(&small());
    assert_eq!(
        wal.log_state(5).unwrap(),
        LogState {
            first_index: None,
            last_index: None,
            last_purged: Some(Purged {
                index: 10,
                payload: b"log id 3-10".to_vec()
            }),
            vote: Some(b"term 3, node 2".to_vec()),
            committed: Some(b"log id 3-10".to_vec()),
        }
    );
    assert_eq!(wal.groups(), [1, 5], "group 6 stays removed");
    assert_eq!(indexes(&wal, 1), [last]);
    // The purge point decides where group 5 continues.
    assert!(matches!(
        wal.append(5, 3, &[b"c"]),
        Err(WalError::NotContiguous { expected: 11, .. })
    ));
    wal.append(5, 11, &[b"k"]).unwrap();
}

#[test]
fn reopening_does_not_pile_up_segments() {
    on_both_disks("reopen", |disk| {
        let mut wal = disk.open(&small());
        wal.append(1, 1, &[b"x"]).unwrap();
        wal.save_vote(1, b"v").unwrap();
        wal.flush().unwrap();
        drop(wal);
        for round in 0..10 {
            if round % 2 == 0 {
                disk.crash();
            }
            let wal = disk.open(&small());
            assert_eq!(indexes(&wal, 1), [1]);
            assert!(disk.wal_files().len() <= 2, "{:?}", disk.wal_files());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Durability of votes, failed fsyncs, refused calls

#[test]
fn a_vote_is_durable_only_once_flushed() {
    let disk = Disk::sim();
    let mut wal = disk.open(&small());
    let seq = wal.save_vote(1, b"term 1").unwrap();
    assert!(wal.durable_seq() < seq, "must not be answered yet");
    drop(wal);
    disk.crash();
    let mut wal = disk.open(&small());
    assert_eq!(wal.log_state(1).unwrap().vote, None, "never flushed");
    let seq = wal.save_vote(1, b"term 2").unwrap();
    wal.flush().unwrap();
    assert!(wal.durable_seq() >= seq);
    drop(wal);
    disk.crash();
    let wal = disk.open(&small());
    assert_eq!(wal.log_state(1).unwrap().vote, Some(b"term 2".to_vec()));
}

#[test]
fn a_failed_fsync_makes_the_wal_unusable_and_loses_only_unflushed_records() {
    let disk = Disk::sim();
    let sim = disk.sim_fs();
    let mut wal = disk.open(&small());
    wal.append(1, 1, &[b"durable"]).unwrap();
    wal.save_vote(1, b"v1").unwrap();
    wal.flush().unwrap();
    wal.append(1, 2, &[b"lost"]).unwrap();
    wal.save_vote(1, b"v2").unwrap();
    sim.fail_syncs(true);
    let err = wal.flush().unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    sim.fail_syncs(false);
    // Never retried: the WAL refuses everything from now on.
    for result in [
        wal.flush().map(|_| ()),
        wal.append(1, 3, &[b"more"]).map(|_| ()),
        wal.save_vote(1, b"v3").map(|_| ()),
        wal.entries(1, ..).map(|_| ()),
        wal.log_state(1).map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(WalError::Poisoned { .. })),
            "{result:?}"
        );
    }
    drop(wal);
    sim.crash();
    let wal = disk.open(&small());
    assert_eq!(entries_of(&wal, 1), [(1, b"durable".to_vec())]);
    assert_eq!(wal.log_state(1).unwrap().vote, Some(b"v1".to_vec()));
}

#[test]
fn calls_that_break_the_log_rules_are_refused_and_change_nothing() {
    on_both_disks("refused", |disk| {
        let mut wal = disk.open(&small());
        wal.append(1, 5, &[&b"five"[..], b"six"]).unwrap();
        wal.purge(1, 5, b"p5").unwrap();
        let seq = wal.pending_seq();
        let state = wal.log_state(1).unwrap();
        assert!(matches!(
            wal.append(1, 8, &[b"gap"]),
            Err(WalError::NotContiguous {
                group: 1,
                first: 8,
                expected: 7
            })
        ));
        assert!(matches!(
            wal.truncate(1, 5),
            Err(WalError::TruncatePurged { purged: 5, .. })
        ));
        assert!(matches!(
            wal.purge(1, 4, b""),
            Err(WalError::PurgeBackwards { purged: 5, .. })
        ));
        assert!(matches!(
            wal.purge(2, u64::MAX, b""),
            Err(WalError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            wal.append(3, u64::MAX - 1, &[b"a", b"b"]),
            Err(WalError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            wal.append(1, 7, &[vec![0; 200]]),
            Err(WalError::TooLarge { what: "entry", .. })
        ));
        assert!(matches!(
            wal.save_vote(1, &vec![0; 70_000]),
            Err(WalError::TooLarge { what: "vote", .. })
        ));
        assert_eq!(wal.pending_seq(), seq);
        assert_eq!(wal.log_state(1).unwrap(), state);
        assert_eq!(wal.groups(), [1]);
        // Still usable; an empty append writes nothing.
        assert_eq!(wal.append::<&[u8]>(1, 7, &[]).unwrap(), seq);
        wal.append(1, 7, &[b"seven"]).unwrap();
        wal.flush().unwrap();
        drop(wal);
        let wal = disk.open(&small());
        assert_eq!(indexes(&wal, 1), [6, 7]);
    });
}

#[test]
fn reads_from_buffer_cache_and_disk_agree() {
    on_both_disks("reads", |disk| {
        for cache_bytes_max in [0, 300, 1 << 20] {
            let config = WalConfig {
                cache_bytes_max,
                ..small()
            };
            let mut wal = disk.open(&config);
            let group = cache_bytes_max as u64;
            // Ten entries per append: split into several records of at most 128 bytes.
            let batch: Vec<Vec<u8>> = (0..10).map(|k| payload(group, k, 30)).collect();
            wal.append(group, 1, &batch).unwrap();
            let expected: Vec<(u64, Vec<u8>)> = (1..).zip(batch.iter().cloned()).collect();
            assert_eq!(entries_of(&wal, group), expected, "from the buffer");
            wal.flush().unwrap();
            assert_eq!(entries_of(&wal, group), expected, "after the flush");
            assert_eq!(wal.entries(group, 3..6).unwrap(), expected[2..5]);
            assert_eq!(wal.entries(group, 9..=u64::MAX).unwrap(), expected[8..]);
            assert!(wal.entries(group, 5..5).unwrap().is_empty());
            assert!(wal.entries(group, 11..).unwrap().is_empty());
            assert!(
                wal.entries(
                    group,
                    (
                        std::ops::Bound::Excluded(u64::MAX),
                        std::ops::Bound::Unbounded
                    )
                )
                .unwrap()
                .is_empty()
            );
            assert!(wal.entries(group + 1, ..).unwrap().is_empty());
            drop(wal);
            let wal = disk.open(&config);
            assert_eq!(entries_of(&wal, group), expected, "after a reopen");
        }
    });
}

#[test]
fn other_files_in_the_directory_are_ignored() {
    on_both_disks("others", |disk| {
        drop(disk.open(&small()));
        let mut file = disk.fs.open_append(&disk.dir.join("README"), true).unwrap();
        file.write_all(b"not a segment").unwrap();
        drop(file);
        let mut wal = disk.open(&small());
        wal.append(1, 1, &[b"x"]).unwrap();
        wal.flush().unwrap();
        assert!(disk.fs.exists(Path::new(&disk.dir.join("README"))));
    });
}

#[test]
fn a_record_with_matching_crcs_that_does_not_decode_is_corruption_even_at_the_tail() {
    on_both_disks("undecodable", |disk| {
        let (id, _) = two_flushes(disk);
        let mut data = disk.read(id);
        let offset = data.len();
        // A well-framed record of an unknown kind (R4: a torn write cannot make CRCs match).
        let body = [99u8, 1, 2, 3];
        let mut head = (body.len() as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        data.extend_from_slice(&head);
        data.extend_from_slice(&crc32fast::hash(&head).to_le_bytes());
        data.extend_from_slice(&body);
        disk.rewrite(id, &data);
        match disk.try_open(&small()) {
            Err(WalError::Corrupt {
                segment,
                offset: at,
                reason,
            }) => {
                assert_eq!((segment, at), (disk.segment(id), offset as u64));
                assert!(reason.contains("unknown record kind"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    });
}

#[test]
fn a_missing_segment_with_live_entries_is_detected() {
    on_both_disks("missing", |disk| {
        let mut wal = disk.open(&small());
        let mut last = 0;
        while wal.segments().len() < 4 {
            last += 1;
            wal.append(1, last, &[payload(last, 0, 60)]).unwrap();
        }
        wal.flush().unwrap();
        let middle = wal.segments()[1].id;
        drop(wal);
        disk.fs.remove_file(&disk.segment(middle)).unwrap();
        match disk.try_open(&small()) {
            Err(WalError::Incomplete { group: 1, .. }) => {}
            other => panic!("expected an incomplete group, got {other:?}"),
        }
    });
}
