//! `strata-bench`: Prometheus remote-write 1.0 load generator (see the usage text below and
//! docs/BENCHMARKS.md, "Ingest (remote write)").
//!
//! `--concurrency` workers share one [`Scheduler`] (which request may go next) behind a mutex;
//! each worker holds one HTTP/1.1 keep-alive connection per URL, builds a request's body just
//! before sending it, and retries 429, 5xx and connection errors with backoff (honouring
//! `Retry-After`, as Prometheus does). URLs are used round-robin, one per attempt.
//!
//! `strata-bench query` runs the TSBS devops query types ([`strata_bench::tsbs`]) one after
//! the other against one system's Prometheus HTTP API and reports latency percentiles and
//! what was answered (series, points, sum) per type.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use strata_bench::payload::{Slice, compress};
use strata_bench::report::{Stats, final_lines, percentile_ms};
use strata_bench::schedule::{Order, Plan, Scheduler, Take, Work};
use strata_bench::shape::Shape;
use strata_bench::tsbs::{self, Dataset, Summary};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const USAGE: &str = "\
usage: strata-bench [--url URL]... [--series N] [--shape node_exporter|tsbs-cpu]
                    [--interval-ms MS] [--points P] [--batch N] [--concurrency C]
                    [--tenant T] [--rate R] [--seed S] [--order rounds|pipelined]
                    [--end-ms MS] [--threads T] [--max-retries N] [--timeout-ms MS]
                    [--progress-s S]

Sends N series x P points as Prometheus remote write 1.0 (Snappy protobuf) and reports
samples/s, errors by HTTP status and write latency percentiles; the last line is
`RESULT key=value ...` for scripts.

  --url URL         remote-write endpoint; repeat for several, used round-robin
                    (default http://127.0.0.1:7101/api/v1/write, strata dev's node 1)
  --series N        number of series (default 10000)
  --shape S         node_exporter: 26 series per host, job/instance/env/region target
                    labels; tsbs-cpu: TSBS devops cpu-only, 10 cpu_* series per host with
                    10 host tags (default node_exporter)
  --interval-ms MS  scrape interval: the step between a series' timestamps (default 15000)
  --points P        samples per series (default 10). Timestamps end at --end-ms (default:
                    now) and go back (P-1) x interval, which must stay within 110 min
                    (Strata refuses samples older than now - 2 h)
  --batch N         samples per request, at most (Prometheus' max_samples_per_send default
                    2000)
  --concurrency C   requests in flight at most (default 4)
  --order O         rounds: one scrape round of all series at a time, all concurrency on
                    that round (default); pipelined: a slice of series moves on to its next
                    round as soon as its previous request was answered. Both keep each
                    series' samples in order, one request in flight per series at most
  --tenant T        send X-Scope-OrgID: T
  --rate R          at most R samples/s (default 0: as fast as the server answers)
  --seed S          seed of the synthetic data (default 1)
  --threads T       tokio worker threads of the generator (default 2)
  --max-retries N   retries of a request after 429, 5xx or a connection error before it is
                    given up (default 20); backoff 30 ms doubling to 5 s, or Retry-After
  --timeout-ms MS   per-attempt timeout (default 30000)
  --progress-s S    progress line on stderr every S seconds (default 10; 0: none)
  --span-max-ms MS  refuse --points x --interval-ms spanning more (default 6600000, 110 min:
                    Strata's default [write] accept_past_ms is 2 h); raise it together with
                    the server's window to backfill a longer dataset

       strata-bench query --url BASE --start-ms MS --end-ms MS [--hosts N] [--runs R]
                          [--seed S] [--types T,T...] [--timeout-ms MS]

Runs TSBS' devops query types as PromQL against the Prometheus HTTP API at BASE (e.g.
http://127.0.0.1:9090), over a dataset that `strata-bench --shape tsbs-cpu` wrote: N hosts
(--series N*10), samples from --start-ms to --end-ms. Per type, one warm-up query and then R
measured ones (each on other random hosts and windows, the same sequence for every system
given the same seed), one at a time. Prints per type `QUERY type=... runs=... p50_ms=...
p99_ms=... max_ms=... errors=... series=... points=... sum=...` (series, points and the sum
of finite values over the measured answers, to compare systems by).

  --hosts N         hosts of the dataset (default 1000)
  --runs R          measured queries per type (default 10)
  --types T,T       the types to run (default all: single-groupby-1-1-1,
                    single-groupby-1-1-12, single-groupby-5-8-1, cpu-max-all-8,
                    double-groupby-1, double-groupby-all, high-cpu-1, high-cpu-all, lastpoint)
  --timeout-ms MS   per-query timeout (default 120000)";

/// The one place that reads clocks: a load generator measures real elapsed time and stamps
/// samples with real time, which is what the workspace's Clock seam exists to keep out of
/// simulated code (clippy.toml).
mod clock {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    #[allow(clippy::disallowed_methods)] // A benchmark measures real elapsed time.
    pub fn now() -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // Sample timestamps must be near the server's now.
    pub fn unix_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Default of `--span-max-ms`: Strata refuses samples older than now - 2 h by default; 10
/// minutes are left for the run itself and clock differences.
const SPAN_MS_MAX: i64 = 110 * 60 * 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(30);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Error answers whose body is printed on stderr, at most (the rest are only counted).
const ERROR_BODIES_PRINTED_MAX: usize = 5;
const ERROR_BODY_BYTES_MAX: usize = 300;

struct Options {
    urls: Vec<String>,
    series: usize,
    shape: Shape,
    interval_ms: i64,
    points: usize,
    batch: usize,
    concurrency: usize,
    order: Order,
    tenant: Option<String>,
    rate: f64,
    seed: u64,
    end_ms: Option<i64>,
    threads: usize,
    max_retries: u32,
    timeout_ms: u64,
    progress_s: u64,
    span_max_ms: i64,
}

/// The `--flag value` pairs of the command line, or `None` after printing the usage for
/// `-h`/`--help`.
fn flag_values(args: &[String]) -> anyhow::Result<Option<Vec<(&str, &str)>>> {
    let mut pairs = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(None);
        }
        let v = rest
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))?;
        pairs.push((flag.as_str(), v.as_str()));
    }
    Ok(Some(pairs))
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
    v.parse()
        .map_err(|_| anyhow!("{flag} needs a number, got {v:?}\n\n{USAGE}"))
}

