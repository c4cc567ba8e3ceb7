//! Where a server answers a client: its address and, on a sealed cluster, its channel (the
//! public half of the client process's ephemeral key; see `seal::channel`).

use std::net::SocketAddr;

/// A client's channel: the public half of its ephemeral key (one per client process life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub [u8; 32]);

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Where a server answers a client: the address it was last heard from, and its channel
/// (`None` on an unsealed cluster, where the address is all there is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientPath {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's channel, when sealed.
    pub channel: Option<ChannelId>,
}

impl ClientPath {
    /// A path with no channel (an unsealed cluster).
    pub fn plain(addr: SocketAddr) -> ClientPath {
        ClientPath { addr, channel: None }
    }

    /// Whether `other` is the same party: the same channel when sealed (a client may move to
    /// another address), the same address when not.
    pub fn same_party(&self, other: &ClientPath) -> bool {
        match (self.channel, other.channel) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.addr == other.addr,
            _ => false,
        }
    }

    /// The bytes a user's login signature binds: the channel, or zeros when unsealed.
    pub fn binding(&self) -> [u8; 32] {
        self.channel.map_or([0; 32], |c| c.0)
    }
}
