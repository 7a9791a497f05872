//! A reference model of the [`Wal`] for model-based tests (CONVENTIONS.md 10): a `BTreeMap` per
//! group and the history of operations since the last durable point.
//!
//! Shared by the unit tests (which add failpoints) and by `raft/tests/wal.rs`, which includes this
//! file with `#[path]`; it names the WAL's types through `super::`, so both includers import
//! them.

use std::collections::BTreeMap;

use super::{Seq, Wal, WalError};

/// What one group holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelGroup {
    pub entries: BTreeMap<u64, Vec<u8>>,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    pub purged: Option<(u64, Vec<u8>)>,
}

/// What the WAL holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub groups: BTreeMap<u64, ModelGroup>,
}

/// One mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Append {
        group: u64,
        first: u64,
        entries: Vec<Vec<u8>>,
    },
    Vote {
        group: u64,
        vote: Vec<u8>,
    },
    Committed {
        group: u64,
        committed: Vec<u8>,
    },
    Truncate {
        group: u64,
        index: u64,
    },
    Purge {
        group: u64,
        index: u64,
        payload: Vec<u8>,
    },
    RemoveGroup {
        group: u64,
    },
}

impl Model {
    pub fn first_index(&self, group: u64) -> Option<u64> {
        let g = self.groups.get(&group)?;
        g.entries.first_key_value().map(|(&i, _)| i)
    }

    pub fn last_index(&self, group: u64) -> Option<u64> {
        let g = self.groups.get(&group)?;
        g.entries.last_key_value().map(|(&i, _)| i)
    }

    pub fn purged_index(&self, group: u64) -> Option<u64> {
        let g = self.groups.get(&group)?;
        g.purged.as_ref().map(|(i, _)| *i)
    }

    /// Where the next append must start, `None` if anywhere (W6).
    pub fn next_index(&self, group: u64) -> Option<u64> {
        match self.last_index(group) {
            Some(last) => Some(last + 1),
            None => self.purged_index(group).map(|p| p + 1),
        }
    }

    /// Whether the WAL must accept `op` (W6).
    pub fn accepts(&self, op: &Op) -> bool {
        match op {
            Op::Append { group, first, .. } => self.next_index(*group).is_none_or(|n| n == *first),
            Op::Truncate { group, index } => self.purged_index(*group).is_none_or(|p| *index > p),
            Op::Purge { group, index, .. } => {
                *index < u64::MAX && self.purged_index(*group).is_none_or(|p| *index >= p)
            }
            Op::Vote { .. } | Op::Committed { .. } | Op::RemoveGroup { .. } => true,
        }
    }

    /// Applies an accepted `op`.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { entries, .. } if entries.is_empty() => {}
            Op::Append {
                group,
                first,
                entries,
            } => {
                let g = self.groups.entry(*group).or_default();
                for (k, entry) in entries.iter().enumerate() {
                    g.entries.insert(first + k as u64, entry.clone());
                }
            }
            Op::Vote { group, vote } => {
                self.groups.entry(*group).or_default().vote = Some(vote.clone());
            }
            Op::Committed { group, committed } => {
                self.groups.entry(*group).or_default().committed = Some(committed.clone());
            }
            Op::Truncate { group, index } => {
                let g = self.groups.entry(*group).or_default();
                g.entries.split_off(index);
            }
            Op::Purge {
                group,
                index,
                payload,
            } => {
                let g = self.groups.entry(*group).or_default();
                g.entries = g.entries.split_off(&(index + 1));
                g.purged = Some((*index, payload.clone()));
            }
            Op::RemoveGroup { group } => {
                self.groups.remove(group);
            }
        }
    }
}

/// Runs `op` on the WAL.
pub fn apply_to_wal(wal: &mut Wal, op: &Op) -> Result<Seq, WalError> {
    match op {
        Op::Append {
            group,
            first,
            entries,
        } => wal.append(*group, *first, entries),
        Op::Vote { group, vote } => wal.save_vote(*group, vote),
        Op::Committed { group, committed } => wal.save_committed(*group, committed),
        Op::Truncate { group, index } => wal.truncate(*group, *index),
        Op::Purge {
            group,
            index,
            payload,
        } => wal.purge(*group, *index, payload),
        Op::RemoveGroup { group } => wal.remove_group(*group),
    }
}

