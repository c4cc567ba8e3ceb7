//! Client sessions at a server: login (name binding, catching up with a majority, the
//! login fence), sends held for their causal context, `stored` acknowledgements, and
//! showing stable inbox entries in causal order.

use super::{ChatDurable, ChatServer, Ctx, Out, PENDING_TTL_US, RESEND_US, RETRY_HOLD_US, SHOW_BATCH, SHOW_PAGE};
use crate::chat::state::Applied;
use crate::id::NodeId;
use crate::limits::{MAX_ACK_IDS, MAX_EXPIRED, MAX_LEAVING, MAX_ORIGINS, MAX_PENDING, MAX_ROOM_MEMBERS};
use crate::path::ClientPath;
use crate::plant::PlantedBug;
use crate::time::{merge, Instant, Vc};
use crate::user::UserKey;
use crate::view::View;
use crate::wire::{Body, ClientMsg, Item, Key, MsgId, Op, RefusalReason, Rejection, ServerMsg, Target, WhoList};
use std::collections::{BTreeMap, BTreeSet};

/// Whether a login may be shown its inbox and have its sends broadcast yet. A server that
/// restarted or was cut off may still hold inbox entries whose acknowledgement (from an
/// earlier login of the user) it has not delivered, and room memberships that changed long
/// ago: showing those entries would show the user a message again, out of order, and a room
/// message would miss members. So a login waits until this server has heard from a majority
/// since the login and delivered what that majority holds (and what the client was shown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Replay {
    /// Waiting for digests from a majority newer than this login.
    Since(Instant),
    /// Waiting to deliver this frontier.
    Until(Vc),
    /// Caught up: the inbox is shown.
    Open,
}

/// Where a session's login stands. A session may send, and be shown its inbox, only once
/// logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Login {
    /// Binding the name, catching up with a majority (see [`Replay`]), then waiting for
    /// the process's [`Item::Login`] fence (its Lamport time and key, once broadcast) to be
    /// stable.
    InProgress {
        /// The fence, once broadcast.
        fence: Option<(u64, Key)>,
    },
    /// `LoginOk` was sent: the fence is stable.
    Done {
        /// The process's fence and the key of its [`Item::Login`].
        fence: (u64, Key),
    },
}

impl Login {
    /// Whether the session is logged in.
    pub(super) fn is_done(self) -> bool {
        matches!(self, Login::Done { .. })
    }

    /// The fence, once broadcast.
    fn fence(self) -> Option<(u64, Key)> {
        match self {
            Login::InProgress { fence } => fence,
            Login::Done { fence } => Some(fence),
        }
    }
}

/// A client process's session at this server (not durable: clients log in again).
pub(super) struct Session {
    /// Where the client is answered: its channel, and the address it was last heard from.
    pub(super) path: ClientPath,
    pub(super) name: String,
    pub(super) key: UserKey,
    pub(super) login: Login,
    pub(super) ctx: Vc,
    pub(super) last_heard: Instant,
    /// Operations waiting for their causal context (and, for a retry, for an earlier copy to arrive).
    /// Each with its causal context, the end of its retry hold, and when it is dropped.
    pub(super) pending: Vec<(MsgId, Op, Vc, Option<Instant>, Instant)>,
    /// Operations dropped after waiting [`PENDING_TTL_US`] (their client reports them failed):
    /// a later retry of one is not taken again.
    pub(super) expired: BTreeSet<MsgId>,
    pub(super) waiting: Vec<(MsgId, Key)>,
    /// When each operation waiting for `stored` first arrived (for the latency metric).
    pub(super) arrived: BTreeMap<MsgId, Instant>,
    pub(super) shown_at: BTreeMap<MsgId, Instant>,
    /// Every entry of the user's inbox before this delivery order was shown to this session
    /// (or acknowledged by it): shows between rounds look only from here on. Back to 0 when
    /// an entry may have come in before it (a retried copy merged, a snapshot installed).
    pub(super) page_from: u64,
    pub(super) numbered: BTreeMap<MsgId, u64>,
    pub(super) next_no: u64,
    pub(super) client_next: u64,
    pub(super) attempt: u64,
    /// Shown messages the client acknowledged, not yet spread: never shown again.
    pub(super) acks: BTreeSet<MsgId>,
    /// The last acknowledgements this session spread: a clean quit waits until they are stable
    /// (those of one server life are delivered in order, so the earlier ones are too).
    pub(super) last_ack: Option<Key>,
    pub(super) claim_at: Instant,
    pub(super) replay: Replay,
}

