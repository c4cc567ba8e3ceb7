//! The chat journal: what a driver appends to its durable chat log before the datagrams of an
//! input leave, and how a server's chat state is rebuilt from the last whole-state write and
//! the log written after it.
//!
//! `stored` means "durable on a majority". A server tells a peer it holds a message (a
//! `ChatHolds` report, a heartbeat digest) only in a datagram of an input after which it
//! delivered that message; the driver's call rule is
//! "persist, then send", and every delivery of that input is in [`Journal::delivered`]. So
//! once a majority reported holding a message, a majority has it on disk, and a power cut
//! of every server loses nothing acknowledged.
//!
//! Copies of chat messages to peers (`chat`, `chat_batch`) are the exception: they claim
//! nothing (a receiver learns holders from reports and digests only), so the driver sends
//! them at once, and the peers append to their logs while the origin does ([`leaves_at_once`]).
//!
//! A delivery changes the chat state only through [`ChatDurable::apply_delivered`], which is
//! a function of the state and the message; replaying the logged messages, in delivery order,
//! on the state as of the last whole-state write therefore rebuilds the state as of the last
//! logged input. What changes the chat state outside a delivery either needs no durability
//! (trimming the store, digests of peers, forgetting idle deduplication windows: a lost
//! change is made again) or sets [`Journal::reset`], and the driver writes the whole state
//! before anything leaves (an installed snapshot; an overfull journal).

use super::ChatDurable;
use crate::chat::state::{Applied, Plants};
use crate::wire::{CausalMsg, Item};

/// Whether a datagram of `kind` may leave before the chat log holds what its input
/// delivered: a copy of chat messages to a peer, which claims nothing about the sender's disk.
pub fn leaves_at_once(kind: &str) -> bool {
    kind == "chat" || kind == "chat_batch"
}

/// Most copies a driver sends ahead of its oldest held datagram; past it, copies wait in
/// line too, so a held datagram never falls out of a receiver's replay window (1,024
/// datagrams of a sender, `seal::replay::WINDOW`, which asserts that it is larger) behind them.
pub const MAX_AHEAD: u64 = 512;

/// Most deliveries a journal holds before it asks for a whole-state write instead.
pub const MAX_JOURNAL: usize = 8_192;

/// What the driver must make durable before the datagrams of the last input leave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// The chat state changed outside deliveries: write the whole state (and no log entry
    /// before it is needed any more).
    pub reset: bool,
    /// Messages delivered since the last take, in delivery order: append them to the log.
    pub delivered: Vec<CausalMsg>,
}

impl Journal {
    /// Nothing to make durable.
    pub fn is_empty(&self) -> bool {
        !self.reset && self.delivered.is_empty()
    }

    /// Records one delivery; past [`MAX_JOURNAL`] the journal becomes a reset.
    pub(super) fn push(&mut self, msg: &CausalMsg) {
        if self.reset {
            return;
        }
        if self.delivered.len() >= MAX_JOURNAL {
            self.set_reset();
            return;
        }
        self.delivered.push(msg.clone());
    }

    /// Asks for a whole-state write: the logged deliveries are in it.
    pub(super) fn set_reset(&mut self) {
        self.reset = true;
        self.delivered.clear();
    }
}

/// What a recovery from the chat log did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Logged messages delivered again.
    pub replayed: usize,
    /// Logged messages already in the whole-state write.
    pub already: usize,
    /// Logged messages that could not be delivered in order (a log that does not continue the
    /// state it was read with); peers send them again through anti-entropy.
    pub out_of_order: usize,
}

impl ChatDurable {
    /// Applies a delivered message to the chat state: the one way a delivery changes it.
    pub fn apply_delivered(&mut self, msg: &CausalMsg, plants: Plants) -> Applied {
        if let Item::Retire { lives } = &*msg.item {
            self.causal.retire_lives(lives);
        }
        self.state.apply(msg.key(), &msg.item, plants)
    }

    /// Replays a chat log (messages in the order they were delivered) over this state, as read
    /// from the last whole-state write: each message delivered here already is skipped, each
    /// next one is delivered and applied again.
    pub fn recover(&mut self, log: impl IntoIterator<Item = CausalMsg>) -> Recovered {
        let mut r = Recovered::default();
        for msg in log {
            if self.causal.has(msg.key()) {
                r.already += 1;
            } else if self.causal.redeliver(msg.clone()) {
                self.apply_delivered(&msg, Plants::default());
                r.replayed += 1;
            } else {
                r.out_of_order += 1;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{NodeId, ServerId};
    use crate::wire::MsgId;

    fn node(i: u128) -> NodeId {
        NodeId { id: ServerId(i), incarnation: 1 }
    }

    fn join(seq: u64, user: &str) -> Item {
        Item::Join { id: MsgId { client: seq, seq }, user: user.into(), room: "r".into(), fence: 0, lamport: seq }
    }

    /// Delivers `n` messages (two origins, each depending on the other's latest) and returns
    /// them in delivery order.
    fn deliver(d: &mut ChatDurable, n: u64) -> Vec<CausalMsg> {
        let mut log = Vec::new();
        for k in 1..=n {
            let origin = node(1 + (k % 2) as u128);
            let msg = d.causal.broadcast(origin, join(k, &format!("u{k}"))).expect("room in the vector");
            d.apply_delivered(&msg, Plants::default());
            log.push(msg);
        }
        log
    }

    #[test]
    fn the_last_whole_write_and_the_log_after_it_rebuild_the_state_at_the_crash() {
        let mut live = ChatDurable::default();
        let early = deliver(&mut live, 4);
        let written = live.clone();
        let late = deliver(&mut live, 6);
        let mut rebuilt = written.clone();
        // The log also holds what the whole write already has (a segment kept for the
        // previous copy): those are skipped.
        let r = rebuilt.recover(early.iter().chain(&late).cloned());
        assert_eq!(r, Recovered { replayed: 6, already: 4, out_of_order: 0 });
        assert_eq!(rebuilt, live);
        // Without the log, the write alone lacks the late deliveries.
        assert_ne!(written, live);
    }

    #[test]
    fn a_log_that_does_not_follow_the_state_is_skipped_not_applied_out_of_order() {
        let mut live = ChatDurable::default();
        let log = deliver(&mut live, 6);
        let mut rebuilt = ChatDurable::default();
        // The first two records are lost: nothing after them may be applied.
        let r = rebuilt.recover(log[2..].iter().cloned());
        assert_eq!(r.replayed, 0);
        assert_eq!(r.out_of_order, 4);
        assert_eq!(rebuilt, ChatDurable::default());
    }

    #[test]
    fn an_overfull_journal_asks_for_a_whole_write_instead() {
        let mut live = ChatDurable::default();
        let msg = deliver(&mut live, 1).remove(0);
        let mut j = Journal::default();
        for _ in 0..MAX_JOURNAL {
            j.push(&msg);
        }
        assert!(!j.reset && j.delivered.len() == MAX_JOURNAL);
        j.push(&msg);
        assert!(j.reset && j.delivered.is_empty(), "a reset, not an unbounded journal");
    }
}
