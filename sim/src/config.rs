//! What defines a run: the seed, the cluster's size, the fault mode and the workload.

use crate::faults::Schedule;
use crate::life::LifeFaults;
use ringchat_core::{RingOrder, ServerConfig};

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
    /// Long-life faults (off by default).
    pub life: LifeFaults,
    /// Run server traffic plain instead of through the seal (framing, key ids, counters, replay
    /// windows, incarnations) with the stand-in cipher. Off by default: the simulator seals.
    pub unsealed: bool,
    /// A host without the key on the LAN (issue 14, see `world::outsider`): `Some` forces it
    /// on or off; `None` draws it for a share of swarm seeds of sealed runs.
    pub outsider: Option<bool>,
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
            life: LifeFaults::default(),
            unsealed: false,
            outsider: None,
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
