//! # Prometheus remote-write 1.0: decoding and validating a request body
//!
//! The parsing half of `POST /api/v1/write` (the HTTP layer comes later): the body is a
//! `prometheus.WriteRequest` (`strata_proto::prometheus`, upstream field numbers), protobuf
//! encoded and then Snappy-compressed in the *block* format (not the framed stream format).
//! [`decode_write_request`] turns it into validated series keys and samples for one tenant.
//!
//! ## Types
//! - [`RemoteWriteLimits`]: size bounds of a body and the [`LabelLimits`] of the tenant.
//! - [`DecodedWrite`]: the kept series (`(SeriesKey, Vec<Sample>)` in request order), the
//!   per-series errors, the counts, and what was ignored ([`Ignored`]: histograms, exemplars,
//!   metadata).
//! - [`SeriesError`] / [`SeriesProblem`] / [`LimitBreach`]: why one series (or some of its
//!   samples) was refused, naming the series, the label and the limit.
//! - [`RemoteWriteError`]: the whole request is refused (too large, not Snappy, not protobuf).
//! - [`http_status`]: the status code a sender expects for an outcome (pure).
//!
//! ## Invariants (cited by number)
//! - R1. Nothing is decompressed unless the compressed size is within
//!   `body_compressed_bytes_max` *and* the decompressed size announced in the Snappy header is
//!   within `body_decompressed_bytes_max`; the decompressed buffer is never larger than that.
//!   (Decoded structures are larger than the protobuf, see R10, so the HTTP layer must also
//!   bound concurrent requests.)
//! - R2. Either the whole request is refused ([`RemoteWriteError`], nothing to write) or each
//!   series is judged on its own: a valid series is kept even when others are refused, as
//!   Prometheus senders expect (400 with the first error, valid samples written; Mimir's rule).
//! - R3. Every kept series' labels passed `strata_shard::series::Labels::new` with the tenant's
//!   [`LabelLimits`]: name syntax, lengths, count, no duplicate names, a metric name; labels with
//!   empty values are dropped first, as Prometheus does. Every kept sample's timestamp lies within
//!   `±TS_ABS_MAX_MS` (shard invariant S7); a sample outside is refused alone, the rest of its
//!   series is kept.
//! - R4. Values pass through bit for bit. Prometheus accepts every float64 (finite, ±Inf, NaN),
//!   so none is refused; the stale marker (`STALE_NAN_BITS`) and other NaN payloads keep their
//!   exact bits. (DESIGN.md says "finite-or-NaN"; refusing ±Inf would drop data Prometheus itself
//!   stores, e.g. `+Inf` gauges, so Prometheus' behaviour wins.)
//! - R5. Order and duplicates are left alone: series keep the request's order, samples the
//!   sender's order (time order is not required: the engine merges out-of-order samples within
//!   its window). Samples with the same series and timestamp, in one request or across requests,
//!   are not deduplicated here: the engine's rule D1 (shard invariant S2) stores an identical
//!   duplicate once and refuses a different value with an error naming both values, which a
//!   router-side dedup would either duplicate or hide. Two `TimeSeries` entries with the same
//!   labels stay two entries of [`DecodedWrite::series`] for the same reason.
//! - R6. Counts add up: `samples_total == samples_accepted + samples_rejected`, and
//!   `samples_accepted` is the number of samples in `series`. `rejected` keeps the first
//!   `series_errors_reported_max` errors; `errors_total` counts all of them.
//! - R7. No input panics: any byte string yields `Ok` or `Err` (memory: R1, R10).
//! - R8. Error texts are bounded: series texts are cut to [`SERIES_TEXT_BYTES_MAX`], label names
//!   and reasons to [`DETAIL_TEXT_BYTES_MAX`], so a hostile label cannot blow up a response.
//! - R9. Histograms, exemplars and metadata are counted and ignored, never an error: Strata
//!   stores float samples only (for now). A series with no float samples is not validated.
//! - R10. Decoding is bounded by the body, not amplified by it: `TimeSeries` entries are decoded
//!   and validated one at a time (never the whole `WriteRequest` at once); within an entry only
//!   labels and float samples are decoded (exemplars and histograms are only counted, so their
//!   content is not checked), into vectors sized by a first scan; an entry with more than
//!   `2 * labels_per_series_max + 16` label entries is refused alone before it is decoded. Peak
//!   memory is then about the output (at most ~10x the decompressed body, for tiny series of
//!   tiny samples) plus one entry's labels and samples, instead of up to ~100x the body for a
//!   request of empty messages (2 wire bytes each, each a struct of 100 bytes or more).

