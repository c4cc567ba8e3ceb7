//! Datagrams that proved no key (client traffic; every datagram of an unsealed cluster): no
//! answer larger than the request, answers only to the request's source, per-source rate
//! limits, and no assertion reachable from the wire.
//!
//! One server founds a one-member cluster and leads it; raw datagrams are fed to it
//! directly (the core without its seal, as `--insecure-no-key` runs it).

use ringchat_core::cluster::{Dest, Server, ServerConfig, RATE_BURST};
use ringchat_core::id::{ClusterId, NodeId};
use ringchat_core::time::Instant;
use ringchat_core::view::ViewStamp;
use ringchat_core::wire::{decode, encode, Body, ClientMsg, Envelope, Packet, ServerMsg};
use ringchat_core::ServerId;
use std::net::SocketAddr;

const SERVER: &str = "10.0.0.1:7000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// A server that founded its own one-member cluster and leads it, at virtual time `now` µs.
fn leader() -> (Server, u64) {
    let cfg = ServerConfig { discovery: false, join: vec![], ..ServerConfig::default() };
    let mut s = Server::new(cfg, ServerId(1), addr(SERVER), None, 7, Instant(0));
    let mut now = 0;
    while !(s.is_leader() && s.committed_view().is_some()) {
        assert!(now < 5_000_000, "the lone server never led");
        now += 10_000;
        s.handle_timeout(Instant(now));
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
    }
    (s, now)
}

/// Feeds `bytes` from `from` and returns everything the server sent, with its destination.
fn feed(s: &mut Server, now: u64, from: SocketAddr, bytes: &[u8]) -> Vec<(Dest, Vec<u8>)> {
    s.handle_datagram(Instant(now), from, bytes);
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit() {
        out.push((t.dest, t.bytes));
    }
    while s.poll_event().is_some() {}
    out
}

fn client_request(msg: ClientMsg) -> Vec<u8> {
    encode(&Packet::FromClient(msg)).expect("fits")
}

#[test]
fn an_unproven_request_gets_no_reply_larger_than_itself() {
    let (mut s, now) = leader();
    let asker = addr("10.0.9.9:5000");
    for msg in [
        ClientMsg::Status,
        ClientMsg::Find { client: 77 },
        ClientMsg::Who { client: 77, list: ringchat_core::wire::WhoList::Users, after: String::new() },
    ] {
        let padded = client_request(msg.clone());
        // The same request without its padding: the shortest datagram that decodes.
        let short: Vec<u8> = {
            let mut b = padded.clone();
            while b.last() == Some(&0) && decode(&b[..b.len() - 1]).is_ok() {
                b.pop();
            }
            b
        };
        assert!(short.len() < 16, "{msg:?} is {} bytes unpadded", short.len());
        for request in [&short, &padded] {
            for (dest, bytes) in feed(&mut s, now, asker, request) {
                assert_eq!(dest, Dest::Addr(asker), "{msg:?}: an answer went elsewhere");
                assert!(bytes.len() <= request.len(), "{msg:?}: {} bytes answered {} bytes", bytes.len(), request.len());
            }
        }
    }
    assert!(s.counters().reply_too_large > 0, "a short status request was answered in full");
    // The padded status request (what `ringchat status` sends) gets its report.
    let answers = feed(&mut s, now, addr("10.0.9.10:5000"), &client_request(ClientMsg::Status));
    assert!(
        answers.iter().any(|(_, b)| matches!(decode(b), Ok(Packet::ToClient(ServerMsg::Status(_))))),
        "a padded status request was not answered"
    );
}

#[test]
fn answers_go_to_the_datagrams_source_never_to_an_address_in_its_body() {
    let (mut s, now) = leader();
    let victim = addr("10.0.66.66:9999");
    let source = addr("10.0.9.9:7000");
    let stranger = NodeId { id: ServerId(99), incarnation: 1 };
    for body in [Body::Hello { addr: victim, founding: false }, Body::JoinRequest { addr: victim }] {
        let env = Envelope { cluster: s.cluster(), from: stranger, epoch: s.epoch(), body };
        let bytes = encode(&Packet::Peer(env)).expect("fits");
        for (dest, _) in feed(&mut s, now, source, &bytes) {
            assert_ne!(dest, Dest::Addr(victim), "an answer was reflected to the address in the body");
        }
    }
}

#[test]
fn a_source_over_its_rate_gets_nothing_more_and_others_are_served() {
    let (mut s, now) = leader();
    let flood = addr("10.0.9.9:5000");
    let status = client_request(ClientMsg::Status);
    let answered = (0..100).filter(|_| !feed(&mut s, now, flood, &status).is_empty()).count();
    assert_eq!(answered, RATE_BURST as usize);
    assert_eq!(s.counters().rate_limited, 100 - RATE_BURST as u64);
    assert!(!feed(&mut s, now, addr("10.0.9.10:5000"), &status).is_empty(), "another source is served");
    assert!(!feed(&mut s, now + 1_000_000, flood, &status).is_empty(), "the source is served again a second later");
}

#[test]
fn a_forged_claim_of_leadership_in_the_leaders_epoch_is_refused_not_a_panic() {
    let (mut s, now) = leader();
    let epoch = s.epoch();
    let me = s.node();
    // The leader's own server id in another life: a member by id, so the claim reaches the
    // election code (which used to assert that no second leader exists).
    let forger = NodeId { id: me.id, incarnation: me.incarnation + 1 };
    let view = s.committed_view().cloned().expect("a view");
    let bodies = [
        Body::Heartbeat { leader: Some(forger), committed: view.stamp, latest: view.stamp, digest: Default::default() },
        Body::ViewCommit { view: ringchat_core::View::new(ViewStamp { epoch, id: view.stamp.id + 1 }, view.members.clone()) },
        Body::ViewPropose { view: ringchat_core::View::new(ViewStamp { epoch, id: view.stamp.id + 1 }, view.members.clone()) },
    ];
    for body in bodies {
        let env = Envelope { cluster: s.cluster(), from: forger, epoch, body };
        feed(&mut s, now, addr("10.0.9.9:7000"), &encode(&Packet::Peer(env)).expect("fits"));
        assert!(s.is_leader(), "a forged claim unseated the leader");
        assert_eq!(s.leader(), Some(me));
    }
    assert_eq!(s.counters().rival_leader, 3);
    assert_ne!(s.cluster(), ClusterId::NONE);
}
