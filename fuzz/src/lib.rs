//! Shared pieces of the fuzz targets (see docs/fuzzing.md): the cluster key every target
//! seals with, and the framing of a sequence of datagrams in one fuzz input.
//!
//! The corpus generator (`cargo run -p ringchat-tests --bin fuzz-corpus`) writes inputs in
//! this framing and seals with the same key: keep [`FUZZ_KEY`] and [`frames`] in step with it.

use ringchat_core::id::NodeId;
use ringchat_core::limits::MAX_COUNTER;
use ringchat_core::seal::{ClusterKey, KeyRing};
use std::net::SocketAddr;

/// The cluster key of every fuzz target (and of the sealed seeds the generator writes).
pub const FUZZ_KEY: [u8; 32] = [0x5a; 32];

/// A ring holding [`FUZZ_KEY`] alone.
pub fn ring() -> KeyRing {
    KeyRing::new(ClusterKey::new(FUZZ_KEY))
}

/// Whether a sender life is one a server can have (what the seal's header accepts).
pub fn a_life(n: NodeId) -> bool {
    n.id.0 != 0 && (1..=MAX_COUNTER).contains(&n.incarnation)
}

/// One datagram of a sequence: who sent it, how long after the previous one, its bytes.
pub struct Frame<'a> {
    /// The sender: below 128 a server (`server_addr(from)`), else a client slot.
    pub from: u8,
    /// Milliseconds since the previous datagram.
    pub dt_ms: u8,
    /// The datagram.
    pub bytes: &'a [u8],
}

/// The simulated address of sender `from` (as the simulator numbers servers and clients).
pub fn addr(from: u8) -> SocketAddr {
    let from = from as usize;
    if from < 128 {
        ringchat_sim::world::server_addr(from % 16)
    } else {
        ringchat_sim::world::client_addr((from - 128) % 16)
    }
}

/// Splits an input into frames: `[from u8][dt_ms u8][len u16 big-endian][len bytes]`, repeated;
/// a last frame shorter than its length takes what is left.
pub fn frames(mut data: &[u8]) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let (from, dt_ms) = (data[0], data[1]);
        let len = u16::from_be_bytes([data[2], data[3]]) as usize;
        let rest = &data[4..];
        let n = len.min(rest.len());
        out.push(Frame { from, dt_ms, bytes: &rest[..n] });
        data = &rest[n..];
    }
    out
}

/// Reads fixed-size fields off the front of an input; missing bytes read as zero.
pub struct Cursor<'a>(pub &'a [u8]);

impl Cursor<'_> {
    /// The next `N` bytes (zero-padded).
    pub fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    /// The next big-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }

    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
