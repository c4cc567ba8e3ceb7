//! The replicated chat state every server applies in causal delivery order:
//! user names, rooms, deduplication of client retries, and the messages users
//! have not yet acknowledged ([`Mailboxes`]: each stored once, with each user's
//! read position).

use crate::chat::mailbox::Mailboxes;
use crate::chat::rooms::{Order, Rooms, Standing};
use crate::limits::{DEDUP_WINDOW, MAX_RECIPIENTS};
use crate::time::Vc;
use crate::user::UserKey;
use crate::wire::chat::{Item, Key, MsgId, Target};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What applying one delivered message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A chat message: `canonical` is the first copy delivered of its id; `fresh` if this is that copy.
    Chat {
        /// Its id.
        id: MsgId,
        /// Key of the copy that counts.
        canonical: Key,
        /// This copy is the one that counts.
        fresh: bool,
    },
    /// Anything else.
    Other,
}

/// Counters of the chat state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCounters {
    /// Retried copies of a message not shown again.
    pub duplicates_suppressed: u64,
    /// Most messages one user owed at once.
    pub inbox_max: u64,
    /// Conflicting name bindings ignored.
    pub bind_conflicts: u64,
}

/// Bugs the state can be told to plant (all off in a correct server).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plants {
    /// Show a retried copy again.
    pub skip_dedup: bool,
    /// Rebind a bound name to a new claimant.
    pub rebind: bool,
    /// Apply joins and leaves in delivery order (first copy only), ignoring their stamps.
    pub rooms_in_delivery_order: bool,
    /// Order joins and leaves by Lamport time alone, ignoring login fences.
    pub unfenced: bool,
    /// Send a room message to the room's members at its delivery here, ignoring its cut.
    pub recipients_at_delivery: bool,
}

/// Replicated state (durable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatState {
    /// Name → credential of its holder.
    pub names: BTreeMap<String, UserKey>,
    /// Name → key of the binding message that counts.
    pub name_keys: BTreeMap<String, Key>,
    /// Room membership, and the cut a room message started here carries.
    rooms: Rooms,
    /// Lamport clock: past every operation applied here.
    lamport: u64,
    /// Per client, its latest [`DEDUP_WINDOW`] message ids: the first delivered copy and the
    /// message's delivery order here (its inbox entries' place).
    seen: BTreeMap<u64, BTreeMap<u64, (Key, u64)>>,
    /// Messages users still owe, each stored once.
    mail: Mailboxes,
    /// Other delivered copies (retries through other servers) of a pinned message: it is stable once any copy is.
    copies: BTreeMap<Key, Vec<Key>>,
    order: u64,
    /// Counters.
    pub counters: ChatCounters,
}

impl ChatState {
    /// Lamport time for an operation this server starts now: greater than every one applied here.
    pub fn next_lamport(&self) -> u64 {
        self.lamport.saturating_add(1)
    }

