//! Messages between clients (and `ringchat status`) and servers.

use crate::limits::{MAX_ACK_IDS, MAX_MEMBERS, MAX_NAME, MAX_ORIGINS, MAX_TEXT, MAX_WHO};
use crate::time::Vc;
use crate::user::{Signature, UserKey};
use crate::wire::bounds::Bounded;
use crate::wire::chat::{MsgId, Target};
use crate::wire::fragment::Fragment;
use crate::wire::status::StatusReport;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Bytes a `Find` is padded to: an `Assign` of [`MAX_MEMBERS`] IPv6 addresses fits.
pub const FIND_ROOM: usize = 512;
/// Bytes a `Login` is padded to: a `LoginRefused` naming the name in words fits.
pub const LOGIN_ROOM: usize = 160;
/// Bytes an `Identity` request is padded to: its answer fits.
pub const IDENTITY_ROOM: usize = 64;

fn ok_name(s: &String) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME
}

/// Which names a [`ClientMsg::Who`] lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WhoList {
    /// Every registered user, with whether it is online.
    Users,
    /// Every room with members, with how many.
    Rooms,
    /// The members of one room, with whether each is online.
    Members(String),
}

impl WhoList {
    fn is_well_formed(&self) -> bool {
        match self {
            WhoList::Users | WhoList::Rooms => true,
            WhoList::Members(r) => ok_name(r),
        }
    }
}

/// Client to server. New kinds are only ever appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Ask for a [`StatusReport`].
    Status,
    /// Log in as `name` (holder of `token`), carrying the causal context of what was shown so far.
    Login {
        /// Client id (one client process life).
        client: u64,
        /// User name.
        name: String,
        /// The user's public key (what the name is bound to).
        key: UserKey,
        /// The user's signature of this login on this channel (see [`crate::user`]).
        sig: Signature,
        /// Vector of what this client has been shown (and had stored).
        ctx: Vc,
        /// Login attempt number; the server echoes it so stale shows of an earlier login are ignored.
        attempt: u64,
    },
    /// Submit an operation (retried with the same id until `Stored`).
    Send {
        /// The operation's id.
        id: MsgId,
        /// What to do.
        op: Op,
        /// The client's causal context.
        ctx: Vc,
        /// Sent before to another server: the receiver first gives that copy time to arrive.
        retry: bool,
        /// Milliseconds left before the client gives up on it and reports it failed: a
        /// server must not broadcast it after that.
        left_ms: u32,
    },
    /// Acknowledge shown messages.
    Ack {
        /// Client id.
        client: u64,
        /// Shown messages.
        ids: Vec<MsgId>,
        /// The login attempt it belongs to.
        attempt: u64,
        /// The next show number the client waits for, as in [`ClientMsg::Ping`]: the server
        /// then owes no skip for a number below it.
        next: u64,
    },
    /// Client heartbeat.
    Ping {
        /// Client id.
        client: u64,
        /// The login attempt it belongs to.
        attempt: u64,
        /// The next show number the client waits for (everything before it was shown or skipped).
        next: u64,
    },
    /// Log out (go offline).
    Logout {
        /// Client id.
        client: u64,
        /// The last messages the client acknowledged (at most [`MAX_ACK_IDS`]): they may have
        /// been lost on the way, and a clean quit must leave nothing shown unacknowledged.
        acks: Vec<MsgId>,
    },
    /// Ask for a page of a list of names (answered with [`ServerMsg::Who`]).
    Who {
        /// Client id.
        client: u64,
        /// Which list.
        list: WhoList,
        /// The page starts after this name (empty: at the start).
        after: String,
    },
    /// Which servers should this client use? Answered with [`ServerMsg::Assign`]
    /// by every server that is a member of an installed view (sent to known
    /// servers and to the discovery group).
    Find {
        /// Client id (the assignment is a function of it).
        client: u64,
    },
    /// Which identity key do this cluster's servers hold? The one request a sealed cluster
    /// takes plain (trust on first use), answered with [`ServerMsg::Identity`].
    Identity,
    /// A piece of a client message too long for one datagram (a long `Send`; see
    /// [`crate::wire::fragment`]).
    Fragment(Fragment),
}

