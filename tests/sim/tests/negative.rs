//! Negative controls: with a deliberate bug (`strata_raft::faults`) the checkers must fail the
//! run. A checker that passes a broken store proves nothing about a correct one.
//!
//! Each control runs the soak binary in a child process: with the fsync skipped, some seeds
//! make openraft itself trip over the lost log (an `unreachable!` in its replication handler),
//! and that panic aborts the process; the test goes on until a seed shows the checker's finding
//! (C2: an acknowledged sample lost; C7: reads no order explains).

use std::process::Command;

/// Runs seeds from `from` with `args` until a failed run's report contains `finding`; returns
/// that report. Panics if none of `tries` seeds does.
fn first_caught(from: u64, tries: u64, args: &[&str], finding: &str) -> String {
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
        if !out.status.success() && report.contains(finding) {
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
    panic!("the deliberate bug was not caught ({finding:?}) in {tries} seeds:\n{seen}");
}

#[test]
fn skipping_the_wal_fsync_loses_acknowledged_samples_and_the_checkers_say_so() {
    // Whole-cluster power cuts: only what was fsynced survives anywhere.
    let args = ["--kinds", "CrashAll", "--skip-wal-fsync"];
    println!("{}", first_caught(100, 8, &args, "C2 series"));
}

#[test]
fn acknowledging_before_quorum_loses_acknowledged_samples_and_the_checkers_say_so() {
    // A leader cut off (or crashed) right after acknowledging takes the samples with it.
    let args = ["--kinds", "IsolateLeader,Crash", "--ack-before-quorum"];
    println!("{}", first_caught(200, 8, &args, "C2 series"));
}

#[test]
fn reads_from_any_replica_are_stale_and_the_linearizability_checker_says_so() {
    // Not a bug in the store: the clients ask for CONSISTENCY_ANY, so a lagging or cut-off
    // replica answers; C7 must notice the stale reads.
    let args = ["--kinds", "Partition,Slow", "--reads", "CONSISTENCY_ANY"];
    println!("{}", first_caught(300, 8, &args, "C7 series"));
}
