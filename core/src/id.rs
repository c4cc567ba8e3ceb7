//! Identities: servers, incarnations, clusters.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A server's permanent identity (a UUID as 128 bits). LCR compares these.
/// On the wire: 16 fixed bytes, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServerId(#[serde(with = "fixed128")] pub u128);

impl fmt::Display for ServerId {
    /// Eight hex digits are enough to tell the servers of one cluster apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", (self.0 >> 96) as u32)
    }
}

impl ServerId {
    /// The full 32-hex-digit form (a UUID without dashes).
    pub fn full(&self) -> String {
        format!("{:032x}", self.0)
    }
}

/// One life of a server: `(id, incarnation)`. A restart is a new incarnation and
/// rejoins like a newcomer, so nothing promised by an earlier life is re-promised
/// under the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Permanent server identity.
    pub id: ServerId,
    /// Life counter, bumped on every restart or rejoin.
    pub incarnation: u64,
}

impl fmt::Display for NodeId {
    /// `d1dacd6f/3`: the short server id and the life (incarnation), the one form every log,
    /// trace and report uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.id, self.incarnation)
    }
}

/// Identity of a cluster: the node that founded it. Zero means "no cluster yet"
/// (a server still discovering or founding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(#[serde(with = "fixed128")] pub u128);

impl ClusterId {
    /// The "not in any cluster" id used while founding.
    pub const NONE: ClusterId = ClusterId(0);

    /// The cluster founded by `node` as leader of founding epoch `epoch`.
    /// Incarnation and epoch are mixed in, so a server that founds again makes a distinct cluster.
    pub fn founded_by(node: NodeId, epoch: u64) -> ClusterId {
        let salt = mix64(node.incarnation ^ mix64(epoch)) as u128;
        ClusterId((node.id.0 ^ (salt << 64)) | 1)
    }
}

impl fmt::Display for ClusterId {
    /// Eight hex digits, like a server id (the founder's id mixed with its life and epoch).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", (self.0 >> 96) as u32)
    }
}

/// A fixed 64-bit mixing function (splitmix64's finaliser).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Serde adapter: a `u128` as 16 fixed big-endian bytes (shorter and faster
/// than postcard's varint for random ids).
mod fixed128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &u128, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&x.to_be_bytes(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        <[u8; 16]>::deserialize(d).map(u128::from_be_bytes)
    }
}
