//! The wire format: one version byte, then a postcard-encoded [`Envelope`].
//!
//! Decoding is total: any byte string gives a message or a [`DecodeError`],
//! never a panic, and input longer than [`MAX_DATAGRAM`] is refused unread.

use crate::id::{ClusterId, NodeId};
use crate::view::{Member, View, ViewStamp};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Protocol version carried in the first byte of every datagram.
pub const VERSION: u8 = 3;

/// Largest datagram the protocol sends or accepts (safe on every LAN).
pub const MAX_DATAGRAM: usize = 1200;

/// The LCR comparison key of a candidate: the more up-to-date view wins,
/// then the higher server id (so a fault-free ring elects the highest id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CandidateKey {
    /// Stamp of the candidate's latest view.
    pub view: ViewStamp,
    /// The candidate.
    pub node: NodeId,
}

/// Every datagram: between servers, from a client, or to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Packet {
    /// Server to server.
    Peer(Envelope),
    /// Client (or `ringchat status`) to server.
    FromClient(crate::client_wire::ClientMsg),
    /// Server to client.
    ToClient(crate::client_wire::ServerMsg),
}

/// A datagram between servers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Cluster of the sender ([`ClusterId::NONE`] while founding).
    pub cluster: ClusterId,
    /// Sender.
    pub from: NodeId,
    /// Sender's epoch (for election messages: the election's epoch).
    pub epoch: u64,
    /// What it says.
    pub body: Body,
}

/// Message bodies. New kinds are only ever appended (postcard tags by index).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Discovery: "I am here" from a server without a cluster, or looking for one.
    Hello {
        /// Where the sender listens.
        addr: SocketAddr,
        /// The sender has no cluster and will found one with those it finds.
        founding: bool,
    },
    /// A member's answer to a Hello: which cluster, how big, who leads.
    Welcome {
        /// The leader, if the member knows one.
        leader: Option<Member>,
        /// Members in the sender's view.
        view_size: u32,
    },
    /// A leader's periodic announcement to the discovery group (finds newcomers, merges clusters).
    Beacon {
        /// The leader itself.
        leader: Member,
        /// Members in its view.
        view_size: u32,
    },
    /// A newcomer asks the leader for admission.
    JoinRequest {
        /// Where the newcomer listens.
        addr: SocketAddr,
    },
    /// Liveness between members; carries the leader and committed view for catch-up.
    Heartbeat {
        /// Leader of `epoch` as the sender knows it.
        leader: Option<NodeId>,
        /// Sender's last committed view.
        committed: ViewStamp,
        /// Sender's latest stored view (a member answers a sender behind it with its installed view).
        latest: ViewStamp,
        /// Anti-entropy digest: the sender's delivered vector clock.
        digest: crate::causal::Vc,
    },
    /// "You are not in my committed view" (the receiver rejoins if that view is newer than its own).
    NotMember {
        /// The sender's committed view stamp.
        committed: ViewStamp,
    },
    /// LCR election token.
    Token {
        /// Candidate carried by the token.
        key: CandidateKey,
    },
    /// Hop acknowledgement of a token or an Elected announcement.
    RingAck {
        /// Candidate of the acknowledged message.
        key: CandidateKey,
        /// It acknowledges an Elected (not a Token).
        elected: bool,
    },
    /// A candidate whose token came back announces itself around the ring.
    Elected {
        /// The candidate.
        key: CandidateKey,
    },
    /// A server accepts the candidate of `epoch` (at most one per epoch, ever).
    Accept {
        /// The accepted candidate.
        leader: NodeId,
    },
    /// Refusal of an election token: the receiver still hears a live leader.
    LeaderAlive {
        /// That leader.
        leader: NodeId,
    },
    /// Leader proposes the next view.
    ViewPropose {
        /// The proposed view.
        view: View,
    },
    /// A member stores a proposed view.
    ViewAck {
        /// Stamp of the stored view.
        stamp: ViewStamp,
    },
    /// Leader declares a view installed.
    ViewCommit {
        /// The installed view.
        view: View,
    },
    /// A member that is behind asks for the committed view.
    ViewRequest,
    /// A member leaves cleanly.
    Leave,
    /// A member tells a server behind it (or a joining one) the view it installed.
    /// Information only: it updates what the receiver compares candidates against
    /// and the ring it forwards on, and is never taken as a leader's action.
    ViewInfo {
        /// The sender's installed view.
        view: View,
    },
    /// A causal-broadcast message (first send or retransmission).
    Chat {
        /// The message.
        msg: crate::causal::CausalMsg,
    },
    /// Several causal-broadcast messages for one peer in one datagram (sent under load).
    ChatBatch {
        /// The messages, in the order they were sent (at most [`MAX_BATCH`]).
        msgs: Vec<crate::causal::CausalMsg>,
    },
    /// Answer to a [`Body::ChatNeed`] for messages the sender no longer stores: everything of
    /// `origin` below `below` was trimmed here (the asker needs a snapshot).
    ChatGone {
        /// Origin.
        origin: NodeId,
        /// First sequence number still stored (or next to come).
        below: u64,
    },
    /// State transfer: send the snapshot offer `nonce` (0: a fresh one) from chunk `from` on.
    SnapshotGet {
        /// Offer wanted (0: any fresh one).
        nonce: u64,
        /// First chunk wanted.
        from: u32,
    },
    /// State transfer: one chunk of a snapshot offer.
    SnapshotChunk {
        /// The offer.
        nonce: u64,
        /// Chunk number.
        index: u32,
        /// Chunks in the offer.
        total: u32,
        /// At most [`crate::transfer::CHUNK`] bytes.
        bytes: Vec<u8>,
    },
    /// Anti-entropy: resend `origin`'s messages `from..=to`.
    ChatNeed {
        /// Origin.
        origin: NodeId,
        /// First missing sequence number.
        from: u64,
        /// Last wanted sequence number.
        to: u64,
    },
    /// A server asks the leader to bind a user name.
    NameClaim {
        /// The name.
        name: String,
        /// The claimant's credential.
        token: u64,
    },
    /// What the sender has delivered, sent as soon as it delivers something new
    /// (at most once per [`crate::chat_server::HOLDS_GAP_US`]): lets peers count
    /// holders, and so stability, without waiting for the next heartbeat.
    ChatHolds {
        /// The sender's delivered vector clock.
        delivered: crate::causal::Vc,
    },
    /// Who is logged in at the sender (at most [`crate::chat_server::MAX_PRESENCE`] names, in
    /// name order), sent to every member each second and soon after the set changes: `/who`
    /// shows a user online wherever it is attached.
    ChatPresence {
        /// User names.
        users: Vec<String>,
    },
}

