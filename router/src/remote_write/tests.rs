use super::*;
use proptest::prelude::*;
use strata_shard::series::{STALE_NAN_BITS, is_stale_marker};

fn tenant() -> Tenant {
    Tenant::new("team-a").unwrap()
}

fn label(name: &str, value: &str) -> pb::Label {
    pb::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| pb::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

fn body(req: &pb::WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn decode(req: &pb::WriteRequest) -> DecodedWrite {
    decode_write_request(&body(req), &RemoteWriteLimits::default(), &tenant()).unwrap()
}

fn request(timeseries: Vec<pb::TimeSeries>) -> pb::WriteRequest {
    pb::WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

fn key(pairs: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(tenant(), Labels::from_pairs(pairs).unwrap())
}

#[test]
fn round_trip_keeps_series_samples_and_order() {
    let req = request(vec![
        series(
            &[("job", "node"), ("__name__", "up"), ("instance", "a:9100")],
            &[(1000, 1.0), (2000, 0.0)],
        ),
        // Out of time order within the series: kept in the sender's order (R5).
        series(&[("__name__", "temp")], &[(5000, 21.5), (4000, 20.0)]),
    ]);
    let w = decode(&req);
    assert_eq!(
        w.series,
        vec![
            (
                key(&[("__name__", "up"), ("instance", "a:9100"), ("job", "node")]),
                vec![Sample::new(1000, 1.0), Sample::new(2000, 0.0)]
            ),
            (
                key(&[("__name__", "temp")]),
                vec![Sample::new(5000, 21.5), Sample::new(4000, 20.0)]
            ),
        ]
    );
    assert_eq!(w.series[0].0.tenant, tenant());
    assert_eq!(
        (w.series_total, w.samples_total, w.samples_accepted),
        (2, 4, 4)
    );
    assert_eq!(
        (w.errors_total, w.samples_rejected, w.series_rejected),
        (0, 0, 0)
    );
    assert_eq!(w.body_decompressed_bytes, req.encoded_len());
    assert!(w.ignored.is_empty() && w.error_message().is_none());
    assert_eq!(http_status(&Ok(w)), 204);
}

#[test]
fn values_pass_through_bit_for_bit() {
    let other_nan = f64::from_bits(0x7ff8_0000_0000_0001);
    let values = [
        f64::from_bits(STALE_NAN_BITS),
        other_nan,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE / 2.0, // subnormal
        f64::MAX,
    ];
    let samples: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, *v))
        .collect();
    let w = decode(&request(vec![series(&[("__name__", "m")], &samples)]));
    assert_eq!(w.errors_total, 0);
    let got = &w.series[0].1;
    assert!(is_stale_marker(got[0].value));
    for (g, want) in got.iter().zip(values) {
        assert_eq!(g.value.to_bits(), want.to_bits());
    }
}

#[test]
fn hand_encoded_wire_bytes_pin_the_field_numbers() {
    // Written byte by byte, not with prost, so a renumbered field in proto/prompb/ fails here:
    // senders (Prometheus, vmagent) use upstream's numbers.
    // Also: prost, like Prometheus' gogo encoder, skips -0.0 as the proto3 default, so it
    // arrives as 0.0 from those senders; when a sender does put it on the wire, it is kept (R4).
    // Sample.value = 1 (fixed64), Sample.timestamp = 2; Label.name = 1, Label.value = 2;
    // TimeSeries.labels = 1, TimeSeries.samples = 2.
    let mut sample = vec![0x09];
    sample.extend_from_slice(&(-0.0f64).to_bits().to_le_bytes());
    sample.extend_from_slice(&[0x10, 0x01]); // timestamp = 1
    let label = b"\x0a\x08__name__\x12\x01m";
    let mut ts = vec![0x0a, label.len() as u8];
    ts.extend_from_slice(label);
    ts.extend_from_slice(&[0x12, sample.len() as u8]);
    ts.extend_from_slice(&sample);
    ts.extend_from_slice(&[0x1a, 0x00]); // TimeSeries.exemplars = 3 (an empty exemplar)
    ts.extend_from_slice(&[0x22, 0x00]); // TimeSeries.histograms = 4 (an empty histogram)
    let mut req = vec![0x0a, ts.len() as u8]; // WriteRequest.timeseries = 1
    req.extend_from_slice(&ts);
    // WriteRequest.metadata = 3 holding MetricMetadata.metric_family_name = 2.
    req.extend_from_slice(&[0x1a, 0x03, 0x12, 0x01, b'm']);
    let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
    let w = decode_write_request(&body, &RemoteWriteLimits::default(), &tenant()).unwrap();
    assert_eq!(w.series[0].1, vec![Sample::new(1, -0.0)]);
    assert_eq!(w.series[0].1[0].value.to_bits(), (-0.0f64).to_bits());
    assert_eq!(w.series[0].0, key(&[("__name__", "m")]));
    assert_eq!(
        w.ignored,
        Ignored {
            histograms: 1,
            exemplars: 1,
            metadata: 1
        }
    );
}

#[test]
fn body_over_the_compressed_limit_is_refused_before_anything_else() {
    let limits = RemoteWriteLimits {
        body_compressed_bytes_max: 10,
        ..RemoteWriteLimits::default()
    };
    let err = decode_write_request(&[0u8; 11], &limits, &tenant()).unwrap_err();
    assert_eq!(
        err,
        RemoteWriteError::BodyTooLarge {
            body_bytes: 11,
            limit_bytes: 10
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("11 bytes") && msg.contains("body_compressed_bytes_max = 10"),
        "{msg}"
    );
    assert_eq!(http_status(&Err(err)), 413);
}

/// A Snappy header announcing `len` bytes, followed by a few bytes that are not valid Snappy.
fn claiming(len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = len;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&[0xff; 8]);
    out
}

#[test]
fn announced_decompressed_size_over_the_limit_is_refused_before_decompressing() {
    let limits = RemoteWriteLimits::default();
    for announced in [
        limits.body_decompressed_bytes_max as u64 + 1,
        1 << 31,
        u32::MAX as u64,
    ] {
        // The payload after the header is garbage: reaching the decompressor would give
        // `NotSnappy`, so `DecompressedTooLarge` shows the header was judged first (R1).
        let err = decode_write_request(&claiming(announced), &limits, &tenant()).unwrap_err();
        assert_eq!(
            err,
            RemoteWriteError::DecompressedTooLarge {
                announced_bytes: announced as usize,
                limit_bytes: limits.body_decompressed_bytes_max
            }
        );
        let msg = err.to_string();
        assert!(msg.contains(&announced.to_string()), "{msg}");
        assert!(msg.contains("body_decompressed_bytes_max"), "{msg}");
        assert_eq!(http_status(&Err(err)), 413);
    }
    // A genuine body is judged the same way.
    let req = request(vec![series(&[("__name__", "m")], &[(1, 1.0)])]);
    let small = RemoteWriteLimits {
        body_decompressed_bytes_max: req.encoded_len() - 1,
        ..limits
    };
    assert!(matches!(
        decode_write_request(&body(&req), &small, &tenant()),
        Err(RemoteWriteError::DecompressedTooLarge { .. })
    ));
    let exact = RemoteWriteLimits {
        body_decompressed_bytes_max: req.encoded_len(),
        ..limits
    };
    assert!(decode_write_request(&body(&req), &exact, &tenant()).is_ok());
}

#[test]
fn garbage_bodies_are_refused_with_a_clear_message() {
    let limits = RemoteWriteLimits::default();
    let check = |bytes: &[u8], reason: &str, needle: &str| {
        let err = decode_write_request(bytes, &limits, &tenant()).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
        assert_eq!(http_status(&Err(err)), 400);
    };
    check(b"", "not_snappy", "Snappy block format");
    check(
        b"hello world, not snappy",
        "not_snappy",
        "Snappy block format",
    );
    check(b"\xff\x06\x00\x00sNaPpY\x00\x00", "not_snappy", "framed");
    check(b"\x1f\x8b\x08\x00\x00\x00", "not_snappy", "gzip");
    // Valid Snappy around bytes that are not a WriteRequest: a truncated length-delimited field.
    let not_proto = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\x01abc")
        .unwrap();
    check(&not_proto, "not_protobuf", "prometheus.WriteRequest");
    // Uncompressed protobuf (a sender that forgot Snappy) is refused, not misread.
    let plain = request(vec![series(&[("__name__", "m")], &[(1, 1.0)])]).encode_to_vec();
    assert!(decode_write_request(&plain, &limits, &tenant()).is_err());
}

#[test]
fn an_empty_request_is_fine() {
    let w = decode(&request(vec![]));
    assert_eq!(w, DecodedWrite::default());
    assert_eq!(http_status(&Ok(w)), 204);
}

fn only_error(w: &DecodedWrite) -> &SeriesError {
    assert_eq!(w.rejected.len(), 1, "{:?}", w.rejected);
    &w.rejected[0]
}

#[test]
fn invalid_series_are_refused_and_valid_ones_kept() {
    let good = series(&[("__name__", "ok")], &[(1, 1.0)]);
    let cases: Vec<(pb::TimeSeries, &str, Option<&str>)> = vec![
        (
            series(&[("__name__", "m"), ("1abc", "v")], &[(1, 1.0)]),
            "invalid_label",
            Some("1abc"),
        ),
        (
            series(&[("__name__", "m"), ("a-b", "v")], &[(1, 1.0)]),
            "invalid_label",
            Some("a-b"),
        ),
        (
            series(&[("__name__", "9m")], &[(1, 1.0)]),
            "invalid_label",
            Some("__name__"),
        ),
        (
            series(&[("__name__", "m"), ("x", "1"), ("x", "2")], &[(1, 1.0)]),
            "invalid_label",
            Some("x"),
        ),
        (series(&[("job", "x")], &[(1, 1.0)]), "invalid_series", None),
        // Only empty values besides: the metric name is still required.
        (
            series(&[("__name__", ""), ("job", "x")], &[(1, 1.0)]),
            "invalid_series",
            None,
        ),
    ];
    for (bad, reason, label) in cases {
        let w = decode(&request(vec![good.clone(), bad.clone(), good.clone()]));
        assert_eq!(w.series.len(), 2, "{bad:?}");
        assert_eq!(
            (w.samples_accepted, w.samples_rejected, w.series_rejected),
            (2, 1, 1)
        );
        let e = only_error(&w);
        assert_eq!(
            (e.index, e.reason(), e.samples_refused),
            (1, reason, 1),
            "{e}"
        );
        match (&e.problem, label) {
            (
                SeriesProblem::InvalidLabel {
                    label: got,
                    limit: None,
                    ..
                },
                Some(want),
            ) => {
                assert_eq!(got, want)
            }
            (SeriesProblem::InvalidSeries { limit: None, .. }, None) => {}
            (other, _) => panic!("unexpected {other:?}"),
        }
        let msg = w.error_message().unwrap();
        assert!(msg.contains("1 of 3 series had errors"), "{msg}");
        assert_eq!(http_status(&Ok(w)), 400);
    }
}

#[test]
fn empty_label_values_are_dropped_as_prometheus_does() {
    let w = decode(&request(vec![series(
        &[("__name__", "m"), ("empty", ""), ("job", "x")],
        &[(1, 1.0)],
    )]));
    assert_eq!(w.series[0].0, key(&[("__name__", "m"), ("job", "x")]));
    // And a duplicate name is no duplicate when one copy is empty.
    let w = decode(&request(vec![series(
        &[("__name__", "m"), ("job", ""), ("job", "x")],
        &[(1, 1.0)],
    )]));
    assert_eq!(w.errors_total, 0);
}

#[test]
fn label_limits_are_named_in_the_error() {
    let limits = RemoteWriteLimits::default();
    let ll = limits.labels;
    let long_value = "v".repeat(ll.label_value_bytes_max + 1);
    let long_name = "n".repeat(ll.label_name_bytes_max + 1);
    let many: Vec<(String, String)> = (0..ll.labels_per_series_max)
        .map(|i| (format!("l{i}"), "v".to_string()))
        .collect();
    let mut many_pairs: Vec<(&str, &str)> =
        many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    many_pairs.push(("__name__", "m"));
    // (labels, limit crossed, its max, the actual figure)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'static str, usize, usize);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![("__name__", "m"), ("big", &long_value)],
            "label_value_bytes_max",
            ll.label_value_bytes_max,
            long_value.len(),
        ),
        (
            vec![("__name__", "m"), (&long_name, "v")],
            "label_name_bytes_max",
            ll.label_name_bytes_max,
            long_name.len(),
        ),
        (
            many_pairs.clone(),
            "labels_per_series_max",
            ll.labels_per_series_max,
            ll.labels_per_series_max + 1,
        ),
    ];
    for (pairs, limit, max, actual) in cases {
        let w = decode(&request(vec![series(&pairs, &[(1, 1.0), (2, 2.0)])]));
        let e = only_error(&w);
        assert_eq!((e.reason(), e.samples_refused), ("label_limit", 2));
        let breach = match &e.problem {
            SeriesProblem::InvalidLabel { limit: Some(b), .. }
            | SeriesProblem::InvalidSeries { limit: Some(b), .. } => *b,
            other => panic!("{other:?}"),
        };
        assert_eq!(breach, LimitBreach { limit, max, actual });
        let text = e.to_string();
        assert!(
            text.contains(limit) && text.contains(&actual.to_string()),
            "{text}"
        );
        assert!(e.series.starts_with("m{"), "{}", e.series);
        assert!(w.series.is_empty());
    }
    // One label fewer is fine: the limit is inclusive.
    many_pairs.remove(0);
    assert_eq!(
        decode(&request(vec![series(&many_pairs, &[(1, 1.0)])])).errors_total,
        0
    );
}

