//! Prometheus-compatible clients and servers as child processes, and the PromQL HTTP API
//! answers of Prometheus and Strata compared: the child process (killed on drop), the binary
//! looked up on `PATH` (a loud skip, or a failure with `CI=true`), a raw HTTP/1.0 exchange, and
//! instant and range query answers parsed from Prometheus' JSON and compared within 1e-9
//! relative.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pause between two readiness polls.
const POLL_PAUSE: Duration = Duration::from_millis(250);

/// How long a client process may take to answer its readiness endpoint.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one HTTP exchange with a client process.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A child process that is killed and reaped when dropped, also when the test panics (then
/// the tail of its log goes to stderr, to explain the failure).
pub struct ClientProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ClientProcess {
    pub fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
    ) -> ClientProcess {
        let out = File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        ClientProcess { name, child, log }
    }

    /// The last `bytes` of the process' output.
    pub fn log_tail(&self, bytes: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map_or(0, |m| m.len());
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
            let mut raw = Vec::new();
            let _ = f.read_to_end(&mut raw);
            text = String::from_utf8_lossy(&raw).into_owned();
        }
        text
    }

    /// Panics (with its log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its output ends with:\n{}",
                self.name,
                self.log_tail(4096)
            );
        }
    }

    /// Polls `GET path` until it answers 200, bounded by [`START_TIMEOUT`].
    pub async fn wait_ready(&mut self, addr: SocketAddr, path: &str) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.assert_running();
            if let Ok((200, _)) = http(addr, "GET", path, &[]).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} does not answer GET {path} on {addr} after {START_TIMEOUT:?}; output:\n{}",
                self.name,
                self.log_tail(4096)
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last output of {} ({}):\n{}\n----",
                self.name,
                self.log.display(),
                self.log_tail(8192)
            );
        }
    }
}

/// `name` on `PATH`, or `None` after a loud skip notice; with `CI=true` a missing binary fails
/// the test instead, since `.ci/run` installs both packages.
pub fn client_binary(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "`{name}` is not on PATH (CI=true): .ci/run should have installed prometheus \
                 and victoria-metrics"
            );
        }
        // Straight to the stderr handle, in one write: the test harness captures `eprintln!`
        // of passing tests, and a skip must be seen.
        let notice = format!(
            "\n################################################################\n\
             SKIPPED: `{name}` is not on PATH (Debian package `{package}`);\n\
             this compatibility test did not run. `apt-get install {package}` to run it.\n\
             ################################################################\n"
        );
        let _ = std::io::stderr().lock().write_all(notice.as_bytes());
    }
    found
}

/// Prometheus (`binary`) on a free loopback port, with the configuration `config(address)`,
/// its storage, configuration and log under `dir`, and the `extra` flags; once it answers
/// `/-/ready`. Returns the process and its address.
pub async fn start_prometheus(
    binary: &Path,
    dir: &Path,
    config: impl FnOnce(SocketAddr) -> String,
    extra: &[&str],
) -> (ClientProcess, SocketAddr) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config(addr)).unwrap();
    let mut args = vec![
        format!("--config.file={}", config_file.display()),
        format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ),
        format!("--web.listen-address={addr}"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut process = ClientProcess::spawn("prometheus", binary, &args, dir.join("prometheus.log"));
    process.wait_ready(addr, "/-/ready").await;
    (process, addr)
}

/// A loopback port that was free a moment ago (the client binds it itself).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 exchange (so Go's server answers without chunked encoding and closes the
/// connection); returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no end of headers in the reply"))?;
        let status = std::str::from_utf8(&reply[..split])?
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status in the reply"))?;
        Ok((status, reply[split + 4..].to_vec()))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!("{method} {target} on {addr}: no answer in {HTTP_TIMEOUT:?}")
        })?
}

/// Percent-encoding of a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `[seconds, "value"]` pair of Prometheus' JSON: milliseconds and the value, parsed from
/// Go's shortest round-trip decimal (or NaN / +Inf / -Inf), so it gives back the exact bits.
pub fn json_point(pair: &serde_json::Value) -> (i64, f64) {
    let ts = (pair[0].as_f64().unwrap() * 1000.0).round() as i64;
    let v = match pair[1].as_str().unwrap() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().unwrap(),
    };
    (ts, v)
}

/// A range query's answer over `[start, end]` (ms) in steps of `step_ms`: labels → (ms,
/// value) points.
pub async fn range_answer(
    addr: SocketAddr,
    q: &str,
    start: i64,
    end: i64,
    step_ms: i64,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let target = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        url_encode(q),
        secs(start),
        secs(end),
        secs(step_ms)
    );
    let answer = get_json(addr, q, &target).await;
    answer["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{addr}: {q}: {answer}"))
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(json_point)
                .collect();
            (s["metric"].to_string(), points)
        })
        .collect()
}

