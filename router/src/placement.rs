//! Replica placement: which nodes hold each shard group's replicas.
//!
//! [`plan`] is a pure function from the registered nodes, the current placements and the
//! replication factor to the placements the cluster should have. The meta leader's
//! controller (in the node binary) runs it and proposes `SetPlacement` for every group whose
//! wanted placement differs; the nodes then create the replicas (learner → catch-up → voter).
//!
//! A placement is an ordered list: slot 0 is the group's *preferred leader*. The node that
//! holds slot 0 initializes a new group, and a leader that is not the preferred one hands
//! leadership back to it once it is caught up, so leaders stay spread after a failover.
//!
//! ## Invariants
//! - P1. A wanted placement names distinct registered nodes, at most `rf` of them. While the
//!   cluster has more than one zone, every node it adds is in a zone no other replica of the
//!   group is in (the meta group's M6 refuses anything else); in a single-zone cluster it
//!   takes distinct nodes.
//! - P2. Stable: a current placement's replicas that are still registered are kept, in their
//!   order; the plan only fills empty slots (up to `min(rf, zones)`, or `min(rf, nodes)` in a
//!   single-zone cluster). A full placement comes back unchanged, so re-running the plan
//!   proposes nothing, and a node that joins takes no replica from a full group (moving
//!   replicas to balance load is a rebalancer's job, not placement's).
//! - P3. Spread: an empty slot goes to the eligible node holding the fewest replicas so far
//!   (this plan's placements included; ties: fewer preferred leaderships, then the node after
//!   the group id in rotation, so equal nodes share groups round-robin); slot 0 of a new group
//!   then goes to the node among those chosen that is preferred leader of the fewest groups.
//!   For nodes of equal standing (one zone, or one node per zone) replica counts stay within
//!   one of each other and preferred-leader counts within two (property-tested; greedy
//!   choice cannot promise one for both at once).
//! - P4. Deterministic: the same inputs give the same output on every node (ordered maps only,
//!   groups planned in ascending id order).

use std::collections::{BTreeMap, BTreeSet};

use strata_raft::types::{GroupId, NodeId, NodeInfo};

