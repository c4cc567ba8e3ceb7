//! The persistence boundary of the real driver (`net/src/driver.rs`, `net/src/state.rs`), as
//! the simulated disk of a server: what a server finds after a crash or a power cut is the
//! [`Durable`] as of its last modelled write, not as of its last input.
//!
//! The driver, after every input and before sending that input's datagrams:
//! - writes the whole state (temporary file, fsync, rename) and waits for it when the
//!   election part (id, incarnation, cluster, epochs and votes, view) changed, or when the
//!   core's journal asks for it ([`Journal::reset`]); a whole write starts a new log segment
//!   and makes every older one unneeded;
//! - otherwise appends the journal's delivered messages to the chat log and fsyncs it off the
//!   event loop, one batch at a time: deliveries made while a batch runs wait for the next
//!   one (group commit). The input's datagrams are held until the batch holding its
//!   deliveries (or, if it delivered none, the latest batch not yet durable) is on disk,
//!   except copies of chat messages to peers (`chat`, `chat_batch`): they claim nothing
//!   and leave at once ([`Hold`], `journal::leaves_at_once`, up to `journal::MAX_AHEAD`);
//! - and, if the chat part changed, no write is running and the last write is at least
//!   [`CHAT_SAVE_EVERY_US`] old, starts a background write of the whole state naming the next
//!   segment as where its log starts; it lands (its rename) [`CHAT_WRITE_US`] later, and a
//!   crash before that keeps the previous file. An election write waits for a running
//!   background write first.
//!
//! A batch's fsync takes [`FSYNC_MIN_US`] to [`FSYNC_MAX_US`] (drawn by the simulator): a
//! crash or power cut before it returns loses the batch and the datagrams held for it.
//!
//! A restart reads the last landed whole write and replays the log segments from the one it
//! names ([`Durable::recover`]). When the driver changes, this module is the one to change
//! with it.

use ringchat_core::wire::CausalMsg;
use ringchat_core::{Durable, Journal, NodeId};

/// Shortest and longest modelled fsync of a chat log batch (µs).
pub const FSYNC_MIN_US: u64 = 100;
/// See [`FSYNC_MIN_US`].
pub const FSYNC_MAX_US: u64 = 3_000;
/// When an input's datagrams may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// A whole-state write holds everything so far: every held datagram leaves now, and so
    /// do this input's.
    ReleaseAll,
    /// Nothing waits for the disk: they leave now.
    Now,
    /// Once the chat log batch that lands at this instant (µs) is durable.
    Until(u64),
}

/// The driver writes the whole state for chat changes at most this often (`CHAT_SAVE_EVERY`).
pub const CHAT_SAVE_EVERY_US: u64 = 1_000_000;
/// How long a background write takes before its rename lands (a modelled fsync).
pub const CHAT_WRITE_US: u64 = 5_000;

/// One server's disk under the driver's write rule.
pub struct DriverDisk {
    saved: Option<ringchat_core::cluster::ElectionPart>,
    saved_chat: Option<ringchat_core::cluster::ChatMark>,
    saved_at: u64,
    /// The last whole write that landed, and the first log segment it needs.
    on_disk: Option<(Durable, u64)>,
    /// A background write, the instant its rename lands, and the first segment it needs.
    writing: Option<(u64, Durable, u64)>,
    /// The chat log: each delivery with its segment and the instant its batch's fsync returns.
    log: Vec<(u64, u64, CausalMsg)>,
    /// The segment appended to now.
    segment: u64,
    /// When the running batch's fsync returns, and the next batch's (queued meanwhile).
    running_until: u64,
    queued_until: Option<u64>,
}

impl DriverDisk {
    /// The disk of a server that booted at `now` from `booted` (the file it read).
    pub fn new(now: u64, booted: Option<Durable>) -> DriverDisk {
        DriverDisk {
            saved: None,
            saved_chat: None,
            saved_at: now,
            on_disk: booted.map(|d| (d, 0)),
            writing: None,
            log: Vec::new(),
            segment: 0,
            running_until: 0,
            queued_until: None,
        }
    }

