//! The outsider: a host on the simulated LAN without the cluster key (issue 14).
//!
//! It hears every datagram on the wire (a mirrored switch port) and, knowing the wire format,
//! also what servers meant to say (the plain datagram before sealing: a stronger adversary
//! than a real one, so its forgeries name the right cluster, epoch, leader and views). It
//! then sends, to servers of its choice, from its own address:
//! - recorded sealed datagrams again, later: to the server that accepted them (also after
//!   that server and their sender restarted) and to others;
//! - recorded sealed datagrams mutated: bit flips, truncation, padding, header fields at
//!   extremes (counter `u64::MAX`, incarnation at its bound, another sender or receiver, the
//!   right key id over a wrong key's tag);
//! - well-formed server messages of every kind, decoded from what it heard and re-encoded
//!   with fields at extremes or made up, in its own name or a member's, plain or sealed with
//!   a key it holds (not the cluster's);
//! - garbage sealed with a wrong key;
//! - client traffic, which is not sealed yet: status, find and who requests, pings, acks and
//!   logouts of made-up clients, sends without a login, logins under names of its own,
//!   fragments of messages that do not exist.
//!
//! Checkers (each datagram as it is fed, so a violation names it):
//! - **O1** every server-channel datagram it sends (sealed, or plain with the server-datagram
//!   prefix) is refused by the receiver's seal and leaves the receiver's protocol state (its
//!   durable state, phase, role, leader and installed view) exactly as it was. The one
//!   exception is sound and narrow: a verbatim copy of a genuine sealed datagram given to a
//!   server that did not accept it before (by server id) is the network's own delay or
//!   duplication, which the protocol must tolerate anyway; every other checker still holds
//!   over such runs;
//! - **O2** a direct answer to a datagram of its that proved nothing is no larger than it;
//! - **O3** nothing it sends makes a server send to an address other than its own or a
//!   server's (no reflection to an address written in a body).
//!
//! O2 and O3 apply to everything it sends but the relayed genuine datagrams of O1's exception
//! (a delayed chat message may make a server show it to its clients).
//!
//! It draws from its own random stream (a function of the seed), so a run with the outsider
//! off draws exactly what it drew before.

use super::{Item, World};
use crate::check::Violation;
use crate::config::FaultMode;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringchat_core::id::{mix64, ClusterId, NodeId, ServerId};
use ringchat_core::limits::MAX_COUNTER;
use ringchat_core::seal::channel::{ClientChannel, SERVER_SEALED};
use ringchat_core::seal::drive::Fed;
use ringchat_core::seal::{self, ClusterKey, KeyRing, Seal, StandIn, SEAL_VERSION};
use ringchat_core::user::UserSecret;
use ringchat_core::view::{Member, View, ViewStamp};
use ringchat_core::wire::{self, Body, CandidateKey, ClientMsg, Envelope, MsgId, Op, Packet, Target};
use ringchat_core::Server;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Share of swarm seeds that run with an outsider.
pub const SWARM_SHARE: f64 = 0.3;
/// Recorded sealed datagrams kept.
const TAPE: usize = 48;
/// The outsider's own client ids (so the sessions it opens stay few).
const CLIENT_IDS: [u64; 4] = [0x0D15_EA5E_0000_0001, 0x0D15_EA5E_0000_0002, 0x0D15_EA5E_0000_0003, 0x0D15_EA5E_0000_0004];
/// Sessions the outsider may hold at a server (added to the state bound of long-life runs).
pub const OUTSIDER_CLIENTS: usize = CLIENT_IDS.len();

/// The outsider's address on the simulated LAN.
pub fn outsider_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 66, 6, 6)), 7000)
}

/// Whether seed `seed` under `cfg` runs with an outsider: forced by `cfg.outsider`, else drawn
/// for a share of swarm seeds of sealed runs (from the seed alone, not the run's stream).
pub fn outsider_on(cfg: &crate::config::SimConfig) -> bool {
    match cfg.outsider {
        Some(on) => on,
        None => {
            cfg.faults == FaultMode::Swarm
                && !cfg.unsealed
                && ((mix64(cfg.seed ^ 0x0075_1DE5_0B5E_55ED) >> 11) as f64 / (1u64 << 53) as f64) < SWARM_SHARE
        }
    }
}