fn positive(flag: &str, v: &str) -> anyhow::Result<usize> {
    match num::<usize>(flag, v)? {
        0 => bail!("{flag} must be positive\n\n{USAGE}"),
        n => Ok(n),
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        urls: Vec::new(),
        series: 10_000,
        shape: Shape::NodeExporter,
        interval_ms: 15_000,
        points: 10,
        batch: 2_000,
        concurrency: 4,
        order: Order::Rounds,
        tenant: None,
        rate: 0.0,
        seed: 1,
        end_ms: None,
        threads: 2,
        max_retries: 20,
        timeout_ms: 30_000,
        progress_s: 10,
        span_max_ms: SPAN_MS_MAX,
    };
    let Some(flags) = flag_values(args)? else {
        return Ok(None);
    };
    for (flag, v) in flags {
        match flag {
            "--url" => o.urls.push(v.to_string()),
            "--series" => o.series = positive(flag, v)?,
            "--shape" => {
                o.shape = Shape::parse(v).ok_or_else(|| {
                    anyhow!("--shape is node_exporter or tsbs-cpu, got {v:?}\n\n{USAGE}")
                })?
            }
            "--interval-ms" => o.interval_ms = positive(flag, v)? as i64,
            "--points" => o.points = positive(flag, v)?,
            "--batch" => o.batch = positive(flag, v)?,
            "--concurrency" => o.concurrency = positive(flag, v)?,
            "--order" => {
                o.order = Order::parse(v).ok_or_else(|| {
                    anyhow!("--order is rounds or pipelined, got {v:?}\n\n{USAGE}")
                })?
            }
            "--tenant" => o.tenant = Some(v.to_string()),
            "--rate" => {
                o.rate = num(flag, v)?;
                if !(o.rate >= 0.0 && o.rate.is_finite()) {
                    bail!("--rate must be 0 or positive, got {v:?}");
                }
            }
            "--seed" => o.seed = num(flag, v)?,
            "--end-ms" => o.end_ms = Some(num(flag, v)?),
            "--threads" => o.threads = positive(flag, v)?,
            "--max-retries" => o.max_retries = num(flag, v)?,
            "--timeout-ms" => o.timeout_ms = positive(flag, v)? as u64,
            "--progress-s" => o.progress_s = num(flag, v)?,
            "--span-max-ms" => o.span_max_ms = positive(flag, v)? as i64,
            other => bail!("unknown flag {other:?}\n\n{USAGE}"),
        }
    }
    if o.urls.is_empty() {
        o.urls.push("http://127.0.0.1:7101/api/v1/write".into());
    }
    let span_ms = (o.points as i64 - 1).saturating_mul(o.interval_ms);
    if span_ms > o.span_max_ms {
        bail!(
            "--points {} x --interval-ms {} spans {} min; keep it within --span-max-ms ({} \
             min; Strata refuses samples older than its [write] accept_past_ms, 2 h by \
             default): fewer points, a shorter interval, or a larger --span-max-ms",
            o.points,
            o.interval_ms,
            span_ms / 60_000,
            o.span_max_ms / 60_000
        );
    }
    Ok(Some(o))
}

