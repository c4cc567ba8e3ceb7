//! The seal between a [`Server`] and its driver: the two calls a driver makes instead of
//! `handle_datagram` and `poll_transmit`, so the net runtime and the simulator seal and open
//! the same way.

use super::cipher::Cipher;
use super::sealer::{Inbound, Seal};
use super::SealError;
use crate::cluster::{Dest, Server, Transmit};
use crate::id::NodeId;
use crate::time::Instant;
use std::net::SocketAddr;

/// What [`feed`] did with a datagram (drivers may ignore it; the simulator's outsider checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// Passed on plain: client traffic, or anything when the server runs unsealed.
    Plain,
    /// A sealed server datagram that opened, from this sender life.
    Opened(NodeId),
    /// Refused by the seal and counted; the server saw nothing of it.
    Refused(SealError),
}

/// Opens one received datagram and feeds what it lets through to `server`; a refusal is
/// counted in the server's counters (see [`super::SealError::count`]) and costs no reply.
pub fn feed<C: Cipher>(server: &mut Server, seal: &mut Seal<C>, now: Instant, from: SocketAddr, bytes: &[u8]) -> Fed {
    seal.set_life(server.node());
    match seal.open(from, bytes) {
        Ok(Inbound::Plain(b)) => {
            server.handle_datagram(now, from, b);
            Fed::Plain
        }
        Ok(Inbound::Opened(plain, sender)) => {
            server.handle_datagram(now, from, &plain);
            Fed::Opened(sender)
        }
        Err(e) => {
            server.count_refused(|c| e.count(c));
            Fed::Refused(e)
        }
    }
}

/// The server's next datagram, sealed if it goes to a server (see [`seal_transmit`]).
pub fn poll_transmit<C: Cipher>(server: &mut Server, seal: &mut Seal<C>) -> Option<Transmit> {
    let mut t = server.poll_transmit()?;
    seal_transmit(server, seal, &mut t);
    Some(t)
}

/// Seals a datagram `server` handed out, if it goes to a server. A unicast is addressed to the
/// life last authenticated at its address, else to the member at that address in the
/// server's installed view, else to any receiver; group sends are for any receiver.
pub fn seal_transmit<C: Cipher>(server: &Server, seal: &mut Seal<C>, t: &mut Transmit) {
    if !seal.is_sealed() {
        return;
    }
    seal.set_life(server.node());
    let receiver = match t.dest {
        Dest::Group => None,
        Dest::Addr(a) => {
            seal.receiver_at(a).or_else(|| server.committed_view().and_then(|v| v.members.iter().find(|m| m.addr == a)).map(|m| m.node))
        }
    };
    t.bytes = seal.seal(std::mem::take(&mut t.bytes), receiver);
}
