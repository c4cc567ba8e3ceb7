//! `ringchat sim`: run one seed or a range of seeds, print reports, and the
//! exact command that replays a failure.

mod filter;
mod sweep;

use crate::faults::Schedule;
use crate::life::LifeFaults;
use crate::world::{self, FaultMode, Report, SimConfig};
use ringchat_core::{PlantedBug, RingOrder};
use std::io::Write;

/// `--plant NAME`: one of the core's planted bugs (the list lives with them, in
/// `ringchat_core::PlantedBug`).
fn parse_plant(name: &str) -> Result<PlantedBug, String> {
    PlantedBug::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
        format!("no planted bug {name:?}; one of: {}", names.join(", "))
    })
}

/// A fault schedule read from a file, with the path it came from (for the replay line).
#[derive(Clone, Debug)]
pub struct ScheduleFile {
    /// The path as given.
    pub path: String,
    /// The schedule.
    pub schedule: Schedule,
}

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
    /// Print a readable trace, one line per event (single seed only). Servers are named by
    /// their lives (`d1dacd6f/3`), clients by user and client id, messages `client:seq`.
    #[arg(long)]
    pub trace: bool,
    /// Trace only from this virtual time on, milliseconds (implies --trace).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub trace_from_ms: Option<u64>,
    /// Trace only before this virtual time, milliseconds (implies --trace).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub trace_to_ms: Option<u64>,
    /// Trace only the window `A..B` of virtual milliseconds, B excluded (implies --trace).
    #[arg(long, value_name = "A..B", value_parser = parse_range, conflicts_with_all = ["trace_from_ms", "trace_to_ms"])]
    pub window: Option<(u64, u64)>,
    /// Trace only lines about these servers (implies --trace): a slot as the run numbers
    /// them (`0`, `n0`), a short id or its prefix (`d1dacd6f`), or one life (`d1dacd6f/2`).
    /// Repeat it or separate with commas.
    #[arg(long, value_name = "SERVER", value_delimiter = ',', value_parser = filter::parse_server)]
    pub trace_server: Vec<filter::ServerSpec>,
    /// Trace only lines of these kinds (implies --trace): message kinds (`hello`, `chat`,
    /// `lcr_token`, `show`, ...), event kinds (`voted`, `became_leader`, `view_installed`, ...),
    /// `client`, `fault` or `life`. Repeat it or separate with commas.
    #[arg(long, value_name = "KIND", value_delimiter = ',', value_parser = filter::parse_kind)]
    pub trace_kind: Vec<String>,
    /// Print one JSON object per seed.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for a range, 1 to 256 (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
    /// Simulated chat users (0 = servers only).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub clients: u64,
    /// Replay an explicit fault schedule (JSON, as a property test prints it) instead of drawing one.
    #[arg(long, value_name = "FILE", value_parser = parse_schedule)]
    pub schedule: Option<ScheduleFile>,
    /// Plant one protocol bug in every server, to watch a checker catch it.
    #[arg(long, value_name = "BUG", value_parser = parse_plant)]
    pub plant: Option<PlantedBug>,
    /// Also let the seed switch on the loss of a majority's disks at once, beyond what the
    /// guarantees cover (swarm seeds already draw server and client churn, restarts with the disk
    /// lost, power cuts and careless clients, and check bounded state and liveness after churn).
    #[arg(long, conflicts_with = "no_life_faults")]
    pub long_life: bool,
    /// Swarm seeds without the faults of a long life (churn, lost disks, power cuts, careless
    /// clients), as before they were drawn by default.
    #[arg(long)]
    pub no_life_faults: bool,
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

/// The longest run a schedule may describe, milliseconds (a day, as `--duration-ms`).
const MAX_MS: u64 = 86_400_000;

fn parse_schedule(path: &str) -> Result<ScheduleFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let schedule: Schedule = serde_json::from_str(&text).map_err(|e| format!("{path} is not a fault schedule: {e}"))?;
    check_schedule(&schedule).map_err(|e| format!("{path}: {e}"))?;
    Ok(ScheduleFile { path: path.to_string(), schedule })
}

/// What a schedule must respect so that no value in it can make the simulator panic.
pub fn check_schedule(s: &Schedule) -> Result<(), String> {
    let r = &s.rates;
    let p = |x: f64| (0.0..=1.0).contains(&x);
    if !p(r.loss) || !p(r.duplicate) {
        return Err(format!("rates: loss {} and duplicate {} must be between 0 and 1", r.loss, r.duplicate));
    }
    if r.latency_us > 10_000_000 || r.jitter_us > 10_000_000 {
        return Err(format!("rates: latency_us {} and jitter_us {} must be at most 10 s", r.latency_us, r.jitter_us));
    }
    if r.drift_ppm > 100_000 {
        return Err(format!("rates: drift_ppm {} must be at most 100000", r.drift_ppm));
    }
    if s.heal_ms > MAX_MS {
        return Err(format!("heal_ms {} is beyond a day", s.heal_ms));
    }
    if let Some((at, _)) = s.actions.iter().find(|(at, _)| *at > MAX_MS) {
        return Err(format!("an action at {at} ms is beyond a day"));
    }
    Ok(())
}

