//! ringchat-net: the tokio/socket2 runtime that drives the sans-IO core on real
//! UDP sockets, and the pieces of the `ringchat` binary (server, status).
//!
//! The driver only moves bytes and time between sockets and
//! [`ringchat_core::Server`]; every protocol rule lives in the core.
#![deny(unsafe_code)]

pub mod chatlog;
pub mod client;
pub mod config;
pub mod demo;
pub mod driver;
pub mod keys;
pub mod metrics;
pub mod sd;
pub mod state;
pub mod status;
pub mod trust;
pub mod udp;

/// The git commit this binary was built from: a short hash, `-dirty` if the work tree had
/// changes, or `unknown` (see `build.rs`).
pub const GIT_COMMIT: &str = env!("RINGCHAT_GIT_COMMIT");

/// `ringchat --version`: the package version and the git commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RINGCHAT_GIT_COMMIT"), ")");

/// An OS error without its " (os error N)" suffix, for one-line messages.
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}
