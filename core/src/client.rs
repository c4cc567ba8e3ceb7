//! The sans-IO client state machine: finds a server from an address list,
//! logs in with a user name, heartbeats its server and moves to another one
//! when it is lost (carrying its causal context), retries each operation with
//! the same id until `stored` or reports it failed after a bound, and
//! deduplicates and acknowledges what it is shown.
//!
//! Call rule (as for the server): after every input drain `poll_transmit` and
//! `poll_event`, then call `handle_timeout` at `poll_timeout`.

use crate::causal::{merge, Vc};
use crate::chat::{MsgId, Target, MAX_NAME, MAX_TEXT};
use crate::client_wire::{ClientMsg, Op, ServerMsg};
use crate::time::Instant;
use crate::wire::{self, Packet};
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

/// Client timings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Servers to try, in order (the client starts at a seeded offset).
    pub servers: Vec<SocketAddr>,
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { servers: Vec::new(), ping_ms: 250, lost_ms: 1200, retry_ms: 400, give_up_ms: 10_000, tick_ms: 50 }
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
    /// The attached server went silent; the client moves on.
    ServerLost {
        /// The lost server.
        server: SocketAddr,
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
    LoggingIn { since: Instant },
    Attached,
}

#[derive(Clone, Debug)]
struct Outstanding {
    id: MsgId,
    op: Op,
    first: Instant,
    last: Instant,
}

/// The client state machine.
pub struct Client {
    cfg: ClientConfig,
    id: u64,
    name: String,
    token: u64,
    state: State,
    server: usize,
    ctx: Vc,
    next_seq: u64,
    outstanding: Option<Outstanding>,
    shown: BTreeSet<MsgId>,
    last_heard: Instant,
    last_login: Instant,
    next_ping: Instant,
    next_tick: Instant,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A client with id `id` (unique per client process life), starting at server `start % len`.
    pub fn new(cfg: ClientConfig, id: u64, start: usize, now: Instant) -> Client {
        let server = if cfg.servers.is_empty() { 0 } else { start % cfg.servers.len() };
        Client {
            cfg,
            id,
            name: String::new(),
            token: 0,
            state: State::Offline,
            server,
            ctx: Vc::new(),
            next_seq: 0,
            outstanding: None,
            shown: BTreeSet::new(),
            last_heard: now,
            last_login: now,
            next_ping: now,
            next_tick: now,
            out: VecDeque::new(),
            events: VecDeque::new(),
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

    /// Whether logging in or logged in.
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

    /// Starts logging in as `name`, proving it with `token`.
    pub fn login(&mut self, now: Instant, name: &str, token: u64) -> Result<(), ClientError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ClientError::BadName);
        }
        self.name = name.to_string();
        self.token = token;
        self.state = State::LoggingIn { since: now };
        self.send_login(now);
        Ok(())
    }

    /// Logs out: the user goes offline (an operation still waiting is reported failed).
    pub fn logout(&mut self, _now: Instant) {
        if self.state != State::Offline {
            self.send(ClientMsg::Logout { client: self.id });
        }
        self.state = State::Offline;
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
        self.outstanding = Some(Outstanding { id, op, first: now, last: now });
        self.send_outstanding(now);
        Ok(id)
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.cfg.servers.get(self.server).copied()
    }

    fn send(&mut self, msg: ClientMsg) {
        let Some(addr) = self.addr() else { return };
        if let Some(bytes) = wire::encode(&Packet::FromClient(msg)) {
            self.out.push_back((addr, bytes));
        }
    }

    fn send_login(&mut self, now: Instant) {
        self.last_login = now;
        let msg = ClientMsg::Login { client: self.id, name: self.name.clone(), token: self.token, ctx: self.ctx.clone() };
        self.send(msg);
    }

    fn send_outstanding(&mut self, now: Instant) {
        let Some(o) = self.outstanding.as_mut() else { return };
        o.last = now;
        let msg = ClientMsg::Send { id: o.id, op: o.op.clone(), ctx: self.ctx.clone() };
        self.send(msg);
    }

    fn move_on(&mut self, now: Instant) {
        if !self.cfg.servers.is_empty() {
            self.server = (self.server + 1) % self.cfg.servers.len();
        }
        self.state = State::LoggingIn { since: now };
        self.send_login(now);
    }

    /// Feeds one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.state == State::Offline || Some(from) != self.addr() {
            return;
        }
        let Ok(Packet::ToClient(msg)) = wire::decode(bytes) else { return };
        self.last_heard = now;
        match msg {
            ServerMsg::LoginOk { client } if client == self.id => {
                if matches!(self.state, State::LoggingIn { .. }) {
                    self.state = State::Attached;
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
            ServerMsg::Show { id, from: sender, room, text, stamp } => {
                if self.state != State::Attached {
                    return;
                }
                if self.shown.insert(id) {
                    merge(&mut self.ctx, &stamp);
                    self.events.push_back(ClientEvent::Shown { id, from: sender, room, text });
                }
                self.send(ClientMsg::Ack { client: self.id, ids: vec![id] });
            }
            ServerMsg::Stored { id, stamp } => {
                if self.outstanding.as_ref().is_some_and(|o| o.id == id) {
                    self.outstanding = None;
                    merge(&mut self.ctx, &stamp);
                    self.events.push_back(ClientEvent::Stored { id });
                }
            }
            _ => {}
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
                    self.send(ClientMsg::Ping { client: self.id });
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
mod tests {
    use super::*;

    #[test]
    fn oversize_text_is_refused_before_anything_is_sent() {
        let addr: SocketAddr = "10.0.0.1:7000".parse().expect("addr");
        let mut c = Client::new(ClientConfig { servers: vec![addr], ..ClientConfig::default() }, 1, 0, Instant(0));
        c.login(Instant(0), "ann", 7).expect("login");
        while c.poll_transmit().is_some() {}
        let text = "x".repeat(MAX_TEXT + 1);
        let err = c.submit(Instant(0), Op::Chat { to: Target::User("bob".into()), text }).unwrap_err();
        assert_eq!(err, ClientError::TooLong { len: MAX_TEXT + 1, max: MAX_TEXT });
        assert!(c.poll_transmit().is_none());
    }
}
