//! The PromQL evaluator: an AST from `promql-parser`, evaluated over a whole [`TimeGrid`] at
//! once (crate doc: types, pushdown, invariants Q1–Q3).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use promql_parser::label::MatchOp as ParsedOp;
use promql_parser::parser::{
    self, AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use strata_shard::matcher::{MatchOp, Matcher};
use strata_shard::partial::{self, AggState};
use strata_shard::query::{
    AggOp, Aggregation, Grouping, LOOKBACK_MS_DEFAULT, PartialQuery, RangeFn, RangeSpec, TimeGrid,
};
use strata_shard::rangefn;
use strata_shard::series::{Label, Labels, METRIC_NAME_LABEL, Sample, Tenant};

use crate::functions;
use crate::source::{Source, SourceError};

/// One series over the grid: `points[i]` is its value at grid instant i, if it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<Option<f64>>,
}

/// What an expression evaluates to over a grid (crate doc).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// One value per grid instant.
    Scalar(Vec<f64>),
    /// Sorted by labels; no two series share a label set.
    Vector(Vec<Series>),
    String(String),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::Vector(_) => "instant vector",
            Value::String(_) => "string",
        }
    }
}

/// Why a query failed; the HTTP layer maps these to Prometheus' `errorType`s.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse (Prometheus `bad_data`).
    #[error("{0}")]
    Parse(String),
    /// The query parses but cannot be evaluated as asked (Prometheus `execution`; `bad_data`
    /// for a malformed grid).
    #[error("{0}")]
    Execution(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

fn fail<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::Execution(message.into()))
}

/// Settings of one query.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    pub tenant: Tenant,
    /// How far back an instant selector looks (Prometheus' `--query.lookback-delta`).
    pub lookback_ms: i64,
    /// Step of a subquery that names none (Prometheus' global evaluation interval).
    pub subquery_step_ms: i64,
}

impl QueryOptions {
    pub fn new(tenant: Tenant) -> QueryOptions {
        QueryOptions {
            tenant,
            lookback_ms: LOOKBACK_MS_DEFAULT,
            subquery_step_ms: 60_000,
        }
    }
}

/// A query's answer: its value over `grid`, and the warnings of every shard fan-out.
#[derive(Clone, Debug)]
pub struct Evaluated {
    pub value: Value,
    pub grid: TimeGrid,
    pub warnings: Vec<String>,
}

/// Parses and evaluates `text` over `grid` (an instant query: a grid of one instant).
pub async fn query(
    source: &dyn Source,
    options: QueryOptions,
    text: &str,
    grid: TimeGrid,
) -> Result<Evaluated, QueryError> {
    let expr = parser::parse(text).map_err(QueryError::Parse)?;
    let evaluator = Evaluator {
        source,
        options,
        outer: grid,
        warnings: Mutex::new(Vec::new()),
    };
    let value = evaluator.eval(&expr, grid).await?;
    let warnings = evaluator
        .warnings
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok(Evaluated {
        value,
        grid,
        warnings,
    })
}

struct Evaluator<'a> {
    source: &'a dyn Source,
    options: QueryOptions,
    /// The query's own grid: what `@ start()` and `@ end()` refer to.
    outer: TimeGrid,
    warnings: Mutex<Vec<String>>,
}

/// Where a selector's data comes from: a vector selector with what the shards should apply.
struct Pushdown<'e> {
    selector: &'e VectorSelector,
    range: Option<RangeSpec>,
}