/// A remote-write endpoint.
struct Target {
    uri: Uri,
    /// `host:port`, for the `Host` header and to connect.
    authority: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url {url:?}: only http:// is supported");
        }
        let auth = uri
            .authority()
            .ok_or_else(|| anyhow!("--url {url:?} has no host"))?;
        let authority = format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80));
        Ok(Target { uri, authority })
    }
}

/// What the workers share.
struct Shared {
    opts: Options,
    targets: Vec<Target>,
    /// The scheduler and, per slice, its series (taken out while the slice is in flight).
    work: Mutex<(Scheduler, Vec<Option<Slice>>)>,
    /// Woken when a request is answered: a slice may have become ready.
    answered: Notify,
    next_target: AtomicUsize,
    /// `--rate`: when the next request may go.
    pacer: Option<Mutex<std::time::Instant>>,
    end_ms: i64,
    samples_acked: AtomicU64,
    error_bodies_printed: AtomicUsize,
}

impl Shared {
    fn timestamp_ms(&self, round: usize) -> i64 {
        self.end_ms - (self.opts.points - 1 - round) as i64 * self.opts.interval_ms
    }

    /// The next request to send with its series, or `None` when the run is over.
    async fn next(&self) -> Option<(Work, Slice)> {
        loop {
            let notified = self.answered.notified();
            tokio::pin!(notified);
            // Registered before looking, so an answer between the look and the wait wakes us.
            notified.as_mut().enable();
            {
                let mut guard = self.work.lock().expect("scheduler lock");
                let (sched, slices) = &mut *guard;
                match sched.take() {
                    Take::Send(w) => {
                        let slice = slices[w.slice].take().expect("B2: an idle slice is home");
                        return Some((w, slice));
                    }
                    Take::Done => return None,
                    Take::Wait => {}
                }
            }
            notified.await;
        }
    }

    fn complete(&self, work: &Work, slice: Slice) {
        {
            let mut guard = self.work.lock().expect("scheduler lock");
            let (sched, slices) = &mut *guard;
            slices[work.slice] = Some(slice);
            sched.complete(work);
        }
        self.answered.notify_waiters();
    }