#[test]
fn error_texts_are_bounded() {
    // 1 MB label value and name, and a metric name too long to be valid: nothing of it may
    // reach the error texts beyond the caps (R8).
    let huge = "x".repeat(1 << 20);
    let limits = RemoteWriteLimits {
        labels: LabelLimits {
            label_name_bytes_max: 2 << 20,
            label_value_bytes_max: 2 << 20,
            labels_per_series_max: 30,
        },
        ..RemoteWriteLimits::default()
    };
    let cases = [
        vec![label("__name__", "m"), label(&format!("bad-{huge}"), "v")],
        vec![label("__name__", &format!("9{huge}"))],
        vec![label("__name__", "m"), label("a", &huge), label("a", &huge)],
    ];
    for labels in cases {
        let req = request(vec![pb::TimeSeries {
            labels,
            samples: vec![pb::Sample {
                value: 1.0,
                timestamp: 1,
            }],
            ..Default::default()
        }]);
        let w = decode_write_request(&body(&req), &limits, &tenant()).unwrap();
        let e = only_error(&w);
        assert!(
            e.series.len() <= SERIES_TEXT_BYTES_MAX + 32,
            "{}",
            e.series.len()
        );
        assert!(e.series.contains("bytes)"), "cut texts say so");
        assert!(e.to_string().len() < 2 * SERIES_TEXT_BYTES_MAX + 4 * DETAIL_TEXT_BYTES_MAX);
    }
    // With default limits, a 1 MB value fails the value limit; its text is cut before it is built.
    let w = decode(&request(vec![series(
        &[("__name__", "m"), ("a", &huge)],
        &[(1, 1.0)],
    )]));
    assert!(only_error(&w).to_string().len() < 2 * SERIES_TEXT_BYTES_MAX);
    assert!(
        truncate("ééé", 3).starts_with("é…"),
        "cut on a character boundary"
    );
}

