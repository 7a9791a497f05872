//! The meta group (group 0): what it replicates and the pure state it computes. Storage and
//! snapshots of this state are [`crate::meta_sm`]'s business; this module does no IO.
//!
//! ## State ([`MetaState`]) and who changes which part
//! - `nodes`: node id → [`NodeInfo`] (address, zone). Changed by [`MetaCommand::SetNode`]
//!   (register or update) and [`MetaCommand::RemoveNode`].
//! - `placements`: shard group id → its replica node ids. Changed by
//!   [`MetaCommand::SetPlacement`] (the operator or the rebalancer); the meta group's own voters
//!   are its Raft membership, not a placement.
//! - `rings`: ring epoch → [`RingConfig`] (shard count, virtual nodes per shard, since when).
//!   [`MetaCommand::SetRing`] appends the next epoch; epochs are never removed, so a query can
//!   find data written under any older ring.
//! - `tenants`: tenant → [`TenantLimits`] overrides. [`MetaCommand::SetTenantLimits`],
//!   [`MetaCommand::RemoveTenantLimits`] (back to the node's defaults).
//! - `leases`: slot name → [`LeaseState`] (holder, fencing epoch, expiry). Changed by the
//!   acquire / renew / release commands of the nodes that compete for the slot.
//! - `clock_ms`: the meta clock, the largest proposer time any command carried.
//!
//! ## Lease transitions (at `t = max(command now_ms, meta clock)`; held iff `t < expires_ms`)
//! ```text
//! absent | expired  --acquire(n)-------------------> held by n, epoch + 1, expires t + ttl
//! held by n         --acquire(n) | renew(n, epoch)-> held by n, same epoch, expires t + ttl
//! held by n         --release(n, epoch)------------> expired (expires_ms = t), epoch kept
//! held by m != n    --acquire(n)-------------------> unchanged, answer Held(m's lease)
//! anything else     --renew | release--------------> unchanged, answer Lost
//! ```
//!
//! ## Invariants
//! - M1. Apply is deterministic: it reads no clock and no randomness, iterates only BTreeMaps,
//!   and time enters only inside commands (`now_ms`, from the proposer's clock). Every replica
//!   computes the same state and the same [`MetaResponse`] from the same log.
//! - M2. The meta clock never decreases: every command that carries a time raises it to
//!   `max(clock, now_ms)`, whether the command is then accepted or refused.
//! - M3. Lease expiry is evaluated at `max(now_ms, clock)`, never at the command's own time
//!   alone, so a command delayed in flight (old `now_ms`) cannot renew or resurrect a lease that
//!   has already expired at a later time some other command carried.
//! - M4. A slot's fencing epoch never decreases, and two distinct grants never share an epoch:
//!   granting a free or expired slot increments it; a release only expires the lease and a
//!   slot's record is never deleted, so the epoch survives it.
//! - M5. At most one node holds a slot at any meta time: acquiring an unexpired lease held by
//!   another node is refused ([`MetaResponse::Held`]).
//! - M6. A placement, when set, names 1..=[`REPLICAS_MAX`] distinct registered nodes in distinct
//!   zones, unless every registered node is in one zone (a single-zone cluster). Removing a node
//!   that still holds replicas, or moving a node into a zone where a replica of one of its
//!   groups already lives, is refused; so every placement always names registered nodes.
//!   (When a single-zone cluster gains a second zone, existing same-zone placements stay: moving
//!   them is the rebalancer's job, not a reason to refuse the new node.)
//! - M7. Ring epochs are 1, 2, 3, … without gaps; `since_ms` never decreases along them (it is
//!   the meta clock when the epoch was set, M2); the current ring is the highest epoch.
//! - M8. Commands are idempotent where a proposer may retry after an unknown outcome: setting
//!   the current ring again answers its epoch without a new one; removing an absent node or
//!   absent tenant limits is `Done`; re-setting a node, placement or limits to the same value
//!   changes nothing.
//!
//! ## Encoding
//! Commands, responses and the state's key-value form (what sled stores and what a snapshot
//! carries) are hand-encoded like [`crate::codec`]; decoding never panics and bad input is
//! `strata_shard::Error::Corrupt`.
//! ```text
//! meta command  tag u8: 0 set node (id u64 | addr str | zone str), 1 remove node (id u64),
//!               2 set placement (group u64 | ids u32, each u64),
//!               3 set ring (shards u32 | vnodes per shard u32 | now_ms i64),
//!               4 set tenant limits (tenant str | limits), 5 remove tenant limits (tenant str),
//!               6 acquire (slot str | holder u64 | now_ms i64 | ttl_ms i64),
//!               7 renew (slot str | holder u64 | epoch u64 | now_ms i64 | ttl_ms i64),
//!               8 release (slot str | holder u64 | epoch u64 | now_ms i64)
//! limits        fields u32 (8), each an option u64, in the order of TenantLimits' fields
//! lease         holder u64 | epoch u64 | expires_ms i64
//! meta response tag u8: 0 done, 1 ring epoch u64, 2 lease, 3 held (lease), 4 released,
//!               5 lost, 6 refused (str)
//! state key     b"c" clock | b"n" id u64 BE | b"p" group u64 BE | b"r" epoch u64 BE
//!               | b"t" tenant bytes | b"l" slot bytes           (big-endian: sled sorts them)
//! state value   clock i64 | node info | ids u32, each u64 | ring (shards u32 | vnodes u32 |
//!               since_ms i64) | limits | lease
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use strata_shard::codec::{PutExt, Reader};
use strata_shard::{Error, Result, Tenant};

use crate::codec::{get_option, get_str, put_option, put_str};
use crate::types::{GroupId, META_GROUP, NodeId, NodeInfo};

/// Most replicas a shard group may have.
pub const REPLICAS_MAX: usize = 7;
/// Most shards a ring may have.
pub const RING_SHARDS_MAX: u32 = 1 << 16;
/// Most virtual nodes per shard on the hash ring.
pub const RING_VNODES_PER_SHARD_MAX: u32 = 4096;
/// Most virtual nodes of one ring in all (shards × vnodes per shard): every router builds the
/// ring in memory (16 bytes a point), so a ring the meta group accepts must be one a router
/// can build.
pub const RING_VNODES_MAX: u64 = 1 << 22;
/// Longest lease slot name.
pub const LEASE_SLOT_BYTES_MAX: usize = 256;
/// Longest lease: a holder that dies keeps its slot at most this long.
pub const LEASE_TTL_MS_MAX: i64 = 3_600_000;
/// Longest node address or zone name.
pub const NODE_FIELD_BYTES_MAX: usize = 256;

/// Per-tenant overrides of the limits a Mimir operator expects. `None` means "no override":
/// the node's configured default applies. A limit of 0 is refused (unset it instead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Active series of the tenant across the cluster (Mimir `max_global_series_per_user`).
    pub active_series_max: Option<u64>,
    /// Active series per metric name (Mimir `max_global_series_per_metric`).
    pub series_per_metric_max: Option<u64>,
    /// Sustained ingestion rate (Mimir `ingestion_rate`).
    pub ingestion_rate_samples_per_s: Option<u64>,
    /// Burst above the rate (Mimir `ingestion_burst_size`).
    pub ingestion_burst_samples: Option<u64>,
    /// Samples one query may load (Prometheus `--query.max-samples`).
    pub query_samples_max: Option<u64>,
    /// Series one query may touch (Mimir `max_fetched_series_per_query`).
    pub query_series_max: Option<u64>,
    /// Wall time of one query (Mimir `query_timeout`).
    pub query_timeout_ms: Option<u64>,
    /// Queries of the tenant running at once.
    pub concurrent_queries_max: Option<u64>,
}

const LIMIT_FIELDS: usize = 8;

