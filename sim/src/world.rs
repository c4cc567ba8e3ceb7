//! The simulated world: servers, a seeded network, faults, and the run loop.
//!
//! One `u64` seed decides everything through one ChaCha stream; events run in
//! (virtual time, insertion sequence) order; no hash-map order, wall clock or
//! thread timing reaches a run. Same seed, same trace hash.

use crate::check::{self, Violation};
use crate::faults::{blocked_links, FaultAction, FaultRates, Schedule};
use crate::history::{Happening, History};
use crate::queue::EventQueue;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringchat_core::{Dest, Event, Instant, NodeId, RingOrder, Server, ServerConfig, ServerId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Which faults a run injects.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultMode {
    /// Rates and schedule drawn from the seed.
    Swarm,
    /// A clean network, no node faults.
    None,
    /// An explicit schedule (property tests).
    Schedule(Schedule),
}

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Number of servers.
    pub servers: usize,
    /// Simulated duration, milliseconds.
    pub duration_ms: u64,
    /// Fault injection.
    pub faults: FaultMode,
    /// Ring order of the cluster.
    pub ring: RingOrder,
    /// Record a readable trace.
    pub trace: bool,
    /// Server timings.
    pub server: ServerConfig,
    /// L1 bound: heal to agreement, milliseconds.
    pub settle_bound_ms: u64,
    /// Simulated chat users (0 = servers only, the library default; `ringchat sim` defaults to 8).
    pub clients: usize,
    /// Chat rooms of the workload.
    pub rooms: usize,
    /// How the simulated users behave.
    pub workload: Workload,
}

/// How simulated users behave: data, so a property test can draw it and shrink a failure.
/// The defaults are the `ringchat sim` workload.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    /// Least pause between two actions of one user, ms.
    pub think_ms: u64,
    /// Spread added to that pause (uniform), ms.
    pub think_spread_ms: u64,
    /// Chance per action (before heal) that the client process crashes.
    pub crash: f64,
    /// Chance per action (before heal) that the user logs out for a long stretch.
    pub logout: f64,
    /// Chance per action that the user joins or leaves a room instead of sending.
    pub room_change: f64,
    /// Chance per action that the user answers the last message shown (private or room).
    pub reply: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload { think_ms: 200, think_spread_ms: 1_000, crash: 0.02, logout: 0.04, room_change: 0.08, reply: 0.52 }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            servers: 5,
            duration_ms: 60_000,
            faults: FaultMode::Swarm,
            ring: RingOrder::Ascending,
            trace: false,
            server: ServerConfig { discovery: true, ..ServerConfig::default() },
            settle_bound_ms: 10_000,
            clients: 0,
            rooms: 3,
            workload: Workload::default(),
        }
    }
}

impl SimConfig {
    /// When chaos ends: 60% of the run, leaving at least 10 s (or 40%) to heal.
    pub fn heal_ms(&self) -> u64 {
        let heal = self.duration_ms * 6 / 10;
        heal.min(self.duration_ms.saturating_sub(10_000)).max(self.duration_ms * 4 / 10)
    }
}

/// One election as the report lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ElectionRecord {
    /// Epoch.
    pub epoch: u64,
    /// Leader (full server id).
    pub leader: String,
    /// Virtual time it became leader.
    pub at_ms: f64,
}

/// The result of one run, as printed by `ringchat sim --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Every property held.
    pub ok: bool,
    /// Broken properties.
    pub violations: Vec<Violation>,
    /// Hash of every processed event; equal for equal seeds.
    pub trace_hash: String,
    /// Events processed.
    pub events: u64,
    /// Server ids (full hex).
    pub servers: Vec<String>,
    /// First transmissions per message kind.
    pub messages_by_kind: BTreeMap<String, u64>,
    /// Injected faults per kind.
    pub faults: BTreeMap<String, u64>,
    /// Fault rates of the run.
    pub rates: FaultRates,
    /// Every election won.
    pub elections: Vec<ElectionRecord>,
    /// Leader all live servers agree on at the end.
    pub final_leader: Option<String>,
    /// Heal to agreement, milliseconds.
    pub settle_ms: Option<f64>,
    /// End of chaos, milliseconds.
    pub heal_ms: u64,
    /// Run length, milliseconds.
    pub duration_ms: u64,
    /// Chat figures (absent without clients).
    pub chat: Option<workload::ChatReport>,
}

