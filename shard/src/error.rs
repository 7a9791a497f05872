//! The one error type at the `shard` crate boundary (CONVENTIONS.md 9).
//!
//! Every variant carries what a client or operator needs to act on it: which series, which label,
//! which limit, which file. Callers higher up (raft, router) map these to the wire in one place.

use std::path::PathBuf;

/// Result alias for the shard crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the storage engine can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label name or value broke the series model rules.
    #[error("invalid label {label:?} in series {series}: {reason}")]
    InvalidLabel {
        series: String,
        label: String,
        reason: String,
    },
    /// The series as a whole is not acceptable (missing name, too many labels, ...).
    #[error("invalid series {series}: {reason}")]
    InvalidSeries { series: String, reason: String },
    /// A tenant id that is empty, too long, uses a forbidden character, or is `.`/`..`.
    #[error("invalid tenant id {tenant:?}: {reason}")]
    InvalidTenant { tenant: String, reason: String },
    /// A sample older than what the shard still accepts for this series.
    #[error(
        "sample for series {series} at {ts_ms} ms is too old: the oldest accepted timestamp is {min_ts_ms} ms ({why})"
    )]
    SampleTooOld {
        series: String,
        ts_ms: i64,
        min_ts_ms: i64,
        why: &'static str,
    },
    /// A sample timestamp outside `±TS_ABS_MAX_MS` (invariant S7).
    #[error(
        "sample for series {series} at {ts_ms} ms is out of range: timestamps must lie within ±{bound_ms} ms"
    )]
    TimestampOutOfRange {
        series: String,
        ts_ms: i64,
        bound_ms: i64,
    },
    /// The same (series, timestamp) was written before with a different value; the first write
    /// wins (see the crate docs, rule D1).
    #[error(
        "duplicate sample for series {series} at {ts_ms} ms: stored value {stored} differs from new value {new}; the first write wins"
    )]
    DuplicateSampleForTimestamp {
        series: String,
        ts_ms: i64,
        stored: f64,
        new: f64,
    },
    /// Creating the series would exceed the tenant's series limit.
    #[error("tenant {tenant:?} reached its limit of {limit} series; new series {series} refused")]
    TooManySeriesForTenant {
        tenant: String,
        series: String,
        limit: usize,
    },
    /// Creating the series would exceed the per-metric series limit of the tenant.
    #[error(
        "tenant {tenant:?} reached its limit of {limit} series for metric {metric:?}; new series {series} refused"
    )]
    TooManySeriesForMetric {
        tenant: String,
        metric: String,
        series: String,
        limit: usize,
    },
    /// A label matcher that cannot be used (bad regex, bad name).
    #[error("invalid matcher {matcher}: {reason}")]
    InvalidMatcher { matcher: String, reason: String },
    /// A query request that is malformed (step of zero, end before start, ...).
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    /// Stored bytes that do not decode: a chunk, a block, a checkpoint.
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    /// The file system failed. A failed fsync is never retried (CONVENTIONS.md 9): the caller
    /// must stop using this engine.
    #[error("i/o error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and the path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A short, stable name of the variant: the `reason` label of reject counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidLabel { .. } => "invalid_label",
            Error::InvalidSeries { .. } => "invalid_series",
            Error::InvalidTenant { .. } => "invalid_tenant",
            Error::SampleTooOld { .. } => "sample_too_old",
            Error::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            Error::DuplicateSampleForTimestamp { .. } => "duplicate_timestamp",
            Error::TooManySeriesForTenant { .. } => "series_limit_tenant",
            Error::TooManySeriesForMetric { .. } => "series_limit_metric",
            Error::InvalidMatcher { .. } => "invalid_matcher",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Corrupt { .. } => "corrupt",
            Error::Io { .. } => "io",
        }
    }

    /// Builds a corruption error.
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