use std::fmt;

use prost::Message;
use strata_proto::prometheus as pb;
use strata_shard::series::{Label, LabelLimits, Labels, Sample, SeriesKey, TS_ABS_MAX_MS, Tenant};

/// Longest series text kept in a [`SeriesError`] (R8).
pub const SERIES_TEXT_BYTES_MAX: usize = 512;
/// Longest label name or reason kept in a [`SeriesError`] (R8).
pub const DETAIL_TEXT_BYTES_MAX: usize = 256;

/// Bounds on one remote-write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteWriteLimits {
    /// Largest body accepted as sent (Snappy-compressed).
    pub body_compressed_bytes_max: usize,
    /// Largest protobuf accepted after decompression, as announced by the Snappy header.
    pub body_decompressed_bytes_max: usize,
    /// Label bounds of the tenant (checked by the shard crate's validation).
    pub labels: LabelLimits,
    /// How many [`SeriesError`]s a [`DecodedWrite`] keeps; the rest are only counted.
    pub series_errors_reported_max: usize,
}

impl Default for RemoteWriteLimits {
    /// Well above what Prometheus (about 2000 samples per request) and vmagent (blocks of at
    /// most 8 MB uncompressed) send with their defaults, and small enough that a request's
    /// decoded form stays in the hundreds of MB at worst (R1).
    fn default() -> Self {
        RemoteWriteLimits {
            body_compressed_bytes_max: 8 << 20,
            body_decompressed_bytes_max: 32 << 20,
            labels: LabelLimits::default(),
            series_errors_reported_max: 100,
        }
    }
}

/// The whole request was refused; nothing of it may be written (R2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteWriteError {
    /// The body as sent is larger than `body_compressed_bytes_max`.
    #[error(
        "remote-write body is {body_bytes} bytes, over the limit body_compressed_bytes_max = {limit_bytes} bytes"
    )]
    BodyTooLarge {
        body_bytes: usize,
        limit_bytes: usize,
    },
    /// The Snappy header announces more than `body_decompressed_bytes_max`; refused before
    /// decompressing (R1).
    #[error(
        "remote-write body decompresses to {announced_bytes} bytes (Snappy header), over the limit body_decompressed_bytes_max = {limit_bytes} bytes"
    )]
    DecompressedTooLarge {
        announced_bytes: usize,
        limit_bytes: usize,
    },
    /// The body is not Snappy block-format data.
    #[error(
        "remote-write body is not Snappy block-format data (remote_write 1.0: protobuf, then Snappy block format, Content-Encoding: snappy): {reason}"
    )]
    NotSnappy { reason: String },
    /// The decompressed body is not a `prometheus.WriteRequest`.
    #[error(
        "remote-write body ({decompressed_bytes} bytes decompressed) is not a protobuf prometheus.WriteRequest: {reason}"
    )]
    NotProtobuf {
        decompressed_bytes: usize,
        reason: String,
    },
}

impl RemoteWriteError {
    /// A short, stable name of the variant: the `reason` label of reject counters.
    pub fn reason(&self) -> &'static str {
        match self {
            RemoteWriteError::BodyTooLarge { .. } => "body_too_large",
            RemoteWriteError::DecompressedTooLarge { .. } => "body_decompressed_too_large",
            RemoteWriteError::NotSnappy { .. } => "not_snappy",
            RemoteWriteError::NotProtobuf { .. } => "not_protobuf",
        }
    }
}

