//! Causal broadcast among servers (Birman-Schiper-Stephenson): per-origin
//! sequence numbers, the origin's delivered vector clock, a bounded hold-back
//! queue, a retransmission store and per-peer digests for anti-entropy.
//!
//! Vector clocks are `BTreeMap`s keyed by origin (a server life); nothing here
//! iterates a hash map, so every server delivers deterministically.

use crate::id::{NodeId, ServerId};
use crate::limits::{MAX_HOLDBACK, MAX_ORIGINS, MAX_RANGE, MAX_RETIRED, MAX_STORE, STORE_HEADROOM};
use crate::time::Vc;
use crate::wire::chat::{CausalMsg, Item, Key};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Counters of the causal layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalCounters {
    /// Copies of already delivered messages ignored.
    pub duplicates: u64,
    /// Messages refused, or evicted for one nearer delivery, because the hold-back queue was full.
    pub holdback_full: u64,
    /// Messages not kept for retransmission because the store was full.
    pub store_full: u64,
    /// Largest hold-back queue seen.
    pub max_holdback: u64,
    /// Broadcasts refused because the vector clock named too many origins.
    pub vc_overflow: u64,
}

/// The causal-broadcast state of one server (durable: it survives a crash).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Causal {
    /// What this server delivered.
    pub delivered: Vc,
    holdback: BTreeMap<Key, CausalMsg>,
    store: BTreeMap<Key, CausalMsg>,
    /// Latest delivered vector heard from each server (its digest).
    pub digests: BTreeMap<ServerId, Vc>,
    /// The servers a dependency must be held by before new messages leave it out: every member
    /// of the view, and servers that left it while their lives may still be named (bounded, see
    /// [`Causal::retire`]).
    pub known: BTreeSet<ServerId>,
    /// Origins retired from the vectors, with how much of each was delivered: lives that left the
    /// view once every member held everything they sent (see [`Causal::retire`]). A retired
    /// origin counts as delivered up to its value; vectors and digests no longer name it, so
    /// they name a bounded number of origins however many lives the cluster had.
    #[serde(default)]
    pub retired: BTreeMap<NodeId, u64>,
    /// Counters.
    pub counters: CausalCounters,
}

impl Causal {
    /// Broadcasts `item` as `origin`: returns the message (already delivered here).
    ///
    /// The message depends on everything delivered here, but names only what some known server
    /// may still lack: an entry every known server reports holding is satisfied wherever the
    /// message can arrive. So the vector stays as small as the origins still in flight, instead
    /// of growing with every server life the cluster ever had.
    pub fn broadcast(&mut self, origin: NodeId, item: Item) -> Option<CausalMsg> {
        let seq = self.delivered.get(&origin).copied().unwrap_or(0) + 1;
        let mut deps = self.delivered.clone();
        deps.remove(&origin);
        if !self.known.is_empty() {
            deps.retain(|o, v| !self.known.iter().all(|s| self.holds(origin.id, *s, (*o, *v))));
        }
        if deps.len() >= MAX_ORIGINS {
            self.counters.vc_overflow += 1;
            return None;
        }
        let msg = CausalMsg { origin, seq, deps, item: std::sync::Arc::new(item) };
        self.delivered.insert(origin, seq);
        self.keep(msg.clone());
        Some(msg)
    }

    /// If `from` of `origin` was delivered here but is no longer stored (trimmed), the first
    /// sequence number of `origin` still stored, or the next to come.
    pub fn gone_below(&self, origin: NodeId, from: u64) -> Option<u64> {
        let delivered = self.value(origin);
        if from == 0 || from > delivered || self.store.contains_key(&(origin, from)) {
            return None;
        }
        let next = self.store.range((origin, from)..=(origin, delivered)).next().map(|(k, _)| k.1);
        Some(next.unwrap_or(delivered + 1))
    }

    /// The stored messages.
    pub fn stored(&self) -> impl Iterator<Item = &CausalMsg> {
        self.store.values()
    }

