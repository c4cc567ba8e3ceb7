//! A ringchat server: the sans-IO state machine that composes discovery,
//! membership, failure detection and the LCR election.
//!
//! Call rule: after every input (`handle_datagram`, `handle_timeout`, `leave`),
//! drain `poll_transmit` and `poll_event` until they return `None`, then sleep
//! until `poll_timeout`. Timeouts are idempotent: firing early or twice is harmless.

use crate::causal::CausalMsg;
use crate::chat_server::{ChatDurable, ChatServer, ChatStats, Ctx as ChatCtx, Out as ChatOut, PlantedBug};
use crate::client_wire::{ClientMsg, ServerMsg, StatusReport};
use crate::election::{Candidacy, Election, PendingHop, TokenVerdict};
use crate::failure_detector::FailureDetector;
use crate::id::{ClusterId, NodeId, ServerId};
use crate::membership::{next_change, Change, Proposal};
use crate::time::Instant;
use crate::view::{Member, RingOrder, View, ViewStamp};
use crate::wire::{self, Body, CandidateKey, DecodeError, Envelope, Packet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    /// Joining without an answer for this long makes a server found a cluster anew.
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
            plant: None,
        }
    }
}

/// What a server keeps across a crash (the driver stores it; the simulator's
/// "disk" survives crashes). Epoch and vote are kept per cluster, so no
/// server ever accepts two leaders for one epoch of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    /// Permanent identity.
    pub id: ServerId,
    /// Current life; bumped on every start and rejoin.
    pub incarnation: u64,
    /// Cluster the server belongs to or is joining ([`ClusterId::NONE`] while founding).
    pub cluster: ClusterId,
    /// Per cluster: highest adopted epoch and the vote of that epoch.
    pub epochs: BTreeMap<ClusterId, EpochRecord>,
    /// Latest view stored in `cluster` (a voter's up-to-date check must survive a crash).
    pub view: Option<View>,
    /// Chat: causal broadcast and replicated chat state.
    #[serde(default)]
    pub chat: ChatDurable,
}

/// Highest adopted epoch in one cluster, and whom the server accepted in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Never decreases.
    pub epoch: u64,
    /// `(epoch, leader)` accepted; at most one leader per epoch.
    pub vote: Option<(u64, NodeId)>,
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// One peer.
    Addr(SocketAddr),
    /// The discovery group (multicast or broadcast; the driver knows which).
    Group,
}

/// A datagram to send.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Destination.
    pub dest: Dest,
    /// Encoded bytes, at most [`wire::MAX_DATAGRAM`].
    pub bytes: Vec<u8>,
    /// Message kind (see [`Body::kind`]).
    pub kind: &'static str,
    /// A retransmission of something already sent (not counted as a first send).
    pub retransmit: bool,
}

/// Protocol events, for the application and for the simulator's checkers.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server adopted a higher epoch in `cluster`.
    EpochAdopted { cluster: ClusterId, epoch: u64 },
    /// The server accepted `leader` as the candidate of `epoch`.
    Voted { cluster: ClusterId, epoch: u64, leader: NodeId },
    /// The server became leader of `epoch` (a majority accepted it).
    BecameLeader { cluster: ClusterId, epoch: u64 },
    /// The server stopped leading.
    SteppedDown { cluster: ClusterId, epoch: u64 },
    /// The server learned from the leader itself who leads `epoch`.
    LeaderLearned { cluster: ClusterId, epoch: u64, leader: NodeId },
    /// The server suspects its leader.
    LeaderLost { cluster: ClusterId, epoch: u64 },
    /// The server installed a view.
    ViewInstalled { cluster: ClusterId, view: View },
    /// The server applied a leader-only action of `epoch` (its own epoch was `seen`).
    LeaderActionApplied { cluster: ClusterId, epoch: u64, seen: u64 },
    /// The server became a member of `cluster`.
    Joined { cluster: ClusterId, node: NodeId },
    /// The server left its cluster (removed, merging, or shutting down).
    Left { cluster: ClusterId, node: NodeId },
}

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
}