/// A [`LabelLimits`] bound that a series crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitBreach {
    /// The limit's field name in [`LabelLimits`], e.g. `"label_value_bytes_max"`.
    pub limit: &'static str,
    pub max: usize,
    pub actual: usize,
}

impl fmt::Display for LimitBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, over the limit {} = {}",
            self.what(),
            self.actual,
            self.limit,
            self.max
        )
    }
}

impl LimitBreach {
    fn what(&self) -> &'static str {
        match self.limit {
            "label_name_bytes_max" => "label name length in bytes",
            "label_value_bytes_max" => "label value length in bytes",
            _ => "number of labels",
        }
    }
}

/// Why one series, or some of its samples, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesProblem {
    /// One label broke the rules; the whole series is refused.
    InvalidLabel {
        /// The label's name (truncated, R8).
        label: String,
        /// Set when a [`LabelLimits`] bound was crossed.
        limit: Option<LimitBreach>,
        reason: String,
    },
    /// The label set as a whole is refused (no metric name, too many labels).
    InvalidSeries {
        limit: Option<LimitBreach>,
        reason: String,
    },
    /// Some samples lie outside `±TS_ABS_MAX_MS` (S7); only they are refused.
    TimestampOutOfRange {
        /// The first refused timestamp, in the sender's order.
        ts_ms: i64,
        bound_ms: i64,
    },
}

/// One refused series (or refused samples of a series), for the sender and for self-metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesError {
    /// Position of the series in the request's `timeseries`.
    pub index: usize,
    /// The series in Prometheus text form, `name{a="b", ...}`, cut to
    /// [`SERIES_TEXT_BYTES_MAX`] (R8).
    pub series: String,
    /// Samples of this series that were not kept.
    pub samples_refused: usize,
    pub problem: SeriesProblem,
}

impl SeriesError {
    /// A short, stable name of the problem: the `reason` label of reject counters.
    pub fn reason(&self) -> &'static str {
        match &self.problem {
            SeriesProblem::InvalidLabel { limit: Some(_), .. }
            | SeriesProblem::InvalidSeries { limit: Some(_), .. } => "label_limit",
            SeriesProblem::InvalidLabel { .. } => "invalid_label",
            SeriesProblem::InvalidSeries { .. } => "invalid_series",
            SeriesProblem::TimestampOutOfRange { .. } => "timestamp_out_of_range",
        }
    }
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            SeriesProblem::InvalidLabel { label, reason, .. } => write!(
                f,
                "invalid label {label:?} in series {}: {reason} ({} samples refused)",
                self.series, self.samples_refused
            ),
            SeriesProblem::InvalidSeries { reason, .. } => write!(
                f,
                "invalid series {}: {reason} ({} samples refused)",
                self.series, self.samples_refused
            ),
            SeriesProblem::TimestampOutOfRange { ts_ms, bound_ms } => write!(
                f,
                "series {}: {} samples refused, timestamps must lie within ±{bound_ms} ms (first: {ts_ms} ms)",
                self.series, self.samples_refused
            ),
        }
    }
}

/// What a request carried that Strata does not store (R9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored {
    pub histograms: usize,
    pub exemplars: usize,
    pub metadata: usize,
}

impl Ignored {
    pub fn is_empty(&self) -> bool {
        *self == Ignored::default()
    }
}

/// A decoded and validated request (R2-R6).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodedWrite {
    /// Kept series with their kept samples, in request order (R5). Never an empty sample list.
    pub series: Vec<(SeriesKey, Vec<Sample>)>,
    /// The first `series_errors_reported_max` errors, in request order.
    pub rejected: Vec<SeriesError>,
    /// Every error, including those not kept in `rejected`.
    pub errors_total: usize,
    /// `TimeSeries` entries in the request.
    pub series_total: usize,
    /// Entries with float samples none of which was kept.
    pub series_rejected: usize,
    /// Float samples in the request.
    pub samples_total: usize,
    pub samples_accepted: usize,
    pub samples_rejected: usize,
    pub ignored: Ignored,
    /// Size of the protobuf after decompression.
    pub body_decompressed_bytes: usize,
}