    /// Replaces what was delivered with a snapshot's cut (`delivered`, and the snapshot's
    /// stored messages); returns the messages held back here that the cut lacks, to be
    /// received again. `None`, and nothing changes, unless the cut covers everything
    /// delivered here: delivering a message again after the cut would apply it out of order
    /// (a vector leaves out what every known server held, so it cannot order a re-delivery),
    /// and a message trimmed here would be lost.
    pub fn install(&mut self, delivered: Vc, retired: BTreeMap<NodeId, u64>, store: Vec<CausalMsg>) -> Option<Vec<CausalMsg>> {
        let cut = |o: &NodeId| delivered.get(o).or_else(|| retired.get(o)).copied().unwrap_or(0);
        if self.delivered.iter().chain(&self.retired).any(|(o, v)| cut(o) < *v) {
            return None;
        }
        let old_store = std::mem::take(&mut self.store);
        let old_holdback = std::mem::take(&mut self.holdback);
        // Our own retired lives stay retired unless the cut still names them.
        let mut now_retired = std::mem::take(&mut self.retired);
        for (o, v) in retired {
            let e = now_retired.entry(o).or_insert(v);
            *e = (*e).max(v);
        }
        now_retired.retain(|o, _| !delivered.contains_key(o));
        self.retired = now_retired;
        self.evict_retired();
        self.delivered = delivered;
        self.store = store.into_iter().map(|m| (m.key(), m)).collect();
        let mut again: Vec<CausalMsg> = old_store.into_values().chain(old_holdback.into_values()).filter(|m| !self.has(m.key())).collect();
        // Per origin in sequence order, so each becomes deliverable as its predecessor lands.
        again.sort_by_key(|m| (m.origin, m.seq));
        Some(again)
    }

    /// Whether the retransmission store is so full that no new message should be started here
    /// (messages from peers still have room: a message that cannot be stored cannot be shown).
    pub fn is_nearly_full(&self) -> bool {
        self.store.len() + STORE_HEADROOM >= MAX_STORE
    }

    fn keep(&mut self, msg: CausalMsg) {
        if self.store.len() >= MAX_STORE {
            self.counters.store_full += 1;
            return;
        }
        self.store.insert(msg.key(), msg);
    }

    /// How much of `origin` was delivered here (retired or not).
    pub fn value(&self, origin: NodeId) -> u64 {
        self.delivered.get(&origin).or_else(|| self.retired.get(&origin)).copied().unwrap_or(0)
    }

    /// Whether everything `vc` names was delivered here.
    pub fn covers(&self, vc: &Vc) -> bool {
        vc.iter().all(|(o, v)| self.value(*o) >= *v)
    }

    /// Whether `key` was delivered here.
    pub fn has(&self, key: Key) -> bool {
        self.value(key.0) >= key.1
    }

    /// Brings a retired origin back into the vector: a peer names more of it than we retired
    /// (it was not all held after all), so it must be fetched and delivered again normally.
    fn revive(&mut self, origin: NodeId, beyond: u64) {
        if let Some(v) = self.retired.get(&origin).copied().filter(|v| *v < beyond) {
            self.retired.remove(&origin);
            self.delivered.insert(origin, v);
        }
    }

    /// Brings back every retired origin that `msg` (its own sequence number or a dependency)
    /// names beyond what was retired.
    fn revive_named(&mut self, msg: &CausalMsg) {
        self.revive(msg.origin, msg.seq);
        for (o, v) in &msg.deps {
            self.revive(*o, *v);
        }
    }

    /// Origin lives that may be retired (see [`Causal::retire_lives`]): lives that left the
    /// view (`members`, by life) of which every member holds all that was delivered here, with
    /// nothing of them waiting in the hold-back queue. At most [`MAX_ORIGINS`] at a time.
    pub fn retirable(&self, me: ServerId, members: &[NodeId]) -> Vec<(NodeId, u64)> {
        self.delivered
            .iter()
            .filter(|(o, v)| {
                !members.contains(o)
                    && members.iter().all(|s| self.holds_delivered(me, s.id, (**o, **v)))
                    && self.holdback.range((**o, 0)..=(**o, u64::MAX)).next().is_none()
            })
            .map(|(o, v)| (*o, *v))
            .take(MAX_ORIGINS)
            .collect()
    }

