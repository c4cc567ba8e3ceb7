//! The seal's behaviour: what opens, what is refused and why.

use super::*;
use crate::id::{ClusterId, NodeId, ServerId};
use crate::path::ClientPath;
use crate::wire::{self, Body, ClientMsg, Envelope, Packet, ServerMsg};
use channel::ClientChannel;
use proptest::prelude::*;
use std::net::SocketAddr;

fn life(id: u128, incarnation: u64) -> NodeId {
    NodeId { id: ServerId(id), incarnation }
}

fn key(b: u8) -> ClusterKey {
    ClusterKey::new([b; 32])
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7000))
}

/// A server datagram from `from`.
fn datagram(from: NodeId, n: u64) -> Vec<u8> {
    let env = Envelope { cluster: ClusterId(5), from, epoch: n, body: Body::Leave };
    wire::encode(&Packet::Peer(env)).expect("fits")
}

fn pair<C: Cipher>(ring: KeyRing) -> (Seal<C>, Seal<C>) {
    (Seal::new(life(1, 1), ring.clone(), None), Seal::new(life(2, 1), ring, None))
}

/// Whether the opener let a server datagram through (a refused or plain datagram is not one:
/// plain bytes go to the server's decoder, which refuses whatever is not client traffic).
fn lets_in(r: &Result<Inbound<'_>, SealError>) -> bool {
    matches!(r, Ok(Inbound::Opened(..)))
}

fn opened(r: Result<Inbound<'_>, SealError>) -> Result<Vec<u8>, SealError> {
    match r? {
        Inbound::Opened(p, _) => Ok(p),
        Inbound::Plain(p) => Ok(p.to_vec()),
        Inbound::Client(p, _, _) => Ok(p),
    }
}

#[test]
fn a_sealed_datagram_opens_once_with_its_plain_bytes() {
    fn check<C: Cipher>() {
        let (mut a, mut b) = pair::<C>(KeyRing::new(key(1)));
        let plain = datagram(life(1, 1), 1);
        let sealed = a.seal(plain.clone(), Some(life(2, 1)));
        assert_ne!(&sealed[HEADER_LEN..HEADER_LEN + 8], &plain[..8], "the wire does not show the plain bytes");
        assert_eq!(opened(b.open(addr(1), &sealed)), Ok(plain));
        assert_eq!(opened(b.open(addr(1), &sealed)), Err(SealError::Replay));
    }
    check::<ChaChaPoly>();
    check::<StandIn>();
}

const HEADER_LEN: usize = frame::HEADER;

