//! `--state FILE`: what a server keeps across a restart ([`Durable`]: epochs,
//! votes, the latest view, and the chat state), as `RCST` + format + postcard.
//!
//! The file is written (to a temporary file, then renamed over the old one)
//! after every input that changed it and before any datagram of that input is
//! sent, so a vote is on disk before the `Accept` that announces it leaves.

use ringchat_core::Durable;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"RCST";
const FORMAT: u32 = 2;

/// Reads the state file; `Ok(None)` if it does not exist yet.
pub fn load(path: &Path) -> Result<Option<Durable>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state file {}: {}", path.display(), crate::io_msg(&e))),
    };
    let not_ours = || format!("state file {} is not a ringchat state file", path.display());
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(not_ours)?;
    let (format, body) = rest.split_first_chunk::<4>().ok_or_else(not_ours)?;
    let format = u32::from_le_bytes(*format);
    if format != FORMAT {
        return Err(format!("state file {} has format {format}, expected {FORMAT}", path.display()));
    }
    postcard::from_bytes(body).map(Some).map_err(|e| format!("state file {} is damaged: {e}", path.display()))
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub fn save(path: &Path, d: &Durable) -> Result<(), String> {
    use std::io::Write;
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    let bytes = postcard::to_extend(d, bytes).map_err(|e| format!("cannot encode state: {e}"))?;
    let mut tmp: PathBuf = path.to_path_buf();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    tmp.set_file_name(format!(".{name}.tmp"));
    let fail = |e: std::io::Error| format!("cannot write state file {}: {}", path.display(), crate::io_msg(&e));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(&bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::server::EpochRecord;
    use ringchat_core::{ClusterId, Member, NodeId, ServerId, View, ViewStamp};

    #[test]
    fn state_roundtrips_through_the_file() {
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
        let path = dir.join("s.json");
        assert_eq!(load(&path), Ok(None));
        save(&path, &d).expect("save");
        assert_eq!(load(&path), Ok(Some(d)));
        std::fs::write(&path, "nonsense").expect("write");
        assert!(load(&path).is_err());
        std::fs::write(&path, b"RCST\x02\x00\x00\x00\xff").expect("write");
        assert!(load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
