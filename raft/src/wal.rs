//! # The write-ahead log shared by every Raft group of a node
//!
//! One [`Wal`] per node stores the Raft logs, votes, commit points and purge points of all the
//! node's groups in one directory of segment files, written only through the [`Fs`] seam. It
//! knows nothing about openraft: entries, votes, commit points and "last purged" markers are
//! opaque bytes; the openraft adapter encodes them and maps our sequence numbers to its
//! callbacks.
//!
//! ## How it is used
//! The core is synchronous and deterministic: no clock, no thread, no `std::fs`.
//!
//! - Mutations — [`Wal::append`], [`Wal::save_vote`], [`Wal::save_committed`],
//!   [`Wal::truncate`], [`Wal::purge`], [`Wal::remove_group`] — check the log rules (W6), encode
//!   one record (an append may take several), buffer it in memory, update the in-memory state (so
//!   appended entries are readable at once) and return a [`Seq`]. They do no IO.
//! - [`Wal::flush`] writes everything buffered, for every group, and makes it durable with one
//!   fsync (plus one per extra segment the batch spilled into, and a directory sync when it
//!   created a segment file): this is the group commit. It returns the new
//!   [`Wal::durable_seq`].
//! - An operation is durable once `durable_seq() >= its seq`. The async caller runs a flush
//!   loop: while [`Wal::has_pending`], call `flush`, then fire the callbacks of every operation
//!   whose seq is now durable. Whatever all groups buffered between two flushes shares one
//!   fsync; operations that come while a flush holds the `Wal` wait for it and share the next.
//!   [`Wal::pending_bytes`] lets the caller push back when the buffer grows.
//! - **Votes are durable before they are answered**: the caller must not answer a vote request,
//!   nor campaign, with a vote saved by `save_vote` until `durable_seq() >=` the seq that
//!   `save_vote` returned. The same holds for openraft's append callback and everything else.
//! - Dropping a `Wal` discards what was not flushed (nothing is written on drop).
//! - A failed flush is fatal (W3): the `Wal` refuses every later call, reads included, with
//!   [`WalError::Poisoned`]. The node must stop and reopen (which recovers).
//!
//! ## Files
//! Segments are `dir/{id:020}.wal` (ids from 1 upward, zero-padded so names sort by id); other
//! names in the directory are ignored. All integers are little-endian; "bytes" means a `u32`
//! length followed by that many bytes.
//!
//! A segment is a 24-byte header — magic `STRATAWL`, format version `u32` (1), segment id `u64`,
//! CRC32 of those 20 bytes — followed by records. Each record is a frame:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `body_len` |
//! | 4 | 4 | `body_crc`: CRC32 (crc32fast, IEEE) of the body |
//! | 8 | 4 | `header_crc`: CRC32 of bytes 0..8 (so a damaged length is never trusted) |
//! | 12 | `body_len` | body: `kind: u8`, then the fields of the kind |
//!
//! | kind | record | fields after `kind` |
//! |---|---|---|
//! | 1 | Head | `count: u32`, then `count` group snapshots (below) |
//! | 2 | Entries | `group: u64`, `first: u64`, `count: u32`, then `count` entries (below) |
//! | 3 | Vote | `group: u64`, vote bytes |
//! | 4 | Committed | `group: u64`, committed bytes |
//! | 5 | Truncate | `group: u64`, `index: u64`: removes the entries `>= index` |
//! | 6 | Purge | `group: u64`, `index: u64`, payload bytes: removes the entries `<= index` |
//! | 7 | RemoveGroup | `group: u64`: forgets everything of the group |
//!
//! - A group snapshot is `group: u64`, `flags: u8` (1 vote, 2 committed, 4 purged, 8 entries),
//!   then the flagged fields in that order: vote bytes; committed bytes; purge `index: u64` and
//!   payload bytes; `first: u64` and `last: u64` of the live entries.
//! - An entry is `len: u32`, `crc: u32` (CRC32 of the payload), then the payload; the entries of
//!   one record have the indexes `first`, `first + 1`, …
//! - The purge payload is the adapter's "last purged" marker (e.g. the purged log id).
//!
//! ## Invariants (cited by number in assertions and tests)
//! - **W1** A record is used only after its header CRC and body CRC match. An entry payload read
//!   back from a segment is used only after its own CRC matches.
//! - **W2** Prefix durability. Buffered records are written in seq order. A segment's bytes are
//!   written and fsynced before any byte goes to its successor, a new segment's directory entry is
//!   synced before the flush returns, and `durable_seq` advances only after all of that
//!   succeeded. So the durable records are always a prefix of the record sequence: a crash loses
//!   at most a suffix of the unflushed operations, for each group a suffix too (never a hole).
//!   An append split into several records (see [`WalConfig::record_bytes_max`]) may keep a
//!   prefix of its entries; its seq is durable only when all of them are.
//! - **W3** Fail-stop. Any IO error inside `flush` (write, fsync, directory sync, removal of a
//!   dead segment) poisons the `Wal`. An fsync is never retried: after a failed fsync the kernel
//!   may have dropped the dirty pages, and a retry could report success for lost data.
//! - **W4** Self-contained segments. Every segment starts with its header and one Head record:
//!   the exact state of every group (vote, committed, purge point, first and last live index) as
//!   of just before the segment's next record. Head records appear nowhere else. Replaying a
//!   Head sets every group to exactly that state: groups it does not list are dropped, and
//!   locations of entries outside a group's range are forgotten.
//! - **W5** Reclaim. A segment is deleted only when it is not the tail, no live entry lies in it,
//!   and everything written so far is durable (at the end of a successful flush, or at open).
//!   Then, by W4, replaying any superset of the surviving segments in id order yields the same
//!   state: the Head of the next surviving segment restores every vote, purge point and commit
//!   point the deleted one held. So a deletion that a crash undoes is harmless, and deletions are
//!   not followed by a directory sync of their own.
//! - **W6** Log rules, per group. The live entries are exactly the indexes `first..=last`; a
//!   purge point, if any, is below `first`. An append starts at `last + 1` if there are entries,
//!   else at `purge index + 1` if there is a purge point, else anywhere; `truncate(i)` needs
//!   `i > purge index`; a purge never moves back; indexes stay below `u64::MAX`. Live calls that
//!   break a rule fail with an error and change nothing. Replay checks the same rules record by
//!   record, and at the end that every live entry of every group has a location.
//! - **W7** Only the tail segment receives writes, and open always starts a new tail. So a torn
//!   record can only be in the last segment, and every other segment ended on a record boundary,
//!   fully synced, before its successor was created.
//! - **W8** Open makes durable what it replayed (fsync of the last old segment after cutting its
//!   torn tail; fsync of the new tail and of the directory) before it returns, so nothing it
//!   serves can vanish in a later crash, even if the previous process died with writes still in
//!   the page cache.
//! - **W9** Every successful mutation takes the next seq (from 1 after each open; seqs are not
//!   persisted); `durable_seq() <= pending_seq()`; entries buffered and not yet written are read
//!   from the buffer, so reads never depend on durability.
//!
//! ## Recovery
//! Open lists the segments and replays them in id order (R1; gaps in the ids are normal, W5),
//! rebuilding every group's state and the location (segment, offset, length, CRC) of every live
//! entry. Then it starts a new tail segment whose Head holds the recovered state (W7, W8), and
//! deletes segments that hold no live entry (W5).
//!
//! How a torn tail is told from corruption:
//! - **R2** In a segment that is not the last, any damage is corruption: a damaged header, a
//!   frame whose header CRC or body CRC does not match, a frame that runs past the end of the
//!   file, a missing Head. By W7 such a segment was complete and synced before its successor
//!   existed, so a crash cannot explain it.
//! - **R3** In the last segment, a damaged frame at offset `o` (incomplete frame header, header
//!   CRC mismatch, length running past the end of the file, body CRC mismatch) is a **torn
//!   tail** if and only if no valid frame — header CRC, bounds and body CRC all matching — starts
//!   at any byte offset after `o`. The file is then cut to `o` (`set_len` + fsync) and recovery
//!   goes on. If a valid frame starts after `o`, the damage sits in the middle of data that was
//!   written after it: [`WalError::Corrupt`] naming the file and `o`. The same rule applies to a
//!   damaged segment header (`o` = 0, scanning from byte 1) and to a segment that ends before its
//!   Head is complete: that segment held nothing durable and is replaced by the new tail.
//! - **R4** A frame whose CRCs match but whose body does not decode, a Head out of place, or a
//!   record that breaks W6, is corruption wherever it is: a torn write cannot produce matching
//!   CRCs.
//! - **R5** A segment header whose CRC matches but whose magic, version or id (against the file
//!   name) is wrong is an error: the file is not one of ours.
//!
//! Limits of R3. A disk may persist unsynced sectors out of order, so a genuinely torn tail could
//! hold a complete valid frame after garbage; R3 then refuses to start (an operator looks) rather
//! than guess. And bit rot inside the very last record of the last segment looks exactly like a
//! torn write and is cut although it may have been acknowledged; no single-copy log can tell the
//! two apart (the group's other replicas still hold the entries).
//!
//! ## Memory
//! Per live entry the index keeps 24 bytes (segment, offset, length, CRC). Payloads live in the
//! pending buffer until written, then in a cache of recent appends bounded by
//! [`WalConfig::cache_bytes_max`] (reads of older entries go to the segment files through
//! `Fs::read_at` and do not fill the cache, so a lagging follower cannot evict the hot tail).