impl TenantLimits {
    fn fields(&self) -> [(&'static str, Option<u64>); LIMIT_FIELDS] {
        [
            ("active_series_max", self.active_series_max),
            ("series_per_metric_max", self.series_per_metric_max),
            (
                "ingestion_rate_samples_per_s",
                self.ingestion_rate_samples_per_s,
            ),
            ("ingestion_burst_samples", self.ingestion_burst_samples),
            ("query_samples_max", self.query_samples_max),
            ("query_series_max", self.query_series_max),
            ("query_timeout_ms", self.query_timeout_ms),
            ("concurrent_queries_max", self.concurrent_queries_max),
        ]
    }

    fn from_fields(f: [Option<u64>; LIMIT_FIELDS]) -> Self {
        TenantLimits {
            active_series_max: f[0],
            series_per_metric_max: f[1],
            ingestion_rate_samples_per_s: f[2],
            ingestion_burst_samples: f[3],
            query_samples_max: f[4],
            query_series_max: f[5],
            query_timeout_ms: f[6],
            concurrent_queries_max: f[7],
        }
    }
}

/// One epoch of the consistent-hash ring. The ring's members are shards (not nodes): each
/// shard appears `vnodes_per_shard` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    pub shards: u32,
    pub vnodes_per_shard: u32,
    /// The meta clock when this epoch was set: writes routed from then on use it (M7).
    pub since_ms: i64,
}

/// A lease on a slot. Held at meta time `t` iff `t < expires_ms` (M3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: NodeId,
    /// The fencing token: notifications carry it, and a stale one is refused downstream (M4).
    pub epoch: u64,
    pub expires_ms: i64,
}

impl LeaseState {
    pub fn is_held_at(&self, t_ms: i64) -> bool {
        t_ms < self.expires_ms
    }
}

/// What the meta group's log carries (inside [`crate::types::Command::Meta`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaCommand {
    /// Registers a node, or updates its address or zone.
    SetNode {
        id: NodeId,
        info: NodeInfo,
    },
    /// Forgets a node that holds no replicas any more.
    RemoveNode {
        id: NodeId,
    },
    /// Sets the replicas of shard group `group` (M6).
    SetPlacement {
        group: GroupId,
        replicas: Vec<NodeId>,
    },
    /// Starts a new ring epoch (M7).
    SetRing {
        shards: u32,
        vnodes_per_shard: u32,
        now_ms: i64,
    },
    SetTenantLimits {
        tenant: Tenant,
        limits: TenantLimits,
    },
    RemoveTenantLimits {
        tenant: Tenant,
    },
    /// Takes a free or expired slot, or renews one `holder` already holds.
    AcquireLease {
        slot: String,
        holder: NodeId,
        now_ms: i64,
        ttl_ms: i64,
    },
    /// Extends a lease `holder` holds under `epoch`.
    RenewLease {
        slot: String,
        holder: NodeId,
        epoch: u64,
        now_ms: i64,
        ttl_ms: i64,
    },
    /// Gives up a lease `holder` holds under `epoch`, so another node can take it at once.
    ReleaseLease {
        slot: String,
        holder: NodeId,
        epoch: u64,
        now_ms: i64,
    },
}

impl MetaCommand {
    /// The proposer's time the command carries, if any.
    pub fn now_ms(&self) -> Option<i64> {
        match self {
            MetaCommand::SetRing { now_ms, .. }
            | MetaCommand::AcquireLease { now_ms, .. }
            | MetaCommand::RenewLease { now_ms, .. }
            | MetaCommand::ReleaseLease { now_ms, .. } => Some(*now_ms),
            _ => None,
        }
    }
}

impl fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaCommand::SetNode { id, info } => write!(f, "set node {id} = {info}"),
            MetaCommand::RemoveNode { id } => write!(f, "remove node {id}"),
            MetaCommand::SetPlacement { group, replicas } => {
                write!(f, "place group {group} on {replicas:?}")
            }
            MetaCommand::SetRing {
                shards,
                vnodes_per_shard,
                now_ms,
            } => write!(
                f,
                "set ring ({shards} shards, {vnodes_per_shard} vnodes each, now={now_ms})"
            ),
            MetaCommand::SetTenantLimits { tenant, .. } => write!(f, "set limits of {tenant}"),
            MetaCommand::RemoveTenantLimits { tenant } => write!(f, "remove limits of {tenant}"),
            MetaCommand::AcquireLease {
                slot,
                holder,
                now_ms,
                ttl_ms,
            } => write!(
                f,
                "acquire {slot:?} for node {holder} (now={now_ms}, ttl={ttl_ms}ms)"
            ),
            MetaCommand::RenewLease {
                slot,
                holder,
                epoch,
                now_ms,
                ttl_ms,
            } => write!(
                f,
                "renew {slot:?} epoch {epoch} for node {holder} (now={now_ms}, ttl={ttl_ms}ms)"
            ),
            MetaCommand::ReleaseLease {
                slot,
                holder,
                epoch,
                now_ms,
            } => write!(
                f,
                "release {slot:?} epoch {epoch} by node {holder} (now={now_ms})"
            ),
        }
    }
}

/// What applying a [`MetaCommand`] did, for its proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaResponse {
    /// Applied (or already so: M8).
    Done,
    /// The current ring epoch after a `SetRing`.
    RingEpoch(u64),
    /// The proposer holds the lease (granted or renewed).
    Lease(LeaseState),
    /// Another node holds the lease; the proposer may retry after `expires_ms`.
    Held(LeaseState),
    /// The proposer's lease is released.
    Released,
    /// The proposer does not hold the lease under that epoch (expired, taken, or released):
    /// it must stop acting on the slot.
    Lost,
    /// Refused without any change but the meta clock (M2); the message names what was wrong.
    Refused(String),
}

/// A key of the state's key-value form: one entity of [`MetaState`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetaKey {
    Clock,
    Node(NodeId),
    Placement(GroupId),
    Ring(u64),
    Tenant(Tenant),
    Lease(String),
}

impl MetaKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            MetaKey::Clock => b.push(b'c'),
            MetaKey::Node(id) => {
                b.push(b'n');
                b.extend_from_slice(&id.to_be_bytes());
            }
            MetaKey::Placement(g) => {
                b.push(b'p');
                b.extend_from_slice(&g.to_be_bytes());
            }
            MetaKey::Ring(e) => {
                b.push(b'r');
                b.extend_from_slice(&e.to_be_bytes());
            }
            MetaKey::Tenant(t) => {
                b.push(b't');
                b.extend_from_slice(t.as_str().as_bytes());
            }
            MetaKey::Lease(s) => {
                b.push(b'l');
                b.extend_from_slice(s.as_bytes());
            }
        }
        b
    }

    pub fn decode(key: &[u8]) -> Result<MetaKey> {
        let bad = |reason: String| Error::corrupt("meta state key", reason);
        let id = |rest: &[u8]| -> Result<u64> {
            let bytes: [u8; 8] = rest
                .try_into()
                .map_err(|_| bad(format!("id of {} bytes, not 8", rest.len())))?;
            Ok(u64::from_be_bytes(bytes))
        };
        let text = |rest: &[u8]| -> Result<String> {
            String::from_utf8(rest.to_vec()).map_err(|_| bad("name is not UTF-8".into()))
        };
        let Some((&prefix, rest)) = key.split_first() else {
            return Err(bad("empty key".into()));
        };
        Ok(match prefix {
            b'c' if rest.is_empty() => MetaKey::Clock,
            b'n' => MetaKey::Node(id(rest)?),
            b'p' => MetaKey::Placement(id(rest)?),
            b'r' => MetaKey::Ring(id(rest)?),
            b't' => {
                MetaKey::Tenant(Tenant::new(text(rest)?).map_err(|e| bad(format!("tenant: {e}")))?)
            }
            b'l' => MetaKey::Lease(text(rest)?),
            other => return Err(bad(format!("unknown key prefix {other:#04x}"))),
        })
    }
}

