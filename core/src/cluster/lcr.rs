//! The LCR election made safe: epochs, hop-acknowledged tokens on the ring of the current
//! view, a candidate that leads only once a majority accepted it, and stepping down.

use super::*;

impl Server {
    pub(super) fn adopt_epoch(&mut self, epoch: u64) {
        let rec = self.record_mut();
        if epoch > rec.epoch {
            rec.epoch = epoch;
            self.forwarded.retain(|(e, _, _)| *e >= epoch);
            let cluster = self.durable.cluster;
            self.emit(Event::EpochAdopted { cluster, epoch });
            if self.role != Role::Follower {
                self.step_down();
            }
            if self.leader.is_some() {
                self.leader = None;
            }
        }
    }

    pub(super) fn leader_alive(&self) -> bool {
        match self.role {
            Role::Leader => true,
            _ => self.leader.is_some_and(|l| !self.fd.is_suspected(l, self.now, self.suspect_us())),
        }
    }

    pub(super) fn step_down(&mut self) {
        if self.role == Role::Leader {
            let (cluster, epoch) = (self.durable.cluster, self.epoch());
            self.emit(Event::SteppedDown { cluster, epoch });
            self.leader = None;
        }
        self.role = Role::Follower;
        self.candidacy = None;
        self.proposal = None;
    }

    /// `leader` (heard directly) leads `epoch` ≥ ours. Returns `false`, counted as
    /// `rival_leader` and changing nothing, when this server itself leads that epoch: a
    /// majority accepted only one leader per epoch, so the claim is a forgery or a bug
    /// elsewhere, and the wire must not reach an assertion.
    #[must_use]
    pub(super) fn learn_leader(&mut self, leader: NodeId, epoch: u64) -> bool {
        if self.role == Role::Leader && epoch == self.epoch() && leader != self.me.node {
            self.counters.rival_leader += 1;
            return false;
        }
        self.adopt_epoch(epoch);
        if self.leader != Some(leader) {
            // adopt_epoch stepped a leader down for a later epoch; in this one we do not lead.
            self.leader = Some(leader);
            self.role = Role::Follower;
            self.candidacy = None;
            self.election.settle();
            let cluster = self.durable.cluster;
            self.emit(Event::LeaderLearned { cluster, epoch, leader });
        }
        true
    }

    /// Whether this server hears a majority of its latest view (itself included).
    /// Elections need it: a minority can never elect, so it must not inflate epochs.
    pub(super) fn sees_majority(&self) -> bool {
        let Some(view) = self.latest.as_ref() else { return false };
        let timeout = self.suspect_us();
        let alive =
            view.members.iter().filter(|m| m.node.id == self.me.node.id || !self.fd.is_suspected(m.node, self.now, timeout)).count();
        view.is_majority(alive)
    }

    pub(super) fn start_election(&mut self) {
        if !matches!(self.phase, Phase::Founding | Phase::Member | Phase::Joining { .. }) || self.leader_alive() {
            self.election.start_at = None;
            return;
        }
        if self.phase == Phase::Founding {
            let mut members: Vec<Member> = self.discovered.values().copied().collect();
            members.push(self.me);
            members.truncate(crate::limits::MAX_MEMBERS);
            let view = View::new(ViewStamp::default(), members);
            for m in &view.members {
                self.fd.watch(m.node, self.now);
            }
            self.set_latest(Some(view));
        }
        if !self.sees_majority() {
            // Try again after another back-off; nothing is adopted meanwhile.
            self.election.start_at = Some(self.random_backoff().plus_ms(self.cfg.heartbeat_ms));
            return;
        }
        self.counters.elections_started += 1;
        let floor = self.epoch();
        let deadline = self.now.plus_ms(self.cfg.election_timeout_ms);
        let epoch = self.election.start(floor, deadline);
        let key = self.my_key();
        if self.latest.as_ref().is_some_and(|v| v.members.len() == 1) {
            self.become_candidate(epoch);
        } else {
            self.ring_send(epoch, key, false, false);
        }
    }

    pub(super) fn ring_send(&mut self, epoch: u64, key: CandidateKey, elected: bool, retransmit: bool) {
        let Some(view) = self.latest.as_ref() else {
            return;
        };
        let timeout = self.suspect_us();
        let fd = &self.fd;
        let now = self.now;
        let Some(to) = view.successor(self.me.node.id, self.cfg.ring, |m| !fd.is_suspected(m.node, now, timeout)) else {
            return;
        };
        let body = if elected { Body::Elected { key } } else { Body::Token { key } };
        self.send_epoch(Dest::Addr(to.addr), epoch, body, retransmit);
        self.hops.push(PendingHop {
            epoch,
            key,
            elected,
            to,
            deadline: self.now.plus_ms(self.cfg.hop_timeout_ms),
            retries_left: self.cfg.hop_retries,
        });
    }

