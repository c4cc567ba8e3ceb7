//! Views: the leader proposes one change at a time and installs it once a majority of the
//! old and the new view stored it; members store, acknowledge and install (see `membership`).

use super::*;

impl Server {
    pub(super) fn on_view(&mut self, sender: NodeId, epoch: u64, view: View, commit: bool) {
        let my_epoch = self.epoch();
        if epoch < my_epoch {
            self.counters.stale_epoch += 1;
            return;
        }
        if matches!(self.phase, Phase::Discovering { .. } | Phase::Left) {
            return;
        }
        self.fd.heard(sender, self.now);
        if !self.learn_leader(sender, epoch) {
            return;
        }
        let cluster = self.durable.cluster;
        self.emit(Event::LeaderActionApplied { cluster, epoch, seen: self.epoch() });
        if !commit {
            if self.latest.as_ref().map_or(true, |l| l.stamp <= view.stamp) {
                let stamp = view.stamp;
                self.set_latest(Some(view));
                if let Some(addr) = self.addr_of(sender) {
                    self.send(addr, Body::ViewAck { stamp }, false);
                }
            }
            return;
        }
        if self.committed.as_ref().is_some_and(|c| c.stamp.id >= view.stamp.id) {
            return;
        }
        if self.latest.as_ref().map_or(true, |l| l.stamp < view.stamp) {
            self.set_latest(Some(view.clone()));
        }
        if !view.contains(self.me.node) {
            match self.phase {
                Phase::Member => self.rejoin(),
                Phase::Founding => {
                    let leader = self.addr_of(sender).map(|addr| Member { node: sender, addr });
                    self.phase = Phase::Joining { since: self.now, leader };
                }
                _ => {}
            }
            return;
        }
        if self.latest.as_ref().map_or(true, |l| l.stamp <= view.stamp) {
            self.set_latest(Some(view.clone()));
        }
        for m in &view.members {
            self.fd.watch(m.node, self.now);
        }
        self.fd.retain(|id| view.by_server(id).is_some());
        self.committed = Some(view.clone());
        if self.phase != Phase::Member {
            self.phase = Phase::Member;
            self.emit(Event::Joined { cluster, node: self.me.node });
        }
        self.emit(Event::ViewInstalled { cluster, view });
    }

    pub(super) fn on_view_ack(&mut self, sender: NodeId, epoch: u64, stamp: ViewStamp) {
        self.fd.heard(sender, self.now);
        if self.role != Role::Leader || epoch != self.epoch() {
            return;
        }
        if let Some(p) = self.proposal.as_mut() {
            if p.view.stamp == stamp {
                p.acks.insert(sender);
            }
        }
        self.maybe_install();
    }

    pub(super) fn on_not_member(&mut self, committed: ViewStamp) {
        match self.phase {
            Phase::Member if self.committed.as_ref().is_some_and(|c| c.stamp < committed) => self.rejoin(),
            // A newer installed view leaves us out: our old view no longer makes us a voter.
            Phase::Joining { .. } if self.latest.as_ref().is_some_and(|l| l.stamp < committed) => self.set_latest(None),
            _ => {}
        }
    }

    /// Removed from the view: come back as a new incarnation.
    pub(super) fn rejoin(&mut self) {
        let cluster = self.durable.cluster;
        let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
        self.leave_for(cluster, leader);
    }

    pub(super) fn propose(&mut self, view: View, old: View) {
        self.set_latest(Some(view.clone()));
        for m in &view.members {
            self.fd.watch(m.node, self.now);
        }
        self.proposal = Some(Proposal::new(view, old, self.me.node, self.now));
        self.resend_proposal();
        self.maybe_install();
    }

    pub(super) fn resend_proposal(&mut self) {
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        p.resend_at = self.now.plus_ms(self.cfg.heartbeat_ms);
        let view = p.view.clone();
        let targets: Vec<SocketAddr> = p.missing().map(|m| m.addr).collect();
        for addr in targets {
            self.send(addr, Body::ViewPropose { view: view.clone() }, false);
        }
    }

    pub(super) fn maybe_install(&mut self) {
        if !self.proposal.as_ref().is_some_and(|p| p.is_installable()) {
            return;
        }
        let p = self.proposal.take().expect("checked above"); // invariant
        let view = p.view;
        let epoch = self.epoch();
        assert_eq!(view.stamp.epoch, epoch, "installing a view of another epoch"); // invariant
        let targets: Vec<SocketAddr> =
            view.members.iter().chain(p.old.members.iter()).filter(|m| m.node.id != self.me.node.id).map(|m| m.addr).collect();
        for addr in targets {
            self.send(addr, Body::ViewCommit { view: view.clone() }, false);
        }
        for m in &view.members {
            self.joiners.remove(&m.node.id);
        }
        self.leaving.retain(|n| view.contains(*n));
        self.fd.retain(|id| view.by_server(id).is_some());
        let cluster = self.durable.cluster;
        self.committed = Some(view.clone());
        self.emit(Event::LeaderActionApplied { cluster, epoch, seen: epoch });
        self.emit(Event::ViewInstalled { cluster, view });
    }

    pub(super) fn leader_tick(&mut self) {
        let now = self.now;
        if now >= self.next_beacon {
            self.next_beacon = now.plus_ms(self.cfg.beacon_ms);
            let view_size = self.committed.as_ref().map_or(1, |v| v.members.len() as u32);
            self.send_discovery(Body::Beacon { leader: self.me, view_size });
        }
        // Step down without a majority: a partitioned leader stops acting.
        let view = self.latest.clone().expect("a leader holds a view"); // invariant
        let stepdown = 2 * self.suspect_us();
        let heard = view.members.iter().filter(|m| m.node.id == self.me.node.id || !self.fd.is_suspected(m.node, now, stepdown)).count();
        if !view.is_majority(heard) {
            self.step_down();
            return;
        }
        if self.proposal.is_some() {
            if self.proposal.as_ref().is_some_and(|p| now >= p.resend_at) {
                self.resend_proposal();
            }
            return;
        }
        let Some(committed) = self.committed.clone() else {
            return;
        };
        if committed.stamp.epoch != self.epoch() {
            return;
        }
        let remove_us = self.cfg.remove_ms * 1000;
        let silent: Vec<NodeId> = committed
            .members
            .iter()
            .map(|m| m.node)
            .filter(|n| n.id != self.me.node.id && (self.leaving.contains(n) || self.fd.is_suspected(*n, now, remove_us)))
            .collect();
        let joiners: Vec<Member> = self.joiners.values().copied().filter(|j| !committed.contains(j.node)).collect();
        // A joiner with another identity at a member's address means that member's process is
        // gone (it restarted without its state, for example): it is removed first, at once,
        // rather than after `remove_ms` behind the joiner, which would leave a view one member
        // larger with one more dead voter in it.
        let replaced = committed
            .members
            .iter()
            .filter(|m| m.node.id != self.me.node.id)
            .find(|m| joiners.iter().any(|j| j.addr == m.addr && j.node.id != m.node.id));
        let silent: Vec<NodeId> = replaced.map(|m| m.node).into_iter().chain(silent).collect();
        let stamp = ViewStamp { epoch: self.epoch(), id: committed.stamp.id + 1 };
        let next = match next_change(&committed, &joiners, &silent) {
            Some(Change::Add(m)) => committed.with(stamp, m),
            Some(Change::Remove(n)) => committed.without(stamp, n),
            Some(Change::Replace { old, new }) => committed.without(stamp, old).with(stamp, new),
            None => return,
        };
        self.propose(next, committed);
    }
}
