//! The replicated chat state every server applies in causal delivery order:
//! user names, rooms, deduplication of client retries, and per-user inboxes
//! of messages not yet acknowledged by the user.

use crate::causal::Key;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Longest chat text, in bytes (checked at the client before anything is sent).
pub const MAX_TEXT: usize = 200;
/// Longest user or room name, in bytes.
pub const MAX_NAME: usize = 16;
/// Most recipients of one message (room members).
pub const MAX_RECIPIENTS: usize = 16;
/// Most unacknowledged messages one user's inbox holds.
pub const MAX_INBOX: usize = 512;
/// Inbox entries kept free when a server starts a message: room for the ones other servers
/// started meanwhile.
pub const INBOX_HEADROOM: usize = 64;
/// Message ids per client remembered for deduplication (a retry older than this is dropped).
pub const DEDUP_WINDOW: usize = 16;
/// Most message ids one acknowledgement carries.
pub const MAX_ACK_IDS: usize = 32;

/// A message's identity for users: `(client id, client sequence)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The sending client (one client process life).
    pub client: u64,
    /// The client's sequence number.
    pub seq: u64,
}

/// Whom a message is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// One user (private message).
    User(String),
    /// Every member of a room.
    Room(String),
}

/// A replicated operation, carried by the causal broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A chat message; `to` are its recipients, fixed by the server that accepted it.
    Chat {
        /// Identity for users.
        id: MsgId,
        /// Sender's user name.
        from: String,
        /// Room, for room messages.
        room: Option<String>,
        /// Recipients.
        to: Vec<String>,
        /// Text.
        text: String,
    },
    /// `user` acknowledged `ids`: every server drops them from the user's inbox.
    Ack {
        /// The user.
        user: String,
        /// Acknowledged messages.
        ids: Vec<MsgId>,
    },
    /// `user` joins `room`.
    Join {
        /// The operation's id (a retried copy is applied once).
        id: MsgId,
        /// The user.
        user: String,
        /// The room.
        room: String,
    },
    /// `user` leaves `room`.
    Leave {
        /// The operation's id (a retried copy is applied once).
        id: MsgId,
        /// The user.
        user: String,
        /// The room.
        room: String,
    },
    /// The leader of `epoch` binds `name` to the holder of `token`.
    Bind {
        /// User name.
        name: String,
        /// The user's credential.
        token: u64,
        /// Epoch of the leader that bound it.
        epoch: u64,
    },
}

impl Item {
    /// Bounds an item from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        let name = |s: &String| !s.is_empty() && s.len() <= MAX_NAME;
        match self {
            Item::Chat { from, room, to, text, .. } => {
                name(from) && room.as_ref().is_none_or(name) && to.len() <= MAX_RECIPIENTS && to.iter().all(name) && text.len() <= MAX_TEXT
            }
            Item::Ack { user, ids } => name(user) && ids.len() <= MAX_ACK_IDS,
            Item::Join { user, room, .. } | Item::Leave { user, room, .. } => name(user) && name(room),
            Item::Bind { name: n, .. } => name(n),
        }
    }
}

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

/// Replicated state (durable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatState {
    /// Name → credential of its holder.
    pub names: BTreeMap<String, u64>,
    /// Name → key of the binding message that counts.
    pub name_keys: BTreeMap<String, Key>,
    /// Room → members.
    pub rooms: BTreeMap<String, BTreeSet<String>>,
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
    /// Applies one delivered message. `skip_dedup` and `rebind` are planted bugs.
    pub fn apply(&mut self, key: Key, item: &Item, skip_dedup: bool, rebind: bool) -> Applied {
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
            Item::Join { id, .. } | Item::Leave { id, .. } if !self.first_copy(*id, key) => {
                self.counters.duplicates_suppressed += 1;
                Applied::Other
            }
            Item::Join { user, room, .. } => {
                let members = self.rooms.entry(room.clone()).or_default();
                if members.len() < MAX_RECIPIENTS + 1 {
                    members.insert(user.clone());
                }
                Applied::Other
            }
            Item::Leave { user, room, .. } => {
                if let Some(m) = self.rooms.get_mut(room) {
                    m.remove(user);
                }
                Applied::Other
            }
            Item::Bind { name, token, .. } => {
                match self.names.get(name) {
                    Some(t) if *t != *token && !rebind => self.counters.bind_conflicts += 1,
                    Some(t) if *t == *token => {}
                    _ => {
                        self.names.insert(name.clone(), *token);
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
                if let Some(p) = self.pins.get_mut(&k) {
                    *p -= 1;
                    if *p == 0 {
                        self.pins.remove(&k);
                        self.copies.remove(&k);
                    }
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

    /// Total inbox entries over all users.
    pub fn inbox_total(&self) -> usize {
        self.inbox.values().map(|m| m.len()).sum()
    }

    /// Recipients of a message from `from` to `target` under the current room membership.
    pub fn recipients(&self, from: &str, target: &Target) -> Vec<String> {
        match target {
            Target::User(u) => vec![u.clone()],
            Target::Room(r) => {
                self.rooms.get(r).map(|m| m.iter().filter(|u| *u != from).take(MAX_RECIPIENTS).cloned().collect()).unwrap_or_default()
            }
        }
    }
}
