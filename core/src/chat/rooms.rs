//! Room membership, replicated: each user's latest joins and leaves of each room, and who a
//! room message reaches: the room's members at the message's cut.
//!
//! A room message carries no recipient list. The server that accepts it puts its *cut* in it:
//! per origin, the sequence number of the latest join, leave or retirement it had applied from
//! that origin. Every server applies one origin's messages in sequence order, so the joins and
//! leaves the accepting server had applied are exactly those whose key `(origin, seq)` has
//! `seq <= cut[origin]`. A server that delivers the message has applied all of them (they are
//! in its causal past) and perhaps more (operations concurrent with it); it counts only those
//! in the cut, so every server computes the same recipients (design §10).

use crate::id::NodeId;
use crate::limits::{MAX_ANCHORS, ROOM_HISTORY};
use crate::time::Vc;
use crate::wire::chat::{Key, MsgId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A join or leave of one user in one room; the user's standing is the one with the greatest
/// `(fence, id.seq, key)` seen.
///
/// Joins and leaves of one user in one room may be concurrent (a user's new client process
/// joins through a server that has not yet delivered the old process's leave), and a server
/// may broadcast an operation late (it held a retry). Taking the greatest stamp instead of
/// the last delivered makes every server that delivered the same operations agree, whatever
/// order it delivered them in. A later process's operations carry a greater fence, and one
/// process's later operations a greater sequence number (with the same or a greater fence),
/// so the operation the user asked for last wins, however late the others are broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Joined (else left).
    pub joined: bool,
    /// Login fence of the process that asked.
    pub fence: u64,
    /// The operation's id (its sequence number orders one process's operations).
    pub id: MsgId,
    /// Lamport time of the operation.
    pub lamport: u64,
    /// Key of the operation's message (breaks ties).
    pub key: Key,
    /// Keys any of which puts the operation in a cut: its own key, then the retirements that
    /// covered the origin of an earlier anchor (a cut leaves out an origin retired with all it
    /// sent, and names the retirement's origin instead).
    pub anchors: Vec<Key>,
}

impl Standing {
    /// Which operation wins.
    fn stamp(&self) -> (u64, u64, Key) {
        (self.fence, self.id.seq, self.key)
    }

    /// Whether the operation is in `cut`.
    fn in_cut(&self, cut: &Vc) -> bool {
        self.anchors.iter().any(|(o, s)| cut.get(o).is_some_and(|v| s <= v))
    }
}

/// How joins and leaves are ordered (bugs the tests plant; both off in a correct server).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Order {
    /// In delivery order, ignoring stamps.
    pub delivery: bool,
    /// By Lamport time alone, ignoring login fences.
    pub unfenced: bool,
}

/// Every room's membership (durable, part of the replicated state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rooms {
    /// Room → user → that user's operations in the room with the [`ROOM_HISTORY`] greatest
    /// stamps, ascending: the last is the user's standing (leaves are kept, so an older
    /// concurrent join does not win; earlier ones, so a cut that lacks the latest finds its own).
    rooms: BTreeMap<String, BTreeMap<String, Vec<Standing>>>,
    /// The cut a room message started here carries: per origin, the latest join, leave or
    /// retirement applied from it. An origin retired with everything it sent is left out
    /// (bounded by the lives not yet retired).
    cut: Vc,
}

impl Rooms {
    /// Applies a join or leave (`new`, already stamped) of `user` in `room`.
    pub fn apply(&mut self, room: &str, user: &str, new: Standing, order: Order) {
        self.note(new.key);
        let history = self.rooms.entry(room.to_string()).or_default().entry(user.to_string()).or_default();
        let rank = |s: &Standing| if order.unfenced { (s.lamport, 0, s.key) } else { s.stamp() };
        let at = if order.delivery { history.len() } else { history.partition_point(|s| rank(s) < rank(&new)) };
        history.insert(at, new);
        if history.len() > ROOM_HISTORY {
            history.remove(0);
        }
    }

    /// Notes an applied join, leave or retirement: the cut moves past it.
    pub fn note(&mut self, key: Key) {
        let v = self.cut.entry(key.0).or_insert(0);
        *v = (*v).max(key.1);
    }

    /// A retirement (applied as message `key`) of `lives`, each with how much of it every
    /// member held: the cut leaves out a life retired with everything applied from it, and
    /// every operation placed by an anchor of such a life is placed by `key` too. A message
    /// whose cut includes the retirement includes all the life sent before it.
    pub fn retire(&mut self, key: Key, lives: &[(NodeId, u64)]) {
        self.note(key);
        let covered = |k: &Key| lives.iter().any(|(life, upto)| k.0 == *life && k.1 <= *upto);
        for history in self.rooms.values_mut().flat_map(|users| users.values_mut()) {
            for st in history.iter_mut() {
                if st.anchors.iter().any(covered) && !st.anchors.contains(&key) {
                    if st.anchors.len() >= MAX_ANCHORS {
                        st.anchors.remove(1);
                    }
                    st.anchors.push(key);
                }
            }
        }
        for (life, upto) in lives {
            if self.cut.get(life).is_some_and(|v| v <= upto) {
                self.cut.remove(life);
            }
        }
    }

