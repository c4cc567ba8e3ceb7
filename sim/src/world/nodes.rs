//! Server life cycle and fault application: start (a new incarnation from the disk), crash,
//! pause and resume, timers, draining a server's outputs, and the heal at the end of chaos.

use super::{Item, World};
use crate::check::Violation;
use crate::disk::{DriverDisk, Hold, FSYNC_MAX_US, FSYNC_MIN_US};
use crate::faults::{blocked_links, FaultAction, Partition};
use crate::history::Happening;
use rand::{Rng, RngCore};
use ringchat_core::chat::server::journal;
use ringchat_core::seal::{self, Seal, SealMemory, StandIn};
use ringchat_core::{Dest, Event, Instant, Server, ServerId};
use std::net::SocketAddr;

pub(super) struct Node {
    pub(super) id: ServerId,
    pub(super) addr: SocketAddr,
    pub(super) server: Option<Server>,
    pub(super) disk: Option<ringchat_core::Durable>,
    pub(super) paused: bool,
    pub(super) inbox: Vec<(usize, Vec<u8>)>,
    pub(super) timer_at: Option<u64>,
    pub(super) generation: u64,
    pub(super) drift_ppm: i64,
    /// The driver's disk model of the running life (long-life runs with power loss only).
    pub(super) driver_disk: Option<DriverDisk>,
    /// The running life's seal (stand-in cipher; insecure when the run is unsealed).
    pub(super) seal: Option<Seal<StandIn>>,
    /// The replay state an earlier life left on disk (lost with the disk). The simulated driver
    /// keeps its seal file current: what the crashed life had accepted is what the next finds.
    pub(super) seal_memory: Option<SealMemory>,
    /// The last life the server started as (named in the trace while it is down).
    pub(super) life: Option<ringchat_core::NodeId>,
    /// Sealed datagrams the driver holds until a chat log batch is durable (with a driver
    /// disk), in order; lost in a crash.
    pub(super) held: std::collections::VecDeque<Held>,
    /// Chat copies sent ahead of the oldest held datagram.
    pub(super) bypassed: u64,
}

/// A datagram held for the disk.
pub(super) struct Held {
    until: u64,
    bytes: Vec<u8>,
    kind: &'static str,
    dest: Dest,
    claim: Option<Claim>,
}

/// What a datagram to a client claims is durable on a majority (checked as P2 when it leaves).
pub(super) struct Claim {
    what: String,
    /// The message's keys (its copies).
    copies: Vec<(ringchat_core::NodeId, u64)>,
    /// The sender's view when it decided: its members and how many make a majority.
    members: Vec<ServerId>,
    majority: usize,
}

impl Node {
    pub(super) fn local(&self, global: u64) -> Instant {
        let skew = (global as i128 * self.drift_ppm as i128) / 1_000_000;
        Instant((global as i128 + skew).max(0) as u64)
    }
    pub(super) fn global(&self, local: Instant) -> u64 {
        let rate = 1_000_000 + self.drift_ppm as i128;
        let g = (local.0 as i128 * 1_000_000 + rate - 1) / rate;
        g.max(0) as u64
    }
}

impl World {
    pub(super) fn start(&mut self, i: usize) {
        let mut cfg = self.cfg.server.clone();
        cfg.ring = self.cfg.ring;
        cfg.sealed = !self.cfg.unsealed;
        cfg.identity = self.ring.as_ref().map(|r| r.identity_public());
        if self.life.disk_loss > 0.0 && cfg.expect.is_none() {
            // An operator who replaces disks runs with `--expect N` (the README's advice): a
            // server that comes back blank while cut off then waits instead of founding a
            // cluster of its own (which would bind names twice until the merge).
            cfg.expect = Some(self.nodes.len());
        }
        let seed = self.rng.next_u64();
        let node = &mut self.nodes[i];
        let local = node.local(self.now);
        let server = Server::new(cfg, node.id, node.addr, node.disk.clone(), seed, local);
        let life = server.node();
        node.seal = Some(
            match &self.ring {
                Some(ring) => Seal::new(life, ring.clone(), node.seal_memory.as_ref()),
                None => Seal::insecure(life),
            }
            .with_plant(self.cfg.server.plant),
        );
        node.server = Some(server);
        node.life = Some(life);
        node.paused = false;
        node.inbox.clear();
        node.held.clear();
        node.bypassed = 0;
        node.timer_at = None;
        node.generation += 1;
        if self.life.driver_disk {
            node.driver_disk = Some(DriverDisk::new(self.now, node.disk.clone()));
        }
        self.history.push(self.now, i, Happening::Start { node: life });
        self.trace_line(Some(i), None, "life", || format!("start {life}"));
        self.hash.u64(life.incarnation);
        self.drain(i);
    }

