//! The persistence boundary of the real driver (`net/src/driver.rs`, `net/src/state.rs`), as
//! the simulated disk of a server: what a server finds after a crash or a power cut is the
//! [`Durable`] as of its last modelled write, not as of its last input.
//!
//! The driver, after every input and before sending that input's datagrams:
//! - writes the whole state (temporary file, fsync, rename) and waits for it when the
//!   election part (id, incarnation, cluster, epochs and votes, view) changed, or when the
//!   core's journal asks for it ([`Journal::reset`]); a whole write starts a new log segment
//!   and makes every older one unneeded;
//! - otherwise appends the journal's delivered messages to the current chat log segment and
//!   fsyncs it (one fsync for every input's deliveries: group commit);
//! - and, if the chat part changed, no write is running and the last write is at least
//!   [`CHAT_SAVE_EVERY_US`] old, starts a background write of the whole state naming the next
//!   segment as where its log starts; it lands (its rename) [`CHAT_WRITE_US`] later, and a
//!   crash before that keeps the previous file. An election write waits for a running
//!   background write first.
//!
//! A restart reads the last landed whole write and replays the log segments from the one it
//! names ([`Durable::recover`]). When the driver changes, this module is the one to change
//! with it.

use ringchat_core::wire::CausalMsg;
use ringchat_core::{Durable, Journal};

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
    /// The chat log: each fsynced delivery with its segment.
    log: Vec<(u64, CausalMsg)>,
    /// The segment appended to now.
    segment: u64,
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
        }
    }

    /// The driver's write decision after an input, at virtual time `now` (µs), with the
    /// core's journal of that input.
    pub fn after_input(&mut self, now: u64, d: &Durable, journal: Journal) {
        if self.writing.as_ref().is_some_and(|(lands, _, _)| *lands <= now) {
            self.land();
        }
        let election = d.election_part();
        let mark = d.chat_mark();
        if self.saved.as_ref() != Some(&election) || journal.reset {
            // Synchronous: a running background write is awaited first, then this one.
            self.land();
            self.segment += 1;
            self.on_disk = Some((d.clone(), self.segment));
            self.log.clear();
            self.saved = Some(election);
            self.saved_chat = Some(mark);
            self.saved_at = now;
            return;
        }
        let segment = self.segment;
        self.log.extend(journal.delivered.into_iter().map(|m| (segment, m)));
        let idle = self.writing.is_none();
        if idle && now.saturating_sub(self.saved_at) >= CHAT_SAVE_EVERY_US && self.saved_chat != Some(mark) {
            self.segment += 1;
            self.writing = Some((now + CHAT_WRITE_US, d.clone(), self.segment));
            self.saved_chat = Some(mark);
            self.saved_at = now;
        }
    }

    /// The running background write's rename lands: older segments are no longer needed.
    fn land(&mut self) {
        if let Some((_, w, from)) = self.writing.take() {
            self.log.retain(|(s, _)| *s >= from);
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
        d.recover(self.log.into_iter().filter(|(s, _)| *s >= from).map(|(_, m)| m));
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
        disk.after_input(10, &durable(1), Journal::default());
        disk.after_input(20, &durable(2), Journal::default());
        assert_eq!(disk.at_crash(20).map(|d| d.cluster), Some(ClusterId(2)));
    }

    #[test]
    fn a_chat_change_waits_for_the_next_write_and_its_rename() {
        let mut disk = DriverDisk::new(0, None);
        let first = durable(1);
        disk.after_input(10, &first, Journal::default());
        let mut chat = first.clone();
        chat.chat.state.names.insert("u1".into(), ringchat_core::user::UserKey([5; 32]));
        // Only the chat part changed; the mark does not see names alone, nor is a write due.
        disk.after_input(20, &chat, Journal::default());
        assert!(disk.at_crash(20).is_some_and(|d| d.chat.state.names.is_empty()), "a chat change is not durable at once");
    }

    #[test]
    fn a_delivery_in_the_journal_survives_a_crash_before_the_next_whole_write() {
        use ringchat_core::wire::{Item, MsgId};
        use ringchat_core::NodeId;
        let mut disk = DriverDisk::new(0, None);
        let mut d = durable(1);
        disk.after_input(10, &d, Journal::default());
        let item = Item::Join { id: MsgId { client: 1, seq: 1 }, user: "ann".into(), room: "r".into(), fence: 0, lamport: 1 };
        let msg = d.chat.causal.broadcast(NodeId { id: ServerId(7), incarnation: 1 }, item).expect("broadcast");
        d.chat.apply_delivered(&msg, Default::default());
        // Long before the next whole write is due: only the journal holds it.
        disk.after_input(20, &d, Journal { reset: false, delivered: vec![msg.clone()] });
        let rebooted = disk.at_crash(30).expect("a disk");
        assert!(rebooted.chat.causal.has(msg.key()), "the logged delivery is replayed");
        assert_eq!(rebooted.chat, d.chat);
    }
}
