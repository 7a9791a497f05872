//! The synthetic series: labels and value motion, a pure function of `(shape, seed, index)`.
//!
//! - `node_exporter`: 26 series per host, the families, labels and value motions of
//!   `strata_shard::workload::NodeExporterLike` (so ingest data compresses like the codec
//!   bench's data set (b)), plus the target labels a Prometheus behind service discovery
//!   attaches: `job`, `instance`, `env`, `region`.
//! - `tsbs-cpu`: TSBS' devops "cpu-only" use case as Prometheus series: per host the 10 cpu
//!   fields as `cpu_<field>` (`cpu_usage_user` ...), each with the host's 10 tags (`hostname`,
//!   `region`, `datacenter`, `rack`, `os`, `arch`, `team`, `service`, `service_version`,
//!   `service_environment`), values a random walk in [0, 100] at full float precision.
//!
//! Series `i` belongs to host `i / series_per_host`; its metric is `i % series_per_host`.
//! `--series N` need not be a whole number of hosts: the last host is then partial.

/// SplitMix64's finalizer: spreads a seed into well-mixed bits (also seeds [`XorShift64`]).
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*: a tiny seeded generator for test data (not for anything secret).
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator whose state derives from `seed` (never the all-zero state).
    pub fn new(seed: u64) -> Self {
        XorShift64(mix64(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Which synthetic workload to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    NodeExporter,
    TsbsCpu,
}

impl Shape {
    pub fn parse(s: &str) -> Option<Shape> {
        match s {
            "node_exporter" => Some(Shape::NodeExporter),
            "tsbs-cpu" => Some(Shape::TsbsCpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::NodeExporter => "node_exporter",
            Shape::TsbsCpu => "tsbs-cpu",
        }
    }

    pub fn series_per_host(self) -> usize {
        match self {
            Shape::NodeExporter => NODE_SERIES_PER_HOST,
            Shape::TsbsCpu => TSBS_CPU_FIELDS.len(),
        }
    }

    /// Series `index` of this shape under `seed`: labels sorted by name, and its first state.
    pub fn series(self, seed: u64, index: usize) -> SeriesSpec {
        let host = index / self.series_per_host();
        let metric = index % self.series_per_host();
        // Host-wide choices (tags) and per-series motion use separate streams, so a series'
        // values do not depend on how many tags its host has.
        let mut host_rng = XorShift64::new(seed ^ mix64(host as u64 ^ 0x686f_7374));
        let mut rng = XorShift64::new(seed ^ mix64(index as u64 ^ 0x7365_7269_6573));
        let (mut labels, motion) = match self {
            Shape::NodeExporter => node_exporter(host, metric, &mut host_rng),
            Shape::TsbsCpu => tsbs_cpu(host, metric, &mut host_rng),
        };
        labels.sort();
        let start = match motion {
            Motion::Counter { .. } => round2(rng.next_f64() * 1e6),
            Motion::Gauge { level, .. } => level,
            Motion::Percent => rng.next_f64() * 100.0,
        };
        SeriesSpec {
            labels,
            state: SeriesState {
                motion,
                value: start,
                rng,
            },
        }
    }
}

/// One series: its labels (sorted by name, `__name__` included) and its value state.
#[derive(Clone, Debug)]
pub struct SeriesSpec {
    pub labels: Vec<(String, String)>,
    pub state: SeriesState,
}

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Motion {
    /// Grows by a uniform amount in `[0, step_max)`, rounded to two decimals.
    Counter { step_max: f64 },
    /// Random walk with two decimals around `level`, bounded to ±`spread`.
    Gauge { level: f64, spread: f64 },
    /// TSBS: random walk in [0, 100], full precision.
    Percent,
}

/// A series' current value and its own random stream.
#[derive(Clone, Debug)]
pub struct SeriesState {
    pub motion: Motion,
    value: f64,
    rng: XorShift64,
}

impl SeriesState {
    /// The value of the next scrape (call once per scrape, in time order).
    pub fn next_value(&mut self) -> f64 {
        let r = self.rng.next_f64();
        self.value = match self.motion {
            Motion::Counter { step_max } => round2(self.value + r * step_max),
            Motion::Gauge { level, spread } => round2(
                (self.value + (r - 0.5) * spread * 0.1).clamp(level - spread, level + spread),
            ),
            Motion::Percent => (self.value + (r - 0.5) * 10.0).clamp(0.0, 100.0),
        };
        self.value
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Series per host of the `node_exporter` shape.
pub const NODE_SERIES_PER_HOST: usize = 26;
/// Target labels every `node_exporter` series carries (besides `__name__`).
pub const NODE_TARGET_LABELS: [&str; 4] = ["env", "instance", "job", "region"];
const NODE_REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-southeast-1"];

fn node_exporter(
    host: usize,
    metric: usize,
    host_rng: &mut XorShift64,
) -> (Vec<(String, String)>, Motion) {
    let env = if host_rng.below(5) == 0 {
        "staging"
    } else {
        "prod"
    };
    let region = NODE_REGIONS[host_rng.below(NODE_REGIONS.len())];
    let mut labels = vec![
        ("job".to_string(), "node".to_string()),
        ("instance".to_string(), format!("host-{host}:9100")),
        ("env".to_string(), env.to_string()),
        ("region".to_string(), region.to_string()),
    ];
    let mut add = |name: &str, value: &str| labels.push((name.to_string(), value.to_string()));
    // 0..16: per-CPU mode counters; 16..20: network byte counters; 20..26: gauges.
    let motion = match metric {
        0..16 => {
            let (mode, step_max) = [
                ("idle", 14.0),
                ("user", 0.8),
                ("system", 0.3),
                ("iowait", 0.05),
            ][metric % 4];
            add("__name__", "node_cpu_seconds_total");
            add("cpu", &(metric / 4).to_string());
            add("mode", mode);
            Motion::Counter { step_max }
        }
        16..20 => {
            let (device, step_max) = [("eth0", 2e6), ("lo", 1e4)][(metric - 16) / 2];
            let name = [
                "node_network_receive_bytes_total",
                "node_network_transmit_bytes_total",
            ][(metric - 16) % 2];
            add("__name__", name);
            add("device", device);
            Motion::Counter { step_max }
        }
        _ => {
            let (name, level, spread) = [
                ("node_load1", 1.5, 1.5),
                ("node_load5", 1.2, 1.0),
                ("node_memory_MemAvailable_bytes", 8e9, 1e9),
                ("node_hwmon_temp_celsius", 55.0, 10.0),
                ("node_filesystem_avail_bytes", 4e11, 1e9),
                ("node_procs_running", 4.0, 4.0),
            ][metric - 20];
            add("__name__", name);
            match name {
                "node_hwmon_temp_celsius" => {
                    add("chip", "platform_coretemp_0");
                    add("sensor", "temp1");
                }
                "node_filesystem_avail_bytes" => {
                    add("device", "/dev/nvme0n1p2");
                    add("fstype", "ext4");
                    add("mountpoint", "/");
                }
                _ => {}
            }
            Motion::Gauge { level, spread }
        }
    };
    (labels, motion)
}

/// TSBS' cpu fields (devops use case), in TSBS' order.
pub const TSBS_CPU_FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];
/// TSBS' host tags, in TSBS' order.
pub const TSBS_TAGS: [&str; 10] = [
    "hostname",
    "region",
    "datacenter",
    "rack",
    "os",
    "arch",
    "team",
    "service",
    "service_version",
    "service_environment",
];
/// TSBS' regions with their datacenters.
const TSBS_REGIONS: [(&str, &[&str]); 9] = [
    (
        "us-east-1",
        &["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"],
    ),
    ("us-west-1", &["us-west-1a", "us-west-1b"]),
    ("us-west-2", &["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", &["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    ("eu-central-1", &["eu-central-1a", "eu-central-1b"]),
    ("ap-southeast-1", &["ap-southeast-1a", "ap-southeast-1b"]),
    ("ap-southeast-2", &["ap-southeast-2a", "ap-southeast-2b"]),
    ("ap-northeast-1", &["ap-northeast-1a", "ap-northeast-1c"]),
    ("sa-east-1", &["sa-east-1a", "sa-east-1b", "sa-east-1c"]),
];

fn tsbs_cpu(
    host: usize,
    metric: usize,
    host_rng: &mut XorShift64,
) -> (Vec<(String, String)>, Motion) {
    // TSBS draws each host's tags uniformly from these lists.
    let (region, datacenters) = TSBS_REGIONS[host_rng.below(TSBS_REGIONS.len())];
    let values = [
        format!("host_{host}"),
        region.to_string(),
        pick(host_rng, datacenters).to_string(),
        host_rng.below(100).to_string(),
        pick(host_rng, &["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"]).to_string(),
        pick(host_rng, &["x64", "x86"]).to_string(),
        pick(host_rng, &["SF", "NYC", "LON", "CHI"]).to_string(),
        host_rng.below(20).to_string(),
        host_rng.below(2).to_string(),
        pick(host_rng, &["production", "staging", "test"]).to_string(),
    ];
    let mut labels: Vec<(String, String)> = TSBS_TAGS
        .iter()
        .zip(values)
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    labels.push((
        "__name__".to_string(),
        format!("cpu_{}", TSBS_CPU_FIELDS[metric]),
    ));
    (labels, Motion::Percent)
}

fn pick<'a>(rng: &mut XorShift64, choices: &[&'a str]) -> &'a str {
    choices[rng.below(choices.len())]
}
