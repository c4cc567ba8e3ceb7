//! ringchat-core: the sans-IO protocol of ringchat.
//!
//! No sockets, threads, clocks, async or global RNG: input bytes and time in;
//! datagrams, a next deadline and events out. The same state machine runs in
//! the deterministic simulator (`ringchat-sim`) and on real UDP (`ringchat-net`).
//!
//! Layers, each depending only on those listed before it:
//! - the base: [`id`] (identities), [`time`] (instants and vector clocks), [`view`]
//!   (membership views), [`limits`] (every bound), [`plant`] (planted bugs for checker tests),
//!   [`user`] (user keys and login signatures), [`path`] (where a client is answered);
//! - [`wire`]: the datagram format and every message between servers and with clients;
//! - [`chat`]: causal broadcast, replicated chat state, state transfer, a server's chat duties;
//! - [`cluster`]: the [`Server`]: discovery, views, failure detection, the LCR election;
//! - [`client`]: the client state machine (depends on the base and [`wire`] only);
//! - [`seal`]: sealed traffic around a [`Server`]: between servers (key ring, AEAD frame,
//!   replay windows) and with clients (the client channel to the cluster's identity).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chat;
pub mod client;
pub mod cluster;
pub mod id;
pub mod limits;
pub mod path;
pub mod plant;
pub mod seal;
pub mod time;
pub mod user;
pub mod view;
pub mod wire;

pub use chat::server::ChatStats;
pub use cluster::{Counters, Dest, Durable, Event, Journal, Phase, Role, Server, ServerConfig, Status, Transmit};
pub use id::{ClusterId, NodeId, ServerId};
pub use plant::PlantedBug;
pub use time::Instant;
pub use view::{Member, RingOrder, View, ViewStamp};