#[test]
fn a_plain_server_datagram_with_an_overlong_kind_byte_cannot_slip_past_the_seal() {
    // Found by the `decode` fuzz target: `80 00` (an overlong 0) in place of the kind byte made
    // a plain server datagram look like client traffic to the seal, and decode as a server one.
    let mut b = Seal::<ChaChaPoly>::new(life(2, 1), KeyRing::new(key(1)), None);
    let mut bytes = datagram(life(1, 1), 1);
    bytes.splice(1..2, [0x80, 0x00]);
    match b.open(addr(1), &bytes) {
        Err(SealError::Unsealed) => {} // plain client traffic is refused too, now
        Ok(Inbound::Plain(p)) => assert!(!matches!(wire::decode(p), Ok(Packet::Peer(_))), "a server datagram got past the seal"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_wrong_key_is_refused_before_the_tag_is_tried() {
    fn check<C: Cipher>() {
        let mut a = Seal::<C>::new(life(1, 1), KeyRing::new(key(1)), None);
        let mut b = Seal::<C>::new(life(2, 1), KeyRing::new(key(2)), None);
        let sealed = a.seal(datagram(life(1, 1), 1), None);
        assert_eq!(opened(b.open(addr(1), &sealed)), Err(SealError::WrongKey));
    }
    check::<ChaChaPoly>();
    check::<StandIn>();
}

#[test]
fn a_key_with_a_forged_id_fails_its_tag() {
    fn check<C: Cipher>() {
        // Same key id in the header, other secret bytes: as a forger without the key would do.
        let mut forger = Seal::<C>::new(life(1, 1), KeyRing::new(key(9)), None);
        let mut b = Seal::<C>::new(life(2, 1), KeyRing::new(key(2)), None);
        let mut sealed = forger.seal(datagram(life(1, 1), 1), None);
        sealed[1..5].copy_from_slice(&key(2).id().0.to_be_bytes());
        assert_eq!(opened(b.open(addr(1), &sealed)), Err(SealError::BadTag));
    }
    check::<ChaChaPoly>();
    check::<StandIn>();
}

#[test]
fn every_tampered_byte_is_refused() {
    fn check<C: Cipher>() {
        let (mut a, mut b) = pair::<C>(KeyRing::new(key(1)));
        let sealed = a.seal(datagram(life(1, 1), 1), Some(life(2, 1)));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(!lets_in(&b.open(addr(1), &bad)), "byte {i} flipped opened");
        }
        assert!(b.open(addr(1), &sealed).is_ok(), "the untouched datagram still opens: nothing was marked");
    }
    check::<ChaChaPoly>();
    check::<StandIn>();
}

#[test]
fn every_truncation_is_refused() {
    let (mut a, mut b) = pair::<ChaChaPoly>(KeyRing::new(key(1)));
    let sealed = a.seal(datagram(life(1, 1), 1), None);
    for len in 0..sealed.len() {
        let r = b.open(addr(1), &sealed[..len]);
        assert!(!lets_in(&r), "prefix of {len}: {r:?}");
        if len > 0 {
            assert!(matches!(r, Err(SealError::Malformed | SealError::BadTag)), "prefix of {len}: {r:?}");
        }
    }
}

#[test]
fn an_earlier_life_of_a_sender_is_refused_once_a_later_one_is_heard() {
    let ring = KeyRing::new(key(1));
    let mut old = Seal::<ChaChaPoly>::new(life(1, 1), ring.clone(), None);
    let mut new = Seal::<ChaChaPoly>::new(life(1, 2), ring.clone(), None);
    let mut b = Seal::<ChaChaPoly>::new(life(2, 1), ring, None);
    let recorded = old.seal(datagram(life(1, 1), 1), None);
    let later = old.seal(datagram(life(1, 1), 2), None);
    assert!(b.open(addr(1), &recorded).is_ok());
    assert!(b.open(addr(1), &new.seal(datagram(life(1, 2), 1), None)).is_ok());
    assert!(b.take_new_lives(), "a new sender life asks the driver to save");
    assert_eq!(opened(b.open(addr(1), &later)), Err(SealError::StaleIncarnation));
}

#[test]
fn a_datagram_for_an_earlier_life_of_the_receiver_is_refused() {
    let ring = KeyRing::new(key(1));
    let mut a = Seal::<ChaChaPoly>::new(life(1, 1), ring.clone(), None);
    let mut b2 = Seal::<ChaChaPoly>::new(life(2, 2), ring, None);
    let for_b1 = a.seal(datagram(life(1, 1), 1), Some(life(2, 1)));
    assert_eq!(opened(b2.open(addr(1), &for_b1)), Err(SealError::WrongReceiver));
    assert_eq!(b2.receiver_at(addr(1)), Some(life(1, 1)), "it still taught the receiver who sends from there");
    let mut forged = a.seal(datagram(life(1, 1), 2), Some(life(2, 1)));
    forged[52] ^= 1;
    assert_eq!(opened(b2.open(addr(1), &forged)), Err(SealError::BadTag), "a rewritten receiver fails the tag");
}

#[test]
fn a_replayed_datagram_is_refused_after_the_receiver_restarts() {
    let ring = KeyRing::new(key(1));
    let mut a = Seal::<ChaChaPoly>::new(life(1, 1), ring.clone(), None);
    let mut b = Seal::<ChaChaPoly>::new(life(2, 1), ring.clone(), None);
    let any = a.seal(datagram(life(1, 1), 1), None);
    assert!(b.open(addr(1), &any).is_ok());
    let saved = b.memory();
    let mut b_next = Seal::<ChaChaPoly>::new(life(2, 2), ring, Some(&saved));
    assert_eq!(opened(b_next.open(addr(1), &any)), Err(SealError::Replay));
    assert!(b_next.open(addr(1), &a.seal(datagram(life(1, 1), 2), None)).is_ok(), "the sender's next datagram opens");
}

#[test]
fn rotation_from_a_to_b_opens_both_while_both_are_installed() {
    let mut ring = KeyRing::new(key(1));
    let (mut a, mut b) = pair::<ChaChaPoly>(ring.clone());
    ring.install(key(2)).expect("installs");
    b.set_ring(ring.clone());
    assert!(b.open(addr(1), &a.seal(datagram(life(1, 1), 1), None)).is_ok(), "old primary still opens");
    ring.use_key(key(2).id()).expect("uses");
    a.set_ring(ring.clone());
    let by_b = a.seal(datagram(life(1, 1), 2), None);
    assert_eq!(&by_b[1..5], &key(2).id().0.to_be_bytes(), "the new primary seals");
    assert!(b.open(addr(1), &by_b).is_ok(), "new primary opens");
    ring.remove(key(1).id()).expect("removes");
    b.set_ring(ring);
    let mut stale_a = Seal::<ChaChaPoly>::new(life(3, 1), KeyRing::new(key(1)), None);
    assert_eq!(opened(b.open(addr(3), &stale_a.seal(datagram(life(3, 1), 1), None))), Err(SealError::WrongKey));
}

#[test]
fn plain_datagrams_are_refused_but_the_identity_request() {
    let (_, mut b) = pair::<ChaChaPoly>(KeyRing::new(key(1)));
    assert_eq!(opened(b.open(addr(1), &datagram(life(1, 1), 1))), Err(SealError::Unsealed));
    let status = wire::encode(&Packet::FromClient(ClientMsg::Status)).expect("fits");
    assert_eq!(opened(b.open(addr(1), &status)), Err(SealError::Unsealed), "plain client traffic is refused");
    let ask = wire::encode(&Packet::FromClient(ClientMsg::Identity)).expect("fits");
    assert_eq!(b.open(addr(1), &ask), Ok(Inbound::Plain(&ask[..])));
    // Nothing but the identity's answer leaves plain to a client.
    let answer = wire::encode(&Packet::ToClient(ServerMsg::Identity { public: b.identity().expect("sealed") })).expect("fits");
    assert_eq!(b.seal_client(answer.clone(), None), Some(answer));
    let pong = wire::encode(&Packet::ToClient(ServerMsg::Pong { client: 1 })).expect("fits");
    assert_eq!(b.seal_client(pong, None), None);
    let mut insecure = Seal::<ChaChaPoly>::insecure(life(2, 1));
    let plain = datagram(life(1, 1), 1);
    assert_eq!(insecure.seal(plain.clone(), None), plain);
    assert_eq!(insecure.open(addr(1), &status), Ok(Inbound::Plain(&status[..])));
}

fn client_msg(m: ClientMsg) -> Vec<u8> {
    wire::encode(&Packet::FromClient(m)).expect("fits")
}

#[test]
fn a_client_channel_opens_at_every_server_of_its_identity_and_answers_open_only_on_it() {
    fn check<C: Cipher>() {
        let ring = KeyRing::new(key(1));
        let (mut a, mut b) = pair::<C>(ring.clone());
        let mut alice = ClientChannel::<C>::new(ring.identity_public(), [3; 32], None);
        let mut eve = ClientChannel::<C>::new(ring.identity_public(), [4; 32], None);
        let ping = client_msg(ClientMsg::Ping { client: 9, attempt: 1, next: 1 });
        let sealed = alice.seal(&ping);
        assert!(!sealed.windows(ping.len()).any(|w| w == ping), "the wire does not show the plain bytes");
        for server in [&mut a, &mut b] {
            match server.open(addr(9), &sealed) {
                Ok(Inbound::Client(p, path, false)) => {
                    assert_eq!(p, ping);
                    assert_eq!(path, ClientPath { addr: addr(9), channel: Some(alice.id()) });
                }
                other => panic!("a channel datagram must open at every server: {other:?}"),
            }
        }
        assert_eq!(opened(a.open(addr(9), &sealed)), Err(SealError::Replay), "a replay on the channel is refused");
        let pong = wire::encode(&Packet::ToClient(ServerMsg::Pong { client: 9 })).expect("fits");
        let answer = a.seal_client(pong.clone(), Some(alice.id())).expect("sealed for the channel");
        assert_eq!(eve.open(&answer), Err(SealError::BadTag), "another channel cannot read it");
        assert_eq!(alice.open(&answer), Ok(pong.clone()));
        assert_eq!(alice.open(&answer), Err(SealError::Replay), "a replayed answer is refused");
        let mut flipped = a.seal_client(pong.clone(), Some(alice.id())).expect("sealed");
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(alice.open(&flipped), Err(SealError::BadTag));
        // A cluster with another identity neither opens the channel nor speaks on it.
        let other = KeyRing::new(key(2));
        let mut stranger = Seal::<C>::new(life(3, 1), other, None);
        assert_eq!(opened(stranger.open(addr(9), &alice.seal(&ping))), Err(SealError::WrongKey));
        let forged = stranger.seal_client(pong, Some(alice.id())).expect("sealed");
        assert_eq!(alice.open(&forged), Err(SealError::BadTag), "answers only from holders of the identity");
    }
    check::<ChaChaPoly>();
    check::<StandIn>();
}

#[test]
fn an_operator_channel_needs_a_key_of_the_ring() {
    let ring = KeyRing::new(key(1));
    let (mut a, _) = pair::<ChaChaPoly>(ring.clone());
    let status = client_msg(ClientMsg::Status);
    let mut operator = ClientChannel::<ChaChaPoly>::new(ring.identity_public(), [5; 32], Some(&key(1)));
    assert!(matches!(a.open(addr(9), &operator.seal(&status)), Ok(Inbound::Client(_, _, true))));
    let mut guess = ClientChannel::<ChaChaPoly>::new(ring.identity_public(), [6; 32], Some(&key(2)));
    assert_eq!(opened(a.open(addr(9), &guess.seal(&status))), Err(SealError::WrongKey), "a key not in the ring");
    let mut user = ClientChannel::<ChaChaPoly>::new(ring.identity_public(), [7; 32], None);
    assert!(matches!(a.open(addr(9), &user.seal(&status)), Ok(Inbound::Client(_, _, false))));
    // A server datagram inside a client channel is refused.
    assert_eq!(opened(a.open(addr(9), &user.seal(&datagram(life(2, 1), 1)))), Err(SealError::Mismatch));
}

#[test]
fn a_key_holder_cannot_speak_in_another_servers_name() {
    let (mut a, mut b) = pair::<ChaChaPoly>(KeyRing::new(key(1)));
    let sealed = a.seal(datagram(life(7, 1), 1), None);
    assert_eq!(opened(b.open(addr(1), &sealed)), Err(SealError::Mismatch));
}

#[test]
fn refusals_are_counted_by_cause() {
    let mut c = crate::wire::Counters::default();
    for e in [SealError::WrongKey, SealError::BadTag, SealError::Replay, SealError::Malformed, SealError::Unsealed] {
        e.count(&mut c);
    }
    SealError::StaleIncarnation.count(&mut c);
    assert_eq!((c.rejected(), c.ignored()), (5, 1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_opener(bytes in proptest::collection::vec(any::<u8>(), 0..1400), sealed_first in any::<bool>()) {
        let mut b = Seal::<ChaChaPoly>::new(life(2, 1), KeyRing::new(key(1)), None);
        let mut bytes = bytes;
        if sealed_first && !bytes.is_empty() {
            bytes[0] = SEAL_VERSION;
        }
        let _ = b.open(addr(1), &bytes);
    }

    /// Plain bytes the seal lets through go to the server's decoder: none may decode as a
    /// server datagram, however the kind byte is written (the `decode` fuzz target found the
    /// overlong `80 00`) and whatever follows it.
    #[test]
    fn what_the_seal_lets_through_plain_never_decodes_as_a_server_datagram(
        continuation in proptest::collection::vec(prop_oneof![Just(0x80u8), 0x80u8..=0xff], 0..3),
        kind in prop_oneof![Just(0u8), any::<u8>()],
        mutate in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..2),
    ) {
        let mut b = Seal::<ChaChaPoly>::new(life(2, 1), KeyRing::new(key(1)), None);
        let mut bytes = datagram(life(1, 1), 3);
        let mut head = continuation;
        head.push(kind);
        bytes.splice(1..2, head);
        for (at, x) in mutate {
            let i = 2 + at % (bytes.len() - 2);
            bytes[i] = x;
        }
        if let Ok(Inbound::Plain(p)) = b.open(addr(1), &bytes) {
            prop_assert!(!matches!(wire::decode(p), Ok(Packet::Peer(_))), "{:02x?}", &p[..4]);
        }
    }

    #[test]
    fn mutated_datagrams_never_panic_nor_open(flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6), cut in any::<usize>()) {
        let (mut a, mut b) = pair::<ChaChaPoly>(KeyRing::new(key(1)));
        let original = a.seal(datagram(life(1, 1), 3), Some(life(2, 1)));
        let mut bytes = original.clone();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        prop_assume!(bytes != original);
        prop_assert!(!lets_in(&b.open(addr(1), &bytes)));
    }
}

#[test]
fn a_server_that_rejoins_as_a_new_life_seals_under_that_life() {
    let (mut a, mut b) = pair::<ChaChaPoly>(KeyRing::new(key(1)));
    assert!(b.open(addr(1), &a.seal(datagram(life(1, 1), 1), None)).is_ok());
    a.set_life(life(1, 2));
    let next = a.seal(datagram(life(1, 2), 2), None);
    assert!(b.open(addr(1), &next).is_ok(), "the new life opens, its counter starting afresh");
    assert!(b.open(addr(1), &a.seal(datagram(life(1, 1), 3), None)).is_ok(), "what it queued in its earlier life still opens");
    assert_eq!(opened(b.open(addr(1), &a.seal(datagram(life(1, 3), 4), None))), Err(SealError::Mismatch), "a later life it is not");
}