    /// Applies one delivered message (`plants` are bugs, off in a correct server).
    pub fn apply(&mut self, key: Key, item: &Item, plants: Plants) -> Applied {
        let (skip_dedup, rebind) = (plants.skip_dedup, plants.rebind);
        let stamp = match item {
            Item::Join { lamport, .. } | Item::Leave { lamport, .. } => *lamport,
            Item::Login { fence, .. } => *fence,
            _ => 0,
        };
        self.lamport = self.lamport.max(stamp).saturating_add(1);
        match item {
            Item::Chat { id, from, room, to, cut, .. } => {
                let window = self.seen.entry(id.client).or_default();
                if let Some((canonical, order)) = window.get(&id.seq).copied().filter(|_| !skip_dedup) {
                    // A retried copy: not shown again.
                    self.counters.duplicates_suppressed += 1;
                    self.merge_copy(*id, order, from, room.as_deref(), to, cut);
                    if self.mail.pinned(canonical) {
                        let c = self.copies.entry(canonical).or_default();
                        if c.len() < 8 {
                            c.push(key);
                        }
                    }
                    return Applied::Chat { id: *id, canonical, fresh: false };
                }
                if window.len() >= DEDUP_WINDOW && window.keys().next().is_some_and(|first| id.seq < *first) && !skip_dedup {
                    self.counters.duplicates_suppressed += 1;
                    return Applied::Chat { id: *id, canonical: key, fresh: false };
                }
                self.order += 1;
                let order = self.order;
                window.insert(id.seq, (key, order));
                while window.len() > DEDUP_WINDOW {
                    window.pop_first();
                }
                match room {
                    Some(r) if to.is_empty() => {
                        let members = self.rooms.members(r);
                        let recipients: BTreeSet<&str> = match plants.recipients_at_delivery {
                            true => members.iter().copied().filter(|u| u != from).collect(),
                            false => self.rooms.members_at(r, cut).filter(|u| u != from).collect(),
                        };
                        let most = self.mail.add_room(order, *id, key, r, &recipients, &members);
                        self.counters.inbox_max = self.counters.inbox_max.max(most as u64);
                    }
                    _ => {
                        let to: Vec<&str> = to.iter().map(String::as_str).collect();
                        self.mail.add_direct(order, *id, key, &to);
                        let most = to.iter().map(|u| self.mail.count(u)).max().unwrap_or(0);
                        self.counters.inbox_max = self.counters.inbox_max.max(most as u64);
                    }
                }
                Applied::Chat { id: *id, canonical: key, fresh: true }
            }
            Item::Ack { user, ids } => {
                self.settle(user, ids);
                Applied::Other
            }
            Item::Join { id, user, room, fence, lamport } | Item::Leave { id, user, room, fence, lamport } => {
                // A retried copy still goes through the comparison: copies carry different stamps,
                // and which copy a server delivers first differs between servers.
                if !self.first_copy(*id, key) {
                    self.counters.duplicates_suppressed += 1;
                    if plants.rooms_in_delivery_order {
                        self.rooms.note(key);
                        return Applied::Other;
                    }
                }
                let joined = matches!(item, Item::Join { .. });
                let new = Standing { joined, fence: *fence, id: *id, lamport: *lamport, key, anchors: vec![key] };
                let order = Order { delivery: plants.rooms_in_delivery_order, unfenced: plants.unfenced };
                let before = self.rooms.is_member(room, user);
                self.rooms.apply(room, user, new, order);
                // The spans of membership follow the room state, in delivery order here.
                match (before, self.rooms.is_member(room, user)) {
                    (false, true) => self.mail.joined(user, room, self.order),
                    (true, false) => self.mail.left(user, room, self.order),
                    _ => {}
                }
                Applied::Other
            }
            // Its fence raised the Lamport clock above.
            Item::Login { .. } => Applied::Other,
            // The causal layer retires the lives; the cut of room messages leaves them out.
            Item::Retire { lives } => {
                self.rooms.retire(key, lives);
                Applied::Other
            }
            Item::Bind { name, key: user, .. } => {
                match self.names.get(name) {
                    Some(t) if *t != *user && !rebind => self.counters.bind_conflicts += 1,
                    Some(t) if *t == *user => {}
                    _ => {
                        self.names.insert(name.clone(), *user);
                        self.name_keys.insert(name.clone(), key);
                    }
                }
                Applied::Other
            }
        }
    }

    /// A retried copy of a message delivered before (as delivery `order` here). A room
    /// message's copies carry the cuts of the servers that accepted them: it reaches the
    /// members in every copy's cut, the same users on every server whatever order the copies
    /// come in (adding recipients late could show a message after its effects; removing is
    /// safe). A message a merge carries names the users still owed it, split over copies:
    /// those add up, each entry in the message's first place.
    fn merge_copy(&mut self, id: MsgId, order: u64, from: &str, room: Option<&str>, to: &[String], cut: &Vc) {
        match room {
            Some(r) if to.is_empty() => {
                let gone: Vec<String> = self
                    .rooms
                    .users(r)
                    .filter(|u| *u != from && !self.rooms.member_at(r, u, cut) && self.mail.owes(u, id))
                    .map(String::from)
                    .collect();
                for user in gone {
                    self.settle(&user, &[id]);
                }
            }
            Some(_) => {
                // Only while some user here still owes the message: once nobody does, every
                // user it reached here acknowledged it, and the store may have trimmed it (an
                // entry now would point at nothing, and would show it again).
                let Some(key) = self.delivered_copy(id).filter(|k| self.mail.pinned(*k)) else { return };
                let to: Vec<&str> = to.iter().map(String::as_str).collect();
                self.mail.add_direct(order, id, key, &to);
            }
            None => {}
        }
    }

