//! Misbehaving clients get a typed refusal, and nothing of anyone else's is lost or changed.
//!
//! One server founds a one-member cluster; honest clients are the core's own [`Client`]
//! state machine, misbehaving ones are raw datagrams. Everything runs in virtual time.

use ringchat_core::client::{Client, ClientConfig, ClientEvent};
use ringchat_core::cluster::{Dest, Server, ServerConfig};
use ringchat_core::limits::MAX_TEXT;
use ringchat_core::path::ClientPath;
use ringchat_core::time::{Instant, Vc};
use ringchat_core::user::{Signature, UserSecret};
use ringchat_core::wire::{
    decode, encode, encode_datagrams, ClientMsg, MsgId, Op, Packet, RefusalReason, Rejection, ServerMsg, Target, WhoList,
};
use ringchat_core::ServerId;
use std::net::SocketAddr;

const SERVER: &str = "10.0.0.1:7000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// A lone server, its honest clients, and what it sent to raw sockets.
struct Lan {
    now: u64,
    server: Server,
    clients: Vec<(SocketAddr, Client)>,
    /// Everything the server sent to addresses that are not honest clients.
    raw: Vec<(SocketAddr, ServerMsg)>,
    /// Every honest client's events: (client index, event).
    events: Vec<(usize, ClientEvent)>,
    /// Shows the server sent to honest clients.
    shows: usize,
}

impl Lan {
    /// A server that founded its own one-member cluster and leads it.
    fn new() -> Lan {
        let cfg = ServerConfig { discovery: false, join: vec![], ..ServerConfig::default() };
        let server = Server::new(cfg, ServerId(1), addr(SERVER), None, 7, Instant(0));
        let mut lan = Lan { now: 0, server, clients: Vec::new(), raw: Vec::new(), events: Vec::new(), shows: 0 };
        lan.run_until(5_000, |l| l.server.is_leader() && l.server.committed_view().is_some());
        lan
    }

    /// An honest client (pinned to the server) logging in as `name`; returns its index.
    fn client(&mut self, at: &str, id: u64, name: &str, key: u8) -> usize {
        let cfg = ClientConfig { servers: vec![addr(SERVER)], find: false, ..ClientConfig::default() };
        let mut c = Client::new(cfg, id, 0, Instant(self.now));
        c.login(Instant(self.now), name, user(key)).expect("a good name");
        self.clients.push((addr(at), c));
        let i = self.clients.len() - 1;
        self.pump();
        self.run_until(5_000, |l| l.clients[i].1.is_online());
        i
    }

