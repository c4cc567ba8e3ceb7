//! Cluster keys and the key ring: the primary key seals, every installed key opens.
//!
//! Rotation without downtime follows memberlist/serf: `install` the new key on every server,
//! `use` it (make it primary) on every server, then `remove` the old one. Between any two
//! steps every server can open what every other seals. The primary cannot be removed.
//!
//! The key ring file is text, one key per line, so an operator can read and diff it:
//!
//! ```text
//! # ringchat key ring: keep it secret. The primary key seals; every key listed opens.
//! primary  5f0c...(64 hex digits)
//! key      9a41...(64 hex digits)
//! identity 27be...(64 hex digits)
//! ```
//!
//! Blank lines and lines starting with `#` are ignored; exactly one `primary` line; at most
//! [`MAX_KEYS`] keys; no key twice; at most one `identity` line. Parsing is total and every
//! refusal names its line.
//!
//! The `identity` is the cluster's X25519 secret that client channels are sealed to (see
//! [`super::channel`]); rotation leaves it alone, so clients keep trusting the cluster. A
//! file written before it existed has none: its identity is then derived from the first key
//! of the file, and every rotation command writes it out, so removing that key later keeps it.

use super::frame::KeyId;
use sha2::{Digest, Sha256};

/// Most keys a ring holds (rotation needs two; a few more leave room for mistakes).
pub const MAX_KEYS: usize = 8;
/// Longest key ring file accepted, in bytes.
pub const MAX_RING_FILE: usize = 4096;

/// One 256-bit cluster key and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    id: KeyId,
    bytes: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    /// Shows the id only: a key must not leak into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.id)
    }
}

impl ClusterKey {
    /// The key of `bytes`; its id is the first four bytes of SHA-256("ringchat key id" ‖ key).
    pub fn new(bytes: [u8; 32]) -> ClusterKey {
        let digest = Sha256::new().chain_update(b"ringchat key id").chain_update(bytes).finalize();
        let id = KeyId(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]));
        ClusterKey { id, bytes }
    }

    /// The key written as 64 hex digits, or `None` if `text` is not that.
    pub fn from_hex(text: &str) -> Option<ClusterKey> {
        let text = text.trim().as_bytes();
        if text.len() != 64 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut bytes = [0u8; 32];
        for (i, pair) in text.chunks(2).enumerate() {
            bytes[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(ClusterKey::new(bytes))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key's id (carried in every sealed datagram's header).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The secret bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// Why a key ring (or a change to it) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The file is larger than [`MAX_RING_FILE`].
    TooLarge,
    /// A line is neither a comment, `primary HEX` nor `key HEX` (1-based line number).
    BadLine(usize),
    /// No `primary` line.
    NoPrimary,
    /// More than one `primary` line (the second's line number).
    TwoPrimaries(usize),
    /// The same key twice, or two keys with one id.
    Duplicate(KeyId),
    /// More than [`MAX_KEYS`] keys.
    TooMany,
    /// No installed key has this id.
    Unknown(KeyId),
    /// The primary key cannot be removed (make another key primary first).
    RemovePrimary(KeyId),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::TooLarge => write!(f, "key ring file over {MAX_RING_FILE} bytes"),
            RingError::BadLine(n) => write!(f, "line {n}: expected `primary HEX` or `key HEX` with 64 hex digits"),
            RingError::NoPrimary => write!(f, "no `primary` key"),
            RingError::TwoPrimaries(n) => write!(f, "line {n}: a second `primary` key"),
            RingError::Duplicate(id) => write!(f, "key {id} is listed twice"),
            RingError::TooMany => write!(f, "more than {MAX_KEYS} keys"),
            RingError::Unknown(id) => write!(f, "no key {id} in the ring"),
            RingError::RemovePrimary(id) => write!(f, "key {id} is the primary: `use` another key first"),
        }
    }
}

impl std::error::Error for RingError {}

/// A key ring: one primary key that seals, and every installed key (the primary among them),
/// each of which opens. Holds between 1 and [`MAX_KEYS`] distinct keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRing {
    primary: KeyId,
    keys: Vec<ClusterKey>,
    identity: [u8; 32],
}