    /// The key of the first delivered copy of `id`, if one was delivered (and is still remembered).
    pub fn delivered_copy(&self, id: MsgId) -> Option<Key> {
        self.seen.get(&id.client).and_then(|w| w.get(&id.seq)).map(|(k, _)| *k)
    }

    /// `user` no longer owes `ids`; a message nobody owes any more forgets its other copies.
    fn settle(&mut self, user: &str, ids: &[MsgId]) {
        for key in self.mail.settle(user, ids, self.order) {
            self.copies.remove(&key);
        }
    }

    /// Whether `user` still owes `id`.
    pub fn owes(&self, user: &str, id: MsgId) -> bool {
        self.mail.owes(user, id)
    }

    /// Records `id` as delivered (as `key`); false if a copy of it was delivered before or it is too old.
    fn first_copy(&mut self, id: MsgId, key: Key) -> bool {
        let window = self.seen.entry(id.client).or_default();
        if window.contains_key(&id.seq) || (window.len() >= DEDUP_WINDOW && window.keys().next().is_some_and(|f| id.seq < *f)) {
            return false;
        }
        window.insert(id.seq, (key, 0));
        while window.len() > DEDUP_WINDOW {
            window.pop_first();
        }
        true
    }

    /// Whether the state's parts agree as applying messages keeps them (checked on a state
    /// that comes from outside: a snapshot or a state file): the mailboxes' indexes and counts
    /// agree and their spans of membership follow the rooms, delivery order numbers are below
    /// the next one, room histories are within their bounds, and no counter is near its end.
    pub fn is_consistent(&self) -> bool {
        let far_from_end = |v: u64| v < 1 << 62;
        let c = &self.counters;
        let spans_follow_rooms = self.rooms.standings().all(|(r, u, st)| st.joined == self.mail.is_member(u, r))
            && self.mail.memberships().all(|(u, r)| self.rooms.is_member(r, u));
        self.mail.is_consistent(self.order)
            && spans_follow_rooms
            && self.rooms.is_consistent()
            && self.copies.keys().all(|k| self.mail.pinned(*k))
            && [self.order, self.lamport, c.duplicates_suppressed, c.inbox_max, c.bind_conflicts].into_iter().all(far_from_end)
    }

