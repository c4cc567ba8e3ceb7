//! Discovery, founding and merging: how a server finds a cluster (or founds one with the
//! servers it found), asks to join it, and merges into a larger cluster it meets.

use super::*;

impl Server {
    /// A server says hello from `from`: a member answers there (the datagram's source, never
    /// the address written in it: no reflection), a founder notes it at `addr`.
    pub(super) fn on_hello(&mut self, sender: NodeId, from: SocketAddr, addr: SocketAddr, founding: bool) {
        self.note_replaced(sender, from, addr);
        match self.phase {
            Phase::Member => {
                let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
                let view_size = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
                let to = if self.cfg.plant == Some(PlantedBug::AnswerAnyone) { addr } else { from }; // the planted bug
                self.send(to, Body::Welcome { leader, view_size }, false);
            }
            Phase::Discovering { .. } | Phase::Founding if founding => {
                // One entry per server: its latest life (an older life is gone).
                if self.discovered.get(&sender.id).is_none_or(|m| m.node.incarnation <= sender.incarnation) {
                    self.discovered.insert(sender.id, Member { node: sender, addr });
                }
            }
            _ => {}
        }
    }

    /// A member of `cluster` told us about itself: join it if we have no
    /// cluster, or merge into it if it is bigger than ours (smaller joins larger).
    pub(super) fn consider_cluster(&mut self, cluster: ClusterId, leader: Option<Member>, size: u32) {
        if cluster == ClusterId::NONE {
            return;
        }
        let my_founder = self.founded_by_my_vote() == Some(cluster);
        let stranded = self.stranded();
        match &mut self.phase {
            // The candidate we accepted founded it: its view proposal is on its way.
            Phase::Founding if my_founder && self.election.deadline.is_some() => {}
            // A cluster without a leader cannot admit anyone: keep looking.
            Phase::Discovering { .. } | Phase::Founding if leader.is_none() => {}
            Phase::Discovering { .. } | Phase::Founding => {
                self.enter_cluster(cluster);
                self.start_founded_chat();
                self.phase = Phase::Joining { since: self.now, leader };
            }
            Phase::Joining { since, leader: hint } if cluster == self.durable.cluster => {
                // Our cluster answers, so it is alive even if it cannot admit us yet (its leader
                // is cut off, or it has no majority): keep trying. Founding anew now would
                // make a cluster of our own that takes chat its majority never saw.
                *since = self.now;
                if leader.is_some() {
                    *hint = leader;
                }
            }
            // Stranded (no leader, no majority of our view in sight for a while): our cluster
            // cannot act, and may never again (its majority restarted without state). Merge
            // into a cluster that can, whatever its size; a cluster with a leader never does
            // this, so two clusters never swap members (design §5).
            Phase::Member | Phase::Joining { .. } if stranded && leader.is_some() && cluster != self.durable.cluster => {
                self.leave_for(cluster, leader);
            }
            Phase::Member if cluster != self.durable.cluster => {
                let mine = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
                if (size, cluster) > (mine, self.durable.cluster) {
                    self.leave_for(cluster, leader);
                }
            }
            _ => {}
        }
    }

    /// Whether this server is stranded in its cluster: a member (or a restarted voter) that has
    /// had no leader and no majority of its latest view in sight for `join_give_up_ms`. Only a
    /// stranded server leaves its cluster for a smaller one.
    pub(super) fn stranded(&self) -> bool {
        let eligible = self.phase == Phase::Member || (matches!(self.phase, Phase::Joining { .. }) && self.is_voter());
        eligible && self.leader.is_none() && self.role != Role::Leader && self.now.since(self.quorum_at) > self.cfg.join_give_up_ms * 1000
    }

