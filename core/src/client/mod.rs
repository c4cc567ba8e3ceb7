//! The sans-IO client state machine: finds servers by asking known addresses
//! and the discovery group for an assignment (`Find`, answered by `Assign`),
//! logs in with a user name at the server the cluster assigns, heartbeats it
//! and moves to the next assigned server when it is lost (carrying its causal
//! context), asks again when every assigned server failed, retries each
//! operation with the same id until `stored` or reports it failed after a
//! bound, and deduplicates and acknowledges what it is shown.
//!
//! Finding: on `login` (and whenever its list of servers is used up) the client
//! sends `Find` to every address it knows (the configured ones and the last
//! assignment) and, when configured, to the discovery group, every `retry_ms`.
//! The first `Assign` replaces its list of servers; it logs in at the first.
//! If no answer comes within `lost_ms` and it knows addresses, it logs in at
//! them directly (as a client without discovery would) and asks again once
//! they are all used up.
//!
//! Call rule (as for the server): after every input drain `poll_transmit` and
//! `poll_event`, then call `handle_timeout` at `poll_timeout`.

use crate::limits::{MAX_ACK_IDS, MAX_EARLY, MAX_NAME, MAX_ORIGINS, MAX_SHOWN, MAX_TEXT};
use crate::path::ChannelId;
use crate::time::{keep_newest_lives, merge, Instant, Vc};
use crate::user::{Signature, UserKey, UserSecret};
use crate::wire::{self, Packet};
use crate::wire::{ClientMsg, MsgId, Op, RefusalReason, Rejection, ServerMsg, Target};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::net::SocketAddr;

/// Client timings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Known server addresses: asked for an assignment, and tried in order
    /// (from a seeded offset) when no assignment comes.
    pub servers: Vec<SocketAddr>,
    /// The discovery group (multicast or broadcast address) to send `Find` to, if any.
    pub group: Option<SocketAddr>,
    /// Ask the cluster for an assignment (`true`, the default). `false` pins
    /// the client to `servers`: it logs in there directly and cycles through
    /// them, as benchmarks that place clients themselves need.
    pub find: bool,
    /// Heartbeat period to the attached server.
    pub ping_ms: u64,
    /// Silence after which the server is presumed lost (also the login timeout per server).
    pub lost_ms: u64,
    /// Retry period of an unacknowledged operation or login.
    pub retry_ms: u64,
    /// An operation not stored after this long is reported failed.
    pub give_up_ms: u64,
    /// Granularity of the client's periodic work.
    pub tick_ms: u64,
    /// The channel the driver seals this client's datagrams on (`None`: an unsealed
    /// cluster): every login signs it.
    pub channel: Option<ChannelId>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            servers: Vec::new(),
            group: None,
            find: true,
            ping_ms: 250,
            lost_ms: 1200,
            retry_ms: 400,
            give_up_ms: 10_000,
            tick_ms: 50,
            channel: None,
        }
    }
}

/// What the client tells its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Logged in at `server`.
    LoggedIn {
        /// The server.
        server: SocketAddr,
    },
    /// Login refused (the name is taken).
    Refused {
        /// Why.
        reason: String,
    },
    /// A message shown to the user (each id at most once).
    Shown {
        /// Its id.
        id: MsgId,
        /// Sender.
        from: String,
        /// Room, for room messages.
        room: Option<String>,
        /// Text.
        text: String,
    },
    /// An operation is stored (stable).
    Stored {
        /// The operation.
        id: MsgId,
    },
    /// An operation could not be stored in time (it may or may not reach its recipients).
    Failed {
        /// The operation.
        id: MsgId,
    },
    /// The server rejected an operation for good (it is not retried).
    Rejected {
        /// The operation.
        id: MsgId,
        /// Why.
        reason: Rejection,
    },
    /// A logout finished: the process may quit. `confirmed` is false when no server answered
    /// in time: what this process was shown in its last moments may then be shown again to the
    /// user's next process (as after a crash), since its acknowledgements may not have arrived.
    LoggedOut {
        /// A server answered that the acknowledgements are stable.
        confirmed: bool,
    },
    /// The attached server went silent; the client moves on.
    ServerLost {
        /// The lost server.
        server: SocketAddr,
    },
    /// The cluster assigned servers (the client logs in at the first).
    Assigned {
        /// Server addresses in the order the client tries them.
        servers: Vec<SocketAddr>,
    },
    /// The server refused a message of ours (other than a login, and other than
    /// [`RefusalReason::NotLoggedIn`], which makes the client log in again).
    ServerRefused {
        /// Why.
        reason: RefusalReason,
    },
}

