//! The wire format: one version byte, then a postcard-encoded [`Packet`].
//!
//! The bottom layer of the crate: it depends only on the base (identities, time, views,
//! limits). Decoding is total: any byte string gives a message or a [`DecodeError`],
//! never a panic, and input longer than [`MAX_DATAGRAM`] is refused unread. A message longer
//! than a datagram (at most [`MAX_MESSAGE`]) travels in [`fragment`]s.

pub mod bounds;
pub mod chat;
pub mod client;
pub mod fragment;
pub mod peer;
pub mod status;

pub use chat::{CausalMsg, Item, Key, MsgId, Target};
pub use client::{ClientMsg, Op, RefusalReason, Rejection, ServerMsg, WhoList};
pub use fragment::{Fragment, FragmentError, Reassembler};
pub use peer::{Body, CandidateKey, Envelope};
pub use status::{Counters, MemberReport, StatusReport};

use crate::id::NodeId;
use crate::limits::{MAX_DATAGRAM, MAX_MESSAGE};
use bounds::Bounded;
use serde::{Deserialize, Serialize};

/// Protocol version carried in the first byte of every datagram.
pub const VERSION: u8 = 7;

/// Every datagram: between servers, from a client, or to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Packet {
    /// Server to server.
    Peer(Envelope),
    /// Client (or `ringchat status`) to server.
    FromClient(ClientMsg),
    /// Server to client.
    ToClient(ServerMsg),
}

impl Packet {
    /// The fragment this datagram carries, if it is one.
    pub fn fragment(&self) -> Option<&Fragment> {
        match self {
            Packet::Peer(Envelope { body: Body::Fragment(f), .. })
            | Packet::FromClient(ClientMsg::Fragment(f))
            | Packet::ToClient(ServerMsg::Fragment(f)) => Some(f),
            _ => None,
        }
    }

    /// The fragment `f` of this message, in a datagram of the same kind (a server's under the
    /// same envelope header, so the seal ties it to the same sender).
    fn carrying(&self, f: Fragment) -> Packet {
        match self {
            Packet::Peer(env) => Packet::Peer(Envelope { cluster: env.cluster, from: env.from, epoch: env.epoch, body: Body::Fragment(f) }),
            Packet::FromClient(_) => Packet::FromClient(ClientMsg::Fragment(f)),
            Packet::ToClient(_) => Packet::ToClient(ServerMsg::Fragment(f)),
        }
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Zero bytes.
    Empty,
    /// More than [`MAX_DATAGRAM`] bytes.
    Oversize,
    /// First byte is not [`VERSION`].
    WrongVersion(u8),
    /// The bytes are not an envelope.
    Malformed,
    /// An envelope whose content breaks a protocol bound (e.g. a malformed view).
    Invalid,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty datagram"),
            DecodeError::Oversize => write!(f, "datagram over {MAX_DATAGRAM} bytes"),
            DecodeError::WrongVersion(v) => write!(f, "protocol version {v}, expected {VERSION}"),
            DecodeError::Malformed => write!(f, "malformed datagram"),
            DecodeError::Invalid => write!(f, "datagram breaks a protocol bound"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Whether `bytes` is a plain `Identity` request (the one plain client datagram a sealed
/// cluster takes). Total.
pub fn is_identity_request(bytes: &[u8]) -> bool {
    matches!(decode(bytes), Ok(Packet::FromClient(ClientMsg::Identity)))
}

/// Whether `bytes` is a plain `Identity` answer. Total.
pub fn is_identity_answer(bytes: &[u8]) -> bool {
    matches!(decode(bytes), Ok(Packet::ToClient(ServerMsg::Identity { .. })))
}

/// Encodes a packet as `[VERSION] ++ postcard`, and a client request whose answer is large
/// padded with zeros to [`ClientMsg::answer_room`] (a server answers a datagram that proved
/// nothing with at most as many bytes as it got, so the asker makes room for the answer).
///
/// Returns `None` if it would not fit in [`MAX_DATAGRAM`] (the caller treats
/// that as a bug of its own: every message kind is bounded by construction).
pub fn encode(packet: &Packet) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    let mut out = postcard::to_extend(packet, out).ok()?;
    if let Packet::FromClient(m) = packet {
        out.resize(out.len().max(m.answer_room()), 0);
    }
    (out.len() <= MAX_DATAGRAM).then_some(out)
}

/// Encodes a packet into the datagrams that carry it: one if it fits (see [`encode`]), else
/// its [`fragment`]s under `nonce` (a value the sender never used before for a message to the
/// same receiver), each in a datagram of the packet's own kind.
///
/// Returns `None` if its encoding is longer than [`MAX_MESSAGE`] (or it is itself a fragment
/// that does not fit).
pub fn encode_datagrams(packet: &Packet, nonce: u64) -> Option<Vec<Vec<u8>>> {
    if let Some(one) = encode(packet) {
        return Some(vec![one]);
    }
    if packet.fragment().is_some() {
        return None;
    }
    let whole = postcard::to_extend(packet, vec![VERSION]).ok()?;
    let parts = fragment::split(&whole, nonce)?;
    parts.into_iter().map(|f| encode(&packet.carrying(f))).collect()
}

/// Decodes a message put back together from fragments: it must be one that could not have
/// travelled whole (longer than [`MAX_DATAGRAM`], at most [`MAX_MESSAGE`]), not a fragment
/// itself, and of the same kind as `carrier`, the datagram that carried its last fragment (a
/// server message in the same sender's name). Total, like [`decode`].
pub fn decode_reassembled(bytes: &[u8], carrier: &Packet) -> Result<Packet, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError::Oversize);
    }
    if bytes.len() <= MAX_DATAGRAM {
        return Err(DecodeError::Malformed);
    }
    let packet = decode_within(bytes, MAX_MESSAGE)?;
    let same = packet.fragment().is_none()
        && match (&packet, carrier) {
            (Packet::Peer(inner), Packet::Peer(outer)) => inner.from == outer.from,
            (Packet::FromClient(_), Packet::FromClient(_)) | (Packet::ToClient(_), Packet::ToClient(_)) => true,
            _ => false,
        };
    if same {
        Ok(packet)
    } else {
        Err(DecodeError::Invalid)
    }
}

