//! Three servers on an instant, lossless network (datagrams delivered first in,
//! first out, in virtual time), driven through the core directly: races that
//! a random schedule rarely hits, made deterministic.

use ringchat_core::client::{Client, ClientConfig, ClientError, ClientEvent};
use ringchat_core::limits::{MAX_ROOM_MEMBERS, MAX_TEXT};
use ringchat_core::user::UserSecret;
use ringchat_core::wire::CausalMsg;
use ringchat_core::wire::{decode, encode, Body, Envelope, Packet};
use ringchat_core::wire::{ClientMsg, Op, ServerMsg};
use ringchat_core::wire::{Item, MsgId, Rejection, Target};
use ringchat_core::{ClusterId, Dest, Instant, NodeId, PlantedBug, Server, ServerConfig, ServerId, ViewStamp};
use std::collections::VecDeque;
use std::net::SocketAddr;

fn addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], port))
}

/// Servers and clients exchanging datagrams in virtual time.
struct Net {
    now: u64,
    servers: Vec<(SocketAddr, Server)>,
    clients: Vec<(SocketAddr, Client)>,
    /// In flight: (from, to, bytes).
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// What servers sent to addresses that are not clients: (to, message).
    raw: Vec<(SocketAddr, ServerMsg)>,
    /// Every client's events: (client index, event).
    events: Vec<(usize, ClientEvent)>,
    /// Client processes that died (they neither send nor receive).
    dead: Vec<bool>,
    /// A server cut off from the other servers (its clients still reach it).
    cut: Option<usize>,
    /// A server that loses every datagram carrying an acknowledgement.
    deaf_to_acks: Option<usize>,
    /// Each link (from, to) loses the second fragment of the first message it carries in
    /// fragments, when set; the links that lost one.
    fragment_loss: Option<Vec<(SocketAddr, SocketAddr)>>,
}

impl Net {
    /// Three servers that know each other's addresses, until they agree on a view of all three.
    fn cluster(plant: Option<PlantedBug>) -> Net {
        let mut net = Net::start(plant, None);
        net.run_until(10_000, |n| n.servers.iter().all(|(_, s)| s.committed_view().is_some_and(|v| v.members.len() == 3)));
        net
    }

