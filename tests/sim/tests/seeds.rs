//! The fixed seeds `cargo test` runs: every fault kind, 3- and 5-node clusters, each checked
//! by C1–C6 (`strata_sim::check`). Each seed runs in its own process (the soak binary), as a
//! replay would, so a failure prints the seed, what was wrong and the command that replays it
//! exactly. More seeds: `cargo run -p strata-sim --release -- --seeds N`.

use std::process::Command;

/// Runs `strata-sim` with `args`; panics with its report unless every seed passed.
fn soak(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-sim"))
        .args(args)
        .output()
        .expect("run strata-sim");
    let report: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("strata node"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(out.status.success(), "{report}");
    report
}

/// Without faults, every operation is acknowledged (no retry gives up) and checked.
#[test]
fn without_faults_every_write_is_acknowledged_and_kept() {
    let report = soak(&["--seed", "1", "--kinds", "none"]);
    assert!(
        report.contains(" 0 unknown, 0 failed, 0 pending"),
        "{report}"
    );
}

#[test]
fn seeds_0_to_7() {
    soak(&["--seeds", "8", "--from", "0"]);
}

#[test]
fn seeds_8_to_15() {
    soak(&["--seeds", "8", "--from", "8"]);
}

/// Regression (docs/robustness.md, B1): partitions that drop what is in flight leave
/// connections silently stalled; the transport's HTTP/2 keepalive must replace them, or the
/// cluster never recovers after healing (all of seeds 30–37 failed C6 without it).
#[test]
fn connections_stalled_by_dropping_partitions_are_replaced() {
    soak(&["--seeds", "4", "--from", "30", "--kinds", "DropPartition"]);
}