/// A finished run: its report, its history, and its trace lines if asked for.
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// The whole history.
    pub history: History,
    /// One line per event (empty unless `trace`).
    pub trace: Vec<String>,
}

enum Item {
    Deliver { to: usize, from: usize, bytes: Vec<u8>, kind: &'static str, sent_at: u64 },
    Timer { node: usize, generation: u64 },
    Fault(FaultAction),
    Heal,
    Act { c: usize },
    ClientTimer { c: usize, generation: u64 },
}

struct Node {
    id: ServerId,
    addr: SocketAddr,
    server: Option<Server>,
    disk: Option<ringchat_core::Durable>,
    paused: bool,
    inbox: Vec<(usize, Vec<u8>)>,
    timer_at: Option<u64>,
    generation: u64,
    drift_ppm: i64,
}

impl Node {
    fn local(&self, global: u64) -> Instant {
        let skew = (global as i128 * self.drift_ppm as i128) / 1_000_000;
        Instant((global as i128 + skew).max(0) as u64)
    }
    fn global(&self, local: Instant) -> u64 {
        let rate = 1_000_000 + self.drift_ppm as i128;
        let g = (local.0 as i128 * 1_000_000 + rate - 1) / rate;
        g.max(0) as u64
    }
}

/// A stable 64-bit hash of the run in the FNV family (no std hasher, whose output may change between releases).
#[derive(Clone, Copy)]
struct TraceHash(u64);

impl TraceHash {
    fn new() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        // FNV-style over 8-byte words (then the tail), with a final length mix.
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23);
        }
        for &x in chunks.remainder() {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 ^= b.len() as u64;
    }
    fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }
}

/// The simulator.
pub struct World {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    queue: EventQueue<Item>,
    nodes: Vec<Node>,
    by_addr: BTreeMap<SocketAddr, usize>,
    rates: FaultRates,
    blocked: Vec<Vec<bool>>,
    last_delivery: Vec<u64>,
    now: u64,
    history: History,
    hash: TraceHash,
    events: u64,
    sent: BTreeMap<&'static str, u64>,
    faults: BTreeMap<&'static str, u64>,
    trace: Vec<String>,
    /// Timer wake-ups in a row at one instant, per node (a core that never
    /// advances its deadline would otherwise hang the run).
    spins: Vec<(u64, u32)>,
    stuck: Vec<Violation>,
    chat: workload::Chat,
}

#[path = "workload.rs"]
mod workload;
pub use workload::{client_addr, ChatReport, Percentiles};

/// The address of server `i` in the simulated LAN.
pub fn server_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)), 7000)
}

impl World {
    /// A world ready to run `cfg`.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.servers;
        let heal_ms = cfg.heal_ms();
        let schedule = match &cfg.faults {
            FaultMode::None => Schedule::none(heal_ms),
            FaultMode::Swarm => Schedule::swarm(&mut rng, n, 1_000, heal_ms),
            FaultMode::Schedule(s) => s.clone(),
        };
        let mut ids: Vec<ServerId> = Vec::with_capacity(n);
        while ids.len() < n {
            let id = ServerId(((rng.next_u64() as u128) << 64) | rng.next_u64() as u128);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let drift = schedule.rates.drift_ppm as i64;
        let nodes: Vec<Node> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Node {
                id,
                addr: server_addr(i),
                server: None,
                disk: None,
                paused: false,
                inbox: Vec::new(),
                timer_at: None,
                generation: 0,
                drift_ppm: if drift > 0 { rng.random_range(-drift..=drift) } else { 0 },
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(i, n)| (n.addr, i)).collect();
        let mut queue = EventQueue::default();
        for (at, action) in &schedule.actions {
            queue.push(at * 1000, Item::Fault(action.clone()));
        }
        queue.push(schedule.heal_ms * 1000, Item::Heal);
        let history =
            History { servers: ids, records: Vec::new(), heal_at: schedule.heal_ms * 1000, end: cfg.duration_ms * 1000, chat: Vec::new() };
        World {
            rates: schedule.rates.clone(),
            blocked: vec![vec![false; n]; n],
            last_delivery: vec![0; n * n],
            rng,
            queue,
            nodes,
            by_addr,
            now: 0,
            history,
            hash: TraceHash::new(),
            events: 0,
            sent: BTreeMap::new(),
            faults: BTreeMap::new(),
            trace: Vec::new(),
            spins: vec![(u64::MAX, 0); n],
            stuck: Vec::new(),
            chat: workload::Chat::default(),
            cfg,
        }
    }

