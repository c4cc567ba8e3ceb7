//! Counters from the wire stay within [`MAX_COUNTER`]: a datagram that names a larger epoch,
//! view id, incarnation, sequence number, Lamport time or fence is refused (typed and
//! counted as `invalid`), so nothing a peer sends can wrap or saturate a server's counters.

use crate::id::NodeId;
use crate::limits::MAX_COUNTER;
use crate::time::Vc;
use crate::view::{View, ViewStamp};
use crate::wire::chat::{CausalMsg, Item, MsgId};
use crate::wire::peer::{Body, CandidateKey, Envelope};

/// Whether a counter is within [`MAX_COUNTER`].
pub fn counter(v: u64) -> bool {
    v <= MAX_COUNTER
}

/// Whether every counter a value carries is within [`MAX_COUNTER`].
pub trait Bounded {
    /// Every counter in bounds.
    fn in_bounds(&self) -> bool;
}

impl Bounded for NodeId {
    fn in_bounds(&self) -> bool {
        counter(self.incarnation)
    }
}

impl Bounded for ViewStamp {
    fn in_bounds(&self) -> bool {
        counter(self.epoch) && counter(self.id)
    }
}

impl Bounded for View {
    fn in_bounds(&self) -> bool {
        self.stamp.in_bounds() && self.members.iter().all(|m| m.node.in_bounds())
    }
}

impl Bounded for Vc {
    fn in_bounds(&self) -> bool {
        self.iter().all(|(o, v)| o.in_bounds() && counter(*v))
    }
}

impl Bounded for CandidateKey {
    fn in_bounds(&self) -> bool {
        self.view.in_bounds() && self.node.in_bounds()
    }
}

impl Bounded for MsgId {
    fn in_bounds(&self) -> bool {
        counter(self.seq)
    }
}

impl Bounded for Item {
    fn in_bounds(&self) -> bool {
        match self {
            Item::Chat { id, cut, .. } => id.in_bounds() && cut.in_bounds(),
            Item::Ack { ids, .. } => ids.iter().all(Bounded::in_bounds),
            Item::Join { id, fence, lamport, .. } | Item::Leave { id, fence, lamport, .. } => {
                id.in_bounds() && counter(*fence) && counter(*lamport)
            }
            Item::Login { fence, .. } => counter(*fence),
            Item::Bind { epoch, .. } => counter(*epoch),
            Item::Retire { lives } => lives.iter().all(|(o, v)| counter(o.incarnation) && counter(*v)),
        }
    }
}

impl Bounded for CausalMsg {
    fn in_bounds(&self) -> bool {
        self.origin.in_bounds() && counter(self.seq) && self.deps.in_bounds() && self.item.in_bounds()
    }
}

impl Bounded for Envelope {
    fn in_bounds(&self) -> bool {
        let body = match &self.body {
            Body::Heartbeat { leader, committed, latest, digest } => {
                leader.is_none_or(|l| l.in_bounds()) && committed.in_bounds() && latest.in_bounds() && digest.in_bounds()
            }
            Body::Welcome { leader, .. } => leader.is_none_or(|l| l.node.in_bounds()),
            Body::Beacon { leader, .. } => leader.node.in_bounds(),
            Body::NotMember { committed } => committed.in_bounds(),
            Body::Token { key } | Body::RingAck { key, .. } | Body::Elected { key } => key.in_bounds(),
            Body::Accept { leader } | Body::LeaderAlive { leader } => leader.in_bounds(),
            Body::ViewPropose { view } | Body::ViewCommit { view } | Body::ViewInfo { view } => view.in_bounds(),
            Body::ViewAck { stamp } => stamp.in_bounds(),
            Body::Chat { msg } => msg.in_bounds(),
            Body::ChatBatch { msgs } => msgs.iter().all(Bounded::in_bounds),
            Body::ChatGone { origin, below } => origin.in_bounds() && counter(*below),
            Body::ChatNeed { origin, from, to } => origin.in_bounds() && counter(*from) && counter(*to),
            Body::ChatHolds { delivered } => delivered.in_bounds(),
            Body::Hello { .. }
            | Body::JoinRequest { .. }
            | Body::ViewRequest
            | Body::Leave
            | Body::SnapshotGet { .. }
            | Body::SnapshotChunk { .. }
            | Body::NameClaim { .. }
            | Body::ChatPresence { .. }
            | Body::Fragment(_) => true,
        };
        body && counter(self.epoch) && self.from.in_bounds()
    }
}
