//! Simulated chat clients and their workload: users log in and out, stay
//! offline for long stretches, join and leave rooms, send private and room
//! messages and reply to what they were shown; client processes crash. An
//! impostor keeps trying to log in under other users' names.
//!
//! Clients share the servers' network model (latency, loss, duplicates); a
//! partition puts each client on the side of its home server.

use super::{Item, World};
use crate::history::{ChatHappening, ChatOp};
use crate::report::ChatReport;
use rand::{Rng, RngCore};
use ringchat_core::client::{Client, ClientConfig, ClientError, ClientEvent};
use ringchat_core::seal::channel::ClientChannel;
use ringchat_core::seal::StandIn;
use ringchat_core::user::UserSecret;
use ringchat_core::wire::Op;
use ringchat_core::wire::{MsgId, Target};
use ringchat_core::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A simulated client process slot (one user; lives come and go).
pub(super) struct Proc {
    pub user: usize,
    pub addr: SocketAddr,
    pub client: Option<Client>,
    /// The process life's channel to the cluster (`None`: the run is unsealed).
    pub channel: Option<ClientChannel<StandIn>>,
    pub life: u64,
    pub token: u64,
    pub timer_at: Option<u64>,
    pub generation: u64,
    pub offline_until: u64,
    pub last_shown: Option<(MsgId, String, Option<String>)>,
    pub rooms: BTreeSet<String>,
    pub impostor: bool,
    pub name: String,
    /// A careless user idles (logged in, doing nothing) until then.
    pub idle_until: u64,
    /// A careless user quits cleanly right after the next show.
    pub quit_after_show: bool,
    /// The process quits once its logout is through.
    pub quitting: bool,
}

/// The discovery group of the simulated LAN: a client datagram sent there
/// reaches every server (as multicast would).
pub const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 77, 77)), 7777);

/// The address of client slot `c`.
pub fn client_addr(c: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, (c / 250) as u8, (c % 250 + 1) as u8)), 9000)
}

/// Workload bookkeeping kept by the world.
#[derive(Default)]
pub(super) struct Chat {
    pub procs: Vec<Proc>,
    pub sent_at: BTreeMap<MsgId, u64>,
    pub delays: Vec<u64>,
    pub report: ChatReport,
    pub vc_bytes: u64,
    pub vc_msgs: u64,
    /// Users whose owner has logged in (the impostor only tries those names).
    pub registered: Vec<usize>,
    /// Broadcasts already written to the trace.
    pub traced: BTreeSet<(ringchat_core::NodeId, u64)>,
}

pub(super) fn user_name(u: usize) -> String {
    format!("u{u}")
}

/// 32 bytes drawn from `seed` and `n` alone (keys the simulator makes without touching the
/// run's random stream).
pub(super) fn seed_bytes(seed: u64, n: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&ringchat_core::id::mix64(seed ^ ringchat_core::id::mix64(n ^ i as u64)).to_le_bytes());
    }
    out
}

/// The user key a simulated user (or impostor) holds: a function of its token, so every
/// process of one user holds the same key and an impostor holds another.
pub(super) fn user_secret(token: u64) -> UserSecret {
    UserSecret::from_seed(seed_bytes(0x05E7, token))
}

impl World {
    pub(super) fn setup_clients(&mut self) {
        let m = self.cfg.clients;
        if m == 0 {
            return;
        }
        for c in 0..=m {
            let token = self.rng.next_u64() | 1;
            let addr = client_addr(c);
            let e = self.nodes.len() + c;
            self.by_addr.insert(addr, e);
            self.chat.procs.push(Proc {
                user: c,
                addr,
                client: None,
                channel: None,
                life: 0,
                token,
                timer_at: None,
                generation: 0,
                offline_until: 0,
                last_shown: None,
                rooms: BTreeSet::new(),
                impostor: c == m,
                name: user_name(c),
                idle_until: 0,
                quit_after_show: false,
                quitting: false,
            });
            let first = 300_000 + self.rng.random_range(0..1_500_000);
            self.queue.push(first, Item::Act { c });
        }
    }

