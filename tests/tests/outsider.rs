//! The outsider (issue 14): a host without the cluster key replays, mutates and forges
//! datagrams in the simulator; nothing it sends on the server channel gets in (O1), no answer
//! to it is larger than what it sent (O2), and it reflects nothing off a server (O3). The
//! checkers catch a server that lets unsealed view messages in, one that answers anyone in
//! full or at an address written in a body, and an unsealed cluster.

use ringchat_core::{PlantedBug, ServerConfig};
use ringchat_sim::world::outsider_on;
use ringchat_sim::{run, Outcome, SimConfig};

fn with_outsider(seed: u64, plant: Option<PlantedBug>, unsealed: bool) -> Outcome {
    let server = ServerConfig { plant, ..SimConfig::default().server };
    run(SimConfig { seed, server, clients: 8, unsealed, outsider: Some(true), ..SimConfig::default() })
}

fn fault(o: &Outcome, kind: &str) -> u64 {
    o.report.faults.get(kind).copied().unwrap_or(0)
}

#[test]
fn an_outsider_without_the_key_changes_no_server_state() {
    let kinds = [
        "outsider_replay_same",
        "outsider_replay_other",
        "outsider_mutated",
        "outsider_forged_plain",
        "outsider_forged_wrong_key",
        "outsider_garbage",
        "outsider_client",
    ];
    let mut refused = 0;
    for seed in 0..6 {
        let o = with_outsider(seed, None, false);
        assert!(o.report.ok, "seed {seed}: {:#?}", o.report.violations);
        for kind in kinds {
            assert!(fault(&o, kind) > 0, "seed {seed} sent no {kind}");
        }
        refused += fault(&o, "outsider_refused");
    }
    assert!(refused > 500, "only {refused} outsider datagrams were refused");
}

#[test]
fn a_server_that_lets_unsealed_views_in_is_caught() {
    let caught = (0..10)
        .find(|&s| with_outsider(s, Some(PlantedBug::AcceptUnsealedViews), false).report.violations.iter().any(|v| v.property == "O1"));
    assert!(caught.is_some(), "O1 never caught a server that opens plain view messages");
}

#[test]
fn a_server_that_answers_anyone_in_full_or_elsewhere_is_caught() {
    // Planted: answers to unproven requests ignore their size, and a hello is answered at the
    // address its body names. Sealed, the outsider's short status requests show the first (O2);
    // unsealed, its forged hellos show the second (O3).
    let caught = |unsealed: bool, property: &str| {
        (0..10).any(|s| with_outsider(s, Some(PlantedBug::AnswerAnyone), unsealed).report.violations.iter().any(|v| v.property == property))
    };
    assert!(caught(false, "O2"), "O2 never caught an answer larger than its request");
    assert!(caught(true, "O3"), "O3 never caught an answer reflected to an address in a body");
}

#[test]
fn an_unsealed_cluster_lets_the_outsider_in() {
    let o = with_outsider(3, None, true);
    assert!(o.report.violations.iter().any(|v| v.property == "O1"), "{:#?}", o.report.violations);
}

#[test]
fn the_outsider_is_on_in_a_share_of_swarm_seeds_only() {
    let on = (0..1000).filter(|&seed| outsider_on(&SimConfig { seed, ..SimConfig::default() })).count();
    assert!((220..380).contains(&on), "{on} of 1000 swarm seeds");
    let unsealed = (0..1000).filter(|&seed| outsider_on(&SimConfig { seed, unsealed: true, ..SimConfig::default() })).count();
    assert_eq!(unsealed, 0, "an unsealed run has no outsider unless asked for");
}

#[test]
fn same_seed_same_trace_with_an_outsider() {
    let a = with_outsider(11, None, false).report;
    let b = with_outsider(11, None, false).report;
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.faults, b.faults);
}