    /// Notes whether a leader or a majority of the latest view is in sight now (heard within
    /// the suspicion timeout); stranded is measured from the last time one was. While
    /// stranded, asks the join list and the discovery group for clusters (`Hello`) once per
    /// beacon period, so a cluster that can take us answers even if its beacons miss us.
    pub(super) fn watch_quorum(&mut self) {
        let now = self.now;
        let in_sight = self.latest.as_ref().is_none_or(|v| {
            let heard = v
                .members
                .iter()
                .filter(|m| m.node.id == self.me.node.id || self.fd.last_heard(m.node).is_some_and(|t| now.since(t) <= self.suspect_us()))
                .count();
            v.is_majority(heard)
        });
        if in_sight || self.leader.is_some() || self.role == Role::Leader {
            self.quorum_at = now;
        } else if self.stranded() && self.cannot_reach_majority() {
            // Our cluster can never act again: found anew with the servers we hear.
            self.found_anew();
        } else if self.stranded() && now >= self.next_hello {
            self.next_hello = now.plus_ms(self.cfg.beacon_ms);
            self.send_discovery(Body::Hello { addr: self.me.addr, founding: false });
        }
    }

    /// A server `sender` spoke from `from` (or says it listens at `addr`): if that is the address
    /// of another server of our latest view, that member's process is gone for good.
    fn note_replaced(&mut self, sender: NodeId, from: SocketAddr, addr: SocketAddr) {
        let Some(view) = self.latest.as_ref() else { return };
        let gone =
            view.members.iter().find(|m| m.node.id != sender.id && m.node.id != self.me.node.id && (m.addr == from || m.addr == addr));
        if let Some(m) = gone {
            self.replaced.insert(m.node.id);
        }
    }

    /// Whether the members of our latest view not known gone for good (see `replaced`) are
    /// too few for a majority: no wait can make the cluster act again.
    fn cannot_reach_majority(&self) -> bool {
        let Some(view) = self.latest.as_ref() else { return false };
        let possible = view.members.iter().filter(|m| !self.replaced.contains(&m.node.id)).count();
        !view.is_majority(possible)
    }

    /// A stranded server whose cluster cannot reach a majority ever again leaves it and
    /// discovers as a new life: it founds with the servers it hears (those that came back
    /// without their disks among them). The cluster it founds or joins has another history, so
    /// its chat starts over as in a merge, carrying what users are owed.
    fn found_anew(&mut self) {
        let old = self.durable.cluster;
        self.step_down();
        if self.phase == Phase::Member {
            self.emit(Event::Left { cluster: old, node: self.me.node });
        }
        self.new_life();
        self.enter_cluster(ClusterId::NONE);
        self.drop_founding_vote();
        self.start_chat_over();
        self.phase = Phase::Discovering { until: self.now.plus_ms(self.cfg.discovery_window_ms) };
    }

    /// While a founder's cluster forms, its founding servers (still without a
    /// cluster) and its first members talk across the change of cluster id: a
    /// founding server that accepted the founder moves into its cluster on its
    /// first message (keeping its founding view), and members accept founding
    /// messages from servers of their view.
    pub(super) fn founding_compatible(&mut self, cluster: ClusterId, sender: NodeId) -> bool {
        let mine = self.durable.cluster;
        if mine == ClusterId::NONE && self.phase == Phase::Founding && self.founded_by_my_vote() == Some(cluster) {
            self.carry_record_into(cluster);
            self.durable.cluster = cluster;
            self.start_founded_chat();
            return true;
        }
        cluster == ClusterId::NONE && self.founded_by_my_vote() == Some(mine) && self.in_view(sender)
    }

    /// The cluster founded by the candidate we accepted, if any.
    pub(super) fn founded_by_my_vote(&self) -> Option<ClusterId> {
        self.record().vote.map(|(e, l)| ClusterId::founded_by(l, e))
    }

    /// Carries the current epoch record into `cluster` (founding: the vote for its
    /// founder counts there), never lowering a record already there.
    pub(super) fn carry_record_into(&mut self, cluster: ClusterId) {
        let rec = self.record();
        let dst = self.durable.epochs.entry(cluster).or_default();
        if rec.epoch > dst.epoch {
            *dst = rec;
        }
    }

