//! The engine of one shard: where samples are appended, persisted, compacted, expired and read.
//!
//! ## Data layout
//! - **Series table**: `SeriesRef` (dense u32, never reused within a process) → [`MemSeries`],
//!   found by `SeriesId` and then by full key comparison (S1). The inverted [`Index`] maps labels
//!   to refs.
//! - **Head** (memory, per series): the open chunk (`head`, in-order appends), `frozen` chunks cut
//!   when full ([`CHUNK_SAMPLES_MAX`]) or when a sample crosses a block boundary (S6), and `ooo`,
//!   the samples that arrived at or before the series' newest timestamp.
//! - **Blocks** (files): per tier, immutable [`Block`]s over left-open buckets `(end - size, end]`.
//!   Raw buckets are `block_ms` wide; rollup blocks start at the same width and are compacted into
//!   1-day (1m tier) and 7-day (1h tier) blocks.
//! - **Checkpoint** (`checkpoint` file, replaced atomically): the list of published blocks and
//!   the whole head. It is the only root: what it does not name does not exist (orphans are
//!   deleted on open), and what it names survives a crash (S4).
//!
//! ## Life of a sample
//! `append` → refused outside `±TS_ABS_MAX_MS` (S7) or behind the raw retention horizon → newer
//! than the series' newest sample: appended to the open chunk; otherwise looked up (head, then raw
//! blocks): same bits = idempotent duplicate, other bits = refused (D1, first write wins), absent
//! = kept in `ooo` if inside the out-of-order window, else refused. Checking for a stored value
//! before the window makes a late retry of an acknowledged write a duplicate, not an error. A
//! series is created, or re-activated under the limits, only when a sample of it is stored. `seal` moves every head sample at or before a block boundary into new raw
//! blocks, writes the matching 1m/1h rollup records, and publishes a checkpoint.
//!
//! ## Rollups and dirty windows
//! A rollup window `(e - w, e]` is read from rollup blocks only while the series has no
//! unpersisted sample at or before `e`; otherwise (the window is *dirty*: late data arrived, or
//! it is still in the head) it is recomputed from raw data before it is read. At the next seal the
//! recomputed records are written to a newer block; for the same window the newer block wins.
//!
//! ## Time
//! The engine reads no clock: retention takes `now_ms` as an argument, the out-of-order window is
//! relative to each series' newest sample, and the seal cut is derived from the data (S3).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::batch::WriteBatch;
use crate::block::{self, Block, BlockWriter, Payload, RawChunk};
use crate::chunk::{self, CHUNK_SAMPLES_MAX, ChunkEncoder};
use crate::codec::{PutExt, Reader};
use crate::error::{Error, Result};
use crate::fs::{Fs, create_dir_all_durable, write_file_atomic};
use crate::index::{Index, SeriesRef};
use crate::matcher::Matcher;
use crate::partial::{self, PartialResult};
use crate::query::PartialQuery;
use crate::rollup::{self, RollupRecord, Tier, window_end};
use crate::series::{Labels, Sample, SeriesKey, TS_ABS_MAX_MS, Tenant};

const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// How long each tier keeps data. Defaults follow common practice: raw 15 days, 1m 90 days,
/// 1h 13 months (395 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub raw_ms: i64,
    pub minute_ms: i64,
    pub hour_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_ms: 15 * DAY_MS,
            minute_ms: 90 * DAY_MS,
            hour_ms: 395 * DAY_MS,
        }
    }
}

impl Retention {
    pub fn of(&self, tier: Tier) -> i64 {
        match tier {
            Tier::Raw => self.raw_ms,
            Tier::Minute => self.minute_ms,
            Tier::Hour => self.hour_ms,
        }
    }
}

/// Cardinality limits on active series (series with data in the head). `None` = unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesLimits {
    pub series_per_tenant_max: Option<usize>,
    pub series_per_metric_max: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Directory holding the checkpoint and the block files of this shard.
    pub dir: PathBuf,
    /// A sample older than its series' newest sample by more than this is refused;
    /// `None` accepts any age (backfill) down to the raw retention horizon.
    pub ooo_window_ms: Option<i64>,
    /// Width of a raw block: a whole number of hours that divides a day, so every 1m and 1h
    /// rollup window lies inside one block. Default 2 h.
    pub block_ms: i64,
    pub retention: Retention,
    pub limits: SeriesLimits,
}

impl EngineConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            dir: dir.into(),
            ooo_window_ms: Some(HOUR_MS),
            block_ms: 2 * HOUR_MS,
            retention: Retention::default(),
            limits: SeriesLimits::default(),
        }
    }

    /// Refuses settings the engine cannot honour, naming the setting and the rule.
    pub fn validate(&self) -> Result<()> {
        let refuse = |reason: String| Err(Error::InvalidRequest { reason });
        let b = self.block_ms;
        if b <= 0 || b % HOUR_MS != 0 || DAY_MS % b != 0 {
            return refuse(format!(
                "block_ms {b} must be a whole number of hours that divides a day \
                 (1, 2, 3, 4, 6, 8, 12 or 24 h), so that no rollup window spans two blocks"
            ));
        }
        if let Some(w) = self.ooo_window_ms
            && w < 0
        {
            return refuse(format!("ooo_window_ms {w} must not be negative"));
        }
        let r = self.retention;
        if r.raw_ms <= 0 || r.raw_ms > r.minute_ms || r.minute_ms > r.hour_ms {
            // A coarser tier must keep at least what a finer one keeps: queries pick the
            // coarsest exact tier and would otherwise miss data a finer tier still holds.
            return refuse(format!(
                "retention must satisfy 0 < raw ({}) <= 1m ({}) <= 1h ({}) ms",
                r.raw_ms, r.minute_ms, r.hour_ms
            ));
        }
        Ok(())
    }
}

/// How many per-sample errors an [`AppendOutcome`] keeps verbatim (the rest are only counted).
pub const APPEND_ERRORS_KEPT_MAX: usize = 16;

/// What happened to the samples of one append.
#[derive(Debug, Default)]
pub struct AppendOutcome {
    /// Samples stored by this call.
    pub appended: u64,
    /// Samples already stored with the same bits (idempotent retries; stored once).
    pub duplicates: u64,
    /// Samples refused, counted by [`Error::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// The first [`APPEND_ERRORS_KEPT_MAX`] refusals, in order.
    pub errors: Vec<Error>,
}

impl AppendOutcome {
    fn reject(&mut self, err: Error, samples: u64) {
        *self.rejected.entry(err.reason()).or_default() += samples;
        if self.errors.len() < APPEND_ERRORS_KEPT_MAX {
            self.errors.push(err);
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Adds another outcome into this one.
    pub fn absorb(&mut self, other: AppendOutcome) {
        self.appended += other.appended;
        self.duplicates += other.duplicates;
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        let room = APPEND_ERRORS_KEPT_MAX.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
    }
}

/// Counters and gauges for self-metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub series: usize,
    pub active_series: usize,
    pub blocks: usize,
    pub head_samples: usize,
    pub head_heap_bytes: usize,
    pub sealed_until_ms: i64,
    pub generation: u64,
}

/// The files of a published checkpoint: what a snapshot of the shard consists of. Every file
/// named here is immutable while the [`SnapshotPin`] returned with it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotManifest {
    pub generation: u64,
    /// Block files: (file name, length in bytes).
    pub blocks: Vec<(String, u64)>,
    /// A copy of the checkpoint file made for this snapshot (`checkpoint-<generation>.snap`),
    /// with its length; it is installed as the target's `checkpoint`.
    pub checkpoint: (String, u64),
}

/// Largest piece [`install_snapshot`] asks for at once: memory stays bounded by it, whatever
/// the size of the shard.
pub const SNAPSHOT_PIECE_BYTES_MAX: usize = 1 << 20;

