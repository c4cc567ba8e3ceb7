//! The faults of a long life (design §5): server churn (hundreds of lives in one run), restarts
//! with the disk lost (a new server id), power cuts of the whole cluster, and client churn and
//! carelessness.
//!
//! The library leaves them off unless asked for; `ringchat sim` draws churn, lost disks, power
//! cuts and careless clients for every swarm seed (`--long-life` adds the loss of a majority's
//! disks). Which kinds a seed gets and at what rate is drawn from the seed (swarm testing) on a
//! ChaCha stream of its own: switching them on leaves the seed's network rates and base
//! schedule as they were.

use crate::faults::{FaultAction, Schedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which long-life faults a run may inject (the `ringchat sim` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifeFaults {
    /// Churn, disk loss, power loss and careless clients are each switched on by the seed
    /// (swarm testing; the `ringchat sim` default).
    pub swarm: bool,
    /// `--long-life`: the seed may also switch on the loss of a majority's disks.
    pub swarm_majority: bool,
    /// `--churn`: servers crash and restart all through chaos; client processes quit or vanish.
    pub churn: bool,
    /// `--disk-loss`: some restarts come back with no durable state (a new server id).
    pub disk_loss: bool,
    /// `--power-loss`: every server crashes at once, keeping what the driver made durable.
    pub power_loss: bool,
    /// `--careless`: clients make typos, talk to empty rooms, claim others' names, idle, quit.
    pub careless: bool,
    /// `--majority-loss`: once, a majority of the servers crash together and come back with
    /// their disks lost while the others keep their view (the stranded survivor of issue 13).
    pub majority_loss: bool,
}

impl LifeFaults {
    /// Whether any long-life fault may fire.
    pub fn any(&self) -> bool {
        self.swarm || self.swarm_majority || self.churn || self.disk_loss || self.power_loss || self.careless || self.majority_loss
    }

    /// Every kind forced on (as if each flag were given).
    pub fn all() -> LifeFaults {
        LifeFaults {
            swarm: false,
            swarm_majority: false,
            churn: true,
            disk_loss: true,
            power_loss: true,
            careless: true,
            majority_loss: true,
        }
    }
}

/// The long-life rates of one run, drawn from the seed; zero means off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifeRates {
    /// Server crash-and-restart pairs per simulated minute of chaos.
    pub churn_per_min: f64,
    /// Share of restarts that come back with the disk lost.
    pub disk_loss: f64,
    /// Whole-cluster power cuts during chaos.
    pub power_cuts: u32,
    /// Chance per client action that the client process ends (a clean quit or a vanishing).
    pub client_churn: f64,
    /// Chance per client action of a careless act.
    pub careless: f64,
    /// A majority of the servers lose their disks together once (see [`LifeFaults::majority_loss`]).
    pub majority_loss: bool,
    /// A crashed server reboots from what the real driver made durable ([`crate::disk`]), not
    /// from its whole in-memory state (on with power loss).
    pub driver_disk: bool,
}

impl LifeRates {
    /// The rates of seed `seed` under `faults` for a chaos phase of `chaos_ms`.
    pub fn draw(seed: u64, faults: LifeFaults, chaos_ms: u64) -> LifeRates {
        let mut rng = stream(seed, 1);
        let mut on = |forced: bool| forced || (faults.swarm && rng.random_bool(0.6));
        let (churn, disk, power, careless) = (on(faults.churn), on(faults.disk_loss), on(faults.power_loss), on(faults.careless));
        let most_cuts = (chaos_ms / 120_000).clamp(1, 20) as u32;
        LifeRates {
            churn_per_min: if churn { rng.random_range(2.0..20.0) } else { 0.0 },
            disk_loss: if disk { rng.random_range(0.05..0.4) } else { 0.0 },
            power_cuts: if power { rng.random_range(1..=most_cuts) } else { 0 },
            client_churn: if churn { rng.random_range(0.02..0.1) } else { 0.0 },
            careless: if careless { rng.random_range(0.05..0.25) } else { 0.0 },
            driver_disk: power,
            // Drawn last, so the draws above stay as they were for every seed.
            majority_loss: faults.majority_loss || (faults.swarm_majority && rng.random_bool(0.3)),
        }
    }
}

fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(n);
    rng
}

/// How long a server that lost its disk counts as down after its restart: time for the leader
/// to suspect the old identity, remove it and admit the new one, which then catches up.
const REPLACE_MS: u64 = 10_000;

