//! Unit tests of the WAL that need its failpoints or its private state. The behaviour seen
//! through the public API is tested in `raft/tests/wal.rs`.

use std::sync::Arc;

use proptest::prelude::*;
use strata_shard::fs::Fs;
use strata_shard::sim_fs::SimFs;

use super::model::{History, Op, read_wal};
use super::*;

const DIR: &str = "/node/wal";

fn config() -> WalConfig {
    WalConfig {
        segment_bytes_target: 300,
        cache_bytes_max: 200,
        record_bytes_max: 128,
        ..WalConfig::default()
    }
}

fn open(sim: &SimFs, failpoints: &[Failpoint]) -> Result<Wal> {
    Wal::open_with(
        Arc::new(sim.clone()),
        DIR.into(),
        config(),
        Failpoints {
            armed: failpoints.iter().copied().collect(),
        },
    )
}

/// A payload unique to `tag`.
fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut p = tag.to_le_bytes().to_vec();
    p.resize(len.max(8), tag as u8);
    p
}

fn append(h: &mut History, wal: &mut Wal, group: u64, tag: u64) {
    let first = h.current().next_index(group).unwrap_or(1);
    h.run(
        wal,
        Op::Append {
            group,
            first,
            entries: vec![payload(tag, 20)],
        },
    );
}

fn is_poisoned<T: fmt::Debug>(result: Result<T>) -> bool {
    matches!(result, Err(WalError::Poisoned { .. }))
}

fn wal_files(sim: &SimFs) -> Vec<u64> {
    sim.list(Path::new(DIR))
        .unwrap()
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect()
}

/// A flushed WAL with three groups, and a buffered batch that starts in the flushed tail and
/// spills into a new segment (two chunks).
fn setup(sim: &SimFs) -> (Wal, History) {
    let mut wal = open(sim, &[]).unwrap();
    let mut h = History::default();
    for g in [1, 2, 3] {
        h.run(
            &mut wal,
            Op::Vote {
                group: g,
                vote: vec![g as u8; 4],
            },
        );
    }
    let mut tag = 0;
    // Fill until the tail rolls and flush: the flushed tail holds its Head and one record, so it
    // has room for one more.
    let start = wal.tail;
    while wal.tail == start {
        tag += 1;
        append(&mut h, &mut wal, 1 + tag % 3, tag);
    }
    wal.flush().unwrap();
    h.flushed();
    let flushed_tail = wal.tail;
    while wal.tail == flushed_tail {
        tag += 1;
        append(&mut h, &mut wal, 1 + tag % 3, tag);
    }
    tag += 1;
    append(&mut h, &mut wal, 3, tag);
    assert_eq!(wal.pending.len(), 2, "the batch spans two segments");
    assert_eq!(wal.pending[0].segment, wal.file_segment);
    (wal, h)
}

#[test]
fn failed_flush_poisons_and_a_crash_keeps_a_prefix() {
    for point in [
        Failpoint::BeforeWrite,
        Failpoint::BeforeSegmentSync,
        Failpoint::AfterSegmentSync,
        Failpoint::BeforeDirSync,
    ] {
        let sim = SimFs::new();
        let (mut wal, mut h) = setup(&sim);
        let pending = h.pending_len();
        let durable = wal.durable_seq();
        wal.failpoints.armed.insert(point);
        let err = wal.flush().unwrap_err();
        assert!(
            matches!(err, WalError::Io { .. }) && err.to_string().contains("failpoint"),
            "{point:?}: {err}"
        );
        assert_eq!(wal.durable_seq(), durable, "{point:?}: W2");
        // W3: unusable from now on, reads included.
        assert!(is_poisoned(wal.flush()));
        assert!(is_poisoned(wal.append(9, 1, &[b"x"])));
        assert!(is_poisoned(wal.save_vote(1, b"v")));
        assert!(is_poisoned(wal.truncate(1, 5)));
        assert!(is_poisoned(wal.purge(1, 1, b"")));
        assert!(is_poisoned(wal.entries(1, ..)));
        assert!(is_poisoned(wal.log_state(1)));
        drop(wal);
        sim.crash();
        let wal = open(&sim, &[]).unwrap();
        let survived = h.recovered(&read_wal(&wal));
        match point {
            Failpoint::BeforeWrite | Failpoint::BeforeSegmentSync => {
                assert_eq!(survived, 0, "{point:?}: nothing was synced");
            }
            // The old tail's part of the batch was synced; the new segment's part was not
            // reached, or its directory entry is lost in the crash.
            _ => assert!(
                survived > 0 && survived < pending,
                "{point:?}: {survived} of {pending} survived"
            ),
        }
    }
}

