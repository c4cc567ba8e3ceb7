//! A server's chat duties: the causal broadcast among servers, stability,
//! client sessions (login, sends held for their causal context, `stored`
//! acknowledgements, showing stable inbox entries) and name claims to the leader.
//!
//! The server routes datagrams here with a [`Ctx`] snapshot of its membership
//! state and sends whatever [`Out`]s come back.

use crate::causal::{dominates, merge, Causal, CausalMsg, Key, Vc};
use crate::chat::{Applied, ChatState, Item, MsgId, MAX_ACK_IDS};
use crate::client_wire::{ClientMsg, Op, RefusalReason, ServerMsg};
use crate::id::{NodeId, ServerId};
use crate::time::Instant;
use crate::view::{Member, View};
use crate::wire::Body;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Bugs that can be planted on purpose so the simulator's checkers can be shown to catch them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Deliver (and show) messages on receipt, without waiting for their causal past.
    NoHoldback,
    /// Do not deduplicate retried messages.
    SkipDedup,
    /// Lose every inbox when the server restarts.
    ForgetInboxOnRestart,
    /// Bind a name again to whoever claims it last.
    RebindNames,
    /// Show messages before they are stable.
    ShowUnstable,
    /// Show a login its inbox at once, without first catching up with a majority.
    ReplayAtOnce,
    /// Apply joins and leaves in delivery order, ignoring their Lamport times.
    RoomsInDeliveryOrder,
    /// Order joins and leaves by their Lamport times alone, ignoring login fences.
    Unfenced,
}

/// Chat state that survives a crash (part of [`crate::Durable`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDurable {
    /// Causal broadcast.
    pub causal: Causal,
    /// Replicated application state.
    pub state: ChatState,
    /// What a merge carried over from another cluster's history, still to be broadcast here.
    pub carry: Vec<Item>,
}

impl ChatDurable {
    /// Leaves this history for another cluster's (the server merges into it): drops it all but
    /// what users are still owed (see [`ChatState::carry`]), which is broadcast again once the
    /// server is a member there. Neither history can be installed over the other (each side
    /// trimmed what the other never saw), and keeping both would hold this server's messages
    /// back everywhere, behind messages no one can send any more.
    pub fn start_over(&mut self) {
        let causal = &self.causal;
        let mut carry = std::mem::take(&mut self.carry);
        carry.extend(self.state.carry(|key| causal.get(key).map(|m| Item::clone(&m.item))));
        *self = ChatDurable { carry, ..ChatDurable::default() };
    }
}

/// What the server knows of itself when it routes to the chat layer.
pub struct Ctx<'a> {
    /// This life.
    pub me: NodeId,
    /// Now.
    pub now: Instant,
    /// Installed view, when a member.
    pub view: Option<&'a View>,
    /// The leader's address, if known.
    pub leader: Option<SocketAddr>,
    /// This server leads.
    pub is_leader: bool,
    /// Adopted epoch.
    pub epoch: u64,
}

/// Something the chat layer wants sent.
pub enum Out {
    /// To a peer server (`true` = retransmission).
    Peer(SocketAddr, Body, bool),
    /// To a client.
    Client(SocketAddr, ServerMsg),
}

/// Most carried-over items broadcast per input or timeout (see [`ChatDurable::carry`]).
const CARRY_BATCH: usize = 16;
/// Most operations a session holds waiting for their causal context.
const MAX_PENDING: usize = 4;
/// Most messages shown to one session per round.
const SHOW_BATCH: usize = 8;
/// A session silent this long is dropped.
const SESSION_TIMEOUT_US: u64 = 2_500_000;
/// How long a retried operation waits for the copy sent through another server.
const RETRY_HOLD_US: u64 = 2_000_000;
/// An operation held this long is dropped: its client (which gives up after 10 s) reports it
/// failed, and it must not be broadcast after that. A send that says it has less time left
/// is dropped after half of that (a margin for the two clocks' rates).
const PENDING_TTL_US: u64 = 5_000_000;
/// Most expired operation ids a session remembers.
const MAX_EXPIRED: usize = 64;
/// Period of re-showing unacknowledged messages and of name claims.
const RESEND_US: u64 = 300_000;
/// Period of the full chat round: expiry, login progress, released sends, acknowledgements
/// spread, re-shows and trimming. Work that input makes possible is done at once; the round
/// repairs whatever that fast path missed.
const ROUND_US: u64 = 100_000;
/// Least gap between two [`Body::ChatHolds`] reports of one server: the first delivery after a
/// quiet spell is reported at once, a burst in one report.
pub const HOLDS_GAP_US: u64 = 1_000;
/// Longest a copy of a chat message waits when its receiver hosts none of the recipients and
/// is not needed for a majority. Such copies leave with the next broadcast, packed with its
/// copies, or after this time on a quiet server.
pub const COPY_DEFER_US: u64 = 1_000;
/// Most user names one presence report carries (more users at one server show as offline
/// elsewhere).
pub const MAX_PRESENCE: usize = 48;
/// A server's presence report is resent this often even if nothing changed.
const PRESENCE_EVERY_US: u64 = 1_000_000;
/// A peer's presence report counts for this long (it misses three reports).
const PRESENCE_TTL_US: u64 = 3_500_000;

/// Whether a login may be shown its inbox and have its sends broadcast yet. A server that
/// restarted or was cut off may still hold inbox entries whose acknowledgement (from an
/// earlier login of the user) it has not delivered, and room memberships that changed long
/// ago: showing those entries would show the user a message again, out of order, and a room
/// message would miss members. So a login waits until this server has heard from a majority
/// since the login and delivered what that majority holds (and what the client was shown).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Replay {
    /// Waiting for digests from a majority newer than this login.
    Since(Instant),
    /// Waiting to deliver this frontier.
    Until(Vc),
    /// Caught up: the inbox is shown.
    Open,
}