    /// Three servers that know each other's addresses, starting with server `cut` cut off.
    /// (Server ids differ beyond their lowest bit, which a cluster id does not keep.)
    fn start(plant: Option<PlantedBug>, cut: Option<usize>) -> Net {
        let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(i, 7000)).collect();
        let servers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let join = addrs.iter().copied().filter(|b| b != a).collect();
                let cfg = ServerConfig { discovery: false, join, plant, ..ServerConfig::default() };
                (*a, Server::new(cfg, ServerId((i as u128 + 1) << 8), *a, None, i as u64, Instant(0)))
            })
            .collect();
        let mut net = Net {
            now: 0,
            servers,
            clients: Vec::new(),
            wire: VecDeque::new(),
            raw: Vec::new(),
            events: Vec::new(),
            dead: Vec::new(),
            cut,
            deaf_to_acks: None,
            fragment_loss: None,
        };
        net.pump();
        net
    }

    /// A client process logging in as `name` at server `at`, once logged in; returns its index.
    fn client(&mut self, at: usize, id: u64, name: &str) -> usize {
        let i = self.start_client(at, id, name);
        self.run_until(10_000, |n| n.clients[i].1.is_online());
        i
    }

    /// A client process that starts logging in as `name` at server `at`; returns its index.
    fn start_client(&mut self, at: usize, id: u64, name: &str) -> usize {
        let cfg = ClientConfig { servers: vec![self.servers[at].0], find: false, ..ClientConfig::default() };
        let mut c = Client::new(cfg, id, 0, Instant(self.now));
        c.login(Instant(self.now), name, UserSecret::from_seed([42; 32])).expect("a good name");
        self.clients.push((SocketAddr::from(([10, 1, (id >> 8) as u8, id as u8], 9000)), c));
        self.dead.push(false);
        self.clients.len() - 1
    }

    /// Queues what every node wants to send.
    fn collect(&mut self) {
        for (from, s) in &mut self.servers {
            while let Some(t) = s.poll_transmit() {
                if let Dest::Addr(to) = t.dest {
                    self.wire.push_back((*from, to, t.bytes));
                }
            }
            while s.poll_event().is_some() {}
        }
        for (i, (from, c)) in self.clients.iter_mut().enumerate() {
            while let Some((to, bytes)) = c.poll_transmit() {
                if !self.dead[i] {
                    self.wire.push_back((*from, to, bytes));
                }
            }
            while let Some(e) = c.poll_event() {
                self.events.push((i, e));
            }
        }
    }

    /// Whether the link between `a` and `b` is cut (only links between two servers are).
    fn is_cut(&self, a: SocketAddr, b: SocketAddr) -> bool {
        let server = |x: SocketAddr| self.servers.iter().position(|(s, _)| *s == x);
        match (server(a), server(b), self.cut) {
            (Some(i), Some(j), Some(k)) => i == k || j == k,
            _ => false,
        }
    }

    /// Whether the datagram carries an acknowledgement to the server deaf to them.
    fn is_lost_ack(&self, to: SocketAddr, bytes: &[u8]) -> bool {
        if self.deaf_to_acks.is_none_or(|k| self.servers[k].0 != to) {
            return false;
        }
        let is_ack = |m: &CausalMsg| matches!(*m.item, Item::Ack { .. });
        match decode(bytes) {
            Ok(Packet::Peer(Envelope { body: Body::Chat { msg }, .. })) => is_ack(&msg),
            Ok(Packet::Peer(Envelope { body: Body::ChatBatch { msgs }, .. })) => msgs.iter().any(is_ack),
            _ => false,
        }
    }

    /// Whether the datagram is the second fragment of the first long message on its link
    /// (see [`Net::fragment_loss`]).
    fn is_lost_fragment(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        let Some(lost) = self.fragment_loss.as_mut() else { return false };
        let second = decode(bytes).ok().is_some_and(|p| p.fragment().is_some_and(|f| f.index == 1));
        let first_on_link = !lost.contains(&(from, to));
        if second && first_on_link {
            lost.push((from, to));
        }
        second && first_on_link
    }

    /// Delivers datagrams, first in first out, until nothing is in flight.
    fn pump(&mut self) {
        let now = Instant(self.now);
        self.collect();
        while let Some((from, to, bytes)) = self.wire.pop_front() {
            if self.is_cut(from, to) || self.is_lost_ack(to, &bytes) || self.is_lost_fragment(from, to, &bytes) {
                continue;
            }
            if let Some((_, s)) = self.servers.iter_mut().find(|(a, _)| *a == to) {
                s.handle_datagram(now, from, &bytes);
            } else if let Some(i) = self.clients.iter().position(|(a, _)| *a == to) {
                if !self.dead[i] {
                    self.clients[i].1.handle_datagram(now, from, &bytes);
                }
            } else if let Ok(Packet::ToClient(m)) = decode(&bytes) {
                self.raw.push((to, m));
            }
            self.collect();
        }
    }

    /// Advances virtual time to the next deadline and runs it.
    fn step(&mut self) {
        let live = self.clients.iter().zip(&self.dead).filter(|(_, dead)| !**dead).map(|(c, _)| c);
        let deadlines = self.servers.iter().filter_map(|(_, s)| s.poll_timeout()).chain(live.filter_map(|(_, c)| c.poll_timeout()));
        let next = deadlines.min().expect("something is always scheduled");
        self.now = self.now.max(next.0);
        let now = Instant(self.now);
        for (_, s) in &mut self.servers {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        for ((_, c), dead) in self.clients.iter_mut().zip(&self.dead) {
            if !dead && c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        self.pump();
    }

    /// Whether client `i` was shown `id`.
    fn shown(&self, i: usize, id: MsgId) -> bool {
        self.events.iter().any(|(c, e)| *c == i && matches!(e, ClientEvent::Shown { id: x, .. } if *x == id))
    }

    fn run_until(&mut self, limit_ms: u64, done: impl Fn(&Net) -> bool) {
        let end = self.now + limit_ms * 1000;
        while !done(self) {
            assert!(self.now < end, "not done within {limit_ms} ms");
            self.step();
        }
    }

    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms * 1000;
        while self.now < end {
            self.step();
        }
    }

    /// Asks server `at` who is online, from a raw socket; returns the users it lists.
    fn who(&mut self, at: usize) -> Vec<(String, bool)> {
        let me = addr(200, 9999);
        let who = ClientMsg::Who { client: 77, list: ringchat_core::wire::WhoList::Users, after: String::new() };
        let bytes = encode(&Packet::FromClient(who)).expect("fits");
        self.wire.push_back((me, self.servers[at].0, bytes));
        self.pump();
        let answers: Vec<ServerMsg> = std::mem::take(&mut self.raw).into_iter().filter(|(to, _)| *to == me).map(|(_, m)| m).collect();
        match answers.as_slice() {
            [ServerMsg::Who { names, .. }] => names.iter().map(|(u, online)| (u.clone(), *online > 0)).collect(),
            other => panic!("expected one who answer, got {other:?}"),
        }
    }

    /// Each server's members of `room`.
    fn members(&self, room: &str) -> Vec<Vec<String>> {
        self.servers.iter().map(|(_, s)| s.durable().chat.state.members(room).into_iter().map(String::from).collect()).collect()
    }
}

