//! Checkers for the faults of a long life, over the whole chat history:
//! - L3 liveness after churn: after heal, however many lives came before, every user is logged
//!   in, and chat is stored and shown again, within a bound;
//! - P1 no acknowledged loss at power loss: a private message acknowledged `stored` before a
//!   whole-cluster power cut reaches its recipient after the restart (if not shown before).

use crate::chat_check::user_of;
use crate::check::Violation;
use crate::history::{ChatHappening, ChatOp, History};
use ringchat_core::wire::{MsgId, Target};
use std::collections::{BTreeMap, BTreeSet};

/// Default L3 bound: heal (or a send after it) to a login, a `stored` or a show, microseconds.
pub const LIVE_BOUND_US: u64 = 12_000_000;

fn ms(us: u64) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

/// Users who logged in under their own name at least once (the impostor never does), less
/// those whose name someone else took after a majority lost its disks (they cannot log in).
fn honest_users(h: &History) -> BTreeSet<usize> {
    let stolen = h.stolen_names();
    h.chat
        .iter()
        .filter_map(|r| match &r.what {
            ChatHappening::Login { name, .. } if user_of(name) == Some(r.user) && !stolen.contains(&r.user) => Some(r.user),
            _ => None,
        })
        .collect()
}

/// L3 with bound `bound_us`; needs the run to last `bound_us` past heal (else it checks nothing).
pub fn check_live_after_heal(h: &History, bound_us: u64) -> Vec<Violation> {
    let mut out = Vec::new();
    let deadline = h.heal_at + bound_us;
    if h.end < deadline {
        return out;
    }
    let users = honest_users(h);
    // Logged in by the deadline, as the user's last word on it before then.
    let mut online: BTreeMap<usize, bool> = BTreeMap::new();
    let mut sent: BTreeMap<MsgId, (u64, u64, usize, Target)> = BTreeMap::new();
    let mut stored: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut shown: BTreeMap<(usize, MsgId), u64> = BTreeMap::new();
    // When each client process quit (logged out or crashed): its sends still waiting then
    // are owed no `stored` (the process is not there to be told; the message may or may not
    // have been stored, which the other checkers judge).
    let mut quit: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &h.chat {
        if matches!(r.what, ChatHappening::Logout | ChatHappening::LogoutUnconfirmed | ChatHappening::Crash) {
            quit.entry(r.process).or_insert(r.at);
        }
        match &r.what {
            ChatHappening::LoggedIn { .. } if r.at <= deadline => {
                online.insert(r.user, true);
            }
            ChatHappening::Login { .. } | ChatHappening::Logout | ChatHappening::Crash | ChatHappening::Refused if r.at <= deadline => {
                online.insert(r.user, false);
            }
            ChatHappening::Sent { id, op: ChatOp::Chat { to, .. } } if r.at >= h.heal_at => {
                sent.insert(*id, (r.at, r.process, r.user, to.clone()));
            }
            ChatHappening::Stored { id } => {
                stored.entry(*id).or_insert(r.at);
            }
            ChatHappening::Shown { id } => {
                shown.entry((r.user, *id)).or_insert(r.at);
            }
            _ => {}
        }
    }
    for u in &users {
        if online.get(u) != Some(&true) {
            out.push(Violation::new("L3", format!("user u{u} is not logged in {} after heal", ms(bound_us))));
        }
    }
    for (id, (at, process, from, to)) in &sent {
        if at + bound_us > h.end {
            continue;
        }
        let Some(&done) = stored.get(id).filter(|&&t| t <= at + bound_us) else {
            if quit.get(process).is_some_and(|&q| q <= at + bound_us) {
                continue; // its process quit before it was told
            }
            out.push(Violation::new("L3", format!("{id} sent after heal at {} was not stored within {}", ms(*at), ms(bound_us))));
            continue;
        };
        if let Target::User(name) = to {
            let Some(u) = user_of(name).filter(|u| users.contains(u) && u != from) else { continue };
            if done + bound_us <= h.end && !shown.get(&(u, *id)).is_some_and(|&t| t <= done + bound_us) {
                out.push(Violation::new(
                    "L3",
                    format!("{id} to user u{u}, stored after heal at {}, was not shown within {}", ms(done), ms(bound_us)),
                ));
            }
        }
    }
    out
}

