//! One seed, one run: the same seed run twice (each in a fresh process, as a replay is) gives
//! the same trace, byte for byte: history, nemesis actions, every replica's final contents.

use std::process::Command;

fn trace(seed: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-sim"))
        .args(["--child", "--trace", "--seed", &seed.to_string()])
        .output()
        .expect("run strata-sim");
    assert!(out.status.success(), "seed {seed} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("strata node"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
// The assertion is a build check (is the cfg set?), constant by design.
#[allow(clippy::assertions_on_constants)]
fn the_same_seed_replays_the_same_trace() {
    assert!(
        cfg!(tokio_unstable),
        "build with --cfg tokio_unstable (.cargo/config.toml sets it; a RUSTFLAGS variable \
         replaces it): without it turmoil cannot seed tokio's scheduler"
    );
    // A 5-node seed with faults: the most moving parts.
    let seed = 3;
    let (a, b) = (trace(seed), trace(seed));
    if a != b {
        let at = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(a.lines().count().min(b.lines().count()));
        let line = |t: &str| t.lines().nth(at).unwrap_or("<end>").to_owned();
        panic!(
            "seed {seed} diverged at trace line {at}:\n  first:  {}\n  second: {}",
            line(&a),
            line(&b)
        );
    }
    assert!(
        a.lines().count() > 500,
        "a run this short proves little:\n{a}"
    );
}
