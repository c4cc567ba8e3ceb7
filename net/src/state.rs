//! `--state FILE`: what a server keeps across a restart ([`Durable`]): the
//! election part (identity, epochs, votes, view) and the chat part (causal
//! broadcast store and replicated chat state).
//!
//! Format: the 8-byte magic `RINGCHAT`, a little-endian `u32` format version, a
//! little-endian `u64` naming the first chat log segment written after this state (see
//! [`crate::chatlog`]), then postcard bytes of the whole [`Durable`]. The file is written to a
//! temporary file, fsynced, then renamed over the old one. The driver writes it
//! before any datagram of an input that changed the election part (so a vote is
//! on disk before the `Accept` that announces it leaves); chat deliveries go to the chat
//! log, fsynced before any datagram of their input leaves, and the whole state is written
//! again at most every second, off the event loop, so the log stays short (measured:
//! writing the whole chat state every 5 ms cut loopback throughput tenfold; every 50 ms
//! costs ~5%). Formats 4 and 5 (before names were bound to user keys and room messages
//! carried their cut) are refused with a one-line error that says what to do.

use ringchat_core::Durable;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RINGCHAT";
const FORMAT: u32 = 9;

/// A state file as read: the state, and the first chat log segment to replay over it.
#[derive(Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The whole state as written.
    pub durable: Durable,
    /// The first chat log segment written after it.
    pub log_from: u64,
}

/// The previous good copy kept beside a state file (`.NAME.prev`).
pub fn previous_copy(path: &Path) -> PathBuf {
    sibling(path, "prev")
}

/// A file kept beside the state file: `.NAME.SUFFIX`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Reads the state file; `Ok(None)` if it does not exist yet.
///
/// If the file is unreadable (corrupt or truncated), or missing while its previous copy exists
/// (a crash between the two renames of [`write()`]), the previous good copy is loaded instead
/// and a warning says so. That copy is one write behind; a write that never completed was
/// never acted on (the driver sends nothing that depends on a write before it returns), so
/// nothing it promised is forgotten. Only when neither copy can be read is it an error,
/// which names both files and what to do.
pub fn load(path: &Path) -> Result<Option<Loaded>, String> {
    let prev = previous_copy(path);
    let current = read(path);
    let reason = match current {
        Ok(Some(d)) => return Ok(Some(d)),
        Ok(None) if !prev.exists() => return Ok(None),
        Ok(None) => format!("state file {} is missing", path.display()),
        Err(e) => e,
    };
    match read(&prev) {
        Ok(Some(d)) => {
            tracing::warn!("{reason}; starting from its previous copy {}", prev.display());
            Ok(Some(d))
        }
        Ok(None) => Err(format!(
            "{reason}, and there is no previous copy {}: move it away to start this server as a new one (it loses its identity and votes)",
            prev.display()
        )),
        Err(e) => Err(format!(
            "{reason}, and so is its previous copy ({e}): move both away to start this server as a new one (it loses its identity and votes)"
        )),
    }
}

/// Reads one state file; `Ok(None)` if it does not exist.
fn read(path: &Path) -> Result<Option<Loaded>, String> {
    let bytes = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state file {}: {}", path.display(), crate::io_msg(&e))),
    };
    decode(&bytes).map(Some).map_err(|e| format!("state file {} {e}", path.display()))
}

/// Decodes a state file's bytes (magic, format version, the [`Durable`]); the error says what
/// is wrong, to follow the file's name. Total: any bytes give a state or an error.
pub fn decode(bytes: &[u8]) -> Result<Loaded, String> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("is not a ringchat state file".into());
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let format = u32::from_le_bytes(v);
    let (log_from, body) = match format {
        FORMAT if bytes.len() >= 20 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&bytes[12..20]);
            (u64::from_le_bytes(n), &bytes[20..])
        }
        FORMAT => return Err("is not a ringchat state file".into()),
        4..=8 => {
            return Err(format!(
                "was written by an older ringchat (format {format}: 8 and older: inbox entries lack who acknowledged them; 7 and older: what a merge carried lacks its keys; 6 and older: a copy of each room message per member; 5 and older: names bound to tokens); \
                 move it and its chat log (.NAME.log.*) aside to start this server afresh"
            ))
        }
        _ => return Err(format!("has format {format}, expected {FORMAT}")),
    };
    let durable: Durable = postcard::from_bytes(body).map_err(|e| format!("is not a ringchat state file: {e}"))?;
    check(&durable).map_err(|what| format!("is damaged: {what}"))?;
    Ok(Loaded { durable, log_from })
}

/// What a server writes keeps every counter within the protocol's bound, and its view well
/// formed; a file that does not (damaged on disk, or not written by a server) is refused
/// rather than started from (an incarnation of `u64::MAX` would wrap to the impossible life 0).
fn check(d: &Durable) -> Result<(), String> {
    use ringchat_core::limits::MAX_COUNTER;
    use ringchat_core::wire::bounds::{counter, Bounded};
    if d.incarnation >= MAX_COUNTER {
        return Err(format!("incarnation {} is not below {MAX_COUNTER}", d.incarnation));
    }
    for (cluster, r) in &d.epochs {
        if !counter(r.epoch) || r.vote.is_some_and(|(e, n)| !counter(e) || !n.in_bounds()) {
            return Err(format!("epoch or vote of cluster {cluster:?} out of bounds"));
        }
    }
    if d.view.as_ref().is_some_and(|v| !v.is_well_formed() || !v.in_bounds()) {
        return Err("its view is malformed".into());
    }
    let c = &d.chat.causal;
    let retired = c.retired.iter().all(|(o, v)| o.in_bounds() && counter(*v));
    if !c.delivered.in_bounds() || !retired || !c.digests.values().all(Bounded::in_bounds) || !c.stored().all(Bounded::in_bounds) {
        return Err("a chat counter is out of bounds".into());
    }
    if !d.chat.state.is_consistent() {
        return Err("its chat state is inconsistent (inboxes and their pins disagree, or a counter is at its end)".into());
    }
    Ok(())
}

