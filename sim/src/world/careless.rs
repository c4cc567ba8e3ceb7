//! Client churn and careless users (long-life faults, chaos only): client processes that quit
//! cleanly or vanish without logging out (the next login is a new process, a new client id);
//! messages to users that do not exist and to rooms nobody is in; claims of another user's
//! name; long idle stretches; clean quits right after a message was shown.

use super::clients::user_name;
use super::World;
use crate::history::{ChatHappening, ChatOp};
use rand::Rng;
use ringchat_core::wire::Op;
use ringchat_core::wire::Target;

impl World {
    /// A churn or careless act instead of client slot `c`'s usual step; whether one happened.
    /// Draws nothing when both rates are zero.
    pub(super) fn life_act(&mut self, c: usize) -> bool {
        let now = self.now;
        let (churn, careless) = (self.life.client_churn, self.life.careless);
        if churn > 0.0 && self.rng.random_bool(churn) {
            let clean = self.rng.random_bool(0.5);
            self.quit(c, clean);
            return true;
        }
        if careless == 0.0 || !self.rng.random_bool(careless) {
            return false;
        }
        match self.rng.random_range(0..5) {
            0 => {
                self.count_fault("client_idle");
                self.chat.procs[c].idle_until = now + self.rng.random_range(10_000_000..60_000_000);
                true
            }
            1 => {
                self.count_fault("client_quit_after_show");
                self.chat.procs[c].quit_after_show = true;
                false
            }
            2 => {
                // Claim a name someone else holds, from a new process; refused, the user logs in
                // under their own name at a later step.
                let others: Vec<usize> = self.chat.registered.iter().copied().filter(|&u| u != c).collect();
                if others.is_empty() {
                    return false;
                }
                let victim = others[self.rng.random_range(0..others.len())];
                self.count_fault("client_name_collision");
                self.quit(c, true);
                self.chat.procs[c].offline_until = now;
                let token = self.chat.procs[c].token;
                self.login(c, user_name(victim), token);
                true
            }
            _ => false, // a careless message: see `careless_op`
        }
    }

    /// A careless message (to a user that does not exist, or to a room nobody is in), or none.
    pub(super) fn careless_op(&mut self) -> Option<(Op, ChatOp)> {
        if self.life.careless == 0.0 || !self.rng.random_bool(self.life.careless) {
            return None;
        }
        let k = self.rng.random_range(0..1_000);
        let to = if self.rng.random_bool(0.5) {
            self.count_fault("client_typo");
            Target::User(format!("uu{k}"))
        } else {
            self.count_fault("client_empty_room");
            Target::Room(format!("r{}", self.cfg.rooms + k))
        };
        let text = format!("oops {}", self.now);
        Some((Op::Chat { to: to.clone(), text }, ChatOp::Chat { to, reply_to: None }))
    }

    /// Client slot `c`'s process ends: `clean` logs out first (a quit), otherwise it vanishes
    /// (recorded as a crash: it may be shown again what it never acknowledged).
    pub(super) fn quit(&mut self, c: usize, clean: bool) {
        let now = self.now;
        self.chat.procs[c].quit_after_show = false;
        if clean {
            self.count_fault("client_quit");
            self.logout(c);
        } else {
            self.count_fault("client_vanish");
        }
        let p = &mut self.chat.procs[c];
        if clean {
            // The process goes once its logout is through (see `LoggedOut`).
            p.quitting = p.client.is_some();
        } else if let Some(cl) = p.client.take() {
            self.history.push_chat(now, cl.id(), p.user, ChatHappening::Crash);
        }
        p.offline_until = now + self.rng.random_range(500_000..10_000_000);
    }
}
