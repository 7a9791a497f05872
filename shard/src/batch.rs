//! [`WriteBatch`]: the samples of several series in the one encoded form they keep from the
//! router through the Raft log, the WAL and the network to [`crate::engine::Engine::apply_batch`].
//!
//! Why encoded: a batch is built once (router) but read on every replica, kept in the Raft log
//! and sent to every follower. As a vector of [`SeriesKey`]s (a `String` per label name and
//! value) each replica had to allocate every label of every series to decode an entry, and free
//! them again, only for the engine to hash them back into bytes and find the series it already
//! had: about a third of the CPU of a replicated write. Encoded, decoding an entry is one copy,
//! and the engine finds a series by hashing and comparing its canonical bytes in place
//! ([`SeriesKey::matches_canonical`]); a [`SeriesKey`] is built only for a series it has not
//! seen.
//!
//! ## Layout (little-endian; the Raft log's write-command encoding, so it is on disk)
//! `u32 series`, then per series: `u32 len`, the key's canonical bytes
//! ([`SeriesKey::canonical_bytes`]), `u32 samples`, then per sample `i64 ts_ms`, `f64 value`.
//!
//! ## Invariants
//! - B1. Every `WriteBatch` is well framed: built by [`WriteBatchBuilder`] from valid keys, or
//!   read by [`WriteBatch::read`], which checks the layout (every length and count within the
//!   bytes). So iterating never fails.
//! - B2. A key's canonical bytes are checked where they are used, not on read (that cost a
//!   fifth of a follower's CPU): the engine compares them byte for byte with a stored key's
//!   ([`SeriesKey::matches_canonical`]), and decodes them, with every check of
//!   [`SeriesKey::from_canonical_bytes`], only for a series it does not have
//!   ([`BatchSeries::key`]). Bytes that do not decode fail that series alone, the same way on
//!   every replica.
//! - B3. The bytes are immutable and shared: cloning a batch is a reference-count increment.

use std::fmt;
use std::sync::Arc;

use crate::codec::{PutExt, Reader};
use crate::error::Result;
use crate::series::{Sample, SeriesId, SeriesKey, series_id_of_canonical};

/// Bytes of one encoded sample (`i64` timestamp, `f64` value).
const SAMPLE_BYTES: usize = 16;

/// A write batch in its encoded form (module doc). Equal batches have equal bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WriteBatch {
    bytes: Arc<[u8]>,
    series: usize,
    samples: usize,
}

impl WriteBatch {
    /// The encoded bytes (module doc, Layout).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn series_count(&self) -> usize {
        self.series
    }

    pub fn sample_count(&self) -> usize {
        self.samples
    }

    /// The series of the batch, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = BatchSeries<'_>> {
        let mut rest = &self.bytes[4..];
        (0..self.series).map(move |_| {
            // B1: the layout was checked when the batch was built or read.
            let (series, tail) = BatchSeries::split(rest).expect("B1: a checked batch");
            rest = tail;
            series
        })
    }

    /// Reads a batch written by [`Self::as_bytes`] from `r`, checking its framing (B1, B2); `r`
    /// is left just after it.
    pub fn read(r: &mut Reader<'_>) -> Result<WriteBatch> {
        let start = r.remaining();
        let mut out = WriteBatchBuilder::new();
        let n = r.count(8)?;
        for _ in 0..n {
            let canonical = r.bytes()?;
            let m = r.count(SAMPLE_BYTES)?;
            let samples = r.take(m * SAMPLE_BYTES)?;
            out.buf.put_bytes(canonical);
            out.buf.put_u32(m as u32);
            out.buf.extend_from_slice(samples);
            out.series += 1;
            out.samples += m;
        }
        debug_assert_eq!(out.buf.len(), start - r.remaining());
        Ok(out.finish())
    }
}

impl fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let series = self.iter().map(|s| match s.key() {
            Ok(key) => (key.to_string(), s.samples().collect::<Vec<_>>()),
            Err(e) => (e.to_string(), Vec::new()),
        });
        f.debug_list().entries(series).finish()
    }
}

impl From<&[(SeriesKey, Vec<Sample>)]> for WriteBatch {
    fn from(series: &[(SeriesKey, Vec<Sample>)]) -> WriteBatch {
        let mut b = WriteBatchBuilder::new();
        for (key, samples) in series {
            b.push(key, samples);
        }
        b.finish()
    }
}