/// The identity a ring without an `identity` line uses: derived from its first key.
fn derived_identity(first: &ClusterKey) -> [u8; 32] {
    let d = Sha256::new().chain_update(b"ringchat identity from key").chain_update(first.bytes()).finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

impl KeyRing {
    /// A ring of one key, primary.
    pub fn new(primary: ClusterKey) -> KeyRing {
        let identity = derived_identity(&primary);
        KeyRing { primary: primary.id(), keys: vec![primary], identity }
    }

    /// The ring with `secret` as its identity (see the module's documentation).
    pub fn with_identity(mut self, secret: [u8; 32]) -> KeyRing {
        self.identity = secret;
        self
    }

    /// The identity's X25519 secret.
    pub fn identity(&self) -> &[u8; 32] {
        &self.identity
    }

    /// The identity's public key: what a client is given to trust the cluster.
    pub fn identity_public(&self) -> [u8; 32] {
        super::channel::public_of(&self.identity)
    }

    /// The key that seals.
    pub fn primary(&self) -> &ClusterKey {
        self.get(self.primary).unwrap_or(&self.keys[0])
    }

    /// The installed key with id `id`.
    pub fn get(&self, id: KeyId) -> Option<&ClusterKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// Every installed key, in the order installed.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// Installs `key` (it opens from now on; sealing is unchanged).
    pub fn install(&mut self, key: ClusterKey) -> Result<(), RingError> {
        if self.get(key.id()).is_some() {
            return Err(RingError::Duplicate(key.id()));
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(RingError::TooMany);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Makes the installed key `id` primary (it seals from now on).
    pub fn use_key(&mut self, id: KeyId) -> Result<(), RingError> {
        self.get(id).ok_or(RingError::Unknown(id))?;
        self.primary = id;
        Ok(())
    }

    /// Removes the installed key `id`; the primary cannot be removed.
    pub fn remove(&mut self, id: KeyId) -> Result<(), RingError> {
        if id == self.primary {
            return Err(RingError::RemovePrimary(id));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id() != id);
        if self.keys.len() == before {
            return Err(RingError::Unknown(id));
        }
        Ok(())
    }

    /// Reads a key ring file (format in the module's documentation).
    pub fn parse(text: &str) -> Result<KeyRing, RingError> {
        if text.len() > MAX_RING_FILE {
            return Err(RingError::TooLarge);
        }
        let mut primary = None;
        let mut identity = None;
        let mut keys: Vec<ClusterKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(kind), Some(hex), None) = (words.next(), words.next(), words.next()) else {
                return Err(RingError::BadLine(i + 1));
            };
            let key = ClusterKey::from_hex(hex).ok_or(RingError::BadLine(i + 1))?;
            if kind == "identity" {
                if identity.replace(key.bytes).is_some() {
                    return Err(RingError::BadLine(i + 1));
                }
                continue;
            }
            match kind {
                "primary" if primary.is_some() => return Err(RingError::TwoPrimaries(i + 1)),
                "primary" => primary = Some(key.id()),
                "key" => {}
                _ => return Err(RingError::BadLine(i + 1)),
            }
            if keys.iter().any(|k| k.id() == key.id()) {
                return Err(RingError::Duplicate(key.id()));
            }
            if keys.len() >= MAX_KEYS {
                return Err(RingError::TooMany);
            }
            keys.push(key);
        }
        let primary = primary.ok_or(RingError::NoPrimary)?;
        let identity = identity.or_else(|| keys.first().map(derived_identity)).unwrap_or_default();
        Ok(KeyRing { primary, keys, identity })
    }

    /// The ring as a key ring file ([`KeyRing::parse`] reads it back).
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# ringchat key ring: keep it secret (mode 600). The primary key seals; every key listed opens.\n\
             # Rotate with `ringchat keys install|use|remove`; see the README.\n",
        );
        for k in &self.keys {
            let kind = if k.id() == self.primary { "primary " } else { "key     " };
            out.push_str(&format!("{kind} {}\n", k.to_hex()));
        }
        out.push_str(&format!("identity {}\n", ClusterKey::new(self.identity).to_hex()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new([b; 32])
    }

    #[test]
    fn a_ring_file_reads_back_as_written() {
        let mut ring = KeyRing::new(key(1));
        ring.install(key(2)).expect("installs");
        ring.use_key(key(2).id()).expect("uses");
        assert_eq!(KeyRing::parse(&ring.render()), Ok(ring.clone()));
        assert_eq!(ring.primary().id(), key(2).id());
    }

    #[test]
    fn the_identity_outlives_the_key_it_was_derived_from() {
        let hex = key(1).to_hex();
        let old = KeyRing::parse(&format!("primary {hex}\n")).expect("parses");
        let mut ring = KeyRing::parse(&old.render()).expect("reads back");
        ring.install(key(2)).expect("installs");
        ring.use_key(key(2).id()).expect("uses");
        ring.remove(key(1).id()).expect("removes");
        assert_eq!(KeyRing::parse(&ring.render()).expect("reads back").identity_public(), old.identity_public());
        let two = format!("primary {hex}\nidentity {hex}\nidentity {hex}\n");
        assert_eq!(KeyRing::parse(&two), Err(RingError::BadLine(3)));
    }

    #[test]
    fn the_primary_cannot_be_removed_and_others_can() {
        let mut ring = KeyRing::new(key(1));
        ring.install(key(2)).expect("installs");
        assert_eq!(ring.remove(key(1).id()), Err(RingError::RemovePrimary(key(1).id())));
        ring.use_key(key(2).id()).expect("uses");
        assert_eq!(ring.remove(key(1).id()), Ok(()));
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.remove(key(1).id()), Err(RingError::Unknown(key(1).id())));
    }

    #[test]
    fn bad_files_are_refused_with_their_line() {
        let hex = key(3).to_hex();
        assert_eq!(KeyRing::parse(""), Err(RingError::NoPrimary));
        assert_eq!(KeyRing::parse(&format!("key {hex}\n")), Err(RingError::NoPrimary));
        assert_eq!(KeyRing::parse(&format!("# c\nprimary {}\n", &hex[1..])), Err(RingError::BadLine(2)));
        assert_eq!(KeyRing::parse(&format!("primary {hex} extra\n")), Err(RingError::BadLine(1)));
        assert_eq!(KeyRing::parse(&format!("primary {hex}\nprimary {}\n", key(4).to_hex())), Err(RingError::TwoPrimaries(2)));
        assert_eq!(KeyRing::parse(&format!("primary {hex}\nkey {hex}\n")), Err(RingError::Duplicate(key(3).id())));
        assert_eq!(KeyRing::parse(&"#".repeat(MAX_RING_FILE + 1)), Err(RingError::TooLarge));
        assert!(ClusterKey::from_hex(&"é".repeat(32)).is_none(), "non-ASCII is refused, not sliced");
    }
}