/// Why the client refused an operation before sending anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Text longer than [`MAX_TEXT`] bytes.
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A user or room name that is empty or longer than [`MAX_NAME`].
    BadName,
    /// Not logged in.
    NotLoggedIn,
    /// The previous operation is still waiting for `stored`.
    Busy,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::TooLong { len, max } => write!(f, "message of {len} bytes is longer than {max} bytes"),
            ClientError::BadName => write!(f, "names are 1 to {MAX_NAME} bytes"),
            ClientError::NotLoggedIn => write!(f, "not logged in"),
            ClientError::Busy => write!(f, "the previous message is not stored yet"),
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Offline,
    Finding {
        since: Instant,
    },
    LoggingIn {
        since: Instant,
    },
    Attached,
    /// Logged out; waiting (retrying) until the server says the user's acknowledgements are
    /// stable, or until `until`.
    LoggingOut {
        until: Instant,
    },
}

#[derive(Clone, Debug)]
struct Outstanding {
    id: MsgId,
    op: Op,
    first: Instant,
    last: Instant,
    /// First server it was sent to.
    tried: Option<SocketAddr>,
    /// It has been sent to more than one server.
    moved: bool,
}

/// The client state machine.
pub struct Client {
    cfg: ClientConfig,
    id: u64,
    name: String,
    /// The user's key and its signature of this process's logins (signed once per `login`).
    proof: Option<(UserKey, Signature)>,
    state: State,
    /// Servers to try: the known addresses, or the latest assignment.
    list: Vec<SocketAddr>,
    /// Index of the current server in `list`.
    server: usize,
    /// Servers of `list` tried without a successful login since it was set (or since the last login).
    tried: usize,
    last_find: Instant,
    ctx: Vc,
    next_seq: u64,
    outstanding: Option<Outstanding>,
    /// Ids shown, the latest [`MAX_SHOWN`] (a server re-shows only what was not acknowledged,
    /// and an acknowledgement is stable long before that many later messages are shown).
    shown: BTreeSet<MsgId>,
    shown_order: VecDeque<MsgId>,
    /// The last ids acknowledged, sent again with a logout.
    recent_acks: VecDeque<MsgId>,
    attempt: u64,
    expect: u64,
    early: BTreeMap<u64, Option<(MsgId, String, Option<String>, String, Vc)>>,
    last_heard: Instant,
    last_login: Instant,
    next_ping: Instant,
    next_tick: Instant,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ClientEvent>,
    /// Shows arriving in fragments, per server (see [`wire::fragment`]).
    fragments: wire::Reassembler<SocketAddr>,
    /// The nonce of the next message sent in fragments.
    next_nonce: u64,
}

impl Client {
    /// A client with id `id` (unique per client process life); without an
    /// assignment it tries the known servers from `start % len`.
    pub fn new(cfg: ClientConfig, id: u64, start: usize, now: Instant) -> Client {
        let server = if cfg.servers.is_empty() { 0 } else { start % cfg.servers.len() };
        Client {
            list: cfg.servers.clone(),
            cfg,
            id,
            name: String::new(),
            proof: None,
            state: State::Offline,
            server,
            tried: 0,
            last_find: now,
            ctx: Vc::new(),
            next_seq: 0,
            outstanding: None,
            shown: BTreeSet::new(),
            shown_order: VecDeque::new(),
            recent_acks: VecDeque::new(),
            attempt: 0,
            expect: 1,
            early: BTreeMap::new(),
            last_heard: now,
            last_login: now,
            next_ping: now,
            next_tick: now,
            out: VecDeque::new(),
            events: VecDeque::new(),
            fragments: wire::Reassembler::default(),
            // Starts at the clock: a later process at the same address never reuses a nonce.
            next_nonce: now.0,
        }
    }

