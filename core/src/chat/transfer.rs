//! State transfer: how a server that cannot catch up message by message (its peers trimmed
//! what it lacks: it joined late, or came back after everyone moved on) gets a copy of a
//! peer's chat state.
//!
//! A peer asked for messages it no longer stores answers `ChatGone`. The server behind then
//! fetches a [`Snapshot`] of that peer: the peer encodes it once (an offer, kept while it is
//! being fetched) and sends it in numbered chunks, a window at a time, on request. The
//! fetcher asks again for the first missing chunk when a window ends or a request goes
//! unanswered, so loss only costs re-requests. A snapshot is a causal cut (the peer delivers
//! in causal order), so installing it and then re-receiving what the fetcher held beyond it
//! gives a state the fetcher could have reached by delivering every message itself.

use crate::chat::state::ChatState;
use crate::limits::{CHUNK, MAX_CHUNKS, MAX_ORIGINS, MAX_STORE};
use crate::time::{Instant, Vc};
use crate::wire::Body;
use crate::wire::CausalMsg;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Chunks sent per request.
const WINDOW: u32 = 16;
/// A request unanswered this long is repeated.
const ASK_AGAIN_US: u64 = 300_000;
/// A fetch making no progress this long is given up (a later `ChatGone` starts another).
const GIVE_UP_US: u64 = 10_000_000;
/// An offer nobody fetched for this long is dropped.
const OFFER_IDLE_US: u64 = 30_000_000;
/// A new fetch (nonce 0) reuses an offer at most this old.
const OFFER_FRESH_US: u64 = 1_000_000;
/// Offers kept at once (each at most [`MAX_CHUNKS`] chunks): a new fetch's fresh offer does not
/// replace the one another fetcher is half way through. With one offer, two servers fetching
/// from one peer made a new offer for each other on every window, and neither ever finished
/// (`ringchat sim --seed 40 --servers 5 --clients 40`).
const MAX_OFFERS: usize = 3;

/// A server's chat state as a peer installs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the state includes.
    pub delivered: Vc,
    /// Origins the peer retired, with how much of each it delivered (see `Causal::retire`).
    pub retired: BTreeMap<crate::id::NodeId, u64>,
    /// The stored messages (inbox entries need their bodies; peers may ask for them).
    pub store: Vec<CausalMsg>,
    /// The replicated application state after exactly `delivered`.
    pub state: ChatState,
}

impl Snapshot {
    /// Bounds a snapshot from the wire must respect: sizes, well-formed messages, every
    /// counter within [`crate::limits::MAX_COUNTER`] (as for a datagram: a cut naming
    /// `u64::MAX` of an origin would overflow the next comparison with a peer's sequence), and
    /// a consistent chat state (see [`ChatState::is_consistent`]).
    pub fn is_well_formed(&self) -> bool {
        use crate::wire::bounds::{counter, Bounded};
        self.delivered.len() <= 4 * MAX_ORIGINS
            && self.delivered.in_bounds()
            && self.retired.len() <= crate::limits::MAX_RETIRED
            && self.retired.iter().all(|(o, v)| o.in_bounds() && counter(*v))
            && self.store.len() <= MAX_STORE
            && self.store.iter().all(|m| m.is_well_formed() && m.in_bounds())
            && self.state.is_consistent()
    }
}

struct Offer {
    nonce: u64,
    bytes: Vec<u8>,
    made: Instant,
    used: Instant,
}

struct Fetch {
    from: SocketAddr,
    nonce: u64,
    total: u32,
    chunks: BTreeMap<u32, Vec<u8>>,
    asked: Instant,
    progress: Instant,
}

/// Both sides of state transfer for one server.
#[derive(Default)]
pub struct Transfer {
    /// Offers by age, the newest last.
    offers: Vec<Offer>,
    fetch: Option<Fetch>,
    made: u64,
    /// Snapshots installed here.
    pub installed: u64,
}

/// What a chunk did.
pub enum Got {
    /// Nothing to do yet (or the chunk was stale).
    Nothing,
    /// Ask the peer for more.
    Ask(SocketAddr, Body),
    /// The snapshot is complete.
    Done(Box<Snapshot>),
}

impl Transfer {
    /// Whether a fetch is under way.
    pub fn fetching(&self) -> bool {
        self.fetch.is_some()
    }

    /// Starts fetching from `from`, unless a fetch is under way; returns the first request.
    pub fn start(&mut self, from: SocketAddr, now: Instant) -> Option<(SocketAddr, Body)> {
        if self.fetch.is_some() {
            return None;
        }
        self.fetch = Some(Fetch { from, nonce: 0, total: 0, chunks: BTreeMap::new(), asked: now, progress: now });
        Some((from, Body::SnapshotGet { nonce: 0, from: 0 }))
    }

