//! The cluster layer: a ringchat [`Server`], the sans-IO state machine that composes
//! discovery and founding, membership (views), failure detection and the LCR election,
//! and routes chat to the chat layer. Each concern has its own file; this one holds the
//! server's state, its public surface and the routing of inputs.
//!
//! Call rule: after every input (`handle_datagram`, `handle_timeout`, `leave`),
//! drain `poll_transmit` and `poll_event` until they return `None`, then sleep
//! until `poll_timeout`. Timeouts are idempotent: firing early or twice is harmless.

mod admission;
mod assign;
mod clients;
mod config;
mod discovery;
mod durable;
mod election;
mod failure_detector;
mod lcr;
mod membership;
mod outbox;
mod output;
mod tick;
pub mod unproven;
mod views;

pub use admission::Admission;
pub use assign::assign;
pub use config::ServerConfig;
pub use durable::{ChatMark, Durable, ElectionPart, EpochRecord};
pub use output::{Dest, Event, Transmit};
pub use unproven::{RateLimit, MAX_SOURCES, RATE_BURST, RATE_PER_S};

use crate::chat::server::{ChatDurable, ChatServer, ChatStats, Ctx as ChatCtx, Out as ChatOut};
pub use crate::chat::server::{Journal, Recovered};
use crate::id::{ClusterId, NodeId, ServerId};
use crate::path::ClientPath;
use crate::plant::PlantedBug;
use crate::time::Instant;
use crate::view::{Member, View, ViewStamp};
pub use crate::wire::Counters;
use crate::wire::{
    self, Body, CandidateKey, CausalMsg, ClientMsg, DecodeError, Envelope, MemberReport, Packet, RefusalReason, ServerMsg, StatusReport,
};
use election::{Candidacy, Election, PendingHop, TokenVerdict};
use failure_detector::FailureDetector;
use membership::{next_change, Change, Proposal};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// Life-cycle phase of a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Listening for a cluster until `until`.
    Discovering {
        /// End of the discovery window.
        until: Instant,
    },
    /// No cluster found: electing a founder among the servers discovered.
    Founding,
    /// Asking the cluster's leader for admission.
    Joining {
        /// When joining began.
        since: Instant,
        /// Leader to ask, once known.
        leader: Option<Member>,
    },
    /// In a cluster's view.
    Member,
    /// Shut down cleanly; ignores everything.
    Left,
}

/// Leadership role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows (or looks for) a leader.
    Follower,
    /// Its token came back; gathering acceptances.
    Candidate,
    /// Accepted by a majority of its view.
    Leader,
}

/// A snapshot for `ringchat status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// This life.
    pub node: NodeId,
    /// Unicast address.
    pub addr: SocketAddr,
    /// Cluster.
    pub cluster: ClusterId,
    /// Phase name.
    pub phase: String,
    /// Role.
    pub role: Role,
    /// Adopted epoch.
    pub epoch: u64,
    /// Known leader of that epoch.
    pub leader: Option<NodeId>,
    /// Last installed view.
    pub committed: Option<View>,
    /// Members of the latest view with their liveness and when each was last heard.
    pub members: Vec<MemberReport>,
    /// Milliseconds since this life started.
    pub uptime_ms: u64,
    /// The driver's build string ([`ServerConfig::build`]).
    pub build: String,
    /// Server traffic is sealed ([`ServerConfig::sealed`]).
    pub sealed: bool,
    /// Refusal counters.
    pub counters: Counters,
}

