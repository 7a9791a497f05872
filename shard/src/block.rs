//! Immutable block files: one tier's data for one left-open time bucket `(start, end]`.
//!
//! A block is written once, in full, synced and published by the engine's checkpoint; it is never
//! modified. Compaction writes a new block and deletes the old ones after the checkpoint that
//! stops naming them is durable (S5). Retention deletes whole blocks.
//!
//! Layout (integers little-endian):
//! ```text
//! header   magic "STRATABK" | version u8 = 2 | tier u8 | start_ms i64 | end_ms i64 | crc32 u32
//! entries  one per series: key (u32 len + SeriesKey canonical bytes) then the payload:
//!            raw:    n_chunks u32, then per chunk: min_ts i64 | max_ts i64 | u32 len + chunk bytes
//!            rollup: u32 len + rollup::encode bytes
//! index    count u32, then per entry sorted by series id: id u64 | offset u64 | len u32 | crc32 u32
//! footer   index_offset u64 | index crc32 u32 | magic "STRATABK"
//! ```
//! The header and index CRCs are checked when the block is opened, and the header must agree with
//! the file name (a damaged header must not make a block look like another bucket, which
//! retention would then delete or queries skip); every entry's CRC before its bytes are used.

use std::path::Path;

use crate::codec::{PutExt, Reader};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::rollup::{self, RollupRecord, Tier};
use crate::series::SeriesKey;

const MAGIC: &[u8; 8] = b"STRATABK";
const VERSION: u8 = 2;
const HEADER_BYTES: usize = 8 + 1 + 1 + 8 + 8 + 4;
const FOOTER_BYTES: usize = 8 + 4 + 8;
const INDEX_ENTRY_BYTES: usize = 8 + 8 + 4 + 4;

/// A sealed chunk of raw samples with its time bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct RawChunk {
    pub min_ts: i64,
    pub max_ts: i64,
    pub bytes: Vec<u8>,
}

/// What one series holds in one block.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Raw(Vec<RawChunk>),
    Rollup(Vec<RollupRecord>),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    offset: u64,
    len: u32,
    crc: u32,
}

/// An opened block: its identity and its in-memory index.
#[derive(Clone, Debug)]
pub struct Block {
    pub name: String,
    pub tier: Tier,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Generation of the checkpoint that published it; for the same series and timestamp or
    /// rollup window, the block of the higher generation holds the newer data.
    pub generation: u64,
    entries: Vec<Entry>,
}

/// File name of a block: `<tier>-<end_ms>-<generation>.blk`.
pub fn file_name(tier: Tier, end_ms: i64, generation: u64) -> String {
    format!("{}-{end_ms}-{generation:016}.blk", tier.name())
}

