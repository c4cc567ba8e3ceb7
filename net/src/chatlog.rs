//! The chat log beside a state file: every chat message the server delivered, appended and
//! fsynced before any datagram of the input that delivered it leaves (see the core's
//! `chat::server::journal`). With it, `stored` means on disk at a majority.
//!
//! The log is a series of segment files `.NAME.log.N` beside the state file `NAME`. Every
//! whole-state write starts a new segment and names it in the state file's header: a restart
//! reads the state, then replays the segments from that one on. A segment is deleted once
//! neither the state file nor its previous copy (`.NAME.prev`, the fallback after a torn
//! write) needs it.
//!
//! A record is a little-endian `u32` length, the CRC-32 of the payload, and the payload
//! (postcard bytes of one message). Reading stops at the first record that is cut short or
//! fails its checksum: that is the tail of a write a crash interrupted, and no datagram that
//! depended on it left (the fsync had not returned).

use ringchat_core::wire::CausalMsg;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest record accepted when reading (a chat message is far smaller).
const MAX_RECORD: usize = 1 << 20;

/// The chat log of one state file.
pub struct ChatLog {
    state: PathBuf,
    /// Segment numbers that exist on disk.
    segments: BTreeSet<u64>,
    /// The segment appended to now.
    segment: u64,
    /// The open file of `segment`, once something was appended to it.
    file: Option<std::fs::File>,
    /// The first segment the state file needs, and the one its previous copy needs.
    current_from: u64,
    previous_from: u64,
}

/// What reading a chat log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// The messages, in the order they were appended.
    pub messages: Vec<CausalMsg>,
    /// Segments that ended in a cut-short or damaged record.
    pub torn: Vec<u64>,
}

impl ChatLog {
    /// The log of `state`, whose file names `log_from` as its first segment; appends go to a
    /// segment after every one on disk.
    pub fn open(state: &Path, log_from: u64) -> Result<ChatLog, String> {
        let segments = list(state)?;
        let segment = segments.last().map_or(log_from, |l| l + 1).max(log_from);
        Ok(ChatLog { state: state.to_path_buf(), segments, segment, file: None, current_from: log_from, previous_from: 0 })
    }

    /// Reads the segments from `from` on, in order.
    pub fn read(state: &Path, from: u64) -> Result<Read, String> {
        let mut out = Read::default();
        for n in list(state)?.range(from..) {
            let path = segment_path(state, *n);
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read chat log {}: {}", path.display(), crate::io_msg(&e)))?;
            if !decode_records(&bytes, &mut out.messages) {
                out.torn.push(*n);
            }
        }
        Ok(out)
    }

    /// Appends `messages` to the current segment and fsyncs it (a new segment's directory
    /// entry is fsynced first). Returns once they are on disk.
    pub fn append(&mut self, messages: &[CausalMsg]) -> Result<(), String> {
        if messages.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.state, self.segment);
        let fail = |e: std::io::Error| format!("cannot write chat log {}: {}", path.display(), crate::io_msg(&e));
        let mut buf = Vec::new();
        for m in messages {
            let payload = postcard::to_stdvec(m).map_err(|e| format!("cannot encode a chat log record: {e}"))?;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(fail)?;
            crate::state::sync_dir(&path).map_err(fail)?;
            self.segments.insert(self.segment);
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&buf).map_err(fail)?;
        f.sync_data().map_err(fail)
    }

    /// Starts a new segment for a whole-state write about to begin: returns its number, which
    /// the state file names as its first segment.
    pub fn rotate(&mut self) -> u64 {
        self.segment += 1;
        self.file = None;
        self.segment
    }

    /// A whole-state write naming `from` landed (its rename and the directory's fsync are
    /// done): deletes the segments neither it nor the previous copy needs.
    pub fn landed(&mut self, from: u64) {
        self.previous_from = self.current_from;
        self.current_from = from;
        let unneeded: Vec<u64> = self.segments.range(..self.previous_from).copied().collect();
        for n in unneeded {
            let path = segment_path(&self.state, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.segments.remove(&n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.segments.remove(&n);
                }
                Err(e) => tracing::warn!("cannot delete chat log {}: {}", path.display(), crate::io_msg(&e)),
            }
        }
    }
}