/// The server state machine.
pub struct Server {
    cfg: ServerConfig,
    me: Member,
    durable: Durable,
    rng: ChaCha8Rng,
    phase: Phase,
    role: Role,
    /// Latest view stored (possibly not yet installed).
    latest: Option<View>,
    /// Last installed view.
    committed: Option<View>,
    fd: FailureDetector,
    leader: Option<NodeId>,
    election: Election,
    candidacy: Option<Candidacy>,
    hops: Vec<PendingHop>,
    forwarded: BTreeSet<(u64, CandidateKey, bool)>,
    proposal: Option<Proposal>,
    joiners: BTreeMap<ServerId, Member>,
    leaving: BTreeSet<NodeId>,
    /// Servers heard saying a founding `Hello` while we had no cluster: the latest life heard of
    /// each server (one entry per server id, so a server that restarted while we listened is
    /// one member of a founding view, not two). Cleared on entering or leaving a cluster.
    discovered: BTreeMap<ServerId, Member>,
    /// Last time this server had a leader or a majority of its view in sight (or entered its
    /// cluster): see [`Server::stranded`].
    quorum_at: Instant,
    /// Members of the latest view whose address another server id spoke from (a `Hello` or a
    /// join request): that member's process is gone for good (it came back without its disk).
    /// At most the view's size; cleared on entering or leaving a cluster.
    replaced: BTreeSet<ServerId>,
    /// The size of the last view of the cluster this server left to join again (kept while it
    /// joins) or gave up joining (see `on_tick`): until it is in a view again, it founds only
    /// with a majority of that many in sight, as with `expect` (the cluster may live on without
    /// it: founding with fewer would split it). Cleared on entering a cluster otherwise.
    gave_up_on: Option<usize>,
    now: Instant,
    /// When this life started.
    started: Instant,
    /// Datagrams received, by kind.
    received: BTreeMap<&'static str, u64>,
    next_heartbeat: Instant,
    next_hello: Instant,
    next_beacon: Instant,
    out: VecDeque<Transmit>,
    /// Broadcast chat messages waiting to be packed, per peer, peers in the order their first
    /// message was queued (the chat layer queues the most urgent copy first).
    chat_queue: Vec<(SocketAddr, Vec<CausalMsg>)>,
    events: VecDeque<Event>,
    counters: Counters,
    chat: ChatServer,
    /// Per-source rate limits on requests that proved nothing (see `unproven`).
    rate: RateLimit,
    /// While a client datagram is handled: its source and size (answers to it are no larger).
    answering: Option<(ClientPath, usize)>,
    /// Messages arriving in fragments, per sender (see [`wire::fragment`]).
    fragments: wire::Reassembler<Source>,
    /// The nonce of the next message this server sends in fragments.
    next_nonce: u64,
}

/// Where fragments come from: a server life (as its envelopes name it), or a client path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Peer(NodeId),
    Client(ClientPath),
}

impl Server {
    /// A server starting at `now`. `previous` is what an earlier life left on
    /// disk (then this is a restart: a new incarnation that rejoins its cluster).
    pub fn new(cfg: ServerConfig, id: ServerId, addr: SocketAddr, previous: Option<Durable>, seed: u64, now: Instant) -> Server {
        let durable = match previous {
            Some(mut d) => {
                assert_eq!(d.id, id, "durable state of another server"); // invariant: driver bug
                d.incarnation += 1;
                if cfg.plant == Some(PlantedBug::ForgetInboxOnRestart) {
                    d.chat.state.forget_inboxes();
                }
                d
            }
            None => {
                Durable { id, incarnation: 1, cluster: ClusterId::NONE, epochs: BTreeMap::new(), view: None, chat: ChatDurable::default() }
            }
        };
        let me = Member { node: NodeId { id, incarnation: durable.incarnation }, addr };
        let phase = if durable.cluster == ClusterId::NONE {
            Phase::Discovering { until: now.plus_ms(cfg.discovery_window_ms) }
        } else {
            Phase::Joining { since: now, leader: None }
        };
        let latest = if durable.cluster == ClusterId::NONE { None } else { durable.view.clone() };
        Server {
            me,
            durable,
            rng: ChaCha8Rng::seed_from_u64(seed),
            phase,
            role: Role::Follower,
            latest,
            committed: None,
            fd: FailureDetector::default(),
            leader: None,
            election: Election::default(),
            candidacy: None,
            hops: Vec::new(),
            forwarded: BTreeSet::new(),
            proposal: None,
            joiners: BTreeMap::new(),
            leaving: BTreeSet::new(),
            discovered: BTreeMap::new(),
            quorum_at: now,
            replaced: BTreeSet::new(),
            gave_up_on: None,
            now,
            started: now,
            received: BTreeMap::new(),
            next_heartbeat: now,
            next_hello: now,
            next_beacon: now,
            out: VecDeque::new(),
            chat_queue: Vec::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            chat: ChatServer::new(cfg.plant),
            rate: RateLimit::default(),
            answering: None,
            fragments: wire::Reassembler::default(),
            // Starts at the clock: a later life of this server never reuses an earlier one's.
            next_nonce: now.0,
            cfg,
        }
    }

