//! A server's settings: timings, discovery, and the cluster's expected size.

use crate::plant::PlantedBug;
use crate::view::RingOrder;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Timing and discovery settings. All servers of a cluster should share them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Heartbeat period between members.
    pub heartbeat_ms: u64,
    /// Silence after which a member (or the leader) is suspected.
    pub suspect_ms: u64,
    /// Silence after which the leader removes a member from the view.
    pub remove_ms: u64,
    /// How long a fresh server listens for a cluster before founding one.
    pub discovery_window_ms: u64,
    /// Period of Hello (discovering) and JoinRequest (joining) datagrams.
    pub hello_ms: u64,
    /// Period of the leader's Beacon to the discovery group.
    pub beacon_ms: u64,
    /// Wait for a ring hop acknowledgement before a retry.
    pub hop_timeout_ms: u64,
    /// Retries of a ring hop before its target is suspected and skipped.
    pub hop_retries: u32,
    /// An election that has not produced a leader after this restarts with a higher epoch.
    pub election_timeout_ms: u64,
    /// Upper bound of the random back-off before an election starts.
    pub backoff_ms: u64,
    /// Joining without an answer for this long makes a server found a cluster anew; a member
    /// (or restarted voter) that has had neither a leader nor a majority of its view in sight
    /// for this long is stranded, and merges into another cluster with a leader that it hears of.
    pub join_give_up_ms: u64,
    /// Ring order (a cluster parameter).
    pub ring: RingOrder,
    /// Send discovery datagrams to the discovery group.
    pub discovery: bool,
    /// Known peers, sent discovery datagrams directly.
    pub join: Vec<SocketAddr>,
    /// How many servers the cluster is meant to have, if known: a server then founds a cluster
    /// only with a majority of them in sight, so a partitioned cold start founds one cluster
    /// instead of one per side (and a server cut off alone waits instead of founding its own).
    #[serde(default)]
    pub expect: Option<usize>,
    /// The driver's build (name, version, commit), shown by `status`; not a protocol setting.
    #[serde(skip)]
    pub build: String,
    /// The driver seals server traffic (the `seal` module); shown by `status`, not a
    /// protocol setting.
    #[serde(skip)]
    pub sealed: bool,
    /// The public key of the identity client channels are sealed to, when sealed: the answer
    /// to a client's plain `Identity` request (trust on first use). Not a protocol setting.
    #[serde(skip)]
    pub identity: Option<[u8; 32]>,
    /// A bug planted on purpose (checker tests only; `None` in every real configuration).
    #[doc(hidden)]
    #[serde(skip)]
    pub plant: Option<PlantedBug>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat_ms: 100,
            suspect_ms: 350,
            remove_ms: 3000,
            discovery_window_ms: 500,
            hello_ms: 200,
            beacon_ms: 1000,
            hop_timeout_ms: 40,
            hop_retries: 2,
            election_timeout_ms: 700,
            backoff_ms: 100,
            join_give_up_ms: 5000,
            ring: RingOrder::Ascending,
            discovery: true,
            join: Vec::new(),
            expect: None,
            build: String::new(),
            sealed: false,
            identity: None,
            plant: None,
        }
    }
}
