//! The replicated chat state every server applies in causal delivery order:
//! user names, rooms, deduplication of client retries, and per-user inboxes
//! of messages not yet acknowledged by the user.

use crate::limits::{DEDUP_WINDOW, INBOX_HEADROOM, MAX_INBOX, MAX_RECIPIENTS, MAX_ROOM_MEMBERS};
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
    /// Inbox entries refused because an inbox was full.
    pub inbox_full: u64,
    /// Largest inbox seen.
    pub inbox_max: u64,
    /// Conflicting name bindings ignored.
    pub bind_conflicts: u64,
}

/// A user's standing in a room: the join or leave with the greatest `(fence, id.seq, key)` seen.
///
/// Joins and leaves of one user in one room may be concurrent (a user's new client process
/// joins through a server that has not yet delivered the old process's leave), and a server
/// may broadcast an operation late (it held a retry). Taking the greatest stamp instead of
/// the last delivered makes every server that delivered the same operations agree, whatever
/// order it delivered them in. A later process's operations carry a greater fence, and one
/// process's later operations a greater sequence number (with the same or a greater fence),
/// so the operation the user asked for last wins, however late the others are broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Standing {
    /// Which operation wins.
    fn stamp(&self) -> (u64, u64, Key) {
        (self.fence, self.id.seq, self.key)
    }

    /// Which joiners a full room keeps: the earliest.
    fn join_order(&self) -> (u64, Key) {
        (self.lamport, self.key)
    }
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
}

