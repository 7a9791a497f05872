//! openraft's log storage for every group of a node, on the one shared [`Wal`].
//!
//! [`SharedWal`] owns the node's WAL and its group-commit loop ([`SharedWal::run_flusher`]):
//! appends of all groups are buffered; the loop flushes whatever is pending with one fsync and
//! then completes every append that fsync covered (openraft's [`IOFlushed`] callbacks fire only
//! after the fsync, L1). Each group gets a cheap [`WalLogStore`] handle.
//!
//! Recently appended entries are also kept decoded ([`DecodedCache`], its own byte budget):
//! openraft reads every entry back once to apply it and once per follower to replicate it, and
//! the cache saves reading, decompressing and checking it each time (when entries still held
//! their series labels decoded, decoding was about 30 % of the commit benchmark).
//!
//! ## Invariants
//! - L4. The decoded cache holds, for each (group, index) it has, exactly the entry the WAL has
//!   there: appends insert, truncate / purge / group removal remove, and a read is served from
//!   it only when it covers the whole requested range; otherwise from the WAL.
//! - L1. An append's callback fires only once `durable_seq >= its seq`; a failed flush fails
//!   every waiting callback and poisons the WAL (the node must restart).
//! - L2. `save_vote` returns only after the vote is durable (it flushes itself).
//! - L3. Entries are readable as soon as `append` returns (the WAL keeps them in memory).
//! - L5. No lock that appends take is held during a write or fsync ([`Wal::begin_flush`]);
//!   flushes themselves are serialized.
//!
//! The flush runs on the async worker that polls the group-commit loop (deterministic in the
//! simulator); appends do not wait for it (L5), but the worker is busy for the fsync.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use strata_shard::Fs;
use tokio::sync::Notify;

use crate::codec;
use crate::types::{Entry, GroupId, LogId, TypeConfig, Vote};
use crate::wal::{Seq, Wal, WalConfig, WalError};

/// Decoded copies of recently appended entries (L4), evicted oldest first past a byte budget.
struct DecodedCache {
    entries: BTreeMap<(GroupId, u64), (Entry, usize)>,
    /// Insertion order, for eviction; may hold keys already removed (skipped when popped).
    order: VecDeque<(GroupId, u64)>,
    bytes: usize,
    budget: usize,
}

impl DecodedCache {
    fn insert(&mut self, group: GroupId, entry: Entry, weight: usize) {
        let key = (group, entry.log_id.index);
        if let Some((_, old)) = self.entries.insert(key, (entry, weight)) {
            self.bytes -= old;
        }
        self.bytes += weight;
        self.order.push_back(key);
        while self.bytes > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, w)) = self.entries.remove(&oldest) {
                self.bytes -= w;
            }
        }
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    /// Removes `group`'s entries with indexes in `from..=to`.
    fn remove(&mut self, group: GroupId, from: u64, to: u64) {
        if from > to {
            return;
        }
        let keys: Vec<_> = self
            .entries
            .range((group, from)..=(group, to))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some((_, w)) = self.entries.remove(&k) {
                self.bytes -= w;
            }
        }
    }

    /// Clones of `group`'s entries `from..=to`, if the cache holds every one of them.
    fn get(&self, group: GroupId, from: u64, to: u64) -> Option<Vec<Entry>> {
        let want = usize::try_from(to - from + 1).ok()?;
        let hits: Vec<Entry> = self
            .entries
            .range((group, from)..=(group, to))
            .map(|(_, (e, _))| e.clone())
            .collect();
        (hits.len() == want).then_some(hits)
    }
}

/// The first byte of a WAL entry payload: how the rest is encoded. Snappy (raw format) of the
/// entry's `codec` encoding: write batches repeat label names and values, and compressing them
/// cuts the bytes written and fsynced per sample several times over.
const PAYLOAD_SNAPPY: u8 = 1;

/// The WAL payload of `e`, and the length of its uncompressed encoding.
fn encode_payload(e: &Entry) -> (Vec<u8>, usize) {
    let plain = codec::encode(e, codec::put_entry);
    let mut payload = vec![0; 1 + snap::raw::max_compress_len(plain.len())];
    payload[0] = PAYLOAD_SNAPPY;
    let n = snap::raw::Encoder::new()
        .compress(&plain, &mut payload[1..])
        .expect("the buffer has max_compress_len bytes");
    payload.truncate(1 + n);
    (payload, plain.len())
}

fn decode_payload(payload: &[u8]) -> strata_shard::Result<Entry> {
    let corrupt = |reason: String| strata_shard::Error::corrupt("WAL entry payload", reason);
    match payload.split_first() {
        Some((&PAYLOAD_SNAPPY, compressed)) => {
            let plain = snap::raw::Decoder::new()
                .decompress_vec(compressed)
                .map_err(|e| corrupt(format!("snappy: {e}")))?;
            codec::decode(&plain, "WAL entry", codec::get_entry)
        }
        Some((tag, _)) => Err(corrupt(format!("unknown encoding tag {tag}"))),
        None => Err(corrupt("empty".into())),
    }
}

