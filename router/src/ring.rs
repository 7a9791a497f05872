//! The consistent-hash ring: which shard a series lives on, under every ring epoch.
//!
//! ## Types
//! - [`ShardId`]: a shard of a ring with `n` shards is `0..n`. Shard `s` is Raft group
//!   [`group_of`]`(s) = s + 1`; group 0 is the meta group and never a shard.
//! - [`Ring`]: one ring shape (`shards` × `vnodes_per_shard` virtual nodes on the `u64` circle),
//!   built once and immutable. [`Ring::shard_of`] maps a [`SeriesId`] to its shard: the shard of
//!   the first virtual node at or after the series' point, wrapping around. It wraps the
//!   `hashring` crate (see "Why a wrapper" below).
//! - [`RingSet`]: the rings of every epoch of the meta group's history ([`MetaState::rings`]).
//!   Writes use [`RingSet::write_ring`] (the newest epoch); queries use
//!   [`RingSet::shards_for_query`], the union over every epoch a sample of the time range may
//!   have been routed by.
//! - [`RoutingSlack`]: how far the time a sample was routed at may lie from its timestamp; it
//!   widens a query's range before epochs are chosen.
//! - [`RingError`]: a refused shape, an empty or malformed history, a negative slack.
//!
//! ## Invariants
//! - H1. The mapping is a pure function of `(shards, vnodes_per_shard, SeriesId)`, identical on
//!   every node, platform, compiler and release. Virtual node `(shard, replica)` sits at
//!   xxh3-64 (seed 0) of the 8 bytes `shard u32 LE | replica u32 LE`; a series sits at xxh3-64
//!   of its `SeriesId` as 8 bytes `u64 LE`. Nothing else is hashed: no `Hash` impl of a std
//!   type, no `DefaultHasher`, no native-endian bytes. The golden tests pin it; a change to
//!   them re-homes every series of a running cluster and is never acceptable.
//! - H2. The ring does not depend on construction order. Virtual nodes are inserted in
//!   `(shard, replica)` order, and two virtual nodes whose points collide are resolved before
//!   insertion: the smaller `(shard, replica)` keeps the point, the other is left out. So the
//!   inner ring holds no equal keys, and neither its sort nor its binary search can pick
//!   between ties in a way that a std release could change.
//! - H3. `shard_of` always answers a shard below `shards` (every ring has ≥ 1 virtual node).
//! - H4. Growing a ring from `n` to `n + 1` shards (same `vnodes_per_shard`) moves a series
//!   only to the new shard: the old shards keep every point they had (by H2 a colliding new
//!   virtual node loses), so about `1 / (n + 1)` of series move and none moves between old
//!   shards. Likewise, raising `vnodes_per_shard` only adds points, but a share of the series
//!   about equal to the new points' share moves (64 → 128 moves 47%): pick it once.
//! - H5. Writes follow the newest epoch the router knows; a batch, once routed, is retried to
//!   the same shard even if a newer epoch appears meanwhile (the write path's duty: re-routing
//!   a retry could store its samples on two shards, and partial aggregates would count them
//!   twice).
//! - H6. A query over `from_ms..=to_ms` consults every epoch current at some meta-clock time in
//!   `from_ms - early_ms ..= to_ms + late_ms` (the [`RoutingSlack`]): every epoch a sample
//!   with a timestamp in the range may have been routed by. The epoch lifetimes are those of
//!   [`MetaState::ring_epochs_between`] (epoch `e` is current from its `since_ms` until the
//!   next epoch's, and at least for its first millisecond).
//!
//! ## Why a wrapper
//! `hashring` hashes nodes and keys through Rust's `Hash`, which is not stable across compiler
//! releases for std types (and hashes `&str` and `&[u8]` differently), and it has no virtual
//! nodes. So the ring's members are our `VNode` keys (one per shard and replica number) whose
//! `Hash` writes fixed little-endian bytes, lookups go through our `Point` key, and the ring
//! is built with `StableHashBuilder`, whose hasher is xxh3-64 over exactly the bytes written.
//! `hashring` sorts its members by `u64` point and answers the first member at or after the
//! key's point, wrapping around: classic consistent hashing, which is all we ask of it.
//!
//! ## Spread (measured by `series_spread_evenly_over_shards`, 1M random ids)
//! Load of the fullest shard over the mean: 16 shards × 128 vnodes 1.19, × 256 1.11; 64 shards
//! × 128 1.26, × 256 1.19, × 1024 1.07 (the imbalance shrinks like 1/√vnodes). A point costs
//! 16 bytes, so 256 or more per shard is a sensible default.
//!
//! ## Where samples of an old epoch are
//! A series may be on different shards under different epochs, so after a ring change its
//! samples are split between shards: the query merge must merge series by key across shards,
//! and a range function over a window that spans an epoch change cannot be evaluated per shard
//! for series that moved (query-fanout's concern; see [`RingSet::shards_for_series`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;
use strata_raft::meta::{MetaState, RING_SHARDS_MAX, RING_VNODES_PER_SHARD_MAX, RingConfig};
use strata_raft::types::{GroupId, META_GROUP};
use strata_shard::SeriesId;
use xxhash_rust::xxh3::xxh3_64;

