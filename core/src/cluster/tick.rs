//! Timed work and failure detection: heartbeats (with the anti-entropy digest), the phase
//! timers of discovery and joining, and suspicion of a silent leader.

use super::*;

impl Server {
    pub(super) fn on_tick(&mut self) {
        let now = self.now;
        match self.phase.clone() {
            Phase::Left => {}
            Phase::Discovering { until } => {
                if now >= self.next_hello {
                    self.next_hello = now.plus_ms(self.cfg.hello_ms);
                    self.send_discovery(Body::Hello { addr: self.me.addr, founding: true });
                }
                if now >= until {
                    let in_sight = self.discovered.len() + 1;
                    if self.cfg.expect.into_iter().chain(self.gave_up_on).any(|n| 2 * in_sight <= n) {
                        // Not a majority of the cluster in sight: another side may found it.
                        self.phase = Phase::Discovering { until: now.plus_ms(self.cfg.discovery_window_ms) };
                    } else {
                        self.phase = Phase::Founding;
                        self.start_election();
                    }
                }
            }
            Phase::Joining { since, leader } => {
                let give_up_us = self.cfg.join_give_up_ms * 1000;
                let heard_any = self.latest.as_ref().is_some_and(|v| {
                    v.members.iter().any(|m| m.node.id != self.me.node.id && !self.fd.is_suspected(m.node, now, give_up_us))
                });
                if heard_any || self.is_voter() {
                    // Our cluster is alive, or we hold a vote in its view (the cluster may
                    // need it for a majority, and voters can elect among themselves even if
                    // every server restarted): keep trying, and push the give-up deadline on.
                    if let Phase::Joining { since, .. } = &mut self.phase {
                        *since = now;
                    }
                } else if now.since(since) > give_up_us {
                    // Nobody of our cluster answers: found anew (a later merge reunites). Its
                    // founding vote of long ago names the cluster it gives up: dropped, or the
                    // first message of that cluster would take it back in as a founding member.
                    // It founds only with a majority of that cluster in sight: it may only be
                    // cut off from a cluster that lives on, which a founding with fewer would
                    // split in two, each going on with one history.
                    let size = self.latest.as_ref().map(|v| v.members.len()).or(self.gave_up_on);
                    self.enter_cluster(ClusterId::NONE);
                    self.gave_up_on = size;
                    self.drop_founding_vote();
                    self.phase = Phase::Discovering { until: now.plus_ms(self.cfg.discovery_window_ms) };
                    return;
                }
                if now >= self.next_hello {
                    self.next_hello = now.plus_ms(self.cfg.hello_ms);
                    match leader {
                        Some(l) => self.send(l.addr, Body::JoinRequest { addr: self.me.addr }, false),
                        None => self.send_discovery(Body::Hello { addr: self.me.addr, founding: false }),
                    }
                }
                if self.is_voter() {
                    // A restarted server still votes for its old life (its vote and view are
                    // durable): it heartbeats and takes part in elections meanwhile.
                    self.member_tick();
                }
            }
            Phase::Founding | Phase::Member => self.member_tick(),
        }
    }

    pub(super) fn member_tick(&mut self) {
        let now = self.now;
        let beat = now >= self.next_heartbeat;
        if beat {
            self.next_heartbeat = now.plus_ms(self.cfg.heartbeat_ms);
            let committed = self.committed.as_ref().map(|c| c.stamp).unwrap_or_default();
            let leader = self.leader;
            let to: Vec<SocketAddr> = self.others().iter().map(|m| m.addr).collect();
            let latest = self.latest.as_ref().map(|v| v.stamp).unwrap_or_default();
            let digest = self.durable.chat.causal.delivered.clone();
            self.send_all(&to, Body::Heartbeat { leader, committed, latest, digest });
        }
        if self.phase == Phase::Founding && now >= self.next_hello {
            self.next_hello = now.plus_ms(self.cfg.hello_ms);
            self.send_discovery(Body::Hello { addr: self.me.addr, founding: true });
        }
        self.retry_hops();
        self.watch_quorum();
        self.with_chat(|c, d, cx, out| c.tick(d, cx, out));
        if self.role == Role::Leader {
            self.leader_tick();
            return;
        }
        if beat && self.role == Role::Candidate {
            self.resend_elected();
        }
        if let Some(l) = self.leader {
            if self.fd.is_suspected(l, now, self.suspect_us()) {
                self.leader = None;
                let (cluster, epoch) = (self.durable.cluster, self.epoch());
                self.emit(Event::LeaderLost { cluster, epoch });
            }
        }
        if self.leader.is_some() {
            return;
        }
        if self.election.deadline.is_some_and(|d| now >= d) {
            // No leader came of it: back off, then try a higher epoch.
            self.election.deadline = None;
            self.election.participant = false;
            if self.role == Role::Candidate {
                self.role = Role::Follower;
                self.candidacy = None;
            }
        }
        if self.election.start_at.is_none() && self.election.deadline.is_none() {
            self.election.start_at = Some(self.random_backoff());
        }
        if self.election.start_at.is_some_and(|t| now >= t) {
            self.start_election();
        }
    }

    pub(super) fn on_heartbeat(
        &mut self,
        sender: NodeId,
        from: SocketAddr,
        epoch: u64,
        leader: Option<NodeId>,
        committed: ViewStamp,
        latest: ViewStamp,
    ) {
        self.fd.heard(sender, self.now);
        // A voter behind our installed view (e.g. restarted with an old one): tell it, so its
        // ring and up-to-date check stop using the stale view. Before any view is installed (every
        // server restarted, after a power cut), our latest view: a voter left out of the last views
        // would otherwise pass every candidate's token to the members of its old view, never back
        // to the candidate, and no election would ever complete (seed 3207).
        let ours = match self.phase {
            Phase::Member => self.committed.as_ref(),
            _ if self.is_voter() => self.latest.as_ref(),
            _ => None,
        };
        if let Some(view) = ours.filter(|v| latest < v.stamp && self.role != Role::Leader).cloned() {
            self.send(from, Body::ViewInfo { view }, false);
        }
        let my_epoch = self.epoch();
        if leader == Some(sender) {
            if epoch < my_epoch {
                self.counters.stale_epoch += 1;
                return;
            }
            if !self.learn_leader(sender, epoch) {
                return;
            }
            if self.committed.as_ref().map_or(true, |c| c.stamp < committed) {
                self.send(from, Body::ViewRequest, false);
            }
            return;
        }
        if self.leader.is_some_and(|l| l.id == sender.id) {
            // Our leader says it no longer leads (it stepped down, or restarted as a new life).
            self.leader = None;
            let (cluster, epoch) = (self.durable.cluster, self.epoch());
            self.emit(Event::LeaderLost { cluster, epoch });
        }
        if self.role == Role::Leader {
            if epoch > my_epoch {
                self.step_down();
            } else if let Some(c) = self.committed.clone() {
                if committed < c.stamp {
                    self.send(from, Body::ViewCommit { view: c }, true);
                }
            }
        }
    }
}
