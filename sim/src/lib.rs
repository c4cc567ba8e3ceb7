//! ringchat-sim: a deterministic discrete-event simulator over the ringchat
//! core, with a seeded network and fault model, whole-history checkers, and
//! bit-identical replay of any seed.
#![forbid(unsafe_code)]

pub mod chat_check;
pub mod check;
pub mod cli;
pub mod config;
pub mod disk;
pub mod faults;
pub mod history;
pub mod life;
pub mod life_check;
pub mod names;
pub mod queue;
pub mod report;
pub mod resources;
pub mod world;

pub use check::Violation;
pub use faults::{FaultAction, FaultRates, Partition, Schedule};
pub use life::{LifeFaults, LifeRates};
pub use world::{run, FaultMode, Outcome, Report, SimConfig, Workload};
