//! The client channel: client traffic sealed to the cluster's identity key, so other hosts on
//! the LAN can neither read a client's chat nor answer it in the cluster's name.
//!
//! Every server of a cluster holds one static X25519 key pair, the *identity* (a line of the
//! key file); clients know its public half (printed by `ringchat keygen`, or trusted on first
//! use). A client process draws an ephemeral X25519 key `E` for its life, and every datagram
//! it sends carries `E`: any server computes the same shared secret `DH(identity, E)`, so a
//! client may talk to any server, and move, with no handshake round trip (the first message
//! of Noise's `NK` pattern, every time). From the shared secret, HKDF-SHA256 derives:
//! - the client-to-server key, over (identity, `E`), the client's counter being the nonce;
//! - a server-to-client key per server life, over (identity, `E`, server id, incarnation),
//!   the server life's own datagram counter being the nonce (unique per key: a server life's
//!   counter only grows).
//!
//! Only a holder of the identity's secret can open what a client sends or seal what a client
//! opens: a client accepts answers (`Assign`, `LoginOk`, shows) from the cluster only. The
//! channel does not authenticate the client (anyone may open one); users prove their names by
//! signing the channel at login (see [`crate::user`]). An *operator* channel also mixes a
//! cluster key of the ring into the shared secret, so it opens only for holders of that key
//! (`ringchat status --key-file`).
//!
//! ```text
//! client to server (CLIENT_SEALED)        server to client (SERVER_SEALED)
//! offset size field                       offset size field
//!      0    1 0xC6                             0    1 0xC7
//!      1    4 identity id                      1   16 sender's server id
//!      5   32 the client's ephemeral E        17    8 sender's incarnation
//!     37    8 counter (nonce)                 25    8 counter (nonce)
//!     45    4 operator key id, 0: a user      33    n ciphertext, then a 16-byte tag
//!     49    n ciphertext, then a 16-byte tag
//! ```
//! The whole header is the associated data. Parsing is total.

use super::cipher::Cipher;
use super::frame::{KeyId, TAG};
use super::keyring::ClusterKey;
use super::replay::ReplayWindow;
use super::SealError;
use crate::id::{NodeId, ServerId};
use crate::limits::{MAX_COUNTER, MAX_DATAGRAM};
pub use crate::path::{ChannelId, ClientPath};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use x25519_dalek::{PublicKey, StaticSecret};

/// First byte of a sealed client-to-server datagram.
pub const CLIENT_SEALED: u8 = 0xC6;
/// First byte of a sealed server-to-client datagram.
pub const SERVER_SEALED: u8 = 0xC7;
/// Bytes of the client-to-server header.
pub const C2S_HEADER: usize = 49;
/// Bytes of the server-to-client header.
pub const S2C_HEADER: usize = 33;
/// Largest sealed client datagram.
pub const MAX_CLIENT_SEALED: usize = MAX_DATAGRAM + C2S_HEADER + TAG;
/// Salt of the channel's key derivation.
const SALT: &[u8] = b"ringchat channel v1";
/// Server lives whose keys and windows a client keeps.
const MAX_SERVER_LIVES: usize = 64;

/// The id of an identity public key: the first four bytes of SHA-256("ringchat identity id" ‖ key).
pub fn identity_id(public: &[u8; 32]) -> KeyId {
    let d = Sha256::new().chain_update(b"ringchat identity id").chain_update(public).finalize();
    KeyId(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// The public half of an X25519 secret.
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// The shared secret's HKDF (extracted once per channel; the operator key mixed in if any).
fn extract(secret: &[u8; 32], peer: &[u8; 32], operator: Option<&ClusterKey>) -> Hkdf<Sha256> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*peer)).to_bytes();
    let mut ikm = shared.to_vec();
    if let Some(k) = operator {
        ikm.extend_from_slice(k.bytes());
    }
    Hkdf::<Sha256>::new(Some(SALT), &ikm)
}

fn expand<C: Cipher>(hk: &Hkdf<Sha256>, info: &[&[u8]]) -> C::Key {
    let info: Vec<u8> = info.concat();
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
    let _ = hk.expand(&info, &mut okm);
    C::key_from(okm)
}