#[test]
fn failed_sync_without_crash_then_reopen_recovers() {
    // The written but unsynced bytes are still visible: reopen must take them (or not) as a
    // prefix, and make them durable (W8).
    let sim = SimFs::new();
    let (mut wal, mut h) = setup(&sim);
    wal.failpoints.armed.insert(Failpoint::BeforeSegmentSync);
    wal.flush().unwrap_err();
    drop(wal);
    let wal = open(&sim, &[]).unwrap();
    let survived = h.recovered(&read_wal(&wal));
    assert!(survived > 0, "the first chunk was written");
    drop(wal);
    sim.crash();
    let wal = open(&sim, &[]).unwrap();
    assert_eq!(
        h.recovered(&read_wal(&wal)),
        0,
        "W8: open synced what it served"
    );
}

#[test]
fn failed_segment_removal_poisons_and_open_removes_it() {
    let sim = SimFs::new();
    let mut wal = open(&sim, &[]).unwrap();
    let mut h = History::default();
    let mut tag = 0;
    while wal.tail < 4 {
        tag += 1;
        append(&mut h, &mut wal, 1, tag);
    }
    wal.flush().unwrap();
    h.flushed();
    let last = h.current().last_index(1).unwrap();
    h.run(
        &mut wal,
        Op::Purge {
            group: 1,
            index: last,
            payload: b"all".to_vec(),
        },
    );
    wal.failpoints.armed.insert(Failpoint::BeforeRemove);
    assert!(wal.flush().is_err());
    assert!(is_poisoned(wal.entries(1, ..)));
    drop(wal);
    sim.crash();
    let wal = open(&sim, &[]).unwrap();
    // The purge was synced before the removal failed.
    assert_eq!(h.recovered(&read_wal(&wal)), 1);
    assert_eq!(wal.segments().len(), 1, "W5: only the new tail remains");
    assert_eq!(wal_files(&sim), [wal.tail]);
}

#[test]
fn open_failpoints_leave_a_recoverable_directory() {
    for point in [
        Failpoint::BeforeSegmentSync,
        Failpoint::BeforeDirSync,
        Failpoint::BeforeTruncateSync,
    ] {
        // A fresh directory: the first open fails, the next one starts over.
        let sim = SimFs::new();
        if point != Failpoint::BeforeTruncateSync {
            open(&sim, &[point]).unwrap_err();
            sim.crash();
        }
        let mut wal = open(&sim, &[]).unwrap();
        let mut h = History::default();
        for tag in 0..5 {
            append(&mut h, &mut wal, tag % 2, tag);
        }
        h.run(
            &mut wal,
            Op::Vote {
                group: 0,
                vote: b"v".to_vec(),
            },
        );
        wal.flush().unwrap();
        h.flushed();
        let tail = wal.tail;
        drop(wal);
        // A torn tail for the truncate failpoint to meet.
        let path = segment_path(Path::new(DIR), tail);
        let len = sim.file_len(&path).unwrap();
        let mut file = sim.open_append(&path, false).unwrap();
        file.write_all(&[0x5A; 7]).unwrap();
        file.sync().unwrap();
        drop(file);
        let err = open(&sim, &[point]).unwrap_err();
        assert!(err.to_string().contains("failpoint"), "{point:?}: {err}");
        sim.crash();
        let wal = open(&sim, &[]).unwrap();
        assert_eq!(h.recovered(&read_wal(&wal)), 0, "{point:?}");
        assert_eq!(
            sim.file_len(&path).unwrap(),
            len,
            "{point:?}: torn tail cut"
        );
    }
}