/// Adds the server faults of `rates` to `schedule` for `n` servers during `[start_ms, heal_ms)`:
/// churn (crash and restart pairs, never downing a majority together with the schedule's own
/// crashes and pauses), restarts with the disk lost, and power cuts with their restores.
pub fn extend(schedule: &mut Schedule, seed: u64, rates: &LifeRates, n: usize, start_ms: u64) {
    let mut rng = stream(seed, 2);
    let heal_ms = schedule.heal_ms;
    let span = heal_ms.saturating_sub(start_ms).max(1);
    let mut actions = Vec::new();
    // Down intervals already planned, per node.
    let mut down: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n];
    let mut since: Vec<Option<u64>> = vec![None; n];
    for (at, a) in &schedule.actions {
        match a {
            FaultAction::Crash(i) | FaultAction::Pause(i) if *i < n => since[*i] = Some(*at),
            FaultAction::Restart(i) | FaultAction::Resume(i) | FaultAction::RestartBlank(i) if *i < n => {
                if let Some(s) = since[*i].take() {
                    down[*i].push((s, *at));
                }
            }
            _ => {}
        }
    }
    let minority = n.saturating_sub(1) / 2;
    let downs = |down: &Vec<Vec<(u64, u64)>>, i: usize, a: u64, b: u64| down[i].iter().any(|&(s, e)| s < b && a < e);
    let pairs = if rates.churn_per_min > 0.0 {
        (rates.churn_per_min * span as f64 / 60_000.0).round() as u64
    } else if rates.disk_loss > 0.0 {
        rng.random_range(1..=3)
    } else {
        0
    };
    // Crash-to-replaced windows of the restarts with the disk lost.
    let mut lost: Vec<(u64, u64)> = Vec::new();
    for _ in 0..pairs {
        let at = start_ms + rng.random_range(0..span);
        let len = rng.random_range(200..5_000);
        let node = rng.random_range(0..n);
        let blank = rates.disk_loss > 0.0 && (rates.churn_per_min == 0.0 || rng.random_bool(rates.disk_loss));
        // Another disk lost meanwhile makes this restart keep its disk: two identities gone for
        // good at once can leave a view with no majority (seed 422).
        let blank = blank && !lost.iter().any(|&(s, e)| s < at + len + REPLACE_MS && at < e);
        // A lost disk takes the server's old identity out of its view for good, until the
        // leader replaces it with the new one: counted as down meanwhile, so lost disks come
        // one at a time, as the guarantees ask of operators (a majority lost at once is
        // `--majority-loss`).
        let end = at + len + if blank { REPLACE_MS } else { 0 };
        let busy = (0..n).filter(|&i| i != node && downs(&down, i, at, end)).count();
        if at + len >= heal_ms || downs(&down, node, at, end) || busy >= minority {
            continue;
        }
        down[node].push((at, end));
        if blank {
            lost.push((at, end));
        }
        actions.push((at, FaultAction::Crash(node)));
        actions.push((at + len, if blank { FaultAction::RestartBlank(node) } else { FaultAction::Restart(node) }));
    }
    for k in 0..rates.power_cuts as u64 {
        // One cut in each of `power_cuts` equal slices of chaos.
        let slice = span / rates.power_cuts as u64;
        let len = rng.random_range(100..3_000).min(slice / 2).max(1);
        let at = start_ms + k * slice + rng.random_range(0..(slice - len).max(1));
        if at + len < heal_ms {
            actions.push((at, FaultAction::PowerCut));
            actions.push((at + len, FaultAction::PowerRestore));
        }
    }
    for (at, a) in &actions {
        if matches!(a, FaultAction::PowerCut) {
            // Every server is down from the cut to its restore (within 3 s).
            (0..n).for_each(|i| down[i].push((*at, at + 3_000)));
        }
    }
    // Drawn last, so the faults above stay as they were for every seed.
    if rates.majority_loss && n >= 2 {
        actions.extend(majority_disk_loss(&mut rng, &down, n, start_ms, heal_ms));
    }
    schedule.actions.extend(actions);
    schedule.actions.sort_by_key(|(at, _)| *at);
}

/// The correlated disk loss (issue 13's stranded survivor): a majority of the servers crash at
/// one instant and come back one by one with their disks lost (new server ids), while the others
/// run on with their view. Placed where no server is down for another reason; none if no such
/// place is found in a few draws.
fn majority_disk_loss(rng: &mut ChaCha8Rng, down: &[Vec<(u64, u64)>], n: usize, start_ms: u64, heal_ms: u64) -> Vec<(u64, FaultAction)> {
    let k = n / 2 + 1;
    let first = start_ms + 2_000;
    for _ in 0..8 {
        if first + 8_000 >= heal_ms {
            return Vec::new();
        }
        let at = rng.random_range(first..heal_ms - 8_000);
        let back: Vec<u64> = (0..k).map(|_| at + rng.random_range(200..5_000) + rng.random_range(0..1_500)).collect();
        let end = back.iter().copied().max().unwrap_or(at);
        if (0..n).any(|i| down[i].iter().any(|&(s, e)| s < end + 1_000 && at < e + 1_000)) {
            continue;
        }
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = rng.random_range(i..n);
            all.swap(i, j);
        }
        let mut nodes = all[..k].to_vec();
        nodes.sort();
        let mut out = vec![(at, FaultAction::MajorityCrash(nodes.clone()))];
        out.extend(nodes.iter().zip(&back).map(|(&i, &b)| (b, FaultAction::RestartBlank(i))));
        return out;
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_disks_come_one_at_a_time_each_replaced_before_the_next() {
        // Heavy churn with every restart blank: the generator must leave each lost disk
        // `REPLACE_MS` to be replaced before another server loses its own, and never down a
        // majority, however many pairs it draws.
        let rates = LifeRates { churn_per_min: 20.0, disk_loss: 1.0, ..LifeRates::default() };
        let mut lost = 0;
        for seed in 0..40 {
            let mut schedule = Schedule::none(600_000);
            extend(&mut schedule, seed, &rates, 5, 1_000);
            let mut crashed_at = [None; 5];
            let mut windows: Vec<(usize, u64, u64)> = Vec::new();
            for (at, a) in &schedule.actions {
                match a {
                    FaultAction::Crash(i) => crashed_at[*i] = Some(*at),
                    FaultAction::RestartBlank(i) => {
                        windows.push((*i, crashed_at[*i].take().expect("a crash first"), at + REPLACE_MS));
                        lost += 1;
                    }
                    _ => {}
                }
            }
            for (k, (i, a, b)) in windows.iter().enumerate() {
                for (j, c, d) in &windows[k + 1..] {
                    assert!(i == j || b <= c || d <= a, "seed {seed}: disks of {i} and {j} lost together");
                }
            }
        }
        assert!(lost > 40, "the generator drew lost disks ({lost})");
    }
}
