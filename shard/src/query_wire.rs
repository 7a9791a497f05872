//! Wire form of what a router asks a shard ([`PartialQuery`]) and what the shard answers
//! ([`PartialResult`]), hand-encoded like the rest of our formats ([`crate::codec`]), so a
//! query can reach a shard on another node. Decoding never panics: bad input is
//! `Error::Corrupt` (or `InvalidMatcher` for a regex that does not compile), and a decoded
//! query still goes through [`crate::partial::validate`] on the shard.
//!
//! ```text
//! query    tenant str | matchers u32 (op u8 | name str | value str)
//!          | grid (start i64 | end i64 | step i64) | lookback i64
//!          | range u8 0|1 (func u8 | param f64 | range_ms i64)
//!          | aggregation u8 0|1 (op u8 | k u64 | grouping u8 0 by / 1 without | names u32 (str))
//! result   tag u8: 0 series: u32 (labels | points u32 (ts i64 | value f64))
//!                  1 groups: op u8 | k u64 | grid | u32 (key labels | points u32 (state u8 0|1 …))
//! labels   u32 (name str | value str), sorted by name, unique
//! state    tag u8: 0 sum (sum f64 | c f64), 1 count f64, 2 min f64, 3 max f64,
//!          4 avg (sum | c | count f64 | incremental u8), 5 group, 6 moments (count | mean | m2),
//!          7 topk / 8 bottomk: u32 (value f64 | labels)
//! str      u32 length | UTF-8 bytes
//! ```

use crate::codec::{PutExt, Reader};
use crate::error::Result;
use crate::matcher::{MatchOp, Matcher};
use crate::partial::{AggState, GroupPartial, PartialResult, SeriesPoints};
use crate::query::{AggOp, Aggregation, Grouping, PartialQuery, RangeFn, RangeSpec, TimeGrid};
use crate::series::{Label, Labels, Sample, Tenant};

pub fn encode_query(q: &PartialQuery) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, q.tenant.as_str());
    b.put_u32(q.matchers.len() as u32);
    for m in &q.matchers {
        b.put_u8(match m.op {
            MatchOp::Equal => 0,
            MatchOp::NotEqual => 1,
            MatchOp::RegexMatch => 2,
            MatchOp::RegexNoMatch => 3,
        });
        put_str(&mut b, &m.name);
        put_str(&mut b, &m.value);
    }
    put_grid(&mut b, &q.grid);
    b.put_i64(q.lookback_ms);
    match q.range {
        None => b.put_u8(0),
        Some(r) => {
            b.put_u8(1);
            let (tag, param) = range_fn_tag(r.func);
            b.put_u8(tag);
            b.put_f64(param);
            b.put_i64(r.range_ms);
        }
    }
    match &q.aggregation {
        None => b.put_u8(0),
        Some(a) => {
            b.put_u8(1);
            put_agg_op(&mut b, a.op);
            let (tag, names) = match &a.grouping {
                Grouping::By(n) => (0, n),
                Grouping::Without(n) => (1, n),
            };
            b.put_u8(tag);
            b.put_u32(names.len() as u32);
            for n in names {
                put_str(&mut b, n);
            }
        }
    }
    b
}

pub fn decode_query(bytes: &[u8]) -> Result<PartialQuery> {
    let mut r = Reader::new(bytes, "partial query");
    let tenant = Tenant::new(get_str(&mut r)?).map_err(|e| r.corrupt(e.to_string()))?;
    let n = r.count(9)?;
    let mut matchers = Vec::with_capacity(n);
    for _ in 0..n {
        let op = match r.u8()? {
            0 => MatchOp::Equal,
            1 => MatchOp::NotEqual,
            2 => MatchOp::RegexMatch,
            3 => MatchOp::RegexNoMatch,
            t => return Err(r.corrupt(format!("unknown matcher op {t}"))),
        };
        let name = get_str(&mut r)?;
        let value = get_str(&mut r)?;
        matchers.push(Matcher::new(op, name, value)?);
    }
    let grid = get_grid(&mut r)?;
    let lookback_ms = r.i64()?;
    let range = match r.u8()? {
        0 => None,
        1 => {
            let tag = r.u8()?;
            let param = r.f64()?;
            let func = range_fn_of(tag, param)
                .ok_or_else(|| r.corrupt(format!("unknown range function {tag}")))?;
            Some(RangeSpec {
                func,
                range_ms: r.i64()?,
            })
        }
        t => return Err(r.corrupt(format!("bad range flag {t}"))),
    };
    let aggregation = match r.u8()? {
        0 => None,
        1 => {
            let op = get_agg_op(&mut r)?;
            let tag = r.u8()?;
            let n = r.count(4)?;
            let names = (0..n)
                .map(|_| get_str(&mut r))
                .collect::<Result<Vec<_>>>()?;
            let grouping = match tag {
                0 => Grouping::By(names),
                1 => Grouping::Without(names),
                t => return Err(r.corrupt(format!("unknown grouping {t}"))),
            };
            Some(Aggregation { op, grouping })
        }
        t => return Err(r.corrupt(format!("bad aggregation flag {t}"))),
    };
    finished(&r)?;
    Ok(PartialQuery {
        tenant,
        matchers,
        grid,
        lookback_ms,
        range,
        aggregation,
    })
}