impl FromIterator<(SeriesKey, Vec<Sample>)> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = (SeriesKey, Vec<Sample>)>>(series: I) -> WriteBatch {
        let mut b = WriteBatchBuilder::new();
        for (key, samples) in series {
            b.push(&key, &samples);
        }
        b.finish()
    }
}

impl From<Vec<(SeriesKey, Vec<Sample>)>> for WriteBatch {
    fn from(series: Vec<(SeriesKey, Vec<Sample>)>) -> WriteBatch {
        WriteBatch::from(&series[..])
    }
}

/// Builds a [`WriteBatch`] series by series.
#[derive(Debug)]
pub struct WriteBatchBuilder {
    buf: Vec<u8>,
    series: usize,
    samples: usize,
}

impl Default for WriteBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteBatchBuilder {
    pub fn new() -> Self {
        WriteBatchBuilder {
            // The series count, patched in by `finish`.
            buf: vec![0; 4],
            series: 0,
            samples: 0,
        }
    }

    /// Adds `key`'s samples.
    pub fn push(&mut self, key: &SeriesKey, samples: &[Sample]) {
        self.buf.put_u32(key.canonical_len() as u32);
        key.put_canonical(&mut self.buf);
        self.put_samples(samples);
    }

    /// Adds samples of the series whose canonical bytes are `canonical`, which must come from
    /// [`SeriesKey::put_canonical`] or [`SeriesKey::canonical_bytes`].
    pub fn push_canonical(&mut self, canonical: &[u8], samples: &[Sample]) {
        self.buf.put_bytes(canonical);
        self.put_samples(samples);
    }

    fn put_samples(&mut self, samples: &[Sample]) {
        self.buf.put_u32(samples.len() as u32);
        self.buf.reserve(samples.len() * SAMPLE_BYTES);
        for s in samples {
            self.buf.put_i64(s.ts_ms);
            self.buf.put_f64(s.value);
        }
        self.series += 1;
        self.samples += samples.len();
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    pub fn sample_count(&self) -> usize {
        self.samples
    }

    pub fn finish(mut self) -> WriteBatch {
        let n = u32::try_from(self.series).expect("fewer than 2^32 series in a batch");
        self.buf[..4].copy_from_slice(&n.to_le_bytes());
        WriteBatch {
            bytes: self.buf.into(),
            series: self.series,
            samples: self.samples,
        }
    }
}

/// One series of a [`WriteBatch`], borrowed from it.
#[derive(Clone, Copy)]
pub struct BatchSeries<'a> {
    canonical: &'a [u8],
    samples: &'a [u8],
}

impl<'a> BatchSeries<'a> {
    /// The series at the start of `bytes` and what follows it.
    fn split(bytes: &'a [u8]) -> Result<(BatchSeries<'a>, &'a [u8])> {
        let mut r = Reader::new(bytes, "write batch");
        let canonical = r.bytes()?;
        let m = r.count(SAMPLE_BYTES)?;
        let samples = r.take(m * SAMPLE_BYTES)?;
        let used = bytes.len() - r.remaining();
        Ok((BatchSeries { canonical, samples }, &bytes[used..]))
    }

