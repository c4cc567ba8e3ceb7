//! Replay protection: a sliding bitmap window per sender life (RFC 6479, as WireGuard does),
//! and the latest life seen of each sender, which the driver keeps on disk ([`SealMemory`]).
//!
//! A counter is marked only after its datagram's tag verified, so forgeries cannot fill the
//! window; only authenticated senders get an entry, so the table is bounded by the servers
//! holding the key (and by [`MAX_SENDERS`] besides).

use crate::id::{NodeId, ServerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counters a window remembers behind the highest one seen.
pub const WINDOW: u64 = 1024;
// Chat copies that leave ahead of a held datagram stay well inside the window.
const _: () = assert!(crate::chat::server::journal::MAX_AHEAD <= WINDOW / 2);
/// Most senders whose replay state is kept (the least recently heard is forgotten first).
pub const MAX_SENDERS: usize = 256;

const WORDS: usize = (WINDOW / 64) as usize;

/// Which counters of one sender life have been accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest counter accepted (meaningful once `any`).
    top: u64,
    /// Some counter was accepted (or the window was restored from disk).
    any: bool,
    /// Bit `c % WINDOW` says whether counter `c` (within `WINDOW` of `top`) was accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub fn new() -> ReplayWindow {
        ReplayWindow { top: 0, any: false, bits: [0; WORDS] }
    }

    /// A window restored from disk: every counter up to `top` counts as accepted.
    pub fn restored(top: u64) -> ReplayWindow {
        ReplayWindow { top, any: true, bits: [u64::MAX; WORDS] }
    }

    /// Highest counter accepted, if any.
    pub fn top(&self) -> Option<u64> {
        self.any.then_some(self.top)
    }

    fn bit(c: u64) -> (usize, u64) {
        (((c % WINDOW) / 64) as usize, 1u64 << (c % 64))
    }

    /// Whether `counter` may still be accepted (it is new and not too old). Changes nothing.
    pub fn fresh(&self, counter: u64) -> bool {
        if !self.any || counter > self.top {
            return true;
        }
        if self.top - counter >= WINDOW {
            return false;
        }
        let (w, b) = Self::bit(counter);
        self.bits[w] & b == 0
    }

    /// Records `counter` as accepted (call only after its tag verified and [`Self::fresh`]).
    pub fn mark(&mut self, counter: u64) {
        if !self.any {
            *self = ReplayWindow { top: counter, any: true, bits: [0; WORDS] };
        } else if counter > self.top {
            if counter - self.top >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for c in self.top + 1..counter {
                    let (w, b) = Self::bit(c);
                    self.bits[w] &= !b;
                }
            }
            self.top = counter;
            let (w, b) = Self::bit(counter);
            self.bits[w] &= !b;
        }
        let (w, b) = Self::bit(counter);
        self.bits[w] |= b;
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

/// What a receiver remembers of one sender: its latest life seen and that life's window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderState {
    /// The latest incarnation of the sender that was authenticated.
    pub incarnation: u64,
    /// Counters accepted from that incarnation.
    pub window: ReplayWindow,
    /// When it was last heard, in datagrams opened (for eviction; no clock involved).
    pub heard: u64,
}

/// Why a verified-looking header is refused by the replay state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// New: may be accepted once its tag verifies.
    Fresh,
    /// Its counter was accepted before, or is older than the window.
    Replay,
    /// It comes from an earlier life of the sender than one already heard.
    Stale,
}

/// The replay state of every sender heard, keyed by server id (ordered: no hash-map order
/// reaches the protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Senders {
    by_id: BTreeMap<ServerId, SenderState>,
    clock: u64,
}

impl Senders {
    /// Whether a datagram from `sender` with `counter` may be accepted. Changes nothing.
    pub fn check(&self, sender: NodeId, counter: u64) -> Freshness {
        match self.by_id.get(&sender.id) {
            None => Freshness::Fresh,
            Some(s) if sender.incarnation < s.incarnation => Freshness::Stale,
            Some(s) if sender.incarnation > s.incarnation || s.window.fresh(counter) => Freshness::Fresh,
            Some(_) => Freshness::Replay,
        }
    }