/// User u2's old process (at server 0) leaves #r while its new process (at server 1)
/// joins it, at the same instant; returns each server's members of #r afterwards.
fn concurrent_leave_and_join(plant: Option<PlantedBug>) -> Vec<Vec<String>> {
    let mut net = Net::cluster(plant);
    let old = net.client(0, 1, "u2");
    let new = net.client(1, 2, "u2");
    let watcher = net.client(2, 3, "u3");
    net.run_for(1_000);
    let now = Instant(net.now);
    net.clients[old].1.submit(now, Op::Leave("#r".into())).expect("a leave");
    net.clients[new].1.submit(now, Op::Join("#r".into())).expect("a join");
    net.pump();
    net.run_until(5_000, |n| !n.clients[old].1.is_busy() && !n.clients[new].1.is_busy());
    // Something from the watcher, so every server has delivered everything before we look.
    net.clients[watcher].1.submit(Instant(net.now), Op::Chat { to: Target::User("u3".into()), text: "x".into() }).expect("a message");
    net.run_for(2_000);
    let delivered: Vec<_> = net.servers.iter().map(|(_, s)| s.durable().chat.causal.delivered.clone()).collect();
    assert!(delivered.windows(2).all(|w| w[0] == w[1]), "servers still catching up: {delivered:?}");
    net.members("#r")
}

#[test]
fn a_join_and_a_leave_of_one_user_sent_at_once_through_two_servers_agree_everywhere() {
    let members = concurrent_leave_and_join(None);
    assert!(members.windows(2).all(|w| w[0] == w[1]), "servers disagree on #r: {members:?}");
}

#[test]
fn applying_joins_and_leaves_in_delivery_order_splits_the_servers() {
    // The planted bug is what the test above guards against: each server keeps whichever
    // operation it delivered last, and server 0 and server 1 delivered them in opposite orders.
    let members = concurrent_leave_and_join(Some(PlantedBug::RoomsInDeliveryOrder));
    assert!(members.windows(2).any(|w| w[0] != w[1]), "the planted bug went unnoticed: {members:?}");
}

/// User u2's first process moved to server 1 and retries a leave of #r there; server 1 holds
/// the retry a while (waiting for the copy sent through the server it left). The process dies,
/// a new one logs in at server 2 and joins #r, and only then does server 1 broadcast the old
/// leave. Returns each server's members of #r afterwards.
fn late_leave_of_an_old_process(plant: Option<PlantedBug>) -> Vec<Vec<String>> {
    let mut net = Net::cluster(plant);
    // The old process is a bare socket: its leave is a retry from its first datagram on.
    let old = addr(50, 9000);
    let to = net.servers[1].0;
    let user = UserSecret::from_seed([42; 32]);
    let sig = user.sign_login(&[0; 32], 1, "u2");
    let login = ClientMsg::Login { client: 1, name: "u2".into(), key: user.public(), sig, ctx: Default::default(), attempt: 1 };
    net.wire.push_back((old, to, encode(&Packet::FromClient(login)).expect("fits")));
    net.run_until(2_000, |n| n.raw.iter().any(|(a, m)| *a == old && matches!(m, ServerMsg::LoginOk { .. })));
    let leave = MsgId { client: 1, seq: 1 };
    let send = ClientMsg::Send { id: leave, op: Op::Leave("#r".into()), ctx: Default::default(), retry: true, left_ms: 9_000 };
    net.wire.push_back((old, to, encode(&Packet::FromClient(send)).expect("fits")));
    net.pump();
    let new = net.client(2, 2, "u2");
    net.clients[new].1.submit(Instant(net.now), Op::Join("#r".into())).expect("a join");
    net.run_until(1_000, |n| !n.clients[new].1.is_busy());
    assert!(net.servers.iter().all(|(_, s)| s.durable().chat.state.delivered_copy(leave).is_none()), "the leave left too early");
    net.run_for(3_000);
    assert!(net.servers.iter().all(|(_, s)| s.durable().chat.state.delivered_copy(leave).is_some()), "the old leave was never broadcast");
    net.members("#r")
}

