//! Fault model: per-seed rates (swarm testing) and a fault schedule kept as
//! data, so property tests can shrink it.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Network and clock fault rates of one run (drawn from the seed in swarm mode).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRates {
    /// Probability a datagram is lost (chaos phase only).
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Base one-way latency, microseconds.
    pub latency_us: u64,
    /// Extra random latency up to this, microseconds (reorders datagrams).
    pub jitter_us: u64,
    /// Per-node clock drift bound, parts per million.
    pub drift_ppm: u64,
}

impl FaultRates {
    /// A clean LAN: 200–700 µs latency, nothing lost.
    pub fn none() -> FaultRates {
        FaultRates { loss: 0.0, duplicate: 0.0, latency_us: 200, jitter_us: 500, drift_ppm: 0 }
    }

    /// Swarm testing: each fault kind is switched on or off by the seed, with its own rate.
    pub fn swarm(rng: &mut impl RngCore) -> FaultRates {
        let mut on = |p: f64| rng.random_bool(p);
        let (loss_on, dup_on, drift_on) = (on(0.6), on(0.4), on(0.4));
        FaultRates {
            loss: if loss_on { rng.random_range(0.0..0.15) } else { 0.0 },
            duplicate: if dup_on { rng.random_range(0.0..0.1) } else { 0.0 },
            latency_us: rng.random_range(100..2_000),
            jitter_us: rng.random_range(0..5_000),
            drift_ppm: if drift_on { rng.random_range(0..20_000) } else { 0 },
        }
    }
}

/// How a partition splits the servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partition {
    /// Two sides that cannot hear each other: `side` against the rest.
    Symmetric { side: Vec<usize> },
    /// `side` cannot send to the rest (the rest can still send to it).
    OneWay { side: Vec<usize> },
    /// One server cut off both ways.
    IsolateOne { node: usize },
    /// Each server hears only its ring neighbours within distance n/2 on one
    /// side: everyone sees a majority, but no two see the same one.
    MajoritiesRing,
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultAction {
    /// Kill a server (its disk survives).
    Crash(usize),
    /// Start a crashed server again as a new incarnation.
    Restart(usize),
    /// Freeze a server (its timers and socket stall).
    Pause(usize),
    /// Thaw a paused server.
    Resume(usize),
    /// Cut links.
    Partition(Partition),
    /// Restore all links.
    HealPartition,
    /// Start a crashed server with its disk lost: no durable state, a new server id (an operator
    /// replaced the machine or forgot `--state`).
    RestartBlank(usize),
    /// Power cut: every server crashes at the same instant, keeping what the driver made durable.
    PowerCut,
    /// Power back: every server down restarts from its disk.
    PowerRestore,
    /// A majority of the servers crash at the same instant (each comes back later through its
    /// own `RestartBlank`, its disk lost) while the others keep running with their view: the
    /// survivors are left in a cluster whose majority will never return under the old ids.
    MajorityCrash(Vec<usize>),
}

impl FaultAction {
    /// Counter key of the action.
    pub fn kind(&self) -> &'static str {
        match self {
            FaultAction::Crash(_) => "crash",
            FaultAction::Restart(_) => "restart",
            FaultAction::Pause(_) => "pause",
            FaultAction::Resume(_) => "resume",
            FaultAction::Partition(Partition::Symmetric { .. }) => "partition_symmetric",
            FaultAction::Partition(Partition::OneWay { .. }) => "partition_one_way",
            FaultAction::Partition(Partition::IsolateOne { .. }) => "partition_isolate_one",
            FaultAction::Partition(Partition::MajoritiesRing) => "partition_majorities_ring",
            FaultAction::HealPartition => "partition_heal",
            FaultAction::RestartBlank(_) => "disk_loss",
            FaultAction::PowerCut => "power_cut",
            FaultAction::PowerRestore => "power_restore",
            FaultAction::MajorityCrash(_) => "majority_disk_loss",
        }
    }
}

/// A fault schedule: actions at virtual milliseconds, all before `heal_ms`.
/// At `heal_ms` every link heals, paused servers resume and crashed ones restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Network and clock rates during chaos.
    pub rates: FaultRates,
    /// `(at_ms, action)`, sorted by time.
    pub actions: Vec<(u64, FaultAction)>,
    /// End of chaos.
    pub heal_ms: u64,
}