    pub(super) fn timer(&mut self, i: usize, generation: u64) {
        let node = &mut self.nodes[i];
        if node.generation != generation || node.server.is_none() {
            return;
        }
        node.timer_at = None;
        if node.paused {
            return; // a frozen process: `resume` runs its timers
        }
        let local = node.local(self.now);
        if let Some(s) = node.server.as_mut() {
            s.handle_timeout(local);
        }
        let spin = &mut self.spins[i];
        *spin = if spin.0 == self.now { (self.now, spin.1 + 1) } else { (self.now, 1) };
        if spin.1 > 1_000 {
            let detail = format!("server {} asked to be woken at {} µs more than 1000 times without progress", self.name_of(i), self.now);
            self.stuck.push(Violation::new("T0", detail));
            self.nodes[i].server = None;
            return;
        }
        self.drain(i);
    }

    pub(super) fn drain(&mut self, i: usize) {
        let fsync_us = if self.nodes[i].driver_disk.is_some() { self.rng.random_range(FSYNC_MIN_US..=FSYNC_MAX_US) } else { 0 };
        let node = &mut self.nodes[i];
        let mut hold = Hold::Now;
        if let Some(s) = node.server.as_mut() {
            let journal = s.take_journal();
            if let Some(disk) = node.driver_disk.as_mut() {
                // The driver writes before it sends (or holds what waits for the disk).
                hold = disk.after_input(self.now, s.durable(), journal, fsync_us);
            }
        }
        if hold == Hold::ReleaseAll {
            for h in &mut self.nodes[i].held {
                h.until = self.now;
            }
            self.release(i);
        }
        loop {
            let Some(server) = self.nodes[i].server.as_mut() else { return };
            let Some(mut t) = server.poll_transmit() else { break };
            if !t.retransmit {
                *self.sent.entry(t.kind).or_insert(0) += 1;
                if t.kind == "chat" || t.kind == "chat_batch" {
                    if let Ok(ringchat_core::wire::Packet::Peer(env)) = ringchat_core::wire::decode(&t.bytes) {
                        let msgs = match env.body {
                            ringchat_core::wire::Body::Chat { msg } => vec![msg],
                            ringchat_core::wire::Body::ChatBatch { msgs } => msgs,
                            _ => Vec::new(),
                        };
                        for msg in msgs {
                            self.chat.vc_bytes += postcard::to_allocvec(&msg.deps).map_or(0, |v| v.len() as u64);
                            self.chat.vc_msgs += 1;
                            if self.cfg.trace && self.chat.traced.insert((msg.origin, msg.seq)) {
                                self.trace_line(Some(i), None, "chat", || {
                                    format!(
                                        "broadcast {}#{} deps {} {}",
                                        msg.origin,
                                        msg.seq,
                                        crate::names::list(msg.deps.iter().map(|(k, v)| format!("{k}:{v}"))),
                                        crate::names::item(&msg.item)
                                    )
                                });
                            }
                        }
                    }
                }
            }
            self.outsider_overhear_plain(&t.bytes, t.kind);
            let node = &mut self.nodes[i];
            let claims = matches!(t.kind, "stored" | "show") && node.driver_disk.is_some();
            let claim = node.server.as_ref().filter(|_| claims).and_then(|s| claim_of(s, &t.bytes));
            if let (Some(server), Some(seal)) = (node.server.as_ref(), node.seal.as_mut()) {
                if !seal::drive::seal_transmit(server, seal, &mut t) {
                    continue;
                }
            }
            let held = Held { until: 0, bytes: t.bytes, kind: t.kind, dest: t.dest, claim };
            match hold {
                Hold::Until(until) if !(journal::leaves_at_once(held.kind) && node.bypassed < journal::MAX_AHEAD) => {
                    node.held.push_back(Held { until, ..held });
                    self.queue.push(until, Item::Release { node: i });
                }
                _ => {
                    if !node.held.is_empty() {
                        node.bypassed += 1;
                    }
                    self.emit(i, held);
                }
            }
        }
        loop {
            let Some(server) = self.nodes[i].server.as_mut() else { return };
            let Some(ev) = server.poll_event() else { break };
            self.on_event(i, ev);
        }
        let node = &mut self.nodes[i];
        let Some(server) = node.server.as_ref() else { return };
        if let Some(deadline) = server.poll_timeout() {
            let at = node.global(deadline).max(self.now);
            if node.timer_at.is_none_or(|t| at < t) {
                node.generation += 1;
                node.timer_at = Some(at);
                let generation = node.generation;
                self.queue.push(at, Item::Timer { node: i, generation });
            }
        }
    }

