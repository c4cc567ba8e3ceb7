//! Users own their names: a user is an ed25519 key pair, the name is bound to the public key
//! at the first login (through the leader, first come first served), and every login proves
//! possession of the secret by signing the channel it arrives on.
//!
//! The signed transcript binds the client's channel ([`crate::path::ChannelId`]: the
//! ephemeral key of the client process life, fresh for every process), the client id and the
//! name. A signature is therefore worthless on any other channel: replayed verbatim it can
//! only repeat what the network's own duplicates do, on a channel whose answers only the
//! holder of the channel's ephemeral secret can read (the same argument as TLS 1.3's
//! CertificateVerify over the handshake, or a Noise channel binding). On an unsealed cluster
//! there is no channel and the binding is all zeros: the signature still proves the key, but
//! can be replayed by anyone who saw it (`--insecure-no-key` is for study only).

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A user's public key: what a name is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct UserKey(pub [u8; 32]);

impl std::fmt::Display for UserKey {
    /// The first eight hex digits, as a fingerprint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// An ed25519 signature, in two halves (serde has no 64-byte arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(pub [u8; 32], pub [u8; 32]);

/// A user's secret key (the ed25519 seed). Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct UserSecret {
    key: SigningKey,
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserSecret({})", self.public())
    }
}

/// What a login signs.
fn transcript(binding: &[u8; 32], client: u64, name: &str, key: &UserKey) -> Vec<u8> {
    let mut t = Vec::with_capacity(96 + name.len());
    t.extend_from_slice(b"ringchat login v1");
    t.extend_from_slice(binding);
    t.extend_from_slice(&client.to_be_bytes());
    t.extend_from_slice(&(name.len() as u64).to_be_bytes());
    t.extend_from_slice(name.as_bytes());
    t.extend_from_slice(&key.0);
    t
}

impl UserSecret {
    /// The secret of the 32-byte seed `seed` (from the OS's random source, or in the
    /// simulator from the seeded stream).
    pub fn from_seed(seed: [u8; 32]) -> UserSecret {
        UserSecret { key: SigningKey::from_bytes(&seed) }
    }

    /// The seed, to keep in the user's key file.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> UserKey {
        UserKey(self.key.verifying_key().to_bytes())
    }

    /// Signs a login of `client` as `name` on the channel `binding`.
    pub fn sign_login(&self, binding: &[u8; 32], client: u64, name: &str) -> Signature {
        let sig = self.key.sign(&transcript(binding, client, name, &self.public())).to_bytes();
        let (mut r, mut s) = ([0u8; 32], [0u8; 32]);
        r.copy_from_slice(&sig[..32]);
        s.copy_from_slice(&sig[32..]);
        Signature(r, s)
    }
}

impl UserKey {
    /// Whether `sig` is this key's signature of a login of `client` as `name` on the channel
    /// `binding`. Total: a key that is not a curve point, or any bad signature, is `false`.
    pub fn verifies_login(&self, binding: &[u8; 32], client: u64, name: &str, sig: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else { return false };
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&sig.0);
        bytes[32..].copy_from_slice(&sig.1);
        key.verify(&transcript(binding, client, name, self), &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_signature_verifies_only_for_its_channel_client_name_and_key() {
        let alice = UserSecret::from_seed([7; 32]);
        let mallory = UserSecret::from_seed([8; 32]);
        let sig = alice.sign_login(&[1; 32], 42, "alice");
        assert!(alice.public().verifies_login(&[1; 32], 42, "alice", &sig));
        assert!(!alice.public().verifies_login(&[2; 32], 42, "alice", &sig), "another channel");
        assert!(!alice.public().verifies_login(&[1; 32], 43, "alice", &sig), "another client");
        assert!(!alice.public().verifies_login(&[1; 32], 42, "alicf", &sig), "another name");
        assert!(!mallory.public().verifies_login(&[1; 32], 42, "alice", &sig), "another key");
        assert!(!UserKey([0xFF; 32]).verifies_login(&[1; 32], 42, "alice", &sig), "not a point: false, no panic");
    }
}
