//! Membership changes driven by the leader: one member at a time, installed
//! only once a majority of the previous view *and* of the new view stored it.
//!
//! Why views stay consistent (V1) and elections safe (S1): views form a
//! Raft-like log ordered by [`ViewStamp`](crate::view::ViewStamp) `(epoch, id)`. A voter accepts only a
//! candidate whose latest view is at least as up to date as its own, and a view
//! is installed only once a majority of the view it replaces stored it, so any
//! later candidate that wins a majority holds every installed view. Consecutive
//! views differ by one member, so their majorities intersect. A new leader
//! first installs a view of its own epoch (same members) before it changes
//! membership, which rules out Raft's single-server-change pitfall.

use crate::id::NodeId;
use crate::time::Instant;
use crate::view::View;
use std::collections::BTreeSet;

/// A view change the leader is driving.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The view being installed.
    pub view: View,
    /// The view it replaces.
    pub old: View,
    /// Members (of either view) that stored it.
    pub acks: BTreeSet<NodeId>,
    /// When to resend it to those that have not acknowledged.
    pub resend_at: Instant,
}

impl Proposal {
    /// A proposal of `view` replacing `old`, acknowledged so far by `leader` alone.
    pub fn new(view: View, old: View, leader: NodeId, now: Instant) -> Proposal {
        let mut acks = BTreeSet::new();
        acks.insert(leader);
        Proposal { view, old, acks, resend_at: now }
    }

    /// Installed once a majority of the old and of the new view stored it.
    pub fn is_installable(&self) -> bool {
        // Counted per server: a restarted server's durable vote and view stand for its old life.
        let count = |v: &View| v.members.iter().filter(|m| self.acked(m)).count();
        self.old.is_majority(count(&self.old)) && self.view.is_majority(count(&self.view))
    }

    fn acked(&self, m: &crate::view::Member) -> bool {
        self.acks.iter().any(|a| a.id == m.node.id)
    }

    /// Members of either view that still owe an acknowledgement.
    pub fn missing(&self) -> impl Iterator<Item = &crate::view::Member> {
        self.view.members.iter().chain(self.old.members.iter().filter(|m| !self.view.contains(m.node))).filter(|m| !self.acked(m))
    }
}

/// Pure helper: the one change a leader should make next, given the view, the
/// servers asking to join and the members silent for too long.
pub fn next_change(view: &View, joiners: &[crate::view::Member], silent: &[NodeId]) -> Option<Change> {
    // A restarted server's new life takes its old life's place: the voters
    // (counted per server id) stay the same, so this is safe in one step.
    for j in joiners {
        if let Some(old) = view.by_server(j.node.id) {
            if old.node != j.node {
                return Some(Change::Replace { old: old.node, new: *j });
            }
        }
    }
    if let Some(dead) = silent.first() {
        return Some(Change::Remove(*dead));
    }
    joiners.iter().find(|j| view.by_server(j.node.id).is_none() && view.members.len() < crate::limits::MAX_MEMBERS).map(|j| Change::Add(*j))
}

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Admit a member.
    Add(crate::view::Member),
    /// Drop a member (dead, or left).
    Remove(NodeId),
    /// Swap a server's old life for its new one.
    Replace {
        /// The old life.
        old: NodeId,
        /// The new life.
        new: crate::view::Member,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ServerId;
    use crate::view::{Member, ViewStamp};

    fn member(id: u128, inc: u64) -> Member {
        Member { node: NodeId { id: ServerId(id), incarnation: inc }, addr: format!("10.0.0.{id}:7000").parse().expect("addr") }
    }

    #[test]
    fn installable_needs_majority_of_old_and_new() {
        let old = View::new(ViewStamp { epoch: 1, id: 1 }, vec![member(1, 1), member(2, 1), member(3, 1)]);
        let new = old.with(ViewStamp { epoch: 1, id: 2 }, member(4, 1));
        let mut p = Proposal::new(new, old, member(1, 1).node, Instant(0));
        assert!(!p.is_installable());
        p.acks.insert(member(4, 1).node);
        assert!(!p.is_installable(), "majority of new (2 of 4) but not enough");
        p.acks.insert(member(2, 1).node);
        assert!(p.is_installable());
    }

    #[test]
    fn restarted_server_is_replaced_before_anything_else() {
        let view = View::new(ViewStamp { epoch: 1, id: 1 }, vec![member(1, 1), member(2, 1)]);
        let change = next_change(&view, &[member(2, 2)], &[member(1, 1).node]);
        assert_eq!(change, Some(Change::Replace { old: member(2, 1).node, new: member(2, 2) }));
        assert_eq!(next_change(&view, &[], &[member(1, 1).node]), Some(Change::Remove(member(1, 1).node)));
        assert_eq!(next_change(&view, &[member(3, 1)], &[]), Some(Change::Add(member(3, 1))));
    }
}