#[test]
fn an_old_process_late_leave_does_not_undo_its_successor_join() {
    let members = late_leave_of_an_old_process(None);
    assert!(members.iter().all(|m| m == &["u2"]), "u2 is not in the room it joined last: {members:?}");
}

#[test]
fn without_login_fences_an_old_process_late_leave_undoes_the_join() {
    // The planted bug orders joins and leaves by Lamport time alone: server 1 stamped the
    // leave after delivering the join, so the leave wins everywhere.
    let members = late_leave_of_an_old_process(Some(PlantedBug::Unfenced));
    assert!(members.iter().all(|m| m.is_empty()), "the planted bug went unnoticed: {members:?}");
}

#[test]
fn a_server_back_from_a_cut_catches_up_before_its_sessions_send() {
    // Server 2 is cut off long enough to be dropped from the view, while alice stays attached
    // to it; meanwhile bob joins #r through server 0. Once server 2 is a member again (a new
    // life), alice says something in #r at once.
    let mut net = Net::cluster(None);
    let alice = net.client(2, 1, "alice");
    let bob = net.client(0, 2, "bob");
    net.run_for(500);
    let before = net.servers[2].1.node();
    net.cut = Some(2);
    net.run_until(5_000, |n| n.servers[0].1.committed_view().is_some_and(|v| v.members.len() == 2));
    net.clients[bob].1.submit(Instant(net.now), Op::Join("#r".into())).expect("a join");
    net.run_until(1_000, |n| !n.clients[bob].1.is_busy());
    net.cut = None;
    let back = |n: &Net| n.servers[2].1.node() != before && n.servers[2].1.committed_view().is_some_and(|v| v.members.len() == 3);
    net.run_until(5_000, back);
    assert!(net.clients[alice].1.is_online(), "alice moved away from server 2");
    let id = net.clients[alice].1.submit(Instant(net.now), Op::Chat { to: Target::Room("#r".into()), text: "hi".into() }).expect("a send");
    net.pump();
    net.run_for(3_000);
    assert!(net.shown(bob, id), "bob, in #r, was never shown alice's message");
}

#[test]
fn a_message_stored_by_a_smaller_cluster_survives_its_merge_and_chat_goes_on() {
    // Server 2 starts cut off and founds a cluster of its own; servers 0 and 1 found another.
    let mut net = Net::start(None, Some(2));
    let size = |n: &Net, i: usize| n.servers[i].1.committed_view().map_or(0, |v| v.members.len());
    net.run_until(20_000, |n| size(n, 0) == 2 && size(n, 1) == 2 && size(n, 2) == 1);
    // Alice writes to bob through the one-server cluster, and carol to dave through the other:
    // each cluster stores its message and trims what the other never saw (the logins and name
    // bindings behind it).
    let alice = net.client(2, 1, "alice");
    let carol = net.client(0, 3, "carol");
    // Bob and dave exist (each claimed his name on his side) and are away.
    for (at, id, name) in [(2, 12, "bob"), (0, 14, "dave")] {
        let c = net.client(at, id, name);
        net.clients[c].1.logout(Instant(net.now));
        net.run_for(300);
    }
    let say = |net: &mut Net, c: usize, to: &str, text: &str| {
        let op = Op::Chat { to: Target::User(to.into()), text: text.into() };
        let id = net.clients[c].1.submit(Instant(net.now), op).expect("a send");
        net.run_until(1_000, |n| !n.clients[c].1.is_busy());
        id
    };
    let before = say(&mut net, alice, "bob", "before");
    let for_dave = say(&mut net, carol, "dave", "meanwhile");
    net.run_for(500);
    // The cut heals: the smaller cluster joins the larger.
    net.cut = None;
    let one = |n: &Net| {
        n.servers.iter().all(|(_, s)| s.committed_view().is_some_and(|v| v.members.len() == 3) && s.cluster() == n.servers[0].1.cluster())
    };
    net.run_until(20_000, one);
    let bob = net.client(0, 2, "bob");
    let dave = net.client(2, 4, "dave");
    net.run_until(5_000, |n| n.shown(bob, before) && n.shown(dave, for_dave));
    // Chat goes on through the server that merged.
    net.run_until(5_000, |n| n.clients[alice].1.is_online());
    let after = say(&mut net, alice, "bob", "after");
    net.run_until(5_000, |n| n.shown(bob, after));
}

