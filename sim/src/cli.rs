//! `ringchat sim`: run one seed or a range of seeds, print reports, and the
//! exact command that replays a failure.

use crate::faults::Schedule;
use crate::life::LifeFaults;
use crate::world::{self, FaultMode, Report, SimConfig};
use ringchat_core::RingOrder;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Fault injection choice on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultsArg {
    /// Each seed draws its own fault rates and schedule.
    Swarm,
    /// A clean network and no node faults.
    None,
}

/// Ring order choice on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingArg {
    /// Each server's successor is the next larger id.
    Ascending,
    /// Servers sit on the ring in a seeded random order.
    Random,
}

/// Arguments of `ringchat sim`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("which").args(["seed", "seeds"])))]
pub struct SimArgs {
    /// Run one seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run a range of seeds, `A..B` (B excluded), on every core.
    #[arg(long, value_parser = parse_range)]
    pub seeds: Option<(u64, u64)>,
    /// Number of servers (1 to 24).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=24))]
    pub servers: u64,
    /// Simulated duration in milliseconds (2000 to a day).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(2_000..=86_400_000))]
    pub duration_ms: u64,
    /// Fault injection.
    #[arg(long, value_enum, default_value_t = FaultsArg::Swarm)]
    pub faults: FaultsArg,
    /// Ring order.
    #[arg(long, value_enum, default_value_t = RingArg::Ascending)]
    pub ring: RingArg,
    /// Print a readable trace, one line per event (single seed only).
    #[arg(long)]
    pub trace: bool,
    /// Print one JSON object per seed.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for a range (default: every core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Simulated chat users (0 = servers only).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub clients: u64,
    /// Replay an explicit fault schedule (JSON, as a property test prints it) instead of drawing one.
    #[arg(long, value_parser = parse_schedule)]
    pub schedule: Option<Schedule>,
    /// Faults of a long life, each kind switched on and rated by the seed: server churn and client
    /// churn, restarts with the disk lost, power cuts, careless clients (also checks bounded state
    /// and liveness after churn).
    #[arg(long)]
    pub long_life: bool,
    /// Force server churn (crash and restart all through chaos) and client churn (processes that
    /// quit or vanish).
    #[arg(long)]
    pub churn: bool,
    /// Force restarts with the disk lost (no durable state, a new server id).
    #[arg(long)]
    pub disk_loss: bool,
    /// Force power cuts of every server at once; every crash then keeps only what the driver made durable.
    #[arg(long)]
    pub power_loss: bool,
    /// Force careless clients: typos, empty rooms, name collisions, idling, quits right after a show.
    #[arg(long)]
    pub careless: bool,
    /// Force one correlated disk loss: a majority of the servers crash together and come back
    /// with their disks lost (new server ids) while the others keep their view.
    #[arg(long)]
    pub majority_loss: bool,
    /// Run server traffic plain, without the seal (to compare speed; the default seals with the
    /// stand-in cipher).
    #[arg(long)]
    pub unsealed: bool,
    /// Put a host without the cluster key on the LAN: it replays, mutates and forges datagrams
    /// and talks to servers as a client would (on by default in a share of swarm seeds).
    #[arg(long)]
    pub outsider: bool,
}

fn parse_schedule(path: &str) -> Result<Schedule, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path} is not a fault schedule: {e}"))
}

/// Prints a line to stdout; a closed pipe (`| head`) ends the process quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    };
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("bad range start {a:?}"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("bad range end {b:?}"))?;
    if b <= a {
        return Err(format!("empty range {a}..{b}"));
    }
    Ok((a, b))
}

impl SimArgs {
    /// The configuration of seed `seed` under these arguments.
    pub fn config(&self, seed: u64) -> SimConfig {
        SimConfig {
            seed,
            servers: self.servers as usize,
            duration_ms: self.duration_ms,
            faults: match (&self.schedule, self.faults) {
                (Some(s), _) => FaultMode::Schedule(s.clone()),
                (None, FaultsArg::Swarm) => FaultMode::Swarm,
                (None, FaultsArg::None) => FaultMode::None,
            },
            ring: match self.ring {
                RingArg::Ascending => RingOrder::Ascending,
                RingArg::Random => RingOrder::Hashed,
            },
            trace: self.trace,
            clients: self.clients as usize,
            life: self.life(),
            unsealed: self.unsealed,
            outsider: self.outsider.then_some(true),
            ..SimConfig::default()
        }
    }

    /// The long-life faults these flags ask for.
    pub fn life(&self) -> LifeFaults {
        LifeFaults {
            swarm: self.long_life,
            churn: self.churn,
            disk_loss: self.disk_loss,
            power_loss: self.power_loss,
            careless: self.careless,
            majority_loss: self.majority_loss,
        }
    }