struct Session {
    addr: SocketAddr,
    name: String,
    token: u64,
    logged_in: bool,
    ctx: Vc,
    last_heard: Instant,
    /// Operations waiting for their causal context (and, for a retry, for an earlier copy to arrive).
    /// Each with its causal context, the end of its retry hold, and when it is dropped.
    pending: Vec<(MsgId, Op, Vc, Option<Instant>, Instant)>,
    /// Operations dropped after waiting [`PENDING_TTL_US`] (their client reports them failed):
    /// a later retry of one is not taken again.
    expired: BTreeSet<MsgId>,
    waiting: Vec<(MsgId, Key)>,
    shown_at: BTreeMap<MsgId, Instant>,
    numbered: BTreeMap<MsgId, u64>,
    next_no: u64,
    client_next: u64,
    attempt: u64,
    /// Shown messages the client acknowledged, not yet spread: never shown again.
    acks: BTreeSet<MsgId>,
    claim_at: Instant,
    replay: Replay,
    /// This process's login fence and the key of its [`Item::Login`], once broadcast; the
    /// session is logged in once that is stable.
    fence: Option<(u64, Key)>,
}

/// Refuses a client message (the one refusal its datagram may cause).
fn refuse(out: &mut Vec<Out>, from: SocketAddr, client: u64, reason: RefusalReason) {
    out.push(Out::Client(from, ServerMsg::Refused { client, reason }));
}

/// Per-server chat runtime state (sessions are not durable: clients log in again).
#[derive(Default)]
pub struct ChatServer {
    sessions: BTreeMap<u64, Session>,
    /// Planted bug, if any (tests only).
    pub plant: Option<PlantedBug>,
    next_trim: Instant,
    next_round: Instant,
    dirty: bool,
    /// Unstable messages that sessions wait on (for a `stored` or a show), re-checked as
    /// holders are learned; rebuilt by every full round.
    watch: BTreeMap<Key, BTreeSet<u64>>,
    /// Sessions whose work input has made possible, run before the input returns.
    poked: BTreeSet<u64>,
    /// Something was delivered since the last holds report.
    holds_pending: bool,
    /// Origins of what was delivered since the last holds report (they wait on it to tell
    /// their senders `stored`).
    holds_origins: BTreeSet<ServerId>,
    /// The next holds report goes to every peer (a state transfer changed what we hold).
    holds_everyone: bool,
    /// Earliest time of the next holds report.
    holds_at: Instant,
    /// When each peer's last digest (heartbeat or holds report) arrived.
    digest_at: BTreeMap<ServerId, Instant>,
    /// Sessions whose login replay waits for digests or deliveries.
    gated: BTreeSet<u64>,
    /// State transfer, both ways.
    transfer: crate::transfer::Transfer,
    /// Peers' presence reports: when each arrived, and its users.
    presence: BTreeMap<ServerId, (Instant, Vec<String>)>,
    /// Our last presence report, and when it left.
    presence_sent: (Instant, Vec<String>),
    /// Copies of chat messages that can wait (see [`COPY_DEFER_US`]), and when they leave.
    deferred: Vec<(SocketAddr, CausalMsg)>,
    deferred_at: Option<Instant>,
    /// The life in which this server last was a member: a server that joins again (cut off
    /// long enough to be dropped from the view) may have missed anything meanwhile.
    member_as: Option<NodeId>,
}

/// Sizes for reports and the bounded-memory check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChatStats {
    /// Messages in the retransmission store.
    pub store: usize,
    /// Unacknowledged inbox entries over all users.
    pub inbox: usize,
    /// Messages held back.
    pub holdback: usize,
    /// Largest hold-back queue seen.
    pub max_holdback: u64,
    /// Largest inbox seen.
    pub inbox_max: u64,
    /// Retried copies not shown again.
    pub duplicates_suppressed: u64,
    /// Client sessions.
    pub sessions: usize,
}

impl ChatServer {
    /// A chat layer with no sessions yet (`plant` is for checker tests only).
    pub fn new(plant: Option<PlantedBug>) -> ChatServer {
        ChatServer { plant, ..ChatServer::default() }
    }

    /// Stats of this server.
    pub fn stats(&self, d: &ChatDurable) -> ChatStats {
        ChatStats {
            store: d.causal.store_len(),
            inbox: d.state.inbox_total(),
            holdback: d.causal.holdback_len(),
            max_holdback: d.causal.counters.max_holdback,
            inbox_max: d.state.counters.inbox_max,
            duplicates_suppressed: d.state.counters.duplicates_suppressed,
            sessions: self.sessions.len(),
        }
    }

    /// Fills the chat part of a status report, listing what fits in `budget` bytes.
    pub fn fill_status(&self, d: &ChatDurable, report: &mut crate::client_wire::StatusReport, budget: usize) {
        let online: Vec<(&String, SocketAddr)> = self.sessions.values().filter(|s| s.logged_in).map(|s| (&s.name, s.addr)).collect();
        report.clients_total = online.len() as u32;
        report.snapshots = self.transfer.installed;
        report.store = d.causal.store_len() as u32;
        report.holdback = d.causal.holdback_len() as u32;
        report.store_full = d.causal.counters.store_full;
        report.holdback_full = d.causal.counters.holdback_full;
        let mut left = budget / 2;
        for (name, addr) in online {
            // A name, a socket address and their framing.
            let cost = name.len() + 24;
            if cost > left {
                break;
            }
            left -= cost;
            report.clients.push((name.clone(), addr));
        }
        let mut sizes: Vec<(&str, usize)> = d.state.inbox_sizes().collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        report.inbox_total = d.state.inbox_total() as u32;
        let mut left = budget - budget / 2;
        for (user, n) in sizes {
            let cost = user.len() + 8;
            if cost > left {
                break;
            }
            left -= cost;
            report.inboxes.push((user.to_string(), n as u32));
        }
    }

    fn stable(&self, d: &ChatDurable, cx: &Ctx, key: Key) -> bool {
        if self.plant == Some(PlantedBug::ShowUnstable) {
            return d.causal.has(key);
        }
        let Some(view) = cx.view else { return false };
        let n = view.members.iter().filter(|m| d.causal.holds(cx.me.id, m.node.id, key)).count();
        view.is_majority(n)
    }