    /// Sends the held datagrams of server `i` whose chat log batch is durable, in order
    /// (none while the process is frozen; a crash dropped those of an earlier life).
    pub(super) fn release(&mut self, i: usize) {
        while !self.nodes[i].paused && self.nodes[i].held.front().is_some_and(|h| h.until <= self.now) {
            let Some(h) = self.nodes[i].held.pop_front() else { break };
            if self.nodes[i].held.is_empty() {
                self.nodes[i].bypassed = 0;
            }
            self.emit(i, h);
        }
    }

    /// Puts one sealed datagram of server `i` on the network; a datagram to a client that
    /// claims a message durable on a majority is checked against the disks first (P2).
    fn emit(&mut self, i: usize, h: Held) {
        if let Some(c) = &h.claim {
            self.check_claim(i, c);
        }
        self.hash.bytes(&h.bytes);
        self.outsider_overhear(&h.bytes);
        match h.dest {
            Dest::Addr(addr) => {
                self.outsider_sees_send(i, addr, &h.bytes);
                if let Some(&to) = self.by_addr.get(&addr) {
                    self.route(i, to, &h.bytes, h.kind);
                }
            }
            Dest::Group => {
                for to in (0..self.nodes.len()).filter(|&to| to != i) {
                    self.route(i, to, &h.bytes, h.kind);
                }
            }
        }
    }

    /// P2: a `stored` or a show leaves only while its message is on the disks of a majority of
    /// the view its server decided in.
    fn check_claim(&mut self, i: usize, c: &Claim) {
        let now = self.now;
        // A member whose disk was lost since (no server has its id any more) is given the
        // benefit of the doubt: that is the lost-disk fault, not a claim made too early.
        let on_disk = |key: (ringchat_core::NodeId, u64)| {
            c.members
                .iter()
                .filter(|id| match self.nodes.iter().find(|n| n.id == **id) {
                    None => true,
                    Some(n) => match (&n.server, &n.driver_disk) {
                        (Some(_), Some(disk)) => disk.durably_holds(now, key),
                        (None, _) => n.disk.as_ref().is_some_and(|d| d.chat.causal.has(key)),
                        (Some(_), None) => false,
                    },
                })
                .count()
        };
        let on = c.copies.iter().map(|k| on_disk(*k)).max().unwrap_or(0);
        if on < c.majority && self.claims_refuted < 10 {
            self.claims_refuted += 1;
            let detail = format!(
                "at {:.3}ms server {} sent {} while it was on the disks of {on} of {} servers of its view",
                now as f64 / 1000.0,
                self.name_of(i),
                c.what,
                c.members.len()
            );
            self.stuck.push(Violation::new("P2", detail));
        }
    }

    pub(super) fn on_event(&mut self, i: usize, ev: Event) {
        if self.cfg.trace {
            let (kind, text) = crate::names::event(&ev);
            self.trace_line(Some(i), None, kind, || text);
        }
        if let Event::BecameLeader { .. } | Event::ViewInstalled { .. } | Event::EpochAdopted { .. } | Event::Voted { .. } = ev {
            self.hash.bytes(format!("{ev:?}").as_bytes());
        }
        self.history.push(self.now, i, Happening::Core(ev));
    }

