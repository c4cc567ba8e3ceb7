//! The end of a run: the final trace lines, every checker over the whole history, and the report.

use super::World;
use crate::check::{self, Violation};
use crate::history::Happening;
use crate::report::{ChatReport, ElectionRecord, Outcome, Percentiles, Report};
use ringchat_core::{Event, NodeId};

impl World {
    pub(super) fn finish(mut self) -> Outcome {
        if self.cfg.trace {
            for i in 0..self.nodes.len() {
                let line = match &self.nodes[i].server {
                    Some(s) => {
                        let st = s.status();
                        use crate::names::list;
                        let view = st.committed.as_ref().map(|v| format!("view {} {}", v.stamp.id, list(v.members.iter().map(|m| m.node))));
                        let chat = &s.durable().chat;
                        let vc = |v: &ringchat_core::time::Vc| list(v.iter().map(|(k, n)| format!("{k}:{n}")));
                        format!(
                            "final {} {} cluster {} epoch {} role {:?} leader {} {} rooms {}",
                            st.node,
                            st.phase,
                            st.cluster,
                            st.epoch,
                            st.role,
                            st.leader.map_or("none".to_string(), |l| l.to_string()),
                            view.unwrap_or_default(),
                            list(chat.state.rooms().map(|(r, m)| format!("{r}:{}", list(m))))
                        ) + &format!(
                            " counters {} causal {} inboxes {} delivered {} held {}",
                            crate::names::counters(s.counters()),
                            crate::names::counters(&chat.causal.counters),
                            list(chat.state.inboxes().iter().map(|(u, ids)| format!("{u}:{}", list(ids)))),
                            vc(&chat.causal.delivered),
                            list(chat.causal.holdback_heads().iter().map(|((o, seq), deps)| format!("{o}#{seq} after {}", vc(deps))))
                        )
                    }
                    None => "final: down".to_string(),
                };
                self.trace_line(Some(i), None, "life", || line);
            }
        }
        let mut violations = std::mem::take(&mut self.stuck);
        violations.extend(check::check_safety(&self.history));
        violations.extend(self.outsider_violations());
        let live = check::check_liveness(&self.history, self.cfg.settle_bound_ms * 1000);
        violations.extend(live.violations);
        let chat = self.chat_report();
        if self.cfg.clients > 0 {
            violations.extend(crate::chat_check::check_chat(&self.history, self.chat_settled()));
            if self.chat_settled() {
                violations.extend(self.check_trimmed());
            }
            violations.extend(self.check_converged());
            violations.extend(crate::life_check::check_power_loss(&self.history, self.chat_settled()));
            if self.cfg.life.any() {
                violations.extend(crate::life_check::check_live_after_heal(&self.history, crate::life_check::LIVE_BOUND_US));
            }
        }
        self.sample_all();
        if self.cfg.life.any() {
            violations.extend(self.meter.violations());
        }
        let mut lives: Vec<Option<NodeId>> = vec![None; self.history.servers.len()];
        let mut elections = Vec::new();
        for r in &self.history.records {
            match &r.what {
                Happening::Start { node } | Happening::Core(Event::Joined { node, .. } | Event::Left { node, .. }) => {
                    lives[r.node] = Some(*node)
                }
                Happening::Core(Event::BecameLeader { epoch, cluster }) => {
                    let life = lives[r.node].unwrap_or(NodeId { id: self.history.servers[r.node], incarnation: 0 });
                    elections.push(ElectionRecord {
                        epoch: *epoch,
                        leader: life.id.full(),
                        leader_life: life.to_string(),
                        cluster: format!("{:032x}", cluster.0),
                        at_ms: r.at as f64 / 1000.0,
                    });
                }
                _ => {}
            }
        }
        if self.rates.drift_ppm > 0 {
            let drifting = self.nodes.iter().filter(|n| n.drift_ppm != 0).count() as u64;
            self.faults.insert("clock_drift_nodes", drifting);
        }
        let report = Report {
            seed: self.cfg.seed,
            ok: violations.is_empty(),
            violations,
            trace_hash: format!("{:016x}", self.hash.0),
            events: self.events,
            servers: self.history.servers.iter().map(|s| s.full()).collect(),
            messages_by_kind: self.sent.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            faults: self.faults.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rates: self.drawn_rates.clone(),
            elections,
            final_leader: live.final_leader.map(|l: NodeId| l.id.full()),
            final_leader_life: live.final_leader.map(|l| l.to_string()),
            settle_ms: live.settle_us.map(|u| u as f64 / 1000.0),
            heal_ms: self.history.heal_at / 1000,
            duration_ms: self.cfg.duration_ms,
            chat,
            life: self.cfg.life.any().then(|| self.life.clone()),
            resources: self.meter.max.clone(),
        };
        Outcome { report, history: self.history, trace: self.trace }
    }