/// Most virtual nodes one ring may have in all (shards × vnodes per shard): 4 Mi points take
/// 64 MiB in the inner ring (16 bytes each), per distinct shape in a [`RingSet`]. The meta
/// group refuses a larger ring with the same bound, so every epoch it accepts can be built.
pub use strata_raft::meta::RING_VNODES_MAX;

/// A shard of a ring with `n` shards: `0..n`. Its Raft group is [`group_of`] it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// The Raft group of a shard: `shard + 1`, because group 0 is the meta group. Groups
/// `1..=shards` are the shards of a ring with `shards` shards.
pub fn group_of(shard: ShardId) -> GroupId {
    GroupId::from(shard.0) + 1
}

/// The shard a Raft group serves; `None` for the meta group and for ids beyond any shard.
pub fn shard_of_group(group: GroupId) -> Option<ShardId> {
    if group == META_GROUP {
        return None;
    }
    u32::try_from(group - 1).ok().map(ShardId)
}

/// Why a ring or a ring history was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("ring: {shards} shards, must be 1..={max}")]
    Shards { shards: u32, max: u32 },
    #[error("ring: {vnodes_per_shard} virtual nodes per shard, must be 1..={max}")]
    VnodesPerShard { vnodes_per_shard: u32, max: u32 },
    #[error(
        "ring: {shards} shards x {vnodes_per_shard} virtual nodes = {total} virtual nodes, \
         more than {max}"
    )]
    TooManyVnodes {
        shards: u32,
        vnodes_per_shard: u32,
        total: u64,
        max: u64,
    },
    #[error("no ring is set yet: the meta group has no ring epoch")]
    NoRing,
    #[error("ring epoch {epoch}: {reason}")]
    BadHistory { epoch: u64, reason: String },
    #[error("ring epoch {epoch}: {source}")]
    Epoch {
        epoch: u64,
        #[source]
        source: Box<RingError>,
    },
    #[error("routing slack: {field} is {value} ms, must not be negative")]
    NegativeSlack { field: &'static str, value: i64 },
}

/// A virtual node: the `replica`-th point of `shard` on the ring. Its hash is fixed (H1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct VNode {
    shard: u32,
    replica: u32,
}

impl VNode {
    fn bytes(&self) -> [u8; 8] {
        let mut b = [0; 8];
        b[..4].copy_from_slice(&self.shard.to_le_bytes());
        b[4..].copy_from_slice(&self.replica.to_le_bytes());
        b
    }
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.bytes()); // H1: these 8 bytes and nothing else
    }
}

/// A series' lookup key: its `SeriesId` as 8 little-endian bytes (H1).
struct Point(SeriesId);

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.0.to_le_bytes()); // H1
    }
}

/// Longest key the ring hashes: both [`VNode`] and [`Point`] write 8 bytes.
const KEY_BYTES_MAX: usize = 8;

/// The ring's fixed hasher: xxh3-64 (seed 0) over exactly the bytes written (H1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StableHashBuilder;

impl BuildHasher for StableHashBuilder {
    type Hasher = StableHasher;

    fn build_hasher(&self) -> StableHasher {
        StableHasher::default()
    }
}

/// Collects the (at most [`KEY_BYTES_MAX`]) bytes of one key, then hashes them at once: xxh3
/// of a short input is cheaper than setting up its streaming state. Only [`VNode`] and
/// [`Point`] are ever hashed with it, and both write their bytes with one `write`; the integer
/// methods of `Hasher` (native-endian by default) are never reached.
#[derive(Default)]
struct StableHasher {
    buf: [u8; KEY_BYTES_MAX],
    len: usize,
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        assert!(
            end <= KEY_BYTES_MAX,
            "H1: ring keys are at most {KEY_BYTES_MAX} bytes, got {end}"
        );
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn finish(&self) -> u64 {
        xxh3_64(&self.buf[..self.len])
    }
}

/// The virtual nodes of a ring, in point order, each point owned once (H2): virtual nodes are
/// visited in `(shard, replica)` order and the first owner of a point keeps it, so a collision
/// is settled by the keys, never by the order of insertion.
fn vnodes_without_collisions<S: BuildHasher>(
    hasher: &S,
    shards: u32,
    vnodes_per_shard: u32,
) -> Vec<VNode> {
    let mut points: BTreeMap<u64, VNode> = BTreeMap::new();
    for shard in 0..shards {
        for replica in 0..vnodes_per_shard {
            let vnode = VNode { shard, replica };
            points.entry(hasher.hash_one(vnode)).or_insert(vnode);
        }
    }
    points.into_values().collect()
}

