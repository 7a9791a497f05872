//! Negative controls: with a deliberate bug (`strata_raft::faults`) the checkers must fail the
//! run. A checker that passes a broken store proves nothing about a correct one.
//!
//! Each control runs the soak binary in a child process: with the fsync skipped, some seeds
//! make openraft itself trip over the lost log (an `unreachable!` in its replication handler),
//! and that panic aborts the process; a seed where the loss reaches the checkers must show
//! it as C2, an acknowledged sample lost.

use std::process::Command;

/// Runs seeds from `from` with `args` until the checkers report a lost acknowledged sample;
/// returns that report. Panics if none of `tries` seeds does.
fn first_loss_caught(from: u64, tries: u64, args: &[&str]) -> String {
    let mut seen = String::new();
    for seed in from..from + tries {
        let out = Command::new(env!("CARGO_BIN_EXE_strata-sim"))
            .args(["--child", "--seed", &seed.to_string(), "--nodes", "3"])
            .args(args)
            .output()
            .expect("run strata-sim");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: String = stdout
            .lines()
            .filter(|l| l.starts_with("seed ") || l.starts_with("  "))
            .map(|l| format!("{l}\n"))
            .collect();
        if !out.status.success() && report.contains("is lost") {
            return report;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let panic = stderr
            .lines()
            .find(|l| l.contains("panicked"))
            .unwrap_or("");
        seen.push_str(&format!(
            "seed {seed}: exit {:?} {panic}\n{report}",
            out.status.code()
        ));
    }
    panic!("the deliberate bug was not caught as a loss in {tries} seeds:\n{seen}");
}

#[test]
fn skipping_the_wal_fsync_loses_acknowledged_samples_and_the_checkers_say_so() {
    // Whole-cluster power cuts: only what was fsynced survives anywhere.
    let report = first_loss_caught(100, 8, &["--kinds", "CrashAll", "--skip-wal-fsync"]);
    println!("{report}");
    assert!(
        report.contains("FAILED") && report.contains("C2 series"),
        "{report}"
    );
}

#[test]
fn acknowledging_before_quorum_loses_acknowledged_samples_and_the_checkers_say_so() {
    // A leader cut off (or crashed) right after acknowledging takes the samples with it.
    let report = first_loss_caught(
        200,
        8,
        &["--kinds", "IsolateLeader,Crash", "--ack-before-quorum"],
    );
    println!("{report}");
    assert!(
        report.contains("FAILED") && report.contains("C2 series"),
        "{report}"
    );
}

#[test]
fn reads_from_any_replica_are_stale_and_the_linearizability_checker_says_so() {
    // Not a bug in the store: the clients ask for CONSISTENCY_ANY, so a lagging or cut-off
    // replica answers; C7 must notice the stale reads.
    let mut seen = String::new();
    for seed in 300..308 {
        let out = Command::new(env!("CARGO_BIN_EXE_strata-sim"))
            .args(["--child", "--seed", &seed.to_string(), "--nodes", "3"])
            .args(["--kinds", "Partition,Slow", "--reads", "CONSISTENCY_ANY"])
            .output()
            .expect("run strata-sim");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if stdout.contains("C7 series") {
            println!("{stdout}");
            return;
        }
        seen.push_str(&stdout);
    }
    panic!("stale reads went unnoticed in 8 seeds:\n{seen}");
}