    /// A new client process for slot `c`. It knows one server's address (a
    /// seeded pick) and asks it for an assignment; even slots also ask the
    /// discovery group. The cluster's answer decides where it logs in.
    fn new_life(&mut self, c: usize) {
        let known = self.rng.random_range(0..self.nodes.len().max(1));
        let servers: Vec<SocketAddr> = self.nodes.get(known).map(|n| n.addr).into_iter().collect();
        let group = c.is_multiple_of(2).then_some(GROUP);
        let p = &mut self.chat.procs[c];
        p.life += 1;
        let id = ((c as u64 + 1) << 32) | p.life;
        // The life's ephemeral key comes from the seed and the process id, not the run's
        // random stream, so sealing changes no other draw.
        p.channel = self.ring.as_ref().map(|ring| ClientChannel::new(ring.identity_public(), seed_bytes(self.cfg.seed ^ 0xC4A7, id), None));
        let channel = p.channel.as_ref().map(ClientChannel::id);
        p.client = Some(Client::new(ClientConfig { servers, group, channel, ..ClientConfig::default() }, id, 0, Instant(self.now)));
        p.last_shown = None;
    }

    pub(super) fn login(&mut self, c: usize, name: String, token: u64) {
        if self.chat.procs[c].client.is_none() {
            self.new_life(c);
        }
        let now = self.now;
        let p = &mut self.chat.procs[c];
        p.name = name.clone();
        let Some(process) = p.client.as_ref().map(Client::id) else { return };
        // The impostor tries its victim's name with its own key (every other life: only a
        // leader that rebinds names takes it, the planted `RebindNames`), or claims the
        // victim's public key (no secret) with a signature of its own (only a server that
        // forgets to check signatures takes it, the planted `TrustAnyLogin`).
        let claims = p.impostor && name != user_name(p.user) && process % 2 == 0;
        let victim = claims.then(|| self.chat.procs.iter().find(|q| !q.impostor && q.name == name)).flatten();
        let claim = victim.map(|v| user_secret(v.token).public());
        let p = &mut self.chat.procs[c];
        let Some(cl) = p.client.as_mut() else { return };
        let started = match claim {
            Some(key) => {
                let binding = p.channel.as_ref().map_or([0; 32], |ch| ch.id().0);
                let sig = user_secret(token).sign_login(&binding, process, &name);
                cl.login_claiming(Instant(now), &name, key, sig)
            }
            None => cl.login(Instant(now), &name, user_secret(token)),
        };
        if started.is_ok() {
            let user = p.user;
            self.history.push_chat(now, process, user, ChatHappening::Login { name, token });
        }
        self.client_drain(c);
    }