    pub(super) fn fault(&mut self, action: FaultAction) {
        let kind = action.kind();
        if self.cfg.trace {
            let text = self.fault_text(&action);
            let slot = match &action {
                FaultAction::Crash(i)
                | FaultAction::Restart(i)
                | FaultAction::Pause(i)
                | FaultAction::Resume(i)
                | FaultAction::RestartBlank(i) => Some(*i),
                FaultAction::Partition(Partition::IsolateOne { node }) => Some(*node),
                _ => None,
            };
            self.trace_line(None, slot.filter(|&i| i < self.nodes.len()), "fault", || text);
        }
        self.hash.bytes(kind.as_bytes());
        let n = self.nodes.len();
        let fired = match action {
            FaultAction::Crash(i) if i < n && self.nodes[i].server.is_some() => {
                self.crash(i);
                true
            }
            FaultAction::Restart(i) if i < n && self.nodes[i].server.is_none() => {
                self.start(i);
                true
            }
            FaultAction::Pause(i) if i < n && self.nodes[i].server.is_some() && !self.nodes[i].paused => {
                self.nodes[i].paused = true;
                self.history.push(self.now, i, Happening::Pause);
                true
            }
            FaultAction::Resume(i) if i < n && self.nodes[i].paused => {
                self.resume(i);
                true
            }
            FaultAction::Partition(p) => {
                self.blocked = blocked_links(&p, n);
                true
            }
            FaultAction::HealPartition => {
                self.blocked = vec![vec![false; n]; n];
                true
            }
            FaultAction::RestartBlank(i) if i < n && self.nodes[i].server.is_none() => {
                self.restart_blank(i);
                true
            }
            FaultAction::PowerCut if self.nodes.iter().any(|n| n.server.is_some()) => {
                self.history.power_cuts.push(self.now);
                for i in 0..n {
                    if self.nodes[i].server.is_some() {
                        self.crash(i);
                    }
                }
                true
            }
            FaultAction::MajorityCrash(ref nodes) if nodes.iter().any(|&i| i < n && self.nodes[i].server.is_some()) => {
                self.history.majority_losses.push(self.now);
                for &i in nodes.iter().filter(|&&i| i < n) {
                    if self.nodes[i].server.is_some() {
                        self.crash(i);
                    }
                }
                true
            }
            FaultAction::PowerRestore if self.nodes.iter().any(|n| n.server.is_none()) => {
                for i in 0..n {
                    if self.nodes[i].server.is_none() {
                        self.start(i);
                    }
                }
                true
            }
            _ => false,
        };
        if fired {
            self.count_fault(kind);
        }
    }

    pub(super) fn crash(&mut self, i: usize) {
        self.sample(i);
        let now = self.now;
        let node = &mut self.nodes[i];
        if let Some(seal) = node.seal.take() {
            node.seal_memory = Some(seal.memory());
        }
        if let Some(s) = node.server.take() {
            node.disk = match node.driver_disk.take() {
                Some(disk) => disk.at_crash(now),
                None => Some(s.durable().clone()),
            };
        }
        node.paused = false;
        node.inbox.clear();
        node.held.clear();
        node.bypassed = 0;
        node.timer_at = None;
        node.generation += 1;
        self.history.push(self.now, i, Happening::Crash);
    }

    pub(super) fn resume(&mut self, i: usize) {
        self.nodes[i].paused = false;
        self.history.push(self.now, i, Happening::Resume);
        self.release(i);
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for (from, bytes) in inbox {
            let from_addr = self.nodes[from].addr;
            self.feed(i, from_addr, &bytes);
        }
        let node = &mut self.nodes[i];
        let local = node.local(self.now);
        if let Some(s) = node.server.as_mut() {
            s.handle_timeout(local);
        }
        node.timer_at = None;
        self.drain(i);
    }

    pub(super) fn heal(&mut self) {
        self.trace_line(None, None, "fault", || "HEAL: links restored, loss off, paused resume, crashed restart".into());
        let n = self.nodes.len();
        self.blocked = vec![vec![false; n]; n];
        self.rates.loss = 0.0;
        self.rates.duplicate = 0.0;
        for i in 0..n {
            if self.nodes[i].paused {
                self.count_fault("resume");
                self.resume(i);
            }
            if self.nodes[i].server.is_none() {
                self.count_fault("restart");
                self.start(i);
            }
        }
    }

