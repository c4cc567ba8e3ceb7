//! Checkers of the chat guarantees (design §4) over the whole chat history.
//!
//! Happens-before is built from the simulator's own log of what each client
//! process sent and was shown (process order, send → show), never from the
//! vector clocks inside messages. A process is one client life. A send the
//! user was told failed adds no process-order edge (no promise was made).

use crate::check::Violation;
use crate::history::{ChatHappening, ChatOp, History};
use ringchat_core::wire::{MsgId, Target};
use std::collections::{BTreeMap, BTreeSet};

/// A room member is certain to receive a room message if its join was stored this long before the send
/// and it submitted no leave of that room since.
pub const ROOM_MARGIN_US: u64 = 10_000_000;

#[derive(Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn or(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
    /// First index set in `self & other & !not`.
    fn first_common(&self, other: &Bits, not: &Bits) -> Option<usize> {
        for (w, ((a, b), c)) in self.0.iter().zip(&other.0).zip(&not.0).enumerate() {
            let x = a & b & !c;
            if x != 0 {
                return Some(w * 64 + x.trailing_zeros() as usize);
            }
        }
        None
    }
}

struct OpInfo {
    id: MsgId,
    op: ChatOp,
    user: usize,
    at: u64,
}

pub(crate) fn user_of(name: &str) -> Option<usize> {
    name.strip_prefix('u')?.parse().ok()
}

