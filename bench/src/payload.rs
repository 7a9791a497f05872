//! Remote-write 1.0 request bodies: a `prometheus.WriteRequest` (prompb field numbers) holding,
//! for each series of a [`Slice`], the samples of a run of scrape timestamps; then Snappy
//! (block format, as remote write requires).
//!
//! The protobuf is written by hand from labels encoded once per series, because building a
//! prost `WriteRequest` would allocate every label string again for every request: on the
//! benchmark's 2-core machine the generator shares the CPU with the system under test, so its
//! own cost matters. The tests decode what is written here with prost's prompb types.

use std::ops::Range;

use crate::shape::{SeriesState, Shape};

// Field keys, `(field number << 3) | wire type`, of the prompb messages written here.
/// `WriteRequest.timeseries` (1, length-delimited).
const KEY_WRITE_REQUEST_TIMESERIES: u8 = 1 << 3 | 2;
/// `TimeSeries.labels` (1, length-delimited).
const KEY_TIMESERIES_LABELS: u8 = 1 << 3 | 2;
/// `TimeSeries.samples` (2, length-delimited).
const KEY_TIMESERIES_SAMPLES: u8 = 2 << 3 | 2;
/// `Label.name` (1, length-delimited).
const KEY_LABEL_NAME: u8 = 1 << 3 | 2;
/// `Label.value` (2, length-delimited).
const KEY_LABEL_VALUE: u8 = 2 << 3 | 2;
/// `Sample.value` (1, 64-bit).
const KEY_SAMPLE_VALUE: u8 = 1 << 3 | 1;
/// `Sample.timestamp` (2, varint).
const KEY_SAMPLE_TIMESTAMP: u8 = 2 << 3;

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits per byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_len_field(key: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(key);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// One series ready to encode: its `TimeSeries.labels` fields, encoded once, and its values.
#[derive(Clone, Debug)]
pub struct Series {
    labels_pb: Vec<u8>,
    state: SeriesState,
}

impl Series {
    pub fn new(labels: &[(String, String)], state: SeriesState) -> Self {
        let mut labels_pb = Vec::new();
        let mut label = Vec::new();
        for (name, value) in labels {
            label.clear();
            put_len_field(KEY_LABEL_NAME, name.as_bytes(), &mut label);
            put_len_field(KEY_LABEL_VALUE, value.as_bytes(), &mut label);
            put_len_field(KEY_TIMESERIES_LABELS, &label, &mut labels_pb);
        }
        Series { labels_pb, state }
    }
}

/// Consecutive series always sent together, in one request per run of scrapes.
#[derive(Clone, Debug)]
pub struct Slice {
    /// Index of the first series.
    pub first: usize,
    series: Vec<Series>,
}

impl Slice {
    /// Series `range` of `shape` under `seed`.
    pub fn new(shape: Shape, seed: u64, range: Range<usize>) -> Self {
        let first = range.start;
        let series = range
            .map(|i| {
                let spec = shape.series(seed, i);
                Series::new(&spec.labels, spec.state)
            })
            .collect();
        Slice { first, series }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Appends to `out` an uncompressed `WriteRequest` with, for every series of the slice, one
    /// sample at each of `timestamps_ms` (ascending), advancing each series' value once per
    /// timestamp. Every field is written, defaults (0.0, 0) included: valid protobuf.
    pub fn encode(&mut self, timestamps_ms: &[i64], out: &mut Vec<u8>) {
        debug_assert!(timestamps_ms.windows(2).all(|w| w[0] < w[1]));
        for s in &mut self.series {
            let samples_len: usize = timestamps_ms
                .iter()
                .map(|&ts| {
                    let sample_len = 1 + 8 + 1 + varint_len(ts as u64);
                    1 + varint_len(sample_len as u64) + sample_len
                })
                .sum();
            let series_len = s.labels_pb.len() + samples_len;
            out.push(KEY_WRITE_REQUEST_TIMESERIES);
            put_varint(series_len as u64, out);
            out.extend_from_slice(&s.labels_pb);
            for &ts in timestamps_ms {
                let sample_len = 1 + 8 + 1 + varint_len(ts as u64);
                out.push(KEY_TIMESERIES_SAMPLES);
                put_varint(sample_len as u64, out);
                out.push(KEY_SAMPLE_VALUE);
                out.extend_from_slice(&s.state.next_value().to_bits().to_le_bytes());
                out.push(KEY_SAMPLE_TIMESTAMP);
                // int64 is a varint of the two's-complement bits (10 bytes when negative).
                put_varint(ts as u64, out);
            }
        }
    }
}

/// Snappy block compression of a request body, as remote write 1.0 requires.
pub fn compress(encoder: &mut snap::raw::Encoder, raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(encoder.compress_vec(raw)?)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

    use super::*;
    use crate::shape::{NODE_SERIES_PER_HOST, NODE_TARGET_LABELS, TSBS_TAGS};

    fn decode(body: &[u8]) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(body)
            .expect("valid snappy");
        WriteRequest::decode(raw.as_slice()).expect("valid protobuf")
    }

    fn request(shape: Shape, range: Range<usize>, timestamps: &[i64]) -> WriteRequest {
        let mut slice = Slice::new(shape, 7, range);
        let mut raw = Vec::new();
        slice.encode(timestamps, &mut raw);
        decode(&compress(&mut snap::raw::Encoder::new(), &raw).unwrap())
    }

    fn label<'a>(ts: &'a TimeSeries, name: &str) -> Option<&'a str> {
        ts.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, 1 << 42, u64::MAX] {
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn a_request_decodes_to_every_series_with_every_sample() {
        let ts = [1_700_000_000_000, 1_700_000_015_000, 1_700_000_030_000];
        let req = request(Shape::NodeExporter, 40..100, &ts);
        assert_eq!(req.timeseries.len(), 60);
        for series in &req.timeseries {
            let got: Vec<i64> = series.samples.iter().map(|s| s.timestamp).collect();
            assert_eq!(got, ts);
            assert!(series.samples.iter().all(|s| s.value.is_finite()));
            assert!(series.exemplars.is_empty() && series.histograms.is_empty());
        }
        let samples: usize = req.timeseries.iter().map(|s| s.samples.len()).sum();
        assert_eq!(samples, 180);
    }

    #[test]
    fn the_hand_written_encoding_equals_prost_for_the_same_series() {
        // Reference: the same series and values through prost's own encoder.
        let ts = [1_700_000_000_000, 1_700_000_001_000];
        let expected = WriteRequest {
            timeseries: (3..8)
                .map(|i| {
                    let mut spec = Shape::TsbsCpu.series(7, i);
                    TimeSeries {
                        labels: spec
                            .labels
                            .iter()
                            .map(|(n, v)| Label {
                                name: n.clone(),
                                value: v.clone(),
                            })
                            .collect(),
                        samples: ts
                            .iter()
                            .map(|&t| Sample {
                                value: spec.state.next_value(),
                                timestamp: t,
                            })
                            .collect(),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        };
        let got = request(Shape::TsbsCpu, 3..8, &ts);
        assert_eq!(got, expected);
        // Prost omits zero-valued fields and ours writes them; with no zero timestamp or value
        // here (as in these series), the bytes are the same.
        let mut slice = Slice::new(Shape::TsbsCpu, 7, 3..8);
        let mut raw = Vec::new();
        slice.encode(&ts, &mut raw);
        assert_eq!(raw, expected.encode_to_vec());
    }

    #[test]
    fn node_exporter_series_carry_target_labels_and_26_per_host() {
        let req = request(Shape::NodeExporter, 0..2 * NODE_SERIES_PER_HOST, &[1_000]);
        for (i, ts) in req.timeseries.iter().enumerate() {
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "labels are sorted by name");
            for target in NODE_TARGET_LABELS {
                assert!(names.contains(&target), "{target} missing in {names:?}");
            }
            let host = i / NODE_SERIES_PER_HOST;
            assert_eq!(
                label(ts, "instance"),
                Some(format!("host-{host}:9100").as_str())
            );
            assert_eq!(label(ts, "job"), Some("node"));
            assert!(label(ts, "__name__").unwrap().starts_with("node_"));
        }
        let first_host = &req.timeseries[..NODE_SERIES_PER_HOST];
        let cpu = first_host
            .iter()
            .filter(|t| label(t, "__name__") == Some("node_cpu_seconds_total"))
            .count();
        assert_eq!(cpu, 16, "4 CPUs x 4 modes");
        let mut keys: Vec<String> = first_host
            .iter()
            .map(|t| format!("{:?}", t.labels))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), NODE_SERIES_PER_HOST, "label sets are distinct");
    }

    #[test]
    fn tsbs_cpu_series_carry_the_ten_host_tags_and_ten_fields_per_host() {
        let req = request(Shape::TsbsCpu, 0..30, &[1_000]);
        for (i, ts) in req.timeseries.iter().enumerate() {
            assert_eq!(ts.labels.len(), 11, "10 tags + __name__");
            for tag in TSBS_TAGS {
                assert!(label(ts, tag).is_some(), "{tag} missing");
            }
            assert_eq!(
                label(ts, "hostname"),
                Some(format!("host_{}", i / 10).as_str())
            );
            let region = label(ts, "region").unwrap();
            assert!(label(ts, "datacenter").unwrap().starts_with(region));
            let v = ts.samples[0].value;
            assert!((0.0..=100.0).contains(&v), "{v}");
        }
        let names: Vec<&str> = req.timeseries[..10]
            .iter()
            .map(|t| label(t, "__name__").unwrap())
            .collect();
        assert_eq!(names[0], "cpu_usage_user");
        assert_eq!(names[9], "cpu_usage_guest_nice");
        // A host's tags are the same on all of its series.
        let tags = |t: &TimeSeries| -> Vec<Label> {
            t.labels
                .iter()
                .filter(|l| l.name != "__name__")
                .cloned()
                .collect()
        };
        assert!(
            req.timeseries[..10]
                .iter()
                .all(|t| tags(t) == tags(&req.timeseries[0]))
        );
        assert_ne!(tags(&req.timeseries[0]), tags(&req.timeseries[10]));
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_values_move_in_order() {
        let mut a = Slice::new(Shape::NodeExporter, 7, 0..52);
        let mut b = Slice::new(Shape::NodeExporter, 7, 0..52);
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        a.encode(&[1_000, 2_000], &mut ra);
        b.encode(&[1_000], &mut rb);
        b.encode(&[2_000], &mut rb);
        let one = WriteRequest::decode(ra.as_slice()).unwrap();
        let two = WriteRequest::decode(rb.as_slice()).unwrap();
        // Two scrapes in one request or in two give each series the same values.
        for (i, ts) in one.timeseries.iter().enumerate() {
            assert_eq!(ts.samples[0], two.timeseries[i].samples[0]);
            assert_eq!(ts.samples[1], two.timeseries[52 + i].samples[0]);
            if label(ts, "__name__").unwrap().ends_with("_total") {
                assert!(
                    ts.samples[1].value >= ts.samples[0].value,
                    "counters never fall"
                );
            }
        }
        let mut c = Slice::new(Shape::NodeExporter, 8, 0..52);
        let mut rc = Vec::new();
        c.encode(&[1_000, 2_000], &mut rc);
        assert_ne!(ra, rc, "another seed, other data");
    }
}