/// Writes a snapshot into `dir`, which must not hold a shard yet, fetching each file in pieces of
/// at most [`SNAPSHOT_PIECE_BYTES_MAX`] bytes through `fetch(name, offset, len)` (from another
/// replica's [`Engine::pin_snapshot`] files). Block files are written and synced first and
/// the checkpoint file is published last, so a crash midway leaves no shard, only orphans that
/// the next [`Engine::open`] deletes. Open the engine on `dir` afterwards.
pub fn install_snapshot(
    fs: &dyn Fs,
    dir: &Path,
    manifest: &SnapshotManifest,
    mut fetch: impl FnMut(&str, u64, usize) -> Result<Vec<u8>>,
) -> Result<()> {
    create_dir_all_durable(fs, dir).map_err(|e| Error::io("create shard dir", dir, e))?;
    let checkpoint = dir.join(CHECKPOINT_FILE);
    if fs.exists(&checkpoint) {
        return Err(Error::InvalidRequest {
            reason: format!("{} already holds a shard", dir.display()),
        });
    }
    let mut copy = |name: &str, len: u64, to: &Path| -> Result<()> {
        if name.contains('/') || name.starts_with('.') {
            return Err(Error::InvalidRequest {
                reason: format!("snapshot file name {name:?} is not a plain file name"),
            });
        }
        let mut file = fs
            .open_append(to, true)
            .map_err(|e| Error::io("create snapshot file", to, e))?;
        let mut offset = 0;
        while offset < len {
            let want = (len - offset).min(SNAPSHOT_PIECE_BYTES_MAX as u64) as usize;
            let piece = fetch(name, offset, want)?;
            if piece.len() != want {
                return Err(Error::corrupt(
                    format!("snapshot file {name}"),
                    format!("asked for {want} bytes at {offset}, got {}", piece.len()),
                ));
            }
            file.write_all(&piece)
                .map_err(|e| Error::io("write snapshot file", to, e))?;
            offset += want as u64;
        }
        file.sync()
            .map_err(|e| Error::io("sync snapshot file", to, e))
    };
    for (name, len) in &manifest.blocks {
        if !name.ends_with(".blk") {
            return Err(Error::InvalidRequest {
                reason: format!("snapshot block file {name:?} does not end in .blk"),
            });
        }
        copy(name, *len, &dir.join(name))?;
    }
    // The checkpoint is the root: it appears, complete, only after every block is durable.
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let (name, len) = &manifest.checkpoint;
    copy(name, *len, &tmp)?;
    fs.rename(&tmp, &checkpoint)
        .map_err(|e| Error::io("publish snapshot checkpoint", &checkpoint, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync shard dir", dir, e))
}

/// One series in memory.
#[derive(Debug)]
struct MemSeries {
    key: SeriesKey,
    /// Oldest and newest sample ever accepted (`i64::MAX`/`i64::MIN` before the first).
    min_ts: i64,
    max_ts: i64,
    /// Newest timestamp persisted in a raw block (`i64::MIN` if none).
    persisted_max_ts: i64,
    /// Counted against the limits: has head data, or was written since the last seal.
    active: bool,
    frozen: Vec<RawChunk>,
    head: ChunkEncoder,
    ooo: BTreeMap<i64, f64>,
}

impl MemSeries {
    fn new(key: SeriesKey) -> Self {
        MemSeries {
            key,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            persisted_max_ts: i64::MIN,
            active: true,
            frozen: Vec::new(),
            head: ChunkEncoder::new(),
            ooo: BTreeMap::new(),
        }
    }

    fn has_head_data(&self) -> bool {
        !self.frozen.is_empty() || !self.head.is_empty() || !self.ooo.is_empty()
    }

    /// Oldest unpersisted timestamp, if any: rollup windows ending at or after it are dirty.
    fn head_min_ts(&self) -> Option<i64> {
        let frozen = self.frozen.iter().map(|c| c.min_ts).min();
        let head = self.head.first_ts();
        let ooo = self.ooo.keys().next().copied();
        [frozen, head, ooo].into_iter().flatten().min()
    }

    fn head_samples(&self) -> usize {
        self.frozen
            .iter()
            .map(|c| chunk::sample_count(&c.bytes).unwrap_or(0))
            .sum::<usize>()
            + self.head.len()
            + self.ooo.len()
    }

    fn heap_bytes(&self) -> usize {
        self.key.labels.heap_bytes()
            + self.key.tenant.as_str().len()
            + self.frozen.capacity() * std::mem::size_of::<RawChunk>()
            + self.frozen.iter().map(|c| c.bytes.capacity()).sum::<usize>()
            + self.head.heap_bytes()
            // A BTreeMap node holds up to 11 entries; count a full node's share per entry.
            + self.ooo.len() * (16 + 8)
    }

    /// Unpersisted samples in `[min_ts, max_ts]`, unsorted across sources.
    fn head_samples_in(&self, min_ts: i64, max_ts: i64, out: &mut Vec<Sample>) -> Result<()> {
        for c in &self.frozen {
            if c.max_ts >= min_ts && c.min_ts <= max_ts {
                decode_filtered(&c.bytes, min_ts, max_ts, out)?;
            }
        }
        if let (Some(first), Some(last)) = (self.head.first_ts(), self.head.last())
            && last.ts_ms >= min_ts
            && first <= max_ts
        {
            decode_filtered(self.head.bytes(), min_ts, max_ts, out)?;
        }
        out.extend(
            self.ooo
                .range(min_ts..=max_ts)
                .map(|(&ts, &v)| Sample::new(ts, v)),
        );
        Ok(())
    }
}

fn decode_filtered(bytes: &[u8], min_ts: i64, max_ts: i64, out: &mut Vec<Sample>) -> Result<()> {
    let start = out.len();
    chunk::decode_into(bytes, out)?;
    let mut keep = start;
    for i in start..out.len() {
        if out[i].ts_ms >= min_ts && out[i].ts_ms <= max_ts {
            out[keep] = out[i];
            keep += 1;
        }
    }
    out.truncate(keep);
    Ok(())
}

/// Sorts samples by time and drops repeated timestamps, keeping the first occurrence.
fn sort_dedup(samples: &mut Vec<Sample>) {
    samples.sort_by_key(|s| s.ts_ms);
    samples.dedup_by(|later, earlier| {
        debug_assert!(
            later.ts_ms != earlier.ts_ms || later.bit_eq(earlier),
            "S2: two different values stored for one timestamp"
        );
        later.ts_ms == earlier.ts_ms
    });
}

/// Encodes sorted samples into chunks of at most [`CHUNK_SAMPLES_MAX`].
fn encode_chunks(samples: &[Sample]) -> Vec<RawChunk> {
    samples
        .chunks(CHUNK_SAMPLES_MAX)
        .map(|part| {
            let mut enc = ChunkEncoder::new();
            for s in part {
                enc.append(s.ts_ms, s.value);
            }
            RawChunk {
                min_ts: part[0].ts_ms,
                max_ts: part[part.len() - 1].ts_ms,
                bytes: enc.finish(),
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct TenantUsage {
    active: usize,
    per_metric: BTreeMap<String, usize>,
}

/// What [`Engine::append`] does with one sample.
enum Verdict {
    /// Not stored yet: store it.
    New,
    /// The same bits are stored at that timestamp: count it, store nothing.
    Duplicate,
    Refused(Error),
}

/// The storage engine of one shard. See the module docs.
#[derive(Debug)]
pub struct Engine {
    fs: Arc<dyn Fs>,
    cfg: EngineConfig,
    series: Vec<Option<MemSeries>>,
    /// (SeriesId, ref): every ref whose key hashes to the id (S1).
    by_id: BTreeSet<(u64, SeriesRef)>,
    index: Index,
    usage: BTreeMap<Tenant, TenantUsage>,
    blocks: Vec<Block>,
    /// Every head sample at or before this has been persisted by a seal (late data aside).
    sealed_until_ms: i64,
    /// Per tier: data at or before this was dropped by retention. Raw samples there are refused.
    dropped_until_ms: BTreeMap<Tier, i64>,
    /// Generation of the last published checkpoint.
    generation: u64,
    /// Opaque position of the last applied command, stored in checkpoints (the Raft log index).
    applied: Vec<u8>,
    /// Cloned into every [`SnapshotPin`]: while a clone is alive, block files are not deleted
    /// (a snapshot being streamed still reads them); their deletion waits in `deferred_deletes`.
    snapshot_pin: Arc<()>,
    deferred_deletes: Vec<String>,
}

/// Keeps the files of a published checkpoint from being deleted while it lives (see
/// [`Engine::pin_snapshot`]). Deletions deferred meanwhile happen at the next compaction or
/// retention pass after the last pin is dropped, or as orphans at the next open.
#[derive(Clone, Debug)]
pub struct SnapshotPin(#[allow(dead_code)] Arc<()>);

const CHECKPOINT_FILE: &str = "checkpoint";
/// Suffix of the immutable checkpoint copies that snapshots stream.
const SNAPSHOT_SUFFIX: &str = ".snap";
const CHECKPOINT_MAGIC: &[u8; 8] = b"STRATACK";
const CHECKPOINT_VERSION: u8 = 2;

impl Engine {
    /// Opens the engine in `cfg.dir`: loads the last checkpoint (if any), opens its blocks and
    /// deletes files no checkpoint names (left by a crash between writing and publishing).
    pub fn open(fs: Arc<dyn Fs>, cfg: EngineConfig) -> Result<Engine> {
        cfg.validate()?;
        create_dir_all_durable(&*fs, &cfg.dir)
            .map_err(|e| Error::io("create shard dir", &cfg.dir, e))?;
        let mut engine = Engine {
            fs,
            cfg,
            series: Vec::new(),
            by_id: BTreeSet::new(),
            index: Index::new(),
            usage: BTreeMap::new(),
            blocks: Vec::new(),
            sealed_until_ms: i64::MIN,
            dropped_until_ms: [Tier::Raw, Tier::Minute, Tier::Hour]
                .into_iter()
                .map(|t| (t, i64::MIN))
                .collect(),
            generation: 0,
            applied: Vec::new(),
            snapshot_pin: Arc::new(()),
            deferred_deletes: Vec::new(),
        };
        let path = engine.path(CHECKPOINT_FILE);
        if engine.fs.exists(&path) {
            let bytes = engine
                .fs
                .read(&path)
                .map_err(|e| Error::io("read checkpoint", &path, e))?;
            engine.load_checkpoint(&bytes)?;
        }
        engine.delete_orphans()?;
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn path(&self, name: &str) -> PathBuf {
        self.cfg.dir.join(name)
    }

    /// The Raft index (or other position) of the last applied command, as last set.
    pub fn applied(&self) -> &[u8] {
        &self.applied
    }

    /// Sets the caller's opaque position of the last applied command (the Raft layer stores its
    /// log id and membership here); the next checkpoint makes it durable with the data.
    pub fn set_applied(&mut self, applied: Vec<u8>) {
        self.applied = applied;
    }

    // ---------------------------------------------------------------- write path

    /// Appends samples of one series. Per-sample refusals are reported in the outcome; `Err` is
    /// a storage failure (unreadable block) after which the engine must not be used. A series
    /// is created (or re-activated, and counted against the limits) only when one of its samples
    /// is stored: refused samples and duplicates leave no trace.
    pub fn append(&mut self, key: &SeriesKey, samples: &[Sample]) -> Result<AppendOutcome> {
        let r = self.find_ref(key);
        self.append_found(key, r, samples)
    }

    /// [`Self::append`] of a series already looked up (`r`: its ref, if stored).
    fn append_found(
        &mut self,
        key: &SeriesKey,
        mut r: Option<SeriesRef>,
        samples: &[Sample],
    ) -> Result<AppendOutcome> {
        let mut out = AppendOutcome::default();
        for s in samples {
            match self.check_sample(key, r, *s)? {
                Verdict::Refused(err) => out.reject(err, 1),
                Verdict::Duplicate => out.duplicates += 1,
                Verdict::New => match self.activate(key, r) {
                    Ok(active) => {
                        r = Some(active);
                        self.store(active, *s);
                        out.appended += 1;
                    }
                    Err(err) => out.reject(err, 1),
                },
            }
        }
        Ok(out)
    }

    /// Applies a batch (what a Raft entry carries), series by series as [`Self::append`] would.
    /// Deterministic (S3). A series is looked up by its canonical bytes in place; its key is
    /// decoded only when it is new here, or when a sample is not simply the next one of an
    /// active series (a duplicate, out of order, refused).
    pub fn apply_batch(&mut self, batch: &WriteBatch) -> Result<AppendOutcome> {
        let mut out = AppendOutcome::default();
        for series in batch.iter() {
            let r = self.find_canonical(series.id().0, series.canonical());
            if let Some(r) = r
                && self.append_in_order(r, series.samples())
            {
                out.appended += series.sample_count() as u64;
                continue;
            }
            let key = match r {
                Some(r) => self.series[r as usize]
                    .as_ref()
                    .expect("ref is live")
                    .key
                    .clone(),
                None => match series.key() {
                    Ok(key) => key,
                    // B2 of `batch`: bytes that are no key fail this series alone.
                    Err(e) => {
                        out.reject(e, series.sample_count() as u64);
                        continue;
                    }
                },
            };
            let samples: Vec<Sample> = series.samples().collect();
            out.absorb(self.append_found(&key, r, &samples)?);
        }
        Ok(out)
    }

    /// The common case of [`Self::apply_batch`], which needs no key: active series `r` and
    /// samples each newer than the one before and than the series' newest, inside S7 and
    /// retention. Stores them all and returns true, exactly as [`Self::append_found`] would
    /// (every sample is `Verdict::New` and the series is already active); otherwise stores
    /// nothing and returns false.
    fn append_in_order(
        &mut self,
        r: SeriesRef,
        samples: impl Iterator<Item = Sample> + Clone,
    ) -> bool {
        let raw_dropped = self.dropped_until_ms[&Tier::Raw];
        let series = self.series[r as usize].as_ref().expect("ref is live");
        if !series.active {
            return false;
        }
        let mut newest = series.max_ts;
        for s in samples.clone() {
            let in_range = (-TS_ABS_MAX_MS..=TS_ABS_MAX_MS).contains(&s.ts_ms);
            if s.ts_ms <= newest || s.ts_ms <= raw_dropped || !in_range {
                return false;
            }
            newest = s.ts_ms;
        }
        for s in samples {
            self.store(r, s);
        }
        true
    }

    fn find_ref(&self, key: &SeriesKey) -> Option<SeriesRef> {
        self.find_by_id(key.id().0, |k| k == key)
    }

    fn find_canonical(&self, id: u64, canonical: &[u8]) -> Option<SeriesRef> {
        self.find_by_id(id, |k| k.matches_canonical(canonical))
    }

    /// The series with id `id` whose key `is_it` accepts (S1: the id only narrows the search).
    fn find_by_id(&self, id: u64, is_it: impl Fn(&SeriesKey) -> bool) -> Option<SeriesRef> {
        self.by_id
            .range((id, 0)..=(id, SeriesRef::MAX))
            .map(|&(_, r)| r)
            .find(|&r| {
                self.series[r as usize]
                    .as_ref()
                    .is_some_and(|s| is_it(&s.key))
            })
    }

    /// Makes the series active, creating it if needed, within the limits.
    fn activate(&mut self, key: &SeriesKey, existing: Option<SeriesRef>) -> Result<SeriesRef> {
        if let Some(r) = existing
            && self.series[r as usize].as_ref().is_some_and(|s| s.active)
        {
            return Ok(r);
        }
        self.check_limits(key)?;
        let r = match existing {
            Some(r) => r,
            None => self.insert_series(MemSeries::new(key.clone())),
        };
        let s = self.series[r as usize].as_mut().expect("ref is live");
        s.active = true;
        let metric = key.labels.metric_name().unwrap_or_default().to_string();
        let usage = self.usage.entry(key.tenant.clone()).or_default();
        usage.active += 1;
        *usage.per_metric.entry(metric).or_default() += 1;
        Ok(r)
    }

    fn check_limits(&self, key: &SeriesKey) -> Result<()> {
        let usage = self.usage.get(&key.tenant);
        let active = usage.map_or(0, |u| u.active);
        if let Some(limit) = self.cfg.limits.series_per_tenant_max
            && active >= limit
        {
            return Err(Error::TooManySeriesForTenant {
                tenant: key.tenant.to_string(),
                series: key.labels.to_string(),
                limit,
            });
        }
        if let Some(limit) = self.cfg.limits.series_per_metric_max {
            let metric = key.labels.metric_name().unwrap_or_default();
            let per_metric = usage
                .and_then(|u| u.per_metric.get(metric))
                .copied()
                .unwrap_or(0);
            if per_metric >= limit {
                return Err(Error::TooManySeriesForMetric {
                    tenant: key.tenant.to_string(),
                    metric: metric.to_string(),
                    series: key.labels.to_string(),
                    limit,
                });
            }
        }
        Ok(())
    }

    fn insert_series(&mut self, s: MemSeries) -> SeriesRef {
        let r = SeriesRef::try_from(self.series.len()).expect("fewer than 2^32 series per shard");
        self.index.insert(r, &s.key.tenant, &s.key.labels);
        self.by_id.insert((s.key.id().0, r));
        self.series.push(Some(s));
        r
    }

    fn deactivate(&mut self, r: SeriesRef) {
        let s = self.series[r as usize].as_mut().expect("ref is live");
        if !s.active {
            return;
        }
        s.active = false;
        let metric = s.key.labels.metric_name().unwrap_or_default();
        let usage = self
            .usage
            .get_mut(&s.key.tenant)
            .expect("active series are counted");
        usage.active -= 1;
        if let Some(n) = usage.per_metric.get_mut(metric) {
            *n -= 1;
            if *n == 0 {
                usage.per_metric.remove(metric);
            }
        }
        if usage.active == 0 {
            self.usage.remove(&s.key.tenant);
        }
    }

    /// Decides what to do with one sample of `key` (`r`: the series, if it exists), changing
    /// nothing. Order of the checks: range (S7), raw retention, stored value (D1: a retry of a
    /// stored sample is a duplicate even behind the out-of-order window), out-of-order window.
    fn check_sample(&self, key: &SeriesKey, r: Option<SeriesRef>, s: Sample) -> Result<Verdict> {
        if !(-TS_ABS_MAX_MS..=TS_ABS_MAX_MS).contains(&s.ts_ms) {
            return Ok(Verdict::Refused(Error::TimestampOutOfRange {
                series: key.to_string(),
                ts_ms: s.ts_ms,
                bound_ms: TS_ABS_MAX_MS,
            }));
        }
        let raw_dropped = self.dropped_until_ms[&Tier::Raw];
        if s.ts_ms <= raw_dropped {
            return Ok(Verdict::Refused(Error::SampleTooOld {
                series: key.to_string(),
                ts_ms: s.ts_ms,
                min_ts_ms: raw_dropped.saturating_add(1),
                why: "raw data up to there was dropped by retention",
            }));
        }
        let Some(r) = r else {
            return Ok(Verdict::New);
        };
        let series = self.series[r as usize].as_ref().expect("ref is live");
        if s.ts_ms > series.max_ts {
            return Ok(Verdict::New);
        }
        if let Some(stored) = self.find_sample(r, s.ts_ms)? {
            return Ok(if stored.to_bits() == s.value.to_bits() {
                Verdict::Duplicate
            } else {
                Verdict::Refused(Error::DuplicateSampleForTimestamp {
                    series: key.to_string(),
                    ts_ms: s.ts_ms,
                    stored,
                    new: s.value,
                })
            });
        }
        if let Some(window) = self.cfg.ooo_window_ms {
            let min_ts = series.max_ts.saturating_sub(window);
            if s.ts_ms < min_ts {
                return Ok(Verdict::Refused(Error::SampleTooOld {
                    series: key.to_string(),
                    ts_ms: s.ts_ms,
                    min_ts_ms: min_ts,
                    why: "outside the out-of-order window behind the series' newest sample",
                }));
            }
        }
        Ok(Verdict::New)
    }

    /// Stores a sample that [`Self::check_sample`] found new into the head of active series `r`.
    fn store(&mut self, r: SeriesRef, s: Sample) {
        let block_ms = self.cfg.block_ms;
        let series = self.series[r as usize].as_mut().expect("ref is live");
        series.min_ts = series.min_ts.min(s.ts_ms);
        if s.ts_ms <= series.max_ts {
            series.ooo.insert(s.ts_ms, s.value);
            return;
        }
        let cut = series.head.len() >= CHUNK_SAMPLES_MAX
            || series
                .head
                .first_ts()
                .is_some_and(|first| window_end(first, block_ms) != window_end(s.ts_ms, block_ms));
        if cut {
            let full = std::mem::take(&mut series.head);
            let (min_ts, max_ts) = (
                full.first_ts().expect("cut chunks are non-empty"),
                full.last().expect("non-empty").ts_ms,
            );
            series.frozen.push(RawChunk {
                min_ts,
                max_ts,
                bytes: full.finish(),
            });
        }
        series.head.append(s.ts_ms, s.value);
        series.max_ts = s.ts_ms;
    }

    /// The stored value of a series at exactly `ts`, looking at the head and then raw blocks.
    fn find_sample(&self, r: SeriesRef, ts: i64) -> Result<Option<f64>> {
        let series = self.series[r as usize].as_ref().expect("ref is live");
        let mut found = Vec::new();
        series.head_samples_in(ts, ts, &mut found)?;
        if found.is_empty() && ts <= series.persisted_max_ts {
            self.block_samples_in(&series.key, ts, ts, &mut found)?;
        }
        Ok(found.first().map(|s| s.value))
    }

    // ---------------------------------------------------------------- read path

    /// Raw samples of the series in `(blocks of) raw tier ∪ head` with `min_ts <= ts <= max_ts`.
    fn block_samples_in(
        &self,
        key: &SeriesKey,
        min_ts: i64,
        max_ts: i64,
        out: &mut Vec<Sample>,
    ) -> Result<()> {
        for b in self
            .blocks
            .iter()
            .filter(|b| b.tier == Tier::Raw && b.overlaps(min_ts, max_ts))
        {
            if let Some(Payload::Raw(chunks)) = b.read(&*self.fs, &self.cfg.dir, key)? {
                for c in chunks {
                    if c.max_ts >= min_ts && c.min_ts <= max_ts {
                        decode_filtered(&c.bytes, min_ts, max_ts, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn samples_of(&self, r: SeriesRef, min_ts: i64, max_ts: i64) -> Result<Vec<Sample>> {
        let series = self.series[r as usize].as_ref().expect("ref is live");
        let mut out = Vec::new();
        if min_ts <= series.persisted_max_ts {
            self.block_samples_in(&series.key, min_ts, max_ts, &mut out)?;
        }
        series.head_samples_in(min_ts, max_ts, &mut out)?;
        sort_dedup(&mut out);
        Ok(out)
    }

    /// The newest raw sample of series `r` with `min_ts <= ts <= max_ts`, if any, as
    /// [`Self::samples_of`] would end with. When the head's last sample is the series' newest
    /// (out-of-order samples are older, frozen chunks and blocks hold older ones), it is
    /// taken without decoding anything: "the latest value of every series" reads no chunk.
    fn newest_sample_of(&self, r: SeriesRef, min_ts: i64, max_ts: i64) -> Result<Vec<Sample>> {
        let series = self.series[r as usize].as_ref().expect("ref is live");
        if let Some(last) = series.head.last()
            && last.ts_ms == series.max_ts
            && last.ts_ms <= max_ts
        {
            return Ok(if last.ts_ms >= min_ts {
                vec![last]
            } else {
                Vec::new()
            });
        }
        let mut samples = self.samples_of(r, min_ts, max_ts)?;
        Ok(samples.pop().into_iter().collect())
    }

    /// All raw samples of a series with `min_ts <= ts <= max_ts`, sorted, one per timestamp.
    pub fn read_series(&self, key: &SeriesKey, min_ts: i64, max_ts: i64) -> Result<Vec<Sample>> {
        match self.find_ref(key) {
            Some(r) => self.samples_of(r, min_ts, max_ts),
            None => Ok(Vec::new()),
        }
    }

    /// Rollup records of a series in `tier` whose window ends in `[min_end, max_end]`.
    /// Dirty windows (see module docs) are recomputed from raw data first.
    pub fn read_rollups(
        &self,
        key: &SeriesKey,
        tier: Tier,
        min_end: i64,
        max_end: i64,
    ) -> Result<Vec<RollupRecord>> {
        match self.find_ref(key) {
            Some(r) => self.rollups_of(r, tier, min_end, max_end),
            None => Ok(Vec::new()),
        }
    }

    fn rollups_of(
        &self,
        r: SeriesRef,
        tier: Tier,
        min_end: i64,
        max_end: i64,
    ) -> Result<Vec<RollupRecord>> {
        let w = tier.window_ms().ok_or_else(|| Error::InvalidRequest {
            reason: "the raw tier has no rollup records".into(),
        })?;
        let series = self.series[r as usize].as_ref().expect("ref is live");
        // Windows ending at or after the oldest unpersisted sample are dirty.
        let dirty_from = series.head_min_ts().unwrap_or(i64::MAX);
        let mut by_end: BTreeMap<i64, (u64, RollupRecord)> = BTreeMap::new();
        let file_max_end = max_end.min(dirty_from.saturating_sub(1));
        if min_end <= file_max_end {
            for b in self
                .blocks
                .iter()
                .filter(|b| b.tier == tier && b.overlaps(min_end.saturating_sub(w), file_max_end))
            {
                if let Some(Payload::Rollup(records)) =
                    b.read(&*self.fs, &self.cfg.dir, &series.key)?
                {
                    for rec in records {
                        let end = rec.window_end_ms;
                        if end < min_end || end > file_max_end {
                            continue;
                        }
                        let newer = by_end
                            .get(&end)
                            .is_none_or(|(generation, _)| b.generation > *generation);
                        if newer {
                            by_end.insert(end, (b.generation, rec));
                        }
                    }
                }
            }
        }
        if max_end >= dirty_from {
            // Only whole windows: the first dirty window ending at or after `min_end`, through
            // the last one ending at or before `max_end`.
            let first_end = window_end(min_end.max(dirty_from), w);
            let raw = self.samples_of(r, first_end.saturating_sub(w - 1), max_end)?;
            for rec in rollup::compute(&raw, w) {
                if rec.window_end_ms <= max_end {
                    by_end.insert(rec.window_end_ms, (u64::MAX, rec));
                }
            }
        }
        Ok(by_end.into_values().map(|(_, rec)| rec).collect())
    }

    /// Label sets of the tenant's series matching `matchers` with data in `[min_ts, max_ts]`.
    pub fn series(
        &self,
        tenant: &Tenant,
        matchers: &[Matcher],
        min_ts: i64,
        max_ts: i64,
    ) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .select(tenant, matchers)
            .iter()
            .filter_map(|r| self.series[r as usize].as_ref())
            .filter(|s| s.min_ts <= max_ts && s.max_ts >= min_ts)
            .map(|s| s.key.labels.clone())
            .collect();
        out.sort();
        out
    }

    /// Sorted label names of the tenant's series matching `matchers`.
    pub fn label_names(&self, tenant: &Tenant, matchers: &[Matcher]) -> Vec<String> {
        let within = self.select(tenant, matchers);
        self.index.label_names(tenant, Some(&within))
    }

    /// Sorted values of label `name` on the tenant's series matching `matchers`.
    pub fn label_values(&self, tenant: &Tenant, name: &str, matchers: &[Matcher]) -> Vec<String> {
        let within = self.select(tenant, matchers);
        self.index.label_values(tenant, name, Some(&within))
    }

    fn select(&self, tenant: &Tenant, matchers: &[Matcher]) -> RoaringBitmap {
        self.index.select(tenant, matchers)
    }

    /// The coarsest tier that answers `q` exactly (see `rollup::exact_for`), or raw. Retention
    /// keeps a coarser tier at least as long as a finer one ([`EngineConfig::validate`]), so the
    /// coarsest exact tier never misses data a finer tier still holds.
    pub fn tier_for(&self, q: &PartialQuery) -> Tier {
        [Tier::Hour, Tier::Minute]
            .into_iter()
            .find(|&tier| rollup_exact(q, tier))
            .unwrap_or(Tier::Raw)
    }

    /// Answers a partial query over this shard on the tier picked by [`Self::tier_for`].
    pub fn query(&self, q: &PartialQuery) -> Result<PartialResult> {
        partial::validate(q)?;
        self.query_tier(q, self.tier_for(q))
    }

    /// Answers a partial query on a given tier; a rollup tier must answer it exactly.
    pub fn query_tier(&self, q: &PartialQuery, tier: Tier) -> Result<PartialResult> {
        partial::validate(q)?;
        if tier != Tier::Raw && !rollup_exact(q, tier) {
            return Err(Error::InvalidRequest {
                reason: format!("the {} tier cannot answer this query exactly", tier.name()),
            });
        }
        let refs = self.select(&q.tenant, &q.matchers);
        let mut inputs: Vec<(Labels, Vec<Sample>)> = Vec::with_capacity(refs.len() as usize);
        let grid_end = q.grid.end_ms;
        for r in refs.iter() {
            let series = self.series[r as usize]
                .as_ref()
                .expect("index holds live refs");
            let samples = match (tier.window_ms(), q.range) {
                (Some(w), Some(range)) => {
                    // Evaluate the range function per instant from rollup records; feed the
                    // results to the aggregator as samples at the instants themselves.
                    let records = self.rollups_of(
                        r,
                        tier,
                        q.grid.start_ms.saturating_sub(range.range_ms - w),
                        grid_end,
                    )?;
                    let mut values = Vec::with_capacity(q.grid.len());
                    for t in q.grid.steps() {
                        let lo = records.partition_point(|x| x.window_end_ms <= t - range.range_ms);
                        let hi = records.partition_point(|x| x.window_end_ms <= t);
                        if let Some(v) =
                            rollup::eval(range.func, &records[lo..hi], t, range.range_ms)
                        {
                            values.push(Sample::new(t, v));
                        }
                    }
                    values
                }
                // One instant, no range function: the selector keeps only the newest sample
                // of its lookback window.
                // The one instant is the grid's start; its end may lie after it.
                (_, None) if q.grid.len() == 1 => self.newest_sample_of(
                    r,
                    q.window_start_ms().saturating_add(1),
                    q.grid.start_ms,
                )?,
                _ => self.samples_of(r, q.window_start_ms().saturating_add(1), grid_end)?,
            };
            if !samples.is_empty() {
                let labels = if tier != Tier::Raw && q.aggregation.is_some() {
                    // The raw path applies the range function inside `partial::evaluate`, which
                    // takes the function's output labels (no `__name__`) for grouping; here the
                    // function already ran, so take them ourselves.
                    partial::output_labels(q, &series.key.labels)
                } else {
                    series.key.labels.clone()
                };
                inputs.push((labels, samples));
            }
        }
        if tier == Tier::Raw {
            partial::evaluate(q, inputs.iter().map(|(l, s)| (l, s.as_slice())))
        } else {
            // Each instant's value sits exactly at the instant: a 1 ms lookback selects it.
            let per_instant = PartialQuery {
                range: None,
                lookback_ms: 1,
                ..q.clone()
            };
            partial::evaluate(&per_instant, inputs.iter().map(|(l, s)| (l, s.as_slice())))
        }
    }

    // ---------------------------------------------------------------- persistence

    /// Newest sample timestamp across the head (deterministic: derived from applied data).
    fn head_max_ts(&self) -> Option<i64> {
        self.series
            .iter()
            .flatten()
            .filter(|s| s.has_head_data())
            .map(|s| s.max_ts)
            .max()
    }

    /// Seals what the head no longer needs in memory: every sample at or before the block
    /// boundary that lies at least half a block behind the newest sample (as Prometheus keeps
    /// 1.5 blocks in its head), plus late data behind earlier seals. Publishes a checkpoint.
    pub fn seal(&mut self) -> Result<()> {
        self.seal_until(self.auto_seal_cut().max(self.sealed_until_ms))
    }

    /// Whether [`Self::seal`] would move the sealed boundary forward: the head's newest sample
    /// is a block and a half past it. (Late data behind the boundary waits for that seal.)
    pub fn seal_due(&self) -> bool {
        self.auto_seal_cut() > self.sealed_until_ms
    }

    /// Every sample at or before this is in blocks (`i64::MIN` before the first seal).
    pub fn sealed_until_ms(&self) -> i64 {
        self.sealed_until_ms
    }

    fn auto_seal_cut(&self) -> i64 {
        self.head_max_ts()
            .map(|max| {
                window_end(max - self.cfg.block_ms / 2, self.cfg.block_ms) - self.cfg.block_ms
            })
            .unwrap_or(i64::MIN)
    }

    /// Persists every head sample with `ts <= cut` (`cut` on a block boundary) into raw blocks
    /// and rollup blocks, then publishes a checkpoint.
    pub fn seal_until(&mut self, cut: i64) -> Result<()> {
        assert!(
            cut == i64::MIN || cut.rem_euclid(self.cfg.block_ms) == 0,
            "S6: seal cut {cut} must be on a block boundary"
        );
        let generation = self.generation + 1;
        // bucket end → (series ref, that series' new samples in the bucket)
        let mut buckets: BTreeMap<i64, Vec<(SeriesRef, Vec<Sample>)>> = BTreeMap::new();
        for r in 0..self.series.len() {
            let Some(s) = self.series[r].as_mut() else {
                continue;
            };
            let mut taken = Vec::new();
            let mut keep = Vec::new();
            for c in std::mem::take(&mut s.frozen) {
                if c.max_ts <= cut {
                    chunk::decode_into(&c.bytes, &mut taken)?;
                } else {
                    keep.push(c);
                }
            }
            s.frozen = keep;
            if s.head.last().is_some_and(|last| last.ts_ms <= cut) {
                chunk::decode_into(std::mem::take(&mut s.head).bytes(), &mut taken)?;
            }
            let later = s.ooo.split_off(&cut.saturating_add(1));
            taken.extend(
                std::mem::replace(&mut s.ooo, later)
                    .into_iter()
                    .map(|(t, v)| Sample::new(t, v)),
            );
            if taken.is_empty() {
                continue;
            }
            sort_dedup(&mut taken);
            let mut start = 0;
            while start < taken.len() {
                let end = window_end(taken[start].ts_ms, self.cfg.block_ms);
                let len = taken[start..].partition_point(|x| x.ts_ms <= end);
                buckets
                    .entry(end)
                    .or_default()
                    .push((r as SeriesRef, taken[start..start + len].to_vec()));
                start += len;
            }
        }
        let mut written = Vec::new();
        for (end, entries) in &buckets {
            let start = end - self.cfg.block_ms;
            let mut raw = BlockWriter::new(Tier::Raw, start, *end);
            let mut rollups: Vec<(Tier, BlockWriter)> = Tier::ROLLUPS
                .iter()
                .map(|&t| (t, BlockWriter::new(t, start, *end)))
                .collect();
            for (r, samples) in entries {
                let s = self.series[*r as usize].as_ref().expect("ref is live");
                raw.add(&s.key, &Payload::Raw(encode_chunks(samples)));
                // Rollups of the bucket cover what earlier blocks hold too (late data).
                let mut all = samples.clone();
                if s.persisted_max_ts > start {
                    self.block_samples_in(&s.key, start + 1, *end, &mut all)?;
                    sort_dedup(&mut all);
                }
                for (tier, writer) in &mut rollups {
                    let w = tier.window_ms().expect("rollup tiers have windows");
                    writer.add(&s.key, &Payload::Rollup(rollup::compute(&all, w)));
                }
            }
            written.push(self.write_block(Tier::Raw, *end, generation, raw.finish())?);
            for (tier, writer) in rollups {
                written.push(self.write_block(tier, *end, generation, writer.finish())?);
            }
        }
        for entries in buckets.values() {
            for (r, samples) in entries {
                let s = self.series[*r as usize].as_mut().expect("ref is live");
                let newest = samples.last().expect("non-empty").ts_ms;
                s.persisted_max_ts = s.persisted_max_ts.max(newest);
            }
        }
        self.blocks.extend(written);
        self.sealed_until_ms = self.sealed_until_ms.max(cut);
        let idle: Vec<SeriesRef> = (0..self.series.len())
            .filter(|&r| {
                self.series[r]
                    .as_ref()
                    .is_some_and(|s| s.active && !s.has_head_data())
            })
            .map(|r| r as SeriesRef)
            .collect();
        for r in idle {
            self.deactivate(r);
        }
        self.checkpoint()
    }

    fn write_block(&self, tier: Tier, end: i64, generation: u64, bytes: Vec<u8>) -> Result<Block> {
        let name = block::file_name(tier, end, generation);
        let path = self.path(&name);
        write_file_atomic(&*self.fs, &path, &bytes)
            .map_err(|e| Error::io("write block", &path, e))?;
        Block::open(&*self.fs, &self.cfg.dir, &name, generation)
    }

    /// Width of the blocks compaction builds for a tier.
    fn compaction_ms(&self, tier: Tier) -> i64 {
        match tier {
            Tier::Raw => self.cfg.block_ms,
            Tier::Minute => DAY_MS,
            Tier::Hour => 7 * DAY_MS,
        }
    }

    /// Merges blocks of a tier that share a compaction bucket (late-data blocks into their raw
    /// bucket; 2 h rollup blocks into 1-day and 7-day blocks). Publishes a checkpoint, then
    /// deletes the merged inputs (S5).
    pub fn compact(&mut self) -> Result<()> {
        let generation = self.generation + 1;
        let mut groups: BTreeMap<(Tier, i64), Vec<usize>> = BTreeMap::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let size = self.compaction_ms(b.tier);
            groups
                .entry((b.tier, window_end(b.end_ms, size)))
                .or_default()
                .push(i);
        }
        let mut replaced = BTreeSet::new();
        let mut written = Vec::new();
        for ((tier, end), members) in groups {
            if members.len() < 2 {
                continue;
            }
            let mut inputs: Vec<&Block> = members.iter().map(|&i| &self.blocks[i]).collect();
            inputs.sort_by_key(|b| b.generation);
            let mut merged: BTreeMap<SeriesKey, Payload> = BTreeMap::new();
            for b in inputs {
                for (key, payload) in b.read_all(&*self.fs, &self.cfg.dir)? {
                    match merged.get_mut(&key) {
                        None => {
                            merged.insert(key, payload);
                        }
                        Some(into) => merge_payload(into, payload)?,
                    }
                }
            }
            let size = self.compaction_ms(tier);
            let mut writer = BlockWriter::new(tier, end - size, end);
            for (key, payload) in &merged {
                writer.add(key, payload);
            }
            written.push(self.write_block(tier, end, generation, writer.finish())?);
            replaced.extend(members);
        }
        if written.is_empty() {
            return self.delete_files(Vec::new());
        }
        let old: Vec<Block> = self.remove_blocks(|i, _| replaced.contains(&i));
        self.blocks.extend(written);
        self.checkpoint()?;
        self.delete_blocks(&old)
    }

    fn remove_blocks(&mut self, pred: impl Fn(usize, &Block) -> bool) -> Vec<Block> {
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        for (i, b) in std::mem::take(&mut self.blocks).into_iter().enumerate() {
            if pred(i, &b) {
                removed.push(b);
            } else {
                kept.push(b);
            }
        }
        self.blocks = kept;
        removed
    }

    fn delete_blocks(&mut self, blocks: &[Block]) -> Result<()> {
        self.delete_files(blocks.iter().map(|b| b.name.clone()).collect())
    }

    /// Deletes files no published checkpoint names, or defers it while a snapshot is pinned
    /// (then it also deletes what earlier calls deferred).
    fn delete_files(&mut self, names: Vec<String>) -> Result<()> {
        self.deferred_deletes.extend(names);
        if Arc::strong_count(&self.snapshot_pin) > 1 || self.deferred_deletes.is_empty() {
            return Ok(());
        }
        for name in std::mem::take(&mut self.deferred_deletes) {
            let path = self.path(&name);
            self.fs
                .remove_file(&path)
                .map_err(|e| Error::io("delete file", &path, e))?;
        }
        self.fs
            .sync_dir(&self.cfg.dir)
            .map_err(|e| Error::io("sync shard dir", &self.cfg.dir, e))
    }

    /// Drops, per tier, every block that ends at or before `now_ms - retention`. Raw data is
    /// sealed up to the horizon first so its rollups exist before the raw blocks go; series with
    /// no data left in any tier are forgotten. Publishes a checkpoint, then deletes the files.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<()> {
        // Clamped to the timestamp range (S7): every horizon stays at least a week inside i64,
        // so the block arithmetic below cannot overflow, and drops nothing storable when `now`
        // is absurdly far in the past.
        let horizon = |retention: i64| {
            now_ms
                .clamp(-TS_ABS_MAX_MS, TS_ABS_MAX_MS)
                .saturating_sub(retention)
                .max(-TS_ABS_MAX_MS - 1)
        };
        let raw_horizon = horizon(self.cfg.retention.raw_ms);
        let raw_cut = window_end(raw_horizon, self.cfg.block_ms);
        let raw_cut = if raw_cut > raw_horizon {
            raw_cut - self.cfg.block_ms
        } else {
            raw_cut
        };
        // Seal first, also late data behind earlier seals, so nothing at or before the cut stays
        // in the head once its raw blocks are gone, and its rollups exist before they go.
        self.seal_until(raw_cut.max(self.sealed_until_ms))?;
        let mut horizons = BTreeMap::new();
        for tier in [Tier::Raw, Tier::Minute, Tier::Hour] {
            let horizon = horizon(self.cfg.retention.of(tier));
            let dropped = self.dropped_until_ms.get_mut(&tier).expect("every tier");
            let aligned = if tier == Tier::Raw { raw_cut } else { horizon };
            *dropped = (*dropped).max(aligned);
            horizons.insert(tier, horizon);
        }
        let old = self.remove_blocks(|_, b| b.end_ms <= horizons[&b.tier]);
        let forget_before = *self.dropped_until_ms.values().min().expect("three tiers");
        let gone: Vec<SeriesRef> = (0..self.series.len())
            .filter(|&r| {
                self.series[r]
                    .as_ref()
                    .is_some_and(|s| !s.active && !s.has_head_data() && s.max_ts <= forget_before)
            })
            .map(|r| r as SeriesRef)
            .collect();
        for r in &gone {
            let s = self.series[*r as usize].take().expect("ref is live");
            self.index.remove(*r, &s.key.tenant, &s.key.labels);
            self.by_id.remove(&(s.key.id().0, *r));
        }
        if old.is_empty() && gone.is_empty() {
            return self.delete_files(Vec::new());
        }
        self.checkpoint()?;
        self.delete_blocks(&old)
    }

    /// Publishes the current state durably: the block list and the whole head (S4, S5).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.publish_checkpoint().map(drop)
    }

    /// [`Self::checkpoint`], returning the bytes it published.
    fn publish_checkpoint(&mut self) -> Result<Vec<u8>> {
        self.generation += 1;
        let bytes = self.encode_checkpoint();
        let path = self.path(CHECKPOINT_FILE);
        write_file_atomic(&*self.fs, &path, &bytes)
            .map_err(|e| Error::io("write checkpoint", &path, e))?;
        Ok(bytes)
    }

    /// Publishes a checkpoint and an immutable copy of it for a snapshot, and returns the files
    /// of that snapshot with a pin: while the pin (or a clone) lives, none of the files is
    /// deleted, whatever compaction and retention do meanwhile, so a replica can stream them.
    pub fn pin_snapshot(&mut self) -> Result<(SnapshotManifest, SnapshotPin)> {
        let bytes = self.publish_checkpoint()?;
        let name = format!("{CHECKPOINT_FILE}-{:016}{SNAPSHOT_SUFFIX}", self.generation);
        let path = self.path(&name);
        write_file_atomic(&*self.fs, &path, &bytes)
            .map_err(|e| Error::io("write snapshot checkpoint", &path, e))?;
        // Older snapshot copies are dead once nobody streams them.
        let mut old: Vec<String> = self
            .fs
            .list(&self.cfg.dir)
            .map_err(|e| Error::io("list shard dir", &self.cfg.dir, e))?
            .into_iter()
            .filter(|n| n.ends_with(SNAPSHOT_SUFFIX) && *n != name)
            .collect();
        old.retain(|n| !self.deferred_deletes.contains(n));
        self.delete_files(old)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let path = self.path(&b.name);
            let len = self
                .fs
                .file_len(&path)
                .map_err(|e| Error::io("stat snapshot file", &path, e))?;
            blocks.push((b.name.clone(), len));
        }
        let manifest = SnapshotManifest {
            generation: self.generation,
            blocks,
            checkpoint: (name, bytes.len() as u64),
        };
        Ok((manifest, SnapshotPin(Arc::clone(&self.snapshot_pin))))
    }

    fn encode_checkpoint(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(CHECKPOINT_MAGIC);
        b.put_u8(CHECKPOINT_VERSION);
        b.put_u64(self.generation);
        b.put_bytes(&self.applied);
        b.put_i64(self.sealed_until_ms);
        for tier in [Tier::Raw, Tier::Minute, Tier::Hour] {
            b.put_i64(self.dropped_until_ms[&tier]);
        }
        b.put_u32(self.blocks.len() as u32);
        for blk in &self.blocks {
            b.put_bytes(blk.name.as_bytes());
            b.put_u64(blk.generation);
        }
        let live: Vec<&MemSeries> = self.series.iter().flatten().collect();
        b.put_u32(live.len() as u32);
        for s in live {
            b.put_bytes(&s.key.canonical_bytes());
            b.put_i64(s.min_ts);
            b.put_i64(s.max_ts);
            b.put_i64(s.persisted_max_ts);
            b.put_u8(u8::from(s.active));
            b.put_u32(s.frozen.len() as u32);
            for c in &s.frozen {
                b.put_i64(c.min_ts);
                b.put_i64(c.max_ts);
                b.put_bytes(&c.bytes);
            }
            b.put_bytes(s.head.bytes());
            b.put_u32(s.ooo.len() as u32);
            for (&ts, &v) in &s.ooo {
                b.put_i64(ts);
                b.put_f64(v);
            }
        }
        let crc = crc32fast::hash(&b);
        b.put_u32(crc);
        b
    }

    fn load_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        let what = "checkpoint";
        if bytes.len() < CHECKPOINT_MAGIC.len() + 4 {
            return Err(Error::corrupt(what, "too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(Error::corrupt(what, "CRC mismatch"));
        }
        let mut r = Reader::new(body, what);
        if r.take(8)? != CHECKPOINT_MAGIC || r.u8()? != CHECKPOINT_VERSION {
            return Err(r.corrupt("bad magic or unknown version"));
        }
        self.generation = r.u64()?;
        self.applied = r.bytes()?.to_vec();
        self.sealed_until_ms = r.i64()?;
        for tier in [Tier::Raw, Tier::Minute, Tier::Hour] {
            self.dropped_until_ms.insert(tier, r.i64()?);
        }
        let n_blocks = r.count(12)?;
        for _ in 0..n_blocks {
            let name = String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| r.corrupt("block name is not UTF-8"))?;
            let generation = r.u64()?;
            self.blocks
                .push(Block::open(&*self.fs, &self.cfg.dir, &name, generation)?);
        }
        let n_series = r.count(4 + 8 * 3 + 1 + 4 + 4 + 4)?;
        for _ in 0..n_series {
            let key = SeriesKey::from_canonical_bytes(r.bytes()?)?;
            let mut s = MemSeries::new(key);
            s.min_ts = r.i64()?;
            s.max_ts = r.i64()?;
            s.persisted_max_ts = r.i64()?;
            s.active = r.u8()? != 0;
            let n_frozen = r.count(20)?;
            for _ in 0..n_frozen {
                s.frozen.push(RawChunk {
                    min_ts: r.i64()?,
                    max_ts: r.i64()?,
                    bytes: r.bytes()?.to_vec(),
                });
            }
            for sample in chunk::decode(r.bytes()?)? {
                s.head.append(sample.ts_ms, sample.value);
            }
            let n_ooo = r.count(16)?;
            for _ in 0..n_ooo {
                let ts = r.i64()?;
                s.ooo.insert(ts, r.f64()?);
            }
            let active = s.active;
            let metric = s.key.labels.metric_name().unwrap_or_default().to_string();
            let tenant = s.key.tenant.clone();
            self.insert_series(s);
            if active {
                let usage = self.usage.entry(tenant).or_default();
                usage.active += 1;
                *usage.per_metric.entry(metric).or_default() += 1;
            }
        }
        if !r.is_empty() {
            return Err(r.corrupt("trailing bytes"));
        }
        Ok(())
    }

    /// Deletes block and temporary files that the checkpoint does not name.
    fn delete_orphans(&self) -> Result<()> {
        let names = self
            .fs
            .list(&self.cfg.dir)
            .map_err(|e| Error::io("list shard dir", &self.cfg.dir, e))?;
        let live: BTreeSet<&str> = self.blocks.iter().map(|b| b.name.as_str()).collect();
        let mut deleted = false;
        for name in names {
            let orphan = (name.ends_with(".blk") && !live.contains(name.as_str()))
                || name.ends_with(".tmp")
                || name.ends_with(SNAPSHOT_SUFFIX);
            if orphan {
                let path = self.path(&name);
                self.fs
                    .remove_file(&path)
                    .map_err(|e| Error::io("delete orphan", &path, e))?;
                deleted = true;
            }
        }
        if deleted {
            self.fs
                .sync_dir(&self.cfg.dir)
                .map_err(|e| Error::io("sync shard dir", &self.cfg.dir, e))?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- introspection

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            series: self.series.iter().flatten().count(),
            active_series: self.usage.values().map(|u| u.active).sum(),
            blocks: self.blocks.len(),
            head_samples: self
                .series
                .iter()
                .flatten()
                .map(MemSeries::head_samples)
                .sum(),
            head_heap_bytes: self.head_heap_bytes(),
            sealed_until_ms: self.sealed_until_ms,
            generation: self.generation,
        }
    }

    /// Heap bytes of the head: series table, chunks, out-of-order buffers and the index.
    pub fn head_heap_bytes(&self) -> usize {
        self.series.capacity() * std::mem::size_of::<Option<MemSeries>>()
            + self.series.iter().flatten().map(MemSeries::heap_bytes).sum::<usize>()
            // A BTreeSet entry of (u64, u32) plus its share of node overhead.
            + self.by_id.len() * 24
            + self.index.heap_bytes()
    }

    /// Active series of a tenant (what the limits count).
    pub fn active_series(&self, tenant: &Tenant) -> usize {
        self.usage.get(tenant).map_or(0, |u| u.active)
    }

    /// Blocks currently published, as (tier, start, end, generation).
    pub fn blocks(&self) -> Vec<(Tier, i64, i64, u64)> {
        self.blocks
            .iter()
            .map(|b| (b.tier, b.start_ms, b.end_ms, b.generation))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }
}

/// Whether every instant of `q` is answered exactly from `tier`'s rollup windows.
fn rollup_exact(q: &PartialQuery, tier: Tier) -> bool {
    let (Some(w), Some(range)) = (tier.window_ms(), q.range) else {
        return false;
    };
    (q.grid.len() <= 1 || q.grid.step_ms % w == 0)
        && rollup::exact_for(range.func, q.grid.start_ms, range.range_ms, w)
}

/// Merges `from` (a newer block's payload) into `into` for compaction: raw samples are unioned
/// (one value per timestamp by S2); for the same rollup window the newer record wins.
fn merge_payload(into: &mut Payload, from: Payload) -> Result<()> {
    match (into, from) {
        (Payload::Raw(a), Payload::Raw(b)) => {
            let mut samples = Vec::new();
            for c in a.iter().chain(b.iter()) {
                chunk::decode_into(&c.bytes, &mut samples)?;
            }
            sort_dedup(&mut samples);
            *a = encode_chunks(&samples);
        }
        (Payload::Rollup(a), Payload::Rollup(b)) => {
            let mut by_end: BTreeMap<i64, RollupRecord> =
                a.drain(..).map(|r| (r.window_end_ms, r)).collect();
            by_end.extend(b.into_iter().map(|r| (r.window_end_ms, r)));
            *a = by_end.into_values().collect();
        }
        _ => {
            return Err(Error::corrupt(
                "block",
                "raw and rollup payloads in one tier",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::FORCED_SERIES_ID;
    use crate::sim_fs::SimFs;

    #[test]
    fn colliding_series_ids_stay_separate_series_in_head_and_blocks() {
        FORCED_SERIES_ID.with(|f| f.set(Some(7)));
        let fs = SimFs::new();
        let mut e = Engine::open(Arc::new(fs.clone()), EngineConfig::new("/s")).unwrap();
        let tenant = Tenant::new("t").unwrap();
        let a = SeriesKey::new(
            tenant.clone(),
            Labels::from_pairs(&[("__name__", "a")]).unwrap(),
        );
        let b = SeriesKey::new(tenant, Labels::from_pairs(&[("__name__", "b")]).unwrap());
        assert_eq!(a.id(), b.id(), "the test forces a collision");
        e.append(&a, &[Sample::new(1000, 1.0)]).unwrap();
        e.append(&b, &[Sample::new(1000, 2.0)]).unwrap();
        // The batch path finds each series by its bytes, not by the shared id.
        let batch = WriteBatch::from(vec![
            (b.clone(), vec![Sample::new(2000, 2.5)]),
            (a.clone(), vec![Sample::new(2000, 1.5)]),
        ]);
        assert_eq!(e.apply_batch(&batch).unwrap().appended, 2);
        let check = |e: &Engine| {
            assert_eq!(
                e.read_series(&a, 0, 5000).unwrap(),
                vec![Sample::new(1000, 1.0), Sample::new(2000, 1.5)]
            );
            assert_eq!(
                e.read_series(&b, 0, 5000).unwrap(),
                vec![Sample::new(1000, 2.0), Sample::new(2000, 2.5)]
            );
        };
        check(&e);
        e.seal_until(2 * 3600 * 1000).unwrap();
        check(&e);
        drop(e);
        let e = Engine::open(Arc::new(fs), EngineConfig::new("/s")).unwrap();
        check(&e);
        assert_eq!(e.stats().series, 2);
        FORCED_SERIES_ID.with(|f| f.set(None));
    }

    #[test]
    fn a_batch_series_whose_bytes_are_no_key_fails_alone() {
        let mut bytes = Vec::new();
        bytes.put_u32(2);
        let mut unsorted = Vec::new();
        for s in ["t", "job", "a", "__name__", "up"] {
            unsorted.put_bytes(s.as_bytes());
        }
        let good = SeriesKey::new(
            Tenant::new("t").unwrap(),
            Labels::from_pairs(&[("__name__", "up")]).unwrap(),
        );
        for canonical in [unsorted, good.canonical_bytes()] {
            bytes.put_bytes(&canonical);
            bytes.put_u32(1);
            bytes.put_i64(1000);
            bytes.put_f64(1.0);
        }
        let batch = WriteBatch::read(&mut Reader::new(&bytes, "test")).unwrap();
        let mut e = Engine::open(Arc::new(SimFs::new()), EngineConfig::new("/s")).unwrap();
        let out = e.apply_batch(&batch).unwrap();
        assert_eq!((out.appended, out.rejected_total()), (1, 1));
        assert!(
            out.errors[0].to_string().contains("sorted"),
            "{:?}",
            out.errors
        );
        assert_eq!(
            e.read_series(&good, 0, 5000).unwrap(),
            vec![Sample::new(1000, 1.0)]
        );
    }

    #[test]
    fn a_batch_applies_exactly_as_appending_its_series_one_by_one() {
        // Each case goes through the fast path (in order, active) or the general one
        // (new series, duplicates, out of order, a different value at a stored timestamp).
        let tenant = Tenant::new("t").unwrap();
        let key = |m: &str| {
            SeriesKey::new(
                tenant.clone(),
                Labels::from_pairs(&[("__name__", m)]).unwrap(),
            )
        };
        let rounds: Vec<Vec<(SeriesKey, Vec<Sample>)>> = vec![
            vec![(key("a"), vec![Sample::new(10, 1.0), Sample::new(20, 2.0)])],
            vec![
                (key("a"), vec![Sample::new(30, 3.0), Sample::new(40, 4.0)]),
                (key("b"), vec![Sample::new(5, 0.5)]),
            ],
            vec![(key("a"), vec![Sample::new(40, 4.0), Sample::new(50, 5.0)])],
            vec![(key("a"), vec![Sample::new(35, 3.5), Sample::new(60, 6.0)])],
            vec![
                (key("a"), vec![Sample::new(60, 9.0)]),
                (key("b"), vec![Sample::new(6, 0.6)]),
            ],
            vec![(key("b"), vec![Sample::new(7, 0.7), Sample::new(7, 0.8)])],
        ];
        let open = || Engine::open(Arc::new(SimFs::new()), EngineConfig::new("/s")).unwrap();
        let (mut batched, mut one_by_one) = (open(), open());
        for round in &rounds {
            let got = batched.apply_batch(&WriteBatch::from(&round[..])).unwrap();
            let mut want = AppendOutcome::default();
            for (k, samples) in round {
                want.absorb(one_by_one.append(k, samples).unwrap());
            }
            assert_eq!(format!("{got:?}"), format!("{want:?}"));
        }
        for m in ["a", "b"] {
            assert_eq!(
                batched.read_series(&key(m), 0, 100).unwrap(),
                one_by_one.read_series(&key(m), 0, 100).unwrap()
            );
        }
    }
}