    /// Records an accepted datagram (its tag verified and [`Self::check`] said fresh). Returns
    /// whether this is a sender life not seen before (the driver then saves [`SealMemory`]
    /// at once).
    pub fn accept(&mut self, sender: NodeId, counter: u64) -> bool {
        self.clock += 1;
        let heard = self.clock;
        let new_life = match self.by_id.get_mut(&sender.id) {
            Some(s) if s.incarnation == sender.incarnation => {
                s.window.mark(counter);
                s.heard = heard;
                false
            }
            _ => {
                if !self.by_id.contains_key(&sender.id) && self.by_id.len() >= MAX_SENDERS {
                    let oldest = self.by_id.iter().min_by_key(|(_, s)| s.heard).map(|(id, _)| *id);
                    oldest.map(|id| self.by_id.remove(&id));
                }
                let mut window = ReplayWindow::new();
                window.mark(counter);
                self.by_id.insert(sender.id, SenderState { incarnation: sender.incarnation, window, heard });
                true
            }
        };
        new_life
    }

    /// What the driver keeps on disk.
    pub fn memory(&self) -> SealMemory {
        SealMemory {
            senders: self
                .by_id
                .iter()
                .map(|(id, s)| SenderMark { id: *id, incarnation: s.incarnation, top: s.window.top().unwrap_or(0) })
                .collect(),
        }
    }

    /// The replay state a previous life left on disk: every counter it had accepted (up to
    /// each sender's saved top) stays refused, and so do earlier lives.
    pub fn restore(memory: &SealMemory) -> Senders {
        let by_id = memory
            .senders
            .iter()
            .take(MAX_SENDERS)
            .map(|m| (m.id, SenderState { incarnation: m.incarnation, window: ReplayWindow::restored(m.top), heard: 0 }))
            .collect();
        Senders { by_id, clock: 0 }
    }

    /// Senders remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No sender remembered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// One sender as kept on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderMark {
    /// The sender.
    pub id: ServerId,
    /// Its latest life authenticated.
    pub incarnation: u64,
    /// The highest counter accepted from that life when saved.
    pub top: u64,
}

/// The part of the seal a server keeps across restarts, so a datagram recorded before a
/// restart is refused after it: each sender's latest life (earlier lives are refused) and the
/// highest counter accepted from it (counters up to it are refused). Small (a few dozen bytes
/// per sender); the driver saves it when a new sender life appears and now and then besides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealMemory {
    /// Every sender remembered, by id.
    pub senders: Vec<SenderMark>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_accepts_each_counter_once_and_refuses_the_too_old() {
        let mut w = ReplayWindow::new();
        for c in [5, 3, 4, 2000, 1990] {
            assert!(w.fresh(c), "{c} is new");
            w.mark(c);
            assert!(!w.fresh(c), "{c} again");
        }
        assert!(!w.fresh(5), "older than the window");
        assert!(w.fresh(1991), "inside the window, never seen");
        assert!(!w.fresh(2000 - WINDOW), "just outside the window");
        assert!(w.fresh(2000 - WINDOW + 1));
    }

    #[test]
    fn a_window_that_slides_forgets_bits_of_its_previous_pass() {
        let mut w = ReplayWindow::new();
        w.mark(10);
        w.mark(10 + WINDOW + 5);
        assert!(w.fresh(10 + WINDOW), "the bit of 10 was cleared when the window moved past it");
        w.mark(10 + 2 * WINDOW);
        assert!(w.fresh(10 + 2 * WINDOW - 1));
        assert!(!w.fresh(10 + 2 * WINDOW));
    }

    #[test]
    fn a_restored_window_refuses_everything_up_to_its_top() {
        let w = ReplayWindow::restored(500);
        assert!(!w.fresh(0) && !w.fresh(499) && !w.fresh(500));
        assert!(w.fresh(501));
    }

    #[test]
    fn an_earlier_life_is_stale_once_a_later_one_is_heard() {
        let mut s = Senders::default();
        let life = |incarnation| NodeId { id: ServerId(9), incarnation };
        assert!(s.accept(life(2), 0));
        assert_eq!(s.check(life(1), 100), Freshness::Stale);
        assert_eq!(s.check(life(2), 0), Freshness::Replay);
        assert_eq!(s.check(life(3), 0), Freshness::Fresh);
        let back = Senders::restore(&s.memory());
        assert_eq!(back.check(life(2), 0), Freshness::Replay);
        assert_eq!(back.check(life(1), 7), Freshness::Stale);
    }

    #[test]
    fn the_sender_table_is_bounded() {
        let mut s = Senders::default();
        for i in 1..=(MAX_SENDERS as u128 + 10) {
            s.accept(NodeId { id: ServerId(i), incarnation: 1 }, 0);
        }
        assert_eq!(s.len(), MAX_SENDERS);
    }
}
