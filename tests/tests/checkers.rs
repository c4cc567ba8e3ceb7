//! Every checker must be able to fail: each test plants one violation into a
//! real, clean history and asserts the checker reports exactly that property.

use ringchat_core::{ClusterId, Event, NodeId, View, ViewStamp};
use ringchat_sim::check::{check_liveness, check_safety};
use ringchat_sim::history::{Happening, History, Record};
use ringchat_sim::FaultMode;
use ringchat_tests::run;

/// A clean 5-server history (fault-free), with its leader's record.
fn clean() -> (History, Record) {
    let o = run(11, 5, 20_000, FaultMode::None);
    assert!(o.report.ok, "{:?}", o.report.violations);
    let lead = o.history.records.iter().find(|r| matches!(r.what, Happening::Core(Event::BecameLeader { .. }))).expect("a leader").clone();
    (o.history, lead)
}

fn leader_fields(r: &Record) -> (ClusterId, u64) {
    match r.what {
        Happening::Core(Event::BecameLeader { cluster, epoch }) => (cluster, epoch),
        _ => unreachable!("not a BecameLeader record"),
    }
}

fn properties(h: &History) -> Vec<String> {
    let mut p: Vec<String> = check_safety(h).into_iter().map(|v| v.property).collect();
    p.extend(check_liveness(h, 10_000_000).violations.into_iter().map(|v| v.property));
    p.sort();
    p.dedup();
    p
}

fn other_node(r: &Record) -> usize {
    (r.node + 1) % 5
}

#[test]
fn clean_history_passes_every_checker() {
    let (h, _) = clean();
    assert!(properties(&h).is_empty());
}

#[test]
fn s1_catches_two_leaders_in_one_epoch() {
    let (mut h, lead) = clean();
    let (cluster, epoch) = leader_fields(&lead);
    h.push(lead.at + 1, other_node(&lead), Happening::Core(Event::BecameLeader { cluster, epoch }));
    assert!(properties(&h).contains(&"S1".to_string()));
}

#[test]
fn s2_catches_disagreement_on_the_leader() {
    let (mut h, lead) = clean();
    let (cluster, epoch) = leader_fields(&lead);
    let impostor = NodeId { id: h.servers[other_node(&lead)], incarnation: 1 };
    h.push(lead.at + 1, other_node(&lead), Happening::Core(Event::LeaderLearned { cluster, epoch, leader: impostor }));
    assert_eq!(check_safety(&h).iter().map(|v| v.property.as_str()).collect::<Vec<_>>(), vec!["S2"]);
}

#[test]
fn s3_catches_an_epoch_going_backwards() {
    let (mut h, lead) = clean();
    let (cluster, epoch) = leader_fields(&lead);
    h.push(lead.at + 1, lead.node, Happening::Core(Event::EpochAdopted { cluster, epoch: epoch + 3 }));
    h.push(lead.at + 2, lead.node, Happening::Core(Event::EpochAdopted { cluster, epoch: epoch + 2 }));
    assert!(check_safety(&h).iter().any(|v| v.property == "S3"));
}

#[test]
fn s4_catches_two_votes_in_one_epoch() {
    let (mut h, lead) = clean();
    let (cluster, epoch) = leader_fields(&lead);
    let voter = other_node(&lead);
    let a = NodeId { id: h.servers[lead.node], incarnation: 1 };
    let b = NodeId { id: h.servers[voter], incarnation: 1 };
    h.push(lead.at + 1, voter, Happening::Core(Event::Voted { cluster, epoch: epoch + 5, leader: a }));
    h.push(lead.at + 2, voter, Happening::Crash);
    h.push(lead.at + 3, voter, Happening::Start { node: NodeId { incarnation: 2, ..b } });
    h.push(lead.at + 4, voter, Happening::Core(Event::Voted { cluster, epoch: epoch + 5, leader: b }));
    assert!(check_safety(&h).iter().any(|v| v.property == "S4"), "votes across a restart must be caught");
}

#[test]
fn s5_catches_a_stale_leader_action() {
    let (mut h, lead) = clean();
    let (cluster, epoch) = leader_fields(&lead);
    let n = other_node(&lead);
    h.push(lead.at + 1, n, Happening::Core(Event::EpochAdopted { cluster, epoch: epoch + 1 }));
    h.push(lead.at + 2, n, Happening::Core(Event::LeaderActionApplied { cluster, epoch, seen: epoch }));
    assert!(check_safety(&h).iter().any(|v| v.property == "S5"));
}

#[test]
fn v1_catches_two_member_lists_for_one_view() {
    let (mut h, lead) = clean();
    let (cluster, _) = leader_fields(&lead);
    let installed = h
        .records
        .iter()
        .find_map(|r| match &r.what {
            Happening::Core(Event::ViewInstalled { view, .. }) => Some(view.clone()),
            _ => None,
        })
        .expect("a view");
    let mut forged = installed.clone();
    forged.members.pop();
    let n = other_node(&lead);
    h.push(lead.at + 1, n, Happening::Core(Event::ViewInstalled { cluster, view: View::new(forged.stamp, forged.members) }));
    assert!(check_safety(&h).iter().any(|v| v.property == "V1"));
}

#[test]
fn v1_catches_views_installed_out_of_order() {
    let (mut h, lead) = clean();
    let (cluster, _) = leader_fields(&lead);
    let n = other_node(&lead);
    let members =
        vec![ringchat_core::Member { node: NodeId { id: h.servers[n], incarnation: 1 }, addr: "10.9.9.9:1".parse().expect("addr") }];
    h.push(
        lead.at + 1,
        n,
        Happening::Core(Event::ViewInstalled { cluster, view: View::new(ViewStamp { epoch: 90, id: 90 }, members.clone()) }),
    );
    h.push(lead.at + 2, n, Happening::Core(Event::ViewInstalled { cluster, view: View::new(ViewStamp { epoch: 90, id: 89 }, members) }));
    assert!(check_safety(&h).iter().any(|v| v.property == "V1"));
}

#[test]
fn l1_catches_no_leader_after_heal() {
    let (mut h, lead) = clean();
    // The leader steps down right at heal and nobody replaces it.
    let (cluster, epoch) = leader_fields(&lead);
    h.records.retain(|r| r.at < h.heal_at);
    h.push(h.heal_at, lead.node, Happening::Core(Event::SteppedDown { cluster, epoch }));
    assert!(check_liveness(&h, 10_000_000).violations.iter().any(|v| v.property == "L1"));
}

#[test]
fn l1_catches_agreement_that_comes_too_late() {
    let (mut h, _) = clean();
    // Pretend chaos ended before the cluster was even formed: agreement then comes late.
    h.heal_at = 0;
    let bound_us = 100;
    assert!(check_liveness(&h, bound_us).violations.iter().any(|v| v.property == "L1"));
}

#[test]
fn l2_catches_a_new_epoch_after_agreement() {
    let (mut h, lead) = clean();
    let (cluster, epoch) = leader_fields(&lead);
    let at = h.heal_at + 1_000;
    h.push(at, other_node(&lead), Happening::Core(Event::EpochAdopted { cluster, epoch: epoch + 1 }));
    assert!(check_liveness(&h, 10_000_000).violations.iter().any(|v| v.property == "L2"));
}
