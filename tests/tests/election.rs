//! Election and view behaviour, observed through the simulator.

use ringchat_core::Event;
use ringchat_sim::history::Happening;
use ringchat_sim::{FaultAction, FaultMode, Partition, Schedule, SimConfig};
use ringchat_tests::{assert_ok, lossy, run};

fn highest(servers: &[String]) -> String {
    servers.iter().max().expect("servers").clone()
}

#[test]
fn same_seed_gives_same_trace_hash() {
    for seed in [1, 7, 42] {
        let a = run(seed, 5, 30_000, FaultMode::Swarm).report;
        let b = run(seed, 5, 30_000, FaultMode::Swarm).report;
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.events, b.events);
        assert_eq!(a.messages_by_kind, b.messages_by_kind);
    }
    let other = run(2, 5, 30_000, FaultMode::Swarm).report;
    assert_ne!(run(1, 5, 30_000, FaultMode::Swarm).report.trace_hash, other.trace_hash);
}

#[test]
fn fault_free_cold_start_elects_highest_id_with_2n_minus_1_tokens() {
    for n in 2..=9 {
        for seed in 0..5 {
            let o = run(seed, n, 5_000, FaultMode::None);
            assert_ok(&o);
            let r = &o.report;
            assert_eq!(r.elections.len(), 1, "n={n} seed={seed}: {:?}", r.elections);
            assert_eq!(r.elections[0].leader, highest(&r.servers));
            assert_eq!(r.final_leader.as_deref(), Some(highest(&r.servers).as_str()));
            assert_eq!(r.messages_by_kind["lcr_token"], 2 * n as u64 - 1, "n={n}");
            assert_eq!(r.messages_by_kind["lcr_elected"], n as u64, "n={n}");
        }
    }
}

#[test]
fn random_ring_token_count_follows_n_h_n() {
    let n = 6;
    let seeds = 300;
    let total: u64 = (0..seeds)
        .map(|seed| {
            let o = ringchat_sim::run(SimConfig {
                seed,
                servers: n,
                duration_ms: 3_000,
                faults: FaultMode::None,
                ring: ringchat_core::RingOrder::Hashed,
                ..SimConfig::default()
            });
            assert_ok(&o);
            o.report.messages_by_kind["lcr_token"]
        })
        .sum();
    let mean = total as f64 / seeds as f64;
    let h_n: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    let expected = n as f64 * h_n;
    assert!((mean - expected).abs() < 0.08 * expected, "mean {mean:.2} vs n·H_n {expected:.2}");
    assert!(mean > 2.0 * n as f64 - 1.0, "a random ring needs more than the ascending 2n-1");
}

#[test]
fn cold_start_under_loss_ends_as_one_cluster_with_one_leader() {
    for seed in 0..40 {
        let o = run(seed, 5, 20_000, lossy(0.2, 0.05, 8_000));
        assert_ok(&o);
        assert!(o.report.final_leader.is_some(), "seed {seed}");
    }
}

#[test]
fn leader_crash_elects_next_highest() {
    let o = ringchat_sim::run(SimConfig { seed: 3, servers: 5, duration_ms: 4_000, faults: FaultMode::None, ..SimConfig::default() });
    let mut ids = o.report.servers.clone();
    let leader_index = ids.iter().position(|s| *s == highest(&ids)).expect("leader");
    let schedule =
        Schedule { rates: ringchat_sim::FaultRates::none(), actions: vec![(3_000, FaultAction::Crash(leader_index))], heal_ms: 12_000 };
    let o = run(3, 5, 20_000, FaultMode::Schedule(schedule));
    assert_ok(&o);
    ids.sort();
    let second = &ids[ids.len() - 2];
    let after_crash: Vec<_> = o.report.elections.iter().filter(|e| e.at_ms > 3_000.0 && e.at_ms < 12_000.0).collect();
    assert_eq!(after_crash.first().map(|e| &e.leader), Some(second), "{:?}", o.report.elections);
    let took = after_crash[0].at_ms - 3_000.0;
    assert!(took < 1_000.0, "failover took {took} ms");
}

#[test]
fn minority_partition_cannot_elect_and_majority_keeps_its_leader() {
    let probe = run(5, 5, 3_000, FaultMode::None);
    let leader = probe.report.servers.iter().position(|s| *s == highest(&probe.report.servers)).expect("leader");
    let minority: Vec<usize> = (0..5).filter(|&i| i != leader).take(2).collect();
    let schedule = Schedule {
        rates: ringchat_sim::FaultRates::none(),
        actions: vec![
            (2_000, FaultAction::Partition(Partition::Symmetric { side: minority.clone() })),
            (10_000, FaultAction::HealPartition),
        ],
        heal_ms: 12_000,
    };
    let o = run(5, 5, 20_000, FaultMode::Schedule(schedule));
    assert_ok(&o);
    let minority_leaders = o
        .history
        .records
        .iter()
        .filter(|r| minority.contains(&r.node) && r.at > 2_000_000 && matches!(r.what, Happening::Core(Event::BecameLeader { .. })));
    assert_eq!(minority_leaders.count(), 0, "a minority elected a leader");
    assert_eq!(o.report.elections.len(), 1, "the majority side kept its leader: {:?}", o.report.elections);
}