    /// This client's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether logged in (attached to a server).
    pub fn is_online(&self) -> bool {
        self.state == State::Attached
    }

    /// The servers the client tries, in order (the latest assignment, or the known addresses).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.list
    }

    /// Whether finding a server, logging in or logged in.
    pub fn is_active(&self) -> bool {
        self.state != State::Offline
    }

    /// Whether an operation waits for `stored`.
    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// The vector of what this client has been shown and had stored.
    pub fn context(&self) -> &Vc {
        &self.ctx
    }

    /// Starts logging in as `name`, the user of key `user` (the first login binds the name to
    /// the key; every later one signs with it).
    pub fn login(&mut self, now: Instant, name: &str, user: UserSecret) -> Result<(), ClientError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ClientError::BadName);
        }
        let binding = self.cfg.channel.map_or([0; 32], |c| c.0);
        let sig = user.sign_login(&binding, self.id, name);
        self.start_login(now, name, user.public(), sig)
    }

    /// Logs in as `name` claiming `key` with the signature `sig`, whatever they are: what an
    /// impostor who knows a user's public key but not its secret can send (the simulator's
    /// impostor; checker tests). An honest client uses [`Client::login`].
    #[doc(hidden)]
    pub fn login_claiming(&mut self, now: Instant, name: &str, key: UserKey, sig: Signature) -> Result<(), ClientError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ClientError::BadName);
        }
        self.start_login(now, name, key, sig)
    }

    fn start_login(&mut self, now: Instant, name: &str, key: UserKey, sig: Signature) -> Result<(), ClientError> {
        self.name = name.to_string();
        self.proof = Some((key, sig));
        if self.cfg.find {
            self.new_attempt();
            self.start_find(now);
        } else {
            self.log_in_here(now);
        }
        Ok(())
    }

    /// Logs out: the user goes offline (an operation still waiting is reported failed). The
    /// logout is retried until the server answers that everything the user acknowledged is
    /// stable, then [`ClientEvent::LoggedOut`] comes (also after a bounded wait, or at once if
    /// the client was not logged in). A process should quit only then: quitting earlier may
    /// make the next login be shown again what this one acknowledged.
    pub fn logout(&mut self, now: Instant) {
        if matches!(self.state, State::LoggingIn { .. } | State::Attached) {
            self.state = State::LoggingOut { until: now.plus_ms(self.cfg.lost_ms) };
            self.send_logout(now);
        } else if !matches!(self.state, State::LoggingOut { .. }) {
            self.state = State::Offline;
            self.events.push_back(ClientEvent::LoggedOut { confirmed: true });
        }
        if let Some(o) = self.outstanding.take() {
            self.events.push_back(ClientEvent::Failed { id: o.id });
        }
    }

    /// Submits an operation; it is retried with the same id until stored or failed.
    pub fn submit(&mut self, now: Instant, op: Op) -> Result<MsgId, ClientError> {
        match &op {
            Op::Chat { text, .. } if text.len() > MAX_TEXT => return Err(ClientError::TooLong { len: text.len(), max: MAX_TEXT }),
            Op::Chat { to: Target::User(n) | Target::Room(n), .. } | Op::Join(n) | Op::Leave(n) if n.is_empty() || n.len() > MAX_NAME => {
                return Err(ClientError::BadName)
            }
            _ => {}
        }
        if self.state != State::Attached {
            return Err(ClientError::NotLoggedIn);
        }
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        self.next_seq += 1;
        let id = MsgId { client: self.id, seq: self.next_seq };
        self.outstanding = Some(Outstanding { id, op, first: now, last: now, tried: None, moved: false });
        self.send_outstanding(now);
        Ok(id)
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.list.get(self.server).copied()
    }

    /// Asks for an assignment (see the module documentation).
    fn start_find(&mut self, now: Instant) {
        self.state = State::Finding { since: now };
        self.send_find(now);
    }

    /// Sends `Find` to every known address, the latest assignment, and the group.
    fn send_find(&mut self, now: Instant) {
        self.last_find = now;
        let Some(bytes) = wire::encode(&Packet::FromClient(ClientMsg::Find { client: self.id })) else { return };
        let mut to: Vec<SocketAddr> = Vec::new();
        for a in self.cfg.servers.iter().chain(self.list.iter()).chain(self.cfg.group.iter()) {
            if !to.contains(a) {
                to.push(*a);
            }
        }
        for a in to {
            self.out.push_back((a, bytes.clone()));
        }
    }

    /// Logs in at the current server of the list.
    fn log_in_here(&mut self, now: Instant) {
        self.state = State::LoggingIn { since: now };
        self.new_attempt();
        self.send_login(now);
    }

    /// Sends to the current server; a message longer than a datagram (a long chat message)
    /// leaves in fragments.
    fn send(&mut self, msg: ClientMsg) {
        let Some(addr) = self.addr() else { return };
        if let Some(all) = wire::encode_datagrams(&Packet::FromClient(msg), self.next_nonce) {
            if all.len() > 1 {
                self.next_nonce = self.next_nonce.wrapping_add(1);
            }
            self.out.extend(all.into_iter().map(|b| (addr, b)));
        }
    }

    fn send_logout(&mut self, now: Instant) {
        self.last_login = now;
        let acks = self.recent_acks.iter().copied().collect();
        self.send(ClientMsg::Logout { client: self.id, acks });
    }

    fn send_login(&mut self, now: Instant) {
        self.last_login = now;
        let attempt = self.attempt;
        let Some((key, sig)) = self.proof else { return };
        let msg = ClientMsg::Login { client: self.id, name: self.name.clone(), key, sig, ctx: self.ctx.clone(), attempt };
        self.send(msg);
    }

    fn send_outstanding(&mut self, now: Instant) {
        let Some(o) = self.outstanding.as_mut() else { return };
        o.last = now;
        let here = self.list.get(self.server).copied();
        let retry = o.tried.is_some_and(|t| Some(t) != here);
        o.tried = o.tried.or(here);
        if retry {
            o.moved = true;
        }
        let left_us = (self.cfg.give_up_ms * 1000).saturating_sub(now.since(o.first));
        let left_ms = u32::try_from(left_us / 1000).unwrap_or(u32::MAX);
        let msg = ClientMsg::Send { id: o.id, op: o.op.clone(), ctx: self.ctx.clone(), retry: o.moved, left_ms };
        self.send(msg);
    }

    /// The current server failed: the next one of the list, or a new `Find` once the list is used up.
    fn move_on(&mut self, now: Instant) {
        self.tried += 1;
        if self.cfg.find && self.tried >= self.list.len() {
            self.tried = 0;
            if !self.list.is_empty() {
                self.server = (self.server + 1) % self.list.len();
            }
            self.new_attempt();
            self.start_find(now);
            return;
        }
        if !self.list.is_empty() {
            self.server = (self.server + 1) % self.list.len();
        }
        self.log_in_here(now);
    }

    fn on_assign(&mut self, now: Instant, servers: Vec<SocketAddr>) {
        self.list = servers.clone();
        self.server = 0;
        self.tried = 0;
        self.events.push_back(ClientEvent::Assigned { servers });
        self.log_in_here(now);
    }

    fn new_attempt(&mut self) {
        self.attempt += 1;
        self.expect = 1;
        self.early.clear();
    }

    /// Feeds one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if matches!(self.state, State::Finding { .. }) {
            // Any server may answer (the group reaches servers we do not know yet).
            if let Ok(Packet::ToClient(ServerMsg::Assign { client, servers })) = wire::decode(bytes) {
                if client == self.id && !servers.is_empty() {
                    self.on_assign(now, servers);
                }
            }
            return;
        }
        if self.state == State::Offline || Some(from) != self.addr() {
            return;
        }
        let mut packet = wire::decode(bytes);
        if let Ok(carrier) = &packet {
            if let Some(f) = carrier.fragment() {
                self.last_heard = now;
                match self.fragments.add(now, &from, f.clone()) {
                    Ok(Some(whole)) => packet = wire::decode_reassembled(&whole, carrier),
                    Ok(None) | Err(_) => return,
                }
            }
        }
        let Ok(Packet::ToClient(msg)) = packet else { return };
        self.last_heard = now;
        match msg {
            ServerMsg::LoginOk { client, attempt } if client == self.id && attempt == self.attempt => {
                if matches!(self.state, State::LoggingIn { .. }) {
                    self.state = State::Attached;
                    self.tried = 0;
                    self.next_ping = now.plus_ms(self.cfg.ping_ms);
                    self.events.push_back(ClientEvent::LoggedIn { server: from });
                    self.send_outstanding(now);
                }
            }
            ServerMsg::LoginRefused { client, reason } if client == self.id => {
                self.state = State::Offline;
                if let Some(o) = self.outstanding.take() {
                    self.events.push_back(ClientEvent::Failed { id: o.id });
                }
                self.events.push_back(ClientEvent::Refused { reason });
            }
            ServerMsg::Refused { client, reason: RefusalReason::NotLoggedIn }
                if client == self.id && matches!(self.state, State::LoggingOut { .. }) =>
            {
                // The server lost the session (it restarted): the acknowledgements this logout
                // carried may be lost with it, so the quit is not clean.
                self.state = State::Offline;
                self.events.push_back(ClientEvent::LoggedOut { confirmed: false });
            }
            ServerMsg::Refused { client, reason } if client == self.id => {
                // The server has no session of ours (it restarted, or expired it), or sees our
                // session at another address (our address changed): log in there again, afresh.
                if self.state == State::Attached && matches!(reason, RefusalReason::NotLoggedIn | RefusalReason::NotYourSession) {
                    self.log_in_here(now);
                }
                if reason != RefusalReason::NotLoggedIn {
                    self.events.push_back(ClientEvent::ServerRefused { reason });
                }
            }
            ServerMsg::LoggedOut { client } if client == self.id && matches!(self.state, State::LoggingOut { .. }) => {
                self.state = State::Offline;
                self.events.push_back(ClientEvent::LoggedOut { confirmed: true });
            }
            ServerMsg::Rejected { id, reason } => {
                if self.outstanding.as_ref().is_some_and(|o| o.id == id) {
                    self.outstanding = None;
                    self.events.push_back(ClientEvent::Rejected { id, reason });
                }
            }
            ServerMsg::Show { id, from: sender, room, text, stamp, attempt, no, client } => {
                if self.state != State::Attached || attempt != self.attempt || client != self.id {
                    return;
                }
                if no < self.expect {
                    self.send(ClientMsg::Ack { client: self.id, ids: vec![id], attempt: self.attempt, next: self.expect });
                    return;
                }
                // Show in the server's order: a gap (a lost show) holds back what follows it.
                if self.early.len() < MAX_EARLY || no == self.expect {
                    self.early.insert(no, Some((id, sender, room, text, stamp)));
                }
                self.release();
            }
            ServerMsg::Skip { client, attempt, no } => {
                if self.state != State::Attached || attempt != self.attempt || client != self.id || no < self.expect {
                    return;
                }
                if self.early.len() < MAX_EARLY || no == self.expect {
                    self.early.insert(no, None);
                }
                self.release();
            }
            ServerMsg::Stored { id, stamp } => {
                if self.outstanding.as_ref().is_some_and(|o| o.id == id) {
                    self.outstanding = None;
                    self.learn(&stamp);
                    self.events.push_back(ClientEvent::Stored { id });
                }
            }
            _ => {}
        }
    }

    /// Adds a shown or stored message's vector to this client's context (see [`keep_newest_lives`]).
    fn learn(&mut self, stamp: &Vc) {
        merge(&mut self.ctx, stamp);
        keep_newest_lives(&mut self.ctx, MAX_ORIGINS / 2);
    }

    /// Shows (and acknowledges) what is contiguous from the next expected number.
    fn release(&mut self) {
        let mut acks = Vec::new();
        while let Some(entry) = self.early.remove(&self.expect) {
            self.expect += 1;
            let Some((id, sender, room, text, stamp)) = entry else { continue };
            if self.shown.insert(id) {
                self.shown_order.push_back(id);
                if self.shown_order.len() > MAX_SHOWN {
                    if let Some(old) = self.shown_order.pop_front() {
                        self.shown.remove(&old);
                    }
                }
                self.learn(&stamp);
                self.events.push_back(ClientEvent::Shown { id, from: sender, room, text });
            }
            acks.push(id);
            self.recent_acks.push_back(id);
            if self.recent_acks.len() > MAX_ACK_IDS {
                self.recent_acks.pop_front();
            }
        }
        for chunk in acks.chunks(MAX_ACK_IDS) {
            self.send(ClientMsg::Ack { client: self.id, ids: chunk.to_vec(), attempt: self.attempt, next: self.expect });
        }
    }

    /// Periodic work; call at (or after) `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        while self.next_tick <= now {
            self.next_tick = self.next_tick.plus_ms(self.cfg.tick_ms);
        }
        if let Some(o) = &self.outstanding {
            if now.since(o.first) > self.cfg.give_up_ms * 1000 {
                let id = o.id;
                self.outstanding = None;
                self.events.push_back(ClientEvent::Failed { id });
            }
        }
        match self.state {
            State::Offline => {}
            State::LoggingOut { until } => {
                if now >= until {
                    self.state = State::Offline;
                    self.events.push_back(ClientEvent::LoggedOut { confirmed: false });
                } else if now.since(self.last_login) >= self.cfg.retry_ms * 1000 {
                    self.send_logout(now);
                }
            }
            State::Finding { since } => {
                if now.since(since) > self.cfg.lost_ms * 1000 && !self.list.is_empty() {
                    // No assignment: try the servers we know directly.
                    self.log_in_here(now);
                } else if now.since(self.last_find) >= self.cfg.retry_ms * 1000 {
                    self.send_find(now);
                }
            }
            State::LoggingIn { since } => {
                if now.since(since) > self.cfg.lost_ms * 1000 {
                    self.move_on(now);
                } else if now.since(self.last_login) >= self.cfg.retry_ms * 1000 {
                    self.send_login(now);
                }
            }
            State::Attached => {
                if now.since(self.last_heard) > self.cfg.lost_ms * 1000 {
                    if let Some(server) = self.addr() {
                        self.events.push_back(ClientEvent::ServerLost { server });
                    }
                    self.move_on(now);
                    return;
                }
                if now >= self.next_ping {
                    self.next_ping = now.plus_ms(self.cfg.ping_ms);
                    let (attempt, next) = (self.attempt, self.expect);
                    self.send(ClientMsg::Ping { client: self.id, attempt, next });
                }
                if self.outstanding.as_ref().is_some_and(|o| now.since(o.last) >= self.cfg.retry_ms * 1000) {
                    self.send_outstanding(now);
                }
            }
        }
    }

    /// The next datagram to send: `(server address, bytes)`.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Offline || self.outstanding.is_some()).then_some(self.next_tick)
    }
}

#[cfg(test)]
mod tests;