    /// A peer's request: the chunks of the wanted offer from `from` on (a fresh offer, made
    /// with `make`, when nonce 0 asks for one or the offer it names is gone).
    pub fn serve(&mut self, me: u64, nonce: u64, from: u32, now: Instant, make: impl FnOnce() -> Option<Vec<u8>>) -> Vec<Body> {
        let named = self.offers.iter().position(|o| o.nonce == nonce && nonce != 0);
        let fresh = || self.offers.len().checked_sub(1).filter(|&i| nonce == 0 && now.since(self.offers[i].made) < OFFER_FRESH_US);
        let at = match named.or_else(fresh) {
            Some(at) => at,
            None => {
                let Some(bytes) = make().filter(|b| b.len().div_ceil(CHUNK) as u64 <= MAX_CHUNKS as u64) else { return Vec::new() };
                self.made += 1;
                if self.offers.len() >= MAX_OFFERS {
                    // The one used longest ago goes.
                    let lru = (0..self.offers.len()).min_by_key(|&i| self.offers[i].used).expect("offers is full"); // invariant
                    self.offers.remove(lru);
                }
                self.offers.push(Offer { nonce: (me << 24) ^ self.made, bytes, made: now, used: now });
                self.offers.len() - 1
            }
        };
        let o = &mut self.offers[at];
        o.used = now;
        let total = o.bytes.len().div_ceil(CHUNK).max(1) as u32;
        let start = if o.nonce == nonce { from.min(total) } else { 0 };
        (start..(start + WINDOW).min(total))
            .map(|index| {
                let lo = index as usize * CHUNK;
                let bytes = o.bytes[lo..(lo + CHUNK).min(o.bytes.len())].to_vec();
                Body::SnapshotChunk { nonce: o.nonce, index, total, bytes }
            })
            .collect()
    }

    /// A chunk from `from`.
    pub fn chunk(&mut self, from: SocketAddr, nonce: u64, index: u32, total: u32, bytes: Vec<u8>, now: Instant) -> Got {
        let Some(f) = self.fetch.as_mut().filter(|f| f.from == from) else { return Got::Nothing };
        if nonce == 0 || total == 0 || total > MAX_CHUNKS || index >= total {
            return Got::Nothing;
        }
        if f.nonce != nonce {
            // A new offer (the old one expired): start over.
            f.nonce = nonce;
            f.total = total;
            f.chunks.clear();
        }
        if total != f.total {
            return Got::Nothing;
        }
        if f.chunks.insert(index, bytes).is_none() {
            f.progress = now;
        }
        if f.chunks.len() as u32 == f.total {
            let bytes: Vec<u8> = std::mem::take(&mut f.chunks).into_values().flatten().collect();
            self.fetch = None;
            return match postcard::from_bytes::<Snapshot>(&bytes) {
                Ok(s) if s.is_well_formed() => Got::Done(Box::new(s)),
                _ => Got::Nothing,
            };
        }
        let window_end = (index + 1) % WINDOW == 0 || index + 1 == total;
        if window_end {
            f.asked = now;
            return Got::Ask(f.from, Body::SnapshotGet { nonce, from: Self::first_missing(f) });
        }
        Got::Nothing
    }

    fn first_missing(f: &Fetch) -> u32 {
        (0..f.total).find(|i| !f.chunks.contains_key(i)).unwrap_or(f.total)
    }

