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

/// The election part of a [`Durable`] (identity, life, cluster, epochs and votes, view): a
/// driver compares it after every input and writes it before any datagram of that input
/// leaves, so no vote or epoch is announced that a crash could forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionPart {
    id: ServerId,
    incarnation: u64,
    cluster: ClusterId,
    epochs: BTreeMap<ClusterId, EpochRecord>,
    view: Option<View>,
}

/// A cheap summary of the chat part of a [`Durable`] that changes whenever the chat part
/// does: every change is a delivery (which moves `delivered`, and through it names, rooms and
/// inboxes), a peer's digest, or a trim of the retransmission store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatMark {
    delivered: u64,
    digests: u64,
    store: usize,
    inbox: usize,
}

impl Durable {
    /// The election part, for comparison with the last one written.
    pub fn election_part(&self) -> ElectionPart {
        // Destructured field by field: a field added to `Durable` fails to compile here.
        let Durable { id, incarnation, cluster, epochs, view, chat: _ } = self;
        ElectionPart { id: *id, incarnation: *incarnation, cluster: *cluster, epochs: epochs.clone(), view: view.clone() }
    }

    /// Rebuilds the state as of a crash from the last whole-state write (`self`) and the chat
    /// log written after it (see [`crate::chat::server::journal`]).
    pub fn recover(&mut self, log: impl IntoIterator<Item = crate::wire::CausalMsg>) -> crate::chat::server::Recovered {
        self.chat.recover(log)
    }

    /// The chat part's mark, for comparison with the last one written.
    pub fn chat_mark(&self) -> ChatMark {
        let c = &self.chat.causal;
        ChatMark {
            delivered: c.delivered.values().sum(),
            digests: c.digests.values().flat_map(|v| v.values()).sum(),
            store: c.store_len(),
            inbox: self.chat.state.inbox_total(),
        }
    }
}