impl Schedule {
    /// No faults at all.
    pub fn none(heal_ms: u64) -> Schedule {
        Schedule { rates: FaultRates::none(), actions: Vec::new(), heal_ms }
    }

    /// A swarm schedule for `n` servers: crashes, pauses and partitions at
    /// seeded times during `[start_ms, heal_ms)`, never downing a majority at once.
    pub fn swarm(rng: &mut impl RngCore, n: usize, start_ms: u64, heal_ms: u64) -> Schedule {
        let rates = FaultRates::swarm(rng);
        let mut actions = Vec::new();
        let span = heal_ms.saturating_sub(start_ms).max(1);
        let crashes = if rng.random_bool(0.7) { rng.random_range(1..=4) } else { 0 };
        let pauses = if rng.random_bool(0.4) { rng.random_range(1..=3) } else { 0 };
        let partitions = if rng.random_bool(0.6) { rng.random_range(1..=3) } else { 0 };
        let minority = (n - 1) / 2;
        let mut down_until = vec![0u64; n];
        for _ in 0..crashes + pauses {
            let crash = actions.iter().filter(|(_, a)| matches!(a, FaultAction::Crash(_))).count() < crashes;
            let node = rng.random_range(0..n);
            let at = start_ms + rng.random_range(0..span);
            let len = rng.random_range(200..6_000);
            let busy = down_until.iter().enumerate().filter(|(i, &u)| *i != node && u > at).count();
            if down_until[node] > at || busy >= minority || at + len >= heal_ms {
                continue;
            }
            down_until[node] = at + len;
            let (down, up) = if crash {
                (FaultAction::Crash(node), FaultAction::Restart(node))
            } else {
                (FaultAction::Pause(node), FaultAction::Resume(node))
            };
            actions.push((at, down));
            actions.push((at + len, up));
        }
        let mut t = start_ms;
        for _ in 0..partitions {
            let at = t + rng.random_range(0..span / 3 + 1);
            let len = rng.random_range(300..8_000);
            if at + len >= heal_ms {
                break;
            }
            let p = match rng.random_range(0..4) {
                0 => Partition::Symmetric { side: random_side(rng, n) },
                1 => Partition::OneWay { side: random_side(rng, n) },
                2 => Partition::IsolateOne { node: rng.random_range(0..n) },
                _ => Partition::MajoritiesRing,
            };
            actions.push((at, FaultAction::Partition(p)));
            actions.push((at + len, FaultAction::HealPartition));
            t = at + len;
        }
        actions.sort_by_key(|(at, _)| *at);
        Schedule { rates, actions, heal_ms }
    }
}

/// A random minority side of `n` servers (at least one server: with a single server the side
/// is the whole cluster, and the partition cuts nothing).
fn random_side(rng: &mut impl RngCore, n: usize) -> Vec<usize> {
    let k = rng.random_range(1..=(n / 2).max(1));
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    let mut side = all[..k].to_vec();
    side.sort();
    side
}

/// The link matrix a partition leaves: `blocked[src][dst]`.
pub fn blocked_links(p: &Partition, n: usize) -> Vec<Vec<bool>> {
    let mut blocked = vec![vec![false; n]; n];
    match p {
        Partition::Symmetric { side } | Partition::OneWay { side } => {
            let one_way = matches!(p, Partition::OneWay { .. });
            for a in side.iter().copied().filter(|&a| a < n) {
                for b in (0..n).filter(|b| !side.contains(b)) {
                    blocked[a][b] = true;
                    if !one_way {
                        blocked[b][a] = true;
                    }
                }
            }
        }
        Partition::IsolateOne { node } => {
            for b in 0..n {
                if b != *node && *node < n {
                    blocked[*node][b] = true;
                    blocked[b][*node] = true;
                }
            }
        }
        Partition::MajoritiesRing => {
            // Hear ring neighbours up to distance k: 2k+1 servers, the smallest majority-sized window.
            let k = (n / 2).div_ceil(2);
            for (a, row) in blocked.iter_mut().enumerate() {
                for (b, cell) in row.iter_mut().enumerate() {
                    let d = (b + n - a) % n;
                    *cell = d.min(n - d) > k;
                }
            }
        }
    }
    blocked
}