    pub(super) fn retry_hops(&mut self) {
        let now = self.now;
        let due: Vec<PendingHop> = self.hops.iter().filter(|h| now >= h.deadline).cloned().collect();
        if due.is_empty() {
            return;
        }
        self.hops.retain(|h| now < h.deadline);
        for h in due {
            if h.epoch < self.election.epoch.max(self.epoch()) && !h.elected {
                continue; // an older election's token
            }
            if h.retries_left > 0 {
                let body = if h.elected { Body::Elected { key: h.key } } else { Body::Token { key: h.key } };
                self.send_epoch(Dest::Addr(h.to.addr), h.epoch, body, true);
                self.hops.push(PendingHop { deadline: now.plus_ms(self.cfg.hop_timeout_ms), retries_left: h.retries_left - 1, ..h });
            } else {
                // Successor silent: skip it on the ring.
                self.fd.suspect_hop(h.to.node, now);
                self.ring_send(h.epoch, h.key, h.elected, true);
            }
        }
    }

    /// A ring message for a candidate whose view is older than our latest: its ring is not
    /// ours, so it could never gather the voters of the view we would accept. Tell the sender
    /// our latest view (see the `ViewInfo` handler for why adopting it is safe).
    fn share_newer_view(&mut self, from: SocketAddr, key: CandidateKey) {
        if self.role == Role::Leader {
            return;
        }
        if let Some(view) = self.latest.as_ref().filter(|v| key.view < v.stamp).cloned() {
            self.send(from, Body::ViewInfo { view }, false);
        }
    }

    pub(super) fn on_token(&mut self, sender: NodeId, from: SocketAddr, epoch: u64, key: CandidateKey) {
        self.fd.heard(sender, self.now);
        self.send_epoch(Dest::Addr(from), epoch, Body::RingAck { key, elected: false }, false);
        self.share_newer_view(from, key);
        if epoch <= self.epoch() {
            self.counters.stale_epoch += 1;
            return;
        }
        if self.leader_alive() {
            self.counters.tokens_refused += 1;
            let leader = self.leader.unwrap_or(self.me.node);
            self.send(from, Body::LeaderAlive { leader }, false);
            return;
        }
        if key.node == self.me.node && key != self.my_key() {
            return; // our own token from before our view changed
        }
        if !self.is_voter() {
            // A server whose life is not in the view passes every token on.
            if self.forwarded.insert((epoch, key, false)) {
                self.election.epoch = self.election.epoch.max(epoch);
                self.ring_send(epoch, key, false, false);
            }
            return;
        }
        let mine = self.my_key();
        match self.election.on_token(epoch, key, mine) {
            None => self.counters.stale_epoch += 1,
            Some(TokenVerdict::Forward) => {
                // A duplicated token is forwarded once.
                if self.forwarded.insert((epoch, key, false)) {
                    self.ring_send(epoch, key, false, false);
                }
            }
            Some(TokenVerdict::SendOwn) => self.ring_send(epoch, mine, false, false),
            Some(TokenVerdict::Drop) => {}
            Some(TokenVerdict::Won) => {
                if self.candidacy.as_ref().is_none_or(|c| c.epoch != epoch) {
                    self.become_candidate(epoch);
                }
            }
        }
        if self.election.deadline.is_none() {
            self.election.deadline = Some(self.now.plus_ms(self.cfg.election_timeout_ms));
        }
    }

    pub(super) fn on_elected(&mut self, sender: NodeId, from: SocketAddr, epoch: u64, key: CandidateKey) {
        self.fd.heard(sender, self.now);
        self.send_epoch(Dest::Addr(from), epoch, Body::RingAck { key, elected: true }, false);
        self.share_newer_view(from, key);
        if key.node == self.me.node {
            return; // our announcement went round
        }
        let rec = self.record();
        if epoch < rec.epoch {
            self.counters.stale_epoch += 1;
            return;
        }
        let latest = self.latest.as_ref().map(|v| v.stamp).unwrap_or_default();
        let vote_free = rec.vote.map_or(true, |(e, l)| e < epoch || l == key.node);
        if vote_free && key.view >= latest {
            self.adopt_epoch(epoch);
            if self.record().vote != Some((epoch, key.node)) {
                self.record_mut().vote = Some((epoch, key.node));
                let cluster = self.durable.cluster;
                self.emit(Event::Voted { cluster, epoch, leader: key.node });
            }
            if let Some(addr) = self.addr_of(key.node) {
                self.send_epoch(Dest::Addr(addr), epoch, Body::Accept { leader: key.node }, false);
            }
            self.election.epoch = self.election.epoch.max(epoch);
            self.election.deadline = Some(self.now.plus_ms(self.cfg.election_timeout_ms));
        } else if epoch > self.election.epoch {
            // A candidate we refuse (stale view, or we accepted another) stands at
            // `epoch`: our next election must go above it, or it would drop our tokens.
            self.election.epoch = epoch;
            self.election.participant = false;
        }
        if self.forwarded.insert((epoch, key, true)) {
            self.ring_send(epoch, key, true, false);
        }
    }