/// P1 over every power cut of the history; `settled` says the run left time to heal.
pub fn check_power_loss(h: &History, settled: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    if !settled || h.power_cuts.is_empty() {
        return out;
    }
    let users = honest_users(h);
    let mut private: BTreeMap<MsgId, (usize, usize)> = BTreeMap::new();
    let mut stored: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut shown: BTreeMap<(usize, MsgId), Vec<u64>> = BTreeMap::new();
    for r in &h.chat {
        match &r.what {
            ChatHappening::Sent { id, op: ChatOp::Chat { to: Target::User(name), .. } } => {
                if let Some(u) = user_of(name).filter(|u| users.contains(u) && *u != r.user) {
                    private.insert(*id, (r.user, u));
                }
            }
            ChatHappening::Stored { id } => {
                stored.entry(*id).or_insert(r.at);
            }
            ChatHappening::Shown { id } => shown.entry((r.user, *id)).or_default().push(r.at),
            _ => {}
        }
    }
    for &cut in &h.power_cuts {
        for (id, &(from, to)) in &private {
            if !stored.get(id).is_some_and(|&t| t < cut) {
                continue;
            }
            let times = shown.get(&(to, *id)).map_or(&[][..], |v| v.as_slice());
            if times.iter().any(|&t| t < cut) || times.iter().any(|&t| t > cut) {
                continue;
            }
            out.push(Violation::new(
                "P1",
                format!("{id} from user u{from} to user u{to} was stored before the power cut at {} and never shown after", ms(cut)),
            ));
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

    fn login(at: u64, process: u64, user: usize) -> [ChatRecord; 2] {
        let name = format!("u{user}");
        [
            rec(at, process, user, ChatHappening::Login { name: name.clone(), token: user as u64 }),
            rec(at + 1, process, user, ChatHappening::LoggedIn { name, token: user as u64 }),
        ]
    }

    fn to_u1() -> ChatOp {
        ChatOp::Chat { to: Target::User("u1".into()), reply_to: None }
    }

    const S: u64 = 1_000_000;

    fn history(heal_s: u64, end_s: u64) -> History {
        let mut h = History { heal_at: heal_s * S, end: end_s * S, ..History::default() };
        h.chat.extend(login(0, 1, 0));
        h.chat.extend(login(0, 2, 1));
        h
    }

    #[test]
    fn chat_after_heal_that_is_never_stored_is_caught() {
        let id = MsgId { client: 1, seq: 1 };
        let mut h = history(10, 40);
        h.chat.push(rec(11 * S, 1, 0, ChatHappening::Sent { id, op: to_u1() }));
        assert_eq!(check_live_after_heal(&h, LIVE_BOUND_US).len(), 1);
        h.chat.push(rec(12 * S, 1, 0, ChatHappening::Stored { id }));
        let v = check_live_after_heal(&h, LIVE_BOUND_US);
        assert!(v[0].detail.contains("not shown"), "{v:?}");
        h.chat.push(rec(13 * S, 2, 1, ChatHappening::Shown { id }));
        assert!(check_live_after_heal(&h, LIVE_BOUND_US).is_empty());
    }

    #[test]
    fn a_send_whose_process_quit_is_owed_no_stored_but_one_still_running_is() {
        let id = MsgId { client: 1, seq: 1 };
        let mut h = history(10, 40);
        h.chat.push(rec(11 * S, 1, 0, ChatHappening::Sent { id, op: to_u1() }));
        // Another process of the same user quitting does not excuse it.
        h.chat.push(rec(12 * S, 7, 0, ChatHappening::Logout));
        let unstored = |h: &History| check_live_after_heal(h, LIVE_BOUND_US).iter().filter(|v| v.detail.contains("not stored")).count();
        assert_eq!(unstored(&h), 1);
        h.chat.push(rec(12 * S, 1, 0, ChatHappening::Logout));
        assert_eq!(unstored(&h), 0);
    }

    #[test]
    fn a_user_who_cannot_log_in_after_heal_is_caught() {
        let mut h = history(10, 40);
        h.chat.push(rec(5 * S, 2, 1, ChatHappening::Crash));
        h.chat.push(rec(11 * S, 3, 1, ChatHappening::Login { name: "u1".into(), token: 1 }));
        let v = check_live_after_heal(&h, LIVE_BOUND_US);
        assert_eq!(v.len(), 1);
        assert!(v[0].property == "L3" && v[0].detail.contains("user u1"));
        h.chat.push(rec(12 * S, 3, 1, ChatHappening::LoggedIn { name: "u1".into(), token: 1 }));
        assert!(check_live_after_heal(&h, LIVE_BOUND_US).is_empty());
    }

    #[test]
    fn a_stored_message_lost_in_a_power_cut_is_caught() {
        let id = MsgId { client: 1, seq: 1 };
        let mut h = history(20, 60);
        h.power_cuts.push(5 * S);
        h.chat.push(rec(3 * S, 1, 0, ChatHappening::Sent { id, op: to_u1() }));
        h.chat.push(rec(4 * S, 1, 0, ChatHappening::Stored { id }));
        let v = check_power_loss(&h, true);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].property, "P1");
        h.chat.push(rec(30 * S, 2, 1, ChatHappening::Shown { id }));
        assert!(check_power_loss(&h, true).is_empty());
    }
}
