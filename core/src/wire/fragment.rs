//! Fragments: a protocol message longer than one datagram (a long chat message, its `Send`,
//! its `Show`, a batch or anti-entropy answer that carries it) leaves as numbered pieces of its
//! encoding, each in a datagram of its own kind (see [`crate::wire::encode_datagrams`]), so the
//! seal seals and opens each one as it does any datagram. The receiver puts the pieces back
//! together after opening them and before decoding the whole (see
//! [`crate::wire::decode_reassembled`]).
//!
//! Reassembly is bounded: at most [`MAX_FRAGMENTS`] pieces of at most [`FRAGMENT_BYTES`]
//! bytes per message, at most [`MAX_PARTIALS_PER_SOURCE`] messages in progress per source
//! and [`MAX_PARTIALS`] in all, each for at most [`PARTIAL_TTL_US`]; a message that would
//! pass a bound evicts the oldest in progress (counted, see [`Reassembler::dropped`]).
//!
//! Nothing is retransmitted here: losing one fragment loses the message, which the protocol
//! already repairs for whole messages (a client retries its send, a server re-shows what was
//! not acknowledged and answers anti-entropy requests), each time with a new nonce.

use crate::limits::{FRAGMENT_BYTES, MAX_FRAGMENTS, MAX_PARTIALS, MAX_PARTIALS_PER_SOURCE, PARTIAL_TTL_US};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// One piece of a message's encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// The message, among its sender's (a new one for every send, retries included).
    pub nonce: u64,
    /// Which piece (0, 1, ...).
    pub index: u8,
    /// Pieces of the message (2 to [`MAX_FRAGMENTS`]).
    pub count: u8,
    /// [`FRAGMENT_BYTES`] bytes of the encoding (the last piece: 1 to that many).
    pub bytes: Vec<u8>,
}

impl Fragment {
    /// Bounds a fragment from the wire must respect.
    pub fn is_well_formed(&self) -> bool {
        // `index` may be 255 from the wire: compared without adding to it (an add overflowed).
        let size = if u16::from(self.index) + 1 == u16::from(self.count) {
            (1..=FRAGMENT_BYTES).contains(&self.bytes.len())
        } else {
            self.bytes.len() == FRAGMENT_BYTES
        };
        self.count >= 2 && self.count as usize <= MAX_FRAGMENTS && self.index < self.count && size
    }
}

/// Cuts an encoded message into fragments; `None` if it needs fewer than two or more than
/// [`MAX_FRAGMENTS`].
pub fn split(message: &[u8], nonce: u64) -> Option<Vec<Fragment>> {
    let count = message.len().div_ceil(FRAGMENT_BYTES);
    if !(2..=MAX_FRAGMENTS).contains(&count) {
        return None;
    }
    let count = u8::try_from(count).ok()?;
    Some(message.chunks(FRAGMENT_BYTES).zip(0u8..).map(|(bytes, index)| Fragment { nonce, index, count, bytes: bytes.to_vec() }).collect())
}

/// Why a fragment was refused. Each is counted by the caller; none costs an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentError {
    /// It breaks a fragment's bounds (see [`Fragment::is_well_formed`]).
    Malformed,
    /// It disagrees with the fragments of its message already held (another count, or other
    /// bytes at an index already filled): the whole message is dropped.
    Conflict,
}

impl std::fmt::Display for FragmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FragmentError::Malformed => write!(f, "malformed fragment"),
            FragmentError::Conflict => write!(f, "fragment disagrees with its message's others"),
        }
    }
}

impl std::error::Error for FragmentError {}

#[derive(Clone, Debug)]
struct Partial {
    first: Instant,
    parts: Vec<Option<Vec<u8>>>,
    have: usize,
}

/// Messages being put back together, per source `K` (a peer server life, a client path, or the
/// server a client talks to), within the bounds of the module documentation.
#[derive(Clone, Debug)]
pub struct Reassembler<K> {
    partials: BTreeMap<(K, u64), Partial>,
    /// The messages completed last (a late duplicate of one of their fragments is ignored).
    done: VecDeque<(K, u64)>,
    dropped: u64,
}