/// Refuses a client message (the one refusal its datagram may cause).
fn refuse(out: &mut Vec<Out>, from: ClientPath, client: u64, reason: RefusalReason) {
    out.push(Out::Client(from, ServerMsg::Refused { client, reason }));
}

impl ChatServer {
    /// Everything held by this server or by a member heard from since `since`, merged. When
    /// those are a majority of the view they include a holder of every message that was stable
    /// before `since` (two majorities of one view meet). Taking what a majority holds instead
    /// would count members not heard from lately, whose digests may predate it.
    pub(super) fn fresh_frontier(&self, d: &ChatDurable, cx: &Ctx, view: &View, since: Instant) -> Vc {
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
    pub(super) fn replay_open(&mut self, d: &ChatDurable, cx: &Ctx, client: u64) -> bool {
        let Some(view) = cx.view else { return false };
        let Some(s) = self.sessions.get(&client) else { return false };
        if self.plant == Some(PlantedBug::ReplayAtOnce) {
            return true;
        }
        if self.behind_retired.is_some() {
            return false; // the state lacks what retired lives did: wait for a peer's
        }
        if let Replay::Since(t) = s.replay {
            let fresh =
                view.members.iter().filter(|m| m.node.id == cx.me.id || self.digest_at.get(&m.node.id).is_some_and(|at| *at >= t)).count();
            if !view.is_majority(fresh) {
                return false;
            }
            let frontier = self.fresh_frontier(d, cx, view, t);
            // What the client was shown is stable, so a majority holds it: an origin none of
            // them has heard of belongs to a history this cluster does not share (the client's
            // server merged into this cluster), and can never be delivered here.
            let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
            s.ctx.retain(|origin, _| frontier.contains_key(origin) && !d.causal.retired.contains_key(origin));
            // For the same reason the frontier holds all the client was shown of each origin; a
            // context that names more (what only servers that lost their disks held) is served
            // with what the cluster still has, instead of waiting for ever.
            for (origin, seen) in s.ctx.iter_mut() {
                *seen = (*seen).min(frontier.get(origin).copied().unwrap_or(0));
            }
            s.replay = Replay::Until(frontier);
        }
        let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
        if let Replay::Until(f) = &s.replay {
            if !d.causal.covers(f) {
                return false;
            }
            s.replay = Replay::Open;
        }
        true
    }

    /// A datagram from a client.
    pub fn on_client(&mut self, d: &mut ChatDurable, cx: &Ctx, from: ClientPath, msg: ClientMsg, out: &mut Vec<Out>) {
        if cx.view.is_none() {
            return; // not a member: the client will try another server
        }
        match msg {
            ClientMsg::Status | ClientMsg::Find { .. } | ClientMsg::Identity | ClientMsg::Fragment(_) => {}
            ClientMsg::Login { client, name, key, ctx, attempt, .. } => {
                // The cluster layer checked the signature: the sender holds `key`'s secret, on
                // this channel.
                // A session belongs to the channel it was made on (a client keeps one for its
                // life; unsealed, its address). Only its own user (same name and key, proven
                // above) may move it, as after a NAT rebinding; anyone else is refused and the
                // session is left alone.
                if self.sessions.get(&client).is_some_and(|s| !s.path.same_party(&from) && (s.name != name || s.key != key)) {
                    return refuse(out, from, client, RefusalReason::NotYourSession);
                }
                // A confirmed quit of this process is past: a later logout of it is answered
                // by the session it starts now.
                self.logged_out.remove(&client);
                let s = self.sessions.entry(client).or_insert_with(|| Session {
                    path: from,
                    name: name.clone(),
                    key,
                    login: Login::InProgress { fence: None },
                    ctx: Vc::new(),
                    last_heard: cx.now,
                    pending: Vec::new(),
                    expired: BTreeSet::new(),
                    waiting: Vec::new(),
                    arrived: BTreeMap::new(),
                    shown_at: BTreeMap::new(),
                    page_from: 0,
                    numbered: BTreeMap::new(),
                    next_no: 1,
                    client_next: 1,
                    attempt,
                    acks: BTreeSet::new(),
                    last_ack: None,
                    claim_at: cx.now,
                    replay: Replay::Since(cx.now),
                });
                s.path = from;
                s.last_heard = cx.now;
                merge(&mut s.ctx, &ctx);
                if s.attempt != attempt {
                    // A new login: its shows are numbered afresh.
                    s.attempt = attempt;
                    s.numbered.clear();
                    s.shown_at.clear();
                    s.page_from = 0;
                    s.next_no = 1;
                    s.client_next = 1;
                    s.replay = Replay::Since(cx.now);
                }
                if s.name != name || s.key != key {
                    s.name = name;
                    s.key = key;
                    s.page_from = 0;
                    s.login = Login::InProgress { fence: None };
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
            ClientMsg::Logout { client, acks } => {
                if self.sessions.get(&client).is_some_and(|s| !s.path.same_party(&from)) {
                    return refuse(out, from, client, RefusalReason::NotYourSession);
                }
                // The client's last acknowledgements ride along (the datagram that carried them
                // may have been lost), so a clean quit never leaves a shown message unacknowledged.
                if let Some(s) = self.sessions.get_mut(&client).filter(|s| s.login.is_done()) {
                    s.acks.extend(acks.into_iter().filter(|id| d.state.owes(&s.name, *id)));
                }
                let had_session = self.sessions.contains_key(&client);
                if had_session {
                    let keys = self.end_session(d, cx, client, out);
                    if !keys.is_empty() {
                        if self.leaving.len() >= MAX_LEAVING {
                            self.leaving.pop_first();
                        }
                        self.leaving.insert(client, keys);
                    }
                }
                // Answered (and retried by the client) once the acknowledgements are stable. A
                // logout this server knows nothing of (it restarted, or the session timed out
                // here) is refused: the acknowledgements it carries may never have been spread,
                // so the client must not take its quit as clean.
                let done = match self.leaving.get(&client) {
                    Some(keys) => keys.iter().all(|k| self.stable(d, cx, *k)),
                    None => had_session || self.logged_out.contains_key(&client),
                };
                if done {
                    self.leaving.remove(&client);
                    self.note_logged_out(client, cx.now);
                    out.push(Out::Client(from, ServerMsg::LoggedOut { client }));
                } else if !self.leaving.contains_key(&client) {
                    refuse(out, from, client, RefusalReason::NotLoggedIn);
                }
            }
            ClientMsg::Who { client, list, after } => {
                use crate::limits::MAX_WHO;
                // Names in order, after `after`; the page must fit one datagram (a name costs
                // its length plus framing).
                let after = after.as_str();
                let all: Vec<(String, u32)> = match &list {
                    WhoList::Users => {
                        let names = d.state.names.keys().filter(|n| n.as_str() > after);
                        names.take(MAX_WHO + 1).map(|n| (n.clone(), u32::from(self.online(cx, n)))).collect()
                    }
                    WhoList::Rooms => d
                        .state
                        .rooms()
                        .filter(|(r, _)| *r > after)
                        .take(MAX_WHO + 1)
                        .map(|(r, m)| (r.to_string(), m.len() as u32))
                        .collect(),
                    WhoList::Members(room) => {
                        let members = d.state.members(room).into_iter().filter(|n| *n > after);
                        members.take(MAX_WHO + 1).map(|n| (n.to_string(), u32::from(self.online(cx, n)))).collect()
                    }
                };
                let mut budget: usize = crate::limits::MAX_DATAGRAM - 96;
                let mut names = Vec::new();
                for (n, v) in &all {
                    let cost = n.len() + 6;
                    if names.len() >= MAX_WHO || cost > budget {
                        break;
                    }
                    budget -= cost;
                    names.push((n.clone(), *v));
                }
                let more = names.len() < all.len();
                out.push(Out::Client(from, ServerMsg::Who { client, list, names, more }));
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
                let mut never: u32 = 0;
                for id in ids {
                    let known =
                        s.numbered.contains_key(&id) || s.shown_at.contains_key(&id) || s.acks.contains(&id) || d.state.owes(&s.name, id);
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
                // The next shows go as the client takes these (a backlog moves at the client's
                // pace, not a batch per round); full batches of acknowledgements spread at once.
                self.poked.insert(client);
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
                if s.arrived.len() >= 4 * MAX_PENDING {
                    s.arrived.pop_first();
                }
                s.arrived.entry(id).or_insert(cx.now);
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

    /// Ends a session (logout, or silence past the session timeout): the acknowledgements it
    /// received and did not spread yet are spread first, so nothing its user acknowledged is
    /// shown again at the next login.
    /// Returns the keys of those broadcasts.
    pub(super) fn end_session(&mut self, d: &mut ChatDurable, cx: &Ctx, client: u64, out: &mut Vec<Out>) -> Vec<Key> {
        let mut keys = Vec::new();
        let Some(mut s) = self.sessions.remove(&client) else { return keys };
        if !s.login.is_done() {
            return keys;
        }
        // Spread in an earlier round, they may not be stable yet (seed 162 of `--disk-loss`: the
        // server was cut off as it spread them, and confirmed the quit at once).
        keys.extend(s.last_ack.filter(|k| !self.stable(d, cx, *k)));
        while !s.acks.is_empty() {
            let ids: Vec<MsgId> = std::iter::from_fn(|| s.acks.pop_first()).take(MAX_ACK_IDS).collect();
            if let Some((key, _)) = self.broadcast(d, cx, Item::Ack { user: s.name.clone(), ids }, out) {
                keys.push(key);
            }
        }
        keys
    }

    /// The logged-in session `client`, if it belongs to `from`'s channel (which may have moved
    /// to another address: the session follows it); otherwise why not.
    pub(super) fn own_session(sessions: &mut BTreeMap<u64, Session>, client: u64, from: ClientPath) -> Result<&mut Session, RefusalReason> {
        match sessions.get_mut(&client) {
            Some(s) if !s.path.same_party(&from) => Err(RefusalReason::NotYourSession),
            Some(s) if s.login.is_done() => {
                s.path = from;
                Ok(s)
            }
            _ => Err(RefusalReason::NotLoggedIn),
        }
    }

    /// Moves a login on: the name's binding, then catching up with a majority (see [`Replay`]),
    /// then the process's [`Item::Login`] fence; `LoginOk` once that is stable.
    pub(super) fn progress_login(&mut self, d: &mut ChatDurable, cx: &Ctx, client: u64, out: &mut Vec<Out>) {
        let Some(s) = self.sessions.get(&client) else { return };
        if s.login.is_done() {
            out.push(Out::Client(s.path, ServerMsg::LoginOk { client, attempt: s.attempt }));
            return;
        }
        match d.state.names.get(&s.name).copied() {
            Some(key) if key == s.key => {
                let bound = d.state.name_keys.get(&s.name).is_some_and(|key| self.stable(d, cx, *key));
                if !bound {
                    return;
                }
                if !self.replay_open(d, cx, client) {
                    self.gated.insert(client);
                    return;
                }
                let s = self.sessions.get(&client).expect("looked up above"); // invariant
                let (fence, key) = match s.login.fence() {
                    Some(fence) => fence,
                    None => {
                        let (user, fence) = (s.name.clone(), d.state.next_lamport());
                        let Some((key, _)) = self.broadcast(d, cx, Item::Login { user, fence }, out) else { return };
                        let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
                        s.login = Login::InProgress { fence: Some((fence, key)) };
                        (fence, key)
                    }
                };
                if !self.stable(d, cx, key) {
                    self.watch(key, client);
                    return;
                }
                let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
                s.login = Login::Done { fence: (fence, key) };
                out.push(Out::Client(s.path, ServerMsg::LoginOk { client, attempt: s.attempt }));
            }
            Some(_) if self.plant != Some(PlantedBug::RebindNames) => {
                let addr = s.path;
                let reason = format!("name {:?} belongs to another key", s.name);
                self.sessions.remove(&client);
                out.push(Out::Client(addr, ServerMsg::LoginRefused { client, reason }));
            }
            _ => {
                let (name, key) = (s.name.clone(), s.key);
                if cx.is_leader {
                    self.on_claim(d, cx, name, key, out);
                } else if let Some(l) = cx.leader {
                    out.push(Out::Peer(l, Body::NameClaim { name, key }, false));
                }
            }
        }
    }

    /// One session's work. `dirty`: something changed that may complete its login;
    /// `round`: the full round (spreads its acknowledgements, which are batched).
    pub(super) fn session_tick(&mut self, d: &mut ChatDurable, cx: &Ctx, client: u64, dirty: bool, round: bool, out: &mut Vec<Out>) {
        let now = cx.now;
        let Some(s) = self.sessions.get_mut(&client) else { return };
        if let Login::InProgress { fence } = s.login {
            if now.since(s.claim_at) >= RESEND_US || dirty {
                s.claim_at = now;
                self.progress_login(d, cx, client, out);
            } else if let Some((_, key)) = fence {
                // The round cleared the watch on its fence.
                self.watch(key, client);
            }
            return;
        }
        // Acknowledgements spread through the broadcast: full batches at once, the rest each round.
        while let Some(s) = self.sessions.get_mut(&client).filter(|s| s.acks.len() >= MAX_ACK_IDS || round && !s.acks.is_empty()) {
            let ids: Vec<MsgId> = std::iter::from_fn(|| s.acks.pop_first()).take(MAX_ACK_IDS).collect();
            let user = s.name.clone();
            if let Some((key, _)) = self.broadcast(d, cx, Item::Ack { user, ids }, out) {
                if let Some(s) = self.sessions.get_mut(&client) {
                    s.last_ack = Some(key);
                }
            }
        }
        // Sends whose causal context this server has delivered, once it caught up with a majority
        // (so a room message goes to the members the cluster knows, not a stale server's).
        let open = self.replay_open(d, cx, client);
        if !open {
            self.gated.insert(client);
        }
        // A store too full to keep more starts nothing new: the sender sees `pending`, then
        // `failed`, rather than a message that could not be shown.
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
            // A cut naming more origins than a message may (lives not yet retired) waits.
            let fits = match op {
                Op::Chat { .. } => d.state.cut_len() <= MAX_ORIGINS,
                Op::Join(_) | Op::Leave(_) => true,
            };
            // Past the login gate, an origin of the operation's context that neither the
            // session's context nor this server knows is from a history left behind (as above).
            let shared = |o: &NodeId| s.ctx.contains_key(o) || d.causal.delivered.contains_key(o) || d.causal.retired.contains_key(o);
            let ok = copy
                || (open
                    && room
                    && fits
                    && ctx.iter().all(|(o, n)| !shared(o) || d.causal.value(*o) >= *n)
                    && d.causal.covers(&s.ctx)
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
        let Login::Done { fence: (fence, _) } = s.login else { unreachable!("a session still logging in returned above") };
        for (id, op) in ready {
            if let Op::Chat { to: Target::User(user), .. } = &op {
                if !d.state.names.contains_key(user) && d.state.delivered_copy(id).is_none() {
                    // Nobody holds the name: an inbox entry for it could never be acknowledged.
                    if let Some(s) = self.sessions.get(&client) {
                        out.push(Out::Client(s.path, ServerMsg::Rejected { id, reason: Rejection::NoSuchUser }));
                    }
                    continue;
                }
            }
            if let Some(canonical) = d.state.delivered_copy(id) {
                if let Some(s) = self.sessions.get_mut(&client) {
                    s.waiting.push((id, canonical));
                }
                continue;
            }
            if let Op::Join(room) = &op {
                // A room at its bound takes no new member, and the user is told so.
                if !d.state.is_member(room, &name) && d.state.members(room).len() >= MAX_ROOM_MEMBERS {
                    if let Some(s) = self.sessions.get(&client) {
                        let reason = Rejection::RoomFull { max: MAX_ROOM_MEMBERS as u32 };
                        out.push(Out::Client(s.path, ServerMsg::Rejected { id, reason }));
                    }
                    continue;
                }
            }
            let item = match op {
                // A room message names no recipient: its cut decides them, the same at every server.
                Op::Chat { to: Target::Room(room), text } => {
                    Item::Chat { id, from: name.clone(), room: Some(room), to: Vec::new(), cut: d.state.cut(), text }
                }
                Op::Chat { to: Target::User(user), text } => {
                    Item::Chat { id, from: name.clone(), room: None, to: vec![user], cut: Vc::new(), text }
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
        let addr = s.path;
        let mut keep = Vec::new();
        let mut latencies = Vec::new();
        for (id, key) in waiting {
            if self.stable(d, cx, key) {
                let mut stamp = Vc::new();
                stamp.insert(key.0, key.1);
                out.push(Out::Client(addr, ServerMsg::Stored { id, stamp }));
                latencies.push(id);
            } else {
                keep.push((id, key));
            }
        }
        for id in latencies {
            if let Some(at) = self.sessions.get_mut(&client).and_then(|s| s.arrived.remove(&id)) {
                self.record_stored_latency(cx.now.since(at));
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
        // Stable inbox entries, in delivery order, from the first page: a login with a long
        // inbox is shown one page at a time, the next as the client acknowledges this one. A
        // round looks at the page from its start (to show again what went unacknowledged); in
        // between, a session looks only past what it was shown, so a busy session costs each
        // new message, not its whole page of messages in flight.
        let mut show = Vec::new();
        let mut unstable = Vec::new();
        let next = {
            let s = self.sessions.get(&client).expect("looked up above"); // invariant
            let (from, limit) = match round {
                true => (0, SHOW_PAGE),
                false => (s.page_from, SHOW_PAGE.saturating_sub(s.shown_at.len()).min(SHOW_BATCH)),
            };
            let mut next = from;
            for (order, id, key) in d.state.inbox_from(&s.name, from, limit) {
                if show.len() >= SHOW_BATCH {
                    break;
                }
                if s.acks.contains(&id) || s.shown_at.get(&id).is_some_and(|t| now.since(*t) < RESEND_US) {
                    next = order + 1;
                    continue;
                }
                // Copies of one retried message are interchangeable: it is stable once any copy is.
                // Nothing after an unstable entry is shown before it: a later entry may depend on
                // it, and what this server knows of holders can lag for the earlier one (a vector
                // leaves out what every known server held when it was sent).
                if !d.state.copies(key).any(|k| self.stable(d, cx, k)) {
                    unstable.push(key);
                    break;
                }
                if let Some(m) = d.causal.get(key) {
                    show.push((id, m.clone()));
                }
                next = order + 1;
            }
            next
        };
        for key in unstable {
            self.watch(key, client);
        }
        let s = self.sessions.get_mut(&client).expect("looked up above"); // invariant
        s.waiting = keep;
        // A round that stopped early (a full batch of shows again, an unstable entry) keeps the
        // place the shows between rounds reached: everything before it was shown once.
        s.page_from = if round { s.page_from.max(next) } else { next };
        for (id, m) in show {
            if let Item::Chat { from, room, text, .. } = &*m.item {
                s.shown_at.insert(id, now);
                let no = *s.numbered.entry(id).or_insert_with(|| {
                    s.next_no += 1;
                    s.next_no - 1
                });
                let (stamp, attempt) = (m.stamp(), s.attempt);
                let msg = ServerMsg::Show { id, from: from.clone(), room: room.clone(), text: text.clone(), stamp, attempt, no, client };
                out.push(Out::Client(s.path, msg));
            }
        }
        if s.shown_at.len() > 4 * SHOW_PAGE {
            s.shown_at.clear();
        }
        // A numbered entry that left the inbox before the client took it (acknowledged through
        // another server) becomes a skip, so the client's in-order sequence has no hole. A rare
        // repair: left to the round.
        if !round {
            return;
        }
        let next = s.client_next;
        let mut skips = Vec::new();
        let name = s.name.clone();
        s.numbered.retain(|id, no| {
            if d.state.owes(&name, *id) {
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
                out.push(Out::Client(s.path, ServerMsg::Skip { client, attempt: s.attempt, no }));
            }
        }
    }
}