/// What a datagram of the outsider is, for the checkers.
#[derive(Clone, Copy, Debug)]
pub(super) enum What {
    /// A verbatim copy of a genuine sealed datagram; `accepted_by` the server that accepted it
    /// when it was recorded (`None`: heard on the wire, maybe accepted by no one yet).
    Replay { accepted_by: Option<ServerId> },
    /// Anything else: mutated, forged, garbage, client traffic.
    Made,
}

/// An outsider event in the world's queue.
pub(super) enum Step {
    /// Its next action.
    Act,
    /// One of its datagrams reaches server `to`.
    Deliver { to: usize, bytes: Vec<u8>, what: What, kind: &'static str },
}

struct Recorded {
    bytes: Vec<u8>,
    /// The receiver's life when it accepted the datagram.
    life: Option<NodeId>,
    /// The server it was delivered to (`None`: heard as sent).
    to: Option<usize>,
    accepted_by: Option<ServerId>,
}

/// The outsider's state.
pub(super) struct Outsider {
    rng: ChaCha8Rng,
    tape: Vec<Recorded>,
    /// The latest plain server datagram of each kind it overheard.
    plain: BTreeMap<&'static str, Vec<u8>>,
    /// A key id of the cluster, read off a sealed header.
    key_id: Option<[u8; 4]>,
    me: NodeId,
    wrong: Seal<StandIn>,
    /// While one of its datagrams is fed: its kind and size.
    answering: Option<(&'static str, usize)>,
    violations: Vec<Violation>,
    stop_at: u64,
    /// Its own channel to the cluster (it knows the public identity, as any user does).
    channel: Option<ClientChannel<StandIn>>,
}

impl Outsider {
    /// The outsider of seed `seed`, acting until `stop_at` (µs).
    pub(super) fn new(seed: u64, stop_at: u64, identity: Option<[u8; 32]>) -> Outsider {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x0075_1DE5));
        let me = NodeId { id: ServerId(((rng.next_u64() as u128) << 64) | rng.next_u64() as u128 | 1), incarnation: 1 };
        let mut wrong_key = [0u8; 32];
        rng.fill_bytes(&mut wrong_key);
        let wrong = Seal::new(me, KeyRing::new(ClusterKey::new(wrong_key)), None);
        let mut ephemeral = [0u8; 32];
        rng.fill_bytes(&mut ephemeral);
        let channel = identity.map(|i| ClientChannel::new(i, ephemeral, None));
        Outsider {
            rng,
            tape: Vec::new(),
            plain: BTreeMap::new(),
            key_id: None,
            me,
            wrong,
            answering: None,
            violations: Vec::new(),
            stop_at,
            channel,
        }
    }

    /// Keeps `r` on the tape. A third of the tape is replaced seldom, so some recordings
    /// are tens of seconds old when replayed (across restarts of either side).
    fn record(&mut self, r: Recorded) {
        if self.tape.len() < TAPE {
            self.tape.push(r);
        } else {
            let old = TAPE / 3;
            let i = if self.rng.random_bool(0.05) { self.rng.random_range(0..old) } else { self.rng.random_range(old..TAPE) };
            self.tape[i] = r;
        }
    }
}

/// A fingerprint of a server's protocol state: its durable state, phase, role, leader and
/// installed view (counters excluded: refusals are counted).
fn fingerprint(s: &Server) -> u64 {
    let mut h = super::trace::TraceHash::new();
    h.bytes(&postcard::to_allocvec(s.durable()).unwrap_or_default());
    h.bytes(format!("{:?}{}{:?}{:?}", s.phase(), s.is_leader(), s.leader(), s.committed_view()).as_bytes());
    h.0
}

fn server_channel(bytes: &[u8]) -> bool {
    seal::frame::is_sealed(bytes) || wire::is_peer(bytes)
}

