//! The seal over a sequence of datagrams, with the real cipher: senders of several lives seal
//! with any counter for any receiver under either of two keys; recorded datagrams are replayed
//! and tampered with; the receiver restarts (keeping its replay memory through its file
//! encoding) and rotates its key ring. Checked against a model, after every step:
//! - nothing is accepted twice, across restarts too, and no earlier life after a later one;
//! - a tampered datagram never opens;
//! - a fresh datagram (a new counter of the latest life, under a key the receiver holds, for
//!   it or any receiver) does open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::seal::frame::{Header, HEADER};
use ringchat_core::seal::{ChaChaPoly, Cipher, ClusterKey, Inbound, KeyRing, Seal, SealError, SealMemory};
use ringchat_core::wire::{self, Body, Envelope, Packet};
use ringchat_core::{ClusterId, NodeId, ServerId};
use ringchat_fuzz::{addr, Cursor};
use std::collections::{BTreeMap, BTreeSet};

fn key(which: u8) -> ClusterKey {
    ClusterKey::new([0x5a + which % 2; 32])
}

/// A datagram `sender` sealed under `k` with `counter` for `receiver`.
fn sealed(k: &ClusterKey, sender: NodeId, counter: u64, receiver: Option<NodeId>) -> Vec<u8> {
    let plain = wire::encode(&Packet::Peer(Envelope { cluster: ClusterId(1), from: sender, epoch: 1, body: Body::Leave })).expect("fits");
    let header = Header { key: k.id(), sender, counter, receiver };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&plain);
    let (aad, body) = out.split_at_mut(HEADER);
    let tag = ChaChaPoly::seal(&ChaChaPoly::derive(k, sender), counter, aad, body);
    out.extend_from_slice(&tag);
    out
}

struct Model {
    /// Every (sender life, counter) the receiver accepted into its replay state.
    accepted: BTreeSet<(NodeId, u64)>,
    /// Latest life accepted per sender id.
    latest: BTreeMap<ServerId, u64>,
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let mut me = NodeId { id: ServerId(100), incarnation: 1 };
    let mut ring = KeyRing::new(key(0));
    let mut seal = Seal::<ChaChaPoly>::new(me, ring.clone(), None);
    let mut model = Model { accepted: BTreeSet::new(), latest: BTreeMap::new() };
    let mut history: Vec<(Vec<u8>, NodeId, u64, u8)> = Vec::new();
    for _ in 0..256 {
        if c.is_empty() {
            break;
        }
        match c.u8() % 6 {
            0 | 1 => {
                let sender = NodeId { id: ServerId(c.u8() as u128 % 8 + 1), incarnation: c.u8() as u64 % 4 + 1 };
                let counter = match c.u8() {
                    m if m < 128 => c.u8() as u64,
                    m if m < 192 => c.u64(),
                    _ => u64::MAX - c.u8() as u64,
                };
                let receiver = match c.u8() % 3 {
                    0 => None,
                    1 => Some(me),
                    _ => Some(NodeId { incarnation: me.incarnation + 1, ..me }),
                };
                let k = c.u8() % 2;
                let bytes = sealed(&key(k), sender, counter, receiver);
                let fresh = ring.get(key(k).id()).is_some()
                    && receiver.is_none_or(|r| r == me)
                    && model.latest.get(&sender.id).is_none_or(|l| sender.incarnation > *l)
                    && ringchat_core::limits::MAX_COUNTER >= sender.incarnation;
                let result = seal.open(addr(1), &bytes);
                if fresh {
                    assert!(matches!(result, Ok(Inbound::Opened(..))), "a fresh datagram was refused: {result:?}");
                }
                check(&mut model, sender, counter, &result);
                if history.len() < 64 {
                    history.push((bytes, sender, counter, k));
                }
            }
            2 if !history.is_empty() => {
                let (bytes, sender, counter, _) = history[c.u8() as usize % history.len()].clone();
                let result = seal.open(addr(1), &bytes);
                check(&mut model, sender, counter, &result);
            }
            3 => {
                // Restart: the replay memory goes through its file encoding; a new life.
                let memory = postcard::to_stdvec(&seal.memory()).expect("encodes");
                let memory: SealMemory = postcard::from_bytes(&memory).expect("decodes");
                me.incarnation += 1;
                seal = Seal::new(me, ring.clone(), Some(&memory));
            }
            4 => {
                let _ = match c.u8() % 3 {
                    0 => ring.install(key(1)),
                    1 => ring.use_key(key(c.u8()).id()),
                    _ => ring.remove(key(c.u8()).id()),
                };
                seal.set_ring(ring.clone());
            }
            5 if !history.is_empty() => {
                let (mut bytes, ..) = history[c.u8() as usize % history.len()].clone();
                let at = c.u8() as usize % bytes.len();
                bytes[at] ^= c.u8() | 1;
                let result = seal.open(addr(1), &bytes);
                assert!(!matches!(result, Ok(Inbound::Opened(..)) | Err(SealError::WrongReceiver)), "a tampered datagram opened");
            }
            _ => {}
        }
    }
});

/// Checks an open's outcome against the model, and records what the receiver accepted.
fn check(model: &mut Model, sender: NodeId, counter: u64, result: &Result<Inbound<'_>, SealError>) {
    // A refusal for the wrong receiver comes after the replay state took the datagram in.
    if matches!(result, Ok(Inbound::Opened(..)) | Err(SealError::WrongReceiver)) {
        assert!(model.accepted.insert((sender, counter)), "accepted twice: {sender} counter {counter}");
        let latest = model.latest.entry(sender.id).or_insert(sender.incarnation);
        assert!(sender.incarnation >= *latest, "an earlier life of {sender} after a later one");
        *latest = sender.incarnation;
    }
}