fn c2s_key<C: Cipher>(hk: &Hkdf<Sha256>, identity: &[u8; 32], e: &ChannelId) -> C::Key {
    expand::<C>(hk, &[b"c2s", identity, &e.0])
}

fn s2c_key<C: Cipher>(hk: &Hkdf<Sha256>, identity: &[u8; 32], e: &ChannelId, sender: NodeId) -> C::Key {
    expand::<C>(hk, &[b"s2c", identity, &e.0, &sender.id.0.to_be_bytes(), &sender.incarnation.to_be_bytes()])
}

/// The clear header of a client-to-server datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct C2s {
    identity: KeyId,
    channel: ChannelId,
    counter: u64,
    operator: Option<KeyId>,
}

impl C2s {
    fn encode(&self) -> [u8; C2S_HEADER] {
        let mut h = [0u8; C2S_HEADER];
        h[0] = CLIENT_SEALED;
        h[1..5].copy_from_slice(&self.identity.0.to_be_bytes());
        h[5..37].copy_from_slice(&self.channel.0);
        h[37..45].copy_from_slice(&self.counter.to_be_bytes());
        h[45..49].copy_from_slice(&self.operator.map_or(0, |k| k.0).to_be_bytes());
        h
    }

    fn parse(bytes: &[u8]) -> Result<(C2s, &[u8], &[u8], &[u8; TAG]), SealError> {
        if bytes.len() < C2S_HEADER + TAG + 1 || bytes.len() > MAX_CLIENT_SEALED || bytes[0] != CLIENT_SEALED {
            return Err(SealError::Malformed);
        }
        let (head, rest) = bytes.split_at(C2S_HEADER);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let tag: &[u8; TAG] = tag.try_into().map_err(|_| SealError::Malformed)?;
        let u32_at = |i: usize| head.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0);
        let counter = head.get(37..45).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes).unwrap_or(u64::MAX);
        let channel = ChannelId(head.get(5..37).and_then(|s| s.try_into().ok()).ok_or(SealError::Malformed)?);
        if counter > MAX_COUNTER {
            return Err(SealError::Malformed);
        }
        let operator = match u32_at(45) {
            0 => None,
            k => Some(KeyId(k)),
        };
        Ok((C2s { identity: KeyId(u32_at(1)), channel, counter, operator }, head, body, tag))
    }
}

/// The clear header of a server-to-client datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct S2c {
    sender: NodeId,
    counter: u64,
}

impl S2c {
    fn encode(&self) -> [u8; S2C_HEADER] {
        let mut h = [0u8; S2C_HEADER];
        h[0] = SERVER_SEALED;
        h[1..17].copy_from_slice(&self.sender.id.0.to_be_bytes());
        h[17..25].copy_from_slice(&self.sender.incarnation.to_be_bytes());
        h[25..33].copy_from_slice(&self.counter.to_be_bytes());
        h
    }

    fn parse(bytes: &[u8]) -> Result<(S2c, &[u8], &[u8], &[u8; TAG]), SealError> {
        if bytes.len() < S2C_HEADER + TAG + 1 || bytes.len() > MAX_DATAGRAM + S2C_HEADER + TAG || bytes[0] != SERVER_SEALED {
            return Err(SealError::Malformed);
        }
        let (head, rest) = bytes.split_at(S2C_HEADER);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let tag: &[u8; TAG] = tag.try_into().map_err(|_| SealError::Malformed)?;
        let u64_at = |i: usize| head.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        let id = head.get(1..17).and_then(|s| s.try_into().ok()).map(u128::from_be_bytes).unwrap_or(0);
        let sender = NodeId { id: ServerId(id), incarnation: u64_at(17) };
        if id == 0 || !(1..=MAX_COUNTER).contains(&sender.incarnation) {
            return Err(SealError::Malformed);
        }
        Ok((S2c { sender, counter: u64_at(25) }, head, body, tag))
    }
}

fn frame<C: Cipher>(head: &[u8], key: &C::Key, counter: u64, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + plain.len() + TAG);
    out.extend_from_slice(head);
    out.extend_from_slice(plain);
    let (aad, body) = out.split_at_mut(head.len());
    let tag = C::seal(key, counter, aad, body);
    out.extend_from_slice(&tag);
    out
}

// ----- the server's side -----------------------------------------------------------------