/// Replicated state (durable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatState {
    /// Name → credential of its holder.
    pub names: BTreeMap<String, UserKey>,
    /// Name → key of the binding message that counts.
    pub name_keys: BTreeMap<String, Key>,
    /// Room → user → standing (leaves are kept: an older concurrent join must not win).
    rooms: BTreeMap<String, BTreeMap<String, Standing>>,
    /// Lamport clock: past every operation applied here.
    lamport: u64,
    /// Per client, its latest [`DEDUP_WINDOW`] message ids: the first delivered copy and every recipient so far.
    seen: BTreeMap<u64, BTreeMap<u64, (Key, BTreeSet<String>)>>,
    /// Per user: delivery order → (id, key) of unacknowledged messages.
    inbox: BTreeMap<String, BTreeMap<u64, (MsgId, Key)>>,
    /// Keys referenced by some inbox, with their reference counts.
    pins: BTreeMap<Key, u32>,
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
            Item::Chat { id, to, .. } => {
                let window = self.seen.entry(id.client).or_default();
                if let Some((canonical, got)) = window.get_mut(&id.seq).filter(|_| !skip_dedup) {
                    // A retried copy: not shown again. Its recipients (fixed by the server that accepted it)
                    // may differ from the first copy's when room membership moved meanwhile. Recipients end
                    // as the intersection over copies, the same on every server whatever the delivery order
                    // (adding recipients late could show a message after its effects; removing is safe).
                    self.counters.duplicates_suppressed += 1;
                    let canonical = *canonical;
                    let dropped: Vec<String> = got.iter().filter(|u| !to.contains(u)).cloned().collect();
                    got.retain(|u| to.contains(u));
                    for user in dropped {
                        self.remove_entries(&user, &[*id]);
                    }
                    if self.pins.contains_key(&canonical) {
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
                window.insert(id.seq, (key, to.iter().cloned().collect()));
                while window.len() > DEDUP_WINDOW {
                    window.pop_first();
                }
                self.add_entries(*id, key, to);
                Applied::Chat { id: *id, canonical: key, fresh: true }
            }
            Item::Ack { user, ids } => {
                self.remove_entries(user, ids);
                Applied::Other
            }
            Item::Join { id, user, room, fence, lamport } | Item::Leave { id, user, room, fence, lamport } => {
                // A retried copy still goes through the comparison: copies carry different stamps,
                // and which copy a server delivers first differs between servers.
                if !self.first_copy(*id, key) {
                    self.counters.duplicates_suppressed += 1;
                    if plants.rooms_in_delivery_order {
                        return Applied::Other;
                    }
                }
                let new = Standing { joined: matches!(item, Item::Join { .. }), fence: *fence, id: *id, lamport: *lamport, key };
                let users = self.rooms.entry(room.clone()).or_default();
                let wins = |old: &Standing| {
                    if plants.unfenced {
                        (old.lamport, old.key) < (new.lamport, new.key)
                    } else {
                        old.stamp() < new.stamp()
                    }
                };
                if plants.rooms_in_delivery_order || users.get(user).is_none_or(wins) {
                    users.insert(user.clone(), new);
                }
                Applied::Other
            }
            // Its fence raised the Lamport clock above; a retirement is the causal layer's.
            Item::Login { .. } | Item::Retire { .. } => Applied::Other,
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

    /// The key of the first delivered copy of `id`, if one was delivered (and is still remembered).
    pub fn delivered_copy(&self, id: MsgId) -> Option<Key> {
        self.seen.get(&id.client).and_then(|w| w.get(&id.seq)).map(|(k, _)| *k)
    }

    /// Drops `user`'s inbox entries for `ids`.
    fn remove_entries(&mut self, user: &str, ids: &[MsgId]) {
        let Some(inbox) = self.inbox.get_mut(user) else { return };
        let gone: Vec<u64> = inbox.iter().filter(|(_, (id, _))| ids.contains(id)).map(|(o, _)| *o).collect();
        for o in gone {
            if let Some((_, k)) = inbox.remove(&o) {
                match self.pins.get_mut(&k) {
                    Some(p) if *p > 1 => *p -= 1,
                    Some(_) => {
                        self.pins.remove(&k);
                        self.copies.remove(&k);
                    }
                    None => {}
                }
            }
        }
        if inbox.is_empty() {
            self.inbox.remove(user);
        }
    }

    /// Records `id` as delivered (as `key`); false if a copy of it was delivered before or it is too old.
    fn first_copy(&mut self, id: MsgId, key: Key) -> bool {
        let window = self.seen.entry(id.client).or_default();
        if window.contains_key(&id.seq) || (window.len() >= DEDUP_WINDOW && window.keys().next().is_some_and(|f| id.seq < *f)) {
            return false;
        }
        window.insert(id.seq, (key, BTreeSet::new()));
        while window.len() > DEDUP_WINDOW {
            window.pop_first();
        }
        true
    }

    fn add_entries(&mut self, id: MsgId, key: Key, to: &[String]) {
        for user in to {
            let inbox = self.inbox.entry(user.clone()).or_default();
            if inbox.len() >= MAX_INBOX {
                self.counters.inbox_full += 1;
                continue;
            }
            self.order += 1;
            inbox.insert(self.order, (id, key));
            self.counters.inbox_max = self.counters.inbox_max.max(inbox.len() as u64);
            *self.pins.entry(key).or_insert(0) += 1;
        }
    }

    /// Whether the state's parts agree as applying messages keeps them (checked on a state
    /// that comes from outside: a snapshot or a state file): every inbox entry is pinned, each
    /// pin counts exactly the entries naming its key, delivery order numbers are below the
    /// next one, and no counter is near its end.
    pub fn is_consistent(&self) -> bool {
        let far_from_end = |v: u64| v < 1 << 62;
        let mut pins: BTreeMap<Key, u32> = BTreeMap::new();
        for inbox in self.inbox.values() {
            if inbox.is_empty() || inbox.len() > MAX_INBOX || inbox.keys().next_back().is_some_and(|o| *o > self.order) {
                return false;
            }
            for (_, key) in inbox.values() {
                *pins.entry(*key).or_insert(0) += 1;
            }
        }
        let c = &self.counters;
        pins == self.pins
            && self.copies.keys().all(|k| self.pins.contains_key(k))
            && [self.order, self.lamport, c.duplicates_suppressed, c.inbox_full, c.inbox_max, c.bind_conflicts]
                .into_iter()
                .all(far_from_end)
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
        self.inbox.clear();
        self.pins.clear();
        self.copies.clear();
    }

    /// Every delivered copy of the message whose first copy is `key` (itself first).
    pub fn copies(&self, key: Key) -> impl Iterator<Item = Key> + '_ {
        std::iter::once(key).chain(self.copies.get(&key).into_iter().flatten().copied())
    }

    /// Whether some inbox still references `key`.
    pub fn pinned(&self, key: Key) -> bool {
        self.pins.contains_key(&key)
    }

    /// The user's unacknowledged messages in delivery (hence causal) order.
    pub fn inbox(&self, user: &str) -> impl Iterator<Item = &(MsgId, Key)> {
        self.inbox.get(user).into_iter().flat_map(|m| m.values())
    }

    /// Every non-empty inbox: user and the ids it holds, in delivery order.
    pub fn inboxes(&self) -> Vec<(String, Vec<MsgId>)> {
        self.inbox.iter().map(|(u, m)| (u.clone(), m.values().map(|(id, _)| *id).collect())).collect()
    }

    /// Every non-empty inbox's user and size.
    pub fn inbox_sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.inbox.iter().map(|(u, m)| (u.as_str(), m.len()))
    }

    /// Whether every one of `users` has room in its inbox for a new message, keeping
    /// [`INBOX_HEADROOM`] free for messages other servers may already have started.
    pub fn has_room_for(&self, users: &[String]) -> bool {
        users.iter().all(|u| self.inbox.get(u).map_or(0, |m| m.len()) + INBOX_HEADROOM < MAX_INBOX)
    }

    /// Sizes of the collections that grow with clients and rooms, for the bounded-state check:
    /// clients in the dedup window, message ids in it, and room standings.
    pub fn growth(&self) -> (usize, usize, usize) {
        let ids = self.seen.values().map(|w| w.len()).sum();
        let standings = self.rooms.values().map(|r| r.len()).sum();
        (self.seen.len(), ids, standings)
    }

    /// Total inbox entries over all users.
    pub fn inbox_total(&self) -> usize {
        self.inbox.values().map(|m| m.len()).sum()
    }

    /// Recipients of a message from `from` to `target` under the current room membership.
    pub fn recipients(&self, from: &str, target: &Target) -> Vec<String> {
        match target {
            Target::User(u) => vec![u.clone()],
            Target::Room(r) => self.members(r).into_iter().filter(|u| *u != from).take(MAX_RECIPIENTS).map(String::from).collect(),
        }
    }

    /// A room's members, by name: the [`MAX_ROOM_MEMBERS`] earliest joiners still joined.
    pub fn members(&self, room: &str) -> Vec<&str> {
        let Some(users) = self.rooms.get(room) else { return Vec::new() };
        let mut joined: Vec<(&str, &Standing)> = users.iter().filter(|(_, s)| s.joined).map(|(u, s)| (u.as_str(), s)).collect();
        if joined.len() > MAX_ROOM_MEMBERS {
            joined.sort_by_key(|(_, s)| s.join_order());
            joined.truncate(MAX_ROOM_MEMBERS);
            joined.sort_by_key(|(u, _)| *u);
        }
        joined.into_iter().map(|(u, _)| u).collect()
    }

    /// What users are still owed of this state, as items to broadcast again in another
    /// cluster's history (a merge): every unacknowledged message, in delivery order, to the
    /// users still waiting for it (`get` finds a message by key), and every standing in a
    /// room, with its stamp.
    /// Names are left out: a user's next login claims them again.
    pub fn carry(&self, get: impl Fn(Key) -> Option<Item>) -> Vec<Item> {
        // Key → (first delivery order here, users still waiting): carried in delivery order,
        // which follows causal order, so a reply never comes before what it answers.
        let mut owed: BTreeMap<Key, (u64, Vec<String>)> = BTreeMap::new();
        for (user, inbox) in &self.inbox {
            for (order, (_, key)) in inbox {
                let (first, users) = owed.entry(*key).or_insert((*order, Vec::new()));
                *first = (*first).min(*order);
                users.push(user.clone());
            }
        }
        let mut owed: Vec<(u64, Key, Vec<String>)> = owed.into_iter().map(|(key, (order, users))| (order, key, users)).collect();
        owed.sort_unstable_by_key(|(order, key, _)| (*order, *key));
        let mut items = Vec::new();
        for (_, key, users) in owed {
            if let Some(Item::Chat { id, from, room, text, .. }) = get(key) {
                items.push(Item::Chat { id, from, room, to: users, text });
            }
        }
        for (room, users) in &self.rooms {
            for (user, st) in users {
                let (id, user, room, fence, lamport) = (st.id, user.clone(), room.clone(), st.fence, st.lamport);
                items.push(match st.joined {
                    true => Item::Join { id, user, room, fence, lamport },
                    false => Item::Leave { id, user, room, fence, lamport },
                });
            }
        }
        items
    }

    /// Every room with at least one member, by name, with its members.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.rooms.keys().map(|r| (r.as_str(), self.members(r))).filter(|(_, m)| !m.is_empty())
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
        let chat = Item::Chat { id, from: "al".into(), room: None, to: vec!["bo".into(), "cy".into()], text: "hi".into() };
        s.apply(key(1, 1), &chat, Plants::default());
        s.apply(key(1, 2), &Item::Ack { user: "bo".into(), ids: vec![id] }, Plants::default());
        s.apply(key(1, 3), &op(false, 2, 6, 4, 9), Plants::default());
        let carried = s.carry(|k| (k == key(1, 1)).then(|| chat.clone()));
        let want_chat = Item::Chat { id, from: "al".into(), room: None, to: vec!["cy".into()], text: "hi".into() };
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
            text: text.into(),
        };
        let (question, answer) = (msg(1, "question"), msg(2, "answer"));
        let mut s = ChatState::default();
        s.apply(key(9, 1), &question, Plants::default());
        s.apply(key(2, 1), &answer, Plants::default());
        let carried = s.carry(|k| Some(if k == key(9, 1) { question.clone() } else { answer.clone() }));
        assert_eq!(carried, vec![question, answer]);
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
    fn an_ack_applies_to_a_state_whose_pins_disagree_with_its_inboxes_and_such_a_state_is_inconsistent() {
        // Found by the `state_file` fuzz target: a state file whose pin of an inbox entry was 0
        // made the acknowledgement of that entry subtract below zero.
        let id = MsgId { client: 4, seq: 1 };
        let chat = Item::Chat { id, from: "a".into(), room: None, to: vec!["u".into()], text: "hi".into() };
        let mut s = after(&[(key(1, 1), &chat)], Plants::default());
        assert!(s.is_consistent());
        s.pins.insert(key(1, 1), 0);
        assert!(!s.is_consistent());
        s.apply(key(1, 2), &Item::Ack { user: "u".into(), ids: vec![id] }, Plants::default());
        assert_eq!((s.inbox_total(), s.pinned(key(1, 1))), (0, false));
        let mut far = ChatState { order: u64::MAX, ..ChatState::default() };
        assert!(!far.is_consistent(), "a counter at its end");
        far.order = 0;
        assert!(far.is_consistent());
    }

    #[test]
    fn a_full_room_keeps_its_earliest_joiners() {
        let mut s = ChatState::default();
        // Joins delivered in reverse stamp order: the earliest stamps count, not the first delivered.
        for n in (0..MAX_ROOM_MEMBERS as u64 + 3).rev() {
            let (id, user) = (MsgId { client: n, seq: 1 }, format!("u{n:02}"));
            // Fences do not decide who a full room keeps.
            let item = Item::Join { id, user, room: "r".into(), fence: 100 - n, lamport: n + 1 };
            s.apply(key(1, n + 1), &item, Plants::default());
        }
        let members = s.members("r");
        assert_eq!(members.len(), MAX_ROOM_MEMBERS);
        assert!(members.contains(&"u00") && !members.contains(&"u19"), "{members:?}");
        assert_eq!(s.recipients("u00", &Target::Room("r".into())).len(), MAX_RECIPIENTS);
    }
}