    /// Client processes with a deduplication window.
    pub fn dedup_clients(&self) -> impl Iterator<Item = u64> + '_ {
        self.seen.keys().copied()
    }

    /// Forgets `client`'s deduplication window. Servers forget windows at their own pace (see
    /// `ChatServer`'s `DEDUP_TTL_US`): a window only matters while a retry of one of its
    /// messages can still arrive, and what users are shown never depends on it after that.
    pub fn forget_client(&mut self, client: u64) {
        self.seen.remove(&client);
    }

    /// Drops every inbox (a planted bug: "lose the inbox on crash").
    pub fn forget_inboxes(&mut self) {
        self.mail.forget(self.order);
        self.copies.clear();
    }

    /// Every delivered copy of the message whose first copy is `key` (itself first).
    pub fn copies(&self, key: Key) -> impl Iterator<Item = Key> + '_ {
        std::iter::once(key).chain(self.copies.get(&key).into_iter().flatten().copied())
    }

    /// Whether some user still owes the message delivered as `key`.
    pub fn pinned(&self, key: Key) -> bool {
        self.mail.pinned(key)
    }

    /// Up to `limit` of the user's unacknowledged messages from delivery order `from` on, in
    /// delivery (hence causal) order, each with its order.
    pub fn inbox_from(&self, user: &str, from: u64, limit: usize) -> Vec<(u64, MsgId, Key)> {
        self.mail.owed_from(user, from, limit)
    }

    /// All of the user's unacknowledged messages in delivery order.
    pub fn inbox(&self, user: &str) -> Vec<(MsgId, Key)> {
        self.mail.owed(user, usize::MAX)
    }

    /// Every non-empty inbox: user and the ids it holds, in delivery order.
    pub fn inboxes(&self) -> Vec<(String, Vec<MsgId>)> {
        self.mail.sizes().map(|(u, _)| (u.to_string(), self.inbox(u).into_iter().map(|(id, _)| id).collect())).collect()
    }

    /// Every non-empty inbox's user and size.
    pub fn inbox_sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.mail.sizes()
    }

    /// Sizes of the collections that grow with clients and rooms, for the bounded-state check:
    /// clients in the dedup window, message ids in it, and room operations kept.
    pub fn growth(&self) -> (usize, usize, usize) {
        let ids = self.seen.values().map(|w| w.len()).sum();
        (self.seen.len(), ids, self.rooms.len())
    }

    /// Total inbox entries over all users (a room message counts once per member that owes it).
    pub fn inbox_total(&self) -> usize {
        self.mail.total()
    }

    /// Messages some user still owes, each counted once.
    pub fn owed_messages(&self) -> usize {
        self.mail.len()
    }

    /// Recipients of a message from `from` to `target` started here now: a room's members at
    /// the cut the message carries ([`ChatState::cut`]).
    pub fn recipients(&self, from: &str, target: &Target) -> Vec<String> {
        match target {
            Target::User(u) => vec![u.clone()],
            Target::Room(r) => self.rooms.members_at(r, self.rooms.cut()).filter(|u| *u != from).map(String::from).collect(),
        }
    }

    /// The cut a room message started here now carries (see [`Rooms`]).
    pub fn cut(&self) -> Vc {
        self.rooms.cut().clone()
    }

    /// How many origins that cut names.
    pub fn cut_len(&self) -> usize {
        self.rooms.cut().len()
    }

    /// A room's members now, by name.
    pub fn members(&self, room: &str) -> Vec<&str> {
        self.rooms.members(room)
    }

    /// Whether `user` is a member of `room` now.
    pub fn is_member(&self, room: &str, user: &str) -> bool {
        self.rooms.is_member(room, user)
    }

    /// What users are still owed of this state, as items to broadcast again in another
    /// cluster's history (a merge): every unacknowledged message, in delivery order, to the
    /// users still waiting for it (`get` finds a message by key; a room message's users in
    /// items of at most [`MAX_RECIPIENTS`], which add up), and every standing in a room, with
    /// its stamp, and every name with its holder (claimed there from the leader, which binds
    /// it unless it holds the name already; see `ChatServer::flush`). Each item comes
    /// with the key it was delivered as here: the other history may hold it already (see
    /// `ChatDurable::carry`).
    pub fn carry(&self, get: impl Fn(Key) -> Option<Item>) -> Vec<(Key, Item)> {
        // In delivery order, which follows causal order, so a reply never comes before what
        // it answers.
        let owed = self.mail.owing();
        let mut items = Vec::new();
        for (_, key, users) in owed {
            if let Some(Item::Chat { id, from, room, text, .. }) = get(key) {
                let per = if room.is_some() { MAX_RECIPIENTS } else { 1 };
                for to in users.chunks(per) {
                    let (from, room, text, to) = (from.clone(), room.clone(), text.clone(), to.to_vec());
                    items.push((key, Item::Chat { id, from, room, to, cut: Vc::new(), text }));
                }
            }
        }
        for (room, user, st) in self.rooms.standings() {
            let (id, user, room, fence, lamport) = (st.id, user.to_string(), room.to_string(), st.fence, st.lamport);
            items.push((
                st.key,
                match st.joined {
                    true => Item::Join { id, user, room, fence, lamport },
                    false => Item::Leave { id, user, room, fence, lamport },
                },
            ));
        }
        for (name, user) in &self.names {
            if let Some(k) = self.name_keys.get(name) {
                items.push((*k, Item::Bind { name: name.clone(), key: *user, epoch: 0 }));
            }
        }
        items
    }

    /// Every room with at least one member, by name, with its members.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.rooms.names().map(|r| (r, self.members(r))).filter(|(_, m)| !m.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{NodeId, ServerId};

    fn key(origin: u128, seq: u64) -> Key {
        (NodeId { id: ServerId(origin), incarnation: 1 }, seq)
    }

    /// A join or leave of u2 in r2 by client `client` (its `seq`th operation), from a process
    /// whose login fence is `fence`, started at Lamport time `lamport`.
    fn op(join: bool, client: u64, fence: u64, seq: u64, lamport: u64) -> Item {
        let (id, user, room) = (MsgId { client, seq }, "u2".to_string(), "r2".to_string());
        if join {
            Item::Join { id, user, room, fence, lamport }
        } else {
            Item::Leave { id, user, room, fence, lamport }
        }
    }

    fn after(ops: &[(Key, &Item)], plants: Plants) -> ChatState {
        let mut s = ChatState::default();
        for (k, item) in ops {
            s.apply(*k, item, plants);
        }
        s
    }

    /// u2's membership of r2 after `a` and `b`, delivered in both orders (asserted equal).
    fn either_order(a: (Key, &Item), b: (Key, &Item)) -> Vec<String> {
        let one = after(&[a, b], Plants::default());
        let two = after(&[b, a], Plants::default());
        assert_eq!(one.members("r2"), two.members("r2"), "the delivery order decided");
        one.members("r2").into_iter().map(String::from).collect()
    }

    #[test]
    fn concurrent_join_and_leave_agree_in_either_delivery_order() {
        // An old process's leave (fence 3) and a new process's join (fence 9).
        let (leave, join) = (op(false, 1, 3, 1, 30), op(true, 2, 9, 1, 12));
        let (kl, kj) = (key(2, 19), key(3, 2));
        assert_eq!(either_order((kl, &leave), (kj, &join)), vec!["u2"], "the older process's leave won");
        // The planted bug applies them as delivered: the two servers split.
        let planted = Plants { rooms_in_delivery_order: true, ..Plants::default() };
        assert_ne!(after(&[(kl, &leave), (kj, &join)], planted).members("r2"), after(&[(kj, &join), (kl, &leave)], planted).members("r2"));
    }

    #[test]
    fn a_process_later_operation_wins_over_its_earlier_one_broadcast_late() {
        // One process (fence 5): its leave (seq 10) was held by a server and broadcast after
        // its join (seq 11), with a greater Lamport time.
        let (leave, join) = (op(false, 1, 5, 10, 40), op(true, 1, 5, 11, 31));
        assert_eq!(either_order((key(1, 7), &leave), (key(1, 6), &join)), vec!["u2"]);
        // After moving to another server (a greater fence), its next operation still wins.
        let (leave, join) = (op(false, 1, 8, 12, 50), op(true, 1, 5, 11, 31));
        assert!(either_order((key(2, 1), &leave), (key(1, 6), &join)).is_empty());
    }

    #[test]
    fn a_merge_carries_what_users_are_owed_and_no_more() {
        let mut s = ChatState::default();
        let id = MsgId { client: 7, seq: 3 };
        let chat = Item::Chat { id, from: "al".into(), room: None, to: vec!["bo".into(), "cy".into()], cut: Vc::new(), text: "hi".into() };
        s.apply(key(1, 1), &chat, Plants::default());
        s.apply(key(1, 2), &Item::Ack { user: "bo".into(), ids: vec![id] }, Plants::default());
        s.apply(key(1, 3), &op(false, 2, 6, 4, 9), Plants::default());
        let carried: Vec<Item> = s.carry(|k| (k == key(1, 1)).then(|| chat.clone())).into_iter().map(|(_, i)| i).collect();
        let want_chat = Item::Chat { id, from: "al".into(), room: None, to: vec!["cy".into()], cut: Vc::new(), text: "hi".into() };
        assert_eq!(carried, vec![want_chat, op(false, 2, 6, 4, 9)], "bo acknowledged it; u2's leave keeps its stamp");
    }

    #[test]
    fn a_merge_carries_messages_in_delivery_order_not_key_order() {
        // A question from origin 9, then its answer from origin 2 (a smaller key).
        let msg = |client: u64, text: &str| Item::Chat {
            id: MsgId { client, seq: 1 },
            from: format!("u{client}"),
            room: None,
            to: vec!["cy".into()],
            cut: Vc::new(),
            text: text.into(),
        };
        let (question, answer) = (msg(1, "question"), msg(2, "answer"));
        let mut s = ChatState::default();
        s.apply(key(9, 1), &question, Plants::default());
        s.apply(key(2, 1), &answer, Plants::default());
        let carried = s.carry(|k| Some(if k == key(9, 1) { question.clone() } else { answer.clone() }));
        assert_eq!(carried, vec![(key(9, 1), question), (key(2, 1), answer)]);
    }

    #[test]
    fn a_login_raises_the_lamport_clock_past_its_fence() {
        let mut s = ChatState::default();
        s.apply(key(1, 1), &Item::Login { user: "u2".into(), fence: 77 }, Plants::default());
        assert!(s.next_lamport() > 77);
    }

    #[test]
    fn retried_copies_of_one_join_converge_whichever_copy_comes_first() {
        // Copies of one join, started by two servers (different Lamport times), and another
        // process's leave between them.
        let (first, retry, leave) = (op(true, 1, 5, 1, 5), op(true, 1, 5, 1, 12), op(false, 3, 5, 1, 8));
        let (k1, k2, kl) = (key(1, 1), key(2, 1), key(3, 1));
        let a = after(&[(k1, &first), (kl, &leave), (k2, &retry)], Plants::default());
        let b = after(&[(k2, &retry), (kl, &leave), (k1, &first)], Plants::default());
        assert_eq!(a.members("r2"), b.members("r2"));
        assert_eq!(a.counters.duplicates_suppressed, 1);
    }

    #[test]
    fn a_carried_copy_of_a_message_everyone_here_acknowledged_is_not_owed_again() {
        // A merge carried the message for cy, but cy acknowledged it here long ago and the
        // store trimmed it: an entry now would point at nothing and never be shown (B1, default
        // seed 214).
        let id = MsgId { client: 7, seq: 1 };
        let first = Item::Chat { id, from: "al".into(), room: None, to: vec!["cy".into()], cut: Vc::new(), text: "hi".into() };
        let mut s = after(&[(key(1, 1), &first)], Plants::default());
        s.apply(key(1, 2), &Item::Ack { user: "cy".into(), ids: vec![id] }, Plants::default());
        let carried =
            Item::Chat { id, from: "al".into(), room: Some("#r".into()), to: vec!["cy".into()], cut: Vc::new(), text: "hi".into() };
        s.apply(key(2, 1), &carried, Plants::default());
        assert_eq!((s.inbox_total(), s.owes("cy", id)), (0, false));
        // While someone still owes it, a carried copy adds the users it names.
        let mut s = after(&[(key(1, 1), &first)], Plants::default());
        let carried =
            Item::Chat { id, from: "al".into(), room: Some("#r".into()), to: vec!["dee".into()], cut: Vc::new(), text: "hi".into() };
        s.apply(key(2, 1), &carried, Plants::default());
        assert!(s.owes("cy", id) && s.owes("dee", id));
        assert!(s.is_consistent());
    }

    #[test]
    fn a_carried_copy_is_not_owed_again_to_a_user_who_acknowledged_it_here() {
        // Two servers of one old cluster merge here one after the other, each carrying the
        // message for cy and dee. Between the two, cy was shown it and acknowledged it; dee has
        // not yet: the second copy must not make cy owe it again (C2, `--long-life` seed 712).
        let id = MsgId { client: 7, seq: 1 };
        let carried = |n| Item::Chat {
            id,
            from: "al".into(),
            room: Some(format!("#r{n}")),
            to: vec!["cy".into(), "dee".into()],
            cut: Vc::new(),
            text: "hi".into(),
        };
        let mut s = after(&[(key(1, 1), &carried(1))], Plants::default());
        s.apply(key(1, 2), &Item::Ack { user: "cy".into(), ids: vec![id] }, Plants::default());
        s.apply(key(2, 1), &carried(2), Plants::default());
        assert_eq!((s.owes("cy", id), s.owes("dee", id)), (false, true));
        assert!(s.is_consistent());
        // Nor to a member its room entry reached, once acknowledged.
        let mut s = ChatState::default();
        for (n, u) in ["al", "cy", "dee"].iter().enumerate() {
            s.apply(key(3, n as u64 + 1), &join_of(n as u64, u, "r"), Plants::default());
        }
        let msg = room_msg(&s, 7, "al", "r");
        s.apply(key(1, 1), &msg, Plants::default());
        assert!(s.owes("cy", id) && s.owes("dee", id));
        s.apply(key(1, 2), &Item::Ack { user: "cy".into(), ids: vec![id] }, Plants::default());
        let to = vec!["cy".into(), "dee".into()];
        let copy = Item::Chat { id, from: "al".into(), room: Some("r".into()), to, cut: Vc::new(), text: "hi".into() };
        s.apply(key(2, 1), &copy, Plants::default());
        assert_eq!((s.owes("cy", id), s.owes("dee", id)), (false, true));
        assert!(s.is_consistent());
    }

    #[test]
    fn a_state_with_a_counter_at_its_end_is_inconsistent() {
        let id = MsgId { client: 4, seq: 1 };
        let chat = Item::Chat { id, from: "a".into(), room: None, to: vec!["u".into()], cut: Vc::new(), text: "hi".into() };
        let mut s = after(&[(key(1, 1), &chat)], Plants::default());
        assert!(s.is_consistent());
        s.apply(key(1, 2), &Item::Ack { user: "u".into(), ids: vec![id] }, Plants::default());
        assert_eq!((s.inbox_total(), s.pinned(key(1, 1))), (0, false));
        let mut far = ChatState { order: u64::MAX, ..ChatState::default() };
        assert!(!far.is_consistent(), "a counter at its end");
        far.order = 0;
        assert!(far.is_consistent());
    }

    /// A room message to `room` from `from`, started at a server whose state is `at`.
    fn room_msg(at: &ChatState, client: u64, from: &str, room: &str) -> Item {
        let (id, from, room) = (MsgId { client, seq: 1 }, from.to_string(), Some(room.to_string()));
        Item::Chat { id, from, room, to: Vec::new(), cut: at.cut(), text: "hi".into() }
    }

    fn join_of(n: u64, user: &str, room: &str) -> Item {
        Item::Join { id: MsgId { client: 1000 + n, seq: 1 }, user: user.into(), room: room.into(), fence: 1, lamport: n }
    }

    #[test]
    fn a_message_to_a_room_of_a_thousand_names_no_one_fits_a_datagram_and_reaches_every_inbox() {
        let mut s = ChatState::default();
        for n in 0..1000u64 {
            s.apply(key(1 + (n % 3) as u128, n + 1), &join_of(n, &format!("u{n:03}"), "big"), Plants::default());
        }
        assert_eq!(s.members("big").len(), 1000);
        let msg = room_msg(&s, 1, "u000", "big");
        let Item::Chat { to, .. } = &msg else { unreachable!() };
        assert!(to.is_empty(), "a room message names no recipient");
        assert!(
            crate::wire::encode(&crate::wire::Packet::Peer(crate::wire::Envelope {
                from: NodeId { id: ServerId(u128::MAX), incarnation: u64::MAX >> 16 },
                cluster: crate::id::ClusterId(u128::MAX),
                epoch: 1,
                body: crate::wire::Body::Chat {
                    msg: crate::wire::CausalMsg {
                        origin: NodeId { id: ServerId(1), incarnation: 1 },
                        seq: 1,
                        deps: Vc::new(),
                        item: std::sync::Arc::new(msg.clone())
                    }
                },
            }))
            .is_some(),
            "it fits one datagram"
        );
        s.apply(key(9, 1), &msg, Plants::default());
        for n in 1..1000u64 {
            let user = format!("u{n:03}");
            assert!(s.owes(&user, MsgId { client: 1, seq: 1 }), "{user} was not reached");
        }
        assert!(!s.owes("u000", MsgId { client: 1, seq: 1 }), "the sender is not its own recipient");
        assert_eq!(s.inbox_total(), 999);
    }

    #[test]
    fn every_server_reaches_the_same_members_whichever_concurrent_join_it_delivered_first() {
        // Server A starts a room message; a join through server B is concurrent with it.
        let mut base = ChatState::default();
        base.apply(key(1, 1), &join_of(1, "al", "r"), Plants::default());
        base.apply(key(1, 2), &join_of(2, "bo", "r"), Plants::default());
        let msg = room_msg(&base, 7, "al", "r");
        let late = join_of(3, "cy", "r");
        let (km, kj) = (key(1, 3), key(2, 1));
        let a = after_from(&base, &[(km, &msg), (kj, &late)]);
        let b = after_from(&base, &[(kj, &late), (km, &msg)]);
        assert_eq!(a.inboxes(), b.inboxes());
        assert_eq!(a.inboxes(), vec![("bo".to_string(), vec![MsgId { client: 7, seq: 1 }])]);
    }

    #[test]
    fn copies_of_a_room_message_reach_the_members_in_every_copy_cut() {
        // Two servers started copies of one message (a client retry): bo had left at the second.
        let mut s = ChatState::default();
        s.apply(key(1, 1), &join_of(1, "al", "r"), Plants::default());
        s.apply(key(1, 2), &join_of(2, "bo", "r"), Plants::default());
        let first = room_msg(&s, 7, "al", "r");
        let leave = Item::Leave { id: MsgId { client: 1002, seq: 2 }, user: "bo".into(), room: "r".into(), fence: 1, lamport: 9 };
        s.apply(key(2, 1), &leave, Plants::default());
        let second = room_msg(&s, 7, "al", "r");
        let one = after_from(&s, &[(key(1, 3), &first), (key(2, 2), &second)]);
        let two = after_from(&s, &[(key(2, 2), &second), (key(1, 3), &first)]);
        assert_eq!((one.inbox_total(), two.inbox_total()), (0, 0), "bo is not in the second copy's cut");
    }

    fn after_from(base: &ChatState, ops: &[(Key, &Item)]) -> ChatState {
        let mut s = base.clone();
        for (k, item) in ops {
            s.apply(*k, item, Plants::default());
        }
        s
    }

    #[test]
    fn a_merge_carries_a_room_message_owed_to_many_in_items_that_add_up() {
        let mut s = ChatState::default();
        for n in 0..40u64 {
            s.apply(key(1, n + 1), &join_of(n, &format!("u{n:02}"), "r"), Plants::default());
        }
        let msg = room_msg(&s, 7, "u00", "r");
        s.apply(key(1, 99), &msg, Plants::default());
        let carried = s.carry(|k| (k == key(1, 99)).then(|| msg.clone()));
        let chats: Vec<&Item> = carried.iter().map(|(_, i)| i).filter(|i| matches!(i, Item::Chat { .. })).collect();
        assert_eq!(chats.len(), 3, "39 users in items of at most 16");
        assert!(chats.iter().all(|i| i.is_well_formed()));
        let mut other = ChatState::default();
        for (n, item) in chats.iter().enumerate() {
            other.apply(key(5, n as u64 + 1), item, Plants::default());
        }
        assert_eq!(other.inbox_total(), 39);
        assert!(other.is_consistent());
    }
}