    /// Delivers every queued datagram (instantly, without loss) until nothing moves.
    fn pump(&mut self) {
        let now = Instant(self.now);
        loop {
            let mut moved = false;
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                let Dest::Addr(to) = t.dest else { continue };
                match self.clients.iter_mut().find(|(a, _)| *a == to) {
                    Some((_, c)) => {
                        self.shows += usize::from(matches!(decode(&t.bytes), Ok(Packet::ToClient(ServerMsg::Show { .. }))));
                        c.handle_datagram(now, addr(SERVER), &t.bytes)
                    }
                    None => {
                        if let Ok(Packet::ToClient(m)) = decode(&t.bytes) {
                            self.raw.push((to, m));
                        }
                    }
                }
            }
            while self.server.poll_event().is_some() {}
            for i in 0..self.clients.len() {
                let from = self.clients[i].0;
                while let Some((to, bytes)) = self.clients[i].1.poll_transmit() {
                    moved = true;
                    if to == addr(SERVER) {
                        self.server.handle_datagram(now, from, &bytes);
                    }
                }
                while let Some(e) = self.clients[i].1.poll_event() {
                    self.events.push((i, e));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances virtual time to the next deadline (of the server or a client) and runs it.
    fn step(&mut self) {
        let next = self.clients.iter().filter_map(|(_, c)| c.poll_timeout()).chain(self.server.poll_timeout()).min();
        let next = next.expect("something is always scheduled");
        self.now = self.now.max(next.0);
        let now = Instant(self.now);
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        for (_, c) in &mut self.clients {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        self.pump();
    }

    /// Runs until `done` holds; panics after `limit_ms` of virtual time.
    fn run_until(&mut self, limit_ms: u64, done: impl Fn(&Lan) -> bool) {
        let end = self.now + limit_ms * 1000;
        while !done(self) {
            assert!(self.now < end, "not done within {limit_ms} ms");
            self.step();
        }
    }

    /// Runs for `ms` of virtual time.
    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms * 1000;
        while self.now < end {
            self.step();
        }
    }

    /// A raw datagram from `from`; returns what the server answered `from` at once.
    fn raw(&mut self, from: &str, msg: ClientMsg) -> Vec<ServerMsg> {
        let bytes = encode(&Packet::FromClient(msg)).expect("fits");
        self.server.handle_datagram(Instant(self.now), addr(from), &bytes);
        self.pump();
        let (mine, rest) = std::mem::take(&mut self.raw).into_iter().partition(|(to, _)| *to == addr(from));
        self.raw = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }

    /// Everything the server sent `to` since the last look.
    fn take_raw(&mut self, to: &str) -> Vec<ServerMsg> {
        let (mine, rest) = std::mem::take(&mut self.raw).into_iter().partition(|(a, _)| *a == addr(to));
        self.raw = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }

    /// Texts shown to client `i`, in order.
    fn shown(&self, i: usize) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|(j, e)| match e {
                ClientEvent::Shown { from, text, .. } if *j == i => Some((from.clone(), text.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether client `i` had operation `id` stored.
    fn stored(&self, i: usize, id: MsgId) -> bool {
        self.events.iter().any(|(j, e)| *j == i && *e == ClientEvent::Stored { id })
    }

    /// Submits a private message from client `i` and runs until it is stored.
    fn say(&mut self, i: usize, to: &str, text: &str) -> MsgId {
        self.run_op(i, Op::Chat { to: Target::User(to.into()), text: text.into() })
    }

    /// Submits an operation from client `i` and runs until it is stored.
    fn run_op(&mut self, i: usize, op: Op) -> MsgId {
        let id = self.clients[i].1.submit(Instant(self.now), op).expect("submitted");
        self.pump();
        self.run_until(5_000, |l| l.stored(i, id));
        id
    }

    /// The clients the server lists as logged in, by an operator's `status`.
    fn online(&mut self) -> Vec<(String, Option<SocketAddr>)> {
        let bytes = encode(&Packet::FromClient(ClientMsg::Status)).expect("fits");
        let from = addr("10.9.9.9:1");
        self.server.handle_client_datagram(Instant(self.now), ClientPath::plain(from), true, &bytes);
        self.pump();
        match self.take_raw("10.9.9.9:1").as_slice() {
            [ServerMsg::Status(r)] => r.clients.clone(),
            other => panic!("no status: {other:?}"),
        }
    }
}

fn refused(client: u64, reason: RefusalReason) -> Vec<ServerMsg> {
    vec![ServerMsg::Refused { client, reason }]
}

fn chat(to: &str, text: &str) -> Op {
    Op::Chat { to: Target::User(to.into()), text: text.into() }
}

/// The user of key number `n`.
fn user(n: u8) -> UserSecret {
    UserSecret::from_seed([n; 32])
}

/// A login of `client` as `name`, signed with key number `key` (unsealed: no channel to bind).
fn login(client: u64, name: &str, key: u8, attempt: u64) -> ClientMsg {
    let u = user(key);
    ClientMsg::Login { client, name: name.into(), key: u.public(), sig: u.sign_login(&[0; 32], client, name), ctx: Vc::new(), attempt }
}

/// A raw login, run until the server answers `LoginOk`.
fn raw_login(lan: &mut Lan, from: &str, client: u64, name: &str, key: u8) {
    let login = login(client, name, key, 1);
    if !lan.raw(from, login).iter().any(|m| matches!(m, ServerMsg::LoginOk { .. })) {
        lan.run_until(5_000, |l| l.raw.iter().any(|(a, m)| *a == addr(from) && matches!(m, ServerMsg::LoginOk { .. })));
    }
    lan.take_raw(from);
}

#[test]
fn impersonated_send_is_refused_and_changes_nothing() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.11:5000", 1, "alice", 11);
    let bob = lan.client("10.0.0.12:5000", 2, "bob", 12);
    let before = lan.online();
    // Mallory learned alice's client id: a send, a ping and a logout in her name are refused.
    let forged = MsgId { client: 1, seq: 1 };
    let send = ClientMsg::Send { id: forged, op: chat("bob", "forged"), ctx: Vc::new(), retry: false, left_ms: 10_000 };
    assert_eq!(lan.raw("10.6.6.6:666", send), refused(1, RefusalReason::NotYourSession));
    let ping = ClientMsg::Ping { client: 1, attempt: 1, next: 1 };
    assert_eq!(lan.raw("10.6.6.6:666", ping), refused(1, RefusalReason::NotYourSession));
    assert_eq!(lan.raw("10.6.6.6:666", ClientMsg::Logout { client: 1, acks: vec![] }), refused(1, RefusalReason::NotYourSession));
    lan.run_for(1_000);
    // Nothing was forged, the session stays at alice's address, and the server sent Mallory nothing more.
    assert!(lan.shown(bob).is_empty(), "{:?}", lan.shown(bob));
    assert_eq!(lan.online(), before);
    assert!(lan.take_raw("10.6.6.6:666").is_empty());
    // Alice's own first message (the very id Mallory used) is stored and shown, once.
    let id = lan.say(alice, "bob", "hi bob");
    assert_eq!(id, forged);
    lan.run_until(2_000, |l| !l.shown(bob).is_empty());
    lan.run_for(1_000);
    assert_eq!(lan.shown(bob), vec![("alice".to_string(), "hi bob".to_string())]);
    assert!(lan.clients[alice].1.is_online());
}

#[test]
fn ack_of_a_message_never_shown_is_refused() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.11:5000", 1, "alice", 11);
    // Bob is registered, then goes offline: alice's message waits in his inbox.
    let bob = lan.client("10.0.0.12:5000", 2, "bob", 12);
    lan.clients[bob].1.logout(Instant(lan.now));
    lan.pump();
    let for_bob = lan.say(alice, "bob", "for bob");
    // Mallory logs in as herself and is shown a message of her own.
    let m = "10.6.6.6:666";
    raw_login(&mut lan, m, 3, "mallory", 66);
    lan.say(alice, "mallory", "for mallory");
    lan.run_until(2_000, |l| l.raw.iter().any(|(a, s)| *a == addr(m) && matches!(s, ServerMsg::Show { .. })));
    let shows = lan.take_raw(m);
    let Some(ServerMsg::Show { id: hers, .. }) = shows.iter().find(|s| matches!(s, ServerMsg::Show { .. })) else { unreachable!() };
    // She acknowledges hers and bob's: bob's is refused and dropped, hers is taken.
    let ack = ClientMsg::Ack { client: 3, ids: vec![*hers, for_bob], attempt: 1, next: 0 };
    assert_eq!(lan.raw(m, ack), refused(3, RefusalReason::NeverShown { count: 1 }));
    lan.run_for(1_000);
    let again: Vec<ServerMsg> = lan.take_raw(m).into_iter().filter(|s| matches!(s, ServerMsg::Show { .. })).collect();
    assert!(again.is_empty(), "an acknowledged message is shown again: {again:?}");
    // Bob's inbox is untouched: his next life is shown the message.
    let bob2 = lan.client("10.0.0.12:5001", 4, "bob", 12);
    lan.run_until(2_000, |l| !l.shown(bob2).is_empty());
    assert_eq!(lan.shown(bob2), vec![("alice".to_string(), "for bob".to_string())]);
}

#[test]
fn login_with_anothers_client_id_leaves_the_session_alone() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.11:5000", 1, "alice", 11);
    let bob = lan.client("10.0.0.12:5000", 2, "bob", 12);
    let before = lan.online();
    let m = "10.6.6.6:666";
    // Another name, or alice's name with another key, under alice's client id: refused.
    for (name, key) in [("mallory", 66), ("alice", 66)] {
        assert_eq!(lan.raw(m, login(1, name, key, 9)), refused(1, RefusalReason::NotYourSession));
    }
    lan.run_for(1_000);
    assert!(lan.take_raw(m).is_empty());
    assert_eq!(lan.online(), before);
    // Alice's session still works both ways, at her address.
    lan.say(bob, "alice", "still there?");
    lan.run_until(2_000, |l| !l.shown(alice).is_empty());
    assert_eq!(lan.shown(alice), vec![("bob".to_string(), "still there?".to_string())]);
    lan.say(alice, "bob", "yes");
    lan.run_until(2_000, |l| !l.shown(bob).is_empty());
    assert!(lan.events.iter().all(|(_, e)| !matches!(e, ClientEvent::ServerRefused { .. })), "{:?}", lan.events);
    // Alice herself (her name and key) moving to a new address, as after a NAT rebinding, is accepted.
    let answer = lan.raw("10.0.0.11:6000", login(1, "alice", 11, 9));
    assert_eq!(answer, vec![ServerMsg::LoginOk { client: 1, attempt: 9 }]);
}

#[test]
fn send_before_login_is_refused() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.11:5000", 1, "alice", 11);
    let m = "10.6.6.6:666";
    let send =
        ClientMsg::Send { id: MsgId { client: 7, seq: 1 }, op: chat("alice", "hello"), ctx: Vc::new(), retry: false, left_ms: 10_000 };
    assert_eq!(lan.raw(m, send.clone()), refused(7, RefusalReason::NotLoggedIn));
    let ack = ClientMsg::Ack { client: 7, ids: vec![MsgId { client: 1, seq: 1 }], attempt: 1, next: 0 };
    assert_eq!(lan.raw(m, ack), refused(7, RefusalReason::NotLoggedIn));
    let ping = ClientMsg::Ping { client: 7, attempt: 1, next: 1 };
    assert_eq!(lan.raw(m, ping), refused(7, RefusalReason::NotLoggedIn));
    // A login still waiting for its name to be bound is not logged in either.
    let answer = lan.raw(m, login(7, "mallory", 66, 1));
    if !answer.iter().any(|s| matches!(s, ServerMsg::LoginOk { .. })) {
        assert_eq!(lan.raw(m, send.clone()), refused(7, RefusalReason::NotLoggedIn));
        lan.run_until(2_000, |l| l.raw.iter().any(|(a, s)| *a == addr(m) && matches!(s, ServerMsg::LoginOk { .. })));
    }
    assert!(lan.shown(alice).is_empty(), "{:?}", lan.shown(alice));
    // Once logged in, the same send goes through.
    lan.take_raw(m);
    let answer = lan.raw(m, send);
    assert!(answer.iter().all(|s| !matches!(s, ServerMsg::Refused { .. })), "{answer:?}");
    lan.run_until(2_000, |l| !l.shown(alice).is_empty());
    assert_eq!(lan.shown(alice), vec![("mallory".to_string(), "hello".to_string())]);
    // A client whose session is gone (here: it logged out behind the client's back) is told so
    // at its next ping, and logs in again.
    let a = "10.0.0.11:5000";
    assert_eq!(lan.raw(a, ClientMsg::Logout { client: 1, acks: vec![] }), vec![]);
    let logins = |l: &Lan| l.events.iter().filter(|(j, e)| *j == alice && matches!(e, ClientEvent::LoggedIn { .. })).count();
    assert_eq!(logins(&lan), 1);
    lan.run_until(2_000, |l| logins(l) == 2);
    lan.say(alice, "mallory", "back");
    assert!(lan.events.iter().all(|(_, e)| !matches!(e, ClientEvent::ServerRefused { .. })), "{:?}", lan.events);
}

#[test]
fn a_member_away_during_two_thousand_room_messages_makes_no_sender_fail_and_is_shown_them_all_in_order() {
    let mut lan = Lan::new();
    // Dave joins #r, then goes offline.
    let dave = lan.client("10.0.0.3:4000", 4, "dave", 12);
    lan.run_op(dave, Op::Join("r".into()));
    lan.clients[dave].1.logout(Instant(lan.now));
    lan.pump();
    lan.run_until(5_000, |l| l.events.iter().any(|(j, e)| *j == dave && matches!(e, ClientEvent::LoggedOut { .. })));
    let alice = lan.client("10.0.0.2:5000", 2, "alice", 11);
    lan.run_op(alice, Op::Join("r".into()));
    const N: usize = 2_000;
    for k in 0..N {
        lan.run_op(alice, Op::Chat { to: Target::Room("r".into()), text: format!("m{k}") });
    }
    assert!(lan.events.iter().all(|(_, e)| !matches!(e, ClientEvent::Failed { .. })), "no send failed");
    // Stored once, whatever the room's size: one entry per message, owed by dave alone.
    let state = &lan.server.durable().chat.state;
    assert_eq!((state.owed_messages(), state.inbox_total()), (N, N));
    // Dave's next process is shown every one, once, in order, a page at a time.
    lan.shows = 0;
    let dave = lan.client("10.0.0.3:5000", 3, "dave", 12);
    lan.run_until(60_000, |l| l.shown(dave).len() >= N);
    lan.run_for(1_000);
    let texts: Vec<String> = lan.shown(dave).into_iter().map(|(_, t)| t).collect();
    let want: Vec<String> = (0..N).map(|k| format!("m{k}")).collect();
    assert_eq!(texts, want);
    assert!(lan.shows < N + N / 20, "{} shows sent for {N} messages: the login flooded its client", lan.shows);
    let state = &lan.server.durable().chat.state;
    assert_eq!((state.owed_messages(), state.inbox_total()), (0, 0), "acknowledged and dropped");
}

/// Mallory takes five shows and acknowledges them, saying which show number she waits for
/// next (`next`); returns how many skips the server sends her in the following second.
fn skips_after_acknowledging_five_shows(say_next: bool) -> usize {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.11:5000", 1, "alice", 11);
    let m = "10.6.6.6:666";
    raw_login(&mut lan, m, 3, "mallory", 66);
    for k in 0..5 {
        lan.say(alice, "mallory", &format!("m{k}"));
    }
    let mut taken = std::collections::BTreeMap::new();
    lan.run_until(2_000, |l| l.raw.iter().filter(|(a, s)| *a == addr(m) && matches!(s, ServerMsg::Show { .. })).count() >= 5);
    for s in lan.take_raw(m) {
        if let ServerMsg::Show { id, no, .. } = s {
            taken.insert(no, id);
        }
    }
    assert_eq!(taken.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let next = if say_next { 6 } else { 0 };
    lan.raw(m, ClientMsg::Ack { client: 3, ids: taken.into_values().collect(), attempt: 1, next });
    lan.run_for(1_000);
    lan.take_raw(m).into_iter().filter(|s| matches!(s, ServerMsg::Skip { .. })).count()
}

#[test]
fn an_acknowledged_show_is_never_skipped_afterwards() {
    assert_eq!(skips_after_acknowledging_five_shows(true), 0);
}

#[test]
fn without_the_next_number_the_server_skips_what_was_taken() {
    // What acknowledgements without `next` led to: a skip for every acknowledged show, resent
    // until the client's next ping.
    assert!(skips_after_acknowledging_five_shows(false) >= 5);
}

/// Mallory's retried send (held two seconds for the copy sent through another server) says it
/// has `left_ms` before her client gives up; returns whether the server ever broadcast it.
fn held_retry_broadcast(left_ms: u32) -> bool {
    let mut lan = Lan::new();
    lan.client("10.0.0.11:5000", 1, "alice", 11);
    let m = "10.6.6.6:666";
    raw_login(&mut lan, m, 3, "mallory", 66);
    let id = MsgId { client: 3, seq: 1 };
    lan.raw(m, ClientMsg::Send { id, op: chat("alice", "late"), ctx: Vc::new(), retry: true, left_ms });
    lan.run_for(3_000);
    lan.server.durable().chat.state.delivered_copy(id).is_some()
}

#[test]
fn a_send_is_never_broadcast_after_its_client_gave_up_on_it() {
    // One second left: the client reports it failed before the two-second hold is over.
    assert!(!held_retry_broadcast(1_000), "broadcast after its client reported it failed");
    // With time to spare, the same retry is broadcast once its hold is over.
    assert!(held_retry_broadcast(9_000), "a retry with time left was dropped");
}

/// Bob is shown five messages and quits cleanly at once, before the server's next
/// acknowledgement round: his next process must be shown none of them again.
#[test]
fn a_clean_quit_right_after_a_show_is_never_shown_again() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.2:1", 2, "alice", 22);
    let bob = lan.client("10.0.0.3:1", 3, "bob", 33);
    for k in 0..5 {
        lan.say(alice, "bob", &format!("m{k}"));
    }
    lan.run_until(2_000, |l| l.shown(bob).len() == 5);
    lan.clients[bob].1.logout(Instant(lan.now));
    lan.pump();
    let again = lan.client("10.0.0.4:1", 4, "bob", 33);
    lan.run_for(1_000);
    assert_eq!(lan.shown(again), Vec::<(String, String)>::new());
}

/// A private message to a name nobody holds is rejected with a reason, is never stored, and
/// leaves nothing behind that could pin the store.
#[test]
fn a_message_to_a_user_who_does_not_exist_is_rejected_and_kept_nowhere() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.2:1", 2, "alice", 22);
    let op = Op::Chat { to: Target::User("nobdoy".into()), text: "hi".into() };
    let id = lan.clients[alice].1.submit(Instant(lan.now), op).expect("submitted");
    lan.pump();
    lan.run_until(2_000, |l| l.events.iter().any(|(j, e)| *j == alice && matches!(e, ClientEvent::Rejected { id: r, .. } if *r == id)));
    lan.run_for(500);
    assert!(!lan.stored(alice, id));
    assert_eq!(lan.server.chat_stats().inbox, 0, "no inbox entry for a user who does not exist");
    // A real user is still reached.
    let _bob = lan.client("10.0.0.3:1", 3, "bob", 33);
    lan.say(alice, "bob", "hello bob");
}

/// What operators see: datagrams by kind, send-to-stored times, uptime and the build.
#[test]
fn a_server_reports_what_it_received_its_stored_times_and_its_uptime() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.2:1", 2, "alice", 22);
    let _bob = lan.client("10.0.0.3:1", 3, "bob", 33);
    let _ = lan.server.take_stored_latencies();
    lan.say(alice, "bob", "one");
    lan.say(alice, "bob", "two");
    let times = lan.server.take_stored_latencies();
    assert_eq!(times.len(), 2, "one time per stored send: {times:?}");
    assert!(lan.server.take_stored_latencies().is_empty(), "taken once");
    assert!(lan.server.received().get("send").copied().unwrap_or(0) >= 2);
    assert!(lan.server.received().get("login").copied().unwrap_or(0) >= 2);
    match lan.raw("10.9.9.9:1", ClientMsg::Status).as_slice() {
        [ServerMsg::Status(r)] => {
            assert!(r.uptime_ms >= 1, "uptime {}", r.uptime_ms);
            assert_eq!(r.members.len(), 1);
            assert_eq!(r.counters.rejected(), 0, "a healthy server rejected nothing");
        }
        other => panic!("no status: {other:?}"),
    }
}