/// Reads everything the WAL holds back into a model, checking that the log state agrees with the
/// entries.
pub fn read_wal(wal: &Wal) -> Model {
    let mut model = Model::default();
    for group in wal.groups() {
        let state = wal.log_state(group).expect("log_state");
        let entries: BTreeMap<u64, Vec<u8>> = wal
            .entries(group, ..)
            .expect("entries")
            .into_iter()
            .collect();
        assert_eq!(
            state.first_index,
            entries.first_key_value().map(|(&i, _)| i),
            "group {group}: first index"
        );
        assert_eq!(
            state.last_index,
            entries.last_key_value().map(|(&i, _)| i),
            "group {group}: last index"
        );
        if let (Some(first), Some(last)) = (state.first_index, state.last_index) {
            assert_eq!(
                entries.len() as u64,
                last - first + 1,
                "group {group}: hole in the entries (W6)"
            );
            // A sub-range read must agree with the full read.
            let mid = first + (last - first) / 2;
            let part: Vec<(u64, Vec<u8>)> = wal.entries(group, mid..=last).expect("entries");
            let expected: Vec<(u64, Vec<u8>)> =
                entries.range(mid..).map(|(&i, e)| (i, e.clone())).collect();
            assert_eq!(part, expected, "group {group}: range read from {mid}");
        }
        model.groups.insert(
            group,
            ModelGroup {
                entries,
                vote: state.vote,
                committed: state.committed,
                purged: state.last_purged.map(|p| (p.index, p.payload)),
            },
        );
    }
    model
}

/// The model's state at the last durable point, and the operations accepted since.
#[derive(Clone, Debug, Default)]
pub struct History {
    durable: Model,
    pending: Vec<Op>,
    current: Model,
}

impl History {
    /// The state after every accepted operation.
    pub fn current(&self) -> &Model {
        &self.current
    }

    /// Runs `op` on the WAL and the model; the WAL must accept exactly what the model accepts,
    /// and refuse the rest with a rule error that leaves it usable.
    pub fn run(&mut self, wal: &mut Wal, op: Op) {
        let accepted = self.current.accepts(&op);
        let result = apply_to_wal(wal, &op);
        match (&result, accepted) {
            (Ok(seq), true) => assert!(
                *seq >= wal.durable_seq() && *seq == wal.pending_seq(),
                "W9: {op:?} returned {seq:?}"
            ),
            (
                Err(
                    WalError::NotContiguous { .. }
                    | WalError::TruncatePurged { .. }
                    | WalError::PurgeBackwards { .. }
                    | WalError::IndexOutOfRange { .. },
                ),
                false,
            ) => {}
            _ => panic!("{op:?}: the model accepts it: {accepted}, the WAL said {result:?}"),
        }
        if accepted {
            self.current.apply(&op);
            // An append may take several records, of which a crash may keep a prefix (W2): for
            // the prefix check it is one operation per entry.
            match op {
                Op::Append {
                    group,
                    first,
                    entries,
                } => self
                    .pending
                    .extend((first..).zip(entries).map(|(index, entry)| Op::Append {
                        group,
                        first: index,
                        entries: vec![entry],
                    })),
                op => self.pending.push(op),
            }
        }
    }

    /// Everything so far is durable.
    pub fn flushed(&mut self) {
        self.durable = self.current.clone();
        self.pending.clear();
    }

    /// The number of operations (an append counting one per entry) not known to be durable.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// After a crash or a reopen: what the WAL recovered must be the durable state followed by a
    /// prefix of the later operations (W2). Adopts it as durable (W8) and returns the length of
    /// that prefix.
    pub fn recovered(&mut self, got: &Model) -> usize {
        let mut state = self.durable.clone();
        let mut survived = (state == *got).then_some(0);
        for (k, op) in self.pending.iter().enumerate() {
            if survived.is_some() {
                break;
            }
            state.apply(op);
            if state == *got {
                survived = Some(k + 1);
            }
        }
        let Some(survived) = survived else {
            panic!(
                "W2: the recovered state is not the durable state plus a prefix of the {} later \
                 operations\nrecovered: {got:#?}\ndurable: {:#?}\nlater: {:#?}",
                self.pending.len(),
                self.durable,
                self.pending
            );
        };
        self.durable = got.clone();
        self.current = got.clone();
        self.pending.clear();
        survived
    }
}
