//! A server that crashed between asking to join and the view that admitted it comes back with no
//! view naming it: it would never vote, and without its vote the others may be no majority of
//! that view, so nobody could elect (seeds 678 and 3486 of `ringchat sim`). Any voter it asks
//! tells it the view, and it takes the view although its own view names no one.
//!
//! Servers are fed raw datagrams directly (the core without its seal, as `--insecure-no-key`
//! runs it).

use ringchat_core::cluster::{Phase, Server, ServerConfig};
use ringchat_core::id::{ClusterId, NodeId};
use ringchat_core::time::Instant;
use ringchat_core::view::{Member, View, ViewStamp};
use ringchat_core::wire::{decode, encode, Body, Envelope, Packet};
use ringchat_core::{Durable, ServerId};
use std::net::SocketAddr;

const CLUSTER: ClusterId = ClusterId(0xc1);
const A: ServerId = ServerId(1 << 100);
const B: ServerId = ServerId(2 << 100);
const C: ServerId = ServerId(3 << 100);

fn addr(id: ServerId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (id.0 >> 100) as u8], 7000))
}

fn member(id: ServerId, incarnation: u64) -> Member {
    Member { node: NodeId { id, incarnation }, addr: addr(id) }
}

/// The view that admitted B's first life (with A and C, at epoch 2).
fn admitting_view() -> View {
    View::new(ViewStamp { epoch: 2, id: 5 }, vec![member(A, 1), member(B, 1), member(C, 1)])
}

/// Server `id` restarted from its disk in `CLUSTER`, with `view` as its latest view.
fn restarted(id: ServerId, view: Option<View>) -> Server {
    let durable = Durable { id, incarnation: 1, cluster: CLUSTER, epochs: Default::default(), view, chat: Default::default() };
    let cfg = ServerConfig { discovery: false, join: vec![], ..ServerConfig::default() };
    let mut s = Server::new(cfg, id, addr(id), Some(durable), 7, Instant(0));
    drain(&mut s);
    s
}

/// Everything `s` sent, decoded.
fn drain(s: &mut Server) -> Vec<Body> {
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit() {
        if let Ok(Packet::Peer(env)) = decode(&t.bytes) {
            out.push(env.body);
        }
    }
    while s.poll_event().is_some() {}
    out
}

fn feed(s: &mut Server, from: NodeId, body: Body) -> Vec<Body> {
    let env = Envelope { cluster: CLUSTER, from, epoch: 2, body };
    s.handle_datagram(Instant(1_000), addr(from.id), &encode(&Packet::Peer(env)).expect("fits"));
    drain(s)
}

#[test]
fn a_voter_answers_a_join_request_from_a_new_life_of_a_member_with_its_view() {
    // A restarted with the admitting view: it votes, and no leader answers B.
    let mut a = restarted(A, Some(admitting_view()));
    let b2 = NodeId { id: B, incarnation: 2 };
    let sent = feed(&mut a, b2, Body::JoinRequest { addr: addr(B) });
    assert!(sent.iter().any(|b| matches!(b, Body::ViewInfo { view } if *view == admitting_view())), "A sent {sent:?}");
    // A server its view does not name gets no view.
    let stranger = NodeId { id: ServerId(9 << 100), incarnation: 1 };
    let sent = feed(&mut a, stranger, Body::JoinRequest { addr: addr(ServerId(9 << 100)) });
    assert!(!sent.iter().any(|b| matches!(b, Body::ViewInfo { .. })), "A sent {sent:?}");
}

#[test]
fn a_restarted_server_with_no_view_takes_one_that_names_it_and_votes() {
    let mut b = restarted(B, None);
    assert!(matches!(b.phase(), Phase::Joining { .. }));
    feed(&mut b, NodeId { id: A, incarnation: 2 }, Body::ViewInfo { view: admitting_view() });
    assert_eq!(b.durable().view.as_ref(), Some(&admitting_view()), "the view was refused");
    // A voter heartbeats the members of its view as it waits to rejoin.
    b.handle_timeout(Instant(2_000_000));
    let sent = drain(&mut b);
    assert!(sent.iter().any(|body| matches!(body, Body::Heartbeat { .. })), "B sent {sent:?}");
}
