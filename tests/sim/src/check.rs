//! The checkers: run at the end of every run, after the faults are healed and a quiet period,
//! on the history and on every replica's engine as read then ([`FinalState`]).
//!
//! Each returns violations as sentences naming the series, sample, shard group or node, so a
//! failing seed says what went wrong, not only that something did:
//! - C1 convergence: every voter of a shard group holds the same samples (same state digest).
//! - C2 acknowledged ⇒ present: every sample of an acknowledged write is stored with its value.
//! - C3 exactly once: no series holds two samples at one timestamp (no duplicate from retries).
//! - C4 nothing invented: every stored sample is one some write carried (series, time and
//!   value); a refused write's samples are absent. Writes with unknown outcome may be present
//!   or absent, and C1 makes that the same on every replica.
//! - C5 one home: a series lives in one shard group (the ring does not change in a run).
//! - C6 liveness: after healing, a write through every node is acknowledged within a bound.
//! - C7 linearizable strong reads, per series (`linearizable.rs`): a read that starts after a
//!   write was acknowledged sees it, and reads never go back in time.
//! - C8 placement carried out: the nodes hosting a shard group's replicas, and its voters, are
//!   exactly the nodes its placement names (a moved replica was added on the new node and
//!   dropped on the old one).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Outcome, ReadOp, WriteOp};
use crate::linearizable::{self, Action};

/// One replica's samples: series (its `series` label) → (timestamp, value bits), in time order.
pub type ReplicaState = BTreeMap<String, Vec<(i64, u64)>>;

/// Every replica of every shard group, as read from the engines at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    /// Group → its voters, from the membership its replicas report (the union, so a replica
    /// that disagrees about membership is still compared).
    pub voters: BTreeMap<u64, BTreeSet<u64>>,
    /// (group, node) → that replica's samples.
    pub replicas: BTreeMap<(u64, u64), ReplicaState>,
    /// Group → the nodes its placement names, from the meta group.
    pub placements: BTreeMap<u64, BTreeSet<u64>>,
}

/// A write through one node after healing (C6).
#[derive(Clone, Debug)]
pub struct Probe {
    pub node: u64,
    /// Simulated ms from healing to the acknowledgement; `None`: never acknowledged.
    pub acked_after_ms: Option<u64>,
}

/// Runs C1–C8; returns every violation found (empty: the run is correct).
pub fn check(
    ops: &[WriteOp],
    reads: &[ReadOp],
    state: &FinalState,
    probes: &[Probe],
    liveness_bound_ms: u64,
) -> Vec<String> {
    let mut violations = placed(state);
    let cluster = converged(state, &mut violations);
    let mut written: BTreeMap<(&str, i64), Vec<(u64, &WriteOp)>> = BTreeMap::new();
    for op in ops {
        for s in &op.samples {
            written
                .entry((s.series.as_str(), s.ts))
                .or_default()
                .push((s.value.to_bits(), op));
        }
    }
    // C3 and C4, over what the cluster holds.
    for (series, samples) in &cluster {
        for pair in samples.windows(2) {
            if pair[0].0 == pair[1].0 {
                violations.push(format!(
                    "C3 series {series}: two samples at ts {} (values {} and {})",
                    pair[0].0,
                    f64::from_bits(pair[0].1),
                    f64::from_bits(pair[1].1)
                ));
            }
        }
        for &(ts, bits) in samples {
            let writers = written.get(&(series.as_str(), ts)).map_or(&[][..], |w| w);
            match writers.iter().find(|(b, _)| *b == bits) {
                None => violations.push(format!(
                    "C4 series {series}: sample at ts {ts} = {} was never written",
                    f64::from_bits(bits)
                )),
                Some((_, op)) => {
                    if let Outcome::Failed(why) = &op.outcome {
                        violations.push(format!(
                            "C4 series {series}: sample at ts {ts} of op{} is stored, but the \
                             write was refused ({why})",
                            op.id
                        ));
                    }
                }
            }
        }
    }
    // C2.
    for op in ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        for s in &op.samples {
            let stored = cluster
                .get(&s.series)
                .and_then(|v| v.iter().find(|(ts, _)| *ts == s.ts));
            match stored {
                Some((_, bits)) if *bits == s.value.to_bits() => {}
                Some((_, bits)) => violations.push(format!(
                    "C2 series {}: acknowledged sample at ts {} (op{}, acked at {} ms) is {} \
                     instead of {}",
                    s.series,
                    s.ts,
                    op.id,
                    op.complete_ms.unwrap_or_default(),
                    f64::from_bits(*bits),
                    s.value
                )),
                None => violations.push(format!(
                    "C2 series {}: acknowledged sample at ts {} = {} (op{}, acked at {} ms) is lost",
                    s.series,
                    s.ts,
                    s.value,
                    op.id,
                    op.complete_ms.unwrap_or_default()
                )),
            }
        }
    }
    // C6.
    for p in probes {
        match p.acked_after_ms {
            Some(ms) if ms <= liveness_bound_ms => {}
            Some(ms) => violations.push(format!(
                "C6 node {}: a write after healing took {ms} ms (bound {liveness_bound_ms} ms)",
                p.node
            )),
            None => violations.push(format!(
                "C6 node {}: a write after healing was never acknowledged (bound \
                 {liveness_bound_ms} ms)",
                p.node
            )),
        }
    }
    violations.extend(strong_reads(ops, reads));
    violations
}

