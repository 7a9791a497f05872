//! The soak runner: many seeds of the simulator, one after another.
//!
//! ```sh
//! cargo run -p strata-sim --release -- --seeds 200            # seeds 0..200
//! cargo run -p strata-sim --release -- --seeds 50 --from 1000 # seeds 1000..1050
//! cargo run -p strata-sim --release -- --seed 17 --trace      # replay one seed, print its trace
//! ```
//! Options: `--kinds Partition,Crash,…` (fault kinds, `nemesis::Kind`; default all, `none` for
//! no faults), `--nodes N`, and the negative controls `--skip-wal-fsync`,
//! `--ack-before-quorum`, and `--reads CONSISTENCY_ANY` (stale reads: C7's negative control). Prints one line per seed, the violations and replay command of every
//! failing seed, and seeds per minute; exits non-zero if any seed failed.
//!
//! Every seed runs in a child process of its own (`--child`): a seed is reproducible from a
//! fresh process, and a second run in the same process can diverge by a millisecond (some
//! process-wide state outside the simulation is not reset between runs; see
//! docs/robustness.md). A node that panics takes only its seed's child down.

use std::process::ExitCode;

use anyhow::{Context, bail};
use strata_sim::nemesis::Kind;
use strata_sim::run::{RunConfig, run};

struct Options {
    /// Run exactly one seed in this process (what the parent starts per seed).
    child: bool,
    from: u64,
    seeds: u64,
    trace: bool,
    kinds: Option<Vec<Kind>>,
    nodes: Option<u64>,
    skip_wal_fsync: bool,
    ack_before_quorum: bool,
    reads: Option<strata_proto::api::Consistency>,
}

fn parse() -> anyhow::Result<Options> {
    let mut o = Options {
        child: false,
        from: 0,
        seeds: 1,
        trace: false,
        kinds: None,
        nodes: None,
        skip_wal_fsync: false,
        ack_before_quorum: false,
        reads: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seed" => {
                o.from = value("--seed")?.parse().context("--seed")?;
                o.seeds = 1;
            }
            "--from" => o.from = value("--from")?.parse().context("--from")?,
            "--seeds" => o.seeds = value("--seeds")?.parse().context("--seeds")?,
            "--nodes" => o.nodes = Some(value("--nodes")?.parse().context("--nodes")?),
            "--kinds" => o.kinds = Some(parse_kinds(&value("--kinds")?)?),
            "--trace" => o.trace = true,
            "--reads" => {
                let name = value("--reads")?;
                o.reads = Some(
                    strata_proto::api::Consistency::from_str_name(&name)
                        .with_context(|| format!("--reads {name}: CONSISTENCY_STRONG, CONSISTENCY_LEADER or CONSISTENCY_ANY"))?,
                );
            }
            "--child" => o.child = true,
            "--skip-wal-fsync" => o.skip_wal_fsync = true,
            "--ack-before-quorum" => o.ack_before_quorum = true,
            "-h" | "--help" => {
                println!(
                    "usage: strata-sim [--seed S | --seeds N [--from S]] [--kinds K,…|none] [--nodes N] [--trace] [--skip-wal-fsync] [--ack-before-quorum]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(o)
}

fn parse_kinds(list: &str) -> anyhow::Result<Vec<Kind>> {
    if list == "none" {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|name| {
            Kind::ALL
                .into_iter()
                .find(|k| format!("{k:?}").eq_ignore_ascii_case(name.trim()))
                .with_context(|| format!("unknown fault kind {name:?}; kinds: {:?}", Kind::ALL))
        })
        .collect()
}

/// Runs `seed` in this process; prints its trace (if asked) and report; true if it passed.
fn run_here(o: &Options, seed: u64) -> bool {
    let mut config = RunConfig::new(seed);
    if let Some(kinds) = &o.kinds {
        config.kinds = kinds.clone();
    }
    if let Some(nodes) = o.nodes {
        config.nodes = nodes;
    }
    if let Some(reads) = o.reads {
        config.read_consistency = reads;
    }
    config.faults.skip_wal_fsync = o.skip_wal_fsync;
    config.faults.ack_before_quorum = o.ack_before_quorum;
    let result = run(&config);
    if o.trace {
        print!("{}", result.trace);
    }
    print!("{}", result.report());
    result.violations.is_empty()
}

fn main() -> anyhow::Result<ExitCode> {
    let o = parse()?;
    if o.child {
        return Ok(if run_here(&o, o.from) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    // Wall time only to report seeds per minute; it never reaches a simulated host.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let me = std::env::current_exe().context("find this program")?;
    let forwarded: Vec<String> = std::env::args()
        .skip(1)
        .scan(false, |skip_value, arg| {
            // Drop the seed selection; the child gets its own --seed.
            let drop = *skip_value || matches!(arg.as_str(), "--seed" | "--seeds" | "--from");
            *skip_value = matches!(arg.as_str(), "--seed" | "--seeds" | "--from");
            Some((!drop).then_some(arg))
        })
        .flatten()
        .collect();
    let mut failed = Vec::new();
    for seed in o.from..o.from + o.seeds {
        let out = std::process::Command::new(&me)
            .args(["--child", "--seed", &seed.to_string()])
            .args(&forwarded)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("run seed {seed}"))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            if out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("FAILED") {
                println!(
                    "seed {seed}: FAILED (the run died: {}; its stderr is above)\n  replay: \
                     cargo run -p strata-sim --release -- --seed {seed} {}",
                    out.status,
                    forwarded.join(" ")
                );
            }
            failed.push(seed);
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "{} seeds in {:.1} min ({:.1} seeds/min); {} failed{}",
        o.seeds,
        minutes,
        o.seeds as f64 / minutes.max(1e-9),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {failed:?}")
        }
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