mod format;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_shard::fs::{Fs, FsFile, create_dir_all_durable};

use self::format::{
    ENTRIES_FIXED_LEN, ENTRY_HEADER_LEN, Frame, GroupSnapshot, GroupSnapshotRef, HeaderError,
    Record, SEGMENT_HEADER_LEN,
};

/// The largest vote, committed or purge payload, in bytes. They are small by nature (a term and a
/// node id, a log id), and every segment's Head repeats them for every group.
pub const META_BYTES_MAX: usize = 64 * 1024;

/// The sequence number of one mutation (W9). Durable once [`Wal::durable_seq`] reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

/// Settings of a [`Wal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// A new segment is started when the next record would grow the tail past this many bytes.
    /// A segment always takes at least one record after its Head, so one large record (or a
    /// large Head) can make a segment bigger.
    pub segment_bytes_target: u64,
    /// Byte budget of the cache of recently appended entry payloads (each entry is charged its
    /// length plus a fixed overhead). Payloads are compressed, and the log store keeps the
    /// newest entries decoded as well, so this backs up its cache rather than repeating it.
    pub cache_bytes_max: usize,
    /// The largest body of one Entries record. A larger append is split into several records;
    /// an entry that does not fit alone is refused with [`WalError::TooLarge`].
    pub record_bytes_max: usize,
    /// A negative control (`faults::Faults::skip_wal_fsync`): flushes skip the fsync.
    #[cfg(feature = "fault-injection")]
    pub skip_fsync: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes_target: 64 << 20,
            cache_bytes_max: 16 << 20,
            record_bytes_max: 16 << 20,
            #[cfg(feature = "fault-injection")]
            skip_fsync: false,
        }
    }
}

impl WalConfig {
    /// The smallest accepted `record_bytes_max`.
    pub const RECORD_BYTES_MIN: usize = 64;