    /// Retires `lives` (delivered in an [`Item::Retire`], at one place in causal order on every
    /// server): each leaves the vectors where exactly `upto` of it was delivered and nothing of
    /// it is held back; returns how many did. Digests stop naming what is retired.
    ///
    /// Causal order still holds: a retired origin counts as delivered up to its value, and
    /// every member held that much when the leader sent the retirement. A server that
    /// delivered more of a life keeps naming it in its digest, and a message or digest that
    /// names more of a retired life brings it back (see `revive`), so nothing it sent is lost;
    /// the vectors only stop naming it. Retired entries are kept (bounded by [`MAX_RETIRED`],
    /// the oldest lives first out) so that late copies are recognised as duplicates.
    pub fn retire_lives(&mut self, lives: &[(NodeId, u64)]) -> usize {
        let mut n = 0;
        for (o, v) in lives {
            let waiting = self.holdback.range((*o, 0)..=(*o, u64::MAX)).next().is_some();
            if self.delivered.get(o) == Some(v) && !waiting {
                self.delivered.remove(o);
                self.retired.insert(*o, *v);
                n += 1;
            }
        }
        let retired = &self.retired;
        for digest in self.digests.values_mut() {
            digest.retain(|o, v| retired.get(o).is_none_or(|r| *v > *r));
        }
        self.evict_retired();
        n
    }

    /// Forgets servers outside the view (`members`) that no longer pin dependencies: none of
    /// their lives is still named, and more servers are known than twice the view and two.
    pub fn forget_servers(&mut self, members: &[ServerId]) {
        let live: BTreeSet<ServerId> = self.delivered.keys().map(|o| o.id).chain(members.iter().copied()).collect();
        let bound = 2 * members.len() + 2;
        if self.known.len() > bound {
            let spare: Vec<ServerId> = self.known.iter().filter(|s| !live.contains(s)).copied().collect();
            for s in spare.into_iter().take(self.known.len() - bound) {
                self.known.remove(&s);
            }
        }
        let known = &self.known;
        self.digests.retain(|s, _| known.contains(s) || members.contains(s));
    }

    /// Keeps at most [`MAX_RETIRED`] retired origins, dropping the lowest incarnations first
    /// (the oldest lives; a copy of their messages can no longer be in flight).
    fn evict_retired(&mut self) {
        while self.retired.len() > MAX_RETIRED {
            let Some(oldest) = self.retired.keys().min_by_key(|o| (o.incarnation, o.id)).copied() else { break };
            self.retired.remove(&oldest);
        }
    }

    /// Receives a message; returns those that became deliverable, in delivery order.
    /// `no_holdback` is a planted bug (deliver at once, ignoring the causal past).
    pub fn receive(&mut self, msg: CausalMsg, no_holdback: bool) -> Vec<CausalMsg> {
        if self.has(msg.key()) || self.holdback.contains_key(&msg.key()) {
            self.counters.duplicates += 1;
            return Vec::new();
        }
        self.revive_named(&msg);
        if no_holdback {
            self.delivered.insert(msg.origin, msg.seq);
            self.keep(msg.clone());
            return vec![msg];
        }
        // A full queue still takes a message it can deliver at once (the gap filler the whole
        // queue may be waiting for), and one nearer delivery than the furthest held, which it
        // evicts: a server catching up asks for the messages right after what it delivered, and
        // a queue full of later ones refused them all but the ready few (a server back from a
        // partition under 200 clients caught up at 30 messages/s per origin, slower than they
        // were sent: `ringchat sim --seed 0 --servers 5 --clients 200`). An evicted message is
        // not lost: anti-entropy asks for it again once its turn comes.
        let ready = self.deliverable(&msg);
        if self.holdback.len() >= MAX_HOLDBACK && !ready {
            self.counters.holdback_full += 1;
            match self.furthest_held().filter(|k| self.ahead(*k) > self.ahead(msg.key())) {
                Some(k) => {
                    self.holdback.remove(&k);
                }
                None => return Vec::new(),
            }
        }
        self.holdback.insert(msg.key(), msg);
        if !ready {
            self.counters.max_holdback = self.counters.max_holdback.max(self.holdback.len() as u64);
            return Vec::new();
        }
        let mut out = Vec::new();
        while let Some(key) = self.next_deliverable() {
            let Some(m) = self.holdback.remove(&key) else { break };
            self.delivered.insert(m.origin, m.seq);
            self.keep(m.clone());
            out.push(m);
        }
        // Anything at or below what is delivered is a stale copy.
        let delivered = &self.delivered;
        self.holdback.retain(|k, _| delivered.get(&k.0).copied().unwrap_or(0) < k.1);
        out
    }

