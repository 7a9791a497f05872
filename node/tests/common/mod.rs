//! Helpers the node's integration tests share: a temporary directory, remote-write bodies,
//! and a raw HTTP/1.1 request (no client library: the tests see exactly the bytes a sender
//! would send). Each test binary uses a subset.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use prost::Message;
use strata_proto::prometheus as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod prom;

/// A directory under the system temp dir, unique per test name and process, created empty
/// and removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("strata-{test}-{}", std::process::id()));
        // Left over only if an earlier process with the same id was killed mid-test.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A remote-write series `name{instance="…"}` with `(timestamp ms, value)` points.
pub fn series(name: &str, instance: &str, points: &[(i64, f64)]) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: vec![
            pb::Label {
                name: "__name__".into(),
                value: name.into(),
            },
            pb::Label {
                name: "instance".into(),
                value: instance.into(),
            },
        ],
        samples: points
            .iter()
            .map(|&(timestamp, value)| pb::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

/// A remote-write 1.0 body: the `WriteRequest`, Snappy-compressed.
pub fn body(timeseries: Vec<pb::TimeSeries>) -> Vec<u8> {
    let raw = pb::WriteRequest {
        timeseries,
        ..Default::default()
    }
    .encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

/// One HTTP/1.1 request (`head` ends with the blank line); the status, the head and the body.
pub async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).to_string();
    let (head, text) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), text.to_string())
}

/// `POST /api/v1/write` with the remote-write headers and `Content-Encoding: encoding`; the
/// status and the body text.
pub async fn post(addr: SocketAddr, body: &[u8], encoding: &str) -> (u16, String) {
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: {encoding}\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, _, text) = request(addr, &head, body).await;
    (status, text)
}
