//! The history of a run: every client operation with its invoke time, completion time and
//! outcome, plus a line per nemesis action, in the order they happened.
//!
//! The history is what the checkers judge, and its text ([`History::trace`]) is what the
//! determinism test compares byte for byte: one seed, one trace.
//!
//! Invariants:
//! - H1: operation ids are dense, in invoke order (`ops[id].id == id`).
//! - H2: an operation completes at most once; `Pending` after the run means the client never
//!   learnt the outcome, which the checkers treat like `Unknown`.
//! - H3: every time is simulated time (ms since the run started), so traces replay.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One sample a write operation carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The value of the `series` label (the metric name is fixed).
    pub series: String,
    pub ts: i64,
    pub value: f64,
}

/// How an operation ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not completed (yet).
    Pending,
    /// Acknowledged: every sample is stored and must stay readable.
    Ok,
    /// Definitely refused: no sample may appear.
    Failed(String),
    /// The client gave up without an answer: the samples may or may not be stored.
    Unknown(String),
}

/// A write operation: one remote-write request, retried (with the same samples) until it is
/// acknowledged, refused, or its client gives up.
#[derive(Clone, Debug)]
pub struct WriteOp {
    pub id: u64,
    pub client: String,
    pub samples: Vec<Written>,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    pub outcome: Outcome,
}

/// A strong read of one series' samples (every time), through one node.
#[derive(Clone, Debug)]
pub struct ReadOp {
    pub id: u64,
    pub client: String,
    pub series: String,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    /// The samples read, (timestamp, value bits) in time order; `None`: the read failed (a
    /// failed read says nothing and is left out of the checks).
    pub result: Option<Vec<(i64, u64)>>,
}

/// The shared history of one run (clones share it).
#[derive(Clone, Default)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    ops: Vec<WriteOp>,
    reads: Vec<ReadOp>,
    trace: String,
}

/// Simulated milliseconds since the run started.
pub fn now_ms() -> u64 {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    u64::try_from(elapsed.as_millis()).expect("a run lasts less than 2^64 ms")
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking client leaves the history readable; the run reports the panic anyway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `client` starts writing `samples`; returns the operation's id (H1).
    pub fn invoke(&self, client: &str, samples: Vec<Written>) -> u64 {
        let at = now_ms();
        let mut h = self.lock();
        let id = h.ops.len() as u64;
        let mut line = format!("{at} {client} invoke op{id}");
        for s in &samples {
            let _ = write!(line, " {}@{}={}", s.series, s.ts, s.value);
        }
        h.trace.push_str(&line);
        h.trace.push('\n');
        h.ops.push(WriteOp {
            id,
            client: client.to_owned(),
            samples,
            invoke_ms: at,
            complete_ms: None,
            outcome: Outcome::Pending,
        });
        id
    }

    /// Records one request of operation `id` sent to `node` and what came back.
    pub fn attempt(&self, id: u64, node: u64, answer: &str) {
        let at = now_ms();
        let _ = writeln!(self.lock().trace, "{at} op{id} node{node}: {answer}");
    }

    /// Records how operation `id` ended (H2).
    pub fn complete(&self, id: u64, outcome: Outcome) {
        let at = now_ms();
        let mut h = self.lock();
        let op = &mut h.ops[id as usize];
        assert_eq!(op.outcome, Outcome::Pending, "H2: op{id} completes twice");
        op.complete_ms = Some(at);
        op.outcome = outcome.clone();
        let _ = writeln!(h.trace, "{at} op{id} complete {outcome:?}");
    }

    /// Records that `client` starts a strong read of `series`; returns the read's id (dense,
    /// in invoke order, separate from the writes').
    pub fn invoke_read(&self, client: &str, series: &str) -> u64 {
        let at = now_ms();
        let mut h = self.lock();
        let id = h.reads.len() as u64;
        let _ = writeln!(h.trace, "{at} {client} invoke read{id} {series}");
        h.reads.push(ReadOp {
            id,
            client: client.to_owned(),
            series: series.to_owned(),
            invoke_ms: at,
            complete_ms: None,
            result: None,
        });
        id
    }

    /// Records what read `id` returned (`None`: it failed, with `why` in the trace).
    pub fn complete_read(&self, id: u64, result: Result<Vec<(i64, u64)>, String>) {
        let at = now_ms();
        let mut h = self.lock();
        let line = match &result {
            Ok(samples) => format!("{at} read{id} ok {} samples", samples.len()),
            Err(why) => format!("{at} read{id} failed: {why}"),
        };
        h.trace.push_str(&line);
        h.trace.push('\n');
        let read = &mut h.reads[id as usize];
        read.complete_ms = Some(at);
        read.result = result.ok();
    }

    /// Every read so far, in invoke order.
    pub fn reads(&self) -> Vec<ReadOp> {
        self.lock().reads.clone()
    }

    /// Adds a line at simulated time `at_ms` to the trace (a nemesis action, a phase of the
    /// run); the driver outside the hosts passes the time, as it has no host clock.
    pub fn note(&self, at_ms: u64, line: impl AsRef<str>) {
        let _ = writeln!(self.lock().trace, "{at_ms} {}", line.as_ref());
    }

    /// Every operation so far, in invoke order.
    pub fn ops(&self) -> Vec<WriteOp> {
        self.lock().ops.clone()
    }

    /// The whole trace so far.
    pub fn trace(&self) -> String {
        self.lock().trace.clone()
    }
}
