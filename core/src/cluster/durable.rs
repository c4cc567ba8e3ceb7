//! What a server keeps across a crash: identity, life, per-cluster epochs and votes, the
//! latest stored view, and the chat part.

use crate::chat::server::ChatDurable;
use crate::id::{ClusterId, NodeId, ServerId};
use crate::view::View;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a server keeps across a crash (the driver stores it; the simulator's
/// "disk" survives crashes). Epoch and vote are kept per cluster, so no
/// server ever accepts two leaders for one epoch of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    /// Permanent identity.
    pub id: ServerId,
    /// Current life; bumped on every start and rejoin.
    pub incarnation: u64,
    /// Cluster the server belongs to or is joining ([`ClusterId::NONE`] while founding).
    pub cluster: ClusterId,
    /// Per cluster: highest adopted epoch and the vote of that epoch.
    pub epochs: BTreeMap<ClusterId, EpochRecord>,
    /// Latest view stored in `cluster` (a voter's up-to-date check must survive a crash).
    pub view: Option<View>,
    /// Chat: causal broadcast and replicated chat state.
    #[serde(default)]
    pub chat: ChatDurable,
}

/// Highest adopted epoch in one cluster, and whom the server accepted in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Never decreases.
    pub epoch: u64,
    /// `(epoch, leader)` accepted; at most one leader per epoch.
    pub vote: Option<(u64, NodeId)>,
}
