//! What the servers replicate: the causal-broadcast message and the chat operations it
//! carries, with the bounds a message from the wire must respect.

use crate::id::NodeId;
use crate::limits::{MAX_ACK_IDS, MAX_NAME, MAX_ORIGINS, MAX_RECIPIENTS, MAX_TEXT};
use crate::time::Vc;
use serde::{Deserialize, Serialize};

/// `(origin, seq)`: the identity of a broadcast message among servers.
pub type Key = (NodeId, u64);

/// A message of the causal broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalMsg {
    /// The server life that broadcast it.
    pub origin: NodeId,
    /// Its per-origin sequence number (1, 2, ...).
    pub seq: u64,
    /// The origin's delivered vector when it sent the message (its own entry excluded).
    pub deps: Vc,
    /// The replicated operation, shared by every copy of the message (store, hold-back queue,
    /// outgoing datagrams): copying a message copies no text.
    pub item: std::sync::Arc<Item>,
}

impl CausalMsg {
    /// The message's key.
    pub fn key(&self) -> Key {
        (self.origin, self.seq)
    }

    /// The message's full vector timestamp (deps plus itself).
    pub fn stamp(&self) -> Vc {
        let mut vc = self.deps.clone();
        vc.insert(self.origin, self.seq);
        vc
    }

    /// Bounds a message from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        self.seq > 0 && self.deps.len() <= MAX_ORIGINS && self.item.is_well_formed()
    }
}

/// A message's identity for users: `(client id, client sequence)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The sending client (one client process life).
    pub client: u64,
    /// The client's sequence number.
    pub seq: u64,
}

impl std::fmt::Display for MsgId {
    /// `client:seq`, the client id in hex (as logs name clients): `400000001:2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}:{}", self.client, self.seq)
    }
}

impl std::fmt::Display for Target {
    /// `user u3` or `room r1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::User(u) => write!(f, "user {u}"),
            Target::Room(r) => write!(f, "room {r}"),
        }
    }
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
    /// A chat message. A private message names its one recipient in `to`. A room message names
    /// none: it reaches the room's members at its `cut` (see `Rooms::members_at` in the chat state), the same
    /// users at every server. A room message a merge carries names the users still owed it
    /// instead (at most [`MAX_RECIPIENTS`] per item, its copies adding up).
    Chat {
        /// Identity for users.
        id: MsgId,
        /// Sender's user name.
        from: String,
        /// Room, for room messages.
        room: Option<String>,
        /// Recipients: the one user of a private message; empty for a room message (except as
        /// carried by a merge).
        to: Vec<String>,
        /// For a room message: per origin, the latest join, leave or retirement the accepting
        /// server had applied from it (origins retired with all they sent left out).
        cut: Vc,
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
        /// The operation's id.
        id: MsgId,
        /// The user.
        user: String,
        /// The room.
        room: String,
        /// Login fence of the client process that asked (see [`Item::Login`]): the latest
        /// join or leave of a user in a room wins (see `Standing` in the chat rooms).
        fence: u64,
        /// Lamport time at the server that started it (a full room keeps its earliest joiners).
        lamport: u64,
    },
    /// `user` leaves `room`.
    Leave {
        /// The operation's id.
        id: MsgId,
        /// The user.
        user: String,
        /// The room.
        room: String,
        /// Login fence of the client process that asked.
        fence: u64,
        /// Lamport time at the server that started it.
        lamport: u64,
    },
    /// A client process of `user` logged in, and its joins and leaves carry `fence`.
    ///
    /// The server starts it once the login caught up with a majority, and lets the process
    /// send only once it is stable. A process that logs in after that has delivered it, so
    /// its own fence is greater: its operations win over every operation of the older
    /// process, even one a server held back and broadcasts late.
    Login {
        /// The user.
        user: String,
        /// The process's fence: a Lamport time of the server that started it.
        fence: u64,
    },
    /// The leader of `epoch` binds `name` to the holder of `key`'s secret.
    Bind {
        /// User name.
        name: String,
        /// The user's public key.
        key: crate::user::UserKey,
        /// Epoch of the leader that bound it.
        epoch: u64,
    },
    /// The leader retires origin lives that left the view: every member held `(life, upto)`
    /// when it was sent. Each server retires a life where it delivered exactly that much (see
    /// `Causal::retire_lives`), at the same place in causal order everywhere.
    Retire {
        /// Lives and how much of each every member held.
        lives: Vec<(crate::id::NodeId, u64)>,
    },
}

impl Item {
    /// Bounds an item from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        let name = |s: &String| !s.is_empty() && s.len() <= MAX_NAME;
        match self {
            Item::Chat { from, room, to, cut, text, .. } => {
                let whom = match room {
                    None => to.len() == 1 && cut.is_empty(),
                    Some(r) => name(r) && to.len() <= MAX_RECIPIENTS && cut.len() <= MAX_ORIGINS,
                };
                name(from) && whom && to.iter().all(name) && text.len() <= MAX_TEXT
            }
            Item::Ack { user, ids } => name(user) && ids.len() <= MAX_ACK_IDS,
            Item::Join { user, room, .. } | Item::Leave { user, room, .. } => name(user) && name(room),
            Item::Login { user, .. } => name(user),
            Item::Bind { name: n, .. } => name(n),
            Item::Retire { lives } => lives.len() <= MAX_ORIGINS,
        }
    }
}
