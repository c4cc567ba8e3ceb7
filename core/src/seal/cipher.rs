//! The AEAD behind the seal, as a trait: the real one ([`super::chacha::ChaChaPoly`], used by
//! the network runtime) and a fast deterministic stand-in ([`super::standin::StandIn`], used by
//! the simulator, where real AEAD would cost a large share of a seed).

use super::frame::TAG;
use super::keyring::ClusterKey;
use crate::id::NodeId;

/// An authenticated cipher keyed per sender life.
///
/// Contract: `open` succeeds only on a buffer `seal` produced with the same derived key,
/// counter and associated data (for the stand-in: with overwhelming likelihood against
/// accidents, not against an adversary); a derived key differs for every (cluster key,
/// sender life).
pub trait Cipher {
    /// A sender life's key, derived once and cached.
    type Key: Clone;

    /// The key of `sender`'s life under `cluster`.
    fn derive(cluster: &ClusterKey, sender: NodeId) -> Self::Key;

    /// A key from 32 bytes already derived (a client channel's keys, see [`super::channel`]).
    fn key_from(okm: [u8; 32]) -> Self::Key;

    /// Encrypts `buf` in place under `counter` (the nonce) and returns the tag over `aad` and
    /// the ciphertext.
    fn seal(key: &Self::Key, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG];

    /// Checks `tag` and, only if it verifies, decrypts `buf` in place. `false` leaves `buf`
    /// unspecified (the caller throws it away).
    fn open(key: &Self::Key, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG]) -> bool;
}
