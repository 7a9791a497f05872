//! The series model: tenant + sorted labels, validation, and the stable `SeriesId`.
//!
//! Rules (the router validates with the same code before it sends a write anywhere):
//! - A label name follows Prometheus' classic syntax `[a-zA-Z_][a-zA-Z0-9_]*`; the metric name
//!   (`__name__`'s value) follows `[a-zA-Z_:][a-zA-Z0-9_:]*`. Values are any UTF-8 (guaranteed by
//!   `String`).
//! - A label with an empty value is the same as no label (Prometheus semantics), so it is dropped.
//! - Names are unique within a series; a duplicate is refused, never silently merged.
//! - Lengths and counts are bounded by [`LabelLimits`].
//! - `SeriesId` is xxh3-64 of [`SeriesKey::canonical_bytes`]; it is part of the on-disk and
//!   on-wire format and pinned by a golden-value test. It is a hash, not an identity: two series
//!   with the same id stay separate because the engine always compares the full key.

use std::fmt;

use crate::error::{Error, Result};

/// The label that carries the metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// Bounds on labels, checked on every write. Defaults follow Mimir's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    pub label_name_bytes_max: usize,
    pub label_value_bytes_max: usize,
    pub labels_per_series_max: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            label_name_bytes_max: 1024,
            label_value_bytes_max: 2048,
            labels_per_series_max: 30,
        }
    }
}

/// Longest tenant id accepted (Mimir uses the same bound).
pub const TENANT_BYTES_MAX: usize = 150;

/// A tenant id: 1..=150 bytes of `[A-Za-z0-9!-_.*'()]`, never `.` or `..` (it names directories).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant(String);