/// One ring shape: `shards` shards with `vnodes_per_shard` points each (H1–H4).
#[derive(Clone)]
pub struct Ring {
    shards: u32,
    vnodes_per_shard: u32,
    inner: HashRing<VNode, StableHashBuilder>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("shards", &self.shards)
            .field("vnodes_per_shard", &self.vnodes_per_shard)
            .field("points", &self.inner.len())
            .finish()
    }
}

impl Ring {
    /// Builds the ring of `shards` shards (`0..shards`) with `vnodes_per_shard` virtual nodes
    /// each. Refuses 0 of either, more than the meta group allows of either, and more than
    /// [`RING_VNODES_MAX`] points in all.
    pub fn new(shards: u32, vnodes_per_shard: u32) -> Result<Ring, RingError> {
        if !(1..=RING_SHARDS_MAX).contains(&shards) {
            return Err(RingError::Shards {
                shards,
                max: RING_SHARDS_MAX,
            });
        }
        if !(1..=RING_VNODES_PER_SHARD_MAX).contains(&vnodes_per_shard) {
            return Err(RingError::VnodesPerShard {
                vnodes_per_shard,
                max: RING_VNODES_PER_SHARD_MAX,
            });
        }
        let total = u64::from(shards) * u64::from(vnodes_per_shard);
        if total > RING_VNODES_MAX {
            return Err(RingError::TooManyVnodes {
                shards,
                vnodes_per_shard,
                total,
                max: RING_VNODES_MAX,
            });
        }
        let mut inner = HashRing::with_hasher(StableHashBuilder);
        inner.batch_add(vnodes_without_collisions(
            &StableHashBuilder,
            shards,
            vnodes_per_shard,
        ));
        debug_assert!(!inner.is_empty(), "H3");
        Ok(Ring {
            shards,
            vnodes_per_shard,
            inner,
        })
    }

    /// The ring of one epoch's configuration.
    pub fn from_config(config: &RingConfig) -> Result<Ring, RingError> {
        Ring::new(config.shards, config.vnodes_per_shard)
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    pub fn vnodes_per_shard(&self) -> u32 {
        self.vnodes_per_shard
    }

    /// The shard `id` belongs to (H1, H3).
    pub fn shard_of(&self, id: SeriesId) -> ShardId {
        let vnode = self
            .inner
            .get(&Point(id))
            .expect("H3: a ring has at least one virtual node");
        ShardId(vnode.shard)
    }

    /// Every shard of the ring, `0..shards`.
    pub fn all_shards(&self) -> impl Iterator<Item = ShardId> + use<> {
        (0..self.shards).map(ShardId)
    }
}

/// How far the meta-clock time a sample is routed at may lie from the sample's timestamp.
/// The write path must refuse samples outside these bounds, or a query may miss them (H6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingSlack {
    /// How long after its timestamp a sample may still be routed: the sample age the write
    /// path accepts (the out-of-order window) plus the clock skew between clients, routers and
    /// the meta clock. A late sample is routed by the ring current when it arrives, which may
    /// be newer than the ring current at its timestamp.
    pub late_ms: i64,
    /// How long before its timestamp a sample may be routed: the future timestamps the write
    /// path accepts, plus the clock skew, plus how long a router may keep routing by an epoch
    /// after a newer one was set (the staleness of its copy of the meta state).
    ///
    /// (`MetaState::ring_epochs_between` asks callers to widen `from_ms` by the out-of-order
    /// window; a late sample needs `to_ms` widened instead, which is `late_ms`' job here.)
    pub early_ms: i64,
}

/// The rings of every epoch of the meta group's history (H5, H6).
#[derive(Clone, Debug)]
pub struct RingSet {
    /// Epoch → (its configuration, its ring); epochs with the same shape share one ring.
    epochs: BTreeMap<u64, (RingConfig, Arc<Ring>)>,
    slack: RoutingSlack,
}

impl RingSet {
    /// Builds the rings of a ring history, as [`MetaState::rings`] keeps it: epochs `1..=n`
    /// without gaps, `since_ms` never decreasing (M7 of `strata_raft::meta`).
    pub fn new(
        history: &BTreeMap<u64, RingConfig>,
        slack: RoutingSlack,
    ) -> Result<RingSet, RingError> {
        for (field, value) in [("late_ms", slack.late_ms), ("early_ms", slack.early_ms)] {
            if value < 0 {
                return Err(RingError::NegativeSlack { field, value });
            }
        }
        if history.is_empty() {
            return Err(RingError::NoRing);
        }
        let mut shapes: BTreeMap<(u32, u32), Arc<Ring>> = BTreeMap::new();
        let mut epochs = BTreeMap::new();
        let mut previous: Option<&RingConfig> = None;
        for (i, (epoch, config)) in history.iter().enumerate() {
            let bad = |reason: String| RingError::BadHistory {
                epoch: *epoch,
                reason,
            };
            if *epoch != i as u64 + 1 {
                return Err(bad(format!(
                    "expected epoch {} (epochs count from 1)",
                    i + 1
                )));
            }
            if let Some(p) = previous
                && config.since_ms < p.since_ms
            {
                return Err(bad(format!(
                    "since_ms {} is before the previous epoch's {}",
                    config.since_ms, p.since_ms
                )));
            }
            previous = Some(config);
            let shape = (config.shards, config.vnodes_per_shard);
            let ring = match shapes.get(&shape) {
                Some(ring) => ring.clone(),
                None => {
                    let ring =
                        Arc::new(Ring::from_config(config).map_err(|e| RingError::Epoch {
                            epoch: *epoch,
                            source: Box::new(e),
                        })?);
                    shapes.insert(shape, ring.clone());
                    ring
                }
            };
            epochs.insert(*epoch, (*config, ring));
        }
        Ok(RingSet { epochs, slack })
    }