#[test]
fn cache_stays_within_budget() {
    let mut cache = EntryCache::new(1000);
    for i in 0..100 {
        cache.insert((i % 3, i), &payload(i, (i as usize * 7) % 90));
        assert!(cache.bytes <= 1000);
        assert_eq!(cache.entries.len(), cache.by_age.len());
    }
    cache.insert((0, 0), &[0; 2000]);
    assert!(cache.get(0, 0).is_none(), "too big to cache");
    cache.remove_range(1, 0, u64::MAX);
    assert!(cache.entries.keys().all(|&(g, _)| g != 1));
    let total: usize = cache
        .entries
        .values()
        .map(|(_, p)| EntryCache::cost(p))
        .sum();
    assert_eq!(cache.bytes, total);
}

#[test]
fn segment_names() {
    assert_eq!(parse_segment_name("00000000000000000007.wal"), Some(7));
    assert_eq!(
        segment_path(Path::new("/d"), 7),
        Path::new("/d/00000000000000000007.wal")
    );
    for bad in [
        "7.wal",
        "0000000000000000000x.wal",
        "00000000000000000007.wal.tmp",
        "x",
    ] {
        assert_eq!(parse_segment_name(bad), None, "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Random operations with failing flushes at every failpoint.

#[derive(Clone, Debug)]
enum TestOp {
    Append { group: u64, len: u8 },
    Vote { group: u64 },
    Committed { group: u64 },
    Remove { group: u64 },
    Truncate { group: u64, back: u64 },
    Purge { group: u64, ahead: u64 },
    Flush,
    FailFlush { point: Failpoint, crash: bool },
}

fn test_op() -> impl Strategy<Value = TestOp> {
    prop_oneof![
        8 => (0..3u64, 0..40u8).prop_map(|(group, len)| TestOp::Append { group, len }),
        1 => (0..3u64).prop_map(|group| TestOp::Vote { group }),
        1 => (0..3u64).prop_map(|group| TestOp::Committed { group }),
        1 => (0..3u64).prop_map(|group| TestOp::Remove { group }),
        2 => (0..3u64, 0..4u64).prop_map(|(group, back)| TestOp::Truncate { group, back }),
        2 => (0..3u64, 0..5u64).prop_map(|(group, ahead)| TestOp::Purge { group, ahead }),
        3 => Just(TestOp::Flush),
        2 => (
            prop_oneof![
                Just(Failpoint::BeforeWrite),
                Just(Failpoint::BeforeSegmentSync),
                Just(Failpoint::AfterSegmentSync),
                Just(Failpoint::BeforeDirSync),
                Just(Failpoint::BeforeRemove),
            ],
            any::<bool>()
        )
            .prop_map(|(point, crash)| TestOp::FailFlush { point, crash }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn failing_flushes_keep_a_prefix(ops in prop::collection::vec(test_op(), 1..60)) {
        let sim = SimFs::new();
        let mut wal = open(&sim, &[]).unwrap();
        let mut h = History::default();
        for (tag, op) in ops.into_iter().enumerate() {
            let tag = tag as u64;
            match op {
                TestOp::Append { group, len } => {
                    let first = h.current().next_index(group).unwrap_or(1);
                    let entries = vec![payload(tag, len.into())];
                    h.run(&mut wal, Op::Append { group, first, entries });
                }
                TestOp::Vote { group } => {
                    h.run(&mut wal, Op::Vote { group, vote: payload(tag, 3) });
                }
                TestOp::Committed { group } => {
                    h.run(&mut wal, Op::Committed { group, committed: payload(tag, 1) });
                }
                TestOp::Remove { group } => h.run(&mut wal, Op::RemoveGroup { group }),
                TestOp::Truncate { group, back } => {
                    let next = h.current().next_index(group).unwrap_or(1);
                    let index = next.saturating_sub(back).max(1);
                    h.run(&mut wal, Op::Truncate { group, index });
                }
                TestOp::Purge { group, ahead } => {
                    let m = h.current();
                    let base = m.purged_index(group).or(m.first_index(group)).unwrap_or(0);
                    let payload = payload(tag, 2);
                    h.run(&mut wal, Op::Purge { group, index: base + ahead, payload });
                }
                TestOp::Flush => {
                    wal.flush().unwrap();
                    h.flushed();
                }
                TestOp::FailFlush { point, crash } => {
                    wal.failpoints.armed.insert(point);
                    match wal.flush() {
                        // Nothing buffered, or the failpoint was not on the way.
                        Ok(_) => {
                            h.flushed();
                            wal.failpoints.armed.clear();
                            continue;
                        }
                        Err(e) => prop_assert!(e.to_string().contains("failpoint")),
                    }
                    prop_assert!(is_poisoned(wal.save_vote(0, b"x")));
                    drop(wal);
                    if crash {
                        sim.crash();
                    }
                    wal = open(&sim, &[]).unwrap();
                    h.recovered(&read_wal(&wal));
                }
            }
            prop_assert_eq!(&read_wal(&wal), h.current());
        }
        drop(wal);
        sim.crash();
        let wal = open(&sim, &[]).unwrap();
        prop_assert_eq!(h.recovered(&read_wal(&wal)), 0);
    }
}

#[test]
fn appends_during_a_flush_job_stay_readable_and_become_durable_only_with_the_next_flush() {
    let sim = SimFs::new();
    let mut wal = open(&sim, &[]).unwrap();
    // Entries big enough that the 200-byte cache holds two: the rest is read from the buffers.
    let big = |tag| payload(tag, 90);
    wal.append(1, 1, &[big(1), big(2)]).unwrap();
    let mut job = wal.begin_flush().unwrap().expect("something is buffered");
    assert!(
        wal.begin_flush().is_err(),
        "a second flush began while one was out"
    );
    // While the job is out: appends (also rolling segments) and reads go on.
    let later = wal.append(1, 3, &[big(3), big(4), big(5)]).unwrap();
    let read: Vec<Vec<u8>> = wal
        .entries(1, 1..=5)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(read, (1..=5).map(big).collect::<Vec<_>>());
    job.run().unwrap();
    let durable = wal.end_flush(job, Ok(())).unwrap();
    assert!(durable < later, "the job made later appends durable");
    assert_eq!(wal.durable_seq(), durable);
    // A crash now keeps what the job wrote and loses what came after it.
    sim.crash();
    let wal2 = open(&sim, &[]).unwrap();
    assert_eq!(wal2.entries(1, ..).unwrap().len(), 2);
    drop(wal2);
    // Flushing the rest makes everything durable.
    let mut wal = {
        let sim = SimFs::new();
        let mut wal = open(&sim, &[]).unwrap();
        wal.append(1, 1, &[big(1), big(2)]).unwrap();
        let mut job = wal.begin_flush().unwrap().unwrap();
        wal.append(1, 3, &[big(3)]).unwrap();
        job.run().unwrap();
        wal.end_flush(job, Ok(())).unwrap();
        assert_eq!(wal.flush().unwrap(), wal.pending_seq());
        sim.crash();
        open(&sim, &[]).unwrap()
    };
    assert_eq!(wal.entries(1, ..).unwrap().len(), 3);
    assert!(wal.flush().is_ok());
}

#[test]
fn a_failed_flush_job_poisons_the_wal() {
    let sim = SimFs::new();
    let mut wal = open(&sim, &[]).unwrap();
    wal.append(1, 1, &[payload(1, 20)]).unwrap();
    let mut job = wal.begin_flush().unwrap().unwrap();
    job.failpoints = Failpoints {
        armed: [Failpoint::BeforeSegmentSync].into_iter().collect(),
    };
    let outcome = job.run();
    assert!(outcome.is_err());
    assert!(wal.end_flush(job, outcome).is_err());
    assert!(is_poisoned(wal.append(1, 2, &[payload(2, 20)])));
}