pub fn encode_result(result: &PartialResult) -> Vec<u8> {
    let mut b = Vec::new();
    match result {
        PartialResult::Series(series) => {
            b.put_u8(0);
            b.put_u32(series.len() as u32);
            for s in series {
                put_labels(&mut b, &s.labels);
                b.put_u32(s.points.len() as u32);
                for p in &s.points {
                    b.put_i64(p.ts_ms);
                    b.put_f64(p.value);
                }
            }
        }
        PartialResult::Groups { op, grid, groups } => {
            b.put_u8(1);
            put_agg_op(&mut b, *op);
            put_grid(&mut b, grid);
            b.put_u32(groups.len() as u32);
            for g in groups {
                put_labels(&mut b, &g.key);
                b.put_u32(g.points.len() as u32);
                for p in &g.points {
                    match p {
                        None => b.put_u8(0),
                        Some(state) => {
                            b.put_u8(1);
                            put_state(&mut b, state);
                        }
                    }
                }
            }
        }
    }
    b
}

pub fn decode_result(bytes: &[u8]) -> Result<PartialResult> {
    let mut r = Reader::new(bytes, "partial result");
    let result = match r.u8()? {
        0 => {
            let n = r.count(8)?;
            let mut series = Vec::with_capacity(n);
            for _ in 0..n {
                let labels = get_labels(&mut r)?;
                let m = r.count(16)?;
                let mut points = Vec::with_capacity(m);
                for _ in 0..m {
                    points.push(Sample::new(r.i64()?, r.f64()?));
                }
                series.push(SeriesPoints { labels, points });
            }
            PartialResult::Series(series)
        }
        1 => {
            let op = get_agg_op(&mut r)?;
            let grid = get_grid(&mut r)?;
            let n = r.count(8)?;
            let mut groups = Vec::with_capacity(n);
            for _ in 0..n {
                let key = get_labels(&mut r)?;
                let m = r.count(1)?;
                let mut points = Vec::with_capacity(m);
                for _ in 0..m {
                    points.push(match r.u8()? {
                        0 => None,
                        1 => Some(get_state(&mut r)?),
                        t => return Err(r.corrupt(format!("bad state flag {t}"))),
                    });
                }
                groups.push(GroupPartial { key, points });
            }
            PartialResult::Groups { op, grid, groups }
        }
        t => return Err(r.corrupt(format!("unknown result kind {t}"))),
    };
    finished(&r)?;
    Ok(result)
}

