//! The inverted index of a shard: `label name = value` → postings of series references.
//!
//! ## Shape
//! Per tenant: an `all` bitmap of every series of the tenant, and
//! `name → value → postings` (`BTreeMap<String, BTreeMap<String, RoaringBitmap>>`). Each name
//! string is stored once per tenant and each value once per name, however many series carry it;
//! the per-series cost is a few bits in roaring containers. A [`SeriesRef`] is the engine's dense
//! index into its series table, which keeps roaring's containers dense.
//!
//! ## Invariants
//! - I1. A postings list, a name's value map and a tenant are never empty: `remove` drops them as
//!   soon as they empty, so label names/values listings never report ghosts and an index that had
//!   every series removed holds nothing.
//! - I2. A series appears in `all` of its tenant and in exactly one postings list per label it
//!   has. Labels with an empty value are not indexed: an empty value is the same as no label.
//! - I3. Tenants never mix: every lookup starts from one tenant's maps.
//!
//! `remove` must be called with the same tenant and labels as `insert` (the engine keeps them
//! in its series table); removing something absent is a harmless no-op.
//!
//! ## Selection algorithm (Prometheus semantics, see [`crate::matcher`])
//! A missing label has the value `""`, so matchers fall into two kinds:
//! - **positive** matchers do not match `""` (`foo="x"`, `foo!=""`, `foo=~"a.+"`): a selected
//!   series must carry `foo` with a matching value, so the matcher's set is the union of the
//!   postings of the matching values;
//! - **negative** matchers match `""` (`foo!="x"`, `foo=""`, `foo=~"a|"`, `foo!~"x"`): a
//!   series qualifies unless it carries `foo` with a value that does *not* match, so the
//!   matcher's set is `all − ⋃ postings(values failing the matcher)`.
//!
//! `select` intersects the positive sets, cheapest first, and then subtracts the failing postings
//! of each negative matcher; without positive matchers it starts from the tenant's `all`. It
//! stops as soon as the candidate set is empty.
//!
//! Finding the values that a matcher accepts (positive) or rejects (negative):
//! - `=` accepts one value and `!=` rejects one value: a direct lookup, no scan.
//! - `=~` / `!~` whose regex is a plain alternation of literals (`a|b|c`, no metacharacter at
//!   all; detected conservatively) accept / reject exactly those strings: direct lookups too.
//! - `=~".*"` matches every value, so it selects everything and is skipped without a scan.
//! - Everything else scans the values of the name and asks [`Matcher::matches`], so regex
//!   semantics live in one place.
//!
//! Positive matchers answered by lookups are evaluated before the scanning ones, so that an
//! empty intersection (an unknown metric name, say) returns before any regex runs.

use std::collections::BTreeMap;

use roaring::{MultiOps, RoaringBitmap};

use crate::matcher::{MatchOp, Matcher};
use crate::series::{Labels, Tenant};

/// Dense per-shard reference of a series (index into the engine's series table).
pub type SeriesRef = u32;

/// Postings of every value of one label name.
type Values = BTreeMap<String, RoaringBitmap>;

/// The inverted index of one shard, over all its tenants.
#[derive(Debug, Default, Clone)]
pub struct Index {
    tenants: BTreeMap<Tenant, TenantIndex>,
}

#[derive(Debug, Default, Clone)]
struct TenantIndex {
    /// Every series of the tenant; the universe negative matchers subtract from.
    all: RoaringBitmap,
    names: BTreeMap<String, Values>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Indexes series `r` of `tenant`. Inserting the same series twice is harmless.
    pub fn insert(&mut self, r: SeriesRef, tenant: &Tenant, labels: &Labels) {
        let t = self.tenants.entry(tenant.clone()).or_default();
        t.all.insert(r);
        for l in labels.iter().filter(|l| !l.value.is_empty()) {
            // Look up before inserting so that an existing name/value is not re-allocated.
            let values = match t.names.get_mut(&l.name) {
                Some(values) => values,
                None => t.names.entry(l.name.clone()).or_default(),
            };
            match values.get_mut(&l.value) {
                Some(postings) => {
                    postings.insert(r);
                }
                None => {
                    values.insert(l.value.clone(), RoaringBitmap::from_iter([r]));
                }
            }
        }
    }