    /// One workload step of client slot `c`.
    pub(super) fn act(&mut self, c: usize) {
        let now = self.now;
        let heal = self.history.heal_at;
        let chaos = now < heal;
        let send_until = heal + 3_000_000;
        let w = &self.cfg.workload;
        let (crash, logout, room_change, reply) = (w.crash, w.logout, w.room_change, w.reply);
        let next = now + w.think_ms * 1_000 + self.rng.random_range(0..w.think_spread_ms.max(1) * 1_000);
        self.queue.push(next, Item::Act { c });
        let m = self.cfg.clients;
        let p = &self.chat.procs[c];
        let active = p.client.as_ref().is_some_and(|cl| cl.is_active());
        let online = p.client.as_ref().is_some_and(|cl| cl.is_online());
        if p.impostor {
            if !chaos {
                return;
            }
            if active {
                if self.rng.random_bool(0.3) {
                    self.logout(c);
                }
            } else if !self.chat.registered.is_empty() && self.rng.random_bool(0.3) {
                let victim = self.chat.registered[self.rng.random_range(0..self.chat.registered.len())];
                let token = p.token;
                self.chat.procs[c].client = None;
                self.login(c, user_name(victim), token);
            }
            return;
        }
        if !active {
            if now >= p.offline_until || !chaos {
                let token = p.token;
                self.login(c, user_name(c), token);
            }
            return;
        }
        if !online && chaos && self.life.client_churn > 0.0 && self.rng.random_bool(self.life.client_churn) {
            // A process stuck logging in is killed by its impatient user; the next one is new.
            self.quit(c, false);
            return;
        }
        let p = &self.chat.procs[c];
        if !online || p.idle_until > now {
            return;
        }
        if chaos && self.rng.random_bool(crash) {
            let p = &mut self.chat.procs[c];
            if let Some(cl) = p.client.take() {
                self.history.push_chat(now, cl.id(), p.user, ChatHappening::Crash);
            }
            p.offline_until = now + self.rng.random_range(500_000..6_000_000);
            return;
        }
        if chaos && self.rng.random_bool(logout) {
            self.logout(c);
            self.chat.procs[c].offline_until = now + self.rng.random_range(2_000_000..10_000_000);
            return;
        }
        if chaos && self.life_act(c) {
            return;
        }
        if now >= send_until || self.chat.procs[c].client.as_ref().is_some_and(|cl| cl.is_busy()) {
            return;
        }
        let careless = if chaos { self.careless_op() } else { None };
        let rooms = self.cfg.rooms.max(1);
        let r: f64 = self.rng.random();
        let p = &self.chat.procs[c];
        let (op, rec) = if let Some(careless) = careless {
            careless
        } else if p.rooms.is_empty() || r < room_change {
            // Every user's first room is r0, so one room holds every client (large rooms are
            // exercised at every scale); later changes pick any room.
            // A run of 16 clients or more puts every user in r0 first, so one room holds every
            // client (rooms far past the 17 members they once stopped at); smaller runs spread
            // users over the rooms. Later changes pick any room.
            let first = if self.cfg.clients >= 16 { 0 } else { c % rooms };
            let room = format!("r{}", if p.rooms.is_empty() { first } else { self.rng.random_range(0..rooms) });
            if p.rooms.contains(&room) && self.rng.random_bool(0.5) {
                (Op::Leave(room.clone()), ChatOp::Leave(room))
            } else {
                (Op::Join(room.clone()), ChatOp::Join(room))
            }
        } else {
            let (to, reply_to) = match (&p.last_shown, r) {
                (Some((id, from, room)), r) if r < room_change + reply => {
                    let to = match room {
                        Some(room) => Target::Room(room.clone()),
                        None => Target::User(from.clone()),
                    };
                    (to, Some(*id))
                }
                (_, r) if r < room_change + reply + (1.0 - room_change - reply) / 2.0 => {
                    let joined: Vec<&String> = p.rooms.iter().collect();
                    let room = joined[self.rng.random_range(0..joined.len())].clone();
                    (Target::Room(room), None)
                }
                _ => {
                    let mut u = self.rng.random_range(0..m);
                    if u == c {
                        u = (u + 1) % m;
                    }
                    (Target::User(user_name(u)), None)
                }
            };
            // One message in a hundred is too long (refused at the client), three are long
            // (1 kB to the bound: they travel in fragments), the rest short.
            let text = match self.rng.random_range(0..100) {
                0 => "x".repeat(ringchat_core::limits::MAX_TEXT + 1),
                1..=3 => long_text(now, self.rng.random_range(1_000..=ringchat_core::limits::MAX_TEXT)),
                _ => format!("hi {now}"),
            };
            (Op::Chat { to: to.clone(), text }, ChatOp::Chat { to, reply_to })
        };
        let p = &mut self.chat.procs[c];
        let Some(cl) = p.client.as_mut() else { return };
        match cl.submit(Instant(now), op) {
            Ok(id) => {
                match &rec {
                    ChatOp::Join(room) => {
                        p.rooms.insert(room.clone());
                    }
                    ChatOp::Leave(room) => {
                        p.rooms.remove(room);
                    }
                    ChatOp::Chat { .. } => {
                        self.chat.report.sent += 1;
                        self.chat.sent_at.insert(id, now);
                    }
                }
                let user = p.user;
                if self.cfg.trace {
                    let text = ChatHappening::Sent { id, op: rec.clone() }.to_string();
                    self.trace_line(Some(self.nodes.len() + c), None, "client", || text);
                }
                self.history.push_chat(now, id.client, user, ChatHappening::Sent { id, op: rec });
            }
            Err(ClientError::TooLong { .. }) => self.chat.report.too_long += 1,
            Err(_) => {}
        }
        self.client_drain(c);
    }

