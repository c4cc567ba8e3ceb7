//! Replication among servers: broadcasting and delivering chat, holders and stability,
//! deferred copies, anti-entropy and state transfer, presence, and name claims at the leader.

use super::{ChatDurable, ChatServer, Ctx, Out, COPY_DEFER_US, PRESENCE_EVERY_US, PRESENCE_TTL_US};
use crate::chat::state::Applied;
use crate::id::{NodeId, ServerId};
use crate::limits::{MAX_PRESENCE, MAX_PRESENCE_PARTS};
use crate::plant::PlantedBug;
use crate::time::{Instant, Vc};
use crate::user::UserKey;
use crate::view::Member;
use crate::wire::{Body, CausalMsg, Item, Key};
use std::collections::BTreeSet;
use std::net::SocketAddr;

impl ChatServer {
    pub(super) fn stable(&self, d: &ChatDurable, cx: &Ctx, key: Key) -> bool {
        if self.plant == Some(PlantedBug::ShowUnstable) {
            return d.causal.has(key);
        }
        let Some(view) = cx.view else { return false };
        let n = view.members.iter().filter(|m| d.causal.holds(cx.me.id, m.node.id, key)).count();
        view.is_majority(n)
    }

    /// Notes that `server` holds everything in `vc`, and pokes the sessions whose watched
    /// messages became stable.
    pub(super) fn learn_holds(&mut self, d: &mut ChatDurable, cx: &Ctx, server: ServerId, vc: &Vc) {
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

    pub(super) fn apply(&mut self, d: &mut ChatDurable, msg: &CausalMsg) -> Applied {
        self.dirty = true;
        if let Item::Chat { id, .. } | Item::Join { id, .. } | Item::Leave { id, .. } = &*msg.item {
            self.active.insert(id.client);
        }
        self.journal.push(msg);
        if let Item::Retire { lives } = &*msg.item {
            if lives.iter().any(|(life, upto)| d.causal.value(*life) < *upto) && self.behind_retired.is_none() {
                self.behind_retired = Some(Instant::default());
            }
        }
        let plants = crate::chat::state::Plants {
            skip_dedup: self.plant == Some(PlantedBug::SkipDedup),
            rebind: self.plant == Some(PlantedBug::RebindNames),
            rooms_in_delivery_order: self.plant == Some(PlantedBug::RoomsInDeliveryOrder),
            unfenced: self.plant == Some(PlantedBug::Unfenced),
            recipients_at_delivery: self.plant == Some(PlantedBug::RecipientsAtDelivery),
        };
        let applied = d.apply_delivered(msg, plants);
        if let Item::Chat { id, .. } = &*msg.item {
            // The sessions of its recipients here (a room message's follow from the room's
            // membership at its cut, now in their inboxes), whether it came from a peer or from
            // a session here: a recipient logged in at the sender's server waited for the next
            // round before (every show took 100 ms on a quiet cluster).
            let hit = self.sessions.iter().filter(|(_, s)| s.login.is_done() && d.state.owes(&s.name, *id)).map(|(c, _)| *c);
            self.poked.extend(hit);
        }
        if let Applied::Chat { fresh: false, .. } = applied {
            // A retried copy may add an entry in its first copy's place, behind where sessions
            // were shown up to.
            self.rewind_pages();
        }
        applied
    }

    /// Sessions look at their whole page again at their next show (see `Session::page_from`).
    pub(super) fn rewind_pages(&mut self) {
        for s in self.sessions.values_mut() {
            s.page_from = 0;
        }
    }

    /// Broadcasts `item` from this server; returns the applied result and the message key.
    pub(super) fn broadcast(&mut self, d: &mut ChatDurable, cx: &Ctx, item: Item, out: &mut Vec<Out>) -> Option<(Key, Applied)> {
        // The vector leaves out what every known server holds: every member of the view is known.
        if let Some(view) = cx.view {
            d.causal.known.extend(view.members.iter().map(|m| m.node.id));
        }
        let msg = d.causal.broadcast(cx.me, item)?;
        let applied = self.apply(d, &msg);
        let (at_once, later) = self.copy_targets(d, cx, &msg.item);
        // A copy leaves before this server's chat log holds the message (the driver does not
        // hold copies back for the disk), so it claims nothing: the peers it goes to at once
        // learn that we hold it from our next holds report, which waits for the disk.
        if let Some(view) = cx.view {
            self.holds_to.extend(view.members.iter().filter(|m| at_once.contains(&m.addr)).map(|m| m.node.id));
            self.holds_pending = true;
        }
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
    pub(super) fn copy_targets(&self, d: &ChatDurable, cx: &Ctx, item: &Item) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let Some(view) = cx.view else { return (Vec::new(), Vec::new()) };
        let peers = view.members.iter().filter(|m| m.node.id != cx.me.id);
        let Item::Chat { id: msg, .. } = item else { return (peers.map(|m| m.addr).collect(), Vec::new()) };
        // The message is applied here already: its recipients are the users whose inbox holds it.
        let hosts_recipient = |id: ServerId| {
            self.presence
                .range((id, 0)..=(id, u8::MAX))
                .any(|(_, (at, users))| cx.now.since(*at) <= PRESENCE_TTL_US && users.iter().any(|u| d.state.owes(u, *msg)))
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
        // A copy is no claim that its origin (or the peer that sent it on) holds it: copies
        // leave before the sender's chat log is durable. Holders are learned from holds
        // reports and heartbeat digests, which wait for the disk.
        if self.plant == Some(PlantedBug::CopyClaimsHolds) {
            self.learn_holds(d, cx, msg.origin.id, &msg.stamp());
        }
        let no_holdback = self.plant == Some(PlantedBug::NoHoldback);
        for m in d.causal.receive(msg, no_holdback) {
            // Logins waiting to catch up may have.
            self.poked.append(&mut self.gated);
            self.holds_pending = true;
            self.holds_to.insert(m.origin.id);
            if let Item::Bind { name, .. } = &*m.item {
                self.poke_users(std::slice::from_ref(name), true);
            }
            self.apply(d, &m);
        }
    }

    /// A part of a peer's report of who is logged in there (its parts from `parts` on are
    /// gone: fewer users are logged in there).
    pub fn on_presence(&mut self, cx: &Ctx, sender: NodeId, part: u8, parts: u8, mut users: Vec<String>) {
        users.sort_unstable();
        self.presence.insert((sender.id, part), (cx.now, users));
        self.presence.retain(|(id, p), _| *id != sender.id || *p < parts);
    }

    /// Whether `user` is logged in here, or at a member whose last presence report is fresh.
    pub(super) fn online(&self, cx: &Ctx, user: &str) -> bool {
        self.sessions.values().any(|s| s.login.is_done() && s.name == user)
            || self.presence.iter().any(|((id, _), (at, users))| {
                cx.now.since(*at) <= PRESENCE_TTL_US
                    && cx.view.is_some_and(|v| v.members.iter().any(|m| m.node.id == *id))
                    && users.binary_search_by(|u| u.as_str().cmp(user)).is_ok()
            })
    }

    /// Sends our presence report to every peer if it changed or is due.
    pub(super) fn report_presence(&mut self, cx: &Ctx, out: &mut Vec<Out>) {
        let users: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.login.is_done())
            .map(|s| s.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(MAX_PRESENCE * MAX_PRESENCE_PARTS)
            .collect();
        let (at, sent) = &self.presence_sent;
        if users == *sent && cx.now.since(*at) < PRESENCE_EVERY_US {
            return;
        }
        // At least one part, so that "nobody" is reported too.
        let parts: Vec<&[String]> = if users.is_empty() { vec![&[]] } else { users.chunks(MAX_PRESENCE).collect() };
        let count = parts.len() as u8; // at most MAX_PRESENCE_PARTS
        for addr in Self::peers(cx) {
            for (part, names) in parts.iter().enumerate() {
                out.push(Out::Peer(addr, Body::ChatPresence { part: part as u8, parts: count, users: names.to_vec() }, false));
            }
        }
        self.presence_sent = (cx.now, users);
    }

    /// A peer's report of what it delivered.
    pub fn on_holds(&mut self, d: &mut ChatDurable, cx: &Ctx, sender: NodeId, delivered: &Vc) {
        self.learn_digest(cx, sender);
        self.learn_holds(d, cx, sender.id, delivered);
    }

    /// Notes a fresh digest from `sender`, and re-checks the logins waiting for one.
    pub(super) fn learn_digest(&mut self, cx: &Ctx, sender: NodeId) {
        self.digest_at.insert(sender.id, cx.now);
        self.poked.append(&mut self.gated);
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
        if d.causal.value(origin) + 1 < below {
            if let Some((to, body)) = self.transfer.start(from, cx.now) {
                out.push(Out::Peer(to, body, false));
            }
        }
    }

    /// A peer fetches our state.
    pub fn on_snapshot_get(&mut self, d: &ChatDurable, cx: &Ctx, from: SocketAddr, nonce: u64, first: u32, out: &mut Vec<Out>) {
        let make = || {
            let snapshot = crate::chat::transfer::Snapshot {
                delivered: d.causal.delivered.clone(),
                retired: d.causal.retired.clone(),
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
            crate::chat::transfer::Got::Nothing => {}
            crate::chat::transfer::Got::Ask(to, body) => out.push(Out::Peer(to, body, false)),
            crate::chat::transfer::Got::Done(snapshot) => self.install(d, *snapshot),
        }
    }

    /// Installs a peer's state, then receives again what we held beyond it.
    pub(super) fn install(&mut self, d: &mut ChatDurable, snapshot: crate::chat::transfer::Snapshot) {
        let Some(again) = d.causal.install(snapshot.delivered, snapshot.retired, snapshot.store) else {
            // The cut does not cover all we delivered (the peer is behind us somewhere, or served
            // an offer made earlier): a later snapshot, after the next `ChatGone`, will.
            return;
        };
        d.state = snapshot.state;
        self.behind_retired = None;
        // The state changed outside deliveries: the driver writes it whole.
        self.journal.set_reset();
        let no_holdback = self.plant == Some(PlantedBug::NoHoldback);
        for msg in again {
            for m in d.causal.receive(msg, no_holdback) {
                self.apply(d, &m);
            }
        }
        self.transfer.installed += 1;
        self.rewind_pages();
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
        let named = d.causal.missing(digest);
        for &(origin, lo, hi) in &named {
            out.push(Out::Peer(from, Body::ChatNeed { origin, from: lo, to: hi }, false));
        }
        for (origin, lo, hi) in d.causal.awaited() {
            if !named.iter().any(|(o, _, _)| *o == origin) {
                out.push(Out::Peer(from, Body::ChatNeed { origin, from: lo, to: hi }, false));
            }
        }
    }

    /// A name claim forwarded to us (we act only as leader, once caught up with a majority).
    pub fn on_claim(&mut self, d: &mut ChatDurable, cx: &Ctx, name: String, key: UserKey, out: &mut Vec<Out>) {
        if !cx.is_leader || d.state.names.contains_key(&name) && self.plant != Some(PlantedBug::RebindNames) {
            return;
        }
        // Fence: a new leader binds only once it has delivered what a majority of the view delivered,
        // so it knows every binding that was ever reported to a user.
        if !self.caught_up(d, cx) {
            return;
        }
        self.broadcast(d, cx, Item::Bind { name, key, epoch: cx.epoch }, out);
    }

    /// Whether this server has delivered what a majority of its view delivered (by their last
    /// digests): it then knows everything that became stable here.
    pub(super) fn caught_up(&self, d: &ChatDurable, cx: &Ctx) -> bool {
        let Some(view) = cx.view else { return false };
        let caught_up = view.members.iter().filter(|m| Self::covers(d, cx, m)).count();
        view.is_majority(caught_up)
    }

    /// Whether this server has caught up (see [`ChatServer::caught_up`]) with a majority and
    /// with the leader: servers that merged together are a majority of a view early on, but
    /// only the leader surely holds the history they merged into.
    pub(super) fn caught_up_with_leader(&self, d: &ChatDurable, cx: &Ctx) -> bool {
        let Some(view) = cx.view else { return false };
        let leader = cx.is_leader || cx.leader.is_some_and(|a| view.members.iter().any(|m| m.addr == a && Self::covers(d, cx, m)));
        leader && self.caught_up(d, cx)
    }

    /// Whether we delivered what member `m` last reported delivering (we cover ourselves).
    fn covers(d: &ChatDurable, cx: &Ctx, m: &crate::view::Member) -> bool {
        m.node.id == cx.me.id || d.causal.digests.get(&m.node.id).is_some_and(|g| d.causal.covers(g))
    }
}