/// C1, C2, C3, N1 always; M1 and M2 too when `settled` (the run left time to heal).
pub fn check_chat(h: &History, settled: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut ops: Vec<OpInfo> = Vec::new();
    let mut index: BTreeMap<MsgId, usize> = BTreeMap::new();
    let mut stored: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut failed: BTreeSet<MsgId> = BTreeSet::new();
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    let mut heard_from: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut era = 0;
    for r in &h.chat {
        if h.era(r.at) != era {
            // A majority lost its disks: the name bindings shown before may be gone.
            era = h.era(r.at);
            heard_from.clear();
        }
        match &r.what {
            ChatHappening::Sent { id, op } => {
                index.insert(*id, ops.len());
                ops.push(OpInfo { id: *id, op: op.clone(), user: r.user, at: r.at });
            }
            ChatHappening::Stored { id } => {
                stored.entry(*id).or_insert(r.at);
            }
            ChatHappening::Failed { id } => {
                failed.insert(*id);
            }
            ChatHappening::Rejected { id } => {
                failed.insert(*id);
                // R1: "no such user" never for a user whose message the sender had been shown
                // before it sent (that user's name binding is in the send's causal past).
                let Some(op) = index.get(id).map(|&i| &ops[i]) else { continue };
                if let ChatOp::Chat { to: Target::User(name), .. } = &op.op {
                    if heard_from.get(&r.process).is_some_and(|names| names.contains(name)) {
                        out.push(Violation::new(
                            "R1",
                            format!("{id} to {name} was rejected as to no such user, but its sender had been shown a message from {name}"),
                        ));
                    }
                }
            }
            ChatHappening::LoggedIn { name, .. } => {
                names.insert(r.user, name.clone());
            }
            ChatHappening::Shown { id } => {
                // A message sent before a majority disk loss may name a binding lost with it
                // (shown by a survivor that then merged into the new cluster).
                let this_era = |i: &usize| h.era(ops[*i].at) == h.era(r.at);
                if let Some(name) = index.get(id).filter(|i| this_era(i)).and_then(|&i| names.get(&ops[i].user)) {
                    heard_from.entry(r.process).or_default().insert(name.clone());
                }
            }
            _ => {}
        }
    }
    let n = ops.len();
    let mut hb: Vec<Bits> = vec![Bits::new(n); n];
    let mut past: BTreeMap<u64, Bits> = BTreeMap::new();
    let mut shows: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    // C2 is per user: a new process after a clean quit must not be shown again what an earlier one was.
    // Only a crashed process may be shown again what it never acknowledged; the history does not
    // record acknowledgements, so a crash forgives everything its process was shown.
    let mut shown_once: BTreeMap<usize, BTreeSet<MsgId>> = BTreeMap::new();
    let mut shown_by: BTreeMap<u64, Vec<MsgId>> = BTreeMap::new();
    let mut shown_to_user: BTreeSet<(usize, MsgId)> = BTreeSet::new();
    // Per era (between majority disk losses): a lost binding may be claimed again.
    let mut holders: BTreeMap<(usize, String), BTreeSet<u64>> = BTreeMap::new();
    let mut outstanding: BTreeMap<u64, BTreeSet<MsgId>> = BTreeMap::new();
    let mut crashed: BTreeSet<u64> = BTreeSet::new();
    let ms = |us: u64| format!("{:.3}ms", us as f64 / 1000.0);
    for r in &h.chat {
        let p = past.entry(r.process).or_insert_with(|| Bits::new(n));
        match &r.what {
            ChatHappening::Sent { id, .. } => {
                let i = index[id];
                hb[i] = p.clone();
                if !failed.contains(id) {
                    p.set(i);
                }
                outstanding.entry(r.process).or_default().insert(*id);
            }
            ChatHappening::Stored { id } | ChatHappening::Failed { id } | ChatHappening::Rejected { id } => {
                if let Some(o) = outstanding.get_mut(&r.process) {
                    o.remove(id);
                }
            }
            ChatHappening::Shown { id } => {
                let Some(&i) = index.get(id) else {
                    out.push(Violation::new("C3", format!("user u{} was shown {id}, which no one sent (at {})", r.user, ms(r.at))));
                    continue;
                };
                shown_by.entry(r.process).or_default().push(*id);
                if !shown_once.entry(r.user).or_default().insert(*id) {
                    out.push(Violation::new(
                        "C2",
                        format!("user u{} (client {:x}) was shown {id} twice, with no crash between (at {})", r.user, r.process, ms(r.at)),
                    ));
                }
                p.or(&hb[i]);
                p.set(i);
                shows.entry(r.process).or_default().push(i);
                shown_to_user.insert((r.user, *id));
            }
            ChatHappening::LoggedIn { name, token } => {
                holders.entry((h.era(r.at), name.clone())).or_default().insert(*token);
            }
            ChatHappening::Crash | ChatHappening::LogoutUnconfirmed => {
                crashed.insert(r.process);
                if let (Some(ids), Some(once)) = (shown_by.remove(&r.process), shown_once.get_mut(&r.user)) {
                    for id in ids {
                        once.remove(&id);
                    }
                }
            }
            _ => {}
        }
    }
    // C1: a process shown m2 is never shown an m1 ∈ past(m2) afterwards.
    for (process, list) in &shows {
        let mut all = Bits::new(n);
        for &i in list {
            all.set(i);
        }
        let mut seen = Bits::new(n);
        for &i in list {
            seen.set(i);
            if let Some(j) = hb[i].first_common(&all, &seen) {
                out.push(Violation::new(
                    "C1",
                    format!("client {process:x} was shown {} before {}, which happened before it", ops[i].id, ops[j].id),
                ));
                break;
            }
        }
    }
    // N1: one holder per name.
    for ((_, name), tokens) in &holders {
        if tokens.len() > 1 {
            out.push(Violation::new("N1", format!("name {name} was held by {} different users", tokens.len())));
        }
    }
    if !settled {
        return out;
    }
    // M2: every operation of a live client ends stored or failed.
    for (process, left) in &outstanding {
        if !crashed.contains(process) {
            if let Some(id) = left.iter().next() {
                out.push(Violation::new("M2", format!("client {process:x}: {id} was neither stored nor reported failed")));
            }
        }
    }
    // M1: every stored message is shown to each certain recipient (every user logs in after heal).
    let mut room_ops: BTreeMap<(usize, String), Vec<(u64, bool, usize)>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        match &o.op {
            ChatOp::Join(r) => room_ops.entry((o.user, r.clone())).or_default().push((o.at, true, i)),
            ChatOp::Leave(r) => room_ops.entry((o.user, r.clone())).or_default().push((o.at, false, i)),
            ChatOp::Chat { .. } => {}
        }
    }
    let users: BTreeSet<usize> = h.chat.iter().filter(|r| matches!(r.what, ChatHappening::Login { .. })).map(|r| r.user).collect();
    let stolen = h.stolen_names();
    for o in &ops {
        let ChatOp::Chat { to, .. } = &o.op else { continue };
        let Some(&stored_at) = stored.get(&o.id) else { continue };
        if h.lost_after(stored_at) {
            continue; // the majority that held it lost its disks
        }
        let recipients: Vec<usize> = match to {
            Target::User(u) => user_of(u).into_iter().collect(),
            Target::Room(room) => users
                .iter()
                .copied()
                .filter(|&u| u != o.user)
                .filter(|&u| {
                    let Some(list) = room_ops.get(&(u, room.clone())) else { return false };
                    let Some(last) = list.iter().rev().find(|(at, _, _)| *at < o.at) else { return false };
                    let join_ok =
                        last.1 && stored.get(&ops[last.2].id).is_some_and(|t| *t + ROOM_MARGIN_US < o.at && h.era(*t) == h.era(o.at));
                    let later_leave = list.iter().any(|(at, join, _)| !join && *at > last.0 && *at <= stored_at);
                    join_ok && !later_leave
                })
                .collect(),
        };
        for u in recipients {
            if u != o.user && users.contains(&u) && !stolen.contains(&u) && !shown_to_user.contains(&(u, o.id)) {
                out.push(Violation::new("M1", format!("{} from user u{} to {to} was stored but never shown to user u{u}", o.id, o.user)));
            }
        }
    }
    out
}

