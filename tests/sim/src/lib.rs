//! # strata-sim: whole clusters under faults, deterministically
//!
//! Not built yet (issue "Deterministic simulation"). Its job, per DESIGN.md: run the real node
//! code as turmoil hosts over a simulated network, the `strata_shard::sim_fs::SimFs` disk and the
//! `Clock` seam; inject partitions, crashes and slow links from a seed; check that every
//! acknowledged sample is read back exactly once and that replicas converge.
//!
//! Must not: touch real files, real threads, sled, `std::time`, or `HashMap` iteration order
//! inside a simulated host.