/// Whether `bytes` is (by its first two bytes) a server-to-server datagram: the ones that are
/// sealed. Says nothing of whether the rest decodes.
pub fn is_peer(bytes: &[u8]) -> bool {
    // Postcard writes the `Packet` variant index as one byte; `Peer` is variant 0.
    bytes.len() >= 2 && bytes[0] == VERSION && bytes[1] == 0
}

/// The sender a server datagram names, read from its first fields alone (`None` if `bytes` is
/// not a server datagram that far). Total and cheap: the seal checks it against the header.
pub fn peer_sender(bytes: &[u8]) -> Option<NodeId> {
    if !is_peer(bytes) || bytes.len() > MAX_DATAGRAM {
        return None;
    }
    let ((_, from), _): ((crate::id::ClusterId, NodeId), &[u8]) = postcard::take_from_bytes(&bytes[2..]).ok()?;
    Some(from)
}

/// Decodes a datagram. Total: never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    decode_within(bytes, MAX_DATAGRAM)
}

fn decode_within(bytes: &[u8], max: usize) -> Result<Packet, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if bytes.len() > max {
        return Err(DecodeError::Oversize);
    }
    if version != VERSION {
        return Err(DecodeError::WrongVersion(version));
    }
    // The packet's kind is one byte. Postcard would also read an overlong varint (`80 00` for
    // kind 0): refused, so that [`is_peer`], which the seal relies on to refuse plain server
    // datagrams, agrees with what decodes as one.
    if rest.first().is_some_and(|kind| *kind >= 0x80) {
        return Err(DecodeError::Malformed);
    }
    let (packet, tail): (Packet, &[u8]) = postcard::take_from_bytes(rest).map_err(|_| DecodeError::Malformed)?;
    // Only a client request may carry padding, and only zeros (see [`encode`]).
    let padded = matches!(packet, Packet::FromClient(_)) && tail.iter().all(|&b| b == 0);
    if !tail.is_empty() && !padded {
        return Err(DecodeError::Malformed);
    }
    let valid = match &packet {
        Packet::Peer(env) => env.body.is_well_formed() && env.in_bounds(),
        Packet::FromClient(m) => m.is_well_formed(),
        Packet::ToClient(m) => m.is_well_formed(),
    };
    if valid {
        Ok(packet)
    } else {
        Err(DecodeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ClusterId, NodeId, ServerId};
    use crate::view::{Member, View, ViewStamp};
    use std::net::SocketAddr;

    fn sample() -> Packet {
        let from = NodeId { id: ServerId(42), incarnation: 3 };
        Packet::Peer(Envelope {
            cluster: ClusterId(7),
            from,
            epoch: 9,
            body: Body::Token { key: CandidateKey { view: ViewStamp { epoch: 2, id: 5 }, node: from } },
        })
    }

    #[test]
    fn roundtrip_keeps_every_field() {
        let p = sample();
        let bytes = encode(&p).expect("fits");
        assert_eq!(decode(&bytes), Ok(p));
    }

    #[test]
    fn the_sender_of_a_server_datagram_reads_from_its_prefix() {
        let bytes = encode(&sample()).expect("fits");
        assert!(is_peer(&bytes));
        assert_eq!(peer_sender(&bytes), Some(NodeId { id: ServerId(42), incarnation: 3 }));
        for len in 0..bytes.len().min(40) {
            let _ = peer_sender(&bytes[..len]);
        }
        let client = encode(&Packet::FromClient(ClientMsg::Status)).expect("fits");
        assert!(!is_peer(&client));
        assert_eq!(peer_sender(&client), None);
    }

    #[test]
    fn a_server_datagram_with_an_overlong_kind_byte_is_malformed_not_peer_traffic() {
        // Found by the `decode` fuzz target: `80 00` is postcard's overlong varint for 0, so
        // this decoded as a server datagram that `is_peer` (and so the seal) took for client traffic.
        let mut bytes = encode(&sample()).expect("fits");
        bytes.splice(1..2, [0x80, 0x00]);
        assert!(!is_peer(&bytes));
        assert_eq!(decode(&bytes), Err(DecodeError::Malformed));
        for kind in [0x81u8, 0x82] {
            let mut b = encode(&Packet::FromClient(ClientMsg::Status)).expect("fits");
            b.splice(1..2, [kind, 0x00]);
            b.truncate(MAX_DATAGRAM); // a padded request: drop one byte of its padding
            assert_eq!(decode(&b), Err(DecodeError::Malformed));
        }
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut bytes = encode(&sample()).expect("fits");
        bytes[0] = VERSION + 1;
        assert_eq!(decode(&bytes), Err(DecodeError::WrongVersion(VERSION + 1)));
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let mut bytes = encode(&sample()).expect("fits");
        bytes.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(decode(&bytes), Err(DecodeError::Oversize));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample()).expect("fits");
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        for len in 1..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn a_client_request_may_carry_zero_padding_and_nothing_else_may() {
        let status = encode(&Packet::FromClient(ClientMsg::Status)).expect("fits");
        assert_eq!(status.len(), MAX_DATAGRAM, "a status request makes room for the whole report");
        assert_eq!(decode(&status), Ok(Packet::FromClient(ClientMsg::Status)));
        let mut dirty = status.clone();
        dirty[MAX_DATAGRAM - 1] = 1;
        assert_eq!(decode(&dirty), Err(DecodeError::Malformed), "padding is zeros only");
        let mut peer = encode(&sample()).expect("fits");
        peer.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&peer), Err(DecodeError::Malformed), "server datagrams carry no padding");
    }

    #[test]
    fn the_largest_assign_fits_in_a_find() {
        let v6: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".parse().expect("addr");
        let servers = vec![v6; crate::limits::MAX_MEMBERS];
        let assign = encode(&Packet::ToClient(ServerMsg::Assign { client: u64::MAX, servers })).expect("fits");
        let find = encode(&Packet::FromClient(ClientMsg::Find { client: 1 })).expect("fits");
        assert!(assign.len() <= find.len(), "assign {} > find {}", assign.len(), find.len());
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = encode(&sample()).expect("fits");
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_counter_near_its_end_is_refused_not_adopted() {
        let from = NodeId { id: ServerId(42), incarnation: 3 };
        let at = |epoch: u64, incarnation: u64| {
            let from = NodeId { incarnation, ..from };
            Packet::Peer(Envelope {
                cluster: ClusterId(7),
                from,
                epoch,
                body: Body::JoinRequest { addr: "10.0.0.1:7000".parse().expect("addr") },
            })
        };
        let max = crate::limits::MAX_COUNTER;
        assert!(decode(&encode(&at(max, 1)).expect("fits")).is_ok(), "the largest allowed epoch decodes");
        assert_eq!(decode(&encode(&at(max + 1, 1)).expect("fits")), Err(DecodeError::Invalid));
        assert_eq!(decode(&encode(&at(u64::MAX, 1)).expect("fits")), Err(DecodeError::Invalid));
        assert_eq!(decode(&encode(&at(1, u64::MAX)).expect("fits")), Err(DecodeError::Invalid));
        let key = CandidateKey { view: ViewStamp { epoch: 1, id: u64::MAX }, node: from };
        let token = Packet::Peer(Envelope { cluster: ClusterId(7), from, epoch: 1, body: Body::Token { key } });
        assert_eq!(decode(&encode(&token).expect("fits")), Err(DecodeError::Invalid));
    }

    #[test]
    fn a_view_with_duplicate_servers_is_invalid() {
        let m = Member { node: NodeId { id: ServerId(1), incarnation: 1 }, addr: "10.0.0.1:7000".parse().expect("addr") };
        let twin = Member { node: NodeId { id: ServerId(1), incarnation: 2 }, ..m };
        let view = View { stamp: ViewStamp { epoch: 1, id: 1 }, members: vec![m, twin] };
        let p = Packet::Peer(Envelope { cluster: ClusterId(1), from: m.node, epoch: 1, body: Body::ViewCommit { view } });
        let bytes = encode(&p).expect("fits");
        assert_eq!(decode(&bytes), Err(DecodeError::Invalid));
    }
}