impl World {
    /// Starts the outsider's actions, if it is on.
    pub(super) fn outsider_start(&mut self) {
        if self.outsider.is_some() {
            self.count_fault("outsider");
            self.queue.push(300_000, Item::Outsider(Step::Act));
        }
    }

    /// A plain datagram server `i` is about to seal and send (what the outsider "knows").
    pub(super) fn outsider_overhear_plain(&mut self, bytes: &[u8], kind: &'static str) {
        let Some(o) = self.outsider.as_mut() else { return };
        if wire::is_peer(bytes) && (!o.plain.contains_key(kind) || o.rng.random_bool(0.1)) {
            o.plain.insert(kind, bytes.to_vec());
        }
    }

    /// A datagram as it leaves a server (sealed or not): recorded now and then.
    pub(super) fn outsider_overhear(&mut self, bytes: &[u8]) {
        let Some(o) = self.outsider.as_mut() else { return };
        if seal::frame::is_sealed(bytes) && bytes.len() > 5 {
            o.key_id = Some([bytes[1], bytes[2], bytes[3], bytes[4]]);
            if o.rng.random_bool(0.01) {
                o.record(Recorded { bytes: bytes.to_vec(), life: None, to: None, accepted_by: None });
            }
        }
    }

    /// A sealed datagram server `to` accepted: recorded now and then, to be replayed to it.
    pub(super) fn outsider_overhear_accepted(&mut self, to: usize, bytes: &[u8]) {
        let id = self.nodes[to].id;
        let life = self.nodes[to].server.as_ref().map(|s| s.node());
        let Some(o) = self.outsider.as_mut() else { return };
        if o.rng.random_bool(0.02) {
            o.record(Recorded { bytes: bytes.to_vec(), life, to: Some(to), accepted_by: Some(id) });
        }
    }

    /// Server `i` sends `bytes` to `addr`: what the outsider's checkers see of it (O2, O3).
    pub(super) fn outsider_sees_send(&mut self, i: usize, addr: SocketAddr, bytes: &[u8]) {
        let n = self.nodes.len();
        let is_server = self.by_addr.get(&addr).is_some_and(|&e| e < n);
        let Some(o) = self.outsider.as_mut() else { return };
        let Some((kind, size)) = o.answering else { return };
        let what = match wire::decode(bytes) {
            Ok(Packet::ToClient(m)) => m.kind(),
            Ok(Packet::Peer(env)) => env.body.kind(),
            _ => "sealed",
        };
        if addr == outsider_addr() {
            // An answer on its own channel is sealed for it: it opens it to see what it is.
            let opened = o.channel.as_mut().filter(|_| bytes.first() == Some(&SERVER_SEALED)).and_then(|ch| ch.open(bytes).ok());
            let plain = opened.as_deref().unwrap_or(bytes);
            let direct = matches!(wire::decode(plain), Ok(Packet::ToClient(m)) if ringchat_core::cluster::unproven::is_direct_answer(&m));
            if direct && bytes.len() > size {
                o.violations
                    .push(Violation::new("O2", format!("n{i} answered a {size}-byte unproven datagram with {} bytes", bytes.len())));
            }
        } else if !is_server {
            o.violations
                .push(Violation::new("O3", format!("the outsider's {kind} made n{i} send {what} ({} bytes) to {addr}", bytes.len())));
        }
    }

    /// The outsider's event.
    pub(super) fn outsider_step(&mut self, step: Step) {
        match step {
            Step::Act => self.outsider_act(),
            Step::Deliver { to, bytes, what, kind } => self.outsider_deliver(to, bytes, what, kind),
        }
    }

    fn outsider_send(&mut self, to: usize, bytes: Vec<u8>, what: What, kind: &'static str) {
        let Some(o) = self.outsider.as_mut() else { return };
        let at = self.now + o.rng.random_range(100..3_000);
        self.count_fault(kind);
        self.queue.push(at, Item::Outsider(Step::Deliver { to, bytes, what, kind }));
    }