    /// The cut a room message started now carries.
    pub fn cut(&self) -> &Vc {
        &self.cut
    }

    /// A room's members now, by name.
    pub fn members(&self, room: &str) -> Vec<&str> {
        let Some(users) = self.rooms.get(room) else { return Vec::new() };
        users.iter().filter(|(_, h)| h.last().is_some_and(|s| s.joined)).map(|(u, _)| u.as_str()).collect()
    }

    /// Whether `user` is a member of `room` now.
    pub fn is_member(&self, room: &str, user: &str) -> bool {
        self.rooms.get(room).and_then(|u| u.get(user)).and_then(|h| h.last()).is_some_and(|s| s.joined)
    }

    /// A room's members at `cut`, by name: each user whose greatest operation in the cut is a
    /// join. The same on every server that delivered every operation in the cut.
    pub fn members_at<'a>(&'a self, room: &str, cut: &'a Vc) -> impl Iterator<Item = &'a str> + 'a {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(move |(_, h)| h.iter().rev().find(|s| s.in_cut(cut)).is_some_and(|s| s.joined))
            .map(|(u, _)| u.as_str())
    }

    /// Whether `user` was a member of `room` at `cut`.
    pub fn member_at(&self, room: &str, user: &str, cut: &Vc) -> bool {
        let history = self.rooms.get(room).and_then(|u| u.get(user));
        history.and_then(|h| h.iter().rev().find(|s| s.in_cut(cut))).is_some_and(|s| s.joined)
    }

    /// Every user with an operation in `room`.
    pub fn users(&self, room: &str) -> impl Iterator<Item = &str> {
        self.rooms.get(room).into_iter().flat_map(|u| u.keys()).map(String::as_str)
    }

    /// Every room by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// Every user's standing (its greatest operation) in every room.
    pub fn standings(&self) -> impl Iterator<Item = (&str, &str, &Standing)> {
        self.rooms.iter().flat_map(|(r, users)| users.iter().filter_map(move |(u, h)| h.last().map(|s| (r.as_str(), u.as_str(), s))))
    }

    /// Operations kept, over all rooms and users.
    pub fn len(&self) -> usize {
        self.rooms.values().flat_map(|u| u.values()).map(Vec::len).sum()
    }

    /// Whether no operation is kept.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Whether the parts agree as applying keeps them (a state from outside): every history
    /// holds 1 to [`ROOM_HISTORY`] operations, each with 1 to [`MAX_ANCHORS`] anchors.
    pub fn is_consistent(&self) -> bool {
        self.rooms
            .values()
            .flat_map(|u| u.values())
            .all(|h| (1..=ROOM_HISTORY).contains(&h.len()) && h.iter().all(|s| (1..=MAX_ANCHORS).contains(&s.anchors.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ServerId;

    fn node(i: u128) -> NodeId {
        NodeId { id: ServerId(i), incarnation: 1 }
    }

    fn op(joined: bool, fence: u64, seq: u64, key: Key) -> Standing {
        Standing { joined, fence, id: MsgId { client: 1, seq }, lamport: key.1, key, anchors: vec![key] }
    }

    #[test]
    fn a_join_concurrent_with_a_message_counts_at_no_server() {
        // The message's server had applied origin 1 up to 3; origin 2's join of u came
        // concurrently and is delivered first at some servers.
        let mut r = Rooms::default();
        r.apply("r", "t", op(true, 1, 1, (node(1), 3)), Order::default());
        let cut = r.cut().clone();
        r.apply("r", "u", op(true, 1, 1, (node(2), 1)), Order::default());
        assert_eq!(r.members_at("r", &cut).collect::<Vec<_>>(), vec!["t"]);
        assert_eq!(r.members("r"), vec!["t", "u"]);
    }

    #[test]
    fn a_leave_concurrent_with_a_message_leaves_the_member_in_its_cut() {
        let mut r = Rooms::default();
        r.apply("r", "u", op(true, 1, 1, (node(1), 1)), Order::default());
        let cut = r.cut().clone();
        r.apply("r", "u", op(false, 1, 2, (node(2), 1)), Order::default());
        assert!(r.member_at("r", "u", &cut) && !r.is_member("r", "u"));
    }

    #[test]
    fn a_retired_origin_leaves_the_cut_and_its_operations_stay_in_it() {
        let mut r = Rooms::default();
        r.apply("r", "u", op(true, 1, 1, (node(1), 4)), Order::default());
        let before = r.cut().clone();
        r.retire((node(2), 9), &[(node(1), 4)]);
        assert_eq!(r.cut().get(&node(1)), None, "retired with all it sent");
        assert!(r.member_at("r", "u", r.cut()), "placed by the retirement");
        assert!(r.member_at("r", "u", &before), "a cut from before the retirement still names it");
        // A cut that has neither the join nor the retirement does not count the member.
        let empty = Vc::new();
        assert!(!r.member_at("r", "u", &empty));
    }
}
