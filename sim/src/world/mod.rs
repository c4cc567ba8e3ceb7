//! The simulated world: servers, a seeded network, faults, simulated clients, and the run loop.
//!
//! One `u64` seed decides everything through one ChaCha stream; events run in
//! (virtual time, insertion sequence) order; no hash-map order, wall clock or
//! thread timing reaches a run. Same seed, same trace hash.
//!
//! Each concern has its module: [`network`] (links and delivery), [`nodes`] (server life
//! cycle and faults), [`clients`] (the simulated users), [`careless`] (client churn and careless
//! users), [`measure`] (state sizes), [`trace`] (hash and trace lines), [`finish`] (checkers and
//! report).

mod careless;
mod clients;
mod finish;
mod measure;
mod network;
mod nodes;
mod outsider;
mod trace;

pub use crate::config::{FaultMode, SimConfig, Workload};
pub use crate::report::{ChatReport, ElectionRecord, Outcome, Percentiles, Report, TraceLine};
pub use clients::client_addr;
pub use network::server_addr;
pub use outsider::{outsider_addr, outsider_on};

use crate::check::Violation;
use crate::faults::{FaultAction, FaultRates, Schedule};
use crate::history::History;
use crate::life::{self, LifeRates};
use crate::queue::EventQueue;
use crate::resources::{Meter, Resources};
use nodes::Node;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringchat_core::seal::{ClusterKey, KeyRing};
use ringchat_core::ServerId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use trace::TraceHash;

enum Item {
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
        kind: &'static str,
        sent_at: u64,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    /// A chat log batch of a server is durable: its held datagrams leave.
    Release {
        node: usize,
    },
    Fault(FaultAction),
    Heal,
    Act {
        c: usize,
    },
    ClientTimer {
        c: usize,
        generation: u64,
    },
    Outsider(outsider::Step),
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
    trace: Vec<crate::report::TraceLine>,
    /// The fault rates drawn for the run (`rates` loses loss and duplication at heal).
    drawn_rates: FaultRates,
    /// Timer wake-ups in a row at one instant, per node (a core that never
    /// advances its deadline would otherwise hang the run).
    spins: Vec<(u64, u32)>,
    stuck: Vec<Violation>,
    /// P2 violations found so far (at most ten are reported).
    claims_refuted: u64,
    chat: clients::Chat,
    /// Long-life fault rates (all zero unless asked for).
    life: LifeRates,
    /// State sizes against their bound.
    meter: Meter,
    /// The cluster's key ring (`None`: the run is unsealed). Drawn from the seed without
    /// touching the run's random stream, so sealing changes no other draw.
    ring: Option<KeyRing>,
    /// Next periodic measurement, and the period (µs).
    next_sample: u64,
    sample_every: u64,
    /// The host without the key (issue 14), when the run has one.
    outsider: Option<outsider::Outsider>,
    /// Sees every datagram as it is delivered (see [`World::with_tap`]).
    tap: Option<Tap>,
}

/// A callback that sees every delivered datagram: `(virtual µs, from, to, bytes)`, where an
/// index below the number of servers is a server and one at or above it a client.
pub type Tap = Box<dyn FnMut(u64, usize, usize, &[u8])>;

impl World {
    /// A world ready to run `cfg`.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.servers;
        let heal_ms = cfg.heal_ms();
        let mut schedule = match &cfg.faults {
            FaultMode::None => Schedule::none(heal_ms),
            FaultMode::Swarm => Schedule::swarm(&mut rng, n, 1_000, heal_ms),
            FaultMode::Schedule(s) => s.clone(),
        };
        let life = if cfg.life.any() { LifeRates::draw(cfg.seed, cfg.life, heal_ms.saturating_sub(1_000)) } else { LifeRates::default() };
        if cfg.life.any() {
            life::extend(&mut schedule, cfg.seed, &life, n, 1_000);
        }
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
                held: Default::default(),
                bypassed: 0,
                timer_at: None,
                generation: 0,
                drift_ppm: if drift > 0 { rng.random_range(-drift..=drift) } else { 0 },
                driver_disk: None,
                seal: None,
                seal_memory: None,
                life: None,
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(i, n)| (n.addr, i)).collect();
        let mut queue = EventQueue::default();
        for (at, action) in &schedule.actions {
            queue.push(at * 1000, Item::Fault(action.clone()));
        }
        queue.push(schedule.heal_ms * 1000, Item::Heal);
        let history = History {
            servers: ids,
            records: Vec::new(),
            heal_at: schedule.heal_ms * 1000,
            end: cfg.duration_ms * 1000,
            chat: Vec::new(),
            power_cuts: Vec::new(),
            majority_losses: Vec::new(),
        };
        World {
            rates: schedule.rates.clone(),
            drawn_rates: schedule.rates.clone(),
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
            claims_refuted: 0,
            chat: clients::Chat::default(),
            life,
            meter: Meter::new(Resources::bound(
                n,
                cfg.clients + usize::from(cfg.clients > 0) + if outsider_on(&cfg) { outsider::OUTSIDER_CLIENTS } else { 0 },
                cfg.rooms,
            )),
            outsider: outsider_on(&cfg).then(|| {
                let identity = (!cfg.unsealed).then(|| sim_ring(cfg.seed).identity_public());
                outsider::Outsider::new(cfg.seed, (cfg.duration_ms * 1000).saturating_sub(12_000_000), identity)
            }),
            next_sample: 0,
            ring: (!cfg.unsealed).then(|| sim_ring(cfg.seed)),
            // Every simulated second or so with long-life faults; every 10 s otherwise (speed).
            sample_every: (cfg.duration_ms * 1000 / 600).max(if cfg.life.any() { 1_000_000 } else { 10_000_000 }),
            tap: None,
            cfg,
        }
    }

    /// Shows every datagram delivered (to a server or a client, as it is on the wire) to
    /// `tap`, which only observes: the run is the same with or without it. Used to write real
    /// datagrams of every kind out as the fuzzers' seed corpus.
    pub fn with_tap(mut self, tap: Tap) -> World {
        self.tap = Some(tap);
        self
    }

    /// Runs to the end and checks every property.
    pub fn run(mut self) -> Outcome {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        self.setup_clients();
        self.outsider_start();
        let end = self.cfg.duration_ms * 1000;
        while let Some((at, item)) = self.queue.pop() {
            if at > end {
                break;
            }
            while self.next_sample <= at {
                self.now = self.next_sample;
                self.sample_all();
                self.next_sample += self.sample_every;
            }
            self.now = at;
            self.events += 1;
            self.hash.u64(at);
            match item {
                Item::Deliver { to, from, bytes, kind, sent_at } => self.deliver(to, from, bytes, kind, sent_at),
                Item::Timer { node, generation } => self.timer(node, generation),
                Item::Release { node } => self.release(node),
                Item::Fault(action) => self.fault(action),
                Item::Heal => self.heal(),
                Item::Act { c } => self.act(c),
                Item::ClientTimer { c, generation } => self.client_timer(c, generation),
                Item::Outsider(step) => self.outsider_step(step),
            }
        }
        self.finish()
    }
}

/// The key ring of seed `seed`'s cluster: one key, a function of the seed alone.
fn sim_ring(seed: u64) -> KeyRing {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&ringchat_core::id::mix64(seed ^ 0x5EA1_0000 ^ i as u64).to_le_bytes());
    }
    KeyRing::new(ClusterKey::new(bytes))
}

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Outcome {
    World::new(cfg).run()
}