    pub(super) fn logout(&mut self, c: usize) {
        let now = self.now;
        let p = &mut self.chat.procs[c];
        let Some(cl) = p.client.as_mut() else { return };
        cl.logout(Instant(now));
        let (process, user) = (cl.id(), p.user);
        self.history.push_chat(now, process, user, ChatHappening::Logout);
        self.client_drain(c);
    }

    pub(super) fn client_deliver(&mut self, c: usize, from: usize, bytes: &[u8]) {
        let from_addr = self.nodes[from].addr;
        let now = self.now;
        let p = &mut self.chat.procs[c];
        let Some(cl) = p.client.as_mut() else { return };
        let opened;
        let bytes = match p.channel.as_mut() {
            Some(ch) => match ch.open(bytes) {
                Ok(plain) => {
                    opened = plain;
                    &opened[..]
                }
                Err(_) => return self.count_fault("channel_refused"),
            },
            None => bytes,
        };
        cl.handle_datagram(Instant(now), from_addr, bytes);
        if self.cfg.trace {
            if let Ok(ringchat_core::wire::Packet::ToClient(m)) = ringchat_core::wire::decode(bytes) {
                let text = format!("recv from {}: {}", self.name_of(from), crate::names::server_msg(&m));
                self.trace_line(Some(self.nodes.len() + c), Some(from), m.kind(), || text);
            }
        }
        self.client_drain(c);
    }

    pub(super) fn client_timer(&mut self, c: usize, generation: u64) {
        let now = self.now;
        let p = &mut self.chat.procs[c];
        if p.generation != generation {
            return;
        }
        p.timer_at = None;
        let Some(cl) = p.client.as_mut() else { return };
        cl.handle_timeout(Instant(now));
        self.client_drain(c);
    }