    fn validate(&self) -> Result<()> {
        if self.record_bytes_max < Self::RECORD_BYTES_MIN
            || u32::try_from(self.record_bytes_max).is_err()
        {
            return Err(WalError::InvalidConfig(format!(
                "record_bytes_max {} is outside {}..=u32::MAX",
                self.record_bytes_max,
                Self::RECORD_BYTES_MIN
            )));
        }
        if self.segment_bytes_target == 0 {
            return Err(WalError::InvalidConfig(
                "segment_bytes_target must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The largest entry payload an Entries record of at most `record_bytes_max` can hold.
    fn entry_bytes_max(&self) -> usize {
        self.record_bytes_max - ENTRIES_FIXED_LEN - ENTRY_HEADER_LEN
    }
}

/// The purge point of a group: entries up to `index` are gone; `payload` is the adapter's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub index: u64,
    pub payload: Vec<u8>,
}

/// What the log of one group holds (see [`Wal::log_state`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogState {
    /// The first live entry, if any.
    pub first_index: Option<u64>,
    /// The last live entry, if any. openraft's "last log id" is this entry's, or the purge
    /// point's when the log holds no entry.
    pub last_index: Option<u64>,
    pub last_purged: Option<Purged>,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
}

/// One segment file and how many live entries it holds (W5: zero means it can go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u64,
    pub live_entries: u64,
}

/// Errors of the WAL. `Io`, `Corrupt`, `Incomplete` and `Poisoned` mean the node must stop;
/// the others refuse one call that broke a rule and change nothing.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL {op} failed on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt WAL segment {} at offset {offset}: {reason}", segment.display())]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("WAL group {group} is incomplete after replay: {reason}")]
    Incomplete { group: u64, reason: String },
    #[error("the WAL is unusable after an earlier failure: {cause}")]
    Poisoned { cause: String },
    #[error("group {group}: append at index {first}, but the next index is {expected}")]
    NotContiguous {
        group: u64,
        first: u64,
        expected: u64,
    },
    #[error("group {group}: cannot truncate at {index}, entries up to {purged} are purged")]
    TruncatePurged { group: u64, index: u64, purged: u64 },
    #[error("group {group}: cannot purge up to {index}, already purged up to {purged}")]
    PurgeBackwards { group: u64, index: u64, purged: u64 },
    #[error("group {group}: log index {index} is out of range")]
    IndexOutOfRange { group: u64, index: u64 },
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("invalid WAL config: {0}")]
    InvalidConfig(String),
    #[error("a WAL flush began while another was running (flushes must be serialized)")]
    FlushInProgress,
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Failpoints: compiled only in this crate's unit tests.

/// Named places around every sync where a unit test can make the WAL fail as if the disk had.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failpoint {
    /// Before the buffered bytes of a segment are written.
    BeforeWrite,
    /// After the bytes are written, before the segment fsync (at flush and at open).
    BeforeSegmentSync,
    /// After the segment fsync: the bytes are durable but the flush fails.
    AfterSegmentSync,
    /// After a new segment file is synced, before the directory sync (at flush and at open).
    BeforeDirSync,
    /// Before a dead segment file is removed.
    BeforeRemove,
    /// At open, after a torn tail was cut, before the cut is synced.
    BeforeTruncateSync,
}

#[derive(Debug, Default, Clone)]
struct Failpoints {
    #[cfg(test)]
    armed: BTreeSet<Failpoint>,
}

#[cfg(test)]
impl Failpoints {
    fn check(&self, point: Failpoint) -> io::Result<()> {
        if self.armed.contains(&point) {
            Err(io::Error::other(format!("failpoint: {point:?}")))
        } else {
            Ok(())
        }
    }
}

/// Fails with an io error on `$path` if the failpoint is armed; expands to nothing outside tests.
macro_rules! fail_point {
    ($failpoints:expr, $point:ident, $op:literal, $path:expr) => {
        #[cfg(test)]
        $failpoints
            .check(Failpoint::$point)
            .map_err(io_err($op, $path))?;
    };
}

// ---------------------------------------------------------------------------------------------
// In-memory state

/// Where a live entry's payload is in the segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryLoc {
    segment: u64,
    /// Offset of the payload in the segment file.
    offset: u64,
    len: u32,
    crc: u32,
}

#[derive(Debug, Default)]
struct GroupState {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<Purged>,
    /// First and last live index (W6).
    range: Option<(u64, u64)>,
    /// Locations of the live entries: exactly the indexes of `range` once replay is complete
    /// (during replay a subset: W4 may know entries whose segment comes later or was deleted).
    locs: BTreeMap<u64, EntryLoc>,
}

impl GroupState {
    /// Where the next append must start; `None` if anywhere (W6).
    fn next_index(&self) -> Option<u64> {
        match (self.range, &self.purged) {
            // Both are below u64::MAX (W6), so this cannot overflow.
            (Some((_, last)), _) => Some(last + 1),
            (None, Some(purged)) => Some(purged.index + 1),
            (None, None) => None,
        }
    }
}

/// Groups and per-segment live-entry counts; shared by live calls and replay so both apply the
/// same rules (W6).
#[derive(Debug, Default)]
struct LogIndex {
    groups: BTreeMap<u64, GroupState>,
    /// Every segment that exists or is buffered, with the number of live entries in it.
    live: BTreeMap<u64, u64>,
}

fn release(live: &mut BTreeMap<u64, u64>, loc: &EntryLoc) {
    let count = live
        .get_mut(&loc.segment)
        .expect("W5: a segment holding a live entry is known");
    assert!(
        *count > 0,
        "W5: live-entry count of segment {} underflows",
        loc.segment
    );
    *count -= 1;
}

impl LogIndex {
    /// Checks an append of `count` entries from `first`; returns the last index.
    fn check_append(&self, group: u64, first: u64, count: u64) -> Result<u64> {
        let last = first
            .checked_add(count - 1)
            .filter(|&last| last < u64::MAX)
            .ok_or(WalError::IndexOutOfRange {
                group,
                index: first,
            })?;
        if let Some(expected) = self.groups.get(&group).and_then(GroupState::next_index)
            && first != expected
        {
            return Err(WalError::NotContiguous {
                group,
                first,
                expected,
            });
        }
        Ok(last)
    }

    fn check_truncate(&self, group: u64, index: u64) -> Result<()> {
        if let Some(purged) = self.groups.get(&group).and_then(|g| g.purged.as_ref())
            && index <= purged.index
        {
            return Err(WalError::TruncatePurged {
                group,
                index,
                purged: purged.index,
            });
        }
        Ok(())
    }

    fn check_purge(&self, group: u64, index: u64) -> Result<()> {
        if index == u64::MAX {
            return Err(WalError::IndexOutOfRange { group, index });
        }
        if let Some(purged) = self.groups.get(&group).and_then(|g| g.purged.as_ref())
            && index < purged.index
        {
            return Err(WalError::PurgeBackwards {
                group,
                index,
                purged: purged.index,
            });
        }
        Ok(())
    }