    fn trace_line(&mut self, node: Option<usize>, text: impl FnOnce() -> String) {
        if self.cfg.trace {
            let who = node.map_or("  ".to_string(), |i| format!("n{i}"));
            self.trace.push(format!("{:>11.3}ms {who} {}", self.now as f64 / 1000.0, text()));
        }
    }

    fn count_fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_insert(0) += 1;
    }

    fn start(&mut self, i: usize) {
        let mut cfg = self.cfg.server.clone();
        cfg.ring = self.cfg.ring;
        let seed = self.rng.next_u64();
        let node = &mut self.nodes[i];
        let local = node.local(self.now);
        let server = Server::new(cfg, node.id, node.addr, node.disk.clone(), seed, local);
        let life = server.node();
        node.server = Some(server);
        node.paused = false;
        node.inbox.clear();
        node.timer_at = None;
        node.generation += 1;
        self.history.push(self.now, i, Happening::Start { node: life });
        self.trace_line(Some(i), || format!("start {life}"));
        self.hash.u64(life.incarnation);
        self.drain(i);
    }

    /// Runs to the end and checks every property.
    pub fn run(mut self) -> Outcome {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        self.setup_clients();
        let end = self.cfg.duration_ms * 1000;
        while let Some((at, item)) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            self.events += 1;
            self.hash.u64(at);
            match item {
                Item::Deliver { to, from, bytes, kind, sent_at } => self.deliver(to, from, bytes, kind, sent_at),
                Item::Timer { node, generation } => self.timer(node, generation),
                Item::Fault(action) => self.fault(action),
                Item::Heal => self.heal(),
                Item::Act { c } => self.act(c),
                Item::ClientTimer { c, generation } => self.client_timer(c, generation),
            }
        }
        self.finish()
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: Vec<u8>, kind: &'static str, sent_at: u64) {
        self.hash.u64(((to as u64) << 32) | from as u64);
        self.hash.bytes(&bytes);
        let n = self.nodes.len();
        if to >= n {
            return self.client_deliver(to - n, from, &bytes);
        }
        if from >= n {
            let node = &mut self.nodes[to];
            if node.server.is_none() || node.paused {
                return;
            }
            let from_addr = self.chat.procs[from - n].addr;
            let local = node.local(self.now);
            if let Some(s) = node.server.as_mut() {
                s.handle_datagram(local, from_addr, &bytes);
            }
            return self.drain(to);
        }
        let node = &mut self.nodes[to];
        if node.server.is_none() {
            return;
        }
        let link = from * self.nodes.len() + to;
        if from < n && sent_at < self.last_delivery[link] {
            self.count_fault("reordered");
        }
        self.last_delivery[link] = self.last_delivery[link].max(sent_at);
        let node = &mut self.nodes[to];
        if node.paused {
            if node.inbox.len() < 512 {
                node.inbox.push((from, bytes));
            }
            return;
        }
        if kind == "chat_need" && self.cfg.trace {
            if let Ok(ringchat_core::wire::Packet::Peer(env)) = ringchat_core::wire::decode(&bytes) {
                self.trace_line(Some(to), || format!("recv chat_need from n{from}: {:?}", env.body));
            }
        } else {
            self.trace_line(Some(to), || format!("recv {kind} from n{from} ({}B)", bytes.len()));
        }
        let from_addr = self.nodes[from].addr;
        let node = &mut self.nodes[to];
        let local = node.local(self.now);
        if let Some(s) = node.server.as_mut() {
            s.handle_datagram(local, from_addr, &bytes);
        }
        self.drain(to);
    }

    fn timer(&mut self, i: usize, generation: u64) {
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
            let detail = format!("server n{i} asked to be woken at {} µs more than 1000 times without progress", self.now);
            self.stuck.push(Violation::new("T0", detail));
            self.nodes[i].server = None;
            return;
        }
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(server) = self.nodes[i].server.as_mut() else { return };
            let Some(t) = server.poll_transmit() else { break };
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
                                self.trace_line(Some(i), || {
                                    format!(
                                        "broadcast {}#{} deps {:?} {:?}",
                                        msg.origin,
                                        msg.seq,
                                        msg.deps.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>(),
                                        msg.item
                                    )
                                });
                            }
                        }
                    }
                }
            }
            self.hash.bytes(&t.bytes);
            match t.dest {
                Dest::Addr(addr) => {
                    if let Some(&to) = self.by_addr.get(&addr) {
                        self.route(i, to, &t.bytes, t.kind);
                    }
                }
                Dest::Group => {
                    for to in (0..self.nodes.len()).filter(|&to| to != i) {
                        self.route(i, to, &t.bytes, t.kind);
                    }
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

    fn on_event(&mut self, i: usize, ev: Event) {
        self.trace_line(Some(i), || format!("{ev:?}"));
        if let Event::BecameLeader { .. } | Event::ViewInstalled { .. } | Event::EpochAdopted { .. } | Event::Voted { .. } = ev {
            self.hash.bytes(format!("{ev:?}").as_bytes());
        }
        self.history.push(self.now, i, Happening::Core(ev));
    }

    fn route(&mut self, from: usize, to: usize, bytes: &[u8], kind: &'static str) {
        // A client sits on the side of its home server.
        let n = self.nodes.len();
        let side = |e: usize| if e < n { e } else { (e - n) % n };
        if self.blocked[side(from)][side(to)] {
            self.count_fault("drop_partition");
            self.trace_line(Some(from), || format!("cut {kind} to n{to}"));
            return;
        }
        if self.rates.loss > 0.0 && self.rng.random_bool(self.rates.loss) {
            self.count_fault("drop_loss");
            self.trace_line(Some(from), || format!("lose {kind} to n{to}"));
            return;
        }
        let copies = if self.rates.duplicate > 0.0 && self.rng.random_bool(self.rates.duplicate) {
            self.count_fault("duplicate");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let latency = self.rates.latency_us + self.rng.random_range(0..=self.rates.jitter_us);
            let item = Item::Deliver { to, from, bytes: bytes.to_vec(), kind, sent_at: self.now };
            self.queue.push(self.now + latency, item);
        }
    }

    fn fault(&mut self, action: FaultAction) {
        let kind = action.kind();
        self.trace_line(None, || format!("FAULT {action:?}"));
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
            _ => false,
        };
        if fired {
            self.count_fault(kind);
        }
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(s) = node.server.take() {
            node.disk = Some(s.durable().clone());
        }
        node.paused = false;
        node.inbox.clear();
        node.timer_at = None;
        node.generation += 1;
        self.history.push(self.now, i, Happening::Crash);
    }

    fn resume(&mut self, i: usize) {
        self.nodes[i].paused = false;
        self.history.push(self.now, i, Happening::Resume);
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for (from, bytes) in inbox {
            let from_addr = self.nodes[from].addr;
            let node = &mut self.nodes[i];
            let local = node.local(self.now);
            if let Some(s) = node.server.as_mut() {
                s.handle_datagram(local, from_addr, &bytes);
            }
        }
        let node = &mut self.nodes[i];
        let local = node.local(self.now);
        if let Some(s) = node.server.as_mut() {
            s.handle_timeout(local);
        }
        node.timer_at = None;
        self.drain(i);
    }

    fn heal(&mut self) {
        self.trace_line(None, || "HEAL: links restored, loss off, paused resume, crashed restart".into());
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

    fn finish(mut self) -> Outcome {
        if self.cfg.trace {
            for i in 0..self.nodes.len() {
                let line = match &self.nodes[i].server {
                    Some(s) => {
                        let st = s.status();
                        let view = st.committed.as_ref().map(|v| {
                            let m: Vec<String> = v.members.iter().map(|m| m.node.to_string()).collect();
                            format!("view {} [{}]", v.stamp.id, m.join(","))
                        });
                        format!(
                            "final {} {} cluster {} epoch {} role {:?} leader {:?} {} rooms {:?}",
                            st.node,
                            st.phase,
                            st.cluster,
                            st.epoch,
                            st.role,
                            st.leader.map(|l| l.to_string()),
                            view.unwrap_or_default(),
                            s.durable().chat.state.rooms().collect::<Vec<_>>()
                        ) + &format!(
                            " counters {:?} causal {:?} inboxes {:?} delivered {:?} held {:?}",
                            s.counters(),
                            s.durable().chat.causal.counters,
                            s.durable().chat.state.inboxes(),
                            s.durable().chat.causal.delivered,
                            s.durable().chat.causal.holdback_heads()
                        )
                    }
                    None => "final: down".to_string(),
                };
                self.trace_line(Some(i), || line);
            }
        }
        let mut violations = std::mem::take(&mut self.stuck);
        violations.extend(check::check_safety(&self.history));
        let live = check::check_liveness(&self.history, self.cfg.settle_bound_ms * 1000);
        violations.extend(live.violations);
        let chat = self.chat_report();
        if self.cfg.clients > 0 {
            violations.extend(crate::chat_check::check_chat(&self.history, self.chat_settled()));
            if self.chat_settled() {
                violations.extend(self.check_trimmed());
            }
            violations.extend(self.check_converged());
        }
        let elections = self
            .history
            .records
            .iter()
            .filter_map(|r| match &r.what {
                Happening::Core(Event::BecameLeader { epoch, .. }) => {
                    Some(ElectionRecord { epoch: *epoch, leader: self.history.servers[r.node].full(), at_ms: r.at as f64 / 1000.0 })
                }
                _ => None,
            })
            .collect();
        if self.rates.drift_ppm > 0 {
            let drifting = self.nodes.iter().filter(|n| n.drift_ppm != 0).count() as u64;
            self.faults.insert("clock_drift_nodes", drifting);
        }
        let report = Report {
            seed: self.cfg.seed,
            ok: violations.is_empty(),
            violations,
            trace_hash: format!("{:016x}", self.hash.0),
            events: self.events,
            servers: self.history.servers.iter().map(|s| s.full()).collect(),
            messages_by_kind: self.sent.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            faults: self.faults.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rates: self.rates.clone(),
            elections,
            final_leader: live.final_leader.map(|l: NodeId| l.id.full()),
            settle_ms: live.settle_us.map(|u| u as f64 / 1000.0),
            heal_ms: self.history.heal_at / 1000,
            duration_ms: self.cfg.duration_ms,
            chat,
        };
        Outcome { report, history: self.history, trace: self.trace }
    }
}

impl World {
    /// Whether the run leaves enough time after heal for chat to settle (liveness checks apply).
    fn chat_settled(&self) -> bool {
        self.history.end.saturating_sub(self.history.heal_at) >= 15_000_000
    }

    fn chat_report(&mut self) -> Option<ChatReport> {
        if self.cfg.clients == 0 {
            return None;
        }
        let mut r = self.chat.report.clone();
        for n in &self.nodes {
            if let Some(s) = &n.server {
                let st = s.chat_stats();
                r.duplicates_suppressed += st.duplicates_suppressed;
                r.max_holdback = r.max_holdback.max(st.max_holdback);
                r.inbox_max = r.inbox_max.max(st.inbox_max);
            }
        }
        let mut d = self.chat.delays.clone();
        d.sort_unstable();
        let pct = |q: f64| if d.is_empty() { 0.0 } else { d[((d.len() - 1) as f64 * q) as usize] as f64 / 1000.0 };
        r.delivery_ms = Percentiles { p50: pct(0.5), p99: pct(0.99) };
        r.vc_bytes_per_message = if self.chat.vc_msgs == 0 { 0.0 } else { self.chat.vc_bytes as f64 / self.chat.vc_msgs as f64 };
        Some(r)
    }

    /// B1: after heal every live server has dropped acknowledged inbox entries and stable retransmission buffers.
    /// R1 over the live servers' final states.
    fn check_converged(&self) -> Vec<Violation> {
        let finals: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.server.as_ref().map(|s| (i, s.durable())))
            .map(|(i, d)| (format!("n{i}"), d.chat.causal.delivered.clone(), d.chat.state.rooms().collect::<Vec<_>>()))
            .collect();
        crate::chat_check::check_converged(&finals)
    }

    fn check_trimmed(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(s) = &n.server else { continue };
            let st = s.chat_stats();
            if st.store > 0 || st.inbox > 0 || st.holdback > 0 {
                out.push(Violation::new(
                    "B1",
                    format!(
                        "server n{i} still holds {} stored, {} inbox, {} held-back messages at the end",
                        st.store, st.inbox, st.holdback
                    ),
                ));
            }
        }
        out
    }
}

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Outcome {
    World::new(cfg).run()
}