/// Builds the bytes of a block in memory; the caller writes them durably.
pub struct BlockWriter {
    tier: Tier,
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

impl BlockWriter {
    pub fn new(tier: Tier, start_ms: i64, end_ms: i64) -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(tier_code(tier));
        buf.put_i64(start_ms);
        buf.put_i64(end_ms);
        let crc = crc32fast::hash(&buf);
        buf.put_u32(crc);
        BlockWriter {
            tier,
            buf,
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds one series' data. Each series is added at most once per block.
    pub fn add(&mut self, key: &SeriesKey, payload: &Payload) {
        let offset = self.buf.len();
        self.buf.put_bytes(&key.canonical_bytes());
        match payload {
            Payload::Raw(chunks) => {
                assert_eq!(self.tier, Tier::Raw, "raw data goes to raw blocks only");
                self.buf.put_u32(chunks.len() as u32);
                for c in chunks {
                    self.buf.put_i64(c.min_ts);
                    self.buf.put_i64(c.max_ts);
                    self.buf.put_bytes(&c.bytes);
                }
            }
            Payload::Rollup(records) => {
                assert_ne!(self.tier, Tier::Raw, "rollups go to rollup blocks only");
                let mut enc = Vec::new();
                rollup::encode(records, &mut enc);
                self.buf.put_bytes(&enc);
            }
        }
        let bytes = &self.buf[offset..];
        self.entries.push(Entry {
            id: key.id().0,
            offset: offset as u64,
            len: bytes.len() as u32,
            crc: crc32fast::hash(bytes),
        });
    }

    /// The complete file.
    pub fn finish(mut self) -> Vec<u8> {
        self.entries.sort_by_key(|e| (e.id, e.offset));
        let index_offset = self.buf.len() as u64;
        let mut index = Vec::with_capacity(4 + self.entries.len() * INDEX_ENTRY_BYTES);
        index.put_u32(self.entries.len() as u32);
        for e in &self.entries {
            index.put_u64(e.id);
            index.put_u64(e.offset);
            index.put_u32(e.len);
            index.put_u32(e.crc);
        }
        let index_crc = crc32fast::hash(&index);
        self.buf.extend_from_slice(&index);
        self.buf.put_u64(index_offset);
        self.buf.put_u32(index_crc);
        self.buf.extend_from_slice(MAGIC);
        self.buf
    }
}

fn tier_code(tier: Tier) -> u8 {
    match tier {
        Tier::Raw => 0,
        Tier::Minute => 1,
        Tier::Hour => 2,
    }
}

fn tier_from_code(code: u8) -> Option<Tier> {
    match code {
        0 => Some(Tier::Raw),
        1 => Some(Tier::Minute),
        2 => Some(Tier::Hour),
        _ => None,
    }
}

impl Block {
    /// Opens a block: reads header, footer and index (not the data) and checks the index CRC.
    pub fn open(fs: &dyn Fs, dir: &Path, name: &str, generation: u64) -> Result<Block> {
        let path = dir.join(name);
        let what = format!("block {}", path.display());
        let len = fs
            .file_len(&path)
            .map_err(|e| Error::io("stat block", &path, e))? as usize;
        if len < HEADER_BYTES + 4 + FOOTER_BYTES {
            return Err(Error::corrupt(what, format!("{len} bytes is too short")));
        }
        let read = |offset: usize, n: usize| {
            fs.read_at(&path, offset as u64, n)
                .map_err(|e| Error::io("read block", &path, e))
        };
        let header = read(0, HEADER_BYTES)?;
        let mut h = Reader::new(&header, &what);
        if h.take(8)? != MAGIC {
            return Err(h.corrupt("bad magic in header"));
        }
        let version = h.u8()?;
        if version != VERSION {
            return Err(h.corrupt(format!(
                "unknown block version {version} (expected {VERSION})"
            )));
        }
        let tier_code = h.u8()?;
        let start_ms = h.i64()?;
        let end_ms = h.i64()?;
        let crc = h.u32()?;
        if crc32fast::hash(&header[..HEADER_BYTES - 4]) != crc {
            return Err(Error::corrupt(what, "header CRC mismatch"));
        }
        let tier = tier_from_code(tier_code).ok_or_else(|| h.corrupt("unknown tier"))?;
        if start_ms >= end_ms || name != file_name(tier, end_ms, generation) {
            return Err(Error::corrupt(
                what,
                format!(
                    "header says {} block ({start_ms}, {end_ms}] of generation {generation}, \
                     which does not match the file name",
                    tier.name()
                ),
            ));
        }
        let footer = read(len - FOOTER_BYTES, FOOTER_BYTES)?;
        let mut f = Reader::new(&footer, &what);
        let index_offset = f.u64()? as usize;
        let index_crc = f.u32()?;
        if f.take(8)? != MAGIC {
            return Err(f.corrupt("bad magic in footer"));
        }
        if index_offset < HEADER_BYTES || index_offset > len - FOOTER_BYTES {
            return Err(f.corrupt(format!("index offset {index_offset} out of range")));
        }
        let index = read(index_offset, len - FOOTER_BYTES - index_offset)?;
        if crc32fast::hash(&index) != index_crc {
            return Err(Error::corrupt(what, "index CRC mismatch"));
        }
        let mut r = Reader::new(&index, &what);
        let n = r.count(INDEX_ENTRY_BYTES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let e = Entry {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.u32()?,
                crc: r.u32()?,
            };
            let inside = e.offset >= HEADER_BYTES as u64
                && e.offset
                    .checked_add(e.len.into())
                    .is_some_and(|end| end <= index_offset as u64);
            if !inside {
                return Err(r.corrupt(format!(
                    "entry ({} bytes at {}) lies outside the data section",
                    e.len, e.offset
                )));
            }
            entries.push(e);
        }
        Ok(Block {
            name: name.to_string(),
            tier,
            start_ms,
            end_ms,
            generation,
            entries,
        })
    }

    pub fn series_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether `(start, end]` of the block intersects `[min_ts, max_ts]`.
    pub fn overlaps(&self, min_ts: i64, max_ts: i64) -> bool {
        self.start_ms < max_ts && min_ts <= self.end_ms
    }

    /// The payload of `key` in this block, if present. Entries whose id matches but whose key
    /// differs belong to another series (S1).
    pub fn read(&self, fs: &dyn Fs, dir: &Path, key: &SeriesKey) -> Result<Option<Payload>> {
        let id = key.id().0;
        let first = self.entries.partition_point(|e| e.id < id);
        for e in self.entries[first..].iter().take_while(|e| e.id == id) {
            let path = dir.join(&self.name);
            let bytes = fs
                .read_at(&path, e.offset, e.len as usize)
                .map_err(|err| Error::io("read block entry", &path, err))?;
            let what = format!("block {} entry at {}", self.name, e.offset);
            if crc32fast::hash(&bytes) != e.crc {
                return Err(Error::corrupt(what, "entry CRC mismatch"));
            }
            let mut r = Reader::new(&bytes, &what);
            let stored = SeriesKey::from_canonical_bytes(r.bytes()?)?;
            if &stored != key {
                continue;
            }
            return Ok(Some(self.decode_payload(&mut r)?));
        }
        Ok(None)
    }