impl<'a> Evaluator<'a> {
    fn eval<'s>(
        &'s self,
        expr: &'s Expr,
        grid: TimeGrid,
    ) -> BoxFuture<'s, Result<Value, QueryError>> {
        Box::pin(async move {
            match expr {
                Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; grid.len()])),
                Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                Expr::Paren(p) => self.eval(&p.expr, grid).await,
                Expr::Unary(u) => match self.eval(&u.expr, grid).await? {
                    Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                    Value::Vector(v) => vector(
                        v.into_iter()
                            .map(|s| {
                                (
                                    drop_name(&s.labels),
                                    s.points.into_iter().map(|p| p.map(|x| -x)).collect(),
                                )
                            })
                            .collect(),
                    ),
                    other => fail(format!(
                        "unary minus needs a scalar or vector, got a {}",
                        other.kind()
                    )),
                },
                Expr::VectorSelector(vs) => {
                    let push = Pushdown {
                        selector: vs,
                        range: None,
                    };
                    Ok(Value::Vector(self.select(&push, None, grid).await?))
                }
                Expr::MatrixSelector(_) | Expr::Subquery(_) => fail(
                    "a range vector can only be the argument of a range function here (e.g. \
                     rate(x[5m])); querying one directly is not supported yet",
                ),
                Expr::Call(call) => self.call(call, grid).await,
                Expr::Aggregate(agg) => self.aggregate(agg, grid).await,
                Expr::Binary(b) => self.binary(b, grid).await,
                Expr::Extension(_) => fail("extension expressions are not supported"),
            }
        })
    }

    fn warn(&self, warnings: Vec<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(warnings);
    }

    /// The instants a selector (or subquery) with `offset` and `@` is evaluated at, for the
    /// outer `grid`: a grid of its own, and whether its single instant stands for every step.
    fn shifted(
        &self,
        offset: &Option<Offset>,
        at: &Option<AtModifier>,
        grid: TimeGrid,
    ) -> Result<(TimeGrid, bool), QueryError> {
        let offset_ms = match offset {
            None => 0,
            Some(Offset::Pos(d)) => millis(d.as_millis())?,
            Some(Offset::Neg(d)) => -millis(d.as_millis())?,
        };
        let pinned = match at {
            None => None,
            Some(AtModifier::Start) => Some(self.outer.start_ms),
            Some(AtModifier::End) => Some(self.outer.end_ms),
            Some(AtModifier::At(t)) => Some(system_ms(*t)?),
        };
        Ok(match pinned {
            Some(t) => (TimeGrid::instant(t - offset_ms), true),
            None => (
                TimeGrid {
                    start_ms: grid.start_ms - offset_ms,
                    end_ms: grid.end_ms - offset_ms,
                    step_ms: grid.step_ms,
                },
                false,
            ),
        })
    }

    /// Runs a selection on the shards (with the range function and aggregation they apply)
    /// and spreads the answer over `grid`.
    async fn select(
        &self,
        push: &Pushdown<'_>,
        aggregation: Option<Aggregation>,
        grid: TimeGrid,
    ) -> Result<Vec<Series>, QueryError> {
        let vs = push.selector;
        let (qgrid, broadcast) = self.shifted(&vs.offset, &vs.at, grid)?;
        // The shards see a grid that ends on its last instant: the instants are the same, and
        // nothing after the last one is read (a one-instant grid whose end lies beyond its
        // start made a shard take the newest sample up to the end, after the instant).
        let qgrid = match qgrid.len() {
            0 => qgrid,
            n => TimeGrid {
                end_ms: qgrid.start_ms + (n as i64 - 1) * qgrid.step_ms,
                ..qgrid
            },
        };
        let query = PartialQuery {
            tenant: self.options.tenant.clone(),
            matchers: matchers(vs)?,
            grid: qgrid,
            lookback_ms: self.options.lookback_ms,
            range: push.range,
            aggregation,
        };
        let answer = self.source.select(query).await?;
        self.warn(answer.warnings);
        let n = grid.len();
        Ok(answer
            .result
            .finalize()
            .into_iter()
            .map(|s| {
                let mut points = vec![None; n];
                for p in s.points {
                    if broadcast {
                        points.iter_mut().for_each(|slot| *slot = Some(p.value));
                    } else if let Ok(i) =
                        usize::try_from((p.ts_ms - qgrid.start_ms) / qgrid.step_ms)
                        && i < n
                    {
                        points[i] = Some(p.value);
                    }
                }
                Series {
                    labels: s.labels,
                    points,
                }
            })
            .collect())
    }

    async fn call(&self, call: &Call, grid: TimeGrid) -> Result<Value, QueryError> {
        let name = call.func.name;
        let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
        if let Some((func, matrix)) = self.range_function(name, &args, grid).await? {
            let series = self.range_call(func, matrix, grid).await?;
            return vector(
                series
                    .into_iter()
                    .map(|s| {
                        let labels = if rangefn::drops_metric_name(func) {
                            drop_name(&s.labels)
                        } else {
                            s.labels
                        };
                        (labels, s.points)
                    })
                    .collect(),
            );
        }
        match name {
            "absent_over_time" => {
                let Some(matrix) = args.first() else {
                    return fail("absent_over_time needs an argument");
                };
                let present = self
                    .range_call(RangeFn::CountOverTime, matrix, grid)
                    .await?;
                let selector = match matrix {
                    Expr::MatrixSelector(ms) => Some(&ms.vs),
                    _ => None,
                };
                Ok(absent(&present, selector, grid.len()))
            }
            "absent" => {
                let Some(arg) = args.first() else {
                    return fail("absent needs an argument");
                };
                let Value::Vector(v) = self.eval(arg, grid).await? else {
                    return fail("absent needs an instant vector");
                };
                let selector = match unparen(arg) {
                    Expr::VectorSelector(vs) => Some(vs),
                    _ => None,
                };
                Ok(absent(&v, selector, grid.len()))
            }
            "time" => Ok(Value::Scalar(
                grid.steps().map(|t| t as f64 / 1e3).collect(),
            )),
            "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; grid.len()])),
            "vector" => {
                let s = self.scalar_arg(name, &args, 0, grid).await?;
                vector(vec![(Labels::default(), s.into_iter().map(Some).collect())])
            }
            "scalar" => {
                let v = self.vector_arg(name, &args, 0, grid).await?;
                Ok(Value::Scalar(
                    (0..grid.len())
                        .map(|i| {
                            let mut values = v.iter().filter_map(|s| s.points[i]);
                            match (values.next(), values.next()) {
                                (Some(x), None) => x,
                                _ => f64::NAN,
                            }
                        })
                        .collect(),
                ))
            }
            "sort" | "sort_desc" => {
                let mut v = self.vector_arg(name, &args, 0, grid).await?;
                if grid.len() == 1 {
                    // Prometheus orders NaN last both ways.
                    let key = |s: &Series| s.points[0].unwrap_or(f64::NAN);
                    v.sort_by(|a, b| {
                        let (x, y) = (key(a), key(b));
                        let order = if name == "sort" {
                            x.partial_cmp(&y)
                        } else {
                            y.partial_cmp(&x)
                        };
                        order.unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
                    });
                }
                Ok(Value::Vector(v))
            }
            "label_replace" => {
                let v = self.vector_arg(name, &args, 0, grid).await?;
                let strings = self.string_args(name, &args, 1..5)?;
                let replace = functions::LabelReplace::new(
                    &strings[0],
                    &strings[1],
                    &strings[2],
                    &strings[3],
                )
                .map_err(QueryError::Execution)?;
                vector(
                    v.into_iter()
                        .map(|s| (replace.apply(&s.labels), s.points))
                        .collect(),
                )
            }
            "label_join" => {
                let v = self.vector_arg(name, &args, 0, grid).await?;
                let strings = self.string_args(name, &args, 1..args.len())?;
                let (dst, rest) = strings.split_first().ok_or_else(|| {
                    QueryError::Execution("label_join needs a destination label".into())
                })?;
                let (sep, sources) = rest
                    .split_first()
                    .ok_or_else(|| QueryError::Execution("label_join needs a separator".into()))?;
                functions::check_label_name(dst).map_err(QueryError::Execution)?;
                vector(
                    v.into_iter()
                        .map(|s| {
                            (
                                functions::label_join(&s.labels, dst, sep, sources),
                                s.points,
                            )
                        })
                        .collect(),
                )
            }
            "histogram_quantile" => {
                let phi = self.scalar_arg(name, &args, 0, grid).await?;
                let v = self.vector_arg(name, &args, 1, grid).await?;
                let (series, warnings) = functions::histogram_quantile(&phi, &v);
                self.warn(warnings);
                vector(series)
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let v = self.vector_arg(name, &args, 0, grid).await?;
                let first = self.scalar_arg(name, &args, 1, grid).await?;
                let second = if name == "clamp" {
                    Some(self.scalar_arg(name, &args, 2, grid).await?)
                } else {
                    None
                };
                let out = v
                    .into_iter()
                    .map(|s| {
                        let points = s
                            .points
                            .iter()
                            .enumerate()
                            .map(|(i, p)| {
                                let x = (*p)?;
                                match (name, &second) {
                                    ("clamp", Some(max)) => {
                                        let (lo, hi) = (first[i], max[i]);
                                        // max < min: Prometheus returns nothing.
                                        (hi >= lo || lo.is_nan() || hi.is_nan())
                                            .then(|| x.max(lo).min(hi))
                                    }
                                    ("clamp_min", _) => Some(x.max(first[i])),
                                    _ => Some(x.min(first[i])),
                                }
                            })
                            .collect();
                        (drop_name(&s.labels), points)
                    })
                    .collect();
                vector(out)
            }
            "round" => {
                let v = self.vector_arg(name, &args, 0, grid).await?;
                let to = if args.len() > 1 {
                    self.scalar_arg(name, &args, 1, grid).await?
                } else {
                    vec![1.0; grid.len()]
                };
                vector(
                    v.into_iter()
                        .map(|s| {
                            let points = s
                                .points
                                .iter()
                                .enumerate()
                                .map(|(i, p)| p.map(|x| functions::round(x, to[i])))
                                .collect();
                            (drop_name(&s.labels), points)
                        })
                        .collect(),
                )
            }
            "timestamp" => {
                let Some(arg) = args.first() else {
                    return fail("timestamp() needs one argument");
                };
                // Of a selector: the timestamp of the sample it picks, read on the shards. Of
                // anything else: the evaluation time of each value.
                if let Expr::VectorSelector(vs) = unparen(arg) {
                    let push = Pushdown {
                        selector: vs,
                        range: Some(RangeSpec {
                            func: RangeFn::Timestamp,
                            range_ms: self.options.lookback_ms,
                        }),
                    };
                    let series = self.select(&push, None, grid).await?;
                    return vector(
                        series
                            .into_iter()
                            .map(|s| (drop_name(&s.labels), s.points))
                            .collect(),
                    );
                }
                let v = self.vector_arg(name, &args, 0, grid).await?;
                vector(
                    v.into_iter()
                        .map(|s| {
                            let points = grid
                                .steps()
                                .zip(&s.points)
                                .map(|(t, p)| p.map(|_| t as f64 / 1e3))
                                .collect();
                            (drop_name(&s.labels), points)
                        })
                        .collect(),
                )
            }
            _ => {
                if let Some(f) = functions::math(name) {
                    let v = self.vector_arg(name, &args, 0, grid).await?;
                    return vector(
                        v.into_iter()
                            .map(|s| {
                                (
                                    drop_name(&s.labels),
                                    s.points.iter().map(|p| p.map(f)).collect(),
                                )
                            })
                            .collect(),
                    );
                }
                if let Some(f) = functions::date(name) {
                    // Without an argument, date functions read `vector(time())`.
                    let v = if args.is_empty() {
                        vec![Series {
                            labels: Labels::default(),
                            points: grid.steps().map(|t| Some(t as f64 / 1e3)).collect(),
                        }]
                    } else {
                        self.vector_arg(name, &args, 0, grid).await?
                    };
                    return vector(
                        v.into_iter()
                            .map(|s| {
                                (
                                    drop_name(&s.labels),
                                    s.points.iter().map(|p| p.map(f)).collect(),
                                )
                            })
                            .collect(),
                    );
                }
                fail(format!("function {name}() is not supported"))
            }
        }
    }

    /// `Some((range function, its range-vector argument))` if `name` is one.
    async fn range_function<'e>(
        &self,
        name: &str,
        args: &[&'e Expr],
        grid: TimeGrid,
    ) -> Result<Option<(RangeFn, &'e Expr)>, QueryError> {
        let simple = match name {
            "rate" => RangeFn::Rate,
            "increase" => RangeFn::Increase,
            "delta" => RangeFn::Delta,
            "irate" => RangeFn::Irate,
            "idelta" => RangeFn::Idelta,
            "changes" => RangeFn::Changes,
            "resets" => RangeFn::Resets,
            "deriv" => RangeFn::Deriv,
            "avg_over_time" => RangeFn::AvgOverTime,
            "min_over_time" => RangeFn::MinOverTime,
            "max_over_time" => RangeFn::MaxOverTime,
            "sum_over_time" => RangeFn::SumOverTime,
            "count_over_time" => RangeFn::CountOverTime,
            "last_over_time" => RangeFn::LastOverTime,
            "present_over_time" => RangeFn::PresentOverTime,
            "stddev_over_time" => RangeFn::StddevOverTime,
            "stdvar_over_time" => RangeFn::StdvarOverTime,
            "quantile_over_time" | "predict_linear" => {
                let (param, matrix) = if name == "quantile_over_time" {
                    (args.first(), args.get(1))
                } else {
                    (args.get(1), args.first())
                };
                let (Some(param), Some(matrix)) = (param, matrix) else {
                    return fail(format!("{name} needs two arguments"));
                };
                // The parameter must be the same at every step to push the function down.
                let Value::Scalar(values) = self.eval(param, grid).await? else {
                    return fail(format!("{name}'s parameter must be a scalar"));
                };
                let p = values.first().copied().unwrap_or(f64::NAN);
                if values.iter().any(|v| v.to_bits() != p.to_bits()) {
                    return fail(format!("{name}'s parameter must be the same at every step"));
                }
                let func = if name == "quantile_over_time" {
                    RangeFn::QuantileOverTime(p)
                } else {
                    RangeFn::PredictLinear(p)
                };
                return Ok(Some((func, matrix)));
            }
            _ => return Ok(None),
        };
        match args.first() {
            Some(matrix) => Ok(Some((simple, matrix))),
            None => fail(format!("{name} needs a range vector argument")),
        }
    }

    /// A range function over a matrix selector (pushed down) or a subquery (evaluated here).
    /// Labels are the input's; the caller drops `__name__`.
    async fn range_call(
        &self,
        func: RangeFn,
        matrix: &Expr,
        grid: TimeGrid,
    ) -> Result<Vec<Series>, QueryError> {
        match unparen(matrix) {
            Expr::MatrixSelector(ms) => {
                let push = Pushdown {
                    selector: &ms.vs,
                    range: Some(RangeSpec {
                        func,
                        range_ms: millis(ms.range.as_millis())?,
                    }),
                };
                self.select(&push, None, grid).await
            }
            Expr::Subquery(sq) => self.subquery(func, sq, grid).await,
            _ => fail(format!(
                "{}() needs a range vector (a selector with [range], or a subquery)",
                func.name()
            )),
        }
    }

    /// Evaluates a subquery's expression on its own grid (aligned to multiples of its step, as
    /// Prometheus does) and applies `func` over each outer instant's window here.
    async fn subquery(
        &self,
        func: RangeFn,
        sq: &SubqueryExpr,
        grid: TimeGrid,
    ) -> Result<Vec<Series>, QueryError> {
        let range_ms = millis(sq.range.as_millis())?;
        let step_ms = match sq.step {
            Some(d) if !d.is_zero() => millis(d.as_millis())?,
            _ => self.options.subquery_step_ms,
        };
        let (egrid, broadcast) = self.shifted(&sq.offset, &sq.at, grid)?;
        let lowest = egrid.start_ms - range_ms;
        let inner = TimeGrid {
            start_ms: lowest.div_euclid(step_ms) * step_ms
                + if lowest.rem_euclid(step_ms) == 0 {
                    0
                } else {
                    step_ms
                },
            end_ms: egrid.end_ms,
            step_ms,
        };
        if inner.start_ms > inner.end_ms {
            // No multiple of the step in any window (a range shorter than the step): nothing.
            return Ok(Vec::new());
        }
        let Value::Vector(series) = self.eval(&sq.expr, inner).await? else {
            return fail("a subquery needs an instant vector expression");
        };
        let n = grid.len();
        Ok(series
            .into_iter()
            .filter_map(|s| {
                let samples: Vec<Sample> = inner
                    .steps()
                    .zip(&s.points)
                    .filter_map(|(t, p)| p.map(|v| Sample::new(t, v)))
                    .collect();
                let at = |t: i64| {
                    let lo = samples.partition_point(|x| x.ts_ms <= t - range_ms);
                    let hi = samples.partition_point(|x| x.ts_ms <= t);
                    rangefn::eval(func, &samples[lo..hi], t, range_ms)
                };
                let points: Vec<Option<f64>> = if broadcast {
                    vec![at(egrid.start_ms); n]
                } else {
                    egrid.steps().map(at).collect()
                };
                points.iter().any(Option::is_some).then_some(Series {
                    labels: s.labels,
                    points,
                })
            })
            .collect())
    }

    async fn vector_arg(
        &self,
        func: &str,
        args: &[&Expr],
        i: usize,
        grid: TimeGrid,
    ) -> Result<Vec<Series>, QueryError> {
        match args.get(i) {
            None => fail(format!("{func}() needs argument {}", i + 1)),
            Some(arg) => match self.eval(arg, grid).await? {
                Value::Vector(v) => Ok(v),
                other => fail(format!(
                    "{func}() argument {} must be an instant vector, got a {}",
                    i + 1,
                    other.kind()
                )),
            },
        }
    }

    async fn scalar_arg(
        &self,
        func: &str,
        args: &[&Expr],
        i: usize,
        grid: TimeGrid,
    ) -> Result<Vec<f64>, QueryError> {
        match args.get(i) {
            None => fail(format!("{func}() needs argument {}", i + 1)),
            Some(arg) => match self.eval(arg, grid).await? {
                Value::Scalar(v) => Ok(v),
                other => fail(format!(
                    "{func}() argument {} must be a scalar, got a {}",
                    i + 1,
                    other.kind()
                )),
            },
        }
    }

    fn string_args(
        &self,
        func: &str,
        args: &[&Expr],
        range: std::ops::Range<usize>,
    ) -> Result<Vec<String>, QueryError> {
        range
            .map(|i| match args.get(i).map(|a| unparen(a)) {
                Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
                _ => fail(format!(
                    "{func}() argument {} must be a string literal",
                    i + 1
                )),
            })
            .collect()
    }

    async fn aggregate(&self, agg: &AggregateExpr, grid: TimeGrid) -> Result<Value, QueryError> {
        let op_name = agg.op.to_string();
        let grouping = match &agg.modifier {
            None => Grouping::By(Vec::new()),
            Some(LabelModifier::Include(ls)) => Grouping::By(ls.labels.clone()),
            Some(LabelModifier::Exclude(ls)) => Grouping::Without(ls.labels.clone()),
        };
        let param = match &agg.param {
            None => None,
            Some(p) => Some(self.eval(p, grid).await?),
        };
        let decomposable = match op_name.as_str() {
            "sum" => Some(AggOp::Sum),
            "count" => Some(AggOp::Count),
            "min" => Some(AggOp::Min),
            "max" => Some(AggOp::Max),
            "avg" => Some(AggOp::Avg),
            "group" => Some(AggOp::Group),
            "stddev" => Some(AggOp::Stddev),
            "stdvar" => Some(AggOp::Stdvar),
            "topk" | "bottomk" => {
                let Some(Value::Scalar(k)) = &param else {
                    return fail(format!("{op_name}'s k must be a scalar"));
                };
                let first = k.first().copied().unwrap_or(f64::NAN);
                if k.iter().all(|x| x.to_bits() == first.to_bits()) {
                    let k = k_of(&op_name, first)?;
                    if k == 0 {
                        return Ok(Value::Vector(Vec::new()));
                    }
                    Some(if op_name == "topk" {
                        AggOp::Topk(k)
                    } else {
                        AggOp::Bottomk(k)
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        // Pushdown: the shards aggregate what they select.
        if let Some(op) = decomposable
            && let Some(push) = self.pushable(&agg.expr, grid).await?
        {
            let series = self
                .select(
                    &push,
                    Some(Aggregation {
                        op,
                        grouping: grouping.clone(),
                    }),
                    grid,
                )
                .await?;
            return Ok(Value::Vector(series));
        }
        let Value::Vector(input) = self.eval(&agg.expr, grid).await? else {
            return fail(format!("{op_name}() needs an instant vector"));
        };
        let n = grid.len();
        match op_name.as_str() {
            "quantile" => {
                let Some(Value::Scalar(phi)) = &param else {
                    return fail("quantile's φ must be a scalar");
                };
                let mut groups: BTreeMap<Labels, Vec<Vec<f64>>> = BTreeMap::new();
                for s in &input {
                    let values = groups
                        .entry(partial::group_key(&s.labels, &grouping))
                        .or_insert_with(|| vec![Vec::new(); n]);
                    for (i, p) in s.points.iter().enumerate() {
                        if let Some(x) = p {
                            values[i].push(*x);
                        }
                    }
                }
                vector(
                    groups
                        .into_iter()
                        .map(|(key, mut values)| {
                            let points = values
                                .iter_mut()
                                .enumerate()
                                .map(|(i, v)| (!v.is_empty()).then(|| rangefn::quantile(phi[i], v)))
                                .collect();
                            (key, points)
                        })
                        .collect(),
                )
            }
            "count_values" => {
                let Some(Value::String(label)) = &param else {
                    return fail("count_values needs a label name string");
                };
                functions::check_label_name(label).map_err(QueryError::Execution)?;
                let mut groups: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
                for s in &input {
                    let key = partial::group_key(&s.labels, &grouping);
                    for (i, p) in s.points.iter().enumerate() {
                        if let Some(x) = p {
                            let labels =
                                functions::with_label(&key, label, &functions::format_value(*x));
                            let counts = groups.entry(labels).or_insert_with(|| vec![None; n]);
                            counts[i] = Some(counts[i].unwrap_or(0.0) + 1.0);
                        }
                    }
                }
                vector(groups.into_iter().collect())
            }
            "limitk" | "limit_ratio" => fail(format!(
                "{op_name} is an experimental aggregation and not supported"
            )),
            _ => {
                let ks: Vec<Option<AggOp>> = match op_name.as_str() {
                    "topk" | "bottomk" => {
                        let Some(Value::Scalar(k)) = &param else {
                            return fail(format!("{op_name}'s k must be a scalar"));
                        };
                        k.iter()
                            .map(|x| {
                                let k = k_of(&op_name, *x)?;
                                Ok((k > 0).then(|| {
                                    if op_name == "topk" {
                                        AggOp::Topk(k)
                                    } else {
                                        AggOp::Bottomk(k)
                                    }
                                }))
                            })
                            .collect::<Result<_, QueryError>>()?
                    }
                    _ => match decomposable {
                        Some(op) => vec![Some(op); n],
                        None => return fail(format!("aggregation {op_name} is not supported")),
                    },
                };
                Ok(Value::Vector(aggregate_here(&input, &grouping, &ks)?))
            }
        }
    }

    /// The selection an aggregation's argument reduces to, if the shards can compute it.
    async fn pushable<'e>(
        &self,
        expr: &'e Expr,
        grid: TimeGrid,
    ) -> Result<Option<Pushdown<'e>>, QueryError> {
        Ok(match unparen(expr) {
            Expr::VectorSelector(vs) => Some(Pushdown {
                selector: vs,
                range: None,
            }),
            Expr::Call(call) => {
                let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
                match self.range_function(call.func.name, &args, grid).await? {
                    Some((func, matrix)) => match unparen(matrix) {
                        // A function that drops the metric name over series of several names
                        // may make two series alike, an error the shards cannot see: such an
                        // argument is evaluated here (`call` checks) and aggregated after.
                        Expr::MatrixSelector(ms)
                            if rangefn::drops_metric_name(func) && !one_metric_name(&ms.vs) =>
                        {
                            None
                        }
                        Expr::MatrixSelector(ms) => Some(Pushdown {
                            selector: &ms.vs,
                            range: Some(RangeSpec {
                                func,
                                range_ms: millis(ms.range.as_millis())?,
                            }),
                        }),
                        _ => None,
                    },
                    None => None,
                }
            }
            _ => None,
        })
    }

    async fn binary(&self, b: &BinaryExpr, grid: TimeGrid) -> Result<Value, QueryError> {
        let op = b.op.to_string();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, grid).await?;
        let rhs = self.eval(&b.rhs, grid).await?;
        let comparison = functions::is_comparison(&op);
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(x, y)| {
                        let (v, keep) = functions::binop(&op, *x, *y);
                        if comparison {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Value::Vector(v), Value::Scalar(s)) => vector_scalar(&op, v, &s, false, return_bool),
            (Value::Scalar(s), Value::Vector(v)) => vector_scalar(&op, v, &s, true, return_bool),
            (Value::Vector(l), Value::Vector(r)) => {
                if functions::is_set_operator(&op) {
                    set_operation(
                        &op,
                        l,
                        r,
                        b.modifier.as_ref().and_then(|m| m.matching.as_ref()),
                        grid.len(),
                    )
                } else {
                    vector_vector(&op, l, r, b, return_bool, grid.len())
                }
            }
            (l, r) => fail(format!(
                "operator {op} is not defined between a {} and a {}",
                l.kind(),
                r.kind()
            )),
        }
    }
}

fn k_of(op: &str, k: f64) -> Result<usize, QueryError> {
    if k.is_nan() {
        return fail(format!("parameter of {op} is NaN"));
    }
    if k >= 1e15 {
        return fail(format!("parameter of {op} is too large: {k}"));
    }
    Ok(if k < 1.0 { 0 } else { k as usize })
}

/// Aggregation over a computed vector, per instant with the shards' mergeable states, folded
/// in label order (Q1). `ops[i]`: the aggregation at instant i (`None`: no output there).
fn aggregate_here(
    input: &[Series],
    grouping: &Grouping,
    ops: &[Option<AggOp>],
) -> Result<Vec<Series>, QueryError> {
    let n = ops.len();
    let mut groups: BTreeMap<Labels, Vec<Option<AggState>>> = BTreeMap::new();
    for s in input {
        let points = groups
            .entry(partial::group_key(&s.labels, grouping))
            .or_insert_with(|| vec![None; n]);
        for (i, p) in s.points.iter().enumerate() {
            let (Some(x), Some(op)) = (p, ops[i]) else {
                continue;
            };
            let state = AggState::from_value(op, *x, &s.labels);
            match &mut points[i] {
                Some(acc) => acc
                    .merge(state, op)
                    .map_err(|e| QueryError::Execution(e.to_string()))?,
                slot @ None => *slot = Some(state),
            }
        }
    }
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for (key, points) in groups {
        for (i, state) in points.into_iter().enumerate() {
            let (Some(state), Some(op)) = (state, ops[i]) else {
                continue;
            };
            match state {
                AggState::TopK(cands) | AggState::BottomK(cands) => {
                    for (v, labels) in cands {
                        out.entry(labels).or_insert_with(|| vec![None; n])[i] = Some(v);
                    }
                }
                other => {
                    if let Some(v) = other.value(op) {
                        out.entry(key.clone()).or_insert_with(|| vec![None; n])[i] = Some(v);
                    }
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(labels, points)| Series { labels, points })
        .collect())
}

fn vector_scalar(
    op: &str,
    v: Vec<Series>,
    s: &[f64],
    scalar_left: bool,
    return_bool: bool,
) -> Result<Value, QueryError> {
    let comparison = functions::is_comparison(op);
    let drop = !comparison || return_bool;
    vector(
        v.into_iter()
            .map(|series| {
                let points = series
                    .points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let x = (*p)?;
                        let (l, r) = if scalar_left { (s[i], x) } else { (x, s[i]) };
                        let (value, keep) = functions::binop(op, l, r);
                        if !comparison {
                            Some(value)
                        } else if return_bool {
                            Some(if keep { 1.0 } else { 0.0 })
                        } else {
                            // A filter keeps the vector's own value, whichever side it is on.
                            keep.then_some(x)
                        }
                    })
                    .collect();
                let labels = if drop {
                    drop_name(&series.labels)
                } else {
                    series.labels
                };
                (labels, points)
            })
            .collect(),
    )
}

/// The match signature of `labels` under `on(...)` / `ignoring(...)` (default: ignoring
/// nothing but `__name__`).
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => {
            partial::filter_labels(labels, |n| on.labels.iter().any(|l| l == n))
        }
        Some(LabelModifier::Exclude(ignoring)) => partial::filter_labels(labels, |n| {
            n != METRIC_NAME_LABEL && !ignoring.labels.iter().any(|l| l == n)
        }),
        None => partial::filter_labels(labels, |n| n != METRIC_NAME_LABEL),
    }
}

