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
    /// Passed on plain: anything when the server runs unsealed, else an `Identity` request.
    Plain,
    /// A client datagram that opened on its channel.
    Client,
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
        Ok(Inbound::Client(plain, path, operator)) => {
            server.handle_client_datagram(now, path, operator, &plain);
            Fed::Client
        }
        Err(e) => {
            server.count_refused(|c| e.count(c));
            Fed::Refused(e)
        }
    }
}

/// The server's next datagram, sealed (see [`seal_transmit`]). A datagram the seal will not
/// send (plain, to a client with no channel) is skipped and counted as `invalid`.
pub fn poll_transmit<C: Cipher>(server: &mut Server, seal: &mut Seal<C>) -> Option<Transmit> {
    loop {
        let mut t = server.poll_transmit()?;
        if seal_transmit(server, seal, &mut t) {
            return Some(t);
        }
        server.count_refused(|c| c.invalid += 1);
    }
}

/// Seals a datagram `server` handed out; `false` if it must not be sent. To a client, on its
/// channel. To a server, a unicast is addressed to the life last authenticated at its
/// address, else to the member at that address in the server's installed view, else to any
/// receiver; group sends are for any receiver.
pub fn seal_transmit<C: Cipher>(server: &Server, seal: &mut Seal<C>, t: &mut Transmit) -> bool {
    if !seal.is_sealed() {
        return true;
    }
    seal.set_life(server.node());
    if !crate::wire::is_peer(&t.bytes) {
        return match seal.seal_client(std::mem::take(&mut t.bytes), t.channel) {
            Some(b) => {
                t.bytes = b;
                true
            }
            None => false,
        };
    }
    let receiver = match t.dest {
        Dest::Group => None,
        Dest::Addr(a) => {
            seal.receiver_at(a).or_else(|| server.committed_view().and_then(|v| v.members.iter().find(|m| m.addr == a)).map(|m| m.node))
        }
    };
    t.bytes = seal.seal(std::mem::take(&mut t.bytes), receiver);
    true
}