    /// The driver's write decision after an input, at virtual time `now` (µs), with the
    /// core's journal of that input; `fsync_us` is how long a batch started now would take.
    pub fn after_input(&mut self, now: u64, d: &Durable, journal: Journal, fsync_us: u64) -> Hold {
        if self.writing.as_ref().is_some_and(|(lands, _, _)| *lands <= now) {
            self.land();
        }
        if self.running_until <= now {
            if let Some(q) = self.queued_until.take() {
                self.running_until = q;
            }
        }
        let election = d.election_part();
        let mark = d.chat_mark();
        if self.saved.as_ref() != Some(&election) || journal.reset {
            // Synchronous: the running batch and a running background write are awaited first,
            // then this one; it holds every delivery so far.
            self.land();
            self.segment += 1;
            self.on_disk = Some((d.clone(), self.segment));
            self.log.clear();
            (self.running_until, self.queued_until) = (0, None);
            self.saved = Some(election);
            self.saved_chat = Some(mark);
            self.saved_at = now;
            return Hold::ReleaseAll;
        }
        let hold = if journal.delivered.is_empty() {
            match self.queued_until {
                Some(q) => Hold::Until(q),
                None if self.running_until > now => Hold::Until(self.running_until),
                None => Hold::Now,
            }
        } else {
            let lands = if self.running_until > now {
                *self.queued_until.get_or_insert(self.running_until + fsync_us)
            } else {
                self.running_until = now + fsync_us;
                self.running_until
            };
            let segment = self.segment;
            self.log.extend(journal.delivered.into_iter().map(|m| (segment, lands, m)));
            Hold::Until(lands)
        };
        let idle = self.writing.is_none();
        if idle && now.saturating_sub(self.saved_at) >= CHAT_SAVE_EVERY_US && self.saved_chat != Some(mark) {
            self.segment += 1;
            self.writing = Some((now + CHAT_WRITE_US, d.clone(), self.segment));
            self.saved_chat = Some(mark);
            self.saved_at = now;
        }
        hold
    }

    /// Whether the message `key` is on this disk at `now` (in the last landed whole write, or
    /// in a chat log batch whose fsync returned).
    pub fn durably_holds(&self, now: u64, key: (NodeId, u64)) -> bool {
        let landed = self.writing.as_ref().filter(|(lands, _, _)| *lands <= now);
        let (base, from) = match (landed, &self.on_disk) {
            (Some((_, w, from)), _) => (Some(w), *from),
            (None, Some((d, from))) => (Some(d), *from),
            (None, None) => (None, 0),
        };
        base.is_some_and(|d| d.chat.causal.has(key))
            || self.log.iter().any(|(s, lands, m)| *s >= from && *lands <= now && m.origin == key.0 && m.seq >= key.1)
    }

    /// The running background write's rename lands: older segments are no longer needed.
    fn land(&mut self) {
        if let Some((_, w, from)) = self.writing.take() {
            self.log.retain(|(s, _, _)| *s >= from);
            self.on_disk = Some((w, from));
        }
    }

