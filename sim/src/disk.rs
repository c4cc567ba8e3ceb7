//! The persistence boundary of the real driver (`net/src/driver.rs`, `net/src/state.rs`), as
//! the simulated disk of a server: what a server finds after a crash or a power cut is the
//! [`Durable`] as of its last modelled write, not as of its last input.
//!
//! Today's driver, after every input and before sending that input's datagrams:
//! - writes the whole state (temporary file, fsync, rename) and waits for it when the
//!   election part (id, incarnation, cluster, epochs and votes, view) changed;
//! - otherwise, if the chat part changed, no write is running and the last write is at least
//!   [`CHAT_SAVE_EVERY_US`] old, starts a background write of the whole state, which lands
//!   (its rename) [`CHAT_WRITE_US`] later; a crash before that keeps the previous file. An
//!   election write waits for a running background write first.
//!
//! When the driver changes (for example to make `stored` durable with a group-committed,
//! fsynced chat log), this module is the one to change with it.

use ringchat_core::Durable;

/// The driver writes a chat-only change at most this often (`CHAT_SAVE_EVERY`).
pub const CHAT_SAVE_EVERY_US: u64 = 200_000;
/// How long a background write takes before its rename lands (a modelled fsync).
pub const CHAT_WRITE_US: u64 = 5_000;

/// One server's disk under the driver's write rule.
pub struct DriverDisk {
    saved: Option<ringchat_core::cluster::ElectionPart>,
    saved_chat: Option<ringchat_core::cluster::ChatMark>,
    saved_at: u64,
    on_disk: Option<Durable>,
    /// A background write and the instant its rename lands.
    writing: Option<(u64, Durable)>,
}

impl DriverDisk {
    /// The disk of a server that booted at `now` from `booted` (the file it read).
    pub fn new(now: u64, booted: Option<Durable>) -> DriverDisk {
        DriverDisk { saved: None, saved_chat: None, saved_at: now, on_disk: booted, writing: None }
    }

    /// The driver's write decision after an input, at virtual time `now` (µs).
    pub fn after_input(&mut self, now: u64, d: &Durable) {
        let election = d.election_part();
        let mark = d.chat_mark();
        let election_changed = self.saved.as_ref() != Some(&election);
        let idle = self.writing.as_ref().is_none_or(|(lands, _)| *lands <= now);
        let chat_due = idle && now.saturating_sub(self.saved_at) >= CHAT_SAVE_EVERY_US && self.saved_chat != Some(mark);
        if !(election_changed || chat_due) {
            return;
        }
        if let Some((_, w)) = self.writing.take() {
            self.on_disk = Some(w); // awaited before the next write
        }
        if election_changed {
            self.on_disk = Some(d.clone());
        } else {
            self.writing = Some((now + CHAT_WRITE_US, d.clone()));
        }
        self.saved = Some(election);
        self.saved_chat = Some(mark);
        self.saved_at = now;
    }

    /// What a reboot finds after a crash at `now`: the last write whose rename landed.
    pub fn at_crash(self, now: u64) -> Option<Durable> {
        match self.writing {
            Some((lands, w)) if lands <= now => Some(w),
            _ => self.on_disk,
        }
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
        disk.after_input(10, &durable(1));
        disk.after_input(20, &durable(2));
        assert_eq!(disk.at_crash(20).map(|d| d.cluster), Some(ClusterId(2)));
    }

    #[test]
    fn a_chat_change_waits_for_the_next_write_and_its_rename() {
        let mut disk = DriverDisk::new(0, None);
        let first = durable(1);
        disk.after_input(10, &first);
        let mut chat = first.clone();
        chat.chat.state.names.insert("u1".into(), 5);
        // Only the chat part changed; the mark does not see names alone, nor is a write due.
        disk.after_input(20, &chat);
        assert!(disk.at_crash(20).is_some_and(|d| d.chat.state.names.is_empty()), "a chat change is not durable at once");
    }
}
