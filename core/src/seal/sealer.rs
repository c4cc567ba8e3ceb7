//! [`Seal`]: one server's sealing state. It seals what the server sends to other servers and
//! opens what they send it, before anything is decoded.

use super::channel::{is_client_sealed, ServerChannels};
use super::cipher::Cipher;
use super::frame::{is_sealed, Header, KeyId, HEADER, TAG};
use super::keyring::KeyRing;
use super::replay::{Freshness, SealMemory, Senders};
use super::SealError;
use crate::id::NodeId;
use crate::path::{ChannelId, ClientPath};
use crate::plant::PlantedBug;
use crate::wire;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;

/// Derived sender keys kept (the servers of a view and a few more).
const MAX_CACHED_KEYS: usize = 64;
/// Addresses whose latest authenticated sender is remembered (to address unicasts to a life).
const MAX_BOOK: usize = 256;

/// What [`Seal::open`] lets through to the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A plain datagram that may stay plain (client traffic; anything, when unsealed).
    Plain(&'a [u8]),
    /// A sealed server datagram that opened: the plain datagram inside, and its sender.
    Opened(Vec<u8>, NodeId),
    /// A client datagram that opened on its channel: the plain datagram, where it came from,
    /// and whether the channel proved a cluster key (an operator's).
    Client(Vec<u8>, ClientPath, bool),
}

/// One server's sealing state: its key ring (or none: the loud insecure mode), its send
/// counter, the replay state of every sender, and a small address book of authenticated
/// senders used to address unicasts to one life.
///
/// Guarantees, with a key ring: every server datagram it seals carries a counter never used
/// before in this life; [`Seal::open`] returns a server datagram only if a key of the ring
/// sealed it, for this life or any receiver, from a sender life no older than one already
/// heard, with a counter not accepted before (also across restarts, given the
/// [`SealMemory`] the driver saved); plain server datagrams are refused.
pub struct Seal<C: Cipher> {
    ring: Option<KeyRing>,
    me: NodeId,
    counter: u64,
    senders: Senders,
    /// New sender lives since the driver last took the memory.
    new_lives: bool,
    book: BTreeMap<SocketAddr, NodeId>,
    keys: Vec<(KeyId, NodeId, C::Key)>,
    sealing: Option<(KeyId, C::Key)>,
    channels: Option<ServerChannels<C>>,
    plant: Option<PlantedBug>,
    _cipher: PhantomData<C>,
}

impl<C: Cipher> Seal<C> {
    /// The seal of server life `me` under `ring`, remembering what `memory` (saved by an
    /// earlier life) says was accepted.
    pub fn new(me: NodeId, ring: KeyRing, memory: Option<&SealMemory>) -> Seal<C> {
        let senders = memory.map(Senders::restore).unwrap_or_default();
        Seal {
            channels: Some(ServerChannels::new(*ring.identity())),
            ring: Some(ring),
            me,
            counter: 0,
            senders,
            new_lives: false,
            book: BTreeMap::new(),
            keys: Vec::new(),
            sealing: None,
            plant: None,
            _cipher: PhantomData,
        }
    }

    /// No sealing at all (`--insecure-no-key`): everything passes as it is, both ways.
    pub fn insecure(me: NodeId) -> Seal<C> {
        Seal {
            ring: None,
            me,
            counter: 0,
            senders: Senders::default(),
            new_lives: false,
            book: BTreeMap::new(),
            keys: Vec::new(),
            sealing: None,
            channels: None,
            plant: None,
            _cipher: PhantomData,
        }
    }

    /// Plants a bug on purpose (checker tests only; see [`PlantedBug::AcceptUnsealedViews`]).
    pub fn with_plant(mut self, plant: Option<PlantedBug>) -> Seal<C> {
        self.plant = plant;
        self
    }

    /// Whether server traffic is sealed.
    pub fn is_sealed(&self) -> bool {
        self.ring.is_some()
    }

    /// The key ring, if sealed.
    pub fn ring(&self) -> Option<&KeyRing> {
        self.ring.as_ref()
    }

    /// Replaces the key ring (a rotation step picked up while running). Keys no longer in the
    /// ring stop opening at once; a new primary seals the next datagram.
    pub fn set_ring(&mut self, ring: KeyRing) {
        self.keys.retain(|(id, _, _)| ring.get(*id).is_some());
        self.sealing = None;
        if self.channels.as_ref().is_none_or(|c| c.public() != ring.identity_public()) {
            self.channels = Some(ServerChannels::new(*ring.identity()));
        }
        self.ring = Some(ring);
    }

    /// The replay state to keep on disk.
    pub fn memory(&self) -> SealMemory {
        self.senders.memory()
    }

    /// Whether a sender life not seen before was accepted since the last call (the driver
    /// then saves [`Seal::memory`] before it relies on it).
    pub fn take_new_lives(&mut self) -> bool {
        std::mem::take(&mut self.new_lives)
    }

    /// The server life this seal speaks for.
    pub fn life(&self) -> NodeId {
        self.me
    }

    /// Follows the server into a new life (a rejoin bumps its incarnation while it runs): the
    /// new life has its own derived key, so its counter starts again from zero.
    pub fn set_life(&mut self, me: NodeId) {
        if me != self.me {
            self.me = me;
            self.counter = 0;
            self.sealing = None;
        }
    }

    /// Datagrams sealed in this life.
    pub fn sealed_count(&self) -> u64 {
        self.counter
    }