    /// This server's current life.
    pub fn node(&self) -> NodeId {
        self.me.node
    }

    /// What must survive a crash; persist it after every input.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Current cluster.
    pub fn cluster(&self) -> ClusterId {
        self.durable.cluster
    }

    /// Adopted epoch in the current cluster.
    pub fn epoch(&self) -> u64 {
        self.record().epoch
    }

    /// Leader of the current epoch, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whether this server leads its cluster now.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Last installed view.
    pub fn committed_view(&self) -> Option<&View> {
        self.committed.as_ref()
    }

    /// Life-cycle phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Refusal counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sets the public key of the identity client channels are sealed to (the answer to a
    /// client's `Identity` request), as the seal's key ring says.
    pub fn set_identity(&mut self, identity: Option<[u8; 32]>) {
        self.cfg.identity = identity;
    }

    /// Counts a datagram refused before it reached the server (by the `seal` layer above this
    /// one); nothing else changes.
    pub fn count_refused(&mut self, count: impl FnOnce(&mut Counters)) {
        *self.received.entry("refused").or_insert(0) += 1;
        count(&mut self.counters);
    }

    /// Sizes of the chat state (store, inboxes, hold-back, sessions).
    pub fn chat_stats(&self) -> ChatStats {
        self.chat.stats(&self.durable.chat)
    }