#[test]
fn timestamps_out_of_range_refuse_only_those_samples() {
    let w = decode(&request(vec![
        series(
            &[("__name__", "m")],
            &[
                (1, 1.0),
                (TS_ABS_MAX_MS + 1, 2.0),
                (TS_ABS_MAX_MS, 3.0),
                (i64::MIN, 4.0),
            ],
        ),
        series(&[("__name__", "n")], &[(i64::MAX, 1.0)]),
        series(&[("__name__", "o")], &[(-TS_ABS_MAX_MS, 1.0)]),
    ]));
    assert_eq!(
        w.series,
        vec![
            (
                key(&[("__name__", "m")]),
                vec![Sample::new(1, 1.0), Sample::new(TS_ABS_MAX_MS, 3.0)]
            ),
            (
                key(&[("__name__", "o")]),
                vec![Sample::new(-TS_ABS_MAX_MS, 1.0)]
            ),
        ]
    );
    assert_eq!(
        (w.samples_total, w.samples_accepted, w.samples_rejected),
        (6, 3, 3)
    );
    assert_eq!((w.errors_total, w.series_rejected), (2, 1));
    assert_eq!(w.rejected[0].samples_refused, 2);
    assert_eq!(
        w.rejected[0].problem,
        SeriesProblem::TimestampOutOfRange {
            ts_ms: TS_ABS_MAX_MS + 1,
            bound_ms: TS_ABS_MAX_MS
        }
    );
    assert_eq!(w.rejected[0].reason(), "timestamp_out_of_range");
    assert_eq!(w.rejected[1].index, 1);
    assert_eq!(http_status(&Ok(w)), 400);
}

