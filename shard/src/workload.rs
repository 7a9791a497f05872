//! Deterministic synthetic workloads shaped like real scrapes, for the demo, benches and tests.
//!
//! [`NodeExporterLike`] imitates a node_exporter target per host: per-CPU mode counters that grow
//! by random amounts with two decimals, byte counters with random increments, and gauges with two
//! decimals that wander. Everything derives from a seed through SplitMix64, so a run is
//! reproducible and no `rand` dependency is needed.

use crate::series::{Label, LabelLimits, Labels, Sample, SeriesKey, Tenant};

/// SplitMix64: tiny, fast, good enough to shape test data (not for anything secret).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a synthetic series moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Grows by a random amount in `[0, step_max)` rounded to two decimals per scrape.
    Counter { step_max: f64 },
    /// Random walk with two decimals around `level`, bounded to ±`spread`.
    Gauge { level: f64, spread: f64 },
}

/// One synthetic series: its key, how it moves, and its own random stream.
#[derive(Clone, Debug)]
pub struct SyntheticSeries {
    pub key: SeriesKey,
    pub shape: Shape,
    value: f64,
    rng: SplitMix64,
}

impl SyntheticSeries {
    /// The next value of the series (call once per scrape, in order).
    pub fn next_value(&mut self) -> f64 {
        let r = self.rng.next_f64();
        self.value = match self.shape {
            Shape::Counter { step_max } => round2(self.value + r * step_max),
            Shape::Gauge { level, spread } => {
                let next = self.value + (r - 0.5) * spread * 0.1;
                round2(next.clamp(level - spread, level + spread))
            }
        };
        self.value
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Series per host: 16 CPU-mode counters, 4 network counters, 6 gauges.
pub const SERIES_PER_HOST: usize = 26;

/// node_exporter-like targets: `hosts` hosts with [`SERIES_PER_HOST`] series each.
pub struct NodeExporterLike {
    pub series: Vec<SyntheticSeries>,
    pub scrape_interval_ms: i64,
}

impl NodeExporterLike {
    pub fn new(tenant: &Tenant, hosts: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut series = Vec::new();
        let mut add = |labels: &[(&str, &str)], shape: Shape, rng: &mut SplitMix64| {
            let labels = Labels::new(
                labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
                &LabelLimits::default(),
            )
            .expect("synthetic labels are valid");
            let start = match shape {
                Shape::Counter { .. } => round2(rng.next_f64() * 1e6),
                Shape::Gauge { level, .. } => level,
            };
            series.push(SyntheticSeries {
                key: SeriesKey::new(tenant.clone(), labels),
                shape,
                value: start,
                rng: SplitMix64::new(rng.next_u64()),
            });
        };
        for h in 0..hosts {
            let instance = format!("host-{h}:9100");
            let inst = instance.as_str();
            for cpu in ["0", "1", "2", "3"] {
                for (mode, step) in [
                    ("idle", 14.0),
                    ("user", 0.8),
                    ("system", 0.3),
                    ("iowait", 0.05),
                ] {
                    add(
                        &[
                            ("__name__", "node_cpu_seconds_total"),
                            ("instance", inst),
                            ("job", "node"),
                            ("cpu", cpu),
                            ("mode", mode),
                        ],
                        Shape::Counter { step_max: step },
                        &mut rng,
                    );
                }
            }
            for (device, step) in [("eth0", 2e6), ("lo", 1e4)] {
                for name in [
                    "node_network_receive_bytes_total",
                    "node_network_transmit_bytes_total",
                ] {
                    add(
                        &[
                            ("__name__", name),
                            ("instance", inst),
                            ("job", "node"),
                            ("device", device),
                        ],
                        Shape::Counter { step_max: step },
                        &mut rng,
                    );
                }
            }
            for (name, level, spread) in [
                ("node_load1", 1.5, 1.5),
                ("node_load5", 1.2, 1.0),
                ("node_memory_MemAvailable_bytes", 8e9, 1e9),
                ("node_hwmon_temp_celsius", 55.0, 10.0),
                ("node_filesystem_avail_bytes", 4e11, 1e9),
                ("node_procs_running", 4.0, 4.0),
            ] {
                add(
                    &[("__name__", name), ("instance", inst), ("job", "node")],
                    Shape::Gauge { level, spread },
                    &mut rng,
                );
            }
        }
        debug_assert_eq!(series.len(), hosts * SERIES_PER_HOST);
        NodeExporterLike {
            series,
            scrape_interval_ms: 15_000,
        }
    }

    /// One scrape of every series at `ts_ms`.
    pub fn scrape(&mut self, ts_ms: i64) -> Vec<(SeriesKey, Vec<Sample>)> {
        self.series
            .iter_mut()
            .map(|s| (s.key.clone(), vec![Sample::new(ts_ms, s.next_value())]))
            .collect()
    }
}