#[test]
fn who_shows_a_user_online_at_every_server_and_offline_soon_after_it_leaves() {
    let mut net = Net::cluster(None);
    let alice = net.client(0, 1, "alice");
    net.client(1, 2, "bob");
    net.run_for(1_500);
    for at in 0..3 {
        let users = net.who(at);
        assert!(users.contains(&("alice".into(), true)) && users.contains(&("bob".into(), true)), "server {at}: {users:?}");
    }
    // Alice's process goes away without a word: her session times out at server 0, and the
    // others drop her with its next presence report.
    net.dead[alice] = true;
    net.run_for(15_000);
    for at in 0..3 {
        let users = net.who(at);
        assert!(users.contains(&("alice".into(), false)) && users.contains(&("bob".into(), true)), "server {at}: {users:?}");
    }
}

/// Bob sends alice a message; she is shown it at server 0 and acknowledges it, while server 2
/// (which delivered the message) loses every datagram that carries the acknowledgement.
/// Alice's process dies and a new one logs in at server 2 meanwhile. Returns whether the new
/// process was shown the message again.
fn relogin_at_a_server_that_missed_the_ack(plant: Option<PlantedBug>) -> bool {
    let mut net = Net::cluster(plant);
    let old = net.client(0, 1, "alice");
    let bob = net.client(1, 2, "bob");
    net.run_for(1_000);
    let id = net.clients[bob].1.submit(Instant(net.now), Op::Chat { to: Target::User("alice".into()), text: "hi".into() }).expect("a send");
    net.pump();
    let in_inbox_at_2 = |n: &Net| n.servers[2].1.durable().chat.state.owes("alice", id);
    net.run_until(2_000, |n| n.shown(old, id) && in_inbox_at_2(n));
    net.deaf_to_acks = Some(2);
    // The acknowledgement spreads in the next round, to server 1 only.
    net.run_for(500);
    net.dead[old] = true;
    let new = net.start_client(2, 3, "alice");
    net.run_for(1_500);
    net.deaf_to_acks = None;
    net.run_until(5_000, |n| n.clients[new].1.is_online());
    net.run_for(5_000);
    net.shown(new, id)
}

#[test]
fn a_login_at_a_server_that_missed_the_ack_is_not_shown_the_message_again() {
    assert!(!relogin_at_a_server_that_missed_the_ack(None), "alice was shown an acknowledged message again");
}

#[test]
fn showing_a_login_its_inbox_at_once_reshows_an_acknowledged_message() {
    // The planted bug the login gate guards against: the stale server shows its inbox at once.
    assert!(relogin_at_a_server_that_missed_the_ack(Some(PlantedBug::ReplayAtOnce)), "the planted bug went unnoticed");
}

#[test]
fn a_heartbeat_from_another_cluster_leaves_no_trace_in_the_chat_state() {
    // A server of another cluster (or a forged datagram) must not join the servers whose
    // holdings the cluster waits on, or vectors would name its origins forever.
    let mut net = Net::cluster(None);
    let stranger = NodeId { id: ServerId(0xdead), incarnation: 1 };
    let body = Body::Heartbeat {
        leader: Some(stranger),
        committed: ViewStamp::default(),
        latest: ViewStamp::default(),
        digest: Default::default(),
    };
    let bytes = encode(&Packet::Peer(Envelope { cluster: ClusterId(0xbeef), from: stranger, epoch: 1, body })).expect("fits");
    let before = net.servers[0].1.counters().foreign_cluster;
    net.wire.push_back((addr(9, 7000), net.servers[0].0, bytes));
    net.pump();
    let s = &net.servers[0].1;
    assert_eq!(s.counters().foreign_cluster, before + 1);
    assert!(!s.durable().chat.causal.known.contains(&stranger.id), "the stranger became a known server");
}