/// An operation a client submits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A chat message.
    Chat {
        /// Recipient.
        to: Target,
        /// Text, at most [`crate::limits::MAX_TEXT`] bytes.
        text: String,
    },
    /// Join a room.
    Join(String),
    /// Leave a room.
    Leave(String),
}

impl ClientMsg {
    /// Stable name of the message kind, used in counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Status => "status",
            ClientMsg::Login { .. } => "login",
            ClientMsg::Send { .. } => "send",
            ClientMsg::Ack { .. } => "ack",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::Logout { .. } => "logout",
            ClientMsg::Who { .. } => "who",
            ClientMsg::Find { .. } => "find",
            ClientMsg::Identity => "identity",
            ClientMsg::Fragment(_) => "fragment",
        }
    }

    /// The least size of this request on the wire (zero-padded by [`crate::wire::encode`]):
    /// room for its largest direct answer, which a server sends only if it is no larger than
    /// the request (no amplification).
    pub fn answer_room(&self) -> usize {
        match self {
            ClientMsg::Status | ClientMsg::Who { .. } => crate::limits::MAX_DATAGRAM,
            ClientMsg::Find { .. } => FIND_ROOM,
            ClientMsg::Identity => IDENTITY_ROOM,
            ClientMsg::Login { .. } => LOGIN_ROOM,
            _ => 0,
        }
    }

    /// Bounds a message from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        match self {
            ClientMsg::Logout { acks, .. } => acks.len() <= MAX_ACK_IDS && acks.iter().all(Bounded::in_bounds),
            ClientMsg::Who { list, after, .. } => list.is_well_formed() && after.len() <= MAX_NAME,
            ClientMsg::Status | ClientMsg::Ping { .. } | ClientMsg::Find { .. } | ClientMsg::Identity => true,
            ClientMsg::Login { name, ctx, .. } => ok_name(name) && ctx.len() <= MAX_ORIGINS && ctx.in_bounds(),
            ClientMsg::Send { id, op, ctx, .. } => {
                ctx.len() <= MAX_ORIGINS
                    && ctx.in_bounds()
                    && id.in_bounds()
                    && match op {
                        // A text over MAX_TEXT decodes (within MAX_MESSAGE), to be rejected
                        // with the bound in the answer (`Rejection::TextTooLong`).
                        Op::Chat { to: Target::User(n) | Target::Room(n), .. } => ok_name(n),
                        Op::Join(r) | Op::Leave(r) => ok_name(r),
                    }
            }
            ClientMsg::Ack { ids, .. } => ids.len() <= MAX_ACK_IDS && ids.iter().all(Bounded::in_bounds),
            ClientMsg::Fragment(f) => f.is_well_formed(),
        }
    }
}

