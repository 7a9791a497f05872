//! Prometheus remote write into `strata dev`'s cluster over real HTTP and gRPC on loopback:
//! every sample of an accepted request is on every replica of its shard; a request with a bad
//! series gets 400 naming it while its valid series are written; a wrong encoding is refused;
//! gRPC `ReadSeries` reads a series back at its shard's leader and names the leader elsewhere.

use std::time::Duration;

use prost::Message;
use strata_node::cluster::Cluster;
use strata_proto::prometheus as pb;
use strata_raft::registry::Consistency;
use strata_router::ring::{Ring, group_of};
use strata_shard::{Clock, Labels, SeriesKey, SystemClock, Tenant};

mod common;
use common::{TempDir, body, post, series};

fn key(name: &str, instance: &str) -> SeriesKey {
    SeriesKey::new(
        Tenant::new("anonymous").unwrap(),
        Labels::from_pairs(&[("__name__", name), ("instance", instance)]).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_reaches_every_replica_of_each_series_shard() {
    let dir = TempDir::new("rw");
    let mut cluster = Cluster::start_dev(&dir.0, 4, 0).await.unwrap();
    let http = cluster.serve_http(0).await.unwrap();

    // 60 series × 5 samples through node 1, 60 more through node 3, a minute old.
    let start = SystemClock.now_ms() - 60_000;
    let batch = |from: usize| -> Vec<pb::TimeSeries> {
        (from..from + 60)
            .map(|i| {
                let points: Vec<(i64, f64)> = (0..5)
                    .map(|k| (start + k * 15_000, (i * 10) as f64 + k as f64))
                    .collect();
                series("node_load1", &format!("host-{i}"), &points)
            })
            .collect()
    };
    assert_eq!(
        post(http[&1], &body(batch(0)), "snappy").await,
        (204, String::new())
    );
    assert_eq!(
        post(http[&3], &body(batch(60)), "snappy").await,
        (204, String::new())
    );
    // Sent again (a sender's retry): still a success, nothing stored twice.
    assert_eq!(post(http[&2], &body(batch(0)), "snappy").await.0, 204);

    // A bad series among good ones: 400 naming it; the good one is written.
    let mut bad = vec![series("ok_metric", "host-x", &[(start, 1.0)])];
    bad.push(series("bad metric name", "host-y", &[(start, 2.0)]));
    let (status, text) = post(http[&2], &body(bad), "snappy").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad metric name"), "{text}");
    assert!(text.contains("the other samples were written"), "{text}");
    // Not snappy: refused before anything is decoded.
    let (status, text) = post(http[&1], b"plain text", "gzip").await;
    assert_eq!(status, 415, "{text}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let ring = Ring::new(4, strata_node::cluster::VNODES_PER_SHARD).unwrap();
    let mut checks = vec![("ok_metric".to_string(), "host-x".to_string(), 1)];
    for i in (0..120).step_by(11) {
        checks.push(("node_load1".into(), format!("host-{i}"), 5));
    }
    for (name, instance, n) in checks {
        let k = key(&name, &instance);
        let group = group_of(ring.shard_of(k.id()));
        for node in cluster.nodes() {
            let stored = node
                .read(group, Consistency::Any, |e| {
                    e.read_series(&k, 0, i64::MAX / 4)
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.len(),
                n,
                "{name}{{{instance}}} on node {}",
                node.node()
            );
        }
    }
    cluster.shutdown().await;
}

/// The gRPC `Write` takes the same body as remote write and answers with the same rules: OK
/// with counts, a retry is all duplicates, a bad series is INVALID_ARGUMENT naming it (with
/// the reply in the status details) while the valid series are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_write_answers_like_remote_write() {
    use strata_proto::api;
    let dir = TempDir::new("gw");
    let cluster = Cluster::start_dev(&dir.0, 2, 0).await.unwrap();
    let addr = cluster.members()[&2].addr.clone();
    let mut client = api::strata_client::StrataClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let start = SystemClock.now_ms() - 30_000;
    let good: Vec<pb::TimeSeries> = (0..10)
        .map(|i| {
            series(
                "grpc_metric",
                &format!("h{i}"),
                &[(start, 1.0), (start + 1, 2.0)],
            )
        })
        .collect();
    let request = |ts: Vec<pb::TimeSeries>| api::WriteRequest {
        tenant: String::new(),
        snappy_write_request: body(ts),
    };
    let reply = client
        .write(request(good.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.appended, reply.duplicates, reply.rejected),
        (20, 0, 0)
    );
    assert!(reply.ring_epoch >= 1 && reply.failed_shards.is_empty());
    let again = client.write(request(good)).await.unwrap().into_inner();
    assert_eq!((again.appended, again.duplicates), (0, 20));

    let mixed = vec![
        series("grpc_metric", "ok", &[(start, 3.0)]),
        series("bad metric name", "x", &[(start, 4.0)]),
    ];
    let status = client.write(request(mixed)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("bad metric name"), "{status:?}");
    let detail = api::WriteReply::decode(status.details()).unwrap();
    assert_eq!((detail.appended, detail.rejected), (1, 1), "{detail:?}");
    assert!(detail.errors[0].contains("bad metric name"), "{detail:?}");

    let k = key("grpc_metric", "ok");
    let ring = Ring::new(2, strata_node::cluster::VNODES_PER_SHARD).unwrap();
    let group = group_of(ring.shard_of(k.id()));
    let stored = cluster
        .node(2)
        .read(group, Consistency::Strong, |e| {
            e.read_series(&k, 0, i64::MAX / 4)
        })
        .await;
    // Node 2 may not lead the group: then the strong read names the leader; ask it.
    let stored = match stored {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let leader = cluster.wait_for_leader(group).await.unwrap();
            cluster
                .node(leader)
                .read(group, Consistency::Strong, |e| {
                    e.read_series(&k, 0, i64::MAX / 4)
                })
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(stored.len(), 1);

    // ReadSeries: strong at the shard's leader; elsewhere UNAVAILABLE naming the leader.
    let read = |labels: &[(&str, &str)], start_ms: i64, end_ms: i64| api::ReadSeriesRequest {
        tenant: String::new(),
        labels: labels
            .iter()
            .map(|(name, value)| api::Label {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        start_ms,
        end_ms,
        consistency: api::Consistency::Strong.into(),
    };
    let ok_series = [("instance", "ok"), ("__name__", "grpc_metric")];
    let connect = |id: u64| {
        let addr = cluster.members()[&id].addr.clone();
        async move {
            api::strata_client::StrataClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
        }
    };
    // Leadership may still move (the control loop spreads leaders), and a follower learns of
    // the leader from its first heartbeat: ask both until they agree on one leader.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.wait_for_leader(group).await.unwrap();
        let follower = cluster
            .members()
            .into_keys()
            .find(|id| *id != leader)
            .unwrap();
        let at_leader = connect(leader)
            .await
            .read_series(read(&ok_series, 0, i64::MAX))
            .await;
        if let Ok(reply) = &at_leader {
            let want = [api::Sample {
                timestamp_ms: start,
                value: 3.0,
            }];
            assert_eq!(reply.get_ref().samples, want);
        }
        let at_follower = connect(follower)
            .await
            .read_series(read(&ok_series, 0, i64::MAX))
            .await;
        if let Err(status) = &at_follower {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        }
        let hint = format!("read from node {leader}");
        let named = matches!(&at_follower, Err(s) if s.message().contains(&hint));
        if at_leader.is_ok() && named {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads never settled on one leader: node {leader}: {at_leader:?}; node \
             {follower}: {at_follower:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = client
        .read_series(read(&[("__name__", "bad metric name")], 0, 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("bad metric name"), "{status:?}");
    let status = client
        .read_series(read(&ok_series, 5, 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("start_ms 5 is after end_ms 1"),
        "{status:?}"
    );
    drop(client);
    cluster.shutdown().await;
}

/// Storage upkeep (the control loop's step 6): once a shard's head holds more than a block and
/// a half, its leader has it sealed into block files on every replica, each replica snapshots
/// after the seal, every sample stays readable, and the meta group, quiet for a while, is
/// snapshotted with nothing kept behind, so its early entries no longer pin WAL segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_data_is_sealed_into_blocks_and_logs_are_snapshotted() {
    use strata_node::config::SharedSections;
    use strata_raft::types::META_GROUP;
    let dir = TempDir::new("upkeep");
    let mut sections = SharedSections::default();
    sections.write.accept_past_ms = 6 * 3_600_000;
    let mut cluster = Cluster::start_dev_with(&dir.0, 2, 0, &sections)
        .await
        .unwrap();
    let http = cluster.serve_http(0).await.unwrap();

    // 20 series, one sample a minute for the last 5 h: 2.5 blocks of 2 h.
    let now = SystemClock.now_ms() / 60_000 * 60_000;
    let points: Vec<(i64, f64)> = (0..300)
        .map(|k| (now - (299 - k) * 60_000, k as f64))
        .collect();
    let batch: Vec<pb::TimeSeries> = (0..20)
        .map(|i| series("node_load1", &format!("host-{i}"), &points))
        .collect();
    assert_eq!(
        post(http[&1], &body(batch), "snappy").await,
        (204, String::new())
    );

    let ring = Ring::new(2, strata_node::cluster::VNODES_PER_SHARD).unwrap();
    let mut upkept = false;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut all = true;
        for node in cluster.nodes() {
            for shard in 0..2 {
                let group = group_of(strata_router::ring::ShardId(shard));
                let stats = node
                    .read(group, Consistency::Any, |e| e.stats())
                    .await
                    .unwrap();
                let snapshot = node.metrics(group).and_then(|m| m.snapshot);
                all &= stats.blocks > 0 && !stats.sealed_until_ms.is_negative();
                all &= snapshot.is_some();
            }
            let meta = node.metrics(META_GROUP).unwrap();
            all &= meta.purged.is_some() && meta.purged == meta.snapshot;
        }
        if all {
            upkept = true;
            break;
        }
    }
    assert!(
        upkept,
        "within 30 s every replica should have sealed blocks, a snapshot after the seal, and a \
         purged meta log"
    );
    for i in (0..20).step_by(7) {
        let k = key("node_load1", &format!("host-{i}"));
        let group = group_of(ring.shard_of(k.id()));
        for node in cluster.nodes() {
            let stored = node
                .read(group, Consistency::Any, |e| {
                    e.read_series(&k, 0, i64::MAX / 4)
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.len(), 300, "host-{i} on node {}", node.node());
        }
    }
    cluster.shutdown().await;
}