#[test]
fn single_lost_datagrams_never_cost_a_leader() {
    // 10% loss for a simulated minute: heartbeats get lost, no leader change follows.
    for seed in 0..10 {
        let o = run(seed, 5, 70_000, lossy(0.10, 0.0, 65_000));
        assert_ok(&o);
        assert_eq!(o.report.elections.len(), 1, "seed {seed}: {:?}", o.report.elections);
    }
}

#[test]
fn restarted_server_rejoins_as_new_incarnation() {
    let schedule = Schedule {
        rates: ringchat_sim::FaultRates::none(),
        actions: vec![(2_000, FaultAction::Crash(1)), (3_000, FaultAction::Restart(1))],
        heal_ms: 6_000,
    };
    let o = run(9, 5, 15_000, FaultMode::Schedule(schedule));
    assert_ok(&o);
    let lives: Vec<u64> = o
        .history
        .records
        .iter()
        .filter(|r| r.node == 1)
        .filter_map(|r| match &r.what {
            Happening::Core(Event::Joined { node, .. }) => Some(node.incarnation),
            _ => None,
        })
        .collect();
    assert!(lives.len() >= 2 && lives.last() > lives.first(), "joined as lives {lives:?}");
}

#[test]
fn restarted_server_that_hears_its_cluster_waits_instead_of_founding_its_own() {
    // Server 2 crashes and is dropped from the view; the other four split 2 | 2, so neither
    // side has a majority to admit it. Restarted on the side of 3 and 4, it hears them answer
    // (their cluster lives) and must wait for the heal, not found a one-server cluster that
    // would take chat only it holds.
    let schedule = Schedule {
        rates: ringchat_sim::FaultRates::none(),
        actions: vec![
            (2_000, FaultAction::Crash(2)),
            (7_000, FaultAction::Partition(Partition::Symmetric { side: vec![0, 1] })),
            (8_000, FaultAction::Restart(2)),
        ],
        heal_ms: 20_000,
    };
    let o = run(3, 5, 30_000, FaultMode::Schedule(schedule));
    assert_ok(&o);
    let first = o.history.records.iter().find_map(|r| match &r.what {
        Happening::Core(Event::Joined { cluster, .. }) => Some(*cluster),
        _ => None,
    });
    let clusters: Vec<_> = o
        .history
        .records
        .iter()
        .filter(|r| r.node == 2)
        .filter_map(|r| match &r.what {
            Happening::Core(Event::Joined { cluster, .. } | Event::BecameLeader { cluster, .. }) => Some((r.at / 1000, *cluster)),
            _ => None,
        })
        .collect();
    assert!(clusters.iter().all(|(_, c)| Some(*c) == first), "server 2 entered another cluster: {clusters:?}");
    assert!(clusters.iter().any(|(at, _)| *at >= 20_000), "server 2 did not rejoin after the heal: {clusters:?}");
}

#[test]
fn regression_seeds_stay_green() {
    let text = include_str!("../regression-seeds.txt");
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // `seed [servers] [ascending|random] [--life] [--long-life] [--churn] [--disk-loss]
        // [--power-loss] [--careless] [--clients=N]`; `--life` draws the long-life faults from
        // the seed as `ringchat sim` does, `--long-life` adds the loss of a majority's disks.
        let (flags, words): (Vec<&str>, Vec<&str>) = line.split_whitespace().partition(|w| w.starts_with("--"));
        let mut it = words.into_iter();
        let seed: u64 = it.next().and_then(|s| s.parse().ok()).expect("seed");
        let servers: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(5);
        let ring = match it.next() {
            Some("random") => ringchat_core::RingOrder::Hashed,
            _ => ringchat_core::RingOrder::Ascending,
        };
        let mut life = ringchat_sim::life::LifeFaults::default();
        let mut clients = SimConfig::default().clients;
        for f in flags {
            if let Some(n) = f.strip_prefix("--clients=") {
                clients = n.parse().expect("regression-seeds.txt: --clients=N");
                continue;
            }
            match f {
                "--life" => life.swarm = true,
                "--long-life" => (life.swarm, life.swarm_majority) = (true, true),
                "--churn" => life.churn = true,
                "--disk-loss" => life.disk_loss = true,
                "--power-loss" => life.power_loss = true,
                "--careless" => life.careless = true,
                other => panic!("regression-seeds.txt: unknown flag {other} in {line:?}"),
            }
        }
        let o = ringchat_sim::run(SimConfig { seed, servers, ring, life, clients, ..SimConfig::default() });
        assert_ok(&o);
    }
}

#[test]
fn ten_minutes_at_ten_percent_loss_change_no_leader() {
    // The false-failover target: default timings, 10% random loss for 10 simulated minutes.
    let o = run(2026, 5, 615_000, lossy(0.10, 0.0, 605_000));
    assert_ok(&o);
    assert!(o.report.faults["drop_loss"] > 10_000, "loss fired: {:?}", o.report.faults);
    assert_eq!(o.report.elections.len(), 1, "{:?}", o.report.elections);
}