impl Counters {
    /// Total datagrams rejected as bad input.
    pub fn rejected(&self) -> u64 {
        self.malformed + self.oversize + self.wrong_version + self.invalid + self.foreign_cluster + self.non_member + self.stale_epoch
    }
}

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
    /// Members of the latest view with their liveness (`true` = alive).
    pub members: Vec<(Member, bool)>,
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
    discovered: BTreeMap<NodeId, SocketAddr>,
    now: Instant,
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
            now,
            next_heartbeat: now,
            next_hello: now,
            next_beacon: now,
            out: VecDeque::new(),
            chat_queue: Vec::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            chat: ChatServer::new(cfg.plant),
            cfg,
        }
    }

    // ----- public surface -------------------------------------------------

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

    /// Sizes of the chat state (store, inboxes, hold-back, sessions).
    pub fn chat_stats(&self) -> ChatStats {
        self.chat.stats(&self.durable.chat)
    }

    /// A snapshot of the server's state.
    pub fn status(&self) -> Status {
        let timeout = self.cfg.suspect_ms * 1000;
        let members = self
            .latest
            .iter()
            .flat_map(|v| v.members.iter())
            .map(|m| (*m, m.node.id == self.me.node.id || !self.fd.is_suspected(m.node, self.now, timeout)))
            .collect();
        Status {
            node: self.me.node,
            addr: self.me.addr,
            cluster: self.durable.cluster,
            phase: format!("{:?}", self.phase).split([' ', '{']).next().unwrap_or("").to_string(),
            role: self.role,
            epoch: self.epoch(),
            leader: self.leader,
            committed: self.committed.clone(),
            members,
            counters: self.counters.clone(),
        }
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

    /// Moves the queued broadcast chat messages into datagrams, as many per datagram as fit.
    fn pack_chat(&mut self) {
        // Room for the envelope and the batch framing around the messages.
        const BUDGET: usize = wire::MAX_DATAGRAM - 96;
        for (addr, msgs) in std::mem::take(&mut self.chat_queue) {
            let mut batch: Vec<CausalMsg> = Vec::new();
            let mut size = 0;
            for msg in msgs {
                let len = postcard::serialize_with_flavor(&msg, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX);
                if !batch.is_empty() && (size + len > BUDGET || batch.len() == wire::MAX_BATCH) {
                    self.send_batch(addr, std::mem::take(&mut batch));
                    size = 0;
                }
                size += len;
                batch.push(msg);
            }
            if !batch.is_empty() {
                self.send_batch(addr, batch);
            }
        }
    }

    fn send_batch(&mut self, addr: SocketAddr, mut msgs: Vec<CausalMsg>) {
        let body = match msgs.len() {
            1 => Body::Chat { msg: msgs.pop().expect("one message") }, // invariant: len is 1
            _ => Body::ChatBatch { msgs },
        };
        self.send(addr, body, false);
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
        self.now = now;
        if self.phase == Phase::Left {
            return;
        }
        match wire::decode(bytes) {
            Ok(Packet::Peer(env)) if env.from == self.me.node => {} // our own discovery datagram looped back
            Ok(Packet::Peer(env)) => self.handle_envelope(from, env),
            Ok(Packet::FromClient(msg)) => self.handle_client(from, msg),
            Ok(Packet::ToClient(_)) => self.counters.invalid += 1,
            Err(e) => self.count_decode_error(e),
        }
    }

    /// Drives periodic work; call at (or after) `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase != Phase::Left {
            self.on_tick();
        }
    }

    /// Sends a reply to a client (or to `ringchat status`).
    fn send_client(&mut self, to: SocketAddr, msg: ServerMsg) {
        let kind = msg.kind();
        match wire::encode(&Packet::ToClient(msg)) {
            Some(bytes) => self.out.push_back(Transmit { dest: Dest::Addr(to), bytes, kind, retransmit: false }),
            None => self.counters.invalid += 1,
        }
    }

    fn handle_client(&mut self, from: SocketAddr, msg: ClientMsg) {
        match msg {
            ClientMsg::Status => {
                let mut report = StatusReport::from_status(&self.status());
                let base = wire::encode(&Packet::ToClient(ServerMsg::Status(report.clone()))).map_or(wire::MAX_DATAGRAM, |b| b.len());
                self.chat.fill_status(&self.durable.chat, &mut report, wire::MAX_DATAGRAM.saturating_sub(base + 16));
                self.send_client(from, ServerMsg::Status(report));
            }
            ClientMsg::Find { client } => {
                // Only a member of an installed view answers (see `assign`).
                let view = if self.phase == Phase::Member { self.committed.as_ref() } else { None };
                let (me, now, timeout) = (self.me.node, self.now, self.suspect_us());
                if let Some(servers) = view.and_then(|v| crate::assign::assign(client, v, me, |n| self.fd.is_suspected(n, now, timeout))) {
                    self.send_client(from, ServerMsg::Assign { client, servers });
                }
            }
            msg => self.with_chat(|c, d, cx, out| c.on_client(d, cx, from, msg, out)),
        }
    }

    /// Runs a chat-layer step with a snapshot of this server's membership, then sends its output.
    fn with_chat(&mut self, f: impl FnOnce(&mut ChatServer, &mut ChatDurable, &ChatCtx, &mut Vec<ChatOut>)) {
        let leader = self.leader.and_then(|l| self.addr_of(l));
        let epoch = self.epoch();
        let view = if self.phase == Phase::Member { self.committed.as_ref().filter(|v| v.contains(self.me.node)) } else { None };
        let cx = ChatCtx { me: self.me.node, now: self.now, view, leader, is_leader: self.role == Role::Leader, epoch };
        // Room for a typical input's output (copies, a show, a report) without regrowing.
        let mut out = Vec::with_capacity(16);
        f(&mut self.chat, &mut self.durable.chat, &cx, &mut out);
        self.chat.flush(&mut self.durable.chat, &cx, &mut out);
        for o in out {
            match o {
                ChatOut::Peer(addr, Body::Chat { msg }, false) => match self.chat_queue.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, msgs)) => msgs.push(msg),
                    None => self.chat_queue.push((addr, vec![msg])),
                },
                ChatOut::Peer(addr, body, retransmit) => self.send(addr, body, retransmit),
                ChatOut::Client(addr, msg) => self.send_client(addr, msg),
            }
        }
    }

    // ----- small helpers --------------------------------------------------

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
            .or_else(|| self.discovered.get(&node).copied())
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

    fn send(&mut self, to: SocketAddr, body: Body, retransmit: bool) {
        let epoch = self.epoch();
        self.send_epoch(Dest::Addr(to), epoch, body, retransmit);
    }

    fn send_epoch(&mut self, dest: Dest, epoch: u64, body: Body, retransmit: bool) {
        let kind = body.kind();
        let env = Envelope { cluster: self.durable.cluster, from: self.me.node, epoch, body };
        // Every message kind is bounded by construction (views hold at most MAX_MEMBERS).
        // A chat message over the limit (too many origins) is counted, not sent.
        match wire::encode(&Packet::Peer(env)) {
            Some(bytes) => self.out.push_back(Transmit { dest, bytes, kind, retransmit }),
            None => self.counters.invalid += 1,
        }
    }

    /// Sends one body to many peers, encoded once.
    fn send_all(&mut self, to: &[SocketAddr], body: Body) {
        let Some((&last, rest)) = to.split_last() else { return };
        let kind = body.kind();
        self.send(last, body, false);
        let bytes = self.out.back().map(|t| t.bytes.clone()).unwrap_or_default();
        for &addr in rest {
            self.out.push_back(Transmit { dest: Dest::Addr(addr), bytes: bytes.clone(), kind, retransmit: false });
        }
    }

    /// Sends a discovery datagram to the group (if enabled) and every join address.
    fn send_discovery(&mut self, body: Body) {
        let epoch = self.epoch();
        if self.cfg.discovery {
            self.send_epoch(Dest::Group, epoch, body.clone(), false);
        }
        for addr in self.cfg.join.clone() {
            if addr != self.me.addr {
                self.send_epoch(Dest::Addr(addr), epoch, body.clone(), false);
            }
        }
    }

    fn adopt_epoch(&mut self, epoch: u64) {
        let rec = self.record_mut();
        if epoch > rec.epoch {
            rec.epoch = epoch;
            self.forwarded.retain(|(e, _, _)| *e >= epoch);
            let cluster = self.durable.cluster;
            self.emit(Event::EpochAdopted { cluster, epoch });
            if self.role != Role::Follower {
                self.step_down();
            }
            if self.leader.is_some() {
                self.leader = None;
            }
        }
    }

    fn leader_alive(&self) -> bool {
        match self.role {
            Role::Leader => true,
            _ => self.leader.is_some_and(|l| !self.fd.is_suspected(l, self.now, self.suspect_us())),
        }
    }

    fn step_down(&mut self) {
        if self.role == Role::Leader {
            let (cluster, epoch) = (self.durable.cluster, self.epoch());
            self.emit(Event::SteppedDown { cluster, epoch });
            self.leader = None;
        }
        self.role = Role::Follower;
        self.candidacy = None;
        self.proposal = None;
    }

    // ----- inputs ---------------------------------------------------------

    fn handle_envelope(&mut self, from: SocketAddr, env: Envelope) {
        let Envelope { cluster, from: sender, epoch, body } = env;
        match body {
            Body::Hello { addr, founding } => return self.on_hello(sender, addr, founding),
            Body::Welcome { leader, view_size } => return self.consider_cluster(cluster, leader, view_size),
            Body::Beacon { leader, view_size } => return self.consider_cluster(cluster, Some(leader), view_size),
            _ => {}
        }
        if cluster != self.durable.cluster && !self.founding_compatible(cluster, sender) {
            self.counters.foreign_cluster += 1;
            return;
        }
        // A message's vector leaves out what every server of our cluster ever heard of holds.
        // Datagrams of other clusters do not count: a stray one would keep every vector naming
        // origins it will never report.
        self.durable.chat.causal.known.insert(sender.id);
        let member = self.in_view(sender) || (self.phase == Phase::Founding && self.discovered.contains_key(&sender));
        // Only heartbeats and join requests carry the sender's adopted epoch
        // (election messages carry a proposed one, which a live leader refuses).
        let adopted = matches!(body, Body::Heartbeat { .. } | Body::JoinRequest { .. });
        if self.role == Role::Leader && adopted && epoch > self.epoch() && (member || matches!(body, Body::JoinRequest { .. })) {
            // Someone of our cluster has seen a later epoch: step down and let an
            // election above it pick the leader (a joiner may carry an epoch
            // inflated while it was cut off).
            self.adopt_epoch(epoch);
        }
        match body {
            Body::JoinRequest { addr } => self.on_join_request(sender, addr),
            Body::ViewPropose { view } => self.on_view(sender, epoch, view, false),
            Body::ViewCommit { view } => self.on_view(sender, epoch, view, true),
            Body::NotMember { committed } => self.on_not_member(committed),
            _ if !member => {
                self.counters.non_member += 1;
                if let (Phase::Member, Some(c)) = (&self.phase, &self.committed) {
                    let committed = c.stamp;
                    self.send(from, Body::NotMember { committed }, false);
                }
            }
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
            Body::ChatPresence { users } => {
                self.fd.heard(sender, self.now);
                self.with_chat(|c, _, cx, _| c.on_presence(cx, sender, users));
            }
            Body::ChatNeed { origin, from: lo, to: hi } => self.with_chat(|c, d, _, out| c.on_need(d, from, origin, lo, hi, out)),
            Body::ChatGone { origin, below } => self.with_chat(|c, d, cx, out| c.on_gone(d, cx, from, origin, below, out)),
            Body::SnapshotGet { nonce, from: first } => self.with_chat(|c, d, cx, out| c.on_snapshot_get(d, cx, from, nonce, first, out)),
            Body::SnapshotChunk { nonce, index, total, bytes } => {
                self.with_chat(|c, d, cx, out| c.on_snapshot_chunk(d, cx, from, nonce, index, total, bytes, out))
            }
            Body::NameClaim { name, token } => self.with_chat(|c, d, cx, out| c.on_claim(d, cx, name, token, out)),
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
                if self.role != Role::Leader && self.latest.as_ref().is_some_and(|l| l.stamp < view.stamp) {
                    // An installed view is a fact: it only makes our up-to-date check
                    // stricter and our ring current (and may show we are no voter).
                    self.set_latest(Some(view));
                }
            }
            Body::Hello { .. } | Body::Welcome { .. } | Body::Beacon { .. } => {}
        }
    }

    /// Carries the current epoch record into `cluster` (founding: the vote for its
    /// founder counts there), never lowering a record already there.
    fn carry_record_into(&mut self, cluster: ClusterId) {
        let rec = self.record();
        let dst = self.durable.epochs.entry(cluster).or_default();
        if rec.epoch > dst.epoch {
            *dst = rec;
        }
    }

    /// The cluster founded by the candidate we accepted, if any.
    fn founded_by_my_vote(&self) -> Option<ClusterId> {
        self.record().vote.map(|(e, l)| ClusterId::founded_by(l, e))
    }

    /// While a founder's cluster forms, its founding servers (still without a
    /// cluster) and its first members talk across the change of cluster id: a
    /// founding server that accepted the founder moves into its cluster on its
    /// first message (keeping its founding view), and members accept founding
    /// messages from servers of their view.
    fn founding_compatible(&mut self, cluster: ClusterId, sender: NodeId) -> bool {
        let mine = self.durable.cluster;
        if mine == ClusterId::NONE && self.phase == Phase::Founding && self.founded_by_my_vote() == Some(cluster) {
            self.carry_record_into(cluster);
            self.durable.cluster = cluster;
            return true;
        }
        cluster == ClusterId::NONE && self.founded_by_my_vote() == Some(mine) && self.in_view(sender)
    }

    fn on_hello(&mut self, sender: NodeId, addr: SocketAddr, founding: bool) {
        match self.phase {
            Phase::Member => {
                let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
                let view_size = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
                self.send(addr, Body::Welcome { leader, view_size }, false);
            }
            Phase::Discovering { .. } | Phase::Founding if founding => {
                self.discovered.insert(sender, addr);
            }
            _ => {}
        }
    }

    /// A member of `cluster` told us about itself: join it if we have no
    /// cluster, or merge into it if it is bigger than ours (smaller joins larger).
    fn consider_cluster(&mut self, cluster: ClusterId, leader: Option<Member>, size: u32) {
        if cluster == ClusterId::NONE {
            return;
        }
        let my_founder = self.founded_by_my_vote() == Some(cluster);
        match &mut self.phase {
            // The candidate we accepted founded it: its view proposal is on its way.
            Phase::Founding if my_founder && self.election.deadline.is_some() => {}
            // A cluster without a leader cannot admit anyone: keep looking.
            Phase::Discovering { .. } | Phase::Founding if leader.is_none() => {}
            Phase::Discovering { .. } | Phase::Founding => {
                self.enter_cluster(cluster);
                self.phase = Phase::Joining { since: self.now, leader };
            }
            Phase::Joining { since, leader: hint } if cluster == self.durable.cluster => {
                // Our cluster answers, so it is alive even if it cannot admit us yet (its leader
                // is cut off, or it has no majority): keep trying. Founding anew now would
                // make a cluster of our own that takes chat its majority never saw.
                *since = self.now;
                if leader.is_some() {
                    *hint = leader;
                }
            }
            Phase::Member if cluster != self.durable.cluster => {
                let mine = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
                if (size, cluster) > (mine, self.durable.cluster) {
                    self.leave_for(cluster, leader);
                }
            }
            _ => {}
        }
    }

    /// Drops all view state and asks to join `cluster` as a new incarnation.
    fn leave_for(&mut self, cluster: ClusterId, leader: Option<Member>) {
        let old = self.durable.cluster;
        self.step_down();
        self.emit(Event::Left { cluster: old, node: self.me.node });
        self.durable.incarnation += 1;
        self.me.node.incarnation = self.durable.incarnation;
        self.enter_cluster(cluster);
        self.phase = Phase::Joining { since: self.now, leader };
        if cluster != old {
            // A merge: chat starts over in the other cluster's history, carrying what users
            // are owed; the sessions go too (their clients log in again).
            self.durable.chat.start_over();
            self.chat = ChatServer::new(self.chat.plant);
        }
    }

    fn enter_cluster(&mut self, cluster: ClusterId) {
        self.durable.cluster = cluster;
        self.role = Role::Follower;
        self.set_latest(None);
        self.committed = None;
        self.leader = None;
        self.election = Election::default();
        self.candidacy = None;
        self.hops.clear();
        self.proposal = None;
        self.joiners.clear();
        self.leaving.clear();
    }

    fn on_join_request(&mut self, sender: NodeId, addr: SocketAddr) {
        if self.role == Role::Leader {
            if self.committed.as_ref().is_some_and(|v| v.contains(sender)) {
                let view = self.committed.clone().expect("checked above"); // invariant
                self.send(addr, Body::ViewCommit { view }, true);
            } else {
                self.joiners.insert(sender.id, Member { node: sender, addr });
            }
        } else if self.phase == Phase::Member {
            let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
            let view_size = self.committed.as_ref().map_or(0, |v| v.members.len() as u32);
            self.send(addr, Body::Welcome { leader, view_size }, false);
        }
    }

    fn on_heartbeat(
        &mut self,
        sender: NodeId,
        from: SocketAddr,
        epoch: u64,
        leader: Option<NodeId>,
        committed: ViewStamp,
        latest: ViewStamp,
    ) {
        self.fd.heard(sender, self.now);
        if let (Phase::Member, Some(c)) = (&self.phase, &self.committed) {
            if latest < c.stamp && self.role != Role::Leader {
                // A voter behind our installed view (e.g. restarted with an old one):
                // tell it, so its ring and up-to-date check stop using the stale view.
                let view = c.clone();
                self.send(from, Body::ViewInfo { view }, false);
            }
        }
        let my_epoch = self.epoch();
        if leader == Some(sender) {
            if epoch < my_epoch {
                self.counters.stale_epoch += 1;
                return;
            }
            self.learn_leader(sender, epoch);
            if self.committed.as_ref().map_or(true, |c| c.stamp < committed) {
                self.send(from, Body::ViewRequest, false);
            }
            return;
        }
        if self.leader.is_some_and(|l| l.id == sender.id) {
            // Our leader says it no longer leads (it stepped down, or restarted as a new life).
            self.leader = None;
            let (cluster, epoch) = (self.durable.cluster, self.epoch());
            self.emit(Event::LeaderLost { cluster, epoch });
        }
        if self.role == Role::Leader {
            if epoch > my_epoch {
                self.step_down();
            } else if let Some(c) = self.committed.clone() {
                if committed < c.stamp {
                    self.send(from, Body::ViewCommit { view: c }, true);
                }
            }
        }
    }

    /// `leader` (heard directly) leads `epoch` ≥ ours.
    fn learn_leader(&mut self, leader: NodeId, epoch: u64) {
        self.adopt_epoch(epoch);
        if self.leader != Some(leader) {
            assert!(self.role != Role::Leader, "two leaders in one epoch"); // invariant (S1)
            self.leader = Some(leader);
            self.role = Role::Follower;
            self.candidacy = None;
            self.election.settle();
            let cluster = self.durable.cluster;
            self.emit(Event::LeaderLearned { cluster, epoch, leader });
        }
    }

    fn on_token(&mut self, sender: NodeId, from: SocketAddr, epoch: u64, key: CandidateKey) {
        self.fd.heard(sender, self.now);
        self.send_epoch(Dest::Addr(from), epoch, Body::RingAck { key, elected: false }, false);
        if epoch <= self.epoch() {
            self.counters.stale_epoch += 1;
            return;
        }
        if self.leader_alive() {
            self.counters.tokens_refused += 1;
            let leader = self.leader.unwrap_or(self.me.node);
            self.send(from, Body::LeaderAlive { leader }, false);
            return;
        }
        if key.node == self.me.node && key != self.my_key() {
            return; // our own token from before our view changed
        }
        if !self.is_voter() {
            // A server whose life is not in the view passes every token on.
            if self.forwarded.insert((epoch, key, false)) {
                self.election.epoch = self.election.epoch.max(epoch);
                self.ring_send(epoch, key, false, false);
            }
            return;
        }
        let mine = self.my_key();
        match self.election.on_token(epoch, key, mine) {
            None => self.counters.stale_epoch += 1,
            Some(TokenVerdict::Forward) => {
                // A duplicated token is forwarded once.
                if self.forwarded.insert((epoch, key, false)) {
                    self.ring_send(epoch, key, false, false);
                }
            }
            Some(TokenVerdict::SendOwn) => self.ring_send(epoch, mine, false, false),
            Some(TokenVerdict::Drop) => {}
            Some(TokenVerdict::Won) => {
                if self.candidacy.as_ref().is_none_or(|c| c.epoch != epoch) {
                    self.become_candidate(epoch);
                }
            }
        }
        if self.election.deadline.is_none() {
            self.election.deadline = Some(self.now.plus_ms(self.cfg.election_timeout_ms));
        }
    }

    fn on_elected(&mut self, sender: NodeId, from: SocketAddr, epoch: u64, key: CandidateKey) {
        self.fd.heard(sender, self.now);
        self.send_epoch(Dest::Addr(from), epoch, Body::RingAck { key, elected: true }, false);
        if key.node == self.me.node {
            return; // our announcement went round
        }
        let rec = self.record();
        if epoch < rec.epoch {
            self.counters.stale_epoch += 1;
            return;
        }
        let latest = self.latest.as_ref().map(|v| v.stamp).unwrap_or_default();
        let vote_free = rec.vote.map_or(true, |(e, l)| e < epoch || l == key.node);
        if vote_free && key.view >= latest {
            self.adopt_epoch(epoch);
            if self.record().vote != Some((epoch, key.node)) {
                self.record_mut().vote = Some((epoch, key.node));
                let cluster = self.durable.cluster;
                self.emit(Event::Voted { cluster, epoch, leader: key.node });
            }
            if let Some(addr) = self.addr_of(key.node) {
                self.send_epoch(Dest::Addr(addr), epoch, Body::Accept { leader: key.node }, false);
            }
            self.election.epoch = self.election.epoch.max(epoch);
            self.election.deadline = Some(self.now.plus_ms(self.cfg.election_timeout_ms));
        } else if epoch > self.election.epoch {
            // A candidate we refuse (stale view, or we accepted another) stands at
            // `epoch`: our next election must go above it, or it would drop our tokens.
            self.election.epoch = epoch;
            self.election.participant = false;
        }
        if self.forwarded.insert((epoch, key, true)) {
            self.ring_send(epoch, key, true, false);
        }
    }

    fn on_accept(&mut self, sender: NodeId, epoch: u64, leader: NodeId) {
        self.fd.heard(sender, self.now);
        let Some(c) = self.candidacy.as_mut() else {
            return;
        };
        if c.epoch != epoch || leader != self.me.node {
            return;
        }
        c.accepts.insert(sender);
        self.maybe_win();
    }

    fn on_view(&mut self, sender: NodeId, epoch: u64, view: View, commit: bool) {
        let my_epoch = self.epoch();
        if epoch < my_epoch {
            self.counters.stale_epoch += 1;
            return;
        }
        if matches!(self.phase, Phase::Discovering { .. } | Phase::Left) {
            return;
        }
        self.fd.heard(sender, self.now);
        self.learn_leader(sender, epoch);
        let cluster = self.durable.cluster;
        self.emit(Event::LeaderActionApplied { cluster, epoch, seen: self.epoch() });
        if !commit {
            if self.latest.as_ref().map_or(true, |l| l.stamp <= view.stamp) {
                let stamp = view.stamp;
                self.set_latest(Some(view));
                if let Some(addr) = self.addr_of(sender) {
                    self.send(addr, Body::ViewAck { stamp }, false);
                }
            }
            return;
        }
        if self.committed.as_ref().is_some_and(|c| c.stamp.id >= view.stamp.id) {
            return;
        }
        if self.latest.as_ref().map_or(true, |l| l.stamp < view.stamp) {
            self.set_latest(Some(view.clone()));
        }
        if !view.contains(self.me.node) {
            match self.phase {
                Phase::Member => self.rejoin(),
                Phase::Founding => {
                    let leader = self.addr_of(sender).map(|addr| Member { node: sender, addr });
                    self.phase = Phase::Joining { since: self.now, leader };
                }
                _ => {}
            }
            return;
        }
        if self.latest.as_ref().map_or(true, |l| l.stamp <= view.stamp) {
            self.set_latest(Some(view.clone()));
        }
        for m in &view.members {
            self.fd.watch(m.node, self.now);
        }
        self.fd.retain(|id| view.by_server(id).is_some());
        self.committed = Some(view.clone());
        if self.phase != Phase::Member {
            self.phase = Phase::Member;
            self.emit(Event::Joined { cluster, node: self.me.node });
        }
        self.emit(Event::ViewInstalled { cluster, view });
    }

    fn on_view_ack(&mut self, sender: NodeId, epoch: u64, stamp: ViewStamp) {
        self.fd.heard(sender, self.now);
        if self.role != Role::Leader || epoch != self.epoch() {
            return;
        }
        if let Some(p) = self.proposal.as_mut() {
            if p.view.stamp == stamp {
                p.acks.insert(sender);
            }
        }
        self.maybe_install();
    }

    fn on_not_member(&mut self, committed: ViewStamp) {
        match self.phase {
            Phase::Member if self.committed.as_ref().is_some_and(|c| c.stamp < committed) => self.rejoin(),
            // A newer installed view leaves us out: our old view no longer makes us a voter.
            Phase::Joining { .. } if self.latest.as_ref().is_some_and(|l| l.stamp < committed) => self.set_latest(None),
            _ => {}
        }
    }

    /// Removed from the view: come back as a new incarnation.
    fn rejoin(&mut self) {
        let cluster = self.durable.cluster;
        let leader = self.leader.and_then(|l| self.addr_of(l).map(|addr| Member { node: l, addr }));
        self.leave_for(cluster, leader);
    }

    // ----- election -------------------------------------------------------

    fn ring_send(&mut self, epoch: u64, key: CandidateKey, elected: bool, retransmit: bool) {
        let Some(view) = self.latest.as_ref() else {
            return;
        };
        let timeout = self.suspect_us();
        let fd = &self.fd;
        let now = self.now;
        let Some(to) = view.successor(self.me.node.id, self.cfg.ring, |m| !fd.is_suspected(m.node, now, timeout)) else {
            return;
        };
        let body = if elected { Body::Elected { key } } else { Body::Token { key } };
        self.send_epoch(Dest::Addr(to.addr), epoch, body, retransmit);
        self.hops.push(PendingHop {
            epoch,
            key,
            elected,
            to,
            deadline: self.now.plus_ms(self.cfg.hop_timeout_ms),
            retries_left: self.cfg.hop_retries,
        });
    }

    /// Whether this server hears a majority of its latest view (itself included).
    /// Elections need it: a minority can never elect, so it must not inflate epochs.
    fn sees_majority(&self) -> bool {
        let Some(view) = self.latest.as_ref() else { return false };
        let timeout = self.suspect_us();
        let alive =
            view.members.iter().filter(|m| m.node.id == self.me.node.id || !self.fd.is_suspected(m.node, self.now, timeout)).count();
        view.is_majority(alive)
    }

    fn start_election(&mut self) {
        if !matches!(self.phase, Phase::Founding | Phase::Member | Phase::Joining { .. }) || self.leader_alive() {
            self.election.start_at = None;
            return;
        }
        if self.phase == Phase::Founding {
            let mut members: Vec<Member> = self.discovered.iter().map(|(n, a)| Member { node: *n, addr: *a }).collect();
            members.push(self.me);
            members.truncate(crate::view::MAX_MEMBERS);
            let view = View::new(ViewStamp::default(), members);
            for m in &view.members {
                self.fd.watch(m.node, self.now);
            }
            self.set_latest(Some(view));
        }
        if !self.sees_majority() {
            // Try again after another back-off; nothing is adopted meanwhile.
            self.election.start_at = Some(self.random_backoff().plus_ms(self.cfg.heartbeat_ms));
            return;
        }
        self.counters.elections_started += 1;
        let floor = self.epoch();
        let deadline = self.now.plus_ms(self.cfg.election_timeout_ms);
        let epoch = self.election.start(floor, deadline);
        let key = self.my_key();
        if self.latest.as_ref().is_some_and(|v| v.members.len() == 1) {
            self.become_candidate(epoch);
        } else {
            self.ring_send(epoch, key, false, false);
        }
    }

    fn become_candidate(&mut self, epoch: u64) {
        let rec = self.record();
        if rec.epoch > epoch || rec.vote.is_some_and(|(e, l)| e == epoch && l != self.me.node) {
            return; // accepted someone else meanwhile
        }
        if !self.sees_majority() {
            return; // the token went round a minority: standing would only inflate the epoch
        }
        self.adopt_epoch(epoch);
        if self.record().vote != Some((epoch, self.me.node)) {
            self.record_mut().vote = Some((epoch, self.me.node));
            let cluster = self.durable.cluster;
            self.emit(Event::Voted { cluster, epoch, leader: self.me.node });
        }
        self.role = Role::Candidate;
        let mut accepts = BTreeSet::new();
        accepts.insert(self.me.node);
        self.candidacy = Some(Candidacy { epoch, accepts });
        let key = self.my_key();
        self.forwarded.insert((epoch, key, true));
        self.ring_send(epoch, key, true, false);
        self.maybe_win();
    }

    /// A candidate re-sends its announcement straight to the members that have
    /// not accepted yet (the ring may have lost it); these are retransmissions.
    fn resend_elected(&mut self) {
        let (Some(c), Some(view)) = (self.candidacy.as_ref(), self.latest.as_ref()) else { return };
        let epoch = c.epoch;
        let key = self.my_key();
        let missing: Vec<SocketAddr> = view
            .members
            .iter()
            .filter(|m| m.node.id != self.me.node.id && !c.accepts.iter().any(|a| a.id == m.node.id))
            .map(|m| m.addr)
            .collect();
        for addr in missing {
            self.send_epoch(Dest::Addr(addr), epoch, Body::Elected { key }, true);
        }
    }

    fn maybe_win(&mut self) {
        let Some(c) = self.candidacy.as_ref() else {
            return;
        };
        let Some(view) = self.latest.as_ref() else {
            return;
        };
        let count = view.members.iter().filter(|m| c.accepts.iter().any(|a| a.id == m.node.id)).count();
        if !view.is_majority(count) {
            return;
        }
        let epoch = c.epoch;
        assert_eq!(epoch, self.epoch(), "candidate of a stale epoch"); // invariant
        let old = view.clone();
        if self.phase == Phase::Founding {
            // The founder names the cluster; its epoch record moves along.
            let cluster = ClusterId::founded_by(self.me.node, epoch);
            self.carry_record_into(cluster);
            self.durable.cluster = cluster;
            self.phase = Phase::Member;
            self.emit(Event::Joined { cluster, node: self.me.node });
        }
        let mut members = old.members.clone();
        if matches!(self.phase, Phase::Joining { .. }) {
            // A restarted server won: its new life takes its old life's place (same voters).
            members.retain(|m| m.node.id != self.me.node.id);
            members.push(self.me);
            self.phase = Phase::Member;
            let cluster = self.durable.cluster;
            self.emit(Event::Joined { cluster, node: self.me.node });
        }
        self.role = Role::Leader;
        self.candidacy = None;
        self.election.settle();
        self.leader = Some(self.me.node);
        self.hops.clear();
        let cluster = self.durable.cluster;
        self.emit(Event::BecameLeader { cluster, epoch });
        // First act: a view of our own epoch with the same members (silent ones are removed later).
        let view = View::new(ViewStamp { epoch, id: old.stamp.id + 1 }, members);
        self.propose(view, old);
        self.next_heartbeat = self.now;
        // The first beacon waits: the founding servers hear the view proposal first.
        self.next_beacon = self.now.plus_ms(self.cfg.beacon_ms);
    }

    // ----- leader duties --------------------------------------------------

    fn propose(&mut self, view: View, old: View) {
        self.set_latest(Some(view.clone()));
        for m in &view.members {
            self.fd.watch(m.node, self.now);
        }
        self.proposal = Some(Proposal::new(view, old, self.me.node, self.now));
        self.resend_proposal();
        self.maybe_install();
    }

    fn resend_proposal(&mut self) {
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        p.resend_at = self.now.plus_ms(self.cfg.heartbeat_ms);
        let view = p.view.clone();
        let targets: Vec<SocketAddr> = p.missing().map(|m| m.addr).collect();
        for addr in targets {
            self.send(addr, Body::ViewPropose { view: view.clone() }, false);
        }
    }

    fn maybe_install(&mut self) {
        if !self.proposal.as_ref().is_some_and(|p| p.is_installable()) {
            return;
        }
        let p = self.proposal.take().expect("checked above"); // invariant
        let view = p.view;
        let epoch = self.epoch();
        assert_eq!(view.stamp.epoch, epoch, "installing a view of another epoch"); // invariant
        let targets: Vec<SocketAddr> =
            view.members.iter().chain(p.old.members.iter()).filter(|m| m.node.id != self.me.node.id).map(|m| m.addr).collect();
        for addr in targets {
            self.send(addr, Body::ViewCommit { view: view.clone() }, false);
        }
        for m in &view.members {
            self.joiners.remove(&m.node.id);
        }
        self.leaving.retain(|n| view.contains(*n));
        self.fd.retain(|id| view.by_server(id).is_some());
        let cluster = self.durable.cluster;
        self.committed = Some(view.clone());
        self.emit(Event::LeaderActionApplied { cluster, epoch, seen: epoch });
        self.emit(Event::ViewInstalled { cluster, view });
    }

    fn leader_tick(&mut self) {
        let now = self.now;
        if now >= self.next_beacon {
            self.next_beacon = now.plus_ms(self.cfg.beacon_ms);
            let view_size = self.committed.as_ref().map_or(1, |v| v.members.len() as u32);
            self.send_discovery(Body::Beacon { leader: self.me, view_size });
        }
        // Step down without a majority: a partitioned leader stops acting.
        let view = self.latest.clone().expect("a leader holds a view"); // invariant
        let stepdown = 2 * self.suspect_us();
        let heard = view.members.iter().filter(|m| m.node.id == self.me.node.id || !self.fd.is_suspected(m.node, now, stepdown)).count();
        if !view.is_majority(heard) {
            self.step_down();
            return;
        }
        if self.proposal.is_some() {
            if self.proposal.as_ref().is_some_and(|p| now >= p.resend_at) {
                self.resend_proposal();
            }
            return;
        }
        let Some(committed) = self.committed.clone() else {
            return;
        };
        if committed.stamp.epoch != self.epoch() {
            return;
        }
        let remove_us = self.cfg.remove_ms * 1000;
        let silent: Vec<NodeId> = committed
            .members
            .iter()
            .map(|m| m.node)
            .filter(|n| n.id != self.me.node.id && (self.leaving.contains(n) || self.fd.is_suspected(*n, now, remove_us)))
            .collect();
        let joiners: Vec<Member> = self.joiners.values().copied().filter(|j| !committed.contains(j.node)).collect();
        let stamp = ViewStamp { epoch: self.epoch(), id: committed.stamp.id + 1 };
        let next = match next_change(&committed, &joiners, &silent) {
            Some(Change::Add(m)) => committed.with(stamp, m),
            Some(Change::Remove(n)) => committed.without(stamp, n),
            Some(Change::Replace { old, new }) => committed.without(stamp, old).with(stamp, new),
            None => return,
        };
        self.propose(next, committed);
    }

    // ----- periodic work --------------------------------------------------

    fn on_tick(&mut self) {
        let now = self.now;
        match self.phase.clone() {
            Phase::Left => {}
            Phase::Discovering { until } => {
                if now >= self.next_hello {
                    self.next_hello = now.plus_ms(self.cfg.hello_ms);
                    self.send_discovery(Body::Hello { addr: self.me.addr, founding: true });
                }
                if now >= until {
                    let in_sight = self.discovered.len() + 1;
                    if self.cfg.expect.is_some_and(|n| 2 * in_sight <= n) {
                        // Not a majority of the cluster in sight: another side may found it.
                        self.phase = Phase::Discovering { until: now.plus_ms(self.cfg.discovery_window_ms) };
                    } else {
                        self.phase = Phase::Founding;
                        self.start_election();
                    }
                }
            }
            Phase::Joining { since, leader } => {
                let give_up_us = self.cfg.join_give_up_ms * 1000;
                let heard_any = self.latest.as_ref().is_some_and(|v| {
                    v.members.iter().any(|m| m.node.id != self.me.node.id && !self.fd.is_suspected(m.node, now, give_up_us))
                });
                if heard_any || self.is_voter() {
                    // Our cluster is alive, or we hold a vote in its view (the cluster may
                    // need it for a majority, and voters can elect among themselves even if
                    // every server restarted): keep trying, and push the give-up deadline on.
                    if let Phase::Joining { since, .. } = &mut self.phase {
                        *since = now;
                    }
                } else if now.since(since) > give_up_us {
                    // Nobody of our cluster answers: found anew (a later merge reunites).
                    self.enter_cluster(ClusterId::NONE);
                    self.phase = Phase::Discovering { until: now.plus_ms(self.cfg.discovery_window_ms) };
                    return;
                }
                if now >= self.next_hello {
                    self.next_hello = now.plus_ms(self.cfg.hello_ms);
                    match leader {
                        Some(l) => self.send(l.addr, Body::JoinRequest { addr: self.me.addr }, false),
                        None => self.send_discovery(Body::Hello { addr: self.me.addr, founding: false }),
                    }
                }
                if self.is_voter() {
                    // A restarted server still votes for its old life (its vote and view are
                    // durable): it heartbeats and takes part in elections meanwhile.
                    self.member_tick();
                }
            }
            Phase::Founding | Phase::Member => self.member_tick(),
        }
    }

    fn member_tick(&mut self) {
        let now = self.now;
        let beat = now >= self.next_heartbeat;
        if beat {
            self.next_heartbeat = now.plus_ms(self.cfg.heartbeat_ms);
            let committed = self.committed.as_ref().map(|c| c.stamp).unwrap_or_default();
            let leader = self.leader;
            let to: Vec<SocketAddr> = self.others().iter().map(|m| m.addr).collect();
            let latest = self.latest.as_ref().map(|v| v.stamp).unwrap_or_default();
            let digest = self.durable.chat.causal.delivered.clone();
            self.send_all(&to, Body::Heartbeat { leader, committed, latest, digest });
        }
        if self.phase == Phase::Founding && now >= self.next_hello {
            self.next_hello = now.plus_ms(self.cfg.hello_ms);
            self.send_discovery(Body::Hello { addr: self.me.addr, founding: true });
        }
        self.retry_hops();
        self.with_chat(|c, d, cx, out| c.tick(d, cx, out));
        if self.role == Role::Leader {
            self.leader_tick();
            return;
        }
        if beat && self.role == Role::Candidate {
            self.resend_elected();
        }
        if let Some(l) = self.leader {
            if self.fd.is_suspected(l, now, self.suspect_us()) {
                self.leader = None;
                let (cluster, epoch) = (self.durable.cluster, self.epoch());
                self.emit(Event::LeaderLost { cluster, epoch });
            }
        }
        if self.leader.is_some() {
            return;
        }
        if self.election.deadline.is_some_and(|d| now >= d) {
            // No leader came of it: back off, then try a higher epoch.
            self.election.deadline = None;
            self.election.participant = false;
            if self.role == Role::Candidate {
                self.role = Role::Follower;
                self.candidacy = None;
            }
        }
        if self.election.start_at.is_none() && self.election.deadline.is_none() {
            self.election.start_at = Some(self.random_backoff());
        }
        if self.election.start_at.is_some_and(|t| now >= t) {
            self.start_election();
        }
    }

    fn retry_hops(&mut self) {
        let now = self.now;
        let due: Vec<PendingHop> = self.hops.iter().filter(|h| now >= h.deadline).cloned().collect();
        if due.is_empty() {
            return;
        }
        self.hops.retain(|h| now < h.deadline);
        for h in due {
            if h.epoch < self.election.epoch.max(self.epoch()) && !h.elected {
                continue; // an older election's token
            }
            if h.retries_left > 0 {
                let body = if h.elected { Body::Elected { key: h.key } } else { Body::Token { key: h.key } };
                self.send_epoch(Dest::Addr(h.to.addr), h.epoch, body, true);
                self.hops.push(PendingHop { deadline: now.plus_ms(self.cfg.hop_timeout_ms), retries_left: h.retries_left - 1, ..h });
            } else {
                // Successor silent: skip it on the ring.
                self.fd.suspect_hop(h.to.node, now);
                self.ring_send(h.epoch, h.key, h.elected, true);
            }
        }
    }
}