/// Channels whose keys a server keeps (the least recently used is dropped first; a dropped
/// channel costs one key agreement when it is heard again).
pub const MAX_CHANNELS: usize = 4096;

struct ServerChan<C: Cipher> {
    hk: Hkdf<Sha256>,
    c2s: C::Key,
    s2c: Option<(NodeId, C::Key)>,
    window: ReplayWindow,
    operator: bool,
    used: u64,
}

/// A server's client channels: opens what clients seal to the identity, seals answers to them.
///
/// Guarantees: [`ServerChannels::open`] returns a client datagram only if it was sealed for
/// this identity by the holder of the channel's ephemeral secret (and, for an operator
/// channel, of a key of the ring), with a counter not accepted before on that channel while
/// the channel is remembered; what it seals opens only for that channel's holder.
pub struct ServerChannels<C: Cipher> {
    secret: [u8; 32],
    public: [u8; 32],
    id: KeyId,
    chans: BTreeMap<ChannelId, ServerChan<C>>,
    clock: u64,
}

impl<C: Cipher> ServerChannels<C> {
    /// The channels of identity `secret`.
    pub fn new(secret: [u8; 32]) -> ServerChannels<C> {
        let public = public_of(&secret);
        ServerChannels { secret, public, id: identity_id(&public), chans: BTreeMap::new(), clock: 0 }
    }

    /// The identity's public key (what clients trust).
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Channels remembered.
    pub fn len(&self) -> usize {
        self.chans.len()
    }

    /// Whether no channel is remembered.
    pub fn is_empty(&self) -> bool {
        self.chans.is_empty()
    }

    /// Opens a client datagram sealed to this identity: the plain datagram, its channel, and
    /// whether it is an operator's. `operator_key` finds a ring key by id.
    pub fn open<'k>(
        &mut self,
        bytes: &[u8],
        operator_key: impl Fn(KeyId) -> Option<&'k ClusterKey>,
    ) -> Result<(Vec<u8>, ChannelId, bool), SealError> {
        let (h, aad, body, tag) = C2s::parse(bytes)?;
        if h.identity != self.id {
            return Err(SealError::WrongKey);
        }
        let op = match h.operator {
            Some(k) => Some(operator_key(k).ok_or(SealError::WrongKey)?),
            None => None,
        };
        let cached = self.chans.get(&h.channel).is_some_and(|c| c.operator == op.is_some());
        if cached && self.chans.get(&h.channel).is_some_and(|c| !c.window.fresh(h.counter)) {
            return Err(SealError::Replay);
        }
        let fresh = (!cached).then(|| {
            let hk = extract(&self.secret, &h.channel.0, op);
            let c2s = c2s_key::<C>(&hk, &self.public, &h.channel);
            ServerChan { hk, c2s, s2c: None, window: ReplayWindow::new(), operator: op.is_some(), used: 0 }
        });
        let key = match (&fresh, self.chans.get(&h.channel)) {
            (Some(f), _) => &f.c2s,
            (None, Some(c)) => &c.c2s,
            (None, None) => return Err(SealError::Malformed), // not reached: cached means present
        };
        let mut plain = body.to_vec();
        if !C::open(key, h.counter, aad, &mut plain, tag) {
            return Err(SealError::BadTag);
        }
        if let Some(f) = fresh {
            if self.chans.len() >= MAX_CHANNELS && !self.chans.contains_key(&h.channel) {
                if let Some(old) = self.chans.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| *k) {
                    self.chans.remove(&old);
                }
            }
            self.chans.insert(h.channel, f);
        }
        self.clock += 1;
        let c = self.chans.get_mut(&h.channel).expect("inserted above"); // invariant
        c.window.mark(h.counter);
        c.used = self.clock;
        Ok((plain, h.channel, c.operator))
    }

    /// Seals `plain` for `channel`, as server life `me` with its datagram counter `counter`.
    pub fn seal(&mut self, plain: &[u8], channel: ChannelId, me: NodeId, counter: u64) -> Vec<u8> {
        let public = self.public;
        let secret = self.secret;
        let c = self.chans.entry(channel).or_insert_with(|| {
            // Dropped from the table since it was heard: agree on the key again (as a user's).
            let hk = extract(&secret, &channel.0, None);
            let c2s = c2s_key::<C>(&hk, &public, &channel);
            ServerChan { hk, c2s, s2c: None, window: ReplayWindow::new(), operator: false, used: 0 }
        });
        if c.s2c.as_ref().is_none_or(|(life, _)| *life != me) {
            c.s2c = Some((me, s2c_key::<C>(&c.hk, &public, &channel, me)));
        }
        let key = &c.s2c.as_ref().expect("set above").1; // invariant
        frame::<C>(&S2c { sender: me, counter }.encode(), key, counter, plain)
    }
}