    /// Waits until `--rate` lets `samples` more go.
    async fn pace(&self, samples: usize) {
        let Some(pacer) = &self.pacer else { return };
        let at = {
            let mut next = pacer.lock().expect("pacer lock");
            let at = (*next).max(clock::now());
            *next = at + Duration::from_secs_f64(samples as f64 / self.opts.rate);
            at
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// How one HTTP attempt ended.
enum Attempt {
    Answered {
        status: StatusCode,
        retry_after: Option<Duration>,
        body: Bytes,
    },
    /// Connect, handshake or IO error (the connection is dropped).
    Conn(String),
    Timeout,
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.authority))
        .await
        .map_err(|_| anyhow!("connect to {} timed out", target.authority))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors surface on send.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn attempt(
    shared: &Shared,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    body: Bytes,
) -> Attempt {
    let timeout = Duration::from_millis(shared.opts.timeout_ms);
    let result = tokio::time::timeout(timeout, async {
        let mut req = Request::post(target.uri.clone())
            .header(header::CONTENT_ENCODING, "snappy")
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(t) = &shared.opts.tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        exchange(conn, target, req, body).await
    })
    .await;
    match result {
        Err(_) => {
            *conn = None;
            Attempt::Timeout
        }
        Ok(Err(e)) => {
            *conn = None;
            Attempt::Conn(format!("{e:#}"))
        }
        Ok(Ok((status, retry_after, body))) => Attempt::Answered {
            status,
            retry_after,
            body,
        },
    }
}

/// Sends one request (`req` with `Host`, `User-Agent` and `body` added) on the kept-alive
/// `conn`, reconnecting when it was closed, and reads the whole answer so the connection can
/// carry the next request. Returns the status, a `Retry-After` in seconds if any, the body.
async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    req: hyper::http::request::Builder,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Option<Duration>, Bytes)> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(target).await?);
    }
    let sender = conn.as_mut().expect("connected above");
    sender.ready().await?;
    let req = req
        .header(header::HOST, &target.authority)
        .header(header::USER_AGENT, "strata-bench")
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, retry_after, body))
}

/// Sends `body` until it is acknowledged, refused (4xx other than 429) or retries run out.
async fn send(
    shared: &Shared,
    conns: &mut [Option<SendRequest<Full<Bytes>>>],
    body: Bytes,
    samples: u64,
    stats: &mut Stats,
) {
    let mut backoff = BACKOFF_MIN;
    let mut tries = 0;
    loop {
        let t = shared.next_target.fetch_add(1, Ordering::Relaxed) % shared.targets.len();
        let started = clock::now();
        let outcome = attempt(shared, &mut conns[t], &shared.targets[t], body.clone()).await;
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        stats.latencies_us.push(us);
        stats.attempts += 1;
        stats.bytes_sent += body.len() as u64;
        let (retryable, retry_after) = match outcome {
            Attempt::Answered { status, .. } if status.is_success() => {
                stats.requests_ok += 1;
                stats.samples_ok += samples;
                shared.samples_acked.fetch_add(samples, Ordering::Relaxed);
                return;
            }
            Attempt::Answered {
                status,
                retry_after,
                body,
            } => {
                stats.error(status.as_str());
                if shared.error_bodies_printed.fetch_add(1, Ordering::Relaxed)
                    < ERROR_BODIES_PRINTED_MAX
                {
                    let text =
                        String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES_MAX)]);
                    eprintln!(
                        "strata-bench: {} answered {status}: {}",
                        shared.targets[t].uri,
                        text.trim()
                    );
                }
                (
                    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
                    retry_after,
                )
            }
            Attempt::Conn(e) => {
                stats.error("conn");
                if shared.error_bodies_printed.fetch_add(1, Ordering::Relaxed)
                    < ERROR_BODIES_PRINTED_MAX
                {
                    eprintln!("strata-bench: {}: {e}", shared.targets[t].uri);
                }
                (true, None)
            }
            Attempt::Timeout => {
                stats.error("timeout");
                (true, None)
            }
        };
        if !retryable || tries >= shared.opts.max_retries {
            stats.requests_failed += 1;
            stats.samples_failed += samples;
            return;
        }
        tries += 1;
        stats.retries += 1;
        tokio::time::sleep(retry_after.unwrap_or(backoff).min(BACKOFF_MAX)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn worker(shared: Arc<Shared>) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    let mut conns: Vec<Option<SendRequest<Full<Bytes>>>> =
        (0..shared.targets.len()).map(|_| None).collect();
    let mut encoder = snap::raw::Encoder::new();
    let mut raw = Vec::new();
    while let Some((work, mut slice)) = shared.next().await {
        let timestamps: Vec<i64> = work
            .rounds
            .clone()
            .map(|r| shared.timestamp_ms(r))
            .collect();
        raw.clear();
        slice.encode(&timestamps, &mut raw);
        let body = match compress(&mut encoder, &raw) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                // Hand the slice back so the other workers can finish, then stop this one.
                shared.complete(&work, slice);
                return Err(e.context("snappy-compress a request body"));
            }
        };
        let samples = slice.len() * timestamps.len();
        shared.pace(samples).await;
        send(&shared, &mut conns, body, samples as u64, &mut stats).await;
        shared.complete(&work, slice);
    }
    Ok(stats)
}