    /// Feeds one datagram to server `i` through its seal (the driver's part: open, then the
    /// core); what the seal did with it, if the server runs.
    pub(super) fn feed(&mut self, i: usize, from: SocketAddr, bytes: &[u8]) -> Option<seal::drive::Fed> {
        let node = &mut self.nodes[i];
        let local = node.local(self.now);
        match (node.server.as_mut(), node.seal.as_mut()) {
            (Some(server), Some(seal)) => Some(seal::drive::feed(server, seal, local, from, bytes)),
            _ => None,
        }
    }

    /// Starts server `i` with its disk lost: no durable state and a new server id.
    fn restart_blank(&mut self, i: usize) {
        let id = loop {
            let id = ServerId(((self.rng.next_u64() as u128) << 64) | self.rng.next_u64() as u128);
            if self.nodes.iter().all(|n| n.id != id) {
                break id;
            }
        };
        self.trace_line(Some(i), None, "life", || format!("disk lost: new id {id}"));
        self.nodes[i].id = id;
        self.nodes[i].disk = None;
        self.nodes[i].seal_memory = None;
        self.start(i);
    }

    /// A fault as the trace shows it, servers named by their lives: `FAULT crash d1dacd6f/2`.
    fn fault_text(&self, action: &FaultAction) -> String {
        let n = self.nodes.len();
        let name = |i: usize| if i < n { self.name_of(i) } else { format!("slot {i} (no such server)") };
        let names = |v: &[usize]| crate::names::list(v.iter().map(|&i| name(i)));
        let what = match action {
            FaultAction::Crash(i)
            | FaultAction::Restart(i)
            | FaultAction::Pause(i)
            | FaultAction::Resume(i)
            | FaultAction::RestartBlank(i) => {
                format!("{} {}", action.kind(), name(*i))
            }
            FaultAction::Partition(Partition::Symmetric { side }) => format!("partition {} from the rest", names(side)),
            FaultAction::Partition(Partition::OneWay { side }) => format!("partition one way: {} cannot send to the rest", names(side)),
            FaultAction::Partition(Partition::IsolateOne { node }) => format!("partition isolates {}", name(*node)),
            FaultAction::Partition(Partition::MajoritiesRing) => "partition: each server hears a different majority".to_string(),
            FaultAction::MajorityCrash(v) => format!("majority_disk_loss crashes {}", names(v)),
            FaultAction::HealPartition | FaultAction::PowerCut | FaultAction::PowerRestore => action.kind().to_string(),
        };
        format!("FAULT {what}")
    }
}

/// What a datagram from `server` to a client claims is on a majority's disks: a `stored` or a
/// show of a message, any copy of it (a retried operation's copies are interchangeable; a
/// long show's fragments are not checked).
fn claim_of(server: &Server, bytes: &[u8]) -> Option<Claim> {
    use ringchat_core::wire::{Item, Packet, ServerMsg};
    let (what, id, stamp) = match ringchat_core::wire::decode(bytes) {
        Ok(Packet::ToClient(ServerMsg::Stored { id, stamp })) => (format!("stored {id}"), id, stamp),
        Ok(Packet::ToClient(ServerMsg::Show { id, stamp, .. })) => (format!("a show of {id}"), id, stamp),
        _ => return None,
    };
    let chat = &server.durable().chat;
    let is_it = |key: &(ringchat_core::NodeId, u64)| {
        chat.causal.get(*key).is_some_and(
            |m| matches!(&*m.item, Item::Chat { id: i, .. } | Item::Join { id: i, .. } | Item::Leave { id: i, .. } if *i == id),
        )
    };
    let key = stamp.iter().map(|(o, v)| (*o, *v)).find(is_it)?;
    let copies = chat.state.copies(key).collect();
    let view = server.committed_view()?;
    let members: Vec<ServerId> = view.members.iter().map(|m| m.node.id).collect();
    let majority = (1..=members.len()).find(|n| view.is_majority(*n)).unwrap_or(members.len());
    Some(Claim { what, copies, members, majority })
}