    /// The rings of a meta state's history.
    pub fn from_meta(meta: &MetaState, slack: RoutingSlack) -> Result<RingSet, RingError> {
        RingSet::new(meta.rings(), slack)
    }

    pub fn slack(&self) -> RoutingSlack {
        self.slack
    }

    /// The newest epoch: the one writes use (H5).
    pub fn write_epoch(&self) -> u64 {
        *self
            .epochs
            .keys()
            .next_back()
            .expect("a RingSet has an epoch")
    }

    /// The ring of the newest epoch: every write is routed by it (H5).
    pub fn write_ring(&self) -> &Ring {
        &self
            .epochs
            .values()
            .next_back()
            .expect("a RingSet has an epoch")
            .1
    }

    /// The ring of `epoch`, if the history has it.
    pub fn ring(&self, epoch: u64) -> Option<&Ring> {
        self.epochs.get(&epoch).map(|(_, ring)| &**ring)
    }

    /// The epochs a sample with a timestamp in `from_ms..=to_ms` may have been routed by: those
    /// current at some time in the range widened by the slack (H6). Empty if `from_ms > to_ms`.
    pub fn epochs_for_query(&self, from_ms: i64, to_ms: i64) -> Vec<u64> {
        if from_ms > to_ms {
            return Vec::new();
        }
        let from = from_ms.saturating_sub(self.slack.early_ms);
        let to = to_ms.saturating_add(self.slack.late_ms);
        let mut out = Vec::new();
        let mut iter = self.epochs.iter().peekable();
        while let Some((epoch, (config, _))) = iter.next() {
            // The same lifetime as MetaState::ring_epochs_between: current from since_ms until
            // the next epoch's since_ms, and at least for its own first millisecond.
            let until = iter
                .peek()
                .map_or(i64::MAX, |(_, (next, _))| next.since_ms)
                .max(config.since_ms.saturating_add(1));
            if config.since_ms <= to && until > from {
                out.push(*epoch);
            }
        }
        out
    }

    /// The shards a query over `from_ms..=to_ms` must ask: the union of the shards of every
    /// epoch in [`Self::epochs_for_query`] (H6).
    pub fn shards_for_query(&self, from_ms: i64, to_ms: i64) -> BTreeSet<ShardId> {
        self.epochs_for_query(from_ms, to_ms)
            .into_iter()
            .flat_map(|e| self.epochs[&e].1.all_shards())
            .collect()
    }

