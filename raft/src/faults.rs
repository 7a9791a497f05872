//! Deliberate bugs, for the simulator's negative controls only (feature `fault-injection`).
//!
//! A checker that never fails proves nothing. The simulator turns these on to show that its
//! checkers catch the two classic ways a replicated store loses acknowledged data. They are
//! compiled only with the `fault-injection` feature (the simulator's), are off by default, and
//! production builds (`cargo build -p strata-node`) do not contain them.

/// Which deliberate bugs a node runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The WAL's group commit reports appends as durable without fsyncing them, so a crash
    /// can lose entries a quorum has acknowledged.
    pub skip_wal_fsync: bool,
    /// A shard group's leader acknowledges a write as soon as it has handed it to Raft, before
    /// a quorum has it (and before it is applied), so a leader that crashes or is cut off can
    /// lose it.
    pub ack_before_quorum: bool,
}
