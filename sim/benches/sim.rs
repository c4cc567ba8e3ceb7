//! Simulator speed, as ratios against a baseline measured in the same run.
//!
//! 1. Baseline: a bare binary-heap event queue carrying the heartbeat traffic
//!    of the default scenario (5 nodes, a heartbeat to each peer every 100 ms,
//!    60 simulated seconds: 12,000 datagrams), with no protocol logic.
//! 2. The simulator on a fault-free 5-server run of 60 s (the same heartbeat
//!    traffic, plus the real protocol: encoding, decoding, timers, election).
//! 3. The default scenario (5 servers, 60 s, swarm faults): events per
//!    wall-second and seeds per minute, on one thread and on every core.
//!
//! Run: `cargo bench -p ringchat-sim` (add `-- --seeds N` to change the sample).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringchat_sim::{run, FaultMode, SimConfig};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

fn bare_queue(seed: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut heap: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let nodes = 5u32;
    for n in 0..nodes {
        heap.push(Reverse((0, seq, n)));
        seq += 1;
    }
    let end = 60_000_000u64;
    let mut delivered = 0u64;
    while let Some(Reverse((at, _, what))) = heap.pop() {
        if at > end {
            break;
        }
        if what < nodes {
            // A node's heartbeat timer: one datagram to each peer, then the next tick.
            for peer in (0..nodes).filter(|&p| p != what) {
                let latency = 200 + rng.random_range(0..500u64);
                heap.push(Reverse((at + latency, seq, nodes + peer)));
                seq += 1;
            }
            heap.push(Reverse((at + 100_000, seq, what)));
            seq += 1;
        } else {
            delivered += 1;
        }
    }
    delivered
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.iter().position(|a| a == "--seeds").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(600);
    let reps = 15;

    let mut base_ms = Vec::new();
    let mut datagrams = 0;
    for r in 0..reps {
        let t = Instant::now();
        datagrams = bare_queue(r);
        base_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let base = median(base_ms);

    let mut sim_ms = Vec::new();
    let mut heartbeats = 0;
    let mut events = 0;
    for r in 0..reps {
        let cfg = SimConfig { seed: r, faults: FaultMode::None, ..SimConfig::default() };
        let t = Instant::now();
        let o = run(cfg);
        sim_ms.push(t.elapsed().as_secs_f64() * 1e3);
        heartbeats = o.report.messages_by_kind.get("heartbeat").copied().unwrap_or(0);
        events = o.report.events;
    }
    let sim = median(sim_ms);

    let t = Instant::now();
    let mut swarm_events = 0u64;
    for seed in 0..seeds {
        swarm_events += run(SimConfig { seed, ..SimConfig::default() }).report.events;
    }
    let one_thread = t.elapsed().as_secs_f64();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds {
                    break;
                }
                run(SimConfig { seed, ..SimConfig::default() });
            });
        }
    });
    let all_threads = t.elapsed().as_secs_f64();

    println!("baseline: bare binary-heap queue, {datagrams} heartbeat datagrams: {base:.2} ms");
    println!(
        "ringchat sim, fault-free 5 servers x 60 s ({heartbeats} heartbeats, {events} events in all): {sim:.2} ms = {:.1}x the bare queue",
        sim / base
    );
    println!(
        "default scenario (5 servers, 60 s, swarm): {seeds} seeds, {:.2} M events/s on one thread, {:.0} seeds/min on 1 thread, {:.0} seeds/min on {threads} threads",
        swarm_events as f64 / one_thread / 1e6,
        seeds as f64 / one_thread * 60.0,
        seeds as f64 / all_threads * 60.0
    );
    println!(
        "{{\"bench\":\"sim\",\"baseline_ms\":{base:.3},\"sim_fault_free_ms\":{sim:.3},\"ratio\":{:.2},\"events_per_s\":{:.0},\"seeds_per_min_1\":{:.0},\"seeds_per_min_all\":{:.0},\"threads\":{threads}}}",
        sim / base,
        swarm_events as f64 / one_thread,
        seeds as f64 / one_thread * 60.0,
        seeds as f64 / all_threads * 60.0
    );
}
