//! Shared helpers for ringchat's cross-crate tests.

use ringchat_sim::{FaultMode, FaultRates, Outcome, Schedule, SimConfig};

/// A run of `servers` servers for `duration_ms` under `faults`.
pub fn run(seed: u64, servers: usize, duration_ms: u64, faults: FaultMode) -> Outcome {
    ringchat_sim::run(SimConfig { seed, servers, duration_ms, faults, ..SimConfig::default() })
}

/// A schedule with only network rates (no node faults or partitions) until `heal_ms`.
pub fn lossy(loss: f64, duplicate: f64, heal_ms: u64) -> FaultMode {
    let rates = FaultRates { loss, duplicate, ..FaultRates::none() };
    FaultMode::Schedule(Schedule { rates, actions: Vec::new(), heal_ms })
}

/// Panics with the report's violations if any property broke.
pub fn assert_ok(o: &Outcome) {
    assert!(o.report.ok, "seed {} broke properties: {:#?}", o.report.seed, o.report.violations);
}