    /// The next datagram to send. Broadcast chat messages queued for one peer since the
    /// last call that drained the queue leave packed together (see [`Body::ChatBatch`]), so a
    /// driver that feeds every ready datagram before polling sends fewer, fuller datagrams.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.out.is_empty() {
            self.pack_chat();
        }
        self.out.pop_front()
    }

    /// The next protocol event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next: the earliest of the server's
    /// deadlines (heartbeat, discovery, hop retry, election back-off or timeout,
    /// leader suspicion, proposal resend). `None` once it has left.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = Instant(u64::MAX);
        let mut at = |t: Instant| next = next.min(t);
        match &self.phase {
            Phase::Left => return None,
            Phase::Discovering { until } => {
                at(*until);
                at(self.next_hello);
            }
            Phase::Joining { since, .. } => {
                at(self.next_hello);
                at(since.plus_ms(self.cfg.join_give_up_ms).plus_us(1));
            }
            Phase::Founding => at(self.next_hello),
            Phase::Member => {}
        }
        if self.phase == Phase::Member {
            self.chat.deadline().into_iter().for_each(&mut at);
        }
        if matches!(self.phase, Phase::Founding | Phase::Member) || self.is_voter() {
            at(self.next_heartbeat);
            self.hops.iter().for_each(|h| at(h.deadline));
            if self.leader.is_none() && self.role != Role::Leader {
                self.election.start_at.into_iter().chain(self.election.deadline).for_each(&mut at);
            }
            if self.role == Role::Leader {
                at(self.next_beacon);
                self.proposal.iter().for_each(|p| at(p.resend_at));
            } else if let Some(heard) = self.leader.and_then(|l| self.fd.last_heard(l)) {
                at(heard.plus_us(self.suspect_us() + 1));
            }
        }
        Some(next)
    }

    /// Leaves the cluster cleanly (Ctrl-C): tells the members, then goes silent.
    pub fn leave(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Member {
            for m in self.others() {
                self.send(m.addr, Body::Leave, false);
            }
            if self.role == Role::Leader {
                self.step_down();
            }
            self.events.push_back(Event::Left { cluster: self.durable.cluster, node: self.me.node });
        }
        self.phase = Phase::Left;
    }

    /// Feeds one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.receive(now, from, None, bytes);
    }

    /// Handles a client datagram that arrived on a sealed channel (opened by the seal):
    /// `from` names the channel, `operator` whether the channel proved a cluster key.
    pub fn handle_client_datagram(&mut self, now: Instant, from: ClientPath, operator: bool, bytes: &[u8]) {
        self.receive(now, from.addr, Some((from, operator)), bytes);
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, channel: Option<(ClientPath, bool)>, bytes: &[u8]) {
        self.now = now;
        if self.phase == Phase::Left {
            return;
        }
        let mut packet = wire::decode(bytes);
        if let Ok(carrier) = packet.as_ref() {
            if carrier.fragment().is_some() {
                *self.received.entry("fragment").or_insert(0) += 1;
                match self.reassemble(from, channel, carrier) {
                    Some(whole) => packet = whole,
                    None => return,
                }
            }
        }
        let kind = match &packet {
            Ok(Packet::Peer(env)) => env.body.kind(),
            Ok(Packet::FromClient(msg)) => msg.kind(),
            Ok(Packet::ToClient(_)) | Err(_) => "refused",
        };
        *self.received.entry(kind).or_insert(0) += 1;
        match packet {
            Ok(Packet::Peer(_)) if channel.is_some() => self.counters.invalid += 1, // the seal refuses these first
            Ok(Packet::Peer(env)) if env.from == self.me.node => {}                 // our own discovery datagram looped back
            Ok(Packet::Peer(env)) => self.handle_envelope(from, env),
            Ok(Packet::FromClient(msg)) => {
                if unproven::is_unproven_request(&msg) && !self.rate.allow(from, now) {
                    self.counters.rate_limited += 1;
                    return;
                }
                let (path, operator) = channel.unwrap_or((ClientPath::plain(from), false));
                self.answering = Some((path, bytes.len()));
                self.handle_client(path, operator, msg);
                self.answering = None;
            }
            Ok(Packet::ToClient(_)) => self.counters.invalid += 1,
            Err(e) => self.count_decode_error(e),
        }
    }

    /// Adds a fragment to its message: `None` while the message is incomplete, else the message
    /// (or why it, or the fragment, was refused).
    fn reassemble(
        &mut self,
        from: SocketAddr,
        channel: Option<(ClientPath, bool)>,
        carrier: &Packet,
    ) -> Option<Result<Packet, DecodeError>> {
        let source = match (carrier, channel) {
            (Packet::Peer(env), None) => Source::Peer(env.from),
            (Packet::FromClient(_), Some((path, _))) => Source::Client(path),
            (Packet::FromClient(_), None) => Source::Client(ClientPath::plain(from)),
            _ => return Some(Err(DecodeError::Invalid)), // a server's fragment on a client channel, or one meant for a client
        };
        let f = carrier.fragment()?.clone();
        let added = self.fragments.add(self.now, &source, f);
        self.counters.fragments_dropped = self.fragments.dropped();
        match added {
            Ok(whole) => whole.map(|bytes| wire::decode_reassembled(&bytes, carrier)),
            Err(_) => Some(Err(DecodeError::Invalid)),
        }
    }

    /// Datagrams received, by message kind (`refused` for those that did not decode). Kinds
    /// are a fixed set of names, so the map is bounded.
    pub fn received(&self) -> &BTreeMap<&'static str, u64> {
        &self.received
    }

    /// Times from a client's send arriving here to its `stored` acknowledgement leaving, in
    /// microseconds, since the last call (at most the latest 4,096 are kept).
    pub fn take_stored_latencies(&mut self) -> Vec<u64> {
        self.chat.take_stored_latencies()
    }

    /// What must be made durable before the datagrams of the last input leave: the chat
    /// messages delivered since the last call, to append to the chat log (or, if
    /// [`Journal::reset`], the whole [`Server::durable`] state). A driver that keeps no state
    /// calls it too, and drops the result: the journal is bounded, but not emptied otherwise.
    pub fn take_journal(&mut self) -> Journal {
        self.chat.take_journal()
    }

    /// Drives periodic work; call at (or after) `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase != Phase::Left {
            self.on_tick();
        }
    }

    fn record(&self) -> EpochRecord {
        self.durable.epochs.get(&self.durable.cluster).copied().unwrap_or_default()
    }

    fn record_mut(&mut self) -> &mut EpochRecord {
        self.durable.epochs.entry(self.durable.cluster).or_default()
    }

    fn count_decode_error(&mut self, e: DecodeError) {
        match e {
            DecodeError::Empty | DecodeError::Malformed => self.counters.malformed += 1,
            DecodeError::Oversize => self.counters.oversize += 1,
            DecodeError::WrongVersion(_) => self.counters.wrong_version += 1,
            DecodeError::Invalid => self.counters.invalid += 1,
        }
    }

    fn others(&self) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::new();
        for v in [&self.latest, &self.committed].into_iter().flatten() {
            for m in &v.members {
                if m.node.id != self.me.node.id && !out.iter().any(|o| o.node.id == m.node.id) {
                    out.push(*m);
                }
            }
        }
        out
    }

    /// Whether `node`'s server (any life) is in our latest or installed view.
    fn in_view(&self, node: NodeId) -> bool {
        [&self.latest, &self.committed].into_iter().flatten().any(|v| v.by_server(node.id).is_some())
    }

    /// Whether this server votes and may stand: its server id is in its latest view
    /// (a restarted server keeps its old life's place until the leader swaps in the new life).
    fn is_voter(&self) -> bool {
        matches!(self.phase, Phase::Founding | Phase::Member | Phase::Joining { .. })
            && self.latest.as_ref().is_some_and(|v| v.by_server(self.me.node.id).is_some())
    }

    fn set_latest(&mut self, view: Option<View>) {
        self.durable.view = view.clone();
        self.latest = view;
    }

    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        [&self.latest, &self.committed]
            .into_iter()
            .flatten()
            .flat_map(|v| v.members.iter())
            .find(|m| m.node.id == node.id)
            .map(|m| m.addr)
            .or_else(|| self.discovered.get(&node.id).filter(|m| m.node == node).map(|m| m.addr))
    }

    fn my_key(&self) -> CandidateKey {
        CandidateKey { view: self.latest.as_ref().map(|v| v.stamp).unwrap_or_default(), node: self.me.node }
    }

    fn suspect_us(&self) -> u64 {
        self.cfg.suspect_ms * 1000
    }

    fn random_backoff(&mut self) -> Instant {
        let ms = self.rng.random_range(0..=self.cfg.backoff_ms);
        self.now.plus_ms(ms)
    }

    fn emit(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn handle_envelope(&mut self, from: SocketAddr, env: Envelope) {
        let Envelope { cluster, from: sender, epoch, body } = env;
        let admission = Admission::of(&body);
        if admission == Admission::Discovery {
            match body {
                Body::Hello { addr, founding } => self.on_hello(sender, from, addr, founding),
                Body::Welcome { leader, view_size } => self.consider_cluster(cluster, leader, view_size),
                Body::Beacon { leader, view_size } => self.consider_cluster(cluster, Some(leader), view_size),
                _ => {}
            }
            return;
        }
        if cluster != self.durable.cluster && !self.founding_compatible(cluster, sender) {
            self.counters.foreign_cluster += 1;
            return;
        }
        // A message's vector leaves out what every server of our cluster ever heard of holds.
        // Datagrams of other clusters do not count: a stray one would keep every vector naming
        // origins it will never report.
        self.durable.chat.causal.known.insert(sender.id);
        let member =
            self.in_view(sender) || (self.phase == Phase::Founding && self.discovered.get(&sender.id).is_some_and(|m| m.node == sender));
        // Only heartbeats and join requests carry the sender's adopted epoch
        // (election messages carry a proposed one, which a live leader refuses).
        let adopted = matches!(body, Body::Heartbeat { .. } | Body::JoinRequest { .. });
        if self.role == Role::Leader && adopted && epoch > self.epoch() && (member || matches!(body, Body::JoinRequest { .. })) {
            // Someone of our cluster has seen a later epoch: step down and let an
            // election above it pick the leader (a joiner may carry an epoch
            // inflated while it was cut off).
            self.adopt_epoch(epoch);
        }
        if admission == Admission::Member && !member {
            self.counters.non_member += 1;
            if let (Phase::Member, Some(c)) = (&self.phase, &self.committed) {
                let committed = c.stamp;
                self.send(from, Body::NotMember { committed }, false);
            }
            return;
        }
        match body {
            Body::JoinRequest { addr } => self.on_join_request(sender, from, addr),
            Body::ViewPropose { view } => self.on_view(sender, epoch, view, false),
            Body::ViewCommit { view } => self.on_view(sender, epoch, view, true),
            Body::NotMember { committed } => self.on_not_member(committed),
            Body::Heartbeat { leader, committed, latest, digest } => {
                self.on_heartbeat(sender, from, epoch, leader, committed, latest);
                self.with_chat(|c, d, cx, out| c.on_digest(d, cx, sender, from, &digest, out));
            }
            Body::Chat { msg } => {
                self.fd.heard(sender, self.now);
                self.with_chat(|c, d, cx, _| c.on_chat(d, cx, msg));
            }
            Body::ChatBatch { msgs } => {
                self.fd.heard(sender, self.now);
                self.with_chat(|c, d, cx, _| msgs.into_iter().for_each(|m| c.on_chat(d, cx, m)));
            }
            Body::ChatHolds { delivered } => {
                self.fd.heard(sender, self.now);
                self.with_chat(|c, d, cx, _| c.on_holds(d, cx, sender, &delivered));
            }
            Body::ChatPresence { part, parts, users } => {
                self.fd.heard(sender, self.now);
                self.with_chat(|c, _, cx, _| c.on_presence(cx, sender, part, parts, users));
            }
            Body::ChatNeed { origin, from: lo, to: hi } => self.with_chat(|c, d, _, out| c.on_need(d, from, origin, lo, hi, out)),
            Body::ChatGone { origin, below } => self.with_chat(|c, d, cx, out| c.on_gone(d, cx, from, origin, below, out)),
            Body::SnapshotGet { nonce, from: first } => self.with_chat(|c, d, cx, out| c.on_snapshot_get(d, cx, from, nonce, first, out)),
            Body::SnapshotChunk { nonce, index, total, bytes } => {
                self.with_chat(|c, d, cx, out| c.on_snapshot_chunk(d, cx, from, nonce, index, total, bytes, out))
            }
            Body::NameClaim { name, key } => self.with_chat(|c, d, cx, out| c.on_claim(d, cx, name, key, out)),
            Body::Token { key } => self.on_token(sender, from, epoch, key),
            Body::RingAck { key, elected } => {
                self.fd.heard(sender, self.now);
                self.hops.retain(|h| !(h.epoch == epoch && h.key == key && h.elected == elected && h.to.node.id == sender.id));
            }
            Body::Elected { key } => self.on_elected(sender, from, epoch, key),
            Body::Accept { leader } => self.on_accept(sender, epoch, leader),
            Body::LeaderAlive { leader } => {
                self.fd.heard(sender, self.now);
                if epoch >= self.epoch() && leader != self.me.node {
                    // Someone still hears a leader: stop pushing this election.
                    self.election.participant = false;
                }
            }
            Body::ViewAck { stamp } => self.on_view_ack(sender, epoch, stamp),
            Body::ViewRequest => {
                if let Some(c) = self.committed.clone() {
                    if self.role == Role::Leader {
                        self.send(from, Body::ViewCommit { view: c }, true);
                    }
                }
            }
            Body::Leave => {
                self.fd.suspect_hop(sender, self.now);
                self.leaving.insert(sender);
            }
            Body::ViewInfo { view } => {
                if self.role != Role::Leader && self.latest.as_ref().is_none_or(|l| l.stamp < view.stamp) {
                    // A newer view (installed, or the latest proposal a voter stored) only
                    // makes our up-to-date check stricter and our ring current (and may show
                    // we are a voter, or none). Views are proposed one change at a time, so a
                    // majority of the newer view holds a majority of the one it follows.
                    self.set_latest(Some(view));
                }
            }
            // Discovery was handled above; fragments are put together before they get here.
            Body::Hello { .. } | Body::Welcome { .. } | Body::Beacon { .. } | Body::Fragment(_) => {}
        }
    }
}