impl Tenant {
    /// Validates a tenant id.
    pub fn new(id: impl Into<String>) -> Result<Tenant> {
        let id = id.into();
        let refuse = |reason: &str| Error::InvalidTenant {
            tenant: id.clone(),
            reason: reason.to_string(),
        };
        if id.is_empty() {
            return Err(refuse("must not be empty"));
        }
        if id.len() > TENANT_BYTES_MAX {
            return Err(refuse(&format!(
                "longer than {TENANT_BYTES_MAX} bytes ({} bytes)",
                id.len()
            )));
        }
        if id == "." || id == ".." {
            return Err(refuse("`.` and `..` are not tenant ids"));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
        {
            return Err(refuse(&format!(
                "character {c:?} is not allowed (allowed: A-Z a-z 0-9 ! - _ . * ' ( ))"
            )));
        }
        Ok(Tenant(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A validated label set: sorted by name, names unique, no empty values.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Validates and sorts `labels` for ingestion: requires a metric name.
    pub fn new(labels: Vec<Label>, limits: &LabelLimits) -> Result<Labels> {
        let labels = Self::normalize(labels, limits)?;
        if labels.get(METRIC_NAME_LABEL).is_none() {
            return Err(Error::InvalidSeries {
                series: labels.to_string(),
                reason: "missing metric name (label __name__)".into(),
            });
        }
        Ok(labels)
    }

    /// Validates and sorts a label set that may lack a metric name (query results, group keys).
    pub fn normalize(mut labels: Vec<Label>, limits: &LabelLimits) -> Result<Labels> {
        labels.retain(|l| !l.value.is_empty());
        labels.sort();
        let as_series = || Labels(labels.clone()).to_string();
        if labels.len() > limits.labels_per_series_max {
            return Err(Error::InvalidSeries {
                series: as_series(),
                reason: format!(
                    "{} labels exceed the limit of {}",
                    labels.len(),
                    limits.labels_per_series_max
                ),
            });
        }
        for (i, label) in labels.iter().enumerate() {
            let refuse = |reason: String| Error::InvalidLabel {
                series: as_series(),
                label: label.name.clone(),
                reason,
            };
            if i > 0 && labels[i - 1].name == label.name {
                return Err(refuse("label name appears more than once".into()));
            }
            if label.name.len() > limits.label_name_bytes_max {
                return Err(refuse(format!(
                    "name is {} bytes, longer than the limit of {}",
                    label.name.len(),
                    limits.label_name_bytes_max
                )));
            }
            if label.value.len() > limits.label_value_bytes_max {
                return Err(refuse(format!(
                    "value is {} bytes, longer than the limit of {}",
                    label.value.len(),
                    limits.label_value_bytes_max
                )));
            }
            if !is_valid_label_name(&label.name) {
                return Err(refuse(
                    "name must match [a-zA-Z_][a-zA-Z0-9_]* (Prometheus label name syntax)".into(),
                ));
            }
            if label.name == METRIC_NAME_LABEL && !is_valid_metric_name(&label.value) {
                return Err(refuse(format!(
                    "metric name {:?} must match [a-zA-Z_:][a-zA-Z0-9_:]*",
                    label.value
                )));
            }
        }
        Ok(Labels(labels))
    }

    /// Builds labels from pairs with default limits; for tests and tools.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Labels> {
        Self::new(
            pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            &LabelLimits::default(),
        )
    }

    /// Wraps labels that are already sorted, unique and non-empty (e.g. decoded from our own
    /// files). Checked only in debug builds.
    pub fn from_sorted_unchecked(labels: Vec<Label>) -> Labels {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        Labels(labels)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME_LABEL)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// Heap bytes held by this label set (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Label>()
            + self
                .0
                .iter()
                .map(|l| l.name.capacity() + l.value.capacity())
                .sum::<usize>()
    }
}

impl fmt::Display for Labels {
    /// Prometheus' text form: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME_LABEL) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// A stable 64-bit hash of a series key. Used for ring placement and lookups, never as identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId(pub u64);

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
thread_local! {
    /// Unit tests set this to make every key hash to one id, to prove collisions stay separate.
    pub(crate) static FORCED_SERIES_ID: std::cell::Cell<Option<u64>> =
        const { std::cell::Cell::new(None) };
}

/// Tenant + labels: the identity of a series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub tenant: Tenant,
    pub labels: Labels,
}

impl SeriesKey {
    pub fn new(tenant: Tenant, labels: Labels) -> SeriesKey {
        SeriesKey { tenant, labels }
    }

    /// The canonical encoding hashed into the `SeriesId`: for the tenant and then every label
    /// name and value in sorted order, a u32 little-endian length followed by the bytes.
    /// Changing this changes every id on disk and on the ring: it is versioned by the golden test.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.canonical_len());
        self.put_canonical(&mut out);
        out
    }

    /// The length of [`Self::canonical_bytes`], without building them.
    pub fn canonical_len(&self) -> usize {
        4 + self.tenant.0.len()
            + self
                .labels
                .iter()
                .map(|l| 8 + l.name.len() + l.value.len())
                .sum::<usize>()
    }

    /// Appends [`Self::canonical_bytes`] to `out` without an intermediate buffer.
    pub fn put_canonical(&self, out: &mut Vec<u8>) {
        out.reserve(self.canonical_len());
        let mut put = |s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        put(&self.tenant.0);
        for l in self.labels.iter() {
            put(&l.name);
            put(&l.value);
        }
    }

    /// Decodes [`Self::canonical_bytes`] (from our own files); validates the structure, not the
    /// label syntax rules, which held when the key was first written.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<SeriesKey> {
        let mut r = crate::codec::Reader::new(bytes, "series key");
        let text = |r: &mut crate::codec::Reader<'_>| -> Result<String> {
            let b = r.bytes()?;
            String::from_utf8(b.to_vec()).map_err(|_| r.corrupt("label text is not UTF-8"))
        };
        let tenant = Tenant(text(&mut r)?);
        let mut labels = Vec::new();
        while !r.is_empty() {
            let name = text(&mut r)?;
            let value = text(&mut r)?;
            labels.push(Label { name, value });
        }
        if !labels.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(r.corrupt("labels are not sorted and unique"));
        }
        Ok(SeriesKey {
            tenant,
            labels: Labels(labels),
        })
    }

    /// xxh3-64 (seed 0) of the canonical bytes.
    pub fn id(&self) -> SeriesId {
        // This runs for every series of every write: the bytes go into a per-thread buffer
        // that is reused, then one one-shot hash. (Streaming the pieces into `Xxh3` instead
        // copies each piece into the hasher's own buffer and cost ~10% of ingest CPU; a fresh
        // Vec per call cost the allocation. The golden tests pin the value.)
        thread_local! {
            static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        CANONICAL.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            self.put_canonical(&mut buf);
            series_id_of_canonical(&buf)
        })
    }

    /// Whether `canonical` is this key's [`Self::canonical_bytes`], compared in place (no
    /// allocation): how the engine confirms a series found by id (S1).
    pub fn matches_canonical(&self, canonical: &[u8]) -> bool {
        let mut rest = canonical;
        let mut eat = |s: &str| -> bool {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return false;
            };
            let n = s.len();
            if u32::from_le_bytes(*len) as usize != n || tail.get(..n) != Some(s.as_bytes()) {
                return false;
            }
            rest = &tail[n..];
            true
        };
        let same = eat(&self.tenant.0) && self.labels.iter().all(|l| eat(&l.name) && eat(&l.value));
        same && rest.is_empty()
    }
}

