//! The real cipher: ChaCha20-Poly1305 (RustCrypto) under a per-sender-life key derived with
//! HKDF-SHA256 from the cluster key and the sender's (server id, incarnation).

use super::cipher::Cipher;
use super::frame::TAG;
use super::keyring::ClusterKey;
use crate::id::NodeId;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

/// Salt of the key derivation: names the protocol and its frame version.
const SALT: &[u8] = b"ringchat seal v1";

/// ChaCha20-Poly1305 with HKDF-SHA256 key derivation. The nonce is the counter (96 bits: four
/// zero bytes, then the counter big-endian), unique per sender life because the derived key
/// is per life and the counter only grows within it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChaChaPoly;

/// The nonce of `counter`.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

impl Cipher for ChaChaPoly {
    type Key = ChaCha20Poly1305;

    fn derive(cluster: &ClusterKey, sender: NodeId) -> ChaCha20Poly1305 {
        let mut info = [0u8; 24];
        info[..16].copy_from_slice(&sender.id.0.to_be_bytes());
        info[16..].copy_from_slice(&sender.incarnation.to_be_bytes());
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(SALT), cluster.bytes()).expand(&info, &mut okm);
        ChaCha20Poly1305::new(&okm.into())
    }

    fn key_from(okm: [u8; 32]) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&okm.into())
    }

    fn seal(key: &ChaCha20Poly1305, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG] {
        // Fails only for inputs over 256 GiB; a datagram is at most MAX_DATAGRAM bytes.
        key.encrypt_inout_detached(&nonce(counter), aad, buf.into()).map(|t| t.into()).unwrap_or([0u8; TAG])
    }

    fn open(key: &ChaCha20Poly1305, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG]) -> bool {
        key.decrypt_inout_detached(&nonce(counter), aad, buf.into(), &Tag::from(*tag)).is_ok()
    }
}
