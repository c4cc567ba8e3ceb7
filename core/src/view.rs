//! Membership views: `(view id, members)`, changed one member at a time.

use crate::id::{mix64, NodeId, ServerId};
use crate::limits::MAX_MEMBERS;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How a view orders its members on the LCR ring. Every server of a cluster
/// must use the same order (it is a cluster parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingOrder {
    /// Ring position = id: each id's successor is the next larger id (2n-1 token sends).
    Ascending,
    /// Ring position = a fixed hash of the id: a pseudo-random ring (n·H_n sends on average).
    Hashed,
}

impl RingOrder {
    /// The key a member is sorted by on the ring.
    pub fn position(self, id: ServerId) -> u128 {
        match self {
            RingOrder::Ascending => id.0,
            RingOrder::Hashed => {
                let lo = mix64(id.0 as u64 ^ mix64((id.0 >> 64) as u64));
                ((lo as u128) << 64) | (id.0 & u64::MAX as u128)
            }
        }
    }
}

/// One member of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The member's life.
    pub node: NodeId,
    /// Where it listens for unicast.
    pub addr: SocketAddr,
}

/// Orders views as Raft orders logs: by the epoch of the leader that made the
/// view, then by view id. A voter only accepts candidates at least as up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewStamp {
    /// Epoch of the leader that proposed the view (0 for a founding view).
    pub epoch: u64,
    /// View id: one more than the view it replaced.
    pub id: u64,
}

/// A membership view. Members are kept sorted by node id, so two servers that
/// hold the same view hold the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct View {
    /// Epoch and id.
    pub stamp: ViewStamp,
    /// Members, sorted by node id, no duplicate server id.
    pub members: Vec<Member>,
}

impl View {
    /// A view from members in any order (sorted and deduplicated by node here).
    pub fn new(stamp: ViewStamp, mut members: Vec<Member>) -> View {
        members.sort();
        members.dedup_by_key(|m| m.node);
        View { stamp, members }
    }

    /// Whether `node` (this exact life) is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.binary_search_by_key(&node, |m| m.node).is_ok()
    }

    /// The member entry with server id `id`, whatever its incarnation.
    pub fn by_server(&self, id: ServerId) -> Option<&Member> {
        self.members.iter().find(|m| m.node.id == id)
    }

    /// Smallest number of members that is a majority.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Whether `count` members are a majority of this view.
    pub fn is_majority(&self, count: usize) -> bool {
        count >= self.majority()
    }

    /// The view with `member` added (one change).
    pub fn with(&self, stamp: ViewStamp, member: Member) -> View {
        let mut members = self.members.clone();
        members.push(member);
        View::new(stamp, members)
    }

    /// The view with `node` removed (one change).
    pub fn without(&self, stamp: ViewStamp, node: NodeId) -> View {
        let members = self.members.iter().copied().filter(|m| m.node != node).collect();
        View::new(stamp, members)
    }

    /// Well-formedness of a view that came off the wire.
    pub fn is_well_formed(&self) -> bool {
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return false;
        }
        let sorted = self.members.windows(2).all(|w| w[0].node < w[1].node);
        let mut ids: Vec<ServerId> = self.members.iter().map(|m| m.node.id).collect();
        ids.sort();
        ids.dedup();
        sorted && ids.len() == self.members.len()
    }

    /// The ring successor of `me` among members for which `alive` holds,
    /// in `order`. `None` when no other live member exists.
    pub fn successor(&self, me: ServerId, order: RingOrder, alive: impl Fn(&Member) -> bool) -> Option<Member> {
        let my_pos = order.position(me);
        let mut best_after: Option<(u128, Member)> = None;
        let mut best_first: Option<(u128, Member)> = None;
        for m in self.members.iter().filter(|m| m.node.id != me && alive(m)) {
            let pos = order.position(m.node.id);
            if pos > my_pos && best_after.map_or(true, |(p, _)| pos < p) {
                best_after = Some((pos, *m));
            }
            if best_first.map_or(true, |(p, _)| pos < p) {
                best_first = Some((pos, *m));
            }
        }
        best_after.or(best_first).map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn member(id: u128) -> Member {
        Member { node: NodeId { id: ServerId(id), incarnation: 1 }, addr: format!("10.0.0.{id}:7000").parse().expect("addr") }
    }

    #[test]
    fn ascending_successor_is_next_larger_id_and_wraps() {
        let v = View::new(ViewStamp::default(), vec![member(3), member(1), member(2)]);
        let next = |me| v.successor(ServerId(me), RingOrder::Ascending, |_| true).map(|m| m.node.id.0);
        assert_eq!(next(1), Some(2));
        assert_eq!(next(2), Some(3));
        assert_eq!(next(3), Some(1));
    }

    #[test]
    fn suspected_members_are_skipped() {
        let v = View::new(ViewStamp::default(), vec![member(1), member(2), member(3)]);
        let next = v.successor(ServerId(1), RingOrder::Ascending, |m| m.node.id != ServerId(2));
        assert_eq!(next.map(|m| m.node.id.0), Some(3));
        let alone = v.successor(ServerId(1), RingOrder::Ascending, |_| false);
        assert_eq!(alone, None);
    }

    #[test]
    fn majority_of_even_and_odd_views() {
        let four = View::new(ViewStamp::default(), (1..=4).map(member).collect());
        assert_eq!(four.majority(), 3);
        let five = View::new(ViewStamp::default(), (1..=5).map(member).collect());
        assert_eq!(five.majority(), 3);
    }
}