/// A decoded entry is charged its encoded length (a write batch stays encoded in memory,
/// `strata_shard::batch`) plus this for the entry's own structures.
const ENTRY_OVERHEAD: usize = 256;

struct State {
    wal: Wal,
    decoded: DecodedCache,
    /// Appends waiting for the fsync that covers them, in seq order.
    waiting: Vec<(Seq, IOFlushed<TypeConfig>)>,
}

/// A node's WAL shared by all its groups, with the group-commit loop.
pub struct SharedWal {
    state: Mutex<State>,
    /// Held for a whole flush: the group-commit loop and `save_vote` flush one at a time.
    flushing: Mutex<()>,
    pending: Notify,
}

/// Runs `f`, which blocks in a write or fsync, so that it does not stall the runtime: on
/// tokio's multi-threaded runtime (a node) the worker hands its other tasks on first
/// (`block_in_place`); a node in one process with three WALs on two cores had both workers
/// blocked in fsyncs a good part of the time, and took a third less than it could. On a
/// current-thread runtime (the simulator) and outside any runtime it just runs `f`, so a
/// simulated run stays on its one thread (determinism).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn wal_io(e: WalError) -> io::Error {
    io::Error::other(e)
}

/// Default budget of the decoded-entry cache. It should hold every entry between its append
/// and its apply and replication on all of a node's groups: when it did not (16 MiB of
/// encoded entries, with 16 groups × 2 proposals of 5 000 samples in flight), the commit
/// benchmark fell by 2-3× to decoding entries again. 64 MiB of encoded entries was enough.
pub const DECODED_CACHE_BYTES_DEFAULT: usize = 64 << 20;