impl Body {
    /// Stable name of the message kind, used in counters and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hello { .. } => "hello",
            Body::Welcome { .. } => "welcome",
            Body::Beacon { .. } => "beacon",
            Body::JoinRequest { .. } => "join",
            Body::Heartbeat { .. } => "heartbeat",
            Body::NotMember { .. } => "not_member",
            Body::Token { .. } => "lcr_token",
            Body::RingAck { .. } => "lcr_ack",
            Body::Elected { .. } => "lcr_elected",
            Body::Accept { .. } => "lcr_accept",
            Body::LeaderAlive { .. } => "leader_alive",
            Body::ViewPropose { .. } => "view_propose",
            Body::ViewAck { .. } => "view_ack",
            Body::ViewCommit { .. } => "view_commit",
            Body::ViewRequest => "view_request",
            Body::Leave => "leave",
            Body::ViewInfo { .. } => "view_info",
            Body::Chat { .. } => "chat",
            Body::ChatBatch { .. } => "chat_batch",
            Body::ChatNeed { .. } => "chat_need",
            Body::ChatGone { .. } => "chat_gone",
            Body::SnapshotGet { .. } => "snapshot_get",
            Body::SnapshotChunk { .. } => "snapshot_chunk",
            Body::NameClaim { .. } => "name_claim",
            Body::ChatHolds { .. } => "chat_holds",
            Body::ChatPresence { .. } => "chat_presence",
        }
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Zero bytes.
    Empty,
    /// More than [`MAX_DATAGRAM`] bytes.
    Oversize,
    /// First byte is not [`VERSION`].
    WrongVersion(u8),
    /// The bytes are not an envelope.
    Malformed,
    /// An envelope whose content breaks a protocol bound (e.g. a malformed view).
    Invalid,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty datagram"),
            DecodeError::Oversize => write!(f, "datagram over {MAX_DATAGRAM} bytes"),
            DecodeError::WrongVersion(v) => write!(f, "protocol version {v}, expected {VERSION}"),
            DecodeError::Malformed => write!(f, "malformed datagram"),
            DecodeError::Invalid => write!(f, "datagram breaks a protocol bound"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Most messages in one [`Body::ChatBatch`].
pub const MAX_BATCH: usize = 32;

/// Encodes a packet as `[VERSION] ++ postcard`.
///
/// Returns `None` if it would not fit in [`MAX_DATAGRAM`] (the caller treats
/// that as a bug of its own: every message kind is bounded by construction).
pub fn encode(packet: &Packet) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    let out = postcard::to_extend(packet, out).ok()?;
    (out.len() <= MAX_DATAGRAM).then_some(out)
}