    /// The command line that replays `seed` exactly.
    pub fn replay_command(&self, seed: u64) -> String {
        let faults = if self.faults == FaultsArg::Swarm { "swarm" } else { "none" };
        let ring = if self.ring == RingArg::Ascending { "ascending" } else { "random" };
        let schedule = if self.schedule.is_some() { " --schedule <the same schedule file>" } else { "" };
        let life = self.life();
        let flags: String = [
            (life.swarm, " --long-life"),
            (life.churn, " --churn"),
            (life.disk_loss, " --disk-loss"),
            (life.power_loss, " --power-loss"),
            (life.careless, " --careless"),
            (life.majority_loss, " --majority-loss"),
            (self.unsealed, " --unsealed"),
            (self.outsider, " --outsider"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| *f)
        .collect();
        format!(
            "ringchat sim --seed {seed} --servers {} --clients {} --duration-ms {} --faults {faults} --ring {ring}{schedule}{flags} --trace",
            self.servers, self.clients, self.duration_ms
        )
    }
}

/// Runs `ringchat sim`; returns the process exit code (0 ok, 1 a property broke, 2 usage).
pub fn run(args: SimArgs) -> i32 {
    if args.trace && args.seeds.is_some() {
        eprintln!("error: --trace needs a single --seed");
        return 2;
    }
    match args.seeds {
        Some((a, b)) => run_range(&args, a, b),
        None => run_one(&args, args.seed.unwrap_or(0)),
    }
}

fn run_one(args: &SimArgs, seed: u64) -> i32 {
    let outcome = world::run(args.config(seed));
    for line in &outcome.trace {
        out!("{line}");
    }
    let r = &outcome.report;
    if args.json {
        out!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        print_human(r);
    }
    if r.ok {
        0
    } else {
        print_failure(args, r);
        1
    }
}

fn print_human(r: &Report) {
    let status = if r.ok { "ok" } else { "FAILED" };
    out!(
        "seed {}: {status}: {} servers, {} ms simulated, {} events, trace {}",
        r.seed,
        r.servers.len(),
        r.duration_ms,
        r.events,
        r.trace_hash
    );
    out!(
        "  rates: loss {:.1}%, duplicate {:.1}%, latency {}+{} us, drift {} ppm",
        r.rates.loss * 100.0,
        r.rates.duplicate * 100.0,
        r.rates.latency_us,
        r.rates.jitter_us,
        r.rates.drift_ppm
    );
    if let Some(l) = &r.life {
        out!(
            "  life: churn {:.1}/min, disk loss {:.0}% of restarts, power cuts {}, client churn {:.1}%, careless {:.1}%, disk {}{}",
            l.churn_per_min,
            l.disk_loss * 100.0,
            l.power_cuts,
            l.client_churn * 100.0,
            l.careless * 100.0,
            if l.driver_disk { "as the driver writes it" } else { "whole state" },
            if l.majority_loss { ", a majority loses its disks once" } else { "" }
        );
    }
    let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out!("  faults: {}", if faults.is_empty() { "none".into() } else { faults.join(" ") });
    let msgs: Vec<String> = r.messages_by_kind.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out!("  messages: {}", msgs.join(" "));
    let res: Vec<String> = r.resources.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
    out!("  resources (max): {}", res.join(" "));
    out!("  elections: {}", r.elections.len());
    for e in r.elections.iter().take(12) {
        out!("    epoch {:>3} leader {} at {:.1} ms", e.epoch, &e.leader[..8], e.at_ms);
    }
    match (&r.final_leader, r.settle_ms) {
        (Some(l), Some(s)) => out!("  final leader {} (agreed {s:.1} ms after heal at {} ms)", &l[..8], r.heal_ms),
        _ => out!("  no final leader"),
    }
    if let Some(c) = &r.chat {
        out!(
            "  chat: sent {} stored {} shown {} failed {} duplicates_suppressed {} max_holdback {} inbox_max {} delivery p50 {:.1} ms p99 {:.1} ms, vc {:.1} B/message",
            c.sent,
            c.stored,
            c.shown,
            c.failed,
            c.duplicates_suppressed,
            c.max_holdback,
            c.inbox_max,
            c.delivery_ms.p50,
            c.delivery_ms.p99,
            c.vc_bytes_per_message
        );
    }
}

fn print_failure(args: &SimArgs, r: &Report) {
    eprintln!("FAIL seed {}:", r.seed);
    for v in &r.violations {
        eprintln!("  {}: {}", v.property, v.detail);
    }
    eprintln!("  replay: {}", args.replay_command(r.seed));
}

fn run_range(args: &SimArgs, a: u64, b: u64) -> i32 {
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let next = AtomicU64::new(a);
    let results: Mutex<Vec<Report>> = Mutex::new(Vec::with_capacity((b - a) as usize));
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= b {
                    break;
                }
                let report = world::run(args.config(seed)).report;
                results.lock().unwrap_or_else(|e| e.into_inner()).push(report);
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.seed);
    let failed: Vec<&Report> = results.iter().filter(|r| !r.ok).collect();
    if args.json {
        for r in &results {
            out!("{}", serde_json::to_string(r).unwrap_or_default());
        }
    }
    for r in &failed {
        print_failure(args, r);
    }
    let n = results.len();
    let faults: u64 = results.iter().map(|r| r.faults.values().sum::<u64>()).sum();
    let summary = format!(
        "{n} seeds: {} passed, {} failed in {elapsed:.1} s ({:.0} seeds/min on {jobs} threads, {faults} faults injected)",
        n - failed.len(),
        failed.len(),
        n as f64 / elapsed * 60.0
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        out!("{summary}");
    }
    if failed.is_empty() {
        0
    } else {
        1
    }
}