    /// Whether the run leaves enough time after heal for chat to settle (liveness checks apply).
    fn chat_settled(&self) -> bool {
        self.history.end.saturating_sub(self.history.heal_at) >= 15_000_000
    }

    fn chat_report(&mut self) -> Option<ChatReport> {
        if self.cfg.clients == 0 {
            return None;
        }
        let mut r = self.chat.report.clone();
        for n in &self.nodes {
            if let Some(s) = &n.server {
                let st = s.chat_stats();
                r.duplicates_suppressed += st.duplicates_suppressed;
                r.max_holdback = r.max_holdback.max(st.max_holdback);
                r.inbox_max = r.inbox_max.max(st.inbox_max);
            }
        }
        let mut d = self.chat.delays.clone();
        d.sort_unstable();
        let pct = |q: f64| if d.is_empty() { 0.0 } else { d[((d.len() - 1) as f64 * q) as usize] as f64 / 1000.0 };
        r.delivery_ms = Percentiles { p50: pct(0.5), p99: pct(0.99) };
        r.vc_bytes_per_message = if self.chat.vc_msgs == 0 { 0.0 } else { self.chat.vc_bytes as f64 / self.chat.vc_msgs as f64 };
        Some(r)
    }

    /// B1: after heal every live server has dropped acknowledged inbox entries and stable retransmission buffers.
    /// R1 over the live servers' final states (room membership and inboxes).
    fn check_converged(&self) -> Vec<Violation> {
        let finals: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.server.as_ref().map(|s| (s.node(), s.durable())))
            .map(|(life, d)| {
                let rooms = crate::names::list(d.chat.state.rooms().map(|(r, m)| format!("{r}:{}", crate::names::list(m))));
                // Inboxes as sets: servers deliver concurrent messages in different orders.
                let mut inboxes = d.chat.state.inboxes();
                inboxes.iter_mut().for_each(|(_, ids)| ids.sort_unstable());
                let inboxes = crate::names::list(inboxes.iter().map(|(u, ids)| format!("{u}:{}", crate::names::list(ids))));
                (life.to_string(), d.chat.causal.delivered.clone(), format!("rooms {rooms} inboxes {inboxes}"))
            })
            .collect();
        crate::chat_check::check_converged(&finals)
    }

    fn check_trimmed(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        // After a majority disk loss, a name someone else took pins its owner's inbox: the owner
        // can never log in to read it (each entry pins one stored message too).
        let stolen: Vec<String> = self.history.stolen_names().iter().map(|u| format!("u{u}")).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(s) = &n.server else { continue };
            let st = s.chat_stats();
            let pinned: usize = s.durable().chat.state.inboxes().iter().filter(|(u, _)| stolen.contains(u)).map(|(_, ids)| ids.len()).sum();
            if pinned > 0 && st.inbox == pinned && st.store <= pinned && st.holdback == 0 {
                continue;
            }
            if st.store > 0 || st.inbox > 0 || st.holdback > 0 {
                out.push(Violation::new(
                    "B1",
                    format!(
                        "server {} still holds {} stored, {} inbox, {} held-back messages at the end",
                        self.name_of(i),
                        st.store,
                        st.inbox,
                        st.holdback
                    ),
                ));
            }
        }
        out
    }
}