    fn outsider_act(&mut self) {
        let n = self.nodes.len();
        let Some(o) = self.outsider.as_mut() else { return };
        if self.now >= o.stop_at {
            return;
        }
        let next = self.now + o.rng.random_range(20_000..250_000);
        self.queue.push(next, Item::Outsider(Step::Act));
        let to = o.rng.random_range(0..n);
        let choice = o.rng.random_range(0..100);
        let made = match choice {
            0..=14 => self.outsider_replay(false),
            15..=24 => self.outsider_replay(true),
            25..=44 => self.outsider_mutate(),
            45..=69 => self.outsider_forge(),
            70..=74 => self.outsider_garbage(),
            _ => self.outsider_client(),
        };
        if let Some((bytes, what, kind)) = made {
            self.outsider_send(to, bytes, what, kind);
        }
    }

    /// A recorded datagram, verbatim: to the server that accepted it (`same`: queued here), or
    /// returned for the server the caller drew.
    fn outsider_replay(&mut self, same: bool) -> Option<(Vec<u8>, What, &'static str)> {
        let o = self.outsider.as_mut()?;
        if o.tape.is_empty() {
            return None;
        }
        let r = &o.tape[o.rng.random_range(0..o.tape.len())];
        let bytes = r.bytes.clone();
        let what = What::Replay { accepted_by: r.accepted_by };
        let life = r.life;
        match (same, r.to) {
            (true, Some(at)) => {
                let now_life = self.nodes[at].server.as_ref().map(|s| s.node());
                let kind = if now_life.is_some() && now_life != life { "outsider_replay_after_restart" } else { "outsider_replay_same" };
                let at_ = self.now + o.rng.random_range(100..3_000);
                self.count_fault(kind);
                self.queue.push(at_, Item::Outsider(Step::Deliver { to: at, bytes, what, kind }));
                None
            }
            _ => Some((bytes, what, "outsider_replay_other")),
        }
    }

    /// A recorded sealed datagram, changed.
    fn outsider_mutate(&mut self) -> Option<(Vec<u8>, What, &'static str)> {
        let o = self.outsider.as_mut()?;
        if o.tape.is_empty() {
            return None;
        }
        let original = o.tape[o.rng.random_range(0..o.tape.len())].bytes.clone();
        let mut b = original.clone();
        match o.rng.random_range(0..7) {
            0 => {
                for _ in 0..o.rng.random_range(1..=8) {
                    let i = o.rng.random_range(0..b.len());
                    b[i] ^= 1 << o.rng.random_range(0..8);
                }
            }
            1 => b.truncate(o.rng.random_range(0..b.len())),
            2 => b.extend((0..o.rng.random_range(1..64)).map(|_| o.rng.random::<u8>())),
            3 if b.len() >= 37 => b[29..37].copy_from_slice(&u64::MAX.to_be_bytes()), // counter
            4 if b.len() >= 29 => b[21..29].copy_from_slice(&MAX_COUNTER.to_be_bytes()), // incarnation
            5 if b.len() >= 61 => {
                // Another receiver: any, or a made-up life.
                let r: [u8; 24] = if o.rng.random_bool(0.5) { [0; 24] } else { std::array::from_fn(|_| o.rng.random::<u8>() | 1) };
                b[37..61].copy_from_slice(&r);
            }
            _ if b.len() >= 37 => {
                // The next counter of the same sender: a forgery a replay window cannot refuse.
                let c = u64::from_be_bytes(b[29..37].try_into().ok()?);
                b[29..37].copy_from_slice(&c.wrapping_add(1 + o.rng.random_range(0..4)).to_be_bytes());
            }
            _ => b.push(0),
        }
        (b != original).then_some((b, What::Made, "outsider_mutated"))
    }