    /// Timed work: repeat an unanswered request, give up a stalled fetch, drop an idle offer.
    pub fn tick(&mut self, now: Instant) -> Option<(SocketAddr, Body)> {
        self.offers.retain(|o| now.since(o.used) < OFFER_IDLE_US);
        let f = self.fetch.as_mut()?;
        if now.since(f.progress) >= GIVE_UP_US {
            self.fetch = None;
            return None;
        }
        if now.since(f.asked) < ASK_AGAIN_US {
            return None;
        }
        f.asked = now;
        Some((f.from, Body::SnapshotGet { nonce: f.nonce, from: Self::first_missing(f) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn snapshot(n: usize) -> Snapshot {
        let mut state = ChatState::default();
        state.names.insert("alice".into(), crate::user::UserKey([7; 32]));
        let delivered = Vc::new();
        // Enough names to need several chunks.
        for i in 0..n {
            state.names.insert(format!("user{i:05}"), crate::user::UserKey([(i % 256) as u8; 32]));
        }
        Snapshot { delivered, retired: BTreeMap::new(), store: Vec::new(), state }
    }

    /// Runs a fetch between a server and a peer over a link that drops chunks for which
    /// `drop(k)` says so (k counts chunks sent).
    fn fetch_over(snap: &Snapshot, drop: impl Fn(usize) -> bool) -> (Snapshot, usize) {
        let bytes = postcard::to_stdvec(snap).unwrap();
        let (mut fetcher, mut peer) = (Transfer::default(), Transfer::default());
        let mut now = Instant(0);
        let mut asks = vec![fetcher.start(addr(2), now).unwrap().1];
        let mut sent = 0;
        for _ in 0..10_000 {
            for ask in std::mem::take(&mut asks) {
                let Body::SnapshotGet { nonce, from } = ask else { panic!("not a request") };
                for c in peer.serve(9, nonce, from, now, || Some(bytes.clone())) {
                    sent += 1;
                    if drop(sent) {
                        continue;
                    }
                    let Body::SnapshotChunk { nonce, index, total, bytes } = c else { panic!("not a chunk") };
                    match fetcher.chunk(addr(2), nonce, index, total, bytes, now) {
                        Got::Done(s) => return (*s, sent),
                        Got::Ask(_, b) => asks.push(b),
                        Got::Nothing => {}
                    }
                }
            }
            now = now.plus_us(100_000);
            asks.extend(fetcher.tick(now).map(|(_, b)| b));
        }
        panic!("the fetch never completed");
    }

    #[test]
    fn a_snapshot_arrives_whole_over_a_clean_link() {
        let snap = snapshot(3_000);
        let (got, sent) = fetch_over(&snap, |_| false);
        assert_eq!(got, snap);
        let chunks = postcard::to_stdvec(&snap).unwrap().len().div_ceil(CHUNK);
        assert!(chunks > WINDOW as usize, "the test needs several windows");
        assert_eq!(sent, chunks, "no chunk was sent twice");
    }

    #[test]
    fn a_snapshot_arrives_whole_when_a_third_of_the_chunks_are_lost() {
        let snap = snapshot(3_000);
        let (got, _) = fetch_over(&snap, |k| k % 3 == 0);
        assert_eq!(got, snap);
    }

    #[test]
    fn two_servers_fetching_from_one_peer_at_once_both_finish() {
        // Each window is answered 1.5 s after the other fetcher's: past the time a new fetch
        // reuses an offer. The peer's state changes between offers.
        let (mut a, mut b, mut peer) = (Transfer::default(), Transfer::default(), Transfer::default());
        let mut now = Instant(0);
        let mut asks = [a.start(addr(2), now).map(|x| x.1), None];
        let mut done = [false, false];
        let mut version = 0u64;
        for round in 0..1_000 {
            if round == 1 {
                asks[1] = b.start(addr(2), now).map(|x| x.1);
            }
            for k in 0..2 {
                let Some(Body::SnapshotGet { nonce, from }) = asks[k].take() else { continue };
                now = now.plus_us(1_500_000);
                version += 1;
                let make = || postcard::to_stdvec(&snapshot(10_000 + version as usize)).ok();
                for c in peer.serve(9, nonce, from, now, make) {
                    let Body::SnapshotChunk { nonce, index, total, bytes } = c else { panic!("not a chunk") };
                    let fetcher = if k == 0 { &mut a } else { &mut b };
                    match fetcher.chunk(addr(2), nonce, index, total, bytes, now) {
                        Got::Done(_) => done[k] = true,
                        Got::Ask(_, body) => asks[k] = Some(body),
                        Got::Nothing => {}
                    }
                }
            }
            if done == [true, true] {
                return;
            }
        }
        panic!("the fetches never completed: {done:?}");
    }

    #[test]
    fn chunks_from_a_stranger_or_out_of_bounds_are_ignored() {
        let mut t = Transfer::default();
        t.start(addr(2), Instant(0));
        assert!(matches!(t.chunk(addr(3), 5, 0, 1, vec![1], Instant(0)), Got::Nothing));
        assert!(matches!(t.chunk(addr(2), 5, 3, 2, vec![1], Instant(0)), Got::Nothing));
        assert!(matches!(t.chunk(addr(2), 5, 0, MAX_CHUNKS + 1, vec![1], Instant(0)), Got::Nothing));
        // Garbage that completes a "snapshot" does not decode: nothing is installed.
        assert!(matches!(t.chunk(addr(2), 5, 0, 1, vec![0xff; 10], Instant(0)), Got::Nothing));
        assert!(!t.fetching());
    }

    #[test]
    fn a_snapshot_naming_a_counter_beyond_the_bound_is_refused() {
        let origin = crate::id::NodeId { id: crate::id::ServerId(3), incarnation: 1 };
        let ok = snapshot(1);
        let mut over = ok.clone();
        over.delivered.insert(origin, u64::MAX);
        let mut retired = ok.clone();
        retired.retired.insert(origin, crate::limits::MAX_COUNTER + 1);
        for (snap, installs) in [(ok, true), (over, false), (retired, false)] {
            let mut t = Transfer::default();
            t.start(addr(2), Instant(0));
            let got = t.chunk(addr(2), 5, 0, 1, postcard::to_stdvec(&snap).unwrap(), Instant(0));
            assert_eq!(matches!(got, Got::Done(_)), installs, "{:?}", snap.delivered);
        }
    }
}