/// Server to client. New kinds are only ever appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to [`ClientMsg::Status`].
    Status(StatusReport),
    /// Logged in: this server now shows the user's messages.
    LoginOk {
        /// Client id.
        client: u64,
        /// The login attempt it answers.
        attempt: u64,
    },
    /// Login refused (N1: the name is held by another user).
    LoginRefused {
        /// Client id.
        client: u64,
        /// Why, in words.
        reason: String,
    },
    /// A stable message for the user.
    Show {
        /// Its id.
        id: MsgId,
        /// Sender.
        from: String,
        /// Room, for room messages.
        room: Option<String>,
        /// Text.
        text: String,
        /// Its vector timestamp (the client merges it into its context).
        stamp: Vc,
        /// The login attempt this show belongs to.
        attempt: u64,
        /// Position in this login's show sequence (1, 2, ...): the client shows in this order.
        no: u64,
        /// The client it is for (a new client life at the same address ignores its predecessor's shows).
        client: u64,
    },
    /// The operation `id` is stable (held by a majority of servers).
    Stored {
        /// The operation.
        id: MsgId,
        /// The timestamp of the stored copy.
        stamp: Vc,
    },
    /// Answer to a ping.
    Pong {
        /// Client id.
        client: u64,
    },
    /// Show number `no` is void (its message was acknowledged through another server meanwhile).
    Skip {
        /// Client id.
        client: u64,
        /// The login attempt it belongs to.
        attempt: u64,
        /// The void number.
        no: u64,
    },
    /// Answer to [`ClientMsg::Who`]: one page of the list, in name order (at most
    /// [`MAX_WHO`] names, as many as fit a datagram). Each name comes with a number: for
    /// users and members, 1 if the user is logged in at a server of the view (as of the
    /// servers' presence reports, at most a second or so old), else 0; for rooms, the number
    /// of members.
    Who {
        /// Client id.
        client: u64,
        /// Which list.
        list: WhoList,
        /// The page.
        names: Vec<(String, u32)>,
        /// More names follow the last one (ask again after it).
        more: bool,
    },
    /// Answer to [`ClientMsg::Find`]: the live members of the server's view in
    /// the order the client should try them (see `cluster::assign`); at most
    /// [`MAX_MEMBERS`] addresses, never empty when sent.
    Assign {
        /// Client id.
        client: u64,
        /// Server addresses, the assigned one first.
        servers: Vec<SocketAddr>,
    },
    /// A client message was refused and changed nothing (at most one per datagram received).
    Refused {
        /// The client id the refused message named.
        client: u64,
        /// Why.
        reason: RefusalReason,
    },
    /// Answer to [`ClientMsg::Logout`]: what the session's user acknowledged is stable, so no
    /// later login of the user is shown it again.
    LoggedOut {
        /// Client id.
        client: u64,
    },
    /// An operation the server will never carry out (the client reports it to its user and
    /// stops retrying it).
    Rejected {
        /// The operation.
        id: MsgId,
        /// Why.
        reason: Rejection,
    },
    /// Answer to [`ClientMsg::Identity`]: the public key of the identity client channels are
    /// sealed to (sent plain; a client trusts it on first use only, with a warning).
    Identity {
        /// The identity's X25519 public key.
        public: [u8; 32],
    },
    /// A piece of a server message too long for one datagram (a long `Show`; see
    /// [`crate::wire::fragment`]).
    Fragment(Fragment),
}

/// Why a server rejected an operation. New kinds are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// A private message to a name no user holds (checked once the sender's causal context
    /// is delivered, so a user the sender has heard of is never reported missing).
    NoSuchUser,
    /// A join of a room that holds [`crate::limits::MAX_ROOM_MEMBERS`] members already: the
    /// user is not a member.
    RoomFull {
        /// The bound.
        max: u32,
    },
    /// A chat message whose text is longer than [`crate::limits::MAX_TEXT`] (a client that
    /// skipped its own check): nothing of it was stored.
    TextTooLong {
        /// The bound, in bytes.
        max: u32,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NoSuchUser => write!(f, "no such user"),
            Rejection::RoomFull { max } => write!(f, "the room is full ({max} members); you are not a member"),
            Rejection::TextTooLong { max } => write!(f, "the text is longer than {max} bytes; nothing was sent"),
        }
    }
}

/// Why a server refused a client message. New kinds are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The client id's session at this server belongs to another channel (or, unsealed, address).
    NotYourSession,
    /// Acknowledged ids that were never shown to this session (they were dropped).
    NeverShown {
        /// How many of the message's ids.
        count: u32,
    },
    /// A send, acknowledgement or ping for a session that is not logged in here: log in again.
    NotLoggedIn,
    /// A status request from a channel that proved no key of the cluster (sealed clusters
    /// answer status to operators only).
    OperatorOnly,
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::NotYourSession => write!(f, "this client id belongs to another session"),
            RefusalReason::NeverShown { count } => write!(f, "acknowledged {count} message(s) never shown to this session"),
            RefusalReason::NotLoggedIn => write!(f, "not logged in at this server"),
            RefusalReason::OperatorOnly => write!(f, "status is for operators: give ringchat status the cluster's key file"),
        }
    }
}

