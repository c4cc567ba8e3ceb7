//! The sealed datagram's frame: a fixed clear header, then the AEAD ciphertext and its tag.
//!
//! ```text
//! offset  size  field
//!      0     1  SEAL_VERSION (0xC5; a plain datagram starts with the wire VERSION instead)
//!      1     4  key id of the cluster key that sealed it (big-endian)
//!      5    16  sender's server id          \ the sender's life: its key is derived
//!     21     8  sender's incarnation        / from the cluster key and these two
//!     29     8  counter (the AEAD nonce; never repeats within one sender life)
//!     37    16  receiver's server id        \ all zero: "any" (discovery-class datagrams,
//!     53     8  receiver's incarnation      / group sends, peers not yet known)
//!     61     n  ciphertext of the plain datagram (n <= MAX_DATAGRAM)
//!   61+n    16  tag; the whole header is the associated data
//! ```
//!
//! Parsing is total: any byte string gives a [`Header`] and the sealed part, or a
//! [`SealError::Malformed`], never a panic.

use super::SealError;
use crate::id::{NodeId, ServerId};
use crate::limits::{MAX_COUNTER, MAX_DATAGRAM};

/// First byte of every sealed datagram. Distinct from the plain wire format's version byte.
pub const SEAL_VERSION: u8 = 0xC5;
/// Bytes of the clear header.
pub const HEADER: usize = 61;
/// Bytes of the AEAD tag.
pub const TAG: usize = 16;
/// Bytes sealing adds to a plain datagram.
pub const OVERHEAD: usize = HEADER + TAG;
/// Largest sealed datagram: a plain datagram of [`MAX_DATAGRAM`] bytes, sealed.
pub const MAX_SEALED: usize = MAX_DATAGRAM + OVERHEAD;

/// Identifies one cluster key: the first four bytes of a SHA-256 of the key (see
/// [`super::keyring::ClusterKey::new`]), so every holder of a key computes the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u32);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// The clear part of a sealed datagram. All of it is authenticated (associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Key that sealed it.
    pub key: KeyId,
    /// The sending life.
    pub sender: NodeId,
    /// The sender's datagram counter in this life (the nonce).
    pub counter: u64,
    /// The one life it is meant for, or `None` for any receiver.
    pub receiver: Option<NodeId>,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0] = SEAL_VERSION;
        h[1..5].copy_from_slice(&self.key.0.to_be_bytes());
        h[5..21].copy_from_slice(&self.sender.id.0.to_be_bytes());
        h[21..29].copy_from_slice(&self.sender.incarnation.to_be_bytes());
        h[29..37].copy_from_slice(&self.counter.to_be_bytes());
        if let Some(r) = self.receiver {
            h[37..53].copy_from_slice(&r.id.0.to_be_bytes());
            h[53..61].copy_from_slice(&r.incarnation.to_be_bytes());
        }
        h
    }

    /// Splits a sealed datagram into its header, its header's bytes, the ciphertext and the
    /// tag. Refuses (as [`SealError::Malformed`]) anything too short, too long, of another
    /// version, or naming a life no server can have (id or incarnation zero, incarnation
    /// beyond [`MAX_COUNTER`]).
    pub fn parse(bytes: &[u8]) -> Result<(Header, &[u8], &[u8], &[u8]), SealError> {
        if bytes.len() < OVERHEAD + 1 || bytes.len() > MAX_SEALED || bytes[0] != SEAL_VERSION {
            return Err(SealError::Malformed);
        }
        let (head, rest) = bytes.split_at(HEADER);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let u32_at = |i: usize| head.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0);
        let u64_at = |i: usize| head.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        let u128_at = |i: usize| head.get(i..i + 16).and_then(|s| s.try_into().ok()).map(u128::from_be_bytes).unwrap_or(0);
        let sender = NodeId { id: ServerId(u128_at(5)), incarnation: u64_at(21) };
        let receiver = NodeId { id: ServerId(u128_at(37)), incarnation: u64_at(53) };
        let a_life = |n: NodeId| n.id.0 != 0 && (1..=MAX_COUNTER).contains(&n.incarnation);
        let any = receiver.id.0 == 0 && receiver.incarnation == 0;
        if !a_life(sender) || !(any || a_life(receiver)) {
            return Err(SealError::Malformed);
        }
        let header = Header { key: KeyId(u32_at(1)), sender, counter: u64_at(29), receiver: (!any).then_some(receiver) };
        Ok((header, head, body, tag))
    }
}

/// Whether `bytes` looks like a sealed datagram (its first byte); says nothing of its validity.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&SEAL_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let sender = NodeId { id: ServerId(7 << 100), incarnation: 3 };
        for receiver in [None, Some(NodeId { id: ServerId(9), incarnation: 1 })] {
            let h = Header { key: KeyId(0xdead_beef), sender, counter: 42, receiver };
            let mut bytes = h.encode().to_vec();
            bytes.extend_from_slice(&[1u8; 5 + TAG]);
            let (back, head, body, tag) = Header::parse(&bytes).expect("parses");
            assert_eq!(back, h);
            assert_eq!((head.len(), body.len(), tag.len()), (HEADER, 5, TAG));
        }
    }

    #[test]
    fn impossible_lives_and_sizes_are_malformed() {
        let sender = NodeId { id: ServerId(1), incarnation: 1 };
        let ok = Header { key: KeyId(1), sender, counter: 0, receiver: None };
        let with = |h: Header, n: usize| {
            let mut b = h.encode().to_vec();
            b.resize(HEADER + n, 0);
            b
        };
        assert!(Header::parse(&with(ok, TAG + 1)).is_ok());
        assert_eq!(Header::parse(&with(ok, TAG)).map(|_| ()), Err(SealError::Malformed), "nothing sealed");
        assert_eq!(Header::parse(&with(ok, MAX_DATAGRAM + TAG + 1)).map(|_| ()), Err(SealError::Malformed), "oversize");
        let zero = Header { sender: NodeId { id: ServerId(1), incarnation: 0 }, ..ok };
        assert_eq!(Header::parse(&with(zero, TAG + 1)).map(|_| ()), Err(SealError::Malformed));
        let huge = Header { sender: NodeId { id: ServerId(1), incarnation: u64::MAX }, ..ok };
        assert_eq!(Header::parse(&with(huge, TAG + 1)).map(|_| ()), Err(SealError::Malformed));
        let half = Header { receiver: Some(NodeId { id: ServerId(0), incarnation: 4 }), ..ok };
        assert_eq!(Header::parse(&with(half, TAG + 1)).map(|_| ()), Err(SealError::Malformed));
    }
}
