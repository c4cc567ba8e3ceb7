//! What a client trusts and holds: the user's key (made on first use, kept in the user's
//! config directory), the cluster's identity (given with `--cluster-key`, or trusted on first
//! use and remembered), and the sealed channel built from the two.
//!
//! The config directory is `$RINGCHAT_HOME`, else `$XDG_CONFIG_HOME/ringchat`, else
//! `$HOME/.config/ringchat`. In it: `users/NAME.key` (the user's ed25519 seed, 64 hex digits,
//! owner-only) and `known_clusters` (one `ADDRESS IDENTITY` line per server address or
//! discovery group the client has trusted an identity for).

use ringchat_core::seal::channel::ClientChannel;
use ringchat_core::seal::{ChaChaPoly, ClusterKey, KeyRing};
use ringchat_core::user::UserSecret;
use ringchat_core::wire::{self, ClientMsg, Packet, ServerMsg};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest known-clusters file read.
const MAX_KNOWN_FILE: usize = 64 * 1024;

/// The client's config directory (see the module's documentation).
pub fn config_dir() -> Result<PathBuf, String> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("RINGCHAT_HOME")
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("ringchat")))
        .or_else(|| var("HOME").map(|d| d.join(".config").join("ringchat")))
        .ok_or_else(|| "no config directory: set RINGCHAT_HOME or HOME".into())
}

/// 32 random bytes from the operating system.
pub fn random32() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("cannot get random bytes from the system: {e}"))?;
    Ok(b)
}

/// 64 hex digits as 32 bytes.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    ClusterKey::from_hex(text).map(|k| *k.bytes())
}

/// 32 bytes as 64 hex digits.
pub fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The user's key file for `name` in the config directory.
pub fn user_key_path(name: &str) -> Result<PathBuf, String> {
    Ok(config_dir()?.join("users").join(format!("{name}.key")))
}

/// The user's secret key in `path`, made (and written, owner-only) if the file does not exist.
/// Returns whether it was made now.
pub fn user_secret(path: &Path) -> Result<(UserSecret, bool), String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed = parse_hex32(text.trim()).ok_or_else(|| format!("user key file {}: not 64 hex digits", path.display()))?;
            Ok((UserSecret::from_seed(seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = UserSecret::from_seed(random32()?);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {}", dir.display(), crate::io_msg(&e)))?;
            }
            let body = format!("{}\n", hex32(&secret.seed()));
            crate::keys::write_private(path, body.as_bytes()).map_err(|e| format!("cannot write user key file {}: {e}", path.display()))?;
            Ok((secret, true))
        }
        Err(e) => Err(format!("cannot read user key file {}: {}", path.display(), crate::io_msg(&e))),
    }
}

/// The identity remembered for any of `places` (server addresses or a group), if any.
pub fn known_identity(places: &[SocketAddr]) -> Result<Option<[u8; 32]>, String> {
    let path = config_dir()?.join("known_clusters");
    let text = match std::fs::read(&path) {
        Ok(b) if b.len() <= MAX_KNOWN_FILE => String::from_utf8_lossy(&b).into_owned(),
        Ok(_) => return Err(format!("{}: over {MAX_KNOWN_FILE} bytes", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {}", path.display(), crate::io_msg(&e))),
    };
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if let (Some(a), Some(k)) = (w.next(), w.next()) {
            if let (Ok(a), Some(k)) = (a.parse::<SocketAddr>(), parse_hex32(k)) {
                if places.contains(&a) {
                    return Ok(Some(k));
                }
            }
        }
    }
    Ok(None)
}

/// Remembers `identity` for each of `places` (replacing what was there for them).
pub fn remember_identity(places: &[SocketAddr], identity: &[u8; 32]) -> Result<(), String> {
    let dir = config_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {}", dir.display(), crate::io_msg(&e)))?;
    let path = dir.join("known_clusters");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next().and_then(|a| a.parse::<SocketAddr>().ok()).is_none_or(|a| !places.contains(&a)))
        .map(str::to_string)
        .collect();
    lines.extend(places.iter().map(|a| format!("{a} {}", hex32(identity))));
    let body = lines.join("\n") + "\n";
    crate::keys::write_private(&path, body.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Asks `targets` (plain) which identity the cluster's servers hold; the first answer within
/// `wait`, if any. Answers are unauthenticated: a client trusts one on first use only.
pub async fn ask_identity(sock: &tokio::net::UdpSocket, targets: &[SocketAddr], wait: Duration) -> Option<[u8; 32]> {
    let ask = wire::encode(&Packet::FromClient(ClientMsg::Identity))?;
    let end = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    while tokio::time::Instant::now() < end {
        for t in targets {
            let _ = sock.send_to(&ask, t).await;
        }
        let round = (tokio::time::Instant::now() + Duration::from_millis(300)).min(end);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(round, sock.recv_from(&mut buf)).await {
            if let Ok(Packet::ToClient(ServerMsg::Identity { public })) = wire::decode(&buf[..n]) {
                tracing::debug!(%from, "identity answered");
                return Some(public);
            }
        }
    }
    None
}

/// A client's link to the cluster: its sealed channel, or plain on an unsealed cluster.
pub struct Link {
    channel: Option<ClientChannel<ChaChaPoly>>,
    refused: u64,
}

impl Link {
    /// A user's channel to the cluster of `identity`, or plain (`None`: `--insecure-no-key`).
    pub fn new(identity: Option<[u8; 32]>) -> Result<Link, String> {
        let channel = match identity {
            Some(i) => Some(ClientChannel::new(i, random32()?, None)),
            None => None,
        };
        Ok(Link { channel, refused: 0 })
    }

    /// An operator's channel: sealed to the ring's identity, proving its primary key.
    pub fn operator(ring: &KeyRing) -> Result<Link, String> {
        Ok(Link { channel: Some(ClientChannel::new(ring.identity_public(), random32()?, Some(ring.primary()))), refused: 0 })
    }

    /// The channel's id, if sealed (what the client's logins sign).
    pub fn channel(&self) -> Option<ringchat_core::path::ChannelId> {
        self.channel.as_ref().map(ClientChannel::id)
    }

    /// What to send for the plain datagram `bytes`.
    pub fn seal(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self.channel.as_mut() {
            Some(c) => c.seal(bytes),
            None => bytes.to_vec(),
        }
    }

    /// The plain datagram in what arrived, if it came from the cluster (else counted).
    pub fn open(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        match self.channel.as_mut() {
            Some(c) => match c.open(bytes) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.refused += 1;
                    tracing::debug!(error = %e, "datagram refused by the channel");
                    None
                }
            },
            None => Some(bytes.to_vec()),
        }
    }

    /// Datagrams refused since the start (not from the cluster, or replayed).
    pub fn refused(&self) -> u64 {
        self.refused
    }
}
