//! Membership changes driven by the leader: one member at a time, installed
//! only once a majority of the previous view *and* of the new view stored it.
//!
//! Why views stay consistent (V1) and elections safe (S1): views form a
//! Raft-like log ordered by [`ViewStamp`] `(epoch, id)`. A voter accepts only a
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
    joiners.iter().find(|j| view.by_server(j.node.id).is_none() && view.members.len() < crate::view::MAX_MEMBERS).map(|j| Change::Add(*j))
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