impl SharedWal {
    /// Opens the WAL with the default decoded-cache budget.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        config: WalConfig,
    ) -> Result<Arc<Self>, WalError> {
        Self::open_with(fs, dir, config, DECODED_CACHE_BYTES_DEFAULT)
    }

    /// Opens the WAL; `decoded_cache_bytes_max` bounds the decoded copies of recent entries.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        config: WalConfig,
        decoded_cache_bytes_max: usize,
    ) -> Result<Arc<Self>, WalError> {
        Ok(Arc::new(SharedWal {
            state: Mutex::new(State {
                decoded: DecodedCache {
                    entries: BTreeMap::new(),
                    order: VecDeque::new(),
                    bytes: 0,
                    budget: decoded_cache_bytes_max,
                },
                wal: Wal::open(fs, dir, config)?,
                waiting: Vec::new(),
            }),
            flushing: Mutex::new(()),
            pending: Notify::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log store of one group.
    pub fn group(self: &Arc<Self>, group: GroupId) -> WalLogStore {
        WalLogStore {
            group,
            wal: Arc::clone(self),
        }
    }

    /// Forgets every record of `group` (its replica was dropped), durably.
    pub fn remove_group(&self, group: GroupId) -> Result<(), io::Error> {
        {
            let mut st = self.lock();
            st.wal.remove_group(group).map_err(wal_io)?;
            st.decoded.remove(group, 0, u64::MAX);
        }
        self.flush_and_complete()
    }

    /// The groups that have records in the WAL.
    pub fn groups(&self) -> Vec<GroupId> {
        self.lock().wal.groups()
    }

    /// The group-commit loop: run it on one task per node for as long as the node lives.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            self.pending.notified().await;
            if self.flush_and_complete().is_err() {
                // The WAL is poisoned and every waiting append was failed (L1); openraft
                // reports the groups fatal and the node must restart.
                return;
            }
        }
    }

    /// Flushes what is pending (one fsync for every group) and completes covered appends.
    /// The WAL is locked only to take the buffered records and to account the result, not
    /// during the write and fsync, so appends of every group go on meanwhile (L5).
    fn flush_and_complete(&self) -> Result<(), io::Error> {
        let _one_flush_at_a_time = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        let job = self.lock().wal.begin_flush();
        let result = match job {
            Ok(None) => Ok(()),
            Ok(Some(mut job)) => {
                let outcome = blocking(|| job.run());
                self.lock().wal.end_flush(job, outcome).map(|_| ())
            }
            Err(e) => Err(e),
        };
        let (done, result) = {
            let mut st = self.lock();
            let durable = st.wal.durable_seq();
            let split = match &result {
                Ok(()) => st.waiting.partition_point(|(seq, _)| *seq <= durable),
                Err(_) => st.waiting.len(),
            };
            let done: Vec<_> = st.waiting.drain(..split).collect();
            (done, result.map_err(wal_io))
        };
        for (_, callback) in done {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            callback.io_completed(outcome);
        }
        result
    }
}

/// The log storage of one group on the shared WAL.
#[derive(Clone)]
pub struct WalLogStore {
    group: GroupId,
    wal: Arc<SharedWal>,
}

impl WalLogStore {
    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, io::Error> {
        let raw = {
            let st = self.wal.lock();
            let Some((first, last)) = st.wal.live_range(self.group) else {
                return Ok(Vec::new());
            };
            let from = match range.start_bound() {
                Bound::Included(&s) => s,
                Bound::Excluded(&s) => s.saturating_add(1),
                Bound::Unbounded => first,
            }
            .max(first);
            let to = match range.end_bound() {
                Bound::Included(&e) => Some(e),
                Bound::Excluded(&e) => e.checked_sub(1),
                Bound::Unbounded => Some(last),
            }
            .map(|to| to.min(last));
            match to {
                None => return Ok(Vec::new()),
                Some(to) if from > to => return Ok(Vec::new()),
                Some(to) => {
                    if let Some(hit) = st.decoded.get(self.group, from, to) {
                        return Ok(hit);
                    }
                    st.wal.entries(self.group, from..=to).map_err(wal_io)?
                }
            }
        };
        raw.iter()
            .map(|(_, bytes)| decode_payload(bytes).map_err(codec::to_io))
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for WalLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.entries(range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let state = self.wal.lock().wal.log_state(self.group).map_err(wal_io)?;
        state
            .vote
            .map(|b| codec::decode(&b, "WAL vote", codec::get_vote).map_err(codec::to_io))
            .transpose()
    }
}

impl RaftLogStorage<TypeConfig> for WalLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.wal.lock().wal.log_state(self.group).map_err(wal_io)?;
        let last_purged_log_id = state
            .last_purged
            .map(|p| {
                codec::decode(&p.payload, "WAL purge point", codec::get_log_id)
                    .map_err(codec::to_io)
            })
            .transpose()?;
        let last_log_id = match state.last_index {
            Some(last) => self.entries(last..=last)?.pop().map(|e| e.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = codec::encode(vote, codec::put_vote);
        self.wal
            .lock()
            .wal
            .save_vote(self.group, &bytes)
            .map_err(wal_io)?;
        // L2: durable before openraft acts on it.
        self.wal.flush_and_complete()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let Some(committed) = committed else {
            return Ok(());
        };
        let bytes = codec::encode(&committed, codec::put_log_id);
        self.wal
            .lock()
            .wal
            .save_committed(self.group, &bytes)
            .map_err(wal_io)?;
        self.wal.pending.notify_one();
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let state = self.wal.lock().wal.log_state(self.group).map_err(wal_io)?;
        state
            .committed
            .map(|b| codec::decode(&b, "WAL commit point", codec::get_log_id).map_err(codec::to_io))
            .transpose()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut first = None;
        let mut payloads = Vec::new();
        let mut decoded = Vec::new();
        for e in entries {
            first.get_or_insert(e.log_id.index);
            let (payload, plain_len) = encode_payload(&e);
            payloads.push(payload);
            decoded.push((e, plain_len));
        }
        {
            let mut st = self.wal.lock();
            let seq = match first {
                Some(first) => st
                    .wal
                    .append(self.group, first, &payloads)
                    .map_err(wal_io)?,
                None => st.wal.pending_seq(),
            };
            for (e, plain_len) in decoded {
                let weight = plain_len + ENTRY_OVERHEAD;
                st.decoded.insert(self.group, e, weight);
            }
            st.waiting.push((seq, callback));
        }
        self.wal.pending.notify_one();
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        {
            let mut st = self.wal.lock();
            st.wal.truncate(self.group, from).map_err(wal_io)?;
            st.decoded.remove(self.group, from, u64::MAX);
        }
        self.wal.pending.notify_one();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let marker = codec::encode(&log_id, codec::put_log_id);
        {
            let mut st = self.wal.lock();
            st.wal
                .purge(self.group, log_id.index, &marker)
                .map_err(wal_io)?;
            st.decoded.remove(self.group, 0, log_id.index);
        }
        self.wal.pending.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderId;

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn decoded_cache_serves_only_whole_ranges_and_evicts_oldest_first() {
        let mut c = DecodedCache {
            entries: BTreeMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget: 50,
        };
        for i in 1..=5 {
            c.insert(7, entry(i), 10);
        }
        c.insert(8, entry(1), 10);
        // Over budget: group 7's entry 1 went first.
        assert_eq!(c.bytes, 50);
        assert_eq!(indexes(c.get(7, 2, 5)), Some(vec![2, 3, 4, 5]));
        assert_eq!(indexes(c.get(7, 1, 5)), None, "a partial hit is a miss");
        assert_eq!(indexes(c.get(8, 1, 1)), Some(vec![1]));
        // Truncation and purge remove exactly their ranges.
        c.remove(7, 4, u64::MAX);
        assert_eq!(indexes(c.get(7, 2, 3)), Some(vec![2, 3]));
        assert_eq!(indexes(c.get(7, 3, 4)), None);
        c.remove(7, 0, 2);
        assert_eq!(indexes(c.get(7, 3, 3)), Some(vec![3]));
        assert_eq!(c.bytes, 20);
        // Re-appending an index replaces it without double-charging.
        c.insert(7, entry(3), 10);
        assert_eq!(c.bytes, 20);
    }
}