/// The [`SeriesId`] of the key whose [`SeriesKey::canonical_bytes`] are `canonical`.
pub fn series_id_of_canonical(canonical: &[u8]) -> SeriesId {
    #[cfg(test)]
    if let Some(forced) = FORCED_SERIES_ID.with(|f| f.get()) {
        return SeriesId(forced);
    }
    SeriesId(xxhash_rust::xxh3::xxh3_64(canonical))
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.labels, self.tenant)
    }
}

/// Largest magnitude of a sample timestamp the engine stores (2^61 ms, about 73 million years
/// either side of 1970). Bounding timestamps well inside `i64` lets block, window, retention and
/// query arithmetic run without overflow (S7); Prometheus' own TSDB refuses far-future samples too.
pub const TS_ABS_MAX_MS: i64 = 1 << 61;

/// One sample: a millisecond timestamp and a float value.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub ts_ms: i64,
    pub value: f64,
}

impl Sample {
    pub fn new(ts_ms: i64, value: f64) -> Sample {
        Sample { ts_ms, value }
    }

    /// Equality that compares the value's bit pattern, so NaN payloads (the stale marker) and
    /// -0.0 are told apart and compare equal to themselves.
    pub fn bit_eq(&self, other: &Sample) -> bool {
        self.ts_ms == other.ts_ms && self.value.to_bits() == other.value.to_bits()
    }
}

impl PartialEq for Sample {
    fn eq(&self, other: &Self) -> bool {
        self.bit_eq(other)
    }
}

