//! The faults of a long life (issue 13): they fire, replay bit-identically, and the checkers that
//! watch them reject bad histories.

use ringchat_core::wire::{MsgId, Target};
use ringchat_sim::chat_check::check_chat;
use ringchat_sim::history::{ChatHappening, ChatOp, ChatRecord, History};
use ringchat_sim::life_check::{check_live_after_heal, check_power_loss, LIVE_BOUND_US};
use ringchat_sim::resources::{Meter, Resources};
use ringchat_sim::{run, LifeFaults, SimConfig};

const S: u64 = 1_000_000;

fn life_run(seed: u64, life: LifeFaults) -> ringchat_sim::Outcome {
    run(SimConfig { seed, clients: 6, duration_ms: 40_000, life, ..SimConfig::default() })
}

fn fired(o: &ringchat_sim::Outcome, kind: &str) -> u64 {
    o.report.faults.get(kind).copied().unwrap_or(0)
}

#[test]
fn each_long_life_fault_fires_and_replays_bit_identically() {
    let cases: [(LifeFaults, &[&str]); 4] = [
        (LifeFaults { churn: true, ..LifeFaults::default() }, &["crash", "restart"]),
        (LifeFaults { disk_loss: true, ..LifeFaults::default() }, &["disk_loss"]),
        (LifeFaults { power_loss: true, ..LifeFaults::default() }, &["power_cut", "power_restore"]),
        (LifeFaults { careless: true, ..LifeFaults::default() }, &["client_typo", "client_empty_room"]),
    ];
    for (life, kinds) in cases {
        let a = life_run(5, life);
        let b = life_run(5, life);
        assert_eq!(a.report.trace_hash, b.report.trace_hash, "{life:?} does not replay");
        for kind in kinds {
            assert!(fired(&a, kind) > 0, "{life:?}: no {kind} fired: {:?}", a.report.faults);
        }
        assert!(a.report.life.is_some(), "the report prints the long-life rates");
    }
}

/// A run whose servers write as the real driver does, power cuts included.
fn power_run(seed: u64, plant: Option<ringchat_core::PlantedBug>) -> ringchat_sim::Outcome {
    let cfg = SimConfig {
        seed,
        clients: 6,
        duration_ms: 40_000,
        life: LifeFaults { power_loss: true, ..LifeFaults::default() },
        ..SimConfig::default()
    };
    run(SimConfig { server: ringchat_core::ServerConfig { plant, ..cfg.server.clone() }, ..cfg })
}

#[test]
fn a_show_waits_until_a_majority_has_the_message_on_disk() {
    // Copies leave before the sender's chat log is durable; a server that took one as the
    // sender's claim to hold the message shows it while fewer disks than a majority hold it.
    let caught = (0..20)
        .find(|&s| power_run(s, Some(ringchat_core::PlantedBug::CopyClaimsHolds)).report.violations.iter().any(|v| v.property == "P2"));
    let seed = caught.expect("P2 never caught a show made on a copy's claim");
    let honest = power_run(seed, None);
    assert!(honest.report.ok, "seed {seed}: {:#?}", honest.report.violations);
    assert!(fired(&honest, "power_cut") > 0);
    // A server that shows what it alone holds is caught at once.
    let unstable = power_run(seed, Some(ringchat_core::PlantedBug::ShowUnstable));
    assert!(unstable.report.violations.iter().any(|v| v.property == "P2"), "{:#?}", unstable.report.violations);
}

#[test]
fn long_life_swarm_replays_bit_identically_and_draws_per_seed() {
    let swarm = LifeFaults { swarm: true, ..LifeFaults::default() };
    let (a, b) = (life_run(11, swarm), life_run(11, swarm));
    assert_eq!(a.report.trace_hash, b.report.trace_hash);
    let rates: Vec<_> = (0..6).map(|s| life_run(s, swarm).report.life).collect();
    assert!(rates.windows(2).any(|w| w[0] != w[1]), "each seed draws its own long-life rates");
}

#[test]
fn long_life_faults_off_leave_a_run_unchanged() {
    let plain = run(SimConfig { seed: 7, clients: 6, duration_ms: 20_000, ..SimConfig::default() });
    assert!(plain.report.life.is_none());
    assert!(plain.report.resources.durable_bytes > 0, "resources are measured in every run");
    assert!(!plain.report.faults.keys().any(|k| k.starts_with("client_") || k.starts_with("power") || k == "disk_loss"));
}

fn rec(at: u64, process: u64, user: usize, what: ChatHappening) -> ChatRecord {
    ChatRecord { at, process, user, what }
}

fn logged_in(h: &mut History, at: u64, process: u64, user: usize) {
    let name = format!("u{user}");
    h.chat.push(rec(at, process, user, ChatHappening::Login { name: name.clone(), token: user as u64 }));
    h.chat.push(rec(at, process, user, ChatHappening::LoggedIn { name, token: user as u64 }));
}

fn to_user(u: usize) -> ChatOp {
    ChatOp::Chat { to: Target::User(format!("u{u}")), reply_to: None }
}

#[test]
fn a_message_shown_again_after_a_clean_quit_breaks_c2_but_not_after_a_crash() {
    let m = MsgId { client: 1, seq: 1 };
    let mut h = History::default();
    logged_in(&mut h, 0, 1, 0);
    logged_in(&mut h, 0, 2, 1);
    h.chat.push(rec(1, 1, 0, ChatHappening::Sent { id: m, op: to_user(1) }));
    h.chat.push(rec(2, 1, 0, ChatHappening::Stored { id: m }));
    h.chat.push(rec(3, 2, 1, ChatHappening::Shown { id: m }));
    let mut quit = h.clone();
    quit.chat.push(rec(4, 2, 1, ChatHappening::Logout));
    logged_in(&mut quit, 5, 3, 1);
    quit.chat.push(rec(6, 3, 1, ChatHappening::Shown { id: m }));
    assert!(check_chat(&quit, false).iter().any(|v| v.property == "C2"));
    let mut crash = h;
    crash.chat.push(rec(4, 2, 1, ChatHappening::Crash));
    logged_in(&mut crash, 5, 3, 1);
    crash.chat.push(rec(6, 3, 1, ChatHappening::Shown { id: m }));
    assert!(check_chat(&crash, false).is_empty());
}