async fn progress(shared: Arc<Shared>, every_s: u64, started: std::time::Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(every_s));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let acked = shared.samples_acked.load(Ordering::Relaxed);
        eprintln!(
            "strata-bench: {:>6.1} s: {acked} samples acknowledged, {:.0} samples/s over the last {every_s} s",
            started.elapsed().as_secs_f64(),
            (acked - last) as f64 / every_s as f64,
        );
        last = acked;
    }
}

struct QueryOptions {
    url: String,
    data: Dataset,
    runs: u64,
    seed: u64,
    types: Vec<String>,
    timeout_ms: u64,
}

fn parse_query_args(args: &[String]) -> anyhow::Result<Option<QueryOptions>> {
    let mut o = QueryOptions {
        url: String::new(),
        data: Dataset {
            hosts: 1000,
            start_ms: i64::MIN,
            end_ms: i64::MIN,
        },
        runs: 10,
        seed: 1,
        types: tsbs::TYPES.iter().map(|t| t.to_string()).collect(),
        timeout_ms: 120_000,
    };
    let Some(flags) = flag_values(args)? else {
        return Ok(None);
    };
    for (flag, v) in flags {
        match flag {
            "--url" => o.url = v.trim_end_matches('/').to_string(),
            "--start-ms" => o.data.start_ms = num(flag, v)?,
            "--end-ms" => o.data.end_ms = num(flag, v)?,
            "--hosts" => o.data.hosts = positive(flag, v)?,
            "--runs" => o.runs = positive(flag, v)? as u64,
            "--seed" => o.seed = num(flag, v)?,
            "--timeout-ms" => o.timeout_ms = positive(flag, v)? as u64,
            "--types" => {
                o.types = v.split(',').map(|t| t.trim().to_string()).collect();
                if let Some(bad) = o.types.iter().find(|t| !tsbs::TYPES.contains(&t.as_str())) {
                    bail!(
                        "--types: unknown type {bad:?}; known: {}",
                        tsbs::TYPES.join(", ")
                    );
                }
            }
            other => bail!("unknown flag {other:?}\n\n{USAGE}"),
        }
    }
    if o.url.is_empty() || o.data.start_ms == i64::MIN || o.data.end_ms == i64::MIN {
        bail!("query needs --url, --start-ms and --end-ms\n\n{USAGE}");
    }
    if o.data.end_ms <= o.data.start_ms {
        bail!("--end-ms must be after --start-ms");
    }
    Ok(Some(o))
}

/// POSTs a form to `path` of `target` on the kept-alive `conn` (reconnecting when closed) and
/// returns the whole answer body of a 2xx; anything else is an error with the status and body.
async fn post_form(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    path: &str,
    form: String,
) -> anyhow::Result<Bytes> {
    let req = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let (status, _, body) = exchange(conn, target, req, Bytes::from(form)).await?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES_MAX)]).trim()
        );
    }
    Ok(body)
}

