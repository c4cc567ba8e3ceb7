//! Bounded state (B2): what a server keeps, durable and in memory, measured during a run and
//! compared with a bound that depends on the configured numbers of servers, users and rooms,
//! never on the run's length or on how many lives servers and clients had.

use crate::check::Violation;
use ringchat_core::Server;
use serde::Serialize;
use std::collections::BTreeMap;

/// Sizes of one server's state (a sample), or their maxima over a run (the report's `resources`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Encoded durable state (postcard of `Durable`), bytes.
    pub durable_bytes: u64,
    /// Messages in the retransmission store.
    pub store_entries: u64,
    /// Origins named by the largest vector clock kept (delivered, or a peer's digest).
    pub vc_origins: u64,
    /// Servers with a kept digest, or known to the causal layer.
    pub servers_known: u64,
    /// Client ids with deduplication entries.
    pub dedup_clients: u64,
    /// Deduplication entries over all clients.
    pub dedup_entries: u64,
    /// Client sessions.
    pub sessions: u64,
    /// Bound names.
    pub names: u64,
    /// Users with an inbox.
    pub inbox_users: u64,
    /// Room operations kept (joins and leaves, up to `ROOM_HISTORY` per user and room) over all rooms.
    pub room_standings: u64,
    /// Cluster ids with an epoch record.
    pub clusters: u64,
}

/// Most messages one simulated user is owed at once: a user away for a whole run is owed what
/// the run sent to it, and the workload sends fewer than this per user. (The product bounds
/// only the store as a whole, [`ringchat_core::limits::MAX_STORE`]; B1 catches a message kept
/// after every user acknowledged it.)
const USER_BACKLOG: u64 = 576;

impl Resources {
    /// Each measure with its name, in report order.
    pub fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("durable_bytes", self.durable_bytes),
            ("store_entries", self.store_entries),
            ("vc_origins", self.vc_origins),
            ("servers_known", self.servers_known),
            ("dedup_clients", self.dedup_clients),
            ("dedup_entries", self.dedup_entries),
            ("sessions", self.sessions),
            ("names", self.names),
            ("inbox_users", self.inbox_users),
            ("room_standings", self.room_standings),
            ("clusters", self.clusters),
        ]
    }

    /// Raises each measure to at least `other`'s.
    pub fn max_with(&mut self, o: &Resources) {
        let m = |a: &mut u64, b: u64| *a = (*a).max(b);
        m(&mut self.durable_bytes, o.durable_bytes);
        m(&mut self.store_entries, o.store_entries);
        m(&mut self.vc_origins, o.vc_origins);
        m(&mut self.servers_known, o.servers_known);
        m(&mut self.dedup_clients, o.dedup_clients);
        m(&mut self.dedup_entries, o.dedup_entries);
        m(&mut self.sessions, o.sessions);
        m(&mut self.names, o.names);
        m(&mut self.inbox_users, o.inbox_users);
        m(&mut self.room_standings, o.room_standings);
        m(&mut self.clusters, o.clusters);
    }

    /// The bound for `servers` servers, `users` users (the impostor included) and `rooms` rooms.
    ///
    /// Each server life is an origin until it is retired, so a vector names at most the current
    /// lives and two previous lives per server (a power cut makes every server a new life at
    /// once while the lives a churn restart just ended are still named), plus slack for a merge; a client keeps at most a
    /// few processes' dedup windows and sessions alive; names and inboxes are per user; a room
    /// keeps at most `ROOM_HISTORY` joins and leaves per user; the store holds at most every
    /// user's backlog ([`USER_BACKLOG`]) and one hold-back queue in flight.
    pub fn bound(servers: usize, users: usize, rooms: usize) -> Resources {
        use ringchat_core::limits::{DEDUP_WINDOW, MAX_TEXT};
        use ringchat_core::limits::{MAX_ANCHORS, MAX_HOLDBACK, ROOM_HISTORY};
        let (n, m, r) = (servers as u64, users as u64, rooms.max(1) as u64);
        let store = m * USER_BACKLOG + MAX_HOLDBACK as u64;
        let origins = 3 * n + 2;
        // A client process's deduplication window lives a minute past its last operation, and a
        // churning user starts a few processes a minute: at the highest client churn drawn (10%
        // of actions), 76 windows were seen for 9 users (seed 61 of an hour), so 12 a user.
        let clients = 12 * m;
        Resources {
            durable_bytes: 16_384
                + origins * origins * 48
                + clients * DEDUP_WINDOW as u64 * 64
                + m * r * (ROOM_HISTORY * (64 + MAX_ANCHORS * 24)) as u64
                + store * (MAX_TEXT as u64 + 96),
            store_entries: store,
            vc_origins: origins,
            servers_known: origins,
            dedup_clients: clients,
            dedup_entries: clients * DEDUP_WINDOW as u64,
            sessions: clients,
            names: m,
            inbox_users: m,
            room_standings: m * r * ROOM_HISTORY as u64,
            clusters: 4,
        }
    }

    /// Each measure of `self` above `bound`: `(name, value, bound)`.
    pub fn over(&self, bound: &Resources) -> Vec<(&'static str, u64, u64)> {
        self.fields().into_iter().zip(bound.fields()).filter(|((_, v), (_, b))| v > b).map(|((k, v), (_, b))| (k, v, b)).collect()
    }
}