/// A logout for a session this server never had (it restarted since, or the session timed out
/// here) is refused: its acknowledgements may never have been spread. A logout it confirmed is
/// confirmed again when the client retries it.
#[test]
fn a_logout_the_server_knows_nothing_of_is_refused_and_a_confirmed_one_is_confirmed_again() {
    let mut lan = Lan::new();
    let unknown = ClientMsg::Logout { client: 77, acks: vec![MsgId { client: 9, seq: 1 }] };
    assert_eq!(lan.raw("10.0.0.9:1", unknown), vec![ServerMsg::Refused { client: 77, reason: RefusalReason::NotLoggedIn }]);
    raw_login(&mut lan, "10.0.0.8:1", 88, "carol", 5);
    lan.run_for(500);
    let _ = lan.take_raw("10.0.0.8:1");
    let logout = ClientMsg::Logout { client: 88, acks: vec![] };
    assert_eq!(lan.raw("10.0.0.8:1", logout.clone()), vec![ServerMsg::LoggedOut { client: 88 }]);
    assert_eq!(lan.raw("10.0.0.8:1", logout.clone()), vec![ServerMsg::LoggedOut { client: 88 }], "a retry is confirmed again");
    // The same process logs in again, and its session times out here (its datagrams were cut
    // off): its next logout carries acknowledgements this server never spread, so the
    // confirmation of the first quit must not answer it.
    let again = login(88, "carol", 5, 2);
    if !lan.raw("10.0.0.8:1", again).iter().any(|m| matches!(m, ServerMsg::LoginOk { .. })) {
        lan.run_until(5_000, |l| l.raw.iter().any(|(a, m)| *a == addr("10.0.0.8:1") && matches!(m, ServerMsg::LoginOk { .. })));
    }
    lan.run_for(4_000);
    let _ = lan.take_raw("10.0.0.8:1");
    assert_eq!(lan.raw("10.0.0.8:1", logout), vec![ServerMsg::Refused { client: 88, reason: RefusalReason::NotLoggedIn }]);
}

