//! Self-metrics of `strata dev`'s nodes over real HTTP (`strata_node::metrics`): remote writes
//! move the request, sample and commit-latency series by exactly what they did; every node
//! shows, for every group, whether it leads, and the leader how far each follower is behind;
//! a leader transfer is counted and moves those gauges; a node's page holds its own series only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use strata_node::cluster::{Cluster, NODES, VNODES_PER_SHARD};
use strata_node::metrics::{GAUGE_IDLE, SAMPLE_PERIOD};
use strata_node::server::PREFERRED_LEADER_DELAY;
use strata_proto::prometheus as pb;
use strata_raft::types::{GroupId, NodeId};
use strata_router::ring::{Ring, group_of};
use strata_shard::{Clock, Labels, SeriesKey, SystemClock, Tenant};

const SHARDS: u32 = 2;

mod common;
use common::{TempDir, body, post, request};

/// A series `name{instance}` with value 1 at `timestamps`.
fn series(name: &str, instance: &str, timestamps: &[i64]) -> pb::TimeSeries {
    let points: Vec<(i64, f64)> = timestamps.iter().map(|&t| (t, 1.0)).collect();
    common::series(name, instance, &points)
}

/// A parsed `/metrics` page: one entry per series.
struct Page(Vec<(String, BTreeMap<String, String>, f64)>);

impl Page {
    /// The sum of the series named `name` whose labels include `labels`; `None` if there is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Page::get`], 0 when there is no such series (a counter not yet registered).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// GETs node `addr`'s `/metrics` page and parses it; checks the content type and that every
/// series has the node's label.
async fn scrape(addr: SocketAddr, node: NodeId) -> Page {
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, head, text) = request(addr, &head, b"").await;
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut page = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().expect(line);
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect(line)),
            None => (series, ""),
        };
        let labels: BTreeMap<String, String> = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").expect(line);
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        assert_eq!(
            labels.get("node").map(String::as_str),
            Some(node.to_string().as_str()),
            "node {node}'s page shows another node's series: {line}"
        );
        page.push((name.to_string(), labels, value));
    }
    Page(page)
}

/// Every node's page.
async fn scrape_all(http: &BTreeMap<NodeId, SocketAddr>) -> BTreeMap<NodeId, Page> {
    let mut pages = BTreeMap::new();
    for (&node, &addr) in http {
        pages.insert(node, scrape(addr, node).await);
    }
    pages
}

/// Why the Raft gauges of `groups` do not yet show `leaders` (group → leading node) with every
/// follower caught up; `None` once they do.
fn raft_gauges_wrong(
    pages: &BTreeMap<NodeId, Page>,
    leaders: &BTreeMap<GroupId, NodeId>,
) -> Option<String> {
    for (&group, &leader) in leaders {
        let g = group.to_string();
        for (&node, page) in pages {
            let n = node.to_string();
            let labels = [("node", n.as_str()), ("group", g.as_str())];
            let expected = if node == leader { 1.0 } else { 0.0 };
            match page.get("strata_raft_is_leader", &labels) {
                Some(v) if v == expected => {}
                other => return Some(format!("is_leader{labels:?} = {other:?}")),
            }
            if page.sum("strata_raft_leader_changes_total", &labels) < 1.0 {
                return Some(format!("no leader change seen on {labels:?}"));
            }
            if page.sum("strata_raft_term", &labels) < 1.0 {
                return Some(format!("no term on {labels:?}"));
            }
            for follower in (1..=NODES).filter(|f| *f != node) {
                let f = follower.to_string();
                let lag = page.get(
                    "strata_raft_replica_lag_entries",
                    &[("group", g.as_str()), ("follower", f.as_str())],
                );
                match (node == leader, lag) {
                    (true, Some(0.0)) | (false, None) => {}
                    (true, lag) => {
                        return Some(format!("leader {n} of {g}: lag of {f} is {lag:?}"));
                    }
                    (false, Some(lag)) => {
                        return Some(format!("non-leader {n} of {g} shows a lag of {f}: {lag}"));
                    }
                }
            }
        }
    }
    None
}