    /// The key's canonical bytes ([`SeriesKey::canonical_bytes`]).
    pub fn canonical(&self) -> &'a [u8] {
        self.canonical
    }

    /// The series id, hashed from the bytes in place.
    pub fn id(&self) -> SeriesId {
        series_id_of_canonical(self.canonical)
    }

    /// The key, decoded (allocates every label), or why the bytes are not a key (B2).
    pub fn key(&self) -> Result<SeriesKey> {
        SeriesKey::from_canonical_bytes(self.canonical)
    }

    pub fn sample_count(&self) -> usize {
        self.samples.len() / SAMPLE_BYTES
    }

    pub fn samples(&self) -> impl ExactSizeIterator<Item = Sample> + Clone + 'a {
        self.samples.chunks_exact(SAMPLE_BYTES).map(|s| {
            let (ts, value) = s.split_at(8);
            Sample::new(
                i64::from_le_bytes(ts.try_into().expect("8 bytes")),
                f64::from_bits(u64::from_le_bytes(value.try_into().expect("8 bytes"))),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{Labels, Tenant};
    use proptest::prelude::*;

    fn key(tenant: &str, pairs: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            Tenant::new(tenant).unwrap(),
            Labels::from_pairs(pairs).unwrap(),
        )
    }

    fn decoded(b: &WriteBatch) -> Vec<(SeriesKey, Vec<(i64, u64)>)> {
        b.iter()
            .map(|s| {
                let samples = s.samples().map(|x| (x.ts_ms, x.value.to_bits())).collect();
                (s.key().unwrap(), samples)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn a_batch_reads_back_what_was_pushed(
            series in prop::collection::vec(
                ("[a-z]{1,6}", prop::collection::vec(("[a-z]{1,4}", "[a-z0-9]{0,5}"), 0..4),
                 prop::collection::vec((any::<i64>(), any::<u64>()), 0..5)),
                0..6),
        ) {
            let input: Vec<(SeriesKey, Vec<Sample>)> = series
                .iter()
                .map(|(metric, labels, samples)| {
                    let mut pairs: Vec<(&str, &str)> = vec![("__name__", metric)];
                    for (n, v) in labels {
                        if !pairs.iter().any(|(m, _)| m == n) {
                            pairs.push((n, v));
                        }
                    }
                    let samples =
                        samples.iter().map(|&(t, v)| Sample::new(t, f64::from_bits(v))).collect();
                    (key("t", &pairs), samples)
                })
                .collect();
            let batch = WriteBatch::from(&input[..]);
            let want: Vec<_> = input
                .iter()
                .map(|(k, s)| (k.clone(), s.iter().map(|x| (x.ts_ms, x.value.to_bits())).collect()))
                .collect();
            prop_assert_eq!(decoded(&batch), want);
            prop_assert_eq!(batch.series_count(), input.len());
            prop_assert_eq!(batch.sample_count(), input.iter().map(|(_, s)| s.len()).sum::<usize>());
            for (s, (k, _)) in batch.iter().zip(&input) {
                prop_assert_eq!(s.id(), k.id());
                prop_assert!(k.matches_canonical(s.canonical()));
            }
            // What `read` accepts is exactly the bytes, and it stops at their end.
            let mut bytes = batch.as_bytes().to_vec();
            bytes.extend_from_slice(b"tail");
            let mut r = Reader::new(&bytes, "test");
            let back = WriteBatch::read(&mut r).unwrap();
            prop_assert!(back == batch);
            prop_assert_eq!(r.take(4).unwrap(), b"tail");
        }
    }

    #[test]
    fn read_refuses_every_truncation_and_keys_are_checked_when_decoded() {
        let batch = WriteBatch::from(vec![
            (
                key("t", &[("__name__", "up"), ("job", "a")]),
                vec![Sample::new(1, 1.0)],
            ),
            (key("u", &[("__name__", "x")]), vec![]),
        ]);
        let bytes = batch.as_bytes();
        for cut in 0..bytes.len() {
            assert!(
                WriteBatch::read(&mut Reader::new(&bytes[..cut], "test")).is_err(),
                "a batch cut at {cut} of {} bytes was accepted",
                bytes.len()
            );
        }
        // Labels out of order inside a key's canonical bytes: read takes the batch, the key
        // does not decode (B2).
        let mut unsorted = Vec::new();
        unsorted.put_u32(1);
        let mut canonical = Vec::new();
        for s in ["t", "job", "a", "__name__", "up"] {
            canonical.put_bytes(s.as_bytes());
        }
        unsorted.put_bytes(&canonical);
        unsorted.put_u32(0);
        let batch = WriteBatch::read(&mut Reader::new(&unsorted, "test")).unwrap();
        let e = batch.iter().next().unwrap().key().unwrap_err();
        assert!(e.to_string().contains("sorted"), "{e}");
    }

    #[test]
    fn matches_canonical_tells_keys_apart() {
        let a = key("t", &[("__name__", "up"), ("job", "a")]);
        let others = [
            key("t", &[("__name__", "up"), ("job", "b")]),
            key("t", &[("__name__", "up")]),
            key("tt", &[("__name__", "up"), ("job", "a")]),
            key("t", &[("__name__", "up"), ("job", "a"), ("z", "1")]),
        ];
        assert!(a.matches_canonical(&a.canonical_bytes()));
        for o in &others {
            assert!(!a.matches_canonical(&o.canonical_bytes()), "{o}");
            assert!(!o.matches_canonical(&a.canonical_bytes()), "{o}");
        }
        assert!(!a.matches_canonical(&[]));
    }
}
