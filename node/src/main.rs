//! The `strata` binary (being written).
fn main() {}
