//! What a run yields: the report `ringchat sim` prints (text or JSON), and the history and trace behind it.

use crate::check::Violation;
use crate::faults::FaultRates;
use crate::history::History;
use crate::life::LifeRates;
use crate::resources::Resources;
use serde::Serialize;
use std::collections::BTreeMap;

/// One election as the report lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ElectionRecord {
    /// Epoch.
    pub epoch: u64,
    /// Leader (full server id).
    pub leader: String,
    /// The leader's life, short: `d1dacd6f/3`.
    pub leader_life: String,
    /// The cluster it leads (full id; two clusters may both have an epoch 1).
    pub cluster: String,
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
    /// Fault rates drawn for the run (or given by its schedule); loss and duplication apply
    /// until heal (`heal_ms`).
    pub rates: FaultRates,
    /// Every election won.
    pub elections: Vec<ElectionRecord>,
    /// Leader all live servers agree on at the end.
    pub final_leader: Option<String>,
    /// Its life, short: `d1dacd6f/3`.
    pub final_leader_life: Option<String>,
    /// Heal to agreement, milliseconds.
    pub settle_ms: Option<f64>,
    /// End of chaos, milliseconds.
    pub heal_ms: u64,
    /// Run length, milliseconds.
    pub duration_ms: u64,
    /// Chat figures (absent without clients).
    pub chat: Option<ChatReport>,
    /// Long-life fault rates of the run (absent when no long-life fault was asked for).
    pub life: Option<LifeRates>,
    /// Largest state sizes any server reached (sampled every simulated second or so, and at each crash).
    pub resources: Resources,
}

/// A finished run: its report, its history, and its trace lines if asked for.
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// The whole history.
    pub history: History,
    /// One line per event (empty unless `trace`).
    pub trace: Vec<TraceLine>,
}

/// One line of a run's trace, with what `--trace` filters on.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceLine {
    /// Virtual time, microseconds.
    pub at_us: u64,
    /// Who acted: a server life (`d1dacd6f/3`), a client process (`u3 (client 400000001)`), or
    /// nobody (faults, heal).
    pub who: Option<String>,
    /// Server slots the line is about (the actor and the peer, when they are servers).
    pub slots: Vec<usize>,
    /// Names the line is about besides `who` (the peer).
    pub peer: Option<String>,
    /// Message kind (`hello`, `chat`, ...), event kind (`voted`, `view_installed`, ...),
    /// `client` for what a simulated user did or was told, `fault`, or `life` (start, disk loss, final state).
    pub kind: &'static str,
    /// The readable text.
    pub text: String,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>11.3}ms {} {}", self.at_us as f64 / 1000.0, self.who.as_deref().unwrap_or("-"), self.text)
    }
}

/// Chat figures of a run, for the JSON report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatReport {
    /// Chat messages submitted.
    pub sent: u64,
    /// Operations acknowledged `stored`.
    pub stored: u64,
    /// Messages shown to users.
    pub shown: u64,
    /// Operations reported failed.
    pub failed: u64,
    /// Retried copies servers did not show again (summed over live servers).
    pub duplicates_suppressed: u64,
    /// Largest hold-back queue on any server.
    pub max_holdback: u64,
    /// Largest user inbox on any server.
    pub inbox_max: u64,
    /// Virtual time from send to shown, milliseconds.
    pub delivery_ms: Percentiles,
    /// Mean encoded size of the vector clock (deps) of a first-sent chat broadcast, bytes.
    pub vc_bytes_per_message: f64,
    /// Logins refused (impostors and the like).
    pub refused: u64,
    /// Oversize texts refused at the client before sending.
    pub too_long: u64,
    /// Messages of honest clients their server refused (`ServerMsg::Refused`, other than
    /// the not-logged-in answer that makes a client log in again).
    pub server_refusals: u64,
}

/// Two percentiles.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}
