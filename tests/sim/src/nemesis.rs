//! Nemeses: the faults a run injects, scheduled from its seed.
//!
//! A schedule is a list of [`Episode`]s: a fault starts at `start_ms` and is undone at
//! `end_ms` (simulated ms since the run started). Episodes may overlap. Faults that name "the
//! leader" or "a shard" are resolved when they start, from the cluster's state at that moment
//! (the run's driver does that, see `run.rs`), so the schedule itself is a pure function of the
//! seed and the number of nodes.
//!
//! What each fault does (turmoil's network and hosts, and the node's `SimFs` disk). Cut links
//! *hold* messages and deliver them when released, as TCP's retransmissions would: turmoil
//! does not retransmit, so a dropped segment would leave a hole that stalls its connection
//! forever, which no real network does to an established TCP connection.
//! - [`Fault::PartitionNode`]: the node (its zone: one node per zone in small clusters) is cut
//!   off from every other node, both ways; clients still reach it.
//! - [`Fault::IsolateLeader`]: the same, for the node leading a shard group when it starts.
//! - [`Fault::DropPartition`]: the node is cut off and what is in flight is *dropped*: like a
//!   middlebox that loses its connection state, it leaves established connections silently
//!   stalled for good (turmoil does not retransmit). Only the transport's HTTP/2 keepalive
//!   gets the nodes talking again after it heals.
//! - [`Fault::OneWay`]: the link between two nodes is cut while both still reach the others (a
//!   partial, non-transitive partition). A truly one-way cut stalls a TCP connection both ways
//!   (the acknowledgements stop), so over TCP it is this.
//! - [`Fault::Flaky`]: message loss, which TCP turns into delay: the node's links stall for
//!   50–800 ms at a time, every 0.1–1.5 s.
//! - [`Fault::Slow`]: the node's links get up to `max_latency_ms` of latency.
//! - [`Fault::Crash`]: the node's host stops and its disk loses what was not synced; it
//!   restarts on that disk when the episode ends. Long episodes make it catch up by snapshot
//!   (the simulator's Raft snapshots every 10 entries).
//! - [`Fault::CrashMajority`]: two voters of one shard group crash together (a majority at RF=3).
//! - [`Fault::CrashAll`]: every node crashes at once (a power cut of every zone) and restarts
//!   together: only what was fsynced survives anywhere.
//! - [`Fault::TransferLeader`]: the leader of a shard group hands leadership to another voter.
//! - [`Fault::RemoveVoter`]: the leader of a shard group removes another voter (a membership
//!   change); its control loop adds the node back as learner then voter, since the placement
//!   still names it, and the node catches up from the log or a snapshot.
//! - [`Fault::MoveReplica`]: the placement of a shard group swaps one replica for a node of
//!   the same zone that holds none (clusters with two nodes in a zone): the new node is added
//!   as learner, catches up and becomes a voter; the old one is demoted, removed, and drops
//!   its replica. Skipped when no zone has a spare node.

use rand::Rng;
use rand::rngs::StdRng;

/// One fault (module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    PartitionNode(u64),
    DropPartition(u64),
    IsolateLeader,
    OneWay { from: u64, to: u64 },
    Flaky(u64),
    Slow { node: u64, max_latency_ms: u64 },
    Crash(u64),
    CrashMajority,
    CrashAll,
    TransferLeader,
    RemoveVoter,
    MoveReplica,
}

/// The kinds of fault, to restrict a schedule to some of them (negative controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Partition,
    DropPartition,
    IsolateLeader,
    OneWay,
    Flaky,
    Slow,
    Crash,
    LongCrash,
    CrashMajority,
    CrashAll,
    TransferLeader,
    RemoveVoter,
    MoveReplica,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Partition,
        Kind::DropPartition,
        Kind::IsolateLeader,
        Kind::OneWay,
        Kind::Flaky,
        Kind::Slow,
        Kind::Crash,
        Kind::LongCrash,
        Kind::CrashMajority,
        Kind::CrashAll,
        Kind::TransferLeader,
        Kind::RemoveVoter,
        Kind::MoveReplica,
    ];
}

/// A fault and when it starts and ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

/// Episodes between `from_ms` and `until_ms` for a cluster of `nodes` nodes, drawn from `rng`
/// among `kinds`. A new episode starts every 1–6 s; most last 2–12 s, long crashes 30–45 s;
/// every episode ends by `until_ms`.
pub fn schedule(
    rng: &mut StdRng,
    nodes: u64,
    kinds: &[Kind],
    from_ms: u64,
    until_ms: u64,
) -> Vec<Episode> {
    assert!(!kinds.is_empty() && nodes >= 2);
    let mut episodes = Vec::new();
    let mut at = from_ms;
    loop {
        at += rng.random_range(1_000..6_000);
        if at >= until_ms {
            return episodes;
        }
        let node = rng.random_range(1..=nodes);
        let kind = kinds[rng.random_range(0..kinds.len())];
        let (fault, duration) = match kind {
            Kind::Partition => (Fault::PartitionNode(node), rng.random_range(2_000..12_000)),
            Kind::DropPartition => (Fault::DropPartition(node), rng.random_range(2_000..12_000)),
            Kind::IsolateLeader => (Fault::IsolateLeader, rng.random_range(2_000..12_000)),
            Kind::OneWay => {
                let to = (node - 1 + rng.random_range(1..nodes)) % nodes + 1;
                (
                    Fault::OneWay { from: node, to },
                    rng.random_range(2_000..12_000),
                )
            }
            Kind::Flaky => (Fault::Flaky(node), rng.random_range(2_000..12_000)),
            Kind::Slow => (
                Fault::Slow {
                    node,
                    max_latency_ms: rng.random_range(100..1_500),
                },
                rng.random_range(2_000..12_000),
            ),
            Kind::Crash => (Fault::Crash(node), rng.random_range(2_000..12_000)),
            Kind::LongCrash => (Fault::Crash(node), rng.random_range(30_000..45_000)),
            Kind::CrashMajority => (Fault::CrashMajority, rng.random_range(2_000..10_000)),
            Kind::CrashAll => (Fault::CrashAll, rng.random_range(1_000..5_000)),
            Kind::TransferLeader => (Fault::TransferLeader, 0),
            Kind::RemoveVoter => (Fault::RemoveVoter, 0),
            Kind::MoveReplica => (Fault::MoveReplica, 0),
        };
        episodes.push(Episode {
            start_ms: at,
            end_ms: (at + duration).min(until_ms),
            fault,
        });
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_seed_fixes_the_schedule_and_every_episode_ends_in_the_window() {
        let draw = |seed| {
            schedule(
                &mut StdRng::seed_from_u64(seed),
                3,
                &Kind::ALL,
                10_000,
                90_000,
            )
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for seed in 0..50 {
            for e in draw(seed) {
                assert!(10_000 < e.start_ms && e.start_ms <= e.end_ms && e.end_ms <= 90_000);
                if let Fault::OneWay { from, to } = e.fault {
                    assert!(from != to && (1..=3).contains(&from) && (1..=3).contains(&to));
                }
            }
        }
    }
}