    /// When [`ChatServer::tick`] must run besides the server's own timers: a due holds report.
    /// The full round needs no timer of its own: it rides on the next tick (a heartbeat at the
    /// latest) after the 100 ms round.
    pub fn deadline(&self) -> Option<Instant> {
        let holds = self.holds_pending.then_some(self.holds_at);
        [holds, self.deferred_at].into_iter().flatten().min()
    }

    /// Notes that `server` holds everything in `vc`, and pokes the sessions whose watched
    /// messages became stable.
    fn learn_holds(&mut self, d: &mut ChatDurable, cx: &Ctx, server: ServerId, vc: &Vc) {
        d.causal.note_digest(server, vc);
        let mut stable = Vec::new();
        for (origin, upto) in vc {
            for key in self.watch.range((*origin, 0)..=(*origin, *upto)).map(|(k, _)| *k) {
                if self.stable(d, cx, key) {
                    stable.push(key);
                }
            }
        }
        for key in stable {
            if let Some(clients) = self.watch.remove(&key) {
                self.poked.extend(clients);
            }
        }
    }

    fn watch(&mut self, key: Key, client: u64) {
        self.watch.entry(key).or_default().insert(client);
    }

    /// Pokes the sessions of `users` (only those logged in, unless `logging_in`).
    fn poke_users(&mut self, users: &[String], logging_in: bool) {
        let hit = self.sessions.iter().filter(|(_, s)| s.logged_in != logging_in && users.contains(&s.name)).map(|(c, _)| *c);
        self.poked.extend(hit);
    }

    fn peers(cx: &Ctx) -> Vec<SocketAddr> {
        cx.view.map(|v| v.members.iter().filter(|m| m.node.id != cx.me.id).map(|m| m.addr).collect()).unwrap_or_default()
    }

    fn apply(&mut self, d: &mut ChatDurable, msg: &CausalMsg) -> Applied {
        self.dirty = true;
        let plants = crate::chat::Plants {
            skip_dedup: self.plant == Some(PlantedBug::SkipDedup),
            rebind: self.plant == Some(PlantedBug::RebindNames),
            rooms_in_delivery_order: self.plant == Some(PlantedBug::RoomsInDeliveryOrder),
            unfenced: self.plant == Some(PlantedBug::Unfenced),
        };
        d.state.apply(msg.key(), &msg.item, plants)
    }

    /// Broadcasts `item` from this server; returns the applied result and the message key.
    fn broadcast(&mut self, d: &mut ChatDurable, cx: &Ctx, item: Item, out: &mut Vec<Out>) -> Option<(Key, Applied)> {
        // The vector leaves out what every known server holds: every member of the view is known.
        if let Some(view) = cx.view {
            d.causal.known.extend(view.members.iter().map(|m| m.node.id));
        }
        let msg = d.causal.broadcast(cx.me, item)?;
        let applied = self.apply(d, &msg);
        let (at_once, later) = self.copy_targets(cx, &msg.item);
        for addr in at_once {
            out.push(Out::Peer(addr, Body::Chat { msg: msg.clone() }, false));
        }
        // Waiting copies ride along with the next broadcast: under load nothing waits (copies
        // leave packed anyway), and a quiet server sends them within COPY_DEFER_US.
        if !self.deferred.is_empty() {
            self.deferred_at = Some(cx.now);
        }
        if !later.is_empty() {
            let due = cx.now.plus_us(COPY_DEFER_US);
            self.deferred_at = Some(self.deferred_at.map_or(due, |t| t.min(due)));
            self.deferred.extend(later.into_iter().map(|addr| (addr, msg.clone())));
        }
        Some((msg.key(), applied))
    }

