//! Room membership converges: three servers on an instant, lossless network
//! (datagrams delivered first in, first out), two client processes of one user
//! attached to different servers, and a join and a leave of that user sent at
//! the same instant. Each server broadcasts its own operation before it receives
//! the other one, so the two are concurrent and every server delivers them in
//! its own order.

use ringchat_core::chat::Target;
use ringchat_core::client::{Client, ClientConfig};
use ringchat_core::client_wire::Op;
use ringchat_core::{Dest, Instant, PlantedBug, Server, ServerConfig, ServerId};
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
}

impl Net {
    /// Three servers that know each other's addresses, until they agree on a view of all three.
    fn cluster(plant: Option<PlantedBug>) -> Net {
        let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(i, 7000)).collect();
        let servers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let join = addrs.iter().copied().filter(|b| b != a).collect();
                let cfg = ServerConfig { discovery: false, join, plant, ..ServerConfig::default() };
                (*a, Server::new(cfg, ServerId(i as u128 + 1), *a, None, i as u64, Instant(0)))
            })
            .collect();
        let mut net = Net { now: 0, servers, clients: Vec::new(), wire: VecDeque::new() };
        net.run_until(10_000, |n| n.servers.iter().all(|(_, s)| s.committed_view().is_some_and(|v| v.members.len() == 3)));
        net
    }

    /// A client process logging in as `name` at server `at`; returns its index.
    fn client(&mut self, at: usize, id: u64, name: &str) -> usize {
        let cfg = ClientConfig { servers: vec![self.servers[at].0], find: false, ..ClientConfig::default() };
        let mut c = Client::new(cfg, id, 0, Instant(self.now));
        c.login(Instant(self.now), name, 42).expect("a good name");
        self.clients.push((addr(id as usize, 9000), c));
        let i = self.clients.len() - 1;
        self.run_until(10_000, |n| n.clients[i].1.is_online());
        i
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
        for (from, c) in &mut self.clients {
            while let Some((to, bytes)) = c.poll_transmit() {
                self.wire.push_back((*from, to, bytes));
            }
            while c.poll_event().is_some() {}
        }
    }

    /// Delivers datagrams, first in first out, until nothing is in flight.
    fn pump(&mut self) {
        let now = Instant(self.now);
        self.collect();
        while let Some((from, to, bytes)) = self.wire.pop_front() {
            if let Some((_, s)) = self.servers.iter_mut().find(|(a, _)| *a == to) {
                s.handle_datagram(now, from, &bytes);
            } else if let Some((_, c)) = self.clients.iter_mut().find(|(a, _)| *a == to) {
                c.handle_datagram(now, from, &bytes);
            }
            self.collect();
        }
    }

    /// Advances virtual time to the next deadline and runs it.
    fn step(&mut self) {
        let deadlines =
            self.servers.iter().filter_map(|(_, s)| s.poll_timeout()).chain(self.clients.iter().filter_map(|(_, c)| c.poll_timeout()));
        let next = deadlines.min().expect("something is always scheduled");
        self.now = self.now.max(next.0);
        let now = Instant(self.now);
        for (_, s) in &mut self.servers {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        for (_, c) in &mut self.clients {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        self.pump();
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