/// Writes the state file atomically (temporary file, fsync, rename), naming `log_from` as the
/// first chat log segment to replay over it.
pub fn save(path: &Path, log_from: u64, d: &Durable) -> Result<(), String> {
    write(path, log_from, &encode(d)?)
}

/// The state's encoding, for [`write()`].
pub fn encode(d: &Durable) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(d).map_err(|e| format!("cannot encode state: {e}"))
}

/// A whole state file's bytes, as [`save`] writes them with a chat log from segment 0
/// ([`decode`] reads them back).
pub fn file_bytes(d: &Durable) -> Result<Vec<u8>, String> {
    let mut out = Vec::from(&MAGIC[..]);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&encode(d)?);
    Ok(out)
}

/// Writes an encoded state atomically: a temporary file, fsynced; the current file becomes the
/// previous copy; the temporary file is renamed into place; the directory is fsynced so both
/// renames survive a power cut. One writer at a time: every write goes through the same
/// temporary file.
pub fn write(path: &Path, log_from: u64, body: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let tmp = sibling(path, "tmp");
    let fail = |e: std::io::Error| format!("cannot write state file {}: {}", path.display(), crate::io_msg(&e));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(MAGIC).map_err(fail)?;
    f.write_all(&FORMAT.to_le_bytes()).map_err(fail)?;
    f.write_all(&log_from.to_le_bytes()).map_err(fail)?;
    f.write_all(body).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    if path.exists() {
        std::fs::rename(path, previous_copy(path)).map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)?;
    sync_dir(path).map_err(fail)
}

/// Fsyncs the directory holding `path`, so that a rename or a new file in it survives a
/// power cut.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::cluster::EpochRecord;
    use ringchat_core::limits::MAX_COUNTER;
    use ringchat_core::{ClusterId, Member, NodeId, ServerId, View, ViewStamp};

    #[test]
    fn state_roundtrips() {
        let node = NodeId { id: ServerId(0xabc << 100), incarnation: 3 };
        let mut d = Durable {
            id: node.id,
            incarnation: 3,
            cluster: ClusterId(77),
            epochs: Default::default(),
            view: None,
            chat: Default::default(),
        };
        d.epochs.insert(ClusterId(77), EpochRecord { epoch: 9, vote: Some((9, node)) });
        d.epochs.insert(ClusterId::NONE, EpochRecord { epoch: 1, vote: None });
        let addr = "10.0.0.1:7000".parse().expect("addr");
        d.view = Some(View::new(ViewStamp { epoch: 9, id: 4 }, vec![Member { node, addr }]));
        let dir = std::env::temp_dir().join(format!("ringchat-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.state");
        assert_eq!(load(&path), Ok(None));
        save(&path, 3, &d).expect("save");
        assert_eq!(load(&path), Ok(Some(Loaded { durable: d.clone(), log_from: 3 })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn sample(incarnation: u64) -> Durable {
        Durable { id: ServerId(7), incarnation, cluster: ClusterId(77), epochs: Default::default(), view: None, chat: Default::default() }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringchat-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("s.state")
    }

    #[test]
    fn a_state_file_with_counters_beyond_the_bound_is_refused_not_started_from() {
        // Confirmed with the `state_file` fuzz target: incarnation u64::MAX overflowed in
        // `Server::new` (and wrapped to the impossible life 0 in a release build).
        assert!(decode(&file_bytes(&sample(MAX_COUNTER - 1)).expect("encodes")).is_ok());
        let e = decode(&file_bytes(&sample(u64::MAX)).expect("encodes")).expect_err("refused");
        assert!(e.contains("incarnation") && !e.contains('\n'), "{e}");
        let mut epoch = sample(1);
        epoch.epochs.insert(ClusterId(77), EpochRecord { epoch: u64::MAX, vote: None });
        assert!(decode(&file_bytes(&epoch).expect("encodes")).is_err());
        let mut chat = sample(1);
        chat.chat.causal.delivered.insert(NodeId { id: ServerId(9), incarnation: 1 }, u64::MAX);
        assert!(decode(&file_bytes(&chat).expect("encodes")).is_err());
    }

    #[test]
    fn a_torn_state_file_falls_back_to_the_previous_good_copy() {
        let path = temp("torn");
        save(&path, 0, &sample(1)).expect("save");
        save(&path, 0, &sample(2)).expect("save");
        assert_eq!(load(&path), Ok(Some(Loaded { durable: sample(2), log_from: 0 })));
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        assert_eq!(load(&path), Ok(Some(Loaded { durable: sample(1), log_from: 0 })), "the previous copy is loaded");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(
            load(&path),
            Ok(Some(Loaded { durable: sample(1), log_from: 0 })),
            "a crash between the renames leaves the previous copy"
        );
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn when_both_copies_are_unreadable_the_error_names_them_and_what_to_do() {
        let path = temp("both");
        save(&path, 0, &sample(1)).expect("save");
        save(&path, 0, &sample(2)).expect("save");
        std::fs::write(&path, "nonsense").expect("write");
        std::fs::write(previous_copy(&path), "nonsense").expect("write");
        let e = load(&path).expect_err("both unreadable");
        assert!(e.contains("s.state") && e.contains(".s.state.prev") && e.contains("move both away"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        std::fs::remove_file(previous_copy(&path)).expect("remove");
        let e = load(&path).expect_err("no previous copy");
        assert!(e.contains("no previous copy"), "{e}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