    /// Adds entries `first..` at `locs`; `check_append` passed.
    fn add_entries(&mut self, group: u64, first: u64, locs: impl IntoIterator<Item = EntryLoc>) {
        let st = self.groups.entry(group).or_default();
        let mut index = first;
        for loc in locs {
            *self
                .live
                .get_mut(&loc.segment)
                .expect("W5: entries go to a known segment") += 1;
            let old = st.locs.insert(index, loc);
            assert!(
                old.is_none(),
                "W6: group {group} index {index} appended twice"
            );
            index += 1;
        }
        let last = index - 1;
        st.range = Some((st.range.map_or(first, |(f, _)| f), last));
    }

    fn truncate(&mut self, group: u64, index: u64) {
        let st = self.groups.entry(group).or_default();
        for loc in st.locs.split_off(&index).values() {
            release(&mut self.live, loc);
        }
        st.range = match st.range {
            Some((first, _)) if index <= first => None,
            Some((first, last)) => Some((first, last.min(index - 1))),
            None => None,
        };
    }

    fn purge(&mut self, group: u64, index: u64, payload: Vec<u8>) {
        let st = self.groups.entry(group).or_default();
        // check_purge keeps index below u64::MAX.
        let kept = st.locs.split_off(&(index + 1));
        for loc in std::mem::replace(&mut st.locs, kept).values() {
            release(&mut self.live, loc);
        }
        st.range = match st.range {
            Some((_, last)) if index >= last => None,
            Some((first, last)) => Some((first.max(index + 1), last)),
            None => None,
        };
        st.purged = Some(Purged { index, payload });
    }

    fn remove_group(&mut self, group: u64) {
        if let Some(st) = self.groups.remove(&group) {
            for loc in st.locs.values() {
                release(&mut self.live, loc);
            }
        }
    }

    /// Sets every group to the state a Head record lists (W4).
    fn apply_head(&mut self, snapshots: Vec<GroupSnapshot>) {
        let listed: BTreeSet<u64> = snapshots.iter().map(|s| s.group).collect();
        let unlisted: Vec<u64> = self
            .groups
            .keys()
            .filter(|g| !listed.contains(g))
            .copied()
            .collect();
        for group in unlisted {
            self.remove_group(group);
        }
        for snap in snapshots {
            let st = self.groups.entry(snap.group).or_default();
            st.vote = snap.vote;
            st.committed = snap.committed;
            st.purged = snap
                .purged
                .map(|(index, payload)| Purged { index, payload });
            st.range = snap.range;
            let (first, last) = snap.range.unwrap_or((1, 0));
            for (index, loc) in std::mem::take(&mut st.locs) {
                if (first..=last).contains(&index) {
                    st.locs.insert(index, loc);
                } else {
                    release(&mut self.live, &loc);
                }
            }
        }
    }

    /// The body of a Head record listing the state of every group now (W4).
    fn head_body(&self) -> Vec<u8> {
        format::encode_head(self.groups.iter().map(|(&group, st)| GroupSnapshotRef {
            group,
            vote: st.vote.as_deref(),
            committed: st.committed.as_deref(),
            purged: st.purged.as_ref().map(|p| (p.index, p.payload.as_slice())),
            range: st.range,
        }))
    }

    /// Applies one replayed record, checking the log rules (W6, R4).
    fn replay(&mut self, record: Record, segment: u64, body_offset: u64) -> Result<()> {
        match record {
            Record::Head(snapshots) => self.apply_head(snapshots),
            Record::Entries {
                group,
                first,
                entries,
            } => {
                self.check_append(group, first, entries.len() as u64)?;
                self.add_entries(
                    group,
                    first,
                    entries.iter().map(|span| EntryLoc {
                        segment,
                        offset: body_offset + span.offset as u64,
                        len: span.len,
                        crc: span.crc,
                    }),
                );
            }
            Record::Vote { group, vote } => self.groups.entry(group).or_default().vote = Some(vote),
            Record::Committed { group, committed } => {
                self.groups.entry(group).or_default().committed = Some(committed);
            }
            Record::Truncate { group, index } => {
                self.check_truncate(group, index)?;
                self.truncate(group, index);
            }
            Record::Purge {
                group,
                index,
                payload,
            } => {
                self.check_purge(group, index)?;
                self.purge(group, index, payload);
            }
            Record::RemoveGroup { group } => self.remove_group(group),
        }
        Ok(())
    }

    /// After replay: every live entry has a location (W6). A failure means a segment that held
    /// live entries is missing.
    fn check_complete(&self) -> Result<()> {
        for (&group, st) in &self.groups {
            let Some((first, last)) = st.range else {
                continue;
            };
            let expected = last - first + 1;
            if st.locs.len() as u64 != expected {
                return Err(WalError::Incomplete {
                    group,
                    reason: format!(
                        "entries {first}..={last} are live but {} of them were found \
                         (was a segment file removed?)",
                        st.locs.len()
                    ),
                });
            }
            if let Some(purged) = &st.purged
                && purged.index >= first
            {
                return Err(WalError::Incomplete {
                    group,
                    reason: format!("purged up to {} but entry {first} is live", purged.index),
                });
            }
        }
        Ok(())
    }
}

/// Recently appended payloads, bounded in bytes, evicted oldest first.
#[derive(Debug, Default)]
struct EntryCache {
    bytes_max: usize,
    bytes: usize,
    next_age: u64,
    entries: BTreeMap<(u64, u64), (u64, Vec<u8>)>,
    by_age: BTreeMap<u64, (u64, u64)>,
}

impl EntryCache {
    /// Charged per entry on top of its payload, so that empty payloads are bounded too.
    const ENTRY_OVERHEAD_BYTES: usize = 64;

    fn new(bytes_max: usize) -> Self {
        EntryCache {
            bytes_max,
            ..EntryCache::default()
        }
    }

    fn cost(payload: &[u8]) -> usize {
        payload.len() + Self::ENTRY_OVERHEAD_BYTES
    }