    /// The life that last sent an authenticated datagram from `addr`, if remembered.
    pub fn receiver_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.book.get(&addr).copied()
    }

    /// The public key of the identity clients seal to, if sealed.
    pub fn identity(&self) -> Option<[u8; 32]> {
        self.channels.as_ref().map(ServerChannels::public)
    }

    /// Client channels remembered.
    pub fn channel_count(&self) -> usize {
        self.channels.as_ref().map_or(0, ServerChannels::len)
    }

    /// Seals a datagram to a client on `channel`. A datagram to a client with no channel
    /// leaves plain only if it is the answer to an `Identity` request; anything else is
    /// dropped (`None`): a sealed cluster says nothing else in clear. Unsealed, everything
    /// leaves as it is.
    pub fn seal_client(&mut self, plain: Vec<u8>, channel: Option<ChannelId>) -> Option<Vec<u8>> {
        let Some(chans) = self.channels.as_mut() else { return Some(plain) };
        match channel {
            Some(c) => {
                let counter = self.counter;
                self.counter += 1;
                Some(chans.seal(&plain, c, self.me, counter))
            }
            None => wire::is_identity_answer(&plain).then_some(plain),
        }
    }

    /// Seals a datagram the server wants sent to a server, for `receiver` (`None`: any
    /// receiver). Unsealed, it leaves as it is.
    pub fn seal(&mut self, plain: Vec<u8>, receiver: Option<NodeId>) -> Vec<u8> {
        let Some(ring) = &self.ring else { return plain };
        let primary = ring.primary();
        let key = match &self.sealing {
            Some((id, key)) if *id == primary.id() => key,
            _ => &self.sealing.insert((primary.id(), C::derive(primary, self.me))).1,
        };
        let header = Header { key: primary.id(), sender: self.me, counter: self.counter, receiver };
        self.counter += 1;
        let mut out = Vec::with_capacity(HEADER + plain.len() + TAG);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&plain);
        let (aad, body) = out.split_at_mut(HEADER);
        let tag = C::seal(key, header.counter, aad, body);
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a datagram received from `from`. Every refusal is typed and happens before any
    /// decoding; only a verified datagram changes the replay state.
    pub fn open<'a>(&mut self, from: SocketAddr, bytes: &'a [u8]) -> Result<Inbound<'a>, SealError> {
        let Some(ring) = &self.ring else { return Ok(Inbound::Plain(bytes)) };
        if is_client_sealed(bytes) {
            let chans = self.channels.as_mut().ok_or(SealError::WrongKey)?;
            let (plain, channel, operator) = chans.open(bytes, |id| ring.get(id))?;
            if wire::is_peer(&plain) {
                return Err(SealError::Mismatch);
            }
            return Ok(Inbound::Client(plain, ClientPath { addr: from, channel: Some(channel) }, operator));
        }
        if !is_sealed(bytes) {
            if self.plant == Some(PlantedBug::AcceptUnsealedViews) && is_view_message(bytes) {
                return Ok(Inbound::Plain(bytes)); // the planted bug
            }
            // The one plain request a sealed cluster takes: which identity to trust.
            return if wire::is_identity_request(bytes) { Ok(Inbound::Plain(bytes)) } else { Err(SealError::Unsealed) };
        }
        let (h, aad, body, tag) = Header::parse(bytes)?;
        if h.sender.id == self.me.id && h.sender.incarnation < self.me.incarnation {
            return Err(SealError::StaleIncarnation); // our own earlier life, replayed to us
        }
        let Some(cluster_key) = ring.get(h.key) else { return Err(SealError::WrongKey) };
        match self.senders.check(h.sender, h.counter) {
            Freshness::Fresh => {}
            Freshness::Replay => return Err(SealError::Replay),
            Freshness::Stale => return Err(SealError::StaleIncarnation),
        }
        let cached = self.keys.iter().position(|(id, s, _)| *id == h.key && *s == h.sender);
        let key = match cached {
            Some(i) => self.keys[i].2.clone(),
            None => C::derive(cluster_key, h.sender),
        };
        let mut plain = body.to_vec();
        let tag: &[u8; TAG] = tag.try_into().map_err(|_| SealError::Malformed)?;
        if !C::open(&key, h.counter, aad, &mut plain, tag) {
            return Err(SealError::BadTag);
        }
        // A key holder's datagram: it must be a server datagram in the sender's own name (of
        // this life or, for what a server queued before it rejoined as a new life, an earlier one).
        if !wire::peer_sender(&plain).is_some_and(|s| s.id == h.sender.id && s.incarnation <= h.sender.incarnation) {
            return Err(SealError::Mismatch);
        }
        if cached.is_none() {
            if self.keys.len() >= MAX_CACHED_KEYS {
                self.keys.remove(0);
            }
            self.keys.push((h.key, h.sender, key));
        }
        self.new_lives |= self.senders.accept(h.sender, h.counter);
        if self.book.len() >= MAX_BOOK && !self.book.contains_key(&from) {
            self.book.pop_first();
        }
        self.book.insert(from, h.sender);
        // Meant for another life (ours before a restart or rejoin, or another server's at this
        // address): refused, after it taught us the sender's current life, so our next
        // datagrams reach that life and its next ones reach ours.
        if h.receiver.is_some_and(|r| r != self.me) {
            return Err(SealError::WrongReceiver);
        }
        Ok(Inbound::Opened(plain, h.sender))
    }
}

/// Whether `bytes` is a plain view message (propose, commit or info): what the planted bug lets in.
fn is_view_message(bytes: &[u8]) -> bool {
    matches!(
        wire::decode(bytes),
        Ok(wire::Packet::Peer(wire::Envelope {
            body: wire::Body::ViewPropose { .. } | wire::Body::ViewCommit { .. } | wire::Body::ViewInfo { .. },
            ..
        }))
    )
}
