//! Messages between servers: the envelope every peer datagram carries, and its bodies.

use crate::id::{ClusterId, NodeId};
use crate::limits::{CHUNK, MAX_BATCH, MAX_CHUNKS, MAX_NAME, MAX_ORIGINS, MAX_PRESENCE, MAX_PRESENCE_PARTS};
use crate::time::Vc;
use crate::view::{Member, View, ViewStamp};
use crate::wire::chat::CausalMsg;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The LCR comparison key of a candidate: the more up-to-date view wins,
/// then the higher server id (so a fault-free ring elects the highest id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CandidateKey {
    /// Stamp of the candidate's latest view.
    pub view: ViewStamp,
    /// The candidate.
    pub node: NodeId,
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
        digest: Vc,
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
        msg: CausalMsg,
    },
    /// Several causal-broadcast messages for one peer in one datagram (sent under load).
    ChatBatch {
        /// The messages, in the order they were sent (at most [`crate::limits::MAX_BATCH`]).
        msgs: Vec<CausalMsg>,
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
        /// At most [`crate::limits::CHUNK`] bytes.
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
        /// The claimant's public key (its login's signature verified at the server that asks).
        key: crate::user::UserKey,
    },
    /// What the sender has delivered, sent as soon as it delivers something new
    /// (at most once per `HOLDS_GAP_US`): lets peers count
    /// holders, and so stability, without waiting for the next heartbeat.
    ChatHolds {
        /// The sender's delivered vector clock.
        delivered: Vc,
    },
    /// Who is logged in at the sender, in name order, in parts of at most
    /// [`crate::limits::MAX_PRESENCE`] names (at most [`MAX_PRESENCE_PARTS`] parts), sent to
    /// every member each second and soon after the set changes: `/who` shows a user online
    /// wherever it is attached.
    ChatPresence {
        /// This part's number, from 0.
        part: u8,
        /// How many parts the report has (a receiver drops the sender's parts from this on).
        parts: u8,
        /// User names.
        users: Vec<String>,
    },
    /// A piece of a server message too long for one datagram (see [`crate::wire::fragment`]);
    /// its envelope is the whole message's.
    Fragment(crate::wire::fragment::Fragment),
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
            Body::Fragment(_) => "fragment",
        }
    }

    /// Bounds a body from the wire must respect beyond its encoding (sizes, well-formed views).
    pub fn is_well_formed(&self) -> bool {
        let name = |n: &String| !n.is_empty() && n.len() <= MAX_NAME;
        match self {
            Body::ViewPropose { view } | Body::ViewCommit { view } | Body::ViewInfo { view } => view.is_well_formed(),
            Body::Heartbeat { digest, .. } | Body::ChatHolds { delivered: digest } => digest.len() <= MAX_ORIGINS,
            Body::Chat { msg } => msg.is_well_formed(),
            Body::SnapshotChunk { index, total, bytes, .. } => bytes.len() <= CHUNK && index < total && *total <= MAX_CHUNKS,
            Body::ChatBatch { msgs } => !msgs.is_empty() && msgs.len() <= MAX_BATCH && msgs.iter().all(|m| m.is_well_formed()),
            Body::NameClaim { name: n, .. } => name(n),
            Body::ChatPresence { part, parts, users } => {
                part < parts && *parts as usize <= MAX_PRESENCE_PARTS && users.len() <= MAX_PRESENCE && users.iter().all(name)
            }
            Body::ChatNeed { from, to, .. } => from <= to,
            Body::Fragment(f) => f.is_well_formed(),
            _ => true,
        }
    }
}