    fn insert(&mut self, key: (u64, u64), payload: &[u8]) {
        self.remove(key);
        if Self::cost(payload) > self.bytes_max {
            return;
        }
        let age = self.next_age;
        self.next_age += 1;
        self.bytes += Self::cost(payload);
        self.entries.insert(key, (age, payload.to_vec()));
        self.by_age.insert(age, key);
        while self.bytes > self.bytes_max {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((_, payload)) = self.entries.remove(&oldest) {
                self.bytes -= Self::cost(&payload);
            }
        }
    }

    fn remove(&mut self, key: (u64, u64)) {
        if let Some((age, payload)) = self.entries.remove(&key) {
            self.by_age.remove(&age);
            self.bytes -= Self::cost(&payload);
        }
    }

    /// Removes the group's entries with indexes in `first..=last`.
    fn remove_range(&mut self, group: u64, first: u64, last: u64) {
        let keys: Vec<(u64, u64)> = self
            .entries
            .range((group, first)..=(group, last))
            .map(|(&key, _)| key)
            .collect();
        for key in keys {
            self.remove(key);
        }
    }

    fn get(&self, group: u64, index: u64) -> Option<&[u8]> {
        self.entries
            .get(&(group, index))
            .map(|(_, payload)| payload.as_slice())
    }
}

/// Bytes buffered for one segment, to be written at `base` (the file's length by then).
#[derive(Debug, Clone)]
struct Chunk {
    segment: u64,
    base: u64,
    bytes: Vec<u8>,
}

/// How the replay of one segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentEnd {
    Clean,
    /// A torn tail starts here (R3).
    TornAt(u64),
    /// The header or the Head record is torn: the segment holds nothing durable (R3).
    TornHead,
}

/// Records taken out of the WAL by [`Wal::begin_flush`], to be written and synced by
/// [`FlushJob::run`] without holding the WAL.
pub struct FlushJob {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    chunks: Vec<Arc<Chunk>>,
    file: Box<dyn FsFile>,
    file_segment: u64,
    /// The seq that is durable once the job succeeds.
    upto: u64,
    /// Segments to delete once the job's records are durable (W5).
    dead: Vec<u64>,
    #[cfg_attr(not(test), allow(dead_code))]
    failpoints: Failpoints,
    /// The negative control `WalConfig::skip_fsync`.
    #[cfg(feature = "fault-injection")]
    skip_fsync: bool,
}

impl FlushJob {
    /// Writes the records (one fsync per segment touched, normally one; a directory sync if a
    /// segment file was created), then deletes the dead segments (W2, W5).
    pub fn run(&mut self) -> Result<()> {
        for chunk in &self.chunks {
            let path = segment_path(&self.dir, chunk.segment);
            let created = chunk.segment != self.file_segment;
            if created {
                assert!(
                    chunk.segment > self.file_segment && chunk.base == 0,
                    "W7: only a new tail segment is created"
                );
                // The previous file was synced in the previous iteration or flush (W2).
                self.file = self
                    .fs
                    .open_append(&path, true)
                    .map_err(io_err("create", &path))?;
                self.file_segment = chunk.segment;
            }
            fail_point!(self.failpoints, BeforeWrite, "write", &path);
            self.file
                .write_all(&chunk.bytes)
                .map_err(io_err("write", &path))?;
            fail_point!(self.failpoints, BeforeSegmentSync, "sync", &path);
            #[cfg(feature = "fault-injection")]
            let skip = self.skip_fsync;
            #[cfg(not(feature = "fault-injection"))]
            let skip = false;
            if !skip {
                self.file.sync().map_err(io_err("sync", &path))?;
            }
            fail_point!(self.failpoints, AfterSegmentSync, "sync", &path);
            if created {
                fail_point!(self.failpoints, BeforeDirSync, "sync", &self.dir);
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(io_err("sync", &self.dir))?;
            }
        }
        delete_segments(&*self.fs, &self.dir, &self.dead, &self.failpoints)
    }
}