/// Decodes a datagram. Total: never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if bytes.len() > MAX_DATAGRAM {
        return Err(DecodeError::Oversize);
    }
    if version != VERSION {
        return Err(DecodeError::WrongVersion(version));
    }
    let (packet, tail): (Packet, &[u8]) = postcard::take_from_bytes(rest).map_err(|_| DecodeError::Malformed)?;
    if !tail.is_empty() {
        return Err(DecodeError::Malformed);
    }
    let valid = match &packet {
        Packet::Peer(env) => match &env.body {
            Body::ViewPropose { view } | Body::ViewCommit { view } | Body::ViewInfo { view } => view.is_well_formed(),
            Body::Heartbeat { digest, .. } | Body::ChatHolds { delivered: digest } => digest.len() <= crate::causal::MAX_ORIGINS,
            Body::Chat { msg } => msg.is_well_formed(),
            Body::SnapshotChunk { index, total, bytes, .. } => {
                bytes.len() <= crate::transfer::CHUNK && index < total && *total <= crate::transfer::MAX_CHUNKS
            }
            Body::ChatBatch { msgs } => !msgs.is_empty() && msgs.len() <= MAX_BATCH && msgs.iter().all(|m| m.is_well_formed()),
            Body::NameClaim { name, .. } => !name.is_empty() && name.len() <= crate::chat::MAX_NAME,
            Body::ChatPresence { users } => {
                users.len() <= crate::chat_server::MAX_PRESENCE && users.iter().all(|n| !n.is_empty() && n.len() <= crate::chat::MAX_NAME)
            }
            _ => true,
        },
        Packet::FromClient(m) => m.is_well_formed(),
        Packet::ToClient(m) => m.is_well_formed(),
    };
    if valid {
        Ok(packet)
    } else {
        Err(DecodeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ServerId;

    fn sample() -> Packet {
        let from = NodeId { id: ServerId(42), incarnation: 3 };
        Packet::Peer(Envelope {
            cluster: ClusterId(7),
            from,
            epoch: 9,
            body: Body::Token { key: CandidateKey { view: ViewStamp { epoch: 2, id: 5 }, node: from } },
        })
    }

    #[test]
    fn roundtrip_keeps_every_field() {
        let p = sample();
        let bytes = encode(&p).expect("fits");
        assert_eq!(decode(&bytes), Ok(p));
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut bytes = encode(&sample()).expect("fits");
        bytes[0] = VERSION + 1;
        assert_eq!(decode(&bytes), Err(DecodeError::WrongVersion(VERSION + 1)));
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let mut bytes = encode(&sample()).expect("fits");
        bytes.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(decode(&bytes), Err(DecodeError::Oversize));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample()).expect("fits");
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        for len in 1..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = encode(&sample()).expect("fits");
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_view_with_duplicate_servers_is_invalid() {
        let m = crate::view::Member { node: NodeId { id: ServerId(1), incarnation: 1 }, addr: "10.0.0.1:7000".parse().expect("addr") };
        let twin = crate::view::Member { node: NodeId { id: ServerId(1), incarnation: 2 }, ..m };
        let view = View { stamp: ViewStamp { epoch: 1, id: 1 }, members: vec![m, twin] };
        let p = Packet::Peer(Envelope { cluster: ClusterId(1), from: m.node, epoch: 1, body: Body::ViewCommit { view } });
        let bytes = encode(&p).expect("fits");
        assert_eq!(decode(&bytes), Err(DecodeError::Invalid));
    }
}