    /// A server asks to join from `from`, listening at `addr`: answers go to `from` (the
    /// datagram's source, never the address written in it); a joiner is admitted at `addr`.
    pub(super) fn on_join_request(&mut self, sender: NodeId, from: SocketAddr, addr: SocketAddr) {
        self.note_replaced(sender, from, addr);
        if self.role == Role::Leader {
            if self.committed.as_ref().is_some_and(|v| v.contains(sender)) {
                let view = self.committed.clone().expect("checked above"); // invariant
                self.send(from, Body::ViewCommit { view }, true);
            } else {
                self.joiners.insert(sender.id, Member { node: sender, addr });
            }
        } else if self.phase == Phase::Member {
            let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
            let view_size = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
            self.send(from, Body::Welcome { leader, view_size }, false);
        }
        if self.role != Role::Leader && self.is_voter() {
            // A new life of a member of our latest view that never learnt the view (it crashed
            // between asking to join and the view that admitted it) asks a leader that is gone.
            // Tell it the view: it votes (its epoch records survived with its disk), and without
            // its vote the others may be no majority of the view, and nobody could elect.
            if let Some(view) = self.latest.as_ref().filter(|v| v.by_server(sender.id).is_some()).cloned() {
                self.send(from, Body::ViewInfo { view }, false);
            }
        }
    }

    /// Drops all view state and asks to join `cluster` as a new incarnation.
    pub(super) fn leave_for(&mut self, cluster: ClusterId, leader: Option<Member>) {
        let old = self.durable.cluster;
        let size = self.latest.as_ref().map(|v| v.members.len()).or(self.gave_up_on);
        self.step_down();
        self.emit(Event::Left { cluster: old, node: self.me.node });
        self.new_life();
        self.enter_cluster(cluster);
        self.gave_up_on = size;
        self.phase = Phase::Joining { since: self.now, leader };
        if cluster != old {
            // A merge: chat starts over in the other cluster's history.
            self.start_chat_over();
        }
    }

    /// Forgets the founding vote of the record for "no cluster" (it names a cluster given up),
    /// moving its epoch past the vote's: a vote in one founding epoch is never given twice.
    pub(super) fn drop_founding_vote(&mut self) {
        let rec = self.record_mut();
        if let Some((e, _)) = rec.vote.take() {
            rec.epoch = rec.epoch.max(e).saturating_add(1);
        }
    }

    /// A server that had no cluster enters one (it founds it, or joins it from discovery): one
    /// that brings chat of a cluster it gave up starts it over, as in a merge, carrying what
    /// users are owed. The cluster may not be the one it gave up, and there the old history
    /// would wait for ever for what only that cluster delivers; if it is, the merge drops what
    /// the cluster delivered already (see `ChatServer::flush`). Its life never was a member
    /// (it joined or gave up joining since it left), so it sent nothing in the old history.
    pub(super) fn start_founded_chat(&mut self) {
        if self.durable.chat != crate::chat::server::ChatDurable::default() {
            self.start_chat_over();
        }
    }

    /// Goes on as this server's next life (a new origin in every history).
    pub(super) fn new_life(&mut self) {
        self.durable.incarnation += 1;
        self.me.node.incarnation = self.durable.incarnation;
    }

    /// Chat starts over, for another cluster's history, carrying what users are owed; the
    /// sessions go too (their clients log in again).
    pub(super) fn start_chat_over(&mut self) {
        self.durable.chat.start_over();
        self.chat = ChatServer::new(self.chat.plant);
        self.chat.write_whole();
    }

    pub(super) fn enter_cluster(&mut self, cluster: ClusterId) {
        self.durable.cluster = cluster;
        self.quorum_at = self.now;
        self.role = Role::Follower;
        self.set_latest(None);
        self.committed = None;
        self.leader = None;
        self.election = Election::default();
        self.candidacy = None;
        self.hops.clear();
        self.proposal = None;
        self.joiners.clear();
        self.leaving.clear();
        self.discovered.clear();
        self.replaced.clear();
        self.gave_up_on = None;
    }
}
