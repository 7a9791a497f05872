//! C7: strong reads are linearizable per series, checked with the Wing–Gong search and Lowe's
//! memoisation (WGL) over the model of one series: the set of its samples.
//!
//! Each operation has an interval, from invoke to completion; an operation whose outcome is
//! unknown (a write the client gave up on) may take effect at any time after its invoke, or
//! never. A history is linearizable if its operations can be put in one order that respects
//! real time (an operation that completed before another was invoked comes first) and in which
//! every read returns exactly the samples of the writes before it.
//!
//! The search: repeatedly pick an operation that may come next (no other pending operation
//! completed before it was invoked), apply it to the model (a read must match), and backtrack
//! when stuck. The model's state is a function of which operations are done, so a set of done
//! operations seen once and failed is never searched again (Lowe's cache). Times are whole
//! simulated milliseconds; an invoke at the same millisecond as another operation's completion
//! counts as concurrent with it.

use std::collections::BTreeSet;

/// (timestamp, value bits) of one sample.
pub type Sample = (i64, u64);

/// What an operation does to the series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Adds these samples (idempotent: a sample already there stays).
    Write(Vec<Sample>),
    /// Returned exactly these samples, in time order.
    Read(Vec<Sample>),
}

/// One operation on the series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// A name for reports (`op12`, `read7`).
    pub name: String,
    pub invoke_ms: u64,
    /// `None`: the outcome is unknown; the operation may take effect any time after invoke,
    /// or never.
    pub complete_ms: Option<u64>,
    pub action: Action,
}

/// Checks one series' operations; `Err` explains why no order exists.
pub fn check(ops: &[Op]) -> Result<(), String> {
    let mut search = Search {
        ops,
        done: vec![false; ops.len()],
        cache: BTreeSet::new(),
        deepest: 0,
        stuck_at: Vec::new(),
    };
    if search.run(&mut BTreeSet::new(), 0) {
        return Ok(());
    }
    let stuck: Vec<String> = search
        .stuck_at
        .iter()
        .map(|&i| {
            let op = &ops[i];
            let what = match &op.action {
                Action::Write(s) => format!("write of {} samples", s.len()),
                Action::Read(s) => format!("read returning {} samples", s.len()),
            };
            format!(
                "{} ({what}, {}..{} ms)",
                op.name,
                op.invoke_ms,
                op.complete_ms.map_or("?".into(), |c| c.to_string())
            )
        })
        .collect();
    Err(format!(
        "no order of its {} operations explains the reads: at best {} fit, then none of {} could come next",
        ops.len(),
        search.deepest,
        stuck.join(", ")
    ))
}

struct Search<'a> {
    ops: &'a [Op],
    done: Vec<bool>,
    /// Sets of done operations already searched without success.
    cache: BTreeSet<Vec<bool>>,
    /// For the report: the most operations ever linearized, and what could not follow them.
    deepest: usize,
    stuck_at: Vec<usize>,
}

impl Search<'_> {
    fn run(&mut self, state: &mut BTreeSet<Sample>, depth: usize) -> bool {
        // Finished once every operation with a known outcome is placed; unknown ones may
        // never have happened.
        let pending = (0..self.ops.len()).filter(|&i| !self.done[i]);
        if pending.clone().all(|i| self.ops[i].complete_ms.is_none()) {
            return true;
        }
        let first_completion = pending
            .clone()
            .filter_map(|i| self.ops[i].complete_ms)
            .min()
            .unwrap_or(u64::MAX);
        let candidates: Vec<usize> = pending
            .filter(|&i| self.ops[i].invoke_ms <= first_completion)
            .collect();
        for &i in &candidates {
            let added: Vec<Sample> = match &self.ops[i].action {
                Action::Read(seen) => {
                    if !state.iter().eq(seen.iter()) {
                        continue;
                    }
                    Vec::new()
                }
                Action::Write(samples) => samples
                    .iter()
                    .filter(|s| !state.contains(s))
                    .copied()
                    .collect(),
            };
            self.done[i] = true;
            if self.cache.insert(self.done.clone()) {
                state.extend(added.iter().copied());
                if self.run(state, depth + 1) {
                    return true;
                }
                for s in &added {
                    state.remove(s);
                }
            }
            self.done[i] = false;
        }
        if depth >= self.deepest {
            self.deepest = depth;
            self.stuck_at = candidates;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, invoke: u64, complete: Option<u64>, ts: &[i64]) -> Op {
        Op {
            name: name.into(),
            invoke_ms: invoke,
            complete_ms: complete,
            action: Action::Write(ts.iter().map(|t| (*t, 0)).collect()),
        }
    }

    fn r(name: &str, invoke: u64, complete: u64, ts: &[i64]) -> Op {
        Op {
            name: name.into(),
            invoke_ms: invoke,
            complete_ms: Some(complete),
            action: Action::Read(ts.iter().map(|t| (*t, 0)).collect()),
        }
    }

    #[test]
    fn reads_that_follow_the_writes_pass() {
        let ops = [
            w("op0", 0, Some(10), &[1]),
            r("read0", 5, 8, &[]),
            r("read1", 6, 12, &[1]),
            w("op1", 20, Some(30), &[2]),
            r("read2", 25, 40, &[1, 2]),
            r("read3", 41, 50, &[1, 2]),
        ];
        assert_eq!(check(&ops), Ok(()));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_fails() {
        let ops = [w("op0", 0, Some(10), &[1]), r("read0", 11, 20, &[])];
        let err = check(&ops).unwrap_err();
        assert!(err.contains("read0"), "{err}");
    }

    #[test]
    fn a_read_may_not_see_the_future_nor_go_back_in_time() {
        // Sees a write invoked after the read completed.
        let future = [r("read0", 0, 5, &[1]), w("op0", 6, Some(10), &[1])];
        assert!(check(&future).is_err());
        // Two sequential reads: the second misses what the first saw (the write is unknown).
        let back = [
            w("op0", 0, None, &[1]),
            r("read0", 1, 5, &[1]),
            r("read1", 6, 9, &[]),
        ];
        assert!(check(&back).is_err());
    }

    #[test]
    fn an_unknown_write_may_appear_late_or_never() {
        let late = [
            w("op0", 0, None, &[1]),
            r("read0", 1, 5, &[]),
            r("read1", 100, 105, &[1]),
        ];
        assert_eq!(check(&late), Ok(()));
        let never = [w("op0", 0, None, &[1]), r("read0", 100, 105, &[])];
        assert_eq!(check(&never), Ok(()));
    }

    #[test]
    fn concurrent_reads_may_see_a_write_in_either_order_but_consistently() {
        let ops = [
            w("op0", 0, Some(100), &[1]),
            r("read0", 10, 90, &[1]),
            r("read1", 20, 80, &[]),
        ];
        // read1 before op0, read0 after: fine.
        assert_eq!(check(&ops), Ok(()));
    }
}