    /// The shards that may hold samples of one series with timestamps in `from_ms..=to_ms`:
    /// its shard under each epoch of [`Self::epochs_for_query`]. More than one means the
    /// series' samples in that range may be split between shards.
    pub fn shards_for_series(&self, id: SeriesId, from_ms: i64, to_ms: i64) -> BTreeSet<ShardId> {
        self.epochs_for_query(from_ms, to_ms)
            .into_iter()
            .map(|e| self.epochs[&e].1.shard_of(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_raft::meta::{MetaCommand, MetaResponse};
    use strata_shard::{Labels, SeriesKey, Tenant};

    /// SplitMix64: a fixed, dependency-free pseudo-random sequence for the statistical tests.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn random_ids(n: usize, seed: u64) -> Vec<SeriesId> {
        let mut rng = SplitMix64(seed);
        (0..n).map(|_| SeriesId(rng.next())).collect()
    }

    fn key(tenant: &str, pairs: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            Tenant::new(tenant).unwrap(),
            Labels::from_pairs(pairs).unwrap(),
        )
    }

    /// The series of the golden tests.
    fn golden_keys() -> Vec<SeriesKey> {
        vec![
            key("acme", &[("__name__", "up"), ("job", "node")]),
            key("acme", &[("__name__", "up"), ("job", "prometheus")]),
            key(
                "acme",
                &[
                    ("__name__", "http_requests_total"),
                    ("code", "200"),
                    ("instance", "10.0.0.1:9100"),
                    ("method", "GET"),
                ],
            ),
            key(
                "acme",
                &[
                    ("__name__", "http_requests_total"),
                    ("code", "500"),
                    ("instance", "10.0.0.1:9100"),
                    ("method", "GET"),
                ],
            ),
            key(
                "globex",
                &[("__name__", "up"), ("job", "node")], // same labels, other tenant
            ),
            key(
                "globex",
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", "0"),
                    ("mode", "idle"),
                ],
            ),
            key(
                "globex",
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", "1"),
                    ("mode", "idle"),
                ],
            ),
            key("t-1", &[("__name__", "a")]),
            key("t-1", &[("__name__", "b")]),
            key("t-1", &[("__name__", "temperature_celsius"), ("room", "ä")]),
        ]
    }

    /// Data-driven golden check (CONVENTIONS.md 11): `expected` lists, per golden key in order,
    /// its shard. On a mismatch the whole actual table is printed.
    fn check(shards: u32, vnodes_per_shard: u32, expected: &[u32]) {
        let ring = Ring::new(shards, vnodes_per_shard).unwrap();
        let keys = golden_keys();
        let actual: Vec<u32> = keys.iter().map(|k| ring.shard_of(k.id()).0).collect();
        assert_eq!(
            actual,
            expected,
            "ring {shards}x{vnodes_per_shard}: the mapping changed (H1). Actual:\n{}",
            keys.iter()
                .zip(&actual)
                .map(|(k, s)| format!("  {k} ({}) -> {s}\n", k.id()))
                .collect::<String>()
        );
    }

    /// Golden values (H1). They were written once, from the first implementation, and must
    /// never change: a different answer here re-homes series of every running cluster, whose
    /// data would then be looked for on the wrong shards. Fix the code, not these numbers.
    #[test]
    fn golden_shard_of_never_changes() {
        check(1, 1, &[0; 10]);
        check(16, 128, &[4, 8, 14, 3, 13, 11, 10, 1, 6, 10]);
        check(64, 256, &[18, 25, 60, 17, 13, 52, 46, 49, 6, 40]);
        check(3, 7, &[1, 0, 2, 0, 1, 2, 1, 2, 2, 2]);
        // And a digest of 100k lookups per shape, so every arc of the ring is pinned, including
        // the wrap-around past the last point.
        let digest = |shards, vnodes| {
            let ring = Ring::new(shards, vnodes).unwrap();
            let answers: Vec<u8> = random_ids(100_000, 4)
                .into_iter()
                .chain([SeriesId(0), SeriesId(u64::MAX)])
                .flat_map(|id| ring.shard_of(id).0.to_le_bytes())
                .collect();
            xxh3_64(&answers)
        };
        assert_eq!(
            [digest(16, 128), digest(64, 256), digest(3, 7)],
            [
                10820346316000173313,
                15000318309782074524,
                1884021569939466997
            ]
        );
    }

    /// The hash functions themselves are pinned too (H1): the points of a few virtual nodes
    /// and series ids.
    #[test]
    fn golden_points_never_change() {
        let vnode = |shard, replica| StableHashBuilder.hash_one(VNode { shard, replica });
        let point = |id| StableHashBuilder.hash_one(Point(SeriesId(id)));
        assert_eq!(
            [vnode(0, 0), vnode(1, 0), vnode(0, 1), vnode(u32::MAX, 7)],
            [
                14374147212387527897,
                3439722301264460078,
                17197929579947543131,
                10787048736279753829
            ]
        );
        assert_eq!(
            [point(0), point(1), point(u64::MAX)],
            [
                14374147212387527897,
                3439722301264460078,
                5841669975847748627
            ]
        );
        // Series points and vnode points share one space and one function, so id 0 sits
        // exactly on virtual node (0, 0): harmless, the ring only needs points to spread.
        assert_eq!(point(0), vnode(0, 0));
        // xxh3 over exactly the 8 written bytes, nothing else.
        assert_eq!(point(42), xxh3_64(&42u64.to_le_bytes()));
        assert_eq!(vnode(3, 9), xxh3_64(&[3, 0, 0, 0, 9, 0, 0, 0]));
    }

    #[test]
    fn shapes_are_validated_with_clear_errors() {
        let err = |s, v| Ring::new(s, v).unwrap_err().to_string();
        assert_eq!(err(0, 8), "ring: 0 shards, must be 1..=65536");
        assert_eq!(err(65_537, 8), "ring: 65537 shards, must be 1..=65536");
        assert_eq!(
            err(4, 0),
            "ring: 0 virtual nodes per shard, must be 1..=4096"
        );
        assert_eq!(
            err(4, 4097),
            "ring: 4097 virtual nodes per shard, must be 1..=4096"
        );
        assert_eq!(
            err(65_536, 128),
            "ring: 65536 shards x 128 virtual nodes = 8388608 virtual nodes, more than 4194304"
        );
        let ring = Ring::new(65_536, 64).unwrap(); // exactly RING_VNODES_MAX
        assert_eq!((ring.shards(), ring.vnodes_per_shard()), (65_536, 64));
        assert!(ring.inner.len() as u64 <= RING_VNODES_MAX);
    }

    #[test]
    fn groups_are_shards_plus_one_and_zero_is_meta() {
        assert_eq!(group_of(ShardId(0)), 1);
        assert_eq!(group_of(ShardId(15)), 16);
        assert_eq!(group_of(ShardId(u32::MAX)), 1 << 32);
        assert_eq!(shard_of_group(META_GROUP), None);
        assert_eq!(shard_of_group(1), Some(ShardId(0)));
        assert_eq!(shard_of_group(1 << 32), Some(ShardId(u32::MAX)));
        assert_eq!(shard_of_group((1 << 32) + 1), None);
        let ring = Ring::new(16, 8).unwrap();
        let groups: Vec<GroupId> = ring.all_shards().map(group_of).collect();
        assert_eq!(groups, (1..=16).collect::<Vec<_>>());
    }

    /// H2: the same shape built from virtual nodes inserted in any order maps every series
    /// the same way, even when points collide.
    #[test]
    fn the_mapping_does_not_depend_on_insertion_order() {
        let ring = Ring::new(16, 64).unwrap();
        let mut vnodes: Vec<VNode> = (0..16)
            .flat_map(|shard| (0..64).map(move |replica| VNode { shard, replica }))
            .collect();
        let mut rng = SplitMix64(7);
        for round in 0..4 {
            // Fisher-Yates with the fixed RNG; round 0 is reversed.
            if round == 0 {
                vnodes.reverse();
            } else {
                for i in (1..vnodes.len()).rev() {
                    vnodes.swap(i, (rng.next() % (i as u64 + 1)) as usize);
                }
            }
            let mut other = HashRing::with_hasher(StableHashBuilder);
            for v in &vnodes {
                other.add(*v); // one at a time, in this order
            }
            for id in random_ids(20_000, round) {
                assert_eq!(
                    other.get(&Point(id)).map(|v| ShardId(v.shard)),
                    Some(ring.shard_of(id)),
                    "round {round}, {id}"
                );
            }
        }
    }

    /// H2 when points collide: the smaller (shard, replica) keeps the point.
    #[test]
    fn colliding_points_go_to_the_smaller_vnode() {
        /// A hasher whose point is the first byte written (a shard's low byte for a VNode).
        #[derive(Clone, Copy, Default)]
        struct FirstByte;
        #[derive(Default)]
        struct FirstByteHasher(Option<u8>);
        impl BuildHasher for FirstByte {
            type Hasher = FirstByteHasher;
            fn build_hasher(&self) -> FirstByteHasher {
                FirstByteHasher::default()
            }
        }
        impl Hasher for FirstByteHasher {
            fn write(&mut self, bytes: &[u8]) {
                self.0 = self.0.or(bytes.first().copied());
            }
            fn finish(&self) -> u64 {
                u64::from(self.0.unwrap_or(0))
            }
        }
        let v = |shard, replica| VNode { shard, replica };
        // Every replica of a shard collides: replica 0 keeps the point.
        assert_eq!(
            vnodes_without_collisions(&FirstByte, 3, 4),
            [v(0, 0), v(1, 0), v(2, 0)]
        );
        // Shards 1 and 257 share a low byte: the smaller shard keeps the point.
        let vnodes = vnodes_without_collisions(&FirstByte, 258, 2);
        assert_eq!(vnodes.len(), 256);
        assert_eq!(vnodes[1], v(1, 0));
    }

    /// Spread: 1M random series over 16 and 64 shards. max/mean is the load of the fullest
    /// shard over the average. Measured (seed 1; deterministic, so only a change of the mapping,
    /// which the golden tests refuse, can move them): 16x128 1.189, 16x256 1.111, 64x128 1.263,
    /// 64x256 1.185, 64x1024 1.068. The bounds sit a little above.
    #[test]
    fn series_spread_evenly_over_shards() {
        let ids = random_ids(1_000_000, 1);
        let mut failures = Vec::new();
        for (shards, vnodes, bound) in [
            (16, 128, 1.22),
            (16, 256, 1.14),
            (64, 128, 1.29),
            (64, 256, 1.21),
            (64, 1024, 1.09),
        ] {
            let ring = Ring::new(shards, vnodes).unwrap();
            let mut counts = vec![0u64; shards as usize];
            for id in &ids {
                counts[ring.shard_of(*id).0 as usize] += 1;
            }
            let mean = ids.len() as f64 / f64::from(shards);
            let max = *counts.iter().max().unwrap() as f64 / mean;
            let min = *counts.iter().min().unwrap() as f64 / mean;
            println!("{shards} shards x {vnodes} vnodes: max/mean {max:.3}, min/mean {min:.3}");
            failures.push((shards, vnodes, max, bound));
        }
        failures.retain(|(_, _, max, bound)| max > bound);
        assert!(
            failures.is_empty(),
            "(shards, vnodes, max/mean, bound): {failures:?}"
        );
    }

    /// H4: adding a shard moves about 1/(n+1) of series, all of them to the new shard.
    #[test]
    fn adding_a_shard_moves_only_its_share() {
        let ids = random_ids(1_000_000, 2);
        for (n, vnodes) in [(16u32, 128u32), (63, 256)] {
            let before = Ring::new(n, vnodes).unwrap();
            let after = Ring::new(n + 1, vnodes).unwrap();
            let mut moved = 0u64;
            for id in &ids {
                let (a, b) = (before.shard_of(*id), after.shard_of(*id));
                if a != b {
                    assert_eq!(
                        b,
                        ShardId(n),
                        "H4: {id} moved {a} -> {b}, not to the new shard"
                    );
                    moved += 1;
                }
            }
            let fraction = moved as f64 / ids.len() as f64;
            let ideal = 1.0 / f64::from(n + 1);
            println!(
                "{n} -> {} shards x {vnodes}: moved {fraction:.4}, ideal {ideal:.4}",
                n + 1
            );
            assert!(
                (fraction / ideal - 1.0).abs() < 0.25,
                "moved {fraction:.4}, ideal {ideal:.4}"
            );
        }
        // Raising the vnode count only adds points: a series moves only onto a new virtual node,
        // never because an old point vanished; doubling moves about half (measured 0.471).
        let before = Ring::new(16, 64).unwrap();
        let after = Ring::new(16, 128).unwrap();
        let mut moved = 0;
        for id in &ids {
            if before.shard_of(*id) != after.shard_of(*id) {
                let owner = after.inner.get(&Point(*id)).unwrap();
                assert!(owner.replica >= 64, "{id} moved onto old point {owner:?}");
                moved += 1;
            }
        }
        let fraction = moved as f64 / ids.len() as f64;
        println!("16 shards x 64 -> 128 vnodes: moved {fraction:.4}");
        assert!((0.4..0.6).contains(&fraction), "moved {fraction:.4}");
    }

    fn config(shards: u32, vnodes_per_shard: u32, since_ms: i64) -> RingConfig {
        RingConfig {
            shards,
            vnodes_per_shard,
            since_ms,
        }
    }

    fn history(configs: &[RingConfig]) -> BTreeMap<u64, RingConfig> {
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u64 + 1, *c))
            .collect()
    }

    fn shards(set: &BTreeSet<ShardId>) -> Vec<u32> {
        set.iter().map(|s| s.0).collect()
    }

    #[test]
    fn ring_set_writes_follow_the_newest_epoch_and_queries_cover_older_ones() {
        let set = RingSet::new(
            &history(&[
                config(2, 16, 1_000),
                config(4, 16, 2_000),
                config(3, 16, 3_000),
            ]),
            RoutingSlack::default(),
        )
        .unwrap();
        assert_eq!(set.write_epoch(), 3);
        assert_eq!(set.write_ring().shards(), 3);
        assert_eq!(set.ring(2).unwrap().shards(), 4);
        assert!(set.ring(4).is_none());
        let cases: &[(i64, i64, &[u64], &[u32])] = &[
            (0, 999, &[], &[]),
            (0, 1_000, &[1], &[0, 1]),
            (1_000, 1_999, &[1], &[0, 1]),
            (1_999, 2_000, &[1, 2], &[0, 1, 2, 3]),
            (2_500, 2_600, &[2], &[0, 1, 2, 3]),
            (3_000, i64::MAX, &[3], &[0, 1, 2]),
            (i64::MIN, i64::MAX, &[1, 2, 3], &[0, 1, 2, 3]),
            (2_000, 1_000, &[], &[]), // an empty range
        ];
        for (from, to, epochs, expected) in cases {
            assert_eq!(set.epochs_for_query(*from, *to), *epochs, "{from}..={to}");
            assert_eq!(shards(&set.shards_for_query(*from, *to)), *expected);
        }
    }

    #[test]
    fn slack_widens_the_range_on_each_side() {
        let slack = RoutingSlack {
            late_ms: 300,
            early_ms: 50,
        };
        let h = history(&[config(2, 16, 1_000), config(4, 16, 2_000)]);
        let set = RingSet::new(&h, slack).unwrap();
        // A sample stamped 1_800 may arrive (and be routed by epoch 2) up to 300 ms later.
        assert_eq!(set.epochs_for_query(0, 1_699), [1]);
        assert_eq!(set.epochs_for_query(0, 1_700), [1, 2]);
        // A sample stamped 2_040 may have been routed by epoch 1 up to 50 ms before, or by a
        // router that had not yet heard of epoch 2.
        assert_eq!(set.epochs_for_query(2_040, 9_000), [1, 2]);
        assert_eq!(set.epochs_for_query(2_049, 9_000), [1, 2]);
        assert_eq!(set.epochs_for_query(2_050, 9_000), [2]);
        // Saturating at the ends of time.
        let wide = RoutingSlack {
            late_ms: i64::MAX,
            early_ms: i64::MAX,
        };
        let set = RingSet::new(&h, wide).unwrap();
        assert_eq!(set.epochs_for_query(0, 0), [1, 2]);
        assert_eq!(set.epochs_for_query(i64::MAX, i64::MAX), [1, 2]);
        assert_eq!(set.epochs_for_query(i64::MIN, i64::MIN), Vec::<u64>::new()); // to: -1 ms
    }

    /// With no slack, RingSet's epochs are exactly the meta state's ring_epochs_between.
    #[test]
    fn ring_set_epochs_match_the_meta_state() {
        let mut meta = MetaState::default();
        for (shards, vnodes_per_shard, now_ms) in [
            (16, 64, 1_000),
            (32, 64, 2_000),
            (32, 128, 1_800),
            (8, 8, 2_000),
            (8, 16, 5_000),
        ] {
            let r = meta.apply(&MetaCommand::SetRing {
                shards,
                vnodes_per_shard,
                now_ms,
            });
            assert!(matches!(r, MetaResponse::RingEpoch(_)), "{r:?}");
        }
        let set = RingSet::from_meta(&meta, RoutingSlack::default()).unwrap();
        assert_eq!(set.write_epoch(), 5);
        let times = [
            i64::MIN,
            0,
            999,
            1_000,
            1_999,
            2_000,
            2_001,
            4_999,
            5_000,
            i64::MAX,
        ];
        for from in times {
            for to in times {
                let meta_epochs: Vec<u64> = if from <= to {
                    meta.ring_epochs_between(from, to)
                        .into_iter()
                        .map(|(e, _)| e)
                        .collect()
                } else {
                    Vec::new()
                };
                assert_eq!(set.epochs_for_query(from, to), meta_epochs, "{from}..={to}");
            }
        }
    }

    #[test]
    fn a_series_is_looked_for_on_its_shard_under_each_epoch() {
        let set = RingSet::new(
            &history(&[config(4, 64, 0), config(5, 64, 1_000)]),
            RoutingSlack::default(),
        )
        .unwrap();
        let (old, new) = (set.ring(1).unwrap(), set.ring(2).unwrap());
        let mut saw_moved = false;
        for id in random_ids(1_000, 3) {
            let (a, b) = (old.shard_of(id), new.shard_of(id));
            assert_eq!(set.shards_for_series(id, 0, 999), BTreeSet::from([a]));
            assert_eq!(set.shards_for_series(id, 1_000, 2_000), BTreeSet::from([b]));
            assert_eq!(
                set.shards_for_series(id, 500, 1_500),
                BTreeSet::from([a, b])
            );
            saw_moved |= a != b;
            // Writes follow the newest epoch.
            assert_eq!(set.write_ring().shard_of(id), b);
        }
        assert!(saw_moved);
    }

    #[test]
    fn bad_histories_are_refused() {
        let err = |h: &BTreeMap<u64, RingConfig>, slack| RingSet::new(h, slack).unwrap_err();
        let ok = RoutingSlack::default();
        assert_eq!(err(&BTreeMap::new(), ok), RingError::NoRing);
        let mut gap = history(&[config(2, 2, 0)]);
        gap.insert(3, config(3, 2, 5));
        assert_eq!(
            err(&gap, ok).to_string(),
            "ring epoch 3: expected epoch 2 (epochs count from 1)"
        );
        let backwards = history(&[config(2, 2, 10), config(3, 2, 5)]);
        assert_eq!(
            err(&backwards, ok).to_string(),
            "ring epoch 2: since_ms 5 is before the previous epoch's 10"
        );
        let too_big = history(&[config(2, 2, 0), config(65_536, 4096, 5)]);
        assert_eq!(
            err(&too_big, ok).to_string(),
            "ring epoch 2: ring: 65536 shards x 4096 virtual nodes = 268435456 virtual nodes, \
             more than 4194304"
        );
        let negative = RoutingSlack {
            late_ms: -1,
            early_ms: 0,
        };
        assert_eq!(
            err(&history(&[config(1, 1, 0)]), negative).to_string(),
            "routing slack: late_ms is -1 ms, must not be negative"
        );
    }

    /// Epochs of the same shape share one ring.
    #[test]
    fn epochs_of_one_shape_share_a_ring() {
        let set = RingSet::new(
            &history(&[config(4, 8, 0), config(5, 8, 10), config(4, 8, 20)]),
            RoutingSlack::default(),
        )
        .unwrap();
        assert!(Arc::ptr_eq(&set.epochs[&1].1, &set.epochs[&3].1));
        assert!(!Arc::ptr_eq(&set.epochs[&1].1, &set.epochs[&2].1));
    }
}
