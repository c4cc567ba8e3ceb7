//! ringchat-core: the sans-IO protocol of ringchat.
//!
//! No sockets, threads, clocks, async or global RNG: input bytes and time in;
//! datagrams, a next deadline and events out. The same state machine runs in
//! the deterministic simulator (`ringchat-sim`) and on real UDP (`ringchat-net`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod assign;
pub mod causal;
pub mod chat;
pub mod chat_server;
pub mod client;
pub mod client_wire;
pub mod election;
pub mod failure_detector;
pub mod id;
pub mod membership;
pub mod server;
pub mod time;
pub mod transfer;
pub mod view;
pub mod wire;

pub use chat_server::{ChatStats, PlantedBug};
pub use id::{ClusterId, NodeId, ServerId};
pub use server::{Counters, Dest, Durable, Event, Phase, Role, Server, ServerConfig, Status, Transmit};
pub use time::Instant;
pub use view::{Member, RingOrder, View, ViewStamp};