    pub(super) fn client_drain(&mut self, c: usize) {
        let e = self.nodes.len() + c;
        let mut quit = false;
        loop {
            let p = &mut self.chat.procs[c];
            let Some(cl) = p.client.as_mut() else { return };
            let Some((addr, bytes)) = cl.poll_transmit() else { break };
            let bytes = match p.channel.as_mut() {
                Some(ch) => ch.seal(&bytes),
                None => bytes,
            };
            self.hash.bytes(&bytes);
            if addr == GROUP {
                for to in 0..self.nodes.len() {
                    self.route(e, to, &bytes, "client");
                }
            } else if let Some(&to) = self.by_addr.get(&addr) {
                self.route(e, to, &bytes, "client");
            }
        }
        loop {
            let p = &mut self.chat.procs[c];
            let Some(cl) = p.client.as_mut() else { return };
            let process = cl.id();
            let Some(ev) = cl.poll_event() else { break };
            let user = p.user;
            let what = match ev {
                ClientEvent::LoggedIn { .. } => {
                    if !p.impostor && !self.chat.registered.contains(&user) {
                        self.chat.registered.push(user);
                    }
                    ChatHappening::LoggedIn { name: p.name.clone(), token: p.token }
                }
                ClientEvent::Refused { .. } => {
                    self.chat.report.refused += 1;
                    ChatHappening::Refused
                }
                ClientEvent::Shown { id, from, room, text } => {
                    if !is_whole(&text) {
                        let detail = format!("{id} was shown with a text of {} bytes that is not the text sent", text.len());
                        self.stuck.push(crate::check::Violation::new("C3", detail));
                    }
                    p.last_shown = Some((id, from, room));
                    quit |= p.quit_after_show;
                    self.chat.report.shown += 1;
                    if let Some(t) = self.chat.sent_at.get(&id) {
                        self.chat.delays.push(self.now - t);
                    }
                    ChatHappening::Shown { id }
                }
                ClientEvent::Stored { id } => {
                    self.chat.report.stored += 1;
                    ChatHappening::Stored { id }
                }
                ClientEvent::Failed { id } => {
                    self.chat.report.failed += 1;
                    ChatHappening::Failed { id }
                }
                ClientEvent::Rejected { id, .. } => {
                    self.chat.report.failed += 1;
                    ChatHappening::Rejected { id }
                }
                ClientEvent::LoggedOut { confirmed } => {
                    if !confirmed {
                        self.history.push_chat(self.now, process, user, ChatHappening::LogoutUnconfirmed);
                    }
                    // A quitting process ends once its logout is through.
                    let p = &mut self.chat.procs[c];
                    if std::mem::take(&mut p.quitting) {
                        p.client = None;
                        return;
                    }
                    continue;
                }
                ClientEvent::ServerLost { .. } => continue,
                ClientEvent::Assigned { servers } => {
                    self.trace_line(Some(self.nodes.len() + c), None, "client", || format!("assigned {}", crate::names::list(&servers)));
                    continue;
                }
                ClientEvent::ServerRefused { reason } => {
                    self.chat.report.server_refusals += 1;
                    self.trace_line(Some(self.nodes.len() + c), None, "client", || format!("refused by its server: {reason}"));
                    continue;
                }
            };
            if self.cfg.trace {
                let text = what.to_string();
                self.trace_line(Some(self.nodes.len() + c), None, "client", || text);
            }
            self.history.push_chat(self.now, process, user, what);
        }
        if quit {
            return self.quit(c, true);
        }
        let p = &mut self.chat.procs[c];
        let Some(cl) = p.client.as_ref() else { return };
        if let Some(deadline) = cl.poll_timeout() {
            let at = deadline.0.max(self.now);
            if p.timer_at.is_none_or(|t| at < t) {
                p.generation += 1;
                p.timer_at = Some(at);
                let generation = p.generation;
                self.queue.push(at, Item::ClientTimer { c, generation });
            }
        }
    }
}

/// A long text of `len` bytes that says how long it is and what fills it: a text cut,
/// reordered or spliced with another on its way is told apart by [`is_whole`].
fn long_text(now: u64, len: usize) -> String {
    let head = format!("long {now} {len} ");
    let fill = format!("{now:x}.");
    let mut text = head.clone();
    text.extend(fill.chars().cycle().take(len.saturating_sub(head.len())));
    text
}

/// Whether a shown text is as sent: short texts are taken as they are, long ones checked.
fn is_whole(text: &str) -> bool {
    let mut words = text.splitn(4, ' ');
    match (words.next(), words.next().and_then(|w| w.parse().ok()), words.next().and_then(|w| w.parse().ok())) {
        (Some("long"), Some(now), Some(len)) => long_text(now, len) == text,
        _ => !text.starts_with("long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_whole_only_as_sent() {
        let t = long_text(123_456, 3_000);
        assert_eq!(t.len(), 3_000);
        assert!(is_whole(&t) && is_whole("hi 5"));
        assert!(!is_whole(&t[..2_999]), "cut");
        let mut spliced = t.clone();
        spliced.replace_range(2_000..2_010, &long_text(654_321, 3_000)[2_000..2_010]);
        assert!(!is_whole(&spliced), "spliced");
        assert!(!is_whole("long garbage"));
    }
}
