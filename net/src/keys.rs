//! Key ring files and the `keygen` / `keys` commands (the format is
//! [`ringchat_core::seal::keyring`]'s), and the seal's memory file kept next to the state file.
//!
//! Every error is one line. Files are written atomically (a temporary file, then a rename) and,
//! on Unix, readable by their owner only.

use ringchat_core::seal::{ClusterKey, KeyId, KeyRing, SealMemory};
use std::path::{Path, PathBuf};

/// A fresh 256-bit key from the operating system's random source.
pub fn generate() -> Result<ClusterKey, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot get random bytes from the system: {e}"))?;
    Ok(ClusterKey::new(bytes))
}

/// Reads and checks a key ring file.
pub fn load(path: &Path) -> Result<KeyRing, String> {
    let text = read(path)?;
    KeyRing::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// The file's text (bounded), for loading and for noticing a change.
pub fn read(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read key file {}: {}", path.display(), crate::io_msg(&e)))?;
    if bytes.len() > ringchat_core::seal::keyring::MAX_RING_FILE {
        return Err(format!("key file {}: over {} bytes", path.display(), ringchat_core::seal::keyring::MAX_RING_FILE));
    }
    String::from_utf8(bytes).map_err(|_| format!("key file {}: not text", path.display()))
}

/// Writes a key ring file atomically, readable by its owner only.
pub fn save(path: &Path, ring: &KeyRing) -> Result<(), String> {
    write_private(path, ring.render().as_bytes()).map_err(|e| format!("cannot write key file {}: {e}", path.display()))
}

/// Writes `body` to `path` atomically, readable by its owner only.
pub(crate) fn write_private(path: &Path, body: &[u8]) -> Result<(), String> {
    use std::io::Write;
    // One temporary file per process: two processes writing one file race only at the rename.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| crate::io_msg(&e))?;
    f.write_all(body).and_then(|_| f.sync_all()).map_err(|e| crate::io_msg(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| crate::io_msg(&e))
}

/// `ringchat keygen FILE`: a new ring of one fresh primary key and a fresh identity. Refuses
/// to overwrite a file. Returns the key's id and the identity's public key (what clients are
/// given to trust the cluster).
pub fn keygen(path: &Path) -> Result<(KeyId, [u8; 32]), String> {
    if path.exists() {
        return Err(format!("{} exists; keygen does not overwrite a key file (use `ringchat keys install`)", path.display()));
    }
    let key = generate()?;
    let id = key.id();
    let ring = KeyRing::new(key).with_identity(*generate()?.bytes());
    save(path, &ring)?;
    Ok((id, ring.identity_public()))
}

/// A key id as `keys use` and `keys remove` take it: 8 hex digits (as `keys list` shows), or
/// the whole key in 64 hex digits.
pub fn parse_id(text: &str) -> Result<KeyId, String> {
    let t = text.trim();
    if t.len() == 8 {
        if let Ok(n) = u32::from_str_radix(t, 16) {
            return Ok(KeyId(n));
        }
    }
    ClusterKey::from_hex(t).map(|k| k.id()).ok_or_else(|| format!("{t:?} is not a key id (8 hex digits) nor a key (64 hex digits)"))
}

/// One edit of a key ring file, as `ringchat keys` does it.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Install a key (64 hex digits), or a fresh one when `None`; it opens, the primary still seals.
    Install(Option<String>),
    /// Make the installed key with this id primary.
    Use(String),
    /// Remove the installed key with this id (not the primary).
    Remove(String),
}

/// Applies `edit` to the key file at `path` and writes it back. Returns a line saying what
/// was done (an installed key's hex is printed so it can be installed on the other hosts).
pub fn edit(path: &Path, edit: Edit) -> Result<String, String> {
    let mut ring = load(path)?;
    let fail = |e: ringchat_core::seal::RingError| format!("key file {}: {e}", path.display());
    let line = match edit {
        Edit::Install(hex) => {
            let key = match hex {
                Some(h) => ClusterKey::from_hex(&h).ok_or_else(|| "a key is 64 hex digits".to_string())?,
                None => generate()?,
            };
            let line = format!("installed key {} (install it on every server, then `keys use {}`): {}", key.id(), key.id(), key.to_hex());
            ring.install(key).map_err(fail)?;
            line
        }
        Edit::Use(id) => {
            let id = parse_id(&id)?;
            ring.use_key(id).map_err(fail)?;
            format!("key {id} is primary (it seals from now on)")
        }
        Edit::Remove(id) => {
            let id = parse_id(&id)?;
            ring.remove(id).map_err(fail)?;
            format!("removed key {id}")
        }
    };
    save(path, &ring)?;
    Ok(line)
}

/// `ringchat keys list`: one line per key, the primary marked. Secrets are not shown.
pub fn list(path: &Path) -> Result<String, String> {
    let ring = load(path)?;
    let primary = ring.primary().id();
    let mut lines: Vec<String> =
        ring.keys().iter().map(|k| format!("{}{}", k.id(), if k.id() == primary { "  primary (seals)" } else { "  opens" })).collect();
    lines.push(format!("identity {}  (clients trust it: ringchat client --cluster-key)", crate::trust::hex32(&ring.identity_public())));
    Ok(lines.join("\n"))
}

/// The seal's memory file beside a state file: `STATE.seal`.
pub fn memory_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".seal");
    PathBuf::from(p)
}