// ----- the client's side -----------------------------------------------------------------

/// A client's channel to a cluster: seals what it sends to the cluster's identity, and opens
/// only what a server of that cluster sealed for this channel.
///
/// Guarantees: every datagram it seals carries a counter never used before on this channel;
/// [`ClientChannel::open`] returns a datagram only if a holder of the identity's secret
/// sealed it for this channel, from a server life no older than one already heard, with a
/// counter not accepted before.
pub struct ClientChannel<C: Cipher> {
    identity: [u8; 32],
    identity_id: KeyId,
    channel: ChannelId,
    operator: Option<KeyId>,
    hk: Hkdf<Sha256>,
    c2s: C::Key,
    counter: u64,
    lives: BTreeMap<ServerId, (u64, ReplayWindow, C::Key)>,
}

impl<C: Cipher> ClientChannel<C> {
    /// A channel to the cluster of identity public key `identity`, from the ephemeral secret
    /// `ephemeral` (fresh for each client process life). An operator's channel names a key
    /// of the cluster's ring.
    pub fn new(identity: [u8; 32], ephemeral: [u8; 32], operator: Option<&ClusterKey>) -> ClientChannel<C> {
        let channel = ChannelId(public_of(&ephemeral));
        let hk = extract(&ephemeral, &identity, operator);
        let c2s = c2s_key::<C>(&hk, &identity, &channel);
        ClientChannel {
            identity,
            identity_id: identity_id(&identity),
            channel,
            operator: operator.map(|k| k.id()),
            hk,
            c2s,
            counter: 0,
            lives: BTreeMap::new(),
        }
    }

    /// This channel's id (what a login signature binds).
    pub fn id(&self) -> ChannelId {
        self.channel
    }

    /// The identity public key it trusts.
    pub fn identity(&self) -> [u8; 32] {
        self.identity
    }

    /// Seals a datagram for any server of the cluster.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let h = C2s { identity: self.identity_id, channel: self.channel, counter: self.counter, operator: self.operator };
        self.counter += 1;
        frame::<C>(&h.encode(), &self.c2s, h.counter, plain)
    }

    /// Opens a datagram from a server of the cluster.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        if bytes.first() != Some(&SERVER_SEALED) {
            return Err(SealError::Unsealed);
        }
        let (h, aad, body, tag) = S2c::parse(bytes)?;
        let known = self.lives.get(&h.sender.id).filter(|(inc, _, _)| *inc >= h.sender.incarnation);
        match known {
            Some((inc, _, _)) if *inc > h.sender.incarnation => return Err(SealError::StaleIncarnation),
            Some((_, w, _)) if !w.fresh(h.counter) => return Err(SealError::Replay),
            _ => {}
        }
        let fresh = known.is_none().then(|| s2c_key::<C>(&self.hk, &self.identity, &self.channel, h.sender));
        let key = match (&fresh, known) {
            (Some(k), _) => k,
            (None, Some((_, _, k))) => k,
            (None, None) => return Err(SealError::Malformed), // not reached: one of the two is set
        };
        let mut plain = body.to_vec();
        if !C::open(key, h.counter, aad, &mut plain, tag) {
            return Err(SealError::BadTag);
        }
        if let Some(key) = fresh {
            if self.lives.len() >= MAX_SERVER_LIVES && !self.lives.contains_key(&h.sender.id) {
                self.lives.pop_first();
            }
            self.lives.insert(h.sender.id, (h.sender.incarnation, ReplayWindow::new(), key));
        }
        if let Some((_, w, _)) = self.lives.get_mut(&h.sender.id) {
            w.mark(h.counter);
        }
        Ok(plain)
    }
}

/// Whether `bytes` is a sealed client-to-server datagram (its first byte only).
pub fn is_client_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&CLIENT_SEALED)
}
