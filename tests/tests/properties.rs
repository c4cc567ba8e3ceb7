//! Property tests: fault schedules kept as data (so failures shrink), and a
//! total decoder.

use proptest::prelude::*;
use ringchat_core::wire::{self, Body, CandidateKey, Envelope, Packet};
use ringchat_core::{ClusterId, Instant, NodeId, Server, ServerConfig, ServerId, ViewStamp};
use ringchat_sim::{FaultAction, FaultMode, FaultRates, Partition, Schedule, SimConfig, Workload};
use ringchat_tests::run;

const N: usize = 5;

/// A fixed RNG seed keeps CI deterministic; set `PROPTEST_RNG_SEED` to explore
/// other cases (failures are saved under `proptest-regressions/` and replayed first).
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if std::env::var("PROPTEST_RNG_SEED").is_err() {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x2026_1121);
    }
    c
}

fn action() -> impl Strategy<Value = FaultAction> {
    prop_oneof![
        (0..N).prop_map(FaultAction::Crash),
        (0..N).prop_map(FaultAction::Restart),
        (0..N).prop_map(FaultAction::Pause),
        (0..N).prop_map(FaultAction::Resume),
        proptest::collection::btree_set(0..N, 1..=2)
            .prop_map(|s| FaultAction::Partition(Partition::Symmetric { side: s.into_iter().collect() })),
        proptest::collection::btree_set(0..N, 1..=2)
            .prop_map(|s| FaultAction::Partition(Partition::OneWay { side: s.into_iter().collect() })),
        (0..N).prop_map(|node| FaultAction::Partition(Partition::IsolateOne { node })),
        Just(FaultAction::Partition(Partition::MajoritiesRing)),
        Just(FaultAction::HealPartition),
    ]
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let rates = (0.0..0.2f64, 0.0..0.1f64, 100u64..2_000, 0u64..4_000, 0u64..10_000)
        .prop_map(|(loss, duplicate, latency_us, jitter_us, drift_ppm)| FaultRates { loss, duplicate, latency_us, jitter_us, drift_ppm });
    (rates, proptest::collection::vec((500u64..14_000, action()), 0..16)).prop_map(|(rates, mut actions)| {
        actions.sort_by_key(|(at, _)| *at);
        Schedule { rates, actions, heal_ms: 15_000 }
    })
}

proptest! {
    #![proptest_config(config(128))]

    /// Whatever the faults (even a majority down for a while), safety holds
    /// throughout and after heal one live leader is agreed.
    #[test]
    fn any_fault_schedule_keeps_every_property(seed in 0u64..1_000, s in schedule()) {
        let o = run(seed, N, 30_000, FaultMode::Schedule(s));
        prop_assert!(o.report.ok, "{:#?}", o.report.violations);
    }
}

/// Chat workloads: how many users and rooms, how often they act, crash, log out, change
/// rooms and reply. Kept as data, so a failure shrinks to a small workload.
fn workload() -> impl Strategy<Value = (usize, usize, Workload)> {
    (2usize..10, 1usize..4, 50u64..400, 100u64..1_500, 0.0..0.1f64, 0.0..0.1f64, 0.02..0.3f64, 0.0..0.6f64).prop_map(
        |(clients, rooms, think_ms, think_spread_ms, crash, logout, room_change, reply)| {
            (clients, rooms, Workload { think_ms, think_spread_ms, crash, logout, room_change, reply })
        },
    )
}

proptest! {
    #![proptest_config(config(32))]

    /// Whatever the users do and whatever the faults, every chat guarantee (C1 causal order,
    /// C2 no duplicates, C3 nothing invented, M1 stored reaches every recipient, M2 nothing
    /// dropped silently, N1 unique names, B1 drained after heal) holds over the whole history.
    #[test]
    fn any_workload_and_fault_schedule_keeps_every_chat_guarantee(seed in 0u64..1_000, w in workload(), s in schedule()) {
        let (clients, rooms, workload) = w;
        let cfg = SimConfig { seed, servers: N, duration_ms: 30_000, faults: FaultMode::Schedule(s), clients, rooms, workload, ..SimConfig::default() };
        let o = ringchat_sim::run(cfg);
        prop_assert!(o.report.ok, "{:#?}", o.report.violations);
    }
}

fn valid_datagram(epoch: u64, id: u128) -> Vec<u8> {
    let from = NodeId { id: ServerId(id), incarnation: 1 };
    let key = CandidateKey { view: ViewStamp { epoch, id: 1 }, node: from };
    wire::encode(&Packet::Peer(Envelope { cluster: ClusterId(3), from, epoch, body: Body::Token { key } })).expect("fits")
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..1_500)) {
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn mutated_datagrams_never_panic_and_reencode_identically(
        epoch in 0u64..1_000, id in any::<u128>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_datagram(epoch, id);
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        if let Ok(packet) = wire::decode(&bytes) {
            let again = wire::encode(&packet).expect("a decoded packet fits");
            prop_assert_eq!(wire::decode(&again), Ok(packet));
        }
    }

    /// Garbage changes no protocol state of a server: only its counters move.
    #[test]
    fn garbage_datagrams_change_no_server_state(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..40)) {
        let addr = "10.0.0.1:7000".parse().expect("addr");
        let mut s = Server::new(ServerConfig::default(), ServerId(1), addr, None, 1, Instant(0));
        s.handle_timeout(Instant(0));
        while s.poll_transmit().is_some() {}
        let before = (s.durable().clone(), s.phase().clone(), s.leader(), s.epoch());
        let from = "10.0.0.2:7000".parse().expect("addr");
        for d in &datagrams {
            // The right version byte makes the bytes reach the postcard parser.
            let mut bytes = d.clone();
            if let Some(first) = bytes.first_mut() { *first = wire::VERSION; }
            if wire::decode(&bytes).is_ok() { continue; }
            s.handle_datagram(Instant(1), from, &bytes);
        }
        prop_assert_eq!(before, (s.durable().clone(), s.phase().clone(), s.leader(), s.epoch()));
        prop_assert!(s.poll_transmit().is_none(), "a bad datagram made the server send");
    }
}