/// Reads the seal's memory; a missing file is an empty memory, a damaged one an error.
pub fn load_memory(path: &Path) -> Result<Option<SealMemory>, String> {
    match std::fs::read(path) {
        Ok(bytes) => decode_memory(&bytes).map(Some).map_err(|e| format!("seal memory {} {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read seal memory {}: {}", path.display(), crate::io_msg(&e))),
    }
}

/// Decodes the seal's memory file; the error says what is wrong, to follow the file's name.
/// Total: any bytes give a memory or an error.
pub fn decode_memory(bytes: &[u8]) -> Result<SealMemory, String> {
    postcard::from_bytes(bytes).map_err(|_| "is damaged; remove it to start afresh".to_string())
}

/// Writes the seal's memory atomically.
pub fn save_memory(path: &Path, memory: &SealMemory) -> Result<(), String> {
    let body = postcard::to_allocvec(memory).map_err(|e| format!("cannot encode the seal memory: {e}"))?;
    write_private(path, &body).map_err(|e| format!("cannot write seal memory {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringchat-keys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn a_rotation_edits_the_file_in_serf_order() {
        let path = temp("rotate.key");
        let (a, identity) = keygen(&path).expect("keygen");
        assert!(keygen(&path).is_err(), "keygen does not overwrite");
        let line = edit(&path, Edit::Install(None)).expect("install");
        let b = load(&path).expect("load").keys()[1].id();
        assert!(line.contains(&b.to_string()));
        assert!(edit(&path, Edit::Remove(a.to_string())).is_err(), "the primary stays");
        edit(&path, Edit::Use(b.to_string())).expect("use");
        edit(&path, Edit::Remove(a.to_string())).expect("remove");
        let ring = load(&path).expect("load");
        assert_eq!((ring.primary().id(), ring.keys().len()), (b, 1));
        assert!(list(&path).expect("list").contains(&format!("{b}  primary")));
        assert_eq!(ring.identity_public(), identity, "rotation leaves the identity clients trust alone");
    }

    #[test]
    fn bad_key_files_are_one_line_errors() {
        let missing = temp("missing.key");
        let e = load(&missing).expect_err("missing");
        assert!(e.starts_with("cannot read key file") && !e.contains('\n'), "{e}");
        let bad = temp("bad.key");
        std::fs::write(&bad, "primary nothex\n").expect("write");
        let e = load(&bad).expect_err("bad");
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn the_seal_memory_reads_back_as_written() {
        let path = temp("state.seal");
        assert_eq!(load_memory(&path), Ok(None));
        let m = SealMemory {
            senders: vec![ringchat_core::seal::replay::SenderMark { id: ringchat_core::ServerId(3), incarnation: 2, top: 99 }],
        };
        save_memory(&path, &m).expect("save");
        assert_eq!(load_memory(&path), Ok(Some(m)));
    }
}