/// C7: per series, the writes (projected onto it) and the strong reads that answered.
fn strong_reads(ops: &[WriteOp], reads: &[ReadOp]) -> Vec<String> {
    let mut per_series: BTreeMap<&str, Vec<linearizable::Op>> = BTreeMap::new();
    for read in reads {
        if let (Some(result), Some(complete)) = (&read.result, read.complete_ms) {
            per_series
                .entry(read.series.as_str())
                .or_default()
                .push(linearizable::Op {
                    name: format!("read{}", read.id),
                    invoke_ms: read.invoke_ms,
                    complete_ms: Some(complete),
                    action: Action::Read(result.clone()),
                });
        }
    }
    for op in ops {
        let complete_ms = match op.outcome {
            Outcome::Ok => op.complete_ms,
            // A refused write must not appear at all (C4 says so if it does).
            Outcome::Failed(_) => continue,
            Outcome::Unknown(_) | Outcome::Pending => None,
        };
        let mut samples: BTreeMap<&str, Vec<linearizable::Sample>> = BTreeMap::new();
        for s in &op.samples {
            samples
                .entry(s.series.as_str())
                .or_default()
                .push((s.ts, s.value.to_bits()));
        }
        for (series, samples) in samples {
            if let Some(history) = per_series.get_mut(series) {
                history.push(linearizable::Op {
                    name: format!("op{}", op.id),
                    invoke_ms: op.invoke_ms,
                    complete_ms,
                    action: Action::Write(samples),
                });
            }
        }
    }
    per_series
        .into_iter()
        .filter_map(|(series, history)| {
            linearizable::check(&history)
                .err()
                .map(|why| format!("C7 series {series}: strong reads are not linearizable: {why}"))
        })
        .collect()
}

/// C8: every group is hosted, and voted in, by exactly the nodes of its placement.
fn placed(state: &FinalState) -> Vec<String> {
    let mut violations = Vec::new();
    let mut hosts: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for &(group, node) in state.replicas.keys() {
        hosts.entry(group).or_default().insert(node);
    }
    let groups: BTreeSet<u64> = hosts
        .keys()
        .chain(state.placements.keys())
        .copied()
        .collect();
    let none = BTreeSet::new();
    for group in groups {
        let placement = state.placements.get(&group).unwrap_or(&none);
        for (what, nodes) in [
            ("hosted by", hosts.get(&group).unwrap_or(&none)),
            ("voted in by", state.voters.get(&group).unwrap_or(&none)),
        ] {
            if nodes != placement {
                violations.push(format!(
                    "C8 group {group}: {what} nodes {nodes:?}, but its placement is {placement:?}"
                ));
            }
        }
    }
    violations
}

/// C1 and C5: compares the voters of every group and returns the cluster's samples per series,
/// from each group's majority state (the state most voters hold; the lowest-numbered voter's
/// on a tie), so C2 judges what the group would serve and C1 names the odd replica out.
fn converged(state: &FinalState, violations: &mut Vec<String>) -> ReplicaState {
    let mut cluster = ReplicaState::new();
    let mut home: BTreeMap<&str, u64> = BTreeMap::new();
    for (&group, voters) in &state.voters {
        let mut held: Vec<(u64, &ReplicaState)> = Vec::new();
        for &node in voters {
            match state.replicas.get(&(group, node)) {
                Some(replica) => held.push((node, replica)),
                None => violations.push(format!(
                    "C1 group {group}: voter node {node} holds no replica"
                )),
            }
        }
        let Some(&(first, reference)) = held.iter().max_by_key(|(node, r)| {
            (
                held.iter().filter(|(_, o)| o == r).count(),
                std::cmp::Reverse(*node),
            )
        }) else {
            continue;
        };
        for &(node, replica) in &held {
            if let Some(diff) = first_difference(reference, replica) {
                violations.push(format!(
                    "C1 group {group}: node {node} differs from node {first}: {diff}"
                ));
            }
        }
        for (series, samples) in reference {
            if let Some(other) = home.insert(series, group) {
                violations.push(format!(
                    "C5 series {series}: stored in groups {other} and {group}"
                ));
            }
            cluster
                .entry(series.clone())
                .or_default()
                .extend_from_slice(samples);
        }
    }
    for samples in cluster.values_mut() {
        samples.sort_unstable();
    }
    cluster
}

