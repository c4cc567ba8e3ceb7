//! `--state FILE`: what a server keeps across a restart ([`Durable`]), as JSON.
//!
//! The file is written (to a temporary file, then renamed over the old one)
//! after every input that changed it and before any datagram of that input is
//! sent, so a vote is on disk before the `Accept` that announces it leaves.

use ringchat_core::server::EpochRecord;
use ringchat_core::{ClusterId, Durable, ServerId, View};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// On-disk form of [`Durable`]. JSON maps need string keys, so the per-cluster
/// epoch records are a list of pairs here.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    id: ServerId,
    incarnation: u64,
    cluster: ClusterId,
    epochs: Vec<(ClusterId, EpochRecord)>,
    view: Option<View>,
}

const FORMAT: u32 = 1;

impl StateFile {
    fn from_durable(d: &Durable) -> StateFile {
        // Destructured field by field: a field added to `Durable` fails to compile here.
        let Durable { id, incarnation, cluster, epochs, view } = d;
        StateFile {
            format: FORMAT,
            id: *id,
            incarnation: *incarnation,
            cluster: *cluster,
            epochs: epochs.iter().map(|(c, r)| (*c, *r)).collect(),
            view: view.clone(),
        }
    }

    fn into_durable(self) -> Durable {
        Durable {
            id: self.id,
            incarnation: self.incarnation,
            cluster: self.cluster,
            epochs: self.epochs.into_iter().collect(),
            view: self.view,
        }
    }
}

/// Reads the state file; `Ok(None)` if it does not exist yet.
pub fn load(path: &Path) -> Result<Option<Durable>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state file {}: {}", path.display(), crate::io_msg(&e))),
    };
    let file: StateFile =
        serde_json::from_str(&text).map_err(|e| format!("state file {} is not a ringchat state file: {e}", path.display()))?;
    if file.format != FORMAT {
        return Err(format!("state file {} has format {}, expected {FORMAT}", path.display(), file.format));
    }
    Ok(Some(file.into_durable()))
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub fn save(path: &Path, d: &Durable) -> Result<(), String> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(&StateFile::from_durable(d)).map_err(|e| format!("cannot encode state: {e}"))?;
    let mut tmp: PathBuf = path.to_path_buf();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    tmp.set_file_name(format!(".{name}.tmp"));
    let fail = |e: std::io::Error| format!("cannot write state file {}: {}", path.display(), crate::io_msg(&e));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.write_all(b"\n").map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::{Member, NodeId, ViewStamp};

    #[test]
    fn state_roundtrips_through_json() {
        let node = NodeId { id: ServerId(0xabc << 100), incarnation: 3 };
        let mut d = Durable { id: node.id, incarnation: 3, cluster: ClusterId(77), epochs: Default::default(), view: None };
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