impl DecodedWrite {
    /// The message for the sender when something was refused: the first error and the totals.
    pub fn error_message(&self) -> Option<String> {
        let first = self.rejected.first()?;
        Some(format!(
            "{first}; {} of {} series had errors, {} of {} samples refused, the other samples were written",
            self.errors_total, self.series_total, self.samples_rejected, self.samples_total
        ))
    }
}

/// The HTTP status a remote-write sender expects for an outcome.
///
/// - `204 No Content`: everything kept (Prometheus' own receiver answers 204; any 2xx is success
///   to senders). Ignored histograms, exemplars and metadata do not change that (R9).
/// - `400 Bad Request`: some series or samples were refused (the rest were kept, R2), or the
///   body is not Snappy or not protobuf. Senders drop a batch on 4xx and do not retry, which is
///   right: the same bytes would be refused again.
/// - `413 Payload Too Large`: the body or its decompressed size is over a limit. Also a 4xx, so
///   never retried; it tells the operator to lower the sender's batch size (Mimir does the same).
/// - `429 Too Many Requests` is deliberately never returned here: Prometheus and vmagent retry
///   429 (like 5xx) with backoff, so it is only for limits a retry can pass (ingestion rate,
///   concurrent requests), which belong to the HTTP layer. Every limit checked here is a property
///   of the request itself; answering 429 would make the sender retry the same refused batch
///   forever and stall its queue.
pub fn http_status(outcome: &Result<DecodedWrite, RemoteWriteError>) -> u16 {
    match outcome {
        Ok(w) if w.errors_total == 0 => 204,
        Ok(_) => 400,
        Err(
            RemoteWriteError::BodyTooLarge { .. } | RemoteWriteError::DecompressedTooLarge { .. },
        ) => 413,
        Err(RemoteWriteError::NotSnappy { .. } | RemoteWriteError::NotProtobuf { .. }) => 400,
    }
}

/// Decodes a remote-write 1.0 body for `tenant` and validates every series (R1-R9).
pub fn decode_write_request(
    body: &[u8],
    limits: &RemoteWriteLimits,
    tenant: &Tenant,
) -> Result<DecodedWrite, RemoteWriteError> {
    let raw = decompress(body, limits)?;
    let mut out = DecodedWrite {
        body_decompressed_bytes: raw.len(),
        ..DecodedWrite::default()
    };
    // R10: one `TimeSeries` at a time, instead of `WriteRequest::decode` of the whole body.
    let walked = for_each_message_field(&raw, |field, bytes| {
        match field {
            WRITE_REQUEST_TIMESERIES => {
                let index = out.series_total;
                out.series_total += 1;
                decode_and_validate_series(index, bytes, limits, tenant, &mut out)
                    .map_err(|e| format!("timeseries[{index}]: {e}"))?;
            }
            WRITE_REQUEST_METADATA => {
                pb::MetricMetadata::decode(bytes).map_err(|e| format!("metadata: {e}"))?;
                out.ignored.metadata += 1;
            }
            // Unknown fields are skipped, as protobuf decoders do.
            _ => {}
        }
        Ok(())
    });
    walked.map_err(|reason| RemoteWriteError::NotProtobuf {
        decompressed_bytes: raw.len(),
        reason,
    })?;
    debug_assert_eq!(
        out.samples_total,
        out.samples_accepted + out.samples_rejected,
        "R6"
    );
    Ok(out)
}

/// Field numbers of `prometheus.WriteRequest` (proto/prompb/remote.proto).
const WRITE_REQUEST_TIMESERIES: u32 = 1;
const WRITE_REQUEST_METADATA: u32 = 3;
/// Field numbers of `prometheus.TimeSeries` (proto/prompb/types.proto).
const TIME_SERIES_LABELS: u32 = 1;
const TIME_SERIES_SAMPLES: u32 = 2;
const TIME_SERIES_EXEMPLARS: u32 = 3;
const TIME_SERIES_HISTOGRAMS: u32 = 4;

