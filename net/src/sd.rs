//! systemd's notification socket (`Type=notify`), written from a thread of its own.
//!
//! `sd_notify::notify` sends on a blocking socket: if the service manager does not read for a
//! while (its queue holds a few datagrams), a send would stop the event loop. Here the loop
//! only hands notes to a bounded queue (a note that does not fit is dropped: the next
//! watchdog ping or status comes soon); a thread sends them in order. Without `NOTIFY_SOCKET`
//! there is no thread and every call is a no-op.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// `READY=1`: the sockets are bound and the loop runs.
    Ready,
    /// `STATUS=...`: one line for `systemctl status`.
    Status(String),
    /// `WATCHDOG=1`: the loop is alive.
    Watchdog,
    /// `STOPPING=1`: leaving.
    Stopping,
}

/// Notes waiting for the sender thread at most.
const QUEUE: usize = 16;

/// Hands notes to the sender thread.
pub struct Notifier {
    tx: Option<SyncSender<Note>>,
    done: Option<Receiver<()>>,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, or a no-op one when it is unset (or no thread starts).
    pub fn from_env() -> Notifier {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Notifier { tx: None, done: None };
        }
        let (tx, rx) = mpsc::sync_channel::<Note>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("sd-notify".into()).spawn(move || {
            for note in rx {
                let status;
                let state = match &note {
                    Note::Ready => sd_notify::NotifyState::Ready,
                    Note::Status(s) => {
                        status = s.clone();
                        sd_notify::NotifyState::Status(&status)
                    }
                    Note::Watchdog => sd_notify::NotifyState::Watchdog,
                    Note::Stopping => sd_notify::NotifyState::Stopping,
                };
                if let Err(e) = sd_notify::notify(&[state]) {
                    tracing::debug!("cannot notify systemd: {}", crate::io_msg(&e));
                }
            }
            let _ = done_tx.send(());
        });
        match spawned {
            Ok(_) => Notifier { tx: Some(tx), done: Some(done) },
            Err(e) => {
                tracing::warn!("cannot start the systemd notifier: {}", crate::io_msg(&e));
                Notifier { tx: None, done: None }
            }
        }
    }

    /// Whether notes go anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `note`, never waiting (dropped if the queue is full).
    pub fn send(&self, note: Note) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(note);
        }
    }

    /// Lets the thread send what is queued, waiting at most `within` for it; later notes go nowhere.
    pub fn close(&mut self, within: Duration) {
        self.tx = None;
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(within);
        }
    }

    /// The watchdog period the service manager asks for (`WatchdogSec=`), if any.
    pub fn watchdog() -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}