impl<K> Default for Reassembler<K> {
    fn default() -> Self {
        Reassembler { partials: BTreeMap::new(), done: VecDeque::new(), dropped: 0 }
    }
}

impl<K: Ord + Clone> Reassembler<K> {
    /// Takes one fragment from `source`: the whole message's bytes once its last piece is in.
    pub fn add(&mut self, now: Instant, source: &K, f: Fragment) -> Result<Option<Vec<u8>>, FragmentError> {
        if !f.is_well_formed() {
            return Err(FragmentError::Malformed);
        }
        let key = (source.clone(), f.nonce);
        if self.done.contains(&key) {
            return Ok(None);
        }
        self.expire(now);
        if !self.partials.contains_key(&key) {
            self.make_room(source);
            let parts = vec![None; f.count as usize];
            self.partials.insert(key.clone(), Partial { first: now, parts, have: 0 });
        }
        let p = self.partials.get_mut(&key).expect("inserted above"); // invariant: just ensured
        let fits = p.parts.len() == f.count as usize;
        match p.parts.get_mut(f.index as usize) {
            Some(Some(held)) if fits && *held == f.bytes => return Ok(None), // a duplicate
            Some(empty @ None) if fits => {
                *empty = Some(f.bytes);
                p.have += 1;
            }
            _ => {
                self.partials.remove(&key);
                self.dropped += 1;
                return Err(FragmentError::Conflict);
            }
        }
        if p.have < p.parts.len() {
            return Ok(None);
        }
        let p = self.partials.remove(&key).expect("present above"); // invariant: just filled
        if self.done.len() >= MAX_PARTIALS {
            self.done.pop_front();
        }
        self.done.push_back(key);
        Ok(Some(p.parts.into_iter().flatten().flatten().collect()))
    }

    /// Messages in progress.
    pub fn len(&self) -> usize {
        self.partials.len()
    }

    /// Whether no message is in progress.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    /// Messages dropped before they were complete: evicted for room, too old, or conflicting.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Drops what is older than [`PARTIAL_TTL_US`].
    pub fn expire(&mut self, now: Instant) {
        let before = self.partials.len();
        self.partials.retain(|_, p| now.since(p.first) <= PARTIAL_TTL_US);
        self.dropped += (before - self.partials.len()) as u64;
    }

    /// Room for one more message from `source`: evicts its oldest if it has its bound in
    /// progress, then the oldest of all if the table is full.
    fn make_room(&mut self, source: &K) {
        let theirs = self.partials.iter().filter(|((s, _), _)| s == source);
        if theirs.clone().count() >= MAX_PARTIALS_PER_SOURCE {
            let oldest = theirs.min_by_key(|(_, p)| p.first).map(|(k, _)| k.clone());
            self.evict(oldest);
        }
        if self.partials.len() >= MAX_PARTIALS {
            let oldest = self.partials.iter().min_by_key(|(_, p)| p.first).map(|(k, _)| k.clone());
            self.evict(oldest);
        }
    }

