//! The simulator's stand-in cipher: keyed and deterministic, a few nanoseconds per datagram.
//!
//! Not cryptography: its tag is a keyed 128-bit hash (two splitmix64 lanes) and its
//! "encryption" a keyed XOR stream. It keeps every property the protocol relies on that is
//! not about an adversary's strength: a wrong key, counter, header, or any flipped byte fails
//! to open (but for a 2^-128 accident), and the bytes on the wire differ from the plain ones.

use super::cipher::Cipher;
use super::frame::TAG;
use super::keyring::ClusterKey;
use crate::id::{mix64, NodeId};

/// The stand-in cipher (see the module's documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct StandIn;

/// A sender life's stand-in key: two 64-bit lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandInKey([u64; 2]);

fn absorb(mut lanes: [u64; 2], bytes: &[u8]) -> [u64; 2] {
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let x = u64::from_le_bytes(w) ^ (chunk.len() as u64) << 59;
        lanes = [mix64(lanes[0] ^ x), mix64(lanes[1].rotate_left(17) ^ x ^ lanes[0])];
    }
    lanes
}

fn keystream(key: &StandInKey, counter: u64, buf: &mut [u8]) {
    let base = mix64(key.0[0] ^ mix64(counter ^ key.0[1]));
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let k = mix64(base ^ i as u64).to_le_bytes();
        chunk.iter_mut().zip(k).for_each(|(b, k)| *b ^= k);
    }
}

fn tag(key: &StandInKey, counter: u64, aad: &[u8], ciphertext: &[u8]) -> [u8; TAG] {
    let lanes = absorb([key.0[0] ^ counter, key.0[1] ^ aad.len() as u64], aad);
    let lanes = absorb(lanes, ciphertext);
    let lanes = [mix64(lanes[0] ^ key.0[1]), mix64(lanes[1] ^ key.0[0] ^ ciphertext.len() as u64)];
    let mut t = [0u8; TAG];
    t[..8].copy_from_slice(&lanes[0].to_le_bytes());
    t[8..].copy_from_slice(&lanes[1].to_le_bytes());
    t
}

impl Cipher for StandIn {
    type Key = StandInKey;

    fn derive(cluster: &ClusterKey, sender: NodeId) -> StandInKey {
        let lanes = absorb([0x5EA1, 0x0DE5], cluster.bytes());
        let lanes = absorb(lanes, &sender.id.0.to_be_bytes());
        StandInKey(absorb(lanes, &sender.incarnation.to_be_bytes()))
    }

    fn key_from(okm: [u8; 32]) -> StandInKey {
        StandInKey(absorb([0xC4A7, 0x5EED], &okm))
    }

    fn seal(key: &StandInKey, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG] {
        keystream(key, counter, buf);
        tag(key, counter, aad, buf)
    }

    fn open(key: &StandInKey, counter: u64, aad: &[u8], buf: &mut [u8], t: &[u8; TAG]) -> bool {
        if tag(key, counter, aad, buf) != *t {
            return false;
        }
        keystream(key, counter, buf);
        true
    }
}