/// The bit pattern Prometheus writes to mark a series stale (a NaN with payload 2).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True for Prometheus' stale marker (and only for that NaN payload).
pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, pairs: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            Tenant::new(tenant).unwrap(),
            Labels::from_pairs(pairs).unwrap(),
        )
    }

    #[test]
    fn the_streamed_id_is_the_hash_of_the_canonical_bytes() {
        // Lengths across xxh3's short, mid and long input paths.
        for n in [0, 1, 3, 8, 16, 17, 100, 128, 129, 240, 241, 600, 2000] {
            let v = "v".repeat(n);
            let k = key("tenant", &[("__name__", "m"), ("a", v.as_str())]);
            let bytes = k.canonical_bytes();
            assert_eq!(bytes.len(), k.canonical_len());
            assert_eq!(
                k.id().0,
                xxhash_rust::xxh3::xxh3_64(&bytes),
                "value length {n}"
            );
        }
    }

    #[test]
    fn series_id_golden_values() {
        // Pinned: these ids place series on the ring and name them on disk. If this test fails,
        // the change breaks every existing cluster.
        let k = key("anonymous", &[("__name__", "up"), ("job", "node")]);
        assert_eq!(
            k.canonical_bytes(),
            b"\x09\0\0\0anonymous\x08\0\0\0__name__\x02\0\0\0up\x03\0\0\0job\x04\0\0\0node"
        );
        assert_eq!(k.id(), SeriesId(GOLDEN_UP_NODE));
        let k2 = key(
            "team-a",
            &[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("mode", "idle"),
            ],
        );
        assert_eq!(k2.id(), SeriesId(GOLDEN_NODE_CPU));
    }
    const GOLDEN_UP_NODE: u64 = 2740640084909084167;
    const GOLDEN_NODE_CPU: u64 = 7673132723015191485; // both cross-checked with python xxhash.xxh3_64

    #[test]
    fn canonical_bytes_round_trip_and_corruption_is_an_error() {
        let k = key("t", &[("__name__", "m"), ("a", "1")]);
        assert_eq!(
            SeriesKey::from_canonical_bytes(&k.canonical_bytes()).unwrap(),
            k
        );
        let bytes = k.canonical_bytes();
        for cut in 0..bytes.len() - 1 {
            // Every strict prefix that ends inside a field is refused, never a panic.
            let _ = SeriesKey::from_canonical_bytes(&bytes[..cut]);
        }
        assert!(SeriesKey::from_canonical_bytes(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn labels_are_sorted_and_empty_values_dropped() {
        let l =
            Labels::from_pairs(&[("z", "1"), ("__name__", "m"), ("a", ""), ("b", "2")]).unwrap();
        let names: Vec<_> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "b", "z"]);
        assert_eq!(l.to_string(), r#"m{b="2", z="1"}"#);
    }

    #[test]
    fn order_of_input_does_not_change_the_id() {
        let a = key("t", &[("__name__", "m"), ("a", "1"), ("b", "2")]);
        let b = key("t", &[("b", "2"), ("a", "1"), ("__name__", "m")]);
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn tenant_and_labels_are_length_prefixed_so_boundaries_cannot_shift() {
        // Same concatenated text, different split: different ids.
        let a = key("ab", &[("__name__", "m"), ("c", "d")]);
        let b = key("a", &[("__name__", "m"), ("bc", "d")]);
        assert_ne!(a.id(), b.id());
    }

    fn invalid_label(pairs: &[(&str, &str)]) -> (String, String) {
        match Labels::from_pairs(pairs) {
            Err(Error::InvalidLabel { label, reason, .. }) => (label, reason),
            other => panic!("expected InvalidLabel, got {other:?}"),
        }
    }

    #[test]
    fn invalid_labels_are_named_in_the_error() {
        assert_eq!(invalid_label(&[("__name__", "m"), ("1abc", "v")]).0, "1abc");
        assert_eq!(invalid_label(&[("__name__", "m"), ("a-b", "v")]).0, "a-b");
        assert_eq!(invalid_label(&[("__name__", "9m")]).0, "__name__");
        let (label, reason) = invalid_label(&[("__name__", "m"), ("x", "1"), ("x", "2")]);
        assert_eq!(label, "x");
        assert!(reason.contains("more than once"), "{reason}");
        let long = "v".repeat(2049);
        let (label, reason) = invalid_label(&[("__name__", "m"), ("big", &long)]);
        assert_eq!(label, "big");
        assert!(reason.contains("2049 bytes"), "{reason}");
        // Colons are fine in metric names, not in label names.
        assert!(Labels::from_pairs(&[("__name__", "job:rate5m:sum")]).is_ok());
        assert_eq!(invalid_label(&[("__name__", "m"), ("a:b", "v")]).0, "a:b");
    }

    #[test]
    fn series_limits_and_missing_name() {
        let many: Vec<(String, String)> = (0..31)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .collect();
        let mut pairs: Vec<(&str, &str)> =
            many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        pairs.push(("__name__", "m"));
        match Labels::from_pairs(&pairs) {
            Err(Error::InvalidSeries { reason, .. }) => assert!(reason.contains("32 labels")),
            other => panic!("expected InvalidSeries, got {other:?}"),
        }
        match Labels::from_pairs(&[("job", "x")]) {
            Err(Error::InvalidSeries { reason, .. }) => assert!(reason.contains("metric name")),
            other => panic!("expected InvalidSeries, got {other:?}"),
        }
    }

    #[test]
    fn tenant_validation() {
        assert!(Tenant::new("team-a_1.prod").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(Tenant::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(Tenant::new("x".repeat(151)).is_err());
        assert!(Tenant::new("x".repeat(150)).is_ok());
    }

    #[test]
    fn stale_marker_is_recognised_by_bits_only() {
        assert!(is_stale_marker(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale_marker(f64::NAN));
        let a = Sample::new(1, f64::from_bits(STALE_NAN_BITS));
        assert_eq!(a, a);
        assert_ne!(a, Sample::new(1, f64::NAN));
        assert_ne!(Sample::new(1, 0.0), Sample::new(1, -0.0));
    }
}