    /// A well-formed server message, overheard or made up, with fields at extremes: plain, or
    /// sealed under a key that is not the cluster's.
    fn outsider_forge(&mut self) -> Option<(Vec<u8>, What, &'static str)> {
        let members: Vec<Member> =
            self.nodes.iter().filter_map(|n| n.server.as_ref().map(|s| Member { node: s.node(), addr: n.addr })).collect();
        let o = self.outsider.as_mut()?;
        let heard: Vec<&Vec<u8>> = o.plain.values().collect();
        let base = (!heard.is_empty()).then(|| heard[o.rng.random_range(0..heard.len())].clone());
        let mut env = match base.as_deref().map(wire::decode) {
            Some(Ok(Packet::Peer(env))) => env,
            _ => Envelope { cluster: ClusterId::NONE, from: o.me, epoch: 1, body: Body::Leave },
        };
        let rng = &mut o.rng;
        let extreme = |rng: &mut ChaCha8Rng, usual: u64| match rng.random_range(0..6) {
            0 => 0,
            1 => usual.saturating_add(1),
            2 => MAX_COUNTER,
            3 => u64::MAX,
            _ => usual,
        };
        if rng.random_bool(0.5) {
            env.body = made_up_body(rng, &env, &members, o.me);
        }
        env.epoch = extreme(rng, env.epoch);
        env.from = match rng.random_range(0..4) {
            0 => o.me,
            1 if !members.is_empty() => members[rng.random_range(0..members.len())].node,
            2 => NodeId { incarnation: extreme(rng, env.from.incarnation), ..env.from },
            _ => env.from,
        };
        let plain = wire::encode(&Packet::Peer(env.clone())).or_else(|| {
            let mut b = vec![wire::VERSION, 0];
            b.extend_from_slice(&postcard::to_allocvec(&env).ok()?);
            Some(b)
        })?;
        match rng.random_range(0..3) {
            0 => Some((plain, What::Made, "outsider_forged_plain")),
            k => {
                let receiver = (!members.is_empty() && rng.random_bool(0.5)).then(|| members[rng.random_range(0..members.len())].node);
                let mut sealed = o.wrong.seal(plain, receiver);
                if k == 2 {
                    if let Some(id) = o.key_id {
                        sealed[1..5].copy_from_slice(&id); // the cluster's key id over a wrong key's tag
                    }
                }
                Some((sealed, What::Made, "outsider_forged_wrong_key"))
            }
        }
    }

    /// Bytes sealed under a wrong key, or made to look sealed.
    fn outsider_garbage(&mut self) -> Option<(Vec<u8>, What, &'static str)> {
        let o = self.outsider.as_mut()?;
        let len = o.rng.random_range(0..1_400);
        let mut b: Vec<u8> = (0..len).map(|_| o.rng.random()).collect();
        if o.rng.random_bool(0.5) {
            b.splice(0..0, [wire::VERSION, 0]);
            b.truncate(ringchat_core::limits::MAX_DATAGRAM);
            b = o.wrong.seal(b, None);
        } else if !b.is_empty() {
            b[0] = SEAL_VERSION;
        }
        Some((b, What::Made, "outsider_garbage"))
    }