#[test]
fn histograms_exemplars_and_metadata_are_counted_and_ignored() {
    let mut with_extras = series(&[("__name__", "m")], &[(1, 1.0)]);
    with_extras.exemplars = vec![
        pb::Exemplar {
            labels: vec![label("trace_id", "abc")],
            value: 1.0,
            timestamp: 1,
        };
        2
    ];
    let histogram = pb::Histogram {
        count: Some(pb::histogram::Count::CountInt(3)),
        sum: 1.5,
        schema: 3,
        positive_spans: vec![pb::BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_deltas: vec![1, 1],
        timestamp: 1,
        ..Default::default()
    };
    // A histogram-only series is not judged (R9), even with labels that would be refused.
    let histogram_only = pb::TimeSeries {
        labels: vec![label("not-valid", "x")],
        histograms: vec![histogram.clone(); 3],
        ..Default::default()
    };
    let req = pb::WriteRequest {
        timeseries: vec![with_extras, histogram_only],
        metadata: vec![pb::MetricMetadata {
            r#type: pb::metric_metadata::MetricType::Counter as i32,
            metric_family_name: "m".into(),
            help: "help".into(),
            unit: String::new(),
        }],
    };
    let w = decode(&req);
    assert_eq!(
        w.ignored,
        Ignored {
            histograms: 3,
            exemplars: 2,
            metadata: 1
        }
    );
    assert_eq!(w.series.len(), 1);
    assert_eq!((w.series_total, w.errors_total), (2, 0));
    assert_eq!(http_status(&Ok(w)), 204);
}

#[test]
fn duplicates_are_left_to_the_engine() {
    // R5: same series twice, and the same timestamp twice within a series.
    let w = decode(&request(vec![
        series(
            &[("__name__", "m"), ("a", "1")],
            &[(1, 1.0), (1, 1.0), (1, 2.0)],
        ),
        series(&[("a", "1"), ("__name__", "m")], &[(1, 1.0)]),
    ]));
    assert_eq!(w.series.len(), 2);
    assert_eq!(w.series[0].0, w.series[1].0);
    assert_eq!(w.series[0].1.len(), 3);
    assert_eq!(w.samples_accepted, 4);
}

#[test]
fn only_the_first_errors_are_kept_but_all_are_counted() {
    let limits = RemoteWriteLimits {
        series_errors_reported_max: 3,
        ..RemoteWriteLimits::default()
    };
    let req = request(
        (0..10)
            .map(|_| series(&[("job", "x")], &[(1, 1.0)]))
            .collect(),
    );
    let w = decode_write_request(&body(&req), &limits, &tenant()).unwrap();
    assert_eq!(
        (w.rejected.len(), w.errors_total, w.series_rejected),
        (3, 10, 10)
    );
    assert_eq!(
        w.rejected.iter().map(|e| e.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn http_status_table() {
    let err = |e: RemoteWriteError| http_status(&Err(e));
    assert_eq!(
        err(RemoteWriteError::BodyTooLarge {
            body_bytes: 2,
            limit_bytes: 1
        }),
        413
    );
    assert_eq!(
        err(RemoteWriteError::DecompressedTooLarge {
            announced_bytes: 2,
            limit_bytes: 1
        }),
        413
    );
    assert_eq!(
        err(RemoteWriteError::NotSnappy {
            reason: String::new()
        }),
        400
    );
    assert_eq!(
        err(RemoteWriteError::NotProtobuf {
            decompressed_bytes: 0,
            reason: String::new()
        }),
        400
    );
    let ok = DecodedWrite::default();
    assert_eq!(http_status(&Ok(ok.clone())), 204);
    let ignored_only = DecodedWrite {
        ignored: Ignored {
            histograms: 1,
            ..Ignored::default()
        },
        ..ok.clone()
    };
    assert_eq!(http_status(&Ok(ignored_only)), 204);
    // Errors beyond the kept ones still make it a 400.
    let counted_only = DecodedWrite {
        errors_total: 1,
        ..ok
    };
    assert_eq!(http_status(&Ok(counted_only)), 400);
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,12}".prop_filter("not the metric name label", |n| n != "__name__")
}

prop_compose! {
    fn valid_series()(
        name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,16}",
        extra in proptest::collection::btree_map(label_name(), ".{1,8}", 0..6),
        empties in proptest::collection::btree_set(label_name(), 0..3),
        // Not -0.0: prost's encoder drops it as the proto3 default (see the wire test).
        samples in proptest::collection::vec(
            (-TS_ABS_MAX_MS..=TS_ABS_MAX_MS, any::<u64>().prop_filter("-0.0", |b| *b != 1 << 63)),
            1..8,
        ),
        rotate in 0usize..8,
    ) -> (pb::TimeSeries, SeriesKey, Vec<Sample>) {
        let mut labels = vec![label("__name__", &name)];
        labels.extend(extra.iter().map(|(n, v)| label(n, v)));
        // Empty values under names not otherwise used are dropped, not refused.
        labels.extend(empties.iter().filter(|n| !extra.contains_key(*n)).map(|n| label(n, "")));
        let len = labels.len();
        labels.rotate_left(rotate % len);
        let mut pairs = vec![("__name__", name.as_str())];
        pairs.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let expected_key = key(&pairs);
        let expected: Vec<Sample> =
            samples.iter().map(|&(ts, bits)| Sample::new(ts, f64::from_bits(bits))).collect();
        let ts = pb::TimeSeries {
            labels,
            samples: samples
                .iter()
                .map(|&(timestamp, bits)| pb::Sample { value: f64::from_bits(bits), timestamp })
                .collect(),
            ..Default::default()
        };
        (ts, expected_key, expected)
    }
}

proptest! {
    #[test]
    fn any_valid_request_decodes_to_exactly_its_series(
        input in proptest::collection::vec(valid_series(), 0..12)
    ) {
        let req = request(input.iter().map(|(ts, _, _)| ts.clone()).collect());
        let w = decode(&req);
        let expected: Vec<(SeriesKey, Vec<Sample>)> =
            input.into_iter().map(|(_, k, s)| (k, s)).collect();
        // `Sample`'s equality compares value bits, so NaN payloads are checked too (R4).
        prop_assert_eq!(&w.series, &expected);
        prop_assert_eq!(w.errors_total, 0);
        let n: usize = expected.iter().map(|(_, s)| s.len()).sum();
        prop_assert_eq!((w.samples_total, w.samples_accepted), (n, n));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = RemoteWriteLimits::default();
        let _ = decode_write_request(&bytes, &limits, &tenant());
        // Compressed so that the protobuf decoder and the validation see arbitrary input too.
        let compressed = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
        if let Ok(w) = decode_write_request(&compressed, &limits, &tenant()) {
            prop_assert_eq!(w.samples_total, w.samples_accepted + w.samples_rejected);
        }
    }

    #[test]
    fn corrupted_valid_bodies_never_panic(
        input in proptest::collection::vec(valid_series(), 1..4),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        compress_after in any::<bool>(),
    ) {
        let req = request(input.into_iter().map(|(ts, _, _)| ts).collect());
        let limits = RemoteWriteLimits::default();
        // Corrupt the protobuf (then compress) or the compressed body itself.
        let mut bytes = if compress_after { req.encode_to_vec() } else { body(&req) };
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        if compress_after {
            bytes = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
        }
        if let Ok(w) = decode_write_request(&bytes, &limits, &tenant()) {
            prop_assert_eq!(w.samples_total, w.samples_accepted + w.samples_rejected);
            let kept: usize = w.series.iter().map(|(_, s)| s.len()).sum();
            prop_assert_eq!(kept, w.samples_accepted);
        }
    }
}

#[test]
fn a_series_with_absurdly_many_label_entries_is_refused_alone_without_decoding() {
    let limits = RemoteWriteLimits::default();
    let entries = 2 * limits.labels.labels_per_series_max + 17;
    let mut flood = series(&[("__name__", "m")], &[(1, 1.0), (2, 2.0)]);
    flood.labels.extend((0..entries - 1).map(|_| label("", "")));
    flood.histograms = vec![pb::Histogram::default()];
    let good = series(&[("__name__", "ok")], &[(1, 1.0)]);
    let w = decode(&request(vec![good.clone(), flood, good]));
    assert_eq!(w.series.len(), 2);
    let e = only_error(&w);
    assert_eq!(
        (e.index, e.samples_refused, e.reason()),
        (1, 2, "label_limit")
    );
    assert!(e.series.contains("not decoded"), "{}", e.series);
    assert_eq!(
        e.problem,
        SeriesProblem::InvalidSeries {
            limit: Some(LimitBreach {
                limit: "labels_per_series_max",
                max: limits.labels.labels_per_series_max,
                actual: entries
            }),
            reason: format!(
                "{entries} label entries (empty values included), over the limit labels_per_series_max = {}; not decoded",
                limits.labels.labels_per_series_max
            ),
        }
    );
    assert_eq!(
        (w.samples_total, w.samples_rejected, w.ignored.histograms),
        (4, 2, 1)
    );
    // One entry fewer is decoded (and then judged by the usual rules: the empty labels drop).
    let mut edge = series(&[("__name__", "m")], &[(1, 1.0)]);
    edge.labels.extend((0..entries - 2).map(|_| label("x", "")));
    assert_eq!(decode(&request(vec![edge])).errors_total, 0);
}

#[test]
fn unknown_fields_are_skipped_and_truncation_is_named() {
    let req = request(vec![series(&[("__name__", "m")], &[(1, 1.0)])]);
    let mut bytes = req.encode_to_vec();
    // Field 2 (reserved upstream, once Cortex' `source` enum), field 9 as fixed32 and fixed64,
    // and a length-delimited field 15.
    bytes.extend_from_slice(&[0x10, 0x01, 0x4d, 1, 2, 3, 4, 0x49, 1, 2, 3, 4, 5, 6, 7, 8]);
    bytes.extend_from_slice(&[0x7a, 0x02, 0xab, 0xcd]);
    let compressed = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
    let w = decode_write_request(&compressed, &RemoteWriteLimits::default(), &tenant()).unwrap();
    assert_eq!((w.series.len(), w.errors_total), (1, 0));
    // A TimeSeries cut short is refused with its position.
    let mut cut = req.encode_to_vec();
    cut.extend_from_slice(&[0x0a, 0x05, 0x0a, 0x10]);
    let compressed = snap::raw::Encoder::new().compress_vec(&cut).unwrap();
    let err =
        decode_write_request(&compressed, &RemoteWriteLimits::default(), &tenant()).unwrap_err();
    assert!(err.to_string().contains("runs past the end"), "{err}");
}