/// Reads the state file beside `state` and replays its chat log over it: the state as of the
/// last input before the server stopped (`None` for a new server), and the log to append to.
pub fn restore(state: &Path) -> Result<(Option<ringchat_core::Durable>, ChatLog), String> {
    let Some(loaded) = crate::state::load(state)? else { return Ok((None, ChatLog::open(state, 0)?)) };
    let mut d = loaded.durable;
    let log = ChatLog::read(state, loaded.log_from)?;
    for n in &log.torn {
        tracing::warn!(
            "chat log segment {n} of {} ends in a cut-short record (a write a crash interrupted); reading up to it",
            state.display()
        );
    }
    let r = d.recover(log.messages);
    tracing::info!(replayed = r.replayed, already = r.already, "chat log read");
    if r.out_of_order > 0 {
        tracing::warn!(skipped = r.out_of_order, "chat log records that do not follow the state file were skipped; peers send them again");
    }
    Ok((Some(d), ChatLog::open(state, loaded.log_from)?))
}

/// Group commit off the event loop: deliveries queue while one batch is appended and fsynced
/// by a blocking task; the next batch takes everything that queued meanwhile. The driver holds
/// back every datagram of an input until the batch holding that input's deliveries (or, if it
/// delivered nothing, the batch then running) is durable, so datagrams still leave in order and
/// none claims a message that is not on disk; the event loop keeps serving meanwhile.
pub struct Committer {
    log: std::sync::Arc<std::sync::Mutex<ChatLog>>,
    pending: Vec<CausalMsg>,
    /// Batches started so far (the running one is the last).
    started: u64,
    running: Option<tokio::task::JoinHandle<Result<u64, String>>>,
}

impl Committer {
    /// Commits to `log`.
    pub fn new(log: ChatLog) -> Committer {
        Committer { log: std::sync::Arc::new(std::sync::Mutex::new(log)), pending: Vec::new(), started: 0, running: None }
    }

    /// Queues an input's deliveries; returns the batch that must be durable before the input's
    /// datagrams leave, if any must be.
    pub fn add(&mut self, delivered: Vec<CausalMsg>) -> Option<u64> {
        self.pending.extend(delivered);
        if !self.pending.is_empty() {
            Some(self.started + 1)
        } else {
            self.running.as_ref().map(|_| self.started)
        }
    }

    /// Starts appending what is queued, unless a batch is running or nothing is queued.
    pub fn kick(&mut self) {
        if self.running.is_some() || self.pending.is_empty() {
            return;
        }
        self.started += 1;
        let (batch, log, id) = (std::mem::take(&mut self.pending), self.log.clone(), self.started);
        self.running = Some(tokio::task::spawn_blocking(move || {
            let mut log = log.lock().map_err(|_| "chat log writer panicked".to_string())?;
            log.append(&batch).map(|()| id)
        }));
    }

    /// Whether a batch is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Waits for the running batch (pending forever if none runs); returns the batch now durable.
    pub async fn synced(&mut self) -> Result<u64, String> {
        match &mut self.running {
            Some(job) => {
                let r = job.await.map_err(|e| format!("chat log writer failed: {e}"))?;
                self.running = None;
                r
            }
            None => std::future::pending().await,
        }
    }

    /// Before a whole-state write (which holds every delivery so far): waits for the running
    /// batch and drops what is queued. Returns the batch that everything is covered by.
    pub async fn settle(&mut self) -> Result<u64, String> {
        if self.running.is_some() {
            self.synced().await?;
        }
        self.pending.clear();
        Ok(self.started)
    }

    /// Runs `f` on the log (between batches, or waiting for the running one's append).
    pub fn with_log<R>(&self, f: impl FnOnce(&mut ChatLog) -> R) -> Result<R, String> {
        let mut log = self.log.lock().map_err(|_| "chat log writer panicked".to_string())?;
        Ok(f(&mut log))
    }
}

/// The path of segment `n` of `state`'s log.
fn segment_path(state: &Path, n: u64) -> PathBuf {
    crate::state::sibling(state, &format!("log.{n}"))
}

/// The segment numbers of `state`'s log on disk.
fn list(state: &Path) -> Result<BTreeSet<u64>, String> {
    let dir = match state.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = state.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    let prefix = format!(".{name}.log.");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(format!("cannot list {}: {}", dir.display(), crate::io_msg(&e))),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|n| n.parse().ok()))
        .collect())
}