/// Milliseconds as the API's decimal seconds.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `GET target`, which must answer 200 with JSON.
async fn get_json(addr: SocketAddr, q: &str, target: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", target, &[]).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{addr} answered {q} with {text}");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{addr}: {q}: {e}: {text}"))
}

/// An instant query's answer in the order given: labels → value (a scalar as the empty label
/// set).
pub async fn instant_series(addr: SocketAddr, q: &str, t_ms: i64) -> Vec<(String, f64)> {
    let target = format!("/api/v1/query?query={}&time={}", url_encode(q), secs(t_ms));
    let answer = get_json(addr, q, &target).await;
    let data = &answer["data"];
    if data["resultType"] == "scalar" {
        return vec![("{}".to_string(), json_point(&data["result"]).1)];
    }
    data["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{addr}: {q}: {answer}"))
        .iter()
        .map(|s| (s["metric"].to_string(), json_point(&s["value"]).1))
        .collect()
}

/// An instant query's HTTP status, error type and error message (empty when it succeeded).
pub async fn query_error(addr: SocketAddr, q: &str, t_ms: i64) -> (u16, String, String) {
    let target = format!("/api/v1/query?query={}&time={}", url_encode(q), secs(t_ms));
    let (status, body) = http(addr, "GET", &target, &[]).await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{addr}: {q}: {e}: {}", String::from_utf8_lossy(&body)));
    let text = |key: &str| answer[key].as_str().unwrap_or_default().to_string();
    (status, text("errorType"), text("error"))
}

/// An instant query's answer: labels → value (a scalar as the empty label set).
pub async fn instant_answer(addr: SocketAddr, q: &str, t_ms: i64) -> BTreeMap<String, f64> {
    instant_series(addr, q, t_ms).await.into_iter().collect()
}

/// Whether two answers' values are alike: both NaN, or within 1e-9 relative.
pub fn close(want: f64, got: f64) -> bool {
    (want.is_nan() && got.is_nan())
        || want == got
        || (want - got).abs() <= 1e-9 * want.abs().max(got.abs())
}

/// Asserts that `strata` answers the instant query `q` at `t_ms` like `prom` (the same label
/// sets, values alike; when `ordered`, values alike position by position too: the order of
/// series with equal values, or NaN, is unspecified); returns how many series (or 1 for a
/// scalar) Prometheus answered.
pub async fn assert_same_instant(
    prom: SocketAddr,
    strata: SocketAddr,
    q: &str,
    t_ms: i64,
    ordered: bool,
) -> usize {
    let want = instant_series(prom, q, t_ms).await;
    let got = instant_series(strata, q, t_ms).await;
    let sorted_keys = |answer: &[(String, f64)]| {
        let mut keys: Vec<String> = answer.iter().map(|(l, _)| l.clone()).collect();
        keys.sort();
        keys
    };
    assert_eq!(
        sorted_keys(&want),
        sorted_keys(&got),
        "{q} at {t_ms}: label sets differ: Prometheus answered {want:?}, Strata {got:?}"
    );
    let got_by_labels: BTreeMap<&String, f64> = got.iter().map(|(l, v)| (l, *v)).collect();
    for (labels, w) in &want {
        let g = got_by_labels[labels];
        assert!(
            close(*w, g),
            "{q} at {t_ms}: {labels} is {g} in Strata, {w} in Prometheus"
        );
    }
    if ordered {
        assert!(
            want.iter().zip(&got).all(|((_, w), (_, g))| close(*w, *g)),
            "{q} at {t_ms}: the order differs: Prometheus answered {want:?}, Strata {got:?}"
        );
    }
    want.len()
}

/// Asserts that `strata` answers the range query `q` over `[start, end]` in steps of
/// `step_ms` like `prom` (the same series, the same steps, values alike); returns how many
/// series Prometheus answered.
pub async fn assert_same_range(
    prom: SocketAddr,
    strata: SocketAddr,
    q: &str,
    (start, end, step_ms): (i64, i64, i64),
) -> usize {
    let want = range_answer(prom, q, start, end, step_ms).await;
    let got = range_answer(strata, q, start, end, step_ms).await;
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{q} over [{start}, {end}] step {step_ms}: series differ"
    );
    for (labels, w) in &want {
        let g = &got[labels];
        let alike = w.len() == g.len()
            && w.iter()
                .zip(g)
                .all(|((tw, w), (tg, g))| tw == tg && close(*w, *g));
        assert!(
            alike,
            "{q} over [{start}, {end}] step {step_ms}: {labels} is {g:?} in Strata, {w:?} in \
             Prometheus"
        );
    }
    want.len()
}
