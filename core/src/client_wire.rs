//! Messages between clients (and `ringchat status`) and servers.

use crate::id::{ClusterId, NodeId};
use crate::server::{Counters, Status};
use crate::view::{Member, MAX_MEMBERS};
use serde::{Deserialize, Serialize};

/// Client to server. New kinds are only ever appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Ask for a [`StatusReport`].
    Status,
}

impl ClientMsg {
    /// Bounds a message from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        match self {
            ClientMsg::Status => true,
        }
    }
}

/// Server to client. New kinds are only ever appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to [`ClientMsg::Status`].
    Status(StatusReport),
}

impl ServerMsg {
    /// Stable name of the message kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMsg::Status(_) => "status",
        }
    }

    /// Bounds a message from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        match self {
            ServerMsg::Status(r) => r.members.len() <= MAX_MEMBERS,
        }
    }
}

/// What `ringchat status` shows of one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The server's life.
    pub node: NodeId,
    /// Its cluster.
    pub cluster: ClusterId,
    /// Phase name (Discovering, Founding, Joining, Member, Left).
    pub phase: String,
    /// Whether it leads.
    pub is_leader: bool,
    /// Adopted epoch.
    pub epoch: u64,
    /// Leader it knows.
    pub leader: Option<NodeId>,
    /// Installed view id.
    pub view_id: Option<u64>,
    /// Members with liveness (`true` = alive).
    pub members: Vec<(Member, bool)>,
    /// Refusal counters.
    pub counters: Counters,
}

impl StatusReport {
    /// The report for a server status snapshot.
    pub fn from_status(s: &Status) -> StatusReport {
        StatusReport {
            node: s.node,
            cluster: s.cluster,
            phase: s.phase.clone(),
            is_leader: s.role == crate::server::Role::Leader,
            epoch: s.epoch,
            leader: s.leader,
            view_id: s.committed.as_ref().map(|v| v.stamp.id),
            members: s.members.clone(),
            counters: s.counters.clone(),
        }
    }
}