fn finished(r: &Reader<'_>) -> Result<()> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(r.corrupt(format!("{} trailing bytes", r.remaining())))
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.put_bytes(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String> {
    let bytes = r.bytes()?;
    String::from_utf8(bytes.to_vec()).map_err(|_| r.corrupt("string is not UTF-8"))
}

fn put_grid(b: &mut Vec<u8>, g: &TimeGrid) {
    b.put_i64(g.start_ms);
    b.put_i64(g.end_ms);
    b.put_i64(g.step_ms);
}

fn get_grid(r: &mut Reader<'_>) -> Result<TimeGrid> {
    Ok(TimeGrid {
        start_ms: r.i64()?,
        end_ms: r.i64()?,
        step_ms: r.i64()?,
    })
}

fn put_labels(b: &mut Vec<u8>, labels: &Labels) {
    b.put_u32(labels.len() as u32);
    for l in labels.iter() {
        put_str(b, &l.name);
        put_str(b, &l.value);
    }
}

fn get_labels(r: &mut Reader<'_>) -> Result<Labels> {
    let n = r.count(8)?;
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let name = get_str(r)?;
        let value = get_str(r)?;
        labels.push(Label::new(name, value));
    }
    if !labels.windows(2).all(|w| w[0].name < w[1].name) {
        return Err(r.corrupt("labels are not sorted and unique"));
    }
    Ok(Labels::from_sorted_unchecked(labels))
}

/// Range functions without a parameter, in tag order; the two with one follow.
const RANGE_FNS: [RangeFn; 17] = [
    RangeFn::Rate,
    RangeFn::Increase,
    RangeFn::Delta,
    RangeFn::Irate,
    RangeFn::Idelta,
    RangeFn::Changes,
    RangeFn::Resets,
    RangeFn::AvgOverTime,
    RangeFn::MinOverTime,
    RangeFn::MaxOverTime,
    RangeFn::SumOverTime,
    RangeFn::CountOverTime,
    RangeFn::LastOverTime,
    RangeFn::PresentOverTime,
    RangeFn::StddevOverTime,
    RangeFn::StdvarOverTime,
    RangeFn::Deriv,
];
const TAG_QUANTILE: u8 = 17;
const TAG_PREDICT_LINEAR: u8 = 18;
const TAG_TIMESTAMP: u8 = 19;

fn range_fn_tag(func: RangeFn) -> (u8, f64) {
    match func {
        RangeFn::QuantileOverTime(q) => (TAG_QUANTILE, q),
        RangeFn::PredictLinear(s) => (TAG_PREDICT_LINEAR, s),
        RangeFn::Timestamp => (TAG_TIMESTAMP, 0.0),
        simple => (
            RANGE_FNS
                .iter()
                .position(|f| *f == simple)
                .expect("every simple range function has a tag") as u8,
            0.0,
        ),
    }
}

fn range_fn_of(tag: u8, param: f64) -> Option<RangeFn> {
    match tag {
        TAG_QUANTILE => Some(RangeFn::QuantileOverTime(param)),
        TAG_PREDICT_LINEAR => Some(RangeFn::PredictLinear(param)),
        TAG_TIMESTAMP => Some(RangeFn::Timestamp),
        t => RANGE_FNS.get(t as usize).copied(),
    }
}

fn put_agg_op(b: &mut Vec<u8>, op: AggOp) {
    let (tag, k) = match op {
        AggOp::Sum => (0, 0),
        AggOp::Count => (1, 0),
        AggOp::Min => (2, 0),
        AggOp::Max => (3, 0),
        AggOp::Avg => (4, 0),
        AggOp::Group => (5, 0),
        AggOp::Stddev => (6, 0),
        AggOp::Stdvar => (7, 0),
        AggOp::Topk(k) => (8, k),
        AggOp::Bottomk(k) => (9, k),
    };
    b.put_u8(tag);
    b.put_u64(k as u64);
}

fn get_agg_op(r: &mut Reader<'_>) -> Result<AggOp> {
    let tag = r.u8()?;
    let k = usize::try_from(r.u64()?).map_err(|_| r.corrupt("k does not fit"))?;
    Ok(match tag {
        0 => AggOp::Sum,
        1 => AggOp::Count,
        2 => AggOp::Min,
        3 => AggOp::Max,
        4 => AggOp::Avg,
        5 => AggOp::Group,
        6 => AggOp::Stddev,
        7 => AggOp::Stdvar,
        8 => AggOp::Topk(k),
        9 => AggOp::Bottomk(k),
        t => return Err(r.corrupt(format!("unknown aggregation {t}"))),
    })
}

fn put_state(b: &mut Vec<u8>, state: &AggState) {
    match state {
        AggState::Sum { sum, c } => {
            b.put_u8(0);
            b.put_f64(*sum);
            b.put_f64(*c);
        }
        AggState::Count(v) => {
            b.put_u8(1);
            b.put_f64(*v);
        }
        AggState::Min(v) => {
            b.put_u8(2);
            b.put_f64(*v);
        }
        AggState::Max(v) => {
            b.put_u8(3);
            b.put_f64(*v);
        }
        AggState::Avg {
            sum,
            c,
            count,
            incremental,
        } => {
            b.put_u8(4);
            b.put_f64(*sum);
            b.put_f64(*c);
            b.put_f64(*count);
            b.put_u8(u8::from(*incremental));
        }
        AggState::Group => b.put_u8(5),
        AggState::Moments { count, mean, m2 } => {
            b.put_u8(6);
            b.put_f64(*count);
            b.put_f64(*mean);
            b.put_f64(*m2);
        }
        AggState::TopK(cands) | AggState::BottomK(cands) => {
            b.put_u8(if matches!(state, AggState::TopK(_)) {
                7
            } else {
                8
            });
            b.put_u32(cands.len() as u32);
            for (v, labels) in cands {
                b.put_f64(*v);
                put_labels(b, labels);
            }
        }
    }
}

fn get_state(r: &mut Reader<'_>) -> Result<AggState> {
    Ok(match r.u8()? {
        0 => AggState::Sum {
            sum: r.f64()?,
            c: r.f64()?,
        },
        1 => AggState::Count(r.f64()?),
        2 => AggState::Min(r.f64()?),
        3 => AggState::Max(r.f64()?),
        4 => AggState::Avg {
            sum: r.f64()?,
            c: r.f64()?,
            count: r.f64()?,
            incremental: match r.u8()? {
                0 => false,
                1 => true,
                t => return Err(r.corrupt(format!("bad flag {t}"))),
            },
        },
        5 => AggState::Group,
        6 => AggState::Moments {
            count: r.f64()?,
            mean: r.f64()?,
            m2: r.f64()?,
        },
        tag @ (7 | 8) => {
            let n = r.count(12)?;
            let mut cands = Vec::with_capacity(n);
            for _ in 0..n {
                let v = r.f64()?;
                cands.push((v, get_labels(r)?));
            }
            if tag == 7 {
                AggState::TopK(cands)
            } else {
                AggState::BottomK(cands)
            }
        }
        t => return Err(r.corrupt(format!("unknown aggregation state {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partial;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs).unwrap()
    }

    fn query(range: Option<RangeSpec>, aggregation: Option<Aggregation>) -> PartialQuery {
        PartialQuery {
            tenant: Tenant::new("team-a").unwrap(),
            matchers: vec![
                Matcher::equal("__name__", "http_requests_total"),
                Matcher::new(MatchOp::RegexMatch, "job", "api|web").unwrap(),
                Matcher::new(MatchOp::NotEqual, "env", "dev").unwrap(),
            ],
            grid: TimeGrid {
                start_ms: 60_000,
                end_ms: 600_000,
                step_ms: 15_000,
            },
            lookback_ms: 300_000,
            range,
            aggregation,
        }
    }

    /// Every range function and aggregation survives the trip, and so does every result a
    /// shard computes for them (states included, compared after the trip by their encoding).
    #[test]
    fn queries_and_results_round_trip() {
        let data: Vec<(Labels, Vec<Sample>)> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                let l = labels(&[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("instance", inst),
                ]);
                let samples = (0..60)
                    .map(|j| Sample::new(j * 10_000, (j * (i as i64 + 1)) as f64))
                    .collect();
                (l, samples)
            })
            .collect();
        let mut funcs: Vec<Option<RangeSpec>> = RANGE_FNS
            .iter()
            .chain(&[
                RangeFn::QuantileOverTime(0.9),
                RangeFn::PredictLinear(600.0),
                RangeFn::Timestamp,
            ])
            .map(|f| {
                Some(RangeSpec {
                    func: *f,
                    range_ms: 120_000,
                })
            })
            .collect();
        funcs.push(None);
        let ops = [
            AggOp::Sum,
            AggOp::Count,
            AggOp::Min,
            AggOp::Max,
            AggOp::Avg,
            AggOp::Group,
            AggOp::Stddev,
            AggOp::Stdvar,
            AggOp::Topk(2),
            AggOp::Bottomk(1),
        ];
        for range in &funcs {
            let mut aggs: Vec<Option<Aggregation>> = ops
                .iter()
                .map(|op| {
                    Some(Aggregation {
                        op: *op,
                        grouping: Grouping::Without(vec!["instance".into()]),
                    })
                })
                .collect();
            aggs.push(Some(Aggregation {
                op: AggOp::Sum,
                grouping: Grouping::By(vec![]),
            }));
            aggs.push(None);
            for aggregation in aggs {
                let q = query(*range, aggregation);
                let back = decode_query(&encode_query(&q)).unwrap();
                assert_eq!(format!("{back:?}"), format!("{q:?}"));
                let result =
                    partial::evaluate(&q, data.iter().map(|(l, s)| (l, s.as_slice()))).unwrap();
                let bytes = encode_result(&result);
                let decoded = decode_result(&bytes).unwrap();
                assert_eq!(encode_result(&decoded), bytes, "{q:?}");
            }
        }
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let bytes = encode_query(&query(None, None));
        for cut in 0..bytes.len() {
            assert!(decode_query(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_query(&extra).is_err());
        assert!(decode_result(&[9]).is_err());
        // Unsorted labels are refused.
        let mut b = vec![0];
        b.put_u32(1);
        b.put_u32(2);
        for s in ["b", "1", "a", "2"] {
            put_str(&mut b, s);
        }
        b.put_u32(0);
        assert!(decode_result(&b).is_err());
    }
}