    /// Every series and its payload, in index order (for compaction and recovery checks).
    pub fn read_all(&self, fs: &dyn Fs, dir: &Path) -> Result<Vec<(SeriesKey, Payload)>> {
        let path = dir.join(&self.name);
        let bytes = fs
            .read(&path)
            .map_err(|e| Error::io("read block", &path, e))?;
        let mut out = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let what = format!("block {} entry at {}", self.name, e.offset);
            // `open` checked the entry against the file's length; a file that shrank since is
            // corrupt, not a panic.
            let slice = usize::try_from(e.offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(e.len as usize)?))
                .ok_or_else(|| {
                    Error::corrupt(what.clone(), "entry lies past the end of the file")
                })?;
            if crc32fast::hash(slice) != e.crc {
                return Err(Error::corrupt(what, "entry CRC mismatch"));
            }
            let mut r = Reader::new(slice, &what);
            let key = SeriesKey::from_canonical_bytes(r.bytes()?)?;
            out.push((key, self.decode_payload(&mut r)?));
        }
        Ok(out)
    }

    fn decode_payload(&self, r: &mut Reader<'_>) -> Result<Payload> {
        Ok(match self.tier {
            Tier::Raw => {
                let n = r.count(20)?;
                let mut chunks = Vec::with_capacity(n);
                for _ in 0..n {
                    chunks.push(RawChunk {
                        min_ts: r.i64()?,
                        max_ts: r.i64()?,
                        bytes: r.bytes()?.to_vec(),
                    });
                }
                Payload::Raw(chunks)
            }
            Tier::Minute | Tier::Hour => Payload::Rollup(rollup::decode(r.bytes()?)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{create_dir_all_durable, write_file_atomic};
    use crate::series::{Labels, Tenant};
    use crate::sim_fs::SimFs;

    fn one_block(fs: &SimFs, name: &str) -> Vec<u8> {
        let key = SeriesKey::new(
            Tenant::new("t").unwrap(),
            Labels::from_pairs(&[("__name__", "up")]).unwrap(),
        );
        let mut w = BlockWriter::new(Tier::Raw, 0, 7_200_000);
        w.add(
            &key,
            &Payload::Raw(vec![RawChunk {
                min_ts: 1,
                max_ts: 1,
                bytes: vec![1, 2, 3],
            }]),
        );
        let bytes = w.finish();
        create_dir_all_durable(fs, Path::new("/d")).unwrap();
        write_file_atomic(fs, &Path::new("/d").join(name), &bytes).unwrap();
        bytes
    }

    fn corrupt_reason(r: Result<Block>) -> String {
        match r {
            Err(Error::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_block_whose_header_disagrees_with_its_file_name_is_corrupt() {
        let fs = SimFs::new();
        let right = file_name(Tier::Raw, 7_200_000, 3);
        one_block(&fs, &right);
        Block::open(&fs, Path::new("/d"), &right, 3).unwrap();
        for (name, generation) in [
            (file_name(Tier::Raw, 14_400_000, 3), 3),
            (file_name(Tier::Minute, 7_200_000, 3), 3),
            (right.clone(), 4),
        ] {
            one_block(&fs, &name);
            let reason = corrupt_reason(Block::open(&fs, Path::new("/d"), &name, generation));
            assert!(reason.contains("does not match the file name"), "{reason}");
        }
    }

    #[test]
    fn an_index_entry_pointing_outside_the_data_is_corrupt_not_a_panic() {
        let fs = SimFs::new();
        let name = file_name(Tier::Raw, 7_200_000, 1);
        let good = one_block(&fs, &name);
        let index_offset =
            u64::from_le_bytes(good[good.len() - FOOTER_BYTES..][..8].try_into().unwrap()) as usize;
        // The one entry: count u32, then id u64 | offset u64 | len u32 | crc u32.
        for (offset, len) in [
            (u64::MAX - 1, 16u32),
            (0, 4),
            (HEADER_BYTES as u64, u32::MAX),
        ] {
            let mut bytes = good.clone();
            let entry = index_offset + 4;
            bytes[entry + 8..entry + 16].copy_from_slice(&offset.to_le_bytes());
            bytes[entry + 16..entry + 20].copy_from_slice(&len.to_le_bytes());
            let index_end = bytes.len() - FOOTER_BYTES;
            let crc = crc32fast::hash(&bytes[index_offset..index_end]);
            bytes[index_end + 8..index_end + 12].copy_from_slice(&crc.to_le_bytes());
            write_file_atomic(&fs, &Path::new("/d").join(&name), &bytes).unwrap();
            let reason = corrupt_reason(Block::open(&fs, Path::new("/d"), &name, 1));
            assert!(reason.contains("outside the data section"), "{reason}");
        }
    }
}
