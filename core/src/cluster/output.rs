//! What a server hands its driver: datagrams to send and protocol events.

use crate::id::{ClusterId, NodeId};
use crate::view::View;
use std::net::SocketAddr;

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// One peer.
    Addr(SocketAddr),
    /// The discovery group (multicast or broadcast; the driver knows which).
    Group,
}

/// A datagram to send.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Destination.
    pub dest: Dest,
    /// Encoded bytes, at most [`crate::limits::MAX_DATAGRAM`].
    pub bytes: Vec<u8>,
    /// Message kind (see [`Body::kind`]).
    pub kind: &'static str,
    /// A retransmission of something already sent (not counted as a first send).
    pub retransmit: bool,
    /// For a client on a sealed channel: the channel the seal seals it for.
    pub channel: Option<crate::path::ChannelId>,
}

/// Protocol events, for the application and for the simulator's checkers.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server adopted a higher epoch in `cluster`.
    EpochAdopted { cluster: ClusterId, epoch: u64 },
    /// The server accepted `leader` as the candidate of `epoch`.
    Voted { cluster: ClusterId, epoch: u64, leader: NodeId },
    /// The server became leader of `epoch` (a majority accepted it).
    BecameLeader { cluster: ClusterId, epoch: u64 },
    /// The server stopped leading.
    SteppedDown { cluster: ClusterId, epoch: u64 },
    /// The server learned from the leader itself who leads `epoch`.
    LeaderLearned { cluster: ClusterId, epoch: u64, leader: NodeId },
    /// The server suspects its leader.
    LeaderLost { cluster: ClusterId, epoch: u64 },
    /// The server installed a view.
    ViewInstalled { cluster: ClusterId, view: View },
    /// The server applied a leader-only action of `epoch` (its own epoch was `seen`).
    LeaderActionApplied { cluster: ClusterId, epoch: u64, seen: u64 },
    /// The server became a member of `cluster`.
    Joined { cluster: ClusterId, node: NodeId },
    /// The server left its cluster (removed, merging, or shutting down).
    Left { cluster: ClusterId, node: NodeId },
}