/// Deletes segment files `ids` (W5); one that is already gone is fine (a removal that a crash
/// undid and the replay repeated).
#[cfg_attr(not(test), allow(unused_variables))]
fn delete_segments(fs: &dyn Fs, dir: &Path, ids: &[u64], failpoints: &Failpoints) -> Result<()> {
    for &id in ids {
        let path = segment_path(dir, id);
        fail_point!(failpoints, BeforeRemove, "remove", &path);
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The WAL

/// The write-ahead log of one node; see the module doc.
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: WalConfig,
    index: LogIndex,
    cache: EntryCache,
    /// The segment new records go to; its file may not exist yet (created by the next flush).
    tail: u64,
    /// Length of the tail segment including buffered bytes.
    tail_len: u64,
    /// Length of the tail's header and Head record.
    tail_head_len: u64,
    /// The open file and the segment it belongs to (`<= tail`); the file is out (`None`) while
    /// a [`FlushJob`] writes it.
    file: Option<Box<dyn FsFile>>,
    file_segment: u64,
    /// Buffered bytes in segment order; one chunk per segment.
    pending: Vec<Chunk>,
    /// Chunks a [`FlushJob`] is writing: still read from here until the job ends (W9).
    flushing: Vec<Arc<Chunk>>,
    pending_bytes: u64,
    last_seq: u64,
    durable_seq: u64,
    poisoned: Option<String>,
    /// Empty outside unit tests, where `fail_point!` expands to nothing.
    #[cfg_attr(not(test), allow(dead_code))]
    failpoints: Failpoints,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("groups", &self.index.groups.len())
            .field("segments", &self.index.live.len())
            .field("tail", &self.tail)
            .field("pending_bytes", &self.pending_bytes)
            .field("last_seq", &self.last_seq)
            .field("durable_seq", &self.durable_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` and recovers it (see "Recovery"). Returns only when
    /// what it recovered is durable (W8).
    pub fn open(fs: Arc<dyn Fs>, dir: impl Into<PathBuf>, config: WalConfig) -> Result<Wal> {
        Self::open_with(fs, dir.into(), config, Failpoints::default())
    }

    fn open_with(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        config: WalConfig,
        failpoints: Failpoints,
    ) -> Result<Wal> {
        config.validate()?;
        create_dir_all_durable(&*fs, &dir).map_err(io_err("create directory", &dir))?;
        let mut ids: Vec<u64> = fs
            .list(&dir)
            .map_err(io_err("list", &dir))?
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect();
        ids.sort_unstable();

        let mut index = LogIndex::default();
        let mut end = SegmentEnd::Clean;
        for (pos, &id) in ids.iter().enumerate() {
            let path = segment_path(&dir, id);
            let data = fs.read(&path).map_err(io_err("read", &path))?;
            index.live.insert(id, 0);
            end = replay_segment(&mut index, &data, id, &path, pos + 1 == ids.len())?;
        }
        index.check_complete()?;

        // W8: make the old tail durable as recovered, then start a new tail (W7).
        let tail = match ids.last() {
            None => 1,
            Some(&last) if end == SegmentEnd::TornHead => {
                // Nothing in it was durable: the new tail takes its place and name.
                index.live.remove(&last);
                last
            }
            Some(&last) => {
                let path = segment_path(&dir, last);
                let mut file = fs
                    .open_append(&path, false)
                    .map_err(io_err("open", &path))?;
                if let SegmentEnd::TornAt(offset) = end {
                    file.set_len(offset)
                        .map_err(io_err("cut torn tail of", &path))?;
                    fail_point!(failpoints, BeforeTruncateSync, "sync", &path);
                }
                file.sync().map_err(io_err("sync", &path))?;
                last.checked_add(1).ok_or_else(|| WalError::Corrupt {
                    segment: path.clone(),
                    offset: 0,
                    reason: "segment ids are exhausted".into(),
                })?
            }
        };
        let path = segment_path(&dir, tail);
        let mut head = format::segment_header(tail).to_vec();
        format::push_frame(&mut head, &index.head_body());
        let mut file = fs
            .open_append(&path, true)
            .map_err(io_err("create", &path))?;
        file.write_all(&head).map_err(io_err("write", &path))?;
        fail_point!(failpoints, BeforeSegmentSync, "sync", &path);
        file.sync().map_err(io_err("sync", &path))?;
        fail_point!(failpoints, BeforeDirSync, "sync", &dir);
        fs.sync_dir(&dir).map_err(io_err("sync", &dir))?;
        index.live.insert(tail, 0);

        let mut wal = Wal {
            fs,
            dir,
            cache: EntryCache::new(config.cache_bytes_max),
            config,
            index,
            tail,
            tail_len: head.len() as u64,
            tail_head_len: head.len() as u64,
            file: Some(file),
            file_segment: tail,
            pending: Vec::new(),
            flushing: Vec::new(),
            pending_bytes: 0,
            last_seq: 0,
            durable_seq: 0,
            poisoned: None,
            failpoints,
        };
        let dead = wal.dead_segments();
        delete_segments(&*wal.fs, &wal.dir, &dead, &wal.failpoints)?;
        for id in dead {
            wal.index.live.remove(&id);
        }
        Ok(wal)
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    // -----------------------------------------------------------------------------------------
    // Mutations

    /// Appends `entries` to `group` at indexes `first, first + 1, …` (W6: `first` must be the
    /// next index). Readable at once; durable once `durable_seq()` reaches the returned seq. An
    /// empty `entries` writes nothing and returns [`Wal::pending_seq`].
    pub fn append<B: AsRef<[u8]>>(&mut self, group: u64, first: u64, entries: &[B]) -> Result<Seq> {
        self.check_usable()?;
        if entries.is_empty() {
            return Ok(Seq(self.last_seq));
        }
        let max = self.config.entry_bytes_max();
        if let Some(big) = entries.iter().find(|e| e.as_ref().len() > max) {
            return Err(WalError::TooLarge {
                what: "entry",
                len: big.as_ref().len(),
                max,
            });
        }
        self.index
            .check_append(group, first, entries.len() as u64)?;
        let mut start = 0;
        while start < entries.len() {
            // As many entries as fit one record, at least one.
            let mut end = start + 1;
            let mut size = format::entries_body_len([entries[start].as_ref().len()].into_iter());
            while let Some(next) = entries.get(end) {
                let more = ENTRY_HEADER_LEN + next.as_ref().len();
                if size + more > self.config.record_bytes_max {
                    break;
                }
                size += more;
                end += 1;
            }
            let batch = &entries[start..end];
            let batch_first = first + start as u64;
            let (body, spans) = format::encode_entries(group, batch_first, batch);
            let (segment, body_offset) = self.buffer(&body);
            self.index.add_entries(
                group,
                batch_first,
                spans.iter().map(|span| EntryLoc {
                    segment,
                    offset: body_offset + span.offset as u64,
                    len: span.len,
                    crc: span.crc,
                }),
            );
            for (k, payload) in batch.iter().enumerate() {
                self.cache
                    .insert((group, batch_first + k as u64), payload.as_ref());
            }
            start = end;
        }
        Ok(self.next_seq())
    }

    /// Saves the vote of `group`. Do not answer with it before `durable_seq()` reaches the seq.
    pub fn save_vote(&mut self, group: u64, vote: &[u8]) -> Result<Seq> {
        self.check_usable()?;
        check_meta("vote", vote)?;
        self.buffer(&format::encode_vote(group, vote));
        self.index.groups.entry(group).or_default().vote = Some(vote.to_vec());
        Ok(self.next_seq())
    }

    /// Saves the commit point of `group` (opaque to the WAL).
    pub fn save_committed(&mut self, group: u64, committed: &[u8]) -> Result<Seq> {
        self.check_usable()?;
        check_meta("committed", committed)?;
        self.buffer(&format::encode_committed(group, committed));
        self.index.groups.entry(group).or_default().committed = Some(committed.to_vec());
        Ok(self.next_seq())
    }

    /// Removes the entries of `group` with index `>= index` (W6: `index` must be above the
    /// purge point). An index past the last entry removes nothing but is still recorded.
    pub fn truncate(&mut self, group: u64, index: u64) -> Result<Seq> {
        self.check_usable()?;
        self.index.check_truncate(group, index)?;
        self.buffer(&format::encode_truncate(group, index));
        self.index.truncate(group, index);
        self.cache.remove_range(group, index, u64::MAX);
        Ok(self.next_seq())
    }

    /// Removes the entries of `group` with index `<= index` and records `payload` as the "last
    /// purged" marker. `index` may lie past the last entry (after a snapshot install); the next
    /// append then starts at `index + 1`. Segments that no longer hold a live entry are deleted
    /// by the flush that makes this durable (W5).
    pub fn purge(&mut self, group: u64, index: u64, payload: &[u8]) -> Result<Seq> {
        self.check_usable()?;
        check_meta("purge payload", payload)?;
        self.index.check_purge(group, index)?;
        self.buffer(&format::encode_purge(group, index, payload));
        self.index.purge(group, index, payload.to_vec());
        self.cache.remove_range(group, 0, index);
        Ok(self.next_seq())
    }

    /// Forgets everything of `group` (its replica left this node).
    pub fn remove_group(&mut self, group: u64) -> Result<Seq> {
        self.check_usable()?;
        self.buffer(&format::encode_remove_group(group));
        self.index.remove_group(group);
        self.cache.remove_range(group, 0, u64::MAX);
        Ok(self.next_seq())
    }

    // -----------------------------------------------------------------------------------------
    // Durability

    /// Writes every buffered record and makes it durable (W2): one fsync per segment touched
    /// (normally one), a directory sync if a segment file was created, then deletes the segments
    /// no live entry needs (W5). Returns the new durable seq. Any failure poisons the WAL (W3).
    pub fn flush(&mut self) -> Result<Seq> {
        match self.begin_flush()? {
            None => Ok(Seq(self.durable_seq)),
            Some(mut job) => {
                let result = job.run();
                self.end_flush(job, result)
            }
        }
    }

    /// Takes what is buffered out of the WAL for [`FlushJob::run`], which writes and syncs it
    /// without borrowing the WAL: appends (and reads) go on meanwhile, and [`Wal::end_flush`]
    /// accounts the outcome. `None` when nothing is buffered. One job at a time.
    pub fn begin_flush(&mut self) -> Result<Option<FlushJob>> {
        self.check_usable()?;
        if self.file.is_none() {
            return Err(WalError::FlushInProgress);
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let file = self.file.take().expect("checked above");
        let chunks: Vec<Arc<Chunk>> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(Arc::new)
            .collect();
        self.pending_bytes = 0;
        self.flushing.clone_from(&chunks);
        // Nothing is buffered now, so segments that hold no live entry are superseded by
        // records in this job: they go once it is durable (W5).
        let dead = self.dead_segments();
        Ok(Some(FlushJob {
            fs: Arc::clone(&self.fs),
            dir: self.dir.clone(),
            chunks,
            file,
            file_segment: self.file_segment,
            upto: self.last_seq,
            dead,
            failpoints: self.failpoints.clone(),
            #[cfg(feature = "fault-injection")]
            skip_fsync: self.config.skip_fsync,
        }))
    }

    /// Accounts a finished [`FlushJob`]: on success its records are durable and its dead
    /// segments gone; a failure poisons the WAL (W3). Returns the new durable seq.
    pub fn end_flush(&mut self, job: FlushJob, result: Result<()>) -> Result<Seq> {
        self.file = Some(job.file);
        self.file_segment = job.file_segment;
        self.flushing.clear();
        if let Err(e) = result {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        self.durable_seq = self.durable_seq.max(job.upto);
        for id in job.dead {
            self.index.live.remove(&id);
        }
        Ok(Seq(self.durable_seq))
    }

    /// Every mutation with a seq up to this one is durable.
    pub fn durable_seq(&self) -> Seq {
        Seq(self.durable_seq)
    }

    /// The seq of the latest mutation (durable or not).
    pub fn pending_seq(&self) -> Seq {
        Seq(self.last_seq)
    }

    /// Whether some mutation awaits a flush.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes buffered for the next flush (for backpressure).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// The live entries of `group` with indexes in `range` (only those present; none for an
    /// unknown group), in index order.
    pub fn entries(&self, group: u64, range: impl RangeBounds<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        self.check_usable()?;
        let Some(st) = self.index.groups.get(&group) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&e) => match e.checked_sub(1) {
                Some(e) => e,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // Adjacent entries of one segment that must come from disk, read with one `read_at`.
        let mut run: Vec<(u64, EntryLoc)> = Vec::new();
        for (&index, &loc) in st.locs.range(start..=end) {
            if let Some(payload) = self
                .cache
                .get(group, index)
                .or_else(|| self.buffered_payload(&loc))
            {
                self.read_run(group, &mut run, &mut out)?;
                out.push((index, payload.to_vec()));
                continue;
            }
            if let Some((_, prev)) = run.last()
                && (prev.segment != loc.segment
                    || prev.offset + u64::from(prev.len) + ENTRY_HEADER_LEN as u64 != loc.offset)
            {
                self.read_run(group, &mut run, &mut out)?;
            }
            run.push((index, loc));
        }
        self.read_run(group, &mut run, &mut out)?;
        Ok(out)
    }

    /// The first and last live index of `group`, if it has entries.
    pub fn live_range(&self, group: u64) -> Option<(u64, u64)> {
        self.index.groups.get(&group).and_then(|st| st.range)
    }

    /// The log state of `group` (all `None` for an unknown group).
    pub fn log_state(&self, group: u64) -> Result<LogState> {
        self.check_usable()?;
        Ok(match self.index.groups.get(&group) {
            None => LogState::default(),
            Some(st) => LogState {
                first_index: st.range.map(|(first, _)| first),
                last_index: st.range.map(|(_, last)| last),
                last_purged: st.purged.clone(),
                vote: st.vote.clone(),
                committed: st.committed.clone(),
            },
        })
    }

    /// The groups this WAL holds state for, in id order.
    pub fn groups(&self) -> Vec<u64> {
        self.index.groups.keys().copied().collect()
    }

    /// The segments (existing or buffered), in id order; the last is the tail.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.index
            .live
            .iter()
            .map(|(&id, &live_entries)| SegmentInfo { id, live_entries })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(WalError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn next_seq(&mut self) -> Seq {
        self.last_seq += 1;
        Seq(self.last_seq)
    }

    /// Buffers one record for the tail, starting a new segment first if the record would grow
    /// the tail past its target; returns the segment and the file offset of the body.
    fn buffer(&mut self, body: &[u8]) -> (u64, u64) {
        let frame_len = format::frame_len(body.len()) as u64;
        if self.tail_len + frame_len > self.config.segment_bytes_target
            && self.tail_len > self.tail_head_len
        {
            self.roll();
        }
        let segment = self.tail;
        if self.pending.last().is_none_or(|c| c.segment != segment) {
            self.pending.push(Chunk {
                segment,
                base: self.tail_len,
                bytes: Vec::new(),
            });
        }
        let chunk = self.pending.last_mut().expect("pushed above");
        let at = format::push_frame(&mut chunk.bytes, body);
        let body_offset = chunk.base + at as u64;
        self.tail_len += frame_len;
        self.pending_bytes += frame_len;
        (segment, body_offset)
    }

    /// Starts a new tail segment (in memory; the next flush creates the file). Its Head captures
    /// the state before the record that triggered the roll (W4).
    fn roll(&mut self) {
        let id = self.tail + 1;
        let mut bytes = format::segment_header(id).to_vec();
        format::push_frame(&mut bytes, &self.index.head_body());
        self.tail = id;
        self.tail_len = bytes.len() as u64;
        self.tail_head_len = self.tail_len;
        self.pending_bytes += self.tail_len;
        self.index.live.insert(id, 0);
        self.pending.push(Chunk {
            segment: id,
            base: 0,
            bytes,
        });
    }

    /// Writes and syncs the buffered chunks in order (W2).
    /// Segments below the tail that hold no live entry (W5).
    fn dead_segments(&self) -> Vec<u64> {
        self.index
            .live
            .range(..self.tail)
            .filter(|&(_, &live)| live == 0)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The payload of a buffered (not yet written) entry (W9).
    fn buffered_payload(&self, loc: &EntryLoc) -> Option<&[u8]> {
        let holds = |c: &Chunk| {
            c.segment == loc.segment
                && loc.offset >= c.base
                && loc.offset < c.base + c.bytes.len() as u64
        };
        let chunk = self
            .pending
            .iter()
            .find(|c| holds(c))
            .or_else(|| self.flushing.iter().map(|c| &**c).find(|c| holds(c)))?;
        let start = usize::try_from(loc.offset - chunk.base).ok()?;
        chunk.bytes.get(start..start + loc.len as usize)
    }

    /// Reads a run of adjacent entries of one segment with one `read_at`, checking each CRC
    /// (W1), and empties the run.
    fn read_run(
        &self,
        group: u64,
        run: &mut Vec<(u64, EntryLoc)>,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<()> {
        let (Some(&(_, first)), Some(&(_, last))) = (run.first(), run.last()) else {
            return Ok(());
        };
        let path = segment_path(&self.dir, first.segment);
        let len = last.offset + u64::from(last.len) - first.offset;
        let len = usize::try_from(len).expect("a run lies within one segment in memory");
        let bytes = self
            .fs
            .read_at(&path, first.offset, len)
            .map_err(io_err("read", &path))?;
        for (index, loc) in run.drain(..) {
            let start = (loc.offset - first.offset) as usize;
            let payload = &bytes[start..start + loc.len as usize];
            if crc32fast::hash(payload) != loc.crc {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset: loc.offset - ENTRY_HEADER_LEN as u64,
                    reason: format!("group {group} entry {index}: payload CRC mismatch"),
                });
            }
            out.push((index, payload.to_vec()));
        }
        Ok(())
    }
}

fn check_meta(what: &'static str, bytes: &[u8]) -> Result<()> {
    if bytes.len() > META_BYTES_MAX {
        return Err(WalError::TooLarge {
            what,
            len: bytes.len(),
            max: META_BYTES_MAX,
        });
    }
    Ok(())
}

/// Replays one segment into `index` (rules R2–R5).
fn replay_segment(
    index: &mut LogIndex,
    data: &[u8],
    id: u64,
    path: &Path,
    is_last: bool,
) -> Result<SegmentEnd> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        segment: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    // Damage at `offset`: Ok if it is a torn tail (R3), the error otherwise (R2).
    let torn_or_corrupt = |offset: usize, reason: &str| -> Result<()> {
        if !is_last {
            return Err(corrupt(
                offset,
                format!("{reason} (not the last segment, so not a torn write)"),
            ));
        }
        if let Some(valid) = format::find_valid_frame(data, offset + 1) {
            return Err(corrupt(
                offset,
                format!("{reason}, but a valid record follows at offset {valid}"),
            ));
        }
        Ok(())
    };
    match format::check_segment_header(data, id) {
        Ok(()) => {}
        Err(HeaderError::Mismatch(reason)) => return Err(corrupt(0, reason)),
        Err(HeaderError::Damaged(reason)) => {
            torn_or_corrupt(0, reason)?;
            return Ok(SegmentEnd::TornHead);
        }
    }
    let mut offset = SEGMENT_HEADER_LEN;
    let mut seen_head = false;
    loop {
        match format::read_frame(data, offset) {
            Frame::End if seen_head => return Ok(SegmentEnd::Clean),
            Frame::End => {
                torn_or_corrupt(offset, "the segment ends before its head record")?;
                return Ok(SegmentEnd::TornHead);
            }
            Frame::Damaged(reason) => {
                torn_or_corrupt(offset, reason)?;
                return Ok(if seen_head {
                    SegmentEnd::TornAt(offset as u64)
                } else {
                    SegmentEnd::TornHead
                });
            }
            Frame::Valid { body, next } => {
                let record = format::decode(&data[body.clone()]).map_err(|r| corrupt(offset, r))?;
                let is_head = matches!(record, Record::Head(_));
                if is_head == seen_head {
                    let reason = if is_head {
                        "a head record after the start of the segment"
                    } else {
                        "the segment does not start with a head record"
                    };
                    return Err(corrupt(offset, reason.into()));
                }
                seen_head = true;
                index
                    .replay(record, id, body.start as u64)
                    .map_err(|e| corrupt(offset, e.to_string()))?;
                offset = next;
            }
        }
    }
}