    /// Delivers a message again from a chat log (it was delivered before a crash, after the
    /// state this server restarted from): true if it is the next of its origin and its causal
    /// past is delivered, as it was when it was first delivered. A copy of it held back here
    /// is dropped.
    pub fn redeliver(&mut self, msg: CausalMsg) -> bool {
        self.revive_named(&msg);
        if !self.deliverable(&msg) {
            return false;
        }
        self.holdback.remove(&msg.key());
        self.delivered.insert(msg.origin, msg.seq);
        self.keep(msg);
        true
    }

    /// How many sequence numbers `key` is past what its origin delivered here.
    fn ahead(&self, key: Key) -> u64 {
        key.1.saturating_sub(self.value(key.0))
    }

    /// The held-back message furthest from delivery (most sequence numbers past what its origin
    /// delivered here): the last held of each origin, so one look per origin.
    fn furthest_held(&self) -> Option<Key> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut best: Option<(u64, Key)> = None;
        let mut origin = self.holdback.keys().next().map(|k| k.0);
        while let Some(o) = origin {
            if let Some((k, _)) = self.holdback.range((o, 0)..=(o, u64::MAX)).next_back() {
                let ahead = self.ahead(*k);
                if best.is_none_or(|(b, _)| ahead > b) {
                    best = Some((ahead, *k));
                }
            }
            origin = self.holdback.range((Excluded((o, u64::MAX)), Unbounded)).next().map(|(k, _)| k.0);
        }
        best.map(|(_, k)| k)
    }

    /// A held-back message that is deliverable now: only the next message of each origin can be,
    /// so this looks at one entry per origin, not at the whole queue.
    fn next_deliverable(&self) -> Option<Key> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut origin = self.holdback.keys().next().map(|k| k.0);
        while let Some(o) = origin {
            let want = (o, self.delivered.get(&o).copied().unwrap_or(0) + 1);
            if self.holdback.get(&want).is_some_and(|m| self.deliverable(m)) {
                return Some(want);
            }
            origin = self.holdback.range((Excluded((o, u64::MAX)), Unbounded)).next().map(|(k, _)| k.0);
        }
        None
    }

    /// The BSS rule: next from its origin, and its causal past delivered.
    fn deliverable(&self, m: &CausalMsg) -> bool {
        self.value(m.origin) + 1 == m.seq && m.deps.iter().all(|(k, v)| *k == m.origin || self.value(*k) >= *v)
    }

    /// The first held-back message of each origin (for diagnosis: what it waits for).
    pub fn holdback_heads(&self) -> Vec<(Key, Vc)> {
        let mut out: Vec<(Key, Vc)> = Vec::new();
        for (k, m) in &self.holdback {
            if out.last().is_none_or(|(l, _)| l.0 != k.0) {
                out.push((*k, m.deps.clone()));
            }
        }
        out
    }

    /// Messages held back now.
    pub fn holdback_len(&self) -> usize {
        self.holdback.len()
    }

    /// Messages in the retransmission store now.
    pub fn store_len(&self) -> usize {
        self.store.len()
    }

    /// A stored message.
    pub fn get(&self, key: Key) -> Option<&CausalMsg> {
        self.store.get(&key)
    }

    /// Records a peer's digest (delivered vectors only grow: keep the maximum).
    /// Origins this server retired are left out unless the digest names more of them than was
    /// retired (then the origin comes back, to be fetched).
    pub fn note_digest(&mut self, server: ServerId, vc: &Vc) {
        for (o, v) in vc {
            self.revive(*o, *v);
        }
        let retired = &self.retired;
        let d = self.digests.entry(server).or_default();
        for (o, v) in vc {
            if retired.get(o).is_none_or(|r| v > r) {
                let e = d.entry(*o).or_insert(0);
                *e = (*e).max(*v);
            }
        }
    }

    /// Whether server `s` (us included as `me`) holds `key`.
    pub fn holds(&self, me: ServerId, s: ServerId, key: Key) -> bool {
        self.holds_delivered(me, s, key)
    }

    /// Whether server `s` delivered `key` (every member held a retired origin's messages).
    fn holds_delivered(&self, me: ServerId, s: ServerId, key: Key) -> bool {
        if s == me || self.retired.get(&key.0).is_some_and(|r| *r >= key.1) {
            return self.has(key);
        }
        self.digests.get(&s).is_some_and(|d| d.get(&key.0).copied().unwrap_or(0) >= key.1)
    }

    /// The ranges `(origin, from, to)` this server misses relative to `digest`.
    pub fn missing(&self, digest: &Vc) -> Vec<(NodeId, u64, u64)> {
        digest
            .iter()
            .filter_map(|(o, v)| {
                let have = self.value(*o);
                (*v > have).then(|| (*o, have + 1, (*v).min(have + MAX_RANGE)))
            })
            .collect()
    }

    /// The ranges `(origin, from, to)` the hold-back queue waits for: the predecessors and
    /// dependencies of each origin's first held-back message not delivered here. A digest may
    /// not name them (a peer retired their life), so they are asked for directly; a peer that
    /// trimmed them answers `ChatGone`, and a snapshot brings them.
    pub fn awaited(&self) -> Vec<(NodeId, u64, u64)> {
        let mut want: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut need = |o: NodeId, v: u64| {
            if self.value(o) < v {
                let e = want.entry(o).or_insert(0);
                *e = (*e).max(v);
            }
        };
        let mut origin = None;
        for (k, m) in &self.holdback {
            if origin == Some(k.0) {
                continue;
            }
            origin = Some(k.0);
            need(k.0, k.1 - 1);
            for (o, v) in &m.deps {
                if *o != k.0 {
                    need(*o, *v);
                }
            }
        }
        want.into_iter()
            .take(MAX_ORIGINS)
            .map(|(o, v)| {
                let have = self.value(o);
                (o, have + 1, v.min(have + MAX_RANGE))
            })
            .collect()
    }

    /// Stored messages of `origin` in `from..=to` (bounded by [`MAX_RANGE`]; none when the
    /// range is reversed, as a peer may write it).
    pub fn range(&self, origin: NodeId, from: u64, to: u64) -> Vec<CausalMsg> {
        let to = to.min(from.saturating_add(MAX_RANGE - 1));
        if to < from {
            return Vec::new();
        }
        self.store.range((origin, from)..=(origin, to)).map(|(_, m)| m.clone()).collect()
    }

    /// Drops stored messages every one of `members` (the installed view) holds, unless
    /// `pinned`. A server outside the view that asks for one later is told it is gone
    /// (see [`Causal::gone_below`]) and catches up by state transfer.
    pub fn trim(&mut self, me: ServerId, members: &[ServerId], pinned: impl Fn(Key) -> bool) {
        let keys: Vec<Key> = self.store.keys().copied().filter(|k| !pinned(*k) && members.iter().all(|s| self.holds(me, *s, *k))).collect();
        for k in keys {
            self.store.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Item;

    fn node(i: u128) -> NodeId {
        NodeId { id: ServerId(i), incarnation: 1 }
    }

    fn join(user: &str) -> Item {
        Item::Join {
            id: crate::wire::MsgId { client: 1, seq: user.len() as u64 },
            user: user.into(),
            room: "r".into(),
            fence: 0,
            lamport: 0,
        }
    }

    #[test]
    fn reply_is_held_back_until_its_question_is_delivered() {
        let mut a = Causal::default();
        let mut b = Causal::default();
        let mut c = Causal::default();
        let m1 = a.broadcast(node(1), join("q")).unwrap();
        assert_eq!(b.receive(m1.clone(), false).len(), 1);
        let m2 = b.broadcast(node(2), join("reply")).unwrap();
        assert!(c.receive(m2.clone(), false).is_empty(), "reply must wait for the question");
        assert_eq!(c.holdback_len(), 1);
        let got = c.receive(m1.clone(), false);
        assert_eq!(got.iter().map(|m| m.key()).collect::<Vec<_>>(), vec![m1.key(), m2.key()]);
    }

    #[test]
    fn retransmission_never_delivers_twice() {
        let mut a = Causal::default();
        let mut b = Causal::default();
        let m1 = a.broadcast(node(1), join("x")).unwrap();
        assert_eq!(b.receive(m1.clone(), false).len(), 1);
        assert!(b.receive(m1.clone(), false).is_empty());
        assert_eq!(b.counters.duplicates, 1);
    }

    #[test]
    fn anti_entropy_fills_a_gap_from_the_store() {
        let mut a = Causal::default();
        let mut b = Causal::default();
        let m1 = a.broadcast(node(1), join("x")).unwrap();
        let m2 = a.broadcast(node(1), join("y")).unwrap();
        assert!(b.receive(m2, false).is_empty());
        let need = b.missing(&a.delivered);
        assert_eq!(need, vec![(node(1), 1, 2)]);
        assert!(a.range(node(1), 2, 1).is_empty(), "a reversed range is empty, not a panic");
        let resent = a.range(node(1), 1, 2);
        assert_eq!(resent.len(), 2);
        let mut n = 0;
        for m in resent {
            n += b.receive(m, false).len();
        }
        assert_eq!(n, 2);
        assert_eq!(b.delivered, a.delivered);
        let _ = m1;
    }

    #[test]
    fn store_is_trimmed_once_every_member_holds_a_message() {
        let mut a = Causal::default();
        let m = a.broadcast(node(1), join("x")).unwrap();
        let members = [ServerId(1), ServerId(2)];
        a.trim(ServerId(1), &members, |_| false);
        assert_eq!(a.store_len(), 1);
        a.note_digest(ServerId(2), &m.stamp());
        a.trim(ServerId(1), &members, |k| k == m.key());
        assert_eq!(a.store_len(), 1, "pinned stays");
        a.trim(ServerId(1), &members, |_| false);
        assert_eq!(a.store_len(), 0);
    }

    #[test]
    fn a_server_outside_the_view_does_not_hold_the_store_back() {
        // Server 3 was a member once (a dead life, or one restarted under a new id) and never
        // reports again.
        let mut a = Causal::default();
        a.known.extend([ServerId(1), ServerId(2), ServerId(3)]);
        let m = a.broadcast(node(1), join("x")).unwrap();
        a.note_digest(ServerId(2), &m.stamp());
        a.trim(ServerId(1), &[ServerId(1), ServerId(2)], |_| false);
        assert_eq!(a.store_len(), 0, "every member holds it");
        assert_eq!(a.gone_below(node(1), 1), Some(2), "server 3, back, is told it is gone and fetches a snapshot");
    }

    #[test]
    fn a_snapshot_cut_behind_a_message_delivered_here_is_refused_even_if_stored() {
        // b delivered m1 (and still stores it); a cut without m1 would make b deliver m1 again,
        // after whatever the cut holds that m1's vector no longer names.
        let mut b = Causal::default();
        b.broadcast(node(1), join("x")).unwrap();
        let before = b.clone();
        assert_eq!(b.install(Vc::new(), BTreeMap::new(), Vec::new()), None);
        assert_eq!(b, before, "a refused install changes nothing");
        let cut: Vc = [(node(1), 1)].into_iter().collect();
        assert_eq!(b.install(cut, BTreeMap::new(), Vec::new()), Some(Vec::new()), "a cut that covers it is taken");
    }

    #[test]
    fn vector_names_only_what_some_known_server_may_lack() {
        // Servers 1, 2, 3; server 1 heard a message of a dead life of server 3.
        let mut a = Causal::default();
        a.known.extend([ServerId(1), ServerId(2), ServerId(3)]);
        let old = CausalMsg { origin: NodeId { id: ServerId(3), incarnation: 1 }, seq: 1, deps: Vc::new(), item: join("old").into() };
        assert_eq!(a.receive(old.clone(), false).len(), 1);
        let m1 = a.broadcast(node(1), join("x")).unwrap();
        assert_eq!(m1.deps.get(&old.origin), Some(&1), "servers 2 and 3 may lack it: named");
        a.note_digest(ServerId(2), &old.stamp());
        let m1b = a.broadcast(node(1), join("x2")).unwrap();
        assert_eq!(m1b.deps.get(&old.origin), Some(&1), "server 3 (its new life) may lack it: named");
        a.note_digest(ServerId(3), &old.stamp());
        let m2 = a.broadcast(node(1), join("y")).unwrap();
        assert_eq!(m2.deps.get(&old.origin), None, "every known server holds it: left out");
        // A server that delivered it still delivers m1 and m2 in order.
        let mut b = Causal::default();
        assert_eq!(b.receive(old, false).len(), 1);
        let got: Vec<Key> = [m2.clone(), m1b.clone(), m1.clone()].into_iter().flat_map(|m| b.receive(m, false)).map(|m| m.key()).collect();
        assert_eq!(got, vec![m1.key(), m1b.key(), m2.key()]);
    }

    #[test]
    fn a_nearly_full_store_says_so_before_it_overflows() {
        let mut a = Causal::default();
        let mut n = 0;
        while !a.is_nearly_full() {
            a.broadcast(node(1), join("x")).unwrap();
            n += 1;
        }
        assert!(n + STORE_HEADROOM >= MAX_STORE && n < MAX_STORE);
        assert_eq!(a.counters.store_full, 0, "it says so while there is still room");
    }

    #[test]
    fn a_trimmed_message_is_reported_gone_and_a_snapshot_cut_keeps_what_it_lacks() {
        let mut a = Causal::default();
        let m1 = a.broadcast(node(1), join("x")).unwrap();
        let m2 = a.broadcast(node(1), join("y")).unwrap();
        assert_eq!(a.gone_below(node(1), 1), None, "still stored");
        a.trim(ServerId(1), &[ServerId(1)], |k| k == m2.key());
        assert_eq!(a.gone_below(node(1), 1), Some(2), "1 was trimmed, 2 is kept");
        assert_eq!(a.gone_below(node(1), 3), None, "not delivered yet: not gone");
        // b delivered m1 and holds m3 of another origin back; it installs a's cut {1: 2}.
        let mut b = Causal::default();
        b.receive(m1.clone(), false);
        let m3 = CausalMsg { origin: node(2), seq: 2, deps: Vc::new(), item: join("z").into() };
        b.receive(m3.clone(), false);
        let again = b.install(a.delivered.clone(), BTreeMap::new(), a.stored().cloned().collect()).expect("b stores all it delivered");
        assert_eq!(b.delivered, a.delivered);
        assert_eq!(again.iter().map(|m| m.key()).collect::<Vec<_>>(), vec![m3.key()], "m1 is in the cut, m3 is not");
        assert!(b.get(m2.key()).is_some(), "the cut's stored messages come along");
    }

    #[test]
    fn a_snapshot_cut_that_lacks_a_message_trimmed_here_is_refused() {
        let mut b = Causal::default();
        let m1 = b.broadcast(node(1), join("x")).unwrap();
        b.trim(ServerId(1), &[ServerId(1)], |_| false);
        assert!(b.get(m1.key()).is_none(), "trimmed");
        let before = b.clone();
        assert_eq!(b.install(Vc::new(), BTreeMap::new(), Vec::new()), None, "installing the empty cut would lose m1");
        assert_eq!(b, before, "a refused install changes nothing");
    }

    #[test]
    fn a_retired_life_leaves_the_vector_and_its_late_copies_stay_duplicates() {
        let mut a = Causal::default();
        let old = NodeId { id: ServerId(3), incarnation: 1 };
        let m = CausalMsg { origin: old, seq: 1, deps: Vc::new(), item: join("x").into() };
        a.receive(m.clone(), false);
        let members = [node(1), node(2)];
        assert!(a.retirable(ServerId(1), &members).is_empty(), "server 2 has not reported holding it");
        a.note_digest(ServerId(2), &m.stamp());
        assert_eq!(a.retirable(ServerId(1), &members), vec![(old, 1)]);
        assert_eq!(a.retire_lives(&[(old, 1)]), 1);
        assert!(!a.delivered.contains_key(&old) && a.digests.values().all(|d| !d.contains_key(&old)), "no vector names it");
        assert!(a.has(m.key()));
        assert!(a.receive(m, false).is_empty(), "a late copy is a duplicate");
        let later = a.broadcast(node(1), join("y")).unwrap();
        assert!(!later.deps.contains_key(&old));
    }

    #[test]
    fn a_life_retired_elsewhere_with_less_delivered_comes_back_when_a_digest_names_more() {
        let old = NodeId { id: ServerId(3), incarnation: 1 };
        let msg = |s: u64| CausalMsg { origin: old, seq: s, deps: Vc::new(), item: join("x").into() };
        let mut b = Causal::default();
        b.receive(msg(1), false);
        assert_eq!(b.retire_lives(&[(old, 1)]), 1);
        // Another server delivered seq 2 of that life: its digest names more than b retired.
        let more: Vc = [(old, 2)].into_iter().collect();
        b.note_digest(ServerId(2), &more);
        assert_eq!(b.missing(&more), vec![(old, 2, 2)], "b fetches what it lacks");
        assert_eq!(b.receive(msg(2), false).len(), 1);
        // And a server that delivered more than the retirement says keeps naming the life.
        let mut c = Causal::default();
        c.receive(msg(1), false);
        c.receive(msg(2), false);
        assert_eq!(c.retire_lives(&[(old, 1)]), 0);
        assert_eq!(c.delivered.get(&old), Some(&2));
    }

    #[test]
    fn what_the_hold_back_queue_waits_for_is_asked_for_even_if_no_digest_names_it() {
        let mut c = Causal::default();
        let dep: Vc = [(node(3), 2)].into_iter().collect();
        c.receive(CausalMsg { origin: node(1), seq: 1, deps: dep, item: join("a").into() }, false);
        c.receive(CausalMsg { origin: node(2), seq: 3, deps: Vc::new(), item: join("b").into() }, false);
        assert_eq!(c.awaited(), vec![(node(2), 1, 2), (node(3), 1, 2)]);
    }

    #[test]
    fn hold_back_is_bounded() {
        let mut c = Causal::default();
        for s in 2..(MAX_HOLDBACK as u64 + 10) {
            let m = CausalMsg { origin: node(1), seq: s, deps: Vc::new(), item: join("x").into() };
            c.receive(m, false);
        }
        assert_eq!(c.holdback_len(), MAX_HOLDBACK);
        assert!(c.counters.holdback_full > 0);
    }

    #[test]
    fn a_full_hold_back_makes_room_for_a_message_nearer_delivery_than_the_furthest_held() {
        let mut c = Causal::default();
        let msg = |o: u128, s: u64, deps: Vc| CausalMsg { origin: node(o), seq: s, deps, item: join("x").into() };
        // Full of node 1's far future, all waiting for its seq 1.
        for s in 100..(100 + MAX_HOLDBACK as u64) {
            c.receive(msg(1, s, Vc::new()), false);
        }
        let last = 99 + MAX_HOLDBACK as u64;
        // Node 2's seq 1 cannot be delivered yet (it needs node 3's seq 1) but is next in line:
        // the furthest held (node 1's last) makes room for it.
        let needs_3: Vc = [(node(3), 1)].into_iter().collect();
        assert!(c.receive(msg(2, 1, needs_3), false).is_empty());
        assert_eq!(c.holdback_len(), MAX_HOLDBACK);
        assert!(c.holdback.contains_key(&(node(2), 1)), "the nearer message is held");
        assert!(!c.holdback.contains_key(&(node(1), last)), "the furthest was evicted");
        // A message further ahead than everything held is still refused.
        assert!(c.receive(msg(1, last + 5, Vc::new()), false).is_empty());
        assert!(!c.holdback.contains_key(&(node(1), last + 5)));
        // The gap filler releases node 2's message.
        assert_eq!(c.receive(msg(3, 1, Vc::new()), false).len(), 2);
    }

    #[test]
    fn a_full_hold_back_still_takes_the_message_it_waits_for() {
        let mut c = Causal::default();
        let msg = |s: u64| CausalMsg { origin: node(1), seq: s, deps: Vc::new(), item: join("x").into() };
        for s in 2..=(MAX_HOLDBACK as u64 + 1) {
            c.receive(msg(s), false);
        }
        assert_eq!(c.holdback_len(), MAX_HOLDBACK, "full, waiting for seq 1");
        assert!(c.receive(msg(MAX_HOLDBACK as u64 + 2), false).is_empty(), "a message that must wait is refused");
        let got = c.receive(msg(1), false);
        assert_eq!(got.len(), MAX_HOLDBACK + 1, "the gap filler releases the whole queue");
        assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "in order");
        assert_eq!(c.holdback_len(), 0);
    }

    #[test]
    fn delivery_across_origins_follows_dependencies() {
        // b1 and b2 depend on a2; a1 arrives last and releases a2, then b1 and b2, in causal order.
        let mut c = Causal::default();
        let a = |s: u64| CausalMsg { origin: node(1), seq: s, deps: Vc::new(), item: join("a").into() };
        let mut dep = Vc::new();
        dep.insert(node(1), 2);
        let b = |s: u64| CausalMsg { origin: node(2), seq: s, deps: dep.clone(), item: join("b").into() };
        assert!(c.receive(b(1), false).is_empty());
        assert!(c.receive(b(2), false).is_empty());
        assert!(c.receive(a(2), false).is_empty());
        let got: Vec<Key> = c.receive(a(1), false).iter().map(|m| m.key()).collect();
        assert_eq!(got, vec![(node(1), 1), (node(1), 2), (node(2), 1), (node(2), 2)]);
    }
}