/// Hands client `c`'s queued datagrams to their server and returns, in order, the peers that
/// server copies chat messages to at once (one entry per datagram) and how many messages each
/// datagram carries.
fn copies_sent_at_once(net: &mut Net, c: usize) -> Vec<(SocketAddr, usize)> {
    let now = Instant(net.now);
    let from = net.clients[c].0;
    let mut copies = Vec::new();
    while let Some((to, bytes)) = net.clients[c].1.poll_transmit() {
        let (_, s) = net.servers.iter_mut().find(|(a, _)| *a == to).expect("sent to a server");
        s.handle_datagram(now, from, &bytes);
        while let Some(t) = s.poll_transmit() {
            let Dest::Addr(peer) = t.dest else { continue };
            match decode(&t.bytes) {
                Ok(Packet::Peer(Envelope { body: Body::Chat { .. }, .. })) => copies.push((peer, 1)),
                Ok(Packet::Peer(Envelope { body: Body::ChatBatch { msgs }, .. })) => copies.push((peer, msgs.len())),
                _ => {}
            }
            net.wire.push_back((to, peer, t.bytes));
        }
    }
    copies
}

#[test]
fn a_message_is_copied_first_to_the_server_where_its_recipient_is_logged_in() {
    let mut net = Net::cluster(None);
    let alice = net.client(0, 1, "alice");
    net.client(2, 2, "bob");
    // Presence reports tell server 0 that bob is at server 2.
    net.run_for(1_500);
    let now = Instant(net.now);
    net.clients[alice].1.submit(now, Op::Chat { to: Target::User("bob".into()), text: "hi".into() }).expect("a message");
    let copies = copies_sent_at_once(&mut net, alice);
    assert_eq!(copies, vec![(net.servers[2].0, 1)], "one copy, to bob's server, at once; server 1's can wait");
}

#[test]
fn copies_a_majority_does_not_need_wait_for_the_next_broadcast_or_a_millisecond() {
    let mut net = Net::cluster(None);
    let alice = net.client(0, 1, "alice");
    let carol = net.client(0, 3, "carol");
    net.client(1, 2, "bob");
    net.run_for(1_500);
    let origin = net.servers[0].1.node();
    let held = |net: &Net, s: usize| net.servers[s].1.durable().chat.causal.delivered.get(&origin).copied().unwrap_or(0);
    let say = |net: &mut Net, c: usize, text: &str| {
        let now = Instant(net.now);
        let id = net.clients[c].1.submit(now, Op::Chat { to: Target::User("bob".into()), text: text.into() }).expect("a message");
        (id, copies_sent_at_once(net, c))
    };
    // Servers 0 and 1 are a majority: the message is stored without server 2.
    let start = net.now;
    let before = held(&net, 2);
    let (id, copies) = say(&mut net, alice, "one");
    assert_eq!(copies, vec![(net.servers[1].0, 1)]);
    net.pump();
    assert!(net.events.iter().any(|(i, e)| *i == alice && matches!(e, ClientEvent::Stored { id: x } if *x == id)));
    assert_eq!(held(&net, 2), before);
    // On a quiet server, server 2's copy leaves when the deferral is up.
    let due = Instant(start + ringchat_core::chat::server::COPY_DEFER_US);
    assert!(net.servers[0].1.poll_timeout().is_some_and(|t| t <= due));
    net.now = due.0;
    net.servers[0].1.handle_timeout(due);
    net.pump();
    assert_eq!(held(&net, 2), before + 1);
    // A waiting copy rides along with the next broadcast, packed with that one's copy.
    let (_, copies) = say(&mut net, carol, "two");
    assert_eq!(copies, vec![(net.servers[1].0, 1)]);
    let (_, copies) = say(&mut net, alice, "three");
    assert_eq!(copies, vec![(net.servers[1].0, 1), (net.servers[2].0, 2)]);
    net.pump();
    assert_eq!(held(&net, 2), held(&net, 0));
}