/// The first series where two replicas differ, described.
fn first_difference(a: &ReplicaState, b: &ReplicaState) -> Option<String> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().find_map(|series| {
        let (x, y) = (a.get(series), b.get(series));
        (x != y).then(|| {
            let (x, y) = (x.map_or(&[][..], |v| v), y.map_or(&[][..], |v| v));
            let at = x.iter().zip(y).position(|(p, q)| p != q);
            format!(
                "series {series}: {} vs {} samples, first difference at index {}",
                x.len(),
                y.len(),
                at.unwrap_or(x.len().min(y.len()))
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Written;

    fn op(id: u64, outcome: Outcome, samples: &[(&str, i64, f64)]) -> WriteOp {
        WriteOp {
            id,
            client: "c0".into(),
            samples: samples
                .iter()
                .map(|(series, ts, value)| Written {
                    series: (*series).into(),
                    ts: *ts,
                    value: *value,
                })
                .collect(),
            invoke_ms: 0,
            complete_ms: Some(1),
            outcome,
        }
    }

    /// (series, ts, value) samples of one replica.
    type Samples<'a> = &'a [(&'a str, i64, f64)];

    fn state(replicas: &[(u64, u64, Samples<'_>)]) -> FinalState {
        let mut s = FinalState::default();
        for (group, node, samples) in replicas {
            s.voters.entry(*group).or_default().insert(*node);
            s.placements.entry(*group).or_default().insert(*node);
            let r = s.replicas.entry((*group, *node)).or_default();
            for (series, ts, value) in *samples {
                r.entry((*series).into())
                    .or_default()
                    .push((*ts, value.to_bits()));
            }
        }
        s
    }

    #[test]
    fn a_correct_run_passes() {
        let ops = [
            op(0, Outcome::Ok, &[("a", 1, 1.0)]),
            op(1, Outcome::Unknown("timeout".into()), &[("a", 2, 2.0)]),
            op(2, Outcome::Unknown("timeout".into()), &[("b", 2, 3.0)]),
        ];
        let s = state(&[
            (1, 1, &[("a", 1, 1.0), ("a", 2, 2.0)]),
            (1, 2, &[("a", 1, 1.0), ("a", 2, 2.0)]),
        ]);
        let probes = [Probe {
            node: 1,
            acked_after_ms: Some(10),
        }];
        assert_eq!(check(&ops, &[], &s, &probes, 100), Vec::<String>::new());
    }

    #[test]
    fn each_checker_catches_its_violation() {
        let ops = [
            op(0, Outcome::Ok, &[("a", 1, 1.0)]),
            op(1, Outcome::Failed("refused".into()), &[("a", 3, 3.0)]),
            op(2, Outcome::Ok, &[("b", 1, 1.0)]),
        ];
        let s = state(&[
            // group 1: node 2 lost the acked sample (C1); both hold an invented one (C4) and
            // the refused one (C4).
            (1, 1, &[("a", 1, 1.0), ("a", 3, 3.0), ("a", 5, 5.0)]),
            (1, 2, &[("a", 3, 3.0), ("a", 5, 5.0)]),
            // group 2: series b twice at ts 1 (C3), and series a again (C5).
            (2, 3, &[("b", 1, 1.0), ("b", 1, 1.0), ("a", 1, 1.0)]),
        ]);
        let probes = [
            Probe {
                node: 1,
                acked_after_ms: Some(500),
            },
            Probe {
                node: 2,
                acked_after_ms: None,
            },
        ];
        let found = check(&ops, &[], &s, &probes, 100);
        for tag in [
            "C1 group 1",
            "C3 series b",
            "C4 series a: sample at ts 5",
            "C4 series a: sample at ts 3 of op1",
            "C5 series a",
            "C6 node 1",
            "C6 node 2",
        ] {
            assert!(
                found.iter().any(|v| v.starts_with(tag)),
                "{tag} missing from {found:#?}"
            );
        }
        // C8: node 4 still hosts a replica of group 2 its placement moved away (to node 3).
        let mut moved = state(&[(2, 3, &[("b", 1, 1.0)])]);
        moved.replicas.insert((2, 4), ReplicaState::new());
        let found = check(&ops[2..], &[], &moved, &[], 100);
        assert_eq!(
            found,
            ["C8 group 2: hosted by nodes {3, 4}, but its placement is {3}"]
        );
        // C2: an acknowledged sample nowhere at all.
        let lost = state(&[(1, 1, &[])]);
        let found = check(&ops[..1], &[], &lost, &[], 100);
        assert!(
            found[0].starts_with("C2 series a: acknowledged sample at ts 1"),
            "{found:?}"
        );
    }
}