    fn evict(&mut self, key: Option<(K, u64)>) {
        if let Some(k) = key {
            self.partials.remove(&k);
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    const T0: Instant = Instant(1_000);

    #[test]
    fn a_fragment_numbered_255_is_refused_not_a_panic() {
        // Found by the `decode` fuzz target (overflow checks on); the input is in its corpus.
        for count in [2, 8, 255] {
            let f = Fragment { nonce: 1, index: 255, count, bytes: vec![0; FRAGMENT_BYTES] };
            assert!(!f.is_well_formed());
        }
    }

    #[test]
    fn a_message_comes_back_whole_in_any_order_and_once() {
        let m = message(4_500, 1);
        let mut parts = split(&m, 7).expect("fits");
        assert_eq!(parts.len(), 5);
        assert!(parts.iter().all(Fragment::is_well_formed));
        parts.reverse();
        parts.swap(1, 3);
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        for f in parts.iter().cloned() {
            // Every fragment twice: a duplicate is ignored, before and after completion.
            for _ in 0..2 {
                if let Some(whole) = r.add(T0, &1u8, f.clone()).expect("accepted") {
                    got.push(whole);
                }
            }
        }
        assert_eq!(got, vec![m]);
        assert!(r.is_empty());
        assert_eq!(r.add(T0, &1u8, parts[0].clone()), Ok(None), "a late duplicate starts nothing");
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn a_lost_fragment_loses_the_message_and_it_expires() {
        let m = message(3_000, 2);
        let parts = split(&m, 1).expect("fits");
        let mut r = Reassembler::default();
        for f in parts.iter().skip(1).cloned() {
            assert_eq!(r.add(T0, &1u8, f), Ok(None));
        }
        assert_eq!(r.len(), 1);
        r.expire(T0.plus_us(PARTIAL_TTL_US));
        assert_eq!(r.len(), 1, "not yet too old");
        r.expire(T0.plus_us(PARTIAL_TTL_US + 1));
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 1);
        // The missing piece alone, late, completes nothing; the resend (a new nonce) does.
        assert_eq!(r.add(T0.plus_us(PARTIAL_TTL_US + 1), &1u8, parts[0].clone()), Ok(None));
        let again = split(&m, 2).expect("fits");
        let done: Vec<_> = again.into_iter().filter_map(|f| r.add(T0.plus_us(PARTIAL_TTL_US + 2), &1u8, f).expect("ok")).collect();
        assert_eq!(done, vec![m]);
    }

    #[test]
    fn two_messages_interleaved_from_one_source_and_from_two_sources_stay_apart() {
        let (a, b) = (message(2_100, 3), message(3_900, 4));
        let (fa, fb) = (split(&a, 10).expect("fits"), split(&b, 11).expect("fits"));
        let same_nonce = split(&b, 10).expect("fits"); // another source may use the same nonce
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        for i in 0..fb.len() {
            for (src, parts) in [(1u8, &fa), (1u8, &fb), (2u8, &same_nonce)] {
                if let Some(f) = parts.get(i) {
                    if let Some(whole) = r.add(T0, &src, f.clone()).expect("accepted") {
                        got.push((src, whole));
                    }
                }
            }
        }
        assert_eq!(got, vec![(1, a), (1, b.clone()), (2, b)]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_source_holds_at_most_its_bound_and_all_sources_at_most_theirs() {
        let m = message(2_000, 5);
        let mut r = Reassembler::default();
        // One source starts more messages than its bound: its oldest go.
        for nonce in 0..(MAX_PARTIALS_PER_SOURCE as u64 + 3) {
            let first = split(&m, nonce).expect("fits").remove(0);
            assert_eq!(r.add(T0.plus_us(nonce), &0u32, first), Ok(None));
        }
        assert_eq!(r.len(), MAX_PARTIALS_PER_SOURCE);
        assert_eq!(r.dropped(), 3);
        // The newest of them still completes; the evicted oldest does not.
        let last = split(&m, MAX_PARTIALS_PER_SOURCE as u64 + 2).expect("fits").remove(1);
        assert_eq!(r.add(T0, &0u32, last), Ok(Some(m.clone())));
        let evicted = split(&m, 0).expect("fits").remove(1);
        assert_eq!(r.add(T0, &0u32, evicted), Ok(None), "started anew");
        // Many sources: never more than the table's bound.
        for src in 1..(2 * MAX_PARTIALS as u32) {
            let first = split(&m, 1).expect("fits").remove(0);
            assert_eq!(r.add(T0.plus_us(u64::from(src)), &src, first), Ok(None));
            assert!(r.len() <= MAX_PARTIALS);
        }
        assert_eq!(r.len(), MAX_PARTIALS);
    }

    #[test]
    fn malformed_or_conflicting_fragments_are_typed_errors() {
        let m = message(2_500, 6);
        let parts = split(&m, 3).expect("fits");
        let mut r = Reassembler::default();
        let bad = [
            Fragment { count: 1, index: 0, ..parts[2].clone() },
            Fragment { count: MAX_FRAGMENTS as u8 + 1, ..parts[2].clone() },
            Fragment { index: 3, ..parts[2].clone() },
            Fragment { bytes: Vec::new(), ..parts[2].clone() },
            Fragment { bytes: vec![0; FRAGMENT_BYTES + 1], ..parts[2].clone() },
            Fragment { bytes: vec![0; FRAGMENT_BYTES - 1], ..parts[0].clone() }, // short, not last
        ];
        for f in bad {
            assert_eq!(r.add(T0, &1u8, f), Err(FragmentError::Malformed));
        }
        assert!(r.is_empty());
        // Another count, or other bytes at a filled index: the message is dropped.
        assert_eq!(r.add(T0, &1u8, parts[0].clone()), Ok(None));
        let other_count = Fragment { count: 4, index: 1, ..parts[1].clone() };
        assert_eq!(r.add(T0, &1u8, other_count), Err(FragmentError::Conflict));
        assert!(r.is_empty());
        assert_eq!(r.add(T0, &1u8, parts[0].clone()), Ok(None));
        let mut flipped = parts[0].clone();
        flipped.bytes[9] ^= 1;
        assert_eq!(r.add(T0, &1u8, flipped), Err(FragmentError::Conflict));
        assert_eq!(r.dropped(), 2);
        // Too short or too long to need fragments at all.
        assert_eq!(split(&message(FRAGMENT_BYTES, 0), 1), None);
        assert_eq!(split(&message(crate::limits::MAX_MESSAGE + 1, 0), 1), None);
        assert_eq!(split(&message(crate::limits::MAX_MESSAGE, 0), 1).map(|p| p.len()), Some(MAX_FRAGMENTS));
    }

    /// Through the wire: the longest honest message of each kind, cut into datagrams and put
    /// back together.
    mod wire {
        use super::*;
        use crate::id::{ClusterId, NodeId, ServerId};
        use crate::limits::{MAX_DATAGRAM, MAX_FRAGMENTS, MAX_MESSAGE, MAX_NAME, MAX_ORIGINS, MAX_RECIPIENTS, MAX_TEXT};
        use crate::time::Vc;
        use crate::wire::{
            decode, decode_reassembled, encode_datagrams, is_peer, peer_sender, Body, CausalMsg, ClientMsg, DecodeError, Envelope, Item,
            MsgId, Op, Packet, ServerMsg, Target,
        };
        use std::sync::Arc;

        const BIG: u64 = crate::limits::MAX_COUNTER;

        fn node(i: u128) -> NodeId {
            NodeId { id: ServerId(u128::MAX - i), incarnation: BIG }
        }

        fn full_vc() -> Vc {
            (0..MAX_ORIGINS as u128).map(|i| (node(i), BIG)).collect()
        }

        fn name(i: usize) -> String {
            format!("{i:0>width$}", width = MAX_NAME)
        }

        fn longest() -> [Packet; 3] {
            let id = MsgId { client: u64::MAX, seq: BIG };
            let text = "\u{10FFFF}".repeat(MAX_TEXT / 4);
            assert_eq!(text.len(), MAX_TEXT);
            let item = Item::Chat {
                id,
                from: name(0),
                room: Some(name(1)),
                to: (0..MAX_RECIPIENTS).map(name).collect(),
                cut: full_vc(),
                text: text.clone(),
            };
            let msg = CausalMsg { origin: node(99), seq: BIG, deps: full_vc(), item: Arc::new(item) };
            let env = Envelope { cluster: ClusterId(u128::MAX), from: node(99), epoch: BIG, body: Body::Chat { msg } };
            let show = ServerMsg::Show {
                id,
                from: name(0),
                room: Some(name(1)),
                text: text.clone(),
                stamp: full_vc(),
                attempt: u64::MAX,
                no: u64::MAX,
                client: u64::MAX,
            };
            let send =
                ClientMsg::Send { id, op: Op::Chat { to: Target::Room(name(1)), text }, ctx: full_vc(), retry: true, left_ms: u32::MAX };
            [Packet::Peer(env), Packet::ToClient(show), Packet::FromClient(send)]
        }

        fn reassemble(datagrams: &[Vec<u8>]) -> Result<Packet, DecodeError> {
            let mut r = Reassembler::default();
            let mut whole = None;
            for d in datagrams {
                assert!(d.len() <= MAX_DATAGRAM, "a fragment of {} bytes", d.len());
                let carrier = decode(d).expect("a fragment decodes");
                let f = carrier.fragment().expect("a fragment").clone();
                if let Some(bytes) = r.add(T0, &0u8, f).expect("accepted") {
                    whole = Some(decode_reassembled(&bytes, &carrier));
                }
            }
            whole.expect("complete")
        }

        #[test]
        fn the_longest_message_of_each_kind_travels_in_fragments_and_comes_back_whole() {
            for p in longest() {
                let datagrams = encode_datagrams(&p, 42).expect("within MAX_MESSAGE");
                assert!((2..MAX_FRAGMENTS).contains(&datagrams.len()), "{} fragments: no room left", datagrams.len());
                if let Packet::Peer(env) = &p {
                    // The seal takes each for a server datagram in the sender's name.
                    assert!(datagrams.iter().all(|d| is_peer(d) && peer_sender(d) == Some(env.from)));
                } else {
                    assert!(datagrams.iter().all(|d| !is_peer(d)));
                }
                assert_eq!(reassemble(&datagrams), Ok(p));
            }
            // A short message is one plain datagram, as before.
            let short = Packet::FromClient(ClientMsg::Ping { client: 1, attempt: 1, next: 1 });
            assert_eq!(encode_datagrams(&short, 1).map(|d| d.len()), Some(1));
        }

        #[test]
        fn a_message_over_the_bound_is_not_sent_and_text_over_max_text_is_invalid() {
            let [Packet::Peer(mut env), _, _] = longest() else { unreachable!() };
            let Body::Chat { msg } = &mut env.body else { unreachable!() };
            let Item::Chat { text, .. } = Arc::make_mut(&mut msg.item) else { unreachable!() };
            text.push('x');
            let over = Packet::Peer(env.clone());
            assert_eq!(reassemble(&encode_datagrams(&over, 1).expect("fits MAX_MESSAGE still")), Err(DecodeError::Invalid));
            let Packet::Peer(mut env) = over else { unreachable!() };
            let Body::Chat { msg } = &mut env.body else { unreachable!() };
            let Item::Chat { text, .. } = Arc::make_mut(&mut msg.item) else { unreachable!() };
            text.push_str(&"x".repeat(MAX_MESSAGE));
            assert_eq!(encode_datagrams(&Packet::Peer(env), 1), None);
        }

        #[test]
        fn a_reassembled_message_must_need_fragments_and_match_its_carrier() {
            let [peer, show, send] = longest();
            let whole = |p: &Packet| {
                let mut b = vec![crate::wire::VERSION];
                b.extend(postcard::to_allocvec(p).expect("encodes"));
                b
            };
            // Carried by a datagram of another kind, or a server message in another's name.
            assert_eq!(decode_reassembled(&whole(&show), &send), Err(DecodeError::Invalid));
            assert_eq!(decode_reassembled(&whole(&send), &peer), Err(DecodeError::Invalid));
            let Packet::Peer(env) = &peer else { unreachable!() };
            let other = Packet::Peer(Envelope { from: node(7), ..env.clone() });
            assert_eq!(decode_reassembled(&whole(&peer), &other), Err(DecodeError::Invalid));
            // Short enough for one datagram: never sent in fragments.
            let ping = Packet::FromClient(ClientMsg::Ping { client: 1, attempt: 1, next: 1 });
            assert_eq!(decode_reassembled(&whole(&ping), &send), Err(DecodeError::Malformed));
            // Every truncation is a typed error, never a panic.
            let bytes = whole(&show);
            for n in 0..bytes.len() {
                assert!(decode_reassembled(&bytes[..n], &show).is_err());
            }
            assert_eq!(decode_reassembled(&vec![0; MAX_MESSAGE + 1], &show), Err(DecodeError::Oversize));
        }
    }
}