    /// Where a broadcast `item` is copied: at once, and within [`COPY_DEFER_US`].
    ///
    /// A chat message goes at once to the peers where one of its recipients is logged in (by
    /// their last presence reports), those first, and to as many others as it takes to reach a
    /// majority, so it becomes stable without waiting. Its other copies can wait: they replicate
    /// what is already stable, and leave packed together, off the path of the show. Every other
    /// item goes to every peer at once.
    fn copy_targets(&self, cx: &Ctx, item: &Item) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let Some(view) = cx.view else { return (Vec::new(), Vec::new()) };
        let peers = view.members.iter().filter(|m| m.node.id != cx.me.id);
        let Item::Chat { to, .. } = item else { return (peers.map(|m| m.addr).collect(), Vec::new()) };
        let hosts_recipient = |id: ServerId| {
            self.presence
                .get(&id)
                .is_some_and(|(at, users)| cx.now.since(*at) <= PRESENCE_TTL_US && to.iter().any(|u| users.binary_search(u).is_ok()))
        };
        let (mut at_once, others): (Vec<&Member>, Vec<_>) = peers.partition(|m| hosts_recipient(m.node.id));
        // This server holds the message: a majority needs `majority - 1` peers.
        let need = view.majority().saturating_sub(1);
        let mut later = Vec::new();
        for m in others {
            if at_once.len() < need {
                at_once.push(m);
            } else {
                later.push(m.addr);
            }
        }
        (at_once.into_iter().map(|m| m.addr).collect(), later)
    }

    /// A causal message from a peer.
    pub fn on_chat(&mut self, d: &mut ChatDurable, cx: &Ctx, msg: CausalMsg) {
        // The origin held everything in the message's stamp when it sent it.
        self.learn_holds(d, cx, msg.origin.id, &msg.stamp());
        let no_holdback = self.plant == Some(PlantedBug::NoHoldback);
        for m in d.causal.receive(msg, no_holdback) {
            // Logins waiting to catch up may have.
            self.poked.append(&mut self.gated);
            self.holds_pending = true;
            self.holds_origins.insert(m.origin.id);
            match &*m.item {
                Item::Chat { to, .. } => self.poke_users(to, false),
                Item::Bind { name, .. } => self.poke_users(std::slice::from_ref(name), true),
                _ => {}
            }
            self.apply(d, &m);
        }
    }

    /// A peer's report of who is logged in there.
    pub fn on_presence(&mut self, cx: &Ctx, sender: NodeId, mut users: Vec<String>) {
        users.sort_unstable();
        self.presence.insert(sender.id, (cx.now, users));
    }

    /// Whether `user` is logged in here, or at a member whose last presence report is fresh.
    fn online(&self, cx: &Ctx, user: &str) -> bool {
        self.sessions.values().any(|s| s.logged_in && s.name == user)
            || self.presence.iter().any(|(id, (at, users))| {
                cx.now.since(*at) <= PRESENCE_TTL_US
                    && cx.view.is_some_and(|v| v.members.iter().any(|m| m.node.id == *id))
                    && users.binary_search_by(|u| u.as_str().cmp(user)).is_ok()
            })
    }

    /// Sends our presence report to every peer if it changed or is due.
    fn report_presence(&mut self, cx: &Ctx, out: &mut Vec<Out>) {
        let users: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.logged_in)
            .map(|s| s.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(MAX_PRESENCE)
            .collect();
        let (at, sent) = &self.presence_sent;
        if users == *sent && cx.now.since(*at) < PRESENCE_EVERY_US {
            return;
        }
        for addr in Self::peers(cx) {
            out.push(Out::Peer(addr, Body::ChatPresence { users: users.clone() }, false));
        }
        self.presence_sent = (cx.now, users);
    }

    /// A peer's report of what it delivered.
    pub fn on_holds(&mut self, d: &mut ChatDurable, cx: &Ctx, sender: NodeId, delivered: &Vc) {
        self.learn_digest(cx, sender);
        self.learn_holds(d, cx, sender.id, delivered);
    }

    /// Notes a fresh digest from `sender`, and re-checks the logins waiting for one.
    fn learn_digest(&mut self, cx: &Ctx, sender: NodeId) {
        self.digest_at.insert(sender.id, cx.now);
        self.poked.append(&mut self.gated);
    }

    /// Everything held by this server or by a member heard from since `since`, merged. When
    /// those are a majority of the view they include a holder of every message that was stable
    /// before `since` (two majorities of one view meet). Taking what a majority holds instead
    /// would count members not heard from lately, whose digests may predate it.
    fn fresh_frontier(&self, d: &ChatDurable, cx: &Ctx, view: &View, since: Instant) -> Vc {
        let mut frontier = d.causal.delivered.clone();
        for m in &view.members {
            if m.node.id != cx.me.id && self.digest_at.get(&m.node.id).is_some_and(|at| *at >= since) {
                if let Some(held) = d.causal.digests.get(&m.node.id) {
                    merge(&mut frontier, held);
                }
            }
        }
        frontier
    }

    /// Whether `client`'s login may be shown its inbox (see [`Replay`]).
    fn replay_open(&mut self, d: &ChatDurable, cx: &Ctx, client: u64) -> bool {
        let Some(view) = cx.view else { return false };
        let Some(s) = self.sessions.get(&client) else { return false };
        if self.plant == Some(PlantedBug::ReplayAtOnce) {
            return true;
        }
        if let Replay::Since(t) = s.replay {
            let fresh =
                view.members.iter().filter(|m| m.node.id == cx.me.id || self.digest_at.get(&m.node.id).is_some_and(|at| *at >= t)).count();
            if !view.is_majority(fresh) {
                return false;
            }
            let mut frontier = self.fresh_frontier(d, cx, view, t);
            // What the client was shown is stable, so a majority holds it: an origin none of
            // them has heard of belongs to a history this cluster does not share (the client's
            // server merged into this cluster), and can never be delivered here.
            let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
            s.ctx.retain(|origin, _| frontier.contains_key(origin));
            merge(&mut frontier, &s.ctx);
            s.replay = Replay::Until(frontier);
        }
        let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
        if let Replay::Until(f) = &s.replay {
            if !dominates(&d.causal.delivered, f) {
                return false;
            }
            s.replay = Replay::Open;
        }
        true
    }

    /// A peer's anti-entropy request.
    pub fn on_need(&mut self, d: &ChatDurable, from: SocketAddr, origin: NodeId, lo: u64, hi: u64, out: &mut Vec<Out>) {
        if let Some(below) = d.causal.gone_below(origin, lo) {
            out.push(Out::Peer(from, Body::ChatGone { origin, below }, false));
        }
        for msg in d.causal.range(origin, lo, hi) {
            out.push(Out::Peer(from, Body::Chat { msg }, true));
        }
    }

    /// A peer trimmed messages we lack: fetch its state instead.
    pub fn on_gone(&mut self, d: &ChatDurable, cx: &Ctx, from: SocketAddr, origin: NodeId, below: u64, out: &mut Vec<Out>) {
        if d.causal.delivered.get(&origin).copied().unwrap_or(0) + 1 < below {
            if let Some((to, body)) = self.transfer.start(from, cx.now) {
                out.push(Out::Peer(to, body, false));
            }
        }
    }

    /// A peer fetches our state.
    pub fn on_snapshot_get(&mut self, d: &ChatDurable, cx: &Ctx, from: SocketAddr, nonce: u64, first: u32, out: &mut Vec<Out>) {
        let make = || {
            let snapshot = crate::transfer::Snapshot {
                delivered: d.causal.delivered.clone(),
                store: d.causal.stored().cloned().collect(),
                state: d.state.clone(),
            };
            postcard::to_stdvec(&snapshot).ok()
        };
        for body in self.transfer.serve(cx.me.id.0 as u64, nonce, first, cx.now, make) {
            out.push(Out::Peer(from, body, true));
        }
    }

    /// A chunk of the state we fetch; the last one installs it.
    #[allow(clippy::too_many_arguments)]
    pub fn on_snapshot_chunk(
        &mut self,
        d: &mut ChatDurable,
        cx: &Ctx,
        from: SocketAddr,
        nonce: u64,
        index: u32,
        total: u32,
        bytes: Vec<u8>,
        out: &mut Vec<Out>,
    ) {
        match self.transfer.chunk(from, nonce, index, total, bytes, cx.now) {
            crate::transfer::Got::Nothing => {}
            crate::transfer::Got::Ask(to, body) => out.push(Out::Peer(to, body, false)),
            crate::transfer::Got::Done(snapshot) => self.install(d, *snapshot),
        }
    }

    /// Installs a peer's state, then receives again what we held beyond it.
    fn install(&mut self, d: &mut ChatDurable, snapshot: crate::transfer::Snapshot) {
        let Some(again) = d.causal.install(snapshot.delivered, snapshot.store) else {
            // The cut does not cover all we delivered (the peer is behind us somewhere, or served
            // an offer made earlier): a later snapshot, after the next `ChatGone`, will.
            return;
        };
        d.state = snapshot.state;
        let no_holdback = self.plant == Some(PlantedBug::NoHoldback);
        for msg in again {
            for m in d.causal.receive(msg, no_holdback) {
                self.apply(d, &m);
            }
        }
        self.transfer.installed += 1;
        self.dirty = true;
        self.holds_pending = true;
        self.holds_everyone = true;
        self.poked.append(&mut self.gated);
    }

    /// A peer's digest (from its heartbeat): note it, and ask it for what we miss.
    pub fn on_digest(&mut self, d: &mut ChatDurable, cx: &Ctx, sender: NodeId, from: SocketAddr, digest: &Vc, out: &mut Vec<Out>) {
        self.learn_digest(cx, sender);
        self.learn_holds(d, cx, sender.id, digest);
        self.dirty = true;
        for (origin, lo, hi) in d.causal.missing(digest) {
            out.push(Out::Peer(from, Body::ChatNeed { origin, from: lo, to: hi }, false));
        }
    }

    /// A name claim forwarded to us (we act only as leader, once caught up with a majority).
    pub fn on_claim(&mut self, d: &mut ChatDurable, cx: &Ctx, name: String, token: u64, out: &mut Vec<Out>) {
        if !cx.is_leader || d.state.names.contains_key(&name) && self.plant != Some(PlantedBug::RebindNames) {
            return;
        }
        // Fence: a new leader binds only once it has delivered what a majority of the view delivered,
        // so it knows every binding that was ever reported to a user.
        let Some(view) = cx.view else { return };
        let caught_up = view
            .members
            .iter()
            .filter(|m| m.node.id == cx.me.id || d.causal.digests.get(&m.node.id).is_some_and(|g| dominates(&d.causal.delivered, g)))
            .count();
        if !view.is_majority(caught_up) {
            return;
        }
        self.broadcast(d, cx, Item::Bind { name, token, epoch: cx.epoch }, out);
    }

    /// A datagram from a client.
    pub fn on_client(&mut self, d: &mut ChatDurable, cx: &Ctx, from: SocketAddr, msg: ClientMsg, out: &mut Vec<Out>) {
        if cx.view.is_none() {
            return; // not a member: the client will try another server
        }
        match msg {
            ClientMsg::Status | ClientMsg::Find { .. } => {}
            ClientMsg::Login { client, name, token, ctx, attempt } => {
                // A session belongs to the address it was made from (a client keeps one socket for
                // its life). Only its own user (same name and token) may move it, as after a NAT
                // rebinding; anyone else is refused and the session is left alone.
                if self.sessions.get(&client).is_some_and(|s| s.addr != from && (s.name != name || s.token != token)) {
                    return refuse(out, from, client, RefusalReason::NotYourSession);
                }
                let s = self.sessions.entry(client).or_insert_with(|| Session {
                    addr: from,
                    name: name.clone(),
                    token,
                    logged_in: false,
                    ctx: Vc::new(),
                    last_heard: cx.now,
                    pending: Vec::new(),
                    expired: BTreeSet::new(),
                    waiting: Vec::new(),
                    shown_at: BTreeMap::new(),
                    numbered: BTreeMap::new(),
                    next_no: 1,
                    client_next: 1,
                    attempt,
                    acks: BTreeSet::new(),
                    claim_at: cx.now,
                    replay: Replay::Since(cx.now),
                    fence: None,
                });
                s.addr = from;
                s.last_heard = cx.now;
                merge(&mut s.ctx, &ctx);
                if s.attempt != attempt {
                    // A new login: its shows are numbered afresh.
                    s.attempt = attempt;
                    s.numbered.clear();
                    s.shown_at.clear();
                    s.next_no = 1;
                    s.client_next = 1;
                    s.replay = Replay::Since(cx.now);
                }
                if s.name != name || s.token != token {
                    s.name = name;
                    s.token = token;
                    s.logged_in = false;
                    s.fence = None;
                }
                self.progress_login(d, cx, client, out);
                self.poked.insert(client);
            }
            ClientMsg::Ping { client, attempt, next } => {
                let s = match Self::own_session(&mut self.sessions, client, from) {
                    Ok(s) => s,
                    Err(reason) => return refuse(out, from, client, reason),
                };
                s.last_heard = cx.now;
                if attempt == s.attempt {
                    s.client_next = s.client_next.max(next);
                }
                out.push(Out::Client(from, ServerMsg::Pong { client }));
            }
            ClientMsg::Logout { client } => {
                if self.sessions.get(&client).is_some_and(|s| s.addr != from) {
                    return refuse(out, from, client, RefusalReason::NotYourSession);
                }
                self.sessions.remove(&client);
            }
            ClientMsg::Who { client } => {
                use crate::client_wire::MAX_WHO;
                // Names cost their length plus framing; the answer must fit one datagram.
                let mut budget: usize = crate::wire::MAX_DATAGRAM - 64;
                let mut take = |n: &str| {
                    let cost = n.len() + 3;
                    let ok = cost <= budget;
                    if ok {
                        budget -= cost;
                    }
                    ok
                };
                let mut users = Vec::new();
                for n in d.state.names.keys().take(MAX_WHO) {
                    if !take(n) {
                        break;
                    }
                    users.push((n.clone(), self.online(cx, n)));
                }
                let mut rooms = Vec::new();
                for (r, m) in d.state.rooms().take(MAX_WHO) {
                    if !take(r) {
                        break;
                    }
                    let members: Vec<String> = m.into_iter().take(MAX_WHO).take_while(|n| take(n)).map(String::from).collect();
                    rooms.push((r.to_string(), members));
                }
                out.push(Out::Client(from, ServerMsg::Who { client, users, rooms }));
            }
            ClientMsg::Ack { client, ids, attempt, next } => {
                let s = match Self::own_session(&mut self.sessions, client, from) {
                    Ok(s) => s,
                    Err(reason) => return refuse(out, from, client, reason),
                };
                s.last_heard = cx.now;
                if attempt == s.attempt {
                    s.client_next = s.client_next.max(next);
                }
                // Only what the user's inbox holds, or what this session was shown, can be
                // acknowledged (an acknowledgement only ever touches the user's own inbox).
                // The inbox is only listed for an id this session did not show (rare).
                let mut inbox: Option<BTreeSet<MsgId>> = None;
                let mut never: u32 = 0;
                for id in ids {
                    let known = s.numbered.contains_key(&id)
                        || s.shown_at.contains_key(&id)
                        || s.acks.contains(&id)
                        || inbox.get_or_insert_with(|| d.state.inbox(&s.name).map(|(id, _)| *id).collect()).contains(&id);
                    if !known {
                        never += 1;
                        continue;
                    }
                    // An acknowledgement that does not fit is dropped: the message is shown
                    // again later and acknowledged again.
                    if s.acks.len() < 4 * MAX_ACK_IDS && s.acks.insert(id) {
                        s.shown_at.remove(&id);
                    }
                }
                if s.acks.len() >= MAX_ACK_IDS {
                    self.poked.insert(client);
                }
                if never > 0 {
                    refuse(out, from, client, RefusalReason::NeverShown { count: never });
                }
            }
            ClientMsg::Send { id, op, ctx, retry, left_ms } => {
                let s = match Self::own_session(&mut self.sessions, id.client, from) {
                    Ok(s) => s,
                    Err(reason) => return refuse(out, from, id.client, reason),
                };
                s.last_heard = cx.now;
                self.poked.insert(id.client);
                if s.pending.iter().any(|p| p.0 == id) || s.waiting.iter().any(|w| w.0 == id) || s.expired.contains(&id) {
                    return;
                }
                if let Some(canonical) = d.state.delivered_copy(id) {
                    s.waiting.push((id, canonical));
                    return;
                }
                if s.pending.len() < MAX_PENDING {
                    // A retry waits a while: if the copy sent through another server arrives
                    // meanwhile, no second copy (with possibly other room recipients) is made.
                    let hold = retry.then(|| cx.now.plus_us(RETRY_HOLD_US));
                    let ttl = PENDING_TTL_US.min(u64::from(left_ms) * 1000 / 2);
                    s.pending.push((id, op, ctx, hold, cx.now.plus_us(ttl)));
                }
                self.dirty = true;
            }
        }
    }

    /// The logged-in session `client`, if it was made from `from`; otherwise why not.
    fn own_session(sessions: &mut BTreeMap<u64, Session>, client: u64, from: SocketAddr) -> Result<&mut Session, RefusalReason> {
        match sessions.get_mut(&client) {
            Some(s) if s.addr != from => Err(RefusalReason::NotYourSession),
            Some(s) if s.logged_in => Ok(s),
            _ => Err(RefusalReason::NotLoggedIn),
        }
    }

    /// Moves a login on: the name's binding, then catching up with a majority (see [`Replay`]),
    /// then the process's [`Item::Login`] fence; `LoginOk` once that is stable.
    fn progress_login(&mut self, d: &mut ChatDurable, cx: &Ctx, client: u64, out: &mut Vec<Out>) {
        let Some(s) = self.sessions.get(&client) else { return };
        if s.logged_in {
            out.push(Out::Client(s.addr, ServerMsg::LoginOk { client, attempt: s.attempt }));
            return;
        }
        match d.state.names.get(&s.name).copied() {
            Some(token) if token == s.token => {
                let bound = d.state.name_keys.get(&s.name).is_some_and(|key| self.stable(d, cx, *key));
                if !bound {
                    return;
                }
                if !self.replay_open(d, cx, client) {
                    self.gated.insert(client);
                    return;
                }
                let s = self.sessions.get(&client).expect("looked up above"); // invariant
                let key = match s.fence {
                    Some((_, key)) => key,
                    None => {
                        let (user, fence) = (s.name.clone(), d.state.next_lamport());
                        let Some((key, _)) = self.broadcast(d, cx, Item::Login { user, fence }, out) else { return };
                        let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
                        s.fence = Some((fence, key));
                        key
                    }
                };
                if !self.stable(d, cx, key) {
                    self.watch(key, client);
                    return;
                }
                let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
                s.logged_in = true;
                out.push(Out::Client(s.addr, ServerMsg::LoginOk { client, attempt: s.attempt }));
            }
            Some(_) if self.plant != Some(PlantedBug::RebindNames) => {
                let addr = s.addr;
                let reason = format!("name {:?} is taken", s.name);
                self.sessions.remove(&client);
                out.push(Out::Client(addr, ServerMsg::LoginRefused { client, reason }));
            }
            _ => {
                let (name, token) = (s.name.clone(), s.token);
                if cx.is_leader {
                    self.on_claim(d, cx, name, token, out);
                } else if let Some(l) = cx.leader {
                    out.push(Out::Peer(l, Body::NameClaim { name, token }, false));
                }
            }
        }
    }

    /// Timed work, due at [`ChatServer::deadline`]: the full round (expire sessions, release
    /// held sends, spread acknowledgements, acknowledge stored sends, show inboxes, trim).
    pub fn tick(&mut self, d: &mut ChatDurable, cx: &Ctx, out: &mut Vec<Out>) {
        let now = cx.now;
        if now < self.next_round {
            return;
        }
        self.next_round = now.plus_us(ROUND_US);
        let Some(view) = cx.view else { return };
        for m in &view.members {
            d.causal.known.insert(m.node.id);
        }
        self.sessions.retain(|_, s| now.since(s.last_heard) <= SESSION_TIMEOUT_US);
        self.presence.retain(|id, (at, _)| now.since(*at) <= PRESENCE_TTL_US && view.members.iter().any(|m| m.node.id == *id));
        self.report_presence(cx, out);
        self.watch.clear();
        let clients: Vec<u64> = self.sessions.keys().copied().collect();
        let resend = std::mem::take(&mut self.dirty);
        for client in clients {
            self.session_tick(d, cx, client, resend, true, out);
        }
        if now >= self.next_trim {
            self.next_trim = now.plus_us(100_000);
            let state = &d.state;
            let members: Vec<ServerId> = view.members.iter().map(|m| m.node.id).collect();
            d.causal.trim(cx.me.id, &members, |k| state.pinned(k));
        }
        if let Some((to, body)) = self.transfer.tick(now) {
            out.push(Out::Peer(to, body, false));
        }
    }

    /// Runs the work input made possible: the poked sessions, and a due holds report.
    /// Called after every input and timeout.
    pub fn flush(&mut self, d: &mut ChatDurable, cx: &Ctx, out: &mut Vec<Out>) {
        if cx.view.is_none() {
            // Not a member: nothing is shown or stored here, and peers learn what we hold from heartbeats.
            self.poked.clear();
            self.holds_pending = false;
            self.holds_origins.clear();
            // Peers that miss deferred copies ask for them when they see our digest.
            self.deferred.clear();
            self.deferred_at = None;
            return;
        }
        if self.member_as != Some(cx.me) {
            // Back in the cluster as a new life: every session catches up again, as at login,
            // before it is shown anything or sends (a room message would miss members).
            self.member_as = Some(cx.me);
            for (client, s) in &mut self.sessions {
                s.replay = Replay::Since(cx.now);
                self.poked.insert(*client);
            }
        }
        for client in std::mem::take(&mut self.poked) {
            self.session_tick(d, cx, client, true, false, out);
        }
        // What a merge carried over joins this history, a batch at a time, as room allows.
        for _ in 0..CARRY_BATCH {
            let Some(item) = d.carry.first().cloned().filter(|_| !d.causal.is_nearly_full()) else { break };
            if self.broadcast(d, cx, item, out).is_none() {
                break;
            }
            d.carry.remove(0);
        }
        if self.holds_pending && cx.now >= self.holds_at {
            self.holds_pending = false;
            self.holds_at = cx.now.plus_us(HOLDS_GAP_US);
            // Who needs the report now: the origins (for `stored`), and with a majority above two
            // every server (its origin and itself are not yet a majority). Everyone else learns
            // it from the next heartbeat's digest, in time for trimming.
            let origins = std::mem::take(&mut self.holds_origins);
            let everyone = std::mem::take(&mut self.holds_everyone) || cx.view.is_some_and(|v| v.majority() > 2);
            let to = cx.view.into_iter().flat_map(|v| &v.members).filter(|m| m.node.id != cx.me.id);
            for m in to.filter(|m| everyone || origins.contains(&m.node.id)) {
                out.push(Out::Peer(m.addr, Body::ChatHolds { delivered: d.causal.delivered.clone() }, false));
            }
        }
        // Copies that waited (broadcasts made above may have made them due).
        if self.deferred_at.is_some_and(|t| cx.now >= t) {
            self.deferred_at = None;
            for (addr, msg) in std::mem::take(&mut self.deferred) {
                out.push(Out::Peer(addr, Body::Chat { msg }, false));
            }
        }
        // A second broadcast makes the waiting copies due: what still waits is one message's.
        assert!(self.deferred.windows(2).all(|w| w[0].1.key() == w[1].1.key()), "deferred copies of two messages");
        assert_eq!(self.deferred.is_empty(), self.deferred_at.is_none(), "deferred copies and their deadline disagree");
    }

    /// One session's work. `dirty`: something changed that may complete its login;
    /// `round`: the full round (spreads its acknowledgements, which are batched).
    fn session_tick(&mut self, d: &mut ChatDurable, cx: &Ctx, client: u64, dirty: bool, round: bool, out: &mut Vec<Out>) {
        let now = cx.now;
        let Some(s) = self.sessions.get_mut(&client) else { return };
        if !s.logged_in {
            if now.since(s.claim_at) >= RESEND_US || dirty {
                s.claim_at = now;
                self.progress_login(d, cx, client, out);
            } else if let Some((_, key)) = s.fence {
                // The round cleared the watch on its fence.
                self.watch(key, client);
            }
            return;
        }
        // Acknowledgements spread through the broadcast: full batches at once, the rest each round.
        while let Some(s) = self.sessions.get_mut(&client).filter(|s| s.acks.len() >= MAX_ACK_IDS || round && !s.acks.is_empty()) {
            let ids: Vec<MsgId> = std::iter::from_fn(|| s.acks.pop_first()).take(MAX_ACK_IDS).collect();
            let user = s.name.clone();
            self.broadcast(d, cx, Item::Ack { user, ids }, out);
        }
        // Sends whose causal context this server has delivered, once it caught up with a majority
        // (so a room message goes to the members the cluster knows, not a stale server's).
        let open = self.replay_open(d, cx, client);
        if !open {
            self.gated.insert(client);
        }
        // A store too full to keep more starts nothing new: the sender sees `pending`, then
        // `failed`, rather than a message that could not be shown.
        // Likewise a message for a recipient whose inbox is (nearly) full: an inbox entry that
        // cannot be kept is a stored message never shown.
        let room = !d.causal.is_nearly_full();
        let Some(s) = self.sessions.get_mut(&client) else { return };
        let mut ready = Vec::new();
        let mut expired = Vec::new();
        s.pending.retain(|(id, op, ctx, hold, drop_at)| {
            let copy = d.state.delivered_copy(*id).is_some();
            if !copy && now >= *drop_at {
                expired.push(*id);
                return false;
            }
            let fits = match op {
                Op::Chat { to, .. } => d.state.has_room_for(&d.state.recipients(&s.name, to)),
                Op::Join(_) | Op::Leave(_) => true,
            };
            // Past the login gate, an origin of the operation's context that neither the
            // session's context nor this server knows is from a history left behind (as above).
            let shared = |o: &NodeId| s.ctx.contains_key(o) || d.causal.delivered.contains_key(o);
            let ok = copy
                || (open
                    && room
                    && fits
                    && ctx.iter().all(|(o, n)| !shared(o) || d.causal.delivered.get(o).is_some_and(|m| m >= n))
                    && dominates(&d.causal.delivered, &s.ctx)
                    && hold.is_none_or(|h| now >= h));
            if ok {
                ready.push((*id, op.clone()));
            }
            !ok
        });
        s.expired.extend(expired);
        while s.expired.len() > MAX_EXPIRED {
            s.expired.pop_first();
        }
        let name = if ready.is_empty() { String::new() } else { s.name.clone() };
        let (fence, _) = s.fence.expect("a logged-in session has a login fence"); // invariant
        for (id, op) in ready {
            if let Some(canonical) = d.state.delivered_copy(id) {
                if let Some(s) = self.sessions.get_mut(&client) {
                    s.waiting.push((id, canonical));
                }
                continue;
            }
            let item = match op {
                Op::Chat { to, text } => {
                    let (room, recipients) = match &to {
                        crate::chat::Target::Room(r) => (Some(r.clone()), d.state.recipients(&name, &to)),
                        crate::chat::Target::User(_) => (None, d.state.recipients(&name, &to)),
                    };
                    Item::Chat { id, from: name.clone(), room, to: recipients, text }
                }
                Op::Join(room) => Item::Join { id, user: name.clone(), room, fence, lamport: d.state.next_lamport() },
                Op::Leave(room) => Item::Leave { id, user: name.clone(), room, fence, lamport: d.state.next_lamport() },
            };
            let Some((key, applied)) = self.broadcast(d, cx, item, out) else { continue };
            let canonical = match applied {
                Applied::Chat { canonical, .. } => canonical,
                Applied::Other => key,
            };
            if let Some(s) = self.sessions.get_mut(&client) {
                s.waiting.push((id, canonical));
            }
        }
        // Stored acknowledgements.
        let Some(s) = self.sessions.get_mut(&client) else { return };
        let waiting = std::mem::take(&mut s.waiting);
        let addr = s.addr;
        let mut keep = Vec::new();
        for (id, key) in waiting {
            if self.stable(d, cx, key) {
                let mut stamp = Vc::new();
                stamp.insert(key.0, key.1);
                out.push(Out::Client(addr, ServerMsg::Stored { id, stamp }));
            } else {
                keep.push((id, key));
            }
        }
        for (_, key) in &keep {
            self.watch(*key, client);
        }
        if !open {
            if let Some(s) = self.sessions.get_mut(&client) {
                s.waiting = keep;
            }
            return;
        }
        // Stable inbox entries, in delivery order.
        let mut show = Vec::new();
        let mut unstable = Vec::new();
        {
            let s = self.sessions.get(&client).expect("looked up above"); // invariant
            for (id, key) in d.state.inbox(&s.name) {
                if show.len() >= SHOW_BATCH {
                    break;
                }
                if s.acks.contains(id) || s.shown_at.get(id).is_some_and(|t| now.since(*t) < RESEND_US) {
                    continue;
                }
                // Copies of one retried message are interchangeable: it is stable once any copy is.
                // Nothing after an unstable entry is shown before it: a later entry may depend on
                // it, and what this server knows of holders can lag for the earlier one (a vector
                // leaves out what every known server held when it was sent).
                if !d.state.copies(*key).any(|k| self.stable(d, cx, k)) {
                    unstable.push(*key);
                    break;
                }
                if let Some(m) = d.causal.get(*key) {
                    show.push((*id, m.clone()));
                }
            }
        }
        for key in unstable {
            self.watch(key, client);
        }
        let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
        s.waiting = keep;
        for (id, m) in show {
            if let Item::Chat { from, room, text, .. } = &*m.item {
                s.shown_at.insert(id, now);
                let no = *s.numbered.entry(id).or_insert_with(|| {
                    s.next_no += 1;
                    s.next_no - 1
                });
                let (stamp, attempt) = (m.stamp(), s.attempt);
                let msg = ServerMsg::Show { id, from: from.clone(), room: room.clone(), text: text.clone(), stamp, attempt, no, client };
                out.push(Out::Client(s.addr, msg));
            }
        }
        if s.shown_at.len() > 4 * crate::chat::MAX_INBOX {
            s.shown_at.clear();
        }
        // A numbered entry that left the inbox before the client took it (acknowledged through
        // another server) becomes a skip, so the client's in-order sequence has no hole. A rare
        // repair: left to the round.
        if !round {
            return;
        }
        let live: std::collections::BTreeSet<MsgId> = d.state.inbox(&s.name).map(|(id, _)| *id).collect();
        let next = s.client_next;
        let mut skips = Vec::new();
        s.numbered.retain(|id, no| {
            if live.contains(id) {
                return true;
            }
            if *no >= next {
                skips.push((*id, *no));
            }
            *no >= next
        });
        for (id, no) in skips {
            if s.shown_at.get(&id).is_none_or(|t| now.since(*t) >= RESEND_US) {
                s.shown_at.insert(id, now);
                out.push(Out::Client(s.addr, ServerMsg::Skip { client, attempt: s.attempt, no }));
            }
        }
    }
}

#[cfg(test)]
mod tests;