/// The meta group's replicated state (see the module doc for its parts and invariants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaState {
    clock_ms: i64,
    nodes: BTreeMap<NodeId, NodeInfo>,
    placements: BTreeMap<GroupId, Vec<NodeId>>,
    rings: BTreeMap<u64, RingConfig>,
    tenants: BTreeMap<Tenant, TenantLimits>,
    leases: BTreeMap<String, LeaseState>,
}

impl Default for MetaState {
    fn default() -> Self {
        MetaState {
            // No time seen yet: any command's time is later.
            clock_ms: i64::MIN,
            nodes: BTreeMap::new(),
            placements: BTreeMap::new(),
            rings: BTreeMap::new(),
            tenants: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }
}

fn refused(reason: impl Into<String>) -> MetaResponse {
    MetaResponse::Refused(reason.into())
}

/// Two distinct nodes of `replicas` in one zone, if there are any.
fn same_zone_pair<'a>(
    replicas: &[NodeId],
    nodes: &'a BTreeMap<NodeId, NodeInfo>,
) -> Option<(NodeId, NodeId, &'a str)> {
    let mut seen: BTreeMap<&str, NodeId> = BTreeMap::new();
    for id in replicas {
        let zone = nodes.get(id)?.zone.as_str();
        if let Some(&other) = seen.get(zone) {
            return Some((other, *id, zone));
        }
        seen.insert(zone, *id);
    }
    None
}