impl ServerMsg {
    /// Stable name of the message kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMsg::Status(_) => "status",
            ServerMsg::LoginOk { .. } => "login_ok",
            ServerMsg::LoginRefused { .. } => "login_refused",
            ServerMsg::Show { .. } => "show",
            ServerMsg::Stored { .. } => "stored",
            ServerMsg::Pong { .. } => "pong",
            ServerMsg::Skip { .. } => "skip",
            ServerMsg::Who { .. } => "who",
            ServerMsg::Assign { .. } => "assign",
            ServerMsg::Refused { .. } => "refused",
            ServerMsg::Rejected { .. } => "rejected",
            ServerMsg::LoggedOut { .. } => "logged_out",
            ServerMsg::Identity { .. } => "identity",
            ServerMsg::Fragment(_) => "fragment",
        }
    }

    /// Bounds a message from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        match self {
            ServerMsg::Status(r) => r.members.len() <= MAX_MEMBERS && r.build.len() <= crate::wire::status::MAX_BUILD,
            ServerMsg::LoginOk { .. } | ServerMsg::Pong { .. } | ServerMsg::Skip { .. } => true,
            ServerMsg::LoginRefused { reason, .. } => reason.len() <= 200,
            ServerMsg::Show { from, room, text, stamp, .. } => {
                ok_name(from) && room.as_ref().is_none_or(ok_name) && text.len() <= MAX_TEXT && stamp.len() <= MAX_ORIGINS
            }
            ServerMsg::Stored { stamp, .. } => stamp.len() <= MAX_ORIGINS,
            ServerMsg::Who { list, names, .. } => list.is_well_formed() && names.len() <= MAX_WHO && names.iter().all(|(n, _)| ok_name(n)),
            ServerMsg::Assign { servers, .. } => !servers.is_empty() && servers.len() <= MAX_MEMBERS,
            ServerMsg::Refused { reason, .. } => match reason {
                RefusalReason::NeverShown { count } => *count >= 1 && *count as usize <= MAX_ACK_IDS,
                RefusalReason::NotYourSession | RefusalReason::NotLoggedIn | RefusalReason::OperatorOnly => true,
            },
            ServerMsg::Rejected { id, .. } => id.in_bounds(),
            ServerMsg::LoggedOut { .. } | ServerMsg::Identity { .. } => true,
            ServerMsg::Fragment(f) => f.is_well_formed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode, DecodeError, Packet};

    #[test]
    fn refusals_round_trip_and_are_bounded() {
        for reason in [RefusalReason::NotYourSession, RefusalReason::NeverShown { count: MAX_ACK_IDS as u32 }, RefusalReason::NotLoggedIn] {
            let p = Packet::ToClient(ServerMsg::Refused { client: u64::MAX, reason });
            assert_eq!(decode(&encode(&p).expect("fits")).expect("decodes"), p);
            assert!(!reason.to_string().is_empty());
        }
        // A count that no acknowledgement can reach is refused.
        for count in [0, MAX_ACK_IDS as u32 + 1, u32::MAX] {
            let bad = Packet::ToClient(ServerMsg::Refused { client: 1, reason: RefusalReason::NeverShown { count } });
            assert_eq!(decode(&encode(&bad).expect("fits")), Err(DecodeError::Invalid));
        }
        // Every truncation of a refusal is a typed error, never a panic.
        let bytes =
            encode(&Packet::ToClient(ServerMsg::Refused { client: 7, reason: RefusalReason::NeverShown { count: 3 } })).expect("fits");
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn find_and_assign_round_trip_and_are_bounded() {
        let find = Packet::FromClient(ClientMsg::Find { client: u64::MAX });
        assert_eq!(decode(&encode(&find).expect("fits")).expect("decodes"), find);
        // The largest assignment (every member, IPv6) fits one datagram.
        let v6: Vec<SocketAddr> =
            (0..MAX_MEMBERS).map(|i| SocketAddr::new(std::net::Ipv6Addr::new(0xfd00, 1, 2, 3, 4, 5, 6, i as u16).into(), 65535)).collect();
        let full = Packet::ToClient(ServerMsg::Assign { client: u64::MAX, servers: v6 });
        assert_eq!(decode(&encode(&full).expect("fits one datagram")).expect("decodes"), full);
        // An empty assignment, or one longer than a view, is refused.
        let v4 = |n: usize| (0..n).map(|i| SocketAddr::from(([10, 0, 0, i as u8], 7000))).collect::<Vec<_>>();
        for servers in [Vec::new(), v4(MAX_MEMBERS + 1)] {
            let bad = Packet::ToClient(ServerMsg::Assign { client: 1, servers });
            assert_eq!(decode(&encode(&bad).expect("fits")), Err(DecodeError::Invalid));
        }
    }
}