#[test]
fn a_cluster_that_stops_after_heal_breaks_l3() {
    let m = MsgId { client: 1, seq: 1 };
    let mut h = History { heal_at: 10 * S, end: 40 * S, ..History::default() };
    logged_in(&mut h, 0, 1, 0);
    logged_in(&mut h, 0, 2, 1);
    h.chat.push(rec(11 * S, 1, 0, ChatHappening::Sent { id: m, op: to_user(1) }));
    let v = check_live_after_heal(&h, LIVE_BOUND_US);
    assert!(!v.is_empty() && v.iter().all(|v| v.property == "L3"), "{v:?}");
    h.chat.push(rec(12 * S, 1, 0, ChatHappening::Stored { id: m }));
    h.chat.push(rec(12 * S, 2, 1, ChatHappening::Shown { id: m }));
    assert!(check_live_after_heal(&h, LIVE_BOUND_US).is_empty());
}

#[test]
fn a_stored_message_lost_in_a_power_cut_breaks_p1() {
    let m = MsgId { client: 1, seq: 1 };
    let mut h = History { heal_at: 20 * S, end: 60 * S, power_cuts: vec![5 * S], ..History::default() };
    logged_in(&mut h, 0, 1, 0);
    logged_in(&mut h, 0, 2, 1);
    h.chat.push(rec(3 * S, 1, 0, ChatHappening::Sent { id: m, op: to_user(1) }));
    h.chat.push(rec(4 * S, 1, 0, ChatHappening::Stored { id: m }));
    let v = check_power_loss(&h, true);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].property, "P1");
    h.chat.push(rec(25 * S, 2, 1, ChatHappening::Shown { id: m }));
    assert!(check_power_loss(&h, true).is_empty());
}

#[test]
fn state_that_grows_with_lives_breaks_b2() {
    let bound = Resources::bound(5, 9, 3);
    let mut meter = Meter::new(bound.clone());
    // A durable delivered vector that gains an origin per server life.
    for life in 0..40u64 {
        meter.note(0, life * S, &Resources { vc_origins: 5 + life, ..Resources::default() });
    }
    let v = meter.violations();
    assert_eq!(v.len(), 1);
    assert!(v[0].property == "B2" && v[0].detail.contains("vc_origins"), "{v:?}");
    let mut fine = Meter::new(bound);
    fine.note(0, 0, &Resources { vc_origins: 10, dedup_clients: 20, names: 9, ..Resources::default() });
    assert!(fine.violations().is_empty());
}

#[test]
fn a_survivor_stranded_by_a_majority_disk_loss_merges_and_the_cluster_recovers() {
    // `ringchat sim --seed 0 --disk-loss`: servers 0, 1 and 4 crash together and come back with
    // their disks lost; servers 2 and 3 keep a view of five whose majority never returns. Before
    // stranded servers merged, server 2 stayed leaderless to the end (L1, L3).
    let o =
        run(SimConfig { seed: 0, clients: 8, life: LifeFaults { majority_loss: true, ..LifeFaults::default() }, ..SimConfig::default() });
    assert_eq!(fired(&o, "majority_disk_loss"), 1, "{:?}", o.report.faults);
    assert!(o.report.ok, "{:#?}", o.report.violations);
    assert!(o.history.majority_losses.len() == 1);
}

#[test]
fn a_majority_disk_loss_excuses_only_what_the_lost_majority_held() {
    // A message stored before the loss may be lost with the disks; one stored after it may not.
    let (before, after) = (MsgId { client: 1, seq: 1 }, MsgId { client: 1, seq: 2 });
    let mut h = History { heal_at: 20 * S, end: 60 * S, majority_losses: vec![5 * S], ..History::default() };
    logged_in(&mut h, 0, 1, 0);
    logged_in(&mut h, 0, 2, 1);
    h.chat.push(rec(3 * S, 1, 0, ChatHappening::Sent { id: before, op: to_user(1) }));
    h.chat.push(rec(4 * S, 1, 0, ChatHappening::Stored { id: before }));
    assert!(check_chat(&h, true).is_empty(), "{:?}", check_chat(&h, true));
    h.chat.push(rec(6 * S, 1, 0, ChatHappening::Sent { id: after, op: to_user(1) }));
    h.chat.push(rec(7 * S, 1, 0, ChatHappening::Stored { id: after }));
    let v = check_chat(&h, true);
    assert_eq!(v.iter().map(|v| v.property.as_str()).collect::<Vec<_>>(), vec!["M1"], "{v:?}");
    // A name claimed again after the loss is no N1 violation; two holders after it still are.
    let mut names = History { majority_losses: vec![5 * S], ..History::default() };
    let claim = |h: &mut History, at: u64, process: u64, user: usize| {
        h.chat.push(rec(at, process, user, ChatHappening::LoggedIn { name: "u0".into(), token: user as u64 }));
    };
    claim(&mut names, S, 1, 0);
    claim(&mut names, 6 * S, 2, 7);
    assert!(check_chat(&names, false).is_empty());
    claim(&mut names, 7 * S, 3, 0);
    assert_eq!(check_chat(&names, false).iter().map(|v| v.property.as_str()).collect::<Vec<_>>(), vec!["N1"]);
}