fn zone_count(nodes: &BTreeMap<NodeId, NodeInfo>) -> usize {
    nodes
        .values()
        .map(|n| n.zone.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

impl MetaState {
    /// Applies one command (M1): the only way the state changes besides loading it whole.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        if let Some(now) = cmd.now_ms() {
            self.clock_ms = self.clock_ms.max(now); // M2
        }
        match cmd {
            MetaCommand::SetNode { id, info } => self.set_node(*id, info),
            MetaCommand::RemoveNode { id } => self.remove_node(*id),
            MetaCommand::SetPlacement { group, replicas } => self.set_placement(*group, replicas),
            MetaCommand::SetRing {
                shards,
                vnodes_per_shard,
                ..
            } => self.set_ring(*shards, *vnodes_per_shard),
            MetaCommand::SetTenantLimits { tenant, limits } => {
                if let Some((name, _)) = limits.fields().iter().find(|(_, v)| *v == Some(0)) {
                    return refused(format!(
                        "tenant {:?}: {name} is 0; leave it unset to use the default",
                        tenant.as_str()
                    ));
                }
                self.tenants.insert(tenant.clone(), *limits);
                MetaResponse::Done
            }
            MetaCommand::RemoveTenantLimits { tenant } => {
                self.tenants.remove(tenant);
                MetaResponse::Done
            }
            MetaCommand::AcquireLease {
                slot,
                holder,
                ttl_ms,
                ..
            } => self.acquire(slot, *holder, *ttl_ms),
            MetaCommand::RenewLease {
                slot,
                holder,
                epoch,
                ttl_ms,
                ..
            } => self.renew(slot, *holder, *epoch, *ttl_ms),
            MetaCommand::ReleaseLease {
                slot,
                holder,
                epoch,
                ..
            } => self.release(slot, *holder, *epoch),
        }
    }

    fn set_node(&mut self, id: NodeId, info: &NodeInfo) -> MetaResponse {
        for (what, value) in [("address", &info.addr), ("zone", &info.zone)] {
            if value.is_empty() || value.len() > NODE_FIELD_BYTES_MAX {
                return refused(format!(
                    "node {id}: {what} {value:?} must be 1..={NODE_FIELD_BYTES_MAX} bytes"
                ));
            }
        }
        let zone_changes = self.nodes.get(&id).is_some_and(|old| old.zone != info.zone);
        if zone_changes {
            let mut after = self.nodes.clone();
            after.insert(id, info.clone());
            if zone_count(&after) > 1 {
                for (group, replicas) in &self.placements {
                    if !replicas.contains(&id) {
                        continue;
                    }
                    if let Some((a, b, zone)) = same_zone_pair(replicas, &after) {
                        let other = if a == id { b } else { a };
                        return refused(format!(
                            "node {id}: moving it to zone {zone:?} would put two replicas of \
                             group {group} in that zone (with node {other}); move the replica first"
                        ));
                    }
                }
            }
        }
        self.nodes.insert(id, info.clone());
        MetaResponse::Done
    }

    fn remove_node(&mut self, id: NodeId) -> MetaResponse {
        let groups = self.groups_of(id);
        if !groups.is_empty() {
            return refused(format!(
                "node {id} still holds replicas of groups {groups:?}: move them first"
            ));
        }
        self.nodes.remove(&id);
        MetaResponse::Done
    }

    fn set_placement(&mut self, group: GroupId, replicas: &[NodeId]) -> MetaResponse {
        if group == META_GROUP {
            return refused(format!(
                "group {group} is the meta group: its voters are its Raft membership, not a placement"
            ));
        }
        if replicas.is_empty() || replicas.len() > REPLICAS_MAX {
            return refused(format!(
                "group {group}: {} replicas, must be 1..={REPLICAS_MAX}",
                replicas.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for id in replicas {
            if !seen.insert(*id) {
                return refused(format!("group {group}: node {id} is listed twice"));
            }
            if !self.nodes.contains_key(id) {
                return refused(format!("group {group}: node {id} is not registered"));
            }
        }
        let zones = zone_count(&self.nodes);
        if zones > 1
            && let Some((a, b, zone)) = same_zone_pair(replicas, &self.nodes)
        {
            return refused(format!(
                "group {group}: nodes {a} and {b} are both in zone {zone:?}; replicas must be in \
                 distinct zones while the cluster has {zones}"
            ));
        }
        self.placements.insert(group, replicas.to_vec());
        MetaResponse::Done
    }

    fn set_ring(&mut self, shards: u32, vnodes_per_shard: u32) -> MetaResponse {
        if !(1..=RING_SHARDS_MAX).contains(&shards) {
            return refused(format!(
                "ring: {shards} shards, must be 1..={RING_SHARDS_MAX}"
            ));
        }
        if !(1..=RING_VNODES_PER_SHARD_MAX).contains(&vnodes_per_shard) {
            return refused(format!(
                "ring: {vnodes_per_shard} virtual nodes per shard, must be 1..={RING_VNODES_PER_SHARD_MAX}"
            ));
        }
        let total = u64::from(shards) * u64::from(vnodes_per_shard);
        if total > RING_VNODES_MAX {
            return refused(format!(
                "ring: {shards} shards × {vnodes_per_shard} virtual nodes = {total} points, \
                 more than {RING_VNODES_MAX}"
            ));
        }
        if let Some((epoch, ring)) = self.ring()
            && ring.shards == shards
            && ring.vnodes_per_shard == vnodes_per_shard
        {
            return MetaResponse::RingEpoch(epoch); // M8
        }
        let epoch = self.ring().map_or(1, |(e, _)| e + 1);
        self.rings.insert(
            epoch,
            RingConfig {
                shards,
                vnodes_per_shard,
                since_ms: self.clock_ms,
            },
        );
        MetaResponse::RingEpoch(epoch)
    }

    fn check_lease_args(slot: &str, ttl_ms: Option<i64>) -> Option<MetaResponse> {
        if slot.is_empty() || slot.len() > LEASE_SLOT_BYTES_MAX {
            return Some(refused(format!(
                "lease slot {slot:?}: name must be 1..={LEASE_SLOT_BYTES_MAX} bytes"
            )));
        }
        if let Some(ttl) = ttl_ms
            && !(1..=LEASE_TTL_MS_MAX).contains(&ttl)
        {
            return Some(refused(format!(
                "lease slot {slot:?}: ttl {ttl}ms, must be 1..={LEASE_TTL_MS_MAX}ms"
            )));
        }
        None
    }

    fn acquire(&mut self, slot: &str, holder: NodeId, ttl_ms: i64) -> MetaResponse {
        if let Some(refusal) = Self::check_lease_args(slot, Some(ttl_ms)) {
            return refusal;
        }
        let t = self.clock_ms; // M3: already max(now_ms, clock)
        let expires_ms = t.saturating_add(ttl_ms);
        let lease = match self.leases.get(slot) {
            Some(l) if l.is_held_at(t) && l.holder != holder => return MetaResponse::Held(*l),
            Some(l) if l.is_held_at(t) => LeaseState { expires_ms, ..*l },
            // M4: a new grant, even to the previous holder, gets a new epoch.
            previous => LeaseState {
                holder,
                epoch: previous.map_or(0, |l| l.epoch) + 1,
                expires_ms,
            },
        };
        self.leases.insert(slot.to_string(), lease);
        MetaResponse::Lease(lease)
    }

    /// The lease of `slot` if `holder` holds it under `epoch` at the meta clock.
    fn held_by(&mut self, slot: &str, holder: NodeId, epoch: u64) -> Option<&mut LeaseState> {
        let t = self.clock_ms;
        self.leases
            .get_mut(slot)
            .filter(|l| l.holder == holder && l.epoch == epoch && l.is_held_at(t))
    }

    fn renew(&mut self, slot: &str, holder: NodeId, epoch: u64, ttl_ms: i64) -> MetaResponse {
        if let Some(refusal) = Self::check_lease_args(slot, Some(ttl_ms)) {
            return refusal;
        }
        let expires_ms = self.clock_ms.saturating_add(ttl_ms);
        match self.held_by(slot, holder, epoch) {
            Some(lease) => {
                lease.expires_ms = expires_ms;
                MetaResponse::Lease(*lease)
            }
            None => MetaResponse::Lost,
        }
    }

    fn release(&mut self, slot: &str, holder: NodeId, epoch: u64) -> MetaResponse {
        if let Some(refusal) = Self::check_lease_args(slot, None) {
            return refusal;
        }
        let t = self.clock_ms;
        match self.held_by(slot, holder, epoch) {
            Some(lease) => {
                lease.expires_ms = t; // expired from now on; the epoch stays (M4)
                MetaResponse::Released
            }
            None => MetaResponse::Lost,
        }
    }

    // ---- read accessors (the router, the admin API, alert evaluators) ----

    /// The meta clock: the largest proposer time seen (M2); `i64::MIN` before any.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    /// The distinct zones of the registered nodes.
    pub fn zones(&self) -> BTreeSet<&str> {
        self.nodes.values().map(|n| n.zone.as_str()).collect()
    }

    pub fn placements(&self) -> &BTreeMap<GroupId, Vec<NodeId>> {
        &self.placements
    }

    pub fn placement(&self, group: GroupId) -> Option<&[NodeId]> {
        self.placements.get(&group).map(Vec::as_slice)
    }

    /// The groups that have a replica on `node`.
    pub fn groups_of(&self, node: NodeId) -> Vec<GroupId> {
        self.placements
            .iter()
            .filter(|(_, r)| r.contains(&node))
            .map(|(g, _)| *g)
            .collect()
    }

    /// The current ring and its epoch.
    pub fn ring(&self) -> Option<(u64, &RingConfig)> {
        self.rings.last_key_value().map(|(e, r)| (*e, r))
    }

    /// Every ring epoch ever set (M7), oldest first.
    pub fn rings(&self) -> &BTreeMap<u64, RingConfig> {
        &self.rings
    }

    /// The epochs that were current at some time in `from_ms..=to_ms` (epoch `e` is current
    /// from its `since_ms` until the next epoch's): where a query over that range must look.
    /// A sample is routed by the ring current when it arrives, not by its timestamp: a late
    /// sample written under a newer epoch sits in that epoch's shard, so callers widen `to_ms`
    /// by the out-of-order window (and `from_ms` by how far ahead of the clock a sample may be
    /// accepted); `strata_router::ring::RoutingSlack` does both.
    pub fn ring_epochs_between(&self, from_ms: i64, to_ms: i64) -> Vec<(u64, RingConfig)> {
        let epochs: Vec<(u64, RingConfig)> = self.rings.iter().map(|(e, r)| (*e, *r)).collect();
        epochs
            .iter()
            .enumerate()
            .filter(|(i, (_, ring))| {
                let until = epochs
                    .get(i + 1)
                    .map_or(i64::MAX, |(_, next)| next.since_ms);
                // Current during since_ms..until; one replaced within its first millisecond
                // still counts for that millisecond.
                let until = until.max(ring.since_ms.saturating_add(1));
                ring.since_ms <= to_ms && until > from_ms
            })
            .map(|(_, e)| *e)
            .collect()
    }

    pub fn tenants(&self) -> &BTreeMap<Tenant, TenantLimits> {
        &self.tenants
    }

    pub fn tenant_limits(&self, tenant: &Tenant) -> Option<&TenantLimits> {
        self.tenants.get(tenant)
    }

    /// The record of `slot`, held or not (its epoch is the last one granted).
    pub fn lease(&self, slot: &str) -> Option<&LeaseState> {
        self.leases.get(slot)
    }

    pub fn leases(&self) -> &BTreeMap<String, LeaseState> {
        &self.leases
    }

    /// The lease of `slot` if it is held at `max(now_ms, meta clock)` (M3).
    pub fn lease_holder(&self, slot: &str, now_ms: i64) -> Option<&LeaseState> {
        let t = now_ms.max(self.clock_ms);
        self.leases.get(slot).filter(|l| l.is_held_at(t))
    }

    // ---- key-value form (sled rows and snapshot contents) ----

    /// The keys `cmd` may have changed, read after applying it: the store rewrites (or
    /// deletes, when absent) exactly these.
    pub fn touched(&self, cmd: &MetaCommand) -> Vec<MetaKey> {
        let mut keys = Vec::with_capacity(2);
        if cmd.now_ms().is_some() {
            keys.push(MetaKey::Clock);
        }
        match cmd {
            MetaCommand::SetNode { id, .. } | MetaCommand::RemoveNode { id } => {
                keys.push(MetaKey::Node(*id));
            }
            MetaCommand::SetPlacement { group, .. } => keys.push(MetaKey::Placement(*group)),
            MetaCommand::SetRing { .. } => {
                if let Some((epoch, _)) = self.ring() {
                    keys.push(MetaKey::Ring(epoch));
                }
            }
            MetaCommand::SetTenantLimits { tenant, .. }
            | MetaCommand::RemoveTenantLimits { tenant } => {
                keys.push(MetaKey::Tenant(tenant.clone()));
            }
            MetaCommand::AcquireLease { slot, .. }
            | MetaCommand::RenewLease { slot, .. }
            | MetaCommand::ReleaseLease { slot, .. } => keys.push(MetaKey::Lease(slot.clone())),
        }
        keys
    }

    /// The encoded value of `key`, or `None` if the state has no such entity.
    pub fn value(&self, key: &MetaKey) -> Option<Vec<u8>> {
        let mut b = Vec::new();
        match key {
            MetaKey::Clock => b.put_i64(self.clock_ms),
            MetaKey::Node(id) => put_node_info(&mut b, self.nodes.get(id)?),
            MetaKey::Placement(g) => put_ids(&mut b, self.placements.get(g)?),
            MetaKey::Ring(e) => put_ring(&mut b, self.rings.get(e)?),
            MetaKey::Tenant(t) => put_limits(&mut b, self.tenants.get(t)?),
            MetaKey::Lease(s) => put_lease(&mut b, self.leases.get(s)?),
        }
        Some(b)
    }

    /// Every entity as (key, value), in key order.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let keys = std::iter::once(MetaKey::Clock)
            .chain(self.nodes.keys().map(|id| MetaKey::Node(*id)))
            .chain(self.placements.keys().map(|g| MetaKey::Placement(*g)))
            .chain(self.rings.keys().map(|e| MetaKey::Ring(*e)))
            .chain(self.tenants.keys().map(|t| MetaKey::Tenant(t.clone())))
            .chain(self.leases.keys().map(|s| MetaKey::Lease(s.clone())));
        keys.filter_map(|k| Some((k.encode(), self.value(&k)?)))
            .collect()
    }

    /// Loads one (key, value) of [`Self::entries`] into the state.
    pub fn insert_entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let key = MetaKey::decode(key)?;
        let what = "meta state value";
        match key {
            MetaKey::Clock => self.clock_ms = crate::codec::decode(value, what, |r| r.i64())?,
            MetaKey::Node(id) => {
                self.nodes
                    .insert(id, crate::codec::decode(value, what, get_node_info)?);
            }
            MetaKey::Placement(g) => {
                self.placements
                    .insert(g, crate::codec::decode(value, what, get_ids)?);
            }
            MetaKey::Ring(e) => {
                self.rings
                    .insert(e, crate::codec::decode(value, what, get_ring)?);
            }
            MetaKey::Tenant(t) => {
                self.tenants
                    .insert(t, crate::codec::decode(value, what, get_limits)?);
            }
            MetaKey::Lease(s) => {
                self.leases
                    .insert(s, crate::codec::decode(value, what, get_lease)?);
            }
        }
        Ok(())
    }
}

// ---- encoding ----

fn put_node_info(b: &mut Vec<u8>, n: &NodeInfo) {
    put_str(b, &n.addr);
    put_str(b, &n.zone);
}

fn get_node_info(r: &mut Reader<'_>) -> Result<NodeInfo> {
    Ok(NodeInfo {
        addr: get_str(r)?,
        zone: get_str(r)?,
    })
}

fn put_ids(b: &mut Vec<u8>, ids: &[NodeId]) {
    b.put_u32(ids.len() as u32);
    for id in ids {
        b.put_u64(*id);
    }
}

fn get_ids(r: &mut Reader<'_>) -> Result<Vec<NodeId>> {
    let n = r.count(8)?;
    (0..n).map(|_| r.u64()).collect()
}

fn put_ring(b: &mut Vec<u8>, ring: &RingConfig) {
    b.put_u32(ring.shards);
    b.put_u32(ring.vnodes_per_shard);
    b.put_i64(ring.since_ms);
}

fn get_ring(r: &mut Reader<'_>) -> Result<RingConfig> {
    Ok(RingConfig {
        shards: r.u32()?,
        vnodes_per_shard: r.u32()?,
        since_ms: r.i64()?,
    })
}

fn put_limits(b: &mut Vec<u8>, l: &TenantLimits) {
    let fields = l.fields();
    b.put_u32(fields.len() as u32);
    for (_, v) in fields {
        put_option(b, v.as_ref(), |b, v| b.put_u64(*v));
    }
}

fn get_limits(r: &mut Reader<'_>) -> Result<TenantLimits> {
    let n = r.u32()? as usize;
    if n != LIMIT_FIELDS {
        return Err(r.corrupt(format!("tenant limits with {n} fields, not {LIMIT_FIELDS}")));
    }
    let mut f = [None; LIMIT_FIELDS];
    for v in &mut f {
        *v = get_option(r, |r| r.u64())?;
    }
    Ok(TenantLimits::from_fields(f))
}

fn put_lease(b: &mut Vec<u8>, l: &LeaseState) {
    b.put_u64(l.holder);
    b.put_u64(l.epoch);
    b.put_i64(l.expires_ms);
}

fn get_lease(r: &mut Reader<'_>) -> Result<LeaseState> {
    Ok(LeaseState {
        holder: r.u64()?,
        epoch: r.u64()?,
        expires_ms: r.i64()?,
    })
}

fn get_tenant(r: &mut Reader<'_>) -> Result<Tenant> {
    let s = get_str(r)?;
    Tenant::new(s).map_err(|e| r.corrupt(format!("tenant: {e}")))
}

pub fn put_meta_command(b: &mut Vec<u8>, c: &MetaCommand) {
    match c {
        MetaCommand::SetNode { id, info } => {
            b.put_u8(0);
            b.put_u64(*id);
            put_node_info(b, info);
        }
        MetaCommand::RemoveNode { id } => {
            b.put_u8(1);
            b.put_u64(*id);
        }
        MetaCommand::SetPlacement { group, replicas } => {
            b.put_u8(2);
            b.put_u64(*group);
            put_ids(b, replicas);
        }
        MetaCommand::SetRing {
            shards,
            vnodes_per_shard,
            now_ms,
        } => {
            b.put_u8(3);
            b.put_u32(*shards);
            b.put_u32(*vnodes_per_shard);
            b.put_i64(*now_ms);
        }
        MetaCommand::SetTenantLimits { tenant, limits } => {
            b.put_u8(4);
            put_str(b, tenant.as_str());
            put_limits(b, limits);
        }
        MetaCommand::RemoveTenantLimits { tenant } => {
            b.put_u8(5);
            put_str(b, tenant.as_str());
        }
        MetaCommand::AcquireLease {
            slot,
            holder,
            now_ms,
            ttl_ms,
        } => {
            b.put_u8(6);
            put_str(b, slot);
            b.put_u64(*holder);
            b.put_i64(*now_ms);
            b.put_i64(*ttl_ms);
        }
        MetaCommand::RenewLease {
            slot,
            holder,
            epoch,
            now_ms,
            ttl_ms,
        } => {
            b.put_u8(7);
            put_str(b, slot);
            b.put_u64(*holder);
            b.put_u64(*epoch);
            b.put_i64(*now_ms);
            b.put_i64(*ttl_ms);
        }
        MetaCommand::ReleaseLease {
            slot,
            holder,
            epoch,
            now_ms,
        } => {
            b.put_u8(8);
            put_str(b, slot);
            b.put_u64(*holder);
            b.put_u64(*epoch);
            b.put_i64(*now_ms);
        }
    }
}

pub fn get_meta_command(r: &mut Reader<'_>) -> Result<MetaCommand> {
    Ok(match r.u8()? {
        0 => MetaCommand::SetNode {
            id: r.u64()?,
            info: get_node_info(r)?,
        },
        1 => MetaCommand::RemoveNode { id: r.u64()? },
        2 => MetaCommand::SetPlacement {
            group: r.u64()?,
            replicas: get_ids(r)?,
        },
        3 => MetaCommand::SetRing {
            shards: r.u32()?,
            vnodes_per_shard: r.u32()?,
            now_ms: r.i64()?,
        },
        4 => MetaCommand::SetTenantLimits {
            tenant: get_tenant(r)?,
            limits: get_limits(r)?,
        },
        5 => MetaCommand::RemoveTenantLimits {
            tenant: get_tenant(r)?,
        },
        6 => MetaCommand::AcquireLease {
            slot: get_str(r)?,
            holder: r.u64()?,
            now_ms: r.i64()?,
            ttl_ms: r.i64()?,
        },
        7 => MetaCommand::RenewLease {
            slot: get_str(r)?,
            holder: r.u64()?,
            epoch: r.u64()?,
            now_ms: r.i64()?,
            ttl_ms: r.i64()?,
        },
        8 => MetaCommand::ReleaseLease {
            slot: get_str(r)?,
            holder: r.u64()?,
            epoch: r.u64()?,
            now_ms: r.i64()?,
        },
        tag => return Err(r.corrupt(format!("meta command tag {tag}"))),
    })
}

pub fn put_meta_response(b: &mut Vec<u8>, resp: &MetaResponse) {
    match resp {
        MetaResponse::Done => b.put_u8(0),
        MetaResponse::RingEpoch(e) => {
            b.put_u8(1);
            b.put_u64(*e);
        }
        MetaResponse::Lease(l) => {
            b.put_u8(2);
            put_lease(b, l);
        }
        MetaResponse::Held(l) => {
            b.put_u8(3);
            put_lease(b, l);
        }
        MetaResponse::Released => b.put_u8(4),
        MetaResponse::Lost => b.put_u8(5),
        MetaResponse::Refused(reason) => {
            b.put_u8(6);
            put_str(b, reason);
        }
    }
}

pub fn get_meta_response(r: &mut Reader<'_>) -> Result<MetaResponse> {
    Ok(match r.u8()? {
        0 => MetaResponse::Done,
        1 => MetaResponse::RingEpoch(r.u64()?),
        2 => MetaResponse::Lease(get_lease(r)?),
        3 => MetaResponse::Held(get_lease(r)?),
        4 => MetaResponse::Released,
        5 => MetaResponse::Lost,
        6 => MetaResponse::Refused(get_str(r)?),
        tag => return Err(r.corrupt(format!("meta response tag {tag}"))),
    })
}

/// The whole state as one value: entries u32, each key bytes | value bytes (the snapshot body).
pub fn put_meta_state(b: &mut Vec<u8>, s: &MetaState) {
    let entries = s.entries();
    b.put_u32(entries.len() as u32);
    for (k, v) in &entries {
        b.put_bytes(k);
        b.put_bytes(v);
    }
}

pub fn get_meta_state(r: &mut Reader<'_>) -> Result<MetaState> {
    let n = r.count(9)?;
    let mut s = MetaState::default();
    for _ in 0..n {
        let (k, v) = (r.bytes()?, r.bytes()?);
        s.insert_entry(k, v)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    fn node(addr: &str, zone: &str) -> NodeInfo {
        NodeInfo {
            addr: addr.into(),
            zone: zone.into(),
        }
    }

    fn acquire(slot: &str, holder: NodeId, now_ms: i64, ttl_ms: i64) -> MetaCommand {
        MetaCommand::AcquireLease {
            slot: slot.into(),
            holder,
            now_ms,
            ttl_ms,
        }
    }

    fn renew(slot: &str, holder: NodeId, epoch: u64, now_ms: i64, ttl_ms: i64) -> MetaCommand {
        MetaCommand::RenewLease {
            slot: slot.into(),
            holder,
            epoch,
            now_ms,
            ttl_ms,
        }
    }

    fn release(slot: &str, holder: NodeId, epoch: u64, now_ms: i64) -> MetaCommand {
        MetaCommand::ReleaseLease {
            slot: slot.into(),
            holder,
            epoch,
            now_ms,
        }
    }

    fn lease(holder: NodeId, epoch: u64, expires_ms: i64) -> LeaseState {
        LeaseState {
            holder,
            epoch,
            expires_ms,
        }
    }

    fn refusal(r: MetaResponse) -> String {
        match r {
            MetaResponse::Refused(reason) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A state with nodes 1..=n, node i in zone `zones[i-1]`.
    fn with_nodes(zones: &[&str]) -> MetaState {
        let mut s = MetaState::default();
        for (i, zone) in zones.iter().enumerate() {
            let id = i as NodeId + 1;
            let info = node(&format!("10.0.0.{id}:7000"), zone);
            assert_eq!(
                s.apply(&MetaCommand::SetNode { id, info }),
                MetaResponse::Done
            );
        }
        s
    }

    #[test]
    fn lease_is_granted_renewed_by_its_holder_and_refused_to_others_until_it_expires() {
        let mut s = MetaState::default();
        assert_eq!(
            s.apply(&acquire("slot-0", 1, 1_000, 100)),
            MetaResponse::Lease(lease(1, 1, 1_100))
        );
        // Acquire by the holder renews, keeping the epoch.
        assert_eq!(
            s.apply(&acquire("slot-0", 1, 1_050, 100)),
            MetaResponse::Lease(lease(1, 1, 1_150))
        );
        assert_eq!(
            s.apply(&renew("slot-0", 1, 1, 1_100, 100)),
            MetaResponse::Lease(lease(1, 1, 1_200))
        );
        // Another node is refused before expiry, and told who holds it until when.
        assert_eq!(
            s.apply(&acquire("slot-0", 2, 1_199, 100)),
            MetaResponse::Held(lease(1, 1, 1_200))
        );
        assert_eq!(s.lease_holder("slot-0", 1_199), Some(&lease(1, 1, 1_200)));
        // At expiry it takes over with the next epoch (M4).
        assert_eq!(s.lease_holder("slot-0", 1_200), None);
        assert_eq!(
            s.apply(&acquire("slot-0", 2, 1_200, 100)),
            MetaResponse::Lease(lease(2, 2, 1_300))
        );
        // The old holder's renewal and release under its epoch are refused.
        assert_eq!(
            s.apply(&renew("slot-0", 1, 1, 1_210, 100)),
            MetaResponse::Lost
        );
        assert_eq!(s.apply(&release("slot-0", 1, 1, 1_210)), MetaResponse::Lost);
        // Right holder, wrong epoch: also refused.
        assert_eq!(
            s.apply(&renew("slot-0", 2, 1, 1_210, 100)),
            MetaResponse::Lost
        );
        assert_eq!(s.lease("slot-0"), Some(&lease(2, 2, 1_300)));
        // Slots are independent.
        assert_eq!(
            s.apply(&acquire("slot-1", 1, 1_210, 100)),
            MetaResponse::Lease(lease(1, 1, 1_310))
        );
    }

    #[test]
    fn release_frees_the_slot_at_once_and_the_next_grant_has_a_new_epoch() {
        let mut s = MetaState::default();
        s.apply(&acquire("s", 1, 0, 1_000));
        assert_eq!(s.apply(&release("s", 1, 1, 10)), MetaResponse::Released);
        assert_eq!(s.lease_holder("s", 10), None);
        assert_eq!(s.apply(&release("s", 1, 1, 11)), MetaResponse::Lost);
        assert_eq!(s.apply(&renew("s", 1, 1, 11, 100)), MetaResponse::Lost);
        // Even the same node gets a new fencing token for a new grant.
        assert_eq!(
            s.apply(&acquire("s", 1, 12, 100)),
            MetaResponse::Lease(lease(1, 2, 112))
        );
        assert_eq!(
            s.apply(&acquire("s", 3, 200, 100)),
            MetaResponse::Lease(lease(3, 3, 300))
        );
    }

    #[test]
    fn a_delayed_command_with_an_old_time_cannot_resurrect_an_expired_lease() {
        let mut s = MetaState::default();
        assert_eq!(
            s.apply(&acquire("s", 1, 100, 10)),
            MetaResponse::Lease(lease(1, 1, 110))
        );
        // Another slot's traffic moves the meta clock to 200 (M2).
        s.apply(&acquire("other", 2, 200, 10));
        assert_eq!(s.clock_ms(), 200);
        // Node 1's renewal was sent at 105 but arrives now: evaluated at 200, the lease is gone.
        assert_eq!(s.apply(&renew("s", 1, 1, 105, 10)), MetaResponse::Lost);
        assert_eq!(s.apply(&release("s", 1, 1, 105)), MetaResponse::Lost);
        // A delayed acquire is a new grant (new epoch) measured from the meta clock, not a
        // renewal of the old one, and its expiry counts from 200, not from 105.
        assert_eq!(
            s.apply(&acquire("s", 1, 105, 10)),
            MetaResponse::Lease(lease(1, 2, 210))
        );
        assert_eq!(s.clock_ms(), 200);
        // A reader with a lagging clock still sees the lease expire by the meta clock.
        s.apply(&acquire("other", 2, 300, 10));
        assert_eq!(s.lease_holder("s", 150), None);
    }

    #[test]
    fn lease_arguments_are_checked() {
        let mut s = MetaState::default();
        assert!(refusal(s.apply(&acquire("", 1, 0, 10))).contains("slot \"\""));
        assert!(refusal(s.apply(&acquire("s", 1, 0, 0))).contains("ttl 0ms"));
        assert!(refusal(s.apply(&renew("s", 1, 1, 0, LEASE_TTL_MS_MAX + 1))).contains("ttl"));
        let long = "x".repeat(LEASE_SLOT_BYTES_MAX + 1);
        assert!(refusal(s.apply(&release(&long, 1, 1, 0))).contains("name must be"));
        assert!(s.leases().is_empty());
        // A refused command still advances the meta clock (M2).
        assert_eq!(s.clock_ms(), 0);
    }

    #[test]
    fn placements_need_registered_distinct_nodes_in_distinct_zones() {
        let mut s = with_nodes(&["a", "b", "c", "a"]);
        let place = |group, replicas: &[NodeId]| MetaCommand::SetPlacement {
            group,
            replicas: replicas.to_vec(),
        };
        assert_eq!(s.apply(&place(1, &[1, 2, 3])), MetaResponse::Done);
        assert_eq!(s.placement(1), Some(&[1, 2, 3][..]));
        let cases: &[(&[NodeId], &str)] = &[
            (&[1, 2, 9], "group 2: node 9 is not registered"),
            (&[1, 2, 1], "group 2: node 1 is listed twice"),
            (
                &[1, 2, 4],
                "group 2: nodes 1 and 4 are both in zone \"a\"; replicas must be in distinct \
                 zones while the cluster has 3",
            ),
            (&[], "group 2: 0 replicas, must be 1..=7"),
        ];
        for (replicas, expected) in cases {
            assert_eq!(refusal(s.apply(&place(2, replicas))), *expected);
        }
        assert_eq!(s.placement(2), None);
        assert!(refusal(s.apply(&place(META_GROUP, &[1]))).contains("meta group"));

        // Nodes that hold replicas cannot be removed, and cannot move next to a replica of
        // their group; others can.
        assert_eq!(
            refusal(s.apply(&MetaCommand::RemoveNode { id: 2 })),
            "node 2 still holds replicas of groups [1]: move them first"
        );
        assert!(
            refusal(s.apply(&MetaCommand::SetNode {
                id: 2,
                info: node("10.0.0.2:7000", "c"),
            }))
            .contains("two replicas of group 1 in that zone (with node 3)")
        );
        let moved = node("10.0.0.2:7001", "d");
        assert_eq!(
            s.apply(&MetaCommand::SetNode {
                id: 2,
                info: moved.clone()
            }),
            MetaResponse::Done
        );
        assert_eq!(s.node(2), Some(&moved));
        assert_eq!(
            s.apply(&MetaCommand::RemoveNode { id: 4 }),
            MetaResponse::Done
        );
        assert_eq!(
            s.apply(&MetaCommand::RemoveNode { id: 4 }),
            MetaResponse::Done
        );
        assert_eq!(s.groups_of(2), vec![1]);
        assert_eq!(s.zones().into_iter().collect::<Vec<_>>(), ["a", "c", "d"]);
        assert!(
            refusal(s.apply(&MetaCommand::SetNode {
                id: 5,
                info: node("", "a"),
            }))
            .contains("node 5: address \"\"")
        );
    }

    #[test]
    fn a_single_zone_cluster_may_place_replicas_in_its_one_zone() {
        let mut s = with_nodes(&["only", "only", "only"]);
        let cmd = MetaCommand::SetPlacement {
            group: 7,
            replicas: vec![3, 1, 2],
        };
        assert_eq!(s.apply(&cmd), MetaResponse::Done);
        // A second zone appearing does not invalidate it (moving it is the rebalancer's job)…
        s.apply(&MetaCommand::SetNode {
            id: 4,
            info: node("10.0.0.4:7000", "other"),
        });
        assert_eq!(s.placement(7), Some(&[3, 1, 2][..]));
        // …but new placements must now spread.
        assert!(refusal(s.apply(&cmd)).contains("both in zone \"only\""));
    }

    #[test]
    fn ring_epochs_count_up_and_keep_their_history() {
        let mut s = MetaState::default();
        assert_eq!(s.ring(), None);
        let ring = |shards, vnodes_per_shard, now_ms| MetaCommand::SetRing {
            shards,
            vnodes_per_shard,
            now_ms,
        };
        assert_eq!(s.apply(&ring(16, 64, 1_000)), MetaResponse::RingEpoch(1));
        // Setting the current ring again (a retried proposal) starts no new epoch (M8).
        assert_eq!(s.apply(&ring(16, 64, 1_500)), MetaResponse::RingEpoch(1));
        assert_eq!(s.apply(&ring(32, 64, 2_000)), MetaResponse::RingEpoch(2));
        // Each factor within its bound, the product over what a router can build: refused.
        match s.apply(&ring(4096, 4096, 2_000)) {
            MetaResponse::Refused(why) => assert!(why.contains("points"), "{why}"),
            other => panic!("a 2^24-point ring was accepted: {other:?}"),
        }
        // A proposer with a lagging clock cannot date an epoch before the previous one (M7).
        assert_eq!(s.apply(&ring(32, 128, 1_800)), MetaResponse::RingEpoch(3));
        assert!(refusal(s.apply(&ring(0, 64, 3_000))).contains("ring: 0 shards"));
        assert!(refusal(s.apply(&ring(8, 0, 3_000))).contains("0 virtual nodes"));
        let r = |shards, vnodes_per_shard, since_ms| RingConfig {
            shards,
            vnodes_per_shard,
            since_ms,
        };
        assert_eq!(s.ring(), Some((3, &r(32, 128, 2_000))));
        let history: Vec<_> = s.rings().iter().map(|(e, r)| (*e, *r)).collect();
        assert_eq!(
            history,
            [
                (1, r(16, 64, 1_000)),
                (2, r(32, 64, 2_000)),
                (3, r(32, 128, 2_000))
            ]
        );
        let epochs = |from, to| -> Vec<u64> {
            s.ring_epochs_between(from, to)
                .into_iter()
                .map(|(e, _)| e)
                .collect()
        };
        assert_eq!(epochs(0, 999), Vec::<u64>::new());
        assert_eq!(epochs(0, 1_999), [1]);
        assert_eq!(epochs(1_500, 2_500), [1, 2, 3]);
        assert_eq!(epochs(2_001, 9_000), [3]);
    }

    #[test]
    fn tenant_limits_are_set_replaced_and_removed() {
        let mut s = MetaState::default();
        let t = Tenant::new("acme").unwrap();
        let limits = TenantLimits {
            active_series_max: Some(1_000_000),
            ingestion_rate_samples_per_s: Some(50_000),
            query_timeout_ms: Some(120_000),
            ..TenantLimits::default()
        };
        let set = |limits| MetaCommand::SetTenantLimits {
            tenant: t.clone(),
            limits,
        };
        assert_eq!(s.apply(&set(limits)), MetaResponse::Done);
        assert_eq!(s.tenant_limits(&t), Some(&limits));
        let zero = TenantLimits {
            concurrent_queries_max: Some(0),
            ..limits
        };
        assert_eq!(
            refusal(s.apply(&set(zero))),
            "tenant \"acme\": concurrent_queries_max is 0; leave it unset to use the default"
        );
        assert_eq!(s.tenant_limits(&t), Some(&limits));
        let remove = MetaCommand::RemoveTenantLimits { tenant: t.clone() };
        assert_eq!(s.apply(&remove), MetaResponse::Done);
        assert_eq!(s.apply(&remove), MetaResponse::Done);
        assert_eq!(s.tenant_limits(&t), None);
    }

    fn all_commands() -> Vec<MetaCommand> {
        let limits = TenantLimits {
            active_series_max: Some(1),
            series_per_metric_max: Some(2),
            ingestion_rate_samples_per_s: Some(3),
            ingestion_burst_samples: None,
            query_samples_max: Some(5),
            query_series_max: Some(u64::MAX),
            query_timeout_ms: Some(7),
            concurrent_queries_max: Some(8),
        };
        vec![
            MetaCommand::SetNode {
                id: 3,
                info: node("h:1", "z"),
            },
            MetaCommand::RemoveNode { id: u64::MAX },
            MetaCommand::SetPlacement {
                group: 9,
                replicas: vec![1, 2, 3],
            },
            MetaCommand::SetRing {
                shards: 4,
                vnodes_per_shard: 5,
                now_ms: -6,
            },
            MetaCommand::SetTenantLimits {
                tenant: Tenant::new("t-1").unwrap(),
                limits,
            },
            MetaCommand::RemoveTenantLimits {
                tenant: Tenant::new("t-2").unwrap(),
            },
            acquire("slot/ä", 1, 2, 3),
            renew("s", 1, 2, 3, 4),
            release("s", 1, 2, i64::MIN),
        ]
    }

    #[test]
    fn commands_responses_and_state_round_trip_and_truncations_are_errors() {
        fn check<T: PartialEq + fmt::Debug>(
            v: &T,
            put: impl Fn(&mut Vec<u8>, &T),
            get: impl Fn(&mut Reader<'_>) -> Result<T> + Copy,
        ) {
            let bytes = encode(v, put);
            assert_eq!(&decode(&bytes, "test", get).unwrap(), v);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut], "test", get).is_err(), "cut at {cut}");
            }
        }
        for c in all_commands() {
            check(&c, put_meta_command, get_meta_command);
            // Through the shared command codec too (tag 4).
            let command = crate::types::Command::Meta(c);
            check(
                &command,
                crate::codec::put_command,
                crate::codec::get_command,
            );
        }
        let responses = [
            MetaResponse::Done,
            MetaResponse::RingEpoch(7),
            MetaResponse::Lease(lease(1, 2, 3)),
            MetaResponse::Held(lease(4, 5, -6)),
            MetaResponse::Released,
            MetaResponse::Lost,
            MetaResponse::Refused("no".into()),
        ];
        for r in &responses {
            check(r, put_meta_response, get_meta_response);
        }
        let mut s = with_nodes(&["a", "b"]);
        for c in all_commands() {
            s.apply(&c);
        }
        s.apply(&MetaCommand::SetPlacement {
            group: 2,
            replicas: vec![1, 2],
        });
        assert!(!s.nodes().is_empty() && !s.rings().is_empty() && !s.leases().is_empty());
        assert!(!s.tenants().is_empty() && !s.placements().is_empty());
        check(&s, put_meta_state, get_meta_state);

        // Bad tags and bad keys are errors, not panics.
        assert!(decode(&[9], "test", get_meta_command).is_err());
        assert!(decode(&[7], "test", get_meta_response).is_err());
        for key in [&b""[..], b"x", b"n123", b"c1", b"t", b"l\xff"] {
            assert!(MetaKey::decode(key).is_err(), "{key:?}");
        }
    }

    fn arb_command() -> impl Strategy<Value = MetaCommand> {
        let slot = prop::sample::select(vec!["s0", "s1"]).prop_map(String::from);
        let zone = prop::sample::select(vec!["a", "b", "c"]);
        let tenant = prop::sample::select(vec!["t0", "t1"]).prop_map(|t| Tenant::new(t).unwrap());
        let opt = || prop::option::of(0u64..3);
        prop_oneof![
            (1u64..5, zone).prop_map(|(id, zone)| MetaCommand::SetNode {
                id,
                info: node(&format!("n{id}"), zone),
            }),
            (1u64..5).prop_map(|id| MetaCommand::RemoveNode { id }),
            (0u64..3, prop::collection::vec(1u64..6, 0..4))
                .prop_map(|(group, replicas)| MetaCommand::SetPlacement { group, replicas }),
            (0u32..3, 1u32..3, 0i64..500).prop_map(|(shards, vnodes_per_shard, now_ms)| {
                MetaCommand::SetRing {
                    shards,
                    vnodes_per_shard,
                    now_ms,
                }
            }),
            (tenant.clone(), opt(), opt(), opt()).prop_map(|(tenant, a, b, c)| {
                MetaCommand::SetTenantLimits {
                    tenant,
                    limits: TenantLimits {
                        active_series_max: a,
                        query_timeout_ms: b,
                        concurrent_queries_max: c,
                        ..TenantLimits::default()
                    },
                }
            }),
            tenant.prop_map(|tenant| MetaCommand::RemoveTenantLimits { tenant }),
            (slot.clone(), 1u64..4, 0i64..500, 1i64..100)
                .prop_map(|(s, h, now, ttl)| acquire(&s, h, now, ttl)),
            (slot.clone(), 1u64..4, 0u64..4, 0i64..500, 1i64..100)
                .prop_map(|(s, h, e, now, ttl)| renew(&s, h, e, now, ttl)),
            (slot, 1u64..4, 0u64..4, 0i64..500).prop_map(|(s, h, e, now)| release(&s, h, e, now)),
        ]
    }

    proptest! {
        /// Random commands against the invariants, and against a key-value model of what the
        /// sled store keeps: writing only the touched keys must reproduce the whole state.
        #[test]
        fn apply_keeps_the_invariants_and_touched_keys_cover_every_change(
            commands in prop::collection::vec(arb_command(), 1..80),
        ) {
            let mut s = MetaState::default();
            let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = s.entries().into_iter().collect();
            // Per slot: every lease answer so far.
            let mut grants: BTreeMap<String, Vec<LeaseState>> = BTreeMap::new();
            for cmd in &commands {
                let before = s.clone();
                let clock_before = s.clock_ms();
                let response = s.apply(cmd);
                prop_assert!(s.clock_ms() >= clock_before, "M2");
                let t = s.clock_ms();
                if let MetaResponse::Refused(_) = response {
                    let mut unchanged = before.clone();
                    unchanged.clock_ms = t;
                    prop_assert_eq!(&s, &unchanged, "a refusal changes only the clock");
                }
                for key in s.touched(cmd) {
                    match s.value(&key) {
                        Some(v) => rows.insert(key.encode(), v),
                        None => rows.remove(&key.encode()),
                    };
                }
                let all: BTreeMap<Vec<u8>, Vec<u8>> = s.entries().into_iter().collect();
                prop_assert_eq!(&rows, &all);
                if let MetaResponse::Lease(l) = response {
                    let slot = lease_slot(cmd);
                    let history = grants.entry(slot.clone()).or_default();
                    if let (Some(last), Some(prev)) = (history.last(), before.lease(&slot)) {
                        if l.epoch == last.epoch {
                            // A renewal: by the holder, of a lease still held (M3).
                            prop_assert_eq!(l.holder, last.holder);
                            prop_assert!(prev.is_held_at(t), "M3");
                        } else {
                            // A new grant: a new epoch, once the previous one expired (M4, M5).
                            prop_assert!(l.epoch > last.epoch, "M4");
                            prop_assert!(!prev.is_held_at(t), "M5");
                        }
                    }
                    history.push(l);
                }
                // M6: every placement names registered nodes.
                for replicas in s.placements().values() {
                    prop_assert!(replicas.iter().all(|id| s.node(*id).is_some()), "M6");
                }
                // M7: epochs 1..=n, since_ms non-decreasing.
                let rings: Vec<_> = s.rings().iter().collect();
                for (i, (epoch, ring)) in rings.iter().enumerate() {
                    prop_assert_eq!(**epoch, i as u64 + 1);
                    if i > 0 {
                        prop_assert!(ring.since_ms >= rings[i - 1].1.since_ms, "M7");
                    }
                }
                let bytes = encode(cmd, put_meta_command);
                prop_assert_eq!(&decode(&bytes, "cmd", get_meta_command).unwrap(), cmd);
            }
            let mut from_rows = MetaState::default();
            for (k, v) in &rows {
                from_rows.insert_entry(k, v).unwrap();
            }
            prop_assert_eq!(from_rows, s);
        }
    }

    fn lease_slot(cmd: &MetaCommand) -> String {
        match cmd {
            MetaCommand::AcquireLease { slot, .. } | MetaCommand::RenewLease { slot, .. } => {
                slot.clone()
            }
            other => panic!("a lease answer to {other}"),
        }
    }
}