fn set_operation(
    op: &str,
    l: Vec<Series>,
    r: Vec<Series>,
    matching: Option<&LabelModifier>,
    n: usize,
) -> Result<Value, QueryError> {
    // Per instant: the signatures present on each side.
    let sigs = |side: &[Series]| -> Vec<std::collections::BTreeSet<Labels>> {
        (0..n)
            .map(|i| {
                side.iter()
                    .filter(|s| s.points[i].is_some())
                    .map(|s| signature(&s.labels, matching))
                    .collect()
            })
            .collect()
    };
    let (lsigs, rsigs) = (sigs(&l), sigs(&r));
    let mut out: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
    for s in &l {
        let sig = signature(&s.labels, matching);
        let points = s
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| match op {
                "and" => p.filter(|_| rsigs[i].contains(&sig)),
                "unless" => p.filter(|_| !rsigs[i].contains(&sig)),
                _ => *p, // or: every left element
            })
            .collect();
        out.push((s.labels.clone(), points));
    }
    if op == "or" {
        for s in &r {
            let sig = signature(&s.labels, matching);
            let points = s
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| p.filter(|_| !lsigs[i].contains(&sig)))
                .collect();
            out.push((s.labels.clone(), points));
        }
    }
    vector(out)
}

fn vector_vector(
    op: &str,
    l: Vec<Series>,
    r: Vec<Series>,
    b: &BinaryExpr,
    return_bool: bool,
    n: usize,
) -> Result<Value, QueryError> {
    let modifier = b.modifier.as_ref();
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    let comparison = functions::is_comparison(op);
    // group_right: the right side is the "many" side; swap so `many` is always first.
    let (many, one, swapped, include) = match card {
        VectorMatchCardinality::OneToMany(include) => (r, l, true, include.labels.clone()),
        VectorMatchCardinality::ManyToOne(include) => (l, r, false, include.labels.clone()),
        _ => (l, r, false, Vec::new()),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let one_sigs: Vec<Labels> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let many_sigs: Vec<Labels> = many
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for i in 0..n {
        let mut by_sig: BTreeMap<&Labels, &Series> = BTreeMap::new();
        for (s, sig) in one.iter().zip(&one_sigs) {
            if s.points[i].is_none() {
                continue;
            }
            if let Some(other) = by_sig.insert(sig, s) {
                return fail(format!(
                    "found duplicate series for the match group {sig} on the {} hand-side of the operation: [{}, {}]; many-to-many matching not allowed: matching labels must be unique on one side",
                    if swapped { "left" } else { "right" },
                    other.labels,
                    s.labels
                ));
            }
        }
        let mut seen_many: BTreeMap<&Labels, &Labels> = BTreeMap::new();
        for (s, sig) in many.iter().zip(&many_sigs) {
            let Some(x) = s.points[i] else { continue };
            let Some(partner) = by_sig.get(sig) else {
                continue;
            };
            if one_to_one && let Some(first) = seen_many.insert(sig, &s.labels) {
                return fail(format!(
                    "found duplicate series for the match group {sig} on the left hand-side of the operation: [{first}, {}]; many-to-many matching not allowed: matching labels must be unique on one side",
                    s.labels
                ));
            }
            let y = partner.points[i].expect("indexed only with a value");
            let (vl, vr) = if swapped { (y, x) } else { (x, y) };
            let (value, keep) = functions::binop(op, vl, vr);
            let value = if return_bool {
                if keep { 1.0 } else { 0.0 }
            } else if comparison && !keep {
                continue;
            } else {
                value
            };
            let labels = result_labels(
                &s.labels,
                &partner.labels,
                op,
                matching,
                one_to_one,
                &include,
                return_bool,
            );
            let points = out.entry(labels.clone()).or_insert_with(|| vec![None; n]);
            if points[i].is_some() {
                return fail(format!(
                    "multiple matches for labels {labels}: many-to-one matching must be explicit (group_left/group_right)"
                ));
            }
            points[i] = Some(value);
        }
    }
    Ok(Value::Vector(
        out.into_iter()
            .map(|(labels, points)| Series { labels, points })
            .collect(),
    ))
}

/// Prometheus' `resultMetric`: the many side's labels, without `__name__` for arithmetic (or
/// `bool`), reduced to the `on` labels (or without the `ignoring` ones) for one-to-one
/// matching, plus the `group_x(...)` labels copied from the one side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: &str,
    matching: Option<&LabelModifier>,
    one_to_one: bool,
    include: &[String],
    return_bool: bool,
) -> Labels {
    let drop = !functions::is_comparison(op) || return_bool;
    let mut labels: Vec<Label> = many
        .iter()
        .filter(|l| !(drop && l.name == METRIC_NAME_LABEL))
        .filter(|l| {
            !one_to_one
                || match matching {
                    Some(LabelModifier::Include(on)) => on.labels.contains(&l.name),
                    Some(LabelModifier::Exclude(ignoring)) => !ignoring.labels.contains(&l.name),
                    None => true,
                }
        })
        .cloned()
        .collect();
    for name in include {
        labels.retain(|l| l.name != *name);
        if let Some(v) = one.get(name) {
            labels.push(Label::new(name.clone(), v));
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    Labels::from_sorted_unchecked(labels)
}

/// `absent`: 1 where no input series has a value, labelled with the selector's equality
/// matchers (other than the metric name), as Prometheus does.
fn absent(input: &[Series], selector: Option<&VectorSelector>, n: usize) -> Value {
    // As Prometheus: the labels of the selector's `=` matchers, except a name that another
    // matcher (of any kind, a second `=` too) also constrains.
    let mut labels: Vec<Label> = Vec::new();
    let mut dropped: Vec<&str> = Vec::new();
    if let Some(vs) = selector {
        for m in &vs.matchers.matchers {
            if m.name == METRIC_NAME_LABEL {
                continue;
            }
            if matches!(m.op, ParsedOp::Equal) && !labels.iter().any(|l| l.name == m.name) {
                labels.push(Label::new(m.name.clone(), m.value.clone()));
            } else {
                dropped.push(&m.name);
            }
        }
    }
    labels.retain(|l| !l.value.is_empty() && !dropped.contains(&l.name.as_str()));
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let points: Vec<Option<f64>> = (0..n)
        .map(|i| (!input.iter().any(|s| s.points[i].is_some())).then_some(1.0))
        .collect();
    if points.iter().all(Option::is_none) {
        return Value::Vector(Vec::new());
    }
    Value::Vector(vec![Series {
        labels: Labels::from_sorted_unchecked(labels),
        points,
    }])
}

/// Builds a vector from (labels, points), merging series whose labels became equal (e.g. after
/// dropping `__name__`) when they never have a value at the same instant, and failing as
/// Prometheus does when they do.
fn vector(items: Vec<(Labels, Vec<Option<f64>>)>) -> Result<Value, QueryError> {
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for (labels, points) in items {
        if points.iter().all(Option::is_none) {
            continue;
        }
        match out.get_mut(&labels) {
            None => {
                out.insert(labels, points);
            }
            Some(acc) => {
                for (slot, p) in acc.iter_mut().zip(points) {
                    if p.is_some() {
                        if slot.is_some() {
                            return fail(format!(
                                "vector cannot contain metrics with the same labelset {labels}"
                            ));
                        }
                        *slot = p;
                    }
                }
            }
        }
    }
    Ok(Value::Vector(
        out.into_iter()
            .map(|(labels, points)| Series { labels, points })
            .collect(),
    ))
}

fn drop_name(labels: &Labels) -> Labels {
    partial::filter_labels(labels, |n| n != METRIC_NAME_LABEL)
}

fn unparen(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// The matchers of a series selector given as text (the `match[]` of the metadata API).
pub fn selector_matchers(text: &str) -> Result<Vec<Matcher>, QueryError> {
    match parser::parse(text).map_err(QueryError::Parse)? {
        Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => matchers(&vs),
        _ => Err(QueryError::Parse(format!(
            "{text:?} is not a series selector (such as up{{job=\"api\"}})"
        ))),
    }
}

/// The selector's matchers as the shards take them; regexes are rebuilt so `.` matches a
/// newline, as in Prometheus 3.x.
fn matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, QueryError> {
    if !vs.matchers.or_matchers.is_empty() {
        return fail(format!(
            "selector {vs}: `or` between label matchers is not supported"
        ));
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::equal(METRIC_NAME_LABEL, name.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            ParsedOp::Equal => MatchOp::Equal,
            ParsedOp::NotEqual => MatchOp::NotEqual,
            ParsedOp::Re(_) => MatchOp::RegexMatch,
            ParsedOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        out.push(
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| QueryError::Execution(e.to_string()))?,
        );
    }
    if out.iter().all(|m| m.matches_empty()) {
        return fail(format!(
            "selector {vs}: vector selector must contain at least one non-empty matcher"
        ));
    }
    Ok(out)
}

/// Whether every series `vs` selects has one and the same metric name (a name, or an `=`
/// matcher on `__name__`).
fn one_metric_name(vs: &VectorSelector) -> bool {
    vs.name.is_some()
        || vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == METRIC_NAME_LABEL && matches!(m.op, ParsedOp::Equal))
}

fn millis(ms: u128) -> Result<i64, QueryError> {
    i64::try_from(ms).or_else(|_| fail(format!("duration of {ms} ms is too long")))
}

fn system_ms(t: SystemTime) -> Result<i64, QueryError> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => millis(d.as_millis()),
        Err(e) => Ok(-millis(e.duration().as_millis())?),
    }
}