/// Prints a line to stdout; a closed pipe (`| head`) ends the process quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    };
}
use out;

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("bad range start {a:?}"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("bad range end {b:?}"))?;
    if b <= a {
        return Err(format!("empty range {a}..{b}"));
    }
    Ok((a, b))
}

/// Quotes `s` for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl SimArgs {
    /// The configuration of seed `seed` under these arguments.
    pub fn config(&self, seed: u64) -> SimConfig {
        let mut cfg = SimConfig {
            seed,
            servers: self.servers as usize,
            duration_ms: self.duration_ms,
            faults: match (&self.schedule, self.faults) {
                (Some(s), _) => FaultMode::Schedule(s.schedule.clone()),
                (None, FaultsArg::Swarm) => FaultMode::Swarm,
                (None, FaultsArg::None) => FaultMode::None,
            },
            ring: match self.ring {
                RingArg::Ascending => RingOrder::Ascending,
                RingArg::Random => RingOrder::Hashed,
            },
            trace: self.tracing(),
            clients: self.clients as usize,
            life: self.life(),
            unsealed: self.unsealed,
            outsider: self.outsider.then_some(true),
            ..SimConfig::default()
        };
        cfg.server.plant = self.plant;
        cfg
    }

    /// Whether a trace is asked for (`--trace` or any of its filters).
    pub fn tracing(&self) -> bool {
        self.trace || self.filter().is_some()
    }

    /// The trace filter the flags ask for (`None`: no filter flag).
    fn filter(&self) -> Option<filter::Filter> {
        let (from, to) = match self.window {
            Some((a, b)) => (Some(a), Some(b)),
            None => (self.trace_from_ms, self.trace_to_ms),
        };
        let any = from.is_some() || to.is_some() || !self.trace_server.is_empty() || !self.trace_kind.is_empty();
        any.then(|| filter::Filter {
            from_us: from.map_or(0, |ms| ms * 1000),
            to_us: to.map_or(u64::MAX, |ms| ms * 1000),
            servers: self.trace_server.clone(),
            kinds: self.trace_kind.clone(),
        })
    }

    /// The long-life faults these flags ask for.
    pub fn life(&self) -> LifeFaults {
        let drawn = self.faults == FaultsArg::Swarm && self.schedule.is_none() && !self.no_life_faults;
        LifeFaults {
            swarm: drawn || self.long_life,
            swarm_majority: self.long_life,
            churn: self.churn,
            disk_loss: self.disk_loss,
            power_loss: self.power_loss,
            careless: self.careless,
            majority_loss: self.majority_loss,
        }
    }

    /// The command line that replays `seed` exactly, with its trace, ready to paste: the
    /// program as it was invoked, every flag that shapes the run, and the schedule's path.
    pub fn replay_command(&self, seed: u64) -> String {
        let faults = if self.faults == FaultsArg::Swarm { "swarm" } else { "none" };
        let ring = if self.ring == RingArg::Ascending { "ascending" } else { "random" };
        let schedule = self.schedule.as_ref().map(|s| format!(" --schedule {}", shell_quote(&s.path))).unwrap_or_default();
        let plant = self.plant.map(|p| format!(" --plant {}", p.name())).unwrap_or_default();
        let life = self.life();
        let flags: String = [
            (self.long_life, " --long-life"),
            (self.no_life_faults, " --no-life-faults"),
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
            "{} sim --seed {seed} --servers {} --clients {} --duration-ms {} --faults {faults} --ring {ring}{schedule}{plant}{flags} --trace",
            program(),
            self.servers,
            self.clients,
            self.duration_ms
        )
    }
}

/// The program as the user invoked it when that was a path (`./target/release/ringchat`), so
/// a replay line pastes as printed; `ringchat` when it was found on the PATH.
fn program() -> String {
    match std::env::args().next() {
        Some(p) if p.contains('/') && !p.contains("/deps/") => shell_quote(&p),
        _ => "ringchat".to_string(),
    }
}

/// Runs `ringchat sim`; returns the process exit code (0 ok, 1 a property broke, 2 usage).
pub fn run(args: SimArgs) -> i32 {
    if args.tracing() && args.seeds.is_some() {
        eprintln!("error: --trace and its filters need a single --seed");
        return 2;
    }
    if let (Some(a), Some(b)) = (args.trace_from_ms, args.trace_to_ms) {
        if b <= a {
            eprintln!("error: --trace-to-ms {b} must be above --trace-from-ms {a}");
            return 2;
        }
    }
    match args.seeds {
        Some((a, b)) => sweep::run_range(&args, a, b),
        None => run_one(&args, args.seed.unwrap_or(0)),
    }
}