    /// Removes a series; empty postings lists and empty names/tenants are dropped.
    pub fn remove(&mut self, r: SeriesRef, tenant: &Tenant, labels: &Labels) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        t.all.remove(r);
        for l in labels.iter().filter(|l| !l.value.is_empty()) {
            let Some(values) = t.names.get_mut(&l.name) else {
                continue;
            };
            if let Some(postings) = values.get_mut(&l.value) {
                postings.remove(r);
                if postings.is_empty() {
                    values.remove(&l.value);
                }
            }
            if values.is_empty() {
                t.names.remove(&l.name);
            }
        }
        if t.all.is_empty() && t.names.is_empty() {
            self.tenants.remove(tenant);
        }
    }

    /// Series of `tenant` matching ALL matchers. Semantics: a matcher that matches the empty
    /// string also selects series lacking the label; `=~".*"` selects all; with no matchers, all of the tenant's series.
    pub fn select(&self, tenant: &Tenant, matchers: &[Matcher]) -> RoaringBitmap {
        let Some(t) = self.tenants.get(tenant) else {
            return RoaringBitmap::new();
        };
        let (negative, positive): (Vec<&Matcher>, Vec<&Matcher>) = matchers
            .iter()
            .filter(|m| !selects_everything(m))
            .partition(|m| m.matches_empty());
        let (lookups, scans): (Vec<&Matcher>, Vec<&Matcher>) = positive
            .into_iter()
            .partition(|m| accepted_literals(m).is_some());

        // Lookup-answered positives: all computed (cheap), then intersected smallest first so
        // every intermediate result is as small as possible.
        let mut sets = Vec::with_capacity(lookups.len());
        for m in lookups {
            let set = t.positive_set(m);
            if set.is_empty() {
                return set;
            }
            sets.push(set);
        }
        sets.sort_by_key(|s| s.len());
        let mut sets = sets.into_iter();
        let mut result = sets.next().map(|first| sets.fold(first, |acc, s| acc & s));

        for m in scans {
            if result.as_ref().is_some_and(|r| r.is_empty()) {
                break;
            }
            let set = t.positive_set(m);
            result = Some(match result {
                Some(r) => r & set,
                None => set,
            });
        }

        let mut result = result.unwrap_or_else(|| t.all.clone());
        for m in negative {
            if result.is_empty() {
                break;
            }
            t.subtract_failing(m, &mut result);
        }
        result
    }

    /// Sorted label names present on the tenant's series (restricted to `within` if given).
    pub fn label_names(&self, tenant: &Tenant, within: Option<&RoaringBitmap>) -> Vec<String> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        t.names
            .iter()
            .filter(|(_, values)| values.values().any(|p| overlaps(p, within)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Sorted values of `name` on the tenant's series (restricted to `within` if given).
    pub fn label_values(
        &self,
        tenant: &Tenant,
        name: &str,
        within: Option<&RoaringBitmap>,
    ) -> Vec<String> {
        let Some(values) = self.tenants.get(tenant).and_then(|t| t.names.get(name)) else {
            return Vec::new();
        };
        values
            .iter()
            .filter(|(_, p)| overlaps(p, within))
            .map(|(value, _)| value.clone())
            .collect()
    }

    pub fn series_count(&self, tenant: &Tenant) -> u64 {
        self.tenants.get(tenant).map_or(0, |t| t.all.len())
    }

    /// Approximate heap bytes (for memory-per-series accounting).
    ///
    /// Walks every postings list, so it costs O(postings lists): meant for periodic accounting,
    /// not for every write. Bitmaps are counted at their serialized size (close to their
    /// in-memory size) and each map entry at the size of its key and value plus the string bytes;
    /// B-tree node headers are ignored.
    pub fn heap_bytes(&self) -> usize {
        const STRING_ENTRY: usize = std::mem::size_of::<String>();
        let bitmap = |b: &RoaringBitmap| std::mem::size_of::<RoaringBitmap>() + b.serialized_size();
        self.tenants
            .iter()
            .map(|(tenant, t)| {
                STRING_ENTRY
                    + tenant.as_str().len()
                    + bitmap(&t.all)
                    + t.names
                        .iter()
                        .map(|(name, values)| {
                            STRING_ENTRY
                                + std::mem::size_of::<Values>()
                                + name.capacity()
                                + values
                                    .iter()
                                    .map(|(v, p)| STRING_ENTRY + v.capacity() + bitmap(p))
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum()
    }
}

impl TenantIndex {
    /// Union of the postings of the values `m` accepts (for a matcher that rejects `""`).
    fn positive_set(&self, m: &Matcher) -> RoaringBitmap {
        let Some(values) = self.names.get(&m.name) else {
            return RoaringBitmap::new();
        };
        match accepted_literals(m) {
            Some(lits) => lits.iter().filter_map(|v| values.get(*v)).union(),
            None => values
                .iter()
                .filter(|(v, _)| m.matches(v))
                .map(|(_, p)| p)
                .union(),
        }
    }

    /// Removes from `result` the series carrying `m.name` with a value `m` rejects (for a
    /// matcher that accepts `""`, so series lacking the label stay).
    fn subtract_failing(&self, m: &Matcher, result: &mut RoaringBitmap) {
        let Some(values) = self.names.get(&m.name) else {
            return;
        };
        match rejected_literals(m) {
            Some(lits) => {
                for p in lits.iter().filter_map(|v| values.get(*v)) {
                    *result -= p;
                }
            }
            None => {
                for (_, p) in values.iter().filter(|(v, _)| !m.matches(v)) {
                    *result -= p;
                }
            }
        }
    }
}

/// `=~".*"` accepts every value and the missing label: it filters nothing, so it is skipped
/// instead of scanning every value of the name.
fn selects_everything(m: &Matcher) -> bool {
    m.op == MatchOp::RegexMatch && m.value == ".*"
}

/// The exact values `m` accepts, when they are a short literal list (`=`, `=~"a|b"`).
fn accepted_literals(m: &Matcher) -> Option<Vec<&str>> {
    match m.op {
        MatchOp::Equal => Some(vec![m.value.as_str()]),
        MatchOp::RegexMatch => literal_alternatives(&m.value),
        MatchOp::NotEqual | MatchOp::RegexNoMatch => None,
    }
}

/// The exact values `m` rejects, when they are a short literal list (`!=`, `!~"a|b"`).
fn rejected_literals(m: &Matcher) -> Option<Vec<&str>> {
    match m.op {
        MatchOp::NotEqual => Some(vec![m.value.as_str()]),
        MatchOp::RegexNoMatch => literal_alternatives(&m.value),
        MatchOp::Equal | MatchOp::RegexMatch => None,
    }
}

/// Splits a regex that is nothing but `|`-separated literals into those literals; `None` if it
/// has any other metacharacter. Conservative on purpose: a character that could mean anything
/// else in any position (`\ . + * ? ( ) [ ] { } ^ $`) disqualifies the regex, and the caller
/// falls back to scanning with the real regex. Without the `x` flag (which needs `(?x)`, so
/// `(`), whitespace and `#` are literals. Since matchers are anchored, `^(?s:a|b)$` matches
/// exactly the strings `a` and `b`.
fn literal_alternatives(regex: &str) -> Option<Vec<&str>> {
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$',
    ];
    if regex.contains(META) {
        return None;
    }
    Some(regex.split('|').collect())
}

/// Whether `postings` has a series inside `within` (any series when `within` is `None`).
fn overlaps(postings: &RoaringBitmap, within: Option<&RoaringBitmap>) -> bool {
    within.is_none_or(|w| !postings.is_disjoint(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{Label, LabelLimits};
    use proptest::prelude::*;

    fn tenant(id: &str) -> Tenant {
        Tenant::new(id).unwrap()
    }

    /// Labels from pairs; pairs with an empty value are dropped (no label).
    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::normalize(
            pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            &LabelLimits::default(),
        )
        .unwrap()
    }

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value).unwrap()
    }

    fn refs(b: &RoaringBitmap) -> Vec<u32> {
        b.iter().collect()
    }

    /// Series 0: foo="bar", 1: foo="baz", 2: no foo, 3: foo="bar" job="x"; all `__name__="up"`.
    fn classic() -> (Index, Tenant) {
        let t = tenant("t");
        let mut idx = Index::new();
        idx.insert(0, &t, &labels(&[("__name__", "up"), ("foo", "bar")]));
        idx.insert(1, &t, &labels(&[("__name__", "up"), ("foo", "baz")]));
        idx.insert(2, &t, &labels(&[("__name__", "up")]));
        idx.insert(
            3,
            &t,
            &labels(&[("__name__", "up"), ("foo", "bar"), ("job", "x")]),
        );
        (idx, t)
    }

    #[test]
    fn empty_equality_selects_series_without_the_label() {
        let (idx, t) = classic();
        assert_eq!(refs(&idx.select(&t, &[m(MatchOp::Equal, "foo", "")])), [2]);
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::Equal, "nope", "")])),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn not_equal_empty_selects_only_series_with_the_label() {
        let (idx, t) = classic();
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::NotEqual, "foo", "")])),
            [0, 1, 3]
        );
        assert!(
            idx.select(&t, &[m(MatchOp::NotEqual, "nope", "")])
                .is_empty()
        );
    }

    #[test]
    fn dot_star_selects_all_and_dot_plus_only_series_with_the_label() {
        let (idx, t) = classic();
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexMatch, "foo", ".*")])),
            [0, 1, 2, 3]
        );
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexMatch, "foo", ".+")])),
            [0, 1, 3]
        );
    }

    #[test]
    fn negative_matchers_include_series_without_the_label() {
        let (idx, t) = classic();
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexNoMatch, "foo", "bar")])),
            [1, 2]
        );
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::NotEqual, "foo", "bar")])),
            [1, 2]
        );
        // A regex alternative that is empty also matches the missing label.
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexMatch, "foo", "baz|")])),
            [1, 2]
        );
    }

    #[test]
    fn regexes_are_anchored_and_literal_alternations_are_exact() {
        let (idx, t) = classic();
        assert!(
            idx.select(&t, &[m(MatchOp::RegexMatch, "foo", "ba")])
                .is_empty()
        );
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexMatch, "foo", "bar|baz|zzz")])),
            [0, 1, 3]
        );
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexMatch, "foo", "ba.")])),
            [0, 1, 3]
        );
        assert_eq!(
            refs(&idx.select(&t, &[m(MatchOp::RegexNoMatch, "foo", "bar|baz")])),
            [2]
        );
    }

    #[test]
    fn matchers_combine_with_and() {
        let (idx, t) = classic();
        let sel = idx.select(
            &t,
            &[
                Matcher::equal("__name__", "up"),
                m(MatchOp::Equal, "foo", "bar"),
                m(MatchOp::NotEqual, "job", "x"),
            ],
        );
        assert_eq!(refs(&sel), [0]);
        assert!(
            idx.select(
                &t,
                &[
                    Matcher::equal("__name__", "down"),
                    m(MatchOp::Equal, "foo", "")
                ]
            )
            .is_empty()
        );
    }

    #[test]
    fn no_matchers_select_every_series_of_the_tenant_only() {
        let (mut idx, t) = classic();
        let other = tenant("other");
        idx.insert(9, &other, &labels(&[("__name__", "up"), ("foo", "bar")]));
        assert_eq!(refs(&idx.select(&t, &[])), [0, 1, 2, 3]);
        assert_eq!(refs(&idx.select(&other, &[])), [9]);
        assert_eq!(
            refs(&idx.select(&other, &[m(MatchOp::Equal, "foo", "bar")])),
            [9]
        );
        assert!(idx.select(&tenant("ghost"), &[]).is_empty());
        assert_eq!(idx.series_count(&t), 4);
        assert_eq!(idx.series_count(&other), 1);
        assert_eq!(idx.series_count(&tenant("ghost")), 0);
    }

    #[test]
    fn label_names_and_values_respect_within() {
        let (idx, t) = classic();
        assert_eq!(idx.label_names(&t, None), ["__name__", "foo", "job"]);
        assert_eq!(idx.label_values(&t, "foo", None), ["bar", "baz"]);
        assert!(idx.label_values(&t, "nope", None).is_empty());

        let within = RoaringBitmap::from_iter([1, 2]);
        assert_eq!(idx.label_names(&t, Some(&within)), ["__name__", "foo"]);
        assert_eq!(idx.label_values(&t, "foo", Some(&within)), ["baz"]);
        assert!(idx.label_values(&t, "job", Some(&within)).is_empty());

        let nothing = RoaringBitmap::new();
        assert!(idx.label_names(&t, Some(&nothing)).is_empty());
        assert!(idx.label_names(&tenant("ghost"), None).is_empty());
    }

    #[test]
    fn remove_drops_empty_postings_names_and_tenants() {
        let (mut idx, t) = classic();
        let full = idx.heap_bytes();
        idx.remove(
            3,
            &t,
            &labels(&[("__name__", "up"), ("foo", "bar"), ("job", "x")]),
        );
        assert_eq!(idx.label_names(&t, None), ["__name__", "foo"]);
        assert_eq!(idx.label_values(&t, "foo", None), ["bar", "baz"]);
        assert!(idx.heap_bytes() < full);
        idx.remove(0, &t, &labels(&[("__name__", "up"), ("foo", "bar")]));
        assert_eq!(idx.label_values(&t, "foo", None), ["baz"]);
        idx.remove(1, &t, &labels(&[("__name__", "up"), ("foo", "baz")]));
        idx.remove(2, &t, &labels(&[("__name__", "up")]));
        assert!(idx.tenants.is_empty());
        assert_eq!(idx.heap_bytes(), 0);
        // Removing again is a no-op.
        idx.remove(2, &t, &labels(&[("__name__", "up")]));
        assert!(idx.tenants.is_empty());
    }

    #[test]
    fn literal_alternatives_are_detected_conservatively() {
        assert_eq!(literal_alternatives("a|b-c|"), Some(vec!["a", "b-c", ""]));
        assert_eq!(literal_alternatives("api server"), Some(vec!["api server"]));
        for re in [
            "a.b", "a|b+", "(a|b)", "a\\|b", "[ab]", "a{2}", "^a", "a$", "a?", "a*",
        ] {
            assert_eq!(literal_alternatives(re), None, "{re}");
        }
    }

    // ---- Model-based test ----

    const NAMES: [&str; 3] = ["a", "b", "c"];
    const VALUES: [&str; 4] = ["", "x", "y", "xy"];
    const REGEXES: [&str; 10] = ["x", "x|y", ".*", ".+", "x.*", "", "y?", "x|", "xy|y", "z"];
    const TENANTS: [&str; 2] = ["ta", "tb"];

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert a new series of tenant `TENANTS[.0]` with one value index per name.
        Insert(usize, [usize; 3]),
        /// Remove the n-th live series (modulo the live count).
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..TENANTS.len(), [0..VALUES.len(), 0..VALUES.len(), 0..VALUES.len()])
                .prop_map(|(t, v)| Op::Insert(t, v)),
            1 => any::<usize>().prop_map(Op::Remove),
        ]
    }

    fn matcher() -> impl Strategy<Value = Matcher> {
        // "d" is never present on any series.
        let name = prop::sample::select(vec!["a", "b", "c", "d"]);
        let plain = (
            name.clone(),
            prop::sample::select(vec![MatchOp::Equal, MatchOp::NotEqual]),
            prop::sample::select(vec!["", "x", "y", "xy", "z"]),
        );
        let regex = (
            name,
            prop::sample::select(vec![MatchOp::RegexMatch, MatchOp::RegexNoMatch]),
            prop::sample::select(REGEXES.to_vec()),
        );
        prop_oneof![plain, regex].prop_map(|(n, op, v)| m(op, n, v))
    }

    /// Checks invariant I1 on the internals.
    fn assert_nothing_empty(idx: &Index) {
        for (t, ti) in &idx.tenants {
            assert!(!ti.all.is_empty(), "I1: empty tenant {t}");
            for (name, values) in &ti.names {
                assert!(!values.is_empty(), "I1: empty name {name}");
                for (v, p) in values {
                    assert!(!p.is_empty(), "I1: empty postings {name}={v}");
                    assert!(p.is_subset(&ti.all), "I2: {name}={v} outside all");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn select_agrees_with_brute_force(
            ops in prop::collection::vec(op(), 0..40),
            queries in prop::collection::vec(
                (0..TENANTS.len(), prop::collection::vec(matcher(), 0..4)), 1..12),
            within in prop::collection::btree_set(0u32..40, 0..10),
        ) {
            let mut idx = Index::new();
            let mut model: BTreeMap<SeriesRef, (Tenant, Labels)> = BTreeMap::new();
            for (next_ref, op) in (0..).zip(ops) {
                match op {
                    Op::Insert(t, v) => {
                        let pairs: Vec<(&str, &str)> =
                            NAMES.iter().zip(v).map(|(n, v)| (*n, VALUES[v])).collect();
                        let (t, l) = (tenant(TENANTS[t]), labels(&pairs));
                        idx.insert(next_ref, &t, &l);
                        model.insert(next_ref, (t, l));
                    }
                    Op::Remove(n) => {
                        if model.is_empty() {
                            continue;
                        }
                        let r = *model.keys().nth(n % model.len()).unwrap();
                        let (t, l) = model.remove(&r).unwrap();
                        idx.remove(r, &t, &l);
                    }
                }
                assert_nothing_empty(&idx);
            }

            let within = RoaringBitmap::from_iter(within);
            for tid in TENANTS {
                let t = tenant(tid);
                let mine: Vec<(&SeriesRef, &Labels)> =
                    model.iter().filter(|(_, (mt, _))| *mt == t).map(|(r, (_, l))| (r, l)).collect();
                prop_assert_eq!(idx.series_count(&t), mine.len() as u64);
                for w in [None, Some(&within)] {
                    let inside = |r: &SeriesRef| w.is_none_or(|w| w.contains(*r));
                    let names: std::collections::BTreeSet<String> = mine.iter()
                        .filter(|(r, _)| inside(r))
                        .flat_map(|(_, l)| l.iter().map(|l| l.name.clone()))
                        .collect();
                    prop_assert_eq!(idx.label_names(&t, w), names.into_iter().collect::<Vec<_>>());
                    for name in NAMES {
                        let values: std::collections::BTreeSet<String> = mine.iter()
                            .filter(|(r, _)| inside(r))
                            .filter_map(|(_, l)| l.get(name).map(str::to_string))
                            .collect();
                        prop_assert_eq!(
                            idx.label_values(&t, name, w),
                            values.into_iter().collect::<Vec<_>>()
                        );
                    }
                }
            }

            for (t, matchers) in queries {
                let t = tenant(TENANTS[t]);
                let expected: Vec<SeriesRef> = model
                    .iter()
                    .filter(|(_, (mt, l))| {
                        *mt == t
                            && matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
                    })
                    .map(|(r, _)| *r)
                    .collect();
                let got = refs(&idx.select(&t, &matchers));
                let shown: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
                prop_assert_eq!(got, expected, "tenant {} matchers {:?}", t, shown);
            }
        }
    }
}