/// A client whose causal context names more than any server holds (what it saw was only on
/// servers that lost their disks) is still logged in, and shown what the cluster has.
#[test]
fn a_login_whose_context_names_what_no_server_holds_is_still_served() {
    let mut lan = Lan::new();
    raw_login(&mut lan, "10.0.0.8:1", 88, "carol", 5);
    let mut ctx = Vc::new();
    ctx.insert(lan.server.node(), 1_000_000);
    let ClientMsg::Login { client, name, key, sig, attempt, .. } = login(89, "carol", 5, 1) else { unreachable!() };
    let got = lan.raw("10.0.0.9:1", ClientMsg::Login { client, name, key, sig, ctx, attempt });
    if !got.iter().any(|m| matches!(m, ServerMsg::LoginOk { client: 89, .. })) {
        lan.run_until(5_000, |l| l.raw.iter().any(|(a, m)| *a == addr("10.0.0.9:1") && matches!(m, ServerMsg::LoginOk { client: 89, .. })));
    }
}

#[test]
fn a_name_cannot_be_taken_without_its_key() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.11:5000", 1, "alice", 11);
    let before = lan.online();
    let m = "10.6.6.6:666";
    // Mallory's own key under alice's name: the name belongs to alice's key.
    let mut answer = lan.raw(m, login(5, "alice", 66, 1));
    if answer.is_empty() {
        lan.run_until(2_000, |l| l.raw.iter().any(|(a, _)| *a == addr(m)));
        answer = lan.take_raw(m);
    }
    assert_eq!(answer, vec![ServerMsg::LoginRefused { client: 5, reason: "name \"alice\" belongs to another key".into() }]);
    // Alice's public key with a signature that is not hers: refused before anything else.
    let forged = match login(6, "alice", 11, 1) {
        ClientMsg::Login { client, name, key, ctx, attempt, .. } => {
            ClientMsg::Login { client, name, key, sig: Signature([1; 32], [2; 32]), ctx, attempt }
        }
        _ => unreachable!(),
    };
    let bad = |client| vec![ServerMsg::LoginRefused { client, reason: "the login's signature does not verify".into() }];
    assert_eq!(lan.raw(m, forged), bad(6));
    // Alice's genuine signature, replayed for another client id: refused too.
    let replayed = match (login(1, "alice", 11, 1), login(7, "alice", 11, 1)) {
        (ClientMsg::Login { sig, .. }, ClientMsg::Login { client, name, key, ctx, attempt, .. }) => {
            ClientMsg::Login { client, name, key, sig, ctx, attempt }
        }
        _ => unreachable!(),
    };
    assert_eq!(lan.raw(m, replayed), bad(7));
    assert_eq!(lan.server.counters().bad_signature, 2, "each refusal is counted");
    lan.run_for(1_000);
    assert_eq!(lan.online(), before, "nothing changed");
    assert!(lan.clients[alice].1.is_online());
}