/// `strata-bench query`: see the usage text.
async fn run_queries(o: QueryOptions) -> anyhow::Result<()> {
    let target = Target::parse(&o.url)?;
    let timeout = Duration::from_millis(o.timeout_ms);
    let mut conn = None;
    let mut failed_types = 0;
    for name in &o.types {
        let mut latencies_us = Vec::new();
        let mut answered = Summary::default();
        let mut errors = 0;
        // Run 0 warms caches (the page cache, a lazily loaded index) and is not counted.
        for run in 0..=o.runs {
            let q = tsbs::query(name, o.seed, run, o.data).expect("types were checked");
            let (path, form) = q.request();
            let started = clock::now();
            let outcome = match tokio::time::timeout(
                timeout,
                post_form(&mut conn, &target, path, form),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    conn = None;
                    Err(anyhow!("timed out after {timeout:?}"))
                }
            };
            let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
            match outcome.and_then(|body| tsbs::summarize(&body)) {
                Ok(s) if run > 0 => {
                    latencies_us.push(us);
                    answered.add(s);
                }
                Ok(_) => {}
                Err(e) => {
                    conn = None;
                    errors += 1;
                    if errors <= ERROR_BODIES_PRINTED_MAX {
                        eprintln!("strata-bench: {name} run {run} ({}): {e:#}", q.promql);
                    }
                }
            }
        }
        latencies_us.sort_unstable();
        let ms = |p: f64| percentile_ms(&latencies_us, p);
        println!(
            "QUERY type={name} runs={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={errors} \
             series={} points={} sum={:.6e}",
            latencies_us.len(),
            ms(50.0),
            ms(99.0),
            ms(100.0),
            answered.series,
            answered.points,
            answered.sum,
        );
        if errors > 0 {
            failed_types += 1;
        }
    }
    if failed_types > 0 {
        bail!("{failed_types} query type(s) had errors");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("query") {
        let Some(opts) = parse_query_args(&args[1..])? else {
            return Ok(());
        };
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the tokio runtime")?
            .block_on(run_queries(opts));
    }
    let Some(opts) = parse_args(&args)? else {
        return Ok(());
    };
    let targets = opts
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plan = Plan::new(opts.series, opts.batch, opts.points);
    let slices: Vec<Option<Slice>> = plan
        .slices
        .iter()
        .map(|r| Some(Slice::new(opts.shape, opts.seed, r.clone())))
        .collect();
    let in_flight_max = opts.concurrency.min(plan.slices.len());
    eprintln!(
        "strata-bench: {} {} series x {} points every {} ms = {} samples; {} requests of \
         <= {} samples ({} slice(s), {} round(s) per request), order {}, {} in flight at most{}",
        opts.series,
        opts.shape.name(),
        opts.points,
        opts.interval_ms,
        opts.series * opts.points,
        plan.requests(),
        plan.slices.iter().map(|r| r.len()).max().unwrap_or(0) * plan.rounds_per_request,
        plan.slices.len(),
        plan.rounds_per_request,
        opts.order.name(),
        in_flight_max,
        if in_flight_max < opts.concurrency {
            format!(
                " (--concurrency {} but one request per slice: more series or a smaller \
                 --batch to use it)",
                opts.concurrency
            )
        } else {
            String::new()
        },
    );
    let end_ms = opts.end_ms.unwrap_or_else(clock::unix_ms);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let shared = Arc::new(Shared {
        pacer: (opts.rate > 0.0).then(|| Mutex::new(clock::now())),
        work: Mutex::new((Scheduler::new(plan, opts.order), slices)),
        answered: Notify::new(),
        next_target: AtomicUsize::new(0),
        end_ms,
        samples_acked: AtomicU64::new(0),
        error_bodies_printed: AtomicUsize::new(0),
        targets,
        opts,
    });
    let (mut stats, secs) = runtime.block_on(async {
        let started = clock::now();
        let progress = (shared.opts.progress_s > 0).then(|| {
            tokio::spawn(progress(
                Arc::clone(&shared),
                shared.opts.progress_s,
                started,
            ))
        });
        let workers: Vec<_> = (0..shared.opts.concurrency)
            .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
            .collect();
        let mut stats = Stats::default();
        for w in workers {
            stats.merge(w.await.context("a worker panicked")??);
        }
        let secs = started.elapsed().as_secs_f64();
        if let Some(p) = progress {
            p.abort();
        }
        anyhow::Ok((stats, secs))
    })?;
    let (human, machine) = final_lines(&mut stats, secs);
    println!("{human}");
    println!("{machine}");
    if stats.samples_ok == 0 {
        bail!("no sample was acknowledged");
    }
    Ok(())
}
