//! Discovery, founding and merging: how a server finds a cluster (or founds one with the
//! servers it found), asks to join it, and merges into a larger cluster it meets.

use super::*;

impl Server {
    /// A server says hello from `from`: a member answers there (the datagram's source, never
    /// the address written in it: no reflection), a founder notes it at `addr`.
    pub(super) fn on_hello(&mut self, sender: NodeId, from: SocketAddr, addr: SocketAddr, founding: bool) {
        match self.phase {
            Phase::Member => {
                let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
                let view_size = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
                let to = if self.cfg.plant == Some(PlantedBug::AnswerAnyone) { addr } else { from }; // the planted bug
                self.send(to, Body::Welcome { leader, view_size }, false);
            }
            Phase::Discovering { .. } | Phase::Founding if founding => {
                self.discovered.insert(sender, addr);
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
        } else if self.stranded() && now >= self.next_hello {
            self.next_hello = now.plus_ms(self.cfg.beacon_ms);
            self.send_discovery(Body::Hello { addr: self.me.addr, founding: false });
        }
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
    }

    /// Drops all view state and asks to join `cluster` as a new incarnation.
    pub(super) fn leave_for(&mut self, cluster: ClusterId, leader: Option<Member>) {
        let old = self.durable.cluster;
        self.step_down();
        self.emit(Event::Left { cluster: old, node: self.me.node });
        self.durable.incarnation += 1;
        self.me.node.incarnation = self.durable.incarnation;
        self.enter_cluster(cluster);
        self.phase = Phase::Joining { since: self.now, leader };
        if cluster != old {
            // A merge: chat starts over in the other cluster's history, carrying what users
            // are owed; the sessions go too (their clients log in again).
            self.durable.chat.start_over();
            self.chat = ChatServer::new(self.chat.plant);
            self.chat.write_whole();
        }
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
    }
}