    pub(super) fn on_accept(&mut self, sender: NodeId, epoch: u64, leader: NodeId) {
        self.fd.heard(sender, self.now);
        let Some(c) = self.candidacy.as_mut() else {
            return;
        };
        if c.epoch != epoch || leader != self.me.node {
            return;
        }
        c.accepts.insert(sender);
        self.maybe_win();
    }

    pub(super) fn become_candidate(&mut self, epoch: u64) {
        let rec = self.record();
        if rec.epoch > epoch || rec.vote.is_some_and(|(e, l)| e == epoch && l != self.me.node) {
            return; // accepted someone else meanwhile
        }
        if !self.sees_majority() {
            return; // the token went round a minority: standing would only inflate the epoch
        }
        self.adopt_epoch(epoch);
        if self.record().vote != Some((epoch, self.me.node)) {
            self.record_mut().vote = Some((epoch, self.me.node));
            let cluster = self.durable.cluster;
            self.emit(Event::Voted { cluster, epoch, leader: self.me.node });
        }
        self.role = Role::Candidate;
        let mut accepts = BTreeSet::new();
        accepts.insert(self.me.node);
        self.candidacy = Some(Candidacy { epoch, accepts });
        let key = self.my_key();
        self.forwarded.insert((epoch, key, true));
        self.ring_send(epoch, key, true, false);
        self.maybe_win();
    }

    /// A candidate re-sends its announcement straight to the members that have
    /// not accepted yet (the ring may have lost it); these are retransmissions.
    pub(super) fn resend_elected(&mut self) {
        let (Some(c), Some(view)) = (self.candidacy.as_ref(), self.latest.as_ref()) else { return };
        let epoch = c.epoch;
        let key = self.my_key();
        let missing: Vec<SocketAddr> = view
            .members
            .iter()
            .filter(|m| m.node.id != self.me.node.id && !c.accepts.iter().any(|a| a.id == m.node.id))
            .map(|m| m.addr)
            .collect();
        for addr in missing {
            self.send_epoch(Dest::Addr(addr), epoch, Body::Elected { key }, true);
        }
    }

    pub(super) fn maybe_win(&mut self) {
        let Some(c) = self.candidacy.as_ref() else {
            return;
        };
        let Some(view) = self.latest.as_ref() else {
            return;
        };
        let count = view.members.iter().filter(|m| c.accepts.iter().any(|a| a.id == m.node.id)).count();
        if !view.is_majority(count) {
            return;
        }
        let epoch = c.epoch;
        assert_eq!(epoch, self.epoch(), "candidate of a stale epoch"); // invariant
        let old = view.clone();
        if self.phase == Phase::Founding {
            // The founder names the cluster; its epoch record moves along.
            let cluster = ClusterId::founded_by(self.me.node, epoch);
            self.carry_record_into(cluster);
            self.durable.cluster = cluster;
            self.start_founded_chat();
            self.phase = Phase::Member;
            self.emit(Event::Joined { cluster, node: self.me.node });
        }
        let mut members = old.members.clone();
        if matches!(self.phase, Phase::Joining { .. }) {
            // A restarted server won: its new life takes its old life's place (same voters).
            members.retain(|m| m.node.id != self.me.node.id);
            members.push(self.me);
            self.phase = Phase::Member;
            let cluster = self.durable.cluster;
            self.emit(Event::Joined { cluster, node: self.me.node });
        }
        self.role = Role::Leader;
        self.candidacy = None;
        self.election.settle();
        self.leader = Some(self.me.node);
        self.hops.clear();
        let cluster = self.durable.cluster;
        self.emit(Event::BecameLeader { cluster, epoch });
        // First act: a view of our own epoch with the same members (silent ones are removed later).
        let view = View::new(ViewStamp { epoch, id: old.stamp.id + 1 }, members);
        self.propose(view, old);
        self.next_heartbeat = self.now;
        // The first beacon waits: the founding servers hear the view proposal first.
        self.next_beacon = self.now.plus_ms(self.cfg.beacon_ms);
    }
}