/// Waits (bounded) until the Raft gauges show `leaders` with every follower caught up.
async fn wait_for_raft_gauges(
    http: &BTreeMap<NodeId, SocketAddr>,
    leaders: &BTreeMap<GroupId, NodeId>,
    within: Duration,
) -> BTreeMap<NodeId, Page> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let pages = scrape_all(http).await;
        match raft_gauges_wrong(&pages, leaders) {
            None => return pages,
            Some(why) if tokio::time::Instant::now() >= deadline => {
                panic!("after {within:?}: {why}")
            }
            Some(_) => tokio::time::sleep(SAMPLE_PERIOD / 2).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_writes_and_show_raft_leaders_and_lag() {
    let dir = TempDir::new("metrics");
    let mut cluster = Cluster::start_dev(&dir.0, SHARDS, 0).await.unwrap();
    let http = cluster.serve_http(0).await.unwrap();
    let before = scrape(http[&1], 1).await;

    // Through node 1: `a` 3 samples, `b` 1 sample inside the accepted window and 1 three hours
    // old (outside it), `c` 2 samples beyond ±2^61 ms (refused at decode).
    let now = SystemClock.now_ms();
    let request = body(vec![
        series("m", "a", &[now - 60_000, now - 45_000, now - 30_000]),
        series("m", "b", &[now - 3 * 3_600_000, now - 60_000]),
        series("m", "c", &[1 << 62, (1 << 62) + 1]),
    ]);
    let (status, text) = post(http[&1], &request, "snappy").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("outside the accepted time window"), "{text}");
    // Sent again (a sender would not, but a retry after a 503 looks the same): duplicates.
    let (status, text) = post(http[&1], &request, "snappy").await;
    assert_eq!(status, 400, "{text}");
    // Refused whole, before decoding.
    assert_eq!(post(http[&1], b"plain text", "gzip").await.0, 415);

    let after = scrape(http[&1], 1).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let node1 = ("node", "1");
    let counts = [
        (
            "strata_samples_accepted_total",
            ("outcome", "appended"),
            4.0,
        ),
        (
            "strata_samples_accepted_total",
            ("outcome", "duplicate"),
            4.0,
        ),
        (
            "strata_samples_rejected_total",
            ("reason", "outside_window"),
            2.0,
        ),
        (
            "strata_samples_rejected_total",
            ("reason", "timestamp_out_of_range"),
            4.0,
        ),
        ("strata_remote_write_requests_total", ("code", "400"), 2.0),
        ("strata_remote_write_requests_total", ("code", "415"), 1.0),
        (
            "strata_remote_write_requests_rejected_total",
            ("reason", "unsupported_encoding"),
            1.0,
        ),
    ];
    for (name, label, expected) in counts {
        assert_eq!(
            delta(name, &[node1, label]),
            expected,
            "{name}{{{label:?}}}"
        );
    }
    // Nothing else moved: every refused sample and request is accounted for above.
    assert_eq!(delta("strata_samples_rejected_total", &[node1]), 6.0);
    assert_eq!(
        delta("strata_remote_write_requests_rejected_total", &[node1]),
        1.0
    );
    assert_eq!(delta("strata_remote_write_requests_total", &[node1]), 3.0);
    // One commit per shard batch: each request sent one batch per shard `a` and `b` map to.
    let ring = Ring::new(SHARDS, VNODES_PER_SHARD).unwrap();
    let tenant = Tenant::new("anonymous").unwrap();
    let mut groups: Vec<GroupId> = ["a", "b"]
        .iter()
        .map(|i| {
            let labels = Labels::from_pairs(&[("__name__", "m"), ("instance", i)]).unwrap();
            group_of(ring.shard_of(SeriesKey::new(tenant.clone(), labels).id()))
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for group in &groups {
        let g = group.to_string();
        let labels = [node1, ("group", g.as_str()), ("outcome", "applied")];
        assert_eq!(
            delta("strata_shard_commit_duration_seconds_count", &labels),
            2.0,
            "commits of group {g}"
        );
        let buckets = after
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == "strata_shard_commit_duration_seconds_bucket"
                    && l.get("group") == Some(&g)
                    && l.get("outcome").map(String::as_str) == Some("applied")
                    && l.get("le").map(String::as_str) == Some("+Inf")
            })
            .count();
        assert_eq!(
            buckets, 1,
            "a real histogram of group {g}, with a +Inf bucket"
        );
    }
    assert_eq!(
        delta("strata_shard_commit_duration_seconds_count", &[node1]),
        2.0 * groups.len() as f64
    );

    // Raft: every node says, for every group, whether it leads; only the leader shows lag, of
    // both followers, down to 0 once they have caught up.
    let all_groups = cluster.groups().await.unwrap();
    assert_eq!(all_groups.len(), 1 + SHARDS as usize);
    let mut leaders = BTreeMap::new();
    for &group in &all_groups {
        leaders.insert(group, cluster.wait_for_leader(group).await.unwrap());
    }
    let pages = wait_for_raft_gauges(&http, &leaders, Duration::from_secs(20)).await;

    // A leader transfer and the hand-back to the preferred leader: counted on every node, and
    // the gauges follow. The interim leader's lag series leave its page once no longer set
    // (SM4).
    let group = *all_groups.last().unwrap();
    let old = leaders[&group];
    let new = old % NODES + 1;
    let changes_before: BTreeMap<NodeId, f64> = pages
        .iter()
        .map(|(&n, p)| {
            let (n_label, g) = (n.to_string(), group.to_string());
            let labels = [("node", n_label.as_str()), ("group", g.as_str())];
            (n, p.sum("strata_raft_leader_changes_total", &labels))
        })
        .collect();
    cluster.node(old).transfer_leader(group, new).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cluster.leader_of(group) != Some(new) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group}: no transfer to {new}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The control loop hands leadership back to the group's preferred leader (the one that
    // led it first) after a while: two more leader changes every node sees.
    let deadline = tokio::time::Instant::now() + PREFERRED_LEADER_DELAY + Duration::from_secs(20);
    while cluster.leader_of(group) != Some(old) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group}: leadership did not return to its preferred leader {old}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pages = wait_for_raft_gauges(&http, &leaders, GAUGE_IDLE + Duration::from_secs(20)).await;
    for (n, page) in &pages {
        let (n_label, g) = (n.to_string(), group.to_string());
        let labels = [("node", n_label.as_str()), ("group", g.as_str())];
        assert!(
            page.sum("strata_raft_leader_changes_total", &labels) > changes_before[n],
            "node {n} did not count the transfer of group {group}"
        );
    }

    cluster.shutdown().await;
}
