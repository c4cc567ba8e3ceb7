//! ringchat-sim: deterministic discrete-event simulator over the ringchat core.
#![forbid(unsafe_code)]

pub mod cli;