#[test]
fn who_lists_every_user_and_member_a_page_at_a_time() {
    let mut lan = Lan::new();
    let mut users = Vec::new();
    for n in 0..45u64 {
        let name = format!("user{n:02}");
        let i = lan.client(&format!("10.0.1.{n}:4000"), 100 + n, &name, 20 + n as u8);
        if n % 3 == 0 {
            lan.run_op(i, Op::Join("#r".into()));
        }
        users.push(name);
    }
    let m = "10.6.6.6:666";
    // Every page of `list` in order: its names, and how many pages it took.
    let pages = |lan: &mut Lan, list: WhoList| {
        let (mut got, mut pages, mut after) = (Vec::new(), 0, String::new());
        loop {
            let answer = lan.raw(m, ClientMsg::Who { client: 9, list: list.clone(), after: after.clone() });
            let [ServerMsg::Who { names, more, .. }] = answer.as_slice() else { panic!("{answer:?}") };
            pages += 1;
            got.extend(names.iter().cloned());
            after = names.last().map(|(n, _)| n.clone()).unwrap_or_default();
            if !*more {
                return (got, pages);
            }
            assert!(pages < 10, "no end");
        }
    };
    let (all, n) = pages(&mut lan, WhoList::Users);
    assert_eq!(all.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>(), users, "every user, in order");
    assert!(all.iter().all(|(_, online)| *online == 1), "all logged in");
    assert!(n >= 2, "45 names take more than one page");
    let (members, _) = pages(&mut lan, WhoList::Members("#r".into()));
    assert_eq!(members.len(), 15);
    let (rooms, _) = pages(&mut lan, WhoList::Rooms);
    assert_eq!(rooms, vec![("#r".to_string(), 15)]);
}