fn run_one(args: &SimArgs, seed: u64) -> i32 {
    let outcome = world::run(args.config(seed));
    match args.filter() {
        Some(f) => {
            for line in outcome.trace.iter().filter(|l| f.keeps(l)) {
                out!("{line}");
            }
            for note in f.unmatched(&outcome.trace) {
                eprintln!("note: {note}");
            }
        }
        None => {
            for line in &outcome.trace {
                out!("{line}");
            }
        }
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

/// The rates line of a report: the rates drawn for the run (loss and duplication stop at heal).
pub fn rates_line(r: &Report) -> String {
    format!(
        "rates (drawn, until heal at {} ms): loss {:.1}%, duplicate {:.1}%, latency {}+{} us, drift {} ppm",
        r.heal_ms,
        r.rates.loss * 100.0,
        r.rates.duplicate * 100.0,
        r.rates.latency_us,
        r.rates.jitter_us,
        r.rates.drift_ppm
    )
}

/// The elections a report lists, one line each; each names its cluster when the run had more
/// than one (two clusters may each have an epoch 1).
pub fn election_lines(r: &Report) -> Vec<String> {
    let clusters: std::collections::BTreeSet<&str> = r.elections.iter().map(|e| e.cluster.as_str()).collect();
    r.elections
        .iter()
        .map(|e| {
            let cluster = if clusters.len() > 1 { format!("cluster {} ", e.cluster.get(..8).unwrap_or(&e.cluster)) } else { String::new() };
            format!("{cluster}epoch {:>3} leader {} at {:.1} ms", e.epoch, e.leader_life, e.at_ms)
        })
        .collect()
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
    out!("  {}", rates_line(r));
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
    let clusters: std::collections::BTreeSet<&str> = r.elections.iter().map(|e| e.cluster.as_str()).collect();
    if clusters.len() > 1 {
        out!("  elections: {} in {} clusters", r.elections.len(), clusters.len());
    } else {
        out!("  elections: {}", r.elections.len());
    }
    for line in election_lines(r).iter().take(12) {
        out!("    {line}");
    }
    match (&r.final_leader_life, r.settle_ms) {
        (Some(l), Some(s)) => out!("  final leader {l} (agreed {s:.1} ms after heal at {} ms)", r.heal_ms),
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

/// Violations printed per property (`--json` has them all).
const SHOWN_PER_PROPERTY: usize = 5;

/// The lines that report a failed seed: its violations (at most a few of each property) and
/// the command that replays it.
pub fn failure_lines(args: &SimArgs, r: &Report) -> Vec<String> {
    let mut lines = vec![format!("FAIL seed {}:", r.seed)];
    let mut seen: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for v in &r.violations {
        let n = seen.entry(v.property.as_str()).or_insert(0);
        *n += 1;
        if *n <= SHOWN_PER_PROPERTY {
            lines.push(format!("  {}: {}", v.property, v.detail));
        }
    }
    for (p, n) in seen.iter().filter(|(_, &n)| n > SHOWN_PER_PROPERTY) {
        lines.push(format!("  {p}: ... and {} more (all of them with --json)", n - SHOWN_PER_PROPERTY));
    }
    lines.push(format!("  replay: {}", args.replay_command(r.seed)));
    lines
}

fn print_failure(args: &SimArgs, r: &Report) {
    for line in failure_lines(args, r) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ElectionRecord;

    fn record(cluster: &str, epoch: u64, leader: &str) -> ElectionRecord {
        ElectionRecord { epoch, leader: String::new(), leader_life: leader.into(), cluster: cluster.into(), at_ms: 1.0 }
    }

    #[test]
    fn elections_name_their_cluster_when_a_run_has_two() {
        let mut r = world::run(SimConfig { seed: 1, duration_ms: 2_000, ..SimConfig::default() }).report;
        let (a, b) = ("5e0c81a2".to_string() + &"0".repeat(24), "7b5e1c64".to_string() + &"1".repeat(24));
        r.elections = vec![record(&a, 1, "d1dacd6f/1"), record(&a, 2, "d1dacd6f/1")];
        assert_eq!(election_lines(&r)[0], "epoch   1 leader d1dacd6f/1 at 1.0 ms");
        r.elections.push(record(&b, 1, "1370ad6e/2"));
        let lines = election_lines(&r);
        assert_eq!(lines[0], "cluster 5e0c81a2 epoch   1 leader d1dacd6f/1 at 1.0 ms");
        assert_eq!(lines[2], "cluster 7b5e1c64 epoch   1 leader 1370ad6e/2 at 1.0 ms");
    }

    #[test]
    fn shell_quoting_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("tests/schedules/split-cold-start.json"), "tests/schedules/split-cold-start.json");
        assert_eq!(shell_quote("my schedule.json"), "'my schedule.json'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn schedules_with_values_that_could_panic_are_refused() {
        let ok = Schedule::none(10_000);
        assert!(check_schedule(&ok).is_ok());
        let mut loss = ok.clone();
        loss.rates.loss = 1.5;
        assert!(check_schedule(&loss).is_err());
        let mut drift = ok.clone();
        drift.rates.drift_ppm = 1_000_000;
        assert!(check_schedule(&drift).is_err());
        let far = Schedule { heal_ms: u64::MAX, ..ok };
        assert!(check_schedule(&far).is_err());
    }
}
