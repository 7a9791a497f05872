//! Where the evaluator's selections go: one [`PartialQuery`] in, one merged
//! [`PartialResult`] (plus warnings) out.
//!
//! A cluster source fans the query out to every shard the tenant's series may live on and
//! merges their answers (`PartialResult::merge` is associative and commutative, so the order
//! answers arrive in does not matter). [`MemorySource`] evaluates it over series held in
//! memory, cut into any number of "shards" so tests can check that 1 and 16 shards agree (Q1).

use futures::future::BoxFuture;
use strata_shard::partial::{self, PartialResult};
use strata_shard::query::PartialQuery;
use strata_shard::series::{Labels, Sample};

/// A merged answer and what the client should be warned about (Prometheus' `warnings`).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub result: PartialResult,
    pub warnings: Vec<String>,
}

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The query itself is malformed (step, range, grid size); the client must change it.
    #[error("{0}")]
    Invalid(String),
    /// Shards did not answer and the request did not accept a partial result.
    #[error("{0}")]
    Unavailable(String),
    /// A limit of the tenant was hit (series, samples).
    #[error("{0}")]
    Limit(String),
}

impl From<strata_shard::Error> for SourceError {
    fn from(e: strata_shard::Error) -> Self {
        match e {
            strata_shard::Error::InvalidRequest { reason } => SourceError::Invalid(reason),
            other => SourceError::Unavailable(other.to_string()),
        }
    }
}

/// Answers partial queries for the evaluator.
pub trait Source: Send + Sync {
    fn select(&self, query: PartialQuery) -> BoxFuture<'_, Result<Answer, SourceError>>;
}

/// Series in memory, spread over `shards` buckets by position; each bucket is evaluated on its
/// own and the answers merged, as a cluster would.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    series: Vec<(Labels, Vec<Sample>)>,
    shards: usize,
}

impl MemorySource {
    /// `series`: labels and samples sorted by time without duplicates (stale markers allowed).
    pub fn new(mut series: Vec<(Labels, Vec<Sample>)>, shards: usize) -> MemorySource {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        MemorySource {
            series,
            shards: shards.max(1),
        }
    }

    fn answer(&self, query: &PartialQuery) -> Result<Answer, SourceError> {
        let mut merged: Option<PartialResult> = None;
        for shard in 0..self.shards {
            let selected = self
                .series
                .iter()
                .enumerate()
                .filter(|(i, (labels, _))| {
                    i % self.shards == shard
                        && query
                            .matchers
                            .iter()
                            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
                })
                .map(|(_, (labels, samples))| (labels, samples.as_slice()));
            let result = partial::evaluate(query, selected)?;
            match &mut merged {
                None => merged = Some(result),
                Some(acc) => acc.merge(result)?,
            }
        }
        Ok(Answer {
            result: merged.expect("at least one shard"),
            warnings: Vec::new(),
        })
    }
}

impl Source for MemorySource {
    fn select(&self, query: PartialQuery) -> BoxFuture<'_, Result<Answer, SourceError>> {
        let answer = self.answer(&query);
        Box::pin(async move { answer })
    }
}
