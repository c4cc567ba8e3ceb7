//! A server's chat duties: the causal broadcast among servers, stability,
//! client sessions (login, sends held for their causal context, `stored`
//! acknowledgements, showing stable inbox entries) and name claims to the leader.
//!
//! The server routes datagrams here with a [`Ctx`] snapshot of its membership
//! state and sends whatever [`Out`]s come back.

use crate::chat::causal::Causal;
use crate::chat::state::ChatState;
use crate::id::{NodeId, ServerId};
use crate::plant::PlantedBug;
use crate::time::Instant;
use crate::view::View;
use crate::wire::{Body, CausalMsg, Item, Key, ServerMsg, StatusReport};
pub use journal::{Journal, Recovered};
use serde::{Deserialize, Serialize};
use session::{Replay, Session};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Chat state that survives a crash (part of [`crate::Durable`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDurable {
    /// Causal broadcast.
    pub causal: Causal,
    /// Replicated application state.
    pub state: ChatState,
    /// What a merge carried over from another cluster's history, still to be broadcast here,
    /// each with the key it was delivered as there: the two histories may share a past (a
    /// server that gave up joining founded anew, then merged back), and what this history
    /// delivered already is not delivered again (see [`ChatServer::flush`]).
    pub carry: Vec<(Key, Item)>,
    /// Carried items broadcast here: the key each has here → the key it was first delivered as
    /// (in the history it was carried from). A later merge carries it under that first key, so
    /// a history that delivered it before still recognises it. Only messages some user still
    /// owes are kept (pruned with the store: at most one per inbox entry).
    pub carried: BTreeMap<Key, Key>,
}

impl ChatDurable {
    /// Leaves this history for another cluster's (the server merges into it): drops it all but
    /// what users are still owed (see [`ChatState::carry`]), which is broadcast again once the
    /// server is a member there. Neither history can be installed over the other (each side
    /// trimmed what the other never saw), and keeping both would hold this server's messages
    /// back everywhere, behind messages no one can send any more.
    pub fn start_over(&mut self) {
        let (causal, first) = (&self.causal, &self.carried);
        let mut carry = std::mem::take(&mut self.carry);
        let owed = self.state.carry(|key| causal.get(key).map(|m| Item::clone(&m.item)));
        carry.extend(owed.into_iter().map(|(key, item)| (first.get(&key).copied().unwrap_or(key), item)));
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
    /// To a client, on its path.
    Client(crate::path::ClientPath, ServerMsg),
}

/// Most send-to-stored times kept for the driver (see [`ChatServer::take_stored_latencies`]).
const MAX_LATENCIES: usize = 4096;
/// How long a server behind a retirement waits before it fetches a peer's state again (see
/// `ChatServer::behind_retired`).
const BEHIND_RETRY_US: u64 = 1_000_000;

/// Most carried-over items broadcast per input or timeout (see [`ChatDurable::carry`]).
const CARRY_BATCH: usize = 16;
/// Most messages shown to one session per round.
const SHOW_BATCH: usize = 8;
/// Inbox entries a session is shown from at a time (the first page of its inbox): a show
/// waits until the client acknowledged enough of the page before it, so a login with 100,000
/// messages waiting never floods the client (it buffers up to `MAX_EARLY` early shows).
const SHOW_PAGE: usize = 256;
/// A session silent this long is dropped.
const SESSION_TIMEOUT_US: u64 = 2_500_000;
/// How long a retried operation waits for the copy sent through another server.
const RETRY_HOLD_US: u64 = 2_000_000;
/// An operation held this long is dropped: its client (which gives up after 10 s) reports it
/// failed, and it must not be broadcast after that. A send that says it has less time left
/// is dropped after half of that (a margin for the two clocks' rates).
const PENDING_TTL_US: u64 = 5_000_000;
/// A client process's deduplication window is forgotten after this long without an operation
/// of it delivered here and without a session here: its retries (sent within
/// [`PENDING_TTL_US`] of the operation) and their copies cut off by a partition have long
/// been delivered.
const DEDUP_TTL_US: u64 = 60_000_000;
/// A deduplication window found on disk (or in a snapshot) with no activity here since is
/// forgotten after this long: three times the longest an operation is retried.
const DEDUP_BOOT_TTL_US: u64 = 3 * PENDING_TTL_US;
/// How long a confirmed logout is remembered for the client's retries (it stops retrying
/// well before: see the client's logout wait).
const LOGGED_OUT_TTL_US: u64 = 30_000_000;
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
/// A server's presence report is resent this often even if nothing changed.
const PRESENCE_EVERY_US: u64 = 1_000_000;
/// A peer's presence report counts for this long (it misses three reports).
const PRESENCE_TTL_US: u64 = 3_500_000;

/// Per-server chat runtime state (sessions are not durable: clients log in again).
#[derive(Default)]
pub struct ChatServer {
    sessions: BTreeMap<u64, Session>,
    /// Sessions that logged out, with the keys of their last acknowledgement broadcasts: the
    /// client's retried logout is answered once those are stable.
    leaving: BTreeMap<u64, Vec<Key>>,
    /// Clients whose logout was confirmed here, and when (a retried logout is confirmed
    /// again); bounded by [`crate::limits::MAX_LEAVING`], forgotten after [`LOGGED_OUT_TTL_US`].
    logged_out: BTreeMap<u64, Instant>,
    /// Send-to-stored times not yet taken by the driver (bounded by [`MAX_LATENCIES`]).
    stored_latencies: std::collections::VecDeque<u64>,
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
    /// Servers that wait on the next holds report: the origins of what was delivered since
    /// the last one (to tell their senders `stored`), and the peers our own broadcasts were
    /// copied to at once (to show them to recipients there: a copy is no claim that its
    /// origin holds it, see `ChatServer::on_chat`).
    holds_to: BTreeSet<ServerId>,
    /// The next holds report goes to every peer (a state transfer changed what we hold).
    holds_everyone: bool,
    /// Earliest time of the next holds report.
    holds_at: Instant,
    /// When each peer's last digest (heartbeat or holds report) arrived.
    digest_at: BTreeMap<ServerId, Instant>,
    /// Sessions whose login replay waits for digests or deliveries.
    gated: BTreeSet<u64>,
    /// State transfer, both ways.
    transfer: crate::chat::transfer::Transfer,
    /// Peers' presence reports, by sender and part: when each part arrived, and its users.
    presence: BTreeMap<(ServerId, u8), (Instant, Vec<String>)>,
    /// Our last presence report, and when it left.
    presence_sent: (Instant, Vec<String>),
    /// Copies of chat messages that can wait (see [`COPY_DEFER_US`]), and when they leave.
    deferred: Vec<(SocketAddr, CausalMsg)>,
    deferred_at: Option<Instant>,
    /// The life in which this server last was a member: a server that joins again (cut off
    /// long enough to be dropped from the view) may have missed anything meanwhile.
    member_as: Option<NodeId>,
    /// Client processes with an operation delivered since the last round.
    active: BTreeSet<u64>,
    /// When each client process's deduplication window is forgotten unless it is active again.
    dedup_expires: BTreeMap<u64, Instant>,
    /// Deliveries the driver has not yet made durable (see [`journal`]).
    journal: Journal,
    /// A retirement named more of a life than this server ever delivered: it joined (or came
    /// back) after messages everyone else held were retired, so its state lacks their effects,
    /// and no digest names them any more. It fetches a peer's state (not before this time).
    behind_retired: Option<Instant>,
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

    /// What the driver must make durable before this input's datagrams leave (see [`journal`]).
    pub fn take_journal(&mut self) -> Journal {
        std::mem::take(&mut self.journal)
    }

    /// Asks the driver to write the whole state before anything leaves (the chat state was
    /// replaced, not delivered to).
    pub fn write_whole(&mut self) {
        self.journal.set_reset();
    }

    /// Send-to-stored times since the last call, in microseconds.
    pub fn take_stored_latencies(&mut self) -> Vec<u64> {
        self.stored_latencies.drain(..).collect()
    }

    /// Records one send-to-stored time, dropping the oldest past the bound.
    fn record_stored_latency(&mut self, us: u64) {
        if self.stored_latencies.len() >= MAX_LATENCIES {
            self.stored_latencies.pop_front();
        }
        self.stored_latencies.push_back(us);
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
    /// Clients' addresses are listed for an operator only.
    pub fn fill_status(&self, d: &ChatDurable, report: &mut StatusReport, budget: usize, addresses: bool) {
        let online: Vec<(&String, Option<SocketAddr>)> =
            self.sessions.values().filter(|s| s.login.is_done()).map(|s| (&s.name, addresses.then_some(s.path.addr))).collect();
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

    /// When [`ChatServer::tick`] must run besides the server's own timers: a due holds report.
    /// The full round needs no timer of its own: it rides on the next tick (a heartbeat at the
    /// latest) after the 100 ms round.
    pub fn deadline(&self) -> Option<Instant> {
        let holds = self.holds_pending.then_some(self.holds_at);
        [holds, self.deferred_at].into_iter().flatten().min()
    }

    /// Remembers that `client`'s logout is confirmed, for its retries.
    fn note_logged_out(&mut self, client: u64, now: Instant) {
        if self.logged_out.len() >= crate::limits::MAX_LEAVING {
            if let Some(oldest) = self.logged_out.iter().min_by_key(|(c, at)| (**at, **c)).map(|(c, _)| *c) {
                self.logged_out.remove(&oldest);
            }
        }
        self.logged_out.insert(client, now);
    }

    fn watch(&mut self, key: Key, client: u64) {
        self.watch.entry(key).or_default().insert(client);
    }

    /// Pokes the sessions of `users` (only those logged in, unless `logging_in`).
    fn poke_users(&mut self, users: &[String], logging_in: bool) {
        let hit = self.sessions.iter().filter(|(_, s)| s.login.is_done() != logging_in && users.contains(&s.name)).map(|(c, _)| *c);
        self.poked.extend(hit);
    }

    fn peers(cx: &Ctx) -> Vec<SocketAddr> {
        cx.view.map(|v| v.members.iter().filter(|m| m.node.id != cx.me.id).map(|m| m.addr).collect()).unwrap_or_default()
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
        if self.behind_retired.is_some_and(|due| now >= due && !self.transfer.fetching()) {
            // Fetch the leader's state (any other member's without a leader); again later if it
            // does not install (it must cover what we delivered).
            let other = view.members.iter().find(|m| m.node.id != cx.me.id).map(|m| m.addr);
            if let Some(peer) = cx.leader.filter(|_| !cx.is_leader).or(other) {
                if let Some((to, body)) = self.transfer.start(peer, now) {
                    out.push(Out::Peer(to, body, false));
                }
                self.behind_retired = Some(now.plus_us(BEHIND_RETRY_US));
            }
        }
        let silent: Vec<u64> =
            self.sessions.iter().filter(|(_, s)| now.since(s.last_heard) > SESSION_TIMEOUT_US).map(|(c, _)| *c).collect();
        for client in silent {
            self.end_session(d, cx, client, out);
        }
        // A logout is remembered until its acknowledgements are stable (delivered here is not
        // enough: a retried logout must not be confirmed before a majority holds them).
        let (done, waiting): (BTreeMap<u64, Vec<Key>>, _) =
            std::mem::take(&mut self.leaving).into_iter().partition(|(_, keys)| keys.iter().all(|k| self.stable(d, cx, *k)));
        self.leaving = waiting;
        for client in done.into_keys() {
            self.note_logged_out(client, now);
        }
        self.logged_out.retain(|_, at| now.since(*at) <= LOGGED_OUT_TTL_US);
        self.presence.retain(|(id, _), (at, _)| now.since(*at) <= PRESENCE_TTL_US && view.members.iter().any(|m| m.node.id == *id));
        self.report_presence(cx, out);
        self.watch.clear();
        let clients: Vec<u64> = self.sessions.keys().copied().collect();
        let resend = std::mem::take(&mut self.dirty);
        for client in clients {
            self.session_tick(d, cx, client, resend, true, out);
        }
        self.expire_dedup(d, now);
        if now >= self.next_trim {
            self.next_trim = now.plus_us(100_000);
            let state = &d.state;
            let members: Vec<ServerId> = view.members.iter().map(|m| m.node.id).collect();
            d.causal.trim(cx.me.id, &members, |k| state.pinned(k));
            d.carried.retain(|k, _| state.pinned(*k));
            d.causal.forget_servers(&members);
            if cx.is_leader {
                let lives: Vec<NodeId> = view.members.iter().map(|m| m.node).collect();
                let retire = d.causal.retirable(cx.me.id, &lives);
                if !retire.is_empty() && !d.causal.is_nearly_full() {
                    self.broadcast(d, cx, Item::Retire { lives: retire }, out);
                }
            }
        }
        if let Some((to, body)) = self.transfer.tick(now) {
            out.push(Out::Peer(to, body, false));
        }
    }

    /// Forgets the deduplication windows of client processes idle for [`DEDUP_TTL_US`] (or,
    /// for a window this life has not seen active, [`DEDUP_BOOT_TTL_US`]).
    fn expire_dedup(&mut self, d: &mut ChatDurable, now: Instant) {
        let live = self.sessions.keys().copied();
        for client in std::mem::take(&mut self.active).into_iter().chain(live) {
            self.dedup_expires.insert(client, now.plus_us(DEDUP_TTL_US));
        }
        let windows: BTreeSet<u64> = d.state.dedup_clients().collect();
        self.dedup_expires.retain(|c, _| windows.contains(c));
        for client in windows {
            if now >= *self.dedup_expires.entry(client).or_insert(now.plus_us(DEDUP_BOOT_TTL_US)) {
                d.state.forget_client(client);
                self.dedup_expires.remove(&client);
            }
        }
    }

    /// Runs the work input made possible: the poked sessions, and a due holds report.
    /// Called after every input and timeout.
    pub fn flush(&mut self, d: &mut ChatDurable, cx: &Ctx, out: &mut Vec<Out>) {
        if cx.view.is_none() {
            // Not a member: nothing is shown or stored here, and peers learn what we hold from heartbeats.
            self.poked.clear();
            self.holds_pending = false;
            self.holds_to.clear();
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
        // A session's sends poke their recipients' sessions here: those run in the same flush
        // (a few passes at most: a pass only continues what the one before started).
        for _ in 0..4 {
            if self.poked.is_empty() {
                break;
            }
            for client in std::mem::take(&mut self.poked) {
                self.session_tick(d, cx, client, true, false, out);
            }
        }
        // What a merge carried over joins this history, a batch at a time, as room allows, once
        // this server has delivered what the leader and a majority here delivered. Then a carried item this
        // history already delivered (under the key it had there: the histories shared a past)
        // is dropped: delivered again, it would be shown again, after what answered it.
        if !d.carry.is_empty() && self.behind_retired.is_none() && self.caught_up_with_leader(d, cx) {
            let mut sent = 0;
            while sent < CARRY_BATCH {
                let Some((key, item)) = d.carry.first().cloned().filter(|_| !d.causal.is_nearly_full()) else { break };
                if let Item::Bind { name, key: user, .. } = item {
                    // A name is claimed from the leader, as at a login: the leader alone binds,
                    // so names are bound in one order, and one held here already stays.
                    if !d.causal.has(key) && !d.state.names.contains_key(&name) {
                        if cx.is_leader {
                            self.on_claim(d, cx, name, user, out);
                        } else if let Some(l) = cx.leader {
                            out.push(Out::Peer(l, Body::NameClaim { name, key: user }, false));
                        }
                        sent += 1;
                    }
                } else if !d.causal.has(key) {
                    let Some((here, _)) = self.broadcast(d, cx, item, out) else { break };
                    d.carried.entry(here).or_insert(key);
                    sent += 1;
                }
                d.carry.remove(0);
            }
        }
        if self.holds_pending && cx.now >= self.holds_at {
            self.holds_pending = false;
            self.holds_at = cx.now.plus_us(HOLDS_GAP_US);
            // Who needs the report now: the origins (for `stored`), the peers our broadcasts went
            // to (for a show there), and with a majority above two every server (its origin and
            // itself are not yet a majority). Everyone else learns it from the next heartbeat's
            // digest, in time for trimming.
            let origins = std::mem::take(&mut self.holds_to);
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
        // Invariants of this layer (no datagram decides them): a second broadcast makes the
        // waiting copies due, so what still waits is one message's, with its deadline.
        assert!(self.deferred.windows(2).all(|w| w[0].1.key() == w[1].1.key()), "deferred copies of two messages");
        assert_eq!(self.deferred.is_empty(), self.deferred_at.is_none(), "deferred copies and their deadline disagree");
    }
}

pub mod journal;
mod replicate;
mod session;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Vc;
    use crate::view::{Member, ViewStamp};
    use crate::wire::MsgId;

    fn life(id: u128) -> NodeId {
        NodeId { id: ServerId(id), incarnation: 1 }
    }

    /// A message from al to cy delivered in a history by origin `origin`: cy owes it.
    fn owed_here(origin: NodeId) -> (ChatDurable, CausalMsg) {
        let mut d = ChatDurable::default();
        let id = MsgId { client: 7, seq: 1 };
        let chat = Item::Chat { id, from: "al".into(), room: None, to: vec!["cy".into()], cut: Vc::new(), text: "hi".into() };
        let msg = d.causal.broadcast(origin, chat).expect("room in the vector");
        d.state.apply(msg.key(), &msg.item, Default::default());
        (d, msg)
    }

    /// Flushes `d` as the only member (and leader) of a view: caught up with itself.
    fn flush_alone(d: &mut ChatDurable, me: NodeId) -> Vec<Out> {
        let view = View::new(ViewStamp::default(), vec![Member { node: me, addr: "10.0.0.9:7000".parse().expect("addr") }]);
        let cx = Ctx { me, now: Instant(0), view: Some(&view), leader: None, is_leader: true, epoch: 1 };
        let mut out = Vec::new();
        ChatServer::new(None).flush(d, &cx, &mut out);
        out
    }

    #[test]
    fn a_carried_message_the_other_history_delivered_before_is_not_delivered_again() {
        // A server cut off from its cluster carries cy's message into a history that shares
        // its past: that history delivered it (and may have shown and trimmed it) already.
        let (origin, me) = (life(1), life(2));
        let (mut d, msg) = owed_here(origin);
        d.start_over();
        assert_eq!(d.carry.len(), 1);
        for m in d.causal.receive(msg, false) {
            d.state.apply(m.key(), &m.item, Default::default());
        }
        flush_alone(&mut d, me);
        assert!(d.carry.is_empty());
        assert_eq!(d.causal.value(me), 0, "broadcast again");
        assert_eq!(d.state.inbox_total(), 1, "cy owes it once, as this history delivered it");
    }

    #[test]
    fn a_merge_claims_the_names_it_knew_from_the_leader_and_keeps_a_binding_the_history_has() {
        // A user who does not log in again after a merge still has a name there: messages to
        // them are not refused as to no such user.
        let (origin, me) = (life(1), life(2));
        let (al, other) = (crate::user::UserKey([1; 32]), crate::user::UserKey([2; 32]));
        let (mut d, _) = owed_here(origin);
        for (name, key) in [("al", al), ("cy", al)] {
            let bind = d.causal.broadcast(origin, Item::Bind { name: name.into(), key, epoch: 1 }).expect("room");
            d.state.apply(bind.key(), &bind.item, Default::default());
        }
        d.start_over();
        // The history joined bound cy to another key before: that binding stays.
        let theirs = d.causal.broadcast(life(3), Item::Bind { name: "cy".into(), key: other, epoch: 1 }).expect("room");
        d.state.apply(theirs.key(), &theirs.item, Default::default());
        flush_alone(&mut d, me);
        assert!(d.carry.is_empty());
        assert_eq!((d.state.names.get("al"), d.state.names.get("cy")), (Some(&al), Some(&other)));
    }

    #[test]
    fn a_message_carried_twice_keeps_the_key_it_was_first_delivered_as() {
        // Carried into a history that never saw it, it is broadcast there under a new key; a
        // second merge carries it under its first key, which the first history recognises.
        let (origin, me) = (life(1), life(2));
        let (mut d, msg) = owed_here(origin);
        d.start_over();
        flush_alone(&mut d, me);
        assert_eq!((d.carry.len(), d.causal.value(me)), (0, 1), "broadcast here");
        d.start_over();
        assert_eq!(d.carry.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![msg.key()]);
    }

    /// A view of lives 1, 2 and 3.
    fn three() -> View {
        let members = (1..=3).map(|i| Member { node: life(i), addr: format!("10.0.0.{i}:7000").parse().expect("addr") });
        View::new(ViewStamp::default(), members.collect())
    }

    #[test]
    fn a_copy_is_no_claim_that_its_origin_holds_the_message() {
        // Copies leave before their sender's chat log is durable: only its holds report says
        // the message is on its disk.
        let (origin, me) = (life(1), life(2));
        let (_, msg) = owed_here(origin);
        let view = three();
        let cx = Ctx { me, now: Instant(0), view: Some(&view), leader: None, is_leader: false, epoch: 1 };
        for (plant, stable_on_copy) in [(None, false), (Some(PlantedBug::CopyClaimsHolds), true)] {
            let (mut d, mut s) = (ChatDurable::default(), ChatServer::new(plant));
            s.on_chat(&mut d, &cx, msg.clone());
            assert!(d.causal.has(msg.key()));
            assert_eq!(s.stable(&d, &cx, msg.key()), stable_on_copy, "{plant:?}");
            s.learn_holds(&mut d, &cx, origin.id, &msg.stamp());
            assert!(s.stable(&d, &cx, msg.key()), "the origin's report and our own copy are a majority");
        }
    }

    #[test]
    fn a_broadcast_reports_its_holds_to_the_peers_its_copies_went_to_at_once() {
        let me = life(1);
        let view = three();
        let cx = Ctx { me, now: Instant(0), view: Some(&view), leader: None, is_leader: true, epoch: 1 };
        let (mut d, mut s) = (ChatDurable::default(), ChatServer::new(None));
        let chat = Item::Chat {
            id: MsgId { client: 7, seq: 1 },
            from: "al".into(),
            room: None,
            to: vec!["cy".into()],
            cut: Vc::new(),
            text: "hi".into(),
        };
        let mut out = Vec::new();
        s.broadcast(&mut d, &cx, chat, &mut out).expect("room in the vector");
        // Where datagrams of one kind go.
        let to = |out: &[Out], holds: bool| -> BTreeSet<SocketAddr> {
            out.iter()
                .filter_map(|o| match o {
                    Out::Peer(a, Body::Chat { .. }, _) if !holds => Some(*a),
                    Out::Peer(a, Body::ChatHolds { .. }, _) if holds => Some(*a),
                    _ => None,
                })
                .collect()
        };
        let copied = to(&out, false);
        assert!(!copied.is_empty(), "a copy leaves at once for a majority");
        out.clear();
        s.flush(&mut d, &cx, &mut out);
        let reported = to(&out, true);
        assert_eq!(reported, copied, "each peer with a copy learns that we hold it");
    }
}
