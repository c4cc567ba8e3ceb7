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
    pub trace: Vec<String>,
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