/// The placements `groups` should have (P1–P4), given the registered `nodes`, the
/// `current` placements and the replication factor `rf`. Only the groups in `groups` are in
/// the answer; a group with no eligible node gets an empty list (the caller proposes nothing
/// for it).
pub fn plan(
    nodes: &BTreeMap<NodeId, NodeInfo>,
    current: &BTreeMap<GroupId, Vec<NodeId>>,
    groups: &[GroupId],
    rf: usize,
) -> BTreeMap<GroupId, Vec<NodeId>> {
    let zones: BTreeSet<&str> = nodes.values().map(|n| n.zone.as_str()).collect();
    let multi_zone = zones.len() > 1;
    let target = rf.min(if multi_zone { zones.len() } else { nodes.len() });

    // Load counts every current placement, also of groups not planned here (P3).
    let mut replicas: BTreeMap<NodeId, usize> = nodes.keys().map(|n| (*n, 0)).collect();
    let mut leads: BTreeMap<NodeId, usize> = replicas.clone();
    for placement in current.values() {
        for (slot, n) in placement.iter().enumerate() {
            if let Some(count) = replicas.get_mut(n) {
                *count += 1;
            }
            if slot == 0
                && let Some(count) = leads.get_mut(n)
            {
                *count += 1;
            }
        }
    }

    let ids: Vec<NodeId> = nodes.keys().copied().collect();
    let mut wanted = BTreeMap::new();
    let mut sorted: Vec<GroupId> = groups.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for group in sorted {
        // P2: keep what is registered, in order.
        let mut placement: Vec<NodeId> = current
            .get(&group)
            .map(|p| {
                p.iter()
                    .copied()
                    .filter(|n| nodes.contains_key(n))
                    .collect()
            })
            .unwrap_or_default();
        let new_group = placement.is_empty();
        while placement.len() < target {
            let used_zones: BTreeSet<&str> =
                placement.iter().map(|n| nodes[n].zone.as_str()).collect();
            let eligible = |n: &NodeId| {
                !placement.contains(n) && (!multi_zone || !used_zones.contains(&*nodes[n].zone))
            };
            // Rotation from the group id breaks ties (P3).
            let start = usize::try_from(group).unwrap_or(0) % ids.len().max(1);
            let pick = ids[start..]
                .iter()
                .chain(&ids[..start])
                .enumerate()
                .filter(|(_, n)| eligible(n))
                .min_by_key(|(order, n)| (replicas[*n], leads[*n], *order))
                .map(|(_, n)| *n);
            let Some(pick) = pick else { break };
            *replicas.get_mut(&pick).expect("registered") += 1;
            placement.push(pick);
        }
        // A new group's preferred leader: the chosen node preferred for the fewest groups
        // (ties: the first chosen). Choosing the nodes by replica count first and the leader
        // among them second keeps replica counts within one and leader counts within two.
        if new_group
            && let Some(first) = placement
                .iter()
                .enumerate()
                .min_by_key(|(i, n)| (leads[*n], *i))
                .map(|(i, _)| i)
        {
            let leader = placement.remove(first);
            placement.insert(0, leader);
            *leads.get_mut(&leader).expect("registered") += 1;
        }
        wanted.insert(group, placement);
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(zones: &[&str]) -> BTreeMap<NodeId, NodeInfo> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let id = i as NodeId + 1;
                (
                    id,
                    NodeInfo {
                        addr: format!("127.0.0.1:{}", 7000 + id),
                        zone: (*z).to_string(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn three_zones_rf3_puts_every_group_on_all_three_with_leaders_rotating() {
        let n = nodes(&["a", "b", "c"]);
        let groups: Vec<GroupId> = (1..=9).collect();
        let p = plan(&n, &BTreeMap::new(), &groups, 3);
        let mut leads = BTreeMap::new();
        for (g, replicas) in &p {
            let set: BTreeSet<_> = replicas.iter().copied().collect();
            assert_eq!(set, BTreeSet::from([1, 2, 3]), "group {g}: {replicas:?}");
            *leads.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leads, BTreeMap::from([(1, 3), (2, 3), (3, 3)]));
    }

    #[test]
    fn single_node_rf1_and_rf3() {
        let n = nodes(&["a"]);
        for rf in [1, 3] {
            let p = plan(&n, &BTreeMap::new(), &[1, 2], rf);
            assert_eq!(p, BTreeMap::from([(1, vec![1]), (2, vec![1])]));
        }
    }

    #[test]
    fn a_full_placement_is_kept_and_a_joining_node_fills_only_empty_slots() {
        // Grown from one node (RF=3 asked, one zone so far): every group has one replica.
        let one = nodes(&["a"]);
        let p1 = plan(&one, &BTreeMap::new(), &[1, 2, 3], 3);
        assert!(p1.values().all(|p| p == &vec![1]));
        // Nodes 2 (zone b) and 3 (zone c) join: every group fills to three, node 1 stays
        // first (the preferred leader does not move).
        let three = nodes(&["a", "b", "c"]);
        let p3 = plan(&three, &p1, &[1, 2, 3], 3);
        assert!(p3.values().all(|p| p[0] == 1 && p.len() == 3), "{p3:?}");
        // Re-planning changes nothing (P2).
        assert_eq!(plan(&three, &p3, &[1, 2, 3], 3), p3);
        // A fourth node in zone a takes nothing from full groups.
        let four = nodes(&["a", "b", "c", "a"]);
        assert_eq!(plan(&four, &p3, &[1, 2, 3], 3), p3);
    }

    #[test]
    fn fewer_zones_than_rf_places_one_replica_per_zone() {
        let n = nodes(&["a", "a", "b"]);
        let p = plan(&n, &BTreeMap::new(), &[1, 2, 3, 4], 3);
        for replicas in p.values() {
            assert_eq!(replicas.len(), 2);
            let zones: BTreeSet<_> = replicas.iter().map(|r| n[r].zone.as_str()).collect();
            assert_eq!(zones.len(), 2, "{replicas:?}");
        }
        // Nodes 1 and 2 (both zone a) share zone a's replicas.
        let on = |id| p.values().filter(|r| r.contains(&id)).count();
        assert_eq!((on(1), on(2), on(3)), (2, 2, 4));
    }

    proptest! {
        // Cheap cases (no IO): many of them, so an uneven spread is found on every run.
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// P1, P3 and P4 over random clusters: distinct nodes in distinct zones, at most rf,
        /// as many as the zones allow, replica counts within one of each other for nodes of
        /// equal standing (a single zone, or one node per zone), and the same answer twice.
        #[test]
        fn placements_are_valid_and_spread(
            zone_of in proptest::collection::vec(0u8..4, 1..9),
            groups in 1u64..40,
            rf in 1usize..5,
        ) {
            let names: Vec<String> = zone_of.iter().map(|z| format!("z{z}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let n = nodes(&refs);
            let ids: Vec<GroupId> = (1..=groups).collect();
            let p = plan(&n, &BTreeMap::new(), &ids, rf);
            prop_assert_eq!(&p, &plan(&n, &BTreeMap::new(), &ids, rf));
            let zones: BTreeSet<&str> = refs.iter().copied().collect();
            let expect = if zones.len() > 1 { rf.min(zones.len()) } else { rf.min(n.len()) };
            for replicas in p.values() {
                prop_assert_eq!(replicas.len(), expect);
                let distinct: BTreeSet<_> = replicas.iter().collect();
                prop_assert_eq!(distinct.len(), replicas.len());
                if zones.len() > 1 {
                    let z: BTreeSet<_> = replicas.iter().map(|r| n[r].zone.as_str()).collect();
                    prop_assert_eq!(z.len(), replicas.len());
                }
            }
            let one_per_zone = zones.len() == n.len();
            if zones.len() == 1 || one_per_zone {
                let counts: Vec<usize> = n.keys()
                    .map(|id| p.values().filter(|r| r.contains(id)).count())
                    .collect();
                let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "replica counts {:?}", counts);
                let leads: Vec<usize> = n.keys()
                    .map(|id| p.values().filter(|r| r[0] == *id).count())
                    .collect();
                let (lo, hi) = (leads.iter().min().unwrap(), leads.iter().max().unwrap());
                prop_assert!(hi - lo <= 2, "preferred leaders {:?}", leads);
            }
        }
    }
}