    /// What a reboot finds after a crash at `now`: the last write whose rename landed, with
    /// the chat log written after it replayed.
    pub fn at_crash(mut self, now: u64) -> Option<Durable> {
        if self.writing.as_ref().is_some_and(|(lands, _, _)| *lands <= now) {
            self.land();
        }
        let (mut d, from) = self.on_disk?;
        d.recover(self.log.into_iter().filter(|(s, lands, _)| *s >= from && *lands <= now).map(|(_, _, m)| m));
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::{ClusterId, ServerId};

    fn durable(cluster: u128) -> Durable {
        Durable {
            id: ServerId(7),
            incarnation: 1,
            cluster: ClusterId(cluster),
            epochs: Default::default(),
            view: None,
            chat: Default::default(),
        }
    }

    #[test]
    fn an_election_change_is_on_disk_at_once() {
        let mut disk = DriverDisk::new(0, None);
        disk.after_input(10, &durable(1), Journal::default(), 500);
        disk.after_input(20, &durable(2), Journal::default(), 500);
        assert_eq!(disk.at_crash(20).map(|d| d.cluster), Some(ClusterId(2)));
    }

    #[test]
    fn a_chat_change_waits_for_the_next_write_and_its_rename() {
        let mut disk = DriverDisk::new(0, None);
        let first = durable(1);
        disk.after_input(10, &first, Journal::default(), 500);
        let mut chat = first.clone();
        chat.chat.state.names.insert("u1".into(), ringchat_core::user::UserKey([5; 32]));
        // Only the chat part changed; the mark does not see names alone, nor is a write due.
        disk.after_input(20, &chat, Journal::default(), 500);
        assert!(disk.at_crash(20).is_some_and(|d| d.chat.state.names.is_empty()), "a chat change is not durable at once");
    }

    #[test]
    fn a_delivery_in_the_journal_survives_a_crash_before_the_next_whole_write() {
        use ringchat_core::wire::{Item, MsgId};
        use ringchat_core::NodeId;
        let mut disk = DriverDisk::new(0, None);
        let mut d = durable(1);
        disk.after_input(10, &d, Journal::default(), 500);
        let item = Item::Join { id: MsgId { client: 1, seq: 1 }, user: "ann".into(), room: "r".into(), fence: 0, lamport: 1 };
        let msg = d.chat.causal.broadcast(NodeId { id: ServerId(7), incarnation: 1 }, item).expect("broadcast");
        d.chat.apply_delivered(&msg, Default::default());
        // Long before the next whole write is due: only the journal holds it.
        let hold = disk.after_input(20, &d, Journal { reset: false, delivered: vec![msg.clone()] }, 500);
        assert_eq!(hold, Hold::Until(520), "the input's datagrams wait for the batch's fsync");
        let rebooted = disk.at_crash(520).expect("a disk");
        assert!(rebooted.chat.causal.has(msg.key()), "the logged delivery is replayed");
        assert_eq!(rebooted.chat, d.chat);
    }

    #[test]
    fn a_batch_whose_fsync_had_not_returned_is_lost_and_the_next_input_waits_behind_it() {
        use ringchat_core::wire::{Item, MsgId};
        let mut disk = DriverDisk::new(0, None);
        let mut d = durable(1);
        disk.after_input(10, &d, Journal::default(), 500);
        let life = NodeId { id: ServerId(7), incarnation: 1 };
        let mut msgs = Vec::new();
        for seq in 1..=2 {
            let item = Item::Join { id: MsgId { client: 1, seq }, user: "ann".into(), room: "r".into(), fence: 0, lamport: seq };
            let msg = d.chat.causal.broadcast(life, item).expect("broadcast");
            d.chat.apply_delivered(&msg, Default::default());
            msgs.push(msg);
        }
        assert_eq!(disk.after_input(20, &d, Journal { reset: false, delivered: vec![msgs[0].clone()] }, 500), Hold::Until(520));
        // Delivered while the first batch runs: it waits for the next one.
        assert_eq!(disk.after_input(30, &d, Journal { reset: false, delivered: vec![msgs[1].clone()] }, 700), Hold::Until(1220));
        // An input that delivered nothing waits for the latest batch, so datagrams stay in order.
        assert_eq!(disk.after_input(40, &d, Journal::default(), 500), Hold::Until(1220));
        assert!(disk.durably_holds(520, msgs[0].key()) && !disk.durably_holds(519, msgs[0].key()));
        assert!(!disk.durably_holds(1000, msgs[1].key()));
        let crashed = disk.at_crash(1000).expect("a disk");
        assert!(crashed.chat.causal.has(msgs[0].key()), "the first batch was on disk");
        assert!(!crashed.chat.causal.has(msgs[1].key()), "the second batch's fsync had not returned");
    }
}
