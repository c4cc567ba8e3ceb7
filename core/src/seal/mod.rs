//! Sealed server traffic: every datagram between servers is authenticated and encrypted with
//! the cluster's key ring, and replays are refused, also across restarts.
//!
//! Sans-IO like the rest of the core: bytes in, bytes out, no clock. Each concern has its
//! file: [`frame`] (the clear header), [`cipher`] (the AEAD as a trait) with [`chacha`] (the
//! real one) and [`standin`] (the simulator's), [`keyring`] (keys, rotation, the key file),
//! [`replay`] (windows and the memory kept on disk), [`sealer`] (a server's [`Seal`]) and
//! [`drive`] (the two calls a driver makes around a [`crate::Server`]).
//!
//! Client traffic is sealed too, on the client's [`channel`] to the cluster's identity key:
//! [`Seal::open`] refuses plain client datagrams on a sealed cluster but for the one request
//! that asks for the identity's public key (trust on first use).

pub mod chacha;
pub mod channel;
pub mod cipher;
pub mod drive;
pub mod frame;
pub mod keyring;
pub mod replay;
pub mod sealer;
pub mod standin;

pub use chacha::ChaChaPoly;
pub use cipher::Cipher;
pub use frame::{KeyId, MAX_SEALED, OVERHEAD, SEAL_VERSION};
pub use keyring::{ClusterKey, KeyRing, RingError};
pub use replay::SealMemory;
pub use sealer::{Inbound, Seal};
pub use standin::StandIn;

use crate::wire::Counters;

/// Why a datagram was refused by the seal. Each is counted (see [`SealError::count`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError {
    /// A sealed datagram whose header no server writes (size, version, an impossible life).
    Malformed,
    /// Sealed under a key this server does not hold.
    WrongKey,
    /// The tag does not verify: forged, tampered with, or truncated.
    BadTag,
    /// Its counter was accepted before (or is older than the replay window).
    Replay,
    /// From an earlier life of a sender already heard in a later life.
    StaleIncarnation,
    /// Meant for another server, or for another life of this one.
    WrongReceiver,
    /// A plain server datagram reached a sealed server.
    Unsealed,
    /// It opened, but what is inside is not a server datagram in the header's sender's name.
    Mismatch,
}

impl SealError {
    /// Counts the refusal in the server's counters.
    pub fn count(self, c: &mut Counters) {
        let n = match self {
            SealError::Malformed => &mut c.seal_malformed,
            SealError::WrongKey => &mut c.seal_wrong_key,
            SealError::BadTag => &mut c.seal_bad_tag,
            SealError::Replay => &mut c.seal_replay,
            SealError::StaleIncarnation => &mut c.seal_stale,
            SealError::WrongReceiver => &mut c.seal_wrong_receiver,
            SealError::Unsealed => &mut c.unsealed,
            SealError::Mismatch => &mut c.invalid,
        };
        *n += 1;
    }
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealError::Malformed => "malformed sealed datagram",
            SealError::WrongKey => "sealed under a key not in the ring",
            SealError::BadTag => "tag does not verify",
            SealError::Replay => "replayed datagram",
            SealError::StaleIncarnation => "from an earlier life of its sender",
            SealError::WrongReceiver => "meant for another server life",
            SealError::Unsealed => "plain server datagram on a sealed cluster",
            SealError::Mismatch => "sealed content names another sender",
        })
    }
}

impl std::error::Error for SealError {}

#[cfg(test)]
mod tests;