#[test]
fn a_text_over_the_bound_sent_anyway_is_rejected_naming_the_bound_and_reaches_no_one() {
    let mut lan = Lan::new();
    let bob = lan.client("10.0.0.12:5000", 2, "bob", 12);
    let from = "10.0.0.13:5000";
    raw_login(&mut lan, from, 3, "mallory", 13);
    let id = MsgId { client: 3, seq: 1 };
    let send = ClientMsg::Send { id, op: chat("bob", &"x".repeat(MAX_TEXT + 1)), ctx: Vc::new(), retry: false, left_ms: 5_000 };
    // In fragments, as a client that skipped its check would send it.
    for bytes in encode_datagrams(&Packet::FromClient(send), 1).expect("within MAX_MESSAGE") {
        lan.server.handle_datagram(Instant(lan.now), addr(from), &bytes);
    }
    lan.pump();
    let reason = Rejection::TextTooLong { max: MAX_TEXT as u32 };
    assert_eq!(lan.take_raw(from), vec![ServerMsg::Rejected { id, reason }]);
    assert!(reason.to_string().contains(&MAX_TEXT.to_string()), "{reason}");
    lan.run_for(1_000);
    assert!(lan.shown(bob).is_empty(), "bob was shown it");
    assert!(lan.take_raw(from).iter().all(|m| !matches!(m, ServerMsg::Stored { .. })), "it was stored");
}

#[test]
fn a_recipient_at_the_senders_server_is_shown_at_once_not_at_the_next_round() {
    let mut lan = Lan::new();
    let alice = lan.client("10.0.0.2:5000", 2, "alice", 11);
    let bob = lan.client("10.0.0.3:5000", 3, "bob", 12);
    lan.run_op(alice, Op::Join("r".into()));
    lan.run_op(bob, Op::Join("r".into()));
    lan.run_for(500);
    // Delivered instantly, with no time passing: no round or heartbeat runs in between.
    for (k, op) in [chat("bob", "private"), Op::Chat { to: Target::Room("r".into()), text: "room".into() }].into_iter().enumerate() {
        let text = if k == 0 { "private" } else { "room" };
        lan.clients[alice].1.submit(Instant(lan.now), op).expect("submitted");
        lan.pump();
        assert!(lan.shown(bob).iter().any(|(_, t)| t == text), "the {text} message waited for a timer");
    }
}