/// Label entries a `TimeSeries` may carry to be decoded at all (R10): the limit counts only
/// non-empty values, so this leaves room for empty ones, which are dropped.
fn label_entries_max(limits: &LabelLimits) -> usize {
    limits
        .labels_per_series_max
        .saturating_mul(2)
        .saturating_add(16)
}

/// Decodes one `TimeSeries` of the request, or refuses it alone (R2) without decoding when it
/// carries more label entries than [`label_entries_max`] (R10).
fn decode_and_validate_series(
    index: usize,
    bytes: &[u8],
    limits: &RemoteWriteLimits,
    tenant: &Tenant,
    out: &mut DecodedWrite,
) -> Result<(), String> {
    let mut counts = [0usize; 5];
    for_each_message_field(bytes, |field, _| {
        if let Some(c) = counts.get_mut(field as usize) {
            *c += 1;
        }
        Ok(())
    })?;
    let label_entries = counts[TIME_SERIES_LABELS as usize];
    let samples = counts[TIME_SERIES_SAMPLES as usize];
    // R9, R10: exemplars and histograms are counted, never decoded.
    out.ignored.exemplars += counts[TIME_SERIES_EXEMPLARS as usize];
    out.ignored.histograms += counts[TIME_SERIES_HISTOGRAMS as usize];
    out.samples_total += samples;
    if samples == 0 {
        // R9: nothing of this entry is stored, so its labels are not judged.
        return Ok(());
    }
    if label_entries <= label_entries_max(&limits.labels) {
        // Exact capacities: the scan above counted the entries.
        let mut labels = Vec::with_capacity(label_entries);
        let mut decoded = Vec::with_capacity(samples);
        for_each_message_field(bytes, |field, bytes| {
            match field {
                TIME_SERIES_LABELS => {
                    labels.push(pb::Label::decode(bytes).map_err(|e| e.to_string())?)
                }
                TIME_SERIES_SAMPLES => {
                    decoded.push(pb::Sample::decode(bytes).map_err(|e| e.to_string())?)
                }
                _ => {}
            }
            Ok(())
        })?;
        validate_series(index, labels, decoded, limits, tenant, out);
        return Ok(());
    }
    out.samples_rejected += samples;
    out.series_rejected += 1;
    let limit = LimitBreach {
        limit: "labels_per_series_max",
        max: limits.labels.labels_per_series_max,
        actual: label_entries,
    };
    let reason = format!(
        "{label_entries} label entries (empty values included), over the limit labels_per_series_max = {}; not decoded",
        limit.max
    );
    let problem = SeriesProblem::InvalidSeries {
        limit: Some(limit),
        reason,
    };
    let series = format!("(series not decoded: {label_entries} label entries)");
    push_error(
        out,
        limits,
        SeriesError {
            index,
            series,
            samples_refused: samples,
            problem,
        },
    );
    Ok(())
}

