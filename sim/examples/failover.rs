//! Failover in the simulator: crash the leader of a settled 5-server cluster
//! and measure until every live server has learned the same new leader.
use ringchat_core::Event;
use ringchat_sim::history::Happening;
use ringchat_sim::{run, FaultAction, FaultMode, FaultRates, Schedule, SimConfig};

fn main() {
    let mut times = Vec::new();
    for seed in 0..200u64 {
        let probe = run(SimConfig { seed, duration_ms: 3_000, faults: FaultMode::None, ..SimConfig::default() });
        let top = probe.report.servers.iter().max().expect("servers").clone();
        let leader = probe.report.servers.iter().position(|s| *s == top).expect("leader");
        let crash_at = 3_000u64;
        let schedule = Schedule { rates: FaultRates::none(), actions: vec![(crash_at, FaultAction::Crash(leader))], heal_ms: 8_000 };
        let o = run(SimConfig { seed, duration_ms: 8_000, faults: FaultMode::Schedule(schedule), ..SimConfig::default() });
        // Time when the last of the 4 survivors learned the new leader.
        let mut learned = std::collections::BTreeMap::new();
        for r in &o.history.records {
            if r.at <= crash_at * 1000 || r.node == leader {
                continue;
            }
            match &r.what {
                Happening::Core(Event::LeaderLearned { .. }) | Happening::Core(Event::BecameLeader { .. }) => {
                    learned.entry(r.node).or_insert(r.at);
                }
                _ => {}
            }
        }
        if learned.len() == 4 {
            times.push((learned.values().max().copied().unwrap_or(0) - crash_at * 1000) as f64 / 1000.0);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!("simulated failover over {} trials: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", times.len(), p(0.5), p(0.99), p(1.0));
}
