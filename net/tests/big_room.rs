//! A room at the size of a real LAN, over real processes on 127.0.0.1: three `ringchat
//! server`s and sixty clients (the library's blocking client, several per thread of the test).
//! Synchronisation is by waiting for client events with deadlines.

mod common;

use common::*;
use ringchat_core::wire::chat::Target;
use ringchat_core::wire::client::Op;
use ringchat_net::client::{SyncClient, SyncEvent};
use std::time::{Duration, Instant};

const ROOM: &str = "#big";

/// Steps every client once (without waiting) and hands each event to `on` with the client's index.
fn step_all(clients: &mut [SyncClient], mut on: impl FnMut(usize, SyncEvent)) {
    for (i, c) in clients.iter_mut().enumerate() {
        for e in c.step(Duration::ZERO) {
            on(i, e);
        }
    }
    std::thread::yield_now();
}

/// Runs until `done` holds, stepping the clients; panics with the servers' logs after `limit`.
fn until(c: &Cluster, clients: &mut [SyncClient], limit: Duration, what: &str, mut on: impl FnMut(usize, SyncEvent) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let mut done = false;
        step_all(clients, |i, e| done |= on(i, e));
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", c.logs());
    }
}

#[test]
fn sixty_members_all_receive_a_room_message_and_one_away_is_shown_two_thousand_in_order() {
    let c = Cluster::start("bigroom", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let identity = Some(test_ring().identity_public());
    let mut members: Vec<SyncClient> = (0..60)
        .map(|i| SyncClient::new(&format!("m{i:02}"), vec![addr(c.ports[i % 3])], 7_000 + i as u64, identity).expect("client"))
        .collect();
    let mut online = vec![false; members.len()];
    until(&c, &mut members, Duration::from_secs(30), "every member logged in", |i, e| {
        online[i] |= matches!(e, SyncEvent::Attached(_));
        online.iter().all(|o| *o)
    });
    let joins: Vec<_> = members.iter_mut().map(|m| m.submit(Op::Join(ROOM.into())).expect("join")).collect();
    let mut joined = vec![false; members.len()];
    until(&c, &mut members, Duration::from_secs(30), "every member joined", |i, e| {
        assert_ne!(e, SyncEvent::Failed(joins[i]), "m{i:02}'s join failed");
        joined[i] |= e == SyncEvent::Stored(joins[i]);
        joined.iter().all(|j| *j)
    });

    // A message to the room reaches the 59 other members.
    members[0].submit(Op::Chat { to: Target::Room(ROOM.into()), text: "hello all".into() }).expect("send");
    let mut got = vec![false; members.len()];
    got[0] = true;
    until(&c, &mut members, Duration::from_secs(30), "every member shown the room message", |i, e| {
        if let SyncEvent::Shown { text, .. } = e {
            got[i] |= text == "hello all";
        }
        got.iter().all(|g| *g)
    });
    // Let the last acknowledgements leave, then everyone but the sender goes away.
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        step_all(&mut members, |_, _| {});
    }
    members.truncate(1);

    // 2,000 messages to the room while 59 members are away: every one is stored.
    const N: usize = 2_000;
    for k in 0..N {
        let id = members[0].submit(Op::Chat { to: Target::Room(ROOM.into()), text: format!("m{k}") }).expect("send");
        until(&c, &mut members, Duration::from_secs(20), &format!("message {k} stored"), |_, e| {
            assert_ne!(e, SyncEvent::Failed(id), "message {k} failed");
            e == SyncEvent::Stored(id)
        });
    }
    // Each server stores each message once: the 59 members' backlog is not 59 copies.
    for port in &c.ports {
        let r = status(*port).expect("status");
        assert!(r.store <= (N + 200) as u32, "server {port} stores {} messages for {N} sent", r.store);
    }

    // One of them comes back (a new process): shown all 2,000, once each, in order.
    let mut back = vec![SyncClient::new("m59", vec![addr(c.ports[1])], 8_059, identity).expect("client")];
    let mut shown: Vec<String> = Vec::new();
    until(&c, &mut back, Duration::from_secs(60), "the member back shown every message", |_, e| {
        if let SyncEvent::Shown { text, .. } = e {
            if text != "hello all" {
                shown.push(text);
            }
        }
        shown.len() >= N
    });
    let want: Vec<String> = (0..N).map(|k| format!("m{k}")).collect();
    assert_eq!(shown, want);
}