#[test]
fn a_survivor_whose_majority_restarted_without_state_joins_their_new_cluster() {
    // Run as the README shows (no `--state`): servers 1 and 2 are killed and started again on
    // their ports with the same join lists, as new servers (new ids); server 0 survives, alone
    // in a view of three whose majority will never come back under the old ids.
    let mut net = Net::cluster(None);
    let old = net.servers[0].1.cluster();
    let alice = net.client(0, 1, "alice");
    let addrs: Vec<SocketAddr> = net.servers.iter().map(|(a, _)| *a).collect();
    for i in [1, 2] {
        let join = addrs.iter().copied().filter(|b| *b != addrs[i]).collect();
        let cfg = ServerConfig { discovery: false, join, ..ServerConfig::default() };
        net.servers[i].1 = Server::new(cfg, ServerId((i as u128 + 11) << 8), addrs[i], None, 10 + i as u64, Instant(net.now));
    }
    net.pump();
    // One cluster (not the old one) of the three, all following one leader.
    let one = |n: &Net| {
        let s0 = &n.servers[0].1;
        let leader = n.servers.iter().find(|(_, s)| s.is_leader()).map(|(_, s)| s.node());
        s0.cluster() != old
            && leader.is_some()
            && n.servers.iter().all(|(_, s)| {
                s.cluster() == s0.cluster() && s.leader() == leader && s.committed_view().is_some_and(|v| v.members.len() == 3)
            })
    };
    net.run_until(30_000, one);
    // The survivor's user chats again (her client logs in again there) with a user of the others.
    let bob = net.client(1, 2, "bob");
    net.run_until(10_000, |n| n.clients[alice].1.is_online());
    let id =
        net.clients[alice].1.submit(Instant(net.now), Op::Chat { to: Target::User("bob".into()), text: "back".into() }).expect("a send");
    net.run_until(10_000, |n| n.shown(bob, id));
}

/// A room of [`MAX_ROOM_MEMBERS`] users logged in at the three servers in turn; returns the
/// network and the members' client indices.
fn full_room() -> (Net, Vec<usize>) {
    let mut net = Net::cluster(None);
    let members: Vec<usize> = (0..MAX_ROOM_MEMBERS).map(|k| net.start_client(k % 3, k as u64 + 1, &format!("m{k}"))).collect();
    net.run_until(60_000, |n| members.iter().all(|&i| n.clients[i].1.is_online()));
    for &i in &members {
        net.clients[i].1.submit(Instant(net.now), Op::Join("#big".into())).expect("a join");
    }
    net.run_until(60_000, |n| members.iter().all(|&i| !n.clients[i].1.is_busy()));
    let stored = net.events.iter().filter(|(_, e)| matches!(e, ClientEvent::Stored { .. })).count();
    assert_eq!(stored, MAX_ROOM_MEMBERS, "every join was stored");
    for (_, s) in &net.servers {
        assert_eq!(s.durable().chat.state.members("#big").len(), MAX_ROOM_MEMBERS);
    }
    (net, members)
}

#[test]
fn a_room_of_a_thousand_members_reaches_every_member() {
    let (mut net, members) = full_room();
    let from = members[0];
    let id =
        net.clients[from].1.submit(Instant(net.now), Op::Chat { to: Target::Room("#big".into()), text: "all".into() }).expect("a send");
    net.run_until(10_000, |n| !n.clients[from].1.is_busy());
    net.run_for(3_000);
    let reached: std::collections::BTreeSet<usize> =
        net.events.iter().filter(|(_, e)| matches!(e, ClientEvent::Shown { id: x, .. } if *x == id)).map(|(c, _)| *c).collect();
    let want: std::collections::BTreeSet<usize> = members[1..].iter().copied().collect();
    assert_eq!(reached, want, "{} of {} members were shown it", reached.len(), want.len());
}

#[test]
fn a_join_beyond_the_room_bound_is_refused_and_the_client_is_told() {
    let (mut net, _) = full_room();
    let late = net.client(1, 5000, "late");
    let id = net.clients[late].1.submit(Instant(net.now), Op::Join("#big".into())).expect("a join");
    net.run_until(10_000, |n| !n.clients[late].1.is_busy());
    let told = net.events.iter().any(|(c, e)| {
        *c == late && matches!(e, ClientEvent::Rejected { id: x, reason: Rejection::RoomFull { max } } if *x == id && *max as usize == MAX_ROOM_MEMBERS)
    });
    assert!(told, "the client was not told the room is full");
    net.run_for(1_000);
    for (_, s) in &net.servers {
        let members = s.durable().chat.state.members("#big");
        assert!(members.len() == MAX_ROOM_MEMBERS && !members.contains(&"late"), "the refused join counted somewhere");
    }
}

