//! Heartbeat failure detector: a member is suspected once it has been silent
//! for the suspicion timeout, or once a ring hop to it went unacknowledged
//! (cleared the next time it is heard). Liveness is per server id: a restarted
//! server's new life keeps its old life alive in the detector's eyes.

use crate::id::{NodeId, ServerId};
use crate::time::Instant;
use std::collections::BTreeMap;

/// Last-heard times of peers, and local suspicions.
#[derive(Debug, Default, Clone)]
pub struct FailureDetector {
    last_heard: BTreeMap<ServerId, Instant>,
    hop_suspects: BTreeMap<ServerId, Instant>,
}

impl FailureDetector {
    /// Records a datagram from `node` (any kind counts as life).
    pub fn heard(&mut self, node: NodeId, now: Instant) {
        self.last_heard.insert(node.id, now);
        self.hop_suspects.remove(&node.id);
    }

    /// Starts watching `node` as if it had just been heard (grace for new members).
    pub fn watch(&mut self, node: NodeId, now: Instant) {
        self.last_heard.entry(node.id).or_insert(now);
    }

    /// Suspects `node` because a ring hop to it was never acknowledged.
    pub fn suspect_hop(&mut self, node: NodeId, now: Instant) {
        self.hop_suspects.insert(node.id, now);
    }

    /// When `node` was last heard, if ever.
    pub fn last_heard(&self, node: NodeId) -> Option<Instant> {
        self.last_heard.get(&node.id).copied()
    }

    /// Whether `node` is suspected at `now` given a silence timeout of `timeout_us`.
    pub fn is_suspected(&self, node: NodeId, now: Instant, timeout_us: u64) -> bool {
        if self.hop_suspects.contains_key(&node.id) {
            return true;
        }
        match self.last_heard.get(&node.id) {
            Some(t) => now.since(*t) > timeout_us,
            None => true,
        }
    }

    /// Forgets servers for which `keep` is false (members that left the view).
    pub fn retain(&mut self, keep: impl Fn(ServerId) -> bool) {
        self.last_heard.retain(|n, _| keep(*n));
        self.hop_suspects.retain(|n, _| keep(*n));
    }
}
