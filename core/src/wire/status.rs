//! What `ringchat status` is told about one server.

use crate::id::{ClusterId, NodeId};
use crate::view::Member;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Counts of refused input and other noteworthy happenings, shown by `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Datagrams that did not decode (empty or malformed).
    pub malformed: u64,
    /// Datagrams over the size limit.
    pub oversize: u64,
    /// Datagrams of another protocol version.
    pub wrong_version: u64,
    /// Datagrams breaking a protocol bound.
    pub invalid: u64,
    /// Datagrams from another cluster (other than discovery).
    pub foreign_cluster: u64,
    /// Datagrams from servers not in the view.
    pub non_member: u64,
    /// Datagrams carrying an epoch older than ours.
    pub stale_epoch: u64,
    /// Tokens refused because a live leader is known.
    pub tokens_refused: u64,
    /// Elections this server started.
    pub elections_started: u64,
    /// Sealed datagrams with a header no server writes (size, version, an impossible life).
    pub seal_malformed: u64,
    /// Sealed datagrams under a key this server does not hold.
    pub seal_wrong_key: u64,
    /// Sealed datagrams whose tag did not verify (forged, tampered with, truncated).
    pub seal_bad_tag: u64,
    /// Sealed datagrams whose counter was accepted before (replays).
    pub seal_replay: u64,
    /// Sealed datagrams from an earlier life of a sender already heard in a later one.
    pub seal_stale: u64,
    /// Sealed datagrams meant for another life of this server (sent before it restarted).
    pub seal_wrong_receiver: u64,
    /// Plain server datagrams that reached a sealed server.
    pub unsealed: u64,
    /// Claims that another server leads the epoch this server leads (forged, or a bug
    /// elsewhere), refused.
    pub rival_leader: u64,
    /// Datagrams from a source over its rate before it proved anything, dropped.
    pub rate_limited: u64,
    /// Replies not sent because they would have been larger than the unproven datagram
    /// that asked for them (no amplification).
    pub reply_too_large: u64,
    /// Logins whose signature did not verify under the key they name, refused.
    pub bad_signature: u64,
    /// Messages that arrived in fragments and were dropped before they were complete (a
    /// fragment lost or late, or room needed for newer ones; the protocol sends the message
    /// again), or whose fragments disagreed.
    pub fragments_dropped: u64,
}

impl Counters {
    /// Datagrams refused as bad input (they deserve attention: a bug, a foreign program, or
    /// someone on the LAN sending garbage).
    pub fn rejected(&self) -> u64 {
        self.malformed
            + self.oversize
            + self.wrong_version
            + self.invalid
            + self.seal_malformed
            + self.seal_wrong_key
            + self.seal_bad_tag
            + self.seal_replay
            + self.unsealed
            + self.rival_leader
            + self.rate_limited
            + self.bad_signature
    }

    /// Datagrams ignored in the normal course of a cluster's life: from servers still founding
    /// or joining, from a member's previous life, or carrying an epoch already superseded. A
    /// healthy cluster counts some of these whenever servers start, restart or elect.
    pub fn ignored(&self) -> u64 {
        self.foreign_cluster + self.non_member + self.stale_epoch + self.seal_stale + self.seal_wrong_receiver
    }
}

/// One member of a server's latest view, as that server sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The member.
    pub member: Member,
    /// Not suspected (the reporting server itself is always alive).
    pub alive: bool,
    /// Milliseconds since the reporting server last heard from it (`None`: never, or itself).
    pub heard_ms_ago: Option<u64>,
}

/// Longest build string a status report carries.
pub const MAX_BUILD: usize = 64;

/// What `ringchat status` shows of one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The server's life.
    pub node: NodeId,
    /// Its cluster.
    pub cluster: ClusterId,
    /// Phase name (Discovering, Founding, Joining, Member, Left).
    pub phase: String,
    /// Whether it leads.
    pub is_leader: bool,
    /// Adopted epoch.
    pub epoch: u64,
    /// Leader it knows.
    pub leader: Option<NodeId>,
    /// Installed view id.
    pub view_id: Option<u64>,
    /// Members of its latest view, with liveness and when each was last heard.
    pub members: Vec<MemberReport>,
    /// Milliseconds since this server life started.
    pub uptime_ms: u64,
    /// The build it runs (version and commit, as its driver says; at most [`MAX_BUILD`] bytes).
    pub build: String,
    /// Whether its server traffic is sealed with a cluster key (`false`: it runs with
    /// `--insecure-no-key`, and anyone on the LAN can join, forge and read).
    pub sealed: bool,
    /// Refusal counters.
    pub counters: Counters,
    /// Clients logged in here, as (name, address; the address for an operator only): as many
    /// as fit the datagram.
    pub clients: Vec<(String, Option<SocketAddr>)>,
    /// Clients logged in here in all.
    pub clients_total: u32,
    /// Unacknowledged inbox entries per user, largest first: as many as fit the datagram.
    pub inboxes: Vec<(String, u32)>,
    /// Unacknowledged inbox entries over all users.
    pub inbox_total: u32,
    /// Snapshots of a peer's chat state installed (state transfer) since start.
    pub snapshots: u64,
    /// Messages in the retransmission store (kept until every known server holds them, or
    /// while an inbox needs them).
    pub store: u32,
    /// Messages received but held back for their causal past.
    pub holdback: u32,
    /// Messages delivered but not kept for retransmission because the store was full.
    pub store_full: u64,
    /// Messages refused because the hold-back queue was full (a peer sends them again).
    pub holdback_full: u64,
}