/// R1: servers that delivered the same messages hold the same room membership and inboxes
/// (who each message reached), whatever order they delivered them in. `finals` are each live
/// server's name, delivered vector and replicated state (rooms, inboxes).
pub fn check_converged<D: PartialEq, R: PartialEq + std::fmt::Display>(finals: &[(String, D, R)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, (a, da, ra)) in finals.iter().enumerate() {
        // Each server is compared with the first one that delivered the same messages.
        if let Some((b, _, rb)) = finals[..i].iter().find(|(_, db, _)| db == da) {
            if rb != ra {
                out.push(Violation::new("R1", format!("{b} and {a} delivered the same messages but hold {rb} and {ra}")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ChatRecord;

    fn rec(at: u64, process: u64, user: usize, what: ChatHappening) -> ChatRecord {
        ChatRecord { at, process, user, what }
    }

    fn id(client: u64, seq: u64) -> MsgId {
        MsgId { client, seq }
    }

    fn room_msg(reply_to: Option<MsgId>) -> ChatOp {
        ChatOp::Chat { to: Target::Room("r0".into()), reply_to }
    }

    fn props(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|x| x.property.as_str()).collect()
    }

    /// Ann asks, Bob (shown the question) replies; Carol is shown the reply first.
    fn question_and_reply(carol_order: [MsgId; 2]) -> History {
        let (q, a) = (id(1, 1), id(2, 1));
        let mut h = History::default();
        h.chat = vec![
            rec(1, 1, 0, ChatHappening::Sent { id: q, op: room_msg(None) }),
            rec(2, 1, 0, ChatHappening::Stored { id: q }),
            rec(3, 2, 1, ChatHappening::Shown { id: q }),
            rec(4, 2, 1, ChatHappening::Sent { id: a, op: room_msg(Some(q)) }),
            rec(5, 2, 1, ChatHappening::Stored { id: a }),
            rec(6, 3, 2, ChatHappening::Shown { id: carol_order[0] }),
            rec(7, 3, 2, ChatHappening::Shown { id: carol_order[1] }),
        ];
        h
    }

    #[test]
    fn reply_never_shown_before_question() {
        assert!(check_chat(&question_and_reply([id(1, 1), id(2, 1)]), false).is_empty());
        let bad = check_chat(&question_and_reply([id(2, 1), id(1, 1)]), false);
        assert_eq!(props(&bad), vec!["C1"]);
    }

    #[test]
    fn a_message_shown_twice_to_one_user_is_caught() {
        let mut h = question_and_reply([id(1, 1), id(2, 1)]);
        h.chat.push(rec(8, 3, 2, ChatHappening::Shown { id: id(1, 1) }));
        assert!(props(&check_chat(&h, false)).contains(&"C2"));
    }

    #[test]
    fn a_message_shown_again_to_a_new_process_after_a_clean_quit_is_caught() {
        let mut h = question_and_reply([id(1, 1), id(2, 1)]);
        h.chat.push(rec(8, 3, 2, ChatHappening::Logout));
        h.chat.push(rec(9, 4, 2, ChatHappening::LoggedIn { name: "u2".into(), token: 3 }));
        h.chat.push(rec(10, 4, 2, ChatHappening::Shown { id: id(1, 1) }));
        assert_eq!(props(&check_chat(&h, false)), vec!["C2"]);
    }

    #[test]
    fn a_crashed_process_may_be_shown_again_in_its_next_life() {
        let mut h = question_and_reply([id(1, 1), id(2, 1)]);
        h.chat.push(rec(8, 3, 2, ChatHappening::Crash));
        h.chat.push(rec(9, 4, 2, ChatHappening::LoggedIn { name: "u2".into(), token: 3 }));
        h.chat.push(rec(10, 4, 2, ChatHappening::Shown { id: id(1, 1) }));
        assert!(check_chat(&h, false).is_empty());
    }

    #[test]
    fn a_message_no_one_sent_is_caught() {
        let mut h = History::default();
        h.chat.push(rec(1, 3, 2, ChatHappening::Shown { id: id(9, 9) }));
        assert_eq!(props(&check_chat(&h, false)), vec!["C3"]);
    }

    #[test]
    fn two_users_holding_one_name_is_caught() {
        let mut h = History::default();
        h.chat.push(rec(1, 1, 0, ChatHappening::LoggedIn { name: "u0".into(), token: 5 }));
        h.chat.push(rec(2, 9, 8, ChatHappening::LoggedIn { name: "u0".into(), token: 6 }));
        assert_eq!(props(&check_chat(&h, false)), vec!["N1"]);
    }

    #[test]
    fn a_send_left_without_outcome_is_caught() {
        let mut h = History::default();
        h.chat.push(rec(1, 1, 0, ChatHappening::Sent { id: id(1, 1), op: ChatOp::Join("r0".into()) }));
        assert_eq!(props(&check_chat(&h, true)), vec!["M2"]);
        h.chat.push(rec(2, 1, 0, ChatHappening::Crash));
        assert!(check_chat(&h, true).is_empty(), "a crashed client owes nothing");
    }

    #[test]
    fn a_stored_private_message_never_shown_is_caught() {
        let mut h = History::default();
        h.chat.push(rec(0, 1, 0, ChatHappening::Login { name: "u0".into(), token: 1 }));
        h.chat.push(rec(0, 2, 1, ChatHappening::Login { name: "u1".into(), token: 2 }));
        h.chat.push(rec(1, 1, 0, ChatHappening::Sent { id: id(1, 1), op: ChatOp::Chat { to: Target::User("u1".into()), reply_to: None } }));
        h.chat.push(rec(2, 1, 0, ChatHappening::Stored { id: id(1, 1) }));
        let v = check_chat(&h, true);
        assert_eq!(props(&v), vec!["M1"]);
        // Named as everywhere else: the message `client:seq`, users by name, no debug text.
        assert_eq!(v[0].detail, "1:1 from user u0 to user u1 was stored but never shown to user u1");
        h.chat.push(rec(3, 2, 1, ChatHappening::Shown { id: id(1, 1) }));
        assert!(check_chat(&h, true).is_empty());
    }

    #[test]
    fn servers_that_delivered_the_same_but_disagree_on_a_room_are_caught() {
        fn final_of(name: &str, delivered: u64, members: &[&'static str]) -> (String, u64, String) {
            (name.to_string(), delivered, format!("[r0:[{}]]", members.join(",")))
        }
        let agree = [final_of("n0", 7, &["u1"]), final_of("n1", 7, &["u1"]), final_of("n2", 5, &[])];
        assert!(check_converged(&agree).is_empty(), "a server behind may differ");
        let split = [final_of("n0", 7, &["u1"]), final_of("n1", 5, &[]), final_of("n2", 7, &[])];
        let v = check_converged(&split);
        assert_eq!(props(&v), vec!["R1"]);
        assert_eq!(v[0].detail, "n0 and n2 delivered the same messages but hold [r0:[u1]] and [r0:[]]");
    }

    #[test]
    fn servers_that_delivered_the_same_but_reached_different_users_are_caught() {
        let inboxes = |users: &[&str]| crate::names::list(users.iter().map(|u| format!("{u}:[{}]", id(1, 1))));
        let split = [("n0".to_string(), 7, inboxes(&["u1", "u2"])), ("n1".to_string(), 7, inboxes(&["u1"]))];
        assert_eq!(props(&check_converged(&split)), vec!["R1"]);
    }
}