/// The stream identifier that opens Snappy's *framed* format, which remote write does not use.
const SNAPPY_FRAMED_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// Checks the sizes (R1) and decompresses.
fn decompress(body: &[u8], limits: &RemoteWriteLimits) -> Result<Vec<u8>, RemoteWriteError> {
    if body.len() > limits.body_compressed_bytes_max {
        return Err(RemoteWriteError::BodyTooLarge {
            body_bytes: body.len(),
            limit_bytes: limits.body_compressed_bytes_max,
        });
    }
    let not_snappy = |reason: String| RemoteWriteError::NotSnappy { reason };
    if body.starts_with(SNAPPY_FRAMED_MAGIC) {
        return Err(not_snappy(
            "this is the Snappy framed (stream) format; remote_write uses the block format".into(),
        ));
    }
    if body.starts_with(b"\x1f\x8b") {
        return Err(not_snappy("this looks like gzip".into()));
    }
    // R1: the header is read and checked before a byte is decompressed.
    let announced_bytes = snap::raw::decompress_len(body)
        .map_err(|e| not_snappy(format!("bad length header: {e}")))?;
    if announced_bytes > limits.body_decompressed_bytes_max {
        return Err(RemoteWriteError::DecompressedTooLarge {
            announced_bytes,
            limit_bytes: limits.body_decompressed_bytes_max,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| not_snappy(e.to_string()))?;
    assert!(raw.len() <= limits.body_decompressed_bytes_max, "R1");
    Ok(raw)
}

/// Walks the fields of one protobuf message: calls `f(field number, bytes)` for every
/// length-delimited field, skips scalar fields, refuses malformed input. A few lines of the
/// wire format instead of `prost::encoding`, which is hidden from prost's public API.
fn for_each_message_field(
    mut buf: &[u8],
    mut f: impl FnMut(u32, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    fn varint(buf: &mut &[u8]) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).ok().filter(|n| *n <= buf.len());
        let n = n.ok_or_else(|| format!("field runs past the end ({} bytes left)", buf.len()))?;
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if field == 0 {
            return Err("field number 0".into());
        }
        match key & 7 {
            0 => drop(varint(&mut buf)?),
            1 => drop(take(&mut buf, 8)?),
            2 => {
                let len = varint(&mut buf)?;
                f(field, take(&mut buf, len)?)?;
            }
            5 => drop(take(&mut buf, 4)?),
            wire_type => return Err(format!("unsupported wire type {wire_type} (field {field})")),
        }
    }
    Ok(())
}

/// Judges one decoded series with float samples (R2-R5); counts were taken by the caller.
fn validate_series(
    index: usize,
    raw_labels: Vec<pb::Label>,
    raw_samples: Vec<pb::Sample>,
    limits: &RemoteWriteLimits,
    tenant: &Tenant,
    out: &mut DecodedWrite,
) {
    let n = raw_samples.len();
    debug_assert!(n > 0);
    let labels = match validate_labels(raw_labels, &limits.labels) {
        Ok(labels) => labels,
        Err((series, problem)) => {
            out.samples_rejected += n;
            out.series_rejected += 1;
            push_error(
                out,
                limits,
                SeriesError {
                    index,
                    series,
                    samples_refused: n,
                    problem,
                },
            );
            return;
        }
    };
    let in_range = -TS_ABS_MAX_MS..=TS_ABS_MAX_MS;
    let mut samples = Vec::with_capacity(n);
    let mut first_bad_ts = None;
    for s in raw_samples {
        if in_range.contains(&s.timestamp) {
            // R4: the value's bits are copied untouched.
            samples.push(Sample::new(s.timestamp, s.value));
        } else {
            first_bad_ts.get_or_insert(s.timestamp);
        }
    }
    let refused = n - samples.len();
    out.samples_accepted += samples.len();
    out.samples_rejected += refused;
    if let Some(ts_ms) = first_bad_ts {
        push_error(
            out,
            limits,
            SeriesError {
                index,
                series: truncate(&labels.to_string(), SERIES_TEXT_BYTES_MAX),
                samples_refused: refused,
                problem: SeriesProblem::TimestampOutOfRange {
                    ts_ms,
                    bound_ms: TS_ABS_MAX_MS,
                },
            },
        );
    }
    if samples.is_empty() {
        out.series_rejected += 1;
    } else {
        out.series
            .push((SeriesKey::new(tenant.clone(), labels), samples));
    }
}

fn push_error(out: &mut DecodedWrite, limits: &RemoteWriteLimits, e: SeriesError) {
    out.errors_total += 1;
    if out.rejected.len() < limits.series_errors_reported_max {
        out.rejected.push(e);
    }
}

/// Validates with the shard crate (R3). The three [`LabelLimits`] bounds are checked here first
/// only to report *which* limit was crossed as data ([`LimitBreach`]); the shard's validation
/// checks them again and remains the rule. On error, returns the series text (R8) and the problem.
fn validate_labels(
    raw: Vec<pb::Label>,
    limits: &LabelLimits,
) -> Result<Labels, (String, SeriesProblem)> {
    let present = || raw.iter().filter(|l| !l.value.is_empty());
    let count = present().count();
    if count > limits.labels_per_series_max {
        let limit = LimitBreach {
            limit: "labels_per_series_max",
            max: limits.labels_per_series_max,
            actual: count,
        };
        let problem = SeriesProblem::InvalidSeries {
            reason: limit.to_string(),
            limit: Some(limit),
        };
        return Err((raw_series_text(&raw), problem));
    }
    for l in present() {
        let limit = if l.name.len() > limits.label_name_bytes_max {
            Some(LimitBreach {
                limit: "label_name_bytes_max",
                max: limits.label_name_bytes_max,
                actual: l.name.len(),
            })
        } else if l.value.len() > limits.label_value_bytes_max {
            Some(LimitBreach {
                limit: "label_value_bytes_max",
                max: limits.label_value_bytes_max,
                actual: l.value.len(),
            })
        } else {
            None
        };
        if let Some(limit) = limit {
            let problem = SeriesProblem::InvalidLabel {
                label: truncate(&l.name, DETAIL_TEXT_BYTES_MAX),
                reason: limit.to_string(),
                limit: Some(limit),
            };
            return Err((raw_series_text(&raw), problem));
        }
    }
    let labels = raw
        .into_iter()
        .map(|l| Label {
            name: l.name,
            value: l.value,
        })
        .collect();
    Labels::new(labels, limits).map_err(|e| match e {
        strata_shard::Error::InvalidLabel {
            series,
            label,
            reason,
        } => (
            truncate(&series, SERIES_TEXT_BYTES_MAX),
            SeriesProblem::InvalidLabel {
                label: truncate(&label, DETAIL_TEXT_BYTES_MAX),
                limit: None,
                reason: truncate(&reason, DETAIL_TEXT_BYTES_MAX),
            },
        ),
        strata_shard::Error::InvalidSeries { series, reason } => (
            truncate(&series, SERIES_TEXT_BYTES_MAX),
            SeriesProblem::InvalidSeries {
                limit: None,
                reason: truncate(&reason, DETAIL_TEXT_BYTES_MAX),
            },
        ),
        // `Labels::new` refuses with the two variants above only; anything else is still a
        // refusal of this series, never a panic (R7).
        other => (
            String::new(),
            SeriesProblem::InvalidSeries {
                limit: None,
                reason: truncate(&other.to_string(), DETAIL_TEXT_BYTES_MAX),
            },
        ),
    })
}

/// The text form of labels that failed a limit, built only up to [`SERIES_TEXT_BYTES_MAX`] so
/// that a huge label costs nothing (R8). Metric name first, then the others in sender order.
fn raw_series_text(raw: &[pb::Label]) -> String {
    let cap = SERIES_TEXT_BYTES_MAX;
    let mut out = String::new();
    if let Some(name) = raw
        .iter()
        .find(|l| l.name == strata_shard::series::METRIC_NAME_LABEL)
    {
        out.push_str(prefix(&name.value, cap));
    }
    out.push('{');
    let others = raw
        .iter()
        .filter(|l| l.name != strata_shard::series::METRIC_NAME_LABEL && !l.value.is_empty());
    for (i, l) in others.enumerate() {
        if out.len() > cap {
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(prefix(&l.name, cap));
        out.push('=');
        out.push_str(&format!("{:?}", prefix(&l.value, cap)));
    }
    out.push('}');
    truncate(&out, cap)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes (plus a marker saying how much was cut).
fn truncate(s: &str, max: usize) -> String {
    let p = prefix(s, max);
    if p.len() == s.len() {
        s.to_string()
    } else {
        format!("{p}…(+{} bytes)", s.len() - p.len())
    }
}

#[cfg(test)]
mod tests;