/// Decodes records into `out`; false if the bytes end in a cut-short or damaged record.
fn decode_records(mut bytes: &[u8], out: &mut Vec<CausalMsg>) -> bool {
    while !bytes.is_empty() {
        let Some((head, rest)) = bytes.split_at_checked(8) else { return false };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            return false;
        }
        let Some((payload, rest)) = rest.split_at_checked(len) else { return false };
        if crc32fast::hash(payload) != crc {
            return false;
        }
        match postcard::from_bytes::<CausalMsg>(payload) {
            Ok(m) => out.push(m),
            Err(_) => return false,
        }
        bytes = rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::wire::{Item, MsgId};
    use ringchat_core::{NodeId, ServerId};

    fn msg(seq: u64) -> CausalMsg {
        let item = Item::Chat {
            id: MsgId { client: 1, seq },
            from: "ann".into(),
            room: None,
            to: vec!["bob".into()],
            cut: Default::default(),
            text: format!("message {seq}"),
        };
        CausalMsg { origin: NodeId { id: ServerId(9), incarnation: 1 }, seq, deps: Default::default(), item: std::sync::Arc::new(item) }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringchat-chatlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("s.state")
    }

    #[test]
    fn appended_messages_are_read_back_in_order_from_the_named_segment_on() {
        let state = temp("order");
        let mut log = ChatLog::open(&state, 0).expect("open");
        log.append(&[msg(1), msg(2)]).expect("append");
        let from = log.rotate();
        log.append(&[msg(3)]).expect("append");
        let all = ChatLog::read(&state, 0).expect("read");
        assert_eq!(all.messages, vec![msg(1), msg(2), msg(3)]);
        assert_eq!(ChatLog::read(&state, from).expect("read").messages, vec![msg(3)]);
        let _ = std::fs::remove_dir_all(state.parent().expect("dir"));
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_came_before_it_is_kept() {
        let state = temp("torn");
        let mut log = ChatLog::open(&state, 0).expect("open");
        log.append(&[msg(1), msg(2)]).expect("append");
        let path = segment_path(&state, 0);
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("cut");
        let read = ChatLog::read(&state, 0).expect("read");
        assert_eq!(read.messages, vec![msg(1)]);
        assert_eq!(read.torn, vec![0]);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).expect("flip");
        assert_eq!(ChatLog::read(&state, 0).expect("read").messages, vec![msg(1)], "a damaged record is not replayed");
        let _ = std::fs::remove_dir_all(state.parent().expect("dir"));
    }

    #[test]
    fn a_segment_is_deleted_once_neither_the_state_nor_its_previous_copy_needs_it() {
        let state = temp("delete");
        let mut log = ChatLog::open(&state, 0).expect("open");
        log.append(&[msg(1)]).expect("append");
        let one = log.rotate();
        log.append(&[msg(2)]).expect("append");
        log.landed(one);
        assert!(segment_path(&state, 0).exists(), "the previous copy still needs segment 0");
        let two = log.rotate();
        log.append(&[msg(3)]).expect("append");
        log.landed(two);
        assert!(!segment_path(&state, 0).exists(), "nothing needs segment 0 any more");
        assert_eq!(ChatLog::read(&state, one).expect("read").messages, vec![msg(2), msg(3)]);
        let reopened = ChatLog::open(&state, two).expect("open");
        assert_eq!(reopened.segment, two + 1, "a reopened log appends after every segment on disk");
        let _ = std::fs::remove_dir_all(state.parent().expect("dir"));
    }

    #[test]
    fn a_restart_finds_what_the_log_holds_beyond_the_state_file() {
        use ringchat_core::{ClusterId, Durable};
        let state = temp("restore");
        let mut d = Durable {
            id: ServerId(9),
            incarnation: 1,
            cluster: ClusterId(1),
            epochs: Default::default(),
            view: None,
            chat: Default::default(),
        };
        let mut log = ChatLog::open(&state, 0).expect("open");
        let from = log.rotate();
        crate::state::save(&state, from, &d).expect("save");
        // Delivered after the whole write: only the log has it.
        let msg = d.chat.causal.broadcast(NodeId { id: ServerId(9), incarnation: 1 }, msg(1).item.as_ref().clone()).expect("broadcast");
        d.chat.apply_delivered(&msg, Default::default());
        log.append(std::slice::from_ref(&msg)).expect("append");
        let (restored, _) = restore(&state).expect("restore");
        assert_eq!(restored.as_ref().map(|r| &r.chat), Some(&d.chat), "the logged delivery is replayed");
        let _ = std::fs::remove_dir_all(state.parent().expect("dir"));
    }
}