/// A text of `len` bytes that shows where a piece went missing or moved.
fn long_text(len: usize) -> String {
    (0..len).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect()
}

/// Client `from` sends `text` to `to` and waits until client `at` is shown it; returns what it
/// was shown.
fn send_and_show(net: &mut Net, from: usize, to: Target, text: &str, at: usize) -> String {
    let id = net.clients[from].1.submit(Instant(net.now), Op::Chat { to, text: text.to_string() }).expect("within the bound");
    net.run_until(10_000, |n| n.shown(at, id));
    let shown = net.events.iter().find_map(|(c, e)| match e {
        ClientEvent::Shown { id: x, text, .. } if *c == at && *x == id => Some(text.clone()),
        _ => None,
    });
    shown.expect("shown")
}

#[test]
fn a_message_of_four_thousand_bytes_crosses_the_cluster_intact() {
    let mut net = Net::cluster(None);
    let al = net.client(0, 1, "al");
    let bo = net.client(2, 2, "bo");
    let text = long_text(4_000);
    assert_eq!(send_and_show(&mut net, al, Target::User("bo".into()), &text, bo), text);
    // To a room, too: the sender's server, the other servers and the show all carried it in
    // fragments of at most one datagram each.
    for c in [al, bo] {
        net.clients[c].1.submit(Instant(net.now), Op::Join("#long".into())).expect("a join");
        net.run_until(5_000, |n| !n.clients[c].1.is_busy());
    }
    let text = long_text(MAX_TEXT);
    assert_eq!(send_and_show(&mut net, bo, Target::Room("#long".into()), &text, al), text);
    for (_, s) in &net.servers {
        assert!(s.received().get("fragment").is_some_and(|&n| n >= 4), "a server received no fragments");
        assert_eq!(s.counters().fragments_dropped, 0);
    }
}

#[test]
fn a_long_message_whose_fragments_are_lost_on_every_link_still_arrives_intact() {
    // The second fragment of the first long message on each link is lost: the client's send
    // (it retries), the copies between servers (anti-entropy asks again) and the show (the
    // server shows it again) each lose one and are repaired whole.
    let mut net = Net::cluster(None);
    let al = net.client(0, 1, "al");
    let bo = net.client(2, 2, "bo");
    net.fragment_loss = Some(Vec::new());
    let text = long_text(3_000);
    assert_eq!(send_and_show(&mut net, al, Target::User("bo".into()), &text, bo), text);
    let lost = net.fragment_loss.as_ref().expect("set");
    let (client_al, client_bo) = (net.clients[al].0, net.clients[bo].0);
    assert!(lost.contains(&(client_al, net.servers[0].0)), "the send lost no fragment: {lost:?}");
    assert!(lost.contains(&(net.servers[2].0, client_bo)), "the show lost no fragment: {lost:?}");
    assert!(
        lost.iter().any(|(a, b)| net.servers.iter().any(|(s, _)| s == a) && net.servers.iter().any(|(s, _)| s == b)),
        "no copy lost one"
    );
    let shows = net.events.iter().filter(|(c, e)| *c == bo && matches!(e, ClientEvent::Shown { .. })).count();
    assert_eq!(shows, 1, "shown once");
}

#[test]
fn a_text_over_the_bound_is_refused_at_the_client_and_nothing_is_sent() {
    let mut net = Net::cluster(None);
    let al = net.client(0, 1, "al");
    net.pump();
    let text = "x".repeat(MAX_TEXT + 1);
    let err = net.clients[al].1.submit(Instant(net.now), Op::Chat { to: Target::User("bo".into()), text }).expect_err("refused");
    assert_eq!(err, ClientError::TooLong { len: MAX_TEXT + 1, max: MAX_TEXT });
    assert!(err.to_string().contains(&MAX_TEXT.to_string()), "the error names the bound: {err}");
    assert!(net.clients[al].1.poll_transmit().is_none(), "something was sent");
    assert!(!net.clients[al].1.is_busy());
}