    /// Client traffic, on its own channel (a third of it plain, which a sealed cluster
    /// refuses): requests anyone may send, sessions it does not own, and its own logins
    /// (some with signatures that do not verify).
    fn outsider_client(&mut self) -> Option<(Vec<u8>, What, &'static str)> {
        let o = self.outsider.as_mut()?;
        let rng = &mut o.rng;
        let client = CLIENT_IDS[rng.random_range(0..CLIENT_IDS.len())];
        let msg = match rng.random_range(0..10) {
            0 => ClientMsg::Status,
            1 => ClientMsg::Find { client },
            2 => ClientMsg::Who { client, list: ringchat_core::wire::WhoList::Users, after: String::new() },
            3 => ClientMsg::Ping { client, attempt: rng.random(), next: rng.random_range(0..MAX_COUNTER) },
            4 => ClientMsg::Ack { client, ids: vec![MsgId { client, seq: 1 }], attempt: 1, next: 1 },
            5 => ClientMsg::Logout { client, acks: Vec::new() },
            6 => ClientMsg::Send {
                // A client that never logged in: client traffic is not authenticated yet, so
                // a logged-in outsider could chat like any user; this one must be refused.
                id: MsgId { client: client ^ 0xFF00, seq: rng.random_range(1..1_000) },
                op: Op::Chat { to: Target::Room("r0".into()), text: "let me in".into() },
                ctx: Default::default(),
                retry: rng.random_bool(0.5),
                left_ms: rng.random(),
            },
            7 => {
                let name = format!("zq{}", client & 3);
                let user = UserSecret::from_seed([(client & 3) as u8 ^ 0x5A; 32]);
                let binding = o.channel.as_ref().map_or([0; 32], |c| c.id().0);
                let mut sig = user.sign_login(&binding, client, &name);
                if rng.random_bool(0.3) {
                    sig.0[0] ^= 1; // a signature that does not verify
                }
                ClientMsg::Login { client, name, key: user.public(), sig, ctx: Default::default(), attempt: 1 }
            }
            8 => {
                // A fragment of nothing: made up, well-formed or not (its message never
                // completes, or completes as garbage).
                let count = rng.random_range(0..10u8);
                let index = rng.random_range(0..10u8);
                let len = if rng.random_bool(0.5) { ringchat_core::limits::FRAGMENT_BYTES } else { rng.random_range(0..1_100) };
                let bytes = (0..len).map(|_| rng.random::<u8>()).collect();
                ClientMsg::Fragment(wire::Fragment { nonce: rng.random_range(0..4), index, count, bytes })
            }
            _ => {
                // An unpadded request: the answer must not be larger. Plain, a status request;
                // on its channel, a find (a sealed cluster answers status to operators only).
                let Some(ch) = o.channel.as_mut() else {
                    let b = wire::encode(&Packet::FromClient(ClientMsg::Status))?;
                    return Some((b[..3].to_vec(), What::Made, "outsider_client"));
                };
                let mut b = vec![wire::VERSION];
                b.extend(postcard::to_allocvec(&Packet::FromClient(ClientMsg::Find { client })).ok()?);
                return Some((ch.seal(&b), What::Made, "outsider_client"));
            }
        };
        let bytes = wire::encode(&Packet::FromClient(msg))?;
        match o.channel.as_mut() {
            Some(ch) if o.rng.random_bool(0.67) => Some((ch.seal(&bytes), What::Made, "outsider_client")),
            _ => Some((bytes, What::Made, "outsider_client")),
        }
    }

    fn outsider_deliver(&mut self, to: usize, bytes: Vec<u8>, what: What, kind: &'static str) {
        self.hash.u64(0x0075_1DE5 ^ to as u64);
        self.hash.bytes(&bytes);
        let node = &self.nodes[to];
        if node.server.is_none() || node.paused {
            return self.count_fault("outsider_lost");
        }
        let id = node.id;
        self.trace_line(Some(to), None, kind, || format!("recv {kind} from the outsider ({}B)", bytes.len()));
        let must_refuse = server_channel(&bytes)
            && match what {
                What::Replay { accepted_by } => accepted_by == Some(id),
                What::Made => true,
            };
        let before = must_refuse.then(|| self.nodes[to].server.as_ref().map(fingerprint)).flatten();
        // A genuine datagram relayed to a server that had not accepted it may make that server
        // send anything (it is the network's own delay); everything else is checked (O2, O3).
        let relay = server_channel(&bytes) && matches!(what, What::Replay { .. }) && !must_refuse;
        if let Some(o) = self.outsider.as_mut() {
            o.answering = (!relay).then_some((kind, bytes.len()));
        }
        let fed = self.feed(to, super::outsider::outsider_addr(), &bytes);
        self.drain(to);
        if let Some(o) = self.outsider.as_mut() {
            o.answering = None;
        }
        match fed {
            Some(Fed::Refused(_)) => self.count_fault("outsider_refused"),
            Some(Fed::Opened(_)) => self.count_fault("outsider_relayed"),
            _ => {}
        }
        if !must_refuse {
            return;
        }
        let after = self.nodes[to].server.as_ref().map(fingerprint);
        let changed = before.is_some() && after.is_some() && before != after;
        let refused = matches!(fed, Some(Fed::Refused(_)));
        if !refused || changed {
            let at = self.now as f64 / 1000.0;
            let detail = format!(
                "{kind} ({} bytes) at n{to} at {at:.3} ms: {}{}",
                bytes.len(),
                if refused { "refused" } else { "let through" },
                if changed { ", and it changed the server's protocol state" } else { "" }
            );
            if let Some(o) = self.outsider.as_mut() {
                if o.violations.len() < 16 {
                    o.violations.push(Violation::new("O1", detail));
                }
            }
        }
    }

