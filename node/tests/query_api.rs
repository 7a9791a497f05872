//! PromQL over Prometheus' HTTP query API on `strata dev`'s cluster: data written through one
//! node is answered by every node (the fan-out reaches each shard's leader, here or on another
//! node), instant and range queries have Prometheus' JSON shape, and bad requests get its error
//! JSON.

use serde_json::Value;
use strata_node::cluster::Cluster;
use strata_proto::api;
use strata_raft::meta::{MetaCommand, TenantLimits};
use strata_raft::types::{Command, META_GROUP};
use strata_shard::{Clock, SystemClock, Tenant};

mod common;
use common::{TempDir, body, post, request};

/// `GET path` on `addr`; the status and the JSON body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, _, text) = request(addr, &head, b"").await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, json)
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_promql_over_the_whole_cluster() {
    let dir = TempDir::new("query-api");
    let mut cluster = Cluster::start_dev(&dir.0, 4, 0).await.unwrap();
    let http = cluster.serve_http(0).await.unwrap();

    // 40 counters rising 1/s, every 10 s for 5 minutes, ending a minute ago.
    let end = (SystemClock.now_ms() / 10_000) * 10_000 - 60_000;
    let start = end - 300_000;
    let series: Vec<_> = (0..40)
        .map(|i| {
            let points: Vec<(i64, f64)> = (0..=30)
                .map(|k| (start + k * 10_000, (i * 1000 + k * 10) as f64))
                .collect();
            common::series("requests_total", &format!("host-{i}"), &points)
        })
        .collect();
    assert_eq!(post(http[&1], &body(series), "snappy").await.0, 204);

    let t = (end as f64 - 500.0) / 1000.0; // off the sample grid
    for node in [1, 2, 3] {
        let (status, json) = get(
            http[&node],
            &format!(
                "/api/v1/query?query={}&time={t}",
                encode("sum(rate(requests_total[1m]))")
            ),
        )
        .await;
        assert_eq!(status, 200, "node {node}: {json}");
        assert_eq!(json["data"]["resultType"], "vector", "{json}");
        let result = &json["data"]["result"][0];
        assert_eq!(result["metric"], serde_json::json!({}), "{json}");
        assert_eq!(result["value"][0].as_f64(), Some(t));
        let v: f64 = result["value"][1].as_str().unwrap().parse().unwrap();
        assert!(
            (v - 40.0).abs() < 1e-9,
            "node {node}: sum of 40 rates of 1/s is {v}"
        );
    }

    // Every series, through a node whose shards are mostly led elsewhere.
    let (status, json) = get(
        http[&2],
        &format!("/api/v1/query?query=requests_total&time={t}"),
    )
    .await;
    assert_eq!(
        (status, json["data"]["result"].as_array().map(Vec::len)),
        (200, Some(40)),
        "{json}"
    );

    // A range query: 5 steps of 30 s, each the same count.
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=30s",
        encode("count(requests_total)"),
        (end - 150_000) / 1000,
        (end - 30_000) / 1000
    );
    let (status, json) = get(http[&3], &path).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["resultType"], "matrix");
    let values = json["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 5, "{json}");
    assert!(values.iter().all(|v| v[1] == "40"), "{json}");

    // Prometheus' error JSON: a parse error is bad_data (400), an evaluation error execution (422).
    let (status, json) = get(http[&1], &format!("/api/v1/query?query={}", encode("sum("))).await;
    assert_eq!(
        (status, json["errorType"].as_str()),
        (400, Some("bad_data")),
        "{json}"
    );
    let (status, json) = get(
        http[&1],
        &format!(
            "/api/v1/query?query={}",
            encode("requests_total + on() requests_total")
        ),
    )
    .await;
    assert_eq!(
        (status, json["errorType"].as_str()),
        (422, Some("execution")),
        "{json}"
    );
    let (status, json) = get(
        http[&1],
        "/api/v1/query_range?query=up&start=10&end=5&step=1",
    )
    .await;
    assert_eq!(status, 400, "{json}");

    let (status, json) = get(http[&1], "/api/v1/status/buildinfo").await;
    assert_eq!((status, json["status"].as_str()), (200, Some("success")));

    // Series metadata: the series and label endpoints Grafana's editor uses.
    let range = format!("start={}&end={}", start / 1000, end / 1000);
    let (status, json) = get(
        http[&2],
        &format!(
            "/api/v1/series?match[]={}&{range}",
            encode(r#"requests_total{instance=~"host-1.?"}"#)
        ),
    )
    .await;
    assert_eq!(
        (status, json["data"].as_array().map(Vec::len)),
        (200, Some(11)),
        "{json}"
    );
    let (status, json) = get(http[&3], &format!("/api/v1/labels?{range}")).await;
    assert_eq!(
        (status, &json["data"]),
        (200, &serde_json::json!(["__name__", "instance"])),
        "{json}"
    );
    let (status, json) = get(http[&1], &format!("/api/v1/label/__name__/values?{range}")).await;
    assert_eq!(
        (status, &json["data"]),
        (200, &serde_json::json!(["requests_total"])),
        "{json}"
    );

    // The gRPC Query: the same range query, through node 2's gRPC address.
    let addr = &cluster.members()[&2].addr;
    let mut client = api::strata_client::StrataClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let reply = client
        .query(api::QueryRequest {
            query: "count(requests_total)".into(),
            start_ms: end - 150_000,
            end_ms: end - 30_000,
            step_ms: 30_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.result_type, "matrix");
    let points: Vec<(i64, f64)> = reply.series[0]
        .samples
        .iter()
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    assert_eq!(
        points,
        (0..5)
            .map(|i| (end - 150_000 + i * 30_000, 40.0))
            .collect::<Vec<_>>()
    );
    let bad = client
        .query(api::QueryRequest {
            query: "sum(".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    // A per-tenant limit from the meta group: at most 10 series per query.
    let meta_leader = cluster.wait_for_leader(META_GROUP).await.unwrap();
    let tenant = Tenant::new("anonymous").unwrap();
    let set = |limits| {
        Command::Meta(MetaCommand::SetTenantLimits {
            tenant: tenant.clone(),
            limits,
        })
    };
    let limits = TenantLimits {
        query_series_max: Some(10),
        ..TenantLimits::default()
    };
    cluster
        .node(meta_leader)
        .propose(META_GROUP, set(limits))
        .await
        .unwrap();
    // Node 3 applies the meta change a heartbeat or so after the leader.
    let mut tries = 0;
    let (status, json) = loop {
        let path = format!("/api/v1/query?query=requests_total&time={t}");
        let (status, json) = get(http[&3], &path).await;
        tries += 1;
        if status != 200 || tries == 50 {
            break (status, json);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (status, json["errorType"].as_str()),
        (422, Some("execution")),
        "{json}"
    );
    assert!(
        json["error"].as_str().unwrap().contains(
            "fetched 40 series, more than the limit of 10 for tenant anonymous (query_series_max)"
        ),
        "{json}"
    );
    // An aggregation the shards compute fetches one group, not 40 series.
    let (status, _) = get(
        http[&3],
        &format!(
            "/api/v1/query?query={}&time={t}",
            encode("sum(requests_total)")
        ),
    )
    .await;
    assert_eq!(status, 200);
    let clear = Command::Meta(MetaCommand::RemoveTenantLimits {
        tenant: tenant.clone(),
    });
    cluster
        .node(meta_leader)
        .propose(META_GROUP, clear)
        .await
        .unwrap();

    // Nodes 2 and 3 die: every shard group is down to one replica, without a quorum. A query
    // fails naming the shards, or, when a partial answer is acceptable, answers what it has
    // (here nothing) with a warning per missing shard.
    cluster.stop_node(2).await.unwrap();
    cluster.stop_node(3).await.unwrap();
    let count = encode("count(requests_total)");
    let (status, json) = get(
        http[&1],
        &format!("/api/v1/query?query={count}&time={t}&timeout=3s"),
    )
    .await;
    assert_eq!(
        (status, json["errorType"].as_str()),
        (503, Some("unavailable")),
        "{json}"
    );
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("4 of 4 shards did not answer: shard 0"),
        "{json}"
    );
    let (status, json) = get(
        http[&1],
        &format!("/api/v1/query?query={count}&time={t}&timeout=3s&partial_response=true"),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(4), "{json}");
    assert!(
        json["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("partial result: shard 0"),
        "{json}"
    );
    assert_eq!(json["data"]["result"], serde_json::json!([]), "{json}");
    cluster.shutdown().await;
}