/// Measures one live server.
pub fn sample(server: &Server) -> Resources {
    let d = server.durable();
    let stats = server.chat_stats();
    let causal = &d.chat.causal;
    let (clients, ids, standings) = d.chat.state.growth();
    let (dedup_clients, dedup_entries, room_standings) = (clients as u64, ids as u64, standings as u64);
    let digests = causal.digests.values().map(|v| v.len()).max().unwrap_or(0);
    Resources {
        durable_bytes: postcard::to_allocvec(d).map_or(0, |b| b.len() as u64),
        store_entries: stats.store as u64,
        vc_origins: causal.delivered.len().max(digests) as u64,
        servers_known: causal.digests.len().max(causal.known.len()) as u64,
        dedup_clients,
        dedup_entries,
        sessions: stats.sessions as u64,
        names: d.chat.state.names.len() as u64,
        inbox_users: d.chat.state.inbox_sizes().count() as u64,
        room_standings,
        clusters: d.epochs.len() as u64,
    }
}

/// Tracks the maxima of a run and the first time each measure went over its bound.
#[derive(Clone, Debug, Default)]
pub struct Meter {
    /// Maxima so far.
    pub max: Resources,
    /// Samples taken.
    pub samples: u64,
    /// The bound.
    pub bound: Resources,
    over: BTreeMap<&'static str, String>,
}

impl Meter {
    /// A meter against `bound`.
    pub fn new(bound: Resources) -> Meter {
        Meter { bound, ..Meter::default() }
    }

    /// Takes a sample of server `node` at `at` (µs).
    pub fn note(&mut self, node: impl std::fmt::Display, at: u64, s: &Resources) {
        self.samples += 1;
        self.max.max_with(s);
        for (k, v, b) in s.over(&self.bound) {
            self.over.entry(k).or_insert_with(|| format!("server {node} kept {k} = {v} > bound {b} at {:.3}ms", at as f64 / 1000.0));
        }
    }

    /// B2: one violation per measure that went over its bound (its first time).
    pub fn violations(&self) -> Vec<Violation> {
        self.over.values().map(|d| Violation::new("B2", d.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_over_its_bound_is_caught() {
        let bound = Resources::bound(5, 9, 3);
        let mut meter = Meter::new(bound.clone());
        meter.note(0, 1_000, &Resources { vc_origins: 12, names: 9, ..Resources::default() });
        assert!(meter.violations().is_empty());
        meter.note(2, 5_000, &Resources { vc_origins: 33, dedup_clients: 500, ..Resources::default() });
        meter.note(3, 6_000, &Resources { vc_origins: 40, ..Resources::default() });
        let v = meter.violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.property == "B2"));
        assert!(v.iter().any(|v| v.detail.contains("vc_origins = 33") && v.detail.contains("server 2 kept")));
        assert_eq!(meter.max.vc_origins, 40);
    }
}