    /// The outsider checkers' violations; without an outsider, **U1**: no honest request was
    /// rate-limited or went unanswered for its size (the hardening starves no honest client).
    pub(super) fn outsider_violations(&mut self) -> Vec<Violation> {
        if let Some(o) = self.outsider.as_mut() {
            return std::mem::take(&mut o.violations);
        }
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(c) = n.server.as_ref().map(|s| s.counters()) else { continue };
            if c.rate_limited > 0 || c.reply_too_large > 0 {
                let detail = format!(
                    "n{i} rate-limited {} and left {} answers unsent for their size, with no outsider",
                    c.rate_limited, c.reply_too_large
                );
                out.push(Violation::new("U1", detail));
            }
        }
        out
    }
}

/// A server message of a random kind, made up from what the outsider heard (`env`) and the
/// servers it can see, with fields at extremes.
fn made_up_body(rng: &mut ChaCha8Rng, env: &Envelope, members: &[Member], me: NodeId) -> Body {
    let my = Member { node: me, addr: outsider_addr() };
    let pick = |rng: &mut ChaCha8Rng| if members.is_empty() { my } else { members[rng.random_range(0..members.len())] };
    let big = |rng: &mut ChaCha8Rng| [0, 1, MAX_COUNTER, u64::MAX][rng.random_range(0..4)];
    let stamp = ViewStamp { epoch: env.epoch, id: big(rng) };
    let mut view_members: Vec<Member> = members.to_vec();
    view_members.push(my);
    let view = View::new(stamp, view_members);
    let key = CandidateKey { view: stamp, node: pick(rng).node };
    let victim: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 7, 7)), 9999);
    match rng.random_range(0..26) {
        0 => Body::Hello { addr: victim, founding: rng.random_bool(0.5) },
        1 => Body::Welcome { leader: Some(my), view_size: u32::MAX },
        2 => Body::Beacon { leader: my, view_size: u32::MAX },
        3 => Body::JoinRequest { addr: victim },
        4 => Body::Heartbeat { leader: Some(env.from), committed: stamp, latest: stamp, digest: Default::default() },
        5 => Body::NotMember { committed: stamp },
        6 => Body::Token { key },
        7 => Body::RingAck { key, elected: rng.random_bool(0.5) },
        8 => Body::Elected { key },
        9 => Body::Accept { leader: pick(rng).node },
        10 => Body::LeaderAlive { leader: pick(rng).node },
        11 => Body::ViewPropose { view },
        12 => Body::ViewAck { stamp },
        13 => Body::ViewCommit { view },
        14 => Body::ViewRequest,
        15 => Body::Leave,
        16 => Body::ViewInfo { view },
        17 => Body::ChatGone { origin: pick(rng).node, below: big(rng) },
        18 => Body::SnapshotGet { nonce: big(rng), from: 0 },
        19 => Body::SnapshotChunk { nonce: big(rng), index: 0, total: 1, bytes: vec![0xFF; 64] },
        20 => Body::ChatNeed { origin: pick(rng).node, from: 1, to: big(rng) },
        21 => Body::NameClaim { name: "u0".into(), key: ringchat_core::user::UserKey([rng.random(); 32]) },
        22 => Body::ChatHolds { delivered: [(pick(rng).node, big(rng))].into_iter().collect() },
        23 => Body::ChatPresence { part: 0, parts: 1, users: vec!["u0".into(), "zq0".into()] },
        24 => {
            let item = Arc::new(ringchat_core::wire::Item::Chat {
                id: MsgId { client: 1, seq: big(rng) },
                from: "u0".into(),
                room: None,
                to: vec!["u1".into()],
                cut: Default::default(),
                text: "alice to bob".into(),
            });
            Body::Chat { msg: ringchat_core::wire::CausalMsg { origin: pick(rng).node, seq: big(rng), deps: Default::default(), item } }
        }
        _ => env.body.clone(),
    }
}
